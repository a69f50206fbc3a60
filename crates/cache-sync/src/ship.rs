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
//! cannot heal by trying again — 401 (shared secret or clocks), 400 (malformed), 413 (too
//! large) — stops the shipper.
//!
//! Streams are issued by the receiver (see [`crate::wire`]). The shipper starts a new one —
//! closing the old one at the receiver, then renumbering its batches in flight 1, 2, … under
//! the new one ([`SyncQueue::restart_stream`]) and sending them again — whenever either side
//! finds the stream can no longer be trusted: the receiver answers 409 with `reset` (a
//! stamp re-used with other operations, a stream it has no record of, a closed stream), or
//! the shipper finds its queue's meta hash behind what it had seen or gone. Each such
//! incident is one warn line and `hotkeys_sync_resets_total{reason}`. Repeated 409s back
//! off like failed tries and count against `sync.retries`.
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
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::config::secret::NodeUrl;
use hotkeys::config::{SyncCompression, SyncConfig};
use hotkeys::sync::{Batch, Position, QueuedOp, SyncError, SyncQueue, now_ms};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::wire::{self, BatchReply, ErrorReply, Outcome, ResetReason, StreamReply, StreamRequest};

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
    /// Streams started anew after the stream could not be trusted any more.
    pub resets: u64,
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
    /// `sync.remote`, shown without credentials.
    remote: NodeUrl,
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
    /// The newest stamp taken in this stream, and the last acknowledged: the queue's meta
    /// hash never goes below them unless its state node went back.
    taken: u64,
    acked: u64,
    /// 409s in a row (gaps and resets); reset by a batch applied.
    setbacks: u32,
    /// Why the next resync must start a new stream.
    reset: Option<ResetReason>,
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
        let client = crate::tls::client(sync)?;
        Ok(Shipper {
            queue: queue.clone(),
            sender: Sender {
                queue,
                client,
                remote: NodeUrl::new(sync.remote.as_str()),
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
            taken: 0,
            acked: 0,
            setbacks: 0,
            reset: None,
        });
        if !self.resync(pending, shutdown, summary).await? {
            return Ok(());
        }
        tracing::info!(queue = self.queue.name(), stream = %pending.stream, remote = %self.sender.remote, "shipping");
        crate::tls::warn_if_plain_remote(&self.sender.remote);
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
            if !self
                .settle(pending, stamp, delivered, shutdown, summary)
                .await?
            {
                return Ok(());
            }
        }
    }

    /// Acts on how the delivery of the oldest batch under way ended: acknowledges it once
    /// the receiver confirmed it, sends the batches in flight again after a 409. `false`:
    /// shut down.
    async fn settle(
        &self,
        pending: &mut Pending,
        stamp: u64,
        delivered: Result<Option<Delivery>, Error>,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
    ) -> Result<bool, Error> {
        let delivery = match delivered {
            Ok(Some(delivery)) => delivery,
            // Shut down while the receiver was unreachable: the batch stays in flight.
            Ok(None) => return Ok(false),
            Err(Error::Refused {
                status: 409,
                message,
                ..
            }) => {
                // The receiver lacks a batch before this one: send them all again.
                tracing::warn!(stamp, %message, "receiver reports a gap; re-sending the batches in flight in order");
                metrics::counter!("hotkeys_sync_gaps_total").increment(1);
                return self.set_back(pending, None, summary, shutdown).await;
            }
            Err(Error::Reset { reason, .. }) => {
                return self
                    .set_back(pending, Some(reason), summary, shutdown)
                    .await;
            }
            Err(e) => return Err(e),
        };
        if !delivery.duplicate {
            pending.setbacks = 0;
        }
        summary.batches += 1;
        summary.ops += delivery.ops;
        summary.invalid += delivery.invalid;
        summary.retries += delivery.retries;
        summary.duplicates += u64::from(delivery.duplicate);
        let tries = summary.retries;
        let Some(acked) = self
            .retrying(shutdown, summary, || self.queue.ack(stamp))
            .await?
        else {
            return Ok(false);
        };
        pending.acked = pending.acked.max(acked);
        // Reconnected on the way: check the state node again.
        Ok(summary.retries == tries || self.resync(pending, shutdown, summary).await?)
    }

    /// After a 409: stops the deliveries under way, waits (backing off, and giving up after
    /// `sync.retries` of them in a row), then sends the batches in flight again — under a
    /// new stream when `reset` says so. `false`: shut down.
    async fn set_back(
        &self,
        pending: &mut Pending,
        reset: Option<ResetReason>,
        summary: &mut ShipSummary,
        shutdown: &CancellationToken,
    ) -> Result<bool, Error> {
        summary.retries += 1;
        pending.setbacks += 1;
        pending.abort();
        pending.last = 0;
        pending.reset = reset.or(pending.reset);
        let reason = reset.map_or("receiver reports a gap", ResetReason::as_str);
        Ok(self
            .sender
            .wait(pending.setbacks, reason, None, shutdown)
            .await?
            && self.resync(pending, shutdown, summary).await?)
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
                // A stamp handed out twice: the queue's state node went back under us.
                Ok(Some(batch)) if batch.stamp <= pending.taken => {
                    pending.reset = Some(ResetReason::SenderWentBack);
                    if !self.resync(pending, shutdown, summary).await? {
                        return Ok(false);
                    }
                }
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

    /// Brings `pending` in line with the state in Redis, after a start, a lost connection or
    /// a 409: checks that the state node does not evict, starts a new stream when one is due
    /// (see [`Shipper::stream_verdict`]), follows a stream another shipper started, and
    /// launches every batch in flight that is not under way yet, in stamp order. `false`:
    /// shut down first.
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
        Ok(self.align_stream(pending, shutdown, summary).await?
            && self.relaunch(pending, shutdown, summary).await?)
    }

    /// Settles which stream `pending` ships, from the queue's meta hash: keeps it, follows
    /// the queue's, or starts a new one. `false`: shut down first.
    async fn align_stream(
        &self,
        pending: &mut Pending,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
    ) -> Result<bool, Error> {
        loop {
            let Some(position) = self
                .retrying(shutdown, summary, || self.queue.position())
                .await?
            else {
                return Ok(false);
            };
            let verdict = stream_verdict(pending, &position);
            pending.reset = None;
            match verdict {
                Verdict::Keep => return Ok(true),
                Verdict::Follow(stream) => {
                    pending.abort();
                    pending.stream = stream.into();
                    (pending.last, pending.taken) = (0, position.stamp);
                    pending.acked = position.acked;
                    return Ok(true);
                }
                Verdict::Restart(reason) => {
                    let in_queue = position.stream.as_deref();
                    if !self
                        .restart(pending, reason, in_queue, shutdown, summary)
                        .await?
                    {
                        return Ok(false);
                    }
                    // Empty: another shipper moved the queue first; read it again.
                    if !pending.stream.is_empty() {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Launches every batch in flight in Redis that is not under way yet, in stamp order.
    /// `false`: shut down first.
    async fn relaunch(
        &self,
        pending: &mut Pending,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
    ) -> Result<bool, Error> {
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

    /// Starts a new stream: the receiver issues it (closing the one left), then the queue
    /// moves its batches in flight under it. `reason` is `None` for the queue's first
    /// stream, which is no incident. `false`: shut down first.
    async fn restart(
        &self,
        pending: &mut Pending,
        reason: Option<ResetReason>,
        in_queue: Option<&str>,
        shutdown: &CancellationToken,
        summary: &mut ShipSummary,
    ) -> Result<bool, Error> {
        pending.abort();
        let old = (!pending.stream.is_empty()).then(|| pending.stream.to_string());
        let previous = in_queue.map(str::to_string).or(old);
        let Some(stream) = self
            .sender
            .open_stream(self.queue.name(), previous.as_deref(), shutdown)
            .await?
        else {
            return Ok(false);
        };
        let Some(moved) = self
            .retrying(shutdown, summary, || {
                self.queue.restart_stream(in_queue, &stream)
            })
            .await?
        else {
            return Ok(false);
        };
        let Some(restarted) = moved else {
            // Another shipper of the queue moved it first: the caller follows it.
            pending.stream = "".into();
            return Ok(true);
        };
        pending.stream = stream.into();
        (pending.last, pending.taken, pending.acked) = (0, restarted.batches, 0);
        let Some(reason) = reason else {
            tracing::info!(stream = %pending.stream, "stream started");
            return Ok(true);
        };
        summary.resets += 1;
        metrics::counter!("hotkeys_sync_resets_total", "reason" => reason.as_str()).increment(1);
        tracing::warn!(
            reason = reason.as_str(),
            old = previous.as_deref().unwrap_or(""),
            new = %pending.stream,
            batches = restarted.batches,
            lost_batches = restarted.missing,
            "replication stream reset; sending the batches in flight again under a new stream"
        );
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
        pending.taken = pending.taken.max(stamp);
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
        let mut failures = 0u32;
        loop {
            // Signed anew on every try: the receiver refuses a body signed long ago.
            let (body, signature) = self.body(stream, stamp, &ops)?;
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
        let plain = wire::encode_batch(stream, stamp, now_ms(), self.wait_ms, ops.iter().copied());
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
            .post(self.remote.expose())
            .header(CONTENT_TYPE, "application/json")
            .header(wire::SIGNATURE_HEADER, signature);
        if let Some(encoding) = wire::content_encoding(self.compression) {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        let response = match request.body(body.clone()).send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(chain(e)),
        };
        let status = response.status();
        let text = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Retry(chain(e)),
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
        let (message, reset) = match serde_json::from_slice::<ErrorReply>(&text) {
            Ok(reply) => (reply.error, reply.reset),
            Err(_) => (String::from_utf8_lossy(&text).into_owned(), None),
        };
        if let (StatusCode::CONFLICT, Some(reason)) = (status, reset) {
            return Attempt::Fatal(Error::Reset {
                remote: self.remote.to_string(),
                stamp,
                reason,
                message,
            });
        }
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Attempt::Retry(format!("HTTP {}: {message}", status.as_u16()))
        } else if status == StatusCode::BAD_REQUEST {
            Attempt::Malformed(self.refused(stamp, status, message))
        } else {
            // 401, 403, 413, 415: the same request would be refused again; 409 goes back to
            // the pump, which sends the batches in flight again (under a new stream if asked).
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

    /// Asks the receiver for a new stream of `queue`, closing `previous`; tries again while
    /// the receiver is unreachable. `None`: shut down first.
    async fn open_stream(
        &self,
        queue: &str,
        previous: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Result<Option<String>, Error> {
        let url = format!("{}/streams", self.remote.expose().trim_end_matches('/'));
        let mut failures = 0u32;
        loop {
            let body = serde_json::to_vec(&StreamRequest {
                queue: queue.to_string(),
                previous: previous.map(str::to_string),
                sent_ms: now_ms(),
            })
            .map_err(|e| Error::Internal(e.to_string()))?;
            let signature = wire::sign(&self.secret, &body);
            let sent = self
                .client
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .header(wire::SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await;
            let reason = match sent {
                Ok(response) if response.status() == StatusCode::OK => {
                    let text = response.bytes().await.unwrap_or_default();
                    match serde_json::from_slice::<StreamReply>(&text) {
                        Ok(reply) => return Ok(Some(reply.stream)),
                        Err(e) => format!("unreadable answer: {e}"),
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let message =
                        serde_json::from_str::<ErrorReply>(&text).map_or(text, |r| r.error);
                    if !(status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT) {
                        return Err(self.refused(0, status, message));
                    }
                    format!("HTTP {}: {message}", status.as_u16())
                }
                Err(e) => chain(e),
            };
            failures += 1;
            if !self.pause(failures, &reason, 0, shutdown).await? {
                return Ok(None);
            }
        }
    }

    /// Counts a failed try, logs it (at the 1st, 2nd, 4th… failure in a row: a long outage
    /// stays visible without flooding the log) and waits before the next one. `false`: shut
    /// down meanwhile.
    async fn pause(
        &self,
        failures: u32,
        reason: &str,
        stamp: u64,
        shutdown: &CancellationToken,
    ) -> Result<bool, Error> {
        let logged = failures.is_power_of_two().then_some(stamp);
        self.wait(failures, reason, logged, shutdown).await
    }

    /// Waits before try `failures + 1`, or gives up after `sync.retries` failures in a row;
    /// logs the failure of batch `logged` when given. `false`: shut down meanwhile.
    async fn wait(
        &self,
        failures: u32,
        reason: &str,
        logged: Option<u64>,
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
        if let Some(stamp) = logged {
            tracing::warn!(stamp, failures, delay_ms = delay.as_millis() as u64, %reason, "try failed; trying again");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(true),
            _ = shutdown.cancelled() => Ok(false),
        }
    }
}

/// What a resync does with the stream.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Go on with it.
    Keep,
    /// The queue is on another stream (at start, or another shipper moved it): take it up.
    Follow(String),
    /// Start a new stream; `None`: the queue's first.
    Restart(Option<ResetReason>),
}

/// Compares what the shipper knows of its stream with the queue's meta hash.
fn stream_verdict(pending: &Pending, position: &Position) -> Verdict {
    let Some(stream) = &position.stream else {
        return Verdict::Restart(
            (!pending.stream.is_empty()).then_some(ResetReason::SenderLostState),
        );
    };
    if **stream != *pending.stream {
        return Verdict::Follow(stream.clone());
    }
    if let Some(reason) = pending.reset {
        return Verdict::Restart(Some(reason));
    }
    if position.stamp < pending.taken || position.acked < pending.acked {
        return Verdict::Restart(Some(ResetReason::SenderWentBack));
    }
    Verdict::Keep
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

/// An error and its causes on one line, without the URL (it may carry credentials):
/// reqwest's own message hides "connection refused".
fn chain(e: reqwest::Error) -> String {
    format!("{:#}", anyhow::Error::new(e.without_url()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(stream: &str, taken: u64, acked: u64) -> Pending {
        Pending {
            batches: VecDeque::new(),
            stream: stream.into(),
            last: 0,
            taken,
            acked,
            setbacks: 0,
            reset: None,
        }
    }

    fn position(stream: Option<&str>, stamp: u64, acked: u64) -> Position {
        Position {
            stream: stream.map(str::to_string),
            stamp,
            acked,
        }
    }

    #[test]
    fn a_queue_without_a_stream_starts_one_and_only_a_lost_one_is_an_incident() {
        assert_eq!(
            stream_verdict(&pending("", 0, 0), &position(None, 0, 0)),
            Verdict::Restart(None)
        );
        assert_eq!(
            stream_verdict(&pending("q@1", 9, 7), &position(None, 0, 0)),
            Verdict::Restart(Some(ResetReason::SenderLostState))
        );
    }

    #[test]
    fn a_meta_hash_behind_what_the_shipper_saw_restarts_the_stream() {
        let shipped = pending("q@1", 10, 8);
        assert_eq!(
            stream_verdict(&shipped, &position(Some("q@1"), 10, 8)),
            Verdict::Keep
        );
        assert_eq!(
            stream_verdict(&shipped, &position(Some("q@1"), 12, 9)),
            Verdict::Keep
        );
        for (stamp, acked) in [(8, 8), (10, 6)] {
            assert_eq!(
                stream_verdict(&shipped, &position(Some("q@1"), stamp, acked)),
                Verdict::Restart(Some(ResetReason::SenderWentBack)),
                "{stamp} {acked}"
            );
        }
    }

    #[test]
    fn another_stream_in_the_queue_is_followed_and_a_reset_asked_for_restarts() {
        assert_eq!(
            stream_verdict(&pending("", 0, 0), &position(Some("q@2"), 3, 1)),
            Verdict::Follow("q@2".into())
        );
        let mut asked = pending("q@1", 3, 1);
        asked.reset = Some(ResetReason::UnknownStream);
        assert_eq!(
            stream_verdict(&asked, &position(Some("q@1"), 3, 1)),
            Verdict::Restart(Some(ResetReason::UnknownStream))
        );
    }

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
