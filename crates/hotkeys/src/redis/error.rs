//! What can go wrong talking to the cache, and which failures a new connection heals.

use redis::{ErrorKind, RedisError};

use super::codec::CodecError;
use super::ring::RingError;

/// What went wrong talking to the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The `[redis]` settings cannot describe a working node set.
    #[error("redis configuration: {0}")]
    Config(String),
    #[error("redis configuration: {0}")]
    Ring(#[from] RingError),
    /// A node could not be reached when the set was built.
    #[error("redis node {node}: cannot connect: {source}")]
    Connect { node: String, source: RedisError },
    /// A node failed or did not answer a command in time.
    #[error("redis node {node}: {source}")]
    Command { node: String, source: RedisError },
    /// A stored value is tagged as compressed but does not decompress.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl CacheError {
    /// Whether the error means a node is down or unreachable rather than a refused command.
    pub fn is_unreachable(&self) -> bool {
        match self {
            CacheError::Connect { .. } => !self.is_refused_login(),
            CacheError::Command { source, .. } => connection_failed(source),
            CacheError::Config(_) | CacheError::Ring(_) | CacheError::Codec(_) => false,
        }
    }

    /// A node refused our credentials (a wrong or missing password): the configuration's
    /// to fix, not worth retrying.
    pub fn is_refused_login(&self) -> bool {
        match self {
            CacheError::Connect { source, .. } | CacheError::Command { source, .. } => {
                source.kind() == redis::ErrorKind::AuthenticationFailed
                    || matches!(source.code(), Some("NOAUTH" | "WRONGPASS"))
            }
            CacheError::Config(_) | CacheError::Ring(_) | CacheError::Codec(_) => false,
        }
    }
}

/// Whether a command failed because the connection did (refused, dropped, timed out), not
/// because the server refused the command: such a failure heals with a new connection.
///
/// A connection dropped in the middle of a reply counts too. redis' multiplexed
/// connection reports that as a parse error, "Unexpected end of input" (its codec does not
/// turn the decoder's end of input into an I/O error, as its other readers do).
pub fn connection_failed(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.kind() == ErrorKind::Parse
            && error
                .detail()
                .is_some_and(|d| d.contains("Unexpected end of input"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_cut_short_by_a_dropped_connection_is_a_connection_failure() {
        let cut = RedisError::from((
            ErrorKind::Parse,
            "parse",
            "Parse error at 0\nUnexpected end of input".to_string(),
        ));
        assert!(connection_failed(&cut));
        let wrong_type = RedisError::from((
            ErrorKind::Parse,
            "parse",
            "\"Response was of incompatible type\" (value was int(1))".to_string(),
        ));
        assert!(!connection_failed(&wrong_type));
    }
}
