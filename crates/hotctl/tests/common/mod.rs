//! What the hotctl tests share.

use std::process::{Command, Output};

use hotkeys::Topology;
use hotkeys::testing;

/// Runs hotctl on `topology` (written to a file of its own) with `args`.
pub fn hotctl(topology: &Topology, args: &[&str]) -> Output {
    let file = testing::write_topology(topology);
    Command::new(env!("CARGO_BIN_EXE_hotctl"))
        .arg("--topology")
        .arg(file)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run hotctl")
}
