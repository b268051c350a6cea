//! The control process: owns the control socket, greets vmctl clients, stamps each request
//! with the caller's credentials (SO_PEERCRED, never what the client claims), refuses
//! root-only requests from other users, and relays between clients and the parent.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ipc::proto::{Request, Response};
use ipc::{Channel, Listener};

use super::internal::{Caller, ClientId, ControlToParent, ParentToControl};
use super::spawn::Inherit;
use super::{log, privdrop};
use crate::{log_debug, log_warn};

/// Mode of the control socket before its owner is applied (spec §3.7).
pub const SOCKET_MODE: u32 = 0o660;

type Clients = Arc<Mutex<HashMap<ClientId, Arc<Channel>>>>;

fn lock(c: &Clients) -> MutexGuard<'_, HashMap<ClientId, Arc<Channel>>> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Arguments of the control role: `--socket PATH --owner UID:GID`.
struct Args {
    socket: String,
    uid: u32,
    gid: u32,
}

fn parse_args(args: &[String]) -> Option<Args> {
    let mut socket = None;
    let mut owner = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket" => socket = it.next().cloned(),
            "--owner" => {
                owner = it
                    .next()
                    .and_then(|o| o.split_once(':'))
                    .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
            }
            _ => {}
        }
    }
    let (uid, gid) = owner?;
    Some(Args {
        socket: socket?,
        uid,
        gid,
    })
}

/// Entry point of the `control` role.
pub fn main(parent: Channel, inherit: &Inherit, args: &[String]) -> ExitCode {
    log::init("control", inherit.foreground, inherit.verbosity);
    let Some(args) = parse_args(args) else {
        log_warn!("control: bad arguments {args:?}");
        return ExitCode::FAILURE;
    };
    let listener = match Listener::bind(&args.socket, SOCKET_MODE) {
        Ok(l) => l,
        Err(e) => {
            log_warn!("control socket {}: {e}", args.socket);
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::os::unix::fs::chown(&args.socket, Some(args.uid), Some(args.gid)) {
        log_warn!("control socket {}: chown: {e}", args.socket);
        return ExitCode::FAILURE;
    }
    if let Err(e) = privdrop::lookup_user(privdrop::VMD_USER).and_then(privdrop::drop_to) {
        log_warn!("cannot drop privileges to {}: {e}", privdrop::VMD_USER);
        return ExitCode::FAILURE;
    }
    let parent = Arc::new(parent);
    let clients: Clients = Arc::default();
    {
        let (parent, clients) = (parent.clone(), clients.clone());
        std::thread::spawn(move || relay_replies(&parent, &clients));
    }
    let next = AtomicU64::new(1);
    loop {
        let chan = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                log_warn!("accept: {e}");
                continue;
            }
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        let (parent, clients) = (parent.clone(), clients.clone());
        std::thread::spawn(move || serve_client(id, chan, &parent, &clients));
    }
}

/// Deliver the parent's replies; when the parent goes away, so does the daemon.
fn relay_replies(parent: &Channel, clients: &Clients) {
    while let Ok((msg, _)) = parent.recv::<ParentToControl>() {
        match msg {
            ParentToControl::Reply { client, response } => {
                let chan = lock(clients).get(&client).cloned();
                if let Some(chan) = chan {
                    if let Err(e) = chan.send(&response, &[]) {
                        log_debug!("client {client}: {e}");
                    }
                }
            }
            ParentToControl::Verbose { level } => log::set_verbosity(level),
        }
    }
    std::process::exit(0);
}

fn serve_client(id: ClientId, chan: Channel, parent: &Channel, clients: &Clients) {
    if let Err(e) = ipc::server_hello(&chan) {
        log_debug!("client {id}: {e}");
        return;
    }
    let creds = match chan.peer_credentials() {
        Ok(c) => c,
        Err(e) => {
            log_warn!("client {id}: {e}");
            return;
        }
    };
    let caller = Caller {
        uid: creds.uid,
        gids: privdrop::groups_of(creds.uid, creds.gid),
    };
    let chan = Arc::new(chan);
    lock(clients).insert(id, chan.clone());
    loop {
        let (request, fds): (Request, Vec<OwnedFd>) = match chan.recv() {
            Ok(m) => m,
            Err(e) => {
                log_debug!("client {id}: {e}");
                break;
            }
        };
        if crate::registry::needs_root(&request) && caller.uid != 0 {
            log_warn!("denied request {request:?} from uid {}", caller.uid);
            let denied = Response::Failed {
                errno: libc::EPERM,
                code: None,
                message: "only root may do this".into(),
            };
            let _ = chan.send(&denied, &[]);
            continue;
        }
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let msg = ControlToParent::Request {
            client: id,
            caller: caller.clone(),
            request: Box::new(request),
        };
        if parent.send(&msg, &borrowed).is_err() {
            break;
        }
    }
    lock(clients).remove(&id);
    let _ = parent.send(&ControlToParent::Gone { client: id }, &[]);
}
