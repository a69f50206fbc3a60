//! Live hot sets: one `hotkeys::zk::subscribe` subscription per counter, on the dashboard's
//! one ZooKeeper session, whatever the number of browsers and SSE clients. Each
//! subscription's latest set sits in a `watch` channel that every client waits on, with its
//! SSE frames: serialized once per `top` and shared, as the same bytes, by every client.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;

use hotkeys::Topology;
use hotkeys::cli::shutdown::CancellationToken;
use hotkeys::hotlist::{HotItem, HotList, merge, now_ms};
use hotkeys::zk::subscribe::{HotSet, SubscribeError, newest_write, subscribe_on};
use hotkeys::zk::{Versioned, Zk};
use serde::Serialize;
use tokio::sync::watch;

/// What a browser waits before reconnecting after the stream broke.
const RETRY: Duration = Duration::from_secs(2);

/// A counter's merged hot set: the JSON of `/api/hot` and of every SSE event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotView {
    pub counter: String,
    /// The zxid of the newest publish the view reflects (`HotSet::id`). It grows with every
    /// publish, across a `hotctl reset` too, and two views with the same id hold the same
    /// lists: it is the SSE event id a reconnecting client resumes from.
    pub id: i64,
    pub at_ms: i64,
    /// Hot-list version of every task that has published, by task.
    pub versions: BTreeMap<u32, i64>,
    /// The hottest keys over all tasks, hottest first.
    pub items: Vec<HotItem>,
}

impl HotView {
    /// The view of published lists, with the `top` hottest keys.
    pub fn from_lists(counter: &str, lists: &[Versioned<HotList>], top: usize) -> HotView {
        let versions: BTreeMap<u32, i64> = lists
            .iter()
            .map(|l| (l.value.task, i64::from(l.version)))
            .collect();
        HotView {
            counter: counter.to_string(),
            id: newest_write(lists),
            at_ms: now_ms(),
            versions,
            items: merge(lists.iter().map(|l| &l.value), top),
        }
    }

    fn from_set(set: HotSet) -> HotView {
        HotView {
            id: set.id,
            counter: set.counter,
            at_ms: set.at_ms,
            versions: set.versions,
            items: set.items,
        }
    }

    /// The same view with at most `top` items.
    pub fn truncated(&self, top: usize) -> HotView {
        HotView {
            items: self.items.iter().take(top).cloned().collect(),
            ..self.clone()
        }
    }
}

/// A published view with its SSE frames, made at the first client that asks for each `top`.
pub struct Published {
    pub view: HotView,
    /// By `top`; at most `top_n` entries, as `top` is clamped to it.
    frames: Mutex<HashMap<usize, Bytes>>,
}

impl Published {
    fn new(view: HotView) -> Published {
        Published {
            view,
            frames: Mutex::new(HashMap::new()),
        }
    }

    /// The SSE frame of this view with `top` items, the same bytes for every client.
    pub fn frame(&self, top: usize) -> Bytes {
        let mut frames = self.frames.lock().unwrap_or_else(PoisonError::into_inner);
        frames
            .entry(top)
            .or_insert_with(|| frame(&self.view.truncated(top)))
            .clone()
    }
}

/// Makes `view` the latest when it is newer than the one there. A reset deletes lists
/// before the workers publish them again, so a set read in between has a lower id than the
/// one before; showing it would hand a client an id it already had. The next publish has a
/// higher id than any before, and is shown.
fn offer(latest: &watch::Sender<Option<Arc<Published>>>, view: HotView) {
    let mut view = Some(Arc::new(Published::new(view)));
    latest.send_if_modified(|current| {
        let newer = match (current.as_ref(), view.as_ref()) {
            (Some(current), Some(view)) => view.view.id > current.view.id,
            _ => true,
        };
        if newer {
            *current = view.take();
        }
        newer
    });
}

/// The latest hot set of a counter; `None` until its subscription first answered.
pub type Latest = watch::Receiver<Option<Arc<Published>>>;

pub struct Hub {
    counters: HashMap<String, Latest>,
}

impl Hub {
    /// Subscribes on `zk` to every counter of the topology; the subscriptions end with
    /// `shutdown`.
    pub fn start(
        topology: &Topology,
        zk: &Zk,
        shutdown: CancellationToken,
    ) -> Result<Hub, SubscribeError> {
        let mut counters = HashMap::new();
        for counter in topology.counters() {
            let mut subscription = subscribe_on(zk, topology, &counter.name)?;
            let (tx, rx) = watch::channel(None);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        set = subscription.next() => offer(&tx, HotView::from_set(set)),
                        () = shutdown.cancelled() => return,
                    };
                }
            });
            counters.insert(counter.name, rx);
        }
        Ok(Hub { counters })
    }

    /// The live set of `counter`, if the topology has it.
    pub fn latest(&self, counter: &str) -> Option<Latest> {
        self.counters.get(counter).cloned()
    }
}

/// One SSE event of `view`: id, retry and the JSON on one `data:` line.
fn frame(view: &HotView) -> Bytes {
    let json = serde_json::to_string(view).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!(
        "id: {}\nretry: {}\ndata: {json}\n\n",
        view.id,
        RETRY.as_millis()
    ))
}
