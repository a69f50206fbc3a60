//! `hot-counter`: one member of the topology's Kafka consumer group.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use hot_counter::{Summary, Until};
use hotkeys::cli::{self, Runtime, TopologyArg};

/// Count hot keys per partition of the access topic and publish each task's hot list to
/// ZooKeeper. Run any number of these; Kafka spreads the partitions over them.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    topology: TopologyArg,
    /// Kafka bootstrap servers; overrides kafka.brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Consumer group of the workers; overrides kafka.group.
    #[arg(long)]
    group: Option<String>,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Stop once every assigned partition is read to its end (final publish included),
    /// and print what was counted: for backfills and benchmarks.
    #[arg(long)]
    until_caught_up: bool,
}

fn main() -> ExitCode {
    cli::telemetry::init_logs();
    let args = Args::parse();
    let mut topology = match args.topology.load() {
        Ok(t) => t,
        Err(code) => return code,
    };
    if let Some(brokers) = args.brokers {
        topology.kafka.brokers = brokers;
    }
    if let Some(group) = args.group {
        topology.kafka.group = group;
    }
    let until = if args.until_caught_up {
        Until::CaughtUp
    } else {
        Until::Shutdown
    };
    cli::run(
        "hot-counter",
        Runtime::MultiThread,
        args.metrics,
        || async move {
            let shutdown = cli::shutdown::on_signals();
            let summary = hot_counter::run(topology, shutdown, until).await?;
            if until == Until::CaughtUp {
                print_summary(&summary);
            }
            Ok::<(), hot_counter::RunError>(())
        },
    )
}

/// `--until-caught-up`: what was counted, and how fast.
fn print_summary(summary: &Summary) {
    let secs = summary.busy.as_secs_f64();
    println!(
        "counted {} events ({} malformed) in {secs:.3} s: {:.0} events/s",
        summary.events,
        summary.malformed,
        (summary.events + summary.malformed) as f64 / secs.max(1e-9)
    );
}
