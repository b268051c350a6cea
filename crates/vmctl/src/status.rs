//! `vmctl status`: the 7.x table, column for column (spec §3.4), and `--json`, its stable
//! machine-readable form (docs/vmctl-json.md).

use std::fmt::Write as _;

use ipc::proto::{VmRef, VmState, VmStatus};
use serde::Serialize;

use crate::size::fmt_scaled;

/// The OWNER column holds at most this many bytes (OpenBSD's 16-byte buffer with its NUL).
pub const OWNER_MAX: usize = 15;

/// Where console ttys live; the TTY column shows the path below it (`pts/3`).
const DEV_PREFIX: &str = "/dev/";

/// Shown for an empty field.
const NONE: &str = "-";

/// Whether vmd reports the VM as running: a process and an id (as OpenBSD decides it).
pub fn is_running(vm: &VmStatus) -> bool {
    vm.pid.is_some() && vm.id != 0
}

/// The rows `status [-r] [id]` prints, in vmd's order.
pub fn select<'a>(
    rows: &'a [VmStatus],
    vm: Option<&VmRef>,
    running_only: bool,
) -> Vec<&'a VmStatus> {
    rows.iter()
        .filter(|row| !running_only || is_running(row))
        .filter(|row| match vm {
            None => true,
            Some(VmRef::Id(id)) => row.id == *id,
            Some(VmRef::Name(name)) => row.name == *name,
        })
        .collect()
}

/// The STATE word.
pub fn state_word(state: VmState) -> &'static str {
    match state {
        VmState::Running => "running",
        VmState::Stopping => "stopping",
        VmState::Paused => "paused",
        VmState::Waiting => "waiting",
        VmState::Stopped => "stopped",
        VmState::Unknown => "unknown",
    }
}

/// OWNER: the user name (or uid), `:group` when a group owns the VM, cut to
/// [`OWNER_MAX`] bytes at a character boundary.
pub fn owner(vm: &VmStatus) -> String {
    let mut owner = vm.user.clone().unwrap_or_else(|| vm.uid.to_string());
    if let Some(group) = &vm.group {
        owner.push(':');
        owner.push_str(group);
    }
    let mut end = owner.len().min(OWNER_MAX);
    while !owner.is_char_boundary(end) {
        end -= 1;
    }
    owner.truncate(end);
    owner
}

/// TTY: the console path below `/dev/` (`/dev/pts/3` → `pts/3`, where OpenBSD's ptys give
/// `ttyp3`); another path shows its last component, an empty one `-`.
pub fn tty_column(tty: &str) -> &str {
    if let Some(rest) = tty.strip_prefix(DEV_PREFIX).filter(|r| !r.is_empty()) {
        return rest;
    }
    match tty.rsplit_once('/') {
        Some((_, base)) if !base.is_empty() => base,
        _ if tty.is_empty() => NONE,
        _ => tty,
    }
}

/// The table: the header, then one line per row.
pub fn render_table(rows: &[&VmStatus]) -> String {
    let mut out = String::new();
    line(
        &mut out,
        [
            "ID", "PID", "VCPUS", "MAXMEM", "CURMEM", "TTY", "OWNER", "STATE", "NAME",
        ],
    );
    for vm in rows {
        let running = is_running(vm);
        let pid = vm.pid.filter(|_| running).map(|p| p.to_string());
        let cur = vm.cur_mem.filter(|_| running).map(fmt_scaled);
        let tty = vm
            .tty
            .as_deref()
            .filter(|_| running)
            .map_or(NONE, tty_column);
        line(
            &mut out,
            [
                &vm.id.to_string(),
                pid.as_deref().unwrap_or(NONE),
                &vm.vcpus.to_string(),
                &fmt_scaled(vm.max_mem),
                cur.as_deref().unwrap_or(NONE),
                tty,
                &owner(vm),
                state_word(vm.state),
                &vm.name,
            ],
        );
    }
    out
}

/// `"%5s %5s %5s %7s %7s %7s %12s %8s %s\n"`.
fn line(out: &mut String, cols: [&str; 9]) {
    let [id, pid, vcpus, maxmem, curmem, tty, owner, state, name] = cols;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{id:>5} {pid:>5} {vcpus:>5} {maxmem:>7} {curmem:>7} {tty:>7} {owner:>12} {state:>8} {name}"
    );
}

/// One VM in `status --json`; field names are a stable interface (docs/vmctl-json.md).
#[derive(Debug, Serialize)]
struct JsonVm<'a> {
    id: u32,
    name: &'a str,
    state: &'static str,
    running: bool,
    pid: Option<u32>,
    vcpus: u32,
    maxmem: u64,
    curmem: Option<u64>,
    tty: Option<&'a str>,
    uid: u32,
    user: Option<&'a str>,
    group: Option<&'a str>,
    owner: String,
}

/// `status --json`: one JSON array on one line.
pub fn render_json(rows: &[&VmStatus]) -> String {
    let vms: Vec<JsonVm<'_>> = rows
        .iter()
        .map(|vm| {
            let running = is_running(vm);
            JsonVm {
                id: vm.id,
                name: &vm.name,
                state: state_word(vm.state),
                running,
                pid: vm.pid.filter(|_| running),
                vcpus: vm.vcpus,
                maxmem: vm.max_mem,
                curmem: vm.cur_mem.filter(|_| running),
                tty: vm.tty.as_deref().filter(|t| running && !t.is_empty()),
                uid: vm.uid,
                user: vm.user.as_deref(),
                group: vm.group.as_deref(),
                owner: owner(vm),
            }
        })
        .collect();
    // Plain data with string keys: serialization cannot fail.
    let mut out = serde_json::to_string(&vms).unwrap_or_else(|_| "[]".to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::MIB;

    fn running(id: u32, name: &str) -> VmStatus {
        VmStatus {
            id,
            pid: Some(17157),
            vcpus: 1,
            max_mem: 1024 * MIB,
            cur_mem: Some(179 * MIB + 4096),
            tty: Some("/dev/pts/3".into()),
            uid: 0,
            user: Some("root".into()),
            group: None,
            state: VmState::Running,
            name: name.into(),
        }
    }

    fn stopped(id: u32, name: &str) -> VmStatus {
        VmStatus {
            id,
            pid: None,
            vcpus: 1,
            max_mem: 512 * MIB,
            cur_mem: None,
            tty: None,
            uid: 1000,
            user: Some("alice".into()),
            group: Some("vmusers".into()),
            state: VmState::Stopped,
            name: name.into(),
        }
    }

    #[test]
    fn table_matches_openbsd_layout() {
        let rows = [running(1, "OpenBSD"), stopped(2, "tmpl")];
        let refs: Vec<_> = rows.iter().collect();
        assert_eq!(
            render_table(&refs),
            "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n\
             \x20   1 17157     1    1.0G    179M   pts/3         root  running OpenBSD\n\
             \x20   2     -     1    512M       -       - alice:vmusers  stopped tmpl\n"
        );
    }

    #[test]
    fn table_states_widths_and_owners() {
        let mut paused = running(12345, "a-very-long-vm-name.example");
        paused.state = VmState::Paused;
        paused.pid = Some(4_194_304);
        paused.vcpus = 64;
        paused.max_mem = 128 * 1024 * MIB;
        paused.cur_mem = Some(1536 * MIB);
        paused.tty = Some("/dev/pts/123".into());
        paused.uid = 4242;
        paused.user = None;
        let mut stopping = running(3, "web");
        stopping.state = VmState::Stopping;
        stopping.user = Some("verylongusername".into());
        stopping.group = Some("staff".into());
        let mut waiting = stopped(4, "queued");
        waiting.state = VmState::Waiting;
        waiting.user = Some("bob".into());
        waiting.group = None;
        let mut unknown = stopped(5, "odd");
        unknown.state = VmState::Unknown;
        unknown.user = None;
        unknown.uid = 7;
        unknown.group = Some("wheel".into());
        let rows = [paused, stopping, waiting, unknown];
        let refs: Vec<_> = rows.iter().collect();
        assert_eq!(
            render_table(&refs),
            "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n\
             12345 4194304    64    128G    1.5G pts/123         4242   paused a-very-long-vm-name.example\n\
             \x20   3 17157     1    1.0G    179M   pts/3 verylongusernam stopping web\n\
             \x20   4     -     1    512M       -       -          bob  waiting queued\n\
             \x20   5     -     1    512M       -       -      7:wheel  unknown odd\n"
        );
    }

    #[test]
    fn header_only_when_empty() {
        assert_eq!(
            render_table(&[]),
            "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n"
        );
    }

    #[test]
    fn owner_truncates_at_15_bytes() {
        let mut vm = stopped(1, "x");
        vm.user = Some("alice".into());
        vm.group = Some("averyveryverylonggroup".into());
        assert_eq!(owner(&vm), "alice:averyvery");
        vm.user = Some("ééééééééé".into());
        vm.group = None;
        assert_eq!(owner(&vm), "ééééééé");
    }

    #[test]
    fn tty_names() {
        assert_eq!(tty_column("/dev/pts/3"), "pts/3");
        assert_eq!(tty_column("/dev/ttyp3"), "ttyp3");
        assert_eq!(tty_column("/tmp/x/console"), "console");
        assert_eq!(tty_column("ttyS0"), "ttyS0");
        assert_eq!(tty_column(""), "-");
    }

    #[test]
    fn selection() {
        let rows = [running(1, "a"), stopped(2, "b"), running(3, "c")];
        let ids = |sel: Vec<&VmStatus>| sel.iter().map(|v| v.id).collect::<Vec<_>>();
        assert_eq!(ids(select(&rows, None, false)), [1, 2, 3]);
        assert_eq!(ids(select(&rows, None, true)), [1, 3]);
        assert_eq!(ids(select(&rows, Some(&VmRef::Id(2)), false)), [2]);
        assert_eq!(
            ids(select(&rows, Some(&VmRef::Id(2)), true)),
            [] as [u32; 0]
        );
        assert_eq!(
            ids(select(&rows, Some(&VmRef::Name("c".into())), false)),
            [3]
        );
        assert!(select(&rows, Some(&VmRef::Name("zz".into())), false).is_empty());
    }

    #[test]
    fn json_fields() {
        let rows = [running(1, "OpenBSD"), stopped(2, "tmpl")];
        let refs: Vec<_> = rows.iter().collect();
        assert_eq!(
            render_json(&refs),
            concat!(
                r#"[{"id":1,"name":"OpenBSD","state":"running","running":true,"pid":17157,"#,
                r#""vcpus":1,"maxmem":1073741824,"curmem":187699200,"tty":"/dev/pts/3","#,
                r#""uid":0,"user":"root","group":null,"owner":"root"},"#,
                r#"{"id":2,"name":"tmpl","state":"stopped","running":false,"pid":null,"#,
                r#""vcpus":1,"maxmem":536870912,"curmem":null,"tty":null,"#,
                r#""uid":1000,"user":"alice","group":"vmusers","owner":"alice:vmusers"}]"#,
                "\n"
            )
        );
        assert_eq!(render_json(&[]), "[]\n");
    }
}
