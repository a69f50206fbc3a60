//! Publishing: when each task's hot list and checkpoint go to ZooKeeper, and what the
//! worker does with the outcome.
//!
//! A round renders every task's writes under the worker's lock, then writes them all
//! concurrently on the tokio runtime while the poll loop goes on polling and counting. The
//! loop looks in at every tick ([`Publisher::tick`]): it takes in a finished round and
//! starts the next when one is due. Hand-overs and shutdown instead publish and wait
//! ([`Publisher::publish_now`]), under one deadline for all tasks. Every path renders its
//! writes through [`Task::prepare`], which writes nothing for a counter still re-counting
//! towards the hot list it found, so none of them can take a list back.
//!
//! A round is due every `count.publish_every` (every task whose counts changed), or at
//! once for the tasks where a key entered the top N or crossed a threshold rule (`entry`).
//! No round starts within [`MIN_GAP`] of the previous one's start or end.
//!
//! After a round:
//! - a written checkpoint lets the group commit its offset (`store_offsets`, the next offset
//!   to read: exactly what the checkpoint does not include);
//! - a fenced write (another worker published the task) replaces the task with that
//!   writer's checkpoint and seeks there;
//! - a node deleted under us (`hotctl reset`) is created again by the next round, which
//!   starts at once;
//! - an expired session is replaced by a new one;
//! - any other failure is retried next round, and never holds up the other tasks.
//!
//! The threshold rules are evaluated after every round, on what all workers published.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hotkeys::Topology;
use hotkeys::blacklist::Blacklist;
use hotkeys::config::Counter;
use hotkeys::count::CheckpointKind;
use hotkeys::hotlist::{LockInfo, now_ms};
use hotkeys::zk::{Zk, ZkError};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::entry::MIN_GAP;
use crate::handoff::Handoff;
use crate::task::{Start, Task, Write, Written};
use crate::worker::{Worker, lock};

/// Deadline of one ZooKeeper call.
pub const ZK_DEADLINE: Duration = Duration::from_secs(10);

/// What a round in flight hands back.
struct Round {
    written: Vec<Written>,
    blacklists: Vec<Blacklist>,
}

/// See the module docs. Lives on the poll loop's thread (and its rebalance callbacks).
pub struct Publisher {
    topology: Arc<Topology>,
    zk: Zk,
    runtime: Handle,
    /// `host:pid`, written into every hot list.
    owner: String,
    /// Counters with a threshold rule; lent to the round in flight.
    blacklists: Vec<Blacklist>,
    next_publish: Instant,
    next_checkpoint: Instant,
    /// When the last round started.
    last_round: Instant,
    /// Raised by the counting thread when a key entered some task's top N.
    entered: Arc<AtomicBool>,
    in_flight: Option<JoinHandle<Round>>,
}

/// The tasks a round publishes.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// Every task whose counts changed: the periodic round, and shutdown.
    All,
    /// These partitions: a hand-over.
    Only(&'a [i32]),
    /// The tasks where a key entered the top N since their last publish.
    Entered,
}

impl Publisher {
    pub fn new(
        topology: Arc<Topology>,
        zk: Zk,
        blacklists: Vec<Blacklist>,
        runtime: Handle,
        entered: Arc<AtomicBool>,
    ) -> Publisher {
        let now = Instant::now();
        Publisher {
            next_publish: now + topology.count.publish_every,
            next_checkpoint: now + topology.count.checkpoint_every,
            last_round: now,
            entered,
            topology,
            zk,
            runtime,
            owner: LockInfo::this_process().holder(),
            blacklists,
            in_flight: None,
        }
    }

    /// Takes in a finished round and starts the next one when due; never waits.
    pub fn tick<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        worker: &Mutex<Worker>,
        handoff: &Handoff,
    ) {
        if self.in_flight.as_ref().is_some_and(JoinHandle::is_finished) {
            self.settle(consumer, worker, handoff);
        }
        let now = Instant::now();
        if self.in_flight.is_some() || now < self.last_round + MIN_GAP {
            return;
        }
        if now >= self.next_publish {
            let checkpoint = now >= self.next_checkpoint;
            self.next_publish = now + self.topology.count.publish_every;
            if checkpoint {
                self.next_checkpoint = now + self.topology.count.checkpoint_every;
            }
            let checkpoint = checkpoint.then_some(CheckpointKind::Periodic);
            self.start(worker, handoff, Scope::All, checkpoint, "periodic");
        } else if self.entered.swap(false, Ordering::AcqRel) {
            self.start(worker, handoff, Scope::Entered, None, "entry");
        }
    }

    /// Renders a round of `scope` and sets it writing.
    fn start(
        &mut self,
        worker: &Mutex<Worker>,
        handoff: &Handoff,
        scope: Scope<'_>,
        checkpoint: Option<CheckpointKind>,
        reason: &'static str,
    ) {
        self.last_round = Instant::now();
        // What was polled is counted before the round renders it: a batch still filling
        // would otherwise hold the newest events back.
        handoff.drain();
        let writes = self.render(worker, scope, checkpoint);
        // A periodic round evaluates the rules even when nothing changed, so bans run out
        // on time while traffic is quiet.
        let rules_due = matches!(scope, Scope::All) && !self.blacklists.is_empty();
        if writes.is_empty() && !rules_due {
            return;
        }
        metrics::counter!("hotkeys_counter_rounds_total", "reason" => reason).increment(1);
        let zk = self.zk.clone();
        let mut blacklists = std::mem::take(&mut self.blacklists);
        self.in_flight = Some(self.runtime.spawn(async move {
            let written = send_all(&zk, writes).await;
            enforce_rules(&zk, &mut blacklists).await;
            Round {
                written,
                blacklists,
            }
        }));
    }

    /// Waits for the round in flight, if any, and takes in its outcome.
    pub fn settle<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        worker: &Mutex<Worker>,
        handoff: &Handoff,
    ) {
        let Some(handle) = self.in_flight.take() else {
            return;
        };
        let outcome = self.runtime.block_on(handle);
        // The gap runs from the end of a round's writes too: a slow write followed by a
        // quick one would otherwise land closer together than MIN_GAP.
        self.last_round = Instant::now();
        match outcome {
            Ok(round) => {
                self.blacklists = round.blacklists;
                self.take_in(consumer, worker, handoff, round.written);
            }
            // The round panicked: its writes are retried by the next one.
            Err(e) => tracing::error!(error = %e, "publish round failed"),
        }
    }

    /// Publishes `partitions` (every task when `None`) with checkpoints and waits, within
    /// `deadline` for all of them together: hand-overs and shutdown.
    pub fn publish_now<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        worker: &Mutex<Worker>,
        handoff: &Handoff,
        partitions: Option<&[i32]>,
        deadline: Duration,
    ) {
        self.settle(consumer, worker, handoff);
        let scope = partitions.map_or(Scope::All, Scope::Only);
        let writes = self.render(worker, scope, Some(CheckpointKind::Final));
        let written = self.runtime.block_on(async {
            match tokio::time::timeout(deadline, send_all(&self.zk, writes)).await {
                Ok(written) => written,
                Err(_) => {
                    tracing::warn!(?deadline, "final publish ran out of time; the next owner re-counts from the last checkpoint");
                    Vec::new()
                }
            }
        });
        self.take_in(consumer, worker, handoff, written);
    }

    /// Restores tasks concurrently, within `deadline` for all of them together; a task
    /// that cannot be restored starts empty from the group's committed offset.
    pub fn restore(
        &mut self,
        counters: &[Counter],
        max_future_ms: i64,
        ids: &[u32],
        deadline: Duration,
    ) -> Vec<(Task, Start)> {
        let zk = &self.zk;
        let restores = ids.iter().map(|&id| async move {
            let restored =
                tokio::time::timeout(deadline, Task::restore(zk, counters, id, max_future_ms))
                    .await
                    .unwrap_or(Err(ZkError::Timeout));
            (id, restored)
        });
        let results = self.runtime.block_on(join_all(restores));
        let mut session_lost = false;
        let tasks = results
            .into_iter()
            .map(|(id, restored)| match restored {
                Ok(r) => r,
                Err(e) => {
                    // Counting starts fresh from the committed offset; the first publish is
                    // fenced against the existing list and adopts its checkpoint then.
                    tracing::warn!(task = id, error = %e, "cannot restore from ZooKeeper; starting empty");
                    session_lost |= e.is_session_lost();
                    (Task::empty(counters, id), Start::Committed)
                }
            })
            .collect();
        if session_lost {
            self.reconnect();
        }
        tasks
    }

    /// What a round writes for the tasks of `scope`, rendered under the worker's lock,
    /// which is let go before anything is written. Each task rendered has its entries
    /// taken into account.
    fn render(
        &self,
        worker: &Mutex<Worker>,
        scope: Scope<'_>,
        checkpoint: Option<CheckpointKind>,
    ) -> Vec<Write> {
        let mut w = lock(worker);
        w.flush_metrics();
        let mut ids: Vec<i32> = match scope {
            Scope::All => w.tasks.keys().copied().collect(),
            Scope::Only(p) => p
                .iter()
                .copied()
                .filter(|p| w.tasks.contains_key(p))
                .collect(),
            Scope::Entered => w
                .tasks
                .iter()
                .filter(|(_, t)| t.entered)
                .map(|(p, _)| *p)
                .collect(),
        };
        ids.sort_unstable();
        let w = &mut *w;
        let mut writes = Vec::new();
        for id in ids {
            let Some(task) = w.tasks.get_mut(&id) else {
                continue;
            };
            task.entered = false;
            if task.has_news(checkpoint.is_some()) {
                writes.extend(task.prepare(&self.topology, &w.counters, &self.owner, checkpoint));
            }
        }
        writes
    }

    /// Records the outcome of writes in the tasks, commits what was checkpointed, and
    /// handles fencing and a lost session.
    fn take_in<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        worker: &Mutex<Worker>,
        handoff: &Handoff,
        written: Vec<Written>,
    ) {
        let mut fenced = Vec::new();
        let mut session_lost = false;
        let mut checkpointed = Vec::new();
        {
            let mut w = lock(worker);
            for Written { write, result } in &written {
                let partition = write.task as i32;
                report(write, result);
                match result {
                    Err(ZkError::Fenced { .. }) => fenced.push(partition),
                    Err(e) if e.is_session_lost() => session_lost = true,
                    // Create it again at once rather than one interval later.
                    Err(ZkError::Gone { .. }) => self.next_publish = Instant::now(),
                    _ => {}
                }
                if let Some(task) = w.tasks.get_mut(&partition)
                    && task.epoch == write.epoch
                {
                    task.apply(write, result);
                    if write.has_checkpoint() && result.is_ok() {
                        checkpointed.push(partition);
                    }
                }
            }
            checkpointed.dedup();
            self.commit(consumer, &w, &checkpointed);
        }
        if session_lost {
            self.reconnect();
        }
        fenced.dedup();
        for partition in fenced {
            self.reload(consumer, worker, handoff, partition);
        }
    }

    /// Stores the checkpointed offsets for the group's next commit. The stored offset is
    /// the next one to read (librdkafka's partition-list call stores it as given).
    fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        worker: &Worker,
        partitions: &[i32],
    ) {
        let mut offsets = TopicPartitionList::new();
        for partition in partitions {
            if let Some(offset) = worker
                .tasks
                .get(partition)
                .and_then(Task::checkpointed_offset)
                && let Err(e) = offsets.add_partition_offset(
                    &self.topology.kafka.topic,
                    *partition,
                    Offset::Offset(offset),
                )
            {
                tracing::warn!(task = partition, error = %e, "cannot record the offset to commit");
            }
        }
        if offsets.count() > 0
            && let Err(e) = consumer.store_offsets(&offsets)
        {
            tracing::debug!(error = %e, "offsets not stored (partition revoked?)");
        }
    }

    /// Replaces an expired session; counting goes on meanwhile and publishing resumes with
    /// the next round. Hot-counter holds no ephemerals, so nothing else is recreated.
    fn reconnect(&mut self) {
        let reconnected = self
            .runtime
            .block_on(async { tokio::time::timeout(ZK_DEADLINE, self.zk.reconnect()).await });
        match reconnected {
            Ok(Ok(zk)) => {
                tracing::info!("new ZooKeeper session established");
                self.zk = zk;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "ZooKeeper reconnect failed; retrying next round")
            }
            Err(_) => tracing::warn!("ZooKeeper reconnect timed out; retrying next round"),
        }
    }

    /// Adopts the newest checkpoint of a task after losing a publish race, and seeks there.
    fn reload<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        worker: &Mutex<Worker>,
        handoff: &Handoff,
        partition: i32,
    ) {
        metrics::counter!("hotkeys_counter_fenced_total", "task" => partition.to_string())
            .increment(1);
        tracing::warn!(
            task = partition,
            "another writer published this task; resuming from its checkpoint"
        );
        let Ok(id) = u32::try_from(partition) else {
            return;
        };
        // Batches polled for the old incarnation are counted into it, not the new one.
        handoff.drain();
        let restored = {
            let w = lock(worker);
            let zk = self.zk.clone();
            let max_future_ms = w.max_future_ms();
            let counters = w.counters.clone();
            drop(w);
            self.runtime.block_on(async {
                tokio::time::timeout(
                    ZK_DEADLINE,
                    Task::restore(&zk, &counters, id, max_future_ms),
                )
                .await
                .unwrap_or(Err(ZkError::Timeout))
            })
        };
        match restored {
            Ok((task, start)) => {
                let topic = &self.topology.kafka.topic;
                let offset = start_offset(consumer, topic, partition, start);
                if offset != Offset::Stored
                    && let Err(e) = consumer.seek(topic, partition, offset, Duration::from_secs(10))
                {
                    tracing::warn!(task = partition, error = %e, "seek to the adopted checkpoint failed");
                }
                lock(worker).tasks.insert(partition, task);
            }
            Err(e) => {
                tracing::warn!(task = partition, error = %e, "cannot read the newer checkpoint")
            }
        }
    }
}

/// Where a restored task's partition is read from. A re-count of the window asks Kafka
/// for the first offset at its start (the end when nothing came since); when Kafka cannot
/// say, the other counters' checkpoint or else the beginning is a safe start, since the
/// counters skip what they hold and the window drops what is too old.
pub fn start_offset<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    start: Start,
) -> Offset {
    match start {
        Start::Checkpoint(offset) => Offset::Offset(offset),
        Start::Committed => Offset::Stored,
        Start::Window {
            since_ms,
            checkpoint,
        } => match (offset_at(consumer, topic, partition, since_ms), checkpoint) {
            (Some(Offset::Offset(at)), Some(c)) => Offset::Offset(at.min(c)),
            (_, Some(c)) => Offset::Offset(c),
            (Some(at), None) => at,
            (None, None) => Offset::Beginning,
        },
    }
}

/// The first offset of `partition` stamped at or after `ms` (`Offset::End` when none is),
/// or `None` when Kafka does not answer.
fn offset_at<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    ms: i64,
) -> Option<Offset> {
    let mut asked = TopicPartitionList::new();
    asked
        .add_partition_offset(topic, partition, Offset::Offset(ms))
        .ok()?;
    match consumer.offsets_for_times(asked, ZK_DEADLINE) {
        Ok(found) => found
            .find_partition(topic, partition)
            .map(|e| e.offset())
            .filter(|o| matches!(o, Offset::Offset(_) | Offset::End)),
        Err(e) => {
            tracing::warn!(task = partition, error = %e, "cannot find the window's first offset");
            None
        }
    }
}

/// Sends every write concurrently, each under [`ZK_DEADLINE`]: one slow or failing task
/// never holds up the others.
async fn send_all(zk: &Zk, writes: Vec<Write>) -> Vec<Written> {
    join_all(writes.into_iter().map(|w| w.send(zk, ZK_DEADLINE))).await
}

/// One evaluation of every threshold rule. Runs even when nothing was published, so bans
/// run out on time while traffic is quiet.
async fn enforce_rules(zk: &Zk, blacklists: &mut [Blacklist]) {
    let now = now_ms();
    for blacklist in blacklists {
        let failure = match tokio::time::timeout(ZK_DEADLINE, blacklist.enforce(zk, now)).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        metrics::counter!("hotkeys_blacklist_failures_total", "counter" => blacklist.counter().to_string())
            .increment(1);
        tracing::warn!(counter = blacklist.counter(), error = %failure,
            "threshold rule not evaluated; retrying next round");
    }
}

/// Metrics and logs of one write.
fn report(write: &Write, result: &Result<i32, ZkError>) {
    let label = write.task.to_string();
    match result {
        Ok(_) => {
            metrics::counter!("hotkeys_counter_published_bytes_total", "task" => label.clone())
                .increment(write.bytes() as u64);
            metrics::gauge!("hotkeys_counter_hot_items", "task" => label).set(write.items as f64);
            tracing::debug!(
                task = write.task,
                counter = write.counter,
                offset = write.offset,
                items = write.items,
                checkpoint = write.has_checkpoint(),
                "published"
            );
        }
        Err(ZkError::Fenced { .. }) => {}
        Err(ZkError::Gone { .. }) => {
            tracing::warn!(
                task = write.task,
                "hot list deleted under this worker (hotctl reset?); creating it again"
            );
        }
        Err(e) => {
            metrics::counter!("hotkeys_counter_publish_failures_total", "task" => label)
                .increment(1);
            tracing::warn!(task = write.task, error = %e, "publish failed; retrying next round");
        }
    }
}
