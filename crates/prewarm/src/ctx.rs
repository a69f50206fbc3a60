//! The context the tasks of a run share ([`Ctx`]): the topology, the flags, the ZooKeeper
//! session, the MySQL pool and row loader, the Redis nodes and the replication queue, and
//! the retry budget whose token aborts the run. [`Ctx::connect`] builds it.

use std::sync::Arc;
use std::time::Duration;

use hotkeys::Topology;
use hotkeys::mysql::{self, MysqlError, RowLoader};
use hotkeys::redis::CacheNodes;
use hotkeys::sync::SyncQueue;
use tokio_util::sync::CancellationToken;

use crate::error::{Dependency, Halt, PrewarmError};
use crate::misses::Misses;
use crate::options::Options;
use crate::report::Progress;
use crate::retry::{Policy, retry};
use crate::session::Session;

/// How long the first connection to MySQL may take before the attempt counts as failed.
const MYSQL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the tasks of a run share.
pub(crate) struct Ctx {
    pub topology: Topology,
    pub opts: Options,
    /// This process, `host:pid`.
    pub by: String,
    pub session: Session,
    pub pool: mysql::Pool,
    pub loader: RowLoader,
    /// `None` in a dry run.
    pub cache: Option<CacheNodes>,
    /// `None` in a dry run, or when `sync.replicate` is empty.
    pub sync: Option<SyncQueue>,
    /// Retry budget; its token aborts the tasks (shutdown or a fatal error).
    pub policy: Policy,
    pub shutdown: CancellationToken,
    pub progress: Arc<Progress>,
    /// Batches of one task in flight at once.
    pub batch_parallelism: usize,
    /// Keys without a row, not asked again for `prewarm.missing_ttl`.
    pub misses: Misses,
}

impl Ctx {
    pub(crate) fn stopping(&self) -> bool {
        self.policy.abort.is_cancelled()
    }
    /// Closes the MySQL pool and the ZooKeeper session.
    pub(crate) async fn close(self) {
        self.pool.close().await;
        drop(self.session);
        // Give the dropped ZooKeeper client a moment to close its session, so that a lock it
        // could not delete goes now rather than one session timeout later.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Connects to ZooKeeper, MySQL and Redis, retrying while they are unreachable.
    pub(crate) async fn connect(
        topology: Topology,
        opts: Options,
        by: String,
        policy: Policy,
        shutdown: CancellationToken,
    ) -> Result<Ctx, Halt> {
        let session = Session::connect(&topology, &policy).await?;
        let pool = retry(&policy, Dependency::MySql, "connecting", || {
            mysql::connect(&topology.mysql, MYSQL_CONNECT_TIMEOUT)
        })
        .await?
        .map_err(mysql_setup_error)?;
        let loader = retry(&policy, Dependency::MySql, "preparing mysql.query", || {
            RowLoader::new(&pool, &topology.mysql)
        })
        .await?
        .map_err(mysql_setup_error)?;
        let (cache, sync) = if opts.dry_run {
            (None, None)
        } else {
            let cache = retry(&policy, Dependency::Redis, "connecting", || {
                CacheNodes::connect(&topology.redis)
            })
            .await?
            .map_err(|e| Halt::Fatal(PrewarmError::Config(e.to_string())))?;
            let sync = if topology.sync.replicate.is_empty() {
                None
            } else {
                let queue = retry(
                    &policy,
                    Dependency::Redis,
                    "connecting to sync.state",
                    || SyncQueue::beside(&cache, &topology.redis, &topology.sync),
                )
                .await?
                .map_err(|e| Halt::Fatal(PrewarmError::Config(e.to_string())))?;
                Some(queue)
            };
            (Some(cache), sync)
        };
        Ok(Ctx {
            batch_parallelism: (topology.mysql.pool as usize).max(1),
            misses: Misses::new(topology.prewarm.missing_ttl),
            progress: Arc::new(Progress::default()),
            topology,
            opts,
            by,
            session,
            pool,
            loader,
            cache,
            sync,
            policy,
            shutdown,
        })
    }
}

fn mysql_setup_error(e: MysqlError) -> Halt {
    Halt::Fatal(match e {
        MysqlError::BadUrl(_) | MysqlError::BadQuery(_) | MysqlError::Rejected { .. } => {
            PrewarmError::Config(e.to_string())
        }
        e => PrewarmError::Failed {
            dependency: Dependency::MySql,
            message: e.to_string(),
        },
    })
}

/// The tasks in ZooKeeper now. `Err(None)`: the run is being aborted.
pub(crate) async fn list_tasks(ctx: &Ctx) -> Result<Vec<u32>, Option<PrewarmError>> {
    let tasks = ctx
        .session
        .read(&ctx.policy, "listing tasks", |zk| async move {
            zk.list_tasks().await
        })
        .await
        .map_err(Halt::outside_task)?;
    ctx.progress.set_total(tasks.len());
    Ok(tasks)
}
