//! Lexical rules, macros and includes (F-CONF-01..04).

mod common;

use common::Fixture;
use vmconf::{ErrorKind, Warning};

#[test]
fn comments_and_blank_lines() {
    let fx = Fixture::new();
    let p = fx.ok("# comment\n\n   \t\nvm \"v\" { # trailing comment\n\tdisk $d \"/disk.img\" # here too\n#\tmemory 1K\n}\n");
    assert_eq!(p.config.vms.len(), 1);
    assert_eq!(
        p.config.vms[0].memory, None,
        "commented-out line must not count"
    );
}

#[test]
fn backslash_continues_a_line_and_keeps_line_numbers() {
    let fx = Fixture::new();
    let p = fx.ok("vm \"v\" {\n\tdisk \\\n$d \"/disk.img\"\n\tmemory \\\n 2G\n}\n");
    assert_eq!(p.config.vms[0].memory, Some(2 << 30));
    let errs = fx.err("vm \"v\" {\n\tdisk \\\n$d \"/disk.img\"\n\tmemory 1K\n}\n");
    assert_eq!(
        errs[0],
        "test.conf:4: failed to parse size: 1K: memory size must be at least 1MB"
    );
}

#[test]
fn quoting_rules() {
    let fx = Fixture::new();
    // Single quotes, escaped quote, escaped space; a backslash before anything else stays.
    let p = fx.ok("vm 'a' {\n\tdisk $d \"/disk.img\"\n\tcdrom \"/x\\\"y\\ z\\n\"\n}\n");
    let vm = &p.config.vms[0];
    assert_eq!(vm.name, "a");
    assert_eq!(
        vm.cdrom.as_deref(),
        Some(std::path::Path::new("/x\"y z\\n"))
    );
    // A newline inside quotes is dropped, and line counting goes on.
    let p = fx.ok("vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tcdrom \"/a\nb\"\n\tmemory 1G\n}\n");
    assert_eq!(
        p.config.vms[0].cdrom.as_deref(),
        Some(std::path::Path::new("/ab"))
    );
    let errs = fx.err("vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tcdrom \"/a\nb\"\n\tmemory 1K\n}\n");
    assert!(errs[0].starts_with("test.conf:5: "), "{errs:?}");
}

#[test]
fn numbers_versus_strings() {
    let fx = Fixture::new();
    // `1073741824` is a NUMBER (bytes), `1G` a STRING; both are accepted by memory.
    let p = fx.ok("vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory 1073741824\n}\n");
    assert_eq!(p.config.vms[0].memory, Some(1 << 30));
    // `interfaces` takes only a NUMBER, so `2x` (a STRING) is a syntax error.
    let errs = fx.err(&fx.vm_with("interfaces 2x"));
    assert_eq!(errs[0], "test.conf:3: syntax error");
    // A quoted number is a STRING too.
    let errs = fx.err(&fx.vm_with("interfaces \"2\""));
    assert_eq!(errs[0], "test.conf:3: syntax error");
    // A lone `-` is punctuation.
    let errs = fx.err(&fx.vm_with("interfaces -"));
    assert_eq!(errs[0], "test.conf:3: syntax error");
}

#[test]
fn adjacent_strings_concatenate() {
    let fx = Fixture::new();
    let p = fx.ok("vm \"v\" {\n\tdisk $d \"/\" \"disk\" '.img'\n}\n");
    assert_eq!(
        p.config.vms[0].disks[0].path,
        fx.file("disk.img").canonicalize().unwrap()
    );
    let p = fx.ok("vm \"we\" \"b\" {\n\tdisk $d \"/disk.img\"\n}\n");
    assert_eq!(p.config.vms[0].name, "web");
}

#[test]
fn keywords_are_case_sensitive_and_reserved() {
    let fx = Fixture::new();
    let errs = fx.err(&fx.vm_with("Memory 1G"));
    assert_eq!(errs[0], "test.conf:3: syntax error");
    // `size` is reserved with no rule, so it cannot be a bare name.
    let errs = fx.err("vm size {\n\tdisk $d \"/disk.img\"\n}\n");
    assert_eq!(errs[0], "test.conf:1: syntax error");
    // Quoted, it is just a string.
    fx.ok("vm \"size\" {\n\tdisk $d \"/disk.img\"\n}\n");
}

#[test]
fn macro_definition_and_expansion() {
    let fx = Fixture::new();
    let p =
        fx.ok("img = \"/disk.img\"\nmem=\"2G\"\nvm \"v\" {\n\tdisk $d $img\n\tmemory $mem\n}\n");
    assert_eq!(p.config.vms[0].memory, Some(2 << 30));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // An expansion is re-lexed: a value may hold several tokens.
    let p = fx.ok("opts = \"memory 3G\"\nvm \"v\" {\n\tdisk $d \"/disk.img\"\n\t$opts\n}\n");
    assert_eq!(p.config.vms[0].memory, Some(3 << 30));
    // Redefinition takes the last value.
    let p = fx.ok("m = \"1G\"\nm = \"4G\"\nvm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory $m\n}\n");
    assert_eq!(p.config.vms[0].memory, Some(4 << 30));
    // Not expanded inside quotes.
    let p = fx.ok("x = \"y\"\nvm \"v\" {\n\tdisk $d \"/disk.img\"\n\tcdrom \"/$x\"\n}\n");
    assert_eq!(
        p.config.vms[0].cdrom.as_deref(),
        Some(std::path::Path::new("/$x"))
    );
    assert_eq!(p.warnings, [Warning::UnusedMacro("x".into())]);
}

#[test]
fn macro_value_cannot_expand_another_macro() {
    let fx = Fixture::new();
    // As in parse.y, `$` inside an expansion is not special: no recursion, no loop.
    let errs = fx.err("a = \"$a\"\nvm $a {\n\tdisk $d \"/disk.img\"\n}\n");
    assert_eq!(errs[0], "test.conf:2: syntax error");
}

#[test]
fn macro_used_before_definition() {
    let fx = Fixture::new();
    let errs = fx.err("vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory $mem\n}\nmem = \"1G\"\n");
    assert_eq!(errs[0], "test.conf:3: macro 'mem' not defined");
    let errs = fx.parse("vm $x {\n}\n").unwrap_err();
    assert_eq!(
        errs[0].kind(),
        Some(&ErrorKind::MacroNotDefined("x".into()))
    );
    assert_eq!(errs[0].location().map(|l| l.line), Some(1));
}

#[test]
fn command_line_macro_wins_over_the_file() {
    let fx = Fixture::new();
    let mut opts = fx.opts();
    opts.macros.push(("mem".into(), "3G".into()));
    let text = "mem = \"1G\"\nvm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory $mem\n}\n";
    let p = vmconf::parse_bytes("t", text.as_bytes().to_vec(), None, &opts).unwrap();
    assert_eq!(p.config.vms[0].memory, Some(3 << 30));
}

#[test]
fn unused_macros_warn_in_definition_order() {
    let fx = Fixture::new();
    let mut opts = fx.opts();
    opts.macros.push(("cli".into(), "x".into()));
    let text = "b = \"1\"\na = \"2\"\nvm \"v\" {\n\tdisk $d \"/disk.img\"\n}\n";
    let p = vmconf::parse_bytes("t", text.as_bytes().to_vec(), None, &opts).unwrap();
    let w: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "warning: macro 'cli' not used",
            "warning: macro 'b' not used",
            "warning: macro 'a' not used"
        ]
    );
}

#[test]
fn macro_name_must_not_be_a_keyword_or_number() {
    let fx = Fixture::new();
    assert_eq!(fx.err("vm = \"x\"\n")[0], "test.conf:1: syntax error");
    assert_eq!(fx.err("n = 5\n")[0], "test.conf:1: syntax error");
}

#[test]
fn include_relative_and_line_numbers_per_file() {
    let fx = Fixture::new();
    fx.write(
        "inc.conf",
        "\n\nvm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory 1K\n}\n",
    );
    let errs = fx.err("# top\ninclude \"inc.conf\"\nlocal prefix bad\n");
    assert_eq!(
        errs,
        [
            "inc.conf:5: failed to parse size: 1K: memory size must be at least 1MB",
            "test.conf:3: invalid local prefix: bad: invalid format",
        ]
    );
}

#[test]
fn include_defines_macros_for_the_includer() {
    let fx = Fixture::new();
    fx.write("macros.conf", "mem = \"2G\"");
    let p =
        fx.ok("include \"macros.conf\"\nvm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory $mem\n}\n");
    assert_eq!(p.config.vms[0].memory, Some(2 << 30));
}

#[test]
fn include_loop_is_an_error() {
    let fx = Fixture::new();
    fx.write("a.conf", "include \"b.conf\"\n");
    fx.write("b.conf", "include \"a.conf\"\n");
    let errs = fx.err("include \"a.conf\"\n");
    assert_eq!(
        errs,
        ["b.conf:1: failed to include file a.conf: include loop"]
    );
}

#[test]
fn self_include_is_an_error() {
    let fx = Fixture::new();
    let p = fx.write("self.conf", "include \"self.conf\"\n");
    let errs = vmconf::parse_file(&p, &fx.opts()).unwrap_err();
    assert_eq!(
        common::messages(&errs),
        [format!(
            "{}:1: failed to include file self.conf: include loop",
            p.display()
        )]
    );
}

#[test]
fn deep_include_nesting_is_an_error() {
    let fx = Fixture::new();
    for i in 0..40 {
        fx.write(
            &format!("n{i}.conf"),
            &format!("include \"n{}.conf\"\n", i + 1),
        );
    }
    fx.write("n40.conf", "\n");
    let errs = fx.err("include \"n0.conf\"\n");
    assert_eq!(
        errs,
        ["n14.conf:1: failed to include file n15.conf: includes nested too deeply (limit is 16)"]
    );
}

#[test]
fn wide_include_fanout_is_bounded() {
    let fx = Fixture::new();
    fx.write("leaf.conf", "x = \"1\"\n");
    let line = "include \"leaf.conf\"\n".repeat(300);
    let errs = fx.err(&line);
    assert!(
        errs.iter()
            .any(|e| e.contains("too many included files (limit is 256)")),
        "{errs:?}"
    );
}

#[test]
fn block_may_span_files() {
    let fx = Fixture::new();
    fx.write("head.conf", "vm \"v\" {\n\tdisk $d \"/disk.img\"\n");
    let p = fx.ok("include \"head.conf\"\n\tmemory 1G\n}\n");
    assert_eq!(p.config.vms[0].memory, Some(1 << 30));
}

#[test]
fn last_line_without_newline() {
    let fx = Fixture::new();
    let p = fx.ok("vm \"v\" {\n\tdisk $d \"/disk.img\"\n}");
    assert_eq!(p.config.vms.len(), 1);
    let p = fx.ok("local inet6");
    assert_eq!(p.config.global.local_inet6, Some(vmconf::LocalInet6::Auto));
}
