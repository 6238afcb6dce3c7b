use super::*;

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
    let out = rt.run_kept_with(&["--config", &cfg, "--policy", &pol], &b, &id);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
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
