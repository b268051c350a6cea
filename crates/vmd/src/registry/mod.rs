//! The daemon's VM registry (spec §4): which VMs exist, their sticky ids, who may act on
//! them, and what state each is in.
//!
//! Pure bookkeeping: it starts no process, opens no file and touches no device. The
//! parent's event loop asks it what a request means ([`Registry::start_request`] returns a
//! [`StartPlan`] to execute, [`Registry::stop_request`] a [`StopAction`]) and tells it what
//! happened ([`Registry::mark_running`], [`Registry::vm_exited`], ...). Randomness, the
//! CPU count, user names and file metadata are injected so every rule is testable.
//!
//! Events carry the generation of the run they belong to (F-LIFE-23), so an exit reported
//! late for a previous run of a VM cannot stop the current one.

mod config;
mod control;
mod definition;
mod error;
mod files;
mod ids;
mod instance;
mod mac;
mod name;
mod permission;
mod quota;
mod restart;
mod stagger;
mod start;
mod state;
mod status;
#[cfg(test)]
mod testutil;

use ipc::proto::VmRef;
use vmconf::{Global, Switch};

pub use config::LoadProblem;
pub use control::StopAction;
pub use definition::{Disk, Nic, VmDef};
pub use error::Failure;
pub use files::{check_file_access, FileAccess, FileKind, FileMeta, FileUse, Need, SystemFiles};
pub use ids::VmId;
pub use mac::{OsRandom, RandomSource};
pub use permission::{authorize, needs_root, Caller};
pub use quota::UserLimits;
pub use restart::{START_RATE_LIMIT, START_RATE_WINDOW};
pub use stagger::DEFAULT_STAGGER_DELAY;
pub use start::{NicPlan, StartPlan};
pub use state::{AfterExit, Ended, Exit};
pub use status::{NameLookup, SystemNames};

use ids::IdTable;
use restart::RestartLimiter;
use stagger::Stagger;
use state::RunState;

/// Where a VM came from, which decides what happens when it stops (F-LIFE-20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A vm.conf block: kept, stopped, after it ends.
    Config,
    /// Created by `vmctl start`: forgotten when it ends.
    Request,
}

/// One registered VM.
#[derive(Debug, Clone)]
pub struct VmEntry {
    id: VmId,
    def: VmDef,
    origin: Origin,
    run: RunState,
    limiter: RestartLimiter,
}

impl VmEntry {
    pub fn id(&self) -> VmId {
        self.id
    }

    pub fn def(&self) -> &VmDef {
        &self.def
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The state `status` shows.
    pub fn state(&self) -> ipc::proto::VmState {
        self.run.status()
    }

    /// Whether a VM process exists or is being started (paused and stopping count).
    pub fn is_running(&self) -> bool {
        matches!(self.run, RunState::Running(_))
    }

    /// The VM process, once the parent reported it.
    pub fn pid(&self) -> Option<u32> {
        match &self.run {
            RunState::Running(r) => r.pid,
            _ => None,
        }
    }
}

/// Every VM the daemon knows, in registration order, plus the switches and global settings
/// of the loaded configuration.
pub struct Registry {
    global: Global,
    switches: Vec<Switch>,
    vms: Vec<VmEntry>,
    ids: IdTable,
    /// Online host CPUs: the staggered start's default parallelism.
    online_cpus: usize,
    rng: Box<dyn RandomSource>,
    /// Last run generation handed out; global so it never repeats, even across `reset`.
    generation: u64,
    stagger: Stagger,
    /// Per-user limits on running VMs; off unless the daemon sets them.
    user_limits: Option<UserLimits>,
}

impl Registry {
    /// An empty registry. `online_cpus` is the host's CPU count (the default staggered
    /// start parallelism); `rng` generates MAC addresses ([`OsRandom`] in the daemon).
    pub fn new(global: Global, online_cpus: usize, rng: Box<dyn RandomSource>) -> Registry {
        Registry {
            global,
            switches: Vec::new(),
            vms: Vec::new(),
            ids: IdTable::default(),
            online_cpus,
            rng,
            generation: 0,
            stagger: Stagger::default(),
            user_limits: None,
        }
    }

    /// The global settings in force.
    pub fn global(&self) -> &Global {
        &self.global
    }

    /// The known switches, in declaration order.
    pub fn switches(&self) -> &[Switch] {
        &self.switches
    }

    /// A VM by id or name.
    pub fn get(&self, vm: &VmRef) -> Option<&VmEntry> {
        self.find(vm).map(|i| &self.vms[i])
    }

    /// Ids of every VM with a process (for `stop -a` style loops and daemon shutdown).
    pub fn running_ids(&self) -> Vec<VmId> {
        self.vms
            .iter()
            .filter(|e| e.is_running())
            .map(|e| e.id)
            .collect()
    }

    fn find(&self, vm: &VmRef) -> Option<usize> {
        match vm {
            VmRef::Id(id) => self.vms.iter().position(|e| e.id == *id),
            VmRef::Name(name) => self.find_name(name),
        }
    }

    fn find_name(&self, name: &str) -> Option<usize> {
        self.vms.iter().position(|e| e.def.name == name)
    }

    fn find_id(&self, id: VmId) -> Option<usize> {
        self.vms.iter().position(|e| e.id == id)
    }
}
