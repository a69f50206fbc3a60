//! The product's headline on the real stack: a flash crowd's key goes from Kafka through a
//! hot-counter worker's publish on entry and `prewarm --watch` into Redis, with neither the
//! worker's periodic round nor prewarm's pass ever running.
//! Skipped when a server is unreachable, except with `CI` set, where that is a failure.

mod common;

use std::time::Duration;

use common::{Fixture, eventually, finished, signal};
use hot_counter::Until;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::testing::{self, Record};
use redis::AsyncCommands;

/// Events per background key.
const BACKGROUND: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn a_key_entering_the_top_n_reaches_redis_through_watch_without_any_periodic_round() {
    let Some(mut f) = Fixture::new("prewarm-flash", |t| {
        t.kafka.partitions = 1;
        t.count.top_n = 3;
        // Neither runs during the test: only entries publish, only watch events warm.
        t.count.publish_every = Duration::from_secs(3600);
        t.count.checkpoint_every = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(hot_counter::run(
        f.t.clone(),
        shutdown.clone(),
        Until::Shutdown,
    ));
    let background: Vec<Record> = (0..BACKGROUND)
        .flat_map(|_| ["1", "2", "3"].map(Record::openresty))
        .collect();
    testing::produce(&f.t, background).await;
    let zk = f.zk.clone();
    // Each key is published as it enters the list; then the list is full and nothing
    // else enters.
    eventually("the background keys to be published", || async {
        let hot = zk.read_hot(0).await.ok().flatten()?;
        (hot.value.items.len() == 3).then_some(())
    })
    .await;

    let watcher = f
        .prewarm(&["--watch", "--json", "--interval", "1h"])
        .spawn()
        .expect("spawn prewarm");
    eventually("the background keys to be warmed", || async {
        f.warmed(0).await.filter(|w| w.rows == 3)
    })
    .await;
    assert_eq!(f.get("7").await, None, "the crowd's key is cold");

    testing::produce(&f.t, (0..2 * BACKGROUND).map(|_| Record::openresty("7"))).await;
    let (redis, key) = (f.redis.clone(), f.cache_key("7"));
    eventually("the crowd's row to be in Redis", || {
        let (mut redis, key) = (redis.clone(), key.clone());
        async move {
            let value: Option<String> = redis.get(&key).await.expect("GET");
            value
        }
    })
    .await;
    let hot = f.zk.read_hot(0).await.expect("read").expect("a hot list");
    assert!(
        hot.value.items.iter().any(|i| i.key == "7"),
        "the crowd's key entered the list: {:?}",
        hot.value.items
    );

    signal(watcher.id().expect("pid"), "TERM");
    let (code, summary, stderr) = finished(watcher.wait_with_output().await.expect("wait"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary.passes, 1, "only the pass at start ran");
    shutdown.cancel();
    worker.await.expect("join").expect("worker");
    f.cleanup().await;
}
