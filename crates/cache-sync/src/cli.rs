//! The command line: global options that override the topology, and the subcommands.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};
use hotkeys::Topology;
use hotkeys::cli::TopologyArg;
use hotkeys::redis::ring::{KetamaHash, RingAlgorithm};

/// The replication path between two data centres: ships the durable Redis queue of cache
/// writes to the other side over HTTP and applies it there, exactly once in effect.
#[derive(Debug, Parser)]
#[command(name = "cache-sync", version)]
pub struct Cli {
    #[command(flatten)]
    pub topology: TopologyArg,
    /// Redis list of queued operations; overrides sync.queue.
    #[arg(long, global = true)]
    pub queue: Option<String>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9465).
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Move queued operations to the remote receiver, batch by batch, until SIGINT/SIGTERM.
    ///
    /// A batch leaves the queue only once the receiver confirmed it; after a crash the batch
    /// in flight is sent again first, with the same stamp.
    Ship {
        /// Receiver URL; overrides sync.remote.
        #[arg(long)]
        remote: Option<String>,
        /// Operations per batch; overrides sync.batch.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        batch: Option<u64>,
        /// Stop once the queue is empty and the last batch is acknowledged.
        #[arg(long)]
        until_empty: bool,
    },
    /// Serve the HTTP endpoint that applies batches to this data centre's cache.
    Receive {
        /// Listen address; overrides sync.listen.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Queue one operation by hand (for scripts and emergencies); nothing is written locally.
    #[command(subcommand)]
    Enqueue(EnqueueOp),
    /// Show queue length, in-flight stamp, last acknowledged stamp and lag.
    Status {
        /// One JSON object instead of aligned lines.
        #[arg(long)]
        json: bool,
    },
    /// Print the node each key maps to (to check placement against other clients).
    Ring {
        /// Placement algorithm.
        #[arg(long, value_enum)]
        algorithm: RingArg,
        /// Key hash of the ketama ring.
        #[arg(long, value_enum, default_value_t = HashArg::Fnv1a64)]
        hash: HashArg,
        /// Nodes in ring order: host:port or redis:// URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Keys to place.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnqueueOp {
    /// Queue a set of KEY to VALUE.
    Set {
        key: String,
        value: String,
        /// TTL in seconds; 0 keeps the key without expiry. Default: redis.ttl.
        #[arg(long, value_name = "S")]
        ttl: Option<u64>,
        /// VALUE is base64 (for values that are not text).
        #[arg(long)]
        base64: bool,
    },
    /// Queue a delete of KEY.
    Delete { key: String },
}

/// `--algorithm` of `cache-sync ring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RingArg {
    PeclMemcache,
    Flexihash,
    Ketama,
}

impl From<RingArg> for RingAlgorithm {
    fn from(arg: RingArg) -> RingAlgorithm {
        match arg {
            RingArg::PeclMemcache => RingAlgorithm::PeclMemcache,
            RingArg::Flexihash => RingAlgorithm::Flexihash,
            RingArg::Ketama => RingAlgorithm::Ketama,
        }
    }
}

/// `--hash` of `cache-sync ring`, spelled as twemproxy spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HashArg {
    #[value(name = "fnv1a_64")]
    Fnv1a64,
    #[value(name = "crc32a")]
    Crc32a,
}

impl From<HashArg> for KetamaHash {
    fn from(arg: HashArg) -> KetamaHash {
        match arg {
            HashArg::Fnv1a64 => KetamaHash::Fnv1a64,
            HashArg::Crc32a => KetamaHash::Crc32a,
        }
    }
}

impl Cli {
    /// Applies the flags that override topology keys.
    pub fn apply_overrides(&self, topology: &mut Topology) {
        if let Some(queue) = &self.queue {
            topology.sync.queue = queue.clone();
        }
        match &self.command {
            Command::Ship { remote, batch, .. } => {
                if let Some(remote) = remote {
                    topology.sync.remote = remote.clone();
                }
                if let Some(batch) = batch {
                    topology.sync.batch = usize::try_from(*batch).unwrap_or(usize::MAX);
                }
            }
            Command::Receive {
                listen: Some(listen),
            } => topology.sync.listen = listen.clone(),
            _ => {}
        }
    }

    /// Whether the command needs a topology file (`ring` does not).
    pub fn needs_topology(&self) -> bool {
        !matches!(self.command, Command::Ring { .. })
    }
}
