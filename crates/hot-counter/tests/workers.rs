//! hot-counter workers against the real stack (Kafka, ZooKeeper, Redis): accuracy, flash
//! crowds, a worker killed mid-stream, an expired ZooKeeper session, malformed input,
//! several counters on one stream and their threshold rules.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use hotkeys::Topology;
use hotkeys::hotlist::HotList;
use hotkeys::testing::{self, Record, eventually};
use hotkeys::zk::Zk;

#[tokio::test(flavor = "multi_thread")]
async fn published_hot_lists_hold_the_exact_top_n_of_a_fixed_workload() {
    let Some(mut t) = topology("accuracy", 6) else {
        return;
    };
    t.count.capacity = 1000;
    t.count.top_n = 50;
    let keys = zipf_keys(200_000, 50_000, 1.0, 7);
    testing::produce(&t, keys.iter().map(|k| Record::openresty(k))).await;
    let file = testing::write_topology(&t);
    let _w1 = Worker::start(&file, &[], &[]);
    let _w2 = Worker::start(&file, &[], &[]);
    let zk = Zk::connect(&t).await.expect("zk");
    let lists = caught_up(&zk, &t).await;

    let exact = exact_counts(&keys);
    let mut merged: Vec<_> = lists
        .values()
        .flat_map(|(l, _)| l.items.iter().cloned())
        .collect();
    merged.sort_by_key(|i| std::cmp::Reverse(i.count));
    merged.truncate(50);
    for item in &merged {
        let truth = exact[&item.key];
        let error = item.error.expect("space-saving publishes error bounds");
        assert!(
            item.count >= truth && item.count - error <= truth,
            "{}: published {}±{} but true count is {truth}",
            item.key,
            item.count,
            error
        );
    }
    let mut truth: Vec<_> = exact.iter().collect();
    truth.sort_by(|a, b| b.1.cmp(a.1));
    let cutoff = *truth[50].1;
    let published: std::collections::HashSet<_> = merged.iter().map(|i| i.key.as_str()).collect();
    for (key, count) in truth.iter().take_while(|(_, c)| **c > cutoff) {
        assert!(
            published.contains(key.as_str()),
            "top key {key} ({count}) missing"
        );
    }
    let events: u64 = lists.values().map(|(l, _)| l.events).sum();
    assert_eq!(events, keys.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn flash_crowd_key_enters_its_task_list_on_the_next_publish() {
    let Some(t) = topology("flash", 3) else {
        return;
    };
    let background = zipf_keys(30_000, 10_000, 1.0, 11);
    testing::produce(&t, background.iter().map(|k| Record::openresty(k))).await;
    let file = testing::write_topology(&t);
    let _w = Worker::start(&file, &[], &[]);
    let zk = Zk::connect(&t).await.expect("zk");
    caught_up(&zk, &t).await;

    let started = Instant::now();
    let burst = (0..3000).map(|i| {
        if i % 2 == 0 {
            Record::openresty("flash-1")
        } else {
            Record::openresty(&background[i])
        }
    });
    testing::produce(&t, burst).await;
    let delivered: HashMap<u32, i32> = hot_lists(&zk)
        .await
        .into_iter()
        .map(|(task, (_, v))| (task, v))
        .collect();
    let (task, version) = eventually(60, "the flash-crowd key in a hot list", || async {
        hot_lists(&zk).await.into_iter().find_map(|(task, (l, v))| {
            l.items
                .iter()
                .take(10)
                .any(|i| i.key == "flash-1")
                .then_some((task, v))
        })
    })
    .await;
    eprintln!(
        "flash crowd detected {:?} after the burst started",
        started.elapsed()
    );
    assert!(
        version <= delivered[&task] + 2,
        "detected at version {version}, burst delivered at {}",
        delivered[&task]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_hands_its_tasks_over_without_losing_or_double_counting() {
    let Some(t) = topology("handover", 6) else {
        return;
    };
    let file = testing::write_topology(&t);
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::start(&file, &[], &[])).collect();
    // The group settles before any event flows, so every worker publishes some tasks.
    eventually(60, "every worker to own partitions", || async {
        workers.iter().all(|w| w.owns_tasks()).then_some(())
    })
    .await;
    let first = zipf_keys(60_000, 5_000, 1.0, 21);
    testing::produce(&t, first.iter().map(|k| Record::openresty(k))).await;
    let zk = Zk::connect(&t).await.expect("zk");
    let before = caught_up(&zk, &t).await;
    let victim = workers[0].child.id();
    let owned_by_victim: Vec<u32> = before
        .iter()
        .filter(|(_, (l, _))| {
            l.owner
                .as_deref()
                .is_some_and(|o| o.ends_with(&format!(":{victim}")))
        })
        .map(|(task, _)| *task)
        .collect();
    // SIGKILL: no final publish, no leaving the group.
    workers[0].child.kill().expect("kill");
    workers[0].child.wait().expect("reap");

    let second = zipf_keys(60_000, 5_000, 1.0, 22);
    testing::produce(&t, second.iter().map(|k| Record::openresty(k))).await;
    let after = caught_up(&zk, &t).await;

    for (task, (list, version)) in &after {
        assert!(version > &before[task].1, "task {task} stopped publishing");
        assert!(
            !list
                .owner
                .as_deref()
                .unwrap_or_default()
                .ends_with(&format!(":{victim}")),
            "task {task} still owned by the killed worker"
        );
    }
    assert!(
        !owned_by_victim.is_empty(),
        "the killed worker owned no task"
    );
    let all: Vec<String> = first.into_iter().chain(second).collect();
    let events: u64 = after.values().map(|(l, _)| l.events).sum();
    assert_eq!(events, all.len() as u64, "events lost or counted twice");
    let exact = exact_counts(&all);
    for (list, _) in after.values() {
        for item in &list.items {
            assert_eq!(item.count, exact[&item.key], "count of {}", item.key);
        }
    }
    drop(workers);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_zookeeper_session_is_replaced_and_publishing_resumes() {
    let Some(t) = topology("zk-expiry", 2) else {
        return;
    };
    let proxy = testing::TcpProxy::start(&t.zookeeper.connect).await;
    let first = zipf_keys(10_000, 2_000, 1.0, 31);
    testing::produce(&t, first.iter().map(|k| Record::openresty(k))).await;
    let file = testing::write_topology(&t);
    let worker = Worker::start(
        &file,
        &[
            ("HOTKEYS_ZOOKEEPER_CONNECT", proxy.addr.to_string()),
            ("HOTKEYS_ZOOKEEPER_SESSION_TIMEOUT", "2s".into()),
        ],
        &[],
    );
    let zk = Zk::connect(&t).await.expect("zk");
    let before = caught_up(&zk, &t).await;

    proxy.cut();
    let second = zipf_keys(10_000, 2_000, 1.0, 32);
    testing::produce(&t, second.iter().map(|k| Record::openresty(k))).await;
    // Well past the 2 s session timeout: the server expires the session meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.restore();

    let after = caught_up(&zk, &t).await;
    for (task, (_, version)) in &after {
        assert!(version > &before[task].1, "task {task} stopped publishing");
    }
    let events: u64 = after.values().map(|(l, _)| l.events).sum();
    assert_eq!(events, 20_000);
    let log = worker.log();
    assert!(
        log.contains("new ZooKeeper session established"),
        "the worker never replaced its session:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_events_are_counted_and_forwarded_and_counting_goes_on() {
    let Some(mut t) = topology("malformed", 2) else {
        return;
    };
    t.kafka.dead_letter = format!("{}-dlq", t.kafka.topic);
    let mut records = Vec::new();
    for i in 0..1500 {
        records.push(match i % 3 {
            0 => Record {
                key: Some("1".into()),
                payload: b"GET /product?productId=1 HTTP/1.1".to_vec(),
                timestamp_ms: None,
            },
            1 => Record {
                key: None,
                payload: br#"{"uri_args":{"shopId":"1"}}"#.to_vec(),
                timestamp_ms: None,
            },
            _ => Record::openresty(&(i % 17).to_string()),
        });
    }
    testing::produce(&t, records).await;
    let port = testing::free_port();
    let file = testing::write_topology(&t);
    let _w = Worker::start(&file, &[], &["--metrics", &format!("127.0.0.1:{port}")]);
    let zk = Zk::connect(&t).await.expect("zk");
    let lists = caught_up(&zk, &t).await;
    let events: u64 = lists.values().map(|(l, _)| l.events).sum();
    assert_eq!(events, 500);

    let malformed =
        testing::metric_total(port, "hotkeys_counter_malformed_total", 1000.0, 30).await;
    assert_eq!(malformed, 1000.0);

    let mut dlq = t.clone();
    dlq.kafka.topic = t.kafka.dead_letter.clone();
    let forwarded = eventually(30, "malformed events in the dead-letter topic", || async {
        let total: i64 = testing::end_offsets(&dlq).iter().sum();
        (total >= 1000).then_some(total)
    })
    .await;
    assert_eq!(forwarded, 1000);
}

/// The hot lists of counter `counter`, by task.
async fn counter_lists(t: &Topology, counter: &str) -> HashMap<u32, HotList> {
    let zk = Zk::connect(t).await.expect("zk").for_counter(counter);
    hot_lists(&zk)
        .await
        .into_iter()
        .map(|(task, (list, _))| (task, list))
        .collect()
}

fn caller_counter(name: &str) -> hotkeys::config::CounterConfig {
    hotkeys::config::CounterConfig {
        capacity: Some(200),
        top_n: Some(50),
        ..hotkeys::config::CounterConfig::new(name, "/headers/x-real-ip")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_counters_on_one_stream_publish_what_two_separate_runs_publish() {
    let both = {
        let Some(mut t) = topology("two-counters", 3) else {
            return;
        };
        t.count.capacity = 500;
        t.count.top_n = 50;
        t.counters.push(caller_counter("caller-ip"));
        t
    };
    let products = zipf_keys(40_000, 5_000, 1.0, 41);
    let callers = zipf_keys(40_000, 1_000, 1.1, 42);
    testing::produce(
        &both,
        products
            .iter()
            .zip(&callers)
            .map(|(p, c)| Record::openresty_from(p, &format!("10.1.{c}"))),
    )
    .await;
    // Separate runs read the same topic under their own names and groups.
    let separate = |test: &str| {
        let mut t = both.clone();
        let id = testing::unique(test);
        t.name = id.clone();
        t.kafka.group = format!("{id}-group");
        t.counters.clear();
        t
    };
    let products_only = separate("products-only");
    let mut callers_only = separate("callers-only");
    callers_only.source.key = "/headers/x-real-ip".into();
    callers_only.count.capacity = 200;

    for t in [&both, &products_only, &callers_only] {
        run_to_end(t);
    }
    let together_products = counter_lists(&both, "hot").await;
    let together_callers = counter_lists(&both, "caller-ip").await;
    let alone_products = counter_lists(&products_only, "hot").await;
    let alone_callers = counter_lists(&callers_only, "hot").await;

    assert_eq!(together_products.len(), 3);
    assert_eq!(together_callers.len(), 3);
    for task in 0..3 {
        let (a, b) = (&together_products[&task], &alone_products[&task]);
        assert_eq!(
            (&a.items, a.events, a.offset),
            (&b.items, b.events, b.offset),
            "products, task {task}"
        );
        let (a, b) = (&together_callers[&task], &alone_callers[&task]);
        assert_eq!(
            (&a.items, a.events, a.offset),
            (&b.items, b.events, b.offset),
            "callers, task {task}"
        );
        assert_eq!(a.counter.as_deref(), Some("caller-ip"));
    }
    let events: u64 = together_callers.values().map(|l| l.events).sum();
    assert_eq!(events, callers.len() as u64);
}

/// Until aborted, sends 60 events every 100 ms from 20 quiet callers (about 180 per caller
/// per 6 s window), so event time and the windows keep moving.
fn background_traffic(t: &Topology) -> tokio::task::JoinHandle<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = hotkeys::kafka::producer_config(&t.kafka)
        .create()
        .expect("producer");
    let topic = t.kafka.topic.clone();
    tokio::spawn(async move {
        for tick in 0u64.. {
            for i in 0..60u64 {
                let product = ((tick * 60 + i) % 500).to_string();
                let record = Record::openresty_from(&product, &format!("10.2.0.{}", i % 20));
                let key = record.key.clone().unwrap_or_default();
                let _ = producer
                    .send_result(FutureRecord::to(&topic).key(&key).payload(&record.payload));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_caller_is_blacklisted_then_released_after_ban_for_and_allow_listed_ones_never()
{
    let Some(mut t) = topology("blacklist", 3) else {
        return;
    };
    // Long against publish_every: a ban is extended at every evaluation, and one that lapsed
    // between two slow ones would be logged as a second ban.
    let ban_for = Duration::from_secs(10);
    t.counters.push(hotkeys::config::CounterConfig {
        window: Some(Duration::from_secs(6)),
        buckets: Some(3),
        threshold: Some(1000),
        action: Some(hotkeys::config::Action::Blacklist),
        ban_for,
        allow: vec!["10.9.9.9".into()],
        ..caller_counter("caller-ip")
    });
    hotkeys::kafka::ensure_topic(&t.kafka).await.expect("Kafka");
    let file = testing::write_topology(&t);
    let worker = Worker::start(&file, &[], &[]);
    let background = background_traffic(&t);
    let zk = Zk::connect(&t).await.expect("zk").for_counter("caller-ip");
    eventually(60, "the caller counter to publish", || async {
        (!hot_lists(&zk).await.is_empty()).then_some(())
    })
    .await;

    let flood = (0..3000).flat_map(|i| {
        let product = (i % 500).to_string();
        [
            Record::openresty_from(&product, "6.6.6.6"),
            Record::openresty_from(&product, "10.9.9.9"),
        ]
    });
    testing::produce(&t, flood).await;
    let flooded = Instant::now();

    let mut redis = hotkeys::redis::RedisConn::connect_home(&t.redis)
        .await
        .expect("Redis");
    let set = hotkeys::blacklist::redis_key(&t.name, "caller-ip");
    let ban_end = || {
        let mut redis = redis.clone();
        let set = set.clone();
        async move {
            redis::cmd("ZSCORE")
                .arg(&set)
                .arg("6.6.6.6")
                .query_async::<Option<f64>>(&mut redis)
                .await
                .expect("ZSCORE")
        }
    };
    let until = eventually(60, "6.6.6.6 on the blacklist", ban_end).await;
    let banned = Instant::now();
    eprintln!(
        "blacklisted {:?} after the flood was delivered (publish_every {:?})",
        banned - flooded,
        t.count.publish_every
    );
    assert!(
        until as i64 > hotkeys::hotlist::now_ms(),
        "the ban is already over"
    );
    let merged = hotkeys::hotlist::merge(hot_lists(&zk).await.values().map(|(l, _)| l), 100);
    let allowed = merged
        .iter()
        .find(|i| i.key == "10.9.9.9")
        .expect("allow-listed caller counted");
    assert!(allowed.count >= 1000, "{allowed:?}");
    let mirrored = || async {
        zk.read_blacklist()
            .await
            .expect("zk")
            .expect("blacklist node")
            .value
    };
    // ZooKeeper mirrors the ban right after the Redis script has added it.
    eventually(30, "the ZooKeeper mirror to list 6.6.6.6", || async {
        let record = mirrored().await;
        record
            .entries
            .iter()
            .any(|e| e.key == "6.6.6.6")
            .then_some(())
    })
    .await;

    // The flood is over; the quiet callers go on and the window moves past it.
    eventually(90, "6.6.6.6 released", || async {
        ban_end().await.is_none().then_some(())
    })
    .await;
    assert!(
        banned.elapsed() >= ban_for,
        "released before ban_for ran out"
    );
    background.abort();

    let entries = hotkeys::blacklist::entries(&mut redis, &t.name, "caller-ip")
        .await
        .expect("Redis");
    assert!(entries.is_empty(), "{entries:?}");
    // The worker logs a release before it mirrors it, so the log below is complete.
    eventually(30, "the ZooKeeper mirror to drop 6.6.6.6", || async {
        mirrored().await.entries.is_empty().then_some(())
    })
    .await;
    let log = worker.log();
    let bans: Vec<&str> = log.lines().filter(|l| l.contains("blacklisted")).collect();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert!(bans[0].contains("6.6.6.6"), "{bans:?}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("released from the blacklist"))
            .count(),
        1
    );
}

/// A request from `ip` whose product id the product counter cannot use: none at all, or
/// one of 300 bytes (over `source.max_key_bytes`).
fn scraper_request(ip: &str, long_id: bool) -> Record {
    let args = if long_id {
        format!(r#"{{"productId":"{}","shopId":"1"}}"#, "9".repeat(300))
    } else {
        r#"{"shopId":"1"}"#.to_owned()
    };
    Record {
        key: None,
        payload: format!(r#"{{"headers":{{"x-real-ip":"{ip}"}},"uri_args":{args}}}"#).into_bytes(),
        timestamp_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scraper_without_a_usable_product_id_is_banned_by_the_caller_counter_and_product_counts_stay_exact()
 {
    let Some(mut t) = topology("scraper", 2) else {
        return;
    };
    // Every product fits in the lists, so their counts can be compared whole.
    t.count.top_n = 500;
    t.kafka.dead_letter = format!("{}-dlq", t.kafka.topic);
    t.counters.push(hotkeys::config::CounterConfig {
        threshold: Some(1000),
        action: Some(hotkeys::config::Action::Blacklist),
        ..caller_counter("caller-ip")
    });
    let products = zipf_keys(6000, 500, 1.0, 61);
    let mut records = Vec::new();
    for (i, product) in products.iter().enumerate() {
        records.push(Record::openresty_from(
            product,
            &format!("10.3.0.{}", i % 20),
        ));
        records.push(scraper_request("6.6.6.6", i % 2 == 0));
    }
    testing::produce(&t, records).await;
    let port = testing::free_port();
    let file = testing::write_topology(&t);
    let _w = Worker::start(&file, &[], &["--metrics", &format!("127.0.0.1:{port}")]);

    let mut redis = hotkeys::redis::RedisConn::connect_home(&t.redis)
        .await
        .expect("Redis");
    let set = hotkeys::blacklist::redis_key(&t.name, "caller-ip");
    eventually(60, "6.6.6.6 on the blacklist", || {
        let (mut redis, set) = (redis.clone(), set.clone());
        async move {
            redis::cmd("ZSCORE")
                .arg(&set)
                .arg("6.6.6.6")
                .query_async::<Option<f64>>(&mut redis)
                .await
                .expect("ZSCORE")
        }
    })
    .await;
    let entries = hotkeys::blacklist::entries(&mut redis, &t.name, "caller-ip")
        .await
        .expect("Redis");
    assert_eq!(entries.len(), 1, "only the scraper is banned: {entries:?}");

    let zk = Zk::connect(&t).await.expect("zk");
    let lists = caught_up(&zk, &t).await;
    let exact = exact_counts(&products);
    let merged = hotkeys::hotlist::merge(lists.values().map(|(l, _)| l), 1000);
    assert_eq!(merged.len(), exact.len());
    for item in &merged {
        assert_eq!(
            (item.count, item.error),
            (exact[&item.key], Some(0)),
            "{}",
            item.key
        );
    }
    let skipped = |f: fn(&HotList) -> u64| lists.values().map(|(l, _)| f(l)).sum::<u64>();
    assert_eq!(skipped(|l| l.malformed), 6000);
    assert_eq!(skipped(|l| l.key_too_long), 3000);
    assert_eq!(skipped(|l| l.events), 6000);
    let callers = counter_lists(&t, "caller-ip").await;
    let caller_skips: u64 = callers.values().map(|l| l.malformed).sum();
    assert_eq!(caller_skips, 0);
    let caller_events: u64 = callers.values().map(|l| l.events).sum();
    assert_eq!(caller_events, 12_000);

    let by_reason = testing::metric_total(port, "hotkeys_counter_skipped_total", 6000.0, 30).await;
    assert_eq!(by_reason, 6000.0);
    let mut dlq = t.clone();
    dlq.kafka.topic = t.kafka.dead_letter.clone();
    let forwarded = eventually(30, "scraper requests in the dead-letter topic", || async {
        let total: i64 = testing::end_offsets(&dlq).iter().sum();
        (total >= 6000).then_some(total)
    })
    .await;
    assert_eq!(forwarded, 6000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crawl_at_a_hundred_times_the_traffic_leaves_the_published_top_100_precise() {
    let Some(t) = topology("crawl", 1) else {
        return;
    };
    let site = zipf_keys(10_000, 2_000, 1.0, 71);
    // One request for each of 1,000,000 catalogue ids, spread evenly through the site's.
    let crawl = (0..1_000_000u64).map(|id| format!("c{id}"));
    let mut records = Vec::with_capacity(1_010_000);
    let mut site_left = site.iter();
    for (i, id) in crawl.enumerate() {
        if i % 100 == 0
            && let Some(product) = site_left.next()
        {
            records.push(Record::plain(product));
        }
        records.push(Record::plain(&id));
    }
    records.extend(site_left.map(|p| Record::plain(p)));
    testing::produce(&t, records).await;
    let file = testing::write_topology(&t);
    let _w = Worker::start(&file, &[], &[]);
    let zk = Zk::connect(&t).await.expect("zk");
    let lists = caught_up(&zk, &t).await;
    let list = &lists[&0].0;
    assert_eq!(list.events, 1_010_000);

    let exact = exact_counts(&site);
    let mut counts: Vec<u64> = exact.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let cutoff = counts[100];
    let top = &list.items[..list.items.len().min(100)];
    let precise = top
        .iter()
        .filter(|i| exact.get(&i.key).is_some_and(|&c| c >= cutoff && c > 1))
        .count();
    assert!(
        precise >= 95,
        "{precise} of the published top 100 are in the true top 100: {top:?}"
    );
    for item in top.iter().filter(|i| exact.contains_key(&i.key)) {
        let truth = exact[&item.key];
        let error = item.error.expect("space-saving publishes error bounds");
        assert!(
            item.count >= truth && item.count - error <= truth,
            "{item:?} vs {truth}"
        );
    }
}
