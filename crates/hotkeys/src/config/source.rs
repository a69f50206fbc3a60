//! `[source]`: how the hot key is found in an event.

use serde::{Deserialize, Serialize};

use super::error::{Invalid, check};

/// How the hot key is found in an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// JSON pointer into the event; the Kafka message key is used when it is absent.
    pub key: String,
    /// Query parameter holding the key in nginx access-log lines.
    pub query_param: String,
    /// Longer keys are malformed events: counted, sampled in the log, sent to the
    /// dead-letter topic. Bounds what one key costs in memory, hot lists and checkpoints.
    pub max_key_bytes: usize,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            key: "/uri_args/productId".into(),
            query_param: "productId".into(),
            max_key_bytes: 256,
        }
    }
}

impl SourceConfig {
    /// Checks the keys of `[source]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        check(
            !self.key.is_empty() && !self.key.starts_with('/'),
            "source.key",
            "expected a JSON pointer starting with `/`",
        )?;
        check(
            self.max_key_bytes == 0,
            "source.max_key_bytes",
            "expected at least 1",
        )
    }
}
