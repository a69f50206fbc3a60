//! `prewarm`: warms Redis from MySQL for every task whose hot list is not warmed yet.
//! Parses flags, loads the topology, runs `prewarm::run`, prints the summary, exits with
//! the code of `hotkeys::cli::exit`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hotkeys::cli::{self, Runtime, TopologyArg};
use prewarm::{Mode, Options, Summary};

#[derive(Parser)]
#[command(
    name = "prewarm",
    version,
    about = "Warm Redis from MySQL for every task whose hot list is not warmed yet; parallel processes share the work through ZooKeeper locks."
)]
struct Cli {
    #[command(flatten)]
    topology: TopologyArg,
    /// One pass over the tasks, then exit: 0 only if every task ends up warmed (the default).
    #[arg(long, conflicts_with = "watch")]
    once: bool,
    /// Keep running; warm a task again whenever its hot list moves to a new version.
    #[arg(long)]
    watch: bool,
    /// Tasks warmed at the same time by this process.
    #[arg(long, short = 'c', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Warm tasks already warmed for their version, and overwrite values already in Redis.
    #[arg(long)]
    force: bool,
    /// Read hot lists and rows and report; take no lock, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// How long an unreachable MySQL, Redis or ZooKeeper is retried before exiting with 3.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    retry_for: Duration,
    /// --once: how long tasks locked by other processes are re-checked at the end of the pass.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    wait_for_others: Duration,
    /// --watch: time between two passes over every task (publishes are warmed at once).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Test hook: hold each lock this long before loading, so a test can act mid-task.
    #[arg(long, hide = true, default_value = "0s", value_parser = humantime::parse_duration)]
    debug_hold_lock: Duration,
}

fn main() -> ExitCode {
    cli::telemetry::init_logs();
    let args = Cli::parse();
    let topology = match args.topology.load() {
        Ok(t) => t,
        Err(code) => return code,
    };
    let opts = args.options();
    let json = args.json;
    cli::run(
        "prewarm",
        Runtime::MultiThread,
        args.metrics,
        || async move {
            let shutdown = cli::shutdown::on_signals();
            let finished = prewarm::run(topology, opts, shutdown).await;
            print_summary(&finished.summary, json);
            finished.result()
        },
    )
}

impl Cli {
    fn options(&self) -> Options {
        Options {
            mode: if self.watch { Mode::Watch } else { Mode::Once },
            concurrency: usize::from(self.concurrency),
            force: self.force,
            dry_run: self.dry_run,
            retry_for: self.retry_for,
            wait_for_others: self.wait_for_others,
            interval: self.interval,
            progress: std::io::stderr().is_terminal(),
            hold_lock: self.debug_hold_lock,
        }
    }
}

/// The summary on stdout: JSON with `--json`, else a table when there were tasks.
fn print_summary(summary: &Summary, json: bool) {
    if json {
        match serde_json::to_string_pretty(summary) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("prewarm: cannot encode the summary: {e}"),
        }
    } else if !summary.tasks.is_empty() {
        print!("{}", summary.to_table());
    }
}
