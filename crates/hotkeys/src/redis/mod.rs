pub mod codec;
pub mod failover;
mod nodes;
pub mod ring;

pub use nodes::*;
