//! The shared library of the hotkeys pipeline.
//!
//! Every binary of the workspace (`access-producer`, `hot-counter`, `prewarm`, `cache-sync`,
//! `hotctl`) is a thin shell over this crate and its own `lib.rs`. Each concept lives in
//! exactly one module: a folder is named after the system it talks to, and its `mod.rs` is
//! its table of contents; the shared records sit at the top.
//!
//! | module | owns |
//! |---|---|
//! | [`event`] | access-event formats and hot-key extraction (shared record) |
//! | [`hotlist`] | the hot-list JSON published per task, the `warmed` / `lock` / `blacklist` records (shared record) |
//! | [`blacklist`] | threshold rules and the blacklists they keep in Redis and ZooKeeper (shared record) |
//! | [`cli`] | process start shared by every binary: `--topology`, runtime, logs and metrics, signals, exit codes |
//! | [`config`] | the topology file: one file per section, its checks, environment overrides, errors, secrets |
//! | [`count`] | per-task windowed counting: Space-Saving and LRU |
//! | [`zk`] | the ZooKeeper layout (`/hotkeys/<topology>/[counters/<c>/]tasks/<task>/…`), sessions, subscriptions |
//! | [`kafka`] | librdkafka client settings from the topology, topics, groups and offsets |
//! | [`mysql`] | the product catalogue: pool, migrations, seeding, row loading |
//! | [`redis`] | the cache: connections, Sentinel, placement, writes, reads, failover, ring, codec |
//! | [`sync`] | replication operations, the durable Redis-list queue, its state node |
//! | `testing` | (feature `testing`) support for the integration tests: stack probes and their skip policy, isolated topologies, test servers, metrics scraping |
//!
//! ARCHITECTURE.md at the repository root draws how they depend on one another.

pub mod blacklist;
pub mod cli;
pub mod config;
pub mod count;
pub mod event;
pub mod hotlist;
pub mod kafka;
pub mod mysql;
pub mod redis;
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod zk;

pub use config::Topology;
