//! The ZooKeeper layout of a topology: the one place that spells its paths.
//!
//! ```text
//! <root>/<topology>/tasks/<task>              persistent; task id = partition number
//! <root>/<topology>/tasks/<task>/hot          persistent; hot list JSON (hotlist::HotList)
//! <root>/<topology>/tasks/<task>/checkpoint   persistent; counter state matching `hot`
//! <root>/<topology>/tasks/<task>/lock         ephemeral; the prewarm process warming it
//! <root>/<topology>/tasks/<task>/warmed       persistent; hotlist::Warmed
//! <root>/<topology>/counters/<counter>/tasks/<task>/{hot,checkpoint}
//!                                             the same, for each `[[counter]]` table
//! <root>/<topology>/counters/<counter>/blacklist
//!                                             persistent; hotlist::BlacklistRecord
//! <root>/<topology>/dashboard/recorder        ephemeral; the dashboard recording history
//! ```
//!
//! The primary counter (`config::PRIMARY_COUNTER`) owns `<root>/<topology>/tasks`, the path
//! prewarm has always read; [`Layout::for_counter`] gives any counter's view of the tree.

use crate::config::{PRIMARY_COUNTER, Topology};

/// Paths of one topology, as one counter sees them; the only place that spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    base: String,
    /// Parent of `tasks` for this counter: `base` for the primary counter.
    counter_base: String,
}

impl Layout {
    /// Names of the nodes under a task.
    pub const HOT: &'static str = "hot";
    pub const CHECKPOINT: &'static str = "checkpoint";
    pub const LOCK: &'static str = "lock";
    pub const WARMED: &'static str = "warmed";

    /// The layout of the primary counter of a topology.
    pub fn new(root: &str, topology: &str) -> Layout {
        let base = format!("{root}/{topology}");
        Layout {
            counter_base: base.clone(),
            base,
        }
    }

    pub fn of(topology: &Topology) -> Layout {
        Layout::new(&topology.zookeeper.root, &topology.name)
    }

    /// The same topology as counter `name` sees it.
    pub fn for_counter(&self, name: &str) -> Layout {
        let counter_base = if name == PRIMARY_COUNTER {
            self.base.clone()
        } else {
            format!("{}/counters/{name}", self.base)
        };
        Layout {
            base: self.base.clone(),
            counter_base,
        }
    }

    /// The topology's subtree.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn tasks(&self) -> String {
        format!("{}/tasks", self.counter_base)
    }

    pub fn task(&self, task: u32) -> String {
        format!("{}/tasks/{task}", self.counter_base)
    }

    pub fn hot(&self, task: u32) -> String {
        format!("{}/tasks/{task}/{}", self.counter_base, Self::HOT)
    }

    /// The task and node name of a node under a task of this counter (`…/tasks/<task>/<node>`):
    /// how a watch on [`Zk::watch_tasks`](super::Zk::watch_tasks) names what changed.
    pub fn task_node<'a>(&self, path: &'a str) -> Option<(u32, &'a str)> {
        let rest = path
            .strip_prefix(&self.counter_base)?
            .strip_prefix("/tasks/")?;
        let (task, node) = rest.split_once('/')?;
        Some((task.parse().ok()?, node))
    }

    /// The task whose hot list `path` is: a publish, as a watch reports it.
    pub fn task_of_hot(&self, path: &str) -> Option<u32> {
        self.task_node(path)
            .filter(|(_, node)| *node == Self::HOT)
            .map(|(task, _)| task)
    }

    pub fn checkpoint(&self, task: u32) -> String {
        format!("{}/tasks/{task}/{}", self.counter_base, Self::CHECKPOINT)
    }

    pub fn lock(&self, task: u32) -> String {
        format!("{}/tasks/{task}/{}", self.counter_base, Self::LOCK)
    }

    pub fn warmed(&self, task: u32) -> String {
        format!("{}/tasks/{task}/{}", self.counter_base, Self::WARMED)
    }

    pub fn blacklist(&self) -> String {
        format!("{}/blacklist", self.counter_base)
    }

    /// The lock of the one `hotctl dashboard` that records hot-key history.
    pub fn recorder(&self) -> String {
        format!("{}/dashboard/recorder", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_design() {
        let l = Layout::new("/hotkeys", "product-detail");
        assert_eq!(l.tasks(), "/hotkeys/product-detail/tasks");
        assert_eq!(l.task(3), "/hotkeys/product-detail/tasks/3");
        assert_eq!(l.hot(3), "/hotkeys/product-detail/tasks/3/hot");
        assert_eq!(l.lock(3), "/hotkeys/product-detail/tasks/3/lock");
        assert_eq!(l.warmed(3), "/hotkeys/product-detail/tasks/3/warmed");
        assert_eq!(
            l.checkpoint(3),
            "/hotkeys/product-detail/tasks/3/checkpoint"
        );
        assert_eq!(
            l.for_counter("caller-ip").recorder(),
            "/hotkeys/product-detail/dashboard/recorder"
        );
    }

    #[test]
    fn a_watched_path_names_its_task_only_when_it_is_this_counters_hot_list() {
        let l = Layout::new("/hotkeys", "product-detail");
        assert_eq!(l.task_of_hot(&l.hot(7)), Some(7));
        for other in [
            l.lock(7),
            l.warmed(7),
            l.checkpoint(7),
            l.task(7),
            l.tasks(),
        ] {
            assert_eq!(l.task_of_hot(&other), None, "{other}");
        }
        let caller = l.for_counter("caller-ip");
        assert_eq!(l.task_of_hot(&caller.hot(7)), None);
        assert_eq!(caller.task_of_hot(&caller.hot(7)), Some(7));
    }

    #[test]
    fn counters_other_than_the_primary_live_under_counters() {
        let l = Layout::new("/hotkeys", "product-detail");
        assert_eq!(l.for_counter(PRIMARY_COUNTER), l);
        let c = l.for_counter("caller-ip");
        assert_eq!(c.base(), "/hotkeys/product-detail");
        assert_eq!(
            c.hot(3),
            "/hotkeys/product-detail/counters/caller-ip/tasks/3/hot"
        );
        assert_eq!(
            c.checkpoint(3),
            "/hotkeys/product-detail/counters/caller-ip/tasks/3/checkpoint"
        );
        assert_eq!(
            c.blacklist(),
            "/hotkeys/product-detail/counters/caller-ip/blacklist"
        );
    }
}
