//! `access-producer`: see the library crate for what it does.

use std::process::ExitCode;

use access_producer::Cli;
use anyhow::Context;
use clap::Parser;
use hotkeys::{Topology, exit};

fn main() -> ExitCode {
    hotkeys::telemetry::init_logs();
    let cli = Cli::parse();
    let mut topology = match Topology::load(&cli.topology.path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}");
            return code(exit::USAGE);
        }
    };
    cli.apply_overrides(&mut topology);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("{e:#}");
            return code(exit::FAILED);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = hotkeys::shutdown::on_signals();
        access_producer::run(cli, topology, shutdown).await
    });
    match result {
        Ok(_) => code(exit::OK),
        Err(e) => {
            tracing::error!("{e}");
            code(e.exit_code())
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
