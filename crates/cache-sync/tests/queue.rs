//! `hotkeys::sync_queue` against the real local Redis: batches, stamps, acknowledgement and
//! status.

mod common;

use hotkeys::sync_queue::{Op, QueuedOp};

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
    let ops = [Op::delete("session:2"), Op::delete(mine.clone()), Op::set("user:1", "x", None)];
    assert_eq!(queue.enqueue_many(&ops).await.unwrap(), 1);
    assert_eq!(stack.status(&t).await.length, 1);
    stack.cleanup().await;
}

#[tokio::test]
async fn a_batch_is_handed_out_again_with_its_stamp_until_acknowledged() {
    let Some(mut stack) = common::stack("in_flight").await else {
        return;
    };
    let mut t = stack.topology();
    t.sync.batch = 3;
    let queue = stack.queue(&t).await;
    let ops: Vec<Op> = (0..5).map(|i| Op::set(format!("{}{i}", stack.prefix()), format!("{i}"), None)).collect();
    queue.enqueue_many(&ops).await.unwrap();

    let first = queue.take(3, None).await.unwrap().unwrap();
    assert_eq!((first.stamp, first.items.len(), first.resent, first.queued), (1, 3, false, 2));
    // A shipper that crashed before the acknowledgement gets the same batch back.
    let again = queue.take(3, None).await.unwrap().unwrap();
    assert_eq!((again.stamp, &again.items, again.resent), (1, &first.items, true));
    let decoded: Vec<Op> = first.items.iter().map(|i| QueuedOp::from_json(i).unwrap().op).collect();
    assert_eq!(decoded, ops[..3]);

    // The acknowledgement rides on the next take.
    let second = queue.take(3, Some(1)).await.unwrap().unwrap();
    assert_eq!((second.stamp, second.items.len(), second.resent, second.queued), (2, 2, false, 0));
    // Acknowledging a stamp that is not in flight changes nothing.
    queue.ack(1).await.unwrap();
    assert_eq!(stack.status(&t).await.in_flight, Some(2));
    queue.ack(2).await.unwrap();
    assert_eq!(queue.take(3, None).await.unwrap(), None);

    let status = stack.status(&t).await;
    assert_eq!((status.length, status.in_flight, status.last_stamp, status.acked), (0, None, 2, 2));
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
    assert_eq!((empty.stream, empty.length, empty.in_flight, empty.lag_ms), (None, 0, None, 0));

    // An operation queued ten seconds ago, as written by another client of the queue.
    let old = QueuedOp {
        op: Op::delete(format!("{}old", stack.prefix())),
        at_ms: hotkeys::sync_queue::now_ms() - 10_000,
    };
    redis::cmd("RPUSH").arg(&t.sync.queue).arg(old.to_json()).query_async::<()>(&mut stack.local).await.unwrap();
    queue.enqueue(&Op::delete(format!("{}new", stack.prefix()))).await.unwrap();
    let stream = queue.stream_id().await.unwrap();
    assert_eq!(queue.stream_id().await.unwrap(), stream, "the stream id is stable");
    assert!(stream.starts_with(&t.sync.queue));

    let batch = queue.take(1, None).await.unwrap().unwrap();
    let status = stack.status(&t).await;
    assert_eq!(status.stream.as_deref(), Some(stream.as_str()));
    assert_eq!((status.length, status.in_flight, status.in_flight_ops), (1, Some(batch.stamp), 1));
    assert_eq!((status.last_stamp, status.acked), (1, 0));
    assert!(status.lag_ms >= 10_000, "lag counts from the oldest unacknowledged op: {status:?}");
    stack.cleanup().await;
}
