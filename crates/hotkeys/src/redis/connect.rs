//! Connections to Redis: one node or a whole cluster behind one type, with the timeouts and
//! reconnection policy every caller shares.
//!
//! The connections raise the redis crate's 500 ms default response timeout to
//! `redis.timeout`: a pipeline of a thousand values easily takes longer under load.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::error::CacheError;
use crate::config::secret::NodeUrl;

/// A connection to one node or to the whole cluster; cheap to clone, shared by clones.
///
/// The replication queue and the receiver's stream state live on [`CacheNodes::home`].
///
/// [`CacheNodes::home`]: super::CacheNodes::home
#[derive(Clone)]
pub enum RedisConn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Node(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Node(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConn {
    /// Connects to the one node at `url` (e.g. `sync.state`).
    pub async fn connect(url: &str, timeout: Duration) -> Result<RedisConn, CacheError> {
        Ok(RedisConn::Node(connect_node(url, timeout).await?))
    }
}

fn client(url: &str) -> Result<redis::Client, CacheError> {
    redis::Client::open(url).map_err(|e| {
        CacheError::Config(format!(
            "redis node `{}`: not a valid Redis URL: {e}",
            NodeUrl::new(url)
        ))
    })
}

/// Few, quick reconnection attempts: a node that stays down should fail the command soon,
/// and the callers (shipper, receiver, prewarm, the failover checker) retry on their own.
pub(super) fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

pub(super) async fn connect_node(
    url: &str,
    timeout: Duration,
) -> Result<ConnectionManager, CacheError> {
    ConnectionManager::new_with_config(client(url)?, manager_config(timeout))
        .await
        .map_err(|source| CacheError::Connect {
            node: NodeUrl::new(url).to_string(),
            source,
        })
}

/// A connection made at its first command, for nodes that may be down at start.
pub(super) fn lazy_node(url: &str, timeout: Duration) -> Result<ConnectionManager, CacheError> {
    ConnectionManager::new_lazy_with_config(client(url)?, manager_config(timeout)).map_err(
        |source| CacheError::Connect {
            node: NodeUrl::new(url).to_string(),
            source,
        },
    )
}

pub(super) async fn connect_cluster(
    seeds: &[String],
    timeout: Duration,
) -> Result<ClusterConnection, CacheError> {
    let client = redis::cluster::ClusterClient::builder(seeds.iter().map(String::as_str))
        .response_timeout(timeout)
        .connection_timeout(timeout)
        .build()
        .map_err(|e| CacheError::Config(format!("redis cluster seeds: {e}")))?;
    client
        .get_async_connection()
        .await
        .map_err(|source| CacheError::Connect {
            node: format!("cluster {}", NodeUrl::join(seeds)),
            source,
        })
}
