//! `[redis]`: the cache being warmed and replicated, and how its nodes are addressed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Invalid, check};
use super::secret::{NodeUrl, node_urls};

/// How Redis nodes are addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisMode {
    Single,
    Ring,
    Cluster,
    Sentinel,
}

/// Client-side placement of keys over the nodes in `ring` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RingAlgorithm {
    PeclMemcache,
    Flexihash,
    Ketama,
}

/// Key hash of the `ketama` ring, spelled as in twemproxy's `hash:` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KetamaHash {
    /// twemproxy's default; computed in 32-bit arithmetic as twemproxy does.
    #[serde(rename = "fnv1a_64")]
    Fnv1a64,
    /// Standard CRC-32 (twemproxy's `crc32` is a different, truncated hash).
    #[serde(rename = "crc32a")]
    Crc32a,
}

/// The cache being warmed and replicated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub mode: RedisMode,
    /// Node URLs; in `ring` mode their `host:port` is what the ring hashes.
    pub nodes: Vec<String>,
    pub ring: RingAlgorithm,
    /// Key hash of the `ketama` ring (the other rings always hash with CRC-32).
    pub ketama_hash: KetamaHash,
    /// Cache key of a hot key; `{key}` is replaced by it.
    pub key: String,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Fraction of the TTL added at random so a warmed set does not expire at once.
    pub ttl_jitter: f64,
    /// Commands per pipeline.
    pub pipeline: usize,
    /// Response timeout of one command or pipeline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `single` / `ring` mode: the backup node of a primary, by the primary's URL as written
    /// in `nodes`. While a primary is down its keys are read and written on its backup.
    pub backups: BTreeMap<String, String>,
    /// How often every node with a backup is pinged.
    #[serde(with = "humantime_serde")]
    pub health_every: Duration,
    /// Failed pings in a row after which a primary counts as down.
    pub health_failures: u32,
    /// `sentinel` mode: the name of the monitored master (`nodes` are the sentinels).
    pub master: String,
    /// Values longer than this many bytes are stored zstd-compressed; 0 never compresses.
    pub compress_over: usize,
    /// zstd level of compressed values, 1 (fast) to 22 (small).
    pub compress_level: i32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            mode: RedisMode::Single,
            nodes: vec!["redis://127.0.0.1:6379".into()],
            ring: RingAlgorithm::PeclMemcache,
            ketama_hash: KetamaHash::Fnv1a64,
            key: "product:{key}".into(),
            ttl: Duration::from_secs(3600),
            ttl_jitter: 0.1,
            pipeline: 1000,
            timeout: Duration::from_secs(10),
            backups: BTreeMap::new(),
            health_every: Duration::from_secs(1),
            health_failures: 3,
            master: "mymaster".into(),
            compress_over: 128 * 1024,
            compress_level: 3,
        }
    }
}

impl RedisConfig {
    /// Checks the keys of `[redis]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        check(
            self.nodes.is_empty(),
            "redis.nodes",
            "expected at least one node URL",
        )?;
        node_urls("redis.nodes", &self.nodes)?;
        check(
            self.mode == RedisMode::Single && self.nodes.len() != 1,
            "redis.nodes",
            "expected exactly one node in `single` mode",
        )?;
        check(
            !self.key.contains("{key}"),
            "redis.key",
            "expected the `{key}` placeholder",
        )?;
        check(
            !(0.0..=1.0).contains(&self.ttl_jitter),
            "redis.ttl_jitter",
            "expected a fraction between 0 and 1",
        )?;
        check(self.pipeline == 0, "redis.pipeline", "expected at least 1")?;
        self.validate_backups()?;
        check(
            self.health_every.is_zero(),
            "redis.health_every",
            "expected a positive duration",
        )?;
        check(
            self.health_failures == 0,
            "redis.health_failures",
            "expected at least 1",
        )?;
        check(
            self.mode == RedisMode::Sentinel && self.master.is_empty(),
            "redis.master",
            "expected the master name sentinel monitors",
        )?;
        check(
            !(1..=22).contains(&self.compress_level),
            "redis.compress_level",
            "expected a zstd level from 1 to 22",
        )
    }

    /// Checks `redis.backups`: only where the client places keys, each a primary's backup
    /// that is not itself a primary.
    fn validate_backups(&self) -> Result<(), Invalid> {
        check(
            !self.backups.is_empty() && !matches!(self.mode, RedisMode::Single | RedisMode::Ring),
            "redis.backups",
            "expected no backups outside `single` and `ring` mode (cluster and sentinel fail over by themselves)",
        )?;
        let bad = |message: String| Err(Invalid::new("redis.backups", message));
        for (primary, backup) in &self.backups {
            let (primary, backup) = (NodeUrl::from(primary), NodeUrl::from(backup));
            if let Err(e) = NodeUrl::parse(backup.expose()) {
                return bad(format!("backup of `{primary}`: {e}"));
            }
            if !self.nodes.iter().any(|n| n == primary.expose()) {
                return bad(format!(
                    "`{primary}` is not one of redis.nodes (expected a primary's URL as written there)"
                ));
            }
            if redis::parse_redis_url(backup.expose()).is_none() {
                return bad(format!(
                    "backup `{backup}` of `{primary}`: expected a redis:// URL"
                ));
            }
            if self.nodes.iter().any(|n| n == backup.expose()) {
                return bad(format!(
                    "backup `{backup}` of `{primary}` is itself a primary (its keys would move to the neighbour)"
                ));
            }
        }
        Ok(())
    }
}
