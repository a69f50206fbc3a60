//! The history recorder. Several dashboards may serve one topology; exactly one records at
//! a time: the holder of the ephemeral ZooKeeper node `…/dashboard/recorder`, taken with a
//! try-lock that never waits (as prewarm's task locks). Every `--record` tick the others try
//! again, so one of them takes over within a tick once the holder's session ends (a clean
//! stop deletes the node; a crash leaves it until the session times out).
//!
//! Each tick the holder writes every counter's merged top N, as subscribers see it, and
//! deletes rows older than `--retain`. A tick has [`TICK_LIMIT`] in all (history
//! statements are bounded too, see `history`). A holder whose ticks fail to write
//! [`GIVE_UP_AFTER`] times in a row lets go of the lock and stays out for as many ticks, so
//! a dashboard whose MySQL works can take over. Shutdown interrupts a tick.

use std::sync::Arc;
use std::time::Duration;

use hotkeys::hotlist::{LockInfo, merge, now_ms};
use hotkeys::zk::ZkError;
use tokio::time::{Instant, MissedTickBehavior};

use super::history::HistoryError;
use super::state::Dashboard;

/// The longest one tick may take.
const TICK_LIMIT: Duration = Duration::from_secs(20);
/// Failed ticks in a row after which the holder lets go.
const GIVE_UP_AFTER: u32 = 3;
/// How long releasing the lock may take at shutdown.
const RELEASE_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error(transparent)]
    ZooKeeper(#[from] ZkError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("the tick took longer than {TICK_LIMIT:?}")]
    TimedOut,
}

/// What the loop remembers between ticks.
#[derive(Default)]
struct Recorder {
    holding: bool,
    /// Ticks in a row that held the lock and could not write.
    failures: u32,
    /// After letting go: no try-lock before this.
    out_until: Option<Instant>,
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
    let mut recorder = Recorder::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = dashboard.shutdown.cancelled() => break,
        }
        if recorder.out_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(TICK_LIMIT, tick(&dashboard, &me)) => {
                outcome.unwrap_or(Err(RecordError::TimedOut))
            }
            () = dashboard.shutdown.cancelled() => break,
        };
        recorder.after(&dashboard, outcome, every).await;
    }
    release(&dashboard).await;
}

impl Recorder {
    /// Takes note of a tick's outcome; lets go of the lock after too many failures.
    async fn after(
        &mut self,
        dashboard: &Dashboard,
        outcome: Result<bool, RecordError>,
        every: Duration,
    ) {
        match outcome {
            Ok(now) => {
                metrics::gauge!("hotkeys_dashboard_recording").set(if now { 1.0 } else { 0.0 });
                if now != self.holding {
                    tracing::info!(
                        recording = now,
                        "history recorder lock {}",
                        if now { "taken" } else { "held elsewhere" }
                    );
                }
                self.holding = now;
                self.failures = 0;
                self.out_until = None;
            }
            Err(error @ RecordError::ZooKeeper(_)) => {
                tracing::warn!(%error, "recording hot-key history failed; next tick retries")
            }
            Err(error) => {
                self.failures += 1;
                tracing::warn!(%error, failures = self.failures, "recording hot-key history failed");
                metrics::counter!("hotkeys_dashboard_history_failures_total").increment(1);
                if self.failures >= GIVE_UP_AFTER {
                    tracing::warn!(
                        failures = self.failures,
                        "the history cannot be written: letting another dashboard record"
                    );
                    release(dashboard).await;
                    metrics::gauge!("hotkeys_dashboard_recording").set(0.0);
                    self.holding = false;
                    self.failures = 0;
                    self.out_until = Some(Instant::now() + every * GIVE_UP_AFTER);
                }
            }
        }
    }
}

/// Deletes the lock node if this dashboard holds it, within [`RELEASE_LIMIT`].
async fn release(dashboard: &Dashboard) {
    let unlock = dashboard.with_zk(|zk| async move { zk.unlock_recorder().await });
    match tokio::time::timeout(RELEASE_LIMIT, unlock).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "releasing the recorder lock failed; it ends with the session")
        }
        Err(_) => tracing::warn!("releasing the recorder lock timed out; it ends with the session"),
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
