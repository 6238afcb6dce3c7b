//! The audit trail from real containers: denials kept in the node sink after the container
//! is gone, readable with `nemosandbox audit`; a flood of refused names bounded and merged;
//! a sink that cannot be written changing no decision; `policy explain` agreeing with the
//! guard case by case; `--follow` across a rotation; the workload told why a name was
//! refused.

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::net::*;
use common::probe::*;
use common::*;

/// A node configuration whose audit sink is `dir/audit.jsonl` (rotated at `max_size`).
fn node_config(rt: &Runtime, dir: &Path, extra: &str) -> String {
    let cfg = rt.root.path().join(format!("{}.yaml", unique("node")));
    std::fs::write(
        &cfg,
        format!(
            "audit:\n  path: {}\n{extra}",
            dir.join("audit.jsonl").display()
        ),
    )
    .unwrap();
    cfg.to_string_lossy().into_owned()
}

/// `/bin/probe` may reach loopback `port`; nothing else may reach anything.
fn probe_policy(rt: &Runtime, port: u16) -> String {
    policy(
        rt,
        &format!(
            "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
             network_policies:\n  local:\n    endpoints:\n      - {{ host: 127.0.0.1, port: {port} }}\n\
             \x20   binaries:\n      - {{ path: /bin/probe }}\n"
        ),
    )
}

/// A bundle on the host's network with a resolv.conf, so the guard's resolver answers it (a
/// refused name never reaches the upstream named here).
fn guarded_bundle(args: &[&str]) -> Bundle {
    let b = bundle(args);
    host_network(&b);
    std::fs::write(
        b.path().join("rootfs/etc/resolv.conf"),
        "nameserver 127.0.0.53\n",
    )
    .unwrap();
    b
}

/// Create and start `b` as `id` under `pol`; its script writes `/tmp/out` and then
/// `/tmp/done`. Returns the init pid and what the script wrote.
fn start_and_read(rt: &Runtime, pol: &str, b: &Bundle, id: &str) -> (i64, String) {
    rt.ok(&create_args(pol, b, id));
    rt.ok(&["start", id]);
    let init: i64 = rt.state(id)["pid"].as_i64().unwrap();
    wait_until(|| Path::new(&format!("/proc/{init}/root/tmp/done")).exists());
    let out = std::fs::read_to_string(format!("/proc/{init}/root/tmp/out")).unwrap();
    (init, out)
}

/// `nemosandbox --config CFG audit ARGS…` as JSON records.
fn audit_json(rt: &Runtime, cfg: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["--config", cfg, "audit", "--format", "json"];
    a.extend_from_slice(args);
    rt.ok(&a)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every line of `files` checked against docs/audit.schema.json by an independent validator.
fn assert_schema_valid(files: &[PathBuf]) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit.schema.json");
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  n = 0\n\
                  for f in sys.argv[2:]:\n\
                  \x20   for line in open(f):\n\
                  \x20       jsonschema.validate(json.loads(line), schema)\n\
                  \x20       n += 1\n\
                  print(n)\n";
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&schema)
        .args(files)
        .output()
        .expect("python3 with jsonschema (apt-get install python3-jsonschema)");
    assert!(
        out.status.success(),
        "schema validation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(n > 0, "no lines validated");
}

#[test]
fn denials_outlive_a_removed_container_in_the_node_sink() {
    let rt = Runtime::new();
    let sink = TempDir::new("sink");
    let cfg = node_config(&rt, sink.path(), "");
    let pol = probe_policy(&rt, 18501);
    let script = [
        p("allowed", "probe connect 18501"),
        p("denied", "probe connect 18502"),
        p("name", "probe dns blocked.example"),
    ]
    .concat();
    let b = guarded_bundle(&["sh", "-c", &script]);
    let id = unique("gone");
    let log = rt.root.path().join("runtime.log");
    let out = rt.ok(&[
        "--config",
        &cfg,
        "--policy",
        &pol,
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    expect(
        &out,
        &[
            ("allowed", "ok"),
            ("denied", "EACCES"),
            // The workload is told why: REFUSED with an Extended DNS Error.
            ("name", "rcode=5 ede=15:blocked by nemosandbox policy"),
        ],
    );
    // The container is gone (`run` deleted it), and so is its own file.
    assert_nothing_left(&rt, &id);
    assert!(!rt.root.path().join(&id).exists());

    let events = audit_json(&rt, &cfg, &[&id]);
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
    };
    let net = find("network");
    assert_eq!(net["decision"], "denied");
    assert_eq!(net["container"], id.as_str());
    assert!(net["request"]["destination"]
        .as_str()
        .unwrap()
        .ends_with(":18502"));
    assert!(net["executable"].as_str().unwrap().ends_with("/probe"));
    assert_eq!(net["policy_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(find("dns")["request"]["name"], "blocked.example");
    // The allowed connect is not an event.
    assert!(
        !events
            .iter()
            .any(|e| e["request"]["destination"].as_str() == Some("127.0.0.1:18501")),
        "{events:?}"
    );

    // Filters and the readable form.
    let dns_only = audit_json(&rt, &cfg, &[&id, "--kind", "dns"]);
    assert!(!dns_only.is_empty() && dns_only.iter().all(|e| e["kind"] == "dns"));
    assert!(audit_json(&rt, &cfg, &[&id, "--since", "1h"]).len() == events.len());
    let text = rt.ok(&["--config", &cfg, "audit", &id]);
    assert!(
        text.lines()
            .any(|l| l.contains(" network denied 127.0.0.1:18502")
                && l.contains("/probe (pid ")
                && l.contains("network_policies")),
        "{text}"
    );
    let bad = rt.fails(&["--config", &cfg, "audit", "--since", "soon"]);
    assert!(bad.contains("--since"), "{bad}");

    // The runtime log has each event as an object, not a string to parse again.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["audit"]["kind"] == "network" && v["audit"]["container"] == id.as_str()
        }),
        "{logged}"
    );
    assert_schema_valid(&[sink.path().join("audit.jsonl")]);
}

#[test]
fn a_hundred_thousand_refused_names_leave_a_bounded_file_with_merged_counts() {
    let rt = Runtime::new();
    let sink = TempDir::new("sink");
    let cfg = node_config(&rt, sink.path(), "  max_size: 128KiB\n  keep: 2\n");
    let pol = probe_policy(&rt, 18511);
    let b = guarded_bundle(&["probe", "dnsflood", "100000"]);
    let id = unique("flood");
    let out = output_within(
        rt.command(&[
            "--config",
            &cfg,
            "--policy",
            &pol,
            "run",
            "--keep",
            "--bundle",
            b.path().to_str().unwrap(),
            &id,
        ]),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.trim(), "refused 100000");
    // The guard writes its last merged counts once the container's init is gone, then exits.
    wait_until(|| helper_of(&id).is_none());

    // The container's own file accounts for every refusal, in few lines.
    let own = audit_json(&rt, &cfg, &[&id, "--kind", "dns"]);
    let total: u64 = own.iter().map(|e| e["count"].as_u64().unwrap_or(1)).sum();
    assert_eq!(total, 100_000, "{} lines", own.len());
    eprintln!(
        "flood: 100000 refused names -> {} lines in the container's file",
        own.len()
    );
    assert!(own.len() < 10_000, "{} lines for 100000 events", own.len());
    assert!(
        own.iter()
            .any(|e| e["count"].as_u64().is_some_and(|n| n > 1000) && e["first_time"].is_string()),
        "a merged line with a count and a first time"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);

    // The node sink is bounded by its rotation: at most `keep` old files, each near max_size.
    let files: Vec<PathBuf> = ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
        .iter()
        .map(|f| sink.path().join(f))
        .filter(|f| f.exists())
        .collect();
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        eprintln!("flood: sink file {} is {size} bytes", f.display());
        assert!(size <= (128 << 10) + 8192, "{f:?} is {size} bytes");
    }
    assert!(!sink.path().join("audit.jsonl.3").exists(), "keep: 2 holds");
    assert_schema_valid(&files);
}

#[test]
fn a_read_only_sink_changes_no_decision_and_is_reported() {
    let rt = Runtime::new();
    let dir = TempDir::new("rosink");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(dir.path().to_path_buf());
    let cfg = node_config(&rt, dir.path(), "");
    let pol = probe_policy(&rt, 18521);
    let script = [
        p("allowed", "probe connect 18521"),
        p("denied", "probe connect 18522"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    let id = unique("ro");
    let out = rt.run(&[
        "--config",
        &cfg,
        "--policy",
        &pol,
        "run",
        "--keep",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    expect(&stdout, &[("allowed", "ok"), ("denied", "EACCES")]);
    // The container's own file has the denial and the report of the sink's failure.
    let events = audit_json(&rt, &cfg, &[&id]);
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "network" && e["decision"] == "denied"),
        "{events:?}"
    );
    let report = events
        .iter()
        .find(|e| e["kind"] == "policy" && e["by"] == "audit sink")
        .unwrap_or_else(|| panic!("no sink report in {events:?}"));
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{report}"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
    assert!(!dir.path().join("audit.jsonl").exists());
}

/// One connect: in the container through the probe, and through `policy explain`.
struct Case {
    label: &'static str,
    exe: &'static str,
    host: &'static str,
    port: u16,
    /// What the test DNS server answers for `host`.
    address: Option<Ipv4Addr>,
    allowed: bool,
}

#[test]
fn policy_explain_agrees_with_the_guard_case_by_case() {
    let rt = Runtime::new();
    let net = TestNetns::new();
    let t = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    let _dns = TestDns::start(
        &net.path(),
        t(53),
        &[
            ("ok.nemo.test", t(10)),
            ("a.glob.nemo.test", t(11)),
            ("a.b.glob.nemo.test", t(11)),
            ("other.nemo.test", t(12)),
            ("priv.nemo.test", Ipv4Addr::new(127, 0, 0, 5)),
        ],
    );
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         network_policies:\n  named:\n    endpoints:\n      - { host: ok.nemo.test, port: 18531 }\n\
         \x20     - { host: \"*.glob.nemo.test\", port: 18531 }\n\
         \x20     - { host: priv.nemo.test, port: 18531 }\n\
         \x20     - { host: 127.0.0.1, ports: [18533] }\n\
         \x20   binaries:\n      - { path: /bin/probe }\n",
    );
    let case = |label, exe, host, port, address, allowed| Case {
        label,
        exe,
        host,
        port,
        address,
        allowed,
    };
    let cases = [
        case("literal", "/bin/probe", "127.0.0.1", 18533, None, true),
        case(
            "literal-port",
            "/bin/probe",
            "127.0.0.1",
            18534,
            None,
            false,
        ),
        case("literal-copy", "/bin/copy", "127.0.0.1", 18533, None, false),
        // An address no allowed name resolved to (before any lookup).
        case("ip-first", "/bin/probe", "203.0.113.10", 18531, None, false),
        case(
            "name",
            "/bin/probe",
            "ok.nemo.test",
            18531,
            Some(t(10)),
            true,
        ),
        case(
            "name-port",
            "/bin/probe",
            "ok.nemo.test",
            18532,
            Some(t(10)),
            false,
        ),
        case(
            "name-copy",
            "/bin/copy",
            "ok.nemo.test",
            18531,
            Some(t(10)),
            false,
        ),
        case(
            "glob",
            "/bin/probe",
            "a.glob.nemo.test",
            18531,
            Some(t(11)),
            true,
        ),
        case(
            "glob-deep",
            "/bin/probe",
            "a.b.glob.nemo.test",
            18531,
            Some(t(11)),
            false,
        ),
        case(
            "other",
            "/bin/probe",
            "other.nemo.test",
            18531,
            Some(t(12)),
            false,
        ),
        case(
            "private",
            "/bin/probe",
            "priv.nemo.test",
            18531,
            Some(Ipv4Addr::new(127, 0, 0, 5)),
            false,
        ),
    ];
    let script: String = cases
        .iter()
        .map(|c| {
            let cmd = match c.address {
                None => format!("{} connect {} {}", c.exe, c.port, c.host),
                Some(_) => format!("{} name {} {}", c.exe, c.host, c.port),
            };
            p(c.label, &cmd)
        })
        .collect::<String>();
    let script = format!("{{ {script} }} > /tmp/out 2>&1; echo done > /tmp/done; sleep 1000");
    let b = bundle(&["sh", "-c", &script]);
    std::fs::copy(probe(), b.path().join("rootfs/bin/copy")).unwrap();
    std::fs::write(
        b.path().join("rootfs/etc/resolv.conf"),
        "nameserver 203.0.113.53\noptions attempts:1 timeout:2\n",
    )
    .unwrap();
    net.join(&b);
    let id = unique("explain");
    let (_, out) = start_and_read(&rt, &pol, &b, &id);
    let got = results(&out);

    for c in &cases {
        let in_container = got
            .get(c.label)
            .unwrap_or_else(|| panic!("{}: no result in {out}", c.label));
        assert_eq!(
            in_container == "ok",
            c.allowed,
            "{}: the guard said {in_container}",
            c.label
        );
        let target = format!("{}:{}", c.host, c.port);
        let mut bundle_args = vec![
            "--policy",
            pol.as_str(),
            "policy",
            "explain",
            "--format",
            "json",
            "--connect",
            &target,
            "--exe",
            c.exe,
        ];
        let address = c.address.map(|a| a.to_string());
        if let Some(a) = &address {
            bundle_args.extend(["--address", a]);
        }
        let mut live_args = bundle_args.clone();
        bundle_args.extend(["--bundle", b.path().to_str().unwrap()]);
        live_args.push(&id);
        for (how, args) in [("bundle", &bundle_args), ("running container", &live_args)] {
            let answer: serde_json::Value = serde_json::from_str(&rt.ok(args)).unwrap();
            assert_eq!(
                answer["allowed"], c.allowed,
                "{} ({how}): explain says {answer}, the guard said {in_container}",
                c.label
            );
            assert!(!answer["reason"].as_str().unwrap().is_empty(), "{answer}");
        }
    }
    // The text form names the rule.
    let text = rt.ok(&[
        "--policy",
        &pol,
        "policy",
        "explain",
        "--connect",
        "ok.nemo.test:18531",
        "--address",
        "203.0.113.10",
        "--exe",
        "/bin/probe",
        &id,
    ]);
    assert!(
        text.starts_with("allowed: /bin/probe connecting to 203.0.113.10:18531 (ok.nemo.test)")
            && text.contains("named.endpoints[0] ok.nemo.test"),
        "{text}"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

#[test]
fn follow_sees_events_within_a_second_across_rotations() {
    let rt = Runtime::new();
    let sink = TempDir::new("follow");
    let cfg = node_config(&rt, sink.path(), "  max_size: 4KiB\n  keep: 3\n");
    let pol = probe_policy(&rt, 18541);
    let mut follower = Command::new(bin())
        .args(["--root", rt.root.path().to_str().unwrap()])
        .args(["--config", &cfg, "audit", "--follow", "--format", "json"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((chrono_now(), line));
        }
    });
    // Forty denied connects to distinct ports, one every 50 ms: each a line of its own, and
    // several rotations of a 4 KiB sink.
    let script = "for p in $(seq 20001 20040); do probe connect $p >/dev/null; sleep 0.05; done";
    let b = bundle(&["sh", "-c", script]);
    host_network(&b);
    let id = unique("follow");
    rt.ok(&[
        "--config",
        &cfg,
        "--policy",
        &pol,
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    let mut seen = std::collections::BTreeSet::new();
    let mut worst = 0.0f64;
    while seen.len() < 40 && Instant::now() < deadline {
        let Ok((at, line)) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["container"] != id.as_str() || v["kind"] != "network" {
            continue;
        }
        let dest = v["request"]["destination"].as_str().unwrap().to_string();
        let written = parse_time(v["time"].as_str().unwrap());
        worst = worst.max(at - written);
        seen.insert(dest);
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(seen.len(), 40, "followed only {seen:?}");
    assert!(
        sink.path().join("audit.jsonl.1").exists(),
        "the sink rotated"
    );
    eprintln!(
        "follow: 40 events across rotations, slowest arrived {worst:.3} s after it was written"
    );
    let limit = scaled(Duration::from_secs(1)).as_secs_f64();
    assert!(worst < limit, "an event took {worst:.3} s to be followed");
}

/// Seconds since the epoch, now.
fn chrono_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Seconds since the epoch of an RFC 3339 UTC time with nanoseconds (`…T01:02:03.456Z`).
fn parse_time(t: &str) -> f64 {
    let out = Command::new("date")
        .args(["-u", "-d", t, "+%s.%N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The kernel's audit switch (`AUDIT_GET`/`AUDIT_SET` over netlink), as auditctl -e does.
fn kernel_audit(set: Option<bool>) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: a netlink socket owned by the OwnedFd; send/recv with the buffer lengths given.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 9);
        assert!(fd >= 0, "audit netlink socket");
        let s = OwnedFd::from_raw_fd(fd);
        let mut msg = vec![0u8; 16];
        let (typ, flags) = match set {
            None => (1000u16, libc::NLM_F_REQUEST as u16),
            Some(_) => (1001u16, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16),
        };
        if let Some(on) = set {
            // struct audit_status: mask = AUDIT_STATUS_ENABLED, enabled, the rest zero.
            msg.extend_from_slice(&1u32.to_ne_bytes());
            msg.extend_from_slice(&(on as u32).to_ne_bytes());
            msg.extend_from_slice(&[0u8; 32]);
        }
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&typ.to_ne_bytes());
        msg[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert!(libc::send(s.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) > 0);
        let mut buf = [0u8; 8192];
        let n = libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
        assert!(n >= 24, "audit reply");
        let rtype = u16::from_ne_bytes([buf[4], buf[5]]);
        if rtype == libc::NLMSG_ERROR as u16 {
            let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            assert_eq!(errno, 0, "AUDIT_SET");
            return set.unwrap_or(false);
        }
        u32::from_ne_bytes([buf[20], buf[21], buf[22], buf[23]]) != 0
    }
}

#[test]
fn landlock_denials_reach_the_trail_as_fs_events_when_the_kernel_audits() {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            kernel_audit(Some(self.0));
        }
    }
    let _restore = Restore(kernel_audit(None));
    kernel_audit(Some(true));
    let rt = Runtime::new();
    let sink = TempDir::new("fs");
    let cfg = node_config(&rt, sink.path(), "  landlock_denials: true\n");
    let pol = probe_policy(&rt, 18551);
    let script = [
        // Landlock refuses it (the directory is writable, the policy gives no write there).
        p("landlock", "probe write /dev/denied"),
        // The allowed twin.
        p("allowed", "probe write /tmp/fine"),
        // A read-only mount refuses it before Landlock is asked: not observable.
        p("erofs", "probe write /etc/ro"),
    ]
    .concat();
    let b = guarded_bundle(&["sh", "-c", &script]);
    let id = unique("fsaudit");
    let out = rt.ok(&[
        "--config",
        &cfg,
        "--policy",
        &pol,
        "run",
        "--keep",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    expect(
        &out,
        &[
            ("landlock", "EACCES"),
            ("allowed", "ok"),
            ("erofs", "EROFS"),
        ],
    );
    wait_until(|| helper_of(&id).is_none());
    let fs = audit_json(&rt, &cfg, &[&id, "--kind", "fs"]);
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
    if kernel().landlock_abi < 7 {
        // Before Linux 6.15 Landlock writes no audit records: nothing to report, nothing
        // made up.
        assert!(fs.is_empty(), "{fs:?}");
        return;
    }
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert_eq!(fs[0]["request"]["path"], "/dev");
    assert_eq!(fs[0]["request"]["access"][0], "fs.make_reg");
    assert_eq!(fs[0]["by"], "landlock");
    // The node sink has it too, after the container is gone.
    let kept = audit_json(&rt, &cfg, &[&id, "--kind", "fs"]);
    assert_eq!(kept.len(), 1, "{kept:?}");

    // An exec'd process makes a Landlock domain of its own: its denial is this container's
    // too, and a denial in another container is not.
    let a = guarded_bundle(&["sleep", "1000"]);
    let other = guarded_bundle(&["sh", "-c", "sleep 1; probe write /dev/theirs; sleep 1000"]);
    let (ida, idb) = (unique("fsa"), unique("fsb"));
    for (b, id) in [(&a, &ida), (&other, &idb)] {
        rt.ok(&[
            "--config",
            &cfg,
            "--policy",
            &pol,
            "create",
            "--bundle",
            b.path().to_str().unwrap(),
            id,
        ]);
        rt.ok(&["start", id]);
    }
    let out = rt.ok(&["exec", &ida, "sh", "-c", "probe write /dev/ours; sleep 0.5"]);
    assert_eq!(out.trim(), "EACCES");
    std::thread::sleep(Duration::from_secs(2));
    let mine = audit_json(&rt, &cfg, &[&ida, "--kind", "fs"]);
    rt.remove(&ida);
    rt.remove(&idb);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["request"]["path"], "/dev");
    let theirs = audit_json(&rt, &cfg, &[&idb, "--kind", "fs"]);
    assert_eq!(theirs.len(), 1, "{theirs:?}");
}

/// A FIFO where a policy's binary glob looks: resolving binaries (the guard's, and
/// `policy explain`'s) must not open it and wait for a writer forever.
#[test]
fn a_fifo_at_a_binary_path_stalls_neither_the_guard_nor_explain() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         network_policies:\n  local:\n    endpoints:\n      - { host: 127.0.0.1, port: 18561 }\n\
         \x20   binaries:\n      - { path: /bin/probe }\n      - { path: \"/tmp/tools/*\" }\n",
    );
    let script = [
        "mkdir /tmp/tools; mkfifo /tmp/tools/a-fifo; cp /bin/probe /tmp/tools/tool; ".to_string(),
        // The glob's new match is found when this connect misses: the guard resolves the
        // glob again, FIFO included.
        p("tool", "/tmp/tools/tool connect 18561"),
        p("listed", "probe connect 18561"),
    ]
    .concat();
    let script = format!("{{ {script} }} > /tmp/out 2>&1; echo done > /tmp/done; sleep 1000");
    let b = guarded_bundle(&["sh", "-c", &script]);
    let id = unique("fifo");
    let (_, out) = start_and_read(&rt, &pol, &b, &id);
    expect(&out, &[("tool", "ok"), ("listed", "ok")]);
    let answer: serde_json::Value = serde_json::from_str(&rt.ok(&[
        "--policy",
        &pol,
        "policy",
        "explain",
        "--format",
        "json",
        "--connect",
        "127.0.0.1:18561",
        "--exe",
        "/tmp/tools/tool",
        &id,
    ]))
    .unwrap();
    assert_eq!(answer["allowed"], true, "{answer}");
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

/// `--audit-format ocsf`: the node sink holds OCSF classes, and `nemosandbox audit` still
/// reads them as events.
#[test]
fn an_ocsf_sink_holds_ocsf_classes_and_reads_back() {
    let rt = Runtime::new();
    let sink = TempDir::new("ocsf");
    let cfg = node_config(&rt, sink.path(), "");
    let pol = probe_policy(&rt, 18571);
    let script = [
        p("denied", "probe connect 18572"),
        p("name", "probe dns refused.example"),
    ]
    .concat();
    let b = guarded_bundle(&["sh", "-c", &script]);
    let id = unique("ocsf");
    let out = rt.ok(&[
        "--config",
        &cfg,
        "--policy",
        &pol,
        "--audit-format",
        "ocsf",
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    expect(&out, &[("denied", "EACCES")]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(sink.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let net = lines
        .iter()
        .find(|v| v["class_uid"] == 4001)
        .unwrap_or_else(|| panic!("no Network Activity in {lines:?}"));
    assert_eq!(net["dst_endpoint"]["port"], 18572);
    assert_eq!(net["disposition_id"], 2);
    assert_eq!(net["container"]["uid"], id.as_str());
    let dns = lines
        .iter()
        .find(|v| v["class_uid"] == 4003)
        .unwrap_or_else(|| panic!("no DNS Activity in {lines:?}"));
    assert_eq!(dns["query"]["hostname"], "refused.example");
    // Read back as events.
    let events = audit_json(&rt, &cfg, &[&id]);
    assert!(events.iter().any(|e| e["kind"] == "network"), "{events:?}");
    assert!(events.iter().any(|e| e["kind"] == "dns"), "{events:?}");
}
