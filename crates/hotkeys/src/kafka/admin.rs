//! Topics, consumer groups and offsets, asked of the brokers: creation of the access topic
//! (never left to broker-side auto-creation), group members, partition counts, end offsets.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::settings::admin_config;
use crate::config::KafkaConfig;

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
    if let Some(partitions) = partition_count_off_runtime(kafka, name).await? {
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
        if partition_count_off_runtime(kafka, name).await? == Some(partitions as usize) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(TopicState::Created)
}

/// [`partition_count`] on a blocking thread: librdkafka's metadata call blocks for up to
/// its timeout, which must never stall a tokio worker.
async fn partition_count_off_runtime(
    kafka: &KafkaConfig,
    topic: &str,
) -> Result<Option<usize>, KafkaError> {
    let (kafka, topic) = (kafka.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || partition_count(&kafka, &topic))
        .await
        .expect("the metadata call does not panic")
}

/// One member of a consumer group, as the group coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub client_id: String,
    pub host: String,
}

/// The members of `group` right now; empty when nobody consumes in it. Runs librdkafka's
/// blocking group call on a blocking thread.
pub async fn group_members(
    kafka: &KafkaConfig,
    group: &str,
) -> Result<Vec<GroupMember>, KafkaError> {
    let (kafka, group) = (kafka.clone(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = admin_config(&kafka).create()?;
        let groups = consumer.fetch_group_list(Some(&group), Duration::from_secs(10))?;
        Ok(groups
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .flat_map(|g| g.members())
            .map(|m| GroupMember {
                client_id: m.client_id().to_string(),
                host: m.client_host().trim_start_matches('/').to_string(),
            })
            .collect())
    })
    .await
    .expect("the group call does not panic")
}

/// Partitions of `topic`, or `None` when it does not exist. Blocks for up to 10 s.
pub fn partition_count(kafka: &KafkaConfig, topic: &str) -> Result<Option<usize>, KafkaError> {
    partition_count_with(&metadata_client(kafka)?, topic, Duration::from_secs(10))
}

/// A client for metadata and watermarks only, for a process that asks often and keeps it
/// (one librdkafka client: its threads and broker connections are made once).
pub fn metadata_client(kafka: &KafkaConfig) -> Result<BaseConsumer, KafkaError> {
    admin_config(kafka).create()
}

fn partition_count_with(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<usize>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| match t.error() {
            None if !t.partitions().is_empty() => Some(t.partitions().len()),
            _ => None,
        }))
}

/// The end offset (high watermark) of every partition of the topology's topic, in partition
/// order; empty when the topic does not exist. Blocking: async callers use `spawn_blocking`.
pub fn end_offsets(kafka: &KafkaConfig) -> Result<Vec<i64>, KafkaError> {
    end_offsets_with(
        &metadata_client(kafka)?,
        &kafka.topic,
        Duration::from_secs(10),
    )
}

/// [`end_offsets`] of `topic` on a kept [`metadata_client`], each broker call within
/// `timeout`. Blocking.
pub fn end_offsets_with(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i64>, KafkaError> {
    let Some(partitions) = partition_count_with(consumer, topic, timeout)? else {
        return Ok(Vec::new());
    };
    (0..partitions as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map(|(_, high)| high)
        })
        .collect()
}
