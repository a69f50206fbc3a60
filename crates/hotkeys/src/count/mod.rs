//! Per-task counting over a rolling event-time window, in bounded memory.
//!
//! A [`WindowCounter`] splits `count.window` into `count.buckets` buckets by the events'
//! Kafka timestamps (so a replay yields the same lists) and keeps one bounded summary per
//! bucket, of the topology's algorithm:
//!
//! - [`SpaceSaving`] (default): error-bounded counts of the frequent keys, with TinyLFU
//!   admission so that floods of one-off keys cannot take the counters of hot ones (the
//!   `space_saving` and `sketch` modules; the window owns the frequency sketch);
//! - [`LruCounter`]: the original design, an LRU map of counters.
//!
//! The window advances when an event opens a newer bucket; the oldest falls out. At publish
//! time the buckets are merged into the top-N with, for Space-Saving, each item's error
//! bound and whether the list is provably exact. A window serializes to a compact
//! [`Checkpoint`], with the offset it reflects, so a new owner of the partition resumes
//! where the last checkpoint left off.
//!
//! Event time is the producer's clock, which may be wrong. Callers clamp timestamps too far
//! ahead of their own clock before [`WindowCounter::offer`] (hot-counter counts them as
//! `future`), and [`WindowCounter::repair_future`] fixes a window restored from a time when
//! they did not.

mod lru_counter;
mod sketch;
mod space_saving;

use std::collections::VecDeque;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::config::{Algorithm, CountConfig};
use crate::hotlist::HotItem;
use sketch::Frequency;

pub use lru_counter::LruCounter;
pub use space_saving::SpaceSaving;

/// One bucket's summary.
#[derive(Debug, Clone)]
enum Summary {
    SpaceSaving(SpaceSaving),
    Lru(LruCounter),
}

impl Summary {
    fn new(algorithm: Algorithm, capacity: usize) -> Summary {
        match algorithm {
            Algorithm::SpaceSaving => Summary::SpaceSaving(SpaceSaving::new(capacity)),
            Algorithm::Lru => Summary::Lru(LruCounter::new(capacity)),
        }
    }

    /// Counts one event of `key`; returns its guaranteed count in this bucket. `frequency`
    /// is the window's (Space-Saving only).
    #[inline]
    fn offer(&mut self, key: &str, frequency: &mut Option<Frequency>) -> u64 {
        match (self, frequency) {
            (Summary::SpaceSaving(s), Some(f)) => s.offer(key, 1, f),
            (Summary::SpaceSaving(_), None) => unreachable!("Space-Saving windows have one"),
            (Summary::Lru(l), _) => l.offer(key, 1),
        }
    }

    fn total(&self) -> u64 {
        match self {
            Summary::SpaceSaving(s) => s.total(),
            Summary::Lru(l) => l.total(),
        }
    }

    /// Upper bound of the count of a key this bucket does not hold.
    fn floor(&self) -> u64 {
        match self {
            Summary::SpaceSaving(s) => s.floor(),
            // LRU eviction forgets counts entirely: no bound exists.
            Summary::Lru(_) => 0,
        }
    }

    /// One summary of several buckets' counts: each key's counts and errors summed, the
    /// largest counts kept when they are more than the capacity.
    fn merge(algorithm: Algorithm, capacity: usize, parts: Vec<(i64, Summary)>) -> Summary {
        let total = parts.iter().map(|(_, s)| s.total()).sum();
        let mut floor: u64 = parts.iter().map(|(_, s)| s.floor()).sum();
        let mut sums: std::collections::HashMap<String, (u64, u64)> =
            std::collections::HashMap::new();
        for (_, part) in &parts {
            for (key, count, error) in part.entries() {
                let e = sums.entry(key).or_default();
                e.0 += count;
                e.1 += error;
            }
        }
        // Where a part does not monitor a key, its bound there is both count and error.
        let mut entries: Vec<(String, u64, u64)> = sums
            .into_iter()
            .map(|(key, (count, error))| {
                let bound: u64 = parts.iter().map(|(_, part)| part.bound(&key)).sum();
                (key, count + bound, error + bound)
            })
            .collect();
        entries.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        // A key left out may have had up to its summed count.
        floor += entries.get(capacity).map_or(0, |e| e.1);
        entries.truncate(capacity);
        match algorithm {
            Algorithm::SpaceSaving => {
                Summary::SpaceSaving(SpaceSaving::restore(capacity, entries, total, floor, None))
            }
            Algorithm::Lru => Summary::Lru(LruCounter::restore(
                capacity,
                entries.into_iter().map(|(k, c, _)| (k, c)).collect(),
                total,
            )),
        }
    }

    /// Upper bound of the sightings of `key` its counter does not hold (all of them when it
    /// has none); 0 for a monitored key.
    fn bound(&self, key: &str) -> u64 {
        match self {
            Summary::SpaceSaving(s) => s.bound(key),
            Summary::Lru(_) => 0,
        }
    }

    fn sketch_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Summary::SpaceSaving(s) => s.sketch_bytes(),
            Summary::Lru(_) => None,
        }
    }

    fn entries(&self) -> Vec<(String, u64, u64)> {
        match self {
            Summary::SpaceSaving(s) => s.entries().map(|(k, c, e)| (k.to_owned(), c, e)).collect(),
            Summary::Lru(l) => l.entries().map(|(k, c)| (k.to_owned(), c, 0)).collect(),
        }
    }
}

/// A task's counts over the rolling window.
#[derive(Debug, Clone)]
pub struct WindowCounter {
    algorithm: Algorithm,
    capacity: usize,
    buckets: usize,
    bucket_ms: i64,
    /// `(bucket number, summary)`, oldest first; bucket number = timestamp / bucket_ms.
    ring: VecDeque<(i64, Summary)>,
    /// Events older than the window when they arrived; not counted.
    late: u64,
    /// Space-Saving: recent frequencies of keys, for admission (`sketch` module docs).
    frequency: Option<Frequency>,
}

/// A merged view of the window, ready to become a hot list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    pub items: Vec<HotItem>,
    /// Whether guaranteed counts prove membership and order (Space-Saving only).
    pub exact: Option<bool>,
    /// Events inside the window.
    pub events: u64,
}

impl WindowCounter {
    pub fn new(config: &CountConfig) -> WindowCounter {
        let buckets = config.buckets as usize;
        WindowCounter {
            algorithm: config.algorithm,
            capacity: config.capacity,
            buckets,
            bucket_ms: (config.window.as_millis() as i64 / buckets as i64).max(1),
            ring: VecDeque::with_capacity(buckets + 1),
            late: 0,
            frequency: (config.algorithm == Algorithm::SpaceSaving)
                .then(|| Frequency::new(config.capacity)),
        }
    }

    /// Counts one event of `key` that happened at `timestamp_ms`. Returns the key's
    /// guaranteed count in that event's bucket afterwards (0 when the summary does not
    /// monitor it), or `None` when the event is older than the window (counted as late
    /// instead). The bucket's count is a lower bound of the window's, free to read here:
    /// hot-counter publishes at once when it crosses the task's entry bar.
    #[inline]
    pub fn offer(&mut self, key: &str, timestamp_ms: i64) -> Option<u64> {
        let bucket = timestamp_ms.div_euclid(self.bucket_ms);
        match self.ring.back_mut() {
            Some((newest, summary)) if *newest == bucket => {
                Some(summary.offer(key, &mut self.frequency))
            }
            _ => self.offer_slow(key, bucket),
        }
    }

    #[cold]
    fn offer_slow(&mut self, key: &str, bucket: i64) -> Option<u64> {
        let newest = self.ring.back().map(|(b, _)| *b);
        if newest.is_none_or(|n| bucket > n) {
            let mut summary = Summary::new(self.algorithm, self.capacity);
            let count = summary.offer(key, &mut self.frequency);
            self.ring.push_back((bucket, summary));
            let oldest_allowed = bucket - self.buckets as i64 + 1;
            while self.ring.front().is_some_and(|(b, _)| *b < oldest_allowed) {
                self.ring.pop_front();
            }
            return Some(count);
        }
        let newest = newest.unwrap_or(bucket);
        if bucket <= newest - self.buckets as i64 {
            self.late += 1;
            return None;
        }
        // An out-of-order event inside the window: find or open its bucket in place.
        let at = self.ring.partition_point(|(b, _)| *b < bucket);
        if self.ring.get(at).is_none_or(|(b, _)| *b != bucket) {
            self.ring
                .insert(at, (bucket, Summary::new(self.algorithm, self.capacity)));
        }
        Some(self.ring[at].1.offer(key, &mut self.frequency))
    }

    /// Events that arrived after their bucket had left the window.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Folds every bucket after the one holding `now_ms + max_future_ms` into the bucket of
    /// `now_ms`, as if their events had been clamped when counted; returns how many events
    /// moved. A single event stamped far ahead would otherwise keep every real event late
    /// until wall time caught up with it.
    pub fn repair_future(&mut self, now_ms: i64, max_future_ms: i64) -> u64 {
        let limit = (now_ms + max_future_ms).div_euclid(self.bucket_ms);
        if self.ring.back().is_none_or(|(b, _)| *b <= limit) {
            return 0;
        }
        let now_bucket = now_ms.div_euclid(self.bucket_ms);
        let mut moved = 0;
        let mut merged: Vec<(i64, Summary)> = Vec::new();
        self.ring.retain(|(b, s)| {
            let future = *b > limit;
            if future {
                moved += s.total();
            }
            if future || *b == now_bucket {
                merged.push((*b, s.clone()));
            }
            !(future || *b == now_bucket)
        });
        let summary = Summary::merge(self.algorithm, self.capacity, merged);
        let at = self.ring.partition_point(|(b, _)| *b < now_bucket);
        self.ring.insert(at, (now_bucket, summary));
        moved
    }

    /// Events inside the window.
    pub fn events(&self) -> u64 {
        self.ring.iter().map(|(_, s)| s.total()).sum()
    }

    /// Merges the buckets into the `n` keys with the highest guaranteed counts.
    ///
    /// For Space-Saving a key's reported count is its upper bound: the sum of its counts
    /// where monitored plus, where not, the bucket's bound for it; `error` is the distance
    /// to the guaranteed lower bound. Keys are ranked by that lower bound, the count that is
    /// proved, then by the upper bound: a key whose count is mostly error (admitted late on
    /// a large bound) cannot outrank one whose count is known. The list is exact when every
    /// item's lower bound is at least the upper bound of the item after it and of every key
    /// left out.
    pub fn top(&self, n: usize) -> Top {
        let floors: u64 = self.ring.iter().map(|(_, s)| s.floor()).sum();
        let mut all = self.bounds(floors);
        all.sort_unstable_by(by_proved_count);
        // The coarse bounds use each bucket's floor; the keys shown and the first one left
        // out get their own, finer bounds.
        let shown = all.len().min(n + 1);
        for item in &mut all[..shown] {
            let uncounted: u64 = self.ring.iter().map(|(_, s)| s.bound(item.0)).sum();
            item.1 = item.1.min(item.3 + uncounted);
        }
        all[..shown].sort_unstable_by(by_proved_count);
        let exact = match self.algorithm {
            Algorithm::Lru => None,
            Algorithm::SpaceSaving => {
                let kept = &all[..all.len().min(n)];
                let outside = all.iter().skip(n).map(|x| x.1).max().unwrap_or(0);
                let ordered = kept.windows(2).all(|w| w[0].2 >= w[1].1);
                let separated = kept.last().is_none_or(|last| last.2 >= outside.max(floors));
                Some(ordered && separated)
            }
        };
        all.truncate(n);
        Top {
            items: all
                .into_iter()
                .map(|(key, upper, lower, _)| HotItem {
                    key: key.to_owned(),
                    count: upper,
                    error: match self.algorithm {
                        Algorithm::SpaceSaving => Some(upper - lower),
                        Algorithm::Lru => None,
                    },
                })
                .collect(),
            exact,
            events: self.events(),
        }
    }

    /// `(key, upper, lower, monitored count)` of every key some bucket monitors, the upper
    /// bound counting the floors of the buckets where it is not monitored.
    fn bounds(&self, floors: u64) -> Vec<(&str, u64, u64, u64)> {
        let mut merged: hashbrown::HashMap<&str, (u64, u64, u64), foldhash::fast::RandomState> =
            hashbrown::HashMap::default();
        for (_, summary) in &self.ring {
            let floor = summary.floor();
            let mut add = |key, count: u64, error: u64| {
                let e = merged.entry(key).or_insert((0, 0, 0));
                e.0 += count;
                e.1 += count - error;
                e.2 += floor;
            };
            match summary {
                Summary::SpaceSaving(s) => s.entries().for_each(|(k, c, e)| add(k, c, e)),
                Summary::Lru(l) => l.entries().for_each(|(k, c)| add(k, c, 0)),
            }
        }
        merged
            .into_iter()
            .map(|(k, (count, lower, own_floors))| (k, count + floors - own_floors, lower, count))
            .collect()
    }

    /// The state to store beside a hot list, with `offset`, the next offset it does not
    /// include; `kind` says whether the frequency sketch goes with it. When the compressed
    /// form would exceed `max_bytes` (a znode holds at most 1 MB), the bound sketches of
    /// older buckets are left out first, then the frequency sketch, then the newest
    /// bucket's bound sketch, then buckets are trimmed to their largest counts. What is left
    /// out only loosens bounds (a bucket's floor is always kept) or admits keys more easily
    /// for a while after a restore.
    pub fn checkpoint(&self, offset: i64, max_bytes: usize, kind: CheckpointKind) -> Vec<u8> {
        let sketches: Vec<Option<String>> = self
            .ring
            .iter()
            .map(|(_, s)| s.sketch_bytes().map(|raw| pack_sketch(&raw)))
            .collect();
        let frequency = self
            .frequency
            .as_ref()
            .filter(|_| kind == CheckpointKind::Final)
            .map(|f| pack_sketch(&f.to_bytes()));
        let newest = self.ring.len().saturating_sub(1);
        let all = self.ring.len();
        let plans =
            [(all, true), (1, true), (1, false), (0, false)].map(|(b, f)| (b, f, self.capacity));
        let trims = std::iter::successors(Some(self.capacity / 2), |k| (*k > 1).then_some(k / 2));
        let mut plans = plans
            .into_iter()
            .chain(trims.map(|keep| (0, false, keep)))
            .peekable();
        while let Some((with_sketches, with_frequency, keep)) = plans.next() {
            let buckets =
                self.ring
                    .iter()
                    .zip(&sketches)
                    .enumerate()
                    .map(|(i, ((b, s), sketch))| {
                        let sketch = (i + with_sketches > newest)
                            .then(|| sketch.clone())
                            .flatten();
                        CheckpointBucket::of(*b, s, keep, sketch)
                    });
            let cp = Checkpoint {
                offset: Some(offset),
                algorithm: self.algorithm,
                capacity: self.capacity,
                bucket_ms: self.bucket_ms,
                late: self.late,
                frequency: frequency.clone().filter(|_| with_frequency),
                buckets: buckets.collect(),
            };
            let json = serde_json::to_vec(&cp).expect("checkpoint serializes");
            let packed = zstd::bulk::compress(&json, 3).expect("in-memory zstd cannot fail");
            if packed.len() <= max_bytes || plans.peek().is_none() {
                return packed;
            }
        }
        unreachable!("the plans end with keeping one entry")
    }

    /// Rebuilds a window from [`checkpoint`](Self::checkpoint) bytes, with the offset it
    /// was taken at (`None` from a checkpoint written before checkpoints carried one: it
    /// was then the offset of the hot list beside it). A checkpoint made with another
    /// algorithm, capacity or bucket size is refused: its counts would not mean the same
    /// thing.
    pub fn restore(
        config: &CountConfig,
        bytes: &[u8],
    ) -> Result<(WindowCounter, Option<i64>), CheckpointError> {
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(bytes)
            .and_then(|mut d| d.read_to_end(&mut json))
            .map_err(|e| CheckpointError(format!("not zstd: {e}")))?;
        let cp: Checkpoint =
            serde_json::from_slice(&json).map_err(|e| CheckpointError(e.to_string()))?;
        let mut window = WindowCounter::new(config);
        if cp.algorithm != window.algorithm
            || cp.capacity != window.capacity
            || cp.bucket_ms != window.bucket_ms
        {
            return Err(CheckpointError(format!(
                "made with {:?}/capacity {}/bucket {} ms, configured {:?}/{}/{} ms",
                cp.algorithm,
                cp.capacity,
                cp.bucket_ms,
                window.algorithm,
                window.capacity,
                window.bucket_ms
            )));
        }
        window.late = cp.late;
        if let Some(f) = cp.frequency.as_deref().and_then(unpack_sketch) {
            window.frequency = Frequency::from_bytes(cp.capacity, &f).or(window.frequency);
        }
        for b in cp.buckets {
            let bucket = b.bucket;
            let summary = restore_bucket(cp.algorithm, cp.capacity, b);
            window.ring.push_back((bucket, summary));
        }
        Ok((window, cp.offset))
    }
}

/// The summary of one checkpointed bucket.
fn restore_bucket(algorithm: Algorithm, capacity: usize, b: CheckpointBucket) -> Summary {
    match algorithm {
        Algorithm::SpaceSaving => {
            // Before floors were checkpointed, the smallest count was the floor.
            let floor = b.floor.unwrap_or_else(|| {
                let full = b.entries.len() >= capacity;
                full.then(|| b.entries.iter().map(|e| e.1).min())
                    .flatten()
                    .unwrap_or(0)
            });
            let sketch = b.sketch.as_deref().and_then(unpack_sketch);
            Summary::SpaceSaving(SpaceSaving::restore(
                capacity,
                b.entries,
                b.total,
                floor,
                sketch.as_deref(),
            ))
        }
        Algorithm::Lru => Summary::Lru(LruCounter::restore(
            capacity,
            b.entries.into_iter().map(|(k, c, _)| (k, c)).collect(),
            b.total,
        )),
    }
}

/// Higher guaranteed count first, then higher upper bound, then by key.
fn by_proved_count(a: &(&str, u64, u64, u64), b: &(&str, u64, u64, u64)) -> std::cmp::Ordering {
    b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(b.0))
}

/// What a checkpoint is for, which decides whether it carries the frequency sketch.
///
/// The frequency sketch only steers admission, and at the default capacity it is about a
/// third of a full window's checkpoint (120 KB after zstd, beside about 250 KB of counts
/// in `scripts/bench-latency.sh`). A periodic
/// checkpoint is only read after a crash, and a window restored without the sketch starts
/// it empty: until a key is seen again, a newcomer may replace the weakest counter of a
/// full bucket once, and the newcomer then holds the weakest counter itself, so a crawl
/// still only ever competes for that one. Every bound stays true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Every `count.checkpoint_every`: the counts and bound sketches, no frequency sketch.
    Periodic,
    /// At revoke and shutdown: everything, so a routine hand-over keeps admission as it
    /// was.
    Final,
}

/// A checkpoint that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable checkpoint: {0}")]
pub struct CheckpointError(String);

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    #[serde(default)]
    offset: Option<i64>,
    algorithm: Algorithm,
    capacity: usize,
    bucket_ms: i64,
    late: u64,
    /// Space-Saving: the window's frequency sketch, zstd-compressed, base64; absent when it
    /// did not fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frequency: Option<String>,
    buckets: Vec<CheckpointBucket>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointBucket {
    bucket: i64,
    total: u64,
    /// `[key, count, error]`.
    entries: Vec<(String, u64, u64)>,
    /// Space-Saving: the bound of every key not in `entries` (absent before admission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    floor: Option<u64>,
    /// Space-Saving: the bucket's sketches, zstd-compressed, base64; absent when they did
    /// not fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sketch: Option<String>,
}

impl CheckpointBucket {
    /// Bucket `bucket` with its `keep` largest counts, and `sketch` if given.
    fn of(bucket: i64, summary: &Summary, keep: usize, sketch: Option<String>) -> CheckpointBucket {
        let mut entries = summary.entries();
        let mut floor = summary.floor();
        if entries.len() > keep {
            entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.1));
            // A key trimmed away may have had up to its count.
            floor = floor.max(entries[keep].1);
            entries.truncate(keep);
        }
        let space_saving = matches!(summary, Summary::SpaceSaving(_));
        if space_saving {
            // Sorted keys share their prefixes with their neighbours, which zstd then
            // writes once: a fifth fewer bytes for numeric ids. An LRU's order is its
            // recency and stays.
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        CheckpointBucket {
            bucket,
            total: summary.total(),
            entries,
            floor: space_saving.then_some(floor),
            sketch,
        }
    }
}

fn pack_sketch(raw: &[u8]) -> String {
    use base64::Engine;
    let packed = zstd::bulk::compress(raw, 3).expect("in-memory zstd cannot fail");
    base64::engine::general_purpose::STANDARD.encode(packed)
}

/// `None` for a sketch that does not decode: the bucket then restores with its floor.
fn unpack_sketch(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let packed = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(packed.as_slice())
        .and_then(|mut d| d.read_to_end(&mut raw))
        .ok()?;
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(algorithm: Algorithm, capacity: usize) -> CountConfig {
        CountConfig {
            algorithm,
            capacity,
            window: Duration::from_secs(10),
            buckets: 10,
            top_n: 3,
            ..CountConfig::default()
        }
    }

    fn keys(top: &Top) -> Vec<(&str, u64)> {
        top.items
            .iter()
            .map(|i| (i.key.as_str(), i.count))
            .collect()
    }

    #[test]
    fn counts_merge_across_buckets_in_the_window() {
        let mut w = WindowCounter::new(&config(Algorithm::SpaceSaving, 10));
        for (k, t) in [("a", 0), ("a", 1500), ("b", 2500), ("a", 9999), ("b", 100)] {
            w.offer(k, t);
        }
        let top = w.top(3);
        assert_eq!(keys(&top), vec![("a", 3), ("b", 2)]);
        assert_eq!(top.exact, Some(true));
        assert_eq!(top.events, 5);
    }

    #[test]
    fn old_buckets_fall_out_as_event_time_advances() {
        let mut w = WindowCounter::new(&config(Algorithm::SpaceSaving, 10));
        w.offer("old", 0);
        w.offer("old", 500);
        w.offer("new", 10_000);
        assert_eq!(keys(&w.top(3)), vec![("new", 1)]);
        assert_eq!(w.offer("late", 0), None);
        assert_eq!(w.late(), 1);
    }

    #[test]
    fn offer_returns_the_keys_guaranteed_count_in_its_bucket() {
        let mut w = WindowCounter::new(&config(Algorithm::SpaceSaving, 2));
        for (key, expected) in [("a", 1), ("a", 2), ("b", 1), ("b", 2)] {
            assert_eq!(w.offer(key, 100), Some(expected));
        }
        // Full: "c" is refused (0) until it has been seen more often than the weakest
        // counter's key, then starts from a guaranteed 1 and counts up.
        let seen: Vec<u64> = (0..6).map(|_| w.offer("c", 200).unwrap()).collect();
        let admitted = seen.iter().position(|&c| c > 0).expect("c is admitted");
        assert!(admitted > 0, "{seen:?}");
        let counted: Vec<u64> = (1..=(6 - admitted) as u64).collect();
        assert_eq!(seen[admitted..], counted[..], "{seen:?}");
        // A new bucket counts from zero; an older one in the window is found in place.
        assert_eq!(w.offer("a", 1500), Some(1));
        assert_eq!(w.offer("a", 900), Some(3));
    }

    #[test]
    fn out_of_order_events_inside_the_window_are_counted() {
        let mut w = WindowCounter::new(&config(Algorithm::SpaceSaving, 10));
        w.offer("a", 5000);
        w.offer("a", 2000);
        w.offer("a", 5100);
        assert_eq!(keys(&w.top(1)), vec![("a", 3)]);
    }

    #[test]
    fn lru_counts_have_no_error_bound() {
        let mut w = WindowCounter::new(&config(Algorithm::Lru, 2));
        for k in ["a", "a", "b", "c"] {
            w.offer(k, 0);
        }
        let top = w.top(3);
        assert_eq!(keys(&top), vec![("b", 1), ("c", 1)]);
        assert_eq!(top.exact, None);
        assert!(top.items.iter().all(|i| i.error.is_none()));
    }

    #[test]
    fn list_is_not_exact_when_bounds_overlap() {
        let mut w = WindowCounter::new(&config(Algorithm::SpaceSaving, 1));
        for k in ["a", "a", "b", "b", "b"] {
            w.offer(k, 0);
        }
        let top = w.top(1);
        assert_eq!(top.items[0].key, "b");
        assert_eq!(top.exact, Some(false));
    }

    #[test]
    fn checkpoint_restores_the_same_top_and_keeps_counting() {
        let cfg = config(Algorithm::SpaceSaving, 100);
        let mut w = WindowCounter::new(&cfg);
        for i in 0..1000i64 {
            w.offer(&(i % 37).to_string(), i * 10);
        }
        let bytes = w.checkpoint(77, 1 << 20, CheckpointKind::Final);
        let (mut r, offset) = WindowCounter::restore(&cfg, &bytes).unwrap();
        assert_eq!(offset, Some(77));
        assert_eq!(r.top(10), w.top(10));
        w.offer("5", 9_999);
        r.offer("5", 9_999);
        assert_eq!(r.top(10), w.top(10));
    }

    /// Event `i` of a stream where 20 hot keys take one event in ten and a crawl of one-off
    /// keys the rest.
    fn hot_among_crawl(i: u64) -> String {
        match i % 10 {
            0 => format!("hot-{}", i / 10 % 20),
            _ => format!("crawl-{i}"),
        }
    }

    /// A window of capacity 50 after the stream's first `events`.
    fn crawled(events: u64) -> (CountConfig, WindowCounter) {
        let cfg = config(Algorithm::SpaceSaving, 50);
        let mut w = WindowCounter::new(&cfg);
        (0..events).for_each(|i| {
            w.offer(&hot_among_crawl(i), 0);
        });
        (cfg, w)
    }

    /// Feeds the stream's events `from..to` to both windows.
    fn go_on(windows: [&mut WindowCounter; 2], from: u64, to: u64) {
        for window in windows {
            (from..to).for_each(|i| {
                window.offer(&hot_among_crawl(i), 0);
            });
        }
    }

    #[test]
    fn a_checkpoint_carries_the_sketches_so_a_restored_window_goes_on_alike() {
        let (cfg, mut w) = crawled(20_000);
        let (mut r, _) =
            WindowCounter::restore(&cfg, &w.checkpoint(0, 1 << 20, CheckpointKind::Final)).unwrap();
        assert_eq!(r.top(20), w.top(20));
        go_on([&mut w, &mut r], 20_000, 40_000);
        let top = w.top(20);
        assert_eq!(r.top(20), top);
        assert!(
            top.items.iter().all(|i| i.key.starts_with("hot-")),
            "{top:?}"
        );
    }

    #[test]
    fn a_periodic_checkpoint_leaves_the_frequency_sketch_out_and_a_final_one_keeps_it() {
        let cfg = config(Algorithm::SpaceSaving, 50);
        let mut w = WindowCounter::new(&cfg);
        for i in 0..20_000u64 {
            w.offer(&format!("key-{}", i % 3_000), 0);
        }
        let periodic = w.checkpoint(0, 1 << 20, CheckpointKind::Periodic);
        let last = w.checkpoint(0, 1 << 20, CheckpointKind::Final);
        let (from_periodic, _) = WindowCounter::restore(&cfg, &periodic).unwrap();
        let (from_final, _) = WindowCounter::restore(&cfg, &last).unwrap();
        assert_eq!(from_final.frequency, w.frequency);
        assert_eq!(from_periodic.frequency, WindowCounter::new(&cfg).frequency);
        assert_eq!(from_periodic.top(20), w.top(20));
        assert!(
            periodic.len() < last.len(),
            "{} {}",
            periodic.len(),
            last.len()
        );
    }

    #[test]
    fn a_crawl_after_a_restore_without_the_frequency_sketch_keeps_the_hot_keys() {
        let (cfg, mut w) = crawled(20_000);
        let periodic = w.checkpoint(0, 1 << 20, CheckpointKind::Periodic);
        let (mut r, _) = WindowCounter::restore(&cfg, &periodic).unwrap();
        go_on([&mut w, &mut r], 20_000, 40_000);
        let (top, with_sketch) = (r.top(20), w.top(20));
        assert!(
            top.items.iter().all(|i| i.key.starts_with("hot-")),
            "{top:?}"
        );
        let counts = |t: &Top| {
            t.items
                .iter()
                .map(|i| (i.key.clone(), i.count))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&top), counts(&with_sketch));
    }

    #[test]
    fn a_full_bucket_of_10k_numeric_ids_checkpoints_in_under_32_kb() {
        use rand::{Rng, SeedableRng};
        // One task's share of scripts/bench-latency.sh: 500 events/s over a sixth of
        // 100,000 product ids, one bucket of 30 s at the default capacity.
        let cfg = CountConfig::default();
        let mut w = WindowCounter::new(&cfg);
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        for _ in 0..15_000 {
            w.offer(&(rng.random_range(0..16_667u64) * 6).to_string(), 0);
        }
        let bytes = w.checkpoint(0, 1 << 20, CheckpointKind::Periodic).len();
        let counters: usize = w.ring.iter().map(|(_, s)| s.entries().len()).sum();
        assert!(counters > 9_000, "{counters}");
        // 35 KB with the keys in the counters' order, 28 KB sorted.
        assert!(bytes < 32_000, "{bytes} B for {counters} counters");
    }

    #[test]
    fn oversized_checkpoint_keeps_the_largest_counts() {
        let cfg = config(Algorithm::SpaceSaving, 5000);
        let mut w = WindowCounter::new(&cfg);
        for i in 0..5000u64 {
            w.offer(&format!("key-{}", i * 7919 % 100_003), 0);
        }
        w.offer("hot", 0);
        w.offer("hot", 0);
        let bytes = w.checkpoint(0, 2_000, CheckpointKind::Final);
        assert!(bytes.len() <= 2_000, "{}", bytes.len());
        let (r, _) = WindowCounter::restore(&cfg, &bytes).unwrap();
        assert_eq!(r.top(1).items[0].key, "hot");
    }

    #[test]
    fn checkpoint_of_another_configuration_is_refused() {
        let mut w = WindowCounter::new(&config(Algorithm::SpaceSaving, 10));
        w.offer("a", 0);
        let bytes = w.checkpoint(0, 1 << 20, CheckpointKind::Final);
        let err = WindowCounter::restore(&config(Algorithm::Lru, 10), &bytes).unwrap_err();
        assert!(err.to_string().contains("configured"), "{err}");
        assert!(WindowCounter::restore(&config(Algorithm::Lru, 10), b"junk").is_err());
    }

    #[test]
    fn a_restored_bucket_from_the_future_is_folded_into_now_and_counting_goes_on() {
        let cfg = config(Algorithm::SpaceSaving, 10);
        let mut w = WindowCounter::new(&cfg);
        w.offer("real", 100_000);
        w.offer("real", 100_500);
        // 50 minutes ahead: every older bucket falls out, later real events would be late.
        w.offer("skewed", 100_000 + 3_000_000);
        let (mut r, _) =
            WindowCounter::restore(&cfg, &w.checkpoint(0, 1 << 20, CheckpointKind::Final)).unwrap();
        assert_eq!(r.repair_future(101_000, 1_000), 1);
        for _ in 0..3 {
            r.offer("real", 101_200);
        }
        assert_eq!(r.late(), 0);
        assert_eq!(keys(&r.top(3)), vec![("real", 3), ("skewed", 1)]);
        assert_eq!(r.repair_future(101_000, 1_000), 0);
    }

    #[test]
    fn repair_merges_future_buckets_with_the_current_one() {
        let cfg = config(Algorithm::Lru, 10);
        let mut w = WindowCounter::new(&cfg);
        w.offer("a", 5_000);
        w.offer("a", 7_000);
        w.offer("b", 8_000);
        assert_eq!(w.repair_future(5_200, 0), 2);
        assert_eq!(w.events(), 3);
        assert_eq!(keys(&w.top(3)), vec![("a", 2), ("b", 1)]);
    }
}
