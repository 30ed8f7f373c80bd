//! What an operator gets for a malformed `xlb.yaml`: `Config::load` must
//! name the file, the line and column, and the field path, and `xlb check -c
//! FILE` must print that same error and exit non-zero.
//!
//! Positions follow one rule, the one the parser already uses for type and
//! enum errors: an unknown or missing key is reported at the key (or at its
//! mapping), a bad value at the value itself.
//!
//! Semantic checks run after parsing and are located by a second walk of
//! the YAML text (config/locate.rs), so they point at the value too.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use tempfile::TempDir;
use xlb::config::{Config, ConfigError, XdpModeSetting};

/// A config file written into its own temporary directory (removed on drop).
struct File {
    _dir: TempDir,
    path: PathBuf,
    text: String,
}

fn write(name: &str, text: &str) -> File {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write the config file");
    File {
        _dir: dir,
        path,
        text: text.to_owned(),
    }
}

fn xlb_check(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(["check", "-c"])
        .arg(path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run `xlb check`")
}

/// One `ConfigError::Invalid`, copied out (its `Located` type is not
/// exported), with the rendered message.
#[derive(Debug)]
struct Seen {
    display: String,
    file: PathBuf,
    line: Option<usize>,
    column: Option<usize>,
    field: String,
    message: String,
}

/// Loads a malformed config: `Config::load` and `Config::parse` must both
/// reject it with the same located error, and `xlb check` must print that
/// error on stderr and exit with status 1.
fn malformed(f: &File) -> Seen {
    let err = match Config::load(&f.path) {
        Ok(cfg) => panic!("{} was accepted: {cfg:?}", f.path.display()),
        Err(e) => e,
    };
    let seen = match &err {
        ConfigError::Invalid(l) => Seen {
            display: err.to_string(),
            file: l.file.clone(),
            line: l.line,
            column: l.column,
            field: l.field.clone(),
            message: l.message.clone(),
        },
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    };
    assert_eq!(seen.file, f.path, "{seen:?}");
    assert!(
        seen.display.starts_with(&f.path.display().to_string()),
        "the error must start with the file name: {}",
        seen.display
    );
    let parsed = Config::parse(&f.text, &f.path).expect_err("Config::parse accepted it");
    assert_eq!(parsed.to_string(), seen.display);

    let out = xlb_check(&f.path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "`xlb check` must fail; stdout: {stdout} stderr: {stderr}"
    );
    assert!(
        !stdout.contains(": ok"),
        "`xlb check` said ok for a bad file: {stdout}"
    );
    assert!(
        stderr.contains(&format!("xlb: {}\n", seen.display)),
        "`xlb check` must print the loader's error; stderr: {stderr}"
    );
    seen
}

/// The error is at `line`:`column` of the file and names `field`, both in its
/// fields and in what the user reads.
fn assert_located(seen: &Seen, line: usize, column: usize, field: &str) {
    assert_eq!(
        (seen.line, seen.column, seen.field.as_str()),
        (Some(line), Some(column), field),
        "wrong position or field in: {}",
        seen.display
    );
    let prefix = format!("{}:{line}:{column}: field `{field}`: ", seen.file.display());
    assert!(
        seen.display.starts_with(&prefix),
        "expected the error to start with {prefix:?}, got {:?}",
        seen.display
    );
}

fn assert_message_contains(seen: &Seen, fragment: &str) {
    assert!(
        seen.message.contains(fragment),
        "expected {fragment:?} in the message of: {}",
        seen.display
    );
}

// ---------------------------------------------------------------- valid files

#[test]
fn valid_file_parses_to_its_values() {
    let f = write(
        "xlb.yaml",
        "# edge host\n\
         instance: edge-1_a\n\
         bpffs: /mnt/bpf\n\
         interfaces:\n  \
           - name: eth0\n    \
             xdp_mode: skb\n  \
           - name: abcdefghijklmno # 15 bytes, the longest allowed\n    \
             xdp_mode: auto\n  \
           - name: ens1f0np1\n    \
             xdp_mode: native\n  \
           - name: eth1\n",
    );
    let cfg = Config::load(&f.path).expect("valid config");
    assert_eq!(cfg.instance.as_str(), "edge-1_a");
    assert_eq!(cfg.bpffs, PathBuf::from("/mnt/bpf"));
    let ifaces: Vec<(&str, XdpModeSetting)> = cfg
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.xdp_mode))
        .collect();
    assert_eq!(
        ifaces,
        [
            ("eth0", XdpModeSetting::Skb),
            ("abcdefghijklmno", XdpModeSetting::Auto),
            ("ens1f0np1", XdpModeSetting::Native),
            ("eth1", XdpModeSetting::Native),
        ]
    );
    assert_eq!(Config::parse(&f.text, &f.path).expect("valid config"), cfg);

    let out = xlb_check(&f.path);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok\n", f.path.display())
    );
}

#[test]
fn defaults_are_applied() {
    let f = write("xlb.yaml", "interfaces:\n  - name: eth0\n");
    let cfg = Config::load(&f.path).expect("valid config");
    assert_eq!(cfg.instance.as_str(), "default");
    assert_eq!(cfg.bpffs, PathBuf::from("/sys/fs/bpf"));
    assert_eq!(cfg.interfaces.len(), 1);
    assert_eq!(cfg.interfaces[0].name.as_str(), "eth0");
    assert_eq!(cfg.interfaces[0].xdp_mode, XdpModeSetting::Native);
    assert!(xlb_check(&f.path).status.success());

    // A file with nothing in it is all defaults.
    let empty = write("empty.yaml", "# nothing set\n");
    let cfg = Config::load(&empty.path).expect("an empty config is valid");
    assert_eq!(cfg.instance.as_str(), "default");
    assert_eq!(cfg.bpffs, PathBuf::from("/sys/fs/bpf"));
    assert!(cfg.interfaces.is_empty());
}

// ------------------------------------------------------------- unknown fields

#[test]
fn unknown_top_level_field() {
    let f = write("xlb.yaml", "instance: edge1\nbpfs: /sys/fs/bpf\n");
    let seen = malformed(&f);
    assert_located(&seen, 2, 1, "bpfs");
    assert_message_contains(
        &seen,
        "unknown field `bpfs`, expected one of `instance`, `bpffs`, `interfaces`",
    );
}

#[test]
fn unknown_control_plane_priority() {
    let f = write("xlb.yaml", "instance: edge1\ncontrol_plane_priority: low\n");
    let seen = malformed(&f);
    assert_located(&seen, 2, 25, "control_plane_priority");
    assert_message_contains(&seen, "unknown variant `low`, expected `idle` or `normal`");
}

#[test]
fn unknown_field_in_second_interface() {
    let f = write(
        "xlb.yaml",
        "instance: edge1\n\
         interfaces:\n  \
           - name: eth0\n  \
           - name: eth1\n    \
             xdp_mod: skb\n",
    );
    let seen = malformed(&f);
    assert_located(&seen, 5, 5, "interfaces[1].xdp_mod");
    assert_message_contains(
        &seen,
        "unknown field `xdp_mod`, expected `name` or `xdp_mode`",
    );
}

// ------------------------------------------------------------ wrong types

#[test]
fn wrong_type_for_interfaces_list() {
    let f = write("xlb.yaml", "instance: edge1\ninterfaces: eth0\n");
    let seen = malformed(&f);
    assert_located(&seen, 2, 13, "interfaces");
    assert_message_contains(&seen, "invalid type: string \"eth0\", expected a sequence");
}

#[test]
fn wrong_type_for_interface_name() {
    let f = write(
        "xlb.yaml",
        "instance: edge1\ninterfaces:\n  - name: [eth0, eth1]\n",
    );
    let seen = malformed(&f);
    assert_located(&seen, 3, 11, "interfaces[0].name");
    assert_message_contains(&seen, "invalid type: sequence, expected a string");
}

#[test]
fn wrong_type_for_bpffs() {
    let f = write("xlb.yaml", "instance: edge1\nbpffs: {path: /sys/fs/bpf}\n");
    let seen = malformed(&f);
    assert_located(&seen, 2, 8, "bpffs");
    assert_message_contains(&seen, "invalid type: map, expected path string");
}

// ------------------------------------------------------------ invalid values

#[test]
fn invalid_xdp_mode() {
    let f = write(
        "xlb.yaml",
        "instance: edge1\n\
         interfaces:\n  \
           - name: eth0\n    \
             xdp_mode: turbo\n",
    );
    let seen = malformed(&f);
    assert_located(&seen, 4, 15, "interfaces[0].xdp_mode");
    assert_message_contains(
        &seen,
        "unknown variant `turbo`, expected one of `native`, `skb`, `auto`",
    );
}

const TOO_LONG: &str = "abcdefghijklmnop"; // 16 bytes: IFNAMSIZ, one too many

#[test]
fn interface_name_too_long() {
    assert_eq!(TOO_LONG.len(), 16);
    let f = write(
        "xlb.yaml",
        &format!(
            "instance: edge1\n\
             interfaces:\n  \
               - name: eth0\n  \
               - name: {TOO_LONG}\n"
        ),
    );
    let seen = malformed(&f);
    assert_eq!(seen.line, Some(4), "{}", seen.display);
    assert_eq!(seen.field, "interfaces[1].name", "{}", seen.display);
    assert_message_contains(
        &seen,
        &format!("`{TOO_LONG}` is not a valid interface name (1-15 bytes, no '/', ':' or blanks)"),
    );
}

#[test]
fn interface_name_with_slash() {
    let f = write(
        "xlb.yaml",
        "instance: edge1\ninterfaces:\n  - name: eth/0\n",
    );
    let seen = malformed(&f);
    assert_eq!(seen.line, Some(3), "{}", seen.display);
    assert_eq!(seen.field, "interfaces[0].name", "{}", seen.display);
    assert_message_contains(&seen, "`eth/0` is not a valid interface name");
}

/// The name is not the entry's first key: the error must still point at it.
#[test]
fn invalid_interface_name_is_located_at_the_name() {
    let f = write(
        "xlb.yaml",
        &format!(
            "instance: edge1\n\
             interfaces:\n  \
               - xdp_mode: skb\n    \
                 name: {TOO_LONG}\n"
        ),
    );
    let seen = malformed(&f);
    assert_located(&seen, 4, 11, "interfaces[0].name");
}

#[test]
fn duplicate_interface() {
    let f = write(
        "xlb.yaml",
        "instance: edge1\n\
         bpffs: /sys/fs/bpf\n\
         interfaces:\n  \
           - name: eth0\n  \
           - name: eth1\n  \
           - name: eth0\n    \
             xdp_mode: skb\n",
    );
    let seen = malformed(&f);
    assert!(seen.field.starts_with("interfaces"), "{}", seen.display);
    assert_message_contains(&seen, "interface `eth0` is already listed at interfaces[0]");
}

/// The duplicate is reported at the repeated name, not at the list.
#[test]
fn duplicate_interface_is_located_at_the_repeat() {
    let f = write(
        "xlb.yaml",
        "instance: edge1\n\
         bpffs: /sys/fs/bpf\n\
         interfaces:\n  \
           - name: eth0\n  \
           - name: eth1\n  \
           - name: eth0\n    \
             xdp_mode: skb\n",
    );
    let seen = malformed(&f);
    assert_located(&seen, 6, 11, "interfaces[2].name");
}

const BAD_INSTANCE: &str = "bpffs: /sys/fs/bpf\ninterfaces: []\ninstance: edge/1\n";

#[test]
fn invalid_instance_name() {
    let f = write("xlb.yaml", BAD_INSTANCE);
    let seen = malformed(&f);
    assert_eq!(seen.field, "instance", "{}", seen.display);
    assert_message_contains(
        &seen,
        "`edge/1` is not a valid instance name (1-64 letters, digits, '-' or '_')",
    );
    // Other names that must not become a pin folder.
    for bad in ["\"\"", "..", "edge.1", "\"a b\"", &"x".repeat(65)] {
        let f = write("xlb.yaml", &format!("instance: {bad}\n"));
        let seen = malformed(&f);
        assert_eq!(seen.field, "instance", "{}", seen.display);
        assert_message_contains(&seen, "is not a valid instance name");
    }
    let ok = write("xlb.yaml", &format!("instance: {}\n", "x".repeat(64)));
    assert!(Config::load(&ok.path).is_ok());
}

/// `instance` is on line 3: the error points there.
#[test]
fn invalid_instance_name_is_located_at_the_value() {
    let f = write("xlb.yaml", BAD_INSTANCE);
    let seen = malformed(&f);
    assert_located(&seen, 3, 11, "instance");
}

// --------------------------------------------------------------- YAML syntax

#[test]
fn yaml_syntax_error() {
    // `xdp_mode` is indented by 3: neither in the entry nor a new one.
    let f = write(
        "xlb.yaml",
        "instance: edge1\n\
         interfaces:\n  \
           - name: eth0\n   \
            xdp_mode: skb\n",
    );
    let seen = malformed(&f);
    assert_located(&seen, 4, 4, "interfaces");
    assert_message_contains(&seen, "did not find expected '-' indicator");
}

/// For an unclosed quote the parser only notices at the end of the file (line
/// 3, column 1, past the last line); the place to fix is in libyaml's context,
/// "while scanning a quoted scalar at line 1 column 11", which
/// `ConfigError::from_serde` cuts off with everything after the first
/// " at line ".
#[test]
fn unclosed_quote_says_where_it_was_opened() {
    let f = write("xlb.yaml", "instance: \"edge1\nbpffs: /sys/fs/bpf\n");
    let seen = malformed(&f);
    assert_eq!(seen.field, "instance", "{}", seen.display);
    assert_message_contains(&seen, "while scanning a quoted scalar");
    assert!(
        seen.message.contains("line 1 column 11") || seen.message.contains("1:11"),
        "the error must say where the quote was opened (1:11): {}",
        seen.display
    );
}

// -------------------------------------------------------------- missing file

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-xlb.yaml");
    let err = Config::load(&path).expect_err("a missing file was loaded");
    match &err {
        ConfigError::Read { file, source } => {
            assert_eq!(file, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected ConfigError::Read, got {other:?}"),
    }
    let display = err.to_string();
    assert!(
        display.starts_with(&format!("{}: cannot read: ", path.display())),
        "{display}"
    );

    let out = xlb_check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains(&format!("xlb: {display}")),
        "`xlb check` must name the file: {stderr}"
    );
}

// -------------------------------------------------------- several problems

/// Every semantic problem is reported, each with its own position (syntax
/// and schema errors stop the parser, so those come one at a time).
#[test]
fn check_reports_every_problem() {
    let f = write(
        "xlb.yaml",
        "instance: edge1\n\
         interfaces:\n  \
           - name: eth/0\n  \
           - name: eth1\n  \
           - name: eth1\n",
    );
    let out = xlb_check(&f.path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let file = f.path.display();
    for expected in [
        format!("{file}:3:11: field `interfaces[0].name`"),
        format!("{file}:5:11: field `interfaces[2].name`"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in: {stderr}"
        );
    }
}

// ------------------------------------------------------------------ l7 section

const L7_OK: &str = "\
l7:
  workers: 2
  listeners:
    - name: web
      address: 127.0.0.1:8080
  routes:
    - id: api
      paths: [\"/api/*\", \"/users/{id}\"]
      upstream: api
      timeouts: {read: 5s}
      request_headers: {set: {x-env: prod}}
  upstreams:
    - id: api
      nodes:
        - {address: \"127.0.0.1:9001\", weight: 3}
        - {address: \"localhost:9002\"}
";

#[test]
fn valid_l7_section_plans_to_its_values() {
    let f = write("xlb.yaml", L7_OK);
    let cfg = Config::load(&f.path).expect("valid");
    let plan = xlb::config::l7_plan::plan(&cfg.l7).expect("plans");
    assert_eq!(plan.workers, 2);
    assert_eq!(plan.listeners.len(), 1);
    assert_eq!(plan.listeners[0].routes.len(), 1);
    let opts = &plan.listeners[0].routes[0].options;
    assert_eq!(opts.timeouts.read, std::time::Duration::from_secs(5));
    assert_eq!(opts.request_headers.set.len(), 1);
    assert_eq!(plan.upstreams[0].nodes.len(), 2);
    assert_eq!(plan.upstreams[0].nodes[0].weight, 3);
}

#[test]
fn route_with_unknown_upstream_is_located_at_the_value() {
    let f = write("xlb.yaml", &L7_OK.replace("upstream: api", "upstream: apo"));
    let seen = malformed(&f);
    assert_located(&seen, 9, 17, "l7.routes[0].upstream");
    assert_message_contains(&seen, "no upstream has id `apo`");
}

#[test]
fn duration_without_unit_is_located() {
    let f = write("xlb.yaml", &L7_OK.replace("read: 5s", "read: \"5\""));
    let seen = malformed(&f);
    assert_eq!(seen.field, "l7.routes[0].timeouts.read", "{}", seen.display);
    assert_eq!(seen.line, Some(10), "{}", seen.display);
    assert_message_contains(&seen, "write it with a unit");
}

#[test]
fn bad_listener_address_is_located() {
    let f = write("xlb.yaml", &L7_OK.replace("127.0.0.1:8080", "127.0.0.1"));
    let seen = malformed(&f);
    assert_located(&seen, 5, 16, "l7.listeners[0].address");
    assert_message_contains(&seen, "is not ip:port");
}

#[test]
fn bad_header_name_in_edits_is_located() {
    let f = write("xlb.yaml", &L7_OK.replace("x-env: prod", "\"x env\": prod"));
    let seen = malformed(&f);
    assert_eq!(
        seen.field, "l7.routes[0].request_headers.set.x env",
        "{}",
        seen.display
    );
    assert_message_contains(&seen, "not a valid header name");
}

#[test]
fn every_l7_problem_is_reported_at_once() {
    let text = L7_OK
        .replace("upstream: api", "upstream: nope")
        .replace("127.0.0.1:9001", "127.0.0.1:0x")
        .replace("workers: 2", "workers: 0");
    let f = write("xlb.yaml", &text);
    let err = Config::load(&f.path).expect_err("three problems");
    let ConfigError::Multiple(all) = &err else {
        panic!("expected several errors, got {err}");
    };
    let fields: Vec<&str> = all.iter().map(|l| l.field.as_str()).collect();
    for want in [
        "l7.workers",
        "l7.routes[0].upstream",
        "l7.upstreams[0].nodes[0].address",
    ] {
        assert!(fields.contains(&want), "{want} missing from {fields:?}");
    }
    assert!(all.iter().all(|l| l.line.is_some()), "{err}");
}

#[test]
fn tls_listener_naming_a_missing_certificate() {
    let text = L7_OK.replace(
        "      address: 127.0.0.1:8080\n",
        "      address: 127.0.0.1:8080\n      tls: {certificates: [site]}\n",
    );
    let f = write("xlb.yaml", &text);
    let seen = malformed(&f);
    assert_eq!(
        seen.field, "l7.listeners[0].tls.certificates[0]",
        "{}",
        seen.display
    );
    assert_message_contains(&seen, "no certificate has id `site`");
}

// ------------------------------------------------- L4: families, too_big, ping

/// An L4 config with one VIP at `vip` whose only backend is `backend`.
fn l4_vip(vip: &str, mode: &str, backend: &str, extra: &str) -> String {
    format!(
        "l4:\n  \
           vips:\n    \
             - name: v\n      \
               address: {vip}\n      \
               port: 80\n      \
               protocol: tcp\n      \
               mode: {mode}\n{extra}      \
               backends:\n        \
                 - address: \"{backend}\"\n          \
                   mac: \"02:00:00:00:00:01\"\n"
    )
}

#[test]
fn ipv4_vip_with_ipv6_backend_is_ipv4_in_ipv6() {
    let f = write(
        "xlb.yaml",
        &l4_vip("198.51.100.1", "ipip", "2001:db8::1", ""),
    );
    let cfg = Config::load(&f.path).expect("IPv4 in IPv6 is accepted");
    assert!(cfg.l4.vips[0].backends[0].address.is_ipv6());
    assert!(xlb_check(&f.path).status.success());
}

#[test]
fn ipv6_vip_with_ipv4_backend_is_refused() {
    let f = write("xlb.yaml", &l4_vip("2001:db8::80", "ipip", "192.0.2.1", ""));
    let seen = malformed(&f);
    assert_eq!(seen.field, "l4.vips[0].backends[0].address");
    assert_message_contains(&seen, "IPv6 only in IPv6");
}

#[test]
fn dsr_backend_of_the_other_family_is_refused() {
    let f = write(
        "xlb.yaml",
        &l4_vip("198.51.100.1", "dsr", "2001:db8::1", ""),
    );
    let seen = malformed(&f);
    assert_eq!(seen.field, "l4.vips[0].backends[0].address");
    assert_message_contains(&seen, "DSR forwards the packet unchanged");
}

#[test]
fn too_big_and_ping_defaults_and_overrides() {
    let f = write("xlb.yaml", &l4_vip("198.51.100.1", "ipip", "192.0.2.1", ""));
    let cfg = Config::load(&f.path).expect("valid");
    let v = &cfg.l4.vips[0];
    assert!(v.ping, "ping is on by default");
    assert_eq!(v.too_big(&cfg.l4), xlb::config::l4::TooBig::Icmp);

    let text = l4_vip(
        "198.51.100.1",
        "ipip",
        "192.0.2.1",
        "      ping: false\n      too_big: drop\n",
    );
    let f = write("xlb.yaml", &text);
    let cfg = Config::load(&f.path).expect("valid");
    let v = &cfg.l4.vips[0];
    assert!(!v.ping);
    assert_eq!(v.too_big(&cfg.l4), xlb::config::l4::TooBig::Drop);

    let f = write(
        "xlb.yaml",
        &format!(
            "{}  too_big: drop\n",
            l4_vip("198.51.100.1", "ipip", "192.0.2.1", "")
        ),
    );
    let cfg = Config::load(&f.path).expect("valid");
    assert_eq!(
        cfg.l4.vips[0].too_big(&cfg.l4),
        xlb::config::l4::TooBig::Drop,
        "the global too_big applies to a VIP that says nothing"
    );
}

#[test]
fn unknown_too_big_value_is_refused() {
    let f = write(
        "xlb.yaml",
        &l4_vip(
            "198.51.100.1",
            "ipip",
            "192.0.2.1",
            "      too_big: fragment\n",
        ),
    );
    let seen = malformed(&f);
    assert_eq!(seen.field, "l4.vips[0].too_big");
    assert_message_contains(&seen, "fragment");
}

#[test]
fn backend_interface_name_is_checked() {
    let f = write(
        "xlb.yaml",
        &l4_vip("198.51.100.1", "ipip", "192.0.2.1", "").replace(
            "mac: \"02:00:00:00:00:01\"\n",
            "mac: \"02:00:00:00:00:01\"\n          interface: eth/1\n",
        ),
    );
    let seen = malformed(&f);
    assert_eq!(seen.field, "l4.vips[0].backends[0].interface");
    assert_message_contains(&seen, "contains `/`");
}

#[test]
fn plugin_problems_are_located() {
    let text = L7_OK.replace(
        "      request_headers: {set: {x-env: prod}}\n",
        "      request_headers: {set: {x-env: prod}}\n      plugins:\n        cors: {allow_origins: [\"*\"], allow_credentials: true}\n",
    );
    let f = write("xlb.yaml", &text);
    let seen = malformed(&f);
    assert_eq!(
        seen.field, "l7.routes[0].plugins.cors.allow_credentials",
        "{}",
        seen.display
    );
    assert_message_contains(&seen, "browsers refuse credentials");

    // A typo in a plugin's name is a parse error at the key.
    let typo = L7_OK.replace(
        "      request_headers: {set: {x-env: prod}}\n",
        "      request_headers: {set: {x-env: prod}}\n      plugins:\n        jwt-auht: {}\n",
    );
    let f = write("xlb.yaml", &typo);
    let seen = malformed(&f);
    assert_message_contains(&seen, "jwt-auht");

    // Global plugins reach every route; consumers are checked.
    let global = L7_OK.replace(
        "  upstreams:\n",
        "  plugins:\n    key-auth: {}\n  consumers:\n    - {name: alice, key_sha256: \"00\"}\n  upstreams:\n",
    );
    let f = write("xlb.yaml", &global);
    let seen = malformed(&f);
    assert_eq!(seen.field, "l7.consumers[0].key_sha256", "{}", seen.display);
    let fixed = global.replace("\"00\"", &format!("\"{}\"", "ab".repeat(32)));
    let f = write("xlb.yaml", &fixed);
    let cfg = Config::load(&f.path).expect("valid");
    let plan = xlb::config::l7_plan::plan(&cfg.l7).expect("plans");
    let names: Vec<String> = plan.listeners[0].routes[0]
        .options
        .plugins
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    assert_eq!(names, ["key-auth"]);
}
