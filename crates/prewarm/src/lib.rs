//! prewarm: loads the hot rows of every task from MySQL into Redis before traffic arrives,
//! in parallel across processes, never twice and never waiting on a lock.
//!
//! | module | owns |
//! |---|---|
//! | [`runner`] | a run: set-up, passes over the tasks (shuffle, `C` at a time, the end-of-pass re-check) |
//! | `options` | how a run behaves: the mode and the flags |
//! | `ctx` | what the tasks of a run share, and its set-up (connections, retried while unreachable) |
//! | `warming` | the tasks being warmed at once, `C` at most and one per task, and the run's record of each |
//! | `watch` | `--watch`: a task warmed as soon as it publishes, from a watch on the task tree |
//! | `pass` | the procedure for one task: pre-check, try-lock, double check, load, write, mark, unlock |
//! | `load` | one batch of keys: rows from MySQL, pipelined `SET NX` or compare-and-set refreshes into Redis, replication ops |
//! | `misses` | keys without a row, not asked again for `prewarm.missing_ttl` |
//! | `session` | the ZooKeeper session, renewed after expiry |
//! | `retry` | retries with backoff while a dependency is unreachable, up to a deadline |
//! | [`report`] | per-task records, the summary (table or JSON) and the progress line |
//! | [`error`] | the failures that end a run, and their exit codes |
//!
//! A task's lock is the ephemeral `lock` znode: it is never waited for. A process that finds
//! it taken moves on, and with `--once` looks again at the end of its pass, until the task is
//! warmed by its holder or the holder's session is gone (then it warms the task itself).

mod ctx;
pub mod error;
mod load;
mod misses;
mod options;
mod pass;
pub mod report;
mod retry;
pub mod runner;
mod session;
mod warming;
mod watch;

pub use error::{Dependency, PrewarmError};
pub use options::{Mode, Options};
pub use report::{Summary, TaskOutcome, TaskRecord, Totals};
pub use runner::{Finished, run};
