//! Replication to the other data centre: the operations, the durable queue they wait in and
//! the node that holds its state (see ARCHITECTURE.md).
//!
//! | file | owns |
//! |---|---|
//! | `op` | [`Op`] and its JSON line ([`QueuedOp`], [`OpList`]) |
//! | `queue` | [`SyncQueue`]: enqueue, batches in flight, acknowledgement, dead letters |
//! | `state` | the node that holds the replication state, and the check that it never evicts |
//! | `error` | [`SyncError`] |

mod error;
mod op;
mod queue;
mod state;

pub use error::SyncError;
pub use op::{Op, OpError, OpList, QueuedOp, now_ms};
pub use queue::{Batch, Position, QueueStatus, Restarted, SyncQueue};
pub use state::{check_no_eviction, connect_state, state_beside};
