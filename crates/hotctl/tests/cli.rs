//! How hotctl finds its topology without `--topology`.

use std::process::Command;

#[test]
fn without_a_topology_anywhere_the_error_lists_every_path_tried_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_hotctl"))
        .arg("tasks")
        .current_dir(dir.path())
        .env_remove("HOTKEYS_TOPOLOGY")
        .output()
        .expect("run hotctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    if std::path::Path::new("/etc/hotkeys/topology.toml").exists() {
        return;
    }
    assert!(
        stderr.contains("topology/default.toml, /etc/hotkeys/topology.toml"),
        "{stderr}"
    );
}

#[test]
fn a_checkouts_topology_is_found_from_its_root() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_hotctl"))
        .args(["tasks", "--json"])
        .current_dir(&root)
        .env_remove("HOTKEYS_TOPOLOGY")
        .output()
        .expect("run hotctl");
    // Found and loaded: whatever ZooKeeper says, it is not a usage error.
    assert_ne!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
