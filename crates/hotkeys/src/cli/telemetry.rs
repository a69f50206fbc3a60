//! Logs and metrics set-up shared by every binary.
//!
//! Logs go to stderr through `tracing` and are filtered by `RUST_LOG` (default: `info`, with
//! the chattier client crates at `warn`).
//! Metrics use the `metrics` facade and are served in the Prometheus text format when a
//! binary is given `--metrics ADDR`. Metric names follow `hotkeys_<component>_<name>[_unit]`
//! and labels are bounded (task ids, counters, outcomes; never a hot key).

use std::net::SocketAddr;

/// Every ZooKeeper session and SQL statement would otherwise be an `info` line.
const DEFAULT_FILTER: &str = "info,zookeeper_client=warn,sqlx=warn";

/// Installs the stderr log subscriber; safe to call more than once (tests).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Serves Prometheus metrics on `addr` from a background task of the current runtime.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    tracing::info!(%addr, "serving Prometheus metrics");
    Ok(())
}
