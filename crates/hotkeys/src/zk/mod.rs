mod session;
pub mod subscribe;

pub use session::*;
