//! The durable Redis-list queue that replication operations wait in.
//!
//! The shipper moves operations out in batches that are never lost: a Lua script moves up
//! to `sync.batch` operations from the head of the list into an in-flight key tagged with
//! the next stamp of the queue's stream, all in one atomic step. A batch stays in flight,
//! and is handed out again with the same stamp, until that stamp is acknowledged — so a
//! shipper killed at any moment re-sends exactly the batches the receiver may have missed,
//! and the receiver recognises them by their stamps. Up to `sync.in_flight` batches may be
//! on their way at once; they are acknowledged strictly in stamp order.
//!
//! The queue lives on the node that holds the replication state: `sync.state`, or the home
//! of the cache (its first node, or the cluster) when that is empty. The state must never
//! be evicted — an evicted queue loses operations without a trace, an evicted in-flight list
//! or stream record repeats or skips them — so the shipper and the receiver check the node's
//! `maxmemory-policy` ([`check_no_eviction`](super::check_no_eviction)) when they start and after every reconnect,
//! and refuse an `allkeys-*` policy.
//!
//! Keys, all in one Redis Cluster slot (the queue name is their hash tag unless it has one;
//! in Redis Cluster a queue name with braces must hold a valid hash tag):
//!
//! - `<queue>`: the list of operations waiting;
//! - `{<queue>}:inflight:<stamp>`: the list of a batch in flight;
//! - `{<queue>}:meta`: a hash with `stream` (the stream id, issued by the receiver),
//!   `stamp` (last stamp taken) and `acked` (last stamp acknowledged; every batch up to it
//!   is done). When the stream cannot be trusted any more (this node went back or lost
//!   it, or the receiver lost its records), [`SyncQueue::restart_stream`] moves the batches
//!   in flight to a new stream, renumbered from 1, in one atomic step;
//! - `{<queue>}:dead`: elements that are not operations, set aside by the shipper.

use redis::RedisError;
use serde::Serialize;

use super::error::SyncError;
use super::op::{Op, QueuedOp, now_ms};
use super::state::{check_no_eviction, connect_state, state_beside};
use crate::config::{RedisConfig, SyncConfig};
use crate::redis::{CacheNodes, RedisConn};

/// A batch handed to the shipper: the operations of one stamp, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Position of the batch in its stream: 1 for the first batch, then one more each time.
    pub stamp: u64,
    /// The queue elements, oldest first, as stored (checked by the shipper).
    pub items: Vec<Vec<u8>>,
    /// Operations still waiting in the queue behind this batch when it was taken.
    pub queued: u64,
}

/// Where a queue's stream stands (see [`SyncQueue::position`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream id, once one was started.
    pub stream: Option<String>,
    /// Last stamp taken.
    pub stamp: u64,
    /// Last stamp acknowledged.
    pub acked: u64,
}

/// What [`SyncQueue::restart_stream`] carried over to the new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restarted {
    /// Batches in flight, now stamps 1 to `batches` of the new stream.
    pub batches: u64,
    /// Stamps that were in flight by the meta hash but whose lists were gone.
    pub missing: u64,
}

/// A snapshot of a queue, for operators and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    pub queue: String,
    /// The stream id, once a shipper has started one.
    pub stream: Option<String>,
    /// Operations waiting, not counting the batches in flight.
    pub length: u64,
    /// Stamp of the oldest batch in flight, if any.
    pub in_flight: Option<u64>,
    /// Batches taken and not yet acknowledged.
    pub in_flight_batches: u64,
    /// Operations in those batches.
    pub in_flight_ops: u64,
    /// Last stamp handed out.
    pub last_stamp: u64,
    /// Last stamp the receiver acknowledged; every stamp up to it is acknowledged.
    pub acked: u64,
    /// Elements set aside because they were not operations.
    pub dead: u64,
    /// Age of the oldest operation not yet acknowledged, in milliseconds.
    pub lag_ms: u64,
}

/// The Redis keys of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueueKeys {
    list: String,
    meta: String,
    /// Batch `n` in flight is the list `<inflight>:<n>`.
    inflight: String,
    dead: String,
}

impl QueueKeys {
    fn new(queue: &str) -> QueueKeys {
        // Redis Cluster hashes only the first `{…}` of a key: wrapping the name in braces
        // puts the derived keys in the list's own slot, unless the name has a tag already.
        let tag = match queue.find('{') {
            Some(open) if queue[open + 1..].find('}').is_some_and(|len| len > 0) => {
                queue.to_string()
            }
            _ => format!("{{{queue}}}"),
        };
        QueueKeys {
            list: queue.to_string(),
            meta: format!("{tag}:meta"),
            inflight: format!("{tag}:inflight"),
            dead: format!("{tag}:dead"),
        }
    }
}

// The scripts name the in-flight batches from a prefix passed in KEYS: the stamp is only
// known inside the script. All of them share the list's hash slot (see `QueueKeys`), which
// is what Redis Cluster requires of the keys one script touches. The scripts answer with
// stamps and counts, never with the elements: Redis turns a Lua table of a thousand
// strings into a reply far more slowly than a plain LRANGE does.

/// Moves the next batch into its in-flight list, unless `window` batches are in flight.
///
/// KEYS: list, meta, in-flight prefix. ARGV: most operations, window.
/// Returns {stamp, operations in the batch, operations left in the list}; stamp 0 when
/// there is nothing to take or the window is full.
const TAKE_SCRIPT: &str = r"
local list, meta, prefix = KEYS[1], KEYS[2], KEYS[3]
local max, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local stamp = tonumber(redis.call('HGET', meta, 'stamp') or '0')
local acked = tonumber(redis.call('HGET', meta, 'acked') or '0')
if stamp - acked >= window then
  return {0, 0, redis.call('LLEN', list)}
end
local items = redis.call('LRANGE', list, 0, max - 1)
if #items == 0 then
  return {0, 0, 0}
end
redis.call('LTRIM', list, #items, -1)
stamp = stamp + 1
local inflight = prefix .. ':' .. stamp
redis.call('DEL', inflight)
for i = 1, #items, 1000 do
  redis.call('RPUSH', inflight, unpack(items, i, math.min(i + 999, #items)))
end
redis.call('HSET', meta, 'stamp', stamp)
return {stamp, #items, redis.call('LLEN', list)}
";

/// The stamps in flight, oldest first. KEYS: meta.
const IN_FLIGHT_SCRIPT: &str = r"
local stamp = tonumber(redis.call('HGET', KEYS[1], 'stamp') or '0')
local acked = tonumber(redis.call('HGET', KEYS[1], 'acked') or '0')
local out = {}
for s = acked + 1, stamp do
  out[#out + 1] = s
end
return out
";

/// Acknowledges a stamp if it is the oldest in flight; returns the last acknowledged stamp.
/// KEYS: meta, in-flight prefix. ARGV: stamp.
const ACK_SCRIPT: &str = r"
local meta, prefix = KEYS[1], KEYS[2]
local acked = tonumber(redis.call('HGET', meta, 'acked') or '0')
local stamp = tonumber(redis.call('HGET', meta, 'stamp') or '0')
local s = tonumber(ARGV[1])
if s ~= acked + 1 or s > stamp then
  return acked
end
redis.call('DEL', prefix .. ':' .. s)
redis.call('HSET', meta, 'acked', s)
return s
";

/// Moves the queue to a new stream if it is still on the expected one, renumbering the
/// batches in flight 1, 2, … in order. A batch whose list is gone (a state node restored
/// from a copy where `stamp` ran ahead of its lists) is skipped and counted.
///
/// KEYS: meta, in-flight prefix. ARGV: the expected stream ('' for none), the new stream.
/// Returns {1 moved | 0 the stream was another, batches kept, batches missing}.
const RESTART_SCRIPT: &str = r"
local meta, prefix = KEYS[1], KEYS[2]
if (redis.call('HGET', meta, 'stream') or '') ~= ARGV[1] then return {0, 0, 0} end
local stamp = tonumber(redis.call('HGET', meta, 'stamp') or '0')
local acked = tonumber(redis.call('HGET', meta, 'acked') or '0')
local kept, missing = 0, 0
for s = acked + 1, stamp do
  local from = prefix .. ':' .. s
  if redis.call('EXISTS', from) == 1 then
    kept = kept + 1
    if kept ~= s then redis.call('RENAME', from, prefix .. ':' .. kept) end
  else
    missing = missing + 1
  end
end
redis.call('HSET', meta, 'stream', ARGV[2], 'stamp', kept, 'acked', 0)
return {1, kept, missing}
";

/// Everything `status` shows, read in one atomic step. KEYS: list, meta, in-flight prefix,
/// dead letters. Returns {stream, stamp, acked, length, in-flight ops, dead, oldest element}.
const STATUS_SCRIPT: &str = r"
local list, meta, prefix, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stamp = tonumber(redis.call('HGET', meta, 'stamp') or '0')
local acked = tonumber(redis.call('HGET', meta, 'acked') or '0')
local ops = 0
for s = acked + 1, stamp do
  ops = ops + redis.call('LLEN', prefix .. ':' .. s)
end
local oldest = false
if stamp > acked then
  oldest = redis.call('LINDEX', prefix .. ':' .. (acked + 1), 0)
end
if not oldest then
  oldest = redis.call('LINDEX', list, 0)
end
return {redis.call('HGET', meta, 'stream') or '', stamp, acked, redis.call('LLEN', list),
        ops, redis.call('LLEN', dead), oldest or ''}
";

/// Elements per RPUSH when enqueueing many operations.
const PUSH_CHUNK: usize = 1000;

/// The Lua scripts of a queue, loaded once per process.
struct Scripts {
    take: redis::Script,
    in_flight: redis::Script,
    ack: redis::Script,
    status: redis::Script,
    restart: redis::Script,
}

/// The durable queue of one data centre's outgoing operations.
#[derive(Clone)]
pub struct SyncQueue {
    conn: RedisConn,
    /// The state node, for messages (no credentials).
    node: String,
    keys: QueueKeys,
    replicate: Vec<String>,
    scripts: std::sync::Arc<Scripts>,
}

impl SyncQueue {
    /// The queue `sync.queue` on the given connection to the state node named `node`.
    pub fn new(conn: RedisConn, node: String, sync: &SyncConfig) -> SyncQueue {
        SyncQueue {
            conn,
            node,
            keys: QueueKeys::new(&sync.queue),
            replicate: sync.replicate.clone(),
            scripts: std::sync::Arc::new(Scripts {
                take: redis::Script::new(TAKE_SCRIPT),
                in_flight: redis::Script::new(IN_FLIGHT_SCRIPT),
                ack: redis::Script::new(ACK_SCRIPT),
                status: redis::Script::new(STATUS_SCRIPT),
                restart: redis::Script::new(RESTART_SCRIPT),
            }),
        }
    }

    /// Connects to the state node (see [`connect_state`]).
    pub async fn connect(redis: &RedisConfig, sync: &SyncConfig) -> Result<SyncQueue, SyncError> {
        let (conn, node) = connect_state(redis, sync).await?;
        Ok(SyncQueue::new(conn, node, sync))
    }

    /// The queue of a writer that has `cache` open already: on its home connection, unless
    /// `sync.state` names a node of its own.
    pub async fn beside(
        cache: &CacheNodes,
        redis: &RedisConfig,
        sync: &SyncConfig,
    ) -> Result<SyncQueue, SyncError> {
        let (conn, node) = state_beside(cache, redis, sync).await?;
        Ok(SyncQueue::new(conn, node, sync))
    }

    /// Fails when the state node may evict the queue (see [`check_no_eviction`]).
    pub async fn check_no_eviction(&self) -> Result<(), SyncError> {
        check_no_eviction(&mut self.conn.clone(), &self.node).await
    }

    /// The name of the Redis list.
    pub fn name(&self) -> &str {
        &self.keys.list
    }

    /// Whether writes of `key` replicate: its prefix is one of `sync.replicate`.
    pub fn replicates(&self, key: &str) -> bool {
        self.replicate.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Queues `op` if its key replicates; answers whether it was queued.
    pub async fn enqueue(&self, op: &Op) -> Result<bool, SyncError> {
        Ok(self.enqueue_many(std::slice::from_ref(op)).await? == 1)
    }

    /// Queues, in order, those of `ops` whose keys replicate; answers how many.
    pub async fn enqueue_many(&self, ops: &[Op]) -> Result<usize, SyncError> {
        let at_ms = now_ms();
        let lines: Vec<String> = ops
            .iter()
            .filter(|op| self.replicates(op.key()))
            .map(|op| {
                QueuedOp {
                    op: op.clone(),
                    at_ms,
                }
                .to_json()
            })
            .collect();
        if lines.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for chunk in lines.chunks(PUSH_CHUNK) {
            pipe.cmd("RPUSH").arg(&self.keys.list).arg(chunk).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.redis_error(e))?;
        metrics::counter!("hotkeys_sync_ops_enqueued_total").increment(lines.len() as u64);
        Ok(lines.len())
    }

    /// The id of the queue's stream, if one was started (see [`SyncQueue::restart_stream`]).
    pub async fn stream(&self) -> Result<Option<String>, SyncError> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(&self.keys.meta)
            .arg("stream")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.redis_error(e))
    }

    /// Where the queue's stream stands: its id, the last stamp taken and the last one
    /// acknowledged. The shipper compares it with what it saw before, to notice a state node
    /// that went back (a failover to a replica that lagged, a restore).
    pub async fn position(&self) -> Result<Position, SyncError> {
        let mut conn = self.conn.clone();
        let (stream, stamp, acked): (Option<String>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(&self.keys.meta)
                .arg(&["stream", "stamp", "acked"])
                .query_async(&mut conn)
                .await
                .map_err(|e| self.redis_error(e))?;
        Ok(Position {
            stream,
            stamp: stamp.unwrap_or(0),
            acked: acked.unwrap_or(0),
        })
    }

    /// Moves the queue to the stream `new` if its stream is still `old` (`None`: none was
    /// started), in one atomic step: the batches in flight keep their order and contents
    /// and are numbered 1, 2, … of the new stream, so a shipper sends them again under it.
    /// `None` when the stream was not `old` any more (another shipper moved it first).
    pub async fn restart_stream(
        &self,
        old: Option<&str>,
        new: &str,
    ) -> Result<Option<Restarted>, SyncError> {
        let mut conn = self.conn.clone();
        let (moved, batches, missing): (u8, u64, u64) = self
            .scripts
            .restart
            .key(&self.keys.meta)
            .key(&self.keys.inflight)
            .arg(old.unwrap_or(""))
            .arg(new)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.redis_error(e))?;
        Ok((moved == 1).then_some(Restarted { batches, missing }))
    }

    /// Takes up to `max` operations from the head of the queue as the next batch, unless
    /// `window` batches are in flight already. `None`: nothing to take, or the window is full.
    pub async fn take(&self, max: usize, window: usize) -> Result<Option<Batch>, SyncError> {
        let mut conn = self.conn.clone();
        let (stamp, count, queued): (u64, usize, u64) = self
            .scripts
            .take
            .key(&self.keys.list)
            .key(&self.keys.meta)
            .key(&self.keys.inflight)
            .arg(max.max(1))
            .arg(window.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.redis_error(e))?;
        if stamp == 0 {
            return Ok(None);
        }
        let items = self.batch_items(stamp).await?;
        if items.len() != count {
            return Err(self.reply_error(format!(
                "batch {stamp} holds {} operations, {count} were taken",
                items.len()
            )));
        }
        Ok(Some(Batch {
            stamp,
            items,
            queued,
        }))
    }

    /// The batches taken and not yet acknowledged, oldest first: a shipper that starts
    /// sends them again, with their stamps, before anything new.
    pub async fn in_flight(&self) -> Result<Vec<Batch>, SyncError> {
        let mut conn = self.conn.clone();
        let stamps: Vec<u64> = self
            .scripts
            .in_flight
            .key(&self.keys.meta)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.redis_error(e))?;
        let mut batches = Vec::with_capacity(stamps.len());
        for stamp in stamps {
            let items = self.batch_items(stamp).await?;
            if items.is_empty() {
                return Err(self.reply_error(format!("batch {stamp} is in flight but empty")));
            }
            batches.push(Batch {
                stamp,
                items,
                queued: 0,
            });
        }
        Ok(batches)
    }

    /// The elements of the in-flight batch `stamp`. Read outside the scripts (see above);
    /// an in-flight list never changes until it is acknowledged.
    async fn batch_items(&self, stamp: u64) -> Result<Vec<Vec<u8>>, SyncError> {
        let mut conn = self.conn.clone();
        redis::cmd("LRANGE")
            .arg(format!("{}:{stamp}", self.keys.inflight))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.redis_error(e))
    }

    /// Acknowledges the batch `stamp`, which must be the oldest in flight: the receiver has
    /// applied it, it leaves the queue for good. Any other stamp changes nothing. Answers the
    /// last acknowledged stamp.
    pub async fn ack(&self, stamp: u64) -> Result<u64, SyncError> {
        let mut conn = self.conn.clone();
        self.scripts
            .ack
            .key(&self.keys.meta)
            .key(&self.keys.inflight)
            .arg(stamp)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.redis_error(e))
    }

    /// Keeps elements that are not operations out of the stream, for an operator to inspect.
    pub async fn dead_letter(&self, items: &[&[u8]]) -> Result<(), SyncError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("RPUSH")
            .arg(&self.keys.dead)
            .arg(items)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.redis_error(e))
    }

    /// Length, stamps and lag of the queue, read in one atomic step.
    pub async fn status(&self) -> Result<QueueStatus, SyncError> {
        let mut conn = self.conn.clone();
        let (stream, last_stamp, acked, length, in_flight_ops, dead, oldest): (
            String,
            u64,
            u64,
            u64,
            u64,
            u64,
            Vec<u8>,
        ) = self
            .scripts
            .status
            .key(&self.keys.list)
            .key(&self.keys.meta)
            .key(&self.keys.inflight)
            .key(&self.keys.dead)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.redis_error(e))?;
        let lag_ms = QueuedOp::from_json(&oldest).map_or(0, |op| now_ms().saturating_sub(op.at_ms));
        let in_flight_batches = last_stamp.saturating_sub(acked);
        Ok(QueueStatus {
            queue: self.keys.list.clone(),
            stream: (!stream.is_empty()).then_some(stream),
            length,
            in_flight: (in_flight_batches > 0).then_some(acked + 1),
            in_flight_batches,
            in_flight_ops,
            last_stamp,
            acked,
            dead,
            lag_ms,
        })
    }

    fn redis_error(&self, source: RedisError) -> SyncError {
        SyncError::Redis {
            queue: self.keys.list.clone(),
            source,
        }
    }

    fn reply_error(&self, message: String) -> SyncError {
        SyncError::Reply {
            queue: self.keys.list.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_share_the_queue_slot() {
        let keys = QueueKeys::new("FIFO:MEM");
        assert_eq!(keys.list, "FIFO:MEM");
        assert_eq!(keys.inflight, "{FIFO:MEM}:inflight");
        assert_eq!(keys.dead, "{FIFO:MEM}:dead");
        assert_eq!(keys.meta, "{FIFO:MEM}:meta");
        let tagged = QueueKeys::new("sync:{dc1}");
        assert_eq!(tagged.inflight, "sync:{dc1}:inflight");
    }
}
