//! The staggered start of configured VMs after load and reload (spec §4.6, F-LIFE-11):
//! enabled VMs wait in registration order; each batch starts up to `parallel` of them and,
//! if more wait, the next batch is due `delay` later.

use std::time::{Duration, Instant};

use super::error::Failure;
use super::start::StartPlan;
use super::state::RunState;
use super::Registry;

/// `VMD_DEFAULT_STAGGERED_START_DELAY`.
pub const DEFAULT_STAGGER_DELAY: Duration =
    Duration::from_secs(vmconf::DEFAULT_STAGGER_DELAY as u64);

#[derive(Debug, Default, Clone)]
pub(crate) struct Stagger {
    /// When the next batch may start; `None`: as soon as a VM waits.
    next_batch: Option<Instant>,
}

impl Registry {
    fn parallel(&self) -> usize {
        let n = match self.global.staggered_start {
            Some(s) => s.parallel as usize,
            None => self.online_cpus,
        };
        n.max(1)
    }

    fn delay(&self) -> Duration {
        self.global
            .staggered_start
            .map_or(DEFAULT_STAGGER_DELAY, |s| {
                Duration::from_secs(s.delay_secs.into())
            })
    }

    /// When to call [`Registry::due_starts`] next; `None` when no VM waits.
    pub fn next_start_due(&self, now: Instant) -> Option<Instant> {
        let waiting = self.vms.iter().any(|e| e.run == RunState::Waiting);
        waiting.then(|| self.stagger.next_batch.map_or(now, |t| t.max(now)))
    }

    /// The batch of waiting VMs due at `now`, started (each a plan, or why it could not).
    pub fn due_starts(&mut self, now: Instant) -> Vec<Result<StartPlan, Failure>> {
        if self.stagger.next_batch.is_some_and(|t| now < t) {
            return Vec::new();
        }
        let waiting: Vec<usize> = (0..self.vms.len())
            .filter(|&i| self.vms[i].run == RunState::Waiting)
            .collect();
        let batch = self.parallel().min(waiting.len());
        let plans = waiting[..batch]
            .iter()
            .map(|&i| self.start_waiting(i, now))
            .collect();
        self.stagger.next_batch = (waiting.len() > batch).then(|| now + self.delay());
        plans
    }
}
