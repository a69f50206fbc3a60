//! `hotctl keys | diff`: what Redis holds of a topology's warmed keys.
//!
//! `keys` walks every node (ring nodes and backups, the Sentinel master, each listed
//! cluster node) with `SCAN MATCH <redis.key with {key} as *>`, never `KEYS`, which would
//! block a node for the whole key space. Fast mode prints what SCAN returns; `--verify`
//! asks each key's `PTTL` (pipelined) and keeps only keys that still exist, with the time
//! they have left. `diff` starts from the hot lists instead and says, per hot key, whether
//! Redis holds it.
//!
//! Both go on when a node is down, which is when an operator needs them most: a ring
//! primary that does not answer is skipped and its keys are read on its backup (which
//! `keys` walks anyway, and `diff` asks in its place); a node without a backup is skipped.
//! Every such node is named in the output (`down` in JSON), and the command then exits 1:
//! the result is partial. Exit 0 means every node was read.

use std::time::Duration;

use clap::Args;
use comfy_table::Table;
use hotkeys::Topology;
use hotkeys::hotlist::now_ms;
use hotkeys::redis::{CacheError, CacheNodes, NodeConn, Remaining, cache_key, pttls};
use hotkeys::zk::Zk;
use serde_json::json;

use crate::error::Context;
use crate::render::{printable, seconds};

#[derive(Args)]
pub struct KeysArgs {
    /// Keep only keys that still exist, with their remaining TTL (one PTTL per key).
    #[arg(long)]
    verify: bool,
    /// SCAN's COUNT hint: keys a node examines per call.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Stop after this many keys (over all nodes).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
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

/// A node that did not answer, and where its keys were read instead.
struct Down {
    node: String,
    backup: Option<String>,
    error: String,
}

impl Down {
    fn note(&self) -> String {
        match &self.backup {
            Some(b) => format!(
                "{} is down ({}); its keys were read on its backup {b}",
                self.node, self.error
            ),
            None => format!(
                "{} is down ({}); skipped, its keys are not included",
                self.node, self.error
            ),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"node": self.node, "read_on": self.backup, "error": self.error})
    }
}

/// An error (exit 1: the result is partial) when some node was down, after everything was
/// printed.
fn complete(down: &[Down]) -> crate::error::Result<()> {
    match down.len() {
        0 => Ok(()),
        n => crate::error::bail!("partial result: {n} node(s) did not answer (named above)"),
    }
}

pub async fn keys(topology: &Topology, args: KeysArgs) -> crate::error::Result<()> {
    let listing = list_keys(topology, &args).await?;
    if args.json {
        print_json(&listing, &args)?;
    } else {
        print_table(&listing, &args);
    }
    complete(&listing.down)
}

/// What `keys` found on the nodes that answered, and the nodes that did not.
struct Listing {
    /// The SCAN pattern.
    pattern: String,
    found: Vec<Found>,
    down: Vec<Down>,
    /// True when the walk stopped at `--limit`.
    limited: bool,
}

/// Walks every node until `--limit` keys are found, noting the nodes that are down.
async fn list_keys(topology: &Topology, args: &KeysArgs) -> crate::error::Result<Listing> {
    let cache = CacheNodes::connect_lazily(&topology.redis).await?;
    let pattern = scan_pattern(&topology.redis.key);
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut found = Vec::new();
    let mut down = Vec::new();
    for mut node in cache.every_node().await? {
        if found.len() >= limit {
            break;
        }
        let wanted = limit - found.len();
        match node_keys(&mut node, &pattern, args, topology.redis.pipeline, wanted).await {
            Ok(keys) => found.extend(keys),
            Err(e) if e.is_unreachable() => down.push(Down {
                node: node.name,
                backup: node.backup,
                error: e.to_string(),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    let limited = found.len() >= limit;
    Ok(Listing {
        pattern,
        found,
        down,
        limited,
    })
}

/// `keys --json`: one document.
fn print_json(listing: &Listing, args: &KeysArgs) -> crate::error::Result<()> {
    let keys: Vec<_> = listing
        .found
        .iter()
        .map(|f| match f.ttl {
            Some(ttl) => json!({"node": f.node, "key": f.key, "ttl_ms": ttl_ms(ttl)}),
            None => json!({"node": f.node, "key": f.key}),
        })
        .collect();
    let doc = json!({
        "pattern": listing.pattern,
        "verified": args.verify,
        "count": listing.found.len(),
        "limited": listing.limited,
        "complete": listing.down.is_empty(),
        "down": listing.down.iter().map(Down::json).collect::<Vec<_>>(),
        "keys": keys,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// `keys`: a table, a count line, and a note per node that was down.
fn print_table(listing: &Listing, args: &KeysArgs) {
    let mut table = Table::new();
    table.set_header(["node", "key", "ttl"]);
    for f in &listing.found {
        table.add_row([
            f.node.clone(),
            printable(&f.key),
            f.ttl.map_or_else(|| "-".into(), ttl_text),
        ]);
    }
    println!("{table}");
    let how = if args.verify { "existing" } else { "listed" };
    let stop = if listing.limited {
        " (stopped at --limit)"
    } else {
        ""
    };
    println!(
        "{} keys {how} matching {}{stop}",
        listing.found.len(),
        listing.pattern
    );
    for d in &listing.down {
        println!("{}", d.note());
    }
}

/// Up to `limit` keys of one node matching `pattern`, with their TTL under `--verify`.
async fn node_keys(
    node: &mut NodeConn,
    pattern: &str,
    args: &KeysArgs,
    pipeline: usize,
    limit: usize,
) -> Result<Vec<Found>, CacheError> {
    let failed = |source| CacheError::Command {
        node: node.name.clone(),
        source,
    };
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(args.count)
            .query_async(&mut node.conn)
            .await
            .map_err(failed)?;
        keys.extend(batch);
        if next == 0 || keys.len() >= limit {
            break;
        }
        cursor = next;
    }
    // SCAN may return a key twice (when the node rehashes meanwhile).
    keys.sort();
    keys.dedup();
    keys.truncate(limit);
    let found = |key, ttl| Found {
        node: node.name.clone(),
        key,
        ttl,
    };
    if !args.verify {
        return Ok(keys.into_iter().map(|k| found(k, None)).collect());
    }
    let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    let ttls = pttls(&mut node.conn, &asked, pipeline)
        .await
        .map_err(failed)?;
    Ok(keys
        .into_iter()
        .zip(ttls)
        .filter(|(_, ttl)| *ttl != Remaining::Absent)
        .map(|(key, ttl)| found(key, Some(ttl)))
        .collect())
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
    /// No node that may hold it answered.
    Unknown,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Warm(_) => "warm",
            Status::Expired => "expired",
            Status::Missing => "missing",
            Status::Unknown => "unknown",
        }
    }
}

fn status(
    ttl: Option<Remaining>,
    warmed_at_ms: Option<i64>,
    cfg_ttl: Duration,
    now_ms: i64,
) -> Status {
    match (ttl, warmed_at_ms) {
        (None, _) => Status::Unknown,
        (Some(Remaining::Absent), Some(at)) if now_ms - at >= cfg_ttl.as_millis() as i64 => {
            Status::Expired
        }
        (Some(Remaining::Absent), _) => Status::Missing,
        (Some(present), _) => Status::Warm(present),
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
    /// `warm`, `expired`, `missing` or `unknown`.
    pub fn status(&self) -> &'static str {
        self.status.name()
    }

    fn to_json(&self) -> serde_json::Value {
        let mut row = json!({"task": self.task, "hot_key": self.hot_key, "key": self.cache_key, "status": self.status()});
        if let Status::Warm(ttl) = self.status {
            row["ttl_ms"] = json!(ttl_ms(ttl));
        }
        row
    }
}

/// How many hot keys have each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub warm: usize,
    pub expired: usize,
    pub missing: usize,
    pub unknown: usize,
}

impl Counts {
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a DiffRow>) -> Counts {
        let mut counts = Counts::default();
        for row in rows {
            match row.status {
                Status::Warm(_) => counts.warm += 1,
                Status::Expired => counts.expired += 1,
                Status::Missing => counts.missing += 1,
                Status::Unknown => counts.unknown += 1,
            }
        }
        counts
    }
}

/// Every hot key of the tasks asked for, against Redis, and the nodes that did not answer.
pub struct Diff {
    pub rows: Vec<DiffRow>,
    down: Vec<Down>,
}

impl Diff {
    /// The document `hotctl diff --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let counts = Counts::of(&self.rows);
        json!({
            "warm": counts.warm,
            "expired": counts.expired,
            "missing": counts.missing,
            "unknown": counts.unknown,
            "complete": self.down.is_empty(),
            "down": self.down.iter().map(Down::json).collect::<Vec<_>>(),
            "keys": self.rows.iter().map(DiffRow::to_json).collect::<Vec<_>>(),
        })
    }

    /// [`Counts`] of each task, in task order.
    pub fn counts_by_task(&self) -> Vec<(u32, Counts)> {
        let mut tasks: Vec<u32> = self.rows.iter().map(|r| r.task).collect();
        tasks.dedup();
        tasks
            .into_iter()
            .map(|task| {
                (
                    task,
                    Counts::of(self.rows.iter().filter(|r| r.task == task)),
                )
            })
            .collect()
    }

    /// One sentence per node that was down.
    pub fn notes(&self) -> Vec<String> {
        self.down.iter().map(Down::note).collect()
    }
}

/// Every hot key of `task` (every task when `None`) with what Redis holds of it.
pub async fn diff_report(topology: &Topology, task: Option<u32>) -> crate::error::Result<Diff> {
    let zk = Zk::connect(topology)
        .await
        .context("connecting to ZooKeeper")?;
    let cache = CacheNodes::connect_lazily(&topology.redis).await?;
    diff_report_on(topology, &zk, &cache, task).await
}

/// [`diff_report`] on a session and cache connections the caller keeps (the dashboard).
pub async fn diff_report_on(
    topology: &Topology,
    zk: &Zk,
    cache: &CacheNodes,
    task: Option<u32>,
) -> crate::error::Result<Diff> {
    let tasks = match task {
        Some(t) => vec![t],
        None => zk.list_tasks().await?,
    };
    let now = now_ms();
    let mut rows = Vec::new();
    let mut unreadable: Vec<CacheError> = Vec::new();
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
        let readable = cache.remaining_readable(&keys).await?;
        unreadable.extend(readable.unreadable);
        for ((item, key), ttl) in hot.value.items.iter().zip(keys).zip(readable.ttls) {
            rows.push(DiffRow {
                task,
                hot_key: item.key.clone(),
                cache_key: key,
                status: status(ttl, warmed_at, topology.redis.ttl, now),
            });
        }
    }
    let down = diff_outage(cache, unreadable);
    Ok(Diff { rows, down })
}

pub async fn diff(topology: &Topology, args: DiffArgs) -> crate::error::Result<()> {
    let diff = diff_report(topology, args.task).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diff.to_json())?);
    } else {
        let mut table = Table::new();
        table.set_header(["task", "hot key", "cache key", "status", "ttl"]);
        for row in &diff.rows {
            let ttl = match row.status {
                Status::Warm(ttl) => ttl_text(ttl),
                _ => "-".into(),
            };
            table.add_row([
                row.task.to_string(),
                printable(&row.hot_key),
                printable(&row.cache_key),
                row.status().into(),
                ttl,
            ]);
        }
        println!("{table}");
        let c = Counts::of(&diff.rows);
        println!(
            "{} warm, {} expired, {} missing, {} unknown",
            c.warm, c.expired, c.missing, c.unknown
        );
        for note in diff.notes() {
            println!("{note}");
        }
    }
    complete(&diff.down)
}

/// The nodes `diff` could not read: primaries served by their backup (the failover knew
/// before asking), then nodes that failed when asked, each once.
fn diff_outage(cache: &CacheNodes, unreadable: Vec<CacheError>) -> Vec<Down> {
    let mut down: Vec<Down> = cache
        .failed_over()
        .into_iter()
        .map(|(node, backup)| Down {
            node,
            backup: Some(backup),
            error: "not answering its health checks".into(),
        })
        .collect();
    for e in unreadable {
        let CacheError::Command { node, .. } = &e else {
            continue;
        };
        if down.iter().all(|d| &d.node != node) {
            down.push(Down {
                node: node.clone(),
                backup: None,
                error: e.to_string(),
            });
        }
    }
    down
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
        Remaining::Left(d) => seconds(d),
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
    fn an_absent_key_is_expired_only_when_its_warming_is_older_than_the_ttl_and_unread_is_unknown()
    {
        let ttl = Duration::from_secs(60);
        assert_eq!(
            status(Some(Remaining::Absent), Some(0), ttl, 60_000),
            Status::Expired
        );
        assert_eq!(
            status(Some(Remaining::Absent), Some(1), ttl, 60_000),
            Status::Missing
        );
        assert_eq!(
            status(Some(Remaining::Absent), None, ttl, 60_000),
            Status::Missing
        );
        let left = Remaining::Left(Duration::from_secs(5));
        assert_eq!(
            status(Some(left), Some(0), ttl, 600_000),
            Status::Warm(left)
        );
        assert_eq!(status(None, Some(0), ttl, 60_000), Status::Unknown);
    }
}
