//! End to end against the two real Redis servers: operations queued on the local one reach
//! the remote one with the same final state, through shipper crashes and receiver outages.

mod common;

use std::time::Duration;

use common::{
    RunningReceiver, Stack, assert_same_state, cache_sync, ship_until_empty, topology_file,
};
use hotkeys::sync::{Op, SyncQueue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Writes `n` operations as an application does — the local write, then the enqueue — over
/// `keys` keys: sets with a TTL of 1 to 60 minutes, sets without TTL, deletes, and some
/// values that are not UTF-8. Returns every key name.
async fn write_and_enqueue(
    stack: &mut Stack,
    queue: &SyncQueue,
    n: usize,
    keys: usize,
    seed: u64,
) -> Vec<String> {
    let names: Vec<String> = (0..keys)
        .map(|i| format!("{}{i}", stack.prefix()))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut written = 0;
    while written < n {
        let mut ops = Vec::with_capacity(1000);
        let mut pipe = redis::pipe();
        for i in written..(written + 1000).min(n) {
            let key = names[rng.random_range(0..keys)].clone();
            let op = match rng.random_range(0..100) {
                0..30 => Op::delete(key),
                30..35 => Op::set(key, vec![0xff, 0xfe, (i % 251) as u8, 0], None),
                35..45 => Op::set(key, format!("{{\"v\":{i}}}"), None),
                _ => {
                    let ttl = Duration::from_secs(rng.random_range(60..3600));
                    Op::set(key, format!("{{\"id\":{i},\"name\":\"p{i}\"}}"), Some(ttl))
                }
            };
            match &op {
                Op::Set { key, value, ttl_ms } => {
                    let cmd = pipe.cmd("SET").arg(key).arg(value);
                    if let Some(ms) = ttl_ms {
                        cmd.arg("PX").arg(*ms);
                    }
                    cmd.ignore();
                }
                Op::Delete { key } => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
            }
            ops.push(op);
        }
        pipe.query_async::<()>(&mut stack.local).await.unwrap();
        assert_eq!(queue.enqueue_many(&ops).await.unwrap(), ops.len());
        written += ops.len();
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_interleaved_ops_arrive_with_the_same_final_state() {
    let Some(mut stack) = common::stack("hundred_thousand").await else {
        return;
    };
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let mut t = stack.topology();
    t.sync.remote = receiver.url();
    let queue = stack.queue(&t).await;

    let keys = write_and_enqueue(&mut stack, &queue, 100_000, 5_000, 1).await;
    assert_eq!(stack.status(&t).await.length, 100_000);

    let summary = ship_until_empty(&t).await;
    assert_eq!(summary.ops, 100_000);
    assert_eq!(summary.invalid, 0);

    let status = stack.status(&t).await;
    assert_eq!((status.length, status.in_flight), (0, None));
    assert_eq!(status.acked, status.last_stamp);
    let state = stack.stream_state(&t).await;
    assert_eq!(state.processed, status.acked);
    assert_eq!(
        (state.applied, state.applied_ops),
        (state.processed, 100_000)
    );
    assert_same_state(&mut stack, &keys).await;

    receiver.stop().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_killed_with_sigkill_again_and_again_loses_nothing_and_applies_no_batch_twice() {
    let Some(mut stack) = common::stack("sigkill").await else {
        return;
    };
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let mut t = stack.topology();
    t.sync.remote = receiver.url();
    // Small batches: many stamps, so kills land between every step of the cycle.
    t.sync.batch = 50;
    let file = topology_file(&t);
    let queue = stack.queue(&t).await;
    let total = 20_000;
    let keys = write_and_enqueue(&mut stack, &queue, total, 2_000, 2).await;

    let mut rng = StdRng::seed_from_u64(3);
    let mut kills = 0;
    while kills < 15 {
        let before = stack.status(&t).await;
        if before.length == 0 && before.in_flight.is_none() {
            break;
        }
        let mut child = cache_sync(file.path()).arg("ship").spawn().unwrap();
        // Kill only once the shipper is moving, then at a random point of its cycle.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the shipper took no batch within 60 s (kill {kills})"
            );
            let now = stack.status(&t).await;
            let drained = now.length == 0 && now.in_flight.is_none();
            if now.last_stamp > before.last_stamp || drained {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the shipper ended on its own: {status}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the shipper ended on its own: {status}");
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        kills += 1;
    }
    assert!(kills > 0);

    let status = cache_sync(file.path())
        .args(["ship", "--until-empty"])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "final shipper: {status}");

    let queue_status = stack.status(&t).await;
    assert_eq!((queue_status.length, queue_status.in_flight), (0, None));
    let state = stack.stream_state(&t).await;
    eprintln!("{kills} kills; receiver: {state:?}");
    assert_eq!(state.processed, queue_status.last_stamp);
    assert_eq!(state.applied, state.processed, "a batch was applied twice");
    assert_eq!(
        state.applied_ops, total as u64,
        "an operation was lost or applied twice"
    );
    assert_same_state(&mut stack, &keys).await;

    receiver.stop().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_receiver_is_down_the_queue_grows_and_it_drains_after_restart() {
    let Some(mut stack) = common::stack("receiver_down").await else {
        return;
    };
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let addr = receiver.addr;
    let mut t = stack.topology();
    t.sync.remote = receiver.url();
    t.sync.batch = 500;
    let queue = stack.queue(&t).await;

    let mut keys = write_and_enqueue(&mut stack, &queue, 2_000, 500, 4).await;
    ship_until_empty(&t).await;
    receiver.stop().await;

    keys.extend(write_and_enqueue(&mut stack, &queue, 3_000, 500, 5).await);
    let shipping = tokio::spawn({
        let t = t.clone();
        async move { ship_until_empty(&t).await }
    });
    // The shipper has taken as many batches as it may and cannot deliver them...
    let stuck = hotkeys::testing::eventually(60, "the shipper to fill its window", || async {
        let s = stack.status(&t).await;
        (s.in_flight_batches == t.sync.in_flight as u64).then_some(s)
    })
    .await;
    // ...and the queue grows behind it.
    keys.extend(write_and_enqueue(&mut stack, &queue, 3_000, 500, 6).await);
    let grown = stack.status(&t).await;
    assert_eq!(
        (grown.in_flight, grown.last_stamp),
        (stuck.in_flight, stuck.last_stamp),
        "a batch got through a stopped receiver"
    );
    assert_eq!(grown.length, stuck.length + 3_000);
    assert!(grown.acked < stuck.in_flight.unwrap());

    let receiver = RunningReceiver::start(&stack.topology(), &addr.to_string()).await;
    let summary = shipping.await.unwrap();
    assert_eq!(summary.ops, 6_000);

    let status = stack.status(&t).await;
    assert_eq!((status.length, status.in_flight), (0, None));
    let state = stack.stream_state(&t).await;
    assert_eq!((state.applied, state.applied_ops), (state.processed, 8_000));
    assert_same_state(&mut stack, &keys).await;

    receiver.stop().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_elements_that_are_not_operations_are_set_aside_and_the_stream_goes_on() {
    let Some(mut stack) = common::stack("dead_letters").await else {
        return;
    };
    let receiver = RunningReceiver::start(&stack.topology(), "127.0.0.1:0").await;
    let mut t = stack.topology();
    t.sync.remote = receiver.url();
    let queue = stack.queue(&t).await;

    let mut keys = write_and_enqueue(&mut stack, &queue, 10, 5, 7).await;
    redis::cmd("RPUSH")
        .arg(&t.sync.queue)
        .arg("not an operation")
        .arg(r#"{"op":"set","key":"x"}"#)
        .query_async::<()>(&mut stack.local)
        .await
        .unwrap();
    keys.extend(write_and_enqueue(&mut stack, &queue, 10, 5, 8).await);

    let summary = ship_until_empty(&t).await;
    assert_eq!((summary.ops, summary.invalid), (20, 2));
    let status = stack.status(&t).await;
    assert_eq!((status.length, status.dead), (0, 2));
    assert_same_state(&mut stack, &keys).await;

    receiver.stop().await;
    stack.cleanup().await;
}
