//! Reads: a key's value and digest where the placement puts it, and TTL reads (how long
//! keys have left), going on past nodes that do not answer.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::try_join_all;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError};

use super::codec;
use super::connect::RedisConn;
use super::error::CacheError;
use super::failover::Failover;
use super::nodes::CacheNodes;

/// The SHA-1 of a key's stored bytes, or nil when it has none: what a refresh compares.
const DIGEST_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v then return redis.sha1hex(v) end return false";

/// How many nodes a TTL read asks about one key at most, in turn: its read targets (its node,
/// and its backup while it fails back), then the backup a node that fails hands it to.
const ROUNDS: usize = 3;

impl CacheNodes {
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
        let nodes = self
            .failover()
            .map_or_else(|| vec![primary], |f| f.read_targets(primary));
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
        if let Some(conn) = self.cluster() {
            return self.cluster_remaining(conn, keys).await;
        }
        let failover = self.failover();
        let mut search = TtlSearch::new(keys.iter().map(|k| {
            let p = self.node_for(k);
            failover.map_or_else(|| vec![p], |f| f.read_targets(p))
        }));
        // Round `r` asks each key not found yet on its `r`-th node, one pipeline per node.
        // A node that fails hands its keys on to its backup in the next round.
        for round in 0..ROUNDS {
            for (node, idx) in search.due(round) {
                let asked: Vec<&str> = idx.iter().map(|&i| keys[i].as_str()).collect();
                if self.ask(node, &asked, &idx, &mut search).await? {
                    continue;
                }
                search.hand_to_backup(node, idx, failover);
            }
        }
        Ok(Readable {
            ttls: search.found,
            unreadable: search.unreadable,
        })
    }

    /// Asks `node` for the TTLs of `asked` (the keys at `idx`); whether it answered. A node
    /// that is unreachable is remembered and not asked again; any other failure ends the read.
    async fn ask(
        &self,
        node: usize,
        asked: &[&str],
        idx: &[usize],
        search: &mut TtlSearch,
    ) -> Result<bool, CacheError> {
        if search.failed.contains(&node) {
            return Ok(false);
        }
        match pttls(&mut self.conn(node), asked, self.pipeline).await {
            Ok(ttls) => {
                for (&i, ttl) in idx.iter().zip(ttls) {
                    search.found[i] = Some(ttl);
                }
                Ok(true)
            }
            Err(source) => {
                let e = self.failed(node, source).await;
                if !e.is_unreachable() {
                    return Err(e);
                }
                search.failed.insert(node);
                search.unreadable.push(e);
                Ok(false)
            }
        }
    }

    /// A cluster routes each key to its slot's owner; no cross-slot pipelines.
    async fn cluster_remaining(
        &self,
        conn: &ClusterConnection,
        keys: &[String],
    ) -> Result<Readable, CacheError> {
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
        Ok(Readable {
            ttls: ttls
                .into_iter()
                .map(|t| Some(Remaining::from_pttl(t)))
                .collect(),
            unreadable: Vec::new(),
        })
    }
}

/// Where a TTL read stands: per key the nodes to ask in turn and what was found so far.
struct TtlSearch {
    /// Per key, the nodes to ask, one per round.
    targets: Vec<Vec<usize>>,
    found: Vec<Option<Remaining>>,
    unreadable: Vec<CacheError>,
    /// Nodes that were unreachable in an earlier round.
    failed: HashSet<usize>,
}

impl TtlSearch {
    fn new(targets: impl Iterator<Item = Vec<usize>>) -> TtlSearch {
        let targets: Vec<Vec<usize>> = targets.collect();
        TtlSearch {
            found: vec![None; targets.len()],
            targets,
            unreadable: Vec::new(),
            failed: HashSet::new(),
        }
    }

    /// The keys (by index) to ask in `round`, by node: those not found yet that have an
    /// `round`-th node.
    fn due(&self, round: usize) -> HashMap<usize, Vec<usize>> {
        let mut per_node: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, t) in self.targets.iter().enumerate() {
            if matches!(self.found[i], None | Some(Remaining::Absent))
                && let Some(&node) = t.get(round)
            {
                per_node.entry(node).or_default().push(i);
            }
        }
        per_node
    }

    /// The keys `idx` that `node` did not answer for are asked on its backup next round.
    fn hand_to_backup(&mut self, node: usize, idx: Vec<usize>, failover: Option<&Failover>) {
        let backup = failover.and_then(|f| f.backup_index(node));
        for i in idx {
            if let Some(b) = backup.filter(|b| !self.targets[i].contains(b)) {
                self.targets[i].push(b);
            }
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
