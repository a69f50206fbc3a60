//! The Redis node set a cache write goes to, built from the topology's `[redis]` section.
//!
//! [`CacheNodes`] owns the connections and the placement rule of one data centre's cache:
//!
//! - `single`: one node takes every key;
//! - `ring`: client-side placement over several independent nodes with a [`Ring`] that
//!   reproduces the site's other clients (PECL memcache, Flexihash, twemproxy ketama);
//! - `cluster`: Redis Cluster through the redis crate's cluster client;
//! - `sentinel`: the master a set of Redis Sentinels names; after a failover (a node that
//!   is gone or answers `READONLY`) the sentinels are asked again, and the caller's retry
//!   reaches the new master.
//!
//! In `single` and `ring` mode a primary may have a backup that serves its keys while it is
//! down ([`crate::redis::failover`]). Every value goes through [`crate::redis::codec`] on its way in
//! and out, so large values are stored compressed.
//!
//! Writes are pipelined per node. A `set` goes to the node the placement picks; a `delete`
//! goes to every node of a ring and succeeds only when every node answered, because "first
//! OK wins" would hide a failure on the node that actually holds the key. Writes to the same
//! key keep their order, so a batch of mixed sets and deletes lands as it was issued.
//!
//! A refresh (`Write::Refresh`) is a compare-and-set in one Lua script: it overwrites only
//! the value whose digest was read before the row was loaded ([`CacheNodes::digest`]), so a
//! value the application wrote meanwhile is never replaced by an older row.
//!
//! The connections raise the redis crate's 500 ms default response timeout to
//! `redis.timeout`: a pipeline of a thousand values easily takes longer under load.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{join_all, try_join_all};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use crate::redis::codec::{self, Codec, CodecError};
use crate::config::{RedisConfig, RedisMode};
use crate::redis::failover::{Failover, State};
use crate::redis::ring::{Ring, RingError};
use crate::config::secret::NodeUrl;

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

/// One cache write. Writes to the same key are applied in the order they are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    Set {
        key: &'a str,
        value: &'a [u8],
        /// `None` keeps the key without expiry.
        ttl: Option<Duration>,
        /// `SET … NX`: leave a value that is already there (prewarm must not overwrite a
        /// fresher value the application wrote meanwhile).
        only_if_absent: bool,
    },
    /// Overwrites the value whose [`CacheNodes::digest`] was `seen`, or a key that has gone
    /// since (expired or evicted); leaves any other value alone, as written by someone
    /// after the digest was read. One Lua script, so nothing can come in between.
    Refresh {
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        seen: &'a str,
    },
    /// Removed from every node that could hold it.
    Delete { key: &'a str },
}

/// The SHA-1 of a key's stored bytes, or nil when it has none: what a refresh compares.
const DIGEST_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v then return redis.sha1hex(v) end return false";

/// `Write::Refresh`: ARGV = value, TTL in ms, the digest seen. Returns 1 when it wrote,
/// nil when the value changed since the digest was read.
const REFRESH_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and redis.sha1hex(v) ~= ARGV[3] then return false end \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";

/// What a batch of writes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Sets and refreshes that stored their value.
    pub written: usize,
    /// `NX` sets that found a value already there, and refreshes that found a newer one,
    /// and left it.
    pub already_present: usize,
    /// Deletes that removed the key from at least one node.
    pub deleted: usize,
}

/// A connection to one node or to the whole cluster; cheap to clone, shared by clones.
///
/// The replication queue and the receiver's stream state live on [`CacheNodes::home`].
#[derive(Clone)]
pub enum RedisConn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Node(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Node(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
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

impl RedisConn {
    /// Connects to the one node at `url` (e.g. `sync.state`).
    pub async fn connect(url: &str, timeout: Duration) -> Result<RedisConn, CacheError> {
        Ok(RedisConn::Node(connect_node(url, timeout).await?))
    }
}

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
    pipeline: usize,
    codec: Codec,
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

/// The master a set of sentinels names, re-resolved after a failover.
struct SentinelMaster {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the master as last resolved.
    current: Mutex<ConnectionManager>,
    /// The sentinels (`nodes`), the master's name and the timeouts.
    cfg: RedisConfig,
}

impl SentinelMaster {
    async fn connect(cfg: &RedisConfig) -> Result<SentinelMaster, CacheError> {
        let client = SentinelClient::build(
            cfg.nodes.clone(),
            cfg.master.clone(),
            None,
            SentinelServerType::Master,
        )
        .map_err(|e| CacheError::Config(format!("redis sentinels: {e}")))?;
        let client = tokio::sync::Mutex::new(client);
        let current = Mutex::new(resolve_master(&client, cfg).await?);
        Ok(SentinelMaster {
            client,
            current,
            cfg: cfg.clone(),
        })
    }

    fn current(&self) -> ConnectionManager {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the sentinels for the master again after `error`, when the error says the
    /// master may have moved. A failure here leaves the old connection; the caller's retry
    /// tries again.
    async fn follow(&self, error: &RedisError) {
        let moved = connection_failed(error)
            || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
        if !moved {
            return;
        }
        let master = &self.cfg.master;
        match resolve_master(&self.client, &self.cfg).await {
            Ok(conn) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = conn;
                metrics::counter!("hotkeys_cache_sentinel_resolves_total").increment(1);
                tracing::info!(master, "asked the sentinels for the master again");
            }
            Err(e) => tracing::warn!(master, error = %e, "sentinels name no reachable master"),
        }
    }
}

async fn resolve_master(
    client: &tokio::sync::Mutex<SentinelClient>,
    cfg: &RedisConfig,
) -> Result<ConnectionManager, CacheError> {
    let unreachable = |source| CacheError::Connect {
        node: format!(
            "master `{}` of sentinels {}",
            cfg.master,
            NodeUrl::join(&cfg.nodes)
        ),
        source,
    };
    let master = client
        .lock()
        .await
        .async_get_client()
        .await
        .map_err(unreachable)?;
    ConnectionManager::new_with_config(master, manager_config(cfg.timeout))
        .await
        .map_err(unreachable)
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
        match &self.nodes {
            Nodes::Independent {
                failover: Some(f), ..
            } => f.has_backup(p).then(|| f.state(p)),
            _ => None,
        }
    }

    /// The connection that holds the replication queue and the receiver's stream state:
    /// the first node, or the cluster.
    pub fn home(&self) -> RedisConn {
        match &self.nodes {
            Nodes::Independent { conns, .. } => RedisConn::Node(conns[0].clone()),
            Nodes::Cluster(c) => RedisConn::Cluster(c.clone()),
            Nodes::Sentinel(m) => RedisConn::Node(m.current()),
        }
    }

    /// Name of the node behind [`CacheNodes::home`], for errors.
    pub fn home_name(&self) -> &NodeUrl {
        &self.names[0]
    }

    /// `SET key value PX ttl NX` for every entry: keys already present are left alone.
    pub async fn set_many_nx<K, V>(
        &self,
        entries: &[(K, V, Duration)],
    ) -> Result<WriteOutcome, CacheError>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        self.set_many_with(entries, true).await
    }

    /// `SET key value PX ttl` for every entry, overwriting what is there.
    pub async fn set_many<K, V>(
        &self,
        entries: &[(K, V, Duration)],
    ) -> Result<WriteOutcome, CacheError>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        self.set_many_with(entries, false).await
    }

    async fn set_many_with<K, V>(
        &self,
        entries: &[(K, V, Duration)],
        only_if_absent: bool,
    ) -> Result<WriteOutcome, CacheError>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let writes: Vec<Write<'_>> = entries
            .iter()
            .map(|(k, v, ttl)| Write::Set {
                key: k.as_ref(),
                value: v.as_ref(),
                ttl: Some(*ttl),
                only_if_absent,
            })
            .collect();
        self.apply(&writes).await
    }

    /// Removes `key` from every node that could hold it. Succeeds only when every node
    /// answered; answers whether any node had the key.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let outcome = self.apply(&[Write::Delete { key }]).await?;
        Ok(outcome.deleted > 0)
    }

    /// The value of `key` on the node that holds it (its backup while it is down), decoded.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match self.read_first(key, redis::cmd("GET").arg(key)).await? {
            Some(stored) => Ok(Some(codec::decode(&stored)?.into_owned())),
            None => Ok(None),
        }
    }

    /// The digest of the bytes `key` holds where [`CacheNodes::get`] would read it, for a
    /// later `Write::Refresh`; `None` when the key is absent.
    pub async fn digest(&self, key: &str) -> Result<Option<String>, CacheError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(DIGEST_SCRIPT).arg(1).arg(key);
        match self.read_first(key, &cmd).await? {
            Some(digest) => Ok(Some(String::from_utf8_lossy(&digest).into_owned())),
            None => Ok(None),
        }
    }

    /// The first non-nil answer to `cmd` about `key`: on its node, then on its backup.
    async fn read_first(&self, key: &str, cmd: &Cmd) -> Result<Option<Vec<u8>>, CacheError> {
        let primary = self.node_for(key);
        let nodes = match &self.nodes {
            Nodes::Independent {
                failover: Some(f), ..
            } => f.read_targets(primary),
            _ => vec![primary],
        };
        for node in nodes {
            match cmd
                .query_async::<Option<Vec<u8>>>(&mut self.conn(node))
                .await
            {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(source) => return Err(self.failed(node, source).await),
            }
        }
        Ok(None)
    }

    /// The remaining TTL of each of `keys` where a read of it would look (see
    /// [`CacheNodes::get`]), in the order given. Fails if a node it asks does not answer.
    pub async fn remaining(&self, keys: &[String]) -> Result<Vec<Remaining>, CacheError> {
        let mut readable = self.remaining_readable(keys).await?;
        if let Some(e) = readable.unreadable.pop() {
            return Err(e);
        }
        Ok(readable
            .ttls
            .into_iter()
            .map(|t| t.unwrap_or(Remaining::Absent))
            .collect())
    }

    /// Like [`CacheNodes::remaining`], but goes on past nodes that do not answer: the keys
    /// of a primary that fails are asked on its backup, if it has one. A key that no node
    /// could be asked about is `None`; `unreadable` holds each node's failure.
    pub async fn remaining_readable(&self, keys: &[String]) -> Result<Readable, CacheError> {
        if let Nodes::Cluster(conn) = &self.nodes {
            // A cluster routes each key to its slot's owner; no cross-slot pipelines.
            let ttls = try_join_all(keys.iter().map(|k| {
                let mut conn = conn.clone();
                async move {
                    redis::cmd("PTTL")
                        .arg(k)
                        .query_async::<i64>(&mut conn)
                        .await
                }
            }))
            .await
            .map_err(|source| self.command_error(0, source))?;
            return Ok(Readable {
                ttls: ttls
                    .into_iter()
                    .map(|t| Some(Remaining::from_pttl(t)))
                    .collect(),
                unreadable: Vec::new(),
            });
        }
        let failover = match &self.nodes {
            Nodes::Independent { failover, .. } => failover.as_ref(),
            _ => None,
        };
        let mut targets: Vec<Vec<usize>> = keys
            .iter()
            .map(|k| {
                let p = self.node_for(k);
                failover.map_or_else(|| vec![p], |f| f.read_targets(p))
            })
            .collect();
        let mut found: Vec<Option<Remaining>> = vec![None; keys.len()];
        let mut unreadable = Vec::new();
        let mut failed = HashSet::new();
        // Round `r` asks each key not found yet on its `r`-th node, one pipeline per node.
        // A node that fails hands its keys on to its backup in the next round.
        for round in 0..3 {
            let mut per_node: HashMap<usize, Vec<usize>> = HashMap::new();
            for (i, t) in targets.iter().enumerate() {
                if matches!(found[i], None | Some(Remaining::Absent))
                    && let Some(&node) = t.get(round)
                {
                    per_node.entry(node).or_default().push(i);
                }
            }
            for (node, idx) in per_node {
                let asked: Vec<&str> = idx.iter().map(|&i| keys[i].as_str()).collect();
                let result = match failed.contains(&node) {
                    true => None,
                    false => Some(pttls(&mut self.conn(node), &asked, self.pipeline).await),
                };
                match result {
                    Some(Ok(ttls)) => {
                        for (i, ttl) in idx.into_iter().zip(ttls) {
                            found[i] = Some(ttl);
                        }
                        continue;
                    }
                    Some(Err(source)) => {
                        let e = self.failed(node, source).await;
                        if !e.is_unreachable() {
                            return Err(e);
                        }
                        failed.insert(node);
                        unreadable.push(e);
                    }
                    None => {}
                }
                let backup = failover.and_then(|f| f.backup_index(node));
                for i in idx {
                    if let Some(b) = backup.filter(|b| !targets[i].contains(b)) {
                        targets[i].push(b);
                    }
                }
            }
        }
        Ok(Readable {
            ttls: found,
            unreadable,
        })
    }

    /// The primaries whose keys their backup serves now, by name, with the backup's name.
    pub fn failed_over(&self) -> Vec<(String, String)> {
        let Nodes::Independent {
            failover: Some(f), ..
        } = &self.nodes
        else {
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

    /// Applies `writes`: each set on its node, each delete on every node of a ring. One
    /// pipeline per node at a time (at most `redis.pipeline` commands), nodes in parallel;
    /// fails if any node fails, after the others finished. A primary that is down is
    /// replaced by its backup, which remembers the keys written for the fail-back.
    pub async fn apply(&self, writes: &[Write<'_>]) -> Result<WriteOutcome, CacheError> {
        Ok(self.apply_tracked(writes).await?.outcome)
    }

    /// [`CacheNodes::apply`], also telling which sets and refreshes stored their value (for
    /// replicating exactly what was written).
    pub async fn apply_tracked(&self, writes: &[Write<'_>]) -> Result<Applied, CacheError> {
        let tallies = self.run_all(writes).await;
        merge(tallies, writes.len())
    }

    async fn run_all(&self, writes: &[Write<'_>]) -> Vec<Result<Tally, CacheError>> {
        match &self.nodes {
            Nodes::Independent {
                conns,
                ring,
                failover,
            } => {
                let _routing = match failover {
                    Some(f) => Some(f.routing().await),
                    None => None,
                };
                let primaries = ring.as_ref().map_or(1, Ring::len);
                let target = |p: usize| match failover {
                    Some(f) => {
                        let t = f.write_target(p);
                        (t.node, t.track)
                    }
                    None => (p, None),
                };
                let mut per_node: Vec<Vec<(usize, Option<&str>)>> = vec![Vec::new(); conns.len()];
                for (i, write) in writes.iter().enumerate() {
                    match write {
                        Write::Set { key, .. } | Write::Refresh { key, .. } => {
                            let p = ring.as_ref().map_or(0, |r| r.node_for(key.as_bytes()));
                            let (node, track) = target(p);
                            per_node[node].push((i, track));
                        }
                        Write::Delete { .. } => {
                            for p in 0..primaries {
                                let (node, track) = target(p);
                                per_node[node].push((i, track));
                            }
                        }
                    }
                }
                let runs = per_node
                    .into_iter()
                    .enumerate()
                    .filter(|(_, batch)| !batch.is_empty())
                    .map(|(node, batch)| {
                        self.run_on(node, RedisConn::Node(conns[node].clone()), writes, batch)
                    });
                join_all(runs).await
            }
            Nodes::Sentinel(master) => {
                let batch = (0..writes.len()).map(|i| (i, None)).collect();
                let result = self
                    .run_on(0, RedisConn::Node(master.current()), writes, batch)
                    .await;
                if let Err(CacheError::Command { source, .. }) = &result {
                    master.follow(source).await;
                }
                vec![result]
            }
            Nodes::Cluster(conn) => {
                // A cluster pipeline must stay within one slot; order per key is kept since
                // a key never leaves its slot.
                let mut per_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
                for (i, write) in writes.iter().enumerate() {
                    per_slot
                        .entry(Slot::for_key(write.key().as_bytes()))
                        .or_default()
                        .push(i);
                }
                let runs = per_slot.into_values().map(|batch| {
                    let batch = batch.into_iter().map(|i| (i, None)).collect();
                    self.run_on(0, RedisConn::Cluster(conn.clone()), writes, batch)
                });
                join_all(runs).await
            }
        }
    }

    /// Sends `writes` to one node in pipelines of at most `self.pipeline` commands, one after
    /// the other so that later writes of a key never overtake earlier ones. A write that
    /// names a tracking set (a backup standing in for its primary) also adds its key there.
    async fn run_on(
        &self,
        node: usize,
        mut conn: RedisConn,
        writes: &[Write<'_>],
        batch: Vec<(usize, Option<&str>)>,
    ) -> Result<Tally, CacheError> {
        let mut tally = Tally::default();
        for chunk in batch.chunks(self.pipeline) {
            let mut pipe = redis::pipe();
            for &(i, track) in chunk {
                match writes[i] {
                    Write::Set {
                        key,
                        value,
                        ttl,
                        only_if_absent,
                    } => {
                        let stored = self.codec.encode(value);
                        let cmd = pipe.cmd("SET").arg(key).arg(&*stored);
                        if let Some(ttl) = ttl {
                            // PX 0 is refused by Redis; a sub-millisecond TTL rounds up.
                            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
                        }
                        if only_if_absent {
                            cmd.arg("NX");
                        }
                    }
                    Write::Refresh {
                        key,
                        value,
                        ttl,
                        seen,
                    } => {
                        let stored = self.codec.encode(value);
                        pipe.cmd("EVAL")
                            .arg(REFRESH_SCRIPT)
                            .arg(1)
                            .arg(key)
                            .arg(&*stored)
                            .arg(ttl.as_millis().max(1) as u64)
                            .arg(seen);
                    }
                    Write::Delete { key } => {
                        pipe.cmd("DEL").arg(key);
                    }
                }
                if let Some(track) = track {
                    pipe.cmd("SADD").arg(track).arg(writes[i].key()).ignore();
                }
            }
            let replies: Vec<Value> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|source| self.command_error(node, source))?;
            for (&(i, _), reply) in chunk.iter().zip(replies) {
                match (&writes[i], reply) {
                    (Write::Set { .. } | Write::Refresh { .. }, Value::Nil) => {
                        tally.already_present += 1
                    }
                    (Write::Set { .. } | Write::Refresh { .. }, _) => tally.stored.push(i),
                    (Write::Delete { .. }, Value::Int(n)) if n > 0 => tally.deleted.push(i),
                    (Write::Delete { .. }, _) => {}
                }
            }
        }
        Ok(tally)
    }

    fn conn(&self, node: usize) -> RedisConn {
        match &self.nodes {
            Nodes::Independent { conns, .. } => RedisConn::Node(conns[node].clone()),
            Nodes::Cluster(c) => RedisConn::Cluster(c.clone()),
            Nodes::Sentinel(m) => RedisConn::Node(m.current()),
        }
    }

    fn command_error(&self, node: usize, source: RedisError) -> CacheError {
        let node = match &self.nodes {
            Nodes::Independent { .. } => self.names[node].to_string(),
            Nodes::Cluster(_) => format!("cluster {}", self.shown_names()),
            Nodes::Sentinel(_) => format!("sentinel master {}", self.shown_names()),
        };
        CacheError::Command { node, source }
    }

    /// The error of a failed command; a sentinel set first looks for a new master.
    async fn failed(&self, node: usize, source: RedisError) -> CacheError {
        if let Nodes::Sentinel(master) = &self.nodes {
            master.follow(&source).await;
        }
        self.command_error(node, source)
    }
}

impl Write<'_> {
    /// The key the write is about.
    pub fn key(&self) -> &str {
        match self {
            Write::Set { key, .. } | Write::Refresh { key, .. } | Write::Delete { key } => key,
        }
    }
}

/// What [`CacheNodes::remaining_readable`] could read.
pub struct Readable {
    /// Per key, in the order asked; `None` when no node holding it answered.
    pub ttls: Vec<Option<Remaining>>,
    /// The failure of each node that did not answer.
    pub unreadable: Vec<CacheError>,
}

/// How long a key has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remaining {
    /// Not there (never written, deleted, evicted or expired).
    Absent,
    /// There without expiry.
    Forever,
    /// There for this long.
    Left(Duration),
}

impl Remaining {
    /// From a `PTTL` reply: -2 absent, -1 no expiry, else milliseconds.
    pub fn from_pttl(pttl: i64) -> Remaining {
        match pttl {
            -1 => Remaining::Forever,
            ms if ms >= 0 => Remaining::Left(Duration::from_millis(ms as u64)),
            _ => Remaining::Absent,
        }
    }
}

/// `PTTL` of every key on one connection, `pipeline` keys per round trip.
pub async fn pttls(
    conn: &mut RedisConn,
    keys: &[&str],
    pipeline: usize,
) -> Result<Vec<Remaining>, RedisError> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(pipeline.max(1)) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("PTTL").arg(*k);
        }
        let ttls: Vec<i64> = pipe.query_async(conn).await?;
        out.extend(ttls.into_iter().map(Remaining::from_pttl));
    }
    Ok(out)
}

/// Counts from one node, with the index in the batch of each set that stored its value and
/// of each delete that removed one (a delete reaches every node of a ring and counts once
/// however many nodes had the key).
#[derive(Default)]
struct Tally {
    stored: Vec<usize>,
    already_present: usize,
    deleted: Vec<usize>,
}

/// What [`CacheNodes::apply_tracked`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub outcome: WriteOutcome,
    /// By index of the write: whether it stored its value.
    pub stored: Vec<bool>,
}

/// Adds up the nodes' counts of a batch of `writes` writes, or returns the first failure
/// once every node has finished.
fn merge(results: Vec<Result<Tally, CacheError>>, writes: usize) -> Result<Applied, CacheError> {
    let mut applied = Applied {
        outcome: WriteOutcome::default(),
        stored: vec![false; writes],
    };
    let mut deleted = HashSet::new();
    for result in results {
        let tally = result?;
        applied.outcome.written += tally.stored.len();
        applied.outcome.already_present += tally.already_present;
        for i in tally.stored {
            applied.stored[i] = true;
        }
        deleted.extend(tally.deleted);
    }
    applied.outcome.deleted = deleted.len();
    Ok(applied)
}

fn client(url: &str) -> Result<redis::Client, CacheError> {
    redis::Client::open(url).map_err(|e| {
        CacheError::Config(format!(
            "redis node `{}`: not a valid Redis URL: {e}",
            NodeUrl::new(url)
        ))
    })
}

/// Few, quick reconnection attempts: a node that stays down should fail the command soon,
/// and the callers (shipper, receiver, prewarm, the failover checker) retry on their own.
fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

async fn connect_node(url: &str, timeout: Duration) -> Result<ConnectionManager, CacheError> {
    ConnectionManager::new_with_config(client(url)?, manager_config(timeout))
        .await
        .map_err(|source| CacheError::Connect {
            node: NodeUrl::new(url).to_string(),
            source,
        })
}

/// A connection made at its first command, for nodes that may be down at start.
fn lazy_node(url: &str, timeout: Duration) -> Result<ConnectionManager, CacheError> {
    ConnectionManager::new_lazy_with_config(client(url)?, manager_config(timeout)).map_err(
        |source| CacheError::Connect {
            node: NodeUrl::new(url).to_string(),
            source,
        },
    )
}

async fn connect_cluster(
    seeds: &[String],
    timeout: Duration,
) -> Result<ClusterConnection, CacheError> {
    let client = redis::cluster::ClusterClient::builder(seeds.iter().map(String::as_str))
        .response_timeout(timeout)
        .connection_timeout(timeout)
        .build()
        .map_err(|e| CacheError::Config(format!("redis cluster seeds: {e}")))?;
    client
        .get_async_connection()
        .await
        .map_err(|source| CacheError::Connect {
            node: format!("cluster {}", NodeUrl::join(seeds)),
            source,
        })
}

/// The cache key of a hot key: `redis.key` with `{key}` replaced.
pub fn cache_key(cfg: &RedisConfig, hot_key: &str) -> String {
    cfg.key.replace("{key}", hot_key)
}

/// `redis.ttl` plus a random share of up to `redis.ttl_jitter` of it, so that keys warmed
/// together do not all expire together.
pub fn jittered_ttl(cfg: &RedisConfig) -> Duration {
    let jitter = cfg.ttl_jitter.clamp(0.0, 1.0) * rand::random::<f64>();
    cfg.ttl + cfg.ttl.mul_f64(jitter)
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

    #[test]
    fn cache_key_fills_the_template() {
        let cfg = RedisConfig::default();
        assert_eq!(cache_key(&cfg, "11"), "product:11");
    }

    #[test]
    fn jittered_ttl_stays_within_the_configured_fraction() {
        let cfg = RedisConfig {
            ttl: Duration::from_secs(100),
            ttl_jitter: 0.1,
            ..RedisConfig::default()
        };
        for _ in 0..1000 {
            let ttl = jittered_ttl(&cfg);
            assert!(ttl >= Duration::from_secs(100) && ttl <= Duration::from_secs(110));
        }
    }

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
