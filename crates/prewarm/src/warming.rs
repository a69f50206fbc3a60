//! The tasks being warmed at once ([`Warming`]), and the run's record of each task
//! ([`keep`]), shared by a `--once` pass and by `--watch`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::ctx::Ctx;
use crate::error::{Dependency, PrewarmError};
use crate::options::Mode;
use crate::pass;
use crate::report::{TaskOutcome, TaskRecord};

/// The tasks being warmed, each by the procedure of `pass`, at most `C` and one per task.
#[derive(Default)]
pub(crate) struct Warming {
    running: JoinSet<Result<TaskRecord, PrewarmError>>,
    tasks: HashMap<tokio::task::Id, u32>,
}

impl Warming {
    pub(crate) fn has_room(&self, ctx: &Ctx) -> bool {
        self.running.len() < ctx.opts.concurrency.max(1) && !ctx.stopping()
    }

    pub(crate) fn spawn(&mut self, ctx: &Arc<Ctx>, task: u32) {
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

/// Records a finished warm of a task, over what the run knew of it.
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
