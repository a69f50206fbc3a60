//! `[count]` and the `[[counter]]` tables: what each counter counts and how, and the
//! threshold rules that act on its keys.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Invalid, check};

/// Counting algorithm of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Space-Saving (Metwally et al. 2005): guaranteed error bounds.
    SpaceSaving,
    /// A bounded LRU map of counters: the least recently seen key is evicted.
    Lru,
}

/// Per-task counting: memory bound, window and what gets published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountConfig {
    pub algorithm: Algorithm,
    /// Counter entries per task (per window bucket).
    pub capacity: usize,
    /// Length of the rolling window, by event time.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Buckets the window is split into; it advances one bucket at a time.
    pub buckets: u32,
    /// Items in a published hot list.
    pub top_n: usize,
    /// How often each task publishes its hot list when only its counts changed (a new key
    /// in the top N is published at once). 650 ms keeps the hot lists' share of ZooKeeper's
    /// write bytes where it was when rounds ran from the poll loop's ticks (about every
    /// 650 ms at 3,000 events/s).
    #[serde(with = "humantime_serde")]
    pub publish_every: Duration,
    /// How often each task writes its counter checkpoint (also at revoke and shutdown). A
    /// new owner resumes from the checkpoint and re-counts what came after it. 60 s: once a
    /// window of traffic is in, checkpoints are most of a task's ZooKeeper bytes, and the
    /// worker re-counts a minute of a partition's events in well under a second at the
    /// rates where those bytes matter.
    #[serde(with = "humantime_serde")]
    pub checkpoint_every: Duration,
    /// Events stamped further ahead of the worker's clock are counted as happening now
    /// (and as `future`); default: one bucket (`window / buckets`).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_future: Option<Duration>,
}

impl CountConfig {
    /// The length of one window bucket.
    pub fn bucket(&self) -> Duration {
        self.window / self.buckets.max(1)
    }

    /// How far ahead of the clock an event's timestamp is taken as it is.
    pub fn max_future(&self) -> Duration {
        self.max_future.unwrap_or_else(|| self.bucket())
    }
}

impl Default for CountConfig {
    fn default() -> Self {
        CountConfig {
            algorithm: Algorithm::SpaceSaving,
            capacity: 10_000,
            window: Duration::from_secs(300),
            buckets: 10,
            top_n: 100,
            publish_every: Duration::from_millis(650),
            checkpoint_every: Duration::from_secs(60),
            max_future: None,
        }
    }
}

/// Name of the counter that `[source]` and `[count]` define: the product counter whose hot
/// lists prewarm reads. `[[counter]]` tables cannot use it.
pub const PRIMARY_COUNTER: &str = "hot";

/// One `[[counter]]` table: another key counted over the same events. Counting settings left
/// out are taken from `[count]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterConfig {
    /// ZooKeeper path segment and metrics label.
    pub name: String,
    /// JSON pointer to the counted value; events without one are not counted by this counter.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_n: Option<usize>,
    /// Count per window at which `action` is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// How long a key stays blacklisted after it was last seen over the threshold.
    #[serde(default = "default_ban_for", with = "humantime_serde")]
    pub ban_for: Duration,
    /// Keys the rule never acts on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

impl CounterConfig {
    /// A counter of the value at `key` named `name`, every other setting inherited from
    /// `[count]`, without a rule.
    pub fn new(name: &str, key: &str) -> CounterConfig {
        CounterConfig {
            name: name.into(),
            key: key.into(),
            algorithm: None,
            capacity: None,
            window: None,
            buckets: None,
            top_n: None,
            threshold: None,
            action: None,
            ban_for: default_ban_for(),
            allow: Vec::new(),
        }
    }
}

fn default_ban_for() -> Duration {
    Duration::from_secs(600)
}

/// What a threshold rule does to a key that crosses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Adds the key to the counter's blacklist (`hotkeys::blacklist`).
    Blacklist,
}

/// A counter as the workers run it: `[source]`+`[count]` or one `[[counter]]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    pub name: String,
    /// JSON pointer to the counted key.
    pub key: String,
    /// Only the primary counter falls back to the Kafka message key (the product id).
    pub primary: bool,
    pub count: CountConfig,
    pub rule: Option<Rule>,
}

/// A threshold rule of a counter.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub threshold: u64,
    pub action: Action,
    pub ban_for: Duration,
    pub allow: std::collections::BTreeSet<String>,
}

impl CountConfig {
    /// Checks the counting settings of the table `section` (`count`, `counter[1]`): each
    /// counter's top list must also fit one hot list of keys of up to `max_key_bytes`.
    pub fn validate(&self, section: &str, max_key_bytes: usize) -> Result<(), Invalid> {
        let key = |k: &str| format!("{section}.{k}");
        check(
            self.publish_every.is_zero(),
            &key("publish_every"),
            "expected a positive duration",
        )?;
        check(
            self.checkpoint_every < self.publish_every,
            &key("checkpoint_every"),
            "expected at least count.publish_every (a checkpoint is written with a publish)",
        )?;
        check(self.capacity == 0, &key("capacity"), "expected at least 1")?;
        check(self.buckets == 0, &key("buckets"), "expected at least 1")?;
        check(
            self.window.as_millis() < u128::from(self.buckets),
            &key("window"),
            "expected at least one millisecond per bucket",
        )?;
        check(
            self.top_n == 0 || self.top_n > self.capacity,
            &key("top_n"),
            "expected between 1 and the capacity",
        )?;
        let fit = crate::hotlist::max_items(max_key_bytes);
        if self.top_n > fit {
            return Err(Invalid::new(
                key("top_n"),
                format!(
                    "expected at most {fit}: {} items of up to source.max_key_bytes = {max_key_bytes} \
                     must fit a hot list of {} bytes (one ZooKeeper request)",
                    self.top_n,
                    crate::hotlist::MAX_BYTES
                ),
            ));
        }
        Ok(())
    }
}

/// Checks the `[[counter]]` tables' own keys: unique names, pointers, rules. Their counting
/// settings are checked once resolved against `[count]` ([`CountConfig::validate`]).
pub fn validate_tables(tables: &[CounterConfig]) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    for (i, c) in tables.iter().enumerate() {
        let at = |key: &str| format!("counter[{i}].{key}");
        check(
            c.name.is_empty()
                || c.name.contains('/')
                || c.name == PRIMARY_COUNTER
                || !names.insert(c.name.as_str()),
            &at("name"),
            &format!("expected a unique non-empty name without `/`, not `{PRIMARY_COUNTER}`"),
        )?;
        check(
            !c.key.starts_with('/'),
            &at("key"),
            "expected a JSON pointer starting with `/`",
        )?;
        match (c.threshold, c.action) {
            (Some(0), _) => return Err(Invalid::new(at("threshold"), "expected at least 1")),
            (Some(_), None) => {
                return Err(Invalid::new(
                    at("action"),
                    "expected an action with `threshold`",
                ));
            }
            (None, Some(_)) => {
                return Err(Invalid::new(
                    at("threshold"),
                    "expected a threshold with `action`",
                ));
            }
            _ => {}
        }
        check(
            c.ban_for.is_zero(),
            &at("ban_for"),
            "expected a positive duration",
        )?;
    }
    Ok(())
}
