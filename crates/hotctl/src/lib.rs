//! hotctl: the operator's command line. Each subcommand group lives in its own module;
//! [`run`] dispatches a parsed command to it.
//!
//! | module | owns |
//! |---|---|
//! | `db` | the catalogue database: migrations, seed data |
//! | `tasks` | what ZooKeeper holds per task: tasks, hot lists, the live watch, reset |
//! | `blacklist` | the threshold rules' bans, and lifting them |
//! | `keys` | what Redis holds: the warmed keys, a hot list against the cache |
//! | `dashboard` | the web UI, JSON API, SSE stream and history recorder |
//! | `render` | terminal tables and durations |
//! | [`error`] | why a command failed, and its exit code |

mod blacklist;
mod dashboard;
mod db;
pub mod error;
mod keys;
mod render;
mod tasks;

use clap::{Parser, Subcommand};
use hotkeys::Topology;
use hotkeys::cli::TopologyArg;

pub use error::{Error, Result};

#[derive(Parser)]
#[command(
    name = "hotctl",
    version,
    about = "Operate a hotkeys pipeline: its database, tasks, hot lists and locks."
)]
pub struct Cli {
    #[command(flatten)]
    pub topology: TopologyArg,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The product catalogue in MySQL: schema migrations and seed data.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Every task: owner, hot-list version and age, items, warmed status, lock holder.
    Tasks(tasks::TasksArgs),
    /// One task's hot list, or all tasks merged and sorted.
    Hot(tasks::HotArgs),
    /// A live view of a counter's merged hot set, updated whenever a task publishes;
    /// `--json` prints one line per update.
    Watch(tasks::WatchArgs),
    /// Keys the threshold rules ban, with the time left on each ban.
    Blacklist(blacklist::BlacklistArgs),
    /// Lift bans now.
    Unban(blacklist::UnbanArgs),
    /// Clear the warmed marks (--warmed) or delete the topology's whole subtree (--yes).
    Reset(tasks::ResetArgs),
    /// The warmed keys on every Redis node (SCAN); --verify keeps only live keys, with TTL.
    Keys(keys::KeysArgs),
    /// A hot list against Redis: which hot keys are warm, missing or expired.
    Diff(keys::DiffArgs),
    /// The web dashboard, JSON API and SSE stream; records hot-key history into MySQL.
    Dashboard(dashboard::DashboardArgs),
}

/// Runs one command against `topology` until it is done (the dashboard: until a signal).
pub async fn run(topology: &Topology, command: Command) -> Result<()> {
    match command {
        Command::Db(cmd) => db::run(topology, cmd).await,
        Command::Tasks(args) => tasks::tasks(topology, args).await,
        Command::Hot(args) => tasks::hot(topology, args).await,
        Command::Watch(args) => tasks::watch(topology, args).await,
        Command::Reset(args) => tasks::reset(topology, args).await,
        Command::Blacklist(args) => blacklist::show(topology, args).await,
        Command::Unban(args) => blacklist::unban(topology, args).await,
        Command::Keys(args) => keys::keys(topology, args).await,
        Command::Diff(args) => keys::diff(topology, args).await,
        Command::Dashboard(args) => dashboard::run(topology, args).await,
    }
}
