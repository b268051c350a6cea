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

#[cfg(test)]
mod tests {
    use ipc::proto::{StartRequest, VmRef, VmState};
    use vmconf::StaggeredStart;

    use super::super::testutil::{config, registry, vm, TEST_CPUS};
    use super::super::Caller;
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn names(plans: &[Result<StartPlan, Failure>]) -> Vec<String> {
        plans
            .iter()
            .map(|p| p.as_ref().unwrap().name.clone())
            .collect()
    }

    fn five() -> vmconf::Config {
        config(["v1", "v2", "v3", "v4", "v5"].into_iter().map(vm).collect())
    }

    #[test]
    fn batches_of_online_cpus_every_30_seconds() {
        assert_eq!(TEST_CPUS, 2);
        let mut r = registry();
        r.load_config(&five());
        let t0 = Instant::now();
        assert_eq!(r.next_start_due(t0), Some(t0));
        assert_eq!(names(&r.due_starts(t0)), ["v1", "v2"]);
        assert_eq!(r.next_start_due(t0), Some(t0 + DEFAULT_STAGGER_DELAY));
        assert!(r.due_starts(t0 + 29 * SEC).is_empty());
        assert_eq!(names(&r.due_starts(t0 + 30 * SEC)), ["v3", "v4"]);
        assert_eq!(names(&r.due_starts(t0 + 60 * SEC)), ["v5"]);
        assert_eq!(r.next_start_due(t0 + 60 * SEC), None);
        assert!(r.due_starts(t0 + 90 * SEC).is_empty());
    }

    #[test]
    fn configured_parallel_and_delay() {
        let mut cfg = five();
        cfg.global.staggered_start = Some(StaggeredStart {
            parallel: 3,
            delay_secs: 5,
        });
        let mut r = registry();
        r.reload(&cfg);
        let t0 = Instant::now();
        assert_eq!(r.due_starts(t0).len(), 3);
        assert_eq!(r.next_start_due(t0), Some(t0 + 5 * SEC));
        assert_eq!(r.due_starts(t0 + 5 * SEC).len(), 2);
    }

    #[test]
    fn waiting_state_until_the_batch_starts() {
        let mut r = registry();
        r.load_config(&five());
        let t0 = Instant::now();
        r.due_starts(t0);
        assert_eq!(
            r.get(&VmRef::Name("v1".into())).unwrap().state(),
            VmState::Running
        );
        assert_eq!(
            r.get(&VmRef::Name("v3".into())).unwrap().state(),
            VmState::Waiting
        );
    }

    #[test]
    fn disabled_vms_are_not_queued() {
        let mut off = vm("off");
        off.enabled = false;
        let mut r = registry();
        r.load_config(&config(vec![off]));
        assert_eq!(r.next_start_due(Instant::now()), None);
        assert!(r.due_starts(Instant::now()).is_empty());
        assert_eq!(
            r.get(&VmRef::Name("off".into())).unwrap().state(),
            VmState::Stopped
        );
    }

    #[test]
    fn a_user_start_takes_a_vm_out_of_the_queue() {
        let mut r = registry();
        r.load_config(&five());
        let t0 = Instant::now();
        let req = StartRequest {
            vm: Some(VmRef::Name("v2".into())),
            ..StartRequest::default()
        };
        r.start_request(&req, &Caller::root(), t0).unwrap();
        assert_eq!(names(&r.due_starts(t0)), ["v1", "v3"]);
    }

    #[test]
    fn staggered_starts_run_as_the_configured_owner() {
        let mut v = vm("v");
        v.owner = Some(vmconf::Owner {
            uid: 1000,
            gid: None,
        });
        let mut r = registry();
        r.load_config(&config(vec![v]));
        let plan = r.due_starts(Instant::now()).remove(0).unwrap();
        assert_eq!(plan.started_by, 1000);
    }
}
