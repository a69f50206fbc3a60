//! The records stored in ZooKeeper: per task the hot list, the `warmed` mark and the `lock`;
//! per counter with a threshold rule its blacklist.
//!
//! These JSON shapes are the contract between hot-counter (writer of `hot` and `blacklist`),
//! prewarm (reader of `hot`, writer of `lock` and `warmed`), subscribers and hotctl (readers
//! of all). Field names follow DESIGN.md; readers ignore fields they do not know so writers
//! can add some.

use serde::{Deserialize, Serialize};

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
    /// Malformed events the current owner skipped since it took the task.
    #[serde(default)]
    pub malformed: u64,
    pub items: Vec<HotItem>,
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
