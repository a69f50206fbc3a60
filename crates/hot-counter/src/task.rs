//! One task = one partition of the access topic: its window of counts, the offset the counts
//! reach, and its publish/restore cycle against ZooKeeper.

use hotkeys::Topology;
use hotkeys::count::WindowCounter;
use hotkeys::hotlist::{HotList, now_ms};
use hotkeys::zk::{Zk, ZkError};

/// Checkpoints stay well under ZooKeeper's 1 MB node limit together with the hot list.
const CHECKPOINT_MAX_BYTES: usize = 900 * 1024;

/// The live state of a task this worker owns.
pub struct Task {
    pub id: u32,
    pub counter: WindowCounter,
    /// The next offset not yet counted.
    pub next_offset: i64,
    /// Version of the `hot` znode last read or written; conditions the next publish.
    pub zk_version: Option<i32>,
    /// Offset of the last successful publish; nothing to publish while it equals
    /// `next_offset`.
    pub published_offset: Option<i64>,
    pub malformed: u64,
}

/// Where a task starts counting.
pub enum Start {
    /// Resume from a checkpoint at this offset.
    Checkpoint(i64),
    /// No usable checkpoint: start from the group's committed offset (or the beginning).
    Committed,
}

/// A successful publish.
pub struct Published {
    pub version: i32,
    pub offset: i64,
    pub items: usize,
    pub bytes: usize,
}

impl Task {
    /// Restores a task from its last checkpoint, or starts it empty. Never fails for a bad
    /// checkpoint: it is logged and counting restarts, which loses history but not events.
    pub async fn restore(zk: &Zk, topology: &Topology, id: u32) -> Result<(Task, Start), ZkError> {
        zk.ensure_task(id).await?;
        let Some(saved) = zk.read_checkpoint(id).await? else {
            return Ok((Task::empty(topology, id, None), Start::Committed));
        };
        match WindowCounter::restore(&topology.count, &saved.checkpoint) {
            Ok(counter) => {
                let offset = saved.hot.offset;
                tracing::info!(
                    task = id,
                    offset,
                    version = saved.version,
                    "restored task from checkpoint"
                );
                Ok((
                    Task {
                        id,
                        counter,
                        next_offset: offset,
                        zk_version: Some(saved.version),
                        published_offset: Some(offset),
                        malformed: 0,
                    },
                    Start::Checkpoint(offset),
                ))
            }
            Err(e) => {
                tracing::warn!(task = id, error = %e, "ignoring checkpoint; counting restarts");
                Ok((
                    Task::empty(topology, id, Some(saved.version)),
                    Start::Committed,
                ))
            }
        }
    }

    /// A task with no history, counting from the group's committed offset.
    pub fn empty(topology: &Topology, id: u32, zk_version: Option<i32>) -> Task {
        Task {
            id,
            counter: WindowCounter::new(&topology.count),
            next_offset: -1,
            zk_version,
            published_offset: None,
            malformed: 0,
        }
    }

    /// Whether events were counted since the last publish.
    pub fn is_dirty(&self) -> bool {
        self.next_offset >= 0 && self.published_offset != Some(self.next_offset)
    }

    /// The hot list this task would publish now, as `version`.
    pub fn hot_list(&self, topology: &Topology, version: i64, owner: &str) -> HotList {
        let top = self.counter.top(topology.count.top_n);
        HotList {
            topology: topology.name.clone(),
            task: self.id,
            version,
            generated_at_ms: now_ms(),
            window_ms: topology.count.window.as_millis() as u64,
            offset: self.next_offset,
            exact: top.exact,
            owner: Some(owner.to_string()),
            events: top.events,
            malformed: self.malformed,
            items: top.items,
        }
    }

    /// Writes the hot list and checkpoint, fenced on the version this task last saw.
    pub async fn publish(
        &mut self,
        zk: &Zk,
        topology: &Topology,
        owner: &str,
    ) -> Result<Published, ZkError> {
        let version = self.zk_version.map_or(0, |v| i64::from(v) + 1);
        let list = self.hot_list(topology, version, owner);
        let hot = serde_json::to_vec(&list).expect("hot list serializes");
        let checkpoint = self.counter.checkpoint(CHECKPOINT_MAX_BYTES);
        let version = zk
            .publish(self.id, self.zk_version, &hot, &checkpoint)
            .await?;
        self.zk_version = Some(version);
        self.published_offset = Some(self.next_offset);
        Ok(Published {
            version,
            offset: self.next_offset,
            items: list.items.len(),
            bytes: hot.len() + checkpoint.len(),
        })
    }
}
