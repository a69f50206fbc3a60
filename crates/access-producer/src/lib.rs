//! `access-producer`: access events into the Kafka topic of a hotkeys pipeline.
//!
//! Every message is keyed by the hot key (the product id), so all accesses of a product land
//! in one partition, which is what makes a partition a self-contained counting task.
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the command line and its topology overrides |
//! | [`format`] | input formats, per-line detection, what a line turns into |
//! | [`nginx`] | nginx `combined` lines and their conversion to OpenResty JSON |
//! | [`replay`] | reading files, stdin and gzip in order; the replay loop |
//! | [`synthetic`] | the seeded Zipf workload with bursts and drift; the paced loop |
//! | [`publish`] | the sinks: a tuned Kafka producer with delivery accounting, or a file |
//! | [`report`] | counters, bad-input samples, the progress line and the summary |
//! | [`validate`] | a fast check that a line is one complete JSON text |
//! | [`error`] | failures and their exit codes |
//!
//! [`run`] wires them: it checks the topic (creating it with the topology's partition
//! count), runs the mode's loop on a blocking thread, flushes, and prints the summary.

pub mod cli;
pub mod error;
pub mod format;
mod json;
pub mod nginx;
pub mod publish;
pub mod replay;
pub mod report;
pub mod synthetic;
pub mod validate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hotkeys::Topology;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::config::KafkaConfig;
use hotkeys::kafka::TopicState;
use rdkafka::error::KafkaError;

pub use cli::{Cli, Mode};
pub use error::Error;
pub use report::Summary;

use crate::cli::{ReplayArgs, SyntheticArgs};
use crate::format::Decoder;
use crate::publish::{FileSink, KafkaSink, Sink};
use crate::replay::Source;
use crate::report::{Progress, Stats};
use crate::synthetic::{Generator, Workload};

/// Runs the mode of `cli` against `topology` until its input ends or `shutdown` fires.
///
/// The summary is printed (unless `--quiet`) before an error is returned, so a failed run
/// still says what it did.
pub async fn run(
    cli: Cli,
    topology: Topology,
    shutdown: CancellationToken,
) -> Result<Summary, Error> {
    let output = Output {
        quiet: cli.quiet,
        metrics: cli.metrics.is_some(),
        producers: cli.producers,
    };
    if let Some(addr) = cli.metrics {
        hotkeys::cli::telemetry::serve_metrics(addr).map_err(|e| Error::Metrics(e.to_string()))?;
    }
    match cli.mode {
        Mode::Replay(args) => run_replay(args, &topology, output, shutdown).await,
        Mode::Synthetic(args) => run_synthetic(args, &topology, output, shutdown).await,
    }
}

/// `replay`: publishes the events of `args.files`, decoded by `args.format`.
async fn run_replay(
    args: ReplayArgs,
    topology: &Topology,
    output: Output,
    shutdown: CancellationToken,
) -> Result<Summary, Error> {
    let sources = Source::open_all(&args.files)?;
    let decoder = Decoder::new(args.format, &topology.source);
    let target = Target::new(args.write, &topology.kafka);
    let strict = args.strict;
    publish(
        target,
        "replay",
        None,
        output,
        shutdown,
        move |sink, stats, shutdown| {
            replay::replay(sources, decoder, strict, sink, stats, shutdown)
        },
    )
    .await
}

/// `synthetic`: publishes the workload `args` describe, from its seed (a random one,
/// logged, when none is given).
async fn run_synthetic(
    args: SyntheticArgs,
    topology: &Topology,
    output: Output,
    shutdown: CancellationToken,
) -> Result<Summary, Error> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let rate = args.rate.map(|r| r.0);
    let mut generator = Generator::new(&Workload {
        seed,
        keys: args.keys,
        zipf: args.zipf,
        shops: args.shops,
        callers: args.callers,
        bursts: args.burst,
        drift: args.drift,
        rate,
        param: topology.source.query_param.clone(),
    })?;
    if args.seed.is_none() {
        tracing::info!(
            seed,
            "no --seed given; pass this one to reproduce the stream"
        );
    }
    let target = Target::new(args.write, &topology.kafka);
    let events = args.events;
    publish(
        target,
        "synthetic",
        Some(seed),
        output,
        shutdown,
        move |sink, stats, shutdown| {
            synthetic::generate(&mut generator, events, rate, sink, stats, shutdown)
        },
    )
    .await
}

/// Where a run's events go.
enum Target {
    Kafka(KafkaConfig),
    File(PathBuf),
}

impl Target {
    fn new(write: Option<PathBuf>, kafka: &KafkaConfig) -> Target {
        match write {
            Some(path) => Target::File(path),
            None => Target::Kafka(kafka.clone()),
        }
    }
}

/// How a run publishes and reports, besides what it publishes.
#[derive(Debug, Clone, Copy)]
struct Output {
    quiet: bool,
    metrics: bool,
    /// librdkafka clients publishing in parallel.
    producers: usize,
}

/// Opens the target, runs `work` on a blocking thread, flushes, and summarises.
async fn publish<F>(
    target: Target,
    mode: &'static str,
    seed: Option<u64>,
    output: Output,
    shutdown: CancellationToken,
    work: F,
) -> Result<Summary, Error>
where
    F: FnOnce(&mut dyn Sink, &Arc<Stats>, &CancellationToken) -> Result<(), Error> + Send + 'static,
{
    let stats = Arc::new(Stats::default());
    let (mut sink, label): (Box<dyn Sink>, String) = match &target {
        Target::Kafka(kafka) => {
            let partitions = prepare_topic(kafka).await?;
            let sink = KafkaSink::new(
                kafka,
                partitions,
                output.producers,
                Arc::clone(&stats),
                shutdown.clone(),
            )?;
            (Box::new(sink), format!("topic {}", kafka.topic))
        }
        Target::File(path) => {
            let sink = FileSink::create(path, Arc::clone(&stats))?;
            (Box::new(sink), format!("file {}", path.display()))
        }
    };
    let progress = Progress::start(Arc::clone(&stats), !output.quiet, output.metrics);
    let start = Instant::now();
    let (worker_stats, token) = (Arc::clone(&stats), shutdown.clone());
    let joined = tokio::task::spawn_blocking(move || {
        let worked = work(sink.as_mut(), &worker_stats, &token);
        // Flush even after a failure: what was read before it still gets delivered.
        let finished = sink.finish();
        (worked, finished)
    })
    .await;
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.finish();
    }
    let (worked, finished) = joined.map_err(|e| Error::Thread(e.to_string()))?;
    let summary = Summary::new(mode, label, seed, elapsed, shutdown.is_cancelled(), &stats);
    if !output.quiet {
        eprint!("{summary}");
    }
    worked?;
    finished?;
    if summary.counts.failed > 0 {
        return Err(Error::Delivery {
            failed: summary.counts.failed,
            sent: summary.counts.sent,
            first: summary.first_failure.clone().unwrap_or_default(),
        });
    }
    Ok(summary)
}

/// Makes sure the topic exists with the topology's partitions, says what it found, and
/// returns its partition count.
async fn prepare_topic(kafka: &KafkaConfig) -> Result<usize, Error> {
    match hotkeys::kafka::ensure_topic(kafka).await {
        Ok(TopicState::Created) => {
            tracing::info!(topic = %kafka.topic, partitions = kafka.partitions, "created the topic");
            Ok(kafka.partitions as usize)
        }
        Ok(TopicState::Exists { partitions }) if partitions != kafka.partitions as usize => {
            tracing::warn!(
                topic = %kafka.topic,
                partitions,
                configured = kafka.partitions,
                "the topic exists with another partition count than the topology's; using it as it is"
            );
            Ok(partitions)
        }
        Ok(TopicState::Exists { partitions }) => {
            tracing::info!(topic = %kafka.topic, partitions, "publishing to the existing topic");
            Ok(partitions)
        }
        Err(error @ (KafkaError::MetadataFetch(_) | KafkaError::ClientCreation(_))) => {
            Err(Error::Unreachable {
                brokers: kafka.brokers.clone(),
                error,
            })
        }
        Err(error) => Err(Error::Topic {
            topic: kafka.topic.clone(),
            error,
        }),
    }
}
