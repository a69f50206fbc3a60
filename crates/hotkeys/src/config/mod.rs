//! The topology file: the single configuration of one pipeline (see ARCHITECTURE.md).
//!
//! This module owns the typed form of `topology/*.toml`, its defaults, the environment
//! overrides (`HOTKEYS_<SECTION>_<KEY>`, `HOTKEYS_<KEY>` for top-level keys) and the errors a
//! bad file produces. Every other module receives the section it needs from here; nothing
//! else reads the file or the `HOTKEYS_*` variables.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Topology`]: loading, the checks across sections, the resolved counters |
//! | `kafka`, `source`, `count`, `zookeeper`, `mysql`, `redis`, `prewarm`, `sync`, `dashboard` | one section each: its keys, defaults and `validate` |
//! | `env` | the `HOTKEYS_*` environment overrides |
//! | [`secret`] | node URLs shown without their credentials; which keys may hold one |
//! | `error` | [`ConfigError`] |

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod count;
mod dashboard;
mod env;
mod error;
mod kafka;
mod mysql;
mod prewarm;
mod redis;
pub mod secret;
mod source;
mod sync;
mod zookeeper;

pub use self::count::{
    Action, Algorithm, CountConfig, Counter, CounterConfig, PRIMARY_COUNTER, Rule,
};
pub use self::dashboard::DashboardConfig;
pub use self::error::ConfigError;
use self::error::{Invalid, check};
pub use self::kafka::KafkaConfig;
pub use self::mysql::MysqlConfig;
pub use self::prewarm::{PrewarmConfig, RefreshBefore};
pub use self::redis::{KetamaHash, RedisConfig, RedisMode, RingAlgorithm};
pub use self::source::SourceConfig;
pub use self::sync::{SyncCompression, SyncConfig};
pub use self::zookeeper::ZookeeperConfig;

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
        env::apply_env(file, &mut table, env)?;
        let topology: Topology = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let mut message = e.inner().to_string();
                if secret::may_hold_secret(&key) {
                    message = secret::hide_quoted(&message);
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
        self.validate_sections().map_err(|e| e.in_file(file))
    }

    /// Each section's own checks, then the checks across sections.
    fn validate_sections(&self) -> Result<(), Invalid> {
        check(
            self.name.is_empty() || self.name.contains('/'),
            "name",
            "expected a non-empty name without `/`",
        )?;
        self.kafka.validate()?;
        self.source.validate()?;
        count::validate_tables(&self.counters)?;
        self.zookeeper.validate()?;
        self.mysql.validate()?;
        self.redis.validate()?;
        self.sync.validate()?;
        self.dashboard.validate()?;
        self.cross_section()
    }

    /// What one section cannot check alone: every counter's settings, resolved against
    /// `[count]` and bounded by `source.max_key_bytes`; `prewarm.refresh_before` against
    /// `redis.ttl`.
    fn cross_section(&self) -> Result<(), Invalid> {
        for (i, counter) in self.counters().iter().enumerate() {
            let section = match i {
                0 => "count".to_string(),
                _ => format!("counter[{}]", i - 1),
            };
            counter
                .count
                .validate(&section, self.source.max_key_bytes)?;
        }
        check(
            self.refresh_before() >= self.redis.ttl,
            "prewarm.refresh_before",
            "expected less than redis.ttl (otherwise every cached value is always loaded again)",
        )
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

    /// How long before its expiry a cached value is loaded again by prewarm
    /// (`prewarm.refresh_before` resolved against `redis.ttl`).
    pub fn refresh_before(&self) -> Duration {
        self.prewarm.refresh_before.of(self.redis.ttl)
    }
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
