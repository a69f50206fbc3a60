//! `[sync]`: the replication path to the other data centre, and the lookup of the secret
//! its two sides share.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Invalid, check};
use super::secret::{NodeUrl, node_urls};

/// Encoding of the HTTP batches `cache-sync ship` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncCompression {
    Zstd,
    Gzip,
    None,
}

/// The replication path to the other data centre.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Redis list holding queued operations (on the first local node).
    pub queue: String,
    /// Operations per HTTP batch.
    pub batch: usize,
    /// Batches sent before the oldest of them is acknowledged (1: strictly one at a time).
    pub in_flight: usize,
    /// Receiver URL of the other data centre.
    pub remote: String,
    /// Address `cache-sync receive` listens on.
    pub listen: String,
    /// Name of the environment variable holding the shared HMAC secret.
    pub secret_env: String,
    /// Key prefixes whose writes are queued for replication.
    pub replicate: Vec<String>,
    /// Largest request body the receiver accepts, in bytes (after decompression).
    pub max_body: usize,
    /// Redis nodes of the receiving data centre.
    pub apply_nodes: Vec<String>,
    /// The Redis node holding the replication state: the shipper's queue and in-flight
    /// batches, the receiver's per-stream records. Empty: the home of the cache (the first
    /// node of `redis.nodes` for the shipper, of `apply_nodes` for the receiver). It must not
    /// evict: ship and receive refuse to run on an `allkeys-*` maxmemory-policy.
    pub state: String,
    /// Compression of the request bodies the shipper sends.
    pub compression: SyncCompression,
    /// Time one HTTP batch may take, request and answer, before it is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest pause between two tries while the receiver is unreachable.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Failed tries in a row after which the shipper gives up; 0 keeps trying.
    pub retries: u32,
    /// How far the time a request was signed may be from the receiver's clock: older
    /// requests are refused as replays (401), so the two sides' clocks must agree within it.
    #[serde(with = "humantime_serde")]
    pub max_skew: Duration,
    /// PEM certificate chain `cache-sync receive` serves HTTPS with (with `tls_key`);
    /// empty: plain HTTP, for loopback only.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// PEM certificates the shipper trusts for an `https` remote instead of the system's
    /// roots; empty: the system's roots.
    pub tls_ca: String,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            queue: "FIFO:MEM".into(),
            batch: 1000,
            in_flight: 4,
            remote: "http://127.0.0.1:8480/sync".into(),
            listen: "127.0.0.1:8480".into(),
            secret_env: "HOTKEYS_SYNC_SECRET".into(),
            replicate: vec!["product:".into()],
            max_body: 16 * 1024 * 1024,
            apply_nodes: vec!["redis://127.0.0.1:6380".into()],
            state: String::new(),
            compression: SyncCompression::Zstd,
            timeout: Duration::from_secs(30),
            retry_max: Duration::from_secs(10),
            retries: 0,
            max_skew: Duration::from_secs(300),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
        }
    }
}

impl SyncConfig {
    /// Checks the keys of `[sync]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        check(self.batch == 0, "sync.batch", "expected at least 1")?;
        check(
            self.in_flight == 0 || self.in_flight > 64,
            "sync.in_flight",
            "expected between 1 and 64",
        )?;
        check(
            self.tls_cert.is_empty() != self.tls_key.is_empty(),
            "sync.tls_cert",
            "set both sync.tls_cert and sync.tls_key, or neither",
        )?;
        check(
            self.max_skew.is_zero(),
            "sync.max_skew",
            "expected more than 0",
        )?;
        node_urls("sync.apply_nodes", &self.apply_nodes)?;
        if self.state.is_empty() {
            return Ok(());
        }
        node_urls("sync.state", std::slice::from_ref(&self.state))?;
        check(
            redis::parse_redis_url(&self.state).is_none(),
            "sync.state",
            &format!(
                "`{}`: expected a redis:// URL",
                NodeUrl::new(self.state.as_str())
            ),
        )
    }

    /// The secret shared by `cache-sync ship` and `receive`, read from `secret_env`.
    pub fn secret(&self) -> Option<String> {
        std::env::var(&self.secret_env)
            .ok()
            .filter(|s| !s.is_empty())
    }
}
