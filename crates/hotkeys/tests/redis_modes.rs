//! The node sets of `hotkeys::redis` against redis-servers each test starts itself
//! (`hotkeys::testing::RedisServer`): the value codec, backups with fail-back, Sentinel.
//! Needs `redis-server` (and for Sentinel, redis-sentinel's sentinel mode) on PATH.

use std::time::Duration;

use hotkeys::config::{RedisConfig, RedisMode};
use hotkeys::redis::codec::ZSTD_TAG;
use hotkeys::redis::failover::{State, track_key};
use hotkeys::redis::{CacheNodes, Write};
use hotkeys::testing::{RedisServer, TcpProxy, eventually};
use redis::AsyncCommands;

const PATIENCE: u64 = 60;

async fn plain(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("test's own redis-server")
}

/// A JSON document of about `bytes` bytes, compressible as rows are.
fn large_json(bytes: usize) -> Vec<u8> {
    let mut rows = Vec::new();
    let mut i = 0;
    while rows.len() * 60 < bytes {
        rows.push(
            serde_json::json!({"id": i, "name": format!("product {i}"), "price": i * 7 % 1000}),
        );
        i += 1;
    }
    serde_json::to_vec(&rows).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn values_over_the_threshold_are_stored_compressed_smaller_and_read_back_whole() {
    let server = RedisServer::start();
    let cfg = RedisConfig {
        nodes: vec![server.url()],
        compress_over: 128 * 1024,
        ..RedisConfig::default()
    };
    let cache = CacheNodes::connect(&cfg).await.unwrap();
    let big = large_json(400 * 1024);
    let small = br#"{"id":1,"name":"small"}"#.to_vec();
    let ttl = Duration::from_secs(60);
    cache
        .set_many(&[("big", &big, ttl), ("small", &small, ttl)])
        .await
        .unwrap();

    let mut conn = plain(&server).await;
    let stored: usize = conn.strlen("big").await.unwrap();
    let raw: Vec<u8> = conn.get("big").await.unwrap();
    println!(
        "compressed {} bytes of JSON to {stored} bytes ({:.1}%)",
        big.len(),
        100.0 * stored as f64 / big.len() as f64
    );
    assert!(stored < big.len() / 2, "{stored} of {}", big.len());
    assert_eq!(raw[0], ZSTD_TAG);
    assert_eq!(cache.get("big").await.unwrap(), Some(big));

    let raw_small: Vec<u8> = conn.get("small").await.unwrap();
    assert_eq!(
        raw_small, small,
        "values under the threshold stay plain JSON"
    );
    // A plain value another application wrote reads back unchanged.
    let _: () = conn.set("theirs", "plain text").await.unwrap();
    assert_eq!(
        cache.get("theirs").await.unwrap().as_deref(),
        Some(&b"plain text"[..])
    );
}

/// Keys owned by primary `p` of `cache` among `candidates`.
fn owned_by(cache: &CacheNodes, p: usize, candidates: &[String]) -> Vec<String> {
    candidates
        .iter()
        .filter(|k| cache.node_for(k) == p)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_primary_fails_over_to_its_backup_only_and_fails_back_with_values_and_ttls() {
    let mut a = RedisServer::start();
    let b = RedisServer::start();
    let backup = RedisServer::start();
    let cfg = RedisConfig {
        mode: RedisMode::Ring,
        nodes: vec![a.url(), b.url()],
        backups: [(a.url(), backup.url())].into(),
        health_every: Duration::from_millis(100),
        health_failures: 2,
        ..RedisConfig::default()
    };
    let cache = CacheNodes::connect(&cfg).await.unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("product:{i}")).collect();
    let of_a = owned_by(&cache, 0, &keys);
    let of_b = owned_by(&cache, 1, &keys);
    assert!(!of_a.is_empty() && !of_b.is_empty());

    a.kill();
    let ttl = Duration::from_secs(600);
    let entries: Vec<(String, String, Duration)> = keys
        .iter()
        .map(|k| (k.clone(), format!("{{\"key\":\"{k}\"}}"), ttl))
        .collect();
    // Writes to A fail until the checker has seen it down; then they land on the backup.
    eventually(PATIENCE, "writes to succeed with A down", || async {
        cache.set_many(&entries).await.ok()
    })
    .await;
    let mut on_b = plain(&b).await;
    let mut on_backup = plain(&backup).await;
    for k in &of_a {
        let v: Option<String> = on_backup.get(k).await.unwrap();
        assert!(v.is_some(), "{k} of A is on its backup");
        let v: Option<String> = on_b.get(k).await.unwrap();
        assert!(v.is_none(), "{k} of A moved to the neighbour B");
        assert_eq!(
            cache.get(k).await.unwrap(),
            Some(format!("{{\"key\":\"{k}\"}}").into_bytes()),
            "reads of A's keys go to the backup"
        );
    }
    let tracked: usize = on_backup.scard(track_key(&a.url())).await.unwrap();
    assert_eq!(tracked, of_a.len());
    // A delete during the outage is remembered too.
    cache
        .apply(&[Write::Delete { key: &of_a[0] }])
        .await
        .unwrap();

    a.restart();
    eventually(PATIENCE, "fail-back to finish", || async {
        (cache.failover_state(0) == Some(State::Up)).then_some(())
    })
    .await;
    let mut on_a = plain(&a).await;
    for k in &of_a[1..] {
        let v: Option<String> = on_a.get(k).await.unwrap();
        assert_eq!(v, Some(format!("{{\"key\":\"{k}\"}}")), "{k} back on A");
        let left: i64 = on_a.pttl(k).await.unwrap();
        assert!(
            left > 0 && left <= ttl.as_millis() as i64,
            "{k}: TTL {left}"
        );
    }
    let deleted: Option<String> = on_a.get(&of_a[0]).await.unwrap();
    assert_eq!(deleted, None, "the outage's delete holds on A");
    let left: usize = redis::cmd("DBSIZE")
        .query_async(&mut on_backup)
        .await
        .unwrap();
    assert_eq!(left, 0, "the backup is clean (no keys, no tracking set)");
    for k in &of_b {
        let v: Option<String> = on_b.get(k).await.unwrap();
        assert!(v.is_some(), "{k} stays on B");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_cut_off_and_back_gets_the_outage_values_over_its_stale_copies() {
    let a = RedisServer::start();
    let backup = RedisServer::start();
    // A behind a proxy: cutting it leaves A running with its (then stale) data.
    let proxy = TcpProxy::start(&format!("127.0.0.1:{}", a.port)).await;
    let via_proxy = format!("redis://{}", proxy.addr);
    let cfg = RedisConfig {
        nodes: vec![via_proxy.clone()],
        backups: [(via_proxy, backup.url())].into(),
        health_every: Duration::from_millis(100),
        health_failures: 1,
        ..RedisConfig::default()
    };
    let cache = CacheNodes::connect(&cfg).await.unwrap();
    let ttl = Duration::from_secs(600);
    cache
        .set_many(&[("k", "stale", ttl), ("untouched", "kept", ttl)])
        .await
        .unwrap();

    proxy.cut();
    eventually(
        PATIENCE,
        "the write of the outage on the backup",
        || async { cache.set_many(&[("k", "new", ttl)]).await.ok() },
    )
    .await;
    assert_eq!(cache.failover_state(0), Some(State::Down));
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));

    proxy.restore();
    eventually(PATIENCE, "fail-back to finish", || async {
        (cache.failover_state(0) == Some(State::Up)).then_some(())
    })
    .await;
    let mut on_a = plain(&a).await;
    let v: Option<String> = on_a.get("k").await.unwrap();
    assert_eq!(
        v.as_deref(),
        Some("new"),
        "the outage's value replaced the stale copy"
    );
    let v: Option<String> = on_a.get("untouched").await.unwrap();
    assert_eq!(
        v.as_deref(),
        Some("kept"),
        "keys not written meanwhile are left alone"
    );
    let mut on_backup = plain(&backup).await;
    let left: usize = redis::cmd("DBSIZE")
        .query_async(&mut on_backup)
        .await
        .unwrap();
    assert_eq!(left, 0, "the backup is clean (no keys, no tracking set)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_managed_pair_serves_writes_and_follows_the_master_through_a_failover() {
    let master = RedisServer::start();
    let replica = RedisServer::replica_of(master.port);
    let on_replica = plain(&replica).await;
    eventually(PATIENCE, "the replica to sync", || {
        let mut conn = on_replica.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .ok()?;
            info.contains("master_link_status:up").then_some(())
        }
    })
    .await;
    let sentinel = RedisServer::sentinel("hk", master.port);
    let cfg = RedisConfig {
        mode: RedisMode::Sentinel,
        nodes: vec![sentinel.url()],
        master: "hk".into(),
        ..RedisConfig::default()
    };
    let cache = CacheNodes::connect(&cfg).await.unwrap();
    let ttl = Duration::from_secs(60);
    cache.set_many(&[("before", "1", ttl)]).await.unwrap();
    assert_eq!(
        cache.get("before").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    let mut on_master = plain(&master).await;
    let v: Option<String> = on_master.get("before").await.unwrap();
    assert_eq!(v.as_deref(), Some("1"));

    let to_sentinel = plain(&sentinel).await;
    eventually(PATIENCE, "the sentinel to fail over", || {
        let mut conn = to_sentinel.clone();
        async move {
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg("hk")
                .query_async::<()>(&mut conn)
                .await
                .ok()
        }
    })
    .await;
    let replica_port = replica.port.to_string();
    eventually(PATIENCE, "the sentinel to name the replica", || {
        let mut conn = to_sentinel.clone();
        let replica_port = replica_port.clone();
        async move {
            let addr: Vec<String> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg("hk")
                .query_async(&mut conn)
                .await
                .ok()?;
            (addr.get(1) == Some(&replica_port)).then_some(())
        }
    })
    .await;
    // Until the old master has been turned into a replica it still takes writes, which its
    // resync then drops: that is Sentinel's asynchronous failover, not ours to fix.
    eventually(PATIENCE, "the old master to become a replica", || async {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut plain(&master).await)
            .await
            .ok()?;
        info.contains("role:slave").then_some(())
    })
    .await;
    // The first write meets the demoted master (READONLY) and looks the master up again.
    eventually(PATIENCE, "a write on the new master", || async {
        cache.set_many(&[("after", "2", ttl)]).await.ok()
    })
    .await;
    // The sentinel closes client connections on failover: ask the promoted replica anew.
    let v: Option<String> = plain(&replica).await.get("after").await.unwrap();
    assert_eq!(v.as_deref(), Some("2"), "written on the promoted replica");
}
