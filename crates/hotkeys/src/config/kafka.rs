//! `[kafka]`: where the access events live.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{Invalid, check};

/// Where the access events live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Topic of access events, keyed by the hot key.
    pub topic: String,
    /// Partition count used when the tools create the topic; one task per partition.
    pub partitions: u32,
    /// Replication factor used when the tools create the topic.
    pub replication: u16,
    /// Consumer group of the hot-counter workers.
    pub group: String,
    /// Topic that receives malformed events unchanged; empty turns it off.
    pub dead_letter: String,
    /// librdkafka settings for producers (SASL, TLS, tuning); they win over ours.
    pub producer: BTreeMap<String, String>,
    /// librdkafka settings for consumers; they win over ours.
    pub consumer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "access-log".into(),
            partitions: 6,
            replication: 1,
            group: "hot-counter".into(),
            dead_letter: String::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Checks the keys of `[kafka]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        check(
            self.partitions == 0,
            "kafka.partitions",
            "expected at least 1",
        )
    }
}
