//! The start rate limit that bounds reboot loops (spec §4.6, F-LIFE-12), as vmd's
//! `config_setvm` counts: every start less than [`START_RATE_WINDOW`] after the previous
//! one bumps a counter, a start after a longer gap resets it, and when the counter reaches
//! [`START_RATE_LIMIT`] the start is refused. A refused start does not count as a start, so
//! waiting out the window always lets the next one through.

use std::time::{Duration, Instant};

/// `VM_START_RATE_SEC`.
pub const START_RATE_WINDOW: Duration = Duration::from_secs(6);
/// `VM_START_RATE_LIMIT`: quick successive starts that trip the limit.
pub const START_RATE_LIMIT: u32 = 3;

#[derive(Debug, Default, Clone)]
pub(crate) struct RestartLimiter {
    last_start: Option<Instant>,
    quick_starts: u32,
}

impl RestartLimiter {
    /// Records a start at `now`, or refuses it (false) when the VM restarts too quickly.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last_start {
            if now.saturating_duration_since(last) < START_RATE_WINDOW {
                self.quick_starts += 1;
                if self.quick_starts >= START_RATE_LIMIT {
                    return false;
                }
            } else {
                self.quick_starts = 0;
            }
        }
        self.last_start = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn third_quick_restart_is_refused() {
        let t0 = Instant::now();
        let mut l = RestartLimiter::default();
        assert!(l.admit(t0));
        assert!(l.admit(t0 + SEC));
        assert!(l.admit(t0 + 2 * SEC));
        assert!(!l.admit(t0 + 3 * SEC));
        assert!(!l.admit(t0 + 4 * SEC));
    }

    #[test]
    fn slow_restarts_are_never_refused() {
        let t0 = Instant::now();
        let mut l = RestartLimiter::default();
        for i in 0..10 {
            assert!(l.admit(t0 + i * START_RATE_WINDOW));
        }
    }

    #[test]
    fn window_slides_from_the_last_admitted_start() {
        let t0 = Instant::now();
        let mut l = RestartLimiter::default();
        assert!(l.admit(t0));
        assert!(l.admit(t0 + SEC));
        assert!(l.admit(t0 + 2 * SEC));
        assert!(!l.admit(t0 + 3 * SEC));
        // 6 s after the last admitted start (t0+2), not after the refused one.
        assert!(!l.admit(t0 + 7 * SEC));
        assert!(l.admit(t0 + 8 * SEC));
        // The counter was reset: two more quick ones pass again.
        assert!(l.admit(t0 + 9 * SEC));
        assert!(l.admit(t0 + 10 * SEC));
        assert!(!l.admit(t0 + 11 * SEC));
    }
}
