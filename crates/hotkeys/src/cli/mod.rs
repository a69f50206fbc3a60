//! Process start shared by every binary, so that all five start, log, stop and exit alike.
//!
//! | module | owns |
//! |---|---|
//! | [`TopologyArg`] (`topology`) | the `--topology` flag, where the file is found without it, and what a bad file does |
//! | [`exit`] | the process exit codes every binary shares |
//! | [`telemetry`] | tracing and Prometheus metrics set-up |
//! | [`shutdown`] | SIGINT/SIGTERM turned into a cancellation token |
//!
//! Every `main.rs` has the same shape: [`telemetry::init_logs`], parse the flags, load the
//! topology ([`TopologyArg::load`]), then [`run`] the binary's library on a runtime, which
//! maps its error to the exit code through [`Failure::exit_code`]. See `ARCHITECTURE.md`
//! for the exit codes.

pub mod exit;
pub mod shutdown;
pub mod telemetry;
mod topology;

use std::fmt;
use std::net::SocketAddr;
use std::process::ExitCode;

pub use topology::{SEARCH_PATH, TopologyArg, locate};

/// A binary's error: what it logs when it ends the process, and with which exit code.
pub trait Failure: fmt::Display {
    /// One of the codes of [`exit`].
    fn exit_code(&self) -> i32;
}

/// The tokio runtime a binary runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// One thread, for work that is a chain of round trips: hopping between worker threads
    /// costs more than it brings on a busy machine (CPU-heavy work goes to the blocking pool).
    CurrentThread,
    /// A worker thread per core.
    MultiThread,
}

/// Runs `main` on a new runtime of `kind`, with Prometheus metrics on `metrics` when given,
/// and returns the process exit code: 0, or the failure's code after logging
/// `NAME: failure`. Metrics that cannot be served are bad usage (exit 2). A long-running
/// `main` takes its stop signal from [`shutdown::on_signals`]; a short command leaves
/// SIGINT to end the process.
pub fn run<F, Fut, E>(name: &str, kind: Runtime, metrics: Option<SocketAddr>, main: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Failure,
{
    let runtime = match build_runtime(kind) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("{name}: cannot start the async runtime: {e}");
            return code(exit::FAILED);
        }
    };
    runtime.block_on(async {
        if let Some(addr) = metrics
            && let Err(e) = telemetry::serve_metrics(addr)
        {
            tracing::error!("{name}: --metrics {addr}: {e}");
            return code(exit::USAGE);
        }
        match main().await {
            Ok(()) => code(exit::OK),
            Err(e) => {
                tracing::error!("{name}: {e:#}");
                code(e.exit_code())
            }
        }
    })
}

fn build_runtime(kind: Runtime) -> std::io::Result<tokio::runtime::Runtime> {
    match kind {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Runtime::MultiThread => tokio::runtime::Runtime::new(),
    }
}

/// The process exit code of `c`, one of [`exit`]'s.
pub fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
