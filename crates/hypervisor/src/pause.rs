//! Pausing a running VM: vCPU threads park between exits until resumed, and the guest's
//! kvm-clock is frozen across the pause so its clock does not jump by the paused time.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;

/// How long `pause` waits for every vCPU to park.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

struct State<T> {
    paused: bool,
    parked: u32,
    released: bool,
    /// What each parked vCPU thread left here (its vCPU), by index: a paused VM's vCPU state
    /// is read through them.
    vcpus: Vec<Option<T>>,
}

/// Where vCPU threads park while the VM is paused.
pub struct PauseGate<T = VcpuFd> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

impl<T> Default for PauseGate<T> {
    fn default() -> Self {
        PauseGate {
            state: Mutex::new(State {
                paused: false,
                parked: 0,
                released: false,
                vcpus: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }
}

impl<T> PauseGate<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by vCPU thread `index` between runs: while the VM is paused, leave `vcpu` here
    /// and block; returns it when the VM resumes or ends.
    pub fn park(&self, index: usize, vcpu: T) -> T {
        let mut s = self.lock();
        if !s.paused || s.released {
            return vcpu;
        }
        if s.vcpus.len() <= index {
            s.vcpus.resize_with(index + 1, || None);
        }
        s.vcpus[index] = Some(vcpu);
        s.parked += 1;
        self.changed.notify_all();
        while s.paused && !s.released {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.parked -= 1;
        self.changed.notify_all();
        // Only this thread takes its slot out; `with_parked` borrows it under the lock.
        s.vcpus[index]
            .take()
            .expect("a parked vCPU stays in its slot")
    }

    /// Whether the VM is paused: a vCPU thread then parks at its next exit.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
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

    /// Run `f` on the `count` parked vCPUs in index order, holding the gate so that none
    /// resumes meanwhile. `None` unless the VM is paused with all of them parked.
    pub fn with_parked<R>(&self, count: u32, f: impl FnOnce(&[&T]) -> R) -> Option<R> {
        let s = self.lock();
        if !s.paused || s.released || s.parked != count {
            return None;
        }
        let vcpus: Option<Vec<&T>> = (0..count as usize)
            .map(|i| s.vcpus.get(i).and_then(Option::as_ref))
            .collect();
        Some(f(&vcpus?))
    }

    /// Resume every parked vCPU.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.changed.notify_all();
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
        let gate = Arc::new(PauseGate::<u32>::default());
        gate.set_paused();
        let g = gate.clone();
        let t = std::thread::spawn(move || g.park(1, 11));
        assert!(gate.wait_parked(1, Duration::from_secs(5)));
        assert!(!t.is_finished());
        assert_eq!(
            gate.with_parked(1, |v| v.len()),
            None,
            "vCPU 0 is not parked"
        );
        let g = gate.clone();
        let t0 = std::thread::spawn(move || g.park(0, 10));
        assert!(gate.wait_parked(2, Duration::from_secs(5)));
        assert_eq!(gate.with_parked(2, |v| [*v[0], *v[1]]), Some([10, 11]));
        gate.resume();
        assert_eq!((t0.join().unwrap(), t.join().unwrap()), (10, 11));
        assert!(!gate.is_paused());
        assert_eq!(gate.with_parked(0, |_| ()), None, "not paused");
    }

    #[test]
    fn release_frees_parked_threads_and_times_out_cleanly() {
        let gate = Arc::new(PauseGate::<u32>::default());
        assert!(
            !gate.wait_parked(1, Duration::from_millis(10)),
            "nobody parked"
        );
        gate.set_paused();
        let g = gate.clone();
        let t = std::thread::spawn(move || g.park(0, 7));
        assert!(gate.wait_parked(1, Duration::from_secs(5)));
        gate.release();
        assert_eq!(t.join().unwrap(), 7);
        assert_eq!(gate.park(0, 8), 8, "a released gate does not block");
    }
}
