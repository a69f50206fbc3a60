//! prewarm: loads the hot rows of every task from MySQL into Redis before traffic arrives,
//! in parallel across processes, never twice and never waiting on a lock.
//!
//! | module | owns |
//! |---|---|
//! | [`runner`] | a run: set-up, passes over the tasks (shuffle, `C` at a time, the end-of-pass re-check) |
//! | `watch` | `--watch`: a task warmed as soon as it publishes, from a watch on the task tree |
//! | `pass` | the procedure for one task: pre-check, try-lock, double check, load, write, mark, unlock |
//! | `load` | one batch of keys: rows from MySQL, pipelined `SET NX` or compare-and-set refreshes into Redis, replication ops |
//! | `misses` | keys without a row, not asked again for `prewarm.missing_ttl` |
//! | `session` | the ZooKeeper session, renewed after expiry |
//! | `retry` | retries with backoff while a dependency is unreachable, up to a deadline |
//! | [`report`] | per-task records, the summary (table or JSON) and the progress line |
//! | [`error`] | the failures that end a run, and their exit codes |
//!
//! A task's lock is the ephemeral `lock` znode: it is never waited for. A process that finds
//! it taken moves on, and with `--once` looks again at the end of its pass, until the task is
//! warmed by its holder or the holder's session is gone (then it warms the task itself).

pub mod error;
mod load;
mod misses;
mod pass;
pub mod report;
mod retry;
pub mod runner;
mod session;
mod watch;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::{Dependency, PrewarmError};
pub use report::{Summary, TaskOutcome, TaskRecord, Totals};
pub use runner::{Finished, run};

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
