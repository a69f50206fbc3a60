//! A Redis password planted in every node URL never shows: not in any log level of `ship`
//! and `receive`, not in the error of any failure the test can cause, not in the metric
//! labels of `--metrics`. Nodes are still named, by host and port.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{cache_sync, topology_file};
use hotkeys::Topology;
use hotkeys::sync::{Op, SyncQueue};
use hotkeys::testing::{self, RedisServer};

const PLANTED: &str = "planted-Pw-9d4c";

/// Runs `cache-sync ARGS` on `t` with every log level on; its exit code and output.
async fn traced(t: &Topology, args: &[&str]) -> (Option<i32>, String) {
    let file = topology_file(t);
    let out = cache_sync(file.path())
        .env("RUST_LOG", "trace")
        .args(args)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn with_password(server: &RedisServer, password: &str) -> String {
    format!("redis://:{password}@127.0.0.1:{}", server.port)
}

fn closed_node() -> String {
    format!("redis://:{PLANTED}@127.0.0.1:{}", testing::free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_redis_password_is_in_no_log_error_or_metric_label() {
    let Some(mut stack) = common::stack("planted").await else {
        return;
    };
    let start = |extra: &[&str]| {
        let mut args = vec!["--requirepass", PLANTED];
        args.extend_from_slice(extra);
        RedisServer::start_with(&args)
    };
    let (a, mut backup) = (start(&[]), start(&[]));
    let evicting = start(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let (ua, ub) = (with_password(&a, PLANTED), with_password(&backup, PLANTED));
    let mut t = stack.topology();
    t.redis.nodes = vec![ua.clone()];
    t.redis.backups = [(ua.clone(), ub)].into();
    t.redis.health_every = Duration::from_millis(100);
    t.redis.health_failures = 1;
    t.sync.apply_nodes = vec![ua.clone()];
    t.sync.listen = format!("127.0.0.1:{}", testing::free_port());
    t.sync.remote = format!("http://{}/sync", t.sync.listen);
    let mut outputs: Vec<(String, String)> = Vec::new();

    // A receiver and a shipper that work, every log level on, the receiver with metrics.
    let metrics_port = testing::free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let receiver_log = tempfile::NamedTempFile::new().unwrap();
    let file = topology_file(&t);
    let mut receiver = cache_sync(file.path())
        .env("RUST_LOG", "trace")
        .args(["--metrics", &metrics, "receive"])
        .stderr(Stdio::from(receiver_log.reopen().unwrap()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    testing::eventually(30, "the receiver to listen", || async {
        tokio::net::TcpStream::connect(&t.sync.listen).await.ok()
    })
    .await;
    let queue = SyncQueue::connect(&t.redis, &t.sync).await.unwrap();
    let ops: Vec<Op> = (0..100)
        .map(|i| Op::set(format!("{}{i}", stack.prefix()), "v", None))
        .collect();
    queue.enqueue_many(&ops).await.unwrap();
    let (code, text) = traced(&t, &["ship", "--until-empty"]).await;
    assert_eq!(code, Some(0), "{text}");
    outputs.push(("ship".into(), text));

    // The backup goes down: logged and labelled by node.
    backup.kill();
    let backup_label = format!("node=\"redis://127.0.0.1:{}\"", backup.port);
    let scraped = testing::eventually(30, "the backup's gauge in the metrics", || async {
        testing::scrape_metrics(metrics_port)
            .await
            .filter(|m| m.contains(&backup_label))
    })
    .await;
    outputs.push(("metrics".into(), scraped));

    // Every failure the test can cause.
    let mut unreachable = t.clone();
    unreachable.redis.nodes = vec![closed_node()];
    unreachable.redis.backups.clear();
    unreachable.sync.apply_nodes = vec![closed_node()];
    let mut state_down = t.clone();
    state_down.sync.state = closed_node();
    let mut wrong_password = unreachable.clone();
    wrong_password.redis.nodes = vec![with_password(&a, &format!("{PLANTED}-wrong"))];
    wrong_password.sync.apply_nodes = wrong_password.redis.nodes.clone();
    let mut evicts = t.clone();
    evicts.sync.state = with_password(&evicting, PLANTED);
    let mut bad_url = unreachable.clone();
    bad_url.redis.nodes = vec![format!("redis://:{PLANTED}@127.0.0.1:notaport")];
    for (name, topology, args, expected) in [
        ("status, node down", &unreachable, &["status"][..], 3),
        (
            "ship, node down",
            &unreachable,
            &["ship", "--until-empty"][..],
            3,
        ),
        ("receive, node down", &unreachable, &["receive"][..], 3),
        (
            "ship, state down",
            &state_down,
            &["ship", "--until-empty"][..],
            3,
        ),
        ("ship, evicting", &evicts, &["ship", "--until-empty"][..], 2),
        (
            "status, wrong password",
            &wrong_password,
            &["status"][..],
            2,
        ),
        ("status, bad URL", &bad_url, &["status"][..], 2),
    ] {
        let (code, text) = traced(topology, args).await;
        assert_eq!(code, Some(expected), "{name}: {text}");
        assert!(text.contains("127.0.0.1:"), "{name} names the node: {text}");
        outputs.push((name.into(), text));
    }

    receiver.start_kill().unwrap();
    receiver.wait().await.unwrap();
    let log = std::fs::read_to_string(receiver_log.path()).unwrap();
    assert!(log.contains("backup node does not answer"), "{log}");
    outputs.push(("receive".into(), log));
    for (name, text) in &outputs {
        assert!(
            !text.contains(PLANTED),
            "{name} shows the password:\n{text}"
        );
    }
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_sync_remote_is_in_no_log_line_or_error() {
    let Some(mut stack) = common::stack("remote_password").await else {
        return;
    };
    let receiver = common::RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let mut t = stack.topology();
    t.sync.retries = 2;
    let queue = SyncQueue::connect(&t.redis, &t.sync).await.unwrap();
    let op = Op::set(format!("{}k", stack.prefix()), "v", None);
    queue.enqueue(&op).await.unwrap();
    let with_password = |port: u16| format!("http://hk:{PLANTED}@127.0.0.1:{port}/sync");

    // Refused (the secrets differ), then unreachable (gave up): both errors name the remote.
    t.sync.remote = with_password(receiver.addr.port());
    let file = topology_file(&t);
    let out = cache_sync(file.path())
        .env("RUST_LOG", "trace")
        .env("HOTKEYS_SYNC_SECRET", "another-secret")
        .args(["ship", "--until-empty"])
        .output()
        .await
        .unwrap();
    let refused = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{refused}");
    t.sync.remote = with_password(testing::free_port());
    let (code, unreachable) = traced(&t, &["ship", "--until-empty"]).await;
    assert_eq!(code, Some(3), "{unreachable}");
    for (name, text) in [("refused", &refused), ("unreachable", &unreachable)] {
        assert!(
            text.contains("127.0.0.1:"),
            "{name} names the remote: {text}"
        );
        assert!(
            !text.contains(PLANTED),
            "{name} shows the password:\n{text}"
        );
    }
    receiver.stop().await;
    stack.cleanup().await;
}
