//! One task = one partition of the access topic: a window of counts per counter, the offset
//! each counter's counts reach, and their publish/restore cycle against ZooKeeper.
//!
//! Every counter of the topology (`Topology::counters`) has its own hot list and checkpoint
//! per task, published and fenced independently, so a task's counters may stand at
//! different offsets after a crash between two publishes: the partition is then read from
//! the lowest of them and each counter skips what it already holds.

use hotkeys::Topology;
use hotkeys::config::Counter;
use hotkeys::count::WindowCounter;
use hotkeys::hotlist::{HotList, now_ms};
use hotkeys::zk::{Zk, ZkError};

/// Checkpoints stay well under ZooKeeper's 1 MB node limit together with the hot list.
const CHECKPOINT_MAX_BYTES: usize = 900 * 1024;

/// The live state of a task this worker owns.
pub struct Task {
    pub id: u32,
    /// In the order of `Topology::counters`.
    pub counters: Vec<TaskCounter>,
    pub malformed: u64,
}

/// One counter's state within a task.
pub struct TaskCounter {
    pub window: WindowCounter,
    /// The next offset not yet counted; -1 before the first event.
    pub next_offset: i64,
    /// Version of the `hot` znode last read or written; conditions the next publish.
    pub zk_version: Option<i32>,
    /// Offset of the last successful publish; nothing to publish while it equals
    /// `next_offset`.
    pub published_offset: Option<i64>,
}

impl TaskCounter {
    fn empty(counter: &Counter, zk_version: Option<i32>) -> TaskCounter {
        TaskCounter {
            window: WindowCounter::new(&counter.count),
            next_offset: -1,
            zk_version,
            published_offset: None,
        }
    }

    fn is_dirty(&self) -> bool {
        self.next_offset >= 0 && self.published_offset != Some(self.next_offset)
    }
}

/// Where a task starts counting.
pub enum Start {
    /// Resume from the checkpoints, at the lowest offset among them.
    Checkpoint(i64),
    /// No usable checkpoint: start from the group's committed offset (or the beginning).
    Committed,
}

/// A successful publish of all of a task's dirty counters.
pub struct Published {
    /// Offset every counter of the task has published up to: the group may commit it.
    pub offset: i64,
    pub items: usize,
    pub bytes: usize,
}

impl Task {
    /// Restores a task's counters from their last checkpoints, or starts them empty. Never
    /// fails for a bad checkpoint: it is logged and that counter restarts, which loses
    /// history but not events.
    pub async fn restore(zk: &Zk, counters: &[Counter], id: u32) -> Result<(Task, Start), ZkError> {
        let mut restored = Vec::with_capacity(counters.len());
        for counter in counters {
            let zk = zk.for_counter(&counter.name);
            zk.ensure_task(id).await?;
            let state = match zk.read_checkpoint(id).await? {
                None => TaskCounter::empty(counter, None),
                Some(saved) => match WindowCounter::restore(&counter.count, &saved.checkpoint) {
                    Ok(window) => {
                        let offset = saved.hot.offset;
                        tracing::info!(
                            task = id,
                            counter = %counter.name,
                            offset,
                            version = saved.version,
                            "restored from checkpoint"
                        );
                        TaskCounter {
                            window,
                            next_offset: offset,
                            zk_version: Some(saved.version),
                            published_offset: Some(offset),
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
            .filter(|c| c.published_offset.is_some())
            .map(|c| c.next_offset)
            .min()
            .map_or(Start::Committed, Start::Checkpoint);
        Ok((
            Task {
                id,
                counters: restored,
                malformed: 0,
            },
            start,
        ))
    }

    /// A task with no history, counting from the group's committed offset.
    pub fn empty(counters: &[Counter], id: u32) -> Task {
        Task {
            id,
            counters: counters
                .iter()
                .map(|c| TaskCounter::empty(c, None))
                .collect(),
            malformed: 0,
        }
    }

    /// The lowest offset the task's counters have not counted yet; -1 before any event.
    pub fn next_offset(&self) -> i64 {
        self.counters
            .iter()
            .map(|c| c.next_offset)
            .min()
            .unwrap_or(-1)
    }

    /// Whether events were counted since the last publish.
    pub fn is_dirty(&self) -> bool {
        self.counters.iter().any(TaskCounter::is_dirty)
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
            malformed: self.malformed,
            items: top.items,
        }
    }

    /// Writes the hot list and checkpoint of every dirty counter, each fenced on the version
    /// it last saw. Stops at the first failure; counters published before it stay published.
    pub async fn publish(
        &mut self,
        zk: &Zk,
        topology: &Topology,
        counters: &[Counter],
        owner: &str,
    ) -> Result<Published, ZkError> {
        let (mut items, mut bytes) = (0, 0);
        for (index, counter) in counters.iter().enumerate() {
            if !self.counters[index].is_dirty() {
                continue;
            }
            let seen = self.counters[index].zk_version;
            let version = seen.map_or(0, |v| i64::from(v) + 1);
            let list = self.hot_list(topology, counter, index, version, owner);
            let hot = serde_json::to_vec(&list).expect("hot list serializes");
            let state = &mut self.counters[index];
            let checkpoint = state.window.checkpoint(CHECKPOINT_MAX_BYTES);
            let version = zk
                .for_counter(&counter.name)
                .publish(self.id, seen, &hot, &checkpoint)
                .await?;
            state.zk_version = Some(version);
            state.published_offset = Some(state.next_offset);
            items += list.items.len();
            bytes += hot.len() + checkpoint.len();
        }
        let offset = self
            .counters
            .iter()
            .filter_map(|c| c.published_offset)
            .min()
            .unwrap_or(-1);
        Ok(Published {
            offset,
            items,
            bytes,
        })
    }
}
