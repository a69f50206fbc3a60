//! The process's ZooKeeper session. An expired session cannot be revived, so the first task
//! that notices opens a new one; tasks that held locks on the old one learn that their locks
//! are gone (they get [`Halt::SessionLost`]) and do not mark anything.

use std::future::Future;

use hotkeys::Topology;
use hotkeys::zk::{Layout, Zk, ZkError};
use tokio::sync::RwLock;

use crate::error::{Dependency, Halt, PrewarmError};
use crate::retry::{Policy, retry};

pub(crate) struct Session {
    /// The session and how many sessions came before it.
    current: RwLock<(u64, Zk)>,
}

impl Session {
    pub(crate) async fn connect(topology: &Topology, policy: &Policy) -> Result<Session, Halt> {
        let zk = retry(policy, Dependency::ZooKeeper, "connecting", || {
            Zk::connect_with(&topology.zookeeper, Layout::of(topology))
        })
        .await?
        .map_err(zk_failed)?;
        Ok(Session {
            current: RwLock::new((0, zk)),
        })
    }

    /// The session in use and its generation (for [`Session::renew`]).
    pub(crate) async fn current(&self) -> (u64, Zk) {
        let guard = self.current.read().await;
        (guard.0, guard.1.clone())
    }

    /// Replaces session `generation` after it expired; a no-op if another task already did.
    pub(crate) async fn renew(&self, generation: u64, policy: &Policy) -> Result<(), Halt> {
        let mut guard = self.current.write().await;
        if guard.0 != generation {
            return Ok(());
        }
        tracing::warn!("ZooKeeper session expired; opening a new one");
        let old = guard.1.clone();
        let zk = retry(policy, Dependency::ZooKeeper, "reconnecting", || {
            old.reconnect()
        })
        .await?
        .map_err(zk_failed)?;
        *guard = (generation + 1, zk);
        Ok(())
    }

    /// A read that holds no lock, so it may move to a new session when the old one expired.
    pub(crate) async fn read<T, F, Fut>(
        &self,
        policy: &Policy,
        what: &str,
        op: F,
    ) -> Result<T, Halt>
    where
        F: Fn(Zk) -> Fut,
        Fut: Future<Output = Result<T, ZkError>>,
    {
        loop {
            let (generation, zk) = self.current().await;
            match retry(policy, Dependency::ZooKeeper, what, || op(zk.clone())).await? {
                Ok(v) => return Ok(v),
                Err(e) if e.is_session_lost() => self.renew(generation, policy).await?,
                Err(e) => return Err(classify(e)),
            }
        }
    }
}

/// A ZooKeeper error that retrying did not fix, as a task sees it.
pub(crate) fn classify(e: ZkError) -> Halt {
    match e {
        ZkError::SessionExpired => Halt::SessionLost,
        ZkError::Malformed { .. } => Halt::Malformed(e.to_string()),
        e => zk_failed(e),
    }
}

fn zk_failed(e: ZkError) -> Halt {
    Halt::Fatal(PrewarmError::Failed {
        dependency: Dependency::ZooKeeper,
        message: e.to_string(),
    })
}
