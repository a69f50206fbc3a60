//! The Kafka consumer loop of a worker.
//!
//! The loop runs on one dedicated blocking thread around an rdkafka `BaseConsumer`, the
//! cheapest way to take millions of messages per second off librdkafka. It has three
//! concerns, each in a module of its own:
//!
//! - **poll and hand-off** ([`Poller`] here, `handoff`): take messages off librdkafka and
//!   copy them in batches to the counting thread (`worker`), which finds the keys and
//!   counts them;
//! - **publish** (`publish`): at every check the publisher takes in a finished round and
//!   starts the next when due; rounds run on the tokio runtime, so ZooKeeper never stalls
//!   polling or counting;
//! - **rebalance** (`rebalance`): librdkafka's callbacks, run inside `poll`, hand tasks over.
//!
//! The loop is `Running` until shutdown is requested or, with [`Until::CaughtUp`], every
//! assigned partition is read to its end; it then `finish`es: final publish with
//! checkpoints, commit, leave the group.
//!
//! Offsets are stored for the group only once a checkpoint that includes them is in
//! ZooKeeper. The ZooKeeper checkpoint, not the group offset, is what a new owner resumes
//! from, which makes counting effectively exactly-once across owners.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hotkeys::Topology;
use hotkeys::blacklist::Blacklist;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::zk::Zk;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use tokio::runtime::Handle;

use crate::handoff::{Counting, Handoff};
use crate::publish::Publisher;
use crate::rebalance::Context;
use crate::worker::{Summary, Worker, lock};

/// Messages between two looks at the clock, the shutdown token and the publisher while
/// librdkafka's queue never runs dry: reading the clock costs more than counting an event.
const CHECK_EVERY: u32 = 1024;

/// How long a poll waits when librdkafka's queue is empty.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// What stopped the loop.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// How long the loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until shutdown is requested: the normal worker.
    Shutdown,
    /// Until every assigned partition has been read to its end (backfills, benchmarks).
    CaughtUp,
}

/// Consumes until `until`, then publishes, commits and leaves the group.
pub fn run(
    topology: Arc<Topology>,
    zk: Zk,
    blacklists: Vec<Blacklist>,
    runtime: Handle,
    shutdown: CancellationToken,
    until: Until,
) -> Result<Summary, LoopError> {
    let worker = Worker::new(topology.clone())?;
    let entered = worker.entered();
    let worker = Arc::new(Mutex::new(worker));
    let (handoff, counting) = Handoff::new();
    let handoff = Arc::new(handoff);
    let counter_thread = spawn_counting(worker.clone(), handoff.clone(), counting);
    let publisher = Publisher::new(topology.clone(), zk, blacklists, runtime, entered);
    let consumer = subscribe(&topology, until, Context::new(worker, handoff, publisher))?;

    let mut poller = Poller::default();
    loop {
        if poller.poll(&consumer) == Polled::CaughtUp && until == Until::CaughtUp {
            break;
        }
        if poller.check_due() {
            if shutdown.is_cancelled() {
                break;
            }
            let cx = consumer.context();
            cx.publisher().tick(&consumer, &cx.worker, &cx.handoff);
        }
    }
    finish(consumer, counter_thread, poller)
}

fn subscribe(
    topology: &Topology,
    until: Until,
    context: Context,
) -> Result<BaseConsumer<Context>, LoopError> {
    let mut config = hotkeys::kafka::consumer_config(&topology.kafka, &topology.kafka.group);
    config.set("statistics.interval.ms", "5000");
    // Names this worker in the group's description (`hotctl reset`, kafka-consumer-groups).
    let me = hotkeys::hotlist::LockInfo::this_process();
    config.set("client.id", format!("hot-counter-{}-{}", me.host, me.pid));
    if until == Until::CaughtUp {
        config.set("enable.partition.eof", "true");
    }
    let consumer: BaseConsumer<Context> = config.create_with_context(context)?;
    consumer.subscribe(&[&topology.kafka.topic])?;
    tracing::info!(topic = %topology.kafka.topic, group = %topology.kafka.group, "consuming");
    Ok(consumer)
}

/// Starts the counting thread: it counts every batch the loop hands over until the
/// hand-off is closed, and returns what it counted.
fn spawn_counting(
    worker: Arc<Mutex<Worker>>,
    handoff: Arc<Handoff>,
    counting: Counting,
) -> JoinHandle<Summary> {
    std::thread::Builder::new()
        .name("counting".into())
        .spawn(move || {
            let mut totals = Summary::default();
            let counted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handoff.count_batches(counting, |batch| {
                    lock(&worker).count_batch(batch, &mut totals);
                })
            }));
            if counted.is_err() {
                // The loop would wait for this thread forever. Dying without a final
                // publish is a crash like any other: the group hands the tasks over from
                // their last checkpoints.
                tracing::error!("the counting thread panicked; exiting");
                std::process::exit(hotkeys::cli::exit::FAILED);
            }
            totals
        })
        .expect("spawn the counting thread")
}

/// What one poll gave.
#[derive(Debug, PartialEq, Eq)]
enum Polled {
    Message,
    Idle,
    /// Every task's partition is read to its end (only with `enable.partition.eof`).
    CaughtUp,
}

/// The poll side of the loop: takes messages off librdkafka into the hand-off, and keeps
/// what the loop needs to know about them.
#[derive(Default)]
struct Poller {
    /// Partitions read to their end since their last message.
    at_end: HashSet<i32>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Messages and errors polled since the last check.
    since_check: u32,
    /// librdkafka's queue ran dry since the last check: the loop is caught up.
    dry: bool,
}

impl Poller {
    fn poll(&mut self, consumer: &BaseConsumer<Context>) -> Polled {
        let handoff = &consumer.context().handoff;
        // A zero timeout spares librdkafka a clock read per message; block only when its
        // queue is empty. Caught up, the loop hands over what it has polled at once rather
        // than when the batch is full: the newest events (a flash crowd's first) are counted
        // now, and the next check can publish them.
        let polled = consumer.poll(Duration::ZERO).or_else(|| {
            self.dry = true;
            handoff.flush();
            consumer.poll(IDLE_WAIT)
        });
        let Some(result) = polled else {
            return Polled::Idle;
        };
        self.since_check += 1;
        match result {
            Ok(message) => {
                if self.first.is_none() {
                    self.first = Some(Instant::now());
                    self.at_end.clear();
                }
                self.at_end.remove(&message.partition());
                handoff.push(&message);
                Polled::Message
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                self.at_end.insert(p);
                let w = lock(&consumer.context().worker);
                let done = !w.tasks.is_empty() && w.tasks.keys().all(|p| self.at_end.contains(p));
                drop(w);
                if done {
                    handoff.drain();
                    self.last = Some(Instant::now());
                    return Polled::CaughtUp;
                }
                Polled::Idle
            }
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                Polled::Idle
            }
        }
    }

    /// Whether it is time to look at the clock: after [`CHECK_EVERY`] messages, or
    /// whenever librdkafka's queue ran dry.
    fn check_due(&mut self) -> bool {
        if !self.dry && self.since_check < CHECK_EVERY {
            return false;
        }
        if self.since_check > 0 {
            self.last = Some(Instant::now());
        }
        self.since_check = 0;
        self.dry = false;
        true
    }

    fn busy(&self) -> Duration {
        match (self.first, self.last) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        }
    }
}

/// Counts what was polled, publishes every task with its checkpoint, commits, and leaves
/// the group.
fn finish(
    consumer: BaseConsumer<Context>,
    counter_thread: JoinHandle<Summary>,
    poller: Poller,
) -> Result<Summary, LoopError> {
    tracing::info!("shutting down: final publish, commit, leave the group");
    let cx = consumer.context();
    cx.handoff.drain();
    cx.publisher()
        .publish_now(&consumer, &cx.worker, &cx.handoff, None, cx.handover());
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit had nothing to commit");
    }
    lock(&cx.worker).flush_dead_letter();
    let handoff = cx.handoff.clone();
    // Dropping the consumer leaves the group; the revoke callback finds nothing new.
    drop(consumer);
    handoff.close();
    let mut summary = counter_thread.join().unwrap_or_default();
    summary.busy = poller.busy();
    Ok(summary)
}
