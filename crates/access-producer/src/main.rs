//! `access-producer`: see the library crate for what it does.

use std::process::ExitCode;

use access_producer::Cli;
use anyhow::Context;
use clap::Parser;
use hotkeys::exit;

fn main() -> ExitCode {
    keep_freed_memory();
    hotkeys::telemetry::init_logs();
    let cli = Cli::parse();
    let mut topology = match cli.topology.load() {
        Ok(t) => t,
        Err(code) => return code,
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

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
