//! The topology file: the single configuration of one pipeline.
//!
//! This module owns the typed form of `topology/*.toml`, its defaults, the environment
//! overrides (`HOTKEYS_<SECTION>_<KEY>`, `HOTKEYS_<KEY>` for top-level keys) and the errors a
//! bad file produces. Every other module receives the section it needs from here; nothing
//! else reads the file or the `HOTKEYS_*` variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod secret;

use self::secret::{NodeUrl, NodeUrlError};

/// What went wrong loading a topology; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not valid TOML: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {message}")]
    Key {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("{file}: environment variable {var}: {message}")]
    Env {
        file: PathBuf,
        var: String,
        message: String,
    },
}

/// One pipeline: a Kafka topic counted into hot lists that prewarm and cache-sync consume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// ZooKeeper path segment; several topologies can share a cluster.
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub source: SourceConfig,
    #[serde(default)]
    pub count: CountConfig,
    /// More counters over the same events (`[[counter]]` tables); see [`Topology::counters`].
    #[serde(default, rename = "counter", skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<CounterConfig>,
    #[serde(default)]
    pub zookeeper: ZookeeperConfig,
    #[serde(default)]
    pub mysql: MysqlConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub prewarm: PrewarmConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub dashboard: DashboardConfig,
}

fn default_name() -> String {
    "product-detail".into()
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            name: default_name(),
            kafka: KafkaConfig::default(),
            source: SourceConfig::default(),
            count: CountConfig::default(),
            counters: Vec::new(),
            zookeeper: ZookeeperConfig::default(),
            mysql: MysqlConfig::default(),
            redis: RedisConfig::default(),
            prewarm: PrewarmConfig::default(),
            sync: SyncConfig::default(),
            dashboard: DashboardConfig::default(),
        }
    }
}

/// Where the access events live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Topic of access events, keyed by the hot key.
    pub topic: String,
    /// Partition count used when the tools create the topic; one task per partition.
    pub partitions: u32,
    /// Replication factor used when the tools create the topic.
    pub replication: u16,
    /// Consumer group of the hot-counter workers.
    pub group: String,
    /// Topic that receives malformed events unchanged; empty turns it off.
    pub dead_letter: String,
    /// librdkafka settings for producers (SASL, TLS, tuning); they win over ours.
    pub producer: BTreeMap<String, String>,
    /// librdkafka settings for consumers; they win over ours.
    pub consumer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "access-log".into(),
            partitions: 6,
            replication: 1,
            group: "hot-counter".into(),
            dead_letter: String::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

/// How the hot key is found in an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// JSON pointer into the event; the Kafka message key is used when it is absent.
    pub key: String,
    /// Query parameter holding the key in nginx access-log lines.
    pub query_param: String,
    /// Longer keys are malformed events: counted, sampled in the log, sent to the
    /// dead-letter topic. Bounds what one key costs in memory, hot lists and checkpoints.
    pub max_key_bytes: usize,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            key: "/uri_args/productId".into(),
            query_param: "productId".into(),
            max_key_bytes: 256,
        }
    }
}

/// Counting algorithm of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Space-Saving (Metwally et al. 2005): guaranteed error bounds.
    SpaceSaving,
    /// A bounded LRU map of counters: the least recently seen key is evicted.
    Lru,
}

/// Per-task counting: memory bound, window and what gets published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountConfig {
    pub algorithm: Algorithm,
    /// Counter entries per task (per window bucket).
    pub capacity: usize,
    /// Length of the rolling window, by event time.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Buckets the window is split into; it advances one bucket at a time.
    pub buckets: u32,
    /// Items in a published hot list.
    pub top_n: usize,
    /// How often each task publishes its hot list, when it changed.
    #[serde(with = "humantime_serde")]
    pub publish_every: Duration,
    /// How often each task writes its counter checkpoint (also at revoke and shutdown). A
    /// new owner resumes from the checkpoint and re-counts what came after it.
    #[serde(with = "humantime_serde")]
    pub checkpoint_every: Duration,
    /// Events stamped further ahead of the worker's clock are counted as happening now
    /// (and as `future`); default: one bucket (`window / buckets`).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_future: Option<Duration>,
}

impl CountConfig {
    /// The length of one window bucket.
    pub fn bucket(&self) -> Duration {
        self.window / self.buckets.max(1)
    }

    /// How far ahead of the clock an event's timestamp is taken as it is.
    pub fn max_future(&self) -> Duration {
        self.max_future.unwrap_or_else(|| self.bucket())
    }
}

impl Default for CountConfig {
    fn default() -> Self {
        CountConfig {
            algorithm: Algorithm::SpaceSaving,
            capacity: 10_000,
            window: Duration::from_secs(300),
            buckets: 10,
            top_n: 100,
            publish_every: Duration::from_millis(500),
            checkpoint_every: Duration::from_secs(30),
            max_future: None,
        }
    }
}

/// Name of the counter that `[source]` and `[count]` define: the product counter whose hot
/// lists prewarm reads. `[[counter]]` tables cannot use it.
pub const PRIMARY_COUNTER: &str = "hot";

/// One `[[counter]]` table: another key counted over the same events. Counting settings left
/// out are taken from `[count]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterConfig {
    /// ZooKeeper path segment and metrics label.
    pub name: String,
    /// JSON pointer to the counted value; events without one are not counted by this counter.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_n: Option<usize>,
    /// Count per window at which `action` is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// How long a key stays blacklisted after it was last seen over the threshold.
    #[serde(default = "default_ban_for", with = "humantime_serde")]
    pub ban_for: Duration,
    /// Keys the rule never acts on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

impl CounterConfig {
    /// A counter of the value at `key` named `name`, every other setting inherited from
    /// `[count]`, without a rule.
    pub fn new(name: &str, key: &str) -> CounterConfig {
        CounterConfig {
            name: name.into(),
            key: key.into(),
            algorithm: None,
            capacity: None,
            window: None,
            buckets: None,
            top_n: None,
            threshold: None,
            action: None,
            ban_for: default_ban_for(),
            allow: Vec::new(),
        }
    }
}

fn default_ban_for() -> Duration {
    Duration::from_secs(600)
}

/// What a threshold rule does to a key that crosses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Adds the key to the counter's blacklist (`hotkeys::blacklist`).
    Blacklist,
}

/// A counter as the workers run it: `[source]`+`[count]` or one `[[counter]]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    pub name: String,
    /// JSON pointer to the counted key.
    pub key: String,
    /// Only the primary counter falls back to the Kafka message key (the product id).
    pub primary: bool,
    pub count: CountConfig,
    pub rule: Option<Rule>,
}

/// A threshold rule of a counter.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub threshold: u64,
    pub action: Action,
    pub ban_for: Duration,
    pub allow: std::collections::BTreeSet<String>,
}

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

/// The database the cache is warmed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlConfig {
    /// `mysql://user@host:port/database`; a password here is used only when `password_env`
    /// names no variable that is set.
    pub url: String,
    /// Name of the environment variable holding the password (never the password itself);
    /// empty: the URL's own.
    pub password_env: String,
    /// Row query; `{ids}` is replaced by the bound key list, and one column must be `id`.
    pub query: String,
    /// Keys per `IN (…)` query.
    pub batch: usize,
    /// Connections in the pool of one process.
    pub pool: u32,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            url: "mysql://hotkeys@127.0.0.1:3306/hotkeys".into(),
            password_env: "HOTKEYS_MYSQL_PASSWORD".into(),
            query: "SELECT id, shop_id, name, price, stock, attributes, updated_at FROM products WHERE id IN ({ids})".into(),
            batch: 500,
            pool: 8,
        }
    }
}

impl MysqlConfig {
    /// The password from the variable `password_env` names, when it is set.
    pub fn password_from_env(&self) -> Option<String> {
        if self.password_env.is_empty() {
            return None;
        }
        std::env::var(&self.password_env)
            .ok()
            .filter(|s| !s.is_empty())
    }
}

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
    /// Checks the keys of `[redis]`; on error, the key and what was expected.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: &str| Err((key.to_string(), message.to_string()));
        if self.nodes.is_empty() {
            return bad("redis.nodes", "expected at least one node URL");
        }
        node_urls("redis.nodes", &self.nodes)?;
        if self.mode == RedisMode::Single && self.nodes.len() != 1 {
            return bad("redis.nodes", "expected exactly one node in `single` mode");
        }
        if !self.key.contains("{key}") {
            return bad("redis.key", "expected the `{key}` placeholder");
        }
        if !(0.0..=1.0).contains(&self.ttl_jitter) {
            return bad("redis.ttl_jitter", "expected a fraction between 0 and 1");
        }
        if self.pipeline == 0 {
            return bad("redis.pipeline", "expected at least 1");
        }
        if !self.backups.is_empty() && !matches!(self.mode, RedisMode::Single | RedisMode::Ring) {
            return bad(
                "redis.backups",
                "expected no backups outside `single` and `ring` mode (cluster and sentinel fail over by themselves)",
            );
        }
        for (primary, backup) in &self.backups {
            let (primary, backup) = (NodeUrl::from(primary), NodeUrl::from(backup));
            if let Err(e) = NodeUrl::parse(backup.expose()) {
                return Err((
                    "redis.backups".into(),
                    format!("backup of `{primary}`: {e}"),
                ));
            }
            if !self.nodes.iter().any(|n| n == primary.expose()) {
                return Err((
                    "redis.backups".into(),
                    format!(
                        "`{primary}` is not one of redis.nodes (expected a primary's URL as written there)"
                    ),
                ));
            }
            if redis::parse_redis_url(backup.expose()).is_none() {
                return Err((
                    "redis.backups".into(),
                    format!("backup `{backup}` of `{primary}`: expected a redis:// URL"),
                ));
            }
            if self.nodes.iter().any(|n| n == backup.expose()) {
                return Err((
                    "redis.backups".into(),
                    format!(
                        "backup `{backup}` of `{primary}` is itself a primary (its keys would move to the neighbour)"
                    ),
                ));
            }
        }
        if self.health_every.is_zero() {
            return bad("redis.health_every", "expected a positive duration");
        }
        if self.health_failures == 0 {
            return bad("redis.health_failures", "expected at least 1");
        }
        if self.mode == RedisMode::Sentinel && self.master.is_empty() {
            return bad("redis.master", "expected the master name sentinel monitors");
        }
        if !(1..=22).contains(&self.compress_level) {
            return bad("redis.compress_level", "expected a zstd level from 1 to 22");
        }
        Ok(())
    }
}

/// How prewarm treats values already in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrewarmConfig {
    /// A cached value with less than this left to live is loaded again; one with more is
    /// skipped without asking MySQL. See [`Topology::refresh_before`].
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
    /// The first bound that cannot work, as (key, what was expected).
    fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_streams == 0 {
            return Err(("dashboard.max_streams", "expected at least 1"));
        }
        if self.max_requests == 0 {
            return Err(("dashboard.max_requests", "expected at least 1"));
        }
        if self.request_timeout.is_zero() {
            return Err(("dashboard.request_timeout", "expected more than 0s"));
        }
        if self.query_timeout < Duration::from_millis(100) {
            return Err(("dashboard.query_timeout", "expected at least 100ms"));
        }
        if self.max_range.is_zero() {
            return Err(("dashboard.max_range", "expected more than 0s"));
        }
        Ok(())
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

impl Topology {
    /// Reads a topology file and applies the `HOTKEYS_*` overrides of this process.
    pub fn load(path: &Path) -> Result<Topology, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Topology::parse(path, &text, std::env::vars())
    }

    /// Parses topology text with the given environment; `file` only names it in errors.
    pub fn parse(
        file: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Topology, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    file: file.to_path_buf(),
                    message: e.message().to_string(),
                })?;
        apply_env(file, &mut table, env)?;
        let topology: Topology = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let mut message = e.inner().to_string();
                if may_hold_secret(&key) {
                    message = crate::config::secret::hide_quoted(&message);
                }
                ConfigError::Key {
                    file: file.to_path_buf(),
                    key,
                    message,
                }
            })?;
        topology.validate(file)?;
        Ok(topology)
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Key {
                file: file.to_path_buf(),
                key: key.into(),
                message: message.into(),
            })
        };
        if self.name.is_empty() || self.name.contains('/') {
            return bad("name", "expected a non-empty name without `/`");
        }
        if self.kafka.partitions == 0 {
            return bad("kafka.partitions", "expected at least 1");
        }
        if !self.source.key.is_empty() && !self.source.key.starts_with('/') {
            return bad("source.key", "expected a JSON pointer starting with `/`");
        }
        if self.count.publish_every.is_zero() {
            return bad("count.publish_every", "expected a positive duration");
        }
        if self.count.checkpoint_every < self.count.publish_every {
            return bad(
                "count.checkpoint_every",
                "expected at least count.publish_every (a checkpoint is written with a publish)",
            );
        }
        if self.source.max_key_bytes == 0 {
            return bad("source.max_key_bytes", "expected at least 1");
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.counters.iter().enumerate() {
            let at = |key: &str| format!("counter[{i}].{key}");
            if c.name.is_empty()
                || c.name.contains('/')
                || c.name == PRIMARY_COUNTER
                || !names.insert(c.name.as_str())
            {
                return bad(
                    &at("name"),
                    &format!(
                        "expected a unique non-empty name without `/`, not `{PRIMARY_COUNTER}`"
                    ),
                );
            }
            if !c.key.starts_with('/') {
                return bad(&at("key"), "expected a JSON pointer starting with `/`");
            }
            match (c.threshold, c.action) {
                (Some(0), _) => return bad(&at("threshold"), "expected at least 1"),
                (Some(_), None) => {
                    return bad(&at("action"), "expected an action with `threshold`");
                }
                (None, Some(_)) => {
                    return bad(&at("threshold"), "expected a threshold with `action`");
                }
                _ => {}
            }
            if c.ban_for.is_zero() {
                return bad(&at("ban_for"), "expected a positive duration");
            }
        }
        for counter in self.counters() {
            let section = if counter.primary {
                "count".to_string()
            } else {
                let i = self.counters.iter().position(|c| c.name == counter.name);
                format!("counter[{}]", i.unwrap_or_default())
            };
            validate_count(&counter.count, self.source.max_key_bytes).map_err(
                |(key, message)| ConfigError::Key {
                    file: file.to_path_buf(),
                    key: format!("{section}.{key}"),
                    message,
                },
            )?;
        }
        if !self.zookeeper.root.starts_with('/') || self.zookeeper.root.ends_with('/') {
            return bad(
                "zookeeper.root",
                "expected an absolute path without trailing `/`",
            );
        }
        if !self.mysql.query.contains("{ids}") {
            return bad("mysql.query", "expected the `{ids}` placeholder");
        }
        if self.mysql.batch == 0 || self.mysql.batch > 65_535 {
            return bad(
                "mysql.batch",
                "expected between 1 and 65535 (MySQL bind limit)",
            );
        }
        if let Err((key, message)) = self.redis.validate() {
            return bad(&key, &message);
        }
        if self.refresh_before() >= self.redis.ttl {
            return bad(
                "prewarm.refresh_before",
                "expected less than redis.ttl (otherwise every cached value is always loaded again)",
            );
        }
        if self.sync.batch == 0 {
            return bad("sync.batch", "expected at least 1");
        }
        if self.sync.in_flight == 0 || self.sync.in_flight > 64 {
            return bad("sync.in_flight", "expected between 1 and 64");
        }
        if self.sync.tls_cert.is_empty() != self.sync.tls_key.is_empty() {
            return bad(
                "sync.tls_cert",
                "set both sync.tls_cert and sync.tls_key, or neither",
            );
        }
        if self.sync.max_skew.is_zero() {
            return bad("sync.max_skew", "expected more than 0");
        }
        if self
            .dashboard
            .listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return bad(
                "dashboard.listen",
                "expected an address such as 127.0.0.1:8490",
            );
        }
        if let Err((key, message)) =
            node_urls("sync.apply_nodes", &self.sync.apply_nodes).and_then(|()| {
                match self.sync.state.as_str() {
                    "" => Ok(()),
                    state => node_urls("sync.state", &[state.to_string()]),
                }
            })
        {
            return bad(&key, &message);
        }
        if let Err((key, message)) = self.dashboard.validate() {
            return bad(key, message);
        }
        if !self.sync.state.is_empty() && redis::parse_redis_url(&self.sync.state).is_none() {
            return bad(
                "sync.state",
                &format!(
                    "`{}`: expected a redis:// URL",
                    NodeUrl::new(self.sync.state.as_str())
                ),
            );
        }
        Ok(())
    }

    /// Every counter of the pipeline, the primary one (`[source]` and `[count]`) first.
    pub fn counters(&self) -> Vec<Counter> {
        let primary = Counter {
            name: PRIMARY_COUNTER.into(),
            key: self.source.key.clone(),
            primary: true,
            count: self.count.clone(),
            rule: None,
        };
        let extra = self.counters.iter().map(|c| Counter {
            name: c.name.clone(),
            key: c.key.clone(),
            primary: false,
            count: CountConfig {
                algorithm: c.algorithm.unwrap_or(self.count.algorithm),
                capacity: c.capacity.unwrap_or(self.count.capacity),
                window: c.window.unwrap_or(self.count.window),
                buckets: c.buckets.unwrap_or(self.count.buckets),
                top_n: c.top_n.unwrap_or(self.count.top_n),
                ..self.count.clone()
            },
            rule: c.threshold.zip(c.action).map(|(threshold, action)| Rule {
                threshold,
                action,
                ban_for: c.ban_for,
                allow: c.allow.iter().cloned().collect(),
            }),
        });
        std::iter::once(primary).chain(extra).collect()
    }

    /// The counter called `name`, if the topology has one.
    pub fn counter(&self, name: &str) -> Option<Counter> {
        self.counters().into_iter().find(|c| c.name == name)
    }

    /// The dashboard's write token, read from `dashboard.token_env`.
    pub fn dashboard_token(&self) -> Option<String> {
        std::env::var(&self.dashboard.token_env)
            .ok()
            .filter(|s| !s.is_empty())
    }

    /// How long before its expiry a cached value is loaded again by prewarm
    /// (`prewarm.refresh_before` resolved against `redis.ttl`).
    pub fn refresh_before(&self) -> Duration {
        self.prewarm.refresh_before.of(self.redis.ttl)
    }

    /// The secret shared by `cache-sync ship` and `receive`, read from `sync.secret_env`.
    pub fn sync_secret(&self) -> Option<String> {
        std::env::var(&self.sync.secret_env)
            .ok()
            .filter(|s| !s.is_empty())
    }
}

/// Keys whose values may carry a credential: an error about one never quotes its value.
fn may_hold_secret(key: &str) -> bool {
    [
        "redis.nodes",
        "redis.backups",
        "sync.apply_nodes",
        "sync.state",
        "sync.remote",
        "mysql.url",
    ]
    .iter()
    .any(|k| key.starts_with(k))
}

/// Checks every node URL of the list at `key` (`sync.state` alone is a list of one); an
/// error names the node by its place (`redis.nodes[1]`). A password pasted raw is never
/// quoted; another malformed URL is shown as `NodeUrl` shows it, without credentials.
fn node_urls(key: &str, urls: &[String]) -> Result<(), (String, String)> {
    for (i, url) in urls.iter().enumerate() {
        let place = match key {
            "sync.state" => key.to_string(),
            _ => format!("{key}[{i}]"),
        };
        match NodeUrl::parse(url) {
            Ok(_) => {}
            Err(e @ NodeUrlError::RawInPassword(_)) => {
                return Err((key.to_string(), format!("{place}: {e}")));
            }
            Err(e) => {
                let shown = NodeUrl::new(url.as_str());
                return Err((key.to_string(), format!("{place} (`{shown}`): {e}")));
            }
        }
    }
    Ok(())
}

/// The limits every counter's settings obey; `Err` names the key (within its table).
fn validate_count(count: &CountConfig, max_key_bytes: usize) -> Result<(), (&'static str, String)> {
    let err = |key, message: &str| Err((key, message.to_string()));
    if count.capacity == 0 {
        return err("capacity", "expected at least 1");
    }
    if count.buckets == 0 {
        return err("buckets", "expected at least 1");
    }
    if count.window.as_millis() < u128::from(count.buckets) {
        return err("window", "expected at least one millisecond per bucket");
    }
    if count.top_n == 0 || count.top_n > count.capacity {
        return err("top_n", "expected between 1 and the capacity");
    }
    let fit = crate::hotlist::max_items(max_key_bytes);
    if count.top_n > fit {
        return err(
            "top_n",
            &format!(
                "expected at most {fit}: {} items of up to source.max_key_bytes = {max_key_bytes} \
                 must fit a hot list of {} bytes (one ZooKeeper request)",
                count.top_n,
                crate::hotlist::MAX_BYTES
            ),
        );
    }
    Ok(())
}

/// Applies `HOTKEYS_<SECTION>_<KEY>` and `HOTKEYS_<KEY>` to the keys a topology knows.
///
/// Only names of known keys are taken, so unrelated variables that share the prefix (the
/// sync secret, say) are left alone. The value is read with the type of the key's default:
/// numbers and booleans as such, lists as comma-separated strings.
fn apply_env(
    file: &Path,
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Topology::default())
        .expect("the default topology serializes to a table");
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("HOTKEYS_"))
        .collect();
    overrides.sort();
    for (var, value) in overrides {
        let name = var["HOTKEYS_".len()..].to_ascii_lowercase();
        let Some((section, key, default)) = resolve(&defaults, &name) else {
            continue;
        };
        let parsed = typed_value(&value, default).ok_or_else(|| ConfigError::Env {
            file: file.to_path_buf(),
            var: var.clone(),
            message: format!("expected {}, found `{value}`", default.type_str()),
        })?;
        match section {
            None => {
                table.insert(key, parsed);
            }
            Some(section) => {
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(t) = entry else {
                    return Err(ConfigError::Key {
                        file: file.to_path_buf(),
                        key: section,
                        message: "expected a table".into(),
                    });
                };
                t.insert(key, parsed);
            }
        }
    }
    Ok(())
}

/// Finds which key of the default topology an override name such as `count_publish_every`
/// refers to. Optional keys without a default (none serialized) cannot be set this way.
fn resolve<'a>(
    defaults: &'a toml::Table,
    name: &str,
) -> Option<(Option<String>, String, &'a toml::Value)> {
    if let Some(v) = defaults.get(name).filter(|v| !v.is_table()) {
        return Some((None, name.to_string(), v));
    }
    let (section, key) = name.split_once('_')?;
    let v = defaults.get(section)?.as_table()?.get(key)?;
    (!v.is_table()).then(|| (Some(section.to_string()), key.to_string(), v))
}

fn typed_value(raw: &str, like: &toml::Value) -> Option<toml::Value> {
    Some(match like {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(raw.trim().parse().ok()?),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Topology, ConfigError> {
        parse_env(text, &[])
    }

    fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Topology, ConfigError> {
        Topology::parse(
            Path::new("t.toml"),
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn shipped_default_topology_equals_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topology/default.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = parse(&text).unwrap();
        assert_eq!(loaded, Topology::default());
    }

    #[test]
    fn empty_file_takes_every_default() {
        assert_eq!(parse("").unwrap(), Topology::default());
    }

    #[test]
    fn durations_read_human_units() {
        let t = parse("[count]\nwindow = \"2m\"\npublish_every = \"250ms\"\n").unwrap();
        assert_eq!(t.count.window, Duration::from_secs(120));
        assert_eq!(t.count.publish_every, Duration::from_millis(250));
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let err = parse("[count]\ncapacty = 5\n").unwrap_err().to_string();
        assert!(err.starts_with("t.toml: key `count"), "{err}");
        assert!(err.contains("capacty"), "{err}");
    }

    #[test]
    fn unknown_section_is_rejected() {
        let err = parse("[kafak]\nbrokers = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("kafak"), "{err}");
    }

    #[test]
    fn wrong_type_names_file_key_and_expectation() {
        let err = parse("[count]\ncapacity = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.toml"), "{err}");
        assert!(err.contains("count.capacity"), "{err}");
        assert!(err.contains("expected"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = parse("[count]\nwindow = \"five minutes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("count.window"), "{err}");
    }

    #[test]
    fn syntax_error_names_the_file() {
        let err = parse("[count\n").unwrap_err().to_string();
        assert!(err.starts_with("t.toml: not valid TOML"), "{err}");
    }

    #[test]
    fn missing_keys_take_their_defaults_section_by_section() {
        let t = parse("name = \"x\"\n[kafka]\ntopic = \"t\"\n").unwrap();
        assert_eq!(t.name, "x");
        assert_eq!(t.kafka.topic, "t");
        assert_eq!(t.kafka.brokers, KafkaConfig::default().brokers);
        assert_eq!(t.count, CountConfig::default());
    }

    #[test]
    fn env_overrides_sections_and_top_level_keys_with_types() {
        let t = parse_env(
            "[kafka]\nbrokers = \"file:1\"\n",
            &[
                ("HOTKEYS_KAFKA_BROKERS", "env:9092"),
                ("HOTKEYS_COUNT_PUBLISH_EVERY", "1s"),
                ("HOTKEYS_COUNT_CAPACITY", "777"),
                ("HOTKEYS_REDIS_NODES", "redis://a:1, redis://b:2"),
                ("HOTKEYS_REDIS_MODE", "ring"),
                ("HOTKEYS_NAME", "other"),
                ("HOTKEYS_SYNC_SECRET", "not-a-key-so-ignored"),
            ],
        )
        .unwrap();
        assert_eq!(t.kafka.brokers, "env:9092");
        assert_eq!(t.count.publish_every, Duration::from_secs(1));
        assert_eq!(t.count.capacity, 777);
        assert_eq!(t.redis.nodes, vec!["redis://a:1", "redis://b:2"]);
        assert_eq!(t.name, "other");
    }

    #[test]
    fn env_override_of_wrong_type_names_the_variable() {
        let err = parse_env("", &[("HOTKEYS_COUNT_CAPACITY", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HOTKEYS_COUNT_CAPACITY"), "{err}");
        assert!(err.contains("integer"), "{err}");
    }

    #[test]
    fn librdkafka_passthrough_tables_are_kept() {
        let t = parse("[kafka.producer]\n\"compression.type\" = \"zstd\"\n").unwrap();
        assert_eq!(t.kafka.producer["compression.type"], "zstd");
    }

    #[test]
    fn invalid_values_are_rejected_with_the_key() {
        for (text, key) in [
            ("[count]\ncapacity = 0\n", "count.capacity"),
            ("[count]\npublish_every = \"0s\"\n", "count.publish_every"),
            ("[count]\ntop_n = 20000\ncapacity = 30000\n", "count.top_n"),
            ("[mysql]\nquery = \"SELECT 1\"\n", "mysql.query"),
            ("[redis]\nkey = \"product\"\n", "redis.key"),
            ("[source]\nkey = \"uri_args\"\n", "source.key"),
            ("[zookeeper]\nroot = \"hotkeys\"\n", "zookeeper.root"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn without_counter_tables_there_is_only_the_primary_counter() {
        let counters = Topology::default().counters();
        assert_eq!(counters.len(), 1);
        assert_eq!(counters[0].name, PRIMARY_COUNTER);
        assert!(counters[0].primary);
        assert_eq!(counters[0].key, SourceConfig::default().key);
        assert_eq!(counters[0].count, CountConfig::default());
    }

    #[test]
    fn counter_tables_inherit_what_they_leave_out_from_count() {
        let t = parse(
            "[count]\ncapacity = 500\nwindow = \"1m\"\n\
             [[counter]]\nname = \"caller\"\nkey = \"/headers/x-real-ip\"\ntop_n = 20\n\
             threshold = 1000\naction = \"blacklist\"\nban_for = \"30s\"\nallow = [\"10.0.0.1\"]\n\
             [[counter]]\nname = \"user\"\nkey = \"/uri_args/userId\"\nalgorithm = \"lru\"\n",
        )
        .unwrap();
        let counters = t.counters();
        assert_eq!(
            counters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            [PRIMARY_COUNTER, "caller", "user"]
        );
        let caller = t.counter("caller").unwrap();
        assert!(!caller.primary);
        assert_eq!(caller.count.capacity, 500);
        assert_eq!(caller.count.window, Duration::from_secs(60));
        assert_eq!(caller.count.top_n, 20);
        let rule = caller.rule.unwrap();
        assert_eq!(rule.threshold, 1000);
        assert_eq!(rule.action, Action::Blacklist);
        assert_eq!(rule.ban_for, Duration::from_secs(30));
        assert!(rule.allow.contains("10.0.0.1"));
        let user = t.counter("user").unwrap();
        assert_eq!(user.count.algorithm, Algorithm::Lru);
        assert_eq!(user.rule, None);
    }

    #[test]
    fn bad_counter_tables_are_rejected_with_their_index() {
        let table = |body: &str| format!("[[counter]]\n{body}\n");
        for (text, key) in [
            (table("name = \"hot\"\nkey = \"/a\""), "counter[0].name"),
            (table("name = \"a/b\"\nkey = \"/a\""), "counter[0].name"),
            (
                format!(
                    "{}{}",
                    table("name = \"x\"\nkey = \"/a\""),
                    table("name = \"x\"\nkey = \"/b\"")
                ),
                "counter[1].name",
            ),
            (table("name = \"x\"\nkey = \"a\""), "counter[0].key"),
            (
                table("name = \"x\"\nkey = \"/a\"\nthreshold = 5"),
                "counter[0].action",
            ),
            (
                table("name = \"x\"\nkey = \"/a\"\naction = \"blacklist\""),
                "counter[0].threshold",
            ),
            (
                table("name = \"x\"\nkey = \"/a\"\ncapacity = 0"),
                "counter[0].capacity",
            ),
            (
                table("name = \"x\"\nkey = \"/a\"\nthreshold = 5\naction = \"ban\""),
                "counter[0].action",
            ),
            (
                table("name = \"x\"\nkey = \"/a\"\nthresold = 5"),
                "thresold",
            ),
            (table("key = \"/a\""), "name"),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn redis_backups_map_primaries_to_their_backups() {
        let t = parse(
            "[redis]\nmode = \"ring\"\nnodes = [\"redis://a:1\", \"redis://b:2\"]\n\
             health_every = \"250ms\"\nhealth_failures = 2\n\
             [redis.backups]\n\"redis://a:1\" = \"redis://c:3\"\n",
        )
        .unwrap();
        assert_eq!(t.redis.backups["redis://a:1"], "redis://c:3");
        assert_eq!(t.redis.health_every, Duration::from_millis(250));
        assert_eq!(t.redis.health_failures, 2);
    }

    #[test]
    fn bad_redis_failover_and_codec_values_are_rejected_with_the_key_and_reason() {
        let ring = "[redis]\nmode = \"ring\"\nnodes = [\"redis://a:1\", \"redis://b:2\"]\n";
        for (text, key, reason) in [
            (
                format!("{ring}[redis.backups]\n\"redis://x:9\" = \"redis://c:3\"\n"),
                "redis.backups",
                "not one of redis.nodes",
            ),
            (
                format!("{ring}[redis.backups]\n\"redis://a:1\" = \"redis://b:2\"\n"),
                "redis.backups",
                "itself a primary",
            ),
            (
                format!("{ring}[redis.backups]\n\"redis://a:1\" = \"c:3\"\n"),
                "redis.backups",
                "redis:// URL",
            ),
            (
                "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:1\"]\n\
                 [redis.backups]\n\"redis://a:1\" = \"redis://c:3\"\n"
                    .to_string(),
                "redis.backups",
                "no backups outside",
            ),
            (
                format!("{ring}health_every = \"0s\"\n"),
                "redis.health_every",
                "positive",
            ),
            (
                format!("{ring}health_failures = 0\n"),
                "redis.health_failures",
                "at least 1",
            ),
            (
                "[redis]\nmode = \"sentinel\"\nmaster = \"\"\n".to_string(),
                "redis.master",
                "master name",
            ),
            (
                "[redis]\ncompress_level = 40\n".to_string(),
                "redis.compress_level",
                "1 to 22",
            ),
            (
                "[redis]\ncompress_over = -1\n".to_string(),
                "redis.compress_over",
                "",
            ),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_algorithm_lists_the_choices() {
        let err = parse("[count]\nalgorithm = \"count-min\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("space-saving") && err.contains("lru"), "{err}");
    }

    #[test]
    fn dashboard_keys_take_env_overrides_and_a_bad_address_is_named() {
        let t = parse_env(
            "",
            &[
                ("HOTKEYS_DASHBOARD_RECORD", "0s"),
                ("HOTKEYS_DASHBOARD_LISTEN", "0.0.0.0:9000"),
            ],
        )
        .unwrap();
        assert!(t.dashboard.record.is_zero());
        assert_eq!(t.dashboard.listen, "0.0.0.0:9000");
        assert_eq!(t.dashboard.token_env, "HOTKEYS_DASHBOARD_TOKEN");
        let err = parse("[dashboard]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dashboard.listen"), "{err}");
    }

    #[test]
    fn dashboard_limits_take_env_overrides_and_a_zero_bound_is_named() {
        let t = parse_env(
            "[dashboard]\nallowed_hosts = [\"dash.example\"]\n",
            &[
                ("HOTKEYS_DASHBOARD_MAX_STREAMS", "5"),
                ("HOTKEYS_DASHBOARD_MAX_RANGE", "6h"),
            ],
        )
        .unwrap();
        assert_eq!(t.dashboard.allowed_hosts, ["dash.example"]);
        assert_eq!(t.dashboard.max_streams, 5);
        assert_eq!(t.dashboard.max_range, Duration::from_secs(6 * 3600));
        assert_eq!(t.dashboard.max_requests, 64);
        for (text, key) in [
            ("max_streams = 0", "dashboard.max_streams"),
            ("max_requests = 0", "dashboard.max_requests"),
            ("request_timeout = \"0s\"", "dashboard.request_timeout"),
            ("query_timeout = \"10ms\"", "dashboard.query_timeout"),
            ("max_range = \"0s\"", "dashboard.max_range"),
        ] {
            let err = parse(&format!("[dashboard]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn refresh_before_is_a_share_of_the_ttl_or_a_duration_and_below_the_ttl() {
        let default = parse("").unwrap();
        assert_eq!(default.refresh_before(), Duration::from_secs(360));
        let share = parse("[redis]\nttl = \"10m\"\n[prewarm]\nrefresh_before = \"25%\"\n");
        assert_eq!(share.unwrap().refresh_before(), Duration::from_secs(150));
        let fixed = parse_env("", &[("HOTKEYS_PREWARM_REFRESH_BEFORE", "90s")]).unwrap();
        assert_eq!(fixed.refresh_before(), Duration::from_secs(90));
        for (text, reason) in [
            ("[prewarm]\nrefresh_before = \"100%\"\n", "percentage"),
            ("[prewarm]\nrefresh_before = \"soon\"\n", "duration"),
            (
                "[prewarm]\nrefresh_before = \"2h\"\n",
                "less than redis.ttl",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains("prewarm.refresh_before") && err.contains(reason),
                "{text}: {err}"
            );
        }
    }
}
