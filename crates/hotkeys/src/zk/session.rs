//! ZooKeeper sessions: every read and write the tools make in a topology's tree
//! ([`super::Layout`]).
//!
//! A hot list's place in time is its epoch and version ([`Versioned::covered_by`]): the
//! version counts the writes of the `hot` znode, the epoch is the zxid that created it. A
//! reset deletes the node and the next publish creates it anew, under a higher zxid, so a
//! list from after a reset is newer than any from before it even when its version is
//! lower; ZooKeeper's zxids only grow.
//!
//! Every write of `hot` is conditioned on the version of `hot` the writer last saw, and a
//! `checkpoint` is only written together with `hot` in one multi-op: a worker that lost its
//! partition can never overwrite what the new owner published (fencing by znode version).
//! One request carries at most [`REQUEST_MAX_BYTES`] of data (ZooKeeper drops the
//! connection on a request over `jute.maxbuffer`, 1 MB by default, and a retry fails the
//! same way forever).
//!
//! A [`Zk`] is one session. After `SessionExpired` the client does not recover; callers call
//! [`Zk::reconnect`] and recreate their ephemerals.

use std::time::Duration;

use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, Error as ZkClientError, Stat};

use super::layout::Layout;
use crate::config::{Topology, ZookeeperConfig};
use crate::hotlist::{BlacklistRecord, HotList, LockInfo, Warmed};

/// The most data one write request carries: `jute.maxbuffer` (1 MiB by default) less room
/// for paths and the request's framing.
pub const REQUEST_MAX_BYTES: usize = 1024 * 1024 - 16 * 1024;

/// A ZooKeeper failure, told apart where callers act differently.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    #[error("ZooKeeper at {connect} is unreachable: {source}")]
    Unreachable {
        connect: String,
        source: ZkClientError,
    },
    #[error("ZooKeeper session expired")]
    SessionExpired,
    #[error("ZooKeeper did not answer in time")]
    Timeout,
    #[error("{path}: lost a race (another writer changed the node)")]
    Fenced { path: String },
    #[error("{path}: deleted under the writer (hotctl reset?)")]
    Gone { path: String },
    #[error("{path}: {source}")]
    Op { path: String, source: ZkClientError },
    #[error("{path}: malformed record: {source}")]
    Malformed {
        path: String,
        source: serde_json::Error,
    },
}

impl ZkError {
    fn op(path: &str, source: ZkClientError) -> ZkError {
        match source {
            ZkClientError::SessionExpired | ZkClientError::ClientClosed => ZkError::SessionExpired,
            ZkClientError::BadVersion => ZkError::Fenced { path: path.into() },
            source => ZkError::Op {
                path: path.into(),
                source,
            },
        }
    }

    /// True when the session is gone and only a new one ([`Zk::reconnect`]) helps.
    pub fn is_session_lost(&self) -> bool {
        matches!(self, ZkError::SessionExpired)
    }
}

const PERSISTENT: CreateOptions<'static> = CreateMode::Persistent.with_acls(Acls::anyone_all());
const EPHEMERAL: CreateOptions<'static> = CreateMode::Ephemeral.with_acls(Acls::anyone_all());

/// A record with the stat of the znode it was read from.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    /// Writes of the znode since it was created.
    pub version: i32,
    pub modified_ms: i64,
    /// The zxid that created the znode: a node created again after a reset has a higher
    /// one than any before.
    pub epoch: i64,
    /// The zxid of the znode's last write: it grows with every write anywhere in the
    /// ensemble, across resets too.
    pub zxid: i64,
}

impl Versioned<HotList> {
    /// Whether `mark` records this very list or a later write of it: same epoch, and a
    /// version at least this one. A mark of a list from before a reset covers nothing.
    pub fn covered_by(&self, mark: &Warmed) -> bool {
        mark.hot_epoch == self.epoch && mark.hot_version >= i64::from(self.version)
    }
}

/// What ZooKeeper holds for one task.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub task: u32,
    pub hot: Option<Versioned<HotList>>,
    pub warmed: Option<Versioned<Warmed>>,
    pub lock: Option<Versioned<LockInfo>>,
}

impl TaskView {
    /// Whether the warmed mark covers the current hot-list version.
    pub fn is_warm(&self) -> bool {
        match (&self.hot, &self.warmed) {
            (Some(hot), Some(w)) => hot.covered_by(&w.value),
            _ => false,
        }
    }
}

/// What a new owner of a task resumes from.
#[derive(Debug, Clone)]
pub struct Restorable {
    pub hot: HotList,
    /// Counter state, as [`crate::count::WindowCounter::checkpoint`] wrote it; `None` when
    /// the checkpoint node is missing beside the hot list (deleted by hand, or a store
    /// restored in part), which the next writer must create with [`Zk::adopt`].
    pub checkpoint: Option<Vec<u8>>,
    /// Version of `hot`, to condition the next publish on.
    pub version: i32,
}

/// One ZooKeeper session bound to one topology's layout.
#[derive(Clone)]
pub struct Zk {
    client: Client,
    layout: Layout,
    config: ZookeeperConfig,
}

impl Zk {
    /// Opens a session; fails fast with [`ZkError::Unreachable`] when no server answers.
    pub async fn connect(topology: &Topology) -> Result<Zk, ZkError> {
        Zk::connect_with(&topology.zookeeper, Layout::of(topology)).await
    }

    pub async fn connect_with(config: &ZookeeperConfig, layout: Layout) -> Result<Zk, ZkError> {
        let client = Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(Duration::from_secs(5))
            .with_fail_eagerly()
            .connect(&config.connect)
            .await
            .map_err(|source| ZkError::Unreachable {
                connect: config.connect.clone(),
                source,
            })?;
        Ok(Zk {
            client,
            layout,
            config: config.clone(),
        })
    }

    /// A new session with the same settings, for use after [`ZkError::SessionExpired`].
    pub async fn reconnect(&self) -> Result<Zk, ZkError> {
        Zk::connect_with(&self.config, self.layout.clone()).await
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// This session, reading and writing counter `name`'s part of the tree.
    pub fn for_counter(&self, name: &str) -> Zk {
        Zk {
            client: self.client.clone(),
            layout: self.layout.for_counter(name),
            config: self.config.clone(),
        }
    }

    /// The raw client, for watches and for tests that need to act on the session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates `tasks/<task>` (and its parents) if missing.
    pub async fn ensure_task(&self, task: u32) -> Result<(), ZkError> {
        let path = self.layout.task(task);
        self.client
            .mkdir(&path, &PERSISTENT)
            .await
            .map_err(|e| ZkError::op(&path, e))
    }

    /// Task ids under `tasks/`, sorted; empty when nothing was published yet.
    pub async fn list_tasks(&self) -> Result<Vec<u32>, ZkError> {
        let path = self.layout.tasks();
        let children = match self.client.list_children(&path).await {
            Ok(c) => c,
            Err(ZkClientError::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(ZkError::op(&path, e)),
        };
        let mut tasks: Vec<u32> = children.iter().filter_map(|c| c.parse().ok()).collect();
        tasks.sort_unstable();
        Ok(tasks)
    }

    async fn get(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, ZkError> {
        match self.client.get_data(path).await {
            Ok(found) => Ok(Some(found)),
            Err(ZkClientError::NoNode) => Ok(None),
            Err(e) => Err(ZkError::op(path, e)),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<Versioned<T>>, ZkError> {
        let Some((data, stat)) = self.get(path).await? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&data).map_err(|source| ZkError::Malformed {
            path: path.into(),
            source,
        })?;
        Ok(Some(Versioned {
            value,
            version: stat.version,
            modified_ms: stat.mtime,
            epoch: stat.czxid,
            zxid: stat.mzxid,
        }))
    }

    pub async fn read_hot(&self, task: u32) -> Result<Option<Versioned<HotList>>, ZkError> {
        self.get_json(&self.layout.hot(task)).await
    }

    pub async fn read_warmed(&self, task: u32) -> Result<Option<Versioned<Warmed>>, ZkError> {
        self.get_json(&self.layout.warmed(task)).await
    }

    pub async fn read_lock(&self, task: u32) -> Result<Option<Versioned<LockInfo>>, ZkError> {
        self.get_json(&self.layout.lock(task)).await
    }

    /// The hot list, the checkpoint published with it and the `hot` version, read in one
    /// multi-op so the pair is consistent with a concurrent publish. `None` when there is
    /// no hot list; a hot list without its checkpoint is returned with `checkpoint: None`.
    pub async fn read_checkpoint(&self, task: u32) -> Result<Option<Restorable>, ZkError> {
        use zookeeper_client::MultiReadResult::{Data, Error};
        let hot = self.layout.hot(task);
        let checkpoint = self.layout.checkpoint(task);
        let mut reader = self.client.new_multi_reader();
        reader
            .add_get_data(&hot)
            .and_then(|()| reader.add_get_data(&checkpoint))
            .map_err(|e| ZkError::op(&hot, e))?;
        let results = reader.commit().await.map_err(|e| ZkError::op(&hot, e))?;
        let (hot_data, stat) = match results.first() {
            Some(Data { data, stat }) => (data, stat),
            Some(Error { err }) if *err != ZkClientError::NoNode => {
                return Err(ZkError::op(&hot, err.clone()));
            }
            _ => return Ok(None),
        };
        let saved = match results.get(1) {
            Some(Data { data, .. }) => Some(data.clone()),
            Some(Error { err }) if *err != ZkClientError::NoNode => {
                return Err(ZkError::op(&checkpoint, err.clone()));
            }
            _ => None,
        };
        let list = serde_json::from_slice(hot_data).map_err(|source| ZkError::Malformed {
            path: hot.clone(),
            source,
        })?;
        Ok(Some(Restorable {
            hot: list,
            checkpoint: saved,
            version: stat.version,
        }))
    }

    /// Writes `hot`, and `checkpoint` with it when given, atomically. `seen` is the `hot`
    /// version this writer last read or wrote (`None`: it believes the task was never
    /// published, and must then give a checkpoint). Returns the new version;
    /// [`ZkError::Fenced`] when another writer got there first; [`ZkError::Gone`] when the
    /// nodes were deleted since `seen` (the writer may then create them anew).
    pub async fn publish(
        &self,
        task: u32,
        seen: Option<i32>,
        hot: &[u8],
        checkpoint: Option<&[u8]>,
    ) -> Result<i32, ZkError> {
        let hot_path = self.layout.hot(task);
        let checkpoint_path = self.layout.checkpoint(task);
        let mut writer = self.client.new_multi_writer();
        let staged = match seen {
            None => writer
                .add_create(&hot_path, hot, &PERSISTENT)
                .and_then(|()| {
                    writer.add_create(
                        &checkpoint_path,
                        checkpoint.unwrap_or_default(),
                        &PERSISTENT,
                    )
                }),
            Some(v) => {
                writer
                    .add_set_data(&hot_path, hot, Some(v))
                    .and_then(|()| match checkpoint {
                        Some(c) => writer.add_set_data(&checkpoint_path, c, None),
                        None => Ok(()),
                    })
            }
        };
        staged.map_err(|e| ZkError::op(&hot_path, e))?;
        commit_publish(writer, hot_path).await
    }

    /// Writes `hot` fenced on `seen` and creates the missing `checkpoint` beside it, in one
    /// multi-op: how a new owner takes over a hot list whose checkpoint went missing
    /// (a plain [`Zk::publish`] would fail on the absent checkpoint forever).
    pub async fn adopt(
        &self,
        task: u32,
        seen: i32,
        hot: &[u8],
        checkpoint: &[u8],
    ) -> Result<i32, ZkError> {
        let hot_path = self.layout.hot(task);
        let checkpoint_path = self.layout.checkpoint(task);
        let mut writer = self.client.new_multi_writer();
        writer
            .add_set_data(&hot_path, hot, Some(seen))
            .and_then(|()| writer.add_create(&checkpoint_path, checkpoint, &PERSISTENT))
            .map_err(|e| ZkError::op(&hot_path, e))?;
        commit_publish(writer, hot_path).await
    }

    /// Takes the task's ephemeral lock if nobody holds it; never waits.
    /// `Ok(false)` means somebody else holds it.
    pub async fn try_lock(&self, task: u32, holder: &LockInfo) -> Result<bool, ZkError> {
        self.try_ephemeral(&self.layout.lock(task), holder).await
    }

    /// Takes the dashboard recorder lock if nobody holds it; never waits.
    pub async fn try_lock_recorder(&self, holder: &LockInfo) -> Result<bool, ZkError> {
        let path = self.layout.recorder();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.client
                .mkdir(parent, &PERSISTENT)
                .await
                .map_err(|e| ZkError::op(parent, e))?;
        }
        self.try_ephemeral(&path, holder).await
    }

    /// Who holds the recorder lock, and whether it is this session.
    pub async fn read_recorder(&self) -> Result<Option<(LockInfo, bool)>, ZkError> {
        let path = self.layout.recorder();
        let Some((data, stat)) = self.get(&path).await? else {
            return Ok(None);
        };
        let holder = serde_json::from_slice(&data).map_err(|source| ZkError::Malformed {
            path: path.clone(),
            source,
        })?;
        Ok(Some((
            holder,
            stat.ephemeral_owner == self.client.session_id().0,
        )))
    }

    /// Releases the recorder lock if this session holds it.
    pub async fn unlock_recorder(&self) -> Result<(), ZkError> {
        if let Some((_, true)) = self.read_recorder().await? {
            let path = self.layout.recorder();
            match self.client.delete(&path, None).await {
                Ok(()) | Err(ZkClientError::NoNode) => {}
                Err(e) => return Err(ZkError::op(&path, e)),
            }
        }
        Ok(())
    }

    async fn try_ephemeral(&self, path: &str, holder: &LockInfo) -> Result<bool, ZkError> {
        let data = serde_json::to_vec(holder).expect("lock info serializes");
        match self.client.create(path, &data, &EPHEMERAL).await {
            Ok(_) => Ok(true),
            Err(ZkClientError::NodeExists) => Ok(false),
            Err(e) => Err(ZkError::op(path, e)),
        }
    }

    /// Releases a lock this session holds; a lock already gone is not an error.
    pub async fn unlock(&self, task: u32) -> Result<(), ZkError> {
        let path = self.layout.lock(task);
        match self.client.delete(&path, None).await {
            Ok(()) | Err(ZkClientError::NoNode) => Ok(()),
            Err(e) => Err(ZkError::op(&path, e)),
        }
    }

    /// The hot lists of every task, in task order (subscribers, threshold rules).
    pub async fn hot_lists(&self) -> Result<Vec<Versioned<HotList>>, ZkError> {
        let mut lists = Vec::new();
        for task in self.list_tasks().await? {
            lists.extend(self.read_hot(task).await?);
        }
        Ok(lists)
    }

    pub async fn read_blacklist(&self) -> Result<Option<Versioned<BlacklistRecord>>, ZkError> {
        self.get_json(&self.layout.blacklist()).await
    }

    /// Replaces the counter's blacklist node (watchers see one change per call).
    pub async fn write_blacklist(&self, record: &BlacklistRecord) -> Result<(), ZkError> {
        let path = self.layout.blacklist();
        if let Some(parent) = path.rsplit_once('/').map(|(p, _)| p) {
            self.client
                .mkdir(parent, &PERSISTENT)
                .await
                .map_err(|e| ZkError::op(parent, e))?;
        }
        let data = serde_json::to_vec(record).expect("blacklist record serializes");
        self.put(&path, &data).await
    }

    /// Records that a hot-list version was warmed.
    pub async fn mark_warmed(&self, task: u32, warmed: &Warmed) -> Result<(), ZkError> {
        let path = self.layout.warmed(task);
        let data = serde_json::to_vec(warmed).expect("warmed record serializes");
        self.put(&path, &data).await
    }

    /// Creates or overwrites a persistent node.
    async fn put(&self, path: &str, data: &[u8]) -> Result<(), ZkError> {
        match self.client.set_data(path, data, None).await {
            Ok(_) => Ok(()),
            Err(ZkClientError::NoNode) => match self.client.create(path, data, &PERSISTENT).await {
                Ok(_) => Ok(()),
                Err(ZkClientError::NodeExists) => self
                    .client
                    .set_data(path, data, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| ZkError::op(path, e)),
                Err(e) => Err(ZkError::op(path, e)),
            },
            Err(e) => Err(ZkError::op(path, e)),
        }
    }

    /// Everything stored for every task, in task order (hotctl, the demo, prewarm's report).
    pub async fn task_views(&self) -> Result<Vec<TaskView>, ZkError> {
        let mut views = Vec::new();
        for task in self.list_tasks().await? {
            views.push(TaskView {
                task,
                hot: self.read_hot(task).await?,
                warmed: self.read_warmed(task).await?,
                lock: self.read_lock(task).await?,
            });
        }
        Ok(views)
    }

    /// A persistent recursive watch on the counter's tasks: it fires on every publish,
    /// lock and warmed mark. Events can be lost across a reconnect (ZOOKEEPER-4698), so a
    /// watcher re-reads the whole state after every session event, not just the node named.
    pub async fn watch_tasks(&self) -> Result<zookeeper_client::PersistentWatcher, ZkError> {
        let path = self.layout.tasks();
        self.client
            .mkdir(&path, &PERSISTENT)
            .await
            .map_err(|e| ZkError::op(&path, e))?;
        self.client
            .watch(&path, zookeeper_client::AddWatchMode::PersistentRecursive)
            .await
            .map_err(|e| ZkError::op(&path, e))
    }

    /// Deletes the `warmed` marks so the next prewarm pass loads every task again.
    pub async fn clear_warmed(&self, task: u32) -> Result<(), ZkError> {
        let path = self.layout.warmed(task);
        match self.client.delete(&path, None).await {
            Ok(()) | Err(ZkClientError::NoNode) => Ok(()),
            Err(e) => Err(ZkError::op(&path, e)),
        }
    }

    /// Deletes the whole topology subtree (hotctl reset, tests).
    pub async fn delete_all(&self) -> Result<(), ZkError> {
        let base = self.layout.base().to_string();
        self.delete_tree(&base).await
    }

    async fn delete_tree(&self, path: &str) -> Result<(), ZkError> {
        let children = match self.client.list_children(path).await {
            Ok(c) => c,
            Err(ZkClientError::NoNode) => return Ok(()),
            Err(e) => return Err(ZkError::op(path, e)),
        };
        for child in children {
            Box::pin(self.delete_tree(&format!("{path}/{child}"))).await?;
        }
        match self.client.delete(path, None).await {
            Ok(()) | Err(ZkClientError::NoNode) => Ok(()),
            Err(e) => Err(ZkError::op(path, e)),
        }
    }
}

/// Commits a staged publish; the new version of `hot`, or why it was refused.
async fn commit_publish(
    mut writer: zookeeper_client::MultiWriter<'_>,
    hot_path: String,
) -> Result<i32, ZkError> {
    match writer.commit().await {
        Ok(results) => Ok(match results.first() {
            Some(zookeeper_client::MultiWriteResult::SetData { stat }) => stat.version,
            _ => 0,
        }),
        Err(zookeeper_client::MultiWriteError::OperationFailed {
            source: ZkClientError::NodeExists | ZkClientError::BadVersion,
            ..
        }) => Err(ZkError::Fenced { path: hot_path }),
        Err(zookeeper_client::MultiWriteError::OperationFailed {
            source: ZkClientError::NoNode,
            ..
        }) => Err(ZkError::Gone { path: hot_path }),
        Err(e) => Err(ZkError::op(&hot_path, e.into())),
    }
}
