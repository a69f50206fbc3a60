//! What the hotctl tests share.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::process::{Command, Output};

use hotkeys::Topology;
use hotkeys::testing;

/// Runs hotctl on `topology` (written to a file of its own) with `args`, logging warnings.
pub fn hotctl(topology: &Topology, args: &[&str]) -> Output {
    hotctl_logging(topology, args, "warn")
}

/// Runs hotctl with `RUST_LOG=log`. The file holds the whole topology, so the stack's
/// `HOTKEYS_*` overrides are taken out of the child's environment.
pub fn hotctl_logging(topology: &Topology, args: &[&str], log: &str) -> Output {
    let file = testing::write_topology(topology);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hotctl"));
    for k in testing::topology_overrides() {
        cmd.env_remove(k);
    }
    let out = cmd
        .env("RUST_LOG", log)
        .arg("--topology")
        .arg(&file)
        .args(args)
        .output()
        .expect("run hotctl");
    let _ = std::fs::remove_file(&file);
    out
}
