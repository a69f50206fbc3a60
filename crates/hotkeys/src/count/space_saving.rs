//! Space-Saving (Metwally, Agrawal, El Abbadi 2005) over a fixed number of counters, with
//! TinyLFU admission.
//!
//! Each monitored key has a count and an `error`: its true count in the bucket lies in
//! `[count - error, count]`. While there are free counters every key is counted exactly.
//!
//! # Admission: one-off keys cannot pass
//!
//! Once the counters are full, a key without one takes a counter only when its recent
//! frequency ([`Frequency`], fed every event of the bucket) is higher than that of the
//! counter it would evict. A crawl that asks for each id once never builds up a frequency,
//! so however large it is it only ever competes for the weakest counter, and the counters of
//! the keys that are really hot are never given up. Filtered Space-Saving (Homem & Carvalho
//! 2010), which this replaces, admitted a key once its hashed filter cell reached the
//! minimum; a flood fills every cell, so floods got in and the minimum rose with them.
//!
//! # Bounds
//!
//! Occurrences no counter holds are never lost: a refused key's sightings and an evicted
//! key's count go to [`Bound`], a count-min sketch whose cells only grow. An admitted key
//! starts with its bound as `error` (and as part of its count); the bound of any key never
//! seen monitored is [`SpaceSaving::floor`] (or, finer, [`SpaceSaving::bound`]). The victim
//! is the counter with the smallest guaranteed count (`count - error`), so a key that was
//! admitted on a large bound is given up before one whose count is known; among equal
//! guaranteed counts, the smallest count goes first.
//!
//! # Memory
//!
//! On top of the counters: per window, a frequency sketch of 100 bytes × capacity (at most
//! 1 MiB); per bucket whose counters are full, a bound sketch of 32 bytes × capacity (what
//! the old filter took), at least 64 KiB. At the defaults (capacity 10,000, 10 buckets) that
//! is 1 MB of frequency sketch per task beside the old filter's 3.2 MB; at capacity 1,000,
//! 100 KB plus 640 KiB of bound sketches, 420 KB more than the old filter's 320 KB.
//!
//! The "Stream-Summary" of the paper is realised as an indexed binary min-heap: the key with
//! the smallest guaranteed count sits at the root, ready to be replaced. An increment only
//! ever moves a counter towards the leaves, and hot keys live at the leaves, so the common
//! case is O(1). Keys are stored once, in `keys`; the hash table holds only slot numbers, so
//! an eviction reuses the evicted key's string buffer instead of allocating.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::sketch::{Bound, Frequency};

/// One bucket's worth of Space-Saving counters.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: usize,
    hasher: foldhash::fast::FixedState,
    /// Slot numbers, looked up by the hash of `keys[slot]`.
    index: HashTable<u32>,
    keys: Vec<String>,
    /// The hash of each slot's key, for the sketches.
    hashes: Vec<u64>,
    counts: Vec<u64>,
    errors: Vec<u64>,
    /// Slots ordered as a min-heap by guaranteed count (`count - error`), then count.
    heap: Vec<u32>,
    /// Position of each slot in `heap`.
    pos: Vec<u32>,
    /// Bounds of the unmonitored keys (module docs); allocated once a key finds the
    /// counters full.
    bound: Option<Box<Bound>>,
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
            hashes: Vec::new(),
            counts: Vec::new(),
            errors: Vec::new(),
            heap: Vec::new(),
            pos: Vec::new(),
            bound: None,
            total: 0,
        }
    }

    /// Counts `n` occurrences of `key`, whose sighting `frequency` (the window's) records.
    /// Returns its guaranteed count (`count - error`) afterwards, 0 when it is not monitored.
    pub fn offer(&mut self, key: &str, n: u64, frequency: &mut Frequency) -> u64 {
        self.total += n;
        let hash = self.hasher.hash_one(key);
        frequency.increment(hash);
        let keys = &self.keys;
        if let Some(&slot) = self.index.find(hash, |&s| keys[s as usize] == key) {
            let s = slot as usize;
            self.counts[s] += n;
            let guaranteed = self.counts[s] - self.errors[s];
            self.sift_down(self.pos[s] as usize);
            return guaranteed;
        }
        if self.keys.len() < self.capacity {
            let error = self.unmonitored_bound(hash);
            self.push(key.to_owned(), hash, error + n, error);
            return n;
        }
        self.admit_or_refuse(key, hash, n, frequency)
    }

    /// The counters are full: `key` replaces the weakest counter if it has been seen more
    /// often lately, else its sighting only raises its bound. Returns its guaranteed count.
    fn admit_or_refuse(&mut self, key: &str, hash: u64, n: u64, frequency: &Frequency) -> u64 {
        let slot = self.heap[0];
        let s = slot as usize;
        let capacity = self.capacity;
        let bound = self
            .bound
            .get_or_insert_with(|| Box::new(Bound::filled(capacity, 0)));
        if frequency.estimate(hash) <= frequency.estimate(self.hashes[s]) {
            bound.add(hash, n);
            return 0;
        }
        let inherited = estimate(bound, hash, self.total - n);
        // The evicted count goes to the bound sketch, which keeps bounding that key.
        bound.raise(self.hashes[s], self.counts[s]);
        let old_hash = self.hashes[s];
        if let Ok(entry) = self.index.find_entry(old_hash, |&x| x == slot) {
            entry.remove();
        }
        self.keys[s].clear();
        self.keys[s].push_str(key);
        self.hashes[s] = hash;
        self.errors[s] = inherited;
        self.counts[s] = inherited + n;
        self.insert_index(hash, slot);
        self.sift_down(0);
        n
    }

    fn push(&mut self, key: String, hash: u64, count: u64, error: u64) {
        let slot = self.keys.len() as u32;
        self.keys.push(key);
        self.hashes.push(hash);
        self.counts.push(count);
        self.errors.push(error);
        self.heap.push(slot);
        self.pos.push(slot);
        self.insert_index(hash, slot);
        self.sift_up(slot as usize);
    }

    fn unmonitored_bound(&self, hash: u64) -> u64 {
        self.bound
            .as_deref()
            .map_or(0, |b| estimate(b, hash, self.total))
    }

    fn insert_index(&mut self, hash: u64, slot: u32) {
        let hashes = &self.hashes;
        self.index
            .insert_unique(hash, slot, |&s| hashes[s as usize]);
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.lower_at(parent) <= self.lower_at(i) {
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
            let child = if right < len && self.lower_at(right) < self.lower_at(left) {
                right
            } else {
                left
            };
            if self.lower_at(i) <= self.lower_at(child) {
                return;
            }
            self.swap(i, child);
            i = child;
        }
    }

    /// The guaranteed count of the counter at `heap_index`, then its count: of two keys
    /// with the same guaranteed count, the one that may have been seen less goes first
    /// (a key just admitted on its bound does not stand in front of stale ones).
    #[inline]
    fn lower_at(&self, heap_index: usize) -> (u64, u64) {
        let s = self.heap[heap_index] as usize;
        (self.counts[s] - self.errors[s], self.counts[s])
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

    /// The count any unmonitored key may have had at most: 0 until a key found the
    /// counters full, then what the bound sketch proves for every key at once.
    pub fn floor(&self) -> u64 {
        self.bound
            .as_deref()
            .map_or(0, |b| b.max().unwrap_or(self.total))
    }

    /// How often `key` may have been seen beyond what its counter holds: 0 when it has
    /// one, else its bound, which is at most [`floor`](Self::floor).
    pub fn bound(&self, key: &str) -> u64 {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        if self
            .index
            .find(hash, |&s| keys[s as usize] == key)
            .is_some()
        {
            return 0;
        }
        self.unmonitored_bound(hash)
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

    /// The bound sketch for a checkpoint; `None` before there is one.
    pub fn sketch_bytes(&self) -> Option<Vec<u8>> {
        self.bound.as_deref().map(Bound::to_bytes)
    }

    /// Rebuilds a summary from checkpointed entries; `total` is the events they summarise
    /// and `floor` bounds every key they leave out. The bound sketch is restored from
    /// `sketch` (from [`sketch_bytes`](Self::sketch_bytes)) when given and of this
    /// capacity; otherwise every bound starts at `floor`.
    pub fn restore(
        capacity: usize,
        entries: Vec<(String, u64, u64)>,
        total: u64,
        floor: u64,
        sketch: Option<&[u8]>,
    ) -> SpaceSaving {
        let mut s = SpaceSaving::new(capacity);
        for (key, count, error) in entries.into_iter().take(capacity) {
            let hash = s.hasher.hash_one(key.as_str());
            s.push(key, hash, count, error.min(count));
        }
        let restored = sketch.and_then(|b| Bound::from_bytes(capacity, b));
        if restored.is_some() || floor > 0 || s.keys.len() == capacity {
            let bound = restored.unwrap_or_else(|| Bound::filled(capacity, floor));
            s.bound = Some(Box::new(bound));
        }
        s.total = total;
        s
    }
}

/// A key's bound, or the events before it when the sketch cannot tell.
#[inline]
fn estimate(bound: &Bound, hash: u64, before: u64) -> u64 {
    bound.estimate(hash).unwrap_or(before)
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
        let mut f = Frequency::new(10);
        for k in ["a", "b", "a", "c", "a", "b"] {
            s.offer(k, 1, &mut f);
        }
        assert_eq!(lookup(&s, "a"), Some((3, 0)));
        assert_eq!(lookup(&s, "b"), Some((2, 0)));
        assert_eq!(lookup(&s, "c"), Some((1, 0)));
        assert_eq!(s.total(), 6);
        assert_eq!(s.floor(), 0);
    }

    #[test]
    fn one_off_keys_never_take_the_counters_of_repeated_keys() {
        let mut s = SpaceSaving::new(100);
        let mut f = Frequency::new(100);
        for i in 0..200_000u64 {
            s.offer(&format!("crawl-{i}"), 1, &mut f);
            if i % 100 == 0 {
                s.offer(&format!("hot-{}", i / 100 % 20), 1, &mut f);
            }
        }
        for hot in 0..20 {
            let (count, error) = lookup(&s, &format!("hot-{hot}")).expect("hot key kept");
            assert!(count >= 100 && count - error <= 100, "{count}±{error}");
        }
    }

    #[test]
    fn a_key_seen_more_often_than_the_weakest_counter_takes_it_with_its_bound_as_error() {
        let mut s = SpaceSaving::new(1);
        let mut f = Frequency::new(1);
        for _ in 0..3 {
            s.offer("a", 1, &mut f);
        }
        for _ in 0..4 {
            s.offer("b", 1, &mut f);
        }
        // Three refused sightings are its error; the fourth beat a's frequency of 3.
        assert_eq!(lookup(&s, "b"), Some((4, 3)));
        s.offer("a", 1, &mut f);
        s.offer("a", 1, &mut f);
        // a's bound remembers its evicted 3 and one refused sighting.
        assert_eq!(lookup(&s, "a"), Some((5, 4)));
        assert!(s.bound("b") >= 4);
    }

    #[test]
    fn bounds_hold_and_frequent_keys_stay_on_a_skewed_stream() {
        let capacity = 50;
        let mut s = SpaceSaving::new(capacity);
        let mut f = Frequency::new(capacity);
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
            s.offer(&k, 1, &mut f);
            *truth.entry(k).or_default() += 1;
        }
        for (key, count, error) in s.entries() {
            let t = truth[key];
            assert!(
                count >= t && count - error <= t,
                "{key}: {count}±{error} vs {t}"
            );
        }
        for (key, &t) in &truth {
            match lookup(&s, key) {
                Some(_) => {}
                None => assert!(s.bound(key) >= t && s.floor() >= t, "{key}: {t}"),
            }
        }
        for key in 0..10 {
            assert!(
                lookup(&s, &key.to_string()).is_some(),
                "frequent key {key} dropped"
            );
        }
    }

    #[test]
    fn restore_keeps_counts_sketches_and_what_follows() {
        let mut s = SpaceSaving::new(3);
        let mut f = Frequency::new(3);
        for k in ["a", "a", "b", "c", "c", "c", "d", "d", "d"] {
            s.offer(k, 1, &mut f);
        }
        let entries = s.entries().map(|(k, c, e)| (k.to_string(), c, e)).collect();
        let sketch = s.sketch_bytes();
        let mut r = SpaceSaving::restore(3, entries, s.total(), s.floor(), sketch.as_deref());
        let mut g = f.clone();
        assert_eq!(r.floor(), s.floor());
        for k in ["d", "e", "e"] {
            s.offer(k, 1, &mut f);
            r.offer(k, 1, &mut g);
        }
        let sorted = |s: &SpaceSaving| {
            let mut e: Vec<_> = s.entries().map(|(k, c, e)| (k.to_owned(), c, e)).collect();
            e.sort();
            e
        };
        assert_eq!(sorted(&r), sorted(&s));
        assert_eq!(r.total(), 12);
    }

    #[test]
    fn restore_without_sketches_bounds_every_other_key_by_the_floor() {
        let entries = vec![("a".to_owned(), 9, 0), ("b".to_owned(), 4, 1)];
        let mut r = SpaceSaving::restore(2, entries, 20, 5, None);
        let mut f = Frequency::new(2);
        assert_eq!(r.floor(), 5);
        assert_eq!(r.bound("x"), 5);
        assert_eq!(r.bound("a"), 0);
        for _ in 0..20 {
            r.offer("x", 1, &mut f);
        }
        let (count, error) = lookup(&r, "x").expect("x admitted");
        assert!(count >= 20 && count - error <= 20, "{count}±{error}");
    }
}
