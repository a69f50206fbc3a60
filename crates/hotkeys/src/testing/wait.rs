//! Waiting for a condition in a test, bounded so that a broken server fails the test
//! instead of hanging it.

/// Polls `check` every 100 ms until it returns `Some`, panicking with `what` after
/// `seconds`. The deadline only guards against hanging; it measures nothing.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
