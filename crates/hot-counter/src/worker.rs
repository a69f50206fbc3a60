//! A worker's counting state: the tasks it owns and how one event is counted into them.
//!
//! Shared by the counting thread (which counts), the poll loop (which publishes) and the
//! rebalance callbacks (which hand tasks over), behind one mutex. Nothing holds that mutex
//! across I/O: publishing renders under it and writes to ZooKeeper without it, so a slow or
//! absent ZooKeeper never stalls counting.
//!
//! Every counter keys an event on its own, so bad input costs only the counters it is bad
//! for: a counter that cannot key an event (not JSON, a key over `source.max_key_bytes`, or,
//! for the product counter, no key) skips it and counts the skip, in its hot list and in
//! `hotkeys_counter_skipped_total{counter, reason}`, while the other counters count it. A
//! scraper sending no usable product id is thus still counted (and banned) by a caller
//! counter. An event the product counter cannot key is malformed: logged once per kind with
//! a sample, and forwarded to the dead-letter topic when one is configured. An event stamped more than
//! `count.max_future` ahead of the worker's clock is counted as happening now, and as
//! `future`, so one broken clock cannot push the window ahead of every real event.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hotkeys::Topology;
use hotkeys::config::Counter;
use hotkeys::event::{KeyError, KeyPointer};
use hotkeys::hotlist::now_ms;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::handoff::{Batch, Event};
use crate::task::{Task, TaskCounter};

/// What one run of the loop counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub events: u64,
    pub malformed: u64,
    /// From the first message to the last one counted.
    pub busy: Duration,
}

/// Bytes of a malformed event quoted in the log.
const SAMPLE_BYTES: usize = 200;

/// See the module docs.
pub struct Worker {
    pub topology: std::sync::Arc<Topology>,
    /// By partition.
    pub tasks: HashMap<i32, Task>,
    /// The topology's counters and, in the same order, where each finds its key.
    pub counters: Vec<Counter>,
    pointers: Vec<KeyPointer>,
    max_future_ms: i64,
    logged_kinds: HashSet<&'static str>,
    dead_letter: Option<BaseProducer>,
    /// Counted since the metrics were last flushed.
    unflushed_events: u64,
    /// Set with a task's `entered`, so the poll loop learns of it without this lock.
    entered: Arc<AtomicBool>,
}

/// A poisoned lock only means a panic elsewhere already took the process down.
pub fn lock(worker: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    worker.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    pub fn new(topology: std::sync::Arc<Topology>) -> Result<Worker, KafkaError> {
        let dead_letter = if topology.kafka.dead_letter.is_empty() {
            None
        } else {
            Some(hotkeys::kafka::producer_config(&topology.kafka).create::<BaseProducer>()?)
        };
        let counters = topology.counters();
        let max_key_bytes = topology.source.max_key_bytes;
        Ok(Worker {
            pointers: counters
                .iter()
                .map(|c| KeyPointer::parse(&c.key).max_bytes(max_key_bytes))
                .collect(),
            counters,
            max_future_ms: topology.count.max_future().as_millis() as i64,
            topology,
            tasks: HashMap::new(),
            logged_kinds: HashSet::new(),
            dead_letter,
            unflushed_events: 0,
            entered: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Raised when some task has a key that entered its top N (see `entry`); the publisher
    /// lowers it when it starts a round for those tasks.
    pub fn entered(&self) -> Arc<AtomicBool> {
        self.entered.clone()
    }

    /// How far ahead of now an event may be stamped, in milliseconds.
    pub fn max_future_ms(&self) -> i64 {
        self.max_future_ms
    }

    /// Counts a batch handed over by the poll loop. The clock is read once per batch.
    pub fn count_batch(&mut self, batch: &Batch, totals: &mut Summary) {
        let now = now_ms();
        for event in batch.events() {
            if self.count(&event, now) {
                totals.events += 1;
            } else {
                totals.malformed += 1;
            }
        }
    }

    /// Counts one message in every counter that has not counted it yet. Each counter keys
    /// the event on its own: one that cannot skips it (and counts the skip), the others
    /// count it. False when the primary counter could not key it: the event is malformed.
    fn count(&mut self, message: &Event<'_>, now: i64) -> bool {
        let Some(task) = self.tasks.get_mut(&message.partition) else {
            return true;
        };
        let ts = event_time(task, message, now, self.max_future_ms);
        let mut malformed = None;
        let mut entered = false;
        for ((counter, pointer), state) in self
            .counters
            .iter()
            .zip(&self.pointers)
            .zip(&mut task.counters)
        {
            match count_in(counter, pointer, state, message, ts) {
                Counted::Done => {}
                Counted::Entered => entered = true,
                Counted::Malformed(e) => malformed = Some(e),
            }
        }
        if entered {
            task.entered = true;
            self.entered.store(true, Ordering::Release);
        }
        match malformed {
            None => {
                self.unflushed_events += 1;
                true
            }
            Some(e) => {
                let task_id = task.id;
                self.malformed(task_id, message, &e);
                false
            }
        }
    }

    fn malformed(&mut self, task: u32, message: &Event<'_>, error: &KeyError) {
        metrics::counter!("hotkeys_counter_malformed_total", "task" => task.to_string(), "kind" => error.kind())
            .increment(1);
        if self.logged_kinds.insert(error.kind()) {
            let payload = message.payload.unwrap_or_default();
            let sample =
                String::from_utf8_lossy(&payload[..payload.len().min(SAMPLE_BYTES)]).into_owned();
            tracing::warn!(task, offset = message.offset, kind = error.kind(), %error, %sample,
                "malformed event (counted and skipped; further ones of this kind are only counted)");
        }
        if let Some(producer) = &self.dead_letter {
            let mut record = BaseRecord::to(&self.topology.kafka.dead_letter)
                .payload(message.payload.unwrap_or_default());
            if let Some(key) = message.key {
                record = record.key(key);
            }
            if let Err((e, _)) = producer.send::<[u8], [u8]>(record) {
                tracing::warn!(error = %e, "cannot forward a malformed event to the dead-letter topic");
            }
        }
    }

    /// Moves the event count to the metrics and serves the dead-letter producer's
    /// delivery reports; once per publish tick.
    pub fn flush_metrics(&mut self) {
        metrics::counter!("hotkeys_counter_events_total").increment(self.unflushed_events);
        self.unflushed_events = 0;
        if let Some(producer) = &self.dead_letter {
            producer.poll(Duration::ZERO);
        }
    }

    /// Waits for forwarded malformed events to be delivered (shutdown).
    pub fn flush_dead_letter(&self) {
        if let Some(producer) = &self.dead_letter
            && let Err(e) = producer.flush(Duration::from_secs(10))
        {
            tracing::warn!(error = %e, "dead-letter messages may be lost");
        }
    }
}

/// What counting an event did in one counter.
enum Counted {
    /// Counted, counted before, late, or skipped by this counter alone.
    Done,
    /// Counted, and its key entered the counter's top N.
    Entered,
    /// The product counter could not key it: the event is malformed.
    Malformed(KeyError),
}

/// The event's time: its stamp, or `now` when it has none or one more than `max_future_ms`
/// ahead (counted in the task's `future`).
#[inline]
fn event_time(task: &mut Task, message: &Event<'_>, now: i64, max_future_ms: i64) -> i64 {
    let ts = message.timestamp_ms.unwrap_or(now);
    if ts <= now + max_future_ms {
        return ts;
    }
    task.future += 1;
    metrics::counter!("hotkeys_counter_future_total", "task" => message.partition.to_string())
        .increment(1);
    now
}

/// Counts `message`, stamped `ts`, in one counter's `state`, unless that counter counted
/// its offset already.
#[inline]
fn count_in(
    counter: &Counter,
    pointer: &KeyPointer,
    state: &mut TaskCounter,
    message: &Event<'_>,
    ts: i64,
) -> Counted {
    if message.offset < state.next_offset {
        return Counted::Done;
    }
    state.next_offset = message.offset + 1;
    // Only the product counter may stand in the message key for a missing value.
    let message_key = if counter.primary { message.key } else { None };
    match pointer.extract(message.payload, message_key) {
        Ok(key) => match state.window.offer(&key, ts) {
            Some(count) if state.entry.passed(&key, count) => Counted::Entered,
            Some(_) => Counted::Done,
            None => {
                metrics::counter!("hotkeys_counter_late_total",
                    "task" => message.partition.to_string(), "counter" => counter.name.clone())
                .increment(1);
                Counted::Done
            }
        },
        // Events without the counted value are simply not this counter's.
        Err(KeyError::Missing) if !counter.primary => Counted::Done,
        Err(e) => {
            state.skip(&e);
            metrics::counter!("hotkeys_counter_skipped_total",
                "counter" => counter.name.clone(), "reason" => e.kind())
            .increment(1);
            if counter.primary {
                Counted::Malformed(e)
            } else {
                Counted::Done
            }
        }
    }
}
