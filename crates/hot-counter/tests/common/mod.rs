//! What the worker tests share: hot-counter processes, isolated topologies, workloads and
//! ways to read what the workers published.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hotkeys::Topology;
use hotkeys::hotlist::HotList;
use hotkeys::testing::{self, eventually};
use hotkeys::zk::Zk;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};

/// A hot-counter process, killed when dropped.
pub struct Worker {
    pub child: Child,
    log: PathBuf,
}

impl Worker {
    pub fn start(topology: &PathBuf, extra_env: &[(&str, String)], args: &[&str]) -> Worker {
        let log = std::env::temp_dir().join(format!("{}.log", testing::unique("hot-counter")));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hot-counter"));
        cmd.arg("--topology")
            .arg(topology)
            .args(args)
            .env("RUST_LOG", "info,hot_counter=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Worker {
            child: cmd.spawn().expect("spawn hot-counter"),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the worker's latest assignment holds at least one partition.
    pub fn owns_tasks(&self) -> bool {
        self.log()
            .lines()
            .rfind(|l| l.contains("partitions assigned"))
            .is_some_and(|l| !l.contains("tasks=[]"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An isolated topology for `test` with `partitions` tasks; `None` (under the one skip
/// policy, `testing::unavailable`) when the stack is not up.
pub fn topology(test: &str, partitions: u32) -> Option<Topology> {
    let mut t = testing::topology(test);
    if !testing::kafka_is_up(&t.kafka.brokers) || !testing::servers_are_up(&t) {
        return None;
    }
    t.kafka.partitions = partitions;
    t.count.publish_every = Duration::from_millis(500);
    // A killed member is noticed after this; keeps the hand-over test short.
    t.kafka
        .consumer
        .insert("session.timeout.ms".into(), "6000".into());
    Some(t)
}

pub fn zipf_keys(n: usize, keys: u64, s: f64, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let zipf = Zipf::new(keys as f64, s).expect("zipf");
    (0..n)
        .map(|_| (zipf.sample(&mut rng) as u64).to_string())
        .collect()
}

pub fn exact_counts(keys: &[String]) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for k in keys {
        *m.entry(k.clone()).or_insert(0) += 1;
    }
    m
}

/// Every task's current hot list, by task id.
pub async fn hot_lists(zk: &Zk) -> HashMap<u32, (HotList, i32)> {
    zk.hot_lists()
        .await
        .expect("read hot lists")
        .into_iter()
        .map(|v| (v.value.task, (v.value, v.version)))
        .collect()
}

/// Waits until every partition's hot list reflects everything up to its end offset.
pub async fn caught_up(zk: &Zk, topology: &Topology) -> HashMap<u32, (HotList, i32)> {
    let ends = testing::end_offsets(topology);
    eventually(
        120,
        "hot lists to reach the end of every partition",
        || async {
            let lists = hot_lists(zk).await;
            let done = ends.iter().enumerate().all(|(p, &end)| {
                end == 0 || lists.get(&(p as u32)).is_some_and(|(l, _)| l.offset == end)
            });
            done.then_some(lists)
        },
    )
    .await
}

/// Runs one worker with `--until-caught-up` over `t`'s topic to its end.
pub fn run_to_end(t: &Topology) {
    let file = testing::write_topology(t);
    let mut worker = Worker::start(&file, &[], &["--until-caught-up"]);
    let status = worker.child.wait().expect("wait for hot-counter");
    assert!(status.success(), "hot-counter failed:\n{}", worker.log());
}
