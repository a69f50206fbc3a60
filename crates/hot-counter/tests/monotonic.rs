//! The published state only moves forward, against the real stack: a hand-over in the
//! middle of a re-count never publishes a hot list behind the one it found, and a task
//! whose checkpoint went missing beside its hot list recovers instead of wedging.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hotkeys::testing::{self, Record, eventually};
use hotkeys::zk::Zk;

/// What a watch saw of one task: `(version, offset)` in the order read.
type Seen = Arc<Mutex<HashMap<u32, Vec<(i32, i64)>>>>;

/// Watches every task of the topology, as a kazoo `ChildrenWatch` + `DataWatch` would, and
/// records every hot list it reads. Runs until the test ends.
async fn watch_every_task(zk: Zk) -> Seen {
    let seen: Seen = Arc::default();
    let mut watcher = zk.watch_tasks().await.expect("watch the tasks");
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(lists) = zk.hot_lists().await {
                let mut record = record.lock().expect("seen");
                for l in lists {
                    let history = record.entry(l.value.task).or_default();
                    if history.last().map(|(v, _)| *v) != Some(l.version) {
                        history.push((l.version, l.value.offset));
                    }
                }
            }
            // A missed event only delays the next read: the periodic re-read catches up.
            let _ = tokio::time::timeout(Duration::from_millis(50), watcher.changed()).await;
        }
    });
    seen
}

/// Every place where a task's published offset went back, as `task: a -> b`.
fn offsets_gone_back(seen: &Seen) -> Vec<String> {
    let seen = seen.lock().expect("seen");
    let mut back = Vec::new();
    for (task, history) in seen.iter() {
        for pair in history.windows(2) {
            if pair[1].1 < pair[0].1 {
                back.push(format!(
                    "task {task}: offset {} (v{}) -> {} (v{})",
                    pair[0].1, pair[0].0, pair[1].1, pair[1].0
                ));
            }
        }
    }
    back
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_over_during_a_re_count_never_publishes_an_offset_behind_the_list_it_found() {
    let Some(mut t) = topology("recount-handover", 3) else {
        return;
    };
    // One checkpoint, written when each hot node is created; everything after it is
    // re-counted by the next owner.
    t.count.checkpoint_every = Duration::from_secs(3600);
    // A member hears of a rebalance at its next heartbeat: soon, so the hand-over falls
    // inside the re-count.
    t.kafka
        .consumer
        .insert("heartbeat.interval.ms".into(), "100".into());
    let file = testing::write_topology(&t);
    let zk = Zk::connect(&t).await.expect("zk");
    let seen = watch_every_task(zk.clone()).await;

    let mut first = Worker::start(&file, &[], &[]);
    eventually(60, "the first worker to own partitions", || async {
        first.owns_tasks().then_some(())
    })
    .await;
    let warmup = zipf_keys(300, 2_000, 1.0, 50);
    testing::produce(&t, warmup.iter().map(|k| Record::openresty(k))).await;
    caught_up(&zk, &t).await;
    // Sized so the re-count outlasts the hand-overs on two shared cores.
    let bulk = zipf_keys(400_000, 20_000, 1.0, 51);
    testing::produce(&t, bulk.iter().map(|k| Record::openresty(k))).await;
    caught_up(&zk, &t).await;

    // SIGKILL: no final publish or checkpoint; the group notices after session.timeout.ms.
    first.child.kill().expect("kill");
    first.child.wait().expect("reap");
    // The group hands every task to the second worker once the first one's session has
    // timed out; the third joins while the second is re-counting, and takes tasks from it.
    let second = Worker::start(&file, &[], &[]);
    eventually(60, "the second worker to own partitions", || async {
        second.owns_tasks().then_some(())
    })
    .await;
    let recount = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _third = Worker::start(&file, &[], &[]);

    let tail = zipf_keys(3_000, 2_000, 1.0, 52);
    testing::produce(&t, tail.iter().map(|k| Record::openresty(k))).await;
    let lists = caught_up(&zk, &t).await;
    eprintln!("re-count and hand-over done in {:?}", recount.elapsed());
    // One more read by the watch after the last publish.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let back = offsets_gone_back(&seen);
    assert!(back.is_empty(), "published offsets went back: {back:#?}");
    let all: Vec<String> = warmup.into_iter().chain(bulk).chain(tail).collect();
    let events: u64 = lists.values().map(|(l, _)| l.events).sum();
    assert_eq!(events, all.len() as u64, "events lost or counted twice");
    let exact = exact_counts(&all);
    for (list, _) in lists.values() {
        for item in &list.items {
            assert_eq!(item.count, exact[&item.key], "count of {}", item.key);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_checkpoint_beside_a_hot_list_is_recovered_once_not_reloaded_forever() {
    let Some(t) = topology("lost-checkpoint", 2) else {
        return;
    };
    let file = testing::write_topology(&t);
    let zk = Zk::connect(&t).await.expect("zk");
    let first_keys = zipf_keys(2_000, 300, 1.0, 60);
    testing::produce(&t, first_keys.iter().map(|k| Record::openresty(k))).await;
    run_to_end(&t);
    let before = caught_up(&zk, &t).await;

    // The checkpoint of task 0 goes missing; its hot list stays.
    let checkpoint = zk.layout().checkpoint(0);
    zk.client()
        .delete(&checkpoint, None)
        .await
        .expect("delete the checkpoint");
    let seen = watch_every_task(zk.clone()).await;

    let worker = Worker::start(&file, &[], &[]);
    let second_keys = zipf_keys(1_000, 300, 1.0, 61);
    testing::produce(&t, second_keys.iter().map(|k| Record::openresty(k))).await;
    let after = eventually(60, "task 0 to publish past the list it found", || async {
        let lists = hot_lists(&zk).await;
        let ends = testing::end_offsets(&t);
        let done = (0..2u32).all(|p| {
            lists
                .get(&p)
                .is_some_and(|(l, _)| l.offset == ends[p as usize])
        });
        done.then_some(lists)
    })
    .await;
    assert!(
        after[&0].1 > before[&0].1,
        "task 0 took over the existing version"
    );
    eventually(30, "task 0's checkpoint to be written again", || async {
        let saved = zk.read_checkpoint(0).await.ok().flatten()?;
        (saved.hot.offset == after[&0].0.offset).then_some(())
    })
    .await;

    let log = worker.log();
    assert_eq!(
        log.matches("no checkpoint beside the hot list").count(),
        1,
        "logged once:\n{log}"
    );
    assert!(
        !log.contains("another writer published this task"),
        "the task was reloaded:\n{log}"
    );
    let back = offsets_gone_back(&seen);
    assert!(back.is_empty(), "published offsets went back: {back:#?}");
    // The re-count starts at the window's start, so the counts are whole again.
    let all: Vec<String> = first_keys.into_iter().chain(second_keys).collect();
    let events: u64 = after.values().map(|(l, _)| l.events).sum();
    assert_eq!(events, all.len() as u64, "events lost or counted twice");
}
