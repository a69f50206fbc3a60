//! The procedure for one task, in the order the design fixes:
//!
//! 1. pre-check without the lock: a task warmed for its current hot-list version is skipped
//!    (most tasks of a repeated run end here, without touching the lock);
//! 2. try-lock: create the ephemeral `lock` znode; if it exists, skip at once, never wait;
//! 3. double check under the lock: someone may have finished between 1 and 2;
//! 4. load and write (see [`crate::load`]);
//! 5. mark `warmed`, then delete the lock. If the session expired on the way, the lock is
//!    already gone and someone else may be warming: do not mark, report `session_lost`.
//!
//! A mark covers a hot list when it records the list's epoch and at least its version
//! (`hotkeys::zk::Versioned::covered_by`, which `TaskView::is_warm` uses too): the version
//! is the `hot` znode's data version, which hot-counter bumps with every publish; the epoch
//! tells a list recreated after `hotctl reset` from one of before, so a mark written late
//! for a pre-reset list never counts the new one as warmed.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use hotkeys::hotlist::{HotList, LockInfo, Warmed, now_ms};
use hotkeys::zk::{Versioned, Zk};
use tokio_util::sync::CancellationToken;
use zookeeper_client::SessionState;

use crate::ctx::Ctx;
use crate::error::{Dependency, Halt, PrewarmError};
use crate::load::warm_keys;
use crate::report::{Counts, TaskOutcome, TaskRecord};
use crate::retry::{Policy, retry};
use crate::session::classify;

/// How long releasing a lock is retried, even when the run is being aborted.
const UNLOCK_BUDGET: Duration = Duration::from_secs(5);

/// Runs the procedure for `task`. `Err` only for failures that end the whole run; the lock
/// is released before it returns either way.
pub(crate) async fn warm(ctx: &Ctx, task: u32) -> Result<TaskRecord, PrewarmError> {
    let started = Instant::now();
    let mut record = TaskRecord::new(task, TaskOutcome::Failed);
    let result = attempt(ctx, task, &mut record, started).await;
    record.took_ms = started.elapsed().as_millis() as u64;
    record.outcome = match result {
        Ok(outcome) => outcome,
        Err(Halt::Malformed(message)) => {
            tracing::warn!(task, error = %message, "malformed hot list; task skipped");
            record.error = Some(message);
            TaskOutcome::Malformed
        }
        Err(Halt::SessionLost) => {
            tracing::warn!(task, "ZooKeeper session expired while warming; not marked");
            record.session_lost = true;
            TaskOutcome::SessionLost
        }
        Err(Halt::Aborted) => TaskOutcome::Aborted,
        Err(Halt::Fatal(e)) => return Err(e),
    };
    Ok(record)
}

async fn attempt(
    ctx: &Ctx,
    task: u32,
    record: &mut TaskRecord,
    started: Instant,
) -> Result<TaskOutcome, Halt> {
    if let ControlFlow::Break(outcome) = precheck(ctx, task, record).await? {
        return Ok(outcome);
    }
    let (generation, zk) = ctx.session.current().await;
    if let ControlFlow::Break(outcome) = try_lock(ctx, &zk, generation, task, record).await? {
        return Ok(outcome);
    }
    let result = locked(ctx, &zk, task, record, started).await;
    if matches!(result, Err(Halt::SessionLost)) {
        // The lock went with the session; the next reads need a live one.
        ctx.session.renew(generation, &ctx.policy).await?;
    } else {
        release(&zk, task).await;
    }
    result
}

/// Step 1, without the lock: `Break` with the outcome when there is nothing to warm, the
/// mark already covers the hot list, or the run is a dry run (which loads but writes
/// nothing).
async fn precheck(
    ctx: &Ctx,
    task: u32,
    record: &mut TaskRecord,
) -> Result<ControlFlow<TaskOutcome>, Halt> {
    let policy = &ctx.policy;
    let hot = ctx
        .session
        .read(policy, "reading the hot list", |zk| async move {
            zk.read_hot(task).await
        })
        .await?;
    let Some(hot) = hot else {
        return Ok(ControlFlow::Break(TaskOutcome::NoHotList));
    };
    record.hot_version = Some(i64::from(hot.version));
    record.keys = keys_of(&hot.value).len() as u64;
    if !ctx.opts.force {
        let warmed = ctx
            .session
            .read(policy, "reading the warmed mark", |zk| async move {
                zk.read_warmed(task).await
            })
            .await;
        if let Some(by) = covering(warmed, &hot, task) {
            record.holder = Some(by);
            return Ok(ControlFlow::Break(TaskOutcome::UpToDate));
        }
    }
    if ctx.opts.dry_run {
        let keys = keys_of(&hot.value);
        record.keys = keys.len() as u64;
        record.counts = warm_keys(ctx, &keys, None).await?;
        return Ok(ControlFlow::Break(TaskOutcome::DryRun));
    }
    Ok(ControlFlow::Continue(()))
}

/// Step 2 on `zk`'s session (of `generation`): `Break(Locked)` when another process holds
/// the lock.
async fn try_lock(
    ctx: &Ctx,
    zk: &Zk,
    generation: u64,
    task: u32,
    record: &mut TaskRecord,
) -> Result<ControlFlow<TaskOutcome>, Halt> {
    let me = LockInfo::this_process();
    let taken = retry(
        &ctx.policy,
        Dependency::ZooKeeper,
        "taking the lock",
        || zk.try_lock(task, &me),
    )
    .await?;
    match taken {
        Ok(true) => Ok(ControlFlow::Continue(())),
        Ok(false) => {
            let holder = zk.read_lock(task).await.ok().flatten().map(|l| l.value);
            // A create whose reply was lost and then retried finds our own lock.
            if holder.as_ref() == Some(&me) {
                return Ok(ControlFlow::Continue(()));
            }
            record.lock_busy += 1;
            record.holder = holder.map(|h| h.holder());
            Ok(ControlFlow::Break(TaskOutcome::Locked))
        }
        Err(e) if e.is_session_lost() => {
            ctx.session.renew(generation, &ctx.policy).await?;
            Err(Halt::SessionLost)
        }
        Err(e) => Err(classify(e)),
    }
}

/// Steps 3 to 5, with the lock held by `zk`'s session.
async fn locked(
    ctx: &Ctx,
    zk: &Zk,
    task: u32,
    record: &mut TaskRecord,
    started: Instant,
) -> Result<TaskOutcome, Halt> {
    let hot = match recheck(ctx, zk, task, record).await? {
        ControlFlow::Continue(hot) => hot,
        ControlFlow::Break(outcome) => return Ok(outcome),
    };
    if !ctx.opts.hold_lock.is_zero() {
        hold(ctx.opts.hold_lock, &ctx.policy.abort, &ctx.shutdown).await?;
    }

    let keys = keys_of(&hot.value);
    record.keys = keys.len() as u64;
    let counts = warm_keys(ctx, &keys, Some(zk)).await?;
    record.counts = counts;
    if zk.client().state() == SessionState::Expired {
        return Err(Halt::SessionLost);
    }
    mark_warmed(ctx, zk, task, &hot, counts, started).await?;
    Ok(TaskOutcome::Warmed)
}

/// Step 3, under the lock: the hot list to warm, or `Break` with the outcome when it is gone
/// or someone warmed it since the pre-check.
async fn recheck(
    ctx: &Ctx,
    zk: &Zk,
    task: u32,
    record: &mut TaskRecord,
) -> Result<ControlFlow<TaskOutcome, Versioned<HotList>>, Halt> {
    let policy = &ctx.policy;
    let hot = retry(
        policy,
        Dependency::ZooKeeper,
        "reading the hot list",
        || zk.read_hot(task),
    )
    .await?
    .map_err(classify)?;
    let Some(hot) = hot else {
        return Ok(ControlFlow::Break(TaskOutcome::NoHotList));
    };
    record.hot_version = Some(i64::from(hot.version));
    if !ctx.opts.force {
        let warmed = retry(
            policy,
            Dependency::ZooKeeper,
            "reading the warmed mark",
            || zk.read_warmed(task),
        )
        .await?
        .map_err(classify);
        if let Some(by) = covering(warmed, &hot, task) {
            record.holder = Some(by);
            return Ok(ControlFlow::Break(TaskOutcome::AlreadyWarmed));
        }
    }
    Ok(ControlFlow::Continue(hot))
}

/// Step 5's mark: `hot` is warmed with `counts`, by this run, in the time since `started`.
async fn mark_warmed(
    ctx: &Ctx,
    zk: &Zk,
    task: u32,
    hot: &Versioned<HotList>,
    counts: Counts,
    started: Instant,
) -> Result<(), Halt> {
    let mark = Warmed {
        hot_version: i64::from(hot.version),
        hot_epoch: hot.epoch,
        at_ms: now_ms(),
        by: ctx.by.clone(),
        rows: counts.rows,
        missing: counts.missing,
        took_ms: started.elapsed().as_millis() as u64,
    };
    retry(&ctx.policy, Dependency::ZooKeeper, "marking warmed", || {
        zk.mark_warmed(task, &mark)
    })
    .await?
    .map_err(classify)?;
    tracing::info!(
        task,
        hot_version = hot.version,
        rows = counts.rows,
        written = counts.written,
        already_present = counts.already_present,
        missing = counts.missing,
        "warmed"
    );
    Ok(())
}

/// Who warmed the current version, if the mark covers it. A mark that cannot be read counts
/// as no mark: warming again is harmless, skipping wrongly is not.
fn covering(
    warmed: Result<Option<Versioned<Warmed>>, Halt>,
    hot: &Versioned<HotList>,
    task: u32,
) -> Option<String> {
    match warmed {
        Ok(Some(w)) if hot.covered_by(&w.value) => Some(w.value.by),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(task, error = ?e, "warmed mark unreadable; treating the task as not warmed");
            None
        }
    }
}

/// Distinct, non-empty keys in hot-list order.
fn keys_of(hot: &HotList) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(hot.items.len());
    hot.items
        .iter()
        .filter(|i| !i.key.is_empty() && seen.insert(i.key.as_str()))
        .map(|i| i.key.clone())
        .collect()
}

async fn hold(
    d: Duration,
    abort: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<(), Halt> {
    tokio::select! {
        () = tokio::time::sleep(d) => Ok(()),
        () = abort.cancelled() => Err(Halt::Aborted),
        () = shutdown.cancelled() => Err(Halt::Aborted),
    }
}

/// Deletes the lock, even while the run is being aborted. If ZooKeeper cannot be reached,
/// the lock still vanishes with this process's session.
async fn release(zk: &Zk, task: u32) {
    let policy = Policy {
        budget: UNLOCK_BUDGET,
        abort: CancellationToken::new(),
    };
    match retry(&policy, Dependency::ZooKeeper, "releasing the lock", || {
        zk.unlock(task)
    })
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(task, error = %e, "could not release the lock"),
        Err(e) => tracing::warn!(task, error = ?e, "could not release the lock"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotkeys::hotlist::HotItem;

    fn hot(keys: &[&str]) -> HotList {
        HotList {
            items: keys
                .iter()
                .map(|k| HotItem {
                    key: (*k).into(),
                    count: 1,
                    error: None,
                })
                .collect(),
            ..HotList::default()
        }
    }

    #[test]
    fn keys_are_distinct_non_empty_and_in_order() {
        assert_eq!(
            keys_of(&hot(&["3", "1", "3", "", "2"])),
            vec!["3", "1", "2"]
        );
    }

    fn versioned<T>(value: T, version: i32) -> Versioned<T> {
        Versioned {
            value,
            version,
            modified_ms: 0,
            epoch: 7,
            zxid: 0,
        }
    }

    fn mark(hot_version: i64) -> Warmed {
        Warmed {
            hot_version,
            hot_epoch: 7,
            at_ms: 0,
            by: "h:1".into(),
            rows: 0,
            missing: 0,
            took_ms: 0,
        }
    }

    #[test]
    fn a_mark_covers_its_version_and_older_ones() {
        let h = versioned(hot(&["1"]), 4);
        assert_eq!(
            covering(Ok(Some(versioned(mark(4), 0))), &h, 0).as_deref(),
            Some("h:1")
        );
        assert_eq!(
            covering(Ok(Some(versioned(mark(5), 0))), &h, 0).as_deref(),
            Some("h:1")
        );
        assert_eq!(covering(Ok(Some(versioned(mark(3), 0))), &h, 0), None);
        let before_a_reset = Warmed {
            hot_epoch: 3,
            ..mark(9)
        };
        assert_eq!(
            covering(Ok(Some(versioned(before_a_reset, 0))), &h, 0),
            None,
            "a mark of another epoch covers nothing, whatever its version"
        );
        assert_eq!(covering(Ok(None), &h, 0), None);
        assert_eq!(covering(Err(Halt::Malformed("x".into())), &h, 0), None);
    }
}
