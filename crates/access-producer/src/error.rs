//! Why a run failed, and the exit code each failure maps to.

use std::io;
use std::path::PathBuf;

use hotkeys::cli::{Failure, exit};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot open: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{source_name}: cannot read after line {line}: {error}")]
    Read {
        source_name: String,
        line: u64,
        error: io::Error,
    },
    #[error("{at}: {why} (--strict stops at the first malformed line): {text}")]
    Strict {
        at: String,
        why: &'static str,
        text: String,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("Kafka at {brokers} is unreachable: {error}")]
    Unreachable { brokers: String, error: KafkaError },
    #[error("cannot create topic {topic}: {error}")]
    Topic { topic: String, error: KafkaError },
    #[error("invalid Kafka producer settings (check [kafka.producer]): {0}")]
    ProducerConfig(KafkaError),
    #[error("Kafka producer: {0}")]
    Produce(KafkaError),
    #[error("{failed} of {sent} messages failed delivery after retries; first: {first}")]
    Delivery {
        failed: u64,
        sent: u64,
        first: String,
    },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the publishing thread stopped unexpectedly: {0}")]
    Thread(String),
    #[error("cannot serve metrics: {0}")]
    Metrics(String),
}

/// A `synthetic` workload option that cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl Failure for Error {
    /// 1 failed, 2 bad usage, 3 dependency unreachable.
    fn exit_code(&self) -> i32 {
        match self {
            Error::Open { .. }
            | Error::Strict { .. }
            | Error::Spec(_)
            | Error::ProducerConfig(_) => exit::USAGE,
            Error::Unreachable { .. } => exit::UNREACHABLE,
            Error::Topic { error, .. } if is_bad_topic_setting(error) => exit::USAGE,
            Error::Read { .. }
            | Error::Topic { .. }
            | Error::Produce(_)
            | Error::Delivery { .. }
            | Error::Write { .. }
            | Error::Thread(_)
            | Error::Metrics(_) => exit::FAILED,
        }
    }
}

/// Topic creation refused because of the topology's own values (partitions, replication).
fn is_bad_topic_setting(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::AdminOp(
            RDKafkaErrorCode::InvalidPartitions
                | RDKafkaErrorCode::InvalidReplicationFactor
                | RDKafkaErrorCode::InvalidReplicaAssignment
                | RDKafkaErrorCode::InvalidConfig
                | RDKafkaErrorCode::PolicyViolation
                | RDKafkaErrorCode::InvalidTopic
        )
    )
}
