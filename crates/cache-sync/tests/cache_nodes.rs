//! `hotkeys::redis` against the real Redis servers: placement, NX writes, deletes that must
//! reach every node, and write order; cluster mode against a throwaway Redis Cluster that
//! the test starts itself ([`hotkeys::testing::RedisCluster`]).

mod common;

use std::time::Duration;

use common::Stack;
use hotkeys::config::{RedisConfig, RedisMode, RingAlgorithm};
use hotkeys::redis::{CacheNodes, Write, WriteOutcome};

/// A ring over the stack's two servers (standing in for two nodes of one data centre).
fn ring_config(stack: &Stack, algorithm: RingAlgorithm) -> RedisConfig {
    RedisConfig {
        mode: RedisMode::Ring,
        nodes: vec![stack.local_url.clone(), stack.remote_url.clone()],
        ring: algorithm,
        ..RedisConfig::default()
    }
}

async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .unwrap()
        == 1
}

#[tokio::test]
async fn ring_mode_writes_each_key_only_to_the_node_the_ring_picks() {
    let Some(mut stack) = common::stack("ring_placement").await else {
        return;
    };
    for algorithm in [
        RingAlgorithm::PeclMemcache,
        RingAlgorithm::Flexihash,
        RingAlgorithm::Ketama,
    ] {
        let cache = CacheNodes::connect(&ring_config(&stack, algorithm))
            .await
            .unwrap();
        // twemproxy's 32-bit fnv1a_64 spreads keys that differ only in a short counter
        // badly (faithfully reproduced), so the varying part is a well-mixed number.
        let entries: Vec<(String, String, Duration)> = (0..200u64)
            .map(|i| {
                (
                    format!(
                        "{}{algorithm:?}:{:016x}",
                        stack.prefix(),
                        i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ),
                    format!("v{i}"),
                    Duration::from_secs(60),
                )
            })
            .collect();
        let outcome = cache.set_many(&entries).await.unwrap();
        assert_eq!(outcome.written, 200);
        let mut per_node = [0; 2];
        for (key, value, _) in &entries {
            let node = cache.node_for(key);
            per_node[node] += 1;
            assert_eq!(
                exists(&mut stack.local, key).await,
                node == 0,
                "{algorithm:?} {key}"
            );
            assert_eq!(
                exists(&mut stack.remote, key).await,
                node == 1,
                "{algorithm:?} {key}"
            );
            assert_eq!(
                cache.get(key).await.unwrap(),
                Some(value.clone().into_bytes())
            );
        }
        assert!(
            per_node.iter().all(|&n| n > 0),
            "{algorithm:?}: {per_node:?}"
        );
    }
    stack.cleanup().await;
}

#[tokio::test]
async fn set_many_nx_leaves_present_keys_alone_and_counts_them() {
    let Some(mut stack) = common::stack("nx").await else {
        return;
    };
    let cache = CacheNodes::connect(&ring_config(&stack, RingAlgorithm::Ketama))
        .await
        .unwrap();
    let key = |i: usize| format!("{}{i}", stack.prefix());
    let ttl = Duration::from_secs(60);
    let first: Vec<_> = (0..10).map(|i| (key(i), "old", ttl)).collect();
    cache.set_many_nx(&first).await.unwrap();
    let second: Vec<_> = (0..20).map(|i| (key(i), "new", ttl)).collect();
    let outcome = cache.set_many_nx(&second).await.unwrap();
    assert_eq!(
        outcome,
        WriteOutcome {
            written: 10,
            already_present: 10,
            deleted: 0
        }
    );
    assert_eq!(
        cache.get(&key(3)).await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    assert_eq!(
        cache.get(&key(13)).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );

    let forced = cache.set_many(&second).await.unwrap();
    assert_eq!(forced.written, 20);
    assert_eq!(
        cache.get(&key(3)).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    stack.cleanup().await;
}

#[tokio::test]
async fn delete_removes_a_key_from_every_node_of_the_ring() {
    let Some(mut stack) = common::stack("delete_all").await else {
        return;
    };
    let cache = CacheNodes::connect(&ring_config(&stack, RingAlgorithm::PeclMemcache))
        .await
        .unwrap();
    // A stale copy on the node the ring does not pick, as left behind by a ring change.
    let key = format!("{}stale", stack.prefix());
    for conn in [&mut stack.local, &mut stack.remote] {
        redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .query_async::<()>(conn)
            .await
            .unwrap();
    }
    assert!(cache.delete(&key).await.unwrap());
    assert!(!exists(&mut stack.local, &key).await);
    assert!(!exists(&mut stack.remote, &key).await);
    assert!(!cache.delete(&key).await.unwrap(), "nothing left to delete");
    stack.cleanup().await;
}

#[tokio::test]
async fn writes_to_one_key_land_in_the_order_given() {
    let Some(mut stack) = common::stack("order").await else {
        return;
    };
    let cache = CacheNodes::connect(&ring_config(&stack, RingAlgorithm::Flexihash))
        .await
        .unwrap();
    let (a, b) = (
        format!("{}a", stack.prefix()),
        format!("{}b", stack.prefix()),
    );
    let writes = [
        Write::Set {
            key: &a,
            value: b"1",
            ttl: None,
            only_if_absent: false,
        },
        Write::Set {
            key: &b,
            value: b"1",
            ttl: Some(Duration::from_secs(60)),
            only_if_absent: false,
        },
        Write::Delete { key: &a },
        Write::Delete { key: &b },
        Write::Set {
            key: &a,
            value: b"2",
            ttl: None,
            only_if_absent: false,
        },
    ];
    let outcome = cache.apply(&writes).await.unwrap();
    assert_eq!((outcome.written, outcome.deleted), (3, 2));
    assert_eq!(cache.get(&a).await.unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(cache.get(&b).await.unwrap(), None);
    stack.cleanup().await;
}

#[tokio::test]
async fn a_command_slower_than_the_redis_crate_default_timeout_still_succeeds() {
    let Some(stack) = common::stack("slow").await else {
        return;
    };
    let cache = CacheNodes::connect(&RedisConfig {
        nodes: vec![stack.local_url.clone()],
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    // A script that busy-waits 700 ms: longer than the crate's 500 ms default.
    let script = "local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]; \
                  repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 700000; \
                  return 1";
    let mut conn = cache.home();
    let done: i64 = redis::cmd("EVAL")
        .arg(script)
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(done, 1);
}

#[tokio::test]
async fn delete_fails_when_one_ring_node_does_not_answer() {
    let Some(mut stack) = common::stack("delete_node_down").await else {
        return;
    };
    let mut own = hotkeys::testing::RedisServer::start();
    let cfg = RedisConfig {
        mode: RedisMode::Ring,
        nodes: vec![stack.local_url.clone(), own.url()],
        timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    };
    // RedisServer::start returns once the server answers.
    let cache = CacheNodes::connect(&cfg).await.unwrap();
    let key = format!("{}k", stack.prefix());
    redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query_async::<()>(&mut stack.local)
        .await
        .unwrap();

    own.kill();
    let err = cache.delete(&key).await.unwrap_err();
    assert!(err.to_string().contains(&own.url()), "{err}");
    assert!(err.is_unreachable(), "{err}");
    stack.cleanup().await;
}

#[tokio::test]
async fn cluster_mode_writes_reads_and_deletes_keys_across_slots() {
    let cluster = hotkeys::testing::RedisCluster::start();
    let cfg = RedisConfig {
        mode: RedisMode::Cluster,
        nodes: cluster.seeds.clone(),
        ..RedisConfig::default()
    };
    let cache = CacheNodes::connect(&cfg).await.unwrap();
    let prefix = format!("test:cluster:{}:", std::process::id());
    let entries: Vec<(String, String, Duration)> = (0..500)
        .map(|i| {
            (
                format!("{prefix}{i}"),
                format!("v{i}"),
                Duration::from_secs(60),
            )
        })
        .collect();
    assert_eq!(cache.set_many_nx(&entries).await.unwrap().written, 500);
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().all(|&n| n > 0) && per_node.iter().sum::<u64>() == 500,
        "keys per master: {per_node:?}"
    );
    assert_eq!(
        cache.set_many_nx(&entries).await.unwrap().already_present,
        500
    );
    for (key, value, _) in &entries {
        assert_eq!(
            cache.get(key).await.unwrap(),
            Some(value.clone().into_bytes())
        );
    }
    let deletes: Vec<Write<'_>> = entries
        .iter()
        .map(|(k, ..)| Write::Delete { key: k })
        .collect();
    assert_eq!(cache.apply(&deletes).await.unwrap().deleted, 500);
    assert_eq!(cache.get(&entries[0].0).await.unwrap(), None);
    assert_eq!(cluster.keys_per_node(), vec![0, 0, 0]);
}

#[tokio::test]
async fn the_sync_queue_works_on_a_cluster() {
    let cluster = hotkeys::testing::RedisCluster::start();
    let mut t = hotkeys::Topology::default();
    t.redis.mode = RedisMode::Cluster;
    t.redis.nodes = cluster.seeds.clone();
    t.sync.queue = format!("test:cluster:{}:FIFO", std::process::id());
    t.sync.replicate = vec!["k".into()];
    let queue = hotkeys::sync::SyncQueue::connect(&t.redis, &t.sync)
        .await
        .unwrap();
    let ops: Vec<_> = (0..10)
        .map(|i| hotkeys::sync::Op::delete(format!("k{i}")))
        .collect();
    queue.enqueue_many(&ops).await.unwrap();
    queue
        .restart_stream(None, "cluster@1")
        .await
        .unwrap()
        .unwrap();
    let batch = queue.take(4, 2).await.unwrap().unwrap();
    assert_eq!((batch.stamp, batch.items.len()), (1, 4));
    assert_eq!(queue.in_flight().await.unwrap().len(), 1);
    assert_eq!(queue.ack(1).await.unwrap(), 1);
    let status = queue.status().await.unwrap();
    assert_eq!(
        (status.length, status.acked, status.in_flight),
        (6, 1, None)
    );
}
