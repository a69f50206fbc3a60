//! Rebalances as task hand-overs. librdkafka runs these callbacks inside `poll`, on the
//! loop's thread, so a hand-over is synchronous:
//!
//! - on revoke, the revoked tasks publish a final hot list and checkpoint before their
//!   partitions are released, so the next owner resumes exactly where this one stopped;
//! - on assign, each task is restored from its checkpoint and its partition is re-assigned
//!   at the checkpoint's offset, so no event is counted twice in the window.
//!
//! Both work on all of their tasks at once, under one deadline that stays below
//! `max.poll.interval.ms`: a member that takes longer is thrown out of the group.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::handoff::Handoff;
use crate::publish::{Publisher, start_offset};
use crate::worker::{Worker, lock};

/// The longest a hand-over may take, whatever `max.poll.interval.ms` allows.
const HANDOVER_MAX: Duration = Duration::from_secs(60);

/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 300_000;

/// What the consumer's callbacks reach: the counting state, the hand-off to drain before
/// the set of tasks changes, and the publisher.
pub struct Context {
    pub worker: Arc<Mutex<Worker>>,
    pub handoff: Arc<Handoff>,
    publisher: Mutex<Publisher>,
    /// Deadline of one hand-over, for all of its tasks together.
    handover: Duration,
}

impl Context {
    pub fn new(worker: Arc<Mutex<Worker>>, handoff: Arc<Handoff>, publisher: Publisher) -> Context {
        let max_poll_ms = lock(&worker)
            .topology
            .kafka
            .consumer
            .get("max.poll.interval.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_POLL_INTERVAL_MS);
        Context {
            handover: HANDOVER_MAX.min(Duration::from_millis(max_poll_ms / 2)),
            worker,
            handoff,
            publisher: Mutex::new(publisher),
        }
    }

    /// The publisher; only the loop's thread uses it, so this never waits.
    pub fn publisher(&self) -> MutexGuard<'_, Publisher> {
        self.publisher.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deadline of a hand-over, also used for the final publish at shutdown.
    pub fn handover(&self) -> Duration {
        self.handover
    }

    fn revoke(&self, consumer: &BaseConsumer<Context>, tpl: &TopicPartitionList) {
        let mut revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        revoked.sort_unstable();
        // What was polled of the revoked partitions is counted before their final publish.
        self.handoff.drain();
        self.publisher().publish_now(
            consumer,
            &self.worker,
            &self.handoff,
            Some(&revoked),
            self.handover,
        );
        {
            let mut w = lock(&self.worker);
            for partition in &revoked {
                w.tasks.remove(partition);
            }
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "commit on revoke had nothing to commit");
        }
        tracing::info!(tasks = ?revoked, "partitions revoked");
    }

    fn assign(&self, consumer: &BaseConsumer<Context>, tpl: &TopicPartitionList) {
        self.handoff.drain();
        let ids: Vec<u32> = tpl
            .elements()
            .iter()
            .filter_map(|e| u32::try_from(e.partition()).ok())
            .collect();
        let (counters, max_future_ms) = {
            let w = lock(&self.worker);
            (w.counters.clone(), w.max_future_ms())
        };
        let restored = self
            .publisher()
            .restore(&counters, max_future_ms, &ids, self.handover);
        let topic = lock(&self.worker).topology.kafka.topic.clone();
        let mut positioned = TopicPartitionList::new();
        let mut tasks = Vec::with_capacity(restored.len());
        for (task, start) in restored {
            let partition = task.id as i32;
            let offset = start_offset(consumer, &topic, partition, start);
            if let Err(e) = positioned.add_partition_offset(&topic, partition, offset) {
                tracing::warn!(task = partition, error = %e, "cannot position partition");
            }
            tasks.push((partition, task));
        }
        lock(&self.worker).tasks.extend(tasks);
        if let Err(e) = consumer.assign(&positioned) {
            tracing::error!(error = %e, "cannot re-assign partitions at their checkpoints");
        }
        let mut ids = ids;
        ids.sort_unstable();
        tracing::info!(tasks = ?ids, "partitions assigned");
    }
}

impl ClientContext for Context {
    /// Expected retries while a broker starts are debug, not warnings.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        hotkeys::kafka::log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // End-of-partition is reported as an "error" by librdkafka; it is how
        // `--until-caught-up` knows it is done.
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        if hotkeys::kafka::is_startup_retry(reason) {
            tracing::debug!(%error, reason, "librdkafka retry while the broker starts");
        } else {
            tracing::error!(%error, reason, "librdkafka error");
        }
    }

    fn stats(&self, stats: Statistics) {
        let worker = lock(&self.worker);
        let Some(topic) = stats.topics.get(&worker.topology.kafka.topic) else {
            return;
        };
        for (partition, task) in &worker.tasks {
            let next = task.next_offset();
            if let Some(p) = topic.partitions.get(partition)
                && p.hi_offset >= 0
                && next >= 0
            {
                metrics::gauge!("hotkeys_counter_lag_events", "task" => partition.to_string())
                    .set((p.hi_offset - next).max(0) as f64);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            metrics::counter!("hotkeys_counter_rebalances_total", "kind" => "revoke").increment(1);
            self.revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics::counter!("hotkeys_counter_rebalances_total", "kind" => "assign")
                    .increment(1);
                self.assign(consumer, tpl);
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}
