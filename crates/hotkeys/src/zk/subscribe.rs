//! Hot-key subscription: a counter's merged hot set as a stream of updates, so an
//! application process can keep the current hot keys in a local cache.
//!
//! A [`Subscription`] holds one ZooKeeper session and a persistent recursive watch on the
//! counter's `tasks` subtree. Every event makes it re-read the tasks' hot lists; it yields a
//! [`HotSet`] whenever a task's hot list was written (its znode's zxid moved, which also
//! tells a list recreated after a reset from the one before at the same version). Watches fire once per publish, so
//! every publish the subscriber is connected for is seen, in order. ZooKeeper may drop
//! events across a reconnect (ZOOKEEPER-4698) and a session can expire; the subscription
//! then opens a new session, watches again and re-reads everything, and it re-reads every
//! [`RESYNC_EVERY`] anyway. Versions published while it was cut off arrive as one update
//! with the newest lists; none is ever delivered out of order.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::Stream;
use zookeeper_client::PersistentWatcher;

use crate::Topology;
use crate::hotlist::{HotItem, HotList, merge, now_ms};
use crate::zk::{Versioned, Zk, ZkError};

/// How often a subscription re-reads the hot lists even without a watch event.
pub const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// Pause before retrying after ZooKeeper failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a subscription could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("topology `{topology}` has no counter `{counter}` (counters: {known})")]
    UnknownCounter {
        topology: String,
        counter: String,
        known: String,
    },
    #[error(transparent)]
    ZooKeeper(#[from] ZkError),
}

/// One update: the counter's hot set after at least one task published.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HotSet {
    pub counter: String,
    /// The zxid of the newest publish the set reflects. ZooKeeper's zxids only grow, so
    /// the id grows with every publish, across a `hotctl reset` too, and two sets with the
    /// same id hold the same lists.
    pub id: i64,
    pub at_ms: i64,
    /// Hot-list version of every task that has published, by task.
    pub versions: BTreeMap<u32, i64>,
    /// Tasks whose list changed since the previous update (every task in the first one).
    pub changed: Vec<u32>,
    /// The counter's `top_n` hottest keys over all tasks.
    pub items: Vec<HotItem>,
}

/// A live view of one counter's hot set; see the module docs.
pub struct Subscription {
    zk: Zk,
    watcher: Option<PersistentWatcher>,
    counter: String,
    top_n: usize,
    /// The zxid of each task's list in the last update.
    written: BTreeMap<u32, i64>,
}

/// Subscribes to counter `counter` of `topology` (`config::PRIMARY_COUNTER` for the product
/// counter). Fails when the counter is unknown or ZooKeeper is unreachable now; later
/// ZooKeeper failures are retried inside the subscription.
pub async fn subscribe(topology: &Topology, counter: &str) -> Result<Subscription, SubscribeError> {
    if !topology.counters().iter().any(|c| c.name == counter) {
        return Err(unknown_counter(topology, counter));
    }
    let zk = Zk::connect(topology).await?;
    subscribe_on(&zk, topology, counter)
}

/// [`subscribe`] on the session `zk` of `topology`, for a process that keeps one session for
/// everything (several subscriptions share its connection). After the session expires the
/// subscription goes on with a new session of its own.
pub fn subscribe_on(
    zk: &Zk,
    topology: &Topology,
    counter: &str,
) -> Result<Subscription, SubscribeError> {
    let counters = topology.counters();
    let Some(spec) = counters.iter().find(|c| c.name == counter) else {
        return Err(unknown_counter(topology, counter));
    };
    let zk = zk.for_counter(counter);
    Ok(Subscription {
        zk,
        watcher: None,
        counter: counter.to_string(),
        top_n: spec.count.top_n,
        written: BTreeMap::new(),
    })
}

fn unknown_counter(topology: &Topology, counter: &str) -> SubscribeError {
    SubscribeError::UnknownCounter {
        topology: topology.name.clone(),
        counter: counter.to_string(),
        known: topology
            .counters()
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

impl Subscription {
    /// Waits for the next change of the hot set. Never fails: ZooKeeper trouble is logged
    /// and retried until it answers again.
    pub async fn next(&mut self) -> HotSet {
        loop {
            if self.watcher.is_none() {
                match self.zk.watch_tasks().await {
                    Ok(w) => self.watcher = Some(w),
                    Err(e) => {
                        self.recover(e).await;
                        continue;
                    }
                }
            }
            match self.read().await {
                Ok(Some(set)) => return set,
                Ok(None) => {}
                Err(e) => {
                    self.recover(e).await;
                    continue;
                }
            }
            let Some(watcher) = self.watcher.as_mut() else {
                continue;
            };
            tokio::select! {
                event = watcher.changed() => {
                    if event.session_state.is_terminated() {
                        self.recover(ZkError::SessionExpired).await;
                    }
                }
                () = tokio::time::sleep(RESYNC_EVERY) => {}
            }
        }
    }

    /// The subscription as a `Stream` of updates; it never ends.
    pub fn into_stream(self) -> impl Stream<Item = HotSet> {
        futures::stream::unfold(self, |mut s| async move {
            let set = s.next().await;
            Some((set, s))
        })
    }

    /// The hot set when some task's list was written since the last update.
    async fn read(&mut self) -> Result<Option<HotSet>, ZkError> {
        let lists = self.zk.hot_lists().await?;
        let written: BTreeMap<u32, i64> = lists.iter().map(|l| (l.value.task, l.zxid)).collect();
        if written == self.written {
            return Ok(None);
        }
        let changed = written
            .iter()
            .filter(|(task, zxid)| self.written.get(task) != Some(zxid))
            .map(|(task, _)| *task)
            .collect();
        self.written = written;
        Ok(Some(HotSet {
            counter: self.counter.clone(),
            id: newest_write(&lists),
            at_ms: now_ms(),
            versions: lists
                .iter()
                .map(|l| (l.value.task, i64::from(l.version)))
                .collect(),
            changed,
            items: merge(lists.iter().map(|l| &l.value), self.top_n),
        }))
    }

    /// Gets back to a working session after `error`; returns when the next try may start.
    async fn recover(&mut self, error: ZkError) {
        if !error.is_session_lost() {
            tracing::warn!(counter = %self.counter, %error, "hot-set subscription: ZooKeeper failed; retrying");
            tokio::time::sleep(RETRY_AFTER).await;
            return;
        }
        tracing::warn!(counter = %self.counter, "hot-set subscription: session expired; opening a new one");
        self.watcher = None;
        loop {
            match self.zk.reconnect().await {
                Ok(zk) => {
                    self.zk = zk;
                    return;
                }
                Err(e) => {
                    tracing::warn!(counter = %self.counter, error = %e, "ZooKeeper reconnect failed; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}

/// The zxid of the newest write among `lists` (0 for none): a hot set's id.
pub fn newest_write(lists: &[Versioned<HotList>]) -> i64 {
    lists.iter().map(|l| l.zxid).max().unwrap_or(0)
}
