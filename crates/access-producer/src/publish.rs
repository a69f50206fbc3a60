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

use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::config::KafkaConfig;
use rdkafka::bindings as rdsys;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use crate::error::Error;
use crate::report::Stats;

/// Sends between two polls for delivery reports and updates of the delivered count.
const POLL_EVERY: u32 = 256;
/// librdkafka's `RD_KAFKA_PARTITION_UA`: its partitioner places the message.
const UNASSIGNED: i32 = -1;

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

/// One event of a batch given to [`Sink::send_all`].
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Never empty.
    pub key: &'a [u8],
    pub payload: &'a [u8],
}

/// A destination for keyed events.
pub trait Sink: Send {
    /// Sends one event; `key` is never empty.
    fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<Sent, Error>;
    /// Sends `records`, in order for each key. `rejected` hears of every record refused,
    /// by its index, and the others go on; the result is `Queued` or `Cancelled`. Events of
    /// different keys may be sent in another order than given, so a caller that must stop
    /// at the first refusal sends one by one instead.
    fn send_all(
        &mut self,
        records: &[Record<'_>],
        rejected: &mut dyn FnMut(usize, RDKafkaErrorCode),
    ) -> Result<Sent, Error> {
        for (i, r) in records.iter().enumerate() {
            match self.send(r.key, r.payload)? {
                Sent::Queued => {}
                Sent::Rejected(code) => rejected(i, code),
                Sent::Cancelled => return Ok(Sent::Cancelled),
            }
        }
        Ok(Sent::Queued)
    }
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
        hotkeys::kafka::log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if hotkeys::kafka::is_startup_retry(reason) {
            tracing::debug!(target: "librdkafka", %error, "{reason}");
        } else {
            tracing::warn!(target: "librdkafka", %error, "{reason}");
        }
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

/// librdkafka's handle of the topic on one client, for `rd_kafka_produce_batch`.
struct TopicHandle(NonNull<rdsys::rd_kafka_topic_t>);

// SAFETY: librdkafka's topic handles are reference-counted and may be used and destroyed
// from any thread.
unsafe impl Send for TopicHandle {}

impl TopicHandle {
    fn new(client: &BaseProducer<Delivery>, topic: &str) -> Result<TopicHandle, Error> {
        let name = CString::new(topic).map_err(|e| Error::Produce(e.into()))?;
        // SAFETY: the client is alive and the name a C string; a null configuration takes
        // the client's topic defaults, as the per-message API does.
        let handle = unsafe {
            rdsys::rd_kafka_topic_new(client.client().native_ptr(), name.as_ptr(), ptr::null_mut())
        };
        NonNull::new(handle).map(TopicHandle).ok_or_else(|| {
            // SAFETY: reads the calling thread's last librdkafka error.
            let code = unsafe { rdsys::rd_kafka_last_error() };
            Error::Produce(KafkaError::MessageProduction(code.into()))
        })
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_topic_new and is released once, before its
        // client (see `Client`).
        unsafe { rdsys::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

/// One librdkafka client and its handle of the topic.
struct Client {
    // Declared first so it is dropped before the client it belongs to.
    topic: TopicHandle,
    producer: BaseProducer<Delivery>,
}

impl Client {
    fn new(
        config: &ClientConfig,
        kafka: &KafkaConfig,
        stats: &Arc<Stats>,
    ) -> Result<Client, Error> {
        let producer: BaseProducer<Delivery> = config
            .create_with_context(Delivery {
                stats: Arc::clone(stats),
            })
            .map_err(Error::ProducerConfig)?;
        let topic = TopicHandle::new(&producer, &kafka.topic)?;
        Ok(Client { topic, producer })
    }
}

/// The clients' configuration: the topology's, with settings of our own where its
/// `[kafka.producer]` does not choose.
fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = hotkeys::kafka::producer_config(kafka);
    let mut default = |key: &str, value: &str| {
        if !kafka.producer.contains_key(key) {
            config.set(key, value);
        }
    };
    // A report per delivered message costs the sending thread about a fifth of its
    // time; successes are derived from the counts instead (see `account`).
    default("delivery.report.only.error", "true");
    config.set_log_level(log_level(kafka));
    config
}

/// The partition count when the sink places messages itself (see [`KafkaSink::new`]):
/// only with a murmur2 partitioner, several clients and several partitions.
fn placement(config: &ClientConfig, partitions: usize, clients: usize) -> Option<i32> {
    let murmur2 = matches!(
        config.get("partitioner"),
        Some("murmur2_random" | "murmur2")
    );
    i32::try_from(partitions)
        .ok()
        .filter(|&p| murmur2 && clients > 1 && p > 1)
}

/// Asks twice for the topic's metadata on every client, so each gets its producer id at once.
///
/// An idempotent producer asks for its producer id when a metadata response arrives
/// while a broker connection is up, else it retries 500 ms later, and start-up often
/// loses that race: the first answer comes from the bootstrap connection, which is
/// dropped, before the real broker's connection is up. A second request is answered
/// on that connection and gets the id at once: half a second off short runs.
fn fetch_producer_ids(clients: &[Client], kafka: &KafkaConfig) -> Result<(), Error> {
    for _ in 0..2 {
        for c in clients {
            c.producer
                .client()
                .fetch_metadata(Some(&kafka.topic), Duration::from_secs(10))
                .map_err(Error::Produce)?;
        }
    }
    Ok(())
}

/// Publishes to the topology's topic.
pub struct KafkaSink {
    /// Independent librdkafka clients, each owning the partitions `p % len == index`.
    clients: Vec<Client>,
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
        let config = client_config(kafka);
        let placement = placement(&config, partitions, clients);
        let count = match placement {
            Some(p) => clients.min(p as usize),
            None => 1,
        };
        let clients = (0..count)
            .map(|_| Client::new(&config, kafka, &stats))
            .collect::<Result<Vec<_>, Error>>()?;
        fetch_producer_ids(&clients, kafka)?;
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
            c.producer.poll(Duration::ZERO);
            in_flight += u64::try_from(c.producer.in_flight_count()).unwrap_or(0);
        }
        let sent = self.stats.sent.load(Relaxed);
        let failed = self.stats.failed.load(Relaxed);
        self.stats
            .delivered
            .store(sent.saturating_sub(failed + in_flight), Relaxed);
    }

    /// Queues `messages` (the records at `indices`) to `partition` with one client, in order,
    /// waiting for room whenever its queue is full.
    fn produce(
        &self,
        client: &Client,
        partition: i32,
        messages: &mut [rdsys::rd_kafka_message_t],
        indices: &[usize],
        rejected: &mut dyn FnMut(usize, RDKafkaErrorCode),
    ) -> Result<Sent, Error> {
        let mut done = 0;
        while done < messages.len() {
            let rest = &mut messages[done..];
            let count = i32::try_from(rest.len()).unwrap_or(i32::MAX);
            // SAFETY: the topic handle belongs to this client; `count` messages are there,
            // pointing at records that outlive the call, which copies them (F_COPY).
            unsafe {
                rdsys::rd_kafka_produce_batch(
                    client.topic.0.as_ptr(),
                    partition,
                    rdsys::RD_KAFKA_MSG_F_COPY,
                    rest.as_mut_ptr(),
                    count,
                );
            }
            let (mut queued, mut full, mut failed) = (0, None, None);
            for (i, m) in rest[..count as usize].iter().enumerate() {
                match RDKafkaErrorCode::from(m.err) {
                    RDKafkaErrorCode::NoError => queued += 1,
                    // librdkafka fails every later message of the call too, so resuming
                    // here keeps the order.
                    RDKafkaErrorCode::QueueFull => {
                        full = Some(i);
                        break;
                    }
                    code @ (RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage) => rejected(indices[done + i], code),
                    // Counted up to the end of the call: later messages may have been queued.
                    code => failed = failed.or(Some(code)),
                }
            }
            self.stats.sent.fetch_add(queued, Relaxed);
            if let Some(code) = failed {
                return Err(Error::Produce(KafkaError::MessageProduction(code)));
            }
            match full {
                Some(i) => {
                    done += i;
                    if self.shutdown.is_cancelled() {
                        return Ok(Sent::Cancelled);
                    }
                    // Acknowledgements free room; this waits a little for them.
                    client.producer.poll(Duration::from_millis(1));
                }
                None => done += count as usize,
            }
        }
        Ok(Sent::Queued)
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
            Some(p) => &self.clients[p as usize % self.clients.len()].producer,
            None => &self.clients[0].producer,
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

    /// Each partition's records go to librdkafka in one call of its batch API, which looks
    /// the topic and partition up and reads the clocks once per call rather than once per
    /// message, as the per-message API does.
    fn send_all(
        &mut self,
        records: &[Record<'_>],
        rejected: &mut dyn FnMut(usize, RDKafkaErrorCode),
    ) -> Result<Sent, Error> {
        // The records' indices grouped by partition, each group in input order, so per-key
        // order holds; without placement here, one group for librdkafka's partitioner.
        let mut indices: Vec<usize> = (0..records.len()).collect();
        let mut groups = vec![(UNASSIGNED, 0..records.len())];
        if let Some(n) = self.placement {
            let partitions: Vec<i32> = records
                .iter()
                .map(|r| murmur2_partition(r.key, n))
                .collect();
            indices.sort_by_key(|&i| partitions[i]);
            groups = indices
                .chunk_by(|&a, &b| partitions[a] == partitions[b])
                .scan(0, |start, group| {
                    let range = *start..*start + group.len();
                    *start = range.end;
                    Some((partitions[group[0]], range))
                })
                .collect();
        }
        let mut messages = Vec::new();
        for (partition, range) in groups {
            let indices = &indices[range];
            messages.clear();
            messages.extend(indices.iter().map(|&i| rdsys::rd_kafka_message_t {
                err: rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: ptr::null_mut(),
                partition,
                payload: records[i].payload.as_ptr().cast_mut().cast(),
                len: records[i].payload.len(),
                key: records[i].key.as_ptr().cast_mut().cast(),
                key_len: records[i].key.len(),
                offset: 0,
                _private: ptr::null_mut(),
            }));
            let client = match partition {
                UNASSIGNED => &self.clients[0],
                p => &self.clients[p as usize % self.clients.len()],
            };
            let sent = self.produce(client, partition, &mut messages, indices, rejected)?;
            if sent == Sent::Cancelled {
                return Ok(sent);
            }
        }
        self.account();
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
                match c.producer.flush(Duration::from_millis(2)) {
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
