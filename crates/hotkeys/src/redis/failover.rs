//! Backup nodes of a ring (`redis.backups`): health checks, failover and fail-back.
//!
//! Each primary that names a backup gets a checker task that pings it (and its backup)
//! every `redis.health_every`. After `redis.health_failures` failed pings in a row the
//! primary is **down**: the keys it owns are written to and read from its backup, never
//! from the ring's neighbour, so a lost node moves no other node's keys (no avalanche).
//! Every key written to the backup meanwhile is remembered in a Redis set on the backup,
//! [`track_key`], so fail-back copies exactly that primary's keys.
//!
//! When a ping answers again, the primary **recovers**:
//!
//! 1. While no write of this process is in flight (the routing lock), the keys tracked so
//!    far are deleted on the primary: they were all written during the outage, so whatever
//!    the primary kept of them predates the backup's value. Writes then go to the primary
//!    again, and reads try the primary first and the backup second.
//! 2. Tracked keys are taken off the set in batches and copied with `GET` + `PTTL` and
//!    `SET … PX <remaining> NX`: the newest value with its remaining TTL, and a value the
//!    primary received after it came back (from us or another client) is never
//!    overwritten. Each copied key is then deleted from the backup.
//! 3. Once the set is empty the primary is **up** again and the backup is clean.
//!
//! Several processes each run their own checker; they notice a state change within about
//! one `health_every` of each other. A key that a slower process still writes to the backup
//! after step 1 is copied only where the primary has no value of its own.
//!
//! Every state change is logged and counted (`hotkeys_cache_*` metrics, labelled by node).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Value};
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::config::RedisConfig;
use crate::config::secret::NodeUrl;
use crate::redis::ring::NodeAddr;

/// The Redis set, on the backup, of the keys written there while `primary` was down.
pub fn track_key(primary: &str) -> String {
    let name = NodeAddr::parse(primary).map_or_else(|_| primary.to_string(), |a| a.to_string());
    format!("hotkeys:backup-of:{name}")
}

/// Where a primary's keys are served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// The primary serves its keys.
    Up = 0,
    /// The backup serves them and tracks every key written.
    Down = 1,
    /// Tracked keys are being copied back: writes go to the primary, reads fall back to
    /// the backup.
    Recovering = 2,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Down,
            2 => State::Recovering,
            _ => State::Up,
        }
    }

    fn name(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Recovering => "recovering",
        }
    }
}

/// The node a write goes to, and the set that must remember the key when it is a backup.
pub struct WriteTarget<'a> {
    pub node: usize,
    pub track: Option<&'a str>,
}

/// The failover state of a node set; cheap to clone, the checkers stop with the last clone.
#[derive(Clone)]
pub struct Failover {
    shared: Arc<Shared>,
    _checkers: Arc<Checkers>,
}

struct Shared {
    /// Connections of the node set: primaries first, then backups.
    conns: Vec<ConnectionManager>,
    /// Node URLs in the order of `conns`, for logs and metric labels (shown without
    /// credentials).
    names: Vec<NodeUrl>,
    /// Per primary: index of its backup in `conns`, and its [`track_key`].
    backup_of: Vec<Option<(usize, String)>>,
    /// Per primary: a [`State`].
    states: Vec<AtomicU8>,
    /// Held shared by every batch of writes while it routes and runs, and exclusively while
    /// a primary leaves the `down` state, so no write routed to the backup lands after the
    /// primary's stale copies were deleted.
    routing: RwLock<()>,
    every: Duration,
    failures: u32,
    /// Keys copied back per round trip.
    batch: usize,
}

/// Aborts the checker tasks when the last [`Failover`] clone is dropped.
struct Checkers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Checkers {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

impl Failover {
    /// Starts one checker per primary that has a backup. `backup_of[p]` is the index in
    /// `conns` of primary `p`'s backup. A primary that does not answer now, or whose backup
    /// still tracks keys of an earlier outage, starts `down` (and recovers at the first tick
    /// it answers).
    pub async fn start(
        conns: Vec<ConnectionManager>,
        names: Vec<NodeUrl>,
        backup_of: Vec<Option<usize>>,
        cfg: &RedisConfig,
    ) -> Failover {
        let backup_of: Vec<Option<(usize, String)>> = backup_of
            .into_iter()
            .enumerate()
            .map(|(p, b)| b.map(|b| (b, track_key(&names[p].to_string()))))
            .collect();
        let shared = Arc::new(Shared {
            states: backup_of.iter().map(|_| AtomicU8::new(0)).collect(),
            conns,
            names,
            backup_of,
            routing: RwLock::new(()),
            every: cfg.health_every,
            failures: cfg.health_failures,
            batch: cfg.pipeline.max(1),
        });
        let mut checkers = Vec::new();
        for p in 0..shared.backup_of.len() {
            let Some((backup, track)) = &shared.backup_of[p] else {
                continue;
            };
            let answers = shared.ping(p).await;
            let pending: usize = redis::cmd("SCARD")
                .arg(track)
                .query_async(&mut shared.conns[*backup].clone())
                .await
                .unwrap_or(0);
            if !answers || pending > 0 {
                shared.set_state(p, State::Down, pending);
            }
            let s = shared.clone();
            checkers.push(tokio::spawn(async move { s.check(p).await }));
        }
        Failover {
            shared,
            _checkers: Arc::new(Checkers(checkers)),
        }
    }

    /// Held while a batch routes and runs its writes (see `Shared::routing`).
    pub async fn routing(&self) -> RwLockReadGuard<'_, ()> {
        self.shared.routing.read().await
    }

    /// The current state of primary `p`.
    pub fn state(&self, p: usize) -> State {
        State::from_u8(self.shared.states[p].load(Ordering::Acquire))
    }

    /// Whether primary `p` has a backup.
    pub fn has_backup(&self, p: usize) -> bool {
        self.backup_index(p).is_some()
    }

    /// The index of node `n`'s backup, when `n` is a primary that has one.
    pub fn backup_index(&self, n: usize) -> Option<usize> {
        self.shared.backup_of.get(n)?.as_ref().map(|(b, _)| *b)
    }

    /// Where a write of a key owned by primary `p` goes now.
    pub fn write_target(&self, p: usize) -> WriteTarget<'_> {
        match (&self.shared.backup_of[p], self.state(p)) {
            (Some((backup, track)), State::Down) => WriteTarget {
                node: *backup,
                track: Some(track),
            },
            _ => WriteTarget {
                node: p,
                track: None,
            },
        }
    }

    /// The nodes a read of a key owned by primary `p` tries, in order.
    pub fn read_targets(&self, p: usize) -> Vec<usize> {
        match (&self.shared.backup_of[p], self.state(p)) {
            (Some((backup, _)), State::Down) => vec![*backup],
            (Some((backup, _)), State::Recovering) => vec![p, *backup],
            _ => vec![p],
        }
    }
}

impl Shared {
    /// The checker of primary `p`: pings on every tick, moves between the states.
    async fn check(self: Arc<Self>, p: usize) {
        let Some((backup, _)) = self.backup_of[p] else {
            return;
        };
        let mut failed = 0u32;
        let mut backup_up = true;
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (answers, backup_answers) = tokio::join!(self.ping(p), self.ping(backup));
            if backup_answers != backup_up {
                backup_up = backup_answers;
                let node = self.names[backup].to_string();
                metrics::gauge!("hotkeys_cache_node_up", "node" => node.clone())
                    .set(f64::from(u8::from(backup_up)));
                if backup_up {
                    tracing::info!(node, "backup node answers again");
                } else {
                    tracing::warn!(node, primary = %self.names[p], "backup node does not answer");
                }
            }
            match (self.state(p), answers) {
                (State::Up, true) => failed = 0,
                (State::Up, false) => {
                    failed += 1;
                    metrics::counter!("hotkeys_cache_health_failures_total", "node" => self.names[p].to_string())
                        .increment(1);
                    if failed >= self.failures {
                        self.set_state(p, State::Down, 0);
                    }
                }
                (State::Down | State::Recovering, true) => {
                    if let Err(e) = self.recover(p).await {
                        tracing::warn!(
                            node = %self.names[p],
                            error = %e,
                            "fail-back interrupted; the backup keeps serving, retrying next tick"
                        );
                        self.set_state(p, State::Down, 0);
                    } else {
                        failed = 0;
                    }
                }
                (State::Down | State::Recovering, false) => {}
            }
        }
    }

    fn state(&self, p: usize) -> State {
        State::from_u8(self.states[p].load(Ordering::Acquire))
    }

    /// Changes primary `p`'s state, with its log line and metrics (`keys`: tracked keys at
    /// the change, or keys copied back when it goes up).
    fn set_state(&self, p: usize, to: State, keys: usize) {
        let from = State::from_u8(self.states[p].swap(to as u8, Ordering::AcqRel));
        let node = self.names[p].to_string();
        metrics::gauge!("hotkeys_cache_primary_state", "node" => node.clone())
            .set(f64::from(to as u8));
        metrics::gauge!("hotkeys_cache_node_up", "node" => node.clone())
            .set(f64::from(u8::from(to != State::Down)));
        if from == to {
            return;
        }
        let backup = self.backup_of[p]
            .as_ref()
            .map_or(String::new(), |(b, _)| self.names[*b].to_string());
        metrics::counter!(
            "hotkeys_cache_state_changes_total",
            "node" => node.clone(),
            "to" => to.name()
        )
        .increment(1);
        match to {
            State::Down => tracing::warn!(
                node,
                backup,
                from = from.name(),
                tracked = keys,
                "primary down: its keys are served by its backup"
            ),
            State::Recovering => tracing::info!(
                node,
                backup,
                tracked = keys,
                "primary back: copying the keys written to its backup"
            ),
            State::Up => tracing::info!(
                node,
                backup,
                copied = keys,
                "primary up: fail-back done, the backup is clean"
            ),
        }
    }

    /// Whether node `n` answers `PING` within one health interval.
    async fn ping(&self, n: usize) -> bool {
        let mut conn = self.conns[n].clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(self.every, ping).await, Ok(Ok(_)))
    }

    /// Fail-back of primary `p` (see the module doc); answers the keys copied.
    async fn recover(&self, p: usize) -> Result<usize, RedisError> {
        let Some((backup, track)) = &self.backup_of[p] else {
            return Ok(0);
        };
        let mut primary = self.conns[p].clone();
        let mut spare = self.conns[*backup].clone();
        if self.state(p) == State::Down {
            let _writes = self.routing.write().await;
            let stale: Vec<String> = redis::cmd("SMEMBERS")
                .arg(track)
                .query_async(&mut spare)
                .await?;
            for chunk in stale.chunks(self.batch) {
                redis::cmd("DEL")
                    .arg(chunk)
                    .query_async::<()>(&mut primary)
                    .await?;
            }
            self.set_state(p, State::Recovering, stale.len());
        }
        let mut copied = 0;
        loop {
            let keys: Vec<String> = redis::cmd("SPOP")
                .arg(track)
                .arg(self.batch)
                .query_async(&mut spare)
                .await?;
            if keys.is_empty() {
                break;
            }
            match copy_back(&mut spare, &mut primary, &keys).await {
                Ok(n) => copied += n,
                Err(e) => {
                    // Put the batch back so the next attempt copies it; if the backup is
                    // gone too, its keys are gone with it.
                    let _: Result<(), _> = redis::cmd("SADD")
                        .arg(track)
                        .arg(&keys)
                        .query_async(&mut spare)
                        .await;
                    return Err(e);
                }
            }
        }
        metrics::counter!("hotkeys_cache_failback_keys_total", "node" => self.names[p].to_string())
            .increment(copied as u64);
        self.set_state(p, State::Up, copied);
        Ok(copied)
    }
}

/// Copies `keys` from the backup to the primary with their remaining TTL, leaving values
/// the primary already has, then deletes them from the backup; answers the keys written.
async fn copy_back(
    backup: &mut ConnectionManager,
    primary: &mut ConnectionManager,
    keys: &[String],
) -> Result<usize, RedisError> {
    let mut read = redis::pipe();
    for key in keys {
        read.cmd("GET").arg(key).cmd("PTTL").arg(key);
    }
    let replies: Vec<Value> = read.query_async(backup).await?;
    let mut write = redis::pipe();
    let mut writes = 0;
    for (key, pair) in keys.iter().zip(replies.chunks(2)) {
        let (Value::BulkString(value), Value::Int(pttl)) = (&pair[0], &pair[1]) else {
            continue; // expired or deleted on the backup meanwhile
        };
        let ttl = match *pttl {
            -2 => continue, // expired between GET and PTTL
            ttl if ttl > 0 => Some(ttl),
            _ => None, // no expiry
        };
        let cmd = write.cmd("SET").arg(key).arg(value.as_slice());
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl);
        }
        cmd.arg("NX");
        writes += 1;
    }
    let mut copied = 0;
    if writes > 0 {
        let written: Vec<Value> = write.query_async(primary).await?;
        copied = written.iter().filter(|v| !matches!(v, Value::Nil)).count();
    }
    redis::cmd("DEL")
        .arg(keys)
        .query_async::<()>(backup)
        .await?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_key_names_the_primary_by_host_and_port() {
        assert_eq!(
            track_key("redis://10.0.0.1:6379/0"),
            "hotkeys:backup-of:10.0.0.1:6379"
        );
    }
}
