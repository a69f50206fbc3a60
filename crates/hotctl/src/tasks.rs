//! `hotctl tasks | hot | watch | reset`: what ZooKeeper holds for a topology's tasks, for
//! the primary counter or any `[[counter]]` (`--counter`).
//!
//! Tables on a terminal, JSON (`--json`) for scripts; both come from the same values
//! (`hotkeys::zk::TaskView`, `hotkeys::zk::subscribe::HotSet`) so they never disagree.

use std::io::IsTerminal;

use clap::Args;
use comfy_table::Table;
use hotkeys::Topology;
use hotkeys::config::PRIMARY_COUNTER;
use hotkeys::hotlist::{HotItem, HotList, merge, now_ms};
use hotkeys::zk::subscribe::{HotSet, subscribe};
use hotkeys::zk::{TaskView, Zk};

use crate::error::{Context, bail};
use crate::render::{printable, seconds_ms};
use serde_json::json;

/// Which counter a command reads.
#[derive(Args)]
pub struct CounterArg {
    /// A `[[counter]]` of the topology; the product counter when absent.
    #[arg(long, default_value = PRIMARY_COUNTER)]
    counter: String,
}

#[derive(Args)]
pub struct TasksArgs {
    #[command(flatten)]
    counter: CounterArg,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct HotArgs {
    #[command(flatten)]
    counter: CounterArg,
    /// Only this task; all tasks merged when absent.
    task: Option<u32>,
    /// Items to show.
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    counter: CounterArg,
    /// Items of the merged list to show.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// One JSON line per change instead of a redrawn screen.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ResetArgs {
    /// Delete the `warmed` marks, so the next prewarm loads every task again. With `--yes`,
    /// the whole subtree goes, marks included.
    #[arg(long)]
    warmed: bool,
    /// Required to delete the whole topology subtree (hot lists and checkpoints included).
    #[arg(long)]
    yes: bool,
    /// Reset even while hot-counter workers are in the consumer group. They keep their
    /// counts and publish them again (nothing counted is lost); only the history in
    /// ZooKeeper and the warmed marks go.
    #[arg(long)]
    force: bool,
}

pub async fn tasks(topology: &Topology, args: TasksArgs) -> crate::error::Result<()> {
    let views = connect(topology, &args.counter).await?.task_views().await?;
    if args.json {
        let doc: Vec<_> = views.iter().map(task_json).collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{}", tasks_table(&views));
    }
    Ok(())
}

pub async fn hot(topology: &Topology, args: HotArgs) -> crate::error::Result<()> {
    let zk = connect(topology, &args.counter).await?;
    let items = match args.task {
        Some(task) => {
            let hot = zk
                .read_hot(task)
                .await?
                .with_context(|| format!("task {task} has no hot list"))?;
            hot.value.items.into_iter().take(args.top).collect()
        }
        None => merged(&zk.task_views().await?, args.top),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        println!("{}", items_table(&items));
    }
    Ok(())
}

pub async fn watch(topology: &Topology, args: WatchArgs) -> crate::error::Result<()> {
    let mut subscription = subscribe(topology, &args.counter.counter).await?;
    let terminal = std::io::stdout().is_terminal() && !args.json;
    loop {
        let mut set = tokio::select! {
            set = subscription.next() => set,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        set.items.truncate(args.top);
        if args.json {
            println!("{}", serde_json::to_string(&set)?);
        } else {
            if terminal {
                print!("\x1b[2J\x1b[H");
            }
            println!("{}\n{}", versions_table(&set), items_table(&set.items));
        }
    }
}

pub async fn reset(topology: &Topology, args: ResetArgs) -> crate::error::Result<()> {
    // Warmed marks and the subtree belong to the topology, not to one counter.
    let zk = Zk::connect(topology).await?;
    if args.warmed && !args.yes {
        let tasks = zk.list_tasks().await?;
        for &task in &tasks {
            zk.clear_warmed(task).await?;
        }
        println!("cleared the warmed marks of {} tasks", tasks.len());
        return Ok(());
    }
    if !args.yes {
        bail!(
            "this deletes every hot list, checkpoint and warmed mark of `{}`; add --yes, or use --warmed alone",
            topology.name
        );
    }
    let members = hotkeys::kafka::group_members(&topology.kafka, &topology.kafka.group)
        .await
        .with_context(|| {
            format!(
                "cannot ask Kafka who is in group `{}`",
                topology.kafka.group
            )
        })?;
    if !members.is_empty() && !args.force {
        let list: Vec<String> = members
            .iter()
            .map(|m| format!("{} on {}", m.client_id, m.host))
            .collect();
        bail!(
            "{} hot-counter worker(s) of group `{}` own tasks: {}. They publish their counts again \
             right after the reset (nothing is lost); add --force to reset under them",
            members.len(),
            topology.kafka.group,
            list.join(", ")
        );
    }
    zk.delete_all().await?;
    println!(
        "deleted {} (hot lists, checkpoints, warmed marks){}",
        zk.layout().base(),
        if members.is_empty() {
            String::new()
        } else {
            format!("; {} running worker(s) will publish again", members.len())
        }
    );
    Ok(())
}

/// A session scoped to the counter; an unknown counter is an error, not an empty view.
async fn connect(topology: &Topology, counter: &CounterArg) -> crate::error::Result<Zk> {
    if topology.counter(&counter.counter).is_none() {
        bail!(
            "topology `{}` has no counter `{}`",
            topology.name,
            counter.counter
        );
    }
    Ok(Zk::connect(topology).await?.for_counter(&counter.counter))
}

pub fn merged(views: &[TaskView], n: usize) -> Vec<HotItem> {
    merge(
        views
            .iter()
            .filter_map(|v| v.hot.as_ref().map(|h| &h.value)),
        n,
    )
}

pub fn task_json(v: &TaskView) -> serde_json::Value {
    json!({
        "task": v.task,
        "owner": v.hot.as_ref().and_then(|h| h.value.owner.clone()),
        "version": v.hot.as_ref().map(|h| h.version),
        "offset": v.hot.as_ref().map(|h| h.value.offset),
        "age_ms": v.hot.as_ref().map(|h| now_ms() - h.value.generated_at_ms),
        "items": v.hot.as_ref().map(|h| h.value.items.len()),
        "events": v.hot.as_ref().map(|h| h.value.events),
        "malformed": v.hot.as_ref().map(|h| h.value.malformed),
        "key_too_long": v.hot.as_ref().map(|h| h.value.key_too_long),
        "future": v.hot.as_ref().map(|h| h.value.future),
        "late": v.hot.as_ref().map(|h| h.value.late),
        "truncated": v.hot.as_ref().map(|h| h.value.truncated),
        "exact": v.hot.as_ref().and_then(|h| h.value.exact),
        "warmed": v.warmed.as_ref().map(|w| &w.value),
        "warm": v.is_warm(),
        "lock": v.lock.as_ref().map(|l| &l.value),
    })
}

fn tasks_table(views: &[TaskView]) -> Table {
    let mut table = Table::new();
    table.set_header([
        "task", "owner", "version", "age", "items", "events", "skipped", "warmed", "lock",
    ]);
    for v in views {
        let hot = v.hot.as_ref();
        let warmed = match (&v.warmed, v.is_warm()) {
            (None, _) => "-".to_string(),
            (Some(w), true) => format!("v{} ({} rows)", w.value.hot_version, w.value.rows),
            (Some(w), false) => format!("stale (v{})", w.value.hot_version),
        };
        table.add_row([
            v.task.to_string(),
            hot.and_then(|h| h.value.owner.clone())
                .unwrap_or("-".into()),
            hot.map_or("-".into(), |h| h.version.to_string()),
            hot.map_or("-".into(), |h| {
                seconds_ms(now_ms() - h.value.generated_at_ms)
            }),
            hot.map_or("-".into(), |h| h.value.items.len().to_string()),
            hot.map_or("-".into(), |h| h.value.events.to_string()),
            hot.map_or("-".into(), |h| skipped(&h.value)),
            warmed,
            v.lock.as_ref().map_or("-".into(), |l| l.value.holder()),
        ]);
    }
    table
}

/// What a task did not count as it came, in one cell: malformed events (of them, keys over
/// the length limit), events stamped in the future (counted as now), late events (not
/// counted); `-` when nothing.
fn skipped(list: &HotList) -> String {
    let mut parts = Vec::new();
    if list.malformed > 0 {
        parts.push(if list.key_too_long > 0 {
            format!(
                "{} malformed ({} long keys)",
                list.malformed, list.key_too_long
            )
        } else {
            format!("{} malformed", list.malformed)
        });
    }
    if list.future > 0 {
        parts.push(format!("{} future", list.future));
    }
    if list.late > 0 {
        parts.push(format!("{} late", list.late));
    }
    if list.truncated {
        parts.push("list truncated".into());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn versions_table(set: &HotSet) -> Table {
    let mut table = Table::new();
    table.set_header(["counter", "task", "version", "changed"]);
    for (task, version) in &set.versions {
        table.add_row([
            set.counter.clone(),
            task.to_string(),
            version.to_string(),
            if set.changed.contains(task) { "*" } else { "" }.to_string(),
        ]);
    }
    table
}

fn items_table(items: &[HotItem]) -> Table {
    let mut table = Table::new();
    table.set_header(["rank", "key", "count", "± error"]);
    for (i, item) in items.iter().enumerate() {
        table.add_row([
            (i + 1).to_string(),
            printable(&item.key),
            item.count.to_string(),
            item.error.map_or("-".into(), |e| e.to_string()),
        ]);
    }
    table
}
