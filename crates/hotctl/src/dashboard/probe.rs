//! What the overview shows besides ZooKeeper's records: the Kafka end offset of every
//! partition (so a task's lag is end offset minus the offset its hot list reflects) and the
//! state of every Redis node, as any process can see it from outside.

use std::time::Duration;

use hotkeys::config::{KafkaConfig, RedisConfig, RedisMode};
use hotkeys::failover::track_key;
use hotkeys::secret::NodeUrl;
use serde::Serialize;

/// How long one node may take to answer before it counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// End offsets by partition (= task); empty when the topic does not exist yet.
pub async fn end_offsets(kafka: &KafkaConfig) -> Result<Vec<i64>, String> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || hotkeys::kafka::end_offsets(&kafka))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("Kafka: {e}"))
}

/// One configured Redis node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeState {
    /// The URL as [`NodeUrl`] shows it: without credentials.
    pub node: String,
    /// The backup of this primary, if it has one (`redis.backups`).
    pub backup: Option<String>,
    /// `up`, `down` (no answer), or `recovering` (up, while its backup still holds keys
    /// written during the outage that fail-back has not copied yet).
    pub state: &'static str,
}

/// The state of every node of `nodes` (sentinels and cluster nodes are only pinged).
pub async fn nodes(cfg: &RedisConfig) -> Vec<NodeState> {
    let mut states = Vec::new();
    for node in &cfg.nodes {
        let backup = match cfg.mode {
            RedisMode::Single | RedisMode::Ring => cfg.backups.get(node),
            RedisMode::Cluster | RedisMode::Sentinel => None,
        };
        let state = match connect(node).await {
            None => "down",
            Some(_) => match backup {
                Some(b) if tracked(b, node).await > 0 => "recovering",
                _ => "up",
            },
        };
        states.push(NodeState {
            node: NodeUrl::new(node.as_str()).to_string(),
            backup: backup.map(|b| NodeUrl::new(b.as_str()).to_string()),
            state,
        });
    }
    states
}

async fn connect(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = tokio::time::timeout(PING_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .ok()?
        .ok()?;
    let pong: Option<String> = tokio::time::timeout(
        PING_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await
    .ok()?
    .ok();
    pong.map(|_| conn)
}

/// Keys the backup still holds for `primary`; 0 when it cannot be asked.
async fn tracked(backup: &str, primary: &str) -> u64 {
    let Some(mut conn) = connect(backup).await else {
        return 0;
    };
    redis::cmd("SCARD")
        .arg(track_key(primary))
        .query_async(&mut conn)
        .await
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_nobody_listens_on_is_down() {
        let cfg = RedisConfig {
            nodes: vec!["redis://127.0.0.1:1".into()],
            ..RedisConfig::default()
        };
        let states = nodes(&cfg).await;
        assert_eq!(states[0].state, "down");
    }
}
