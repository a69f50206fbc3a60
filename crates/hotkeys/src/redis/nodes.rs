//! Placement: the nodes of one data centre's cache and the rule that places keys on them.
//!
//! [`CacheNodes`] owns the connections and the placement rule of one data centre's cache:
//!
//! - `single`: one node takes every key;
//! - `ring`: client-side placement over several independent nodes with a [`Ring`] that
//!   reproduces the site's other clients (PECL memcache, Flexihash, twemproxy ketama);
//! - `cluster`: Redis Cluster through the redis crate's cluster client;
//! - `sentinel`: the master a set of Redis Sentinels names ([`super::sentinel`]).
//!
//! In `single` and `ring` mode a primary may have a backup that serves its keys while it is
//! down ([`super::failover`]). This file is the one place that tells the modes apart: the
//! writes ([`super::write`]) and reads ([`super::read`]) ask it where a key goes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use redis::RedisError;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use tokio::sync::RwLockReadGuard;

use super::codec::Codec;
use super::connect::{RedisConn, connect_cluster, connect_node, lazy_node};
use super::error::CacheError;
use super::failover::{Failover, State};
use super::ring::Ring;
use super::sentinel::SentinelMaster;
use crate::config::secret::NodeUrl;
use crate::config::{RedisConfig, RedisMode};

/// A connection to one node of a set, for operator tools that walk every node.
pub struct NodeConn {
    /// The node's URL without credentials.
    pub name: String,
    pub conn: RedisConn,
    /// The node that serves this primary's keys while it is down, if it has one.
    pub backup: Option<String>,
}

/// The nodes of one data centre's cache and the rule that places keys on them.
#[derive(Clone)]
pub struct CacheNodes {
    /// Node URLs as configured, primaries first, then backups; they name nodes in errors
    /// (without credentials).
    names: Vec<NodeUrl>,
    nodes: Nodes,
    /// Commands per pipeline sent to one node.
    pub(super) pipeline: usize,
    pub(super) codec: Codec,
}

#[derive(Clone)]
enum Nodes {
    /// `single` (no ring) or `ring`; connections in the order of `names`.
    Independent {
        conns: Vec<ConnectionManager>,
        ring: Option<Ring>,
        /// Present when some primary has a backup.
        failover: Option<Failover>,
    },
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelMaster>),
}

/// Which nodes one write must reach.
#[derive(Clone, Copy)]
pub(super) enum Reach<'a> {
    /// The node that holds `key` (its backup while it is down).
    Holder(&'a str),
    /// Every node that could hold `key`: each primary of a ring.
    Every(&'a str),
}

impl Reach<'_> {
    fn key(&self) -> &str {
        match self {
            Reach::Holder(key) | Reach::Every(key) => key,
        }
    }
}

/// One node's part of a batch of writes: the writes by index, each with the tracking set a
/// backup standing in for its primary also adds the key to.
pub(super) struct Share<'a> {
    pub node: usize,
    pub conn: RedisConn,
    pub writes: Vec<(usize, Option<&'a str>)>,
}

impl RedisConn {
    /// Connects to the home of `cfg` only (see [`CacheNodes::home`]): the first node, or the
    /// cluster. The replication queue needs nothing else, and must not depend on the other
    /// nodes of a ring being up.
    pub async fn connect_home(cfg: &RedisConfig) -> Result<RedisConn, CacheError> {
        let first = cfg
            .nodes
            .first()
            .ok_or_else(|| CacheError::Config("redis.nodes lists no node".into()))?;
        match cfg.mode {
            RedisMode::Cluster => Ok(RedisConn::Cluster(
                connect_cluster(&cfg.nodes, cfg.timeout).await?,
            )),
            RedisMode::Single | RedisMode::Ring => {
                Ok(RedisConn::Node(connect_node(first, cfg.timeout).await?))
            }
            RedisMode::Sentinel => Ok(RedisConn::Node(
                SentinelMaster::connect(cfg).await?.current(),
            )),
        }
    }
}

impl CacheNodes {
    /// Connects to every node of `cfg`; fails if any node cannot be reached now.
    pub async fn connect(cfg: &RedisConfig) -> Result<CacheNodes, CacheError> {
        Self::connect_with(cfg, false).await
    }

    /// Like [`CacheNodes::connect`], but the nodes of `single` and `ring` mode connect at
    /// their first command: for operator tools that report a node that is down and go on
    /// with the others.
    pub async fn connect_lazily(cfg: &RedisConfig) -> Result<CacheNodes, CacheError> {
        Self::connect_with(cfg, true).await
    }

    async fn connect_with(cfg: &RedisConfig, all_lazy: bool) -> Result<CacheNodes, CacheError> {
        if cfg.nodes.is_empty() {
            return Err(CacheError::Config("redis.nodes lists no node".into()));
        }
        let pipeline = cfg.pipeline.max(1);
        let mut names = cfg.nodes.clone();
        let nodes = match cfg.mode {
            RedisMode::Single | RedisMode::Ring => {
                let ring = match cfg.mode {
                    RedisMode::Ring => Some(Ring::new(cfg.ring, cfg.ketama_hash, &cfg.nodes)?),
                    _ if cfg.nodes.len() == 1 => None,
                    _ => {
                        return Err(CacheError::Config(format!(
                            "mode `single` takes one node, {} given (use `ring` or `cluster`)",
                            cfg.nodes.len()
                        )));
                    }
                };
                Self::independent(cfg, ring, &mut names, all_lazy).await?
            }
            RedisMode::Cluster => Nodes::Cluster(connect_cluster(&cfg.nodes, cfg.timeout).await?),
            RedisMode::Sentinel => Nodes::Sentinel(Arc::new(SentinelMaster::connect(cfg).await?)),
        };
        Ok(CacheNodes {
            names: names.iter().map(NodeUrl::from).collect(),
            nodes,
            pipeline,
            codec: Codec::new(cfg.compress_over, cfg.compress_level),
        })
    }

    /// The connections of `single` / `ring` mode. Primaries with a backup, and the backups,
    /// connect lazily: a primary that is down at start begins on its backup. Every other
    /// node must answer now, unless `all_lazy`. Backups are appended to `names`.
    async fn independent(
        cfg: &RedisConfig,
        ring: Option<Ring>,
        names: &mut Vec<String>,
        all_lazy: bool,
    ) -> Result<Nodes, CacheError> {
        let mut backup_of = Vec::with_capacity(cfg.nodes.len());
        for primary in &cfg.nodes {
            backup_of.push(cfg.backups.get(primary).map(|backup| {
                names.iter().position(|n| n == backup).unwrap_or_else(|| {
                    names.push(backup.clone());
                    names.len() - 1
                })
            }));
        }
        let lazy = |n: usize| all_lazy || n >= cfg.nodes.len() || backup_of[n].is_some();
        let conns = try_join_all(names.iter().enumerate().map(|(n, url)| async move {
            if lazy(n) {
                lazy_node(url, cfg.timeout)
            } else {
                connect_node(url, cfg.timeout).await
            }
        }))
        .await?;
        let failover = match backup_of.iter().any(Option::is_some) {
            true => {
                let shown = names.iter().map(NodeUrl::from).collect();
                Some(Failover::start(conns.clone(), shown, backup_of, cfg).await)
            }
            false => None,
        };
        Ok(Nodes::Independent {
            conns,
            ring,
            failover,
        })
    }

    /// The node URLs: the configured nodes in order (which [`CacheNodes::node_for`] indexes
    /// into), then the backups.
    pub fn nodes(&self) -> &[NodeUrl] {
        &self.names
    }

    /// A connection to every node that can hold keys: each node and backup of a ring, the
    /// master of a sentinel set. A cluster is asked through each configured node, which
    /// therefore must list every primary.
    pub async fn every_node(&self) -> Result<Vec<NodeConn>, CacheError> {
        match &self.nodes {
            Nodes::Independent {
                conns, failover, ..
            } => Ok(conns
                .iter()
                .enumerate()
                .map(|(n, c)| NodeConn {
                    name: self.names[n].to_string(),
                    conn: RedisConn::Node(c.clone()),
                    backup: failover
                        .as_ref()
                        .and_then(|f| f.backup_index(n))
                        .map(|b| self.names[b].to_string()),
                })
                .collect()),
            Nodes::Sentinel(master) => Ok(vec![NodeConn {
                name: format!("sentinel master {}", self.shown_names()),
                conn: RedisConn::Node(master.current()),
                backup: None,
            }]),
            Nodes::Cluster(_) => {
                let mut all = Vec::new();
                for url in &self.names {
                    let conn = connect_node(url.expose(), Duration::from_secs(10)).await?;
                    all.push(NodeConn {
                        name: url.to_string(),
                        conn: RedisConn::Node(conn),
                        backup: None,
                    });
                }
                Ok(all)
            }
        }
    }

    /// Every node, comma-separated, without credentials.
    fn shown_names(&self) -> String {
        self.names
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Index of the node a `set` of `key` goes to. Redis Cluster places keys itself, so a
    /// cluster answers 0: the cluster is one logical node here.
    pub fn node_for(&self, key: &str) -> usize {
        match &self.nodes {
            Nodes::Independent {
                ring: Some(ring), ..
            } => ring.node_for(key.as_bytes()),
            Nodes::Independent { ring: None, .. } | Nodes::Cluster(_) | Nodes::Sentinel(_) => 0,
        }
    }

    /// Where primary `p`'s keys are served from, when it has a backup.
    pub fn failover_state(&self, p: usize) -> Option<State> {
        self.failover()
            .and_then(|f| f.has_backup(p).then(|| f.state(p)))
    }

    /// The connection that holds the replication queue and the receiver's stream state:
    /// the first node, or the cluster.
    pub fn home(&self) -> RedisConn {
        self.conn(0)
    }

    /// Name of the node behind [`CacheNodes::home`], for errors.
    pub fn home_name(&self) -> &NodeUrl {
        &self.names[0]
    }

    /// The primaries whose keys their backup serves now, by name, with the backup's name.
    pub fn failed_over(&self) -> Vec<(String, String)> {
        let Some(f) = self.failover() else {
            return Vec::new();
        };
        (0..self.names.len())
            .filter_map(|p| {
                let backup = f.backup_index(p)?;
                (f.state(p) != State::Up)
                    .then(|| (self.names[p].to_string(), self.names[backup].to_string()))
            })
            .collect()
    }

    /// The backups of a ring, when some primary has one.
    pub(super) fn failover(&self) -> Option<&Failover> {
        match &self.nodes {
            Nodes::Independent { failover, .. } => failover.as_ref(),
            Nodes::Cluster(_) | Nodes::Sentinel(_) => None,
        }
    }

    /// The cluster connection, in `cluster` mode.
    pub(super) fn cluster(&self) -> Option<&ClusterConnection> {
        match &self.nodes {
            Nodes::Cluster(c) => Some(c),
            Nodes::Independent { .. } | Nodes::Sentinel(_) => None,
        }
    }

    /// Held while a batch of writes is placed and runs, so that a primary's fail-back never
    /// comes between (see [`Failover::routing`]).
    pub(super) async fn routing(&self) -> Option<RwLockReadGuard<'_, ()>> {
        match self.failover() {
            Some(f) => Some(f.routing().await),
            None => None,
        }
    }

    /// Splits writes by the node each goes to, given what each must reach: a holder is its
    /// key's node, every node is each primary of a ring; a cluster's writes go by slot (a
    /// cluster pipeline must stay within one slot; order per key is kept since a key never
    /// leaves its slot). Call it under [`CacheNodes::routing`].
    pub(super) fn shares(&self, writes: &[Reach<'_>]) -> Vec<Share<'_>> {
        match &self.nodes {
            Nodes::Independent {
                conns,
                ring,
                failover,
            } => independent_shares(conns, ring.as_ref(), failover.as_ref(), writes),
            Nodes::Sentinel(master) => vec![Share {
                node: 0,
                conn: RedisConn::Node(master.current()),
                writes: (0..writes.len()).map(|i| (i, None)).collect(),
            }],
            Nodes::Cluster(conn) => cluster_shares(conn, writes),
        }
    }

    /// The connection to node `node` (a cluster or a sentinel set is one node here).
    pub(super) fn conn(&self, node: usize) -> RedisConn {
        match &self.nodes {
            Nodes::Independent { conns, .. } => RedisConn::Node(conns[node].clone()),
            Nodes::Cluster(c) => RedisConn::Cluster(c.clone()),
            Nodes::Sentinel(m) => RedisConn::Node(m.current()),
        }
    }

    pub(super) fn command_error(&self, node: usize, source: RedisError) -> CacheError {
        let node = match &self.nodes {
            Nodes::Independent { .. } => self.names[node].to_string(),
            Nodes::Cluster(_) => format!("cluster {}", self.shown_names()),
            Nodes::Sentinel(_) => format!("sentinel master {}", self.shown_names()),
        };
        CacheError::Command { node, source }
    }

    /// After a failed command: a sentinel set looks for a new master.
    pub(super) async fn follow(&self, source: &RedisError) {
        if let Nodes::Sentinel(master) = &self.nodes {
            master.follow(source).await;
        }
    }

    /// The error of a failed command; a sentinel set first looks for a new master.
    pub(super) async fn failed(&self, node: usize, source: RedisError) -> CacheError {
        self.follow(&source).await;
        self.command_error(node, source)
    }
}

/// The shares of `single` and `ring` mode: each write on its primary, or on the backup
/// standing in for it (which also tracks the key for the fail-back).
fn independent_shares<'a>(
    conns: &[ConnectionManager],
    ring: Option<&Ring>,
    failover: Option<&'a Failover>,
    writes: &[Reach<'_>],
) -> Vec<Share<'a>> {
    let primaries = ring.map_or(1, Ring::len);
    let target = |p: usize| match failover {
        Some(f) => {
            let t = f.write_target(p);
            (t.node, t.track)
        }
        None => (p, None),
    };
    let mut per_node: Vec<Vec<(usize, Option<&str>)>> = vec![Vec::new(); conns.len()];
    for (i, write) in writes.iter().enumerate() {
        let on = match write {
            Reach::Holder(key) => {
                let p = ring.map_or(0, |r| r.node_for(key.as_bytes()));
                p..p + 1
            }
            Reach::Every(_) => 0..primaries,
        };
        for p in on {
            let (node, track) = target(p);
            per_node[node].push((i, track));
        }
    }
    per_node
        .into_iter()
        .enumerate()
        .filter(|(_, batch)| !batch.is_empty())
        .map(|(node, writes)| Share {
            node,
            conn: RedisConn::Node(conns[node].clone()),
            writes,
        })
        .collect()
}

/// The shares of a cluster: one per slot.
fn cluster_shares<'a>(conn: &ClusterConnection, writes: &[Reach<'_>]) -> Vec<Share<'a>> {
    let mut per_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
    for (i, write) in writes.iter().enumerate() {
        per_slot
            .entry(Slot::for_key(write.key().as_bytes()))
            .or_default()
            .push(i);
    }
    per_slot
        .into_values()
        .map(|batch| Share {
            node: 0,
            conn: RedisConn::Cluster(conn.clone()),
            writes: batch.into_iter().map(|i| (i, None)).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn single_mode_with_several_nodes_is_a_configuration_error() {
        let cfg = RedisConfig {
            nodes: vec!["redis://127.0.0.1:1".into(), "redis://127.0.0.1:2".into()],
            ..RedisConfig::default()
        };
        let err = CacheNodes::connect(&cfg).await.err().unwrap();
        assert!(matches!(err, CacheError::Config(_)), "{err}");
    }

    #[tokio::test]
    async fn a_ring_with_a_bad_node_address_is_a_configuration_error() {
        let cfg = RedisConfig {
            mode: RedisMode::Ring,
            nodes: vec!["redis://127.0.0.1:6379".into(), "not a node".into()],
            ..RedisConfig::default()
        };
        let err = CacheNodes::connect(&cfg).await.err().unwrap();
        assert!(matches!(err, CacheError::Ring(_)), "{err}");
        assert!(!err.is_unreachable());
    }

    #[tokio::test]
    async fn an_unreachable_node_is_reported_as_unreachable() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let cfg = RedisConfig {
            nodes: vec!["redis://127.0.0.1:1".into()],
            ..RedisConfig::default()
        };
        let err = CacheNodes::connect(&cfg).await.err().unwrap();
        assert!(err.is_unreachable(), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
