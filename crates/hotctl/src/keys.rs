//! `hotctl keys | diff`: what Redis holds of a topology's warmed keys.
//!
//! `keys` walks every node (ring nodes and backups, the Sentinel master, each listed
//! cluster node) with `SCAN MATCH <redis.key with {key} as *>`, never `KEYS`, which would
//! block a node for the whole key space. Fast mode prints what SCAN returns; `--verify`
//! asks each key's `PTTL` (pipelined) and keeps only keys that still exist, with the time
//! they have left. `diff` starts from the hot lists instead and says, per hot key, whether
//! Redis holds it.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use comfy_table::Table;
use hotkeys::Topology;
use hotkeys::cache::{CacheNodes, Remaining, cache_key, pttls};
use hotkeys::hotlist::now_ms;
use hotkeys::zk::Zk;
use serde_json::json;

#[derive(Args)]
pub struct KeysArgs {
    /// Keep only keys that still exist, with their remaining TTL (one PTTL per key).
    #[arg(long)]
    verify: bool,
    /// SCAN's COUNT hint: keys a node examines per call.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DiffArgs {
    /// Only this task; every task when absent.
    task: Option<u32>,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// One key found on a node; `ttl` only with `--verify`.
struct Found {
    node: String,
    key: String,
    ttl: Option<Remaining>,
}

pub async fn keys(topology: &Topology, args: KeysArgs) -> anyhow::Result<()> {
    let cache = CacheNodes::connect(&topology.redis).await?;
    let pattern = scan_pattern(&topology.redis.key);
    let mut found = Vec::new();
    for (node, mut conn) in cache.every_node().await? {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(args.count)
                .query_async(&mut conn)
                .await
                .with_context(|| format!("SCAN on {node}"))?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice (when the node rehashes meanwhile).
        keys.sort();
        keys.dedup();
        if args.verify {
            let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
            let ttls = pttls(&mut conn, &asked, topology.redis.pipeline)
                .await
                .with_context(|| format!("PTTL on {node}"))?;
            found.extend(
                keys.into_iter()
                    .zip(ttls)
                    .filter(|(_, ttl)| *ttl != Remaining::Absent)
                    .map(|(key, ttl)| Found {
                        node: node.clone(),
                        key,
                        ttl: Some(ttl),
                    }),
            );
        } else {
            found.extend(keys.into_iter().map(|key| Found {
                node: node.clone(),
                key,
                ttl: None,
            }));
        }
    }
    if args.json {
        let keys: Vec<_> = found
            .iter()
            .map(|f| match f.ttl {
                Some(ttl) => json!({"node": f.node, "key": f.key, "ttl_ms": ttl_ms(ttl)}),
                None => json!({"node": f.node, "key": f.key}),
            })
            .collect();
        let doc = json!({"pattern": pattern, "verified": args.verify, "count": found.len(), "keys": keys});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let mut table = Table::new();
        table.set_header(["node", "key", "ttl"]);
        for f in &found {
            table.add_row([
                f.node.clone(),
                f.key.clone(),
                f.ttl.map_or_else(|| "-".into(), ttl_text),
            ]);
        }
        println!("{table}");
        let how = if args.verify { "existing" } else { "listed" };
        println!("{} keys {how} matching {pattern}", found.len());
    }
    Ok(())
}

/// What Redis holds of a hot key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// In Redis, with its remaining TTL.
    Warm(Remaining),
    /// Not in Redis, and the task was warmed at least `redis.ttl` ago: the value warmed
    /// then has run out.
    Expired,
    /// Not in Redis although no TTL explains it: never warmed, no row in MySQL, deleted or
    /// evicted.
    Missing,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Warm(_) => "warm",
            Status::Expired => "expired",
            Status::Missing => "missing",
        }
    }
}

fn status(ttl: Remaining, warmed_at_ms: Option<i64>, cfg_ttl: Duration, now_ms: i64) -> Status {
    match (ttl, warmed_at_ms) {
        (Remaining::Absent, Some(at)) if now_ms - at >= cfg_ttl.as_millis() as i64 => {
            Status::Expired
        }
        (Remaining::Absent, _) => Status::Missing,
        (present, _) => Status::Warm(present),
    }
}

/// One hot key of a task and what Redis holds of it.
pub struct DiffRow {
    pub task: u32,
    pub hot_key: String,
    pub cache_key: String,
    status: Status,
}

impl DiffRow {
    /// `warm`, `expired` or `missing`.
    pub fn status(&self) -> &'static str {
        self.status.name()
    }

    /// The row as `hotctl diff --json` and the dashboard's API print it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut row = json!({"task": self.task, "hot_key": self.hot_key, "key": self.cache_key, "status": self.status()});
        if let Status::Warm(ttl) = self.status {
            row["ttl_ms"] = json!(ttl_ms(ttl));
        }
        row
    }
}

/// Every hot key of `task` (every task when `None`) with what Redis holds of it.
pub async fn diff_rows(topology: &Topology, task: Option<u32>) -> anyhow::Result<Vec<DiffRow>> {
    let zk = Zk::connect(topology)
        .await
        .context("connecting to ZooKeeper")?;
    let tasks = match task {
        Some(t) => vec![t],
        None => zk.list_tasks().await?,
    };
    let cache = CacheNodes::connect(&topology.redis).await?;
    let now = now_ms();
    let mut rows = Vec::new();
    for task in tasks {
        let Some(hot) = zk.read_hot(task).await? else {
            continue;
        };
        let warmed_at = zk.read_warmed(task).await?.map(|w| w.value.at_ms);
        let keys: Vec<String> = hot
            .value
            .items
            .iter()
            .map(|i| cache_key(&topology.redis, &i.key))
            .collect();
        let ttls = cache.remaining(&keys).await?;
        for ((item, key), ttl) in hot.value.items.iter().zip(keys).zip(ttls) {
            rows.push(DiffRow {
                task,
                hot_key: item.key.clone(),
                cache_key: key,
                status: status(ttl, warmed_at, topology.redis.ttl, now),
            });
        }
    }
    Ok(rows)
}

/// How many of `rows` are warm, expired and missing.
pub fn diff_counts(rows: &[DiffRow]) -> (usize, usize, usize) {
    let count = |name: &str| rows.iter().filter(|r| r.status() == name).count();
    (count("warm"), count("expired"), count("missing"))
}

/// [`diff_counts`] of each task, in task order.
pub fn diff_counts_by_task(rows: &[DiffRow]) -> Vec<(u32, (usize, usize, usize))> {
    let mut tasks: Vec<u32> = rows.iter().map(|r| r.task).collect();
    tasks.dedup();
    tasks
        .into_iter()
        .map(|task| {
            let of_task: Vec<&DiffRow> = rows.iter().filter(|r| r.task == task).collect();
            let count = |name: &str| of_task.iter().filter(|r| r.status() == name).count();
            (task, (count("warm"), count("expired"), count("missing")))
        })
        .collect()
}

pub async fn diff(topology: &Topology, args: DiffArgs) -> anyhow::Result<()> {
    let rows = diff_rows(topology, args.task).await?;
    let (warm, expired, missing) = diff_counts(&rows);
    if args.json {
        let keys: Vec<_> = rows.iter().map(DiffRow::to_json).collect();
        let doc = json!({"warm": warm, "expired": expired, "missing": missing, "keys": keys});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let mut table = Table::new();
        table.set_header(["task", "hot key", "cache key", "status", "ttl"]);
        for row in &rows {
            let ttl = match row.status {
                Status::Warm(ttl) => ttl_text(ttl),
                _ => "-".into(),
            };
            table.add_row([
                row.task.to_string(),
                row.hot_key.clone(),
                row.cache_key.clone(),
                row.status().into(),
                ttl,
            ]);
        }
        println!("{table}");
        println!("{warm} warm, {expired} expired, {missing} missing");
    }
    Ok(())
}

/// The SCAN MATCH glob of a key template: `{key}` becomes `*`, glob characters of the
/// rest are escaped so they match only themselves.
fn scan_pattern(template: &str) -> String {
    template
        .split("{key}")
        .map(|part| {
            part.chars().fold(String::new(), |mut out, c| {
                if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                    out.push('\\');
                }
                out.push(c);
                out
            })
        })
        .collect::<Vec<_>>()
        .join("*")
}

/// Milliseconds left, -1 for no expiry (as PTTL says it).
fn ttl_ms(ttl: Remaining) -> i64 {
    match ttl {
        Remaining::Left(d) => d.as_millis() as i64,
        Remaining::Forever => -1,
        Remaining::Absent => -2,
    }
}

fn ttl_text(ttl: Remaining) -> String {
    match ttl {
        Remaining::Left(d) => {
            humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
        }
        Remaining::Forever => "no expiry".into(),
        Remaining::Absent => "gone".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_pattern_puts_a_star_for_the_key_and_escapes_globs() {
        assert_eq!(scan_pattern("product:{key}"), "product:*");
        assert_eq!(scan_pattern("t[1]:{key}:v"), "t\\[1\\]:*:v");
    }

    #[test]
    fn an_absent_key_is_expired_only_when_its_warming_is_older_than_the_ttl() {
        let ttl = Duration::from_secs(60);
        assert_eq!(
            status(Remaining::Absent, Some(0), ttl, 60_000),
            Status::Expired
        );
        assert_eq!(
            status(Remaining::Absent, Some(1), ttl, 60_000),
            Status::Missing
        );
        assert_eq!(
            status(Remaining::Absent, None, ttl, 60_000),
            Status::Missing
        );
        let left = Remaining::Left(Duration::from_secs(5));
        assert_eq!(status(left, Some(0), ttl, 600_000), Status::Warm(left));
    }
}
