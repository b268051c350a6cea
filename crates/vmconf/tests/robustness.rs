//! Ugly inputs: each must end in an error (or a clean parse) quickly, never a panic or hang.

mod common;

use std::time::{Duration, Instant};

use common::Fixture;

/// Parses `input` and returns the errors, failing the test if it took too long.
fn parse_bounded(fx: &Fixture, input: Vec<u8>) -> Result<vmconf::Parsed, Vec<String>> {
    let start = Instant::now();
    let res = vmconf::parse_bytes("ugly.conf", input, Some(fx.file("ugly.conf")), &fx.opts())
        .map_err(|e| common::messages(&e));
    // Generous for an unoptimised build on a loaded 2-core machine.
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    res
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn binary_garbage() {
    let fx = Fixture::new();
    for seed in 1..20u64 {
        let errs = parse_bounded(&fx, pseudo_random(64 * 1024, seed)).unwrap_err();
        assert!(!errs.is_empty());
        assert!(errs.len() <= vmconf::limits::MAX_ERRORS + 1);
        assert!(errs.iter().all(|e| e.starts_with("ugly.conf:")), "{errs:?}");
    }
}

#[test]
fn ten_megabyte_line() {
    let fx = Fixture::new();
    let errs = parse_bounded(&fx, vec![b'a'; 10 * 1024 * 1024]).unwrap_err();
    assert_eq!(errs[0], "ugly.conf:1: string too long");
    // As a file, the size limit catches it before any lexing.
    let path = fx.file("huge.conf");
    std::fs::write(&path, vec![b' '; 10 * 1024 * 1024]).unwrap();
    let errs = vmconf::parse_file(&path, &fx.opts()).unwrap_err();
    assert_eq!(
        common::messages(&errs),
        [format!(
            "{}: file too large (limit is 4194304 bytes)",
            path.display()
        )]
    );
    // Included, too.
    let errs = parse_bounded(&fx, b"include \"huge.conf\"\n".to_vec()).unwrap_err();
    assert_eq!(errs, ["ugly.conf:1: failed to include file huge.conf: file too large (limit is 4194304 bytes)"]);
}

#[test]
fn unterminated_quotes() {
    let fx = Fixture::new();
    for input in [
        "\"",
        "'abc",
        "vm \"x {\n\tdisk a\n",
        "a = \"\\",
        "vm 'x' { cdrom \"\\\n",
    ] {
        let errs = parse_bounded(&fx, input.as_bytes().to_vec()).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.ends_with("reached end of file while parsing quoted string")),
            "{input:?}: {errs:?}"
        );
    }
    // An include that ends inside a quote reports it in the included file and goes on.
    fx.write("open.conf", "x = \"oops\n");
    let errs =
        parse_bounded(&fx, b"include \"open.conf\"\nlocal prefix bad\n".to_vec()).unwrap_err();
    assert_eq!(
        errs,
        [
            "open.conf:1: reached end of file while parsing quoted string",
            "ugly.conf:2: invalid local prefix: bad: invalid format",
        ]
    );
}

#[test]
fn deep_and_wide_includes() {
    let fx = Fixture::new();
    // Each level includes the next one twice: without the limits this would be 2^30 reads.
    for i in 0..30 {
        fx.write(
            &format!("d{i}.conf"),
            &format!("include \"d{n}.conf\"\ninclude \"d{n}.conf\"\n", n = i + 1),
        );
    }
    fx.write("d30.conf", "\n");
    let errs = parse_bounded(&fx, b"include \"d0.conf\"\n".to_vec()).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.contains("includes nested too deeply")),
        "{errs:?}"
    );
}

#[test]
fn pathological_but_valid_shapes() {
    let fx = Fixture::new();
    // Many newlines, many comments, many continuations.
    let mut input = "\n".repeat(200_000);
    input.push_str(&"# c\n".repeat(50_000));
    input.push_str(&"\\\n".repeat(50_000));
    let p = parse_bounded(&fx, input.into_bytes()).unwrap();
    assert!(p.config.vms.is_empty());
    // Many distinct macros stay linear.
    let mut input = String::new();
    for i in 0..50_000 {
        input.push_str(&format!("m{i} = \"v\"\n"));
    }
    let p = parse_bounded(&fx, input.into_bytes()).unwrap();
    assert_eq!(p.warnings.len(), 50_001, "the 50000 plus -D d");
}

#[test]
fn nul_bytes_and_high_bytes() {
    let fx = Fixture::new();
    for input in [
        &b"\0"[..],
        b"vm \0 {",
        b"\xff\xfe",
        b"vm \"\xff\" {\n disk \"/x\"\n}\n",
        b"$\0",
        b"-\n-1-\n",
    ] {
        let errs = parse_bounded(&fx, input.to_vec()).unwrap_err();
        assert!(!errs.is_empty(), "{input:?}");
    }
}

#[test]
fn many_open_blocks() {
    let fx = Fixture::new();
    let errs = parse_bounded(&fx, "vm \"a\" {\n".repeat(100_000).into_bytes()).unwrap_err();
    assert!(errs.len() <= vmconf::limits::MAX_ERRORS + 1);
    let errs = parse_bounded(&fx, "{".repeat(1_000_000).into_bytes()).unwrap_err();
    assert_eq!(errs[0], "ugly.conf:1: syntax error");
}

#[test]
fn long_file_name_is_not_copied_per_token() {
    let fx = Fixture::new();
    let name = "n".repeat(64 * 1024);
    let start = Instant::now();
    let p = vmconf::parse_bytes(&name, vec![b'\n'; 4 * 1024 * 1024], None, &fx.opts()).unwrap();
    assert!(p.config.vms.is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}
