//! Support for the workspace's integration tests (feature `testing`), against the real
//! servers of the local stack (`scripts/stack.sh`, whose `.stack/env` sets the `HOTKEYS_*`
//! overrides). Every crate's `tests/` uses it; a crate's `tests/common` keeps only what is
//! specific to that crate. See `ARCHITECTURE.md` at the repository root.
//!
//! | module | owns |
//! |---|---|
//! | [`skip`] | the one skip policy (fail under `CI`, skip with a message otherwise) and the stack probes |
//! | [`topology`] | topologies isolated under unique names, written for a child process |
//! | [`kafka`] | producing test events, reading a topic's end offsets |
//! | [`wait`] | polling until a condition holds |
//! | [`net`] | free loopback ports, a TCP forwarder a test can cut |
//! | [`redis_server`] | a redis-server or sentinel of a test's own |
//! | [`redis_cluster`] | a throwaway Redis Cluster of a test's own |
//! | [`prometheus`] | scraping and reading a binary's metrics endpoint |

pub mod kafka;
pub mod net;
pub mod prometheus;
pub mod redis_cluster;
pub mod redis_server;
pub mod skip;
pub mod topology;
pub mod wait;

pub use self::kafka::{Record, end_offsets, produce};
pub use self::net::{TcpProxy, free_port};
pub use self::prometheus::{counter_value, metric_total, scrape_metrics, sum_samples};
pub use self::redis_cluster::RedisCluster;
pub use self::redis_server::RedisServer;
pub use self::skip::{kafka_is_up, servers_are_up, unavailable, zookeeper};
pub use self::topology::{
    default_topology_path, publish_hot_list, topology, topology_overrides, unique, write_topology,
};
pub use self::wait::eventually;
