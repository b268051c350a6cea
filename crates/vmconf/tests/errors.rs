//! Every error message, exactly as printed (`file:line: message`).

mod common;

use common::Fixture;

/// Asserts that `text` fails and that the first error printed is `expected`.
fn first_error(fx: &Fixture, text: &str, expected: &str) {
    let errs = fx.err(text);
    assert_eq!(
        errs.first().map(String::as_str),
        Some(expected),
        "input: {text:?}, all: {errs:?}"
    );
}

#[test]
fn lexer_errors() {
    let fx = Fixture::new();
    first_error(
        &fx,
        "vm \"x",
        "test.conf:1: reached end of file while parsing quoted string",
    );
    let long = "a".repeat(9000);
    first_error(
        &fx,
        &format!("{long} = \"x\"\n"),
        "test.conf:1: string too long",
    );
    first_error(
        &fx,
        &format!("a = \"{long}\"\n"),
        "test.conf:1: string too long",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tinterfaces 99999999999999999999\n}\n",
        "test.conf:2: \"99999999999999999999\" invalid number: too large",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tinterfaces -99999999999999999999\n}\n",
        "test.conf:2: \"-99999999999999999999\" invalid number: too small",
    );
    first_error(&fx, "a = \"x\0y\"\n", "test.conf:1: syntax error");
    first_error(&fx, "\n\n}\n", "test.conf:3: syntax error");
}

#[test]
fn macro_errors() {
    let fx = Fixture::new();
    first_error(
        &fx,
        "\"a b\" = \"x\"\n",
        "test.conf:1: macro name cannot contain whitespace",
    );
    first_error(
        &fx,
        "vm $nope {\n}\n",
        "test.conf:1: macro 'nope' not defined",
    );
    // A value of 8000 bytes expanded 3000 times exceeds the 16 MiB expansion budget.
    let big = "x".repeat(8000);
    let mut text = format!("m = \"{big}\"\n");
    for _ in 0..3000 {
        text.push_str("x = $m\n");
    }
    let errs = fx.err(&text);
    assert!(
        errs.iter()
            .any(|e| e.contains("macro expansion limit reached")),
        "{:?}",
        &errs[..errs.len().min(3)]
    );
}

#[test]
fn include_errors() {
    let fx = Fixture::new();
    first_error(
        &fx,
        "include \"/nonexistent/x.conf\"\n",
        "test.conf:1: failed to include file /nonexistent/x.conf: No such file or directory",
    );
    first_error(
        &fx,
        "include \"/dev/null\"\n",
        "test.conf:1: failed to include file /dev/null: not a regular file",
    );
}

#[test]
fn global_errors() {
    let fx = Fixture::new();
    first_error(
        &fx,
        "local prefix 10.0.0.1/16\n",
        "test.conf:1: invalid local prefix: 10.0.0.1/16: bad mask (host bits set)",
    );
    first_error(
        &fx,
        "local prefix 10.0.0.0/24\n",
        "test.conf:1: invalid local prefix: 10.0.0.0/24: bad mask (prefix length must be 1 to 16)",
    );
    first_error(
        &fx,
        "local prefix bogus\n",
        "test.conf:1: invalid local prefix: bogus: invalid format",
    );
    first_error(
        &fx,
        "local inet6 prefix fd00::1/64\n",
        "test.conf:1: invalid local inet6 prefix: fd00::1/64: bad mask (host bits set)",
    );
    first_error(
        &fx,
        "local inet6 prefix fd00::/80\n",
        "test.conf:1: invalid local inet6 prefix: fd00::/80: bad mask (prefix length must be at most 64)",
    );
    first_error(
        &fx,
        "staggered start parallel 0 delay 5\n",
        "test.conf:1: invalid staggered start parallel: 0",
    );
    first_error(
        &fx,
        "staggered start parallel 2 delay -1\n",
        "test.conf:1: invalid staggered start delay: -1",
    );
    first_error(
        &fx,
        "agentx path \"rel\"\n",
        "test.conf:1: agentx path is not absolute",
    );
    first_error(
        &fx,
        &format!("agentx context \"{}\"\n", "c".repeat(33)),
        "test.conf:1: agentx context too large",
    );
    first_error(
        &fx,
        &format!("agentx path \"/{}\"\n", "p".repeat(107)),
        "test.conf:1: agentx path too large",
    );
    first_error(
        &fx,
        "socket owner nosuchuser\n",
        "test.conf:1: failed to get user: nosuchuser",
    );
    first_error(
        &fx,
        "socket owner :nosuchgroup\n",
        "test.conf:1: failed to get group: nosuchgroup",
    );
    first_error(&fx, "socket owner -1\n", "test.conf:1: invalid uid: -1");
}

#[test]
fn switch_errors() {
    let fx = Fixture::new();
    first_error(
        &fx,
        "switch \"sw\" {\n\tgroup \"g\"\n}\n",
        "test.conf:1: switch \"sw\" is missing interface name",
    );
    first_error(
        &fx,
        "switch \"sw\" {\n\tinterface \"a/b\"\n}\n",
        "test.conf:2: invalid switch interface: a/b",
    );
    first_error(
        &fx,
        "switch \"sw\" {\n\tinterface bridge0123456789\n}\n",
        "test.conf:2: switch interface too long",
    );
    first_error(
        &fx,
        "switch \"sw\" {\n\tinterface veb0\n\tgroup \"net0\"\n}\n",
        "test.conf:3: invalid group name: net0",
    );
    first_error(
        &fx,
        "switch \"sw\" {\n\tinterface veb0\n\trdomain 256\n}\n",
        "test.conf:3: invalid rdomain: 256",
    );
}

#[test]
fn vm_errors() {
    let fx = Fixture::new();
    let long = "n".repeat(64);
    first_error(
        &fx,
        &format!("vm \"{long}\" {{\n\tdisk $d \"/disk.img\"\n}}\n"),
        "test.conf:1: vm name too long",
    );
    first_error(
        &fx,
        &format!("vm \"{long}\" instance \"i\" {{\n\tmemory 1G\n}}\n"),
        &format!("test.conf:1: vm {long} name too long"),
    );
    first_error(
        &fx,
        "vm \"-bad\" {\n\tdisk $d \"/disk.img\"\n}\n",
        "test.conf:1: vm \"-bad\" failed: invalid VM name: must not start with '-', '.' or '_'",
    );
    first_error(
        &fx,
        "vm \"a b\" {\n\tdisk $d \"/disk.img\"\n}\n",
        "test.conf:1: vm \"a b\" failed: invalid VM name: only letters, digits, '.', '-' and '_' are allowed",
    );
    first_error(
        &fx,
        "vm \"a\" {\n\tdisk $d \"/disk.img\"\n}\nvm \"a\" instance \"a\" {\n\tmemory 1G\n}\n",
        "test.conf:4: vm \"a\" failed: vm already exists",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tmemory 1G\n}\n",
        "test.conf:1: vm \"v\" failed: no kernel or disk/cdrom specified",
    );
    let five_disks = "vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tdisk $d \"/disk.img\"\n\tdisk $d \"/disk.img\"\n\tdisk $d \"/disk.img\"\n\tdisk $d \"/disk2.img\"\n}\n";
    first_error(
        &fx,
        five_disks,
        &format!(
            "test.conf:6: failed to parse disks: {}/disk2.img: too many disks",
            fx.path().display()
        ),
    );
    first_error(
        &fx,
        &fx.vm_with("disk $d \"/missing.img\""),
        &format!(
            "test.conf:3: failed to parse disks: {}/missing.img: No such file or directory",
            fx.path().display()
        ),
    );
    first_error(
        &fx,
        &fx.vm_with("disk $d \"/disk2.img\" format vmdk"),
        "test.conf:3: unrecognized disk format vmdk",
    );
    first_error(
        &fx,
        &fx.vm_with("interfaces 5"),
        "test.conf:3: too many interfaces: 5",
    );
    first_error(
        &fx,
        &fx.vm_with("interfaces -1"),
        "test.conf:3: too many interfaces: -1",
    );
    let five_nics = "vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tinterface\n\tinterface\n\tinterface\n\tinterface\n\tlocal interface\n}\n";
    first_error(&fx, five_nics, "test.conf:7: too many interfaces: 5");
    first_error(
        &fx,
        &fx.vm_with("interface em0"),
        "test.conf:3: invalid interface: em0",
    );
    first_error(
        &fx,
        &fx.vm_with("interface tap0000000000000001"),
        "test.conf:3: interface name too long: tap0000000000000001",
    );
    first_error(
        &fx,
        &fx.vm_with(&format!("interface switch \"{}\"", "s".repeat(64))),
        &format!("test.conf:3: switch name too long: {}", "s".repeat(64)),
    );
    first_error(
        &fx,
        &fx.vm_with("interface lladdr fe:e1:bb"),
        "test.conf:3: invalid address: fe:e1:bb",
    );
    first_error(
        &fx,
        &fx.vm_with("interface group \"g1\""),
        "test.conf:3: invalid group name: g1",
    );
    first_error(
        &fx,
        &fx.vm_with("interface rdomain 256"),
        "test.conf:3: invalid rdomain: 256",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tboot $d \"/bsd\"\n\tboot $d \"/bsd\"\n}\n",
        "test.conf:3: kernel specified more than once",
    );
    first_error(
        &fx,
        &fx.vm_with("boot \"/nonexistent/bsd\""),
        "test.conf:3: kernel path not found: /nonexistent/bsd: No such file or directory",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tcdrom \"/a.iso\"\n\tcdrom \"/b.iso\"\n}\n",
        "test.conf:3: cdrom specified more than once",
    );
    first_error(
        &fx,
        &fx.vm_with(&format!(
            "cdrom \"/{}\" \"{}\"",
            "c".repeat(4000),
            "c".repeat(100)
        )),
        "test.conf:3: cdrom name too long",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tinterfaces 1\n\tinterfaces 2\n}\n",
        "test.conf:4: interfaces specified more than once",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory 1G\n\tmemory 2097152\n}\n",
        "test.conf:4: memory specified more than once",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory 1G\n\tmemory 2G\n}\n",
        "test.conf:4: argument specified more than once",
    );
    first_error(
        &fx,
        &fx.vm_with("memory 512K"),
        "test.conf:3: failed to parse size: 512K: memory size must be at least 1MB",
    );
    first_error(
        &fx,
        &fx.vm_with("memory 1024"),
        "test.conf:3: failed to parse size: 1024: memory size must be at least 1MB",
    );
    first_error(
        &fx,
        &fx.vm_with("memory 129G"),
        "test.conf:3: failed to parse size: 129G: memory size too large (limit is 128G)",
    );
    first_error(
        &fx,
        &fx.vm_with("memory 1Q"),
        "test.conf:3: failed to parse size: 1Q: invalid memory size",
    );
    first_error(
        &fx,
        &fx.vm_with("owner mallory"),
        "test.conf:3: failed to get user: mallory",
    );
    first_error(
        &fx,
        &fx.vm_with("owner alice:staff"),
        "test.conf:3: failed to get group: staff",
    );
    first_error(
        &fx,
        &fx.vm_with("allow instance { owner :staff }"),
        "test.conf:3: failed to get group: staff",
    );
}

#[test]
fn extension_errors() {
    let fx = Fixture::new();
    first_error(
        &fx,
        "vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tcpus 2\n\tcpus 2\n}\n",
        "test.conf:4: cpus specified more than once",
    );
    first_error(
        &fx,
        &fx.vm_with("cpus 0"),
        "test.conf:3: invalid cpus: 0 (must be 1 to 64)",
    );
    first_error(
        &fx,
        &fx.vm_with("cpus 65"),
        "test.conf:3: invalid cpus: 65 (must be 1 to 64)",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tboot $d \"/bsd\"\n\tinitrd $d \"/initrd.img\"\n\tinitrd $d \"/initrd.img\"\n}\n",
        "test.conf:4: initrd specified more than once",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tboot $d \"/bsd\"\n\tinitrd \"/nonexistent/initrd\"\n}\n",
        "test.conf:3: initrd path not found: /nonexistent/initrd: No such file or directory",
    );
    first_error(
        &fx,
        "vm \"v\" {\n\tboot $d \"/bsd\"\n\tcmdline \"a\"\n\tcmdline \"b\"\n}\n",
        "test.conf:4: cmdline specified more than once",
    );
    first_error(
        &fx,
        &format!(
            "vm \"v\" {{\n\tboot $d \"/bsd\"\n\tcmdline \"{}\"\n}}\n",
            "x".repeat(2048)
        ),
        "test.conf:3: cmdline too long (limit is 2047 bytes)",
    );
    first_error(
        &fx,
        &fx.vm_with("initrd $d \"/initrd.img\""),
        "test.conf:1: initrd needs a kernel: add \"boot PATH\"",
    );
    first_error(
        &fx,
        &fx.vm_with("cmdline \"console=ttyS0\""),
        "test.conf:1: cmdline needs a kernel: add \"boot PATH\"",
    );
}

#[test]
fn too_many_errors_gives_up() {
    let fx = Fixture::new();
    let errs = fx.err(&"}\n".repeat(1000));
    assert_eq!(errs.len(), vmconf::limits::MAX_ERRORS + 1);
    assert_eq!(
        errs.last().unwrap(),
        "test.conf:65: too many errors, giving up"
    );
}

#[test]
fn open_and_define_errors() {
    let opts = vmconf::Options::default();
    let errs = vmconf::parse_file(std::path::Path::new("/nonexistent/vm.conf"), &opts).unwrap_err();
    assert_eq!(
        common::messages(&errs),
        ["/nonexistent/vm.conf: No such file or directory"]
    );
    let e = vmconf::parse_macro_definition("novalue").unwrap_err();
    assert_eq!(e.to_string(), "could not parse macro definition novalue");
    assert_eq!(
        vmconf::parse_macro_definition("a=b=c").unwrap(),
        ("a".to_string(), "b=c".to_string())
    );
}

#[test]
fn errors_continue_on_next_line() {
    let fx = Fixture::new();
    let errs = fx.err(
        "vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory 1K\n\tinterfaces 9\n}\nlocal prefix bad\n",
    );
    assert_eq!(
        errs,
        [
            "test.conf:3: failed to parse size: 1K: memory size must be at least 1MB",
            "test.conf:4: too many interfaces: 9",
            "test.conf:6: invalid local prefix: bad: invalid format",
        ]
    );
}

#[test]
fn a_brace_that_ends_a_broken_line_ends_the_block() {
    let fx = Fixture::new();
    let errs = fx.err(
        "vm \"x\" { memory 1G\n\tdisk $d \"/disk.img\" }\nvm \"y\" {\n\tdisk $d \"/disk.img\"\n}\n",
    );
    assert_eq!(errs, ["test.conf:2: syntax error"]);
}

#[test]
fn an_error_in_a_nested_block_keeps_the_outer_block() {
    let fx = Fixture::new();
    let errs = fx.err(
        "vm \"x\" {\n\tinterface { bogus }\n\tdisk $d \"/disk.img\"\n\tmemory 1K\n}\nlocal inet6\n",
    );
    assert_eq!(
        errs,
        [
            "test.conf:2: syntax error",
            "test.conf:4: failed to parse size: 1K: memory size must be at least 1MB",
        ]
    );
}
