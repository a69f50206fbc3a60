//! Redis, the cache in front of MySQL: the node set a cache write goes to, built from the
//! topology's `[redis]` section (see ARCHITECTURE.md).
//!
//! | file | owns |
//! |---|---|
//! | `connect` | connections to one node or a cluster, their timeouts and reconnection |
//! | `sentinel` | following the master a set of Redis Sentinels names |
//! | `nodes` | placement: [`CacheNodes`], the one place that tells the modes apart |
//! | `write` | pipelines of sets, refreshes and deletes, and what they did |
//! | `read` | values, digests and remaining TTLs where the placement puts a key |
//! | `key` | the cache key template and the jittered TTL |
//! | [`failover`] | backups of ring nodes: health checks, failover, fail-back |
//! | [`ring`] | client-side key placement compatible with PECL memcache, Flexihash, ketama |
//! | [`codec`] | the byte format of cached values: plain, or zstd behind a one-byte tag |
//! | `error` | what went wrong, and which failures a new connection heals |

pub mod codec;
mod connect;
mod error;
pub mod failover;
mod key;
mod nodes;
mod read;
pub mod ring;
mod sentinel;
mod write;

pub use connect::RedisConn;
pub use error::{CacheError, connection_failed};
pub use key::{cache_key, jittered_ttl};
pub use nodes::{CacheNodes, NodeConn};
pub use read::{Readable, Remaining, pttls};
pub use write::{Applied, Write, WriteOutcome};
