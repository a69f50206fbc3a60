//! `[dashboard]`: `hotctl dashboard`'s address, bounds and history, and the lookup of its
//! write token.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Invalid, check};

/// `hotctl dashboard`: the web UI, JSON API and hot-key history of a topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Address the dashboard listens on (`--listen` wins).
    pub listen: String,
    /// How often the merged hot lists are recorded into MySQL; 0 turns recording off
    /// (`--record` wins).
    #[serde(with = "humantime_serde")]
    pub record: Duration,
    /// How long recorded hot lists are kept (`--retain` wins).
    #[serde(with = "humantime_serde")]
    pub retain: Duration,
    /// Name of the environment variable holding the token that write requests (unban)
    /// must carry; without it the dashboard is read-only.
    pub token_env: String,
    /// Host names (optionally `name:port`) the dashboard answers for, besides the loopback
    /// names and the listen address; any other `Host` is refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Open SSE streams at most; past it `/api/stream` answers 503 with `Retry-After`.
    pub max_streams: usize,
    /// Requests served at once (SSE streams count only while they open); more wait in line
    /// until `request_timeout`.
    pub max_requests: usize,
    /// How long a request may wait and run before it is answered 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The longest run of one history query of the API (MariaDB `max_statement_time`).
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// The longest range `/api/top` and the history page rank keys over; longer ranges
    /// are refused with 400.
    #[serde(with = "humantime_serde")]
    pub max_range: Duration,
}

impl DashboardConfig {
    /// Checks the keys of `[dashboard]`: the address, and the first bound that cannot work.
    pub fn validate(&self) -> Result<(), Invalid> {
        check(
            self.listen.parse::<std::net::SocketAddr>().is_err(),
            "dashboard.listen",
            "expected an address such as 127.0.0.1:8490",
        )?;
        check(
            self.max_streams == 0,
            "dashboard.max_streams",
            "expected at least 1",
        )?;
        check(
            self.max_requests == 0,
            "dashboard.max_requests",
            "expected at least 1",
        )?;
        check(
            self.request_timeout.is_zero(),
            "dashboard.request_timeout",
            "expected more than 0s",
        )?;
        check(
            self.query_timeout < Duration::from_millis(100),
            "dashboard.query_timeout",
            "expected at least 100ms",
        )?;
        check(
            self.max_range.is_zero(),
            "dashboard.max_range",
            "expected more than 0s",
        )
    }

    /// The write token, read from `token_env`.
    pub fn token(&self) -> Option<String> {
        std::env::var(&self.token_env)
            .ok()
            .filter(|s| !s.is_empty())
    }
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: "127.0.0.1:8490".into(),
            record: Duration::from_secs(60),
            retain: Duration::from_secs(7 * 24 * 3600),
            token_env: "HOTKEYS_DASHBOARD_TOKEN".into(),
            allowed_hosts: Vec::new(),
            max_streams: 1000,
            max_requests: 64,
            request_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(4),
            max_range: Duration::from_secs(24 * 3600),
        }
    }
}
