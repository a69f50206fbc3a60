//! `cache-sync ship`: moves the queue to the other data centre's receiver, losing nothing.
//!
//! Batches are taken from the queue with consecutive stamps and sent concurrently, up to
//! `sync.in_flight` at a time, each by a task of its own that retries it until the receiver
//! confirms it. Confirmations are acknowledged strictly in stamp order, so a batch leaves the
//! queue only once it and every batch before it have landed. A shipper killed anywhere
//! leaves its unacknowledged batches in flight; its successor sends them again first, with
//! the same stamps, and the receiver applies each stamp once and in order.
//!
//! The local Redis may drop the connection at any moment (a failover, a proxy restart,
//! `CLIENT KILL`). A take whose answer was lost may still have moved a batch in flight, so
//! after any failed take the shipper rebuilds what it sends from the in-flight state in
//! Redis ([`SyncQueue::in_flight`]) before taking anything new, and checks again that the
//! state node does not evict. A receiver that answers 409 (a stamp skips ahead) lacks a batch
//! before it: every batch in flight is sent again, in stamp order. Only a refusal that
//! cannot heal by trying again — 401 (shared secret), 400 (malformed), 413 (too large),
//! 403 (a stale stamp) — stops the shipper.
//!
//! While the receiver is down every try backs off exponentially with jitter, up to
//! `sync.retry_max`, and the queue just grows. Queue elements are checked only when the
//! receiver refuses a batch as malformed: the bad ones go to the dead-letter list and the
//! rest of the batch is sent again under its stamp.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use hotkeys::config::{SyncCompression, SyncConfig};
use hotkeys::shutdown::CancellationToken;
use hotkeys::sync_queue::{Batch, QueuedOp, SyncError, SyncQueue, now_ms};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use tokio::task::JoinHandle;

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
    sender: Sender,
    batch: usize,
    window: usize,
}

/// What a delivery task needs; cheap to clone.
#[derive(Clone)]
struct Sender {
    queue: SyncQueue,
    client: reqwest::Client,
    remote: Arc<str>,
    secret: Arc<[u8]>,
    compression: SyncCompression,
    /// How long the receiver may hold a batch for the ones before it.
    wait_ms: u64,
    retry_max: Duration,
    retries: u32,
    /// Bad queue elements are logged once with a sample, then only counted.
    logged_invalid: Arc<AtomicBool>,
}

/// A batch the receiver confirmed.
struct Delivery {
    ops: u64,
    invalid: u64,
    retries: u64,
    duplicate: bool,
}

/// A batch being delivered by a task of its own: `None` when shut down before it landed.
type DeliveryTask = JoinHandle<Result<Option<Delivery>, Error>>;

/// A batch under way: its stamp, when its oldest operation was queued, its delivery.
struct InFlight {
    stamp: u64,
    oldest_ms: Option<u64>,
    task: DeliveryTask,
}

/// The batches under way, oldest stamp first, and what the shipper knows of its stream.
struct Pending {
    batches: VecDeque<InFlight>,
    stream: Arc<str>,
    /// The newest stamp under way or delivered; a take hands out the one after it.
    last: u64,
}

impl Pending {
    /// Stops every delivery under way; their batches stay in flight in Redis.
    fn abort(&mut self) {
        for in_flight in self.batches.drain(..) {
            in_flight.task.abort();
        }
    }
}

enum Attempt {
    Delivered(BatchReply),
    /// 400: the receiver found something in the batch that is not an operation.
    Malformed(Error),
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
            queue: queue.clone(),
            sender: Sender {
                queue,
                client,
                remote: sync.remote.as_str().into(),
                secret: secret.as_bytes().into(),
                compression: sync.compression,
                // Half the request timeout: a held batch is answered before the shipper
                // gives up on the request.
                wait_ms: (sync.timeout / 2).as_millis() as u64,
                retry_max: sync.retry_max.max(RETRY_MIN),
                retries: sync.retries,
                logged_invalid: Arc::new(AtomicBool::new(false)),
            },
            batch: sync.batch.max(1),
            window: sync.in_flight.max(1),
        })
    }

    /// Ships until `shutdown` (finishing the batches under way, unless the receiver is
    /// down), or until the queue is empty when `until_empty` is set.
    pub async fn run(
        &self,
        shutdown: CancellationToken,
        until_empty: bool,
    ) -> Result<ShipSummary, Error> {
        let mut summary = ShipSummary::default();
        let mut pending = None;
        let result = self
            .pump(&mut pending, &shutdown, until_empty, &mut summary)
            .await;
        // Batches still under way stay in flight for the next shipper.
        if let Some(pending) = &mut pending {
            pending.abort();
        }
        result?;
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

    async fn pump(
        &self,
        slot: &mut Option<Pending>,
        shutdown: &CancellationToken,
        until_empty: bool,
        summary: &mut ShipSummary,
    ) -> Result<(), Error> {
        // The stream is learnt from Redis by the first resync, after the eviction check.
        let pending = slot.insert(Pending {
            batches: VecDeque::new(),
            stream: "".into(),
            last: 0,
        });
        if !self.resync(pending, shutdown, summary).await? {
            return Ok(());
        }
        tracing::info!(queue = self.queue.name(), stream = %pending.stream, remote = %self.sender.remote, "shipping");
        loop {
            if !self.fill(pending, shutdown, summary).await? {
                return Ok(());
            }
            report_lag(&pending.batches);
            let Some(InFlight { stamp, task, .. }) = pending.batches.pop_front() else {
                metrics::gauge!("hotkeys_sync_queue_length").set(0.0);
                metrics::gauge!("hotkeys_sync_lag_seconds").set(0.0);
                if until_empty || shutdown.is_cancelled() {
                    return Ok(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => continue,
                    _ = shutdown.cancelled() => return Ok(()),
                }
            };
            let delivered = task
                .await
                .map_err(|e| Error::Internal(format!("delivery of batch {stamp}: {e}")))?;
            let delivery = match delivered {
                Ok(Some(delivery)) => delivery,
                // Shut down while the receiver was unreachable: the batch stays in flight.
                Ok(None) => return Ok(()),
                Err(Error::Refused {
                    status: 409,
                    message,
                    ..
                }) => {
                    // The receiver lacks a batch before this one: send them all again.
                    tracing::warn!(stamp, %message, "receiver reports a gap; re-sending the batches in flight in order");
                    metrics::counter!("hotkeys_sync_gaps_total").increment(1);
                    summary.retries += 1;
                    pending.abort();
                    pending.last = 0;
                    if !self.sender.pause(1, &message, stamp, shutdown).await?
                        || !self.resync(pending, shutdown, summary).await?
                    {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            summary.batches += 1;
            summary.ops += delivery.ops;
            summary.invalid += delivery.invalid;
            summary.retries += delivery.retries;
            summary.duplicates += u64::from(delivery.duplicate);
            let tries = summary.retries;
            if self
                .retrying(shutdown, summary, || self.queue.ack(stamp))
                .await?
                .is_none()
            {
                return Ok(());
            }
            // Reconnected on the way: check the state node again.
            if summary.retries > tries && !self.resync(pending, shutdown, summary).await? {
                return Ok(());
            }
        }
    }

    /// Takes new batches until `sync.in_flight` are under way or the queue is empty. After a
    /// failed take, what is in flight is read back from Redis first. `false`: shut down.
    async fn fill(
        &self,
        pending: &mut Pending,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
    ) -> Result<bool, Error> {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() && pending.batches.len() < self.window {
            match self.queue.take(self.batch, self.window).await {
                Ok(Some(batch)) => {
                    failures = 0;
                    metrics::gauge!("hotkeys_sync_queue_length").set(batch.queued as f64);
                    self.launch(pending, batch, shutdown);
                }
                Ok(None) => break,
                Err(e) if e.is_unreachable() => {
                    failures += 1;
                    summary.retries += 1;
                    if !self
                        .sender
                        .pause(failures, &e.to_string(), 0, shutdown)
                        .await?
                        || !self.resync(pending, shutdown, summary).await?
                    {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Brings `pending` in line with the state in Redis, after a start or a lost connection:
    /// checks that the state node does not evict, follows a stream that was started anew
    /// (the node lost its data), and launches every batch in flight that is not under way
    /// yet, in stamp order. `false`: shut down first.
    async fn resync(
        &self,
        pending: &mut Pending,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
    ) -> Result<bool, Error> {
        if self
            .retrying(shutdown, summary, || self.queue.check_no_eviction())
            .await?
            .is_none()
        {
            return Ok(false);
        }
        let Some(stream) = self
            .retrying(shutdown, summary, || self.queue.stream_id())
            .await?
        else {
            return Ok(false);
        };
        if *pending.stream != stream {
            if !pending.stream.is_empty() {
                tracing::error!(
                    old = %pending.stream,
                    new = %stream,
                    "the state node lost the replication state (restarted empty?); the batches in flight are gone, shipping a new stream"
                );
            }
            pending.abort();
            pending.stream = stream.into();
            pending.last = 0;
        }
        let Some(left) = self
            .retrying(shutdown, summary, || self.queue.in_flight())
            .await?
        else {
            return Ok(false);
        };
        let missing: Vec<Batch> = left
            .into_iter()
            .filter(|b| b.stamp > pending.last)
            .collect();
        if let Some(first) = missing.first() {
            tracing::info!(
                batches = missing.len(),
                first = first.stamp,
                "sending the batches in flight first"
            );
            metrics::counter!("hotkeys_sync_batches_resent_total").increment(missing.len() as u64);
        }
        for batch in missing {
            self.launch(pending, batch, shutdown);
        }
        Ok(true)
    }

    /// Starts the delivery of `batch` in a task of its own, behind the ones under way.
    fn launch(&self, pending: &mut Pending, batch: Batch, shutdown: &CancellationToken) {
        let oldest_ms = batch
            .items
            .first()
            .and_then(|i| QueuedOp::from_json(i).ok())
            .map(|op| op.at_ms);
        let sender = self.sender.clone();
        let stream = Arc::clone(&pending.stream);
        let shutdown = shutdown.clone();
        let stamp = batch.stamp;
        let task = tokio::spawn(async move { sender.deliver(&stream, &batch, &shutdown).await });
        pending.last = stamp;
        pending.batches.push_back(InFlight {
            stamp,
            oldest_ms,
            task,
        });
    }

    /// Runs a queue operation, trying again while the local Redis fails; `None` if shut
    /// down first.
    async fn retrying<T, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
        mut op: F,
    ) -> Result<Option<T>, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SyncError>>,
    {
        let mut failures = 0u32;
        loop {
            match op().await {
                Ok(v) => return Ok(Some(v)),
                Err(e) if e.is_unreachable() => {
                    failures += 1;
                    summary.retries += 1;
                    let reason = e.to_string();
                    if !self.sender.pause(failures, &reason, 0, shutdown).await? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Sender {
    /// Sends one batch until the receiver confirms it; `None` if shut down first.
    async fn deliver(
        &self,
        stream: &str,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Result<Option<Delivery>, Error> {
        let stamp = batch.stamp;
        let mut ops: Vec<&[u8]> = batch.items.iter().map(Vec::as_slice).collect();
        let mut invalid = 0;
        let mut checked = false;
        let (mut body, mut signature) = self.body(stream, stamp, &ops)?;
        let mut failures = 0u32;
        loop {
            match self.post(stamp, &body, &signature).await {
                Attempt::Delivered(reply) => {
                    metrics::counter!("hotkeys_sync_batches_shipped_total").increment(1);
                    metrics::counter!("hotkeys_sync_ops_shipped_total").increment(ops.len() as u64);
                    let duplicate = reply.status == Outcome::Duplicate;
                    if duplicate {
                        tracing::info!(stamp, "receiver had this batch already");
                    }
                    tracing::debug!(stamp, ops = ops.len(), "batch delivered");
                    return Ok(Some(Delivery {
                        ops: ops.len() as u64,
                        invalid,
                        retries: u64::from(failures),
                        duplicate,
                    }));
                }
                Attempt::Malformed(refusal) if !checked => {
                    checked = true;
                    let (good, bad): (Vec<&[u8]>, Vec<&[u8]>) = ops
                        .iter()
                        .partition(|item| QueuedOp::from_json(item).is_ok());
                    if bad.is_empty() {
                        return Err(refusal);
                    }
                    self.set_aside(&bad).await?;
                    invalid = bad.len() as u64;
                    // Deterministic: a re-sent batch is filtered the same way.
                    ops = good;
                    (body, signature) = self.body(stream, stamp, &ops)?;
                }
                Attempt::Malformed(refusal) | Attempt::Fatal(refusal) => return Err(refusal),
                Attempt::Retry(reason) => {
                    failures += 1;
                    if !self.pause(failures, &reason, stamp, shutdown).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The signed, compressed request body of a batch.
    fn body(&self, stream: &str, stamp: u64, ops: &[&[u8]]) -> Result<(Bytes, String), Error> {
        let plain = wire::encode_batch(stream, stamp, self.wait_ms, ops.iter().copied());
        let body = wire::compress(plain, self.compression)
            .map_err(|e| Error::Internal(format!("cannot compress batch {stamp}: {e}")))?;
        let signature = wire::sign(&self.secret, &body);
        Ok((Bytes::from(body), signature))
    }

    async fn set_aside(&self, bad: &[&[u8]]) -> Result<(), Error> {
        if !self.logged_invalid.swap(true, Ordering::Relaxed) {
            let sample = bad[0];
            tracing::warn!(
                count = bad.len(),
                sample = %String::from_utf8_lossy(&sample[..sample.len().min(200)]),
                "queue elements are not operations; moved to the dead-letter list"
            );
        }
        metrics::counter!("hotkeys_sync_invalid_ops_total").increment(bad.len() as u64);
        // A crash right after this may set the same elements aside twice: harmless.
        self.queue.dead_letter(bad).await?;
        Ok(())
    }

    async fn post(&self, stamp: u64, body: &Bytes, signature: &str) -> Attempt {
        let mut request = self
            .client
            .post(&*self.remote)
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
                Ok(reply) => Attempt::Fatal(self.refused(
                    stamp,
                    status,
                    format!("acknowledged stamp {} instead", reply.stamp),
                )),
                Err(e) => {
                    Attempt::Fatal(self.refused(stamp, status, format!("unreadable answer: {e}")))
                }
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
        } else if status == StatusCode::BAD_REQUEST {
            Attempt::Malformed(self.refused(stamp, status, message))
        } else {
            // 401, 403, 413, 415: the same request would be refused again; 409 goes back to
            // the pump, which sends the batches in flight again.
            Attempt::Fatal(self.refused(stamp, status, message))
        }
    }

    fn refused(&self, stamp: u64, status: StatusCode, message: String) -> Error {
        Error::Refused {
            remote: self.remote.to_string(),
            stamp,
            status: status.as_u16(),
            message,
        }
    }

    /// Counts a failed try and waits before the next one. `false`: shut down meanwhile.
    async fn pause(
        &self,
        failures: u32,
        reason: &str,
        stamp: u64,
        shutdown: &CancellationToken,
    ) -> Result<bool, Error> {
        metrics::counter!("hotkeys_sync_retries_total").increment(1);
        if self.retries > 0 && failures >= self.retries {
            return Err(Error::GaveUp {
                remote: self.remote.to_string(),
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

/// Lag: the age of the oldest operation not yet acknowledged, which heads the oldest batch
/// under way.
fn report_lag(pending: &VecDeque<InFlight>) {
    if let Some(oldest_ms) = pending.front().and_then(|p| p.oldest_ms) {
        let lag = now_ms().saturating_sub(oldest_ms) as f64 / 1000.0;
        metrics::gauge!("hotkeys_sync_lag_seconds").set(lag);
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
