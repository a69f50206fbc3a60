//! Exit codes shared by every binary (see `ARCHITECTURE.md`).

/// Work done.
pub const OK: i32 = 0;
/// The work failed.
pub const FAILED: i32 = 1;
/// Bad usage or configuration.
pub const USAGE: i32 = 2;
/// A dependency (Kafka, ZooKeeper, MySQL, Redis, the remote receiver) is unreachable.
pub const UNREACHABLE: i32 = 3;
