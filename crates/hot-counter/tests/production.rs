//! hot-counter against what production sends it, on the real stack: lag monitors reading
//! the group's offsets, producers with broken clocks, keys of 20 KB, hot lists that would
//! not fit one ZooKeeper request, and an operator deleting the state under a running worker.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hotkeys::hotlist::{HotList, MAX_BYTES};
use hotkeys::testing::{self, Record, eventually};
use hotkeys::zk::Zk;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// The group's committed offset of every partition, read by a client of our own.
fn committed_offsets(t: &hotkeys::Topology, partitions: usize) -> Vec<Offset> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &t.kafka.brokers)
        .set("group.id", &t.kafka.group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition(&t.kafka.topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions as i32)
        .map(|p| {
            committed
                .find_partition(&t.kafka.topic, p)
                .map_or(Offset::Invalid, |e| e.offset())
        })
        .collect()
}

fn plain_key(key: &str) -> Record {
    Record {
        key: Some(key.to_string()),
        payload: Vec::new(),
        timestamp_ms: None,
    }
}

/// The highest resident set the process has had, from `/proc`.
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_equal_the_end_offsets_after_a_catch_up() {
    let Some(t) = topology("committed", 3) else {
        return;
    };
    let keys = zipf_keys(3_000, 500, 1.0, 41);
    testing::produce(&t, keys.iter().map(|k| Record::openresty(k))).await;
    run_to_end(&t);

    let ends = testing::end_offsets(&t);
    let committed = committed_offsets(&t, ends.len());
    for (p, (&end, committed)) in ends.iter().zip(&committed).enumerate() {
        if end > 0 {
            assert_eq!(*committed, Offset::Offset(end), "partition {p}");
        } else {
            // Nothing read, nothing committed: never an offset past the end.
            assert!(
                matches!(committed, Offset::Invalid | Offset::Offset(0)),
                "partition {p}: {committed:?}"
            );
        }
    }

    // A worker resuming from these offsets and the checkpoints counts nothing twice.
    testing::produce(&t, keys[..100].iter().map(|k| Record::openresty(k))).await;
    run_to_end(&t);
    let zk = Zk::connect(&t).await.expect("zk");
    let lists = hot_lists(&zk).await;
    let events: u64 = lists.values().map(|(l, _)| l.events).sum();
    assert_eq!(events, 3_100);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_stamped_50_minutes_ahead_leaves_the_next_500_counted_exactly() {
    let Some(t) = topology("future", 1) else {
        return;
    };
    let ahead = hotkeys::hotlist::now_ms() + 50 * 60 * 1000;
    let mut skewed = Record::openresty("broken-clock");
    skewed.timestamp_ms = Some(ahead);
    testing::produce(&t, [skewed]).await;
    let keys = zipf_keys(500, 50, 1.0, 42);
    testing::produce(&t, keys.iter().map(|k| Record::openresty(k))).await;
    // And one from a clock two hours behind: older than the window, so late.
    let mut behind = Record::openresty("stale-clock");
    behind.timestamp_ms = Some(hotkeys::hotlist::now_ms() - 2 * 3600 * 1000);
    testing::produce(&t, [behind]).await;

    let port = testing::free_port();
    let file = testing::write_topology(&t);
    let worker = Worker::start(&file, &[], &["--metrics", &format!("127.0.0.1:{port}")]);
    let zk = Zk::connect(&t).await.expect("zk");
    let lists = caught_up(&zk, &t).await;
    let list = &lists[&0].0;
    assert_eq!(list.future, 1, "{list:?}");
    assert_eq!(list.late, 1, "{list:?}");
    assert_eq!(list.events, 501);
    assert_eq!(
        testing::metric_total(port, "hotkeys_counter_future_total", 1.0, 30).await,
        1.0
    );
    assert_eq!(
        testing::metric_total(port, "hotkeys_counter_late_total", 1.0, 30).await,
        1.0
    );
    let exact = exact_counts(&keys);
    for item in list.items.iter().filter(|i| i.key != "broken-clock") {
        assert_eq!(item.count, exact[&item.key], "count of {}", item.key);
    }

    // A new owner restores the checkpoint and keeps counting what comes next.
    drop(worker);
    let worker = Worker::start(&file, &[], &[]);
    testing::produce(&t, keys[..100].iter().map(|k| Record::openresty(k))).await;
    let lists = caught_up(&zk, &t).await;
    assert_eq!(lists[&0].0.events, 601, "{}", worker.log());
    assert_eq!(
        lists[&0].0.late, 1,
        "late events are part of the checkpoint"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_keys_of_20_kb_are_rejected_and_publishing_goes_on_with_bounded_memory() {
    let Some(t) = topology("long-keys", 1) else {
        return;
    };
    let file = testing::write_topology(&t);
    let port = testing::free_port();
    let worker = Worker::start(&file, &[], &["--metrics", &format!("127.0.0.1:{port}")]);
    let long_keys: Vec<String> = (0..150).map(|i| format!("{i:0>20480}")).collect();
    testing::produce(
        &t,
        (0..30).flat_map(|_| long_keys.iter().map(|k| plain_key(k))),
    )
    .await;
    testing::produce(&t, (0..100).map(|_| plain_key("normal-hot"))).await;

    let zk = Zk::connect(&t).await.expect("zk");
    let lists = caught_up(&zk, &t).await;
    let list = &lists[&0].0;
    assert_eq!(list.malformed, 4_500);
    assert_eq!(list.key_too_long, 4_500);
    assert_eq!(
        list.items.len(),
        1,
        "{:?}",
        list.items.first().map(|i| i.key.len())
    );
    assert_eq!(
        (list.items[0].key.as_str(), list.items[0].count),
        ("normal-hot", 100)
    );
    let checkpoint = zk
        .read_checkpoint(0)
        .await
        .expect("read")
        .and_then(|r| r.checkpoint)
        .expect("checkpoint");
    assert!(checkpoint.len() < 4096, "{}", checkpoint.len());
    let rss = peak_rss_mb(worker.child.id());
    eprintln!("peak RSS of the worker: {rss} MB");
    assert!(rss < 1024, "peak RSS {rss} MB");
    assert!(worker.log().contains("key_too_long"), "{}", worker.log());
    let rejected =
        testing::metric_total(port, "hotkeys_counter_malformed_total", 4_500.0, 30).await;
    assert_eq!(rejected, 4_500.0);
    let body = testing::scrape_metrics(port).await.expect("metrics");
    let by_kind = |l: &&str| l.contains(r#"kind="key_too_long""#) && l.ends_with(" 4500");
    assert!(body.lines().any(|l| by_kind(&l)), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hot_list_too_big_for_one_request_is_truncated_and_publishing_goes_on() {
    let Some(mut t) = topology("truncated", 1) else {
        return;
    };
    // Allowed by validation, but control characters escape to six bytes each in JSON.
    t.source.max_key_bytes = 5_000;
    t.count.top_n = 100;
    let file = testing::write_topology(&t);
    let _worker = Worker::start(&file, &[], &[]);
    let keys: Vec<String> = (0..100)
        .map(|i| format!("{i:03}{}", "\u{1}".repeat(4_990)))
        .collect();
    testing::produce(&t, (0..3).flat_map(|_| keys.iter().map(|k| plain_key(k)))).await;
    let zk = Zk::connect(&t).await.expect("zk");
    let first = caught_up(&zk, &t).await;
    let list = &first[&0].0;
    assert!(list.truncated, "{} items", list.items.len());
    assert!(!list.items.is_empty() && list.items.len() < 100);
    let raw = serde_json::to_vec(list).expect("json");
    assert!(raw.len() <= MAX_BYTES, "{}", raw.len());

    testing::produce(&t, (0..50).map(|_| plain_key("after"))).await;
    let after = caught_up(&zk, &t).await;
    assert!(after[&0].1 > first[&0].1, "publishing stopped");
    assert_eq!(after[&0].0.events, 350);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_state_is_deleted_creates_it_again_and_loses_nothing() {
    let Some(mut t) = topology("deleted", 2) else {
        return;
    };
    t.count.checkpoint_every = Duration::from_secs(2);
    let file = testing::write_topology(&t);
    let worker = Worker::start(&file, &[], &[]);
    let first = zipf_keys(2_000, 300, 1.0, 43);
    testing::produce(&t, first.iter().map(|k| Record::openresty(k))).await;
    let zk = Zk::connect(&t).await.expect("zk");
    caught_up(&zk, &t).await;

    // What `hotctl reset --yes --force` does.
    zk.delete_all()
        .await
        .expect("delete the topology's subtree");
    let second = zipf_keys(1_000, 300, 1.0, 44);
    testing::produce(&t, second.iter().map(|k| Record::openresty(k))).await;
    let sent = Instant::now();
    let lists = caught_up(&zk, &t).await;
    eprintln!(
        "new counts visible {:?} after their delivery (publish_every {:?})",
        sent.elapsed(),
        t.count.publish_every
    );
    let events: u64 = lists.values().map(|(l, _)| l.events).sum();
    assert_eq!(events, 3_000, "events lost or counted twice");
    let all: Vec<String> = first.into_iter().chain(second).collect();
    let exact = exact_counts(&all);
    for (list, _) in lists.values() {
        for item in &list.items {
            assert_eq!(item.count, exact[&item.key], "count of {}", item.key);
        }
    }

    // The recreated checkpoint is usable: a new owner resumes from it.
    eventually(30, "a checkpoint after the reset", || async {
        let saved = zk.read_checkpoint(0).await.ok().flatten()?;
        (saved.hot.offset == testing::end_offsets(&t)[0]).then_some(())
    })
    .await;
    drop(worker);
    let _worker = Worker::start(&file, &[], &[]);
    testing::produce(&t, all[..10].iter().map(|k| Record::openresty(k))).await;
    let lists: Vec<HotList> = caught_up(&zk, &t)
        .await
        .into_values()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(lists.iter().map(|l| l.events).sum::<u64>(), 3_010);
}

#[tokio::test(flavor = "multi_thread")]
async fn brokers_and_group_flags_override_the_topology_file() {
    let Some(mut t) = topology("flags", 1) else {
        return;
    };
    testing::produce(&t, (0..10).map(|_| Record::openresty("1"))).await;
    let brokers = t.kafka.brokers.clone();
    let group = format!("{}-from-flag", t.kafka.group);
    t.kafka.brokers = "127.0.0.1:1".into();
    let file = testing::write_topology(&t);
    let mut worker = Worker::start(
        &file,
        &[],
        &[
            "--until-caught-up",
            "--brokers",
            &brokers,
            "--group",
            &group,
        ],
    );
    let status = worker.child.wait().expect("wait for hot-counter");
    assert!(status.success(), "{}", worker.log());
    t.kafka.brokers = brokers;
    t.kafka.group = group;
    assert_eq!(committed_offsets(&t, 1), [Offset::Offset(10)]);
}
