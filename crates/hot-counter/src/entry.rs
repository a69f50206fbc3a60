//! Publish on entry: when a task publishes before its next periodic round.
//!
//! A flash crowd's key must reach ZooKeeper (and so prewarm) within a fraction of a second,
//! but a round every few milliseconds would multiply ZooKeeper's write load. So a task
//! publishes out of turn only when something a reader acts on has changed:
//!
//! - a key **enters the top N**: its guaranteed count in the bucket it was just counted in
//!   reaches the task's *bar*, one more than the reported count (an upper bound) of the last
//!   item of the list the task last published (1 while that list holds fewer than `top_n`
//!   items), and at least [`ENTRY_MIN_COUNT`]; and the key is not in that list. A key that
//!   only ties the last item changes nothing a reader acts on, and ties are common where the
//!   list's counts are small. Below the minimum, where a list is not full yet or a window is
//!   still filling, a new key is noise rather than a surge: without it, every second or
//!   third sighting of a background key entered such a list and the task wrote out of turn
//!   at every [`MIN_GAP`] (2.4 times the hot-list bytes in the first minute of
//!   `scripts/bench-latency.sh`). A flash crowd passes it within its first events;
//! - a key **crosses a threshold rule**: its guaranteed count in the bucket reaches the
//!   rule's threshold.
//!
//! Both tests are made on the count [`hotkeys::count::WindowCounter::offer`] hands back,
//! so an event costs one comparison; the list is looked up only when a count reaches the
//! bar, at most once per key and bucket. A bucket's guaranteed count is a lower bound of the
//! key's count over the window, so a key that passes has provably outgrown the list's last
//! item as published. A key that climbs slowly, over several buckets, may not pass: the
//! periodic round (`count.publish_every`) publishes it, as it publishes changes in counts.
//!
//! Out-of-turn rounds are debounced: no round starts within [`MIN_GAP`] of the previous one,
//! so a task writes at most once per `MIN_GAP`, whatever the traffic.

use std::collections::HashSet;
use std::time::Duration;

use hotkeys::config::Counter;
use hotkeys::hotlist::HotItem;

/// The shortest time between two publish rounds.
pub const MIN_GAP: Duration = Duration::from_millis(50);

/// The lowest bar: a key seen fewer times in its bucket waits for the periodic round.
pub const ENTRY_MIN_COUNT: u64 = 8;

/// What makes one counter of a task publish out of turn; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryBar {
    /// A key not in `listed` whose bucket count reaches this enters the top N.
    bar: u64,
    /// The keys of the last published list.
    listed: HashSet<String>,
    /// The counter's threshold rule, if any.
    threshold: Option<u64>,
}

impl EntryBar {
    /// The bar of a counter that has published nothing yet: any key enters.
    pub fn empty(counter: &Counter) -> EntryBar {
        EntryBar::after(counter, &[])
    }

    /// The bar after `counter` published `items` (ordered, hottest first).
    pub fn after(counter: &Counter, items: &[HotItem]) -> EntryBar {
        let full = items.len() >= counter.count.top_n;
        EntryBar {
            bar: match items.last() {
                Some(last) if full => last.count + 1,
                _ => 1,
            }
            .max(ENTRY_MIN_COUNT),
            listed: items.iter().map(|i| i.key.clone()).collect(),
            threshold: counter.rule.as_ref().map(|r| r.threshold),
        }
    }

    /// Whether `key`, whose guaranteed count in its bucket just became `count`, makes the
    /// task publish now. Counts grow one event at a time, so "reaches" is "equals": each key
    /// passes each bar at most once per bucket.
    #[inline]
    pub fn passed(&self, key: &str, count: u64) -> bool {
        (count == self.bar && !self.listed.contains(key)) || Some(count) == self.threshold
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hotkeys::config::{Action, CountConfig, Rule};

    fn counter(top_n: usize, threshold: Option<u64>) -> Counter {
        Counter {
            name: "hot".into(),
            key: "/k".into(),
            primary: true,
            count: CountConfig {
                top_n,
                ..CountConfig::default()
            },
            rule: threshold.map(|threshold| Rule {
                threshold,
                action: Action::Blacklist,
                ban_for: Duration::from_secs(60),
                allow: Default::default(),
            }),
        }
    }

    /// A published list's items: `(key, count)`, hottest first.
    pub(crate) fn items(counts: &[(&str, u64)]) -> Vec<HotItem> {
        counts
            .iter()
            .map(|(k, c)| HotItem {
                key: (*k).into(),
                count: *c,
                error: Some(0),
            })
            .collect()
    }

    #[test]
    fn any_new_key_seen_the_minimum_times_enters_a_list_that_is_not_full() {
        let c = counter(3, None);
        assert!(EntryBar::empty(&c).passed("a", ENTRY_MIN_COUNT));
        let bar = EntryBar::after(&c, &items(&[("a", 9), ("b", 4)]));
        assert!(bar.passed("c", ENTRY_MIN_COUNT));
        assert!(
            !bar.passed("a", ENTRY_MIN_COUNT),
            "a listed key does not enter again"
        );
        assert!(
            !bar.passed("c", ENTRY_MIN_COUNT + 1),
            "a key passes the bar once"
        );
    }

    #[test]
    fn a_key_seen_fewer_than_the_minimum_times_waits_for_the_periodic_round() {
        let c = counter(3, None);
        let (empty, short) = (
            EntryBar::empty(&c),
            EntryBar::after(&c, &items(&[("a", 2)])),
        );
        let full = EntryBar::after(&counter(1, None), &items(&[("a", 2)]));
        for bar in [empty, short, full] {
            assert!((1..ENTRY_MIN_COUNT).all(|n| !bar.passed("c", n)), "{bar:?}");
            assert!(bar.passed("c", ENTRY_MIN_COUNT), "{bar:?}");
        }
    }

    #[test]
    fn a_key_enters_a_full_list_when_its_count_outgrows_the_last_items() {
        let bar = EntryBar::after(&counter(2, None), &items(&[("a", 90), ("b", 40)]));
        assert!(!bar.passed("c", 40), "a tie changes nothing");
        assert!(bar.passed("c", 41));
        assert!(!bar.passed("b", 41), "b is in the list already");
        assert!(!bar.passed("c", 42));
    }

    #[test]
    fn an_unmonitored_key_never_passes() {
        let bar = EntryBar::after(&counter(2, None), &items(&[("a", 9), ("b", 0)]));
        assert!(!bar.passed("c", 0));
        assert!(!EntryBar::empty(&counter(2, None)).passed("c", 0));
    }

    #[test]
    fn a_listed_key_crossing_the_rules_threshold_publishes() {
        let bar = EntryBar::after(&counter(2, Some(100)), &items(&[("a", 90), ("b", 4)]));
        assert!(bar.passed("a", 100));
        assert!(!bar.passed("a", 101));
        assert!(!bar.passed("a", 99));
    }
}
