//! The flags of `hotctl dashboard` and the settings they make with the topology's
//! `[dashboard]` section (a flag wins over the file).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use hotkeys::Topology;

use crate::error::Context;

#[derive(Args)]
pub struct DashboardArgs {
    /// Address to serve on; `dashboard.listen` of the topology when absent.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// How often to record every counter's merged top N into MySQL (0 = never);
    /// `dashboard.record` when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub record: Option<Duration>,
    /// How long recorded rows are kept; `dashboard.retain` when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retain: Option<Duration>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9466).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
}

/// The settings after flags and topology are combined.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Zero: this dashboard never records.
    pub record: Duration,
    pub retain: Duration,
}

impl Settings {
    pub fn resolve(topology: &Topology, args: &DashboardArgs) -> crate::error::Result<Settings> {
        let listen = match args.listen {
            Some(a) => a,
            None => topology
                .dashboard
                .listen
                .parse()
                .context("dashboard.listen")?,
        };
        Ok(Settings {
            listen,
            record: args.record.unwrap_or(topology.dashboard.record),
            retain: args.retain.unwrap_or(topology.dashboard.retain),
        })
    }
}
