//! Where events go: a Kafka topic through tuned librdkafka producers, or a file.
//!
//! The Kafka sink drives `BaseProducer`s from the publishing thread itself: a
//! `FutureProducer` would allocate a oneshot channel and a boxed future per message, and a
//! `ThreadedProducer` adds a polling thread per client. Delivery reports come only for
//! failures and are served between sends; successes are counted as what is neither in
//! flight nor failed. Messages in flight are bounded per client by librdkafka's queue
//! (`queue.buffering.max.messages`, set in `hotkeys::kafka`): when it is full, the sender waits until
//! acknowledgements make room, so memory stays bounded whatever the input rate.
//!
//! Several clients share the partitions (see [`KafkaSink::new`]) because one client
//! builds, compresses and acknowledges every batch for a broker on a single thread.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use hotkeys::config::KafkaConfig;
use hotkeys::shutdown::CancellationToken;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::Error;
use crate::report::Stats;

/// Sends between two polls for delivery reports and updates of the delivered count.
const POLL_EVERY: u32 = 256;

/// What became of one event handed to a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued for delivery (or written).
    Queued,
    /// Refused by the client for what it is (too large, say); the stream goes on.
    Rejected(RDKafkaErrorCode),
    /// Shutdown was requested while waiting for room; the event was not sent.
    Cancelled,
}

/// A destination for keyed events.
pub trait Sink: Send {
    /// Sends one event; `key` is never empty.
    fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<Sent, Error>;
    /// Called when the producer loop has nothing to send for a while (paced or waiting for
    /// input), so delivery reports keep flowing.
    fn idle(&mut self) {}
    /// Waits until everything sent is delivered or has failed.
    fn finish(&mut self) -> Result<(), Error>;
}

/// Counts delivery reports and forwards librdkafka's logs to `tracing`.
struct Delivery {
    stats: Arc<Stats>,
}

impl ClientContext for Delivery {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl ProducerContext for Delivery {
    // No per-message opaque: a delivery report only needs counting.
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        // Successes are not counted here (see `KafkaSink::account`); with the default
        // `delivery.report.only.error` they are not even reported.
        if let Err((error, message)) = result {
            self.stats.delivery_failed(|| {
                format!(
                    "{error} (partition {}, key {})",
                    message.partition(),
                    String::from_utf8_lossy(message.key().unwrap_or_default())
                )
            });
        }
    }
}

/// Publishes to the topology's topic.
pub struct KafkaSink {
    /// Independent librdkafka clients, each owning the partitions `p % len == index`.
    clients: Vec<BaseProducer<Delivery>>,
    /// Partition count when this sink places messages itself; `None` leaves placement to
    /// librdkafka's configured partitioner (then there is one client).
    placement: Option<i32>,
    topic: String,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    until_poll: u32,
}

impl KafkaSink {
    /// Creates the clients from the topology's tuning and `[kafka.producer]` passthrough.
    ///
    /// A librdkafka client serves all partitions of a broker from one thread, which builds,
    /// compresses and acknowledges every batch; with one broker that thread becomes the
    /// bottleneck. With `clients > 1`, messages are placed here with the same murmur2 hash
    /// as the configured `murmur2_random` partitioner over the topic's `partitions` (as
    /// found at start), and each client gets a fixed share of the partitions. A key still
    /// maps to one partition and so to one client, which keeps per-key order. An
    /// operator-chosen partitioner other than murmur2 turns this off.
    pub fn new(
        kafka: &KafkaConfig,
        partitions: usize,
        clients: usize,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) -> Result<KafkaSink, Error> {
        let mut config = hotkeys::kafka::producer_config(kafka);
        // Settings of our own, unless the topology's [kafka.producer] chooses:
        let mut default = |key: &str, value: &str| {
            if !kafka.producer.contains_key(key) {
                config.set(key, value);
            }
        };
        // A report per delivered message costs the sending thread about a fifth of its
        // time; successes are derived from the counts instead (see `account`).
        default("delivery.report.only.error", "true");
        config.set_log_level(log_level(kafka));
        let murmur2 = matches!(
            config.get("partitioner"),
            Some("murmur2_random" | "murmur2")
        );
        let placement = i32::try_from(partitions)
            .ok()
            .filter(|&p| murmur2 && clients > 1 && p > 1);
        let count = match placement {
            Some(p) => clients.min(p as usize),
            None => 1,
        };
        let clients: Vec<BaseProducer<Delivery>> = (0..count)
            .map(|_| {
                config.create_with_context(Delivery {
                    stats: Arc::clone(&stats),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::ProducerConfig)?;
        // An idempotent producer asks for its producer id when a metadata response arrives
        // while a broker connection is up, else it retries 500 ms later, and start-up often
        // loses that race: the first answer comes from the bootstrap connection, which is
        // dropped, before the real broker's connection is up. A second request is answered
        // on that connection and gets the id at once: half a second off short runs.
        for _ in 0..2 {
            for c in &clients {
                c.client()
                    .fetch_metadata(Some(&kafka.topic), Duration::from_secs(10))
                    .map_err(Error::Produce)?;
            }
        }
        Ok(KafkaSink {
            clients,
            placement,
            topic: kafka.topic.clone(),
            stats,
            shutdown,
            until_poll: POLL_EVERY,
        })
    }

    /// Serves pending reports and updates the delivered count: every message sent that is
    /// neither in flight nor failed has been acknowledged. Exact once the queues are empty.
    fn account(&self) {
        let mut in_flight = 0u64;
        for c in &self.clients {
            c.poll(Duration::ZERO);
            in_flight += u64::try_from(c.in_flight_count()).unwrap_or(0);
        }
        let sent = self.stats.sent.load(Relaxed);
        let failed = self.stats.failed.load(Relaxed);
        self.stats
            .delivered
            .store(sent.saturating_sub(failed + in_flight), Relaxed);
    }
}

/// librdkafka's log level: `log_level` from `[kafka.producer]` (0-7), else warnings. The
/// rdkafka crate would otherwise derive it from the `log` crate, which nothing here sets up.
fn log_level(kafka: &KafkaConfig) -> RDKafkaLogLevel {
    match kafka
        .producer
        .get("log_level")
        .and_then(|l| l.parse::<u8>().ok())
    {
        Some(0) => RDKafkaLogLevel::Emerg,
        Some(1) => RDKafkaLogLevel::Alert,
        Some(2) => RDKafkaLogLevel::Critical,
        Some(3) => RDKafkaLogLevel::Error,
        Some(5) => RDKafkaLogLevel::Notice,
        Some(6) => RDKafkaLogLevel::Info,
        Some(7..) => RDKafkaLogLevel::Debug,
        Some(4) | None => RDKafkaLogLevel::Warning,
    }
}

/// The partition of `key` among `partitions`, as Kafka's Java client and librdkafka's
/// `murmur2_random` partitioner compute it.
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let chunks = key.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    match *tail {
        [a, b, c] => {
            h = (h ^ u32::from(c) << 16 ^ u32::from(b) << 8 ^ u32::from(a)).wrapping_mul(M)
        }
        [a, b] => h = (h ^ u32::from(b) << 8 ^ u32::from(a)).wrapping_mul(M),
        [a] => h = (h ^ u32::from(a)).wrapping_mul(M),
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions as u32) as i32
}

impl Sink for KafkaSink {
    fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<Sent, Error> {
        let partition = self.placement.map(|n| murmur2_partition(key, n));
        let client = match partition {
            Some(p) => &self.clients[p as usize % self.clients.len()],
            None => &self.clients[0],
        };
        loop {
            let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
            if let Some(p) = partition {
                record = record.partition(p);
            }
            match client.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if self.shutdown.is_cancelled() {
                        return Ok(Sent::Cancelled);
                    }
                    // Acknowledgements free room; this waits a little for them.
                    client.poll(Duration::from_millis(1));
                }
                Err((
                    KafkaError::MessageProduction(
                        code @ (RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::InvalidMessageSize
                        | RDKafkaErrorCode::InvalidMessage),
                    ),
                    _,
                )) => return Ok(Sent::Rejected(code)),
                Err((e, _)) => return Err(Error::Produce(e)),
            }
        }
        self.stats.sent.fetch_add(1, Relaxed);
        self.until_poll -= 1;
        if self.until_poll == 0 {
            self.until_poll = POLL_EVERY;
            self.account();
        }
        Ok(Sent::Queued)
    }

    fn idle(&mut self) {
        self.account();
    }

    fn finish(&mut self) -> Result<(), Error> {
        // Short rounds: rdkafka's own wait polls in 100 ms steps, a tenth of a second lost
        // at the end of every run. librdkafka fails what it cannot deliver within
        // message.timeout.ms, so this ends; an impatient operator's second signal exits.
        for c in &self.clients {
            loop {
                match c.flush(Duration::from_millis(2)) {
                    Ok(()) => break,
                    Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
                    Err(e) => return Err(Error::Produce(e)),
                }
            }
        }
        self.account();
        Ok(())
    }
}

/// Writes events one per line (gzip when the name ends in `.gz`; `-` is stdout), so the
/// baseline tools of a benchmark replay exactly the same input.
pub struct FileSink {
    out: Output,
    path: PathBuf,
    stats: Arc<Stats>,
}

enum Output {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
    Stdout(BufWriter<io::Stdout>),
}

impl Output {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Plain(w) => w,
            Output::Gzip(w) => w,
            Output::Stdout(w) => w,
        }
    }
}

impl FileSink {
    pub fn create(path: &Path, stats: Arc<Stats>) -> Result<FileSink, Error> {
        let out = if path == Path::new("-") {
            Output::Stdout(BufWriter::with_capacity(1 << 20, io::stdout()))
        } else {
            let file = File::create(path).map_err(|source| Error::Write {
                path: path.to_path_buf(),
                source,
            })?;
            let file = BufWriter::with_capacity(1 << 20, file);
            if path.extension().is_some_and(|e| e == "gz") {
                // Fast level: these files are load inputs, not archives.
                Output::Gzip(GzEncoder::new(file, Compression::fast()))
            } else {
                Output::Plain(file)
            }
        };
        Ok(FileSink {
            out,
            path: path.to_path_buf(),
            stats,
        })
    }

    fn error(&self, source: io::Error) -> Error {
        Error::Write {
            path: self.path.clone(),
            source,
        }
    }
}

impl Sink for FileSink {
    fn send(&mut self, _key: &[u8], payload: &[u8]) -> Result<Sent, Error> {
        let w = self.out.writer();
        let written = w.write_all(payload).and_then(|()| w.write_all(b"\n"));
        written.map_err(|e| self.error(e))?;
        self.stats.sent.fetch_add(1, Relaxed);
        self.stats.delivered.fetch_add(1, Relaxed);
        Ok(Sent::Queued)
    }

    fn finish(&mut self) -> Result<(), Error> {
        let done = match &mut self.out {
            // The gzip trailer must be written here: on drop its errors would be lost.
            Output::Gzip(w) => w.try_finish().and_then(|()| w.get_mut().flush()),
            other => other.writer().flush(),
        };
        done.map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes and partitions published with Kafka's own `Utils.murmur2` tests.
    #[test]
    fn murmur2_matches_the_java_client() {
        let to_partition = |h: i32, n: i32| ((h as u32 & 0x7fff_ffff) % n as u32) as i32;
        for (key, java) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            for n in [1, 6, 7, 100] {
                assert_eq!(
                    murmur2_partition(key.as_bytes(), n),
                    to_partition(java, n),
                    "{key} % {n}"
                );
            }
        }
    }
}
