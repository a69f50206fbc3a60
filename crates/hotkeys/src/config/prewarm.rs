//! `[prewarm]`: how prewarm treats values already in the cache.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How prewarm treats values already in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrewarmConfig {
    /// A cached value with less than this left to live is loaded again; one with more is
    /// skipped without asking MySQL. See [`super::Topology::refresh_before`].
    pub refresh_before: RefreshBefore,
    /// A key MySQL has no row for is not asked again for this long (per process); zero
    /// asks every time.
    #[serde(with = "humantime_serde")]
    pub missing_ttl: Duration,
}

impl Default for PrewarmConfig {
    fn default() -> Self {
        PrewarmConfig {
            refresh_before: RefreshBefore::Share(10.0),
            missing_ttl: Duration::from_secs(60),
        }
    }
}

/// `prewarm.refresh_before`: a duration (`"5m"`) or a percentage of `redis.ttl` (`"10%"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RefreshBefore {
    /// Percent of `redis.ttl`, from 0 up to (not including) 100.
    Share(f64),
    Fixed(Duration),
}

impl RefreshBefore {
    /// The duration this setting means for a cache whose TTL is `ttl`.
    pub fn of(self, ttl: Duration) -> Duration {
        match self {
            RefreshBefore::Share(percent) => ttl.mul_f64(percent / 100.0),
            RefreshBefore::Fixed(d) => d,
        }
    }
}

impl TryFrom<String> for RefreshBefore {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        match raw.trim().strip_suffix('%') {
            Some(percent) => percent
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..100.0).contains(p))
                .map(RefreshBefore::Share)
                .ok_or_else(|| format!("expected a percentage from 0% to 99%, found `{raw}`")),
            None => humantime::parse_duration(raw.trim())
                .map(RefreshBefore::Fixed)
                .map_err(|e| format!("expected a duration or a percentage of redis.ttl: {e}")),
        }
    }
}

impl From<RefreshBefore> for String {
    fn from(r: RefreshBefore) -> String {
        match r {
            RefreshBefore::Share(percent) => format!("{percent}%"),
            RefreshBefore::Fixed(d) => humantime::format_duration(d).to_string(),
        }
    }
}
