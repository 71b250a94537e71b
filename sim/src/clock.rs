//! The world's clock. Inside a turmoil simulation it is turmoil's simulated time. Outside one —
//! the world's models running against real etcd servers (`harness`'s real backend) — it is real
//! time since that run started, set per thread by [`RealClock::start`]: the real backend drives
//! its world on one current-thread runtime, so a thread-local names exactly that run.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static REAL_START: Cell<Option<tokio::time::Instant>> = const { Cell::new(None) };
}

/// Time since the world started: simulated inside turmoil, real under a [`RealClock`], else None
/// (a driver between simulation steps, which keeps its own notion of now).
pub fn elapsed() -> Option<Duration> {
    turmoil::sim_elapsed().or_else(|| REAL_START.with(Cell::get).map(|t| t.elapsed()))
}

/// A real-time world clock for this thread; the world's time stops being real when dropped.
pub struct RealClock {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl RealClock {
    /// Starts the clock now. Panics if this thread already runs one (two real worlds on one
    /// thread would share a clock).
    pub fn start() -> RealClock {
        REAL_START.with(|s| {
            assert!(s.get().is_none(), "a real-time world clock already runs on this thread");
            s.set(Some(tokio::time::Instant::now()));
        });
        RealClock { _not_send: std::marker::PhantomData }
    }
}

impl Drop for RealClock {
    fn drop(&mut self) {
        REAL_START.with(|s| s.set(None));
    }
}
