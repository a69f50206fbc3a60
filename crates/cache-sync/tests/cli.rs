//! The `cache-sync` binary's operator commands and exit codes.

mod common;

use std::process::{Command, Output};

fn cache_sync(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cache-sync"));
    cmd.env_clear().env("RUST_LOG", "warn").args(args);
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn ring_command_prints_the_placements_of_the_shared_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hotkeys/tests/data/consistent-hashing.tsv"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    let nodes = "127.0.0.1:21211,127.0.0.1:21212,127.0.0.1:21213";
    for (column, algorithm, hash) in [
        (1, "pecl-memcache", "fnv1a_64"),
        (2, "flexihash", "fnv1a_64"),
        (3, "ketama", "fnv1a_64"),
        (4, "ketama", "crc32a"),
    ] {
        let keys: Vec<&str> = rows
            .iter()
            .filter(|r| r[column] != "-")
            .map(|r| r[0])
            .collect();
        let mut cmd = cache_sync(&[
            "ring",
            "--algorithm",
            algorithm,
            "--hash",
            hash,
            "--nodes",
            nodes,
        ]);
        cmd.args(&keys);
        let (code, stdout, stderr) = run(&mut cmd);
        assert_eq!(code, 0, "{stderr}");
        let expected: String = rows
            .iter()
            .filter(|r| r[column] != "-")
            .map(|r| format!("{}\t{}\n", r[0], r[column]))
            .collect();
        assert_eq!(stdout, expected, "{algorithm} {hash}");
    }
}

#[test]
fn a_bad_ring_node_is_a_usage_error() {
    let (code, _, stderr) = run(&mut cache_sync(&[
        "ring",
        "--algorithm",
        "ketama",
        "--nodes",
        "nohost",
        "k",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nohost"), "{stderr}");
}

fn topology_file(t: &hotkeys::Topology) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), toml::to_string(t).unwrap()).unwrap();
    file
}

#[tokio::test]
async fn enqueue_and_status_commands_show_the_queue() {
    let Some(mut stack) = common::stack("cli_enqueue").await else {
        return;
    };
    let t = stack.topology();
    let file = topology_file(&t);
    let topo = file.path().to_str().unwrap();
    let key = format!("{}11", stack.prefix());

    let (code, _, stderr) = run(&mut cache_sync(&[
        "--topology",
        topo,
        "enqueue",
        "set",
        &key,
        "{\"id\":11}",
        "--ttl",
        "60",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(&mut cache_sync(&[
        "--topology",
        topo,
        "enqueue",
        "set",
        &key,
        "AAEC/w==",
        "--base64",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(&mut cache_sync(&[
        "--topology",
        topo,
        "enqueue",
        "delete",
        &key,
    ]));
    assert_eq!(code, 0, "{stderr}");

    let queue = stack.queue(&t).await;
    let batch = queue.take(10, 1).await.unwrap().unwrap();
    let ops: Vec<_> = batch
        .items
        .iter()
        .map(|i| hotkeys::sync::QueuedOp::from_json(i).unwrap().op)
        .collect();
    assert_eq!(
        ops,
        [
            hotkeys::sync::Op::set(
                &key,
                "{\"id\":11}",
                Some(std::time::Duration::from_secs(60))
            ),
            hotkeys::sync::Op::set(&key, vec![0u8, 1, 2, 255], Some(t.redis.ttl)),
            hotkeys::sync::Op::delete(&key),
        ]
    );

    let (code, stdout, stderr) = run(&mut cache_sync(&["--topology", topo, "status"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("in flight    1 (3 ops)"), "{stdout}");
    assert!(stdout.contains("acked        0"), "{stdout}");
    let (code, stdout, _) = run(&mut cache_sync(&["--topology", topo, "status", "--json"]));
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["in_flight"], 1);
    assert_eq!(json["length"], 0);
    stack.cleanup().await;
}

#[tokio::test]
async fn enqueue_refuses_a_key_outside_the_replicate_prefixes_with_exit_2() {
    let Some(mut stack) = common::stack("cli_refuse").await else {
        return;
    };
    let file = topology_file(&stack.topology());
    let topo = file.path().to_str().unwrap();
    let (code, _, stderr) = run(&mut cache_sync(&[
        "--topology",
        topo,
        "enqueue",
        "delete",
        "session:1",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("sync.replicate"), "{stderr}");
    stack.cleanup().await;
}

#[test]
fn ship_and_receive_without_a_secret_exit_with_2() {
    let file = topology_file(&hotkeys::Topology::default());
    let topo = file.path().to_str().unwrap();
    for command in ["ship", "receive"] {
        let (code, _, stderr) = run(&mut cache_sync(&["--topology", topo, command]));
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(
            stderr.contains("HOTKEYS_SYNC_SECRET"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn an_unreachable_queue_redis_exits_with_3() {
    let mut t = hotkeys::Topology::default();
    t.redis.nodes = vec!["redis://127.0.0.1:1".into()];
    let file = topology_file(&t);
    let (code, _, stderr) = run(&mut cache_sync(&[
        "--topology",
        file.path().to_str().unwrap(),
        "status",
    ]));
    assert_eq!(code, 3, "{stderr}");
}
