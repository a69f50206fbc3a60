//! The failures that end a prewarm run, and the exit code each one maps to.

use std::fmt;
use std::time::Duration;

use hotkeys::cli::{Failure, exit};
use serde::{Deserialize, Serialize};

/// A server prewarm depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dependency {
    ZooKeeper,
    MySql,
    Redis,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dependency::ZooKeeper => "ZooKeeper",
            Dependency::MySql => "MySQL",
            Dependency::Redis => "Redis",
        })
    }
}

/// Why a run stopped before its work was done.
#[derive(Debug, thiserror::Error)]
pub enum PrewarmError {
    /// The topology or the flags cannot work (a query the server rejects, a bad URL).
    #[error("configuration: {0}")]
    Config(String),
    /// A dependency stayed unreachable for the whole retry budget.
    #[error("{dependency} unreachable, gave up after {:.1}s of retries: {last}", .waited.as_secs_f64())]
    Unreachable {
        dependency: Dependency,
        waited: Duration,
        last: String,
    },
    /// A signal arrived before the work started.
    #[error("interrupted before any task was warmed")]
    Interrupted,
    /// The run ended without an error, but some tasks are not warmed (the summary says which).
    #[error("not every task is warmed (see the summary)")]
    NotWarmed,
    /// A dependency answered with an error that retrying does not fix.
    #[error("{dependency}: {message}")]
    Failed {
        dependency: Dependency,
        message: String,
    },
}

impl Failure for PrewarmError {
    /// 2 for configuration, 3 when a dependency stayed unreachable, 1 otherwise.
    fn exit_code(&self) -> i32 {
        match self {
            PrewarmError::Config(_) => exit::USAGE,
            PrewarmError::Unreachable { .. } => exit::UNREACHABLE,
            PrewarmError::Failed { .. } | PrewarmError::Interrupted | PrewarmError::NotWarmed => {
                exit::FAILED
            }
        }
    }
}

/// Why a task stopped short of its end; [`crate::pass`] turns each into an outcome.
#[derive(Debug)]
pub(crate) enum Halt {
    /// Our ZooKeeper session expired: any lock we held is gone, another process may have
    /// the task now. Do not mark.
    SessionLost,
    /// Shutdown, or another task's fatal error: stop, release the lock, report.
    Aborted,
    /// The task's hot list cannot be read as one.
    Malformed(String),
    /// The run cannot go on.
    Fatal(PrewarmError),
}

impl From<PrewarmError> for Halt {
    fn from(e: PrewarmError) -> Self {
        Halt::Fatal(e)
    }
}

impl Halt {
    /// What a [`Halt`] met outside any task means for the run: `None` to stop quietly (the run
    /// is being aborted anyway), or the error that ends it.
    pub(crate) fn outside_task(self) -> Option<PrewarmError> {
        match self {
            Halt::Aborted => None,
            Halt::Fatal(e) => Some(e),
            Halt::SessionLost | Halt::Malformed(_) => Some(PrewarmError::Failed {
                dependency: Dependency::ZooKeeper,
                message: format!("unexpected {self:?} outside a task"),
            }),
        }
    }
}
