//! `cache-sync ship`: moves the queue to the other data centre's receiver, losing nothing.
//!
//! One batch at a time: take (or take back the batch in flight), send, and acknowledge only
//! once the receiver confirmed the stamp — the acknowledgement rides on the next take, so a
//! batch costs one Redis round trip. A shipper killed anywhere in that cycle leaves the batch
//! in flight, and its successor sends it again with the same stamp; the receiver applies a
//! stamp once. While the receiver is down the shipper backs off exponentially with jitter,
//! up to `sync.retry_max`, and the queue just grows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use hotkeys::config::{SyncCompression, SyncConfig};
use hotkeys::shutdown::CancellationToken;
use hotkeys::sync_queue::{Batch, QueuedOp, SyncQueue, now_ms};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};

use crate::error::Error;
use crate::wire::{self, BatchReply, ErrorReply, Outcome};

/// Pause between two looks at an empty queue.
const IDLE: Duration = Duration::from_millis(100);
/// First pause after a failed try; it doubles up to `sync.retry_max`.
const RETRY_MIN: Duration = Duration::from_millis(100);

/// What a shipper did before it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShipSummary {
    /// Batches the receiver confirmed (applied or duplicate).
    pub batches: u64,
    /// Operations in those batches.
    pub ops: u64,
    /// Batches the receiver had applied already (re-sent after a crash).
    pub duplicates: u64,
    /// Queue elements that were not operations, moved to the dead-letter list.
    pub invalid: u64,
    /// Failed tries.
    pub retries: u64,
}

/// Sends one queue's batches to one receiver.
pub struct Shipper {
    queue: SyncQueue,
    client: reqwest::Client,
    remote: String,
    secret: Vec<u8>,
    batch: usize,
    compression: SyncCompression,
    retry_max: Duration,
    retries: u32,
    /// Bad queue elements are logged once with a sample, then only counted.
    logged_invalid: AtomicBool,
}

enum Attempt {
    Delivered(BatchReply),
    Retry(String),
    Fatal(Error),
}

impl Shipper {
    /// A shipper of `queue` to `sync.remote`, signing with `secret`.
    pub fn new(queue: SyncQueue, sync: &SyncConfig, secret: &str) -> Result<Shipper, Error> {
        if secret.is_empty() {
            return Err(Error::Config(format!(
                "no shared secret: set the environment variable {}",
                sync.secret_env
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(sync.timeout)
            .connect_timeout(sync.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Shipper {
            queue,
            client,
            remote: sync.remote.clone(),
            secret: secret.as_bytes().to_vec(),
            batch: sync.batch.max(1),
            compression: sync.compression,
            retry_max: sync.retry_max.max(RETRY_MIN),
            retries: sync.retries,
            logged_invalid: AtomicBool::new(false),
        })
    }

    /// Ships until `shutdown` (finishing the batch being sent, unless the receiver is
    /// down), or until the queue is empty when `until_empty` is set.
    pub async fn run(
        &self,
        shutdown: CancellationToken,
        until_empty: bool,
    ) -> Result<ShipSummary, Error> {
        let mut summary = ShipSummary::default();
        let Some(stream) = self
            .with_retries(&shutdown, &mut summary, || self.queue.stream_id())
            .await?
        else {
            return Ok(summary);
        };
        tracing::info!(queue = self.queue.name(), %stream, remote = %self.remote, "shipping");
        let mut ack = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let Some(taken) = self
                .with_retries(&shutdown, &mut summary, || self.queue.take(self.batch, ack))
                .await?
            else {
                break;
            };
            ack = None;
            let Some(batch) = taken else {
                metrics::gauge!("hotkeys_sync_queue_length").set(0.0);
                metrics::gauge!("hotkeys_sync_lag_seconds").set(0.0);
                if until_empty {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => continue,
                    _ = shutdown.cancelled() => break,
                }
            };
            match self.ship(&stream, &batch, &shutdown, &mut summary).await? {
                Some(reply) => ack = Some(reply.stamp),
                // Shut down while the receiver was unreachable: the batch stays in flight.
                None => break,
            }
        }
        if let Some(stamp) = ack {
            self.queue.ack(stamp).await?;
        }
        tracing::info!(
            batches = summary.batches,
            ops = summary.ops,
            duplicates = summary.duplicates,
            invalid = summary.invalid,
            retries = summary.retries,
            "shipper stopped"
        );
        Ok(summary)
    }

    /// Sends one batch until the receiver confirms it; `None` if shut down first.
    async fn ship(
        &self,
        stream: &str,
        batch: &Batch,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
    ) -> Result<Option<BatchReply>, Error> {
        let mut ops: Vec<&[u8]> = Vec::with_capacity(batch.items.len());
        let mut invalid = Vec::new();
        let mut oldest = None;
        for item in &batch.items {
            match QueuedOp::from_json(item) {
                Ok(op) => {
                    oldest.get_or_insert(op.at_ms);
                    ops.push(item);
                }
                Err(e) => {
                    if !self.logged_invalid.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            sample = %String::from_utf8_lossy(&item[..item.len().min(200)]),
                            "queue element is not an operation; moved to the dead-letter list"
                        );
                    }
                    invalid.push(item.clone());
                }
            }
        }
        if !invalid.is_empty() {
            // Filtering is deterministic, so a re-sent batch carries the same operations;
            // only the dead-letter copy may repeat after a crash, which is harmless.
            self.queue.dead_letter(&invalid).await?;
            summary.invalid += invalid.len() as u64;
            metrics::counter!("hotkeys_sync_invalid_ops_total").increment(invalid.len() as u64);
        }
        metrics::gauge!("hotkeys_sync_queue_length").set(batch.queued as f64);
        if let Some(at_ms) = oldest {
            let lag = now_ms().saturating_sub(at_ms) as f64 / 1000.0;
            metrics::gauge!("hotkeys_sync_lag_seconds").set(lag);
        }
        if batch.resent {
            tracing::info!(stamp = batch.stamp, ops = ops.len(), "re-sending the batch in flight");
            metrics::counter!("hotkeys_sync_batches_resent_total").increment(1);
        }

        // Level-1 compression of a batch takes well under a millisecond: no blocking pool.
        let plain = wire::encode_batch(stream, batch.stamp, &ops);
        let body = wire::compress(plain, self.compression)
            .map_err(|e| Error::Internal(format!("cannot compress a batch: {e}")))?;
        let body = Bytes::from(body);
        let signature = wire::sign(&self.secret, &body);

        let mut failures = 0u32;
        loop {
            match self.post(batch.stamp, &body, &signature).await {
                Attempt::Delivered(reply) => {
                    summary.batches += 1;
                    summary.ops += ops.len() as u64;
                    metrics::counter!("hotkeys_sync_batches_shipped_total").increment(1);
                    metrics::counter!("hotkeys_sync_ops_shipped_total")
                        .increment(ops.len() as u64);
                    if reply.status == Outcome::Duplicate {
                        summary.duplicates += 1;
                        tracing::info!(stamp = batch.stamp, "receiver had this batch already");
                    }
                    tracing::debug!(stamp = batch.stamp, ops = ops.len(), "batch delivered");
                    return Ok(Some(reply));
                }
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry(reason) => {
                    failures += 1;
                    if !self
                        .pause_after_failure(failures, &reason, batch.stamp, shutdown, summary)
                        .await?
                    {
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn post(&self, stamp: u64, body: &Bytes, signature: &str) -> Attempt {
        let mut request = self
            .client
            .post(&self.remote)
            .header(CONTENT_TYPE, "application/json")
            .header(wire::SIGNATURE_HEADER, signature);
        if let Some(encoding) = wire::content_encoding(self.compression) {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        let response = match request.body(body.clone()).send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(error_chain(&e)),
        };
        let status = response.status();
        let text = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Retry(error_chain(&e)),
        };
        if status == StatusCode::OK {
            return match serde_json::from_slice::<BatchReply>(&text) {
                Ok(reply) if reply.stamp == stamp => Attempt::Delivered(reply),
                Ok(reply) => Attempt::Fatal(self.refused(stamp, status, format!(
                    "acknowledged stamp {} instead", reply.stamp
                ))),
                Err(e) => Attempt::Fatal(self.refused(stamp, status, format!("unreadable answer: {e}"))),
            };
        }
        let message = serde_json::from_slice::<ErrorReply>(&text)
            .map(|r| r.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&text).into_owned());
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Attempt::Retry(format!("HTTP {}: {message}", status.as_u16()))
        } else {
            // 400, 401, 409, 413, 415: the same request would be refused again.
            Attempt::Fatal(self.refused(stamp, status, message))
        }
    }

    fn refused(&self, stamp: u64, status: StatusCode, message: String) -> Error {
        Error::Refused {
            remote: self.remote.clone(),
            stamp,
            status: status.as_u16(),
            message,
        }
    }

    /// Runs a queue operation, trying again while the local Redis fails; `None` if shut
    /// down first.
    async fn with_retries<T, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
        mut op: F,
    ) -> Result<Option<T>, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, hotkeys::sync_queue::SyncError>>,
    {
        let mut failures = 0u32;
        loop {
            match op().await {
                Ok(v) => return Ok(Some(v)),
                Err(e) if e.is_unreachable() => {
                    failures += 1;
                    if !self
                        .pause_after_failure(failures, &e.to_string(), 0, shutdown, summary)
                        .await?
                    {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Counts a failed try and waits before the next one. `false`: shut down meanwhile.
    async fn pause_after_failure(
        &self,
        failures: u32,
        reason: &str,
        stamp: u64,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
    ) -> Result<bool, Error> {
        summary.retries += 1;
        metrics::counter!("hotkeys_sync_retries_total").increment(1);
        if self.retries > 0 && failures >= self.retries {
            return Err(Error::GaveUp {
                remote: self.remote.clone(),
                tries: failures,
                last: reason.to_string(),
            });
        }
        let delay = backoff(failures, self.retry_max);
        // Logged at the first failure and then ever more rarely: a long outage stays visible
        // without flooding the log.
        if failures.is_power_of_two() {
            tracing::warn!(stamp, failures, delay_ms = delay.as_millis() as u64, %reason, "try failed; trying again");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(true),
            _ = shutdown.cancelled() => Ok(false),
        }
    }
}

/// Pause before try `failures + 1`: doubling from 100 ms up to `max`, then a random share
/// of the upper half, so that many shippers coming back do not hit the receiver together.
fn backoff(failures: u32, max: Duration) -> Duration {
    let doubled = RETRY_MIN.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let ceiling = doubled.min(max);
    ceiling / 2 + ceiling.mul_f64(rand::random::<f64>() / 2.0)
}

/// An error and its causes on one line: reqwest's own message hides "connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let max = Duration::from_secs(2);
        for failures in 1..40 {
            let ceiling = (RETRY_MIN * 2u32.pow((failures - 1).min(20))).min(max);
            let d = backoff(failures, max);
            assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?}");
        }
    }
}
