//! `access-producer`: see the library crate for what it does.

use std::process::ExitCode;

use access_producer::Cli;
use clap::Parser;
use hotkeys::cli::{self, Runtime};

fn main() -> ExitCode {
    keep_freed_memory();
    cli::telemetry::init_logs();
    let args = Cli::parse();
    let mut topology = match args.topology.load() {
        Ok(t) => t,
        Err(code) => return code,
    };
    args.apply_overrides(&mut topology);
    // `--metrics` is served by the run itself, which reports it as a failed run (exit 1).
    cli::run(
        "access-producer",
        Runtime::CurrentThread,
        None,
        || async move {
            let shutdown = cli::shutdown::on_signals();
            access_producer::run(args, topology, shutdown)
                .await
                .map(drop)
        },
    )
}

/// librdkafka allocates buffers of about `batch.size` (1 MB) for each batch it builds and
/// compresses, and frees them once it is sent. glibc serves such sizes from fresh mmap()s,
/// or gives the freed top of a heap back to the kernel, so every batch faults its pages in
/// anew: three quarters of a replay's page faults, and 5-10% of its CPU time.
/// Keeping up to 64 MB of freed memory costs no peak memory (the queues bound that).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets glibc's allocation thresholds; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
