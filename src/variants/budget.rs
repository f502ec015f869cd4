//! How much render work may be in memory at once across the render pool, in pixels: a render
//! takes its share before it decodes and gives it back when done, waiting while the pool is full.
//! A render larger than the whole budget runs when it is alone. So a flood of the largest
//! renditions (5000 x 5000 with blur, about half a gigabyte each) queues instead of running side
//! by side on every render thread.
//!
//! A render's cost is the pixels it holds at its peak: the decoded source plus the output twice
//! (a resize or a blur writes a new image beside the one it reads).

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How often a render waiting for room asks whether it is still wanted.
const RECHECK: Duration = Duration::from_millis(50);

pub(crate) struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// A render's share of the budget, given back when dropped.
pub(crate) struct Permit<'a> {
    budget: &'a Budget,
    cost: u64,
}

impl Budget {
    pub(crate) fn new(limit_pixels: u64) -> Budget {
        Budget { limit: limit_pixels.max(1), used: Mutex::new(0), freed: Condvar::new() }
    }

    /// Waits for room for `cost` pixels; `go_on` is asked while waiting, and its error (the
    /// render is no longer wanted) ends the wait.
    pub(crate) fn acquire<E>(&self, cost: u64, go_on: &dyn Fn() -> Result<(), E>) -> Result<Permit<'_>, E> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *used == 0 || *used + cost <= self.limit {
                *used += cost;
                return Ok(Permit { budget: self, cost });
            }
            go_on()?;
            used = self.freed.wait_timeout(used, RECHECK).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Pixels taken by renders now.
    pub(crate) fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.budget.used.lock().unwrap_or_else(|e| e.into_inner()) -= self.cost;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn always() -> Result<(), ()> {
        Ok(())
    }

    #[test]
    fn renders_wait_for_room_and_a_huge_one_runs_alone() {
        let budget = Budget::new(100);
        let a = budget.acquire(60, &always).unwrap();
        let b = budget.acquire(40, &always).unwrap();
        assert_eq!(budget.used(), 100);
        let started = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _huge = budget.acquire(500, &always).unwrap();
                started.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(!started.load(Ordering::SeqCst), "waits while others run");
            drop(a);
            std::thread::sleep(Duration::from_millis(100));
            assert!(!started.load(Ordering::SeqCst), "still not alone");
            drop(b);
        });
        assert!(started.load(Ordering::SeqCst));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_render_no_longer_wanted_stops_waiting() {
        let budget = Budget::new(10);
        let _full = budget.acquire(10, &always).unwrap();
        assert!(budget.acquire(5, &|| Err("gone")).is_err());
        assert_eq!(budget.used(), 10);
    }
}
