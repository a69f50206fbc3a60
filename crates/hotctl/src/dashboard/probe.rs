//! What the overview shows besides ZooKeeper's records: the Kafka end offset of every
//! partition (so a task's lag is end offset minus the offset its hot list reflects) and the
//! state of every Redis node, as any process can see it from outside.
//!
//! Both are asked on every overview and `/api/tasks`, so both keep their clients: one
//! librdkafka client whose answer all requests share for [`FRESH`], and one Redis connection
//! per node, made again only when it stops answering.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hotkeys::config::secret::NodeUrl;
use hotkeys::config::{KafkaConfig, RedisConfig, RedisMode};
use hotkeys::redis::failover::track_key;
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long one node may take to answer before it counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long end offsets are served from the last answer.
pub const FRESH: Duration = Duration::from_secs(3);
/// How long one Kafka call may take: a request waits for at most one refresh.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(2);

/// End offsets by partition (= task); empty when the topic does not exist yet.
pub type Ends = Result<Arc<Vec<i64>>, String>;

/// The topic's end offsets from one long-lived client; concurrent askers wait for the one
/// refresh in progress and share its answer.
pub struct EndOffsets {
    kafka: KafkaConfig,
    /// The client, made at the first refresh (or again after it could not be made).
    client: std::sync::Mutex<Option<Arc<BaseConsumer>>>,
    last: Mutex<Option<(Instant, Ends)>>,
}

impl EndOffsets {
    pub fn new(kafka: &KafkaConfig) -> EndOffsets {
        EndOffsets {
            kafka: kafka.clone(),
            client: std::sync::Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    /// The end offsets at most [`FRESH`] old (a failure is kept as long).
    pub async fn get(&self) -> Ends {
        let mut last = self.last.lock().await;
        if let Some((at, ends)) = last.as_ref()
            && at.elapsed() < FRESH
        {
            return ends.clone();
        }
        let ends = self.fetch().await;
        *last = Some((Instant::now(), ends.clone()));
        ends
    }

    async fn fetch(&self) -> Ends {
        let client = self.client()?;
        let topic = self.kafka.topic.clone();
        tokio::task::spawn_blocking(move || {
            // Serves the client's queue (errors, logs), which nothing else polls.
            let _ = client.poll(Duration::ZERO);
            hotkeys::kafka::end_offsets_with(&client, &topic, KAFKA_TIMEOUT)
        })
        .await
        .map_err(|e| e.to_string())?
        .map(Arc::new)
        .map_err(|e| format!("Kafka: {e}"))
    }

    fn client(&self) -> Result<Arc<BaseConsumer>, String> {
        let mut client = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = client.as_ref() {
            return Ok(c.clone());
        }
        let made = Arc::new(
            hotkeys::kafka::metadata_client(&self.kafka).map_err(|e| format!("Kafka: {e}"))?,
        );
        *client = Some(made.clone());
        Ok(made)
    }
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

/// Connections to the configured nodes, by URL, kept while they answer.
#[derive(Default)]
pub struct NodeProbe {
    conns: Mutex<HashMap<String, redis::aio::MultiplexedConnection>>,
}

impl NodeProbe {
    /// The state of every node of `nodes` (sentinels and cluster nodes are only pinged).
    pub async fn states(&self, cfg: &RedisConfig) -> Vec<NodeState> {
        let mut states = Vec::new();
        for node in &cfg.nodes {
            let backup = match cfg.mode {
                RedisMode::Single | RedisMode::Ring => cfg.backups.get(node),
                RedisMode::Cluster | RedisMode::Sentinel => None,
            };
            let state = match self.conn(node).await {
                None => "down",
                Some(_) => match backup {
                    Some(b) if self.tracked(b, node).await > 0 => "recovering",
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

    /// A connection to `url` that has just answered PING; the kept one while it does.
    async fn conn(&self, url: &str) -> Option<redis::aio::MultiplexedConnection> {
        let kept = self.conns.lock().await.get(url).cloned();
        if let Some(mut conn) = kept
            && ping(&mut conn).await
        {
            return Some(conn);
        }
        let client = redis::Client::open(url).ok()?;
        let mut conn =
            tokio::time::timeout(PING_TIMEOUT, client.get_multiplexed_async_connection())
                .await
                .ok()?
                .ok()?;
        if !ping(&mut conn).await {
            return None;
        }
        self.conns
            .lock()
            .await
            .insert(url.to_string(), conn.clone());
        Some(conn)
    }

    /// Keys the backup still holds for `primary`; 0 when it cannot be asked.
    async fn tracked(&self, backup: &str, primary: &str) -> u64 {
        let Some(mut conn) = self.conn(backup).await else {
            return 0;
        };
        let mut scard = redis::cmd("SCARD");
        scard.arg(track_key(primary));
        tokio::time::timeout(PING_TIMEOUT, scard.query_async(&mut conn))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0)
    }
}

async fn ping(conn: &mut redis::aio::MultiplexedConnection) -> bool {
    let ping = redis::cmd("PING");
    let pong = ping.query_async::<String>(conn);
    matches!(tokio::time::timeout(PING_TIMEOUT, pong).await, Ok(Ok(_)))
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
        let states = NodeProbe::default().states(&cfg).await;
        assert_eq!(states[0].state, "down");
    }
}
