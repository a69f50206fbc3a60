//! One task = one partition of the access topic: a window of counts per counter, the offsets
//! each counter's counts reach, and their publish/checkpoint/restore cycle against ZooKeeper.
//!
//! Every counter of the topology (`Topology::counters`) has its own hot list and checkpoint
//! per task, published and fenced independently, so a task's counters may stand at
//! different offsets after a crash: the partition is then read from the lowest checkpoint
//! and each counter skips what it already holds.
//!
//! A publish is split in three so that no lock is held across a ZooKeeper call:
//! [`Task::prepare`] renders what to write (under the worker's lock, CPU only),
//! [`Write::send`] writes it (no lock), [`Task::apply`] records the outcome (under the lock
//! again, only if the task is still the one the write was prepared from).
//!
//! The hot list is published whenever it changed; the checkpoint, which can be up to a
//! megabyte, only when asked (every `count.checkpoint_every`, at revoke and shutdown). A
//! new owner resumes from the checkpoint's offset and re-counts what came after it, so
//! nothing is lost or counted twice; it publishes nothing until it has re-counted up to the
//! hot list it found, so readers never see a list go back in time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hotkeys::Topology;
use hotkeys::config::Counter;
use hotkeys::count::WindowCounter;
use hotkeys::event::KeyError;
use hotkeys::hotlist::{HotList, now_ms};
use hotkeys::zk::{REQUEST_MAX_BYTES, Zk, ZkError};

/// Tells apart successive tasks of one partition (after a hand-over or a fenced reload).
static EPOCHS: AtomicU64 = AtomicU64::new(0);

/// The live state of a task this worker owns.
pub struct Task {
    pub id: u32,
    /// Which incarnation of the task this is; writes prepared from another are discarded.
    pub epoch: u64,
    /// In the order of `Topology::counters`.
    pub counters: Vec<TaskCounter>,
    /// Events stamped too far ahead of the clock, counted as happening when read.
    pub future: u64,
}

/// One counter's state within a task.
pub struct TaskCounter {
    pub window: WindowCounter,
    /// The next offset not yet counted; -1 before the first event.
    pub next_offset: i64,
    /// Version of the `hot` znode last read or written; `None` when there is none (never
    /// published, or deleted under us), so the next publish creates it with a checkpoint.
    pub zk_version: Option<i32>,
    /// Offset of the last published hot list.
    pub published_offset: Option<i64>,
    /// Offset of the last checkpoint written: where a new owner would resume.
    pub checkpointed_offset: Option<i64>,
    /// No publish before the counts reach this offset (the hot list found at restore).
    pub resume_at: i64,
    /// Events this counter could not key since this worker took the task.
    pub malformed: u64,
    /// Of `malformed`, those whose key was over `source.max_key_bytes`.
    pub key_too_long: u64,
}

impl TaskCounter {
    fn empty(counter: &Counter, zk_version: Option<i32>) -> TaskCounter {
        TaskCounter {
            window: WindowCounter::new(&counter.count),
            next_offset: -1,
            zk_version,
            published_offset: None,
            checkpointed_offset: None,
            resume_at: -1,
            malformed: 0,
            key_too_long: 0,
        }
    }

    /// Records an event this counter could not key.
    pub fn skip(&mut self, error: &KeyError) {
        self.malformed += 1;
        if matches!(error, KeyError::TooLong { .. }) {
            self.key_too_long += 1;
        }
    }

    fn has_news(&self) -> bool {
        self.next_offset >= 0
            && self.next_offset >= self.resume_at
            && self.published_offset != Some(self.next_offset)
    }

    fn needs_checkpoint(&self) -> bool {
        self.next_offset >= 0
            && (self.zk_version.is_none() || self.checkpointed_offset != Some(self.next_offset))
    }
}

/// Where a task starts counting.
pub enum Start {
    /// Resume from the checkpoints, at the lowest offset among them.
    Checkpoint(i64),
    /// No usable checkpoint: start from the group's committed offset (or the beginning).
    Committed,
}

/// One counter's hot list (and maybe checkpoint) of one task, ready to be written.
pub struct Write {
    pub task: u32,
    pub epoch: u64,
    /// Index into `Topology::counters`.
    pub counter: usize,
    counter_name: String,
    seen: Option<i32>,
    hot: Vec<u8>,
    checkpoint: Option<Vec<u8>>,
    /// The next offset the written counts do not include.
    pub offset: i64,
    pub items: usize,
}

/// How a write went.
pub struct Written {
    pub write: Write,
    pub result: Result<i32, ZkError>,
}

impl Write {
    /// Bytes this write sends to ZooKeeper.
    pub fn bytes(&self) -> usize {
        self.hot.len() + self.checkpoint.as_ref().map_or(0, Vec::len)
    }

    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// Writes the hot list (and checkpoint) fenced on the version the task last saw, within
    /// `deadline`.
    pub async fn send(self, zk: &Zk, deadline: Duration) -> Written {
        let zk = zk.for_counter(&self.counter_name);
        let write = async {
            if self.seen.is_none() {
                // Creating: the task's node may be gone too (hotctl reset).
                zk.ensure_task(self.task).await?;
            }
            zk.publish(self.task, self.seen, &self.hot, self.checkpoint.as_deref())
                .await
        };
        let result = tokio::time::timeout(deadline, write)
            .await
            .unwrap_or(Err(ZkError::Timeout));
        Written {
            write: self,
            result,
        }
    }
}

impl Task {
    fn new(id: u32, counters: Vec<TaskCounter>) -> Task {
        Task {
            id,
            epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            counters,
            future: 0,
        }
    }

    /// Restores a task's counters from their last checkpoints, or starts them empty. Never
    /// fails for a bad checkpoint: it is logged and that counter restarts, which loses
    /// history but not events. A checkpoint holding buckets beyond `max_future_ms` from now
    /// (written before the clamp existed, or by a worker with a skewed clock) is repaired.
    pub async fn restore(
        zk: &Zk,
        counters: &[Counter],
        id: u32,
        max_future_ms: i64,
    ) -> Result<(Task, Start), ZkError> {
        let mut restored = Vec::with_capacity(counters.len());
        for counter in counters {
            let zk = zk.for_counter(&counter.name);
            zk.ensure_task(id).await?;
            let state = match zk.read_checkpoint(id).await? {
                None => TaskCounter::empty(counter, None),
                Some(saved) => match WindowCounter::restore(&counter.count, &saved.checkpoint) {
                    Ok((mut window, offset)) => {
                        let offset = offset.unwrap_or(saved.hot.offset);
                        let repaired = window.repair_future(now_ms(), max_future_ms);
                        if repaired > 0 {
                            tracing::warn!(task = id, counter = %counter.name, events = repaired,
                                "checkpoint held events stamped in the future; counted as now");
                        }
                        tracing::info!(task = id, counter = %counter.name, offset,
                            version = saved.version, "restored from checkpoint");
                        TaskCounter {
                            window,
                            next_offset: offset,
                            zk_version: Some(saved.version),
                            published_offset: Some(offset),
                            checkpointed_offset: Some(offset),
                            resume_at: saved.hot.offset,
                            malformed: 0,
                            key_too_long: 0,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(task = id, counter = %counter.name, error = %e,
                            "ignoring checkpoint; counting restarts");
                        TaskCounter::empty(counter, Some(saved.version))
                    }
                },
            };
            restored.push(state);
        }
        let start = restored
            .iter()
            .filter(|c| c.checkpointed_offset.is_some())
            .map(|c| c.next_offset)
            .min()
            .map_or(Start::Committed, Start::Checkpoint);
        Ok((Task::new(id, restored), start))
    }

    /// A task with no history, counting from the group's committed offset.
    pub fn empty(counters: &[Counter], id: u32) -> Task {
        Task::new(
            id,
            counters
                .iter()
                .map(|c| TaskCounter::empty(c, None))
                .collect(),
        )
    }

    /// The lowest offset the task's counters have not counted yet; -1 before any event.
    pub fn next_offset(&self) -> i64 {
        self.counters
            .iter()
            .map(|c| c.next_offset)
            .min()
            .unwrap_or(-1)
    }

    /// The offset every counter's checkpoint has reached: the group may commit it.
    pub fn checkpointed_offset(&self) -> Option<i64> {
        self.counters
            .iter()
            .map(|c| c.checkpointed_offset)
            .min()
            .flatten()
    }

    /// Whether a publish would write anything (with checkpoints when `checkpoint`).
    pub fn has_news(&self, checkpoint: bool) -> bool {
        self.counters
            .iter()
            .any(|c| c.has_news() || checkpoint && c.needs_checkpoint())
    }

    /// The hot list counter `index` would publish now, as `version`.
    pub fn hot_list(
        &self,
        topology: &Topology,
        counter: &Counter,
        index: usize,
        version: i64,
        owner: &str,
    ) -> HotList {
        let state = &self.counters[index];
        let top = state.window.top(counter.count.top_n);
        HotList {
            topology: topology.name.clone(),
            counter: (!counter.primary).then(|| counter.name.clone()),
            task: self.id,
            version,
            generated_at_ms: now_ms(),
            window_ms: counter.count.window.as_millis() as u64,
            offset: state.next_offset,
            exact: top.exact,
            owner: Some(owner.to_string()),
            events: top.events,
            malformed: state.malformed,
            key_too_long: state.key_too_long,
            future: self.future,
            late: state.window.late(),
            truncated: false,
            items: top.items,
        }
    }

    /// What to write for every counter with news: its hot list, and its checkpoint when
    /// `checkpoint` is asked or the hot node must be created. The hot list is bounded by
    /// `hotlist::MAX_BYTES`; the checkpoint gets what is left of one ZooKeeper request.
    pub fn prepare(
        &self,
        topology: &Topology,
        counters: &[Counter],
        owner: &str,
        checkpoint: bool,
    ) -> Vec<Write> {
        let mut writes = Vec::new();
        for (index, counter) in counters.iter().enumerate() {
            let state = &self.counters[index];
            let with_checkpoint =
                state.needs_checkpoint() && (checkpoint || state.zk_version.is_none());
            if !state.has_news() && !with_checkpoint {
                continue;
            }
            let seen = state.zk_version;
            let version = seen.map_or(0, |v| i64::from(v) + 1);
            let mut list = self.hot_list(topology, counter, index, version, owner);
            let hot = list.to_bounded_json();
            if list.truncated {
                tracing::warn!(task = self.id, counter = %counter.name, items = list.items.len(),
                    "hot list truncated to fit one ZooKeeper request");
            }
            let checkpoint = with_checkpoint.then(|| {
                state
                    .window
                    .checkpoint(state.next_offset, REQUEST_MAX_BYTES - hot.len())
            });
            writes.push(Write {
                task: self.id,
                epoch: self.epoch,
                counter: index,
                counter_name: counter.name.clone(),
                seen,
                hot,
                checkpoint,
                offset: state.next_offset,
                items: list.items.len(),
            });
        }
        writes
    }

    /// Records a successful write, or forgets a node deleted under us so the next publish
    /// creates it again. Fencing is the caller's to handle (it replaces the task).
    pub fn apply(&mut self, write: &Write, result: &Result<i32, ZkError>) {
        let state = &mut self.counters[write.counter];
        match result {
            Ok(version) => {
                state.zk_version = Some(*version);
                state.published_offset = Some(write.offset);
                if write.has_checkpoint() {
                    state.checkpointed_offset = Some(write.offset);
                }
            }
            Err(ZkError::Gone { .. }) => {
                state.zk_version = None;
                state.published_offset = None;
                state.checkpointed_offset = None;
            }
            Err(_) => {}
        }
    }
}
