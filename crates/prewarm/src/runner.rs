//! A run: connect to ZooKeeper, MySQL and Redis (retrying while they are unreachable), then
//! passes over the tasks. A pass lists the tasks, shuffles them (parallel processes then
//! start on different tasks and rarely meet on a lock) and warms `C` at a time.
//!
//! `--once` then re-checks the tasks it found locked by another process until each is warmed
//! by its holder, or its lock disappears with the holder's session (and this process warms it),
//! or `--wait-for-others` runs out. `--watch` instead warms each task as it publishes (see
//! `watch`), with a pass every `--interval` in case a watch event was missed.
//!
//! A failure that ends the run (a dependency unreachable for the whole retry budget) aborts
//! the tasks in flight; each releases its lock before the run returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotkeys::Topology;
use hotkeys::hotlist::LockInfo;
use hotkeys::mysql::{self, MysqlError, RowLoader};
use hotkeys::redis::CacheNodes;
use hotkeys::sync::SyncQueue;
use rand::seq::SliceRandom;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Dependency, Halt, PrewarmError};
use crate::misses::Misses;
use crate::report::{Progress, Summary, TaskOutcome, TaskRecord, show_progress};
use crate::retry::{Policy, retry};
use crate::session::Session;
use crate::{Mode, Options, pass, watch};

/// How long the first connection to MySQL may take before the attempt counts as failed.
const MYSQL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often `--once` looks at tasks locked by others at the end of its pass. This polls
/// the `warmed` and `lock` nodes; it never blocks on a lock.
const RECHECK_EVERY: Duration = Duration::from_millis(250);

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
}

/// The result of a run: the summary, and the error that ended it early, if any.
#[derive(Debug)]
pub struct Finished {
    pub summary: Summary,
    pub error: Option<PrewarmError>,
}

impl Finished {
    /// 0 when every task is warmed by someone (or a `--watch` run ended on a signal), 3 when
    /// a dependency stayed unreachable, 2 for configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match &self.error {
            Some(e) => e.exit_code(),
            None if self.summary.complete || self.summary.mode == Mode::Watch => hotkeys::exit::OK,
            None => hotkeys::exit::FAILED,
        }
    }
}

/// Runs prewarm until its pass is done (`--once`), or until `shutdown` (`--watch`).
pub async fn run(topology: Topology, opts: Options, shutdown: CancellationToken) -> Finished {
    let started = Instant::now();
    let by = LockInfo::this_process().holder();
    let mut summary = Summary::new(
        by.clone(),
        topology.name.clone(),
        opts.mode,
        opts.force,
        opts.dry_run,
    );
    let policy = Policy {
        budget: opts.retry_for,
        // Shutdown aborts too: retries and held locks stop, locks are released.
        abort: shutdown.child_token(),
    };
    let ctx = match setup(topology, opts, by, policy, shutdown).await {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            let error = outside_task(e).unwrap_or(PrewarmError::Interrupted);
            summary.finish(Vec::new(), started.elapsed(), Some(error.to_string()));
            return Finished {
                summary,
                error: Some(error),
            };
        }
    };
    let stop_progress = CancellationToken::new();
    if ctx.opts.progress {
        show_progress(ctx.progress.clone(), started, stop_progress.clone());
    }

    let mut records = BTreeMap::new();
    let result = match ctx.opts.mode {
        Mode::Once => {
            summary.passes = 1;
            one_pass(&ctx, &mut records).await
        }
        Mode::Watch => watch::run(&ctx, &mut records, &mut summary.passes).await,
    };
    let error = result.err();
    stop_progress.cancel();
    summary.finish(
        records.into_values().collect(),
        started.elapsed(),
        error.as_ref().map(|e| e.to_string()),
    );
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.close().await;
    }
    Finished { summary, error }
}

impl Ctx {
    async fn close(self) {
        self.pool.close().await;
        drop(self.session);
        // Give the dropped ZooKeeper client a moment to close its session, so that a lock it
        // could not delete goes now rather than one session timeout later.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup(
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

/// `--once`: every task once, then the re-check of tasks locked elsewhere.
async fn one_pass(
    ctx: &Arc<Ctx>,
    records: &mut BTreeMap<u32, TaskRecord>,
) -> Result<(), PrewarmError> {
    let mut tasks = match list_tasks(ctx).await {
        Ok(tasks) => tasks,
        Err(e) => return e.map_or(Ok(()), Err),
    };
    tasks.shuffle(&mut rand::rng());
    run_tasks(ctx, tasks, records).await?;
    recheck(ctx, records).await
}

/// The tasks in ZooKeeper now. `Err(None)`: the run is being aborted.
pub(crate) async fn list_tasks(ctx: &Ctx) -> Result<Vec<u32>, Option<PrewarmError>> {
    let tasks = ctx
        .session
        .read(&ctx.policy, "listing tasks", |zk| async move {
            zk.list_tasks().await
        })
        .await
        .map_err(outside_task)?;
    ctx.progress.set_total(tasks.len());
    Ok(tasks)
}

/// What a [`Halt`] met outside any task means for the run: `None` to stop quietly (the run
/// is being aborted anyway), or the error that ends it.
fn outside_task(h: Halt) -> Option<PrewarmError> {
    match h {
        Halt::Aborted => None,
        Halt::Fatal(e) => Some(e),
        Halt::SessionLost | Halt::Malformed(_) => Some(PrewarmError::Failed {
            dependency: Dependency::ZooKeeper,
            message: format!("unexpected {h:?} outside a task"),
        }),
    }
}

/// Warms `tasks`, `C` at a time. Returns the first failure that ends the run, after every
/// task in flight has stopped and released its lock.
async fn run_tasks(
    ctx: &Arc<Ctx>,
    tasks: Vec<u32>,
    records: &mut BTreeMap<u32, TaskRecord>,
) -> Result<(), PrewarmError> {
    let mut queue = tasks.into_iter();
    let mut warming = Warming::default();
    let mut first_error = None;
    loop {
        while warming.has_room(ctx) {
            let Some(task) = queue.next() else { break };
            warming.spawn(ctx, task);
        }
        let Some((record, error)) = warming.next().await else {
            break;
        };
        if let Some(e) = error
            && first_error.is_none()
        {
            tracing::error!(task = record.task, error = %e, "giving up; stopping the other tasks");
            ctx.policy.abort.cancel();
            first_error = Some(e);
        }
        keep(ctx, records, record);
    }
    for task in queue {
        records
            .entry(task)
            .or_insert_with(|| TaskRecord::new(task, TaskOutcome::Aborted));
    }
    ctx.progress.update(records.values());
    first_error.map_or(Ok(()), Err)
}

/// The tasks being warmed, each by the procedure of `pass`, at most `C` and one per task.
#[derive(Default)]
pub(crate) struct Warming {
    running: JoinSet<Result<TaskRecord, PrewarmError>>,
    tasks: HashMap<tokio::task::Id, u32>,
}

impl Warming {
    fn has_room(&self, ctx: &Ctx) -> bool {
        self.running.len() < ctx.opts.concurrency.max(1) && !ctx.stopping()
    }

    fn spawn(&mut self, ctx: &Arc<Ctx>, task: u32) {
        let c = ctx.clone();
        let handle = self
            .running
            .spawn(async move { pass::warm(&c, task).await });
        self.tasks.insert(handle.id(), task);
    }

    /// Starts due tasks that are not being warmed already, while there is room.
    pub(crate) fn start_due(&mut self, ctx: &Arc<Ctx>, due: &mut BTreeSet<u32>) {
        let idle: Vec<u32> = due
            .iter()
            .copied()
            .filter(|t| !self.tasks.values().any(|busy| busy == t))
            .collect();
        for task in idle {
            if !self.has_room(ctx) {
                break;
            }
            due.remove(&task);
            self.spawn(ctx, task);
        }
    }

    /// The record of the next warm to finish, and the failure that ends the run if it met
    /// one; `None` when nothing is being warmed.
    pub(crate) async fn next(&mut self) -> Option<(TaskRecord, Option<PrewarmError>)> {
        let joined = self.running.join_next_with_id().await?;
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => (
                e.id(),
                Err(PrewarmError::Failed {
                    dependency: Dependency::ZooKeeper,
                    message: format!("task crashed: {e}"),
                }),
            ),
        };
        let task = self.tasks.remove(&id).unwrap_or_default();
        Some(match result {
            Ok(record) => (record, None),
            Err(e) => {
                let mut record = TaskRecord::new(task, TaskOutcome::Failed);
                record.error = Some(e.to_string());
                (record, Some(e))
            }
        })
    }
}

pub(crate) fn keep(ctx: &Ctx, records: &mut BTreeMap<u32, TaskRecord>, record: TaskRecord) {
    ctx.progress.record(&record);
    let record = match records.get(&record.task) {
        // In --watch, a later pass that found the task up to date says less than the pass
        // that warmed it.
        Some(prev) if ctx.opts.mode == Mode::Watch && record.outcome == TaskOutcome::UpToDate => {
            prev.clone()
        }
        Some(prev) => record.after(prev),
        None => record,
    };
    records.insert(record.task, record);
    ctx.progress.update(records.values());
}

/// `--once`: tasks another process held are looked at again until they are warmed, or their
/// lock is gone (then warmed here), or the deadline passes.
async fn recheck(
    ctx: &Arc<Ctx>,
    records: &mut BTreeMap<u32, TaskRecord>,
) -> Result<(), PrewarmError> {
    let deadline = Instant::now() + ctx.opts.wait_for_others;
    loop {
        let pending: Vec<u32> = records
            .values()
            .filter(|r| r.outcome.is_pending())
            .map(|r| r.task)
            .collect();
        if pending.is_empty() || ctx.stopping() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            for task in pending {
                if let Some(r) = records.get_mut(&task) {
                    r.outcome = TaskOutcome::StillLocked;
                    r.error = Some(format!(
                        "still locked by {} and not warmed after waiting {}",
                        r.holder.as_deref().unwrap_or("another process"),
                        humantime::format_duration(ctx.opts.wait_for_others)
                    ));
                }
            }
            ctx.progress.update(records.values());
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(RECHECK_EVERY) => {}
            () = ctx.policy.abort.cancelled() => return Ok(()),
        }
        let mut free = Vec::new();
        for task in pending {
            let read = ctx
                .session
                .read(&ctx.policy, "re-checking a locked task", |zk| async move {
                    // The lock first: a holder marks before it unlocks, so a lock seen gone
                    // means its mark, if any, is visible to the reads after.
                    let lock = zk.read_lock(task).await;
                    let hot = zk.read_hot(task).await;
                    let warmed = zk.read_warmed(task).await;
                    Ok((hot, warmed, lock))
                })
                .await;
            let (hot, warmed, lock) = match read {
                Ok(found) => found,
                Err(h) => return outside_task(h).map_or(Ok(()), Err),
            };
            let Some(record) = records.get_mut(&task) else {
                continue;
            };
            let hot = match hot {
                Ok(Some(h)) => h,
                // Gone or unreadable now: the next attempt reports it properly.
                _ => {
                    free.push(task);
                    continue;
                }
            };
            let hot_version = i64::from(hot.version);
            match (warmed, lock) {
                (Ok(Some(w)), _) if hot.covered_by(&w.value) => {
                    record.outcome = TaskOutcome::WarmedByOther;
                    record.hot_version = Some(hot_version);
                    record.holder = Some(w.value.by);
                }
                (_, Ok(None)) => free.push(task),
                (_, Ok(Some(l))) => record.holder = Some(l.value.holder()),
                (_, Err(_)) => {}
            }
        }
        ctx.progress.update(records.values());
        if !free.is_empty() {
            run_tasks(ctx, free, records).await?;
        }
    }
}
