//! The replication state under production faults: a queue Redis that drops every client
//! again and again, a state node that may evict, and the state kept on a Redis of its own
//! (`sync.state`). Servers that are killed or reconfigured are the test's own; the shared
//! stack's remote Redis receives.

mod common;

use std::time::Duration;

use common::{RunningReceiver, Stack, cache_sync, ship_until_empty, topology_file};
use hotkeys::Topology;
use hotkeys::redis::RedisConn;
use hotkeys::sync::{Op, QueueStatus, SyncQueue};
use hotkeys::testing::{self, RedisServer};

/// Queues `n` sets of `<prefix><i>` to `v<i>` (one-hour TTL) and returns the keys.
async fn enqueue_sets(stack: &Stack, t: &Topology, n: usize) -> Vec<String> {
    let queue = SyncQueue::connect(&t.redis, &t.sync).await.unwrap();
    let keys: Vec<String> = (0..n).map(|i| format!("{}{i}", stack.prefix())).collect();
    for (c, chunk) in keys.chunks(10_000).enumerate() {
        let ops: Vec<Op> = chunk
            .iter()
            .enumerate()
            .map(|(j, k)| {
                let i = c * 10_000 + j;
                Op::set(k.clone(), format!("v{i}"), Some(Duration::from_secs(3600)))
            })
            .collect();
        assert_eq!(queue.enqueue_many(&ops).await.unwrap(), ops.len());
    }
    keys
}

/// Asserts the remote Redis holds `v<i>` for the `i`-th key.
async fn assert_remote_holds(stack: &mut Stack, keys: &[String]) {
    for (c, chunk) in keys.chunks(1000).enumerate() {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("GET").arg(k);
        }
        let values: Vec<Option<String>> = pipe.query_async(&mut stack.remote).await.unwrap();
        for (j, (k, v)) in chunk.iter().zip(values).enumerate() {
            assert_eq!(v, Some(format!("v{}", c * 1000 + j)), "remote value of {k}");
        }
    }
}

/// The queue's status read on a fresh connection; `None` while the server drops it.
async fn status_now(t: &Topology) -> Option<QueueStatus> {
    let queue = SyncQueue::connect(&t.redis, &t.sync).await.ok()?;
    queue.status().await.ok()
}

/// `CLIENT KILL TYPE normal` on the server at `url`: every client but the caller.
fn kill_clients(url: &str) {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query::<i64>(&mut conn)
        .unwrap();
}

fn redis_config_set(url: &str, key: &str, value: &str) {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query::<()>(&mut conn)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_rides_through_repeated_client_kills_and_the_remote_state_is_exact() {
    let Some(mut stack) = common::stack("client_kill").await else {
        return;
    };
    // The queue lives on a server of the test's own: CLIENT KILL must not hit anyone else.
    let local = RedisServer::start();
    let mut t = stack.topology();
    t.redis.nodes = vec![local.url()];
    let receiver = RunningReceiver::start(&t, "127.0.0.1:0").await;
    t.sync.remote = receiver.url();
    let total = 300_000;
    let keys = enqueue_sets(&stack, &t, total).await;
    let file = topology_file(&t);
    let mut shipper = cache_sync(file.path()).arg("ship").spawn().unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut kills = 0;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue did not drain within 600 s under CLIENT KILL ({kills} kills)"
        );
        if let Some(status) = shipper.try_wait().unwrap() {
            panic!("the shipper exited after {kills} kills: {status}");
        }
        let drained = status_now(&t)
            .await
            .is_some_and(|s| s.length == 0 && s.in_flight.is_none());
        if drained && kills >= 5 {
            break;
        }
        if !drained {
            kill_clients(&local.url());
            kills += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        shipper.try_wait().unwrap().is_none(),
        "the shipper is still running after {kills} kills"
    );
    shipper.start_kill().unwrap();
    shipper.wait().await.unwrap();

    let status = status_now(&t).await.expect("the queue's server answers");
    let state = stack.stream_state(&t).await;
    eprintln!("{kills} kills; queue: {status:?}; receiver: {state:?}");
    assert_eq!(state.processed, status.acked);
    assert_eq!(state.applied, state.processed, "a batch was applied twice");
    assert_eq!(state.applied_ops, total as u64);
    assert_remote_holds(&mut stack, &keys).await;
    receiver.stop().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allkeys_policy_on_the_state_node_makes_ship_and_receive_exit_2_naming_the_fix() {
    let Some(mut stack) = common::stack("allkeys").await else {
        return;
    };
    let state =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let mut t = stack.topology();
    t.sync.state = state.url();
    t.sync.listen = format!("127.0.0.1:{}", testing::free_port());
    let file = topology_file(&t);
    for args in [&["ship", "--until-empty"][..], &["receive"][..]] {
        let out = cache_sync(file.path()).args(args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for needle in [
            "maxmemory-policy",
            "allkeys-lru",
            "noeviction",
            "sync.state",
            &state.url(),
        ] {
            assert!(stderr.contains(needle), "{args:?} names {needle}: {stderr}");
        }
    }
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_node_that_starts_evicting_stops_the_shipper_at_its_next_reconnect() {
    let Some(mut stack) = common::stack("evicting_later").await else {
        return;
    };
    let state = RedisServer::start();
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let mut t = stack.topology();
    t.sync.state = state.url();
    t.sync.remote = receiver.url();
    let file = topology_file(&t);
    let mut shipper = cache_sync(file.path()).arg("ship").spawn().unwrap();
    testing::eventually(30, "the shipper to start its stream", || async {
        status_now(&t).await.and_then(|s| s.stream)
    })
    .await;

    redis_config_set(&state.url(), "maxmemory-policy", "allkeys-lru");
    kill_clients(&state.url());
    let status = tokio::time::timeout(Duration::from_secs(60), shipper.wait())
        .await
        .expect("the shipper stops within 60 s of the reconnect")
        .unwrap();
    assert_eq!(status.code(), Some(2));
    receiver.stop().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_state_node_on_a_second_redis_holds_queue_and_stream_records_end_to_end() {
    let Some(mut stack) = common::stack("state_node").await else {
        return;
    };
    let state = RedisServer::start();
    let mut t = stack.topology();
    t.sync.state = state.url();
    let receiver = RunningReceiver::start(&t, "127.0.0.1:0").await;
    t.sync.remote = receiver.url();
    let keys = enqueue_sets(&stack, &t, 5_000).await;

    let queue_len: u64 = redis::cmd("LLEN")
        .arg(&t.sync.queue)
        .query_async(&mut stack.local)
        .await
        .unwrap();
    assert_eq!(queue_len, 0, "nothing is queued on the cache node");
    let summary = ship_until_empty(&t).await;
    assert_eq!(summary.ops, 5_000);
    assert_remote_holds(&mut stack, &keys).await;

    let status = status_now(&t).await.unwrap();
    assert_eq!((status.length, status.acked), (0, status.last_stamp));
    let stream = status.stream.expect("a stream on the state node");
    let on_state = RedisConn::connect(&state.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let record = cache_sync::receive::stream_state(&on_state, &stream)
        .await
        .unwrap();
    assert_eq!(
        (record.processed, record.applied_ops),
        (status.acked, 5_000)
    );
    let on_remote: bool = redis::cmd("EXISTS")
        .arg(cache_sync::receive::stream_key(&stream))
        .query_async(&mut stack.remote)
        .await
        .unwrap();
    assert!(!on_remote, "the stream record is not on the cache node");
    receiver.stop().await;
    stack.cleanup().await;
}
