//! The query of the live hot set, shared by `/api/hot`, `/api/stream` and the pages: which
//! counter, and how many keys, bounded by what its hot lists hold.

use hotkeys::config::{Counter, PRIMARY_COUNTER};
use serde::Deserialize;

use super::error::ApiError;
use super::state::Dashboard;

/// Items of `/api/hot` and the stream when `top` is absent.
const DEFAULT_TOP: usize = 20;

/// `counter` (the primary counter when absent) and `top`.
#[derive(Deserialize)]
pub struct HotQuery {
    pub counter: Option<String>,
    pub top: Option<usize>,
}

impl HotQuery {
    /// The counter asked for, and `top` bounded by what its hot lists can hold.
    pub fn resolve(&self, dashboard: &Dashboard) -> Result<(Counter, usize), ApiError> {
        let counter = dashboard.counter(self.counter.as_deref().unwrap_or(PRIMARY_COUNTER))?;
        let top = self
            .top
            .unwrap_or(DEFAULT_TOP)
            .clamp(1, counter.count.top_n);
        Ok((counter, top))
    }
}
