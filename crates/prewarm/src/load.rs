//! One task's keys, batch by batch: first the cache is asked which of them it lacks (one
//! pipelined `PTTL` per node, through the placement and failover of
//! [`hotkeys::redis::CacheNodes::remaining`]); only those are read from MySQL (a pooled,
//! prepared `IN (…)` query per batch), then written with one pipelined write per Redis node
//! with the key template and a jittered TTL, then the replication ops of the values actually
//! written.
//!
//! Prewarm reads only what Redis lacks. A key that is there with more than
//! `prewarm.refresh_before` to live is skipped (`skipped_warm`). A missing key is written with
//! `SET NX` (a value that appeared meanwhile is newer than our copy, as with mcrouter's
//! WarmUpRoute `add`). A key about to expire is refreshed with a compare-and-set: the digest
//! of its value is read with its TTL, and the row read afterwards replaces only that value,
//! never one the application wrote during the MySQL read. Only values actually stored are
//! replicated. A key MySQL has no row for is not asked again for `prewarm.missing_ttl`
//! ([`crate::misses`]). `--force` loads and overwrites every key.
//!
//! Several batches of a task are in flight at once, so one batch's Redis write overlaps the
//! next batch's SELECT. Failures of MySQL or Redis are retried up to the run's budget.

use std::time::Duration;

use futures::StreamExt;
use std::collections::HashMap;

use hotkeys::mysql::Loaded;
use hotkeys::redis::{Applied, CacheNodes, Remaining, Write, cache_key, jittered_ttl};
use hotkeys::sync::{Op, SyncQueue};
use hotkeys::zk::Zk;
use zookeeper_client::SessionState;

use crate::ctx::Ctx;
use crate::error::{Dependency, Halt, PrewarmError};
use crate::report::Counts;
use crate::retry::retry;

/// Loads and writes `keys`. `held` is the session holding the task's lock: once it has
/// expired, the lock is someone else's to take and the remaining batches are not written.
pub(crate) async fn warm_keys(
    ctx: &Ctx,
    keys: &[String],
    held: Option<&Zk>,
) -> Result<Counts, Halt> {
    let mut counts = Counts::default();
    // Futures made up front (they start only when polled): a `.map` closure over borrowed
    // chunks trips the compiler's Send check of the spawned task.
    let pending: Vec<_> = keys
        .chunks(ctx.loader.batch())
        .map(|chunk| warm_batch(ctx, chunk, held))
        .collect();
    let mut batches = futures::stream::iter(pending).buffer_unordered(ctx.batch_parallelism);
    while let Some(done) = batches.next().await {
        counts.add(done?);
    }
    Ok(counts)
}

fn expired(held: Option<&Zk>) -> bool {
    held.is_some_and(|zk| zk.client().state() == SessionState::Expired)
}

async fn warm_batch(ctx: &Ctx, keys: &[String], held: Option<&Zk>) -> Result<Counts, Halt> {
    if expired(held) {
        return Err(Halt::SessionLost);
    }
    let mut due = lacking(ctx, keys).await?;
    let mut counts = Counts {
        skipped_warm: (keys.len() - due.keys.len()) as u64,
        ..Counts::default()
    };
    if !ctx.opts.force {
        counts.missing_cached = ctx.misses.forget_known(&mut due.keys);
    }
    if due.keys.is_empty() {
        return Ok(counts);
    }
    let loaded = load_rows(ctx, &due.keys, &mut counts).await?;
    let Some(cache) = &ctx.cache else {
        return Ok(counts); // dry run
    };
    let entries = entries(ctx, loaded, &due);
    if entries.is_empty() {
        return Ok(counts);
    }
    if expired(held) {
        return Err(Halt::SessionLost);
    }
    write_entries(ctx, cache, &entries, &mut counts).await?;
    Ok(counts)
}

/// The rows of `keys` from MySQL, counted; keys without a row are remembered as misses.
async fn load_rows(ctx: &Ctx, keys: &[String], counts: &mut Counts) -> Result<Loaded, Halt> {
    let loaded = retry(&ctx.policy, Dependency::MySql, "loading rows", || {
        ctx.loader.load_batch(keys)
    })
    .await?
    .map_err(|e| failed(Dependency::MySql, e))?;
    ctx.misses.remember(&loaded.missing);
    if let Some(sample) = loaded.unencodable.first() {
        tracing::warn!(
            count = loaded.unencodable.len(),
            key = sample.key.as_deref().unwrap_or("?"),
            column = %sample.column,
            reason = %sample.reason,
            "rows that cannot be encoded as JSON are skipped"
        );
    }
    counts.rows = loaded.rows.len() as u64;
    counts.missing = loaded.missing.len() as u64;
    counts.unencodable = loaded.unencodable.len() as u64;
    ctx.progress
        .rows
        .fetch_add(counts.rows, std::sync::atomic::Ordering::Relaxed);
    Ok(loaded)
}

/// What to write for each loaded row, and how it may replace what the cache holds.
fn entries(ctx: &Ctx, loaded: Loaded, due: &Due) -> Vec<Entry> {
    let redis = &ctx.topology.redis;
    loaded
        .rows
        .into_iter()
        .map(|(key, row)| Entry {
            mode: match due.expiring.get(&key) {
                _ if ctx.opts.force => Mode::Overwrite,
                Some(seen) => Mode::Refresh(seen.clone()),
                None => Mode::Fill,
            },
            key: cache_key(redis, &key),
            value: row.into_string(),
            ttl: jittered_ttl(redis),
        })
        .collect()
}

/// Writes `entries` to the cache, and queues the written ones for replication.
async fn write_entries(
    ctx: &Ctx,
    cache: &CacheNodes,
    entries: &[Entry],
    counts: &mut Counts,
) -> Result<(), Halt> {
    let writes: Vec<Write<'_>> = entries.iter().map(Entry::write).collect();
    let applied = retry(&ctx.policy, Dependency::Redis, "writing values", || {
        cache.apply_tracked(&writes)
    })
    .await?
    .map_err(|e| failed(Dependency::Redis, e))?;
    counts.written = applied.outcome.written as u64;
    counts.already_present = applied.outcome.already_present as u64;
    if let Some(sync) = &ctx.sync {
        counts.replicated = replicate(ctx, sync, entries, &applied).await?;
    }
    Ok(())
}

/// One value to write: the cache key, the encoded row, its TTL, and how it may replace what
/// the cache holds.
struct Entry {
    key: String,
    value: String,
    ttl: Duration,
    mode: Mode,
}

/// How an [`Entry`] is written.
enum Mode {
    /// Only fills a gap (`SET NX`): a value there is newer than the row.
    Fill,
    /// Replaces the value about to expire whose digest was read before the row, and
    /// nothing else (`Write::Refresh`).
    Refresh(String),
    /// Replaces whatever is there (`--force`).
    Overwrite,
}

impl Entry {
    fn write(&self) -> Write<'_> {
        let (key, value) = (self.key.as_str(), self.value.as_bytes());
        match &self.mode {
            Mode::Refresh(seen) => Write::Refresh {
                key,
                value,
                ttl: self.ttl,
                seen,
            },
            mode => Write::Set {
                key,
                value,
                ttl: Some(self.ttl),
                only_if_absent: matches!(mode, Mode::Fill),
            },
        }
    }
}

/// The keys of a batch that need a row from MySQL.
struct Due {
    /// Missing from the cache or about to expire there, in the order given.
    keys: Vec<String>,
    /// Those of `keys` the cache still holds, with the digest of their value: they are
    /// refreshed only if it has not changed by the time the row is written.
    expiring: HashMap<String, String>,
}

/// Asks the cache which of `keys` it lacks. `--force` and a dry run (which has no cache
/// connection) take every key.
async fn lacking(ctx: &Ctx, keys: &[String]) -> Result<Due, Halt> {
    let every = || Due {
        keys: keys.to_vec(),
        expiring: HashMap::new(),
    };
    let Some(cache) = ctx.cache.as_ref().filter(|_| !ctx.opts.force) else {
        return Ok(every());
    };
    let redis = &ctx.topology.redis;
    let cache_keys: Vec<String> = keys.iter().map(|k| cache_key(redis, k)).collect();
    let remaining = retry(&ctx.policy, Dependency::Redis, "reading TTLs", || {
        cache.remaining(&cache_keys)
    })
    .await?
    .map_err(|e| failed(Dependency::Redis, e))?;
    let refresh_before = ctx.topology.refresh_before();
    let mut due = Due {
        keys: Vec::new(),
        expiring: HashMap::new(),
    };
    let mut refresh = Vec::new();
    for (key, left) in keys.iter().zip(remaining) {
        match need(left, refresh_before) {
            Need::Nothing => {}
            Need::Fill => due.keys.push(key.clone()),
            Need::Refresh => {
                due.keys.push(key.clone());
                refresh.push(key);
            }
        }
    }
    // Few keys are about to expire at once: one digest read each.
    let refresh_keys: Vec<String> = refresh.iter().map(|k| cache_key(redis, k)).collect();
    let digests = retry(&ctx.policy, Dependency::Redis, "reading digests", || {
        futures::future::try_join_all(refresh_keys.iter().map(|k| cache.digest(k)))
    })
    .await?
    .map_err(|e| failed(Dependency::Redis, e))?;
    for (key, digest) in refresh.into_iter().zip(digests) {
        // A key gone since its PTTL is filled like any missing key.
        if let Some(digest) = digest {
            due.expiring.insert(key.clone(), digest);
        }
    }
    Ok(due)
}

/// What a key with `left` to live in the cache needs.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// Warm for longer than `refresh_before`, or kept without expiry.
    Nothing,
    /// Not in the cache.
    Fill,
    /// In the cache, but gone within `refresh_before`.
    Refresh,
}

fn need(left: Remaining, refresh_before: Duration) -> Need {
    match left {
        Remaining::Absent => Need::Fill,
        Remaining::Forever => Need::Nothing,
        Remaining::Left(d) if d < refresh_before => Need::Refresh,
        Remaining::Left(_) => Need::Nothing,
    }
}

/// Queues the values this batch stored for the other data centre. Values left alone (a
/// `SET NX` that met a value, a refresh that met a newer one) were written by the
/// application, whose own writes replicate; sending our older copy would overwrite them
/// there.
async fn replicate(
    ctx: &Ctx,
    sync: &SyncQueue,
    entries: &[Entry],
    applied: &Applied,
) -> Result<u64, Halt> {
    let ops: Vec<Op> = entries
        .iter()
        .zip(&applied.stored)
        .filter(|(e, stored)| **stored && sync.replicates(&e.key))
        .map(|(e, _)| Op::set(e.key.clone(), e.value.as_bytes().to_vec(), Some(e.ttl)))
        .collect();
    if ops.is_empty() {
        return Ok(0);
    }
    let queued = retry(
        &ctx.policy,
        Dependency::Redis,
        "queueing replication",
        || sync.enqueue_many(&ops),
    )
    .await?
    .map_err(|e| failed(Dependency::Redis, e))?;
    Ok(queued as u64)
}

fn failed(dependency: Dependency, e: impl std::fmt::Display) -> Halt {
    Halt::Fatal(PrewarmError::Failed {
        dependency,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_missing_or_about_to_expire_need_a_row() {
        let before = Duration::from_secs(60);
        let left = |s| Remaining::Left(Duration::from_secs(s));
        assert_eq!(need(Remaining::Absent, before), Need::Fill);
        assert_eq!(need(left(59), before), Need::Refresh);
        assert_eq!(need(left(0), before), Need::Refresh);
        assert_eq!(need(left(60), before), Need::Nothing);
        assert_eq!(need(left(3600), before), Need::Nothing);
        assert_eq!(need(Remaining::Forever, before), Need::Nothing);
    }
}
