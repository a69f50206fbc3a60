//! Key templates: the cache key of a hot key, and the TTL a warmed key is written with.

use std::time::Duration;

use crate::config::RedisConfig;

/// The cache key of a hot key: `redis.key` with `{key}` replaced.
pub fn cache_key(cfg: &RedisConfig, hot_key: &str) -> String {
    cfg.key.replace("{key}", hot_key)
}

/// `redis.ttl` plus a random share of up to `redis.ttl_jitter` of it, so that keys warmed
/// together do not all expire together.
pub fn jittered_ttl(cfg: &RedisConfig) -> Duration {
    let jitter = cfg.ttl_jitter.clamp(0.0, 1.0) * rand::random::<f64>();
    cfg.ttl + cfg.ttl.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_fills_the_template() {
        let cfg = RedisConfig::default();
        assert_eq!(cache_key(&cfg, "11"), "product:11");
    }

    #[test]
    fn jittered_ttl_stays_within_the_configured_fraction() {
        let cfg = RedisConfig {
            ttl: Duration::from_secs(100),
            ttl_jitter: 0.1,
            ..RedisConfig::default()
        };
        for _ in 0..1000 {
            let ttl = jittered_ttl(&cfg);
            assert!(ttl >= Duration::from_secs(100) && ttl <= Duration::from_secs(110));
        }
    }
}
