//! The Kafka consumer loop: polls the access topic, feeds each task's counter, publishes on
//! the interval, and turns rebalances into task hand-overs.
//!
//! The loop runs on one dedicated blocking thread around an rdkafka `BaseConsumer`, which is
//! the cheapest way to take millions of messages per second off librdkafka; it copies them
//! in batches to a second thread that finds the keys and counts them (`handoff`). Rebalance
//! callbacks run inside `poll` on the loop's thread, so a hand-over is synchronous:
//!
//! - on revoke, every dirty task publishes a final hot list and checkpoint before its
//!   partition is released, so the next owner resumes exactly where this one stopped;
//! - on assign, each task is restored from its checkpoint and the partition is re-assigned
//!   at the checkpoint's offset, so no event is counted twice in the window.
//!
//! Offsets are stored for the group only after the publish that reflects them (at-least-once
//! for the group's committed offsets; the ZooKeeper checkpoint is what makes counting
//! effectively exactly-once across owners). ZooKeeper calls are made with `block_on` from
//! this thread, with deadlines, so a slow ZooKeeper pauses counting but never corrupts it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hotkeys::Topology;
use hotkeys::blacklist::Blacklist;
use hotkeys::config::Counter;
use hotkeys::event::{KeyError, KeyPointer};
use hotkeys::hotlist::{LockInfo, now_ms};
use hotkeys::shutdown::CancellationToken;
use hotkeys::zk::{Zk, ZkError};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;

use crate::handoff::{Event, Handoff};
use crate::task::{Start, Task};

/// Deadline of one ZooKeeper call made from the loop.
const ZK_DEADLINE: Duration = Duration::from_secs(10);

/// State shared by the loop and the rebalance callbacks (which run inside `poll`).
struct Worker {
    topology: Arc<Topology>,
    zk: Zk,
    runtime: Handle,
    tasks: HashMap<i32, Task>,
    /// `host:pid`, written into every hot list.
    owner: String,
    /// The topology's counters and, in the same order, where each finds its key.
    counters: Vec<Counter>,
    pointers: Vec<KeyPointer>,
    /// Counters with a threshold rule, evaluated after every publish round.
    blacklists: Vec<Blacklist>,
    logged_kinds: HashSet<&'static str>,
    dead_letter: Option<BaseProducer>,
    /// Events counted since the metrics were last flushed.
    unflushed_events: u64,
}

struct Context {
    worker: Arc<Mutex<Worker>>,
    handoff: Arc<Handoff>,
}

impl ClientContext for Context {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // End-of-partition is reported as an "error" by librdkafka; it is how
        // `--until-caught-up` knows it is done.
        if !matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(%error, reason, "librdkafka error");
        }
    }

    fn stats(&self, stats: Statistics) {
        let worker = lock(&self.worker);
        let Some(topic) = stats.topics.get(&worker.topology.kafka.topic) else {
            return;
        };
        for (partition, task) in &worker.tasks {
            let next = task.next_offset();
            if let Some(p) = topic.partitions.get(partition)
                && p.hi_offset >= 0
                && next >= 0
            {
                metrics::gauge!("hotkeys_counter_lag_events", "task" => partition.to_string())
                    .set((p.hi_offset - next).max(0) as f64);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            metrics::counter!("hotkeys_counter_rebalances_total", "kind" => "revoke").increment(1);
            // What was polled of the revoked partitions is counted before their final publish.
            self.handoff.drain();
            lock(&self.worker).revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics::counter!("hotkeys_counter_rebalances_total", "kind" => "assign")
                    .increment(1);
                self.handoff.drain();
                lock(&self.worker).assign(consumer, tpl);
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A poisoned lock only means a panic elsewhere already took the process down.
fn lock(worker: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    worker.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// What one run of the loop counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub events: u64,
    pub malformed: u64,
    /// From the first message to the last one counted.
    pub busy: Duration,
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
    let dead_letter = if topology.kafka.dead_letter.is_empty() {
        None
    } else {
        Some(hotkeys::kafka::producer_config(&topology.kafka).create::<BaseProducer>()?)
    };
    let counters = topology.counters();
    let worker = Arc::new(Mutex::new(Worker {
        pointers: counters.iter().map(|c| KeyPointer::parse(&c.key)).collect(),
        counters,
        blacklists,
        topology: topology.clone(),
        zk,
        runtime,
        tasks: HashMap::new(),
        owner: LockInfo::this_process().holder(),
        logged_kinds: HashSet::new(),
        dead_letter,
        unflushed_events: 0,
    }));
    let mut config = hotkeys::kafka::consumer_config(&topology.kafka, &topology.kafka.group);
    config.set("statistics.interval.ms", "5000");
    if until == Until::CaughtUp {
        config.set("enable.partition.eof", "true");
    }
    let (handoff, counting) = Handoff::new();
    let handoff = Arc::new(handoff);
    let counter_thread = {
        let (worker, handoff) = (worker.clone(), handoff.clone());
        std::thread::Builder::new()
            .name("counting".into())
            .spawn(move || {
                let mut totals = Summary::default();
                let counted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handoff.count_batches(counting, |batch| {
                        let mut w = lock(&worker);
                        for event in batch.events() {
                            if w.count(&event) {
                                totals.events += 1;
                            } else {
                                totals.malformed += 1;
                            }
                        }
                    })
                }));
                if counted.is_err() {
                    // The loop would wait for this thread forever. Dying without a final
                    // publish is a crash like any other: the group hands the tasks over
                    // from their last checkpoints.
                    tracing::error!("the counting thread panicked; exiting");
                    std::process::exit(hotkeys::exit::FAILED);
                }
                totals
            })
            .expect("spawn the counting thread")
    };
    let consumer: BaseConsumer<Context> = config.create_with_context(Context {
        worker: worker.clone(),
        handoff: handoff.clone(),
    })?;
    consumer.subscribe(&[&topology.kafka.topic])?;
    tracing::info!(topic = %topology.kafka.topic, group = %topology.kafka.group, "consuming");

    let every = topology.count.publish_every;
    let mut next_publish = Instant::now() + every;
    let mut at_end: HashSet<i32> = HashSet::new();
    let (mut first, mut last) = (None, Instant::now());
    // Reading the clock and the token costs more than counting an event: do it once per
    // batch of messages, or whenever the consumer has nothing to give.
    let mut since_check = 0u32;
    loop {
        // A zero timeout spares librdkafka a clock read per message; block only when its
        // queue is empty.
        let polled = consumer
            .poll(Duration::ZERO)
            .or_else(|| consumer.poll(Duration::from_millis(100)));
        let idle = polled.is_none();
        if let Some(result) = polled {
            match result {
                Ok(message) => {
                    if first.is_none() {
                        first = Some(Instant::now());
                        at_end.clear();
                    }
                    at_end.remove(&message.partition());
                    handoff.push(&message);
                }
                Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                    at_end.insert(p);
                    let w = lock(&worker);
                    if !w.tasks.is_empty() && w.tasks.keys().all(|p| at_end.contains(p)) {
                        drop(w);
                        handoff.drain();
                        last = Instant::now();
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
        }
        since_check += 1;
        if idle {
            handoff.flush();
        }
        if idle || since_check >= 1024 {
            since_check = 0;
            if shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            if !idle {
                last = now;
            }
            if now >= next_publish {
                handoff.drain();
                lock(&worker).publish_all(&consumer);
                next_publish = Instant::now() + every;
            }
        }
    }
    tracing::info!("shutting down: final publish, commit, leave the group");
    handoff.drain();
    lock(&worker).publish_all(&consumer);
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit had nothing to commit");
    }
    if let Some(producer) = &lock(&worker).dead_letter
        && let Err(e) = producer.flush(Duration::from_secs(10))
    {
        tracing::warn!(error = %e, "dead-letter messages may be lost");
    }
    // Dropping the consumer leaves the group; the revoke callback finds nothing dirty.
    drop(consumer);
    handoff.close();
    let mut summary = counter_thread.join().unwrap_or_default();
    summary.busy = first.map_or(Duration::ZERO, |f| last - f);
    Ok(summary)
}

impl Worker {
    /// Counts one message in every counter that has not counted it yet, or records it as
    /// malformed (false).
    fn count(&mut self, message: &Event<'_>) -> bool {
        let Some(task) = self.tasks.get_mut(&message.partition) else {
            return true;
        };
        let offset = message.offset;
        let mut ts = None;
        let mut error = None;
        for ((counter, pointer), state) in self
            .counters
            .iter()
            .zip(&self.pointers)
            .zip(&mut task.counters)
        {
            if offset < state.next_offset {
                continue;
            }
            state.next_offset = offset + 1;
            if error.is_some() {
                continue;
            }
            // Only the product counter may stand in the message key for a missing value.
            let message_key = if counter.primary { message.key } else { None };
            match pointer.extract(message.payload, message_key) {
                Ok(key) => {
                    let ts = *ts.get_or_insert_with(|| message.timestamp_ms.unwrap_or_else(now_ms));
                    state.window.offer(&key, ts);
                }
                Err(KeyError::Missing) if !counter.primary => {}
                Err(e) => error = Some(e),
            }
        }
        match error {
            None => {
                self.unflushed_events += 1;
                true
            }
            Some(e) => {
                task.malformed += 1;
                let task_id = task.id;
                self.malformed(task_id, message, &e);
                false
            }
        }
    }

    fn malformed(&mut self, task: u32, message: &Event<'_>, error: &KeyError) {
        metrics::counter!("hotkeys_counter_malformed_total", "task" => task.to_string(), "kind" => error.kind())
            .increment(1);
        if self.logged_kinds.insert(error.kind()) {
            let payload = message.payload.unwrap_or_default();
            let sample = String::from_utf8_lossy(&payload[..payload.len().min(200)]).into_owned();
            tracing::warn!(task, offset = message.offset, kind = error.kind(), %error, %sample,
                "malformed event (counted and skipped; further ones of this kind are only counted)");
        }
        if let Some(producer) = &self.dead_letter {
            let mut record = BaseRecord::to(&self.topology.kafka.dead_letter)
                .payload(message.payload.unwrap_or_default());
            if let Some(key) = message.key {
                record = record.key(key);
            }
            if let Err((e, _)) = producer.send::<[u8], [u8]>(record) {
                tracing::warn!(error = %e, "cannot forward a malformed event to the dead-letter topic");
            }
        }
    }

    /// Publishes every task with new events since its last publish, then evaluates the
    /// threshold rules against what all workers published.
    fn publish_all(&mut self, consumer: &BaseConsumer<Context>) {
        metrics::counter!("hotkeys_counter_events_total").increment(self.unflushed_events);
        self.unflushed_events = 0;
        if let Some(producer) = &self.dead_letter {
            producer.poll(Duration::ZERO);
        }
        let mut ids: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.is_dirty())
            .map(|(p, _)| *p)
            .collect();
        ids.sort_unstable();
        for partition in ids {
            // A ZooKeeper that is down fails every task alike: stop here and keep counting
            // rather than waiting out one deadline per task.
            if !self.publish_one(consumer, partition) {
                return;
            }
        }
        self.enforce_rules();
    }

    /// One evaluation of every threshold rule. Runs even when nothing was published, so
    /// bans run out on time while traffic is quiet.
    fn enforce_rules(&mut self) {
        let now = now_ms();
        for blacklist in &mut self.blacklists {
            let result = self.runtime.block_on(async {
                tokio::time::timeout(ZK_DEADLINE, blacklist.enforce(&self.zk, now)).await
            });
            let failure = match result {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            metrics::counter!("hotkeys_blacklist_failures_total", "counter" => blacklist.counter().to_string())
                .increment(1);
            tracing::warn!(counter = blacklist.counter(), error = %failure,
                "threshold rule not evaluated; retrying next interval");
        }
    }

    /// Publishes one task; false when ZooKeeper failed in a way other tasks would share.
    fn publish_one(&mut self, consumer: &BaseConsumer<Context>, partition: i32) -> bool {
        let started = Instant::now();
        let result = {
            let Some(task) = self.tasks.get_mut(&partition) else {
                return true;
            };
            let zk = self.zk.clone();
            self.runtime.block_on(deadline(task.publish(
                &zk,
                &self.topology,
                &self.counters,
                &self.owner,
            )))
        };
        let label = partition.to_string();
        match result {
            Ok(published) => {
                metrics::histogram!("hotkeys_counter_publish_seconds", "task" => label.clone())
                    .record(started.elapsed().as_secs_f64());
                metrics::gauge!("hotkeys_counter_publish_bytes", "task" => label.clone())
                    .set(published.bytes as f64);
                metrics::gauge!("hotkeys_counter_hot_items", "task" => label)
                    .set(published.items as f64);
                tracing::debug!(
                    task = partition,
                    offset = published.offset,
                    items = published.items,
                    "published"
                );
                // The counts up to this offset are safe in ZooKeeper: the group may move on.
                if let Err(e) =
                    consumer.store_offset(&self.topology.kafka.topic, partition, published.offset)
                {
                    tracing::debug!(task = partition, error = %e, "offset not stored (partition revoked?)");
                }
                true
            }
            Err(ZkError::Fenced { .. }) => {
                metrics::counter!("hotkeys_counter_fenced_total", "task" => label).increment(1);
                tracing::warn!(
                    task = partition,
                    "another writer published this task; resuming from its checkpoint"
                );
                self.reload(consumer, partition);
                true
            }
            Err(e) if e.is_session_lost() => {
                metrics::counter!("hotkeys_counter_publish_failures_total", "task" => label)
                    .increment(1);
                tracing::warn!(
                    task = partition,
                    "ZooKeeper session expired; opening a new one"
                );
                self.reconnect();
                false
            }
            Err(e) => {
                metrics::counter!("hotkeys_counter_publish_failures_total", "task" => label)
                    .increment(1);
                tracing::warn!(task = partition, error = %e, "publish failed; retrying next interval");
                false
            }
        }
    }

    /// Replaces an expired session; counting goes on meanwhile and publishing resumes with
    /// the next interval. Hot-counter holds no ephemerals, so nothing else is recreated.
    fn reconnect(&mut self) {
        match self.runtime.block_on(deadline(self.zk.reconnect())) {
            Ok(zk) => {
                tracing::info!("new ZooKeeper session established");
                self.zk = zk;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ZooKeeper reconnect failed; retrying next interval")
            }
        }
    }

    /// Adopts the newest checkpoint of a task after losing a publish race, and seeks there.
    fn reload(&mut self, consumer: &BaseConsumer<Context>, partition: i32) {
        let Ok(id) = u32::try_from(partition) else {
            return;
        };
        match self
            .runtime
            .block_on(deadline(Task::restore(&self.zk, &self.counters, id)))
        {
            Ok((task, start)) => {
                if let Start::Checkpoint(offset) = start
                    && let Err(e) = consumer.seek(
                        &self.topology.kafka.topic,
                        partition,
                        Offset::Offset(offset),
                        Duration::from_secs(10),
                    )
                {
                    tracing::warn!(task = partition, error = %e, "seek to the adopted checkpoint failed");
                }
                self.tasks.insert(partition, task);
            }
            Err(e) => {
                tracing::warn!(task = partition, error = %e, "cannot read the newer checkpoint")
            }
        }
    }

    /// Final publish of the revoked tasks, then forget them.
    fn revoke(&mut self, consumer: &BaseConsumer<Context>, tpl: &TopicPartitionList) {
        let mut revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        revoked.sort_unstable();
        for &partition in &revoked {
            if self.tasks.get(&partition).is_some_and(Task::is_dirty) {
                self.publish_one(consumer, partition);
            }
            self.tasks.remove(&partition);
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "commit on revoke had nothing to commit");
        }
        tracing::info!(tasks = ?revoked, "partitions revoked");
    }

    /// Restores the assigned tasks and re-assigns their partitions at the checkpoints.
    fn assign(&mut self, consumer: &BaseConsumer<Context>, tpl: &TopicPartitionList) {
        let mut positioned = TopicPartitionList::new();
        let mut assigned = Vec::new();
        for elem in tpl.elements() {
            let partition = elem.partition();
            let Ok(id) = u32::try_from(partition) else {
                continue;
            };
            let restored =
                self.runtime
                    .block_on(deadline(Task::restore(&self.zk, &self.counters, id)));
            let (task, start) = match restored {
                Ok(r) => r,
                Err(e) => {
                    // Counting starts fresh from the committed offset; the first publish is
                    // fenced against the existing list and adopts its checkpoint then.
                    tracing::warn!(task = id, error = %e, "cannot restore from ZooKeeper; starting empty");
                    if e.is_session_lost() {
                        self.reconnect();
                    }
                    (Task::empty(&self.counters, id), Start::Committed)
                }
            };
            let offset = match start {
                Start::Checkpoint(o) => Offset::Offset(o),
                Start::Committed => Offset::Stored,
            };
            if let Err(e) = positioned.add_partition_offset(elem.topic(), partition, offset) {
                tracing::warn!(task = id, error = %e, "cannot position partition");
            }
            self.tasks.insert(partition, task);
            assigned.push(id);
        }
        if let Err(e) = consumer.assign(&positioned) {
            tracing::error!(error = %e, "cannot re-assign partitions at their checkpoints");
        }
        assigned.sort_unstable();
        tracing::info!(tasks = ?assigned, "partitions assigned");
    }
}

async fn deadline<T>(f: impl Future<Output = Result<T, ZkError>>) -> Result<T, ZkError> {
    match tokio::time::timeout(ZK_DEADLINE, f).await {
        Ok(r) => r,
        Err(_) => Err(ZkError::Timeout),
    }
}
