//! Sentinel following: the master a set of Redis Sentinels names, asked again after a
//! failover (a node that is gone or answers `READONLY`), so the caller's retry reaches the
//! new master.

use std::sync::Mutex;

use redis::aio::ConnectionManager;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{ErrorKind, RedisError, ServerErrorKind};

use super::connect::manager_config;
use super::error::{CacheError, connection_failed};
use crate::config::RedisConfig;
use crate::config::secret::NodeUrl;

/// The master a set of sentinels names, re-resolved after a failover.
pub(super) struct SentinelMaster {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the master as last resolved.
    current: Mutex<ConnectionManager>,
    /// The sentinels (`nodes`), the master's name and the timeouts.
    cfg: RedisConfig,
}

impl SentinelMaster {
    pub(super) async fn connect(cfg: &RedisConfig) -> Result<SentinelMaster, CacheError> {
        let client = SentinelClient::build(
            cfg.nodes.clone(),
            cfg.master.clone(),
            None,
            SentinelServerType::Master,
        )
        .map_err(|e| CacheError::Config(format!("redis sentinels: {e}")))?;
        let client = tokio::sync::Mutex::new(client);
        let current = Mutex::new(resolve_master(&client, cfg).await?);
        Ok(SentinelMaster {
            client,
            current,
            cfg: cfg.clone(),
        })
    }

    pub(super) fn current(&self) -> ConnectionManager {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the sentinels for the master again after `error`, when the error says the
    /// master may have moved. A failure here leaves the old connection; the caller's retry
    /// tries again.
    pub(super) async fn follow(&self, error: &RedisError) {
        let moved = connection_failed(error)
            || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
        if !moved {
            return;
        }
        let master = &self.cfg.master;
        match resolve_master(&self.client, &self.cfg).await {
            Ok(conn) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = conn;
                metrics::counter!("hotkeys_cache_sentinel_resolves_total").increment(1);
                tracing::info!(master, "asked the sentinels for the master again");
            }
            Err(e) => tracing::warn!(master, error = %e, "sentinels name no reachable master"),
        }
    }
}

async fn resolve_master(
    client: &tokio::sync::Mutex<SentinelClient>,
    cfg: &RedisConfig,
) -> Result<ConnectionManager, CacheError> {
    let unreachable = |source| CacheError::Connect {
        node: format!(
            "master `{}` of sentinels {}",
            cfg.master,
            NodeUrl::join(&cfg.nodes)
        ),
        source,
    };
    let master = client
        .lock()
        .await
        .async_get_client()
        .await
        .map_err(unreachable)?;
    ConnectionManager::new_with_config(master, manager_config(cfg.timeout))
        .await
        .map_err(unreachable)
}
