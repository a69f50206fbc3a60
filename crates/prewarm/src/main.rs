//! `prewarm`: warms Redis from MySQL for every task whose hot list is not warmed yet.
//! Parses flags, loads the topology, runs `prewarm::run`, prints the summary, exits with
//! the code of `hotkeys::exit`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hotkeys::cli::TopologyArg;
use hotkeys::exit;
use prewarm::{Mode, Options};

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
    hotkeys::telemetry::init_logs();
    let cli = Cli::parse();
    let topology = match cli.topology.load() {
        Ok(t) => t,
        Err(code) => return code,
    };
    let opts = Options {
        mode: if cli.watch { Mode::Watch } else { Mode::Once },
        concurrency: usize::from(cli.concurrency),
        force: cli.force,
        dry_run: cli.dry_run,
        retry_for: cli.retry_for,
        wait_for_others: cli.wait_for_others,
        interval: cli.interval,
        progress: std::io::stderr().is_terminal(),
        hold_lock: cli.debug_hold_lock,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("prewarm: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED as u8);
        }
    };
    let code = runtime.block_on(async {
        if let Some(addr) = cli.metrics
            && let Err(e) = hotkeys::telemetry::serve_metrics(addr)
        {
            eprintln!("prewarm: --metrics {addr}: {e}");
            return exit::USAGE;
        }
        let shutdown = hotkeys::shutdown::on_signals();
        let finished = prewarm::run(topology, opts, shutdown).await;
        if cli.json {
            match serde_json::to_string_pretty(&finished.summary) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("prewarm: cannot encode the summary: {e}"),
            }
        } else if !finished.summary.tasks.is_empty() {
            print!("{}", finished.summary.to_table());
        }
        if let Some(e) = &finished.error {
            eprintln!("prewarm: {e}");
        }
        finished.exit_code()
    });
    ExitCode::from(code as u8)
}
