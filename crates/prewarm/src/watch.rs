//! `--watch`: a task is warmed as soon as it publishes a new hot-list version.
//!
//! One persistent recursive watch on the task tree, on the session the run already holds
//! (as `hotkeys::zk::subscribe` does), reports every publish. A publish makes its task *due*.
//! Due tasks are warmed by the procedure of `pass` (pre-check, try-lock, double check, load
//! what Redis lacks, write, mark), `C` at a time, and a task is never warmed twice at once:
//! versions published while its warm runs leave it due again, so a burst of versions costs
//! at most one more warm, which reads the newest.
//!
//! Every task is due at start, after every `--interval`, and after any session event
//! (disconnected, reconnected, expired): ZooKeeper can drop watch events across a reconnect
//! (ZOOKEEPER-4698), and a task whose warm failed is tried again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use zookeeper_client::{EventType, SessionState};

use crate::ctx::{Ctx, list_tasks};
use crate::error::PrewarmError;
use crate::report::TaskRecord;
use crate::warming::{Warming, keep};

/// Pause before watching again after ZooKeeper refused.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Watch events waiting for the scheduler; the watcher waits when it is this far ahead.
const QUEUE: usize = 1024;

/// What the watcher reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// This task published a new version.
    Task(u32),
    /// Events may have been missed: every task.
    All,
}

/// Warms due tasks until shutdown, or until a failure ends the run.
pub(crate) async fn run(
    ctx: &Arc<Ctx>,
    records: &mut BTreeMap<u32, TaskRecord>,
    passes: &mut u64,
) -> Result<(), PrewarmError> {
    let (tx, mut events) = mpsc::channel(QUEUE);
    let watcher = tokio::spawn(watch(ctx.clone(), tx));
    let mut resync = tokio::time::interval(ctx.opts.interval);
    resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut due = BTreeSet::new();
    let mut warming = Warming::default();
    let mut result = Ok(());
    while !ctx.stopping() {
        warming.start_due(ctx, &mut due);
        let all = tokio::select! {
            _ = resync.tick() => {
                *passes += 1;
                true
            }
            Some(event) = events.recv() => match event {
                Due::Task(task) => {
                    due.insert(task);
                    false
                }
                Due::All => true,
            },
            Some((record, error)) = warming.next() => {
                keep(ctx, records, record);
                if let Some(e) = error {
                    tracing::error!(error = %e, "giving up; stopping the other tasks");
                    ctx.policy.abort.cancel();
                    result = Err(e);
                }
                false
            }
            () = ctx.policy.abort.cancelled() => false,
        };
        if all {
            match list_tasks(ctx).await {
                Ok(tasks) => due.extend(tasks),
                Err(e) => {
                    ctx.policy.abort.cancel();
                    result = e.map_or(Ok(()), Err);
                }
            }
        }
    }
    watcher.abort();
    // Shutdown aborts the warms in flight; each releases its lock before it ends.
    while let Some((record, _)) = warming.next().await {
        keep(ctx, records, record);
    }
    result
}

/// Reports every publish under the task tree to `due`, watching again on a new session
/// when the old one expired. Ends when the scheduler is gone.
async fn watch(ctx: Arc<Ctx>, due: mpsc::Sender<Due>) {
    while !ctx.stopping() {
        let (generation, zk) = ctx.session.current().await;
        let mut watcher = match zk.watch_tasks().await {
            Ok(w) => w,
            Err(e) => {
                if e.is_session_lost() {
                    let _ = ctx.session.renew(generation, &ctx.policy).await;
                } else {
                    tracing::warn!(error = %e, "cannot watch the tasks; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                continue;
            }
        };
        // Publishes made before the watch was in place.
        if due.send(Due::All).await.is_err() {
            return;
        }
        loop {
            let event = watcher.changed().await;
            let report = match event.event_type {
                EventType::Session if event.session_state.is_terminated() => break,
                EventType::Session if event.session_state == SessionState::SyncConnected => {
                    Some(Due::All)
                }
                // Locks and warmed marks, ours too, are not news.
                EventType::NodeCreated | EventType::NodeDataChanged => {
                    zk.layout().task_of_hot(&event.path).map(Due::Task)
                }
                _ => None,
            };
            if let Some(report) = report
                && due.send(report).await.is_err()
            {
                return;
            }
        }
        tracing::warn!("ZooKeeper session ended under the watch; watching on a new one");
        let _ = ctx.session.renew(generation, &ctx.policy).await;
    }
}
