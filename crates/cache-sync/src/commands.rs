//! The operator commands: `enqueue`, `status` and `ring`.

use std::io::Write as _;
use std::time::Duration;

use base64::Engine;
use hotkeys::Topology;
use hotkeys::redis::ring::{KetamaHash, NodeAddr, Ring, RingAlgorithm};
use hotkeys::sync::{Op, QueueStatus, SyncQueue};

use crate::cli::EnqueueOp;
use crate::error::Error;

/// Queues one operation; refuses a key that `sync.replicate` does not cover, since the
/// shipper would be replicating a key class the topology says stays local.
pub async fn enqueue(topology: &Topology, op: EnqueueOp) -> Result<(), Error> {
    let op = match op {
        EnqueueOp::Set {
            key,
            value,
            ttl,
            base64,
        } => {
            let value = if base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .map_err(|e| Error::Config(format!("VALUE is not base64: {e}")))?
            } else {
                value.into_bytes()
            };
            let ttl = match ttl {
                None => Some(topology.redis.ttl),
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
            };
            Op::set(key, value, ttl)
        }
        EnqueueOp::Delete { key } => Op::delete(key),
    };
    let queue = SyncQueue::connect(&topology.redis, &topology.sync).await?;
    if !queue.enqueue(&op).await? {
        return Err(Error::Config(format!(
            "key `{}` matches no sync.replicate prefix ({}); not queued",
            op.key(),
            topology.sync.replicate.join(", ")
        )));
    }
    println!("queued on {}", queue.name());
    Ok(())
}

/// Prints the state of the queue.
pub async fn status(topology: &Topology, json: bool) -> Result<(), Error> {
    let queue = SyncQueue::connect(&topology.redis, &topology.sync).await?;
    let status = queue.status().await?;
    let text = if json {
        serde_json::to_string(&status).map_err(|e| Error::Internal(e.to_string()))? + "\n"
    } else {
        format_status(&status)
    };
    print_out(&text)
}

/// The aligned, human-readable form of a status.
pub fn format_status(s: &QueueStatus) -> String {
    let in_flight = match s.in_flight {
        Some(stamp) => format!("{stamp} ({} ops)", s.in_flight_ops),
        None => "none".into(),
    };
    format!(
        "queue        {}\nstream       {}\nlength       {}\nin flight    {}\nlast stamp   {}\nacked        {}\ndead letters {}\nlag          {:.3}s\n",
        s.queue,
        s.stream.as_deref().unwrap_or("(not started)"),
        s.length,
        in_flight,
        s.last_stamp,
        s.acked,
        s.dead,
        s.lag_ms as f64 / 1000.0,
    )
}

/// Prints `KEY<TAB>host:port` for each key.
pub fn ring(
    algorithm: RingAlgorithm,
    hash: KetamaHash,
    nodes: &[String],
    keys: &[String],
) -> Result<(), Error> {
    let addrs = nodes
        .iter()
        .map(|n| NodeAddr::parse(n.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(e.to_string()))?;
    let ring =
        Ring::from_addrs(algorithm, hash, &addrs).map_err(|e| Error::Config(e.to_string()))?;
    let mut text = String::new();
    for key in keys {
        text.push_str(&format!(
            "{key}\t{}\n",
            addrs[ring.node_for(key.as_bytes())]
        ));
    }
    print_out(&text)
}

fn print_out(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not a failure of the command.
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Internal(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}
