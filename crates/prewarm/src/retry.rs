//! Retrying an operation while its dependency is unreachable: exponential backoff with
//! jitter (backon's), up to a deadline counted from the first failure, abandoned at once
//! when the run is aborted. Errors that say something about the request rather than the
//! server (a SQL error, a refused login) are handed back on the first try.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use hotkeys::mysql::MysqlError;
use hotkeys::redis::CacheError;
use hotkeys::sync::SyncError;
use hotkeys::zk::ZkError;
use tokio_util::sync::CancellationToken;
use zookeeper_client::Error as ZkClientError;

use crate::error::{Dependency, Halt, PrewarmError};

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(3);

/// Whether an error may go away by itself.
pub(crate) trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for MysqlError {
    fn is_transient(&self) -> bool {
        self.is_unreachable()
    }
}

impl Transient for CacheError {
    fn is_transient(&self) -> bool {
        self.is_unreachable()
    }
}

impl Transient for SyncError {
    fn is_transient(&self) -> bool {
        self.is_unreachable()
    }
}

impl Transient for ZkError {
    fn is_transient(&self) -> bool {
        match self {
            ZkError::Unreachable { .. } | ZkError::Timeout => true,
            ZkError::Op { source, .. } => matches!(
                source,
                ZkClientError::ConnectionLoss
                    | ZkClientError::Timeout
                    | ZkClientError::Throttled
                    | ZkClientError::NoHosts
            ),
            _ => false,
        }
    }
}

/// How long to keep trying, and the signal to stop trying.
#[derive(Clone)]
pub(crate) struct Policy {
    pub budget: Duration,
    pub abort: CancellationToken,
}

/// Runs `op` until it succeeds, fails for good (`Ok(Err(e))`), the budget is spent
/// (`Halt::Fatal(Unreachable)`) or the run is aborted (`Halt::Aborted`).
pub(crate) async fn retry<T, E, F, Fut>(
    policy: &Policy,
    dependency: Dependency,
    what: &str,
    mut op: F,
) -> Result<Result<T, E>, Halt>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut first_failure: Option<Instant> = None;
    let mut pauses = ExponentialBuilder::new()
        .with_min_delay(FIRST_PAUSE)
        .with_max_delay(LONGEST_PAUSE)
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        if policy.abort.is_cancelled() {
            return Err(Halt::Aborted);
        }
        let result = op().await;
        let e = match result {
            Ok(v) => {
                if let Some(since) = first_failure {
                    tracing::info!(%dependency, what, after = ?since.elapsed(), "reachable again");
                }
                return Ok(Ok(v));
            }
            Err(e) if !e.is_transient() => return Ok(Err(e)),
            Err(e) => e,
        };
        let first = first_failure.is_none();
        let since = *first_failure.get_or_insert_with(Instant::now);
        if since.elapsed() >= policy.budget {
            return Err(Halt::Fatal(PrewarmError::Unreachable {
                dependency,
                waited: since.elapsed(),
                last: format!("{what}: {e}"),
            }));
        }
        if first {
            tracing::warn!(%dependency, what, error = %e, budget = ?policy.budget, "unreachable; retrying");
        } else {
            tracing::debug!(%dependency, what, error = %e, "still unreachable; retrying");
        }
        let sleep = pauses
            .next()
            .unwrap_or(LONGEST_PAUSE)
            .min(policy.budget.saturating_sub(since.elapsed()) + Duration::from_millis(1));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = policy.abort.cancelled() => return Err(Halt::Aborted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotkeys::cli::Failure;
    use std::cell::Cell;

    #[derive(Debug)]
    struct Flaky(bool);

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "flaky({})", self.0)
        }
    }

    impl Transient for Flaky {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    fn policy(budget: Duration) -> Policy {
        Policy {
            budget,
            abort: CancellationToken::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let tries = Cell::new(0);
        let r = retry(
            &policy(Duration::from_secs(10)),
            Dependency::MySql,
            "t",
            || {
                tries.set(tries.get() + 1);
                let n = tries.get();
                async move { if n < 4 { Err(Flaky(true)) } else { Ok(n) } }
            },
        )
        .await;
        assert!(matches!(r, Ok(Ok(4))));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_come_back_at_once() {
        let tries = Cell::new(0);
        let r: Result<Result<(), Flaky>, Halt> = retry(
            &policy(Duration::from_secs(10)),
            Dependency::MySql,
            "t",
            || {
                tries.set(tries.get() + 1);
                async { Err(Flaky(false)) }
            },
        )
        .await;
        assert!(matches!(r, Ok(Err(Flaky(false)))));
        assert_eq!(tries.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn spent_budget_means_unreachable_naming_the_dependency() {
        let r: Result<Result<(), Flaky>, Halt> = retry(
            &policy(Duration::from_secs(2)),
            Dependency::Redis,
            "writing",
            || async { Err(Flaky(true)) },
        )
        .await;
        match r {
            Err(Halt::Fatal(e @ PrewarmError::Unreachable { .. })) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("Redis unreachable") && msg.contains("writing"),
                    "{msg}"
                );
                assert_eq!(e.exit_code(), hotkeys::cli::exit::UNREACHABLE);
            }
            other => panic!("expected unreachable, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn abort_stops_the_retries() {
        let p = policy(Duration::from_secs(3600));
        p.abort.cancel();
        let r: Result<Result<(), Flaky>, Halt> =
            retry(&p, Dependency::MySql, "t", || async { Err(Flaky(true)) }).await;
        assert!(matches!(r, Err(Halt::Aborted)));
    }
}
