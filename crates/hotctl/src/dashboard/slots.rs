//! The count of open `/api/stream` clients, bounded by `dashboard.max_streams`: a client
//! holds a [`Slot`] while its stream lives, and none is handed out past the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The count of open streams, bounded by `max`.
pub struct Slots {
    open: Arc<AtomicUsize>,
    pub max: usize,
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A slot, unless `max` are taken.
    pub fn take(&self) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        metrics::gauge!("hotkeys_dashboard_stream_clients").increment(1.0);
        Some(Slot(self.open.clone()))
    }
}

/// One open stream, counted in [`Slots`] and `hotkeys_dashboard_stream_clients` while it
/// lives.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("hotkeys_dashboard_stream_clients").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_max_and_come_back_when_dropped() {
        let slots = Slots::new(2);
        let (a, b) = (slots.take(), slots.take());
        assert!(a.is_some() && b.is_some());
        assert!(slots.take().is_none());
        drop(a);
        assert!(slots.take().is_some());
    }
}
