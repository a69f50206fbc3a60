//! How a run behaves: `--once` or `--watch`, and the other flags of `prewarm`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One pass and exit, or keep re-warming tasks whose hot list moves to a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Once,
    Watch,
}

/// How a run behaves; the command-line flags of `prewarm`.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// Tasks warmed at the same time by this process.
    pub concurrency: usize,
    /// Warm tasks already warmed for their current version, and overwrite cache values.
    pub force: bool,
    /// Read hot lists and MySQL rows, report what would be done; no lock, no write.
    pub dry_run: bool,
    /// How long an unreachable MySQL, Redis or ZooKeeper is retried before giving up (exit 3).
    pub retry_for: Duration,
    /// `--once`: how long tasks locked by other processes are re-checked at the end of the
    /// pass before they count as not warmed.
    pub wait_for_others: Duration,
    /// `--watch`: time between two passes over every task, besides the warms that watch
    /// events start at once.
    pub interval: Duration,
    /// Show a progress line (on a terminal).
    pub progress: bool,
    /// Test hook: keep each lock this long before loading, to make "mid-task" observable.
    pub hold_lock: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Once,
            concurrency: 4,
            force: false,
            dry_run: false,
            retry_for: Duration::from_secs(30),
            wait_for_others: Duration::from_secs(300),
            interval: Duration::from_secs(5),
            progress: false,
            hold_lock: Duration::ZERO,
        }
    }
}
