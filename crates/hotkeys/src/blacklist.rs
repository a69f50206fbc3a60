//! Threshold rules and the blacklists they keep: the access-frequency control of a counter.
//!
//! A counter with `threshold` and `action = "blacklist"` bans every key whose guaranteed
//! count in the window (`count - error`, so Space-Saving's overestimate never bans anyone)
//! reaches the threshold, summed over all tasks' published hot lists. A ban lasts until
//! `ban_for` after the key was last seen over the threshold, so a key is released only once
//! its ban has run out *and* it has calmed down.
//!
//! Where applications look:
//! - Redis, the authoritative set: a sorted set per counter on the cache's home node
//!   ([`redis_key`]), member = key, score = end of the ban in Unix milliseconds. A caller is
//!   banned when `ZSCORE <set> <key>` is above the current time: one atomic command.
//! - ZooKeeper, for watchers: `…/counters/<counter>/blacklist` mirrors the entries
//!   (`hotlist::BlacklistRecord`) whenever they change.
//!
//! Every worker evaluates the rules after it publishes; bans, extensions and releases happen
//! in one Lua script, so concurrent workers agree and each change is logged once.

use std::collections::HashMap;

use redis::Script;

use crate::Topology;
use crate::config::{Counter, Rule};
use crate::hotlist::{Banned, BlacklistRecord, HotItem, merge};
use crate::redis::RedisConn;
use crate::zk::{Zk, ZkError};

/// A failure of one evaluation or operator action; the next evaluation starts afresh.
#[derive(Debug, thiserror::Error)]
pub enum BlacklistError {
    #[error(transparent)]
    ZooKeeper(#[from] ZkError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The Redis sorted set holding counter `counter`'s bans.
pub fn redis_key(topology: &str, counter: &str) -> String {
    format!("hotkeys:{topology}:blacklist:{counter}")
}

/// Keys whose guaranteed count reaches the rule's threshold, minus the allow-list, with
/// that count.
pub fn over_threshold(items: &[HotItem], rule: &Rule) -> Vec<(String, u64)> {
    items
        .iter()
        .map(|i| (i, i.count - i.error.unwrap_or(0).min(i.count)))
        .filter(|(i, guaranteed)| *guaranteed >= rule.threshold && !rule.allow.contains(&i.key))
        .map(|(i, guaranteed)| (i.key.clone(), guaranteed))
        .collect()
}

/// Bans or extends the keys in ARGV[3..] until ARGV[2], releases bans that ended by ARGV[1],
/// and answers what it added, what it released and every entry left.
const ENFORCE: &str = r"
local added = {}
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not score or tonumber(score) <= tonumber(ARGV[1]) then
    table.insert(added, ARGV[i])
  end
  redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[i])
end
local released = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #released > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
end
return {added, released, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
";

/// What one evaluation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforced {
    pub added: Vec<String>,
    pub released: Vec<String>,
    /// Every ban in force afterwards, soonest end first.
    pub entries: Vec<Banned>,
}

/// The blacklist of one counter with a threshold rule.
#[derive(Clone)]
pub struct Blacklist {
    counter: String,
    rule: Rule,
    key: String,
    /// Hashed once: every evaluation runs it by its SHA.
    script: Script,
    redis: RedisConn,
}

impl Blacklist {
    /// The blacklist of `counter`, or `None` when it has no rule.
    pub fn new(topology: &Topology, counter: &Counter, redis: RedisConn) -> Option<Blacklist> {
        let rule = counter.rule.clone()?;
        Some(Blacklist {
            counter: counter.name.clone(),
            key: redis_key(&topology.name, &counter.name),
            rule,
            script: Script::new(ENFORCE),
            redis,
        })
    }

    pub fn counter(&self) -> &str {
        &self.counter
    }

    /// One evaluation of the rule at `now_ms` against what the counter's tasks published.
    /// `zk` may be scoped to any counter of the topology.
    pub async fn enforce(&mut self, zk: &Zk, now_ms: i64) -> Result<Enforced, BlacklistError> {
        let zk = zk.for_counter(&self.counter);
        let lists = zk.hot_lists().await?;
        let merged = merge(lists.iter().map(|l| &l.value), usize::MAX);
        let over = over_threshold(&merged, &self.rule);
        let until = now_ms.saturating_add(self.rule.ban_for.as_millis() as i64);
        let mut invocation = self.script.key(&self.key);
        invocation.arg(now_ms).arg(until);
        for (key, _) in &over {
            invocation.arg(key);
        }
        let (added, released, flat): (Vec<String>, Vec<String>, Vec<String>) =
            invocation.invoke_async(&mut self.redis).await?;
        let enforced = Enforced {
            added,
            released,
            entries: entries_from_flat(flat),
        };

        let counts: HashMap<&str, u64> = over.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        for key in &enforced.added {
            tracing::warn!(counter = %self.counter, %key, count = counts.get(key.as_str()),
                threshold = self.rule.threshold, until_ms = until, "blacklisted");
        }
        for key in &enforced.released {
            tracing::info!(counter = %self.counter, %key, "released from the blacklist");
        }
        let label = self.counter.clone();
        metrics::counter!("hotkeys_blacklist_added_total", "counter" => label.clone())
            .increment(enforced.added.len() as u64);
        metrics::counter!("hotkeys_blacklist_released_total", "counter" => label.clone())
            .increment(enforced.released.len() as u64);
        metrics::gauge!("hotkeys_blacklist_entries", "counter" => label)
            .set(enforced.entries.len() as f64);

        mirror(&zk, &self.counter, &enforced.entries, now_ms).await?;
        Ok(enforced)
    }
}

/// Every ban in force of `counter`, soonest end first, from Redis.
pub async fn entries(
    redis: &mut RedisConn,
    topology: &str,
    counter: &str,
) -> Result<Vec<Banned>, BlacklistError> {
    let flat: Vec<String> = redis::cmd("ZRANGE")
        .arg(redis_key(topology, counter))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(redis)
        .await?;
    Ok(entries_from_flat(flat))
}

/// Lifts the bans of `keys` at once and updates the ZooKeeper mirror; answers how many were
/// banned. A key still over the threshold is banned again by the next evaluation: to spare a
/// key for good, allow-list it in the topology.
pub async fn unban(
    redis: &mut RedisConn,
    zk: &Zk,
    topology: &str,
    counter: &str,
    keys: &[String],
    now_ms: i64,
) -> Result<usize, BlacklistError> {
    let removed: usize = redis::cmd("ZREM")
        .arg(redis_key(topology, counter))
        .arg(keys)
        .query_async(redis)
        .await?;
    for key in keys {
        tracing::info!(%counter, %key, "unbanned by an operator");
    }
    let left = entries(redis, topology, counter).await?;
    mirror(&zk.for_counter(counter), counter, &left, now_ms).await?;
    Ok(removed)
}

/// Writes the ZooKeeper copy of the entries when it differs from what is there.
async fn mirror(zk: &Zk, counter: &str, entries: &[Banned], now_ms: i64) -> Result<(), ZkError> {
    let current = zk.read_blacklist().await?;
    if current.is_some_and(|c| c.value.entries == entries) {
        return Ok(());
    }
    zk.write_blacklist(&BlacklistRecord {
        counter: counter.to_string(),
        updated_at_ms: now_ms,
        entries: entries.to_vec(),
    })
    .await
}

/// `ZRANGE … WITHSCORES` answers member, score, member, score, …
fn entries_from_flat(flat: Vec<String>) -> Vec<Banned> {
    let mut entries = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(key), Some(score)) = (it.next(), it.next()) {
        let until_ms = score.parse::<f64>().map_or(0, |s| s as i64);
        entries.push(Banned { key, until_ms });
    }
    entries
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Action;

    fn rule(threshold: u64, allow: &[&str]) -> Rule {
        Rule {
            threshold,
            action: Action::Blacklist,
            ban_for: Duration::from_secs(60),
            allow: allow.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn item(key: &str, count: u64, error: Option<u64>) -> HotItem {
        HotItem {
            key: key.into(),
            count,
            error,
        }
    }

    #[test]
    fn only_guaranteed_counts_at_or_over_the_threshold_are_banned() {
        let items = [
            item("flood", 150, Some(10)),
            item("edge", 100, None),
            item("overestimated", 120, Some(30)),
            item("quiet", 5, None),
        ];
        assert_eq!(
            over_threshold(&items, &rule(100, &[])),
            [("flood".to_string(), 140), ("edge".to_string(), 100)]
        );
    }

    #[test]
    fn allow_listed_keys_are_never_banned() {
        let items = [item("10.0.0.1", 1000, None), item("6.6.6.6", 1000, None)];
        assert_eq!(
            over_threshold(&items, &rule(10, &["10.0.0.1"])),
            [("6.6.6.6".to_string(), 1000)]
        );
    }

    #[test]
    fn scores_read_back_as_milliseconds() {
        let flat = ["a", "1700000000123", "b", "1.7000000001e12"].map(String::from);
        assert_eq!(
            entries_from_flat(flat.to_vec()),
            [
                Banned {
                    key: "a".into(),
                    until_ms: 1_700_000_000_123
                },
                Banned {
                    key: "b".into(),
                    until_ms: 1_700_000_000_100
                }
            ]
        );
    }
}
