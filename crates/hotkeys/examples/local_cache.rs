//! An application-side local cache fed by the hot-set subscription: the process keeps the
//! values of the current hot keys in memory, so the hottest reads never leave it.
//!
//! ```text
//! cargo run -p hotkeys --example local_cache -- --topology topology/default.toml [--counter hot]
//! ```
//!
//! On every update it loads the values of keys that became hot from Redis (through the
//! topology's node set and key template), drops keys that cooled down, and prints what
//! changed. A real application would serve reads from `cache` before asking Redis.

use std::collections::HashMap;

use clap::Parser;
use futures::StreamExt;
use hotkeys::cli::TopologyArg;
use hotkeys::config::PRIMARY_COUNTER;
use hotkeys::redis::{CacheNodes, cache_key};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    topology: TopologyArg,
    /// The counter whose hot keys are cached locally.
    #[arg(long, default_value = PRIMARY_COUNTER)]
    counter: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hotkeys::cli::telemetry::init_logs();
    let args = Args::parse();
    let Ok(topology) = args.topology.load() else {
        std::process::exit(hotkeys::cli::exit::USAGE);
    };
    let nodes = CacheNodes::connect(&topology.redis).await?;
    let updates = hotkeys::zk::subscribe::subscribe(&topology, &args.counter)
        .await?
        .into_stream();
    futures::pin_mut!(updates);

    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    while let Some(set) = updates.next().await {
        let hot: HashMap<&str, u64> = set
            .items
            .iter()
            .map(|i| (i.key.as_str(), i.count))
            .collect();
        let before = cache.len();
        cache.retain(|key, _| hot.contains_key(key.as_str()));
        let dropped = before - cache.len();
        let (mut loaded, mut absent) = (0, 0);
        let new: Vec<&str> = hot
            .keys()
            .copied()
            .filter(|k| !cache.contains_key(*k))
            .collect();
        for key in new {
            match nodes.get(&cache_key(&topology.redis, key)).await? {
                Some(value) => {
                    cache.insert(key.to_string(), value);
                    loaded += 1;
                }
                None => absent += 1,
            }
        }
        println!(
            "tasks {:?} changed: {} hot keys, {} cached locally (+{loaded} loaded, -{dropped} cooled, {absent} not in Redis)",
            set.changed,
            hot.len(),
            cache.len(),
        );
    }
    Ok(())
}
