//! The shared library of the hotkeys pipeline.
//!
//! Every binary of the workspace (`access-producer`, `hot-counter`, `prewarm`, `cache-sync`,
//! `hotctl`) is a thin shell over this crate and its own `lib.rs`. Each concept lives in
//! exactly one module:
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | process start shared by every binary: `--topology`, runtime, logs and metrics, signals, exit codes |
//! | [`config`] | the topology file, its defaults, environment overrides and errors |
//! | [`event`] | access-event formats and hot-key extraction |
//! | [`count`] | per-task windowed counting: Space-Saving and LRU |
//! | [`hotlist`] | the hot-list JSON published per task, the `warmed` / `lock` / `blacklist` records |
//! | [`blacklist`] | threshold rules and the blacklists they keep in Redis and ZooKeeper |
//! | [`subscribe`] | a stream of a counter's merged hot set, for application-side caches |
//! | [`zk`] | the ZooKeeper layout (`/hotkeys/<topology>/[counters/<c>/]tasks/<task>/…`) and sessions |
//! | [`kafka`] | librdkafka client settings from the topology, topic creation |
//! | [`mysql`] | the product catalogue: pool, migrations, seeding, row loading |
//! | [`ring`] | client-side key placement compatible with PECL memcache, Flexihash, ketama |
//! | [`cache`] | the Redis node set a cache write goes to (single, ring, cluster, sentinel) |
//! | [`failover`] | backups of ring nodes: health checks, failover, fail-back |
//! | [`codec`] | the byte format of cached values: plain, or zstd behind a one-byte tag |
//! | [`secret`] | node URLs shown without their credentials |
//! | [`sync_queue`] | replication operations, the durable Redis-list queue, its state node |
//! | `testing` | (feature `testing`) isolated topologies for integration tests on the local stack |

pub mod blacklist;
pub mod cache;
pub mod cli;
pub mod codec;
pub mod config;
pub mod count;
pub mod event;
pub mod failover;
pub mod hotlist;
pub mod kafka;
pub mod mysql;
pub mod ring;
pub mod secret;
pub mod subscribe;
pub mod sync_queue;
#[cfg(feature = "testing")]
pub mod testing;
pub mod zk;

pub use config::Topology;
