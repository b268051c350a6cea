//! The parent process (root): owns the configuration and the VM registry, opens every
//! resource a VM needs (after the registry's access checks) and hands it down, and routes
//! requests and events between the control and vmm processes (spec §1, §4).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc::proto::{Request, Response, VmRef};
use ipc::Channel;

use super::internal::{
    ClientId, ControlToParent, DiskImage, Launch, ParentToControl, ParentToPriv, ParentToVmm,
    PrivToParent, RestoreLaunch, SwitchSetup, TapReady, VmEnd, VmmToParent,
};
use super::nics;
use super::pty::{self, Console};
use super::spawn::{self, Inherit};
use super::{log, privdrop, signals};
use crate::registry::{
    self, AfterExit, Caller, Exit, Failure, Registry, StartPlan, SystemFiles, SystemNames,
};
use crate::transfer::{self, Definition, Timed, STALL_TIMEOUT};
use crate::{log_debug, log_info, log_warn};

/// Debian's SeaBIOS, used when vmd's default BIOS path does not exist (DESIGN.md §1).
pub const SEABIOS: &str = "/usr/share/seabios/bios.bin";
/// How long daemon shutdown waits for VMs to end before leaving them to the vmm.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Longest idle wait of the event loop (staggered starts are checked at least this often).
const TICK: Duration = Duration::from_secs(1);

/// What the daemon was started with.
pub struct Options {
    /// `-f` (None: /etc/vm.conf, missing is fine).
    pub config: Option<PathBuf>,
    /// `-D` macros.
    pub macros: Vec<(String, String)>,
    /// `-s`.
    pub socket: PathBuf,
    /// `-d` and `-v`.
    pub inherit: Inherit,
}

enum Event {
    Control(Box<ControlToParent>, Vec<OwnedFd>),
    Vmm(VmmToParent),
    Priv(PrivToParent, Vec<OwnedFd>),
    ChildGone(&'static str),
    Signal(i32),
    /// The head of a `vmctl receive` stream was read (or refused) on a thread of its own.
    Received(Box<Received>),
}

/// The head of a received stream: the snapshot header and the VM definition, and the stream
/// positioned after them.
struct Received {
    client: ClientId,
    name: String,
    head: Result<(Vec<u8>, Definition), Failure>,
    stream: File,
}

/// A stream to restore a VM from, carried from `receive` to the launch.
struct RestoreStream {
    /// The snapshot header, already read from `stream`.
    header: Vec<u8>,
    stream: File,
}

/// A VM the parent has handed to vmm: its console and the files to start it again with.
struct Live {
    generation: u64,
    console: Console,
    boot: File,
    initrd: Option<File>,
    /// Every disk image, in launch order, then the CD-ROM image; dropped once the VM
    /// process has its copies.
    disk_files: Vec<File>,
    /// The client waiting for `start`'s answer.
    starter: Option<ClientId>,
    /// A `receive` whose VM process is still reading the stream.
    receiving: bool,
    /// Clients waiting for a pause/unpause answer.
    pausers: Vec<(ClientId, bool)>,
    /// What this run is, for a `send` to put in the stream.
    definition: Definition,
    /// The client of a `send` in progress.
    sender: Option<ClientId>,
    /// The send's stream is complete: answer the sender when the VM has ended.
    sent: bool,
}

struct Parent {
    opts: Options,
    registry: Registry,
    control: Arc<Channel>,
    vmm: Arc<Channel>,
    privsep: Arc<Channel>,
    /// Bridges this daemon created for switches: removed again on reset and at exit.
    created_bridges: Vec<String>,
    live: HashMap<u32, Live>,
    waiters: HashMap<u32, Vec<ClientId>>,
    /// Starts waiting for priv to create their taps.
    pending_taps: HashMap<u32, PendingStart>,
    /// The IPv6 prefix of bare `local inet6`, drawn once.
    ula: std::net::Ipv6Addr,
    shutting_down: bool,
    /// For threads that report back to the event loop (stream readers).
    events: mpsc::Sender<Event>,
}

/// A start whose taps priv is creating.
struct PendingStart {
    plan: StartPlan,
    client: Option<ClientId>,
    fds: Vec<OwnedFd>,
    restore: Option<RestoreStream>,
}

/// Run the daemon's parent process.
pub fn run(opts: Options) -> ExitCode {
    log::init("vmd", opts.inherit.foreground, opts.inherit.verbosity);
    let parsed = match load_config(opts.config.as_deref(), &opts.macros) {
        Ok(p) => p,
        Err(()) => return ExitCode::FAILURE,
    };
    if let Err(e) = privdrop::lookup_user(privdrop::VMD_USER) {
        log_warn!("{e}");
        return ExitCode::FAILURE;
    }
    if !opts.inherit.foreground {
        // SAFETY: no threads exist yet; daemon(3) forks and detaches from the terminal.
        if unsafe { libc::daemon(0, 0) } != 0 {
            log_warn!("daemon: {}", std::io::Error::last_os_error());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = signals::block() {
        log_warn!("signals: {e}");
        return ExitCode::FAILURE;
    }
    let owner = parsed.global.socket_owner;
    let control = match start_child(
        "control",
        &opts.inherit,
        &[
            "--socket".into(),
            opts.socket.display().to_string(),
            "--owner".into(),
            format!("{}:{}", owner.uid, owner.gid),
        ],
    ) {
        Ok(c) => c,
        Err(e) => {
            log_warn!("starting control: {e}");
            return ExitCode::FAILURE;
        }
    };
    let vmm = match start_child("vmm", &opts.inherit, &[]) {
        Ok(c) => c,
        Err(e) => {
            log_warn!("starting vmm: {e}");
            return ExitCode::FAILURE;
        }
    };
    let privsep = match start_child("priv", &opts.inherit, &[]) {
        Ok(c) => c,
        Err(e) => {
            log_warn!("starting priv: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut registry = Registry::new(parsed.global.clone(), cpus, Box::new(registry::OsRandom));
    for p in registry.load_config(&parsed) {
        log_warn!("{p}");
    }
    let (tx, rx) = mpsc::channel();
    forward::<ControlToParent>(&control, tx.clone(), "control", |m, fds| {
        Event::Control(Box::new(m), fds)
    });
    forward::<VmmToParent>(&vmm, tx.clone(), "vmm", |m, _| Event::Vmm(m));
    forward::<PrivToParent>(&privsep, tx.clone(), "priv", Event::Priv);
    let signal_tx = tx.clone();
    signals::forward(move |s| {
        let _ = signal_tx.send(Event::Signal(s));
    });
    log_info!("started");
    let mut parent = Parent {
        opts,
        registry,
        control,
        vmm,
        privsep,
        created_bridges: Vec::new(),
        live: HashMap::new(),
        waiters: HashMap::new(),
        pending_taps: HashMap::new(),
        ula: nics::random_ula(),
        shutting_down: false,
        events: tx,
    };
    parent.setup_switches();
    let code = parent.event_loop(&rx);
    parent.remove_bridges();
    code
}

fn load_config(path: Option<&Path>, macros: &[(String, String)]) -> Result<vmconf::Config, ()> {
    let vopts = vmconf::Options {
        macros: macros.to_vec(),
        ..Default::default()
    };
    match vmconf::load(path, &vopts) {
        Ok(p) => {
            for w in p.warnings {
                log_warn!("{w}");
            }
            Ok(p.config)
        }
        Err(errors) => {
            for e in errors {
                log_warn!("{e}");
            }
            Err(())
        }
    }
}

fn start_child(role: &str, inherit: &Inherit, extra: &[String]) -> std::io::Result<Arc<Channel>> {
    let (ours, theirs) = Channel::pair()?;
    spawn::spawn(role, theirs, inherit, extra)?;
    Ok(Arc::new(ours))
}

/// Read messages from a child on a thread of their own and feed them to the event loop.
fn forward<T: serde::de::DeserializeOwned + Send + 'static>(
    chan: &Arc<Channel>,
    tx: mpsc::Sender<Event>,
    name: &'static str,
    wrap: fn(T, Vec<OwnedFd>) -> Event,
) {
    let chan = chan.clone();
    std::thread::spawn(move || loop {
        match chan.recv::<T>() {
            Ok((m, fds)) => {
                if tx.send(wrap(m, fds)).is_err() {
                    return;
                }
            }
            Err(e) => {
                log_debug!("{name} channel: {e}");
                let _ = tx.send(Event::ChildGone(name));
                return;
            }
        }
    });
}

impl Parent {
    fn event_loop(&mut self, rx: &mpsc::Receiver<Event>) -> ExitCode {
        let mut shutdown_deadline = None;
        loop {
            let now = Instant::now();
            for started in self.registry.due_starts(now) {
                match started {
                    Ok(plan) => self.launch(plan, None, Vec::new(), None),
                    Err(f) => log_warn!("{}", f.message),
                }
            }
            if self.shutting_down
                && (self.live.is_empty() || shutdown_deadline.is_some_and(|d| now >= d))
            {
                log_info!("exiting");
                return ExitCode::SUCCESS;
            }
            let wait = self
                .registry
                .next_start_due(now)
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(TICK)
                .min(TICK);
            match rx.recv_timeout(wait) {
                Ok(Event::Control(msg, fds)) => self.control_message(*msg, fds),
                Ok(Event::Vmm(msg)) => self.vmm_message(msg),
                Ok(Event::Priv(PrivToParent::SwitchReady { bridge, created }, _)) => {
                    if created && !self.created_bridges.contains(&bridge) {
                        self.created_bridges.push(bridge);
                    }
                }
                Ok(Event::Priv(PrivToParent::Failed { message }, _)) => log_warn!("{message}"),
                Ok(Event::Priv(
                    PrivToParent::TapsReady {
                        vm,
                        generation,
                        taps,
                    },
                    fds,
                )) => self.taps_ready(vm, generation, taps, fds),
                Ok(Event::Priv(
                    PrivToParent::TapsFailed {
                        vm,
                        generation,
                        message,
                    },
                    _,
                )) => self.taps_failed(vm, generation, message),
                Ok(Event::ChildGone(name)) => {
                    log_warn!("{name} process went away: exiting");
                    return ExitCode::FAILURE;
                }
                Ok(Event::Signal(s)) if s == libc::SIGHUP => self.reload(None),
                Ok(Event::Received(r)) => self.received(*r),
                Ok(Event::Signal(_)) => {
                    if !self.shutting_down {
                        log_info!("shutting down: stopping every VM");
                        self.shutting_down = true;
                        shutdown_deadline = Some(Instant::now() + SHUTDOWN_WAIT);
                        self.terminate_all();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return ExitCode::FAILURE,
            }
        }
    }

    /// Have priv set up every known switch's bridge (idempotent: run again after reloads).
    fn setup_switches(&self) {
        for sw in self.registry.switches() {
            let setup = SwitchSetup {
                id: sw.id,
                name: sw.name.clone(),
                bridge: sw.interface.clone(),
                group: sw.group.clone(),
                rdomain: sw.rdomain,
                up: sw.up,
            };
            if let Err(e) = self.privsep.send(&ParentToPriv::SetupSwitch(setup), &[]) {
                log_warn!("priv: {e}");
            }
        }
    }

    /// Force-stop every running VM (daemon shutdown, `reset vms`).
    fn terminate_all(&mut self) {
        for id in self.registry.running_ids() {
            if let Ok(a) = self
                .registry
                .stop_request(&VmRef::Id(id), &Caller::root(), true)
            {
                self.to_vmm(&ParentToVmm::Terminate { id: a.id });
            }
        }
    }

    /// Delete the bridges this daemon created (`reset switches`, daemon exit).
    fn remove_bridges(&mut self) {
        for bridge in self.created_bridges.drain(..) {
            let _ = self
                .privsep
                .send(&ParentToPriv::RemoveBridge { bridge }, &[]);
        }
    }

    fn reply(&self, client: ClientId, response: Response) {
        let _ = self
            .control
            .send(&ParentToControl::Reply { client, response }, &[]);
    }

    fn fail(&self, client: ClientId, f: &Failure) {
        log_info!("{}", f.message);
        self.reply(client, f.to_response());
    }

    fn to_vmm(&self, msg: &ParentToVmm) {
        if let Err(e) = self.vmm.send(msg, &[]) {
            log_warn!("vmm: {e}");
        }
    }

    fn control_message(&mut self, msg: ControlToParent, fds: Vec<OwnedFd>) {
        let (client, caller, request) = match msg {
            ControlToParent::Gone { client } => {
                for w in self.waiters.values_mut() {
                    w.retain(|c| *c != client);
                }
                self.cancel_receives(client);
                return;
            }
            ControlToParent::Request {
                client,
                caller,
                request,
            } => (client, caller, request),
        };
        let caller = Caller {
            uid: caller.uid,
            gids: caller.gids,
        };
        if let Err(f) = registry::authorize(&request, &caller) {
            return self.fail(client, &f);
        }
        log_debug!("uid {} request {request:?}", caller.uid);
        match *request {
            Request::Start(req) => match self.registry.start_request(&req, &caller, Instant::now())
            {
                Ok(plan) => self.launch(plan, Some(client), fds, None),
                Err(f) => self.fail(client, &f),
            },
            Request::Stop { vm, force, wait } => {
                match self.registry.stop_request(&vm, &caller, force) {
                    Ok(action) => {
                        let msg = if action.force {
                            ParentToVmm::Terminate { id: action.id }
                        } else {
                            ParentToVmm::Shutdown { id: action.id }
                        };
                        self.to_vmm(&msg);
                        self.reply(client, Response::StopAccepted { id: action.id });
                        if wait {
                            self.waiters.entry(action.id).or_default().push(client);
                        }
                    }
                    Err(f) => self.fail(client, &f),
                }
            }
            Request::Wait(vm) => match self.registry.wait_request(&vm, &caller) {
                Ok(id) => self.waiters.entry(id).or_default().push(client),
                Err(f) => self.fail(client, &f),
            },
            Request::Pause(vm) => self.pause(client, &vm, &caller, true),
            Request::Unpause(vm) => self.pause(client, &vm, &caller, false),
            Request::Status { vm, running_only } => {
                let rows =
                    self.registry
                        .status(vm.as_ref(), running_only, &SystemNames, &resident_bytes);
                self.reply(client, Response::Status(rows));
            }
            Request::Console(vm) => match self.registry.console_request(&vm, &caller) {
                Ok((id, tty)) => self.reply(client, Response::Console { id, tty }),
                Err(f) => self.fail(client, &f),
            },
            Request::Break(vm) => match self.registry.break_request(&vm, &caller) {
                Ok(id) => {
                    self.to_vmm(&ParentToVmm::Break { id });
                    self.reply(client, Response::Ok);
                }
                Err(f) => self.fail(client, &f),
            },
            Request::Load(path) => {
                self.reload(Some((client, path)));
            }
            Request::Reload => {
                self.reload(None);
                self.reply(client, Response::Ok);
            }
            Request::Reset(kind) => {
                if matches!(
                    kind,
                    ipc::proto::ResetKind::All | ipc::proto::ResetKind::Vms
                ) {
                    self.terminate_all();
                }
                if matches!(
                    kind,
                    ipc::proto::ResetKind::All | ipc::proto::ResetKind::Switches
                ) {
                    self.remove_bridges();
                }
                self.registry.reset(kind);
                self.reply(client, Response::Ok);
            }
            Request::Log { verbose } => {
                let level = if verbose { 2 } else { 0 };
                log::set_verbosity(level);
                self.to_vmm(&ParentToVmm::Verbose { level });
                let _ = self.control.send(&ParentToControl::Verbose { level }, &[]);
                self.reply(client, Response::Ok);
            }
            Request::Send { vm, live } => {
                if let Err(f) = self.send(client, &vm, live, &caller, fds) {
                    self.fail(client, &f);
                }
            }
            Request::Receive(name) => {
                if let Err(f) = self.receive(client, name, fds) {
                    self.fail(client, &f);
                }
            }
        }
    }

    /// `vmctl send [-l]`: the VM process writes the stream to the fd vmctl sent (its stdout),
    /// while the guest runs if `live`, and stops the VM; the client is answered when the VM
    /// has ended ([`Parent::vm_exited`]).
    fn send(
        &mut self,
        client: ClientId,
        vm: &VmRef,
        live: bool,
        caller: &Caller,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Failure> {
        let live_send = live;
        let id = self.registry.send_request(vm, caller)?;
        let Some(live) = self.live.get_mut(&id) else {
            return Err(Failure::errno(
                libc::EINVAL,
                format!("vm {id} is not running"),
            ));
        };
        if live.sender.is_some() {
            return Err(Failure::errno(
                libc::EBUSY,
                format!("vm {id}: a send is already in progress"),
            ));
        }
        let [stream] = <[OwnedFd; 1]>::try_from(fds).map_err(|fds| {
            Failure::errno(
                libc::EINVAL,
                format!("vm {id}: send came with {} descriptors, not 1", fds.len()),
            )
        })?;
        let definition = live.definition.encode()?;
        self.vmm
            .send(
                &ParentToVmm::Send {
                    id,
                    definition,
                    live: live_send,
                },
                &[stream.as_fd()],
            )
            .map_err(|e| Failure::errno(libc::EIO, format!("vm {id}: vmm: {e}")))?;
        live.sender = Some(client);
        log_info!("vm {id}: sending{}", if live_send { " live" } else { "" });
        Ok(())
    }

    /// A client went away: a VM it is receiving that still reads its stream gives up (vmctl
    /// receive killed: the sender sees its stream break and runs on).
    fn cancel_receives(&mut self, client: ClientId) {
        let ids: Vec<u32> = self
            .live
            .iter()
            .filter(|(_, l)| l.receiving && l.starter == Some(client))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.to_vmm(&ParentToVmm::CancelReceive { id });
        }
    }

    /// `vmctl receive name`: read the stream's header and VM definition on a thread (a pipe
    /// may be slow, the event loop must not wait), then [`Parent::received`] registers and
    /// launches the VM.
    fn receive(
        &mut self,
        client: ClientId,
        name: String,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Failure> {
        if self.registry.get(&VmRef::Name(name.clone())).is_some() {
            return Err(Failure::errno(
                libc::EALREADY,
                format!("vm \"{name}\" already exists"),
            ));
        }
        let [stream] = <[OwnedFd; 1]>::try_from(fds).map_err(|fds| {
            Failure::errno(
                libc::EINVAL,
                format!("receive came with {} descriptors, not 1", fds.len()),
            )
        })?;
        let stream = File::from(stream);
        let events = self.events.clone();
        std::thread::spawn(move || {
            let head = read_head(&stream);
            let r = Received {
                client,
                name,
                head,
                stream,
            };
            let _ = events.send(Event::Received(Box::new(r)));
        });
        Ok(())
    }

    /// The head of a received stream is in: register the VM under its new name and launch it
    /// with the stream to restore. A refused stream registers nothing.
    fn received(&mut self, r: Received) {
        let (header, def) = match r.head {
            Ok(h) => h,
            Err(f) => {
                let f = Failure {
                    message: format!("receive of vm \"{}\": {}", r.name, f.message),
                    ..f
                };
                return self.fail(r.client, &f);
            }
        };
        match self.registry.receive_request(&r.name, &def, Instant::now()) {
            Ok(plan) => {
                log_info!(
                    "receiving vm {:?} as \"{}\" (vm {})",
                    def.name,
                    plan.name,
                    plan.id
                );
                let restore = RestoreStream {
                    header,
                    stream: r.stream,
                };
                self.launch(plan, Some(r.client), Vec::new(), Some(restore));
            }
            Err(f) => self.fail(r.client, &f),
        }
    }

    fn pause(&mut self, client: ClientId, vm: &VmRef, caller: &Caller, pause: bool) {
        let checked = if pause {
            self.registry.pause_request(vm, caller)
        } else {
            self.registry.unpause_request(vm, caller)
        };
        match checked {
            Ok(id) => {
                if let Some(l) = self.live.get_mut(&id) {
                    l.pausers.push((client, pause));
                }
                self.to_vmm(&if pause {
                    ParentToVmm::Pause { id }
                } else {
                    ParentToVmm::Unpause { id }
                });
            }
            Err(f) => self.fail(client, &f),
        }
    }

    /// `reload` (SIGHUP, vmctl reload) or `load FILE` (with the client to answer).
    fn reload(&mut self, load: Option<(ClientId, PathBuf)>) {
        let (client, path) = match load {
            Some((c, p)) => (Some(c), Some(p)),
            None => (None, self.opts.config.clone()),
        };
        match load_config(path.as_deref(), &self.opts.macros) {
            Ok(cfg) => {
                let problems = if client.is_some() {
                    self.registry.load_config(&cfg)
                } else {
                    self.registry.reload(&cfg)
                };
                for p in problems {
                    log_warn!("{p}");
                }
                self.setup_switches();
                if let Some(c) = client {
                    self.reply(c, Response::Ok);
                }
            }
            Err(()) => {
                if let Some(c) = client {
                    self.reply(
                        c,
                        Response::Failed {
                            errno: 0,
                            code: None,
                            message: "configuration has errors".into(),
                        },
                    );
                }
            }
        }
    }

    /// Start `plan`: first its taps (priv answers later, see [`Parent::taps_ready`]), then
    /// the rest. `fds` are the boot image and initrd vmctl opened with the user's own
    /// permissions, if it sent any; `restore` the stream of a `receive`.
    fn launch(
        &mut self,
        plan: StartPlan,
        client: Option<ClientId>,
        fds: Vec<OwnedFd>,
        restore: Option<RestoreStream>,
    ) {
        if plan.nics.is_empty() {
            self.launch_with_taps(plan, client, fds, restore, Vec::new(), Vec::new());
            return;
        }
        let sent = nics::tap_setups(&plan, self.registry.global(), self.ula).and_then(|taps| {
            let msg = ParentToPriv::CreateTaps {
                vm: plan.id,
                generation: plan.generation,
                taps,
            };
            self.privsep
                .send(&msg, &[])
                .map_err(|e| Failure::errno(libc::EIO, format!("priv: {e}")))
        });
        match sent {
            Ok(()) => {
                let pending = PendingStart {
                    plan,
                    client,
                    fds,
                    restore,
                };
                self.pending_taps.insert(pending.plan.id, pending);
            }
            Err(f) => self.start_failed(&plan, client, &f),
        }
    }

    fn start_failed(&mut self, plan: &StartPlan, client: Option<ClientId>, f: &Failure) {
        let _ = self.registry.start_failed(plan.id, plan.generation);
        match client {
            Some(c) => self.fail(c, f),
            None => log_warn!("{}", f.message),
        }
    }

    /// priv made the taps of a pending start: go on with it.
    fn taps_ready(&mut self, vm: u32, generation: u64, taps: Vec<TapReady>, fds: Vec<OwnedFd>) {
        let Some(p) = self.pending_taps.remove(&vm) else {
            return;
        };
        if p.plan.generation != generation
            || taps.len() != fds.len()
            || taps.len() != p.plan.nics.len()
        {
            let f = Failure::errno(libc::EIO, format!("vm {vm}: priv sent the wrong taps"));
            self.start_failed(&p.plan, p.client, &f);
            return;
        }
        self.launch_with_taps(p.plan, p.client, p.fds, p.restore, taps, fds);
    }

    fn taps_failed(&mut self, vm: u32, generation: u64, message: String) {
        let Some(p) = self.pending_taps.remove(&vm) else {
            return;
        };
        if p.plan.generation == generation {
            let f = Failure::errno(libc::ENXIO, format!("vm \"{}\": {message}", p.plan.name));
            self.start_failed(&p.plan, p.client, &f);
        }
    }

    /// Open what `plan` needs and hand it to vmm with its taps.
    fn launch_with_taps(
        &mut self,
        plan: StartPlan,
        client: Option<ClientId>,
        fds: Vec<OwnedFd>,
        restore: Option<RestoreStream>,
        taps: Vec<TapReady>,
        tap_fds: Vec<OwnedFd>,
    ) {
        let id = plan.id;
        let restart_console = self.live.remove(&id);
        match self.prepare(&plan, fds, restart_console, &taps) {
            Ok((mut launch, mut live, kvm)) => {
                live.starter = client;
                let mut list: Vec<BorrowedFd<'_>> = vec![kvm.as_fd(), live.boot.as_fd()];
                if let Some(i) = &live.initrd {
                    list.push(i.as_fd());
                }
                list.push(live.console.master.as_fd());
                list.extend(live.disk_files.iter().map(|f| f.as_fd()));
                list.extend(tap_fds.iter().map(|f| f.as_fd()));
                if let Some(r) = &restore {
                    launch.restore = Some(RestoreLaunch {
                        header: r.header.clone(),
                    });
                    list.push(r.stream.as_fd());
                    live.receiving = true;
                }
                if list.len() > ipc::MAX_FDS {
                    let f = Failure::code(
                        ipc::proto::VmdError::DiskMissing,
                        format!("vm {id}: {} descriptors (disk chains too long)", list.len()),
                    );
                    let _ = self.registry.start_failed(id, plan.generation);
                    if let Some(c) = client {
                        self.fail(c, &f);
                    }
                    return;
                }
                if let Err(e) = self.vmm.send(&ParentToVmm::Start(launch), &list) {
                    let f = Failure::errno(libc::EIO, format!("vm {id}: vmm: {e}"));
                    let _ = self.registry.start_failed(id, plan.generation);
                    if let Some(c) = client {
                        self.fail(c, &f);
                    }
                    return;
                }
                live.disk_files.clear();
                self.live.insert(id, live);
            }
            Err(f) => {
                let _ = self.registry.start_failed(id, plan.generation);
                match client {
                    Some(c) => self.fail(c, &f),
                    None => log_warn!("{}", f.message),
                }
            }
        }
    }

    fn prepare(
        &self,
        plan: &StartPlan,
        fds: Vec<OwnedFd>,
        previous: Option<Live>,
        taps: &[TapReady],
    ) -> Result<(Launch, Live, File), Failure> {
        let name = &plan.name;
        let nics = nics::nic_launches(plan, self.registry.global(), taps)?;
        for f in &plan.files {
            if f.kind == registry::FileKind::DefaultBios
                && !f.path.exists()
                && Path::new(SEABIOS).exists()
            {
                continue;
            }
            registry::check_file_access(&SystemFiles, f)?;
        }
        let kvm = File::options()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(|e| {
                Failure::errno(
                    e.raw_os_error().unwrap_or(libc::EIO),
                    format!("/dev/kvm: {e}"),
                )
            })?;
        let (boot, initrd, console) = match previous {
            // A guest reboot: same files (rewound) and the same console.
            Some(prev) => (
                rewind(prev.boot)?,
                prev.initrd.map(rewind).transpose()?,
                prev.console,
            ),
            None => {
                let mut fds = fds.into_iter();
                let boot_path = boot_path(plan);
                let boot = match (plan.boot.is_some(), fds.next()) {
                    (true, Some(fd)) => File::from(fd),
                    _ => open_file(&boot_path)?,
                };
                let initrd = match (&plan.initrd, fds.next()) {
                    (Some(_), Some(fd)) => Some(File::from(fd)),
                    (Some(p), None) => Some(open_file(p)?),
                    (None, _) => None,
                };
                let console = pty::open()
                    .map_err(|e| Failure::errno(libc::EIO, format!("console pty: {e}")))?;
                console
                    .give_to(plan.started_by, plan.owner.gid)
                    .map_err(|e| Failure::errno(libc::EIO, format!("console pty: {e}")))?;
                (boot, initrd, console)
            }
        };
        let (disks, mut disk_files) = open_disks(plan)?;
        if let Some(iso) = &plan.cdrom {
            disk_files.push(open_file(iso)?);
        }
        let launch = Launch {
            id: plan.id,
            name: name.clone(),
            memory: plan.memory,
            cpus: plan.cpus,
            boot_name: boot_path(plan).display().to_string(),
            has_initrd: initrd.is_some(),
            cmdline: plan.cmdline.clone().unwrap_or_default(),
            disks,
            cdrom: plan.cdrom.as_ref().map(|p| p.display().to_string()),
            nics,
            boot_device: plan.boot_device.map(|d| {
                match d {
                    vmconf::BootDevice::Disk => "disk",
                    vmconf::BootDevice::Cdrom => "cdrom",
                    vmconf::BootDevice::Net => "net",
                }
                .to_string()
            }),
            restore: None,
        };
        let live = Live {
            generation: plan.generation,
            console,
            boot,
            initrd,
            disk_files,
            starter: None,
            receiving: false,
            pausers: Vec::new(),
            definition: Definition::of_plan(plan),
            sender: None,
            sent: false,
        };
        Ok((launch, live, kvm))
    }

    fn vmm_message(&mut self, msg: VmmToParent) {
        match msg {
            VmmToParent::Started { id, pid } => {
                let Some(live) = self.live.get_mut(&id) else {
                    return;
                };
                let tty = live.console.path.clone();
                live.receiving = false;
                if let Err(f) = self
                    .registry
                    .mark_running(id, live.generation, pid, tty.clone())
                {
                    log_debug!("{}", f.message);
                }
                log_info!("vm {id} running as pid {pid}, console {tty}");
                if let Some(c) = live.starter.take() {
                    self.reply(c, Response::Started { id, tty });
                }
            }
            VmmToParent::StartFailed { id, errno, message } => {
                let Some(live) = self.live.remove(&id) else {
                    return;
                };
                let _ = live.console.release();
                let _ = self.registry.start_failed(id, live.generation);
                let f = Failure::errno(errno, format!("vm {id}: {message}"));
                match live.starter {
                    Some(c) => self.fail(c, &f),
                    None => log_warn!("{}", f.message),
                }
            }
            VmmToParent::Paused { id, paused } => {
                let result = if paused {
                    self.registry.mark_paused(id)
                } else {
                    self.registry.mark_unpaused(id)
                };
                if let Err(f) = result {
                    log_debug!("{}", f.message);
                }
                let Some(live) = self.live.get_mut(&id) else {
                    return;
                };
                let (done, rest): (Vec<_>, Vec<_>) =
                    live.pausers.drain(..).partition(|(_, p)| *p == paused);
                live.pausers = rest;
                for (c, _) in done {
                    self.reply(
                        c,
                        if paused {
                            Response::Paused { id }
                        } else {
                            Response::Unpaused { id }
                        },
                    );
                }
            }
            VmmToParent::Sent { id } => {
                if let Err(f) = self.registry.mark_sent(id) {
                    log_debug!("{}", f.message);
                }
                if let Some(live) = self.live.get_mut(&id) {
                    live.sent = true;
                }
                log_info!("vm {id}: sent");
            }
            VmmToParent::SendFailed { id, errno, message } => {
                let f = Failure::errno(errno, format!("vm {id}: send failed: {message}"));
                match self.live.get_mut(&id).and_then(|l| l.sender.take()) {
                    Some(c) => self.fail(c, &f),
                    None => log_warn!("{}", f.message),
                }
            }
            VmmToParent::Exited { id, end } => self.vm_exited(id, end),
        }
    }

    fn vm_exited(&mut self, id: u32, end: VmEnd) {
        let Some(live) = self.live.remove(&id) else {
            return;
        };
        let exit = match end {
            VmEnd::Poweroff => Exit::Poweroff,
            VmEnd::Reboot => Exit::Reboot,
            VmEnd::Crash => Exit::Crash,
            // A stop the parent asked for; the registry knows whether it was forced.
            VmEnd::Stopped => Exit::Poweroff,
        };
        let ended = match self
            .registry
            .vm_exited(id, live.generation, exit, Instant::now())
        {
            Ok(e) => e,
            Err(f) => {
                log_debug!("{}", f.message);
                return;
            }
        };
        if let Some(note) = &ended.note {
            log_info!("{note}");
        }
        log_info!("vm {id} ended: {end:?}");
        if let Some(c) = live.sender {
            if live.sent {
                self.reply(c, Response::Sent { id });
            } else {
                let f = Failure::errno(libc::EIO, format!("vm {id} ended during its send"));
                self.fail(c, &f);
            }
        }
        match ended.after {
            AfterExit::Restart(plan) if !self.shutting_down => {
                // launch() takes the console and files back out of `live`.
                self.live.insert(id, live);
                self.launch(*plan, None, Vec::new(), None);
                return;
            }
            _ => {
                if let Err(e) = live.console.release() {
                    log_debug!("releasing {}: {e}", live.console.path);
                }
            }
        }
        for c in self.waiters.remove(&id).unwrap_or_default() {
            self.reply(
                c,
                Response::Terminated {
                    id,
                    forced: ended.forced,
                },
            );
        }
    }
}

/// Open every disk of `plan`: the top image read-write, then each base image its header
/// names, read-only, after checking the requesting user may read it (spec §4.5, §7).
fn open_disks(plan: &StartPlan) -> Result<(Vec<Vec<DiskImage>>, Vec<File>), Failure> {
    let missing = |path: &Path, why: String| {
        Failure::code(
            ipc::proto::VmdError::DiskMissing,
            format!("{}: {why}", path.display()),
        )
    };
    let mut chains = Vec::with_capacity(plan.disks.len());
    let mut files = Vec::new();
    for d in &plan.disks {
        let requester = plan
            .files
            .iter()
            .find(|f| f.path == d.path)
            .and_then(|f| f.check_as.clone());
        let mut format = d.format.map(|f| match f {
            vmconf::DiskFormat::Raw => disk::Format::Raw,
            vmconf::DiskFormat::Qcow2 => disk::Format::Qcow2,
        });
        let mut path = d.path.clone();
        let mut chain = Vec::new();
        let mut writable = true;
        loop {
            if chain.len() >= disk::MAX_CHAIN_IMAGES {
                return Err(missing(&d.path, "backing chain too long".into()));
            }
            let file = File::options()
                .read(true)
                .write(writable)
                .open(&path)
                .map_err(|e| missing(&path, e.to_string()))?;
            let info =
                disk::inspect(&file, &path, format).map_err(|e| missing(&path, e.to_string()))?;
            chain.push(DiskImage {
                path: path.display().to_string(),
                format: Some(info.format.name().to_string()),
            });
            files.push(file);
            let Some(base) = info.backing_path else { break };
            registry::check_file_access(
                &SystemFiles,
                &registry::FileUse {
                    kind: registry::FileKind::DiskBase,
                    path: base.clone(),
                    need: registry::Need::Read,
                    check_as: requester.clone(),
                },
            )?;
            format = info.backing_format;
            path = base;
            writable = false;
        }
        chains.push(chain);
    }
    Ok((chains, files))
}

fn boot_path(plan: &StartPlan) -> PathBuf {
    match &plan.boot {
        Some(p) => p.clone(),
        None if Path::new(vmconf::DEFAULT_BIOS).exists() => PathBuf::from(vmconf::DEFAULT_BIOS),
        None => PathBuf::from(SEABIOS),
    }
}

fn open_file(path: &Path) -> Result<File, Failure> {
    File::open(path).map_err(|e| {
        Failure::errno(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("{}: {e}", path.display()),
        )
    })
}

fn rewind(f: File) -> Result<File, Failure> {
    use std::io::Seek;
    let mut f = f;
    f.rewind()
        .map_err(|e| Failure::errno(libc::EIO, format!("rewinding a boot image: {e}")))?;
    Ok(f)
}

/// Read the head of a received stream: the snapshot header, checked (signature, version,
/// layout; the CPU is checked by the VM process against the vCPUs it creates), then the VM
/// definition block, checked against its limits. Every read gives up after
/// [`STALL_TIMEOUT`] without data; nothing past the definition is read.
fn read_head(stream: &File) -> Result<(Vec<u8>, Definition), Failure> {
    let mut input = Timed::new(stream, STALL_TIMEOUT);
    let header = transfer::read_header(&mut input)?;
    let def = transfer::read_definition(&mut input)?;
    Ok((header.to_vec(), def))
}

/// Resident memory of a VM process (VmRSS), for `status`'s CURMEM.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
