//! `cache-sync`: see the library crate for what it does.

use std::process::ExitCode;

use cache_sync::{Cli, Command};
use clap::Parser;
use hotkeys::exit;

fn main() -> ExitCode {
    hotkeys::telemetry::init_logs();
    let cli = Cli::parse();
    if let Command::Ring {
        algorithm,
        hash,
        nodes,
        keys,
    } = &cli.command
    {
        return match cache_sync::commands::ring((*algorithm).into(), (*hash).into(), nodes, keys) {
            Ok(()) => code(exit::OK),
            Err(e) => {
                let c = e.exit_code();
                fail(&e.into(), c)
            }
        };
    }
    let mut topology = match cli.topology.load() {
        Ok(t) => t,
        Err(code) => return code,
    };
    cli.apply_overrides(&mut topology);
    // One thread: the work is a chain of round trips, and hopping between worker threads
    // costs more than it brings on a busy machine. CPU-heavy decoding goes to the blocking
    // pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                &anyhow::Error::new(e).context("cannot start the async runtime"),
                exit::FAILED,
            );
        }
    };
    let result = runtime.block_on(async {
        if let Some(addr) = cli.metrics {
            hotkeys::telemetry::serve_metrics(addr)
                .map_err(|e| cache_sync::Error::Config(format!("--metrics {addr}: {e}")))?;
        }
        let shutdown = hotkeys::shutdown::on_signals();
        cache_sync::run(cli.command, topology, shutdown).await
    });
    match result {
        Ok(()) => code(exit::OK),
        Err(e) => {
            let c = e.exit_code();
            fail(&e.into(), c)
        }
    }
}

fn fail(e: &anyhow::Error, c: i32) -> ExitCode {
    tracing::error!("{e:#}");
    code(c)
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
