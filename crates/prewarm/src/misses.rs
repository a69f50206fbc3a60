//! Keys MySQL had no row for, remembered for `prewarm.missing_ttl` so that a `--watch` pass
//! does not ask the database for them again each time their hot list moves to a new version.
//!
//! The memory is bounded: at most [`MAX_KEYS`] keys (hot keys come from the public access
//! log), the least recently missed forgotten first. A forgotten key is only looked up again.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Keys remembered at most: at `source.max_key_bytes` (256) about 30 MB.
pub const MAX_KEYS: usize = 100_000;

/// See the module docs.
pub(crate) struct Misses {
    /// How long a miss is remembered; zero remembers nothing.
    ttl: Duration,
    /// When each key was last found missing.
    seen: Mutex<LruCache<String, Instant>>,
}

impl Misses {
    pub fn new(ttl: Duration) -> Misses {
        Misses::bounded(ttl, MAX_KEYS)
    }

    fn bounded(ttl: Duration, capacity: usize) -> Misses {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Misses {
            ttl,
            seen: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Removes from `keys` those found missing less than `missing_ttl` ago; returns how many.
    pub fn forget_known(&self, keys: &mut Vec<String>) -> u64 {
        if self.ttl.is_zero() {
            return 0;
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = keys.len();
        keys.retain(|k| seen.peek(k).is_none_or(|at| at.elapsed() >= self.ttl));
        (before - keys.len()) as u64
    }

    /// Remembers that `keys` have no row, as of now.
    pub fn remember(&self, keys: &[String]) {
        if self.ttl.is_zero() || keys.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            seen.put(key.clone(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_remembered_miss_is_not_asked_again_within_the_ttl() {
        let misses = Misses::new(Duration::from_secs(60));
        misses.remember(&keys(&["a", "b"]));
        let mut asked = keys(&["a", "b", "c"]);
        assert_eq!(misses.forget_known(&mut asked), 2);
        assert_eq!(asked, keys(&["c"]));
    }

    #[test]
    fn a_miss_older_than_the_ttl_is_asked_again() {
        let misses = Misses::new(Duration::from_millis(1));
        misses.remember(&keys(&["a"]));
        std::thread::sleep(Duration::from_millis(5));
        let mut asked = keys(&["a"]);
        assert_eq!(misses.forget_known(&mut asked), 0);
        assert_eq!(asked, keys(&["a"]));
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let misses = Misses::new(Duration::ZERO);
        misses.remember(&keys(&["a"]));
        let mut asked = keys(&["a"]);
        assert_eq!(misses.forget_known(&mut asked), 0);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_miss_goes_first() {
        let misses = Misses::bounded(Duration::from_secs(60), 2);
        misses.remember(&keys(&["a", "b", "c"]));
        let mut asked = keys(&["a", "b", "c"]);
        assert_eq!(misses.forget_known(&mut asked), 2);
        assert_eq!(asked, keys(&["a"]));
    }
}
