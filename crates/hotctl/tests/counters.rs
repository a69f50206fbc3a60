//! `hotctl hot | watch | blacklist | unban` for `[[counter]]` tables, against the stack's
//! real ZooKeeper and Redis. Hot lists are published the way hot-counter does, and the
//! threshold rule is evaluated by the library's own `Blacklist::enforce`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::hotctl;
use hotkeys::Topology;
use hotkeys::blacklist::Blacklist;
use hotkeys::config::{Action, CounterConfig};
use hotkeys::hotlist::now_ms;
use hotkeys::redis::RedisConn;
use hotkeys::testing::{self, publish_hot_list};
use hotkeys::zk::Zk;
use serde_json::Value;

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "hotctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// A topology with a `caller` counter that bans at 20 per window, sparing `10.0.0.1`.
fn topology(test: &str) -> Topology {
    let mut t = testing::topology(test);
    t.counters.push(CounterConfig {
        top_n: Some(10),
        threshold: Some(20),
        action: Some(Action::Blacklist),
        allow: vec!["10.0.0.1".into()],
        ..CounterConfig::new("caller", "/headers/x-real-ip")
    });
    t
}

/// Two tasks whose lists share `6.6.6.6` (15 + 15) and `10.0.0.1` (14 + 14) above 13
/// keys of their own (at most 13 each).
async fn publish_two_tasks(zk: &Zk, t: &Topology) {
    for task in 0..2 {
        let mut keys = vec!["6.6.6.6".to_string(), "10.0.0.1".to_string()];
        keys.extend((0..13).map(|i| format!("192.168.{task}.{i}")));
        publish_hot_list(zk, &t.name, task, &keys, "test")
            .await
            .expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_bans_the_sum_over_tasks_and_hotctl_shows_and_lifts_the_ban() {
    let t = topology("hotctl-blacklist");
    let zk = Zk::connect(&t).await.expect("ZooKeeper");
    publish_two_tasks(&zk.for_counter("caller"), &t).await;

    let hot = json(&hotctl(&t, &["hot", "--counter", "caller", "--json"]));
    assert_eq!(hot[0]["key"], "6.6.6.6", "{hot}");
    assert_eq!(hot[0]["count"], 30, "summed over both tasks: {hot}");
    assert_eq!(hot[1]["key"], "10.0.0.1", "{hot}");
    assert_eq!(hot[1]["count"], 28, "{hot}");
    assert_eq!(hot[2]["count"], 13, "{hot}");

    let redis = RedisConn::connect_home(&t.redis).await.expect("Redis");
    let counter = t.counter("caller").expect("counter");
    let mut blacklist = Blacklist::new(&t, &counter, redis).expect("a rule");
    let enforced = blacklist.enforce(&zk, now_ms()).await.expect("enforce");
    assert_eq!(enforced.added, ["6.6.6.6"]);
    let again = blacklist.enforce(&zk, now_ms()).await.expect("enforce");
    assert!(
        again.added.is_empty(),
        "a ban in force is extended, not added again"
    );

    let shown = json(&hotctl(&t, &["blacklist", "--json"]));
    let entries = shown.as_array().expect("array");
    assert_eq!(entries.len(), 1, "{shown}");
    assert_eq!(entries[0]["counter"], "caller");
    assert_eq!(entries[0]["key"], "6.6.6.6");
    let left = entries[0]["remaining_ms"].as_i64().expect("remaining");
    assert!(left > 0 && left <= 600_000, "{shown}");
    let node = zk.for_counter("caller").read_blacklist().await.expect("zk");
    assert_eq!(node.expect("blacklist node").value.entries.len(), 1);

    let out = hotctl(&t, &["unban", "caller", "6.6.6.6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("lifted 1 of 1"));
    assert_eq!(
        json(&hotctl(&t, &["blacklist", "caller", "--json"])),
        Value::Array(vec![])
    );
    let node = zk.for_counter("caller").read_blacklist().await.expect("zk");
    assert!(node.expect("blacklist node").value.entries.is_empty());
    zk.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_without_a_rule_or_unknown_ones_are_refused_by_name() {
    let t = topology("hotctl-unknown-counter");
    for (args, expect) in [
        (&["blacklist", "hot"][..], "has no threshold rule"),
        (&["blacklist", "callers"][..], "has no counter `callers`"),
        (&["unban", "callers", "x"][..], "has no counter `callers`"),
        (
            &["hot", "--counter", "callers"][..],
            "has no counter `callers`",
        ),
    ] {
        let out = hotctl(&t, args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_json_prints_one_line_per_hot_set_update() {
    let t = topology("hotctl-watch");
    let zk = Zk::connect(&t)
        .await
        .expect("ZooKeeper")
        .for_counter("caller");
    publish_two_tasks(&zk, &t).await;
    let file = testing::write_topology(&t);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotctl"))
        .arg("--topology")
        .arg(file)
        .args(["watch", "--counter", "caller", "--json", "--top", "3"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run hotctl watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first: Value =
        serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("JSON");
    assert_eq!(first["counter"], "caller");
    assert_eq!(first["changed"], serde_json::json!([0, 1]));
    assert_eq!(first["items"].as_array().map(Vec::len), Some(3));

    publish_hot_list(&zk, &t.name, 1, &["new".to_string()], "test")
        .await
        .expect("publish");
    let second: Value =
        serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("JSON");
    assert_eq!(second["changed"], serde_json::json!([1]));
    assert_eq!(second["versions"]["1"], 1);
    let _ = child.kill();
    let _ = child.wait();
    zk.delete_all().await.expect("clean up");
}
