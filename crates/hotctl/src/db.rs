//! `hotctl db`: the catalogue database the cache is warmed from.
//!
//! `migrate` applies the embedded migrations (`migrations/` at the repository root);
//! `seed` writes a deterministic catalogue (see `hotkeys::mysql::seed`), migrating first so
//! that it works on an empty database.

use std::time::Duration;

use clap::Subcommand;
use hotkeys::Topology;
use hotkeys::mysql;

use crate::error::Context;

/// How long the first connection may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Subcommand)]
pub enum DbCommand {
    /// Apply the migrations not applied yet (safe to repeat, safe to run concurrently).
    Migrate,
    /// Write products 1..=N, the same values for the same --seed on every run.
    Seed {
        /// Number of products.
        #[arg(long)]
        products: u64,
        /// Catalogue variant; a different seed gives different names, prices, stock.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub async fn run(topology: &Topology, cmd: DbCommand) -> crate::error::Result<()> {
    let pool = mysql::connect(&topology.mysql, CONNECT_TIMEOUT).await?;
    let applied = mysql::migrate(&pool).await.context("applying migrations")?;
    if applied.is_empty() {
        println!("migrations: up to date");
    }
    for (version, description) in &applied {
        println!("migrations: applied {version} {description}");
    }
    if let DbCommand::Seed { products, seed } = cmd {
        let report = mysql::seed(&pool, products, seed)
            .await
            .context("seeding products")?;
        let secs = report.took.as_secs_f64();
        println!(
            "seeded {} products (seed {seed}) in {secs:.1}s, {:.0} rows/s",
            report.rows,
            report.rows as f64 / secs.max(1e-9)
        );
    }
    pool.close().await;
    Ok(())
}
