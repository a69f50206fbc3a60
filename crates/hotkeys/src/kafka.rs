//! librdkafka client settings built from the topology, and creation of the access topic.
//!
//! Our tuning is applied first and the topology's `[kafka.producer]` / `[kafka.consumer]`
//! tables last, so an operator can override anything (SASL, TLS, batching) without code.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// Settings for a throughput-tuned idempotent producer.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        // Bounds what a fast replay keeps in memory while the broker catches up: a million
        // queued messages is half a gigabyte per client, every page of it new to the process.
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "1048576")
        // The Java client's partitioner, so Java and Rust producers agree on placement.
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "120000")
        // librdkafka spaces its first connections by half this back-off; at the default
        // 100 ms a short-lived producer spends 50 ms waiting to reach the partition leader.
        // Later reconnects still back off exponentially up to reconnect.backoff.max.ms.
        .set("reconnect.backoff.ms", "10");
    for (k, v) in &kafka.producer {
        c.set(k, v);
    }
    c
}

/// Settings for a consumer of `group` that stores offsets only when told (at-least-once).
pub fn consumer_config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", "100")
        // librdkafka 2.x backs a partition's fetcher off for a whole second (the default)
        // once its queue is full; a consumer that drains it faster than that then sits idle
        // (librdkafka's defaults read at a third of the rate here).
        .set("fetch.queue.backoff.ms", "10")
        // Per partition, so they bound the worker's memory, not the counter. Chosen from a
        // grid measured with scripts/bench-count.sh (see the README, Benchmarks): 100,000
        // messages and 32 MB made the peak RSS 350–500 MB for no faster reads; 20,000 and
        // 8 MB keep it about 120–145 MB at six partitions; 5,000 and below begin to slow the
        // reads down.
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "8192")
        .set("fetch.message.max.bytes", "1048576");
    for (k, v) in &kafka.consumer {
        c.set(k, v);
    }
    c
}

/// What [`ensure_topic`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    Created,
    Exists { partitions: usize },
}

/// Creates the access topic with the topology's partition count unless it exists.
///
/// The tools never rely on broker-side auto-creation, which would make a one-partition topic.
pub async fn ensure_topic(kafka: &KafkaConfig) -> Result<TopicState, KafkaError> {
    ensure_topic_named(kafka, &kafka.topic, kafka.partitions).await
}

/// Creates `name` with `partitions` (and the topology's replication) unless it exists.
pub async fn ensure_topic_named(
    kafka: &KafkaConfig,
    name: &str,
    partitions: u32,
) -> Result<TopicState, KafkaError> {
    if let Some(partitions) = partition_count(kafka, name)? {
        return Ok(TopicState::Exists { partitions });
    }
    let admin: AdminClient<DefaultClientContext> = admin_config(kafka).create()?;
    let topic = NewTopic::new(
        name,
        partitions as i32,
        TopicReplication::Fixed(i32::from(kafka.replication)),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic = %name, ?code, "cannot create topic");
                });
            }
        }
    }
    // Metadata propagates asynchronously; wait until the broker serves every partition.
    for _ in 0..100 {
        if partition_count(kafka, name)? == Some(partitions as usize) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(TopicState::Created)
}

/// Partitions of `topic`, or `None` when it does not exist.
pub fn partition_count(kafka: &KafkaConfig, topic: &str) -> Result<Option<usize>, KafkaError> {
    let consumer: BaseConsumer = admin_config(kafka).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| match t.error() {
            None if !t.partitions().is_empty() => Some(t.partitions().len()),
            _ => None,
        }))
}

/// Settings for admin and metadata clients: the brokers plus the consumer passthrough, which
/// is where SASL/TLS settings live for clients that are not producers.
fn admin_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("allow.auto.create.topics", "false");
    for (k, v) in kafka
        .consumer
        .iter()
        .filter(|(k, _)| is_connection_setting(k))
    {
        c.set(k, v);
    }
    c
}

fn is_connection_setting(key: &str) -> bool {
    key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.")
}
