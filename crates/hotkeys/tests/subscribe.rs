//! The hot-set subscription against the real ZooKeeper: every version change, in order,
//! across a session expiry.

use std::time::Duration;

use futures::StreamExt;
use hotkeys::config::PRIMARY_COUNTER;
use hotkeys::testing::{self, TcpProxy, publish_hot_list};
use hotkeys::zk::Zk;
use hotkeys::zk::subscribe::{HotSet, SubscribeError, subscribe};

fn keys(version: usize) -> Vec<String> {
    (0..5).map(|i| format!("v{version}-k{i}")).collect()
}

/// Waits for the update that shows `task` at `version`, collecting every update seen.
async fn until_version(
    updates: &mut (impl futures::Stream<Item = HotSet> + Unpin),
    seen: &mut Vec<HotSet>,
    task: u32,
    version: i64,
) {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let set = updates.next().await.expect("the stream never ends");
            let reached = set.versions.get(&task).is_some_and(|v| *v >= version);
            seen.push(set);
            if reached {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no update with task {task} at version {version}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_sees_every_version_in_order_across_a_session_expiry() {
    hotkeys::cli::telemetry::init_logs();
    let publisher_topology = testing::topology("subscribe");
    let publisher = Zk::connect(&publisher_topology).await.expect("ZooKeeper");
    let proxy = TcpProxy::start(&publisher_topology.zookeeper.connect).await;
    let mut t = publisher_topology.clone();
    t.zookeeper.connect = proxy.addr.to_string();
    t.zookeeper.session_timeout = Duration::from_secs(2);
    let name = t.name.clone();

    let mut updates = Box::pin(
        subscribe(&t, PRIMARY_COUNTER)
            .await
            .expect("subscribe")
            .into_stream(),
    );
    let mut seen = Vec::new();
    // Connected: each publish is seen before the next one is made.
    for version in 1..=4 {
        let v = publish_hot_list(&publisher, &name, 0, &keys(version), "test")
            .await
            .expect("publish");
        until_version(&mut updates, &mut seen, 0, i64::from(v)).await;
    }

    // Cut off past the session timeout; two publishes happen meanwhile.
    proxy.cut();
    for version in 5..=6 {
        publish_hot_list(&publisher, &name, 0, &keys(version), "test")
            .await
            .expect("publish");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.restore();
    let latest = publisher
        .read_hot(0)
        .await
        .expect("read")
        .expect("hot")
        .version;
    until_version(&mut updates, &mut seen, 0, i64::from(latest)).await;

    // A new session, and the next publishes are seen one by one again.
    for version in 7..=8 {
        let v = publish_hot_list(&publisher, &name, 1, &keys(version), "test")
            .await
            .expect("publish");
        until_version(&mut updates, &mut seen, 1, i64::from(v)).await;
    }

    let versions: Vec<i64> = seen
        .iter()
        .filter_map(|s| s.versions.get(&0).copied())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {versions:?}"
    );
    for v in 0..=3 {
        assert!(
            versions.contains(&v),
            "version {v} of task 0 never seen: {versions:?}"
        );
    }
    let last = seen.last().expect("updates");
    assert_eq!(last.versions.get(&0), Some(&i64::from(latest)));
    assert_eq!(last.changed, [1]);
    assert!(last.items.iter().any(|i| i.key == "v8-k0"), "{last:?}");
    assert!(last.items.iter().any(|i| i.key == "v6-k0"), "{last:?}");
    publisher.delete_all().await.expect("clean up");
}

#[tokio::test]
async fn subscribing_to_an_unknown_counter_names_the_known_ones() {
    let t = testing::topology("subscribe-unknown");
    let err = subscribe(&t, "callers")
        .await
        .err()
        .expect("unknown counter");
    assert!(
        matches!(err, SubscribeError::UnknownCounter { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(PRIMARY_COUNTER), "{err}");
}
