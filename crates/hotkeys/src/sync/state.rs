//! The node that holds the replication state (`sync.state`, or the home of the cache), and
//! the check that it never evicts it.

use redis::Value;

use super::error::SyncError;
use crate::config::secret::NodeUrl;
use crate::config::{RedisConfig, RedisMode, SyncConfig};
use crate::redis::{CacheError, CacheNodes, RedisConn};

/// The connection to the node that holds the replication state, and its name for messages:
/// `sync.state` when set, else the home of `cache` (see [`crate::redis::CacheNodes::home`]).
pub async fn connect_state(
    cache: &RedisConfig,
    sync: &SyncConfig,
) -> Result<(RedisConn, String), SyncError> {
    if !sync.state.is_empty() {
        let conn = RedisConn::connect(&sync.state, cache.timeout).await?;
        return Ok((conn, NodeUrl::new(sync.state.as_str()).to_string()));
    }
    let name = match cache.mode {
        RedisMode::Cluster => format!("cluster {}", NodeUrl::join(&cache.nodes)),
        RedisMode::Sentinel => format!("sentinel master {}", cache.master),
        RedisMode::Single | RedisMode::Ring => cache
            .nodes
            .first()
            .map(|n| NodeUrl::from(n).to_string())
            .unwrap_or_default(),
    };
    Ok((RedisConn::connect_home(cache).await?, name))
}

/// Like [`connect_state`], for a process that has `cache` open already: its home connection
/// is reused unless `sync.state` names a node of its own.
pub async fn state_beside(
    cache: &CacheNodes,
    redis: &RedisConfig,
    sync: &SyncConfig,
) -> Result<(RedisConn, String), SyncError> {
    if sync.state.is_empty() {
        return Ok((cache.home(), cache.home_name().to_string()));
    }
    connect_state(redis, sync).await
}

/// Refuses a state node whose `maxmemory-policy` may evict any key (`allkeys-*`). Read from
/// `INFO memory`, which needs no CONFIG permission; every node of a cluster is asked.
pub async fn check_no_eviction(conn: &mut RedisConn, node: &str) -> Result<(), SyncError> {
    let info: Value = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .map_err(|source| CacheError::Command {
            node: node.to_string(),
            source,
        })?;
    let mut policies = Vec::new();
    eviction_policies(&info, &mut policies);
    match policies.into_iter().find(|p| p.starts_with("allkeys-")) {
        Some(policy) => Err(SyncError::Evicting {
            node: node.to_string(),
            policy,
        }),
        None => Ok(()),
    }
}

/// The `maxmemory_policy:` values in an INFO reply (one text, or one per cluster node).
fn eviction_policies(reply: &Value, out: &mut Vec<String>) {
    match reply {
        Value::BulkString(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            out.extend(
                text.lines()
                    .filter_map(|l| l.strip_prefix("maxmemory_policy:"))
                    .map(|p| p.trim().to_string()),
            );
        }
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => {
            eviction_policies(&Value::BulkString(text.clone().into_bytes()), out);
        }
        Value::Array(items) | Value::Set(items) => {
            items.iter().for_each(|v| eviction_policies(v, out));
        }
        Value::Map(pairs) => pairs.iter().for_each(|(_, v)| eviction_policies(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_policies_are_read_from_one_or_many_info_replies() {
        let info = |p: &str| {
            Value::BulkString(
                format!("# Memory\r\nused_memory:1\r\nmaxmemory_policy:{p}\r\n").into_bytes(),
            )
        };
        let mut found = Vec::new();
        eviction_policies(&info("noeviction"), &mut found);
        eviction_policies(
            &Value::Map(vec![
                (Value::SimpleString("a".into()), info("volatile-lru")),
                (Value::SimpleString("b".into()), info("allkeys-lru")),
            ]),
            &mut found,
        );
        assert_eq!(found, ["noeviction", "volatile-lru", "allkeys-lru"]);
    }
}
