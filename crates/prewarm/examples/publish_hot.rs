//! Publishes synthetic hot lists for benchmarks and demos without Kafka or hot-counter.
//!
//! Reads keys (one per line) from stdin and deals them round-robin into `--tasks` tasks, the
//! way a keyed Kafka topic spreads products over partitions, then publishes each task's hot
//! list as a new version (counts decrease with position). `--fresh` first deletes the
//! topology's subtree, warmed marks included.
//!
//! ```text
//! seq 1 100000 | cargo run --release -p prewarm --example publish_hot -- \
//!     --topology topology/default.toml --tasks 20 --fresh
//! ```

use std::io::BufRead;

use anyhow::Context;
use clap::Parser;
use hotkeys::Topology;
use hotkeys::cli::TopologyArg;
use hotkeys::zk::Zk;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    topology: TopologyArg,
    /// Tasks to spread the keys over.
    #[arg(long)]
    tasks: u32,
    /// Delete the topology's subtree in ZooKeeper first.
    #[arg(long)]
    fresh: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let topology = Topology::load(&cli.topology.resolve().map_err(anyhow::Error::msg)?)?;
    anyhow::ensure!(cli.tasks > 0, "--tasks must be at least 1");
    let mut per_task: Vec<Vec<String>> = vec![Vec::new(); cli.tasks as usize];
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let key = line.context("reading keys from stdin")?.trim().to_string();
        if !key.is_empty() {
            per_task[i % cli.tasks as usize].push(key);
        }
    }
    let zk = Zk::connect(&topology).await?;
    if cli.fresh {
        zk.delete_all().await?;
    }
    let mut total = 0;
    for (task, keys) in per_task.into_iter().enumerate() {
        let task = task as u32;
        total += keys.len();
        let version = publish(&zk, &topology.name, task, &keys).await?;
        eprintln!("task {task}: {} keys, version {version}", keys.len());
    }
    eprintln!(
        "published {total} keys over {} tasks of {}",
        cli.tasks, topology.name
    );
    Ok(())
}

/// Publishes `keys` as the next version of `task`'s hot list.
async fn publish(zk: &Zk, topology: &str, task: u32, keys: &[String]) -> anyhow::Result<i32> {
    Ok(hotkeys::testing::publish_hot_list(zk, topology, task, keys, "publish_hot").await?)
}
