//! `cache-sync`: see the library crate for what it does.

use std::process::ExitCode;

use cache_sync::{Cli, Command};
use clap::Parser;
use hotkeys::cli::{self, Runtime};

fn main() -> ExitCode {
    cli::telemetry::init_logs();
    let args = Cli::parse();
    // One thread: the work is a chain of round trips (see `Runtime::CurrentThread`).
    if let Command::Ring {
        algorithm,
        hash,
        nodes,
        keys,
    } = args.command
    {
        // Needs no topology: it places the keys given on the nodes given.
        return cli::run("cache-sync", Runtime::CurrentThread, None, || async move {
            cache_sync::commands::ring(algorithm.into(), hash.into(), &nodes, &keys)
        });
    }
    let mut topology = match args.topology.load() {
        Ok(t) => t,
        Err(code) => return code,
    };
    args.apply_overrides(&mut topology);
    cli::run("cache-sync", Runtime::CurrentThread, args.metrics, || {
        cache_sync::run(args.command, topology, cli::shutdown::on_signals())
    })
}
