//! `cache-sync receive`: the HTTP endpoint that applies batches to this data centre's cache.
//!
//! A request is checked whole before anything is applied — size, signature, encoding, every
//! operation — so a refused request changes nothing. The signature covers the whole body,
//! stream and stamp included. A batch is applied only if its stamp is the next one of its
//! stream. Per stream, a Redis hash on the state node (`sync.state`, else the home of the
//! receiving cache), `cache-sync:stream:<stream>`, records:
//!
//! - `processing`: the stamp being applied; `processed`: the last stamp fully applied;
//! - `applied` / `applied_ops`: batch applications started and their operations (with no
//!   receiver crash, `applied == processed`); `duplicates`: re-sent stamps acknowledged
//!   without applying them;
//! - `owner` / `lease_end`: a lease that keeps a second receiver process off a batch being
//!   applied (requests of one stream are serialized inside one process anyway). It is
//!   renewed before every chunk of `redis.pipeline` writes after the first, and a receiver
//!   that finds it lost stops applying.
//!
//! - `digest:<stamp>`: the digest of each of the last `KEEP_DIGESTS` stamps applied
//!   ([`wire::ops_digest`]), which tells a true re-send from a stamp re-used for other
//!   operations;
//! - `issued_ms`: when the stream was issued; `closed`: when it was left for a newer one.
//!
//! Only streams this receiver issued (`POST /sync/streams`) are applied, so a receiver that
//! lost its records refuses every batch of the old stream — including captured requests
//! replayed at it — and the shipper starts a new stream. A request signed further than
//! `sync.max_skew` from this receiver's clock is refused (401) as a replay. A record lives
//! `RECORD_TTL` after its last batch: a stream idle that long is simply started anew.
//!
//! A batch applies only if its stamp is the next one of an open stream it was issued for.
//! A stamp up to `processed` with its digest on record is a re-send, acknowledged without
//! applying it; with another digest (or none kept) the stamp was re-used — the sender's
//! state went back — and it is refused with 409 `reset`, as are batches of an unknown or
//! closed stream: the shipper then starts a new stream and sends what it has in flight
//! under it. The state node must not evict (see [`hotkeys::sync::check_no_eviction`]):
//! it is checked at start and after every failed command; an `allkeys-*` policy stops the
//! receiver.
//!
//! Requests are served at most `MAX_CONCURRENT` at a time, each within `sync.timeout`
//! (answered 408 after it), so slow or oversized unauthenticated requests cannot tie the
//! receiver up.
//!
//! A stamp that skips ahead is refused, since the shipper never skips one — after waiting up
//! to the request's `wait_ms` for the missing stamps, because the shipper sends several
//! batches at once and they may arrive out of order.
//!
//! Applying runs in a task of its own, so a shipper that hangs up (or is killed) mid-request
//! never leaves a batch half-applied here. A receiver that dies half-way leaves `processing`
//! ahead of `processed`: the shipper re-sends, and the batch is applied again in full, which
//! lands on the same final state because it is the newest batch of its stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_ENCODING, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use hotkeys::Topology;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::redis::{CacheNodes, RedisConn, Write};
use hotkeys::sync::{Op, QueuedOp, SyncError, check_no_eviction, now_ms, state_beside};
use redis::Script;
use tower::ServiceBuilder;

use crate::error::Error;
use crate::wire::{
    self, BatchReply, BatchRequest, DecodeError, ErrorReply, Outcome, ResetReason, StreamReply,
    StreamRequest,
};

/// Starts applying a stamp if it is the next one of an open stream and no other receiver
/// holds the stream.
///
/// KEYS: the stream hash. ARGV: stamp, operations, now (ms), lease end (ms), owner, digest.
/// Returns {0 duplicate | 1 go | 2 gap | 3 busy | 4 re-used stamp | 5 unknown stream |
/// 6 closed stream, processed}.
const BEGIN_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {5, 0} end
local processed = tonumber(redis.call('HGET', KEYS[1], 'processed') or '0')
if redis.call('HEXISTS', KEYS[1], 'closed') == 1 then return {6, processed} end
local stamp = tonumber(ARGV[1])
if stamp <= processed then
  if redis.call('HGET', KEYS[1], 'digest:' .. stamp) ~= ARGV[6] then return {4, processed} end
  redis.call('HINCRBY', KEYS[1], 'duplicates', 1)
  return {0, processed}
end
if stamp > processed + 1 then return {2, processed} end
local owner = redis.call('HGET', KEYS[1], 'owner')
local lease_end = tonumber(redis.call('HGET', KEYS[1], 'lease_end') or '0')
if owner and owner ~= ARGV[5] and lease_end > tonumber(ARGV[3]) then return {3, processed} end
redis.call('HSET', KEYS[1], 'processing', ARGV[1], 'owner', ARGV[5], 'lease_end', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'applied', 1)
redis.call('HINCRBY', KEYS[1], 'applied_ops', ARGV[2])
return {1, processed}
";

/// Marks a stamp fully applied, keeps its digest (dropping the one `KEEP_DIGESTS` older)
/// and extends the record's life. KEYS: the stream hash. ARGV: stamp, now (ms), digest,
/// digests kept, record TTL (ms). Returns 1, or 0 if the stamp was recorded already
/// (another receiver finished it).
const COMMIT_SCRIPT: &str = r"
local stamp = tonumber(ARGV[1])
local processed = tonumber(redis.call('HGET', KEYS[1], 'processed') or '0')
if stamp <= processed then return 0 end
redis.call('HSET', KEYS[1], 'processed', stamp, 'updated_ms', ARGV[2], 'digest:' .. stamp, ARGV[3])
redis.call('HDEL', KEYS[1], 'owner', 'lease_end', 'digest:' .. (stamp - tonumber(ARGV[4])))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// Extends the lease on a stamp being applied, if this receiver still holds it.
/// KEYS: the stream hash. ARGV: stamp, owner, lease end (ms). Returns 1, or 0 if lost.
const RENEW_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[1], 'processing') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_end', ARGV[3])
return 1
";

/// Closes a stream the shipper left, if it is on record. KEYS: the stream hash. ARGV: now.
const CLOSE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'closed', ARGV[1]) end
return 0
";

/// Streams whose requests the process serializes; more are refused while every one of
/// them has a request under way.
const MAX_STREAMS: usize = 1024;

/// Digests kept per stream: far more than the 64 batches a shipper may have in flight, so
/// every stamp it may re-send is recognised.
const KEEP_DIGESTS: u64 = 256;

/// How long a stream record outlives its last batch. A stream idle longer is refused as
/// unknown, and its shipper starts a new one: nothing is lost, the records stay bounded.
const RECORD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Requests served at once; the others wait for a turn.
const MAX_CONCURRENT: usize = 64;

/// The Redis hash holding the state of `stream` on the receiving side.
pub fn stream_key(stream: &str) -> String {
    format!("cache-sync:stream:{stream}")
}

/// The receiving side's record of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamState {
    pub processing: u64,
    pub processed: u64,
    /// Batch applications started; equal to `processed` unless a receiver died mid-batch.
    pub applied: u64,
    /// Operations in those applications.
    pub applied_ops: u64,
    /// Re-sent stamps acknowledged without applying them.
    pub duplicates: u64,
    /// Whether the stream was left for a newer one.
    pub closed: bool,
}

/// Reads the record of `stream` (all zero for a stream never seen).
pub async fn stream_state(conn: &RedisConn, stream: &str) -> redis::RedisResult<StreamState> {
    let mut conn = conn.clone();
    let fields: Vec<Option<u64>> = redis::cmd("HMGET")
        .arg(stream_key(stream))
        .arg(&[
            "processing",
            "processed",
            "applied",
            "applied_ops",
            "duplicates",
            "closed",
        ])
        .query_async(&mut conn)
        .await?;
    let field = |i: usize| fields.get(i).copied().flatten().unwrap_or(0);
    Ok(StreamState {
        processing: field(0),
        processed: field(1),
        applied: field(2),
        applied_ops: field(3),
        duplicates: field(4),
        closed: fields.get(5).copied().flatten().is_some(),
    })
}

/// Applies authenticated batches to the receiving cache.
pub struct Receiver {
    cache: CacheNodes,
    /// The node holding the stream records (`sync.state`, else the cache's home).
    state: RedisConn,
    /// Its name, without credentials.
    state_name: String,
    /// Set when a command on `state` failed: the next request checks the eviction policy
    /// again, since the connection may now reach another server.
    recheck: AtomicBool,
    /// Why the receiver must stop (the state node may evict); `stop` is cancelled with it.
    fatal: Mutex<Option<SyncError>>,
    stop: CancellationToken,
    /// Writes per chunk; the lease is renewed between chunks.
    chunk: usize,
    /// Time one request may take.
    timeout: Duration,
    secret: Vec<u8>,
    /// How far a request's signing time may be from this clock.
    max_skew: Duration,
    max_body: usize,
    /// How long another receiver process keeps off a batch this one is applying.
    lease: Duration,
    /// Names this process in stream leases.
    owner: String,
    /// Set when `sync.tls_cert` is: requests are served over HTTPS only.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Per stream: requests of one stream are applied one after the other here.
    streams: Mutex<HashMap<String, Arc<StreamSlot>>>,
    begin: Script,
    commit: Script,
    renew: Script,
    close: Script,
}

/// What the requests of one stream share inside this process.
struct StreamSlot {
    /// Held while a batch is checked, applied and committed.
    lock: tokio::sync::Mutex<()>,
    /// The last stamp applied here; wakes the batches that wait for their predecessors.
    progress: tokio::sync::watch::Sender<u64>,
}

/// A batch as `BEGIN_SCRIPT` sees it.
struct Begin<'a> {
    stream: &'a str,
    /// The stream's record in the state Redis.
    key: String,
    stamp: u64,
    /// Operations in the batch.
    ops: usize,
    digest: &'a str,
}

/// Longest a batch may wait for the ones before it, whatever the request asks.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A refused request: its status, a bounded metric label, the message sent back, and
/// whether the shipper must start a new stream.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: String,
    reset: Option<ResetReason>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason,
            message: message.into(),
            reset: None,
        }
    }

    /// A 409 after which the shipper starts a new stream.
    fn reset(reason: ResetReason, message: String) -> Refusal {
        Refusal {
            status: StatusCode::CONFLICT,
            reason: reason.as_str(),
            message,
            reset: Some(reason),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        metrics::counter!("hotkeys_sync_requests_refused_total", "reason" => self.reason)
            .increment(1);
        // A reset refuses every batch in flight at once; the shipper logs the incident once.
        if self.reset.is_some() {
            tracing::info!(reason = self.reason, message = %self.message, "request refused; the shipper must start a new stream");
        } else {
            tracing::warn!(status = self.status.as_u16(), reason = self.reason, message = %self.message, "request refused");
        }
        let mut response = (
            self.status,
            axum::Json(ErrorReply {
                error: self.message,
                reset: self.reset,
            }),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

impl Receiver {
    /// Connects to the receiving cache: the topology's `[redis]` settings with
    /// `sync.apply_nodes` as the nodes (when given). The stream records go to `sync.state`,
    /// or the home of the receiving cache; its eviction policy is checked first.
    pub async fn connect(topology: &Topology, secret: &str) -> Result<Receiver, Error> {
        let mut redis = topology.redis.clone();
        if !topology.sync.apply_nodes.is_empty() {
            redis.nodes = topology.sync.apply_nodes.clone();
        }
        let cache = CacheNodes::connect(&redis).await?;
        let (mut state, state_name) = state_beside(&cache, &redis, &topology.sync).await?;
        check_no_eviction(&mut state, &state_name).await?;
        Receiver::new(cache, state, state_name, topology, secret)
    }

    /// A receiver applying to `cache`, keeping its stream records on `state`.
    pub fn new(
        cache: CacheNodes,
        state: RedisConn,
        state_name: String,
        topology: &Topology,
        secret: &str,
    ) -> Result<Receiver, Error> {
        if secret.is_empty() {
            return Err(Error::Config(format!(
                "no shared secret: set the environment variable {}",
                topology.sync.secret_env
            )));
        }
        Ok(Receiver {
            cache,
            state,
            state_name,
            recheck: AtomicBool::new(false),
            fatal: Mutex::new(None),
            stop: CancellationToken::new(),
            chunk: topology.redis.pipeline.max(1),
            timeout: topology.sync.timeout.max(Duration::from_secs(1)),
            secret: secret.as_bytes().to_vec(),
            max_skew: topology.sync.max_skew,
            max_body: topology.sync.max_body,
            // A shipper gives up on a request after `sync.timeout`; by then the batch is
            // either applied or abandoned by a dead receiver.
            lease: topology.sync.timeout.max(Duration::from_secs(1)),
            owner: format!(
                "{}:{}:{:08x}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id(),
                rand::random::<u32>()
            ),
            tls: crate::tls::acceptor(&topology.sync)?,
            streams: Mutex::new(HashMap::new()),
            begin: Script::new(BEGIN_SCRIPT),
            commit: Script::new(COMMIT_SCRIPT),
            renew: Script::new(RENEW_SCRIPT),
            close: Script::new(CLOSE_SCRIPT),
        })
    }

    /// The HTTP routes: `POST /sync`, `POST /sync/streams` and `GET /healthz`, at most `MAX_CONCURRENT` requests
    /// at a time, each answered within `sync.timeout`.
    pub fn router(self: Arc<Self>) -> Router {
        let limit = self.max_body;
        let guard = ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|e: BoxError| async move {
                if e.is::<tower::timeout::error::Elapsed>() {
                    Refusal::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "timeout",
                        "the request took longer than sync.timeout",
                    )
                } else {
                    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "internal", e.to_string())
                }
            }))
            .concurrency_limit(MAX_CONCURRENT)
            .timeout(self.timeout);
        Router::new()
            .route("/sync", post(handle))
            .route("/sync/streams", post(handle_open))
            .route("/healthz", get(|| async { "ok" }))
            .layer(DefaultBodyLimit::max(limit))
            .layer(guard)
            .with_state(self)
    }

    /// The body of a request whose signature matches it, refused otherwise.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Bytes, Refusal> {
        let body = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("body is larger than {} bytes", self.max_body),
                )
            } else {
                Refusal::new(StatusCode::BAD_REQUEST, "malformed", rejection.body_text())
            }
        })?;
        let signature = headers
            .get(wire::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "signature",
                    format!("missing {} header", wire::SIGNATURE_HEADER),
                )
            })?;
        if !wire::verify(&self.secret, &body, signature) {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "signature",
                "signature does not match the body",
            ));
        }
        Ok(body)
    }

    /// Refuses a body signed further than `sync.max_skew` from this receiver's clock.
    fn check_time(&self, sent_ms: u64) -> Result<(), Refusal> {
        match wire::skewed(sent_ms, now_ms(), self.max_skew) {
            None => Ok(()),
            Some(apart) => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "skew",
                format!(
                    "request signed {} away from the receiver's clock, more than sync.max_skew ({}): a replay, or clocks that disagree",
                    humantime::format_duration(Duration::from_secs(apart.as_secs())),
                    humantime::format_duration(self.max_skew)
                ),
            )),
        }
    }

    async fn receive(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<BatchReply, Refusal> {
        let body = self.authenticate(headers, body)?;
        let encoding = match headers.get(CONTENT_ENCODING) {
            None => None,
            Some(v) => Some(v.to_str().map(str::to_string).map_err(|_| {
                Refusal::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "encoding",
                    "Content-Encoding is not text",
                )
            })?),
        };
        let limit = self.max_body;
        // Decompressing and checking a large batch is CPU work of several milliseconds.
        let request =
            tokio::task::spawn_blocking(move || decode(&body, encoding.as_deref(), limit))
                .await
                .map_err(|e| {
                    Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })??;
        self.check_time(request.sent_ms)?;
        // hyper drops a handler whose client hung up. Applying runs in a task of its own so
        // that it always finishes and records its stamp: a shipper killed mid-request then
        // finds its batch applied once, not half-applied and due again.
        let receiver = Arc::clone(self);
        tokio::spawn(async move { receiver.apply(request).await })
            .await
            .map_err(|e| {
                Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
    }

    /// Issues a new stream for a shipper and closes the one it leaves.
    async fn open_stream(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<StreamReply, Refusal> {
        let body = self.authenticate(headers, body)?;
        let request: StreamRequest = serde_json::from_slice(&body)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "malformed", e.to_string()))?;
        self.check_time(request.sent_ms)?;
        if request.queue.is_empty()
            || request.queue.len() > 200
            || request.queue.chars().any(char::is_control)
        {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                "queue: expected 1 to 200 characters, no control characters",
            ));
        }
        if self.recheck.swap(false, Ordering::AcqRel) {
            self.check_state().await?;
        }
        let mut conn = self.state.clone();
        if let Some(previous) = &request.previous {
            self.close
                .key(stream_key(previous))
                .arg(now_ms())
                .invoke_async::<()>(&mut conn)
                .await
                .map_err(|e| self.redis_failed(e))?;
        }
        let stream = format!("{}@{:016x}", request.queue, rand::random::<u64>());
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(stream_key(&stream))
            .arg(&[("issued_ms", now_ms()), ("processed", 0)])
            .ignore()
            .cmd("PEXPIRE")
            .arg(stream_key(&stream))
            .arg(RECORD_TTL.as_millis() as u64)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.redis_failed(e))?;
        tracing::info!(%stream, previous = ?request.previous, "stream issued");
        Ok(StreamReply { stream })
    }

    async fn apply(&self, request: BatchRequest) -> Result<BatchReply, Refusal> {
        let BatchRequest {
            stream,
            stamp,
            wait_ms,
            ops,
            digest,
            ..
        } = request;
        let ops = ops.0;
        let slot = self.stream_slot(&stream)?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms).min(MAX_WAIT);
        let mut conn = self.state.clone();
        if self.recheck.swap(false, Ordering::AcqRel) {
            self.check_state().await?;
        }
        let batch = Begin {
            stream: &stream,
            key: stream_key(&stream),
            stamp,
            ops: ops.len(),
            digest: &digest,
        };
        let Some(_held) = self.take_turn(&slot, &batch, deadline, &mut conn).await? else {
            return Ok(BatchReply {
                status: Outcome::Duplicate,
                stamp,
                ops: ops.len(),
            });
        };
        self.apply_in_steps(&batch.key, stamp, &digest, &ops, &mut conn)
            .await?;
        slot.progress.send_replace(stamp);
        metrics::counter!("hotkeys_sync_batches_applied_total").increment(1);
        metrics::counter!("hotkeys_sync_ops_applied_total").increment(ops.len() as u64);
        tracing::debug!(%stream, stamp, ops = ops.len(), "batch applied");
        Ok(BatchReply {
            status: Outcome::Applied,
            stamp,
            ops: ops.len(),
        })
    }

    /// Begins `batch` under its stream's lock once the batches before it have landed, and
    /// returns the lock held; `None` when the stamp was applied already (acknowledged
    /// again). A batch whose predecessors do not land by `deadline` is refused.
    async fn take_turn<'s>(
        &self,
        slot: &'s StreamSlot,
        batch: &Begin<'_>,
        deadline: tokio::time::Instant,
        conn: &mut RedisConn,
    ) -> Result<Option<tokio::sync::MutexGuard<'s, ()>>, Refusal> {
        loop {
            let held = slot.lock.lock().await;
            let (verdict, processed) = self.begin(batch, conn).await?;
            match verdict {
                0 => {
                    metrics::counter!("hotkeys_sync_batches_duplicate_total").increment(1);
                    tracing::info!(stream = %batch.stream, stamp = batch.stamp, processed,
                        "stamp already applied; acknowledged again");
                    return Ok(None);
                }
                1 => return Ok(Some(held)),
                // The batches before this one are on their way: hold it until they land.
                2 if tokio::time::Instant::now() < deadline => {
                    // Subscribed under the lock: the predecessor cannot land unnoticed.
                    let mut progress = slot.progress.subscribe();
                    drop(held);
                    let _ = tokio::time::timeout_at(deadline, progress.changed()).await;
                }
                _ => return Err(refusal(verdict, batch.stream, batch.stamp, processed)),
            }
        }
    }

    /// Runs `BEGIN_SCRIPT` for `batch`: its verdict, and the stamps processed so far.
    async fn begin(&self, batch: &Begin<'_>, conn: &mut RedisConn) -> Result<(u8, u64), Refusal> {
        self.begin
            .key(&batch.key)
            .arg(batch.stamp)
            .arg(batch.ops)
            .arg(now_ms())
            .arg(self.lease_end())
            .arg(&self.owner)
            .arg(batch.digest)
            .invoke_async(conn)
            .await
            .map_err(|e| self.redis_failed(e))
    }

    /// The writes of a batch begun by `BEGIN_SCRIPT`, through the node set, then the commit.
    async fn apply_in_steps(
        &self,
        key: &str,
        stamp: u64,
        digest: &str,
        ops: &[QueuedOp],
        conn: &mut RedisConn,
    ) -> Result<(), Refusal> {
        let now = now_ms();
        let writes: Vec<Write<'_>> = ops.iter().map(|op| to_write(op, now)).collect();
        for (i, chunk) in writes.chunks(self.chunk).enumerate() {
            // The lease taken by BEGIN_SCRIPT covers the first chunk.
            if i > 0 {
                self.renew_lease(key, stamp, conn).await?;
            }
            self.cache.apply(chunk).await.map_err(|e| {
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "redis", e.to_string())
            })?;
        }
        let committed: u8 = self
            .commit
            .key(key)
            .arg(stamp)
            .arg(now_ms())
            .arg(digest)
            .arg(KEEP_DIGESTS)
            .arg(RECORD_TTL.as_millis() as u64)
            .invoke_async(conn)
            .await
            .map_err(|e| self.redis_failed(e))?;
        if committed == 0 {
            tracing::warn!(stamp, "another receiver committed this stamp first");
        }
        Ok(())
    }

    /// When the lease on `stamp` runs out if it is not renewed.
    fn lease_end(&self) -> u64 {
        now_ms() + self.lease.as_millis() as u64
    }

    /// Extends the lease on `stamp`; refuses (503) when another receiver took it over.
    async fn renew_lease(
        &self,
        key: &str,
        stamp: u64,
        conn: &mut RedisConn,
    ) -> Result<(), Refusal> {
        let held: u8 = self
            .renew
            .key(key)
            .arg(stamp)
            .arg(&self.owner)
            .arg(self.lease_end())
            .invoke_async(conn)
            .await
            .map_err(|e| self.redis_failed(e))?;
        if held == 0 {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("lost the lease on stamp {stamp} to another receiver; stopped applying it"),
            ));
        }
        Ok(())
    }

    /// Checks the state node's eviction policy again; an evicting node stops the receiver.
    async fn check_state(&self) -> Result<(), Refusal> {
        match check_no_eviction(&mut self.state.clone(), &self.state_name).await {
            Ok(()) => Ok(()),
            Err(e @ SyncError::Evicting { .. }) => {
                let message = e.to_string();
                *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                self.stop.cancel();
                Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "evicting",
                    message,
                ))
            }
            Err(e) => {
                self.recheck.store(true, Ordering::Release);
                Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "redis",
                    e.to_string(),
                ))
            }
        }
    }

    /// The slot of `stream`, made on first use. At `MAX_STREAMS`, the slots of streams with
    /// no request under way are dropped first; if every one is busy the request is refused.
    fn stream_slot(&self, stream: &str) -> Result<Arc<StreamSlot>, Refusal> {
        // A poisoned map only means another request panicked while inserting: the map is
        // still whole, so keep using it.
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if !streams.contains_key(stream) && streams.len() >= MAX_STREAMS {
            streams.retain(|_, slot| Arc::strong_count(slot) > 1);
            if streams.len() >= MAX_STREAMS {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "streams",
                    format!("{MAX_STREAMS} streams are being applied at once"),
                ));
            }
        }
        Ok(streams
            .entry(stream.to_string())
            .or_insert_with(|| {
                Arc::new(StreamSlot {
                    lock: tokio::sync::Mutex::new(()),
                    progress: tokio::sync::watch::Sender::new(0),
                })
            })
            .clone())
    }

    fn redis_failed(&self, e: redis::RedisError) -> Refusal {
        self.recheck.store(true, Ordering::Release);
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "redis",
            format!("redis {}: {e}", self.state_name),
        )
    }
}

async fn handle(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match receiver.receive(&headers, body).await {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn handle_open(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match receiver.open_stream(&headers, body).await {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// The refusal of a batch `BEGIN_SCRIPT` did not let begin (verdicts 2 to 6).
fn refusal(verdict: u8, stream: &str, stamp: u64, processed: u64) -> Refusal {
    match verdict {
        2 => Refusal::new(
            StatusCode::CONFLICT,
            "gap",
            format!(
                "stamp {stamp} skips ahead: stream {stream} has processed {processed}, expects {}",
                processed + 1
            ),
        ),
        4 => Refusal::reset(
            ResetReason::ReusedStamp,
            format!(
                "stamp {stamp} of stream {stream} was applied with other operations: the sender's state went back; start a new stream"
            ),
        ),
        5 => Refusal::reset(
            ResetReason::UnknownStream,
            format!(
                "stream {stream} is not on record here (never issued, expired, or the receiver's state was lost); start a new stream"
            ),
        ),
        6 => Refusal::reset(
            ResetReason::ClosedStream,
            format!("stream {stream} was closed for a newer one"),
        ),
        _ => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("stamp {stamp} is being applied by another receiver"),
        ),
    }
}

fn decode(body: &[u8], encoding: Option<&str>, limit: usize) -> Result<BatchRequest, Refusal> {
    let plain = wire::decompress(body, encoding, limit).map_err(|e| match e {
        DecodeError::TooLarge(_) => {
            Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        DecodeError::Unsupported(_) => Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "encoding",
            e.to_string(),
        ),
        DecodeError::Corrupt { .. } => {
            Refusal::new(StatusCode::BAD_REQUEST, "malformed", e.to_string())
        }
    })?;
    BatchRequest::parse(&plain).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "malformed", e))
}

/// The cache write of an operation. The TTL runs from when the operation was queued, so
/// both data centres expire the key together however late it arrives; a set whose TTL ran
/// out on the way is a delete, as the key is gone at the source too. Clocks that disagree
/// never lengthen a TTL.
fn to_write(op: &QueuedOp, now_ms: u64) -> Write<'_> {
    match &op.op {
        Op::Set { key, value, ttl_ms } => {
            let ttl = match ttl_ms {
                None => None,
                Some(ttl) => {
                    let left = ttl.saturating_sub(now_ms.saturating_sub(op.at_ms));
                    if left == 0 {
                        return Write::Delete { key };
                    }
                    Some(Duration::from_millis(left))
                }
            };
            Write::Set {
                key,
                value,
                ttl,
                only_if_absent: false,
            }
        }
        Op::Delete { key } => Write::Delete { key },
    }
}

/// Serves `receiver` on `listener` until `shutdown`, finishing the requests under way; over
/// HTTPS when the receiver has a certificate.
pub async fn serve(
    listener: tokio::net::TcpListener,
    receiver: Arc<Receiver>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let tls = receiver.tls.clone();
    tracing::info!(%addr, https = tls.is_some(), "receiving");
    let stop = receiver.stop.clone();
    let stopped = async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = stop.cancelled() => {}
        }
    };
    let fatal = Arc::clone(&receiver);
    let handshake = receiver.timeout;
    let router = receiver.router();
    match tls {
        Some(acceptor) => crate::tls::serve(listener, router, acceptor, handshake, stopped).await,
        None => axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
            .map_err(|source| Error::Listen { addr, source })?,
    }
    match fatal.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ttl_ms: Option<u64>, at_ms: u64) -> QueuedOp {
        QueuedOp {
            op: Op::Set {
                key: "k".into(),
                value: b"v".to_vec(),
                ttl_ms,
            },
            at_ms,
        }
    }

    #[test]
    fn a_ttl_runs_from_the_enqueue_time() {
        let op = set(Some(10_000), 1_000);
        let Write::Set { ttl, .. } = to_write(&op, 4_000) else {
            panic!("expected a set");
        };
        assert_eq!(ttl, Some(Duration::from_millis(7_000)));
    }

    #[test]
    fn a_ttl_that_ran_out_on_the_way_becomes_a_delete() {
        assert_eq!(
            to_write(&set(Some(1_000), 1_000), 2_000),
            Write::Delete { key: "k" }
        );
    }

    #[test]
    fn a_receiver_clock_behind_the_sender_never_lengthens_a_ttl() {
        let Write::Set { ttl, .. } = to_write(&set(Some(5_000), 9_000), 1_000) else {
            panic!("expected a set");
        };
        assert_eq!(ttl, Some(Duration::from_millis(5_000)));
    }

    #[test]
    fn a_set_without_ttl_keeps_no_expiry() {
        let Write::Set {
            ttl,
            only_if_absent,
            ..
        } = to_write(&set(None, 0), 99)
        else {
            panic!("expected a set");
        };
        assert_eq!((ttl, only_if_absent), (None, false));
    }
}
