//! Kafka, where the access events live: client settings from the topology, and what the
//! tools ask of the brokers (see ARCHITECTURE.md).
//!
//! | file | owns |
//! |---|---|
//! | `settings` | producer, consumer and admin settings; librdkafka's log lines in `tracing` |
//! | `admin` | topic creation, group members, partition counts, end offsets |

mod admin;
mod settings;

pub use admin::{
    GroupMember, TopicState, end_offsets, end_offsets_with, ensure_topic, ensure_topic_named,
    group_members, metadata_client, partition_count,
};
pub use settings::{consumer_config, is_startup_retry, log, producer_config};
