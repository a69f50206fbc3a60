//! What every request and the recorder share. Connections are opened once at start; a
//! ZooKeeper session that expires is replaced on the next request that notices.

use std::time::Duration;

use anyhow::Context;
use hotkeys::Topology;
use hotkeys::cache::RedisConn;
use hotkeys::config::Counter;
use hotkeys::shutdown::CancellationToken;
use hotkeys::zk::{Zk, ZkError};
use tokio::sync::RwLock;

use super::auth::Token;
use super::history::History;
use super::hub::Hub;
use super::{ApiError, Settings};

/// How long MySQL may take to answer at start.
const MYSQL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Dashboard {
    pub topology: Topology,
    pub settings: Settings,
    zk: RwLock<Zk>,
    /// The cache's home node, where the blacklists live.
    pub redis: RedisConn,
    /// `None` when MySQL could not be reached and this dashboard does not record.
    history: Option<History>,
    pub hub: Hub,
    token: Option<Token>,
    /// Cancelled on SIGINT/SIGTERM: open SSE streams end so the server can stop.
    pub shutdown: CancellationToken,
}

impl Dashboard {
    /// Connects to ZooKeeper, Redis and MySQL. MySQL is required only for recording: a
    /// read-only dashboard without it serves everything but the history.
    pub async fn start(
        topology: &Topology,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Dashboard> {
        let zk = Zk::connect(topology).await?;
        let redis = RedisConn::connect_home(&topology.redis).await?;
        let history = match History::open(topology, MYSQL_CONNECT_TIMEOUT).await {
            Ok(h) => Some(h),
            Err(e) if settings.record.is_zero() => {
                tracing::warn!(error = %e, "no hot-key history: MySQL is unavailable");
                None
            }
            Err(e) => return Err(e).context("opening the history (or start with --record 0)"),
        };
        let hub = Hub::start(topology, shutdown.clone()).await?;
        Ok(Dashboard {
            topology: topology.clone(),
            settings,
            zk: RwLock::new(zk),
            redis,
            history,
            hub,
            token: topology.dashboard_token().map(|t| Token::new(&t)),
            shutdown,
        })
    }

    pub fn writable(&self) -> bool {
        self.token.is_some()
    }

    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// The counter called `name`; 404 when the topology has none.
    pub fn counter(&self, name: &str) -> Result<Counter, ApiError> {
        self.topology.counter(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "topology `{}` has no counter `{name}`",
                self.topology.name
            ))
        })
    }

    pub fn history(&self) -> Result<&History, ApiError> {
        self.history
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("no history: MySQL was unavailable at start"))
    }

    /// Runs `f` on the ZooKeeper session; when the session turns out to be gone, opens a
    /// new one for the next call.
    pub async fn with_zk<T, F, Fut>(&self, f: F) -> Result<T, ZkError>
    where
        F: FnOnce(Zk) -> Fut,
        Fut: Future<Output = Result<T, ZkError>>,
    {
        let zk = self.zk.read().await.clone();
        let result = f(zk.clone()).await;
        if let Err(e) = &result
            && e.is_session_lost()
        {
            match zk.reconnect().await {
                Ok(new) => *self.zk.write().await = new,
                Err(e) => tracing::warn!(error = %e, "ZooKeeper reconnect failed"),
            }
        }
        result
    }
}
