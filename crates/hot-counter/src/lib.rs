//! `hot-counter`: a member of the topology's Kafka consumer group that keeps a windowed,
//! bounded count of hot keys per partition (task) and publishes each task's top-N list to
//! ZooKeeper.
//!
//! - [`consumer`]: the Kafka consumer loop: poll, hand-off, publish ticks, shutdown;
//! - [`entry`]: when a task publishes out of turn (a key entering its top N);
//! - [`handoff`]: the batches the loop hands to the counting thread;
//! - [`worker`]: the tasks a worker owns and how one event is counted into them;
//! - [`publish`]: publish rounds, checkpoints, commits, fencing;
//! - [`rebalance`]: librdkafka's rebalance callbacks as task hand-overs;
//! - [`task`]: one task's counters, offsets, publish and restore.
//!
//! Counting itself (`hotkeys::count`), the hot-list format (`hotkeys::hotlist`) and the
//! ZooKeeper layout (`hotkeys::zk`) live in the shared library.

pub mod consumer;
pub mod entry;
pub mod handoff;
pub mod publish;
pub mod rebalance;
pub mod task;
pub mod worker;

pub use consumer::Until;
pub use worker::Summary;

use std::sync::Arc;

use hotkeys::Topology;
use hotkeys::blacklist::Blacklist;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::cli::{Failure, exit};
use hotkeys::kafka::TopicState;
use hotkeys::redis::RedisConn;
use hotkeys::zk::{Zk, ZkError};

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    ZooKeeper(#[from] ZkError),
    #[error("Kafka at {brokers}: {source}")]
    Kafka {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Loop(#[from] consumer::LoopError),
    #[error("Redis for the threshold rules: {0}")]
    Redis(#[from] hotkeys::redis::CacheError),
    #[error("the consumer thread panicked")]
    Panicked,
}

impl Failure for RunError {
    fn exit_code(&self) -> i32 {
        match self {
            RunError::ZooKeeper(ZkError::Unreachable { .. }) | RunError::Kafka { .. } => {
                exit::UNREACHABLE
            }
            RunError::Redis(e) if e.is_unreachable() => exit::UNREACHABLE,
            _ => exit::FAILED,
        }
    }
}

/// Runs one worker until `shutdown` is cancelled or, with [`Until::CaughtUp`], until its
/// partitions are read to the end.
pub async fn run(
    topology: Topology,
    shutdown: CancellationToken,
    until: Until,
) -> Result<Summary, RunError> {
    let zk = Zk::connect(&topology).await?;
    let kafka_error = |source| RunError::Kafka {
        brokers: topology.kafka.brokers.clone(),
        source,
    };
    match hotkeys::kafka::ensure_topic(&topology.kafka)
        .await
        .map_err(kafka_error)?
    {
        TopicState::Created => tracing::info!(
            topic = %topology.kafka.topic,
            partitions = topology.kafka.partitions,
            "created the access topic"
        ),
        TopicState::Exists { partitions } if partitions != topology.kafka.partitions as usize => {
            tracing::warn!(
                topic = %topology.kafka.topic,
                partitions,
                configured = topology.kafka.partitions,
                "the topic's partition count differs from the topology; tasks follow the topic"
            )
        }
        TopicState::Exists { .. } => {}
    }
    if !topology.kafka.dead_letter.is_empty() {
        hotkeys::kafka::ensure_topic_named(&topology.kafka, &topology.kafka.dead_letter, 1)
            .await
            .map_err(kafka_error)?;
    }
    let blacklists = blacklists(&topology).await?;
    let topology = Arc::new(topology);
    let runtime = tokio::runtime::Handle::current();
    let summary = tokio::task::spawn_blocking(move || {
        consumer::run(topology, zk, blacklists, runtime, shutdown, until)
    })
    .await
    .map_err(|_| RunError::Panicked)??;
    Ok(summary)
}

/// The blacklists of the counters with threshold rules; Redis is only needed when there
/// are some.
async fn blacklists(topology: &Topology) -> Result<Vec<Blacklist>, RunError> {
    let counters = topology.counters();
    if counters.iter().all(|c| c.rule.is_none()) {
        return Ok(Vec::new());
    }
    let redis = RedisConn::connect_home(&topology.redis).await?;
    Ok(counters
        .iter()
        .filter_map(|c| Blacklist::new(topology, c, redis.clone()))
        .collect())
}
