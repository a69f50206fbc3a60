//! What can go wrong with the replication queue and its state node.

use redis::RedisError;

use crate::redis::CacheError;

/// What went wrong with the queue.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("sync queue `{queue}`: {source}")]
    Redis { queue: String, source: RedisError },
    #[error("sync queue `{queue}`: unexpected reply: {message}")]
    Reply { queue: String, message: String },
    /// The node holding the replication state may evict it.
    #[error(
        "replication state on {node}: maxmemory-policy is `{policy}`, which may evict the queue, \
         the batches in flight and the stream records, losing or repeating operations; set \
         `maxmemory-policy noeviction` (or a volatile-* policy) on that Redis, or point \
         sync.state at a Redis that does not evict"
    )]
    Evicting { node: String, policy: String },
}

impl SyncError {
    /// Whether the queue's Redis is down or unreachable.
    pub fn is_unreachable(&self) -> bool {
        match self {
            SyncError::Cache(e) => e.is_unreachable(),
            SyncError::Redis { source, .. } => crate::redis::connection_failed(source),
            SyncError::Reply { .. } | SyncError::Evicting { .. } => false,
        }
    }
}
