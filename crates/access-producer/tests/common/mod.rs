//! Helpers of the integration tests: the real Kafka of the local stack, the real binary,
//! and reading a topic back.
//!
//! Each test publishes to its own fresh topic, so tests run in parallel and never see each
//! other's messages or an earlier run's.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hotkeys::Topology;
use hotkeys::config::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Upper bound on waiting for Kafka, so a broken broker fails a test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// One message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Record {
    pub fn key_str(&self) -> &str {
        std::str::from_utf8(self.key.as_deref().unwrap_or_default()).expect("UTF-8 key")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("the payload is JSON")
    }
}

pub fn brokers() -> String {
    std::env::var("HOTKEYS_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The topology a test's own clients use: the defaults, pointed at the stack and `topic`.
pub fn topology(topic: &str) -> Topology {
    Topology {
        kafka: KafkaConfig {
            brokers: brokers(),
            topic: topic.into(),
            consumer: BTreeMap::from([("enable.auto.commit".to_string(), "false".to_string())]),
            ..KafkaConfig::default()
        },
        ..Topology::default()
    }
}

/// A topic no other test or run uses, deleted when the test passes (a failed test keeps
/// its topic for a look with kcat).
pub struct TestTopic(String);

pub fn unique_topic(test: &str) -> TestTopic {
    TestTopic(hotkeys::testing::unique(&format!("ap-test-{test}")))
}

impl std::ops::Deref for TestTopic {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let Ok(admin) = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create::<AdminClient<DefaultClientContext>>()
        else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = runtime.block_on(admin.delete_topics(&[&self.0], &AdminOptions::new()));
        }
    }
}

/// The real binary, pointed at the stack and at `topic` through the environment overrides.
pub fn producer(topic: &str) -> Command {
    producer_with(topic, &hotkeys::testing::default_topology_path())
}

/// [`producer`] with another topology file.
pub fn producer_with(topic: &str, topology: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_access-producer"));
    cmd.arg("--topology")
        .arg(topology)
        .env("HOTKEYS_KAFKA_BROKERS", brokers())
        .env("HOTKEYS_KAFKA_TOPIC", topic)
        .env_remove("HOTKEYS_KAFKA_PARTITIONS")
        .env("RUST_LOG", "info");
    cmd
}

/// Runs a command to its end; returns its exit code and stderr.
pub fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().expect("exited, not killed"), stderr)
}

/// Runs a command that must succeed.
pub fn run_ok(cmd: &mut Command) -> String {
    let (code, stderr) = run(cmd);
    assert_eq!(code, 0, "exit code {code}; stderr:\n{stderr}");
    stderr
}

/// Creates `topic` with `partitions` and topic-level `configs`, as an operator would.
pub fn create_topic(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = runtime
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
    let deadline = Instant::now() + PATIENCE;
    while partitions_of(topic).is_none() {
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Partition count of `topic`, `None` when it does not exist.
pub fn partitions_of(topic: &str) -> Option<usize> {
    hotkeys::kafka::partition_count(&topology(topic).kafka, topic).expect("metadata")
}

/// High watermarks of every partition of `topic`.
pub fn watermarks(consumer: &BaseConsumer, topic: &str) -> Vec<i64> {
    let n = partitions_of(topic).expect("the topic exists");
    (0..n as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

fn consumer(topic: &str) -> BaseConsumer {
    let t = topology(topic);
    hotkeys::kafka::consumer_config(&t.kafka, &format!("{topic}-reader"))
        .create()
        .expect("consumer")
}

/// Messages in `topic` right now.
pub fn message_count(topic: &str) -> i64 {
    watermarks(&consumer(topic), topic).iter().sum()
}

/// Every message of `topic`, read up to the high watermarks taken after the producer
/// exited, so the result is exact: nothing missing, nothing extra. Sorted by partition and
/// offset.
pub fn read_all(topic: &str) -> Vec<Record> {
    let consumer = consumer(topic);
    let highs = watermarks(&consumer, topic);
    let mut tpl = TopicPartitionList::new();
    for (p, &high) in highs.iter().enumerate() {
        if high > 0 {
            tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
                .expect("offset");
        }
    }
    let mut records = Vec::new();
    if tpl.count() == 0 {
        return records;
    }
    consumer.assign(&tpl).expect("assign");
    let mut next = vec![0i64; highs.len()];
    let deadline = Instant::now() + PATIENCE;
    while next.iter().zip(&highs).any(|(n, h)| n < h) {
        assert!(
            Instant::now() < deadline,
            "could not read {topic} back: at {next:?} of {highs:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.expect("consume");
        next[m.partition() as usize] = m.offset() + 1;
        records.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// Kafka's partition of a key (the library's murmur2, checked against the Java client's
/// values in its unit tests).
pub fn murmur2_partition(key: &[u8], partitions: usize) -> i32 {
    access_producer::publish::murmur2_partition(key, partitions as i32)
}
