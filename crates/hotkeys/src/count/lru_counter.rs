//! The original design's counter: a bounded LRU map of per-key counts (the `lru` crate).
//!
//! When the map is full, the least recently seen key is evicted with its count, so a key
//! that comes back starts from zero. It is cheap and simple but carries no error bound;
//! `scripts/bench-accuracy.sh` measures what that costs against Space-Saving.

use std::num::NonZeroUsize;

use lru::LruCache;

/// One bucket's worth of LRU counters.
#[derive(Debug, Clone)]
pub struct LruCounter {
    map: LruCache<String, u64, foldhash::fast::FixedState>,
    total: u64,
}

impl LruCounter {
    pub fn new(capacity: usize) -> LruCounter {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        LruCounter {
            map: LruCache::with_hasher(capacity, foldhash::fast::FixedState::default()),
            total: 0,
        }
    }

    /// Counts `n` occurrences of `key`, evicting the least recently seen key when full;
    /// returns its count afterwards.
    pub fn offer(&mut self, key: &str, n: u64) -> u64 {
        self.total += n;
        if let Some(count) = self.map.get_mut(key) {
            *count += n;
            *count
        } else {
            self.map.push(key.to_owned(), n);
            n
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// `(key, count)` pairs, most recently seen first.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64)> {
        self.map.iter().map(|(k, &c)| (k.as_str(), c))
    }

    /// Rebuilds a counter from checkpointed pairs given most recent first.
    pub fn restore(capacity: usize, entries: Vec<(String, u64)>, total: u64) -> LruCounter {
        let mut l = LruCounter::new(capacity);
        for (key, count) in entries.into_iter().rev() {
            l.map.push(key, count);
        }
        l.total = total;
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_seen_key_is_evicted_with_its_count() {
        let mut l = LruCounter::new(2);
        for k in ["a", "a", "b", "a", "c"] {
            l.offer(k, 1);
        }
        let entries: Vec<_> = l.entries().collect();
        assert_eq!(entries, vec![("c", 1), ("a", 3)]);
        assert_eq!(l.total(), 5);
    }

    #[test]
    fn restore_keeps_recency_order() {
        let mut l = LruCounter::new(3);
        for k in ["a", "b", "c", "a"] {
            l.offer(k, 1);
        }
        let entries = l.entries().map(|(k, c)| (k.to_owned(), c)).collect();
        let mut r = LruCounter::restore(3, entries, l.total());
        r.offer("d", 1);
        let keys: Vec<_> = r.entries().map(|e| e.0).collect();
        assert_eq!(keys, vec!["d", "a", "c"]);
    }
}
