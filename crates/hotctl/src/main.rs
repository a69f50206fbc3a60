//! `hotctl`: see the library crate for what it does.

use std::process::ExitCode;

use clap::Parser;
use hotctl::Cli;
use hotkeys::cli::{self, Runtime};

fn main() -> ExitCode {
    cli::telemetry::init_logs();
    let args = Cli::parse();
    let topology = match args.topology.load() {
        Ok(t) => t,
        Err(code) => return code,
    };
    // The dashboard serves `--metrics` itself (a failure there fails the command, exit 1).
    cli::run("hotctl", Runtime::MultiThread, None, || async move {
        hotctl::run(&topology, args.command).await
    })
}
