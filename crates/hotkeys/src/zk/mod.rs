//! ZooKeeper: the layout of a topology's tree, the sessions that read and write it, and
//! subscriptions to a counter's hot set (see ARCHITECTURE.md).
//!
//! | file | owns |
//! |---|---|
//! | `layout` | [`Layout`]: every path of a topology, the one place that spells them |
//! | `session` | [`Zk`]: one session's reads and writes, locks, fencing, [`ZkError`] |
//! | [`subscribe`] | a stream of a counter's merged hot set, for application-side caches |

mod layout;
mod session;
pub mod subscribe;

pub use layout::Layout;
pub use session::*;
