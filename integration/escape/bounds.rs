use super::*;

/// Attack 3: a flood from inside for 30 s. The guard stays alive and bounded, and answers an
/// allowed connect afterwards; the audit file stays under its cap, with merged counts.
#[test]
fn the_guard_stays_bounded_under_a_flood() {
    let rt = Runtime::new();
    let pol = probe_policy(&rt, &[18641, 18642, 18643]);
    let id = unique("flood");
    let resolver = nemosandbox::netguard::prepare::resolver_address(&id).to_string();
    let script = format!(
        "probe trickle {resolver} 2000 30 > /tmp/trickle & \
         probe blocked 18642 1000 > /tmp/blocked & \
         probe names {resolver} 100000 > /tmp/names & \
         probe bigmmsg 18643 30 > /tmp/mmsg & \
         wait; {} {} {} {} {}",
        p("trickle", "cat /tmp/trickle"),
        p("blocked", "cat /tmp/blocked"),
        p("names", "cut -d' ' -f1 /tmp/names"),
        p("mmsg", "cat /tmp/mmsg"),
        p("after", "probe connect 18641"),
    );
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    b.edit(|c| {
        c["process"]["rlimits"] = serde_json::json!([
            {"type": "RLIMIT_NOFILE", "hard": 8192, "soft": 8192}
        ]);
    });
    let mut cmd = rt.kept_command(&["--policy", &pol], &b, &id);
    let dir = TempDir::new("flood-out");
    cmd.stdout(std::fs::File::create(dir.path().join("out")).unwrap());
    let mut child = cmd.spawn().unwrap();
    let (mut max_threads, mut max_hwm_kib) = (0u64, 0u64);
    let start = Instant::now();
    let mut helper = None;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > scaled(Duration::from_secs(120)) {
            let inside = rt.run(&[
                "exec",
                &id,
                "sh",
                "-c",
                "for f in trickle blocked names mmsg; do echo \"$f: $(cat /tmp/$f)\"; done; ps",
            ]);
            let _ = child.kill();
            panic!(
                "flood did not end: guard threads {max_threads}, VmHWM {max_hwm_kib} KiB\n{}\n{}{}",
                std::fs::read_to_string(dir.path().join("out")).unwrap_or_default(),
                String::from_utf8_lossy(&inside.stdout),
                String::from_utf8_lossy(&inside.stderr)
            );
        }
        helper = helper.or_else(|| helper_of(&id));
        if let Some(h) = helper {
            let status = std::fs::read_to_string(format!("/proc/{h}/status")).unwrap_or_default();
            let field = |k: &str| -> u64 {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0)
            };
            max_threads = max_threads.max(field("Threads:"));
            max_hwm_kib = max_hwm_kib.max(field("VmHWM:"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
    let audit = std::fs::read_to_string(rt.audit_file(&id)).unwrap_or_default();
    let audit_len = audit.len() as u64;
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
    eprintln!(
        "flood: max threads {max_threads}, VmHWM {max_hwm_kib} KiB, audit {audit_len} bytes\n{out}"
    );
    expect(&out, &[("after", "ok"), ("names", "sent=100000")]);
    let r = results(&out);
    assert!(r["trickle"].starts_with("opened="), "{out}");
    assert!(r["blocked"].starts_with("eintr="), "{out}");
    assert!(helper.is_some(), "the guard was never seen");
    assert!(max_hwm_kib < 32 * 1024, "guard VmHWM {max_hwm_kib} KiB");
    // The documented bound: main, control, waiter, UDP receiver, TCP acceptor, audit writer,
    // the UDP workers and TCP clients, and one listener per process tree (here only init's).
    use nemosandbox::netguard::resolver::{TCP_CLIENTS, UDP_WORKERS};
    let bound = 6 + UDP_WORKERS + TCP_CLIENTS + 1;
    assert!(
        max_threads as usize <= bound,
        "guard threads {max_threads} > {bound}"
    );
    assert!(
        audit_len < nemosandbox::audit::MAX_FILE,
        "audit {audit_len} bytes"
    );
    assert!(
        audit.contains("\"count\""),
        "no merged repeats in the audit"
    );
}

/// Attack 4: transports and options the guard would never see a destination for.
#[test]
fn other_transports_and_source_routing_are_refused() {
    let rt = Runtime::new();
    let pol = probe_policy(&rt, &[18651, 18652]);
    let checks = [
        p("sctp", "probe sock 2 1 132"),
        p("sctp-seqpacket", "probe sock 10 5 0"),
        p("dccp", "probe sock 2 6 0"),
        p("udplite", "probe sock 2 2 136"),
        p("ping", "probe sock 2 2 1"),
        p("vsock", "probe sock 40 1 0"),
        p("tcp", "probe sock 2 1 0"),
        p("udp", "probe sock 10 2 0"),
        p("mptcp", "probe sock 2 1 262"),
        p("unix", "probe sock 1 1 0"),
        p("rthdr", "probe sockopt IPV6_RTHDR"),
        p("rthdr2292", "probe sockopt IPV6_2292RTHDR"),
        p("ip-options", "probe sockopt IP_OPTIONS"),
        p("ip-retopts", "probe sockopt IP_RETOPTS"),
        p("ttl", "probe sockopt IP_TTL"),
        p("cmsg-retopts", "probe cmsg IP_RETOPTS 18651"),
        p("cmsg-rthdr", "probe cmsg IPV6_RTHDR 18651"),
        p("cmsg-ttl", "probe cmsg IP_TTL 18651"),
        p("unspec", "probe unspec 18653"),
        p("compat-options", "probe sockopt32 IP_OPTIONS"),
        p("compat-rthdr", "probe sockopt32 IPV6_RTHDR"),
        p("compat-ttl", "probe sockopt32 IP_TTL"),
        p("connect", "probe connect 18652"),
    ]
    .concat();
    let b = bundle(&[
        "sh",
        "-c",
        &format!("{{ {checks} }} > /tmp/checks; sleep 1000"),
    ]);
    host_network(&b);
    let c = Running::start(&rt, &pol, &[], &b);
    let want = [
        ("sctp", "EACCES"),
        ("sctp-seqpacket", "EACCES"),
        ("dccp", "EACCES"),
        ("udplite", "EACCES"),
        ("ping", "EACCES"),
        ("vsock", "EACCES"),
        ("tcp", "ok"),
        ("udp", "ok"),
        ("mptcp", "ok"),
        ("unix", "ok"),
        ("rthdr", "EACCES"),
        ("rthdr2292", "EACCES"),
        ("ip-options", "EACCES"),
        ("ip-retopts", "EACCES"),
        ("ttl", "ok"),
        ("cmsg-retopts", "EACCES"),
        ("cmsg-rthdr", "EACCES"),
        ("cmsg-ttl", "ok"),
        ("unspec", "EAFNOSUPPORT"),
        ("compat-options", "EACCES"),
        ("compat-rthdr", "EACCES"),
        ("compat-ttl", "ok"),
        ("connect", "ok"),
    ];
    // One after the other: some checks listen on a port of the shared network.
    wait_for("init's checks", Duration::from_secs(20), || {
        c.file("/tmp/checks").contains("connect:")
    });
    expect(&c.file("/tmp/checks"), &want);
    expect(&c.exec_sh(&checks), &want);
}
