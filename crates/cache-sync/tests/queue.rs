//! `hotkeys::sync` against the real local Redis: batches, stamps, acknowledgement and
//! status.

mod common;

use hotkeys::sync::{Batch, Op, QueuedOp};

fn ops_of(batch: &Batch) -> Vec<Op> {
    batch
        .items
        .iter()
        .map(|i| QueuedOp::from_json(i).unwrap().op)
        .collect()
}

#[tokio::test]
async fn keys_outside_the_replicate_prefixes_are_never_queued() {
    let Some(mut stack) = common::stack("replicate").await else {
        return;
    };
    let t = stack.topology();
    let queue = stack.queue(&t).await;
    let mine = format!("{}1", stack.prefix());
    assert!(queue.replicates(&mine));
    assert!(!queue.replicates("session:1"));
    assert!(!queue.enqueue(&Op::delete("session:1")).await.unwrap());
    let ops = [
        Op::delete("session:2"),
        Op::delete(mine.clone()),
        Op::set("user:1", "x", None),
    ];
    assert_eq!(queue.enqueue_many(&ops).await.unwrap(), 1);
    assert_eq!(stack.status(&t).await.length, 1);
    stack.cleanup().await;
}

#[tokio::test]
async fn batches_in_flight_keep_their_stamps_until_acknowledged_in_order() {
    let Some(mut stack) = common::stack("in_flight").await else {
        return;
    };
    let t = stack.topology();
    let queue = stack.queue(&t).await;
    let ops: Vec<Op> = (0..7)
        .map(|i| Op::set(format!("{}{i}", stack.prefix()), format!("{i}"), None))
        .collect();
    queue.enqueue_many(&ops).await.unwrap();

    let first = queue.take(3, 2).await.unwrap().unwrap();
    assert_eq!((first.stamp, first.items.len(), first.queued), (1, 3, 4));
    assert_eq!(ops_of(&first), ops[..3]);
    let second = queue.take(3, 2).await.unwrap().unwrap();
    assert_eq!((second.stamp, second.items.len(), second.queued), (2, 3, 1));
    // Two batches in flight fill a window of two.
    assert_eq!(queue.take(3, 2).await.unwrap(), None);

    // A shipper that crashed now finds both batches, in order, with their stamps.
    let left: Vec<(u64, Vec<Op>)> = queue
        .in_flight()
        .await
        .unwrap()
        .iter()
        .map(|b| (b.stamp, ops_of(b)))
        .collect();
    assert_eq!(left, [(1, ops[..3].to_vec()), (2, ops[3..6].to_vec())]);

    // Acknowledgements go strictly in stamp order.
    assert_eq!(
        queue.ack(2).await.unwrap(),
        0,
        "stamp 2 cannot go before stamp 1"
    );
    assert_eq!(queue.ack(1).await.unwrap(), 1);
    assert_eq!(
        queue.ack(1).await.unwrap(),
        1,
        "acknowledging again changes nothing"
    );
    let third = queue.take(3, 2).await.unwrap().unwrap();
    assert_eq!((third.stamp, third.items.len(), third.queued), (3, 1, 0));
    let left: Vec<u64> = queue
        .in_flight()
        .await
        .unwrap()
        .iter()
        .map(|b| b.stamp)
        .collect();
    assert_eq!(left, [2, 3]);
    assert_eq!(queue.ack(2).await.unwrap(), 2);
    assert_eq!(queue.ack(3).await.unwrap(), 3);
    assert_eq!(queue.take(3, 2).await.unwrap(), None);
    assert!(queue.in_flight().await.unwrap().is_empty());

    let status = stack.status(&t).await;
    assert_eq!(
        (
            status.length,
            status.in_flight,
            status.last_stamp,
            status.acked
        ),
        (0, None, 3, 3)
    );
    stack.cleanup().await;
}

#[tokio::test]
async fn status_reports_length_in_flight_stamps_and_lag() {
    let Some(mut stack) = common::stack("status").await else {
        return;
    };
    let t = stack.topology();
    let queue = stack.queue(&t).await;
    let empty = stack.status(&t).await;
    assert_eq!(
        (empty.stream, empty.length, empty.in_flight, empty.lag_ms),
        (None, 0, None, 0)
    );

    // An operation queued ten seconds ago, as written by another client of the queue.
    let old = QueuedOp {
        op: Op::delete(format!("{}old", stack.prefix())),
        at_ms: hotkeys::sync::now_ms() - 10_000,
    };
    redis::cmd("RPUSH")
        .arg(&t.sync.queue)
        .arg(old.to_json())
        .query_async::<()>(&mut stack.local)
        .await
        .unwrap();
    let new: Vec<Op> = (0..3)
        .map(|i| Op::delete(format!("{}new{i}", stack.prefix())))
        .collect();
    queue.enqueue_many(&new).await.unwrap();
    assert_eq!(queue.stream().await.unwrap(), None);
    let stream = format!("{}@1", t.sync.queue);
    assert!(queue.restart_stream(None, &stream).await.unwrap().is_some());
    assert_eq!(
        queue.stream().await.unwrap().as_deref(),
        Some(stream.as_str())
    );
    assert!(
        queue
            .restart_stream(None, "another@2")
            .await
            .unwrap()
            .is_none(),
        "only a queue still on the expected stream moves"
    );

    queue.take(1, 4).await.unwrap().unwrap();
    queue.take(2, 4).await.unwrap().unwrap();
    let status = stack.status(&t).await;
    assert_eq!(status.stream.as_deref(), Some(stream.as_str()));
    assert_eq!(
        (
            status.length,
            status.in_flight,
            status.in_flight_batches,
            status.in_flight_ops
        ),
        (1, Some(1), 2, 3)
    );
    assert_eq!((status.last_stamp, status.acked), (2, 0));
    assert!(
        status.lag_ms >= 10_000,
        "lag counts from the oldest unacknowledged op: {status:?}"
    );
    stack.cleanup().await;
}

#[tokio::test]
async fn a_restarted_stream_carries_the_batches_in_flight_over_renumbered_in_order() {
    let Some(mut stack) = common::stack("restart").await else {
        return;
    };
    let t = stack.topology();
    let queue = stack.queue(&t).await;
    let ops: Vec<Op> = (0..5)
        .map(|i| Op::delete(format!("{}{i}", stack.prefix())))
        .collect();
    queue.enqueue_many(&ops).await.unwrap();
    let old = format!("{}@1", t.sync.queue);
    queue.restart_stream(None, &old).await.unwrap().unwrap();
    for _ in 0..3 {
        queue.take(2, 4).await.unwrap().unwrap();
    }
    assert_eq!(queue.ack(1).await.unwrap(), 1);

    let new = format!("{}@2", t.sync.queue);
    let restarted = queue
        .restart_stream(Some(&old), &new)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((restarted.batches, restarted.missing), (2, 0));
    let left: Vec<(u64, Vec<Op>)> = queue
        .in_flight()
        .await
        .unwrap()
        .iter()
        .map(|b| (b.stamp, ops_of(b)))
        .collect();
    assert_eq!(left, [(1, ops[2..4].to_vec()), (2, ops[4..].to_vec())]);
    let status = stack.status(&t).await;
    assert_eq!(status.stream.as_deref(), Some(new.as_str()));
    assert_eq!((status.last_stamp, status.acked), (2, 0));
    assert_eq!(
        queue.take(2, 4).await.unwrap(),
        None,
        "nothing left to take"
    );
    stack.cleanup().await;
}
