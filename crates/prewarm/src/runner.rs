//! A run: connect to ZooKeeper, MySQL and Redis (retrying while they are unreachable), then
//! passes over the tasks. A pass lists the tasks, shuffles them (parallel processes then
//! start on different tasks and rarely meet on a lock) and warms `C` at a time.
//!
//! `--once` then re-checks the tasks it found locked by another process until each is warmed
//! by its holder, or its lock disappears with the holder's session (and this process warms it),
//! or `--wait-for-others` runs out. `--watch` instead warms each task as it publishes (see
//! `watch`), with a pass every `--interval` in case a watch event was missed.
//!
//! A failure that ends the run (a dependency unreachable for the whole retry budget) aborts
//! the tasks in flight; each releases its lock before the run returns.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotkeys::Topology;
use hotkeys::hotlist::LockInfo;
use rand::seq::SliceRandom;
use tokio_util::sync::CancellationToken;

use crate::ctx::{Ctx, list_tasks};
use crate::error::{Halt, PrewarmError};
use crate::options::{Mode, Options};
use crate::report::{Summary, TaskOutcome, TaskRecord, show_progress};
use crate::retry::Policy;
use crate::warming::{Warming, keep};
use crate::watch;

/// How often `--once` looks at tasks locked by others at the end of its pass. This polls
/// the `warmed` and `lock` nodes; it never blocks on a lock.
const RECHECK_EVERY: Duration = Duration::from_millis(250);

/// The result of a run: the summary, and the error that ended it early, if any.
#[derive(Debug)]
pub struct Finished {
    pub summary: Summary,
    pub error: Option<PrewarmError>,
}

impl Finished {
    /// `Ok` when every task is warmed by someone (or a `--watch` run ended on a signal);
    /// else the error that ended the run, or [`PrewarmError::NotWarmed`].
    pub fn result(self) -> Result<(), PrewarmError> {
        match self.error {
            Some(e) => Err(e),
            None if self.summary.complete || self.summary.mode == Mode::Watch => Ok(()),
            None => Err(PrewarmError::NotWarmed),
        }
    }
}

/// Runs prewarm until its pass is done (`--once`), or until `shutdown` (`--watch`).
pub async fn run(topology: Topology, opts: Options, shutdown: CancellationToken) -> Finished {
    let started = Instant::now();
    let by = LockInfo::this_process().holder();
    let mut summary = Summary::new(
        by.clone(),
        topology.name.clone(),
        opts.mode,
        opts.force,
        opts.dry_run,
    );
    let policy = Policy {
        budget: opts.retry_for,
        // Shutdown aborts too: retries and held locks stop, locks are released.
        abort: shutdown.child_token(),
    };
    let ctx = match Ctx::connect(topology, opts, by, policy, shutdown).await {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            let error = e.outside_task().unwrap_or(PrewarmError::Interrupted);
            summary.finish(Vec::new(), started.elapsed(), Some(error.to_string()));
            return Finished {
                summary,
                error: Some(error),
            };
        }
    };
    let stop_progress = CancellationToken::new();
    if ctx.opts.progress {
        show_progress(ctx.progress.clone(), started, stop_progress.clone());
    }

    let mut records = BTreeMap::new();
    let result = match ctx.opts.mode {
        Mode::Once => {
            summary.passes = 1;
            one_pass(&ctx, &mut records).await
        }
        Mode::Watch => watch::run(&ctx, &mut records, &mut summary.passes).await,
    };
    let error = result.err();
    stop_progress.cancel();
    summary.finish(
        records.into_values().collect(),
        started.elapsed(),
        error.as_ref().map(|e| e.to_string()),
    );
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.close().await;
    }
    Finished { summary, error }
}

/// `--once`: every task once, then the re-check of tasks locked elsewhere.
async fn one_pass(
    ctx: &Arc<Ctx>,
    records: &mut BTreeMap<u32, TaskRecord>,
) -> Result<(), PrewarmError> {
    let mut tasks = match list_tasks(ctx).await {
        Ok(tasks) => tasks,
        Err(e) => return e.map_or(Ok(()), Err),
    };
    tasks.shuffle(&mut rand::rng());
    run_tasks(ctx, tasks, records).await?;
    recheck(ctx, records).await
}

/// Warms `tasks`, `C` at a time. Returns the first failure that ends the run, after every
/// task in flight has stopped and released its lock.
async fn run_tasks(
    ctx: &Arc<Ctx>,
    tasks: Vec<u32>,
    records: &mut BTreeMap<u32, TaskRecord>,
) -> Result<(), PrewarmError> {
    let mut queue = tasks.into_iter();
    let mut warming = Warming::default();
    let mut first_error = None;
    loop {
        while warming.has_room(ctx) {
            let Some(task) = queue.next() else { break };
            warming.spawn(ctx, task);
        }
        let Some((record, error)) = warming.next().await else {
            break;
        };
        if let Some(e) = error
            && first_error.is_none()
        {
            tracing::error!(task = record.task, error = %e, "giving up; stopping the other tasks");
            ctx.policy.abort.cancel();
            first_error = Some(e);
        }
        keep(ctx, records, record);
    }
    for task in queue {
        records
            .entry(task)
            .or_insert_with(|| TaskRecord::new(task, TaskOutcome::Aborted));
    }
    ctx.progress.update(records.values());
    first_error.map_or(Ok(()), Err)
}

/// `--once`: tasks another process held are looked at again until they are warmed, or their
/// lock is gone (then warmed here), or the deadline passes.
async fn recheck(
    ctx: &Arc<Ctx>,
    records: &mut BTreeMap<u32, TaskRecord>,
) -> Result<(), PrewarmError> {
    let deadline = Instant::now() + ctx.opts.wait_for_others;
    loop {
        let pending: Vec<u32> = records
            .values()
            .filter(|r| r.outcome.is_pending())
            .map(|r| r.task)
            .collect();
        if pending.is_empty() || ctx.stopping() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            give_up_waiting(ctx, records, pending);
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(RECHECK_EVERY) => {}
            () = ctx.policy.abort.cancelled() => return Ok(()),
        }
        let mut free = Vec::new();
        for task in pending {
            match look_again(ctx, task, records).await {
                Ok(true) => free.push(task),
                Ok(false) => {}
                Err(h) => return h.outside_task().map_or(Ok(()), Err),
            }
        }
        ctx.progress.update(records.values());
        if !free.is_empty() {
            run_tasks(ctx, free, records).await?;
        }
    }
}

/// `--wait-for-others` ran out: the tasks still held elsewhere count as not warmed.
fn give_up_waiting(ctx: &Ctx, records: &mut BTreeMap<u32, TaskRecord>, pending: Vec<u32>) {
    for task in pending {
        if let Some(r) = records.get_mut(&task) {
            r.outcome = TaskOutcome::StillLocked;
            r.error = Some(format!(
                "still locked by {} and not warmed after waiting {}",
                r.holder.as_deref().unwrap_or("another process"),
                humantime::format_duration(ctx.opts.wait_for_others)
            ));
        }
    }
    ctx.progress.update(records.values());
}

/// Reads a task held by another process again and updates its record: `true` when its
/// lock is gone and it is not warmed, so this process warms it.
async fn look_again(
    ctx: &Ctx,
    task: u32,
    records: &mut BTreeMap<u32, TaskRecord>,
) -> Result<bool, Halt> {
    let (hot, warmed, lock) = ctx
        .session
        .read(&ctx.policy, "re-checking a locked task", |zk| async move {
            // The lock first: a holder marks before it unlocks, so a lock seen gone
            // means its mark, if any, is visible to the reads after.
            let lock = zk.read_lock(task).await;
            let hot = zk.read_hot(task).await;
            let warmed = zk.read_warmed(task).await;
            Ok((hot, warmed, lock))
        })
        .await?;
    let Some(record) = records.get_mut(&task) else {
        return Ok(false);
    };
    let hot = match hot {
        Ok(Some(h)) => h,
        // Gone or unreadable now: the next attempt reports it properly.
        _ => return Ok(true),
    };
    match (warmed, lock) {
        (Ok(Some(w)), _) if hot.covered_by(&w.value) => {
            record.outcome = TaskOutcome::WarmedByOther;
            record.hot_version = Some(i64::from(hot.version));
            record.holder = Some(w.value.by);
            Ok(false)
        }
        (_, Ok(None)) => Ok(true),
        (_, Ok(Some(l))) => {
            record.holder = Some(l.value.holder());
            Ok(false)
        }
        (_, Err(_)) => Ok(false),
    }
}
