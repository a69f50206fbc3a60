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
//! nothing is lost or counted twice.
//!
//! The rule that keeps the published state moving forward: a counter writes nothing to its
//! hot node (no list, no checkpoint, whatever asked for the write: a tick, a checkpoint
//! round, a revoke or shutdown) until it has re-counted up to the offset of the hot list it
//! found ([`TaskCounter::held_back`]). Readers therefore never see a task's offset go back.
//!
//! A hot list found without a usable checkpoint beside it (the checkpoint deleted, or
//! unreadable) is taken over: the counter re-counts its window from Kafka, keeps the
//! hot node's version for fencing, and creates the checkpoint with its first write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hotkeys::Topology;
use hotkeys::config::Counter;
use hotkeys::count::{CheckpointKind, WindowCounter};
use hotkeys::event::KeyError;
use hotkeys::hotlist::{HotList, now_ms};
use hotkeys::zk::{REQUEST_MAX_BYTES, Restorable, Zk, ZkError};

use crate::entry::EntryBar;

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
    /// A key entered a counter's top N (or crossed its rule) since the last publish: the
    /// task publishes without waiting for the periodic round (see `entry`).
    pub entered: bool,
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
    /// The hot node exists without its checkpoint: the next write takes over the node's
    /// version and creates the checkpoint beside it.
    pub checkpoint_missing: bool,
    /// Re-count from the first event at or after this time (Unix ms), the start of the
    /// window: the counts behind the hot list found had no usable checkpoint.
    pub recount_since_ms: Option<i64>,
    /// When a counted key makes the task publish at once; from the last published list.
    pub entry: EntryBar,
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
            checkpoint_missing: false,
            recount_since_ms: None,
            entry: EntryBar::empty(counter),
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

    /// The counter's state from what ZooKeeper holds for it (`saved`, read at `now_ms`): its
    /// checkpoint, or a take-over of a hot list whose checkpoint is missing or unreadable.
    /// Either way nothing is published before the counts are back at the list found.
    fn restored(
        counter: &Counter,
        task: u32,
        saved: Option<Restorable>,
        now_ms: i64,
        max_future_ms: i64,
    ) -> TaskCounter {
        let Some(saved) = saved else {
            return TaskCounter::empty(counter, None);
        };
        let name = &counter.name;
        let found = saved.hot.offset;
        let restored = match &saved.checkpoint {
            Some(bytes) => WindowCounter::restore(&counter.count, bytes),
            None => {
                tracing::warn!(task, counter = %name, offset = found, version = saved.version,
                    "no checkpoint beside the hot list; re-counting the window and taking over the list's version");
                return TaskCounter::taking_over(counter, &saved, now_ms);
            }
        };
        match restored {
            Ok((mut window, offset)) => {
                let offset = offset.unwrap_or(found);
                let repaired = window.repair_future(now_ms, max_future_ms);
                if repaired > 0 {
                    tracing::warn!(task, counter = %name, events = repaired,
                        "checkpoint held events stamped in the future; counted as now");
                }
                tracing::info!(task, counter = %name, offset, version = saved.version,
                    "restored from checkpoint");
                TaskCounter {
                    window,
                    next_offset: offset,
                    zk_version: Some(saved.version),
                    published_offset: Some(offset),
                    checkpointed_offset: Some(offset),
                    resume_at: found,
                    checkpoint_missing: false,
                    recount_since_ms: None,
                    entry: EntryBar::after(counter, &saved.hot.items),
                    malformed: 0,
                    key_too_long: 0,
                }
            }
            Err(e) => {
                tracing::warn!(task, counter = %name, error = %e, offset = found,
                    "ignoring an unreadable checkpoint; re-counting the window");
                TaskCounter::taking_over(counter, &saved, now_ms)
            }
        }
    }

    /// Takes over the hot list in `saved` without its counts: re-count the window, publish
    /// from the list's offset on, under its version.
    fn taking_over(counter: &Counter, saved: &Restorable, now_ms: i64) -> TaskCounter {
        TaskCounter {
            resume_at: saved.hot.offset,
            checkpoint_missing: saved.checkpoint.is_none(),
            recount_since_ms: Some(now_ms - counter.count.window.as_millis() as i64),
            entry: EntryBar::after(counter, &saved.hot.items),
            ..TaskCounter::empty(counter, Some(saved.version))
        }
    }

    /// Re-counting towards the hot list found at restore: any write now, of the list or of
    /// the checkpoint, would take the task's published offset back.
    pub fn held_back(&self) -> bool {
        self.next_offset < self.resume_at
    }

    fn has_news(&self) -> bool {
        self.next_offset >= 0
            && !self.held_back()
            && self.published_offset != Some(self.next_offset)
    }

    fn needs_checkpoint(&self) -> bool {
        self.next_offset >= 0
            && !self.held_back()
            && (self.zk_version.is_none()
                || self.checkpoint_missing
                || self.checkpointed_offset != Some(self.next_offset))
    }
}

/// Where a task starts counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Resume from the checkpoints, at the lowest offset among them.
    Checkpoint(i64),
    /// A counter took over a hot list without its checkpoint: from the first event at
    /// `since_ms` (the start of its window), or from `checkpoint` (the other counters'
    /// lowest) when that is earlier.
    Window {
        since_ms: i64,
        checkpoint: Option<i64>,
    },
    /// Nothing published yet: start from the group's committed offset (or the beginning).
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
    /// Create the checkpoint beside the existing hot node (see [`Zk::adopt`]).
    adopt: bool,
    hot: Vec<u8>,
    checkpoint: Option<Vec<u8>>,
    /// The next offset the written counts do not include.
    pub offset: i64,
    pub items: usize,
    /// The counter's entry bar once this list is published.
    entry: EntryBar,
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
            match (self.seen, &self.checkpoint) {
                (Some(seen), Some(checkpoint)) if self.adopt => {
                    zk.adopt(self.task, seen, &self.hot, checkpoint).await
                }
                (seen, checkpoint) => {
                    zk.publish(self.task, seen, &self.hot, checkpoint.as_deref())
                        .await
                }
            }
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
            entered: false,
        }
    }

    /// Restores a task's counters from their last checkpoints, or starts them empty. Never
    /// fails for a bad or missing checkpoint: that counter re-counts its window (see
    /// [`TaskCounter::restored`]). A checkpoint holding buckets beyond `max_future_ms` from
    /// now (written before the clamp existed, or by a worker with a skewed clock) is
    /// repaired.
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
            let saved = zk.read_checkpoint(id).await?;
            restored.push(TaskCounter::restored(
                counter,
                id,
                saved,
                now_ms(),
                max_future_ms,
            ));
        }
        let task = Task::new(id, restored);
        let start = task.start();
        Ok((task, start))
    }

    /// Where the restored counters need the partition read from.
    pub fn start(&self) -> Start {
        let checkpoint = self
            .counters
            .iter()
            .filter(|c| c.checkpointed_offset.is_some())
            .map(|c| c.next_offset)
            .min();
        let since = self
            .counters
            .iter()
            .filter_map(|c| c.recount_since_ms)
            .min();
        match (since, checkpoint) {
            (Some(since_ms), checkpoint) => Start::Window {
                since_ms,
                checkpoint,
            },
            (None, Some(offset)) => Start::Checkpoint(offset),
            (None, None) => Start::Committed,
        }
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
    /// `checkpoint` is asked or the hot node must be created (then as a periodic one). The
    /// hot list is bounded by `hotlist::MAX_BYTES`; the checkpoint gets what is left of one
    /// ZooKeeper request.
    pub fn prepare(
        &self,
        topology: &Topology,
        counters: &[Counter],
        owner: &str,
        checkpoint: Option<CheckpointKind>,
    ) -> Vec<Write> {
        let mut writes = Vec::new();
        for (index, counter) in counters.iter().enumerate() {
            let state = &self.counters[index];
            let creating = state.zk_version.is_none() || state.checkpoint_missing;
            let kind = checkpoint
                .or(creating.then_some(CheckpointKind::Periodic))
                .filter(|_| state.needs_checkpoint());
            if !state.has_news() && kind.is_none() {
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
            let checkpoint = kind.map(|kind| {
                let room = REQUEST_MAX_BYTES - hot.len();
                state.window.checkpoint(state.next_offset, room, kind)
            });
            writes.push(Write {
                task: self.id,
                epoch: self.epoch,
                counter: index,
                counter_name: counter.name.clone(),
                seen,
                adopt: state.checkpoint_missing && seen.is_some(),
                hot,
                checkpoint,
                offset: state.next_offset,
                items: list.items.len(),
                entry: EntryBar::after(counter, &list.items),
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
                state.entry = write.entry.clone();
                if write.has_checkpoint() {
                    state.checkpointed_offset = Some(write.offset);
                    state.checkpoint_missing = false;
                }
            }
            Err(ZkError::Gone { .. }) => {
                state.zk_version = None;
                state.published_offset = None;
                state.checkpointed_offset = None;
                state.checkpoint_missing = false;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The restore / re-count / publish rules as a state machine, driven without servers:
    //! what ZooKeeper held goes in as a [`Restorable`], counting moves `next_offset`, and
    //! [`Task::prepare`] says what any publish path (tick, checkpoint round, revoke,
    //! shutdown) would write.

    use super::*;
    use crate::entry::ENTRY_MIN_COUNT;
    use crate::entry::tests::items;

    const NOW: i64 = 1_700_000_000_000;
    const OWNER: &str = "test:1";

    fn topology() -> Topology {
        Topology::default()
    }

    fn counter() -> Counter {
        topology().counters().remove(0)
    }

    /// What a worker would have found: a hot list at `hot_offset`, version `version`, and
    /// a checkpoint taken at `checkpoint_offset` (none when `None`).
    fn saved(hot_offset: i64, version: i32, checkpoint_offset: Option<i64>) -> Restorable {
        let c = counter();
        let checkpoint = checkpoint_offset.map(|offset| {
            let mut window = WindowCounter::new(&c.count);
            window.offer("k", NOW);
            window.checkpoint(offset, REQUEST_MAX_BYTES, CheckpointKind::Final)
        });
        Restorable {
            hot: HotList {
                offset: hot_offset,
                ..HotList::default()
            },
            checkpoint,
            version,
        }
    }

    fn restored(saved: Option<Restorable>) -> Task {
        let state = TaskCounter::restored(&counter(), 0, saved, NOW, 30_000);
        Task::new(0, vec![state])
    }

    /// Counts events up to (not including) `next`.
    fn count_to(task: &mut Task, next: i64) {
        let state = &mut task.counters[0];
        state.window.offer("k", NOW);
        state.next_offset = next;
    }

    /// What every publish path would write, as (offset, checkpoint?, adopt?, seen).
    fn writes(task: &Task, checkpoint: bool) -> Vec<(i64, bool, bool, Option<i32>)> {
        let kind = checkpoint.then_some(CheckpointKind::Periodic);
        task.prepare(&topology(), &topology().counters(), OWNER, kind)
            .iter()
            .map(|w| (w.offset, w.has_checkpoint(), w.adopt, w.seen))
            .collect()
    }

    fn succeed(task: &mut Task, checkpoint: bool) {
        let kind = checkpoint.then_some(CheckpointKind::Periodic);
        for w in task.prepare(&topology(), &topology().counters(), OWNER, kind) {
            let version = w.seen.map_or(0, |v| v + 1);
            task.apply(&w, &Ok(version));
        }
    }

    #[test]
    fn nothing_published_starts_from_the_committed_offset_and_creates_the_node() {
        let mut task = restored(None);
        assert_eq!(task.start(), Start::Committed);
        assert!(writes(&task, true).is_empty(), "nothing counted yet");
        count_to(&mut task, 10);
        assert_eq!(writes(&task, false), [(10, true, false, None)]);
        succeed(&mut task, false);
        assert_eq!(task.checkpointed_offset(), Some(10));
    }

    #[test]
    fn a_re_count_behind_the_list_found_writes_nothing_on_any_path() {
        let mut task = restored(Some(saved(5_000, 7, Some(1_000))));
        assert_eq!(task.start(), Start::Checkpoint(1_000));
        count_to(&mut task, 3_000);
        assert!(task.counters[0].held_back());
        assert!(!task.has_news(false) && !task.has_news(true));
        assert!(writes(&task, false).is_empty(), "tick");
        assert!(
            writes(&task, true).is_empty(),
            "checkpoint round, revoke, shutdown"
        );
    }

    #[test]
    fn back_at_the_list_found_the_task_publishes_forward_under_the_next_version() {
        let mut task = restored(Some(saved(5_000, 7, Some(1_000))));
        count_to(&mut task, 5_000);
        assert!(!task.counters[0].held_back());
        assert_eq!(writes(&task, false), [(5_000, false, false, Some(7))]);
        assert_eq!(writes(&task, true), [(5_000, true, false, Some(7))]);
        succeed(&mut task, true);
        assert_eq!(task.counters[0].zk_version, Some(8));
        assert_eq!(task.checkpointed_offset(), Some(5_000));
        assert!(writes(&task, true).is_empty(), "nothing new");
    }

    #[test]
    fn a_missing_checkpoint_re_counts_the_window_and_takes_over_the_version() {
        let mut task = restored(Some(saved(5_000, 7, None)));
        let window_ms = counter().count.window.as_millis() as i64;
        assert_eq!(
            task.start(),
            Start::Window {
                since_ms: NOW - window_ms,
                checkpoint: None
            }
        );
        count_to(&mut task, 4_999);
        assert!(
            writes(&task, true).is_empty(),
            "still behind the list found"
        );
        count_to(&mut task, 5_000);
        assert_eq!(
            writes(&task, false),
            [(5_000, true, true, Some(7))],
            "the first write creates the checkpoint beside the list it takes over"
        );
        succeed(&mut task, false);
        let state = &task.counters[0];
        assert!(!state.checkpoint_missing);
        assert_eq!(state.zk_version, Some(8));
        count_to(&mut task, 5_100);
        assert_eq!(writes(&task, true), [(5_100, true, false, Some(8))]);
    }

    #[test]
    fn an_unreadable_checkpoint_is_rewritten_in_place_after_the_re_count() {
        let mut broken = saved(5_000, 7, Some(1_000));
        broken.checkpoint = Some(b"not zstd".to_vec());
        let mut task = restored(Some(broken));
        assert!(matches!(
            task.start(),
            Start::Window {
                checkpoint: None,
                ..
            }
        ));
        count_to(&mut task, 2_000);
        assert!(writes(&task, true).is_empty());
        count_to(&mut task, 5_001);
        assert_eq!(writes(&task, false), [(5_001, false, false, Some(7))]);
        assert_eq!(writes(&task, true), [(5_001, true, false, Some(7))]);
    }

    #[test]
    fn a_node_deleted_under_the_task_is_created_again_with_a_checkpoint() {
        let mut task = restored(Some(saved(100, 3, Some(100))));
        count_to(&mut task, 150);
        let write = task
            .prepare(&topology(), &topology().counters(), OWNER, None)
            .remove(0);
        task.apply(
            &write,
            &Err(ZkError::Gone {
                path: "/x/hot".into(),
            }),
        );
        assert_eq!(writes(&task, false), [(150, true, false, None)]);
    }

    #[test]
    fn a_failed_write_changes_nothing_and_is_written_again() {
        let mut task = restored(Some(saved(100, 3, Some(100))));
        count_to(&mut task, 150);
        let before = writes(&task, true);
        let write = task
            .prepare(
                &topology(),
                &topology().counters(),
                OWNER,
                Some(CheckpointKind::Periodic),
            )
            .remove(0);
        task.apply(&write, &Err(ZkError::Timeout));
        assert_eq!(writes(&task, true), before);
        assert_eq!(task.checkpointed_offset(), Some(100));
    }

    #[test]
    fn the_lowest_counter_decides_where_a_task_with_a_lost_checkpoint_starts() {
        let c = counter();
        let with_checkpoint = TaskCounter::restored(&c, 0, Some(saved(900, 2, Some(800))), NOW, 0);
        let without = TaskCounter::restored(&c, 0, Some(saved(900, 2, None)), NOW, 0);
        let task = Task::new(0, vec![with_checkpoint, without]);
        assert!(matches!(
            task.start(),
            Start::Window {
                checkpoint: Some(800),
                ..
            }
        ));
    }

    #[test]
    fn an_empty_task_has_counted_nothing_and_starts_from_the_committed_offset() {
        let task = Task::empty(&topology().counters(), 4);
        assert_eq!(task.id, 4);
        assert_eq!(task.start(), Start::Committed);
        assert_eq!(task.next_offset(), -1);
        assert_eq!(task.checkpointed_offset(), None);
        assert!(!task.has_news(true));
    }

    #[test]
    fn every_task_made_is_a_new_epoch() {
        let first = Task::empty(&topology().counters(), 0);
        let again = restored(None);
        assert_ne!(first.epoch, again.epoch);
    }

    #[test]
    fn skipped_events_count_as_malformed_and_over_long_keys_also_as_too_long() {
        let mut task = restored(None);
        let state = &mut task.counters[0];
        state.skip(&KeyError::Missing);
        state.skip(&KeyError::NotJson("<html>".into()));
        state.skip(&KeyError::TooLong {
            bytes: 300,
            limit: 256,
        });
        assert_eq!((state.malformed, state.key_too_long), (3, 1));
        let list = task.hot_list(&topology(), &counter(), 0, 0, OWNER);
        assert_eq!((list.malformed, list.key_too_long), (3, 1));
    }

    #[test]
    fn a_restored_task_counts_skips_from_zero() {
        let task = restored(Some(saved(100, 3, Some(100))));
        let state = &task.counters[0];
        assert_eq!((state.malformed, state.key_too_long), (0, 0));
    }

    #[test]
    fn a_restored_counter_takes_its_entry_bar_from_the_list_found() {
        let mut found = saved(100, 3, Some(100));
        found.hot.items = items(&[("a", 9), ("b", 4)]);
        let from_checkpoint = restored(Some(found.clone()));
        found.checkpoint = None;
        let taken_over = restored(Some(found));
        for task in [from_checkpoint, taken_over] {
            let entry = &task.counters[0].entry;
            assert!(
                !entry.passed("a", ENTRY_MIN_COUNT),
                "a listed key does not enter again"
            );
            assert!(
                entry.passed("c", ENTRY_MIN_COUNT),
                "the list is not full: any new key enters"
            );
        }
    }

    #[test]
    fn a_published_list_becomes_the_entry_bar_and_a_failed_write_keeps_the_old_one() {
        let mut task = restored(None);
        count_to(&mut task, 10);
        let write = task
            .prepare(&topology(), &topology().counters(), OWNER, None)
            .remove(0);
        task.apply(&write, &Err(ZkError::Timeout));
        let entry = |task: &Task| task.counters[0].entry.passed("k", ENTRY_MIN_COUNT);
        assert!(entry(&task), "k is not listed yet");
        task.apply(&write, &Ok(0));
        assert!(!entry(&task), "k is listed now");
    }

    #[test]
    fn a_tick_publishes_the_list_alone_and_the_checkpoint_round_adds_the_checkpoint() {
        let mut task = restored(Some(saved(100, 3, Some(100))));
        count_to(&mut task, 150);
        assert_eq!(writes(&task, false), [(150, false, false, Some(3))]);
        succeed(&mut task, false);
        assert!(!task.has_news(false), "the list is published");
        assert!(task.has_news(true), "the checkpoint still lags");
        assert_eq!(task.checkpointed_offset(), Some(100));
        assert_eq!(writes(&task, true), [(150, true, false, Some(4))]);
        succeed(&mut task, true);
        assert!(!task.has_news(true));
        assert_eq!(task.checkpointed_offset(), Some(150));
    }

    #[test]
    fn a_periodic_checkpoint_is_lighter_than_the_final_one_of_a_hand_over() {
        let mut task = restored(Some(saved(100, 3, Some(100))));
        for i in 0..5_000 {
            task.counters[0].window.offer(&format!("key-{i}"), NOW);
        }
        task.counters[0].next_offset = 5_100;
        let bytes = |kind| {
            let writes = task.prepare(&topology(), &topology().counters(), OWNER, Some(kind));
            writes.iter().map(Write::bytes).sum::<usize>()
        };
        let (periodic, last) = (
            bytes(CheckpointKind::Periodic),
            bytes(CheckpointKind::Final),
        );
        assert!(periodic < last, "periodic {periodic} B, final {last} B");
    }

    #[test]
    fn a_task_of_several_counters_resumes_from_the_lowest_checkpoint() {
        let c = counter();
        let ahead = TaskCounter::restored(&c, 0, Some(saved(900, 2, Some(900))), NOW, 0);
        let behind = TaskCounter::restored(&c, 0, Some(saved(700, 5, Some(600))), NOW, 0);
        let task = Task::new(0, vec![ahead, behind]);
        assert_eq!(task.start(), Start::Checkpoint(600));
        assert_eq!(task.next_offset(), 600);
        assert_eq!(task.checkpointed_offset(), Some(600));
    }

    #[test]
    fn a_counter_without_history_reads_from_the_others_checkpoint_but_holds_back_the_commit() {
        let c = counter();
        let checkpointed = TaskCounter::restored(&c, 0, Some(saved(900, 2, Some(900))), NOW, 0);
        let fresh = TaskCounter::restored(&c, 0, None, NOW, 0);
        let task = Task::new(0, vec![checkpointed, fresh]);
        assert_eq!(task.start(), Start::Checkpoint(900));
        assert_eq!(task.next_offset(), -1);
        assert_eq!(task.checkpointed_offset(), None);
    }

    #[test]
    fn a_checkpoint_holding_future_events_is_restored_with_them_counted_as_now() {
        let c = counter();
        let mut window = WindowCounter::new(&c.count);
        window.offer("k", NOW + 3_600_000);
        let found = Restorable {
            hot: HotList {
                offset: 100,
                ..HotList::default()
            },
            checkpoint: Some(window.checkpoint(100, REQUEST_MAX_BYTES, CheckpointKind::Final)),
            version: 1,
        };
        let mut state = TaskCounter::restored(&c, 0, Some(found), NOW, 30_000);
        assert_eq!(state.window.events(), 1);
        assert!(
            state.window.offer("k", NOW).is_some(),
            "an event of now is not late"
        );
        assert_eq!(state.window.late(), 0);
    }

    #[test]
    fn a_secondary_counters_hot_list_names_its_counter_and_the_primarys_does_not() {
        let primary = counter();
        let secondary = Counter {
            name: "ip".into(),
            primary: false,
            ..counter()
        };
        let task = restored(None);
        let list = |c: &Counter| task.hot_list(&topology(), c, 0, 0, OWNER).counter;
        assert_eq!(list(&primary), None);
        assert_eq!(list(&secondary).as_deref(), Some("ip"));
    }
}
