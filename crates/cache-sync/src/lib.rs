//! `cache-sync`: the replication path between two data centres.
//!
//! A writer in one data centre queues every cache write it wants replicated
//! ([`hotkeys::sync`]); `cache-sync ship` moves the queue to the other data centre over
//! HTTP; `cache-sync receive` applies it there to the cache nodes ([`hotkeys::redis`]). The
//! path loses nothing and applies nothing twice, through crashes of either side: batches carry
//! a stamp that increases by one per batch of a stream the receiver issued, the shipper
//! acknowledges a batch only after the receiver confirmed it, and the receiver applies a
//! stamp only once. When either side's state goes back or is lost, the shipper starts a new
//! stream and sends what it has in flight again under it.
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the command line and its topology overrides |
//! | [`wire`] | the HTTP contract: body, signature, compression, answers |
//! | [`ship`] | the shipper loop: take, send, retry with backoff, acknowledge |
//! | [`receive`] | the HTTP receiver: checks, issued streams and their stamps, applying to the cache |
//! | [`tls`] | HTTPS: the receiver's server, the shipper's trusted roots |
//! | [`commands`] | the operator commands `enqueue`, `status`, `ring` |
//! | [`error`] | failures and their exit codes |

pub mod cli;
pub mod commands;
pub mod error;
pub mod receive;
pub mod ship;
pub mod tls;
pub mod wire;

use std::sync::Arc;

use hotkeys::Topology;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::sync::SyncQueue;

pub use cli::{Cli, Command};
pub use error::Error;

/// Runs a command that needs the topology until it is done or `shutdown` fires.
pub async fn run(
    command: Command,
    topology: Topology,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    match command {
        Command::Ship { until_empty, .. } => {
            let secret = secret(&topology)?;
            let queue = SyncQueue::connect(&topology.redis, &topology.sync).await?;
            let shipper = ship::Shipper::new(queue, &topology.sync, &secret)?;
            shipper.run(shutdown, until_empty).await?;
            Ok(())
        }
        Command::Receive { .. } => {
            let secret = secret(&topology)?;
            let receiver = receive::Receiver::connect(&topology, &secret).await?;
            let listener = tokio::net::TcpListener::bind(&topology.sync.listen)
                .await
                .map_err(|source| Error::Listen {
                    addr: topology.sync.listen.clone(),
                    source,
                })?;
            receive::serve(listener, Arc::new(receiver), shutdown).await
        }
        Command::Enqueue(op) => commands::enqueue(&topology, op).await,
        Command::Status { json } => commands::status(&topology, json).await,
        Command::Ring {
            algorithm,
            hash,
            nodes,
            keys,
        } => commands::ring(algorithm.into(), hash.into(), &nodes, &keys),
    }
}

fn secret(topology: &Topology) -> Result<String, Error> {
    topology.sync.secret().ok_or_else(|| {
        Error::Config(format!(
            "no shared secret: set the environment variable {} (sync.secret_env)",
            topology.sync.secret_env
        ))
    })
}
