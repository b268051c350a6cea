//! `vmd -n`: exit status and output, through the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn vmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmd"))
        .args(args)
        .output()
        .expect("run vmd")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn good_config_prints_ok_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.img"), b"").unwrap();
    let conf = write(
        dir.path(),
        "vm.conf",
        "socket owner root\nvm \"a\" {\n\tdisk $dir \"/a.img\"\n\tmemory 1G\n\tcpus 2\n}\n",
    );
    let d = format!("dir={}", dir.path().display());
    let o = vmd(&["-n", "-D", &d, "-f", &conf]);
    assert_eq!(stdout(&o), "configuration OK\n");
    assert_eq!(stderr(&o), "");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn errors_are_file_line_message_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "vm.conf",
        "vm \"a\" {\n\tdisk \"/nonexistent/a.img\"\n\tinterfaces 5\n}\nlocal prefix 1.2.3.4/8\n",
    );
    let o = vmd(&["-n", "-f", &conf]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        format!(
            "{conf}:2: failed to parse disks: /nonexistent/a.img: No such file or directory\n\
             {conf}:3: too many interfaces: 5\n\
             {conf}:5: invalid local prefix: 1.2.3.4/8: bad mask (host bits set)\n"
        )
    );
}

#[test]
fn unused_macros_warn_but_pass() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(dir.path(), "vm.conf", "unused = \"x\"\n");
    let o = vmd(&["-n", "-D", "cli=1", "-f", &conf]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "configuration OK\n");
    assert_eq!(
        stderr(&o),
        "warning: macro 'cli' not used\nwarning: macro 'unused' not used\n"
    );
}

#[test]
fn d_overrides_the_file_and_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "vm.conf",
        "mem = \"1K\"\nvm \"a\" {\n\tcdrom $iso\n\tmemory $mem\n}\n",
    );
    let bad = vmd(&["-n", "-D", "iso=/x.iso", "-f", &conf]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains(":4: failed to parse size: 1K"),
        "{}",
        stderr(&bad)
    );
    let good = vmd(&["-n", "-D", "iso=/x.iso", "-D", "mem=64M", "-f", &conf]);
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
}

#[test]
fn bad_define_exits_1() {
    let o = vmd(&["-n", "-D", "novalue", "-f", "/dev/null"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "vmd: could not parse macro definition novalue\n"
    );
}

#[test]
fn missing_explicit_file_is_an_error() {
    let o = vmd(&["-n", "-f", "/nonexistent/vm.conf"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "/nonexistent/vm.conf: No such file or directory\n"
    );
}

#[test]
fn default_file_missing_is_fine() {
    if Path::new(vmconf::DEFAULT_CONFIG).exists() {
        eprintln!("skipped: {} exists on this host", vmconf::DEFAULT_CONFIG);
        return;
    }
    let o = vmd(&["-n"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "configuration OK\n");
}

#[test]
fn flags_combine_like_getopt() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(dir.path(), "vm.conf", "local inet6\n");
    let o = vmd(&["-dn", "-f", &conf]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "configuration OK\n");
}

#[test]
fn verbose_check_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "vm.conf",
        "switch \"s\" {\n\tinterface br0\n}\nvm \"a\" {\n\tcdrom \"/x.iso\"\n\tinterfaces 2\n\tdisable\n}\n",
    );
    let o = vmd(&["-nvv", "-f", &conf]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "switch \"s\": interface br0\n\
         vm \"a\": disabled, memory 512M, cpus 1, disks 0, interfaces 2\n\
         configuration OK\n"
    );
}

#[test]
fn unknown_flag_is_usage_error() {
    let o = vmd(&["-x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("vmd [-dnv] [-D macro=value] [-f file]"),
        "{}",
        stderr(&o)
    );
}
