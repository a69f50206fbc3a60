//! `hotctl reset` against the stack's real Kafka and ZooKeeper: it names the workers in the
//! consumer group and resets under them only when forced; `--warmed` and `--yes` together
//! delete everything, `--warmed` alone only the marks.

mod common;

use std::time::Duration;

use common::hotctl;
use hotkeys::Topology;
use hotkeys::hotlist::{Warmed, now_ms};
use hotkeys::testing::{self, Record, eventually, publish_hot_list};
use hotkeys::zk::Zk;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A topology with one published, warmed task.
async fn published(test: &str) -> (Topology, Zk) {
    let t = testing::topology(test);
    let zk = Zk::connect(&t).await.expect("zk");
    let v = publish_hot_list(&zk, &t.name, 0, &["1".into(), "2".into()], "test:1")
        .await
        .expect("publish");
    let epoch = zk.read_hot(0).await.expect("read").expect("the list").epoch;
    let warmed = Warmed {
        hot_version: i64::from(v),
        hot_epoch: epoch,
        at_ms: now_ms(),
        by: "test:1".into(),
        rows: 2,
        missing: 0,
        took_ms: 1,
    };
    zk.mark_warmed(0, &warmed).await.expect("mark warmed");
    (t, zk)
}

/// A member of the topology's consumer group, as a hot-counter worker is, once it owns
/// its partitions.
async fn group_member(t: &Topology) -> BaseConsumer {
    testing::produce(t, [Record::openresty("1")]).await;
    let consumer: BaseConsumer = hotkeys::kafka::consumer_config(&t.kafka, &t.kafka.group)
        .set("client.id", "reset-test-worker")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&t.kafka.topic]).expect("subscribe");
    for _ in 0..300 {
        consumer.poll(Duration::from_millis(100));
        if consumer.assignment().is_ok_and(|a| a.count() > 0) {
            return consumer;
        }
    }
    panic!(
        "the test consumer never got partitions of {}",
        t.kafka.topic
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_names_the_running_workers_and_resets_under_them_only_with_force() {
    let (t, zk) = published("reset-live").await;
    let member = group_member(&t).await;

    let refused = hotctl(&t, &["reset", "--yes"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("reset-test-worker") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        zk.read_hot(0).await.expect("read").is_some(),
        "refused, yet deleted"
    );

    let forced = hotctl(&t, &["reset", "--yes", "--force"]);
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(stdout.contains("will publish again"), "{stdout}");
    assert!(zk.list_tasks().await.expect("list").is_empty());
    drop(member);
}

#[tokio::test(flavor = "multi_thread")]
async fn warmed_with_yes_deletes_everything_and_warmed_alone_only_the_marks() {
    let (t, zk) = published("reset-warmed").await;
    let out = hotctl(&t, &["reset", "--warmed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(zk.read_warmed(0).await.expect("read").is_none());
    assert!(zk.read_hot(0).await.expect("read").is_some());

    let out = hotctl(&t, &["reset", "--warmed", "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(10, "the subtree to be gone", || async {
        zk.list_tasks().await.ok()?.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_without_yes_deletes_nothing_and_says_how() {
    let (t, zk) = published("reset-no").await;
    let out = hotctl(&t, &["reset"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(zk.read_hot(0).await.expect("read").is_some());
}
