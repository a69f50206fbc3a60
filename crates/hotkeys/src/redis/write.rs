//! Pipelines and writes: sets, compare-and-set refreshes and deletes, sent to the nodes the
//! placement ([`super::nodes`]) picks.
//!
//! Writes are pipelined per node. A `set` goes to the node the placement picks; a `delete`
//! goes to every node of a ring and succeeds only when every node answered, because "first
//! OK wins" would hide a failure on the node that actually holds the key. Writes to the same
//! key keep their order, so a batch of mixed sets and deletes lands as it was issued. Every
//! value goes through [`super::codec`] on its way in, so large values are stored compressed.
//!
//! A refresh (`Write::Refresh`) is a compare-and-set in one Lua script: it overwrites only
//! the value whose digest was read before the row was loaded ([`CacheNodes::digest`]), so a
//! value the application wrote meanwhile is never replaced by an older row.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use redis::{Pipeline, Value};

use super::connect::RedisConn;
use super::error::CacheError;
use super::nodes::{CacheNodes, Reach};

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

impl CacheNodes {
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
        let _routing = self.routing().await;
        let reach: Vec<Reach<'_>> = writes.iter().map(Write::reach).collect();
        let runs = self
            .shares(&reach)
            .into_iter()
            .map(|share| self.run_on(share.node, share.conn, writes, share.writes));
        let results = join_all(runs).await;
        for result in &results {
            if let Err(CacheError::Command { source, .. }) = result {
                self.follow(source).await;
            }
        }
        results
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
                self.push_write(&mut pipe, &writes[i]);
                if let Some(track) = track {
                    pipe.cmd("SADD").arg(track).arg(writes[i].key()).ignore();
                }
            }
            let replies: Vec<Value> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|source| self.command_error(node, source))?;
            for (&(i, _), reply) in chunk.iter().zip(replies) {
                tally.count(i, &writes[i], reply);
            }
        }
        Ok(tally)
    }

    /// Adds the command of one write to `pipe`, its value encoded.
    fn push_write(&self, pipe: &mut Pipeline, write: &Write<'_>) {
        match *write {
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
    }
}

impl Write<'_> {
    /// Which nodes the write must reach: a delete every node that could hold the key.
    fn reach(&self) -> Reach<'_> {
        match self {
            Write::Set { key, .. } | Write::Refresh { key, .. } => Reach::Holder(key),
            Write::Delete { key } => Reach::Every(key),
        }
    }

    /// The key the write is about.
    pub fn key(&self) -> &str {
        match self {
            Write::Set { key, .. } | Write::Refresh { key, .. } | Write::Delete { key } => key,
        }
    }
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

impl Tally {
    /// Counts the reply to write `i`.
    fn count(&mut self, i: usize, write: &Write<'_>, reply: Value) {
        match (write, reply) {
            (Write::Set { .. } | Write::Refresh { .. }, Value::Nil) => self.already_present += 1,
            (Write::Set { .. } | Write::Refresh { .. }, _) => self.stored.push(i),
            (Write::Delete { .. }, Value::Int(n)) if n > 0 => self.deleted.push(i),
            (Write::Delete { .. }, _) => {}
        }
    }
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
