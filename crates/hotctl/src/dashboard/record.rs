//! The history recorder. Several dashboards may serve one topology; exactly one records at
//! a time: the holder of the ephemeral ZooKeeper node `…/dashboard/recorder`, taken with a
//! try-lock that never waits (as prewarm's task locks). Every `--record` tick the others try
//! again, so one of them takes over within a tick once the holder's session ends (a clean
//! stop deletes the node; a crash leaves it until the session times out).
//!
//! Each tick the holder writes every counter's merged top N, as subscribers see it, and
//! deletes rows older than `--retain`.

use std::sync::Arc;

use hotkeys::hotlist::{LockInfo, merge, now_ms};
use hotkeys::zk::ZkError;
use tokio::time::MissedTickBehavior;

use super::history::HistoryError;
use super::state::Dashboard;

#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error(transparent)]
    ZooKeeper(#[from] ZkError),
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// Records until shutdown, then releases the lock; returns at once with `--record 0`.
pub async fn run(dashboard: Arc<Dashboard>) {
    let every = dashboard.settings.record;
    if every.is_zero() {
        return;
    }
    let me = LockInfo::this_process();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut holding = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = dashboard.shutdown.cancelled() => break,
        }
        match tick(&dashboard, &me).await {
            Ok(now) => {
                metrics::gauge!("hotkeys_dashboard_recording").set(if now { 1.0 } else { 0.0 });
                if now != holding {
                    tracing::info!(
                        recording = now,
                        "history recorder lock {}",
                        if now { "taken" } else { "held elsewhere" }
                    );
                }
                holding = now;
            }
            Err(error) => {
                tracing::warn!(%error, "recording hot-key history failed; next tick retries")
            }
        }
    }
    if let Err(error) = dashboard
        .with_zk(|zk| async move { zk.unlock_recorder().await })
        .await
    {
        tracing::warn!(%error, "releasing the recorder lock failed; it ends with the session");
    }
}

/// One tick: take or confirm the lock, then record and prune. Answers whether this
/// dashboard is the recorder.
async fn tick(dashboard: &Dashboard, me: &LockInfo) -> Result<bool, RecordError> {
    let holder = dashboard
        .with_zk(|zk| async move { zk.read_recorder().await })
        .await?;
    let holding = match holder {
        Some((_, this)) => this,
        None => {
            dashboard
                .with_zk(|zk| async move { zk.try_lock_recorder(me).await })
                .await?
        }
    };
    if !holding {
        return Ok(false);
    }
    // A recording dashboard does not start without MySQL (`Dashboard::start`).
    let Ok(history) = dashboard.history() else {
        return Ok(true);
    };
    let taken_at = now_ms();
    for counter in dashboard.topology.counters() {
        let name = counter.name.as_str();
        let lists = dashboard
            .with_zk(|zk| async move { zk.for_counter(name).hot_lists().await })
            .await?;
        let items = merge(lists.iter().map(|l| &l.value), counter.count.top_n);
        let rows = history.record(name, taken_at, &items).await?;
        metrics::counter!("hotkeys_dashboard_history_rows_total", "counter" => counter.name.clone())
            .increment(rows as u64);
    }
    let retain = i64::try_from(dashboard.settings.retain.as_millis()).unwrap_or(i64::MAX);
    let deleted = history.prune(taken_at.saturating_sub(retain)).await?;
    metrics::counter!("hotkeys_dashboard_history_deleted_total").increment(deleted);
    if deleted > 0 {
        tracing::info!(deleted, "deleted history older than the retention");
    }
    Ok(true)
}
