//! `hotctl keys` and `hotctl diff` against a redis-server the test starts itself, and (for
//! `diff`) the stack's ZooKeeper. Skipped when ZooKeeper is unreachable, except with `CI`.

mod common;

use std::time::Duration;

use common::{hotctl, hotctl_logging};
use hotkeys::Topology;
use hotkeys::hotlist::{Warmed, now_ms};
use hotkeys::redis::CacheNodes;
use hotkeys::testing::{self, RedisServer};
use serde_json::Value;

/// Runs `hotctl --topology <t> ARGS` and parses its JSON output.
fn hotctl_json(t: &Topology, args: &[&str]) -> Value {
    let out = hotctl(t, args);
    assert!(
        out.status.success(),
        "hotctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("hotctl printed JSON")
}

fn listed(doc: &Value) -> Vec<String> {
    let mut keys: Vec<String> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_verify_lists_live_keys_with_their_ttl_and_excludes_expired_ones() {
    // Without active expiry an expired key stays in the node until something touches it,
    // as it would on a busy node between two expiry cycles.
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let mut t = testing::topology("hotctl-keys");
    t.redis.nodes = vec![server.url()];
    let key = |k: &str| hotkeys::redis::cache_key(&t.redis, k);
    let cache = CacheNodes::connect(&t.redis).await.unwrap();
    let hour = Duration::from_secs(3600);
    cache
        .set_many(&[(key("1"), "{}", hour), (key("2"), "{}", hour)])
        .await
        .unwrap();
    cache
        .set_many(&[(key("3"), "{}", Duration::from_millis(1))])
        .await
        .unwrap();
    // Not the warmed key set: SCAN MATCH must leave it out.
    redis::cmd("SET")
        .arg("unrelated")
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let physically: usize = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(physically, 4, "the expired key is still in the node");

    let verified = hotctl_json(&t, &["keys", "--verify", "--json"]);
    assert_eq!(listed(&verified), vec![key("1"), key("2")]);
    for k in verified["keys"].as_array().unwrap() {
        let ttl = k["ttl_ms"].as_i64().unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{k}");
        assert_eq!(k["node"], server.url());
    }
    let fast = hotctl_json(&t, &["keys", "--json"]);
    let fast = listed(&fast);
    assert!(
        fast.contains(&key("1")) && fast.contains(&key("2")),
        "{fast:?}"
    );
    assert!(!fast.contains(&"unrelated".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_tells_warm_missing_and_expired_hot_keys_apart() {
    let server = RedisServer::start();
    let mut t = testing::topology("hotctl-diff");
    t.redis.nodes = vec![server.url()];
    t.redis.ttl = Duration::from_secs(60);
    let Some(zk) = testing::zookeeper(&t).await else {
        return;
    };
    let hot = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    testing::publish_hot_list(&zk, &t.name, 0, &hot(&["1", "2", "3"]), "test")
        .await
        .unwrap();
    testing::publish_hot_list(&zk, &t.name, 1, &hot(&["4", "5"]), "test")
        .await
        .unwrap();
    // Task 1 was warmed longer ago than redis.ttl: its absent keys have expired.
    let epoch = zk.read_hot(1).await.unwrap().expect("task 1's list").epoch;
    let long_ago = Warmed {
        hot_version: 0,
        hot_epoch: epoch,
        at_ms: now_ms() - 120_000,
        by: "test".into(),
        rows: 2,
        missing: 0,
        took_ms: 0,
    };
    zk.mark_warmed(1, &long_ago).await.unwrap();
    let cache = CacheNodes::connect(&t.redis).await.unwrap();
    let key = |k: &str| hotkeys::redis::cache_key(&t.redis, k);
    cache
        .set_many(&[(key("1"), "{}", t.redis.ttl), (key("4"), "{}", t.redis.ttl)])
        .await
        .unwrap();

    let doc = hotctl_json(&t, &["diff", "--json"]);
    assert_eq!(
        (
            doc["warm"].as_u64(),
            doc["missing"].as_u64(),
            doc["expired"].as_u64()
        ),
        (Some(2), Some(2), Some(1)),
        "{doc:#}"
    );
    let status_of = |hot_key: &str| {
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["hot_key"] == hot_key)
            .map(|k| k["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(status_of("1"), "warm");
    assert_eq!(status_of("2"), "missing");
    assert_eq!(status_of("5"), "expired");
    let one_task = hotctl_json(&t, &["diff", "0", "--json"]);
    assert_eq!(one_task["keys"].as_array().unwrap().len(), 3);
    let _ = zk.delete_all().await;
}

/// A password no output may contain.
const PLANTED: &str = "planted-Pw-5b1e";

/// Runs `hotctl --topology <t> ARGS` with every log level on; exit code, stdout, stderr.
/// Fails the test if the planted password appears in either stream.
fn hotctl_traced(t: &Topology, args: &[&str]) -> (i32, String, String) {
    let out = hotctl_logging(t, args, "trace");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains(PLANTED),
            "hotctl {args:?} shows the password on {name}:\n{text}"
        );
    }
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// A password-protected ring of two primaries, the first with a backup, the first killed;
/// 40 keys written while it is down (its share lands on the backup). Returns the servers
/// (kept alive), the topology and the keys' hot-key names.
async fn ring_with_a_primary_down(name: &str) -> (Vec<RedisServer>, Topology, Vec<String>) {
    let start = || RedisServer::start_with(&["--requirepass", PLANTED]);
    let (mut a, b, c) = (start(), start(), start());
    let url = |s: &RedisServer| format!("redis://:{PLANTED}@127.0.0.1:{}", s.port);
    let mut t = testing::topology(name);
    t.redis.mode = hotkeys::config::RedisMode::Ring;
    t.redis.nodes = vec![url(&a), url(&b)];
    t.redis.backups = [(url(&a), url(&c))].into();
    t.redis.health_every = Duration::from_millis(100);
    t.redis.health_failures = 1;
    a.kill();
    let cache = CacheNodes::connect(&t.redis).await.unwrap();
    let hot: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    let entries: Vec<(String, &str, Duration)> = hot
        .iter()
        .map(|k| {
            (
                hotkeys::redis::cache_key(&t.redis, k),
                "{}",
                Duration::from_secs(3600),
            )
        })
        .collect();
    cache.set_many(&entries).await.unwrap();
    let on_primary_a = hot
        .iter()
        .filter(|k| cache.node_for(&hotkeys::redis::cache_key(&t.redis, k)) == 0)
        .count();
    assert!(on_primary_a > 0, "some keys belong to the killed primary");
    (vec![a, b, c], t, hot)
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_with_a_ring_primary_down_counts_its_keys_on_the_backup_says_so_and_exits_1() {
    let (servers, t, hot) = ring_with_a_primary_down("hotctl-keys-outage").await;
    let down_node = format!("redis://127.0.0.1:{}", servers[0].port);
    let backup_node = format!("redis://127.0.0.1:{}", servers[2].port);

    let (code, stdout, _) = hotctl_traced(&t, &["keys", "--verify", "--json"]);
    assert_eq!(code, 1, "a partial result exits 1:\n{stdout}");
    let doc = json_of(&stdout);
    assert_eq!(doc["count"].as_u64(), Some(hot.len() as u64), "{doc:#}");
    assert_eq!(doc["complete"], false);
    assert_eq!(doc["down"][0]["node"], down_node.as_str(), "{doc:#}");
    assert_eq!(doc["down"][0]["read_on"], backup_node.as_str(), "{doc:#}");

    let (code, stdout, stderr) = hotctl_traced(&t, &["keys"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains(&format!("{down_node} is down"))
            && stdout.contains(&format!("read on its backup {backup_node}")),
        "{stdout}"
    );
    assert!(stderr.contains("partial result"), "{stderr}");

    let (code, stdout, _) = hotctl_traced(&t, &["keys", "--limit", "5", "--json"]);
    assert_eq!(code, 1);
    let doc = json_of(&stdout);
    assert_eq!(
        (doc["count"].as_u64(), doc["limited"].as_bool()),
        (Some(5), Some(true)),
        "{doc:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_with_a_ring_primary_down_reads_its_keys_on_the_backup_says_so_and_exits_1() {
    let (servers, t, hot) = ring_with_a_primary_down("hotctl-diff-outage").await;
    let Some(zk) = testing::zookeeper(&t).await else {
        return;
    };
    testing::publish_hot_list(&zk, &t.name, 0, &hot, "test")
        .await
        .unwrap();

    let (code, stdout, _) = hotctl_traced(&t, &["diff", "--json"]);
    assert_eq!(code, 1, "a partial result exits 1:\n{stdout}");
    let doc = json_of(&stdout);
    assert_eq!(doc["warm"].as_u64(), Some(hot.len() as u64), "{doc:#}");
    assert_eq!(doc["unknown"].as_u64(), Some(0), "{doc:#}");
    assert_eq!(
        doc["down"][0]["node"],
        format!("redis://127.0.0.1:{}", servers[0].port).as_str(),
        "{doc:#}"
    );
    let (code, stdout, _) = hotctl_traced(&t, &["diff"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("its keys were read on its backup"),
        "{stdout}"
    );
    let _ = zk.delete_all().await;
}
