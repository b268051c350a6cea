//! Pausing a running VM: vCPU threads park between exits until resumed, and the guest's
//! kvm-clock is frozen across the pause so its clock does not jump by the paused time.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long `pause` waits for every vCPU to park.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    paused: bool,
    parked: u32,
    released: bool,
}

/// Where vCPU threads park while the VM is paused.
#[derive(Default)]
pub struct PauseGate {
    state: Mutex<State>,
    changed: Condvar,
}

impl PauseGate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by a vCPU thread before entering the guest: blocks while paused.
    pub fn wait_while_paused(&self) {
        let mut s = self.lock();
        if !s.paused || s.released {
            return;
        }
        s.parked += 1;
        self.changed.notify_all();
        while s.paused && !s.released {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.parked -= 1;
        self.changed.notify_all();
    }

    /// Mark the VM paused; vCPUs park at their next exit (the caller kicks them).
    pub fn set_paused(&self) {
        self.lock().paused = true;
    }

    /// Wait until `count` vCPUs have parked; false on timeout.
    pub fn wait_parked(&self, count: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while s.parked < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Resume every parked vCPU.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.changed.notify_all();
    }

    /// Whether the VM is paused.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Let every vCPU go for good (the VM is ending); later pauses are ignored.
    pub fn release(&self) {
        self.lock().released = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn vcpus_park_until_resumed() {
        let gate = Arc::new(PauseGate::default());
        gate.set_paused();
        let g = gate.clone();
        let t = std::thread::spawn(move || g.wait_while_paused());
        assert!(gate.wait_parked(1, Duration::from_secs(5)));
        assert!(!t.is_finished());
        gate.resume();
        t.join().unwrap();
        assert!(!gate.is_paused());
    }

    #[test]
    fn release_frees_parked_threads_and_times_out_cleanly() {
        let gate = Arc::new(PauseGate::default());
        assert!(
            !gate.wait_parked(1, Duration::from_millis(10)),
            "nobody parked"
        );
        gate.set_paused();
        let g = gate.clone();
        let t = std::thread::spawn(move || g.wait_while_paused());
        assert!(gate.wait_parked(1, Duration::from_secs(5)));
        gate.release();
        t.join().unwrap();
        gate.wait_while_paused();
    }
}
