//! The command line: global options that override the topology, and the two modes.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hotkeys::Topology;
use hotkeys::cli::TopologyArg;

use crate::format::Format;
use crate::synthetic::{Burst, Drift, Rate};

/// Publishes access events to Kafka, keyed by product id, so one product always lands in one
/// partition: replays OpenResty JSON and nginx access logs, or generates a Zipf workload.
#[derive(Debug, Parser)]
#[command(name = "access-producer", version)]
pub struct Cli {
    #[command(flatten)]
    pub topology: TopologyArg,
    /// Kafka bootstrap servers; overrides kafka.brokers.
    #[arg(long, global = true)]
    pub brokers: Option<String>,
    /// Topic to publish to; overrides kafka.topic.
    #[arg(long, global = true)]
    pub topic: Option<String>,
    /// Partitions of the topic when it has to be created; overrides kafka.partitions.
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub partitions: Option<u32>,
    /// No progress line and no summary (errors are still logged).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Kafka producer clients publishing in parallel, each owning a share of the partitions
    /// (per-key order is kept); 1 leaves placement to the configured partitioner.
    #[arg(long, global = true, value_name = "N", default_value_t = 3, value_parser = producers)]
    pub producers: usize,
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Publish access events read from files or stdin, in input order for each key.
    ///
    /// Lines may be OpenResty JSON events (published unchanged, keyed by the topology's
    /// source.key pointer) or nginx `combined` access-log lines (converted to OpenResty JSON,
    /// keyed by the source.query_param argument); gzip input is decoded transparently.
    /// Malformed lines and events without a key are counted, sampled and skipped.
    Replay(ReplayArgs),
    /// Publish a synthetic workload: Zipf-distributed product views as OpenResty JSON.
    ///
    /// The same seed and options give the same stream, byte for byte.
    Synthetic(SyntheticArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Input files; none or `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Input format; `auto` decides per line.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Exit with code 2 at the first malformed line instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Write the (converted) events to FILE, one per line, instead of Kafka; `.gz` is
    /// compressed, `-` is stdout.
    #[arg(long, value_name = "FILE")]
    pub write: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SyntheticArgs {
    /// Events to send; without it, runs until SIGINT/SIGTERM.
    #[arg(long, short = 'n', value_name = "N")]
    pub events: Option<u64>,
    /// Events per second, `R` or `R/s`; as fast as possible without it.
    #[arg(long, value_name = "R/s")]
    pub rate: Option<Rate>,
    /// Distinct products; ids are 1..=K.
    #[arg(long, value_name = "K", default_value_t = 100_000)]
    pub keys: u64,
    /// Zipf exponent of product popularity: 0 is uniform, about 1 is typical web traffic.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub zipf: f64,
    /// Distinct shops; every product belongs to one.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub shops: u64,
    /// Distinct callers: each event gets an `x-real-ip` header (and X-Real-IP request line)
    /// drawn with the same Zipf exponent, for caller counters and threshold rules. 0 (the
    /// default) leaves the header out.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub callers: u64,
    /// Seed of the stream; a random one is chosen (and printed) without it.
    #[arg(long, value_name = "X")]
    pub seed: Option<u64>,
    /// Flash crowd: from START (until END) product KEY takes SHARE of all traffic. START and
    /// END are event numbers, or durations such as 30s with --rate. Repeatable.
    #[arg(long, value_name = "KEY@START[..END]:SHARE")]
    pub burst: Vec<Burst>,
    /// Shift the hot set: every PERIOD (events, or a duration with --rate) popularity ranks
    /// move by STEP (default 100), so warm products become the hot ones.
    #[arg(long, value_name = "PERIOD[:STEP]")]
    pub drift: Option<Drift>,
    /// Write the stream to FILE, one event per line, instead of Kafka; `.gz` is compressed,
    /// `-` is stdout.
    #[arg(long, value_name = "FILE")]
    pub write: Option<PathBuf>,
}

fn producers(s: &str) -> Result<usize, String> {
    match s.parse() {
        Ok(n @ 1..=64) => Ok(n),
        _ => Err("expected 1 to 64".into()),
    }
}

impl Cli {
    /// Applies the flags that override topology keys; flags win over the file and HOTKEYS_*.
    pub fn apply_overrides(&self, topology: &mut Topology) {
        if let Some(b) = &self.brokers {
            topology.kafka.brokers.clone_from(b);
        }
        if let Some(t) = &self.topic {
            topology.kafka.topic.clone_from(t);
        }
        if let Some(p) = self.partitions {
            topology.kafka.partitions = p;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_override_the_topology_from_any_position() {
        let cli = Cli::parse_from([
            "access-producer",
            "synthetic",
            "--events",
            "5",
            "--brokers",
            "b:1",
            "--topic",
            "t",
            "--partitions",
            "3",
        ]);
        let mut t = Topology::default();
        cli.apply_overrides(&mut t);
        assert_eq!(
            (
                t.kafka.brokers.as_str(),
                t.kafka.topic.as_str(),
                t.kafka.partitions
            ),
            ("b:1", "t", 3)
        );
    }

    #[test]
    fn synthetic_options_parse_their_grammar() {
        let cli = Cli::parse_from([
            "access-producer",
            "synthetic",
            "--rate",
            "500/s",
            "--burst",
            "42@10s:0.3",
            "--burst",
            "43@100..200:0.1",
            "--drift",
            "1m:50",
        ]);
        let Mode::Synthetic(s) = cli.mode else {
            panic!("not synthetic")
        };
        assert_eq!(s.rate, Some(Rate(500.0)));
        assert_eq!(s.burst.len(), 2);
        assert_eq!(s.drift.unwrap().step, 50);
        assert_eq!(s.events, None);
    }

    #[test]
    fn bad_option_values_are_usage_errors() {
        for args in [
            &["access-producer", "synthetic", "--burst", "42"][..],
            &["access-producer", "synthetic", "--rate", "-1"],
            &["access-producer", "replay", "--format", "csv"],
            &["access-producer", "--partitions", "0", "replay"],
            &["access-producer", "--producers", "0", "replay"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), hotkeys::cli::exit::USAGE, "{args:?}");
        }
    }
}
