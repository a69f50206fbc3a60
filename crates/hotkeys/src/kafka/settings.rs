//! librdkafka client settings built from the topology, and librdkafka's own log lines
//! routed to `tracing`.
//!
//! Our tuning is applied first and the topology's `[kafka.producer]` / `[kafka.consumer]`
//! tables last, so an operator can override anything (SASL, TLS, batching) without code.

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;

use crate::config::KafkaConfig;

/// What librdkafka says while a broker is still starting (loading its coordinators, electing
/// leaders of a new topic). It retries on its own, so these are not warnings: a client
/// started together with its broker would otherwise greet a new user with a screenful.
const STARTUP_RETRIES: [&str; 4] = [
    "Coordinator load in progress",
    "Coordinator not available",
    "Leader not available",
    "Unknown topic or partition",
];

/// Whether a librdkafka message is an expected retry while a broker starts.
pub fn is_startup_retry(message: &str) -> bool {
    STARTUP_RETRIES.iter().any(|m| message.contains(m))
}

/// Routes one librdkafka log line to `tracing` (target `librdkafka`), at debug level when
/// it is an expected start-up retry; for `ClientContext::log` implementations.
pub fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    if is_startup_retry(message) {
        tracing::debug!(target: "librdkafka", fac, "{message}");
        return;
    }
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

/// Settings for a throughput-tuned idempotent producer.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        // Bounds what a fast replay keeps in memory while the broker catches up: a million
        // queued messages is half a gigabyte per client, every page of it new to the process.
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "1048576")
        // The Java client's partitioner, so Java and Rust producers agree on placement.
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "120000")
        // librdkafka spaces its first connections by half this back-off; at the default
        // 100 ms a short-lived producer spends 50 ms waiting to reach the partition leader.
        // Later reconnects still back off exponentially up to reconnect.backoff.max.ms.
        .set("reconnect.backoff.ms", "10");
    for (k, v) in &kafka.producer {
        c.set(k, v);
    }
    c
}

/// Settings for a consumer of `group` that stores offsets only when told (at-least-once).
pub fn consumer_config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", "100")
        // librdkafka 2.x backs a partition's fetcher off for a whole second (the default)
        // once its queue is full; a consumer that drains it faster than that then sits idle
        // (librdkafka's defaults read at a third of the rate here).
        .set("fetch.queue.backoff.ms", "10")
        // Per partition, so they bound the worker's memory, not the counter. Chosen from a
        // grid measured with scripts/bench-count.sh (see the README, Benchmarks): 100,000
        // messages and 32 MB made the peak RSS 350–500 MB for no faster reads; 20,000 and
        // 8 MB keep it about 120–145 MB at six partitions; 5,000 and below begin to slow the
        // reads down.
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "8192")
        .set("fetch.message.max.bytes", "1048576");
    for (k, v) in &kafka.consumer {
        c.set(k, v);
    }
    c
}

/// Settings for admin and metadata clients: the brokers plus the consumer passthrough, which
/// is where SASL/TLS settings live for clients that are not producers.
pub(super) fn admin_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("allow.auto.create.topics", "false");
    for (k, v) in kafka
        .consumer
        .iter()
        .filter(|(k, _)| is_connection_setting(k))
    {
        c.set(k, v);
    }
    c
}

fn is_connection_setting(key: &str) -> bool {
    key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_loading_its_coordinator_is_a_start_up_retry() {
        assert!(is_startup_retry(
            "Failed to acquire idempotence PID from broker TxnCoordinator/1: \
             Broker: Coordinator load in progress: retrying"
        ));
        assert!(!is_startup_retry(
            "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
        ));
    }

    /// The topology file promises SASL/TLS through the passthrough tables: librdkafka must
    /// be built with TLS (and so SCRAM) for these clients to be created at all.
    #[test]
    fn clients_accept_the_tls_and_sasl_scram_settings_the_topology_documents() {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::producer::BaseProducer;
        let mut kafka = KafkaConfig::default();
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "hotkeys"),
            ("sasl.password", "secret"),
        ] {
            kafka.consumer.insert(k.into(), v.into());
            kafka.producer.insert(k.into(), v.into());
        }
        let consumer = consumer_config(&kafka, "g").create::<BaseConsumer>();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
        let producer = producer_config(&kafka).create::<BaseProducer>();
        assert!(producer.is_ok(), "{:?}", producer.err());
        let admin = admin_config(&kafka).create::<BaseConsumer>();
        assert!(admin.is_ok(), "{:?}", admin.err());
    }
}
