//! The records stored in ZooKeeper: per task the hot list, the `warmed` mark and the `lock`;
//! per counter with a threshold rule its blacklist.
//!
//! These JSON shapes are the contract between hot-counter (writer of `hot` and `blacklist`),
//! prewarm (reader of `hot`, writer of `lock` and `warmed`), subscribers and hotctl (readers
//! of all). Field names follow ARCHITECTURE.md; readers ignore fields they do not know so writers
//! can add some.

use serde::{Deserialize, Serialize};

/// The most a serialized hot list may take: half of what one ZooKeeper request carries
/// (`jute.maxbuffer`, 1 MB by default), so the checkpoint written with it keeps the rest.
pub const MAX_BYTES: usize = 512 * 1024;

/// JSON around one item's key: `{"key":"","count":…,"error":…},`, numbers at their widest.
const ITEM_OVERHEAD: usize = 80;

/// Items of keys up to `max_key_bytes` that always fit [`MAX_BYTES`] (with room for the
/// list's own fields), for validating `top_n` against `source.max_key_bytes`.
pub fn max_items(max_key_bytes: usize) -> usize {
    (MAX_BYTES - 4096) / (max_key_bytes + ITEM_OVERHEAD)
}

/// The top-N list one task publishes to `/hotkeys/<topology>/tasks/<task>/hot`. The default
/// is an empty list of version 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HotList {
    pub topology: String,
    /// The counter, for `[[counter]]` tables; absent for the primary counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<String>,
    pub task: u32,
    /// Increases with every publish of this task; equals the znode's data version.
    pub version: i64,
    pub generated_at_ms: i64,
    pub window_ms: u64,
    /// The next Kafka offset the counts do not include yet.
    pub offset: i64,
    /// True when the guaranteed counts prove both membership and order of the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
    /// Who published: `host:pid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Events the window covers, for context in hotctl.
    #[serde(default)]
    pub events: u64,
    /// Events this counter could not key and skipped since the current owner took the task:
    /// not JSON, a key over `source.max_key_bytes`, or, for the product counter, no key.
    /// Each counter keys events on its own, so a `[[counter]]` counts events the product
    /// counter skipped and the other way round.
    #[serde(default)]
    pub malformed: u64,
    /// Of `malformed`, events whose key was longer than `source.max_key_bytes`.
    #[serde(default)]
    pub key_too_long: u64,
    /// Events stamped more than `count.max_future` ahead of the worker's clock, counted as
    /// happening when they were read (since the current owner took the task).
    #[serde(default)]
    pub future: u64,
    /// Events older than the window when they arrived, not counted.
    #[serde(default)]
    pub late: u64,
    /// True when the list was cut short to fit [`MAX_BYTES`] (keys escaped to more bytes
    /// than `source.max_key_bytes` allows for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    pub items: Vec<HotItem>,
}

impl HotList {
    /// The JSON of this list, dropping its coldest items (and setting `truncated`) until it
    /// fits [`MAX_BYTES`].
    pub fn to_bounded_json(&mut self) -> Vec<u8> {
        loop {
            let json = serde_json::to_vec(self).expect("a hot list serializes");
            if json.len() <= MAX_BYTES || self.items.is_empty() {
                return json;
            }
            // Items are about equally long: cut in proportion, at least one.
            let keep = self.items.len() * MAX_BYTES / json.len();
            self.items.truncate(keep.min(self.items.len() - 1));
            self.truncated = true;
        }
    }
}

/// One hot key with its (estimated) count in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotItem {
    pub key: String,
    pub count: u64,
    /// Space-Saving's bound on overestimation: the true count is in `[count - error, count]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<u64>,
}

/// The `n` hottest items over several task lists. A key counted by several tasks (a caller
/// address spread over every partition, say) gets the sum of its counts and error bounds;
/// product keys land in one partition, so for them this is just a sort.
pub fn merge<'a>(lists: impl IntoIterator<Item = &'a HotList>, n: usize) -> Vec<HotItem> {
    let mut by_key: std::collections::HashMap<&str, HotItem> = std::collections::HashMap::new();
    for item in lists.into_iter().flat_map(|l| &l.items) {
        by_key
            .entry(&item.key)
            .and_modify(|sum| {
                sum.count += item.count;
                sum.error = match (sum.error, item.error) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
                };
            })
            .or_insert_with(|| item.clone());
    }
    let mut items: Vec<HotItem> = by_key.into_values().collect();
    items.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    items.truncate(n);
    items
}

/// `/…/counters/<counter>/blacklist`: the keys a threshold rule currently bans, for
/// watchers. Redis holds the authoritative set (`hotkeys::blacklist`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlacklistRecord {
    pub counter: String,
    pub updated_at_ms: i64,
    pub entries: Vec<Banned>,
}

/// One banned key and when its ban ends unless it is seen over the threshold again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Banned {
    pub key: String,
    pub until_ms: i64,
}

/// `/…/tasks/<task>/warmed`: which hot-list version prewarm loaded, and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warmed {
    pub hot_version: i64,
    /// The epoch of the hot list warmed (`zk::Versioned::epoch`); 0 in marks written before
    /// epochs, which then cover no list.
    #[serde(default)]
    pub hot_epoch: i64,
    pub at_ms: i64,
    /// The prewarm process, `host:pid`.
    pub by: String,
    pub rows: u64,
    pub missing: u64,
    #[serde(default)]
    pub took_ms: u64,
}

/// `/…/tasks/<task>/lock` (ephemeral): who is warming the task right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub started_at_ms: i64,
}

impl LockInfo {
    /// The lock record of this process.
    pub fn this_process() -> LockInfo {
        LockInfo {
            host: host_name(),
            pid: std::process::id(),
            started_at_ms: now_ms(),
        }
    }

    /// `host:pid`, the form `warmed.by` and `hot.owner` use.
    pub fn holder(&self) -> String {
        format!("{}:{}", self.host, self.pid)
    }
}

/// This machine's host name, or `unknown` when it is not valid UTF-8.
pub fn host_name() -> String {
    gethostname::gethostname()
        .into_string()
        .unwrap_or_else(|_| "unknown".into())
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_list_reads_the_design_example() {
        let json = r#"{"topology":"product-detail","task":3,"version":17,"generated_at_ms":1700000000000,"window_ms":300000,"offset":123456,"items":[{"key":"11","count":5123}]}"#;
        let list: HotList = serde_json::from_str(json).unwrap();
        assert_eq!(list.task, 3);
        assert_eq!(list.items[0].key, "11");
        assert_eq!(list.items[0].error, None);
        assert_eq!(list.exact, None);
    }

    #[test]
    fn hot_list_round_trips_with_error_bounds() {
        let list = HotList {
            topology: "t".into(),
            counter: None,
            task: 0,
            version: 1,
            generated_at_ms: 2,
            window_ms: 3,
            offset: 4,
            exact: Some(false),
            owner: Some("h:1".into()),
            events: 9,
            malformed: 1,
            key_too_long: 1,
            future: 2,
            late: 3,
            truncated: false,
            items: vec![HotItem {
                key: "k".into(),
                count: 5,
                error: Some(1),
            }],
        };
        let back: HotList = serde_json::from_slice(&serde_json::to_vec(&list).unwrap()).unwrap();
        assert_eq!(back, list);
    }

    #[test]
    fn a_list_over_the_size_limit_keeps_its_hottest_items_and_says_so() {
        let mut list = HotList {
            items: (0..300)
                .map(|i| HotItem {
                    key: format!("{i:0>4}{}", "\u{1}".repeat(1000)),
                    count: 1000 - i,
                    error: None,
                })
                .collect(),
            ..HotList::default()
        };
        let json = list.to_bounded_json();
        assert!(json.len() <= MAX_BYTES, "{}", json.len());
        assert!(list.truncated);
        assert!(list.items.len() > 50 && list.items.len() < 300);
        assert_eq!(list.items[0].count, 1000);
        let back: HotList = serde_json::from_slice(&json).unwrap();
        assert!(back.truncated);

        let mut small = HotList::default();
        small.to_bounded_json();
        assert!(!small.truncated);
    }

    #[test]
    fn max_items_fit_the_limit_at_the_key_limit() {
        let n = max_items(256);
        let mut list = HotList {
            items: (0..n)
                .map(|i| HotItem {
                    key: format!("{i:x<256}"),
                    count: u64::MAX,
                    error: Some(u64::MAX),
                })
                .collect(),
            ..HotList::default()
        };
        list.to_bounded_json();
        assert!(!list.truncated);
    }

    #[test]
    fn merge_sums_a_key_counted_by_several_tasks() {
        let list = |task, items: &[(&str, u64, Option<u64>)]| HotList {
            counter: Some("caller".into()),
            task,
            items: items
                .iter()
                .map(|&(key, count, error)| HotItem {
                    key: key.into(),
                    count,
                    error,
                })
                .collect(),
            ..HotList::default()
        };
        let lists = [
            list(0, &[("a", 10, Some(1)), ("b", 7, None)]),
            list(1, &[("b", 5, Some(2)), ("c", 11, None)]),
        ];
        let merged = merge(&lists, 10);
        let got: Vec<_> = merged
            .iter()
            .map(|i| (i.key.as_str(), i.count, i.error))
            .collect();
        assert_eq!(
            got,
            [("b", 12, Some(2)), ("c", 11, None), ("a", 10, Some(1))]
        );
        assert_eq!(merge(&lists, 1).len(), 1);
    }
}
