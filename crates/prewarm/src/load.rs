//! One task's keys, batch by batch: rows from MySQL (a pooled, prepared `IN (…)` query per
//! batch), then one pipelined write per Redis node with the key template, a jittered TTL and
//! `SET NX` (a value already in Redis is newer than our copy, as with mcrouter's WarmUpRoute
//! `add`), then the replication ops of the values actually written.
//!
//! Several batches of a task are in flight at once, so one batch's Redis write overlaps the
//! next batch's SELECT. Failures of MySQL or Redis are retried up to the run's budget.

use std::time::Duration;

use futures::StreamExt;
use hotkeys::cache::{CacheNodes, WriteOutcome, cache_key, jittered_ttl};
use hotkeys::sync_queue::{Op, SyncQueue};
use hotkeys::zk::Zk;
use zookeeper_client::SessionState;

use crate::error::{Dependency, Halt, PrewarmError};
use crate::report::Counts;
use crate::retry::retry;
use crate::runner::Ctx;

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
    let loaded = retry(&ctx.policy, Dependency::MySql, "loading rows", || {
        ctx.loader.load_batch(keys)
    })
    .await?
    .map_err(|e| failed(Dependency::MySql, e))?;
    if let Some(sample) = loaded.unencodable.first() {
        tracing::warn!(
            count = loaded.unencodable.len(),
            key = sample.key.as_deref().unwrap_or("?"),
            column = %sample.column,
            reason = %sample.reason,
            "rows that cannot be encoded as JSON are skipped"
        );
    }
    let mut counts = Counts {
        rows: loaded.rows.len() as u64,
        missing: loaded.missing.len() as u64,
        unencodable: loaded.unencodable.len() as u64,
        ..Counts::default()
    };
    ctx.progress
        .rows
        .fetch_add(counts.rows, std::sync::atomic::Ordering::Relaxed);
    let Some(cache) = &ctx.cache else {
        return Ok(counts); // dry run
    };
    let redis = &ctx.topology.redis;
    let entries: Vec<(String, String, Duration)> = loaded
        .rows
        .into_iter()
        .map(|(key, row)| {
            (
                cache_key(redis, &key),
                row.into_string(),
                jittered_ttl(redis),
            )
        })
        .collect();
    if entries.is_empty() {
        return Ok(counts);
    }
    if expired(held) {
        return Err(Halt::SessionLost);
    }
    let force = ctx.opts.force;
    let outcome = retry(&ctx.policy, Dependency::Redis, "writing values", || async {
        if force {
            cache.set_many(&entries).await
        } else {
            cache.set_many_nx(&entries).await
        }
    })
    .await?
    .map_err(|e| failed(Dependency::Redis, e))?;
    counts.written = outcome.written as u64;
    counts.already_present = outcome.already_present as u64;
    if let Some(sync) = &ctx.sync {
        counts.replicated = replicate(ctx, sync, cache, &entries, outcome).await?;
    }
    Ok(counts)
}

/// Queues the values this batch stored for the other data centre. Values `SET NX` left
/// alone were written by the application, whose own writes replicate; sending our older
/// copy would overwrite them there.
async fn replicate(
    ctx: &Ctx,
    sync: &SyncQueue,
    cache: &CacheNodes,
    entries: &[(String, String, Duration)],
    outcome: WriteOutcome,
) -> Result<u64, Halt> {
    let candidates: Vec<&(String, String, Duration)> = entries
        .iter()
        .filter(|(k, _, _)| sync.replicates(k))
        .collect();
    if candidates.is_empty() {
        return Ok(0);
    }
    let stored: Vec<&(String, String, Duration)> = if outcome.already_present == 0 {
        candidates
    } else {
        // `set_many_nx` counts but does not say which keys it stored: a stored value reads
        // back as ours. Only batches that met existing values pay for these reads.
        let reads =
            futures::future::join_all(candidates.iter().map(|(k, _, _)| cache.get(k))).await;
        candidates
            .into_iter()
            .zip(reads)
            .filter(|((_, v, _), read)| matches!(read, Ok(Some(got)) if got == v.as_bytes()))
            .map(|(e, _)| e)
            .collect()
    };
    let ops: Vec<Op> = stored
        .iter()
        .map(|(k, v, ttl)| Op::set(k.clone(), v.as_bytes().to_vec(), Some(*ttl)))
        .collect();
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
