//! Command-line pieces every binary shares: the `--topology` flag and what a bad file does
//! to the process (a logged reason and exit code 2).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{Topology, exit};

/// `--topology FILE`, flattened into each binary's arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct TopologyArg {
    /// Topology file; `HOTKEYS_*` environment variables override its keys.
    #[arg(
        long = "topology",
        global = true,
        env = "HOTKEYS_TOPOLOGY",
        default_value = "topology/default.toml"
    )]
    pub path: PathBuf,
}

impl TopologyArg {
    /// Loads the topology, or says why not and returns the usage exit code.
    pub fn load(&self) -> Result<Topology, ExitCode> {
        Topology::load(&self.path).map_err(|e| {
            tracing::error!("{e}");
            ExitCode::from(exit::USAGE as u8)
        })
    }
}
