//! Topologies isolated for one test: the default topology with this process's overrides,
//! under names no other test uses, so tests share the stack's servers and run in parallel;
//! and what a child process needs to be given one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Topology;

/// The repository's `topology/default.toml`.
pub fn default_topology_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../topology/default.toml")
}

/// A name unique to this test process and call: `<prefix>-<pid>-<n>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The default topology with this process's overrides, isolated under a unique name: its
/// own ZooKeeper subtree, Kafka topic and group, Redis key space and replication queue.
pub fn topology(test: &str) -> Topology {
    let mut t = Topology::load(&default_topology_path()).expect("topology/default.toml loads");
    let id = unique(test);
    t.name = id.clone();
    t.kafka.topic = format!("{id}-access");
    t.kafka.group = format!("{id}-group");
    t.redis.key = format!("{id}:product:{{key}}");
    t.sync.queue = format!("{id}:FIFO");
    t.sync.replicate = vec![format!("{id}:product:")];
    t
}

/// The `HOTKEYS_*` variables of this process that override topology keys: a test removes
/// them from a child's environment so that they cannot point it elsewhere than the topology
/// it is given. The variables holding secrets (`mysql.password_env`, `sync.secret_env`) are
/// not overrides and stay.
pub fn topology_overrides() -> Vec<String> {
    let t = Topology::default();
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("HOTKEYS_"))
        .filter(|k| *k != t.mysql.password_env && *k != t.sync.secret_env)
        .collect()
}

/// Writes `topology` to a fresh file for a child process's `--topology`.
pub fn write_topology(topology: &Topology) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("topology")));
    let text = toml::to_string(topology).expect("topology serializes");
    std::fs::write(&path, text).expect("write topology");
    path
}

/// Publishes `keys`, hottest first, as the next version of `task`'s hot list the way a
/// hot-counter would (with an empty checkpoint); returns the new version. For tests and
/// benchmarks that need hot lists without running the counting pipeline.
pub async fn publish_hot_list(
    zk: &crate::zk::Zk,
    topology: &str,
    task: u32,
    keys: &[String],
    owner: &str,
) -> Result<i32, crate::zk::ZkError> {
    use crate::hotlist::{HotItem, HotList, now_ms};
    zk.ensure_task(task).await?;
    let seen = zk.read_hot(task).await.ok().flatten().map(|h| h.version);
    let n = keys.len() as u64;
    let hot = HotList {
        topology: topology.to_string(),
        task,
        version: i64::from(seen.map_or(0, |v| v + 1)),
        generated_at_ms: now_ms(),
        window_ms: 300_000,
        owner: Some(owner.to_string()),
        events: n * (n + 1) / 2,
        items: keys
            .iter()
            .enumerate()
            .map(|(i, k)| HotItem {
                key: k.clone(),
                count: n - i as u64,
                error: None,
            })
            .collect(),
        ..HotList::default()
    };
    let bytes = serde_json::to_vec(&hot).expect("hot list serializes");
    zk.publish(task, seen, &bytes, Some(b"{}")).await
}
