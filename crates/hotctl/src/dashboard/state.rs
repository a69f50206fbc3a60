//! What every request and the recorder share, opened once at start and bounded: one
//! ZooKeeper session (the hub's subscriptions ride on it too), the cache's Redis connections,
//! the replication queue's connection, one Kafka metadata client, the MySQL pools of the
//! history, and the count of open streams. A ZooKeeper session that expires is replaced on
//! the next request that notices.

use std::time::Duration;

use hotkeys::Topology;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::config::Counter;
use hotkeys::redis::{CacheNodes, RedisConn};
use hotkeys::sync::{SyncError, SyncQueue};
use hotkeys::zk::{Zk, ZkError};
use tokio::sync::{OnceCell, RwLock};

use super::auth::Token;
use super::error::ApiError;
use super::history::History;
use super::hub::Hub;
use super::probe::{EndOffsets, NodeProbe};
use super::settings::Settings;
use super::slots::Slots;
use crate::error::Context;

/// How long MySQL may take to answer at start.
const MYSQL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Dashboard {
    pub topology: Topology,
    pub settings: Settings,
    zk: RwLock<Zk>,
    /// The cache's home node, where the blacklists live.
    pub redis: RedisConn,
    /// Every cache node, for the cache report; nodes connect at first use.
    pub cache: CacheNodes,
    /// The replication queue, connected at first use.
    queue: OnceCell<SyncQueue>,
    /// The topic's end offsets, from one Kafka client, cached for a few seconds.
    pub end_offsets: EndOffsets,
    /// The overview's Redis node states, on connections kept between requests.
    pub nodes: NodeProbe,
    /// `None` when MySQL could not be reached and this dashboard does not record.
    history: Option<History>,
    pub hub: Hub,
    /// The open SSE streams, at most `dashboard.max_streams`.
    pub streams: Slots,
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
    ) -> crate::error::Result<Dashboard> {
        let zk = Zk::connect(topology).await?;
        let redis = RedisConn::connect_home(&topology.redis).await?;
        let cache = CacheNodes::connect_lazily(&topology.redis).await?;
        let history = match History::open(topology, MYSQL_CONNECT_TIMEOUT).await {
            Ok(h) => Some(h),
            Err(e) if settings.record.is_zero() => {
                tracing::warn!(error = %e, "no hot-key history: MySQL is unavailable");
                None
            }
            Err(e) => return Err(e).context("opening the history (or start with --record 0)"),
        };
        let hub = Hub::start(topology, &zk, shutdown.clone())?;
        Ok(Dashboard {
            topology: topology.clone(),
            settings,
            zk: RwLock::new(zk),
            redis,
            cache,
            queue: OnceCell::new(),
            end_offsets: EndOffsets::new(&topology.kafka),
            nodes: NodeProbe::default(),
            history,
            hub,
            streams: Slots::new(topology.dashboard.max_streams),
            token: topology.dashboard.token().map(|t| Token::new(&t)),
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

    /// The replication queue; connects on the first call that finds it unconnected.
    pub async fn queue(&self) -> Result<&SyncQueue, SyncError> {
        self.queue
            .get_or_try_init(|| SyncQueue::connect(&self.topology.redis, &self.topology.sync))
            .await
    }

    /// The session every request shares.
    pub async fn zk(&self) -> Zk {
        self.zk.read().await.clone()
    }

    /// Runs `f` on the ZooKeeper session; when the session turns out to be gone, opens a
    /// new one for the next call.
    pub async fn with_zk<T, F, Fut>(&self, f: F) -> Result<T, ZkError>
    where
        F: FnOnce(Zk) -> Fut,
        Fut: Future<Output = Result<T, ZkError>>,
    {
        let zk = self.zk().await;
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
