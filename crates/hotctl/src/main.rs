//! `hotctl`: the operator's command line. Each subcommand group lives in its own module
//! (`db` for the catalogue database, `tasks` for what ZooKeeper holds per task, `blacklist`
//! for the threshold rules' bans, `keys` for what Redis holds, `dashboard` for the web UI and
//! API); this file only parses arguments, loads the topology, dispatches, and turns errors
//! into the exit codes of `hotkeys::exit`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hotkeys::blacklist::BlacklistError;
use hotkeys::cli::TopologyArg;
use hotkeys::config::ConfigError;
use hotkeys::exit;
use hotkeys::mysql::MysqlError;
use hotkeys::redis::CacheError;
use hotkeys::zk::ZkError;
use hotkeys::zk::subscribe::SubscribeError;

mod blacklist;
mod dashboard;
mod db;
mod keys;
mod render;
mod tasks;

#[derive(Parser)]
#[command(
    name = "hotctl",
    version,
    about = "Operate a hotkeys pipeline: its database, tasks, hot lists and locks."
)]
struct Cli {
    #[command(flatten)]
    topology: TopologyArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    hotkeys::telemetry::init_logs();
    let cli = Cli::parse();
    let topology = match cli.topology.load() {
        Ok(t) => t,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hotctl: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED as u8);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Db(cmd) => db::run(&topology, cmd).await,
            Command::Tasks(args) => tasks::tasks(&topology, args).await,
            Command::Hot(args) => tasks::hot(&topology, args).await,
            Command::Watch(args) => tasks::watch(&topology, args).await,
            Command::Reset(args) => tasks::reset(&topology, args).await,
            Command::Blacklist(args) => blacklist::show(&topology, args).await,
            Command::Unban(args) => blacklist::unban(&topology, args).await,
            Command::Keys(args) => keys::keys(&topology, args).await,
            Command::Diff(args) => keys::diff(&topology, args).await,
            Command::Dashboard(args) => dashboard::run(&topology, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(e) => {
            eprintln!("hotctl: {e:#}");
            ExitCode::from(exit_code(&e) as u8)
        }
    }
}

/// The exit code an error deserves: 3 when a dependency is unreachable, 2 for bad
/// configuration, 1 for anything else.
fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(m) = cause.downcast_ref::<MysqlError>() {
            return match m {
                _ if m.is_unreachable() => exit::UNREACHABLE,
                // A refused login or unknown database is the configuration's to fix.
                MysqlError::BadUrl(_) | MysqlError::BadQuery(_) | MysqlError::Rejected { .. } => {
                    exit::USAGE
                }
                _ => exit::FAILED,
            };
        }
        let zk = match cause.downcast_ref::<SubscribeError>() {
            Some(SubscribeError::ZooKeeper(z)) => Some(z),
            _ => cause.downcast_ref::<ZkError>(),
        };
        if let Some(z) = zk {
            return match z {
                ZkError::Unreachable { .. } | ZkError::Timeout => exit::UNREACHABLE,
                _ => exit::FAILED,
            };
        }
        if let Some(c) = cause.downcast_ref::<CacheError>() {
            return match c {
                _ if c.is_unreachable() => exit::UNREACHABLE,
                _ if c.is_refused_login() => exit::USAGE,
                CacheError::Config(_) | CacheError::Ring(_) => exit::USAGE,
                _ => exit::FAILED,
            };
        }
        if let Some(BlacklistError::Redis(r)) = cause.downcast_ref::<BlacklistError>()
            && hotkeys::redis::connection_failed(r)
        {
            return exit::UNREACHABLE;
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return exit::USAGE;
        }
    }
    exit::FAILED
}
