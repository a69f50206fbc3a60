//! Where events go: a Kafka topic through a tuned librdkafka producer, or a file.
//!
//! The Kafka sink uses a `BaseProducer` polled from the publishing thread itself. A
//! `FutureProducer` would allocate a oneshot channel and a boxed future per message, and a
//! `ThreadedProducer` adds a polling thread that competes for the two cores with the broker;
//! here delivery reports are served in batches between sends and just bump counters. The
//! number of messages in flight is bounded by librdkafka's queue
//! (`queue.buffering.max.messages`): when it is full, the sender serves delivery reports
//! until there is room, so memory stays bounded whatever the input rate.

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
use rdkafka::util::Timeout;

use crate::error::Error;
use crate::report::Stats;

/// Sends between two polls for delivery reports: often enough that reports never pile up
/// (a full report queue holds messages in librdkafka's count), rarely enough to cost nothing.
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
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Relaxed);
            }
            Err((error, message)) => self.stats.delivery_failed(|| {
                format!(
                    "{error} (partition {}, key {})",
                    message.partition(),
                    String::from_utf8_lossy(message.key().unwrap_or_default())
                )
            }),
        }
    }
}

/// Publishes to the topology's topic.
pub struct KafkaSink {
    producer: BaseProducer<Delivery>,
    topic: String,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    until_poll: u32,
}

impl KafkaSink {
    /// Creates the producer from the topology's tuning and `[kafka.producer]` passthrough.
    pub fn new(kafka: &KafkaConfig, stats: Arc<Stats>, shutdown: CancellationToken) -> Result<KafkaSink, Error> {
        let producer = hotkeys::kafka::producer_config(kafka)
            .set_log_level(RDKafkaLogLevel::Warning)
            .create_with_context(Delivery {
                stats: Arc::clone(&stats),
            })
            .map_err(Error::ProducerConfig)?;
        Ok(KafkaSink {
            producer,
            topic: kafka.topic.clone(),
            stats,
            shutdown,
            until_poll: POLL_EVERY,
        })
    }
}

impl Sink for KafkaSink {
    fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<Sent, Error> {
        loop {
            let record = BaseRecord::to(&self.topic).key(key).payload(payload);
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if self.shutdown.is_cancelled() {
                        return Ok(Sent::Cancelled);
                    }
                    // Serves delivery reports, which is what frees room in the queue.
                    self.producer.poll(Duration::from_millis(1));
                }
                Err((KafkaError::MessageProduction(
                    code @ (RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage),
                ), _)) => return Ok(Sent::Rejected(code)),
                Err((e, _)) => return Err(Error::Produce(e)),
            }
        }
        self.stats.sent.fetch_add(1, Relaxed);
        self.until_poll -= 1;
        if self.until_poll == 0 {
            self.until_poll = POLL_EVERY;
            self.producer.poll(Duration::ZERO);
        }
        Ok(Sent::Queued)
    }

    fn idle(&mut self) {
        self.producer.poll(Duration::ZERO);
    }

    fn finish(&mut self) -> Result<(), Error> {
        // librdkafka fails what it cannot deliver within message.timeout.ms, so this ends;
        // an impatient operator's second signal exits at once.
        let flushed = self.producer.flush(Timeout::Never);
        self.producer.poll(Duration::ZERO);
        flushed.map_err(Error::Produce)
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
