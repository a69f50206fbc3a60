//! The hand-off between the poll loop and the counting thread.
//!
//! Taking a message off librdkafka's queue costs about as much as finding its key and
//! counting it. One thread doing both leaves the second core idle, so the loop only copies
//! each message into a [`Batch`] (one byte arena, no allocation per message) and a second
//! thread counts full batches, locking the worker's state once per batch.
//!
//! Counting is idempotent by offset (a counter skips offsets below its `next_offset`), so a
//! batch counted late is harmless as long as the task it lands in is the one it was polled
//! for. [`Handoff::drain`] guarantees that: it sends the batch being filled and waits until
//! every batch sent is counted. The consumer drains before every change of the set of tasks
//! (rebalances) and before every publish, whose fencing may replace a task with another
//! writer's checkpoint.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, MutexGuard};

use rdkafka::message::{BorrowedMessage, Message};

/// Messages per batch: large enough to amortise the locks, small enough to keep the
/// counting thread fed while the loop fills the next one.
const BATCH: usize = 1024;

/// Batches on their way to the counting thread before the loop waits for it.
const IN_FLIGHT: usize = 4;

/// A message as the counting thread sees it.
pub struct Event<'a> {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

struct Entry {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
}

/// Copies of polled messages, in poll order.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

impl Batch {
    fn push(&mut self, message: &BorrowedMessage<'_>) {
        let mut copy = |part: Option<&[u8]>| {
            part.map(|p| {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(p);
                start..self.bytes.len()
            })
        };
        let key = copy(message.key());
        let payload = copy(message.payload());
        self.entries.push(Entry {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key,
            payload,
        });
    }

    pub fn events(&self) -> impl Iterator<Item = Event<'_>> {
        self.entries.iter().map(|e| Event {
            partition: e.partition,
            offset: e.offset,
            timestamp_ms: e.timestamp_ms,
            key: e.key.clone().map(|r| &self.bytes[r]),
            payload: e.payload.clone().map(|r| &self.bytes[r]),
        })
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }
}

/// The loop's side of the hand-off; see the module docs.
pub struct Handoff {
    filling: Mutex<Batch>,
    to_counter: Mutex<Option<SyncSender<Batch>>>,
    /// Emptied batches coming back for reuse.
    recycled: Mutex<Receiver<Batch>>,
    sent: AtomicU64,
    counted: Mutex<u64>,
    counted_changed: Condvar,
}

/// The counting thread's side: batches to count, and where to return them.
pub struct Counting {
    batches: Receiver<Batch>,
    recycle: SyncSender<Batch>,
}

impl Handoff {
    pub fn new() -> (Handoff, Counting) {
        let (to_counter, batches) = sync_channel(IN_FLIGHT);
        let (recycle, recycled) = sync_channel(IN_FLIGHT + 2);
        (
            Handoff {
                filling: Mutex::new(Batch::default()),
                to_counter: Mutex::new(Some(to_counter)),
                recycled: Mutex::new(recycled),
                sent: AtomicU64::new(0),
                counted: Mutex::new(0),
                counted_changed: Condvar::new(),
            },
            Counting { batches, recycle },
        )
    }

    /// Copies a polled message into the batch being filled, sending it when full.
    pub fn push(&self, message: &BorrowedMessage<'_>) {
        let mut filling = relock(&self.filling);
        filling.push(message);
        if filling.len() >= BATCH {
            self.send(&mut filling);
        }
    }

    /// Sends what has been polled so far without waiting for it to be counted.
    pub fn flush(&self) {
        let mut filling = relock(&self.filling);
        if filling.len() > 0 {
            self.send(&mut filling);
        }
    }

    /// Sends what has been polled so far and waits until everything sent is counted.
    pub fn drain(&self) {
        self.flush();
        let sent = self.sent.load(Ordering::Acquire);
        let mut counted = relock(&self.counted);
        while *counted < sent {
            counted = self
                .counted_changed
                .wait(counted)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Drains, then lets the counting thread finish.
    pub fn close(&self) {
        self.drain();
        relock(&self.to_counter).take();
    }

    fn send(&self, filling: &mut Batch) {
        let empty = relock(&self.recycled).try_recv().unwrap_or_default();
        let full = std::mem::replace(filling, empty);
        if let Some(tx) = relock(&self.to_counter).as_ref()
            && tx.send(full).is_ok()
        {
            self.sent.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Runs on the counting thread: counts every batch with `count` until [`close`](Self::close).
    pub fn count_batches(&self, counting: Counting, mut count: impl FnMut(&Batch)) {
        for mut batch in counting.batches {
            count(&batch);
            batch.clear();
            // A full recycle channel only means the loop has enough spare batches.
            let _ = counting.recycle.try_send(batch);
            *relock(&self.counted) += 1;
            self.counted_changed.notify_all();
        }
    }
}

/// A poisoned lock only means a panic elsewhere already took the process down.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
