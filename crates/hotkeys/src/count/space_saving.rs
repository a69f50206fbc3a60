//! Space-Saving (Metwally, Agrawal, El Abbadi 2005) over a fixed number of counters.
//!
//! Every key whose true count exceeds `total / capacity` is guaranteed to be monitored, and
//! each monitored count overestimates the truth by at most its recorded `error`.
//!
//! Unmonitored keys first go through a filter of `FILTER_RATIO × capacity` hashed counters
//! (Filtered Space-Saving, Homem & Carvalho 2010): a key replaces the minimum only once its
//! filter cell says it could have reached that minimum. The long tail then churns the
//! filter instead of the monitored list, which keeps the error bounds of the frequent keys
//! small; the guarantees of Space-Saving are unchanged (a cell bounds the count of every
//! unmonitored key hashed to it, and never exceeds the minimum).
//!
//! The "Stream-Summary" of the paper is realised as an indexed binary min-heap: the key with
//! the smallest count sits at the root, ready to be replaced. An increment only ever moves a
//! counter towards the leaves, and hot keys live at the leaves, so the common case is O(1).
//! Keys are stored once, in `keys`; the hash table holds only slot numbers, so an eviction
//! reuses the evicted key's string buffer instead of allocating.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Filter cells per monitored counter.
const FILTER_RATIO: usize = 4;

/// One bucket's worth of Space-Saving counters.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: usize,
    hasher: foldhash::fast::FixedState,
    /// Slot numbers, looked up by the hash of `keys[slot]`.
    index: HashTable<u32>,
    keys: Vec<String>,
    counts: Vec<u64>,
    errors: Vec<u64>,
    /// Slots ordered as a min-heap by count.
    heap: Vec<u32>,
    /// Position of each slot in `heap`.
    pos: Vec<u32>,
    /// Upper bounds of the counts of unmonitored keys, by hash; allocated once full.
    filter: Vec<u64>,
    total: u64,
}

impl SpaceSaving {
    pub fn new(capacity: usize) -> SpaceSaving {
        assert!(capacity > 0 && capacity < u32::MAX as usize);
        SpaceSaving {
            capacity,
            hasher: foldhash::fast::FixedState::default(),
            index: HashTable::new(),
            keys: Vec::new(),
            counts: Vec::new(),
            errors: Vec::new(),
            heap: Vec::new(),
            pos: Vec::new(),
            filter: Vec::new(),
            total: 0,
        }
    }

    /// Counts `n` occurrences of `key`; returns its guaranteed count (`count - error`)
    /// afterwards, 0 when it is not monitored.
    pub fn offer(&mut self, key: &str, n: u64) -> u64 {
        self.total += n;
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        if let Some(&slot) = self.index.find(hash, |&s| keys[s as usize] == key) {
            let s = slot as usize;
            self.counts[s] += n;
            let guaranteed = self.counts[s] - self.errors[s];
            self.sift_down(self.pos[s] as usize);
            return guaranteed;
        }
        if self.keys.len() < self.capacity {
            let slot = self.keys.len() as u32;
            self.keys.push(key.to_owned());
            self.counts.push(n);
            self.errors.push(0);
            self.heap.push(slot);
            self.pos.push(slot);
            self.insert_index(hash, slot);
            self.sift_up(slot as usize);
            return n;
        }
        if self.filter.is_empty() {
            self.filter = vec![0; self.capacity * FILTER_RATIO];
        }
        let cell = (hash % self.filter.len() as u64) as usize;
        let min = self.counts[self.heap[0] as usize];
        if self.filter[cell] + n < min {
            self.filter[cell] += n;
            return 0;
        }
        // Replace the minimum: the newcomer's bound is its filter cell; the evicted key's
        // count goes to its own cell, which keeps bounding it.
        let slot = self.heap[0];
        let s = slot as usize;
        let old_hash = self.hasher.hash_one(self.keys[s].as_str());
        let old_cell = (old_hash % self.filter.len() as u64) as usize;
        let inherited = self.filter[cell];
        if let Ok(entry) = self.index.find_entry(old_hash, |&x| x == slot) {
            entry.remove();
        }
        self.filter[old_cell] = self.filter[old_cell].max(self.counts[s]);
        self.keys[s].clear();
        self.keys[s].push_str(key);
        self.errors[s] = inherited;
        self.counts[s] = inherited + n;
        self.insert_index(hash, slot);
        self.sift_down(0);
        n
    }

    fn insert_index(&mut self, hash: u64, slot: u32) {
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.index
            .insert_unique(hash, slot, |&s| hasher.hash_one(keys[s as usize].as_str()));
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.count_at(parent) <= self.count_at(i) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let len = self.heap.len();
        loop {
            let left = 2 * i + 1;
            if left >= len {
                return;
            }
            let right = left + 1;
            let child = if right < len && self.count_at(right) < self.count_at(left) {
                right
            } else {
                left
            };
            if self.count_at(i) <= self.count_at(child) {
                return;
            }
            self.swap(i, child);
            i = child;
        }
    }

    #[inline]
    fn count_at(&self, heap_index: usize) -> u64 {
        self.counts[self.heap[heap_index] as usize]
    }

    #[inline]
    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a] as usize] = a as u32;
        self.pos[self.heap[b] as usize] = b as u32;
    }

    /// Events offered so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The count any unmonitored key may have had at most: the minimum once full, else 0.
    pub fn floor(&self) -> u64 {
        if self.keys.len() < self.capacity {
            0
        } else {
            self.heap.first().map_or(0, |&s| self.counts[s as usize])
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Monitored `(key, count, error)` triples in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.keys
            .iter()
            .zip(self.counts.iter().zip(&self.errors))
            .map(|(k, (&c, &e))| (k.as_str(), c, e))
    }

    /// Rebuilds a summary from checkpointed entries; `total` is the events they summarise.
    pub fn restore(capacity: usize, entries: Vec<(String, u64, u64)>, total: u64) -> SpaceSaving {
        let mut s = SpaceSaving::new(capacity);
        for (key, count, error) in entries.into_iter().take(capacity) {
            let hash = s.hasher.hash_one(key.as_str());
            let slot = s.keys.len() as u32;
            s.keys.push(key);
            s.counts.push(count);
            s.errors.push(error);
            s.heap.push(slot);
            s.pos.push(slot);
            s.insert_index(hash, slot);
            s.sift_up(slot as usize);
        }
        // The filter is not checkpointed: every cell starts at the minimum, the bound plain
        // Space-Saving gives an unmonitored key.
        if s.keys.len() == capacity {
            s.filter = vec![s.floor(); capacity * FILTER_RATIO];
        }
        s.total = total;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(s: &SpaceSaving, key: &str) -> Option<(u64, u64)> {
        s.entries().find(|e| e.0 == key).map(|e| (e.1, e.2))
    }

    #[test]
    fn counts_exactly_while_under_capacity() {
        let mut s = SpaceSaving::new(10);
        for k in ["a", "b", "a", "c", "a", "b"] {
            s.offer(k, 1);
        }
        assert_eq!(lookup(&s, "a"), Some((3, 0)));
        assert_eq!(lookup(&s, "b"), Some((2, 0)));
        assert_eq!(lookup(&s, "c"), Some((1, 0)));
        assert_eq!(s.total(), 6);
        assert_eq!(s.floor(), 0);
    }

    #[test]
    fn newcomer_waits_in_the_filter_until_it_could_have_reached_the_minimum() {
        let mut s = SpaceSaving::new(2);
        s.offer("a", 5);
        s.offer("b", 2);
        s.offer("c", 1);
        assert_eq!(
            lookup(&s, "c"),
            None,
            "one sighting cannot beat a minimum of 2"
        );
        s.offer("c", 1);
        assert_eq!(lookup(&s, "b"), None);
        // Its first sighting sits in the filter, which cannot tell it from other keys.
        assert_eq!(lookup(&s, "c"), Some((2, 1)));
        assert_eq!(lookup(&s, "a"), Some((5, 0)));
        assert_eq!(s.len(), 2);
        assert_eq!(s.total(), 9);
    }

    #[test]
    fn an_evicted_key_that_returns_inherits_its_old_count_as_error() {
        let mut s = SpaceSaving::new(1);
        s.offer("a", 3);
        for _ in 0..4 {
            s.offer("b", 1);
        }
        assert_eq!(lookup(&s, "b"), Some((4, 2)));
        s.offer("a", 1);
        s.offer("a", 1);
        // a's cell remembers 3: its count may be 3 + 2, with 3 of it uncertain.
        assert_eq!(lookup(&s, "a"), Some((5, 3)));
    }

    #[test]
    fn bounds_hold_and_frequent_keys_stay_on_a_skewed_stream() {
        let capacity = 50;
        let mut s = SpaceSaving::new(capacity);
        let mut truth: HashMap<String, u64> = HashMap::new();
        // Deterministic skew: key i appears roughly 1000/(i+1) times, interleaved.
        let mut stream = Vec::new();
        for i in 0..2000u64 {
            for _ in 0..(1000 / (i + 1)).max(1) {
                stream.push(i);
            }
        }
        let mut x = 12345u64;
        for i in (1..stream.len()).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            stream.swap(i, (x >> 33) as usize % (i + 1));
        }
        for k in &stream {
            let k = k.to_string();
            s.offer(&k, 1);
            *truth.entry(k).or_default() += 1;
        }
        let total = stream.len() as u64;
        for (key, count, error) in s.entries() {
            let t = truth[key];
            assert!(
                count >= t && count - error <= t,
                "{key}: {count}±{error} vs {t}"
            );
        }
        for (key, &t) in &truth {
            if t > total / capacity as u64 {
                assert!(
                    lookup(&s, key).is_some(),
                    "frequent key {key} ({t}) dropped"
                );
            }
        }
    }

    #[test]
    fn restore_keeps_counts_and_order() {
        let mut s = SpaceSaving::new(3);
        for k in ["a", "a", "b", "c", "c", "c"] {
            s.offer(k, 1);
        }
        let entries = s.entries().map(|(k, c, e)| (k.to_string(), c, e)).collect();
        let mut r = SpaceSaving::restore(3, entries, s.total());
        assert_eq!(r.floor(), 1);
        r.offer("d", 1);
        assert_eq!(lookup(&r, "b"), None);
        assert_eq!(lookup(&r, "d"), Some((2, 1)));
        assert_eq!(r.total(), 7);
    }
}
