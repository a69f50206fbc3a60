//! `[zookeeper]`: the coordination cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Invalid, check};

/// The coordination cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZookeeperConfig {
    /// Connect string, `host:port[,host:port…]`.
    pub connect: String,
    /// Root path; the topology name is appended to it.
    pub root: String,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
}

impl Default for ZookeeperConfig {
    fn default() -> Self {
        ZookeeperConfig {
            connect: "127.0.0.1:2181".into(),
            root: "/hotkeys".into(),
            session_timeout: Duration::from_secs(10),
        }
    }
}

impl ZookeeperConfig {
    /// Checks the keys of `[zookeeper]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        check(
            !self.root.starts_with('/') || self.root.ends_with('/'),
            "zookeeper.root",
            "expected an absolute path without trailing `/`",
        )
    }
}
