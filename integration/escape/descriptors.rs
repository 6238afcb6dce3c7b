use super::*;

/// A thread with a descriptor table of its own (cloned without `CLONE_FILES`) puts inet sockets at
/// numbers where the main thread holds unix sockets, and sends to a refused port. Below Linux
/// 6.9 the guard can only read the main thread's table: the call would be judged on the unix
/// socket and run on the inet one. Nothing reaches the refused port, in init and in an exec'd
/// process; the allowed twin (the same thread sharing its table) reaches the allowed port; a
/// thread with its own table reaches it where the kernel names threads (6.9) and is refused
/// (EPERM) where it cannot.
#[test]
fn a_thread_with_its_own_descriptor_table_is_judged_on_its_own_sockets() {
    let rt = Runtime::new();
    let (allowed, refused) = (18661u16, 18662u16);
    let pol = probe_policy(&rt, &[allowed]);
    let listen = |port: u16| {
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
        udp.set_nonblocking(true).unwrap();
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        (udp, tcp)
    };
    let (udp_ok, tcp_ok) = listen(allowed);
    let (udp_no, tcp_no) = listen(refused);
    let script = [
        p("shared-allowed", &format!("probe fdtable {allowed} shared")),
        p("own-allowed", &format!("probe fdtable {allowed} own")),
        p("own-refused", &format!("probe fdtable {refused} own")),
        p("shared-refused", &format!("probe fdtable {refused} shared")),
    ]
    .concat();
    let b = bundle(&[
        "sh",
        "-c",
        &format!("{{ {script} }} > /tmp/init; sleep 1000"),
    ]);
    host_network(&b);
    let c = Running::start(&rt, &pol, &[], &b);
    wait_for("init's probes", Duration::from_secs(60), || {
        c.file("/tmp/init").contains("shared-refused")
    });
    let (own_allowed, own_refused) = if kernel().pidfd_threads {
        ("udp=ok tcp=ok", "udp=EACCES tcp=EACCES")
    } else {
        ("udp=EPERM tcp=EPERM", "udp=EPERM tcp=EPERM")
    };
    let want = [
        ("shared-allowed", "udp=ok tcp=ok"),
        ("own-allowed", own_allowed),
        ("own-refused", own_refused),
        ("shared-refused", "udp=EACCES tcp=EACCES"),
    ];
    expect(&c.file("/tmp/init"), &want);
    expect(&c.exec_sh(&script), &want);
    let mut buf = [0u8; 16];
    assert!(
        udp_no.recv(&mut buf).is_err(),
        "a datagram reached the refused port"
    );
    assert!(
        tcp_no.accept().is_err(),
        "a connection reached the refused port"
    );
    assert!(
        udp_ok.recv(&mut buf).is_ok(),
        "the allowed twin sent nothing"
    );
    assert!(
        tcp_ok.accept().is_ok(),
        "the allowed twin connected nowhere"
    );
}

/// Attack 1: a descriptor swapped (`dup2`) between the guard's look at a unix socket and the
/// kernel's execution of the continued call. Fast open, UDP `sendto`, `sendmsg` and
/// `connect`, 20 s each at once, in init and in an exec'd process: nothing reaches the
/// refused port's listener, and the kernel fence is seen refusing swapped calls.
#[test]
fn swapped_descriptors_never_reach_a_refused_port() {
    let rt = Runtime::new();
    let pol = probe_policy(&rt, &[18601, 18602]);
    let attacks = |base: u16| -> String {
        let modes = ["tfo", "udp", "sendmsg", "connect"];
        let mut s = String::new();
        for (i, m) in modes.iter().enumerate() {
            s += &format!(
                "probe swap {m} {} 20 > /tmp/swap-{m}-{base} & ",
                base + i as u16
            );
        }
        s += "wait; ";
        for m in modes {
            s += &format!("echo \"{m}: $(cat /tmp/swap-{m}-{base})\"; ");
        }
        s
    };
    let twins = [
        p("allowed-udp", "probe udp 127.0.0.1 18601"),
        p("allowed-tfo", "probe tfo 18602"),
        p("refused-udp", "probe udp 127.0.0.1 18603"),
        p("packet", "probe sock 2 10 768"),
        p("tcp", "probe sock 2 1 0"),
    ]
    .concat();
    let b = bundle(&[
        "sh",
        "-c",
        &format!("{{ {twins} }} > /tmp/twins; {} sleep 1000", attacks(18610)),
    ]);
    host_network(&b);
    // CAP_NET_RAW would give SOCK_PACKET on AF_INET: refused at socket() anyway.
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push("CAP_NET_RAW".into());
        }
    });
    let c = Running::start(&rt, &pol, &[], &b);
    let exec = c.exec_sh(&attacks(18620));
    // The four run at once and end at about the same time, in any order: wait for each.
    wait_for("init's attacks", Duration::from_secs(60), || {
        ["tfo", "udp", "sendmsg", "connect"]
            .iter()
            .all(|m| c.file(&format!("/tmp/swap-{m}-18610")).contains('='))
    });
    let twins_want = [
        ("allowed-udp", "ok"),
        ("allowed-tfo", "ok"),
        ("refused-udp", "EACCES"),
        ("packet", "EACCES"),
        ("tcp", "ok"),
    ];
    expect(&c.file("/tmp/twins"), &twins_want);
    expect(&c.exec_sh(&twins), &twins_want);
    let mut fenced = false;
    let r = results(&exec);
    for m in ["tfo", "udp", "sendmsg", "connect"] {
        for (who, line) in [
            ("exec", r.get(m).cloned().unwrap_or_default()),
            ("init", c.file(&format!("/tmp/swap-{m}-18610"))),
        ] {
            assert!(line.contains("reached=0"), "{who} {m}: {line}");
            assert!(!line.contains("BREACH"), "{who} {m}: {line}");
            eprintln!("{who} {m}: {}", line.trim());
            // "ok": the kernel fence refused at least one call on a swapped descriptor.
            fenced |= line.starts_with("ok");
        }
    }
    assert!(
        fenced,
        "no swapped call ever reached the kernel: the race was not run"
    );
}

/// Attack 2: once the container's filters are in, no process installs a notification
/// listener of its own (it would take the guard's notifications, or answer "continue" for
/// itself once the guard is gone), and killing the guard leaves the network shut.
#[test]
fn no_second_listener_and_no_network_after_the_guard_dies() {
    let rt = Runtime::new();
    let pol = probe_policy(&rt, &[18631]);
    let b = bundle(&["probe", "afterguard", "/tmp/trigger", "/tmp/after", "18631"]);
    host_network(&b);
    let c = Running::start(&rt, &pol, &[], &b);
    wait_for("checks with the guard", Duration::from_secs(20), || {
        c.file("/tmp/after.before").contains("other-tfo")
    });
    let before = c.file("/tmp/after.before");
    assert_eq!(
        before.trim(),
        "notify=EPERM connect=ok udp=ok tfo=ok other-connect=EACCES other-udp=EACCES other-tfo=EACCES",
        "with the guard alive"
    );
    assert_eq!(c.exec_sh("probe notify").trim(), "EPERM", "exec'd process");
    let helper = helper_of(&c.id).expect("the guard runs in the helper process");
    kill9(helper);
    wait_until(|| !Path::new(&format!("/proc/{helper}/status")).exists());
    std::fs::write(format!("/proc/{}/root/tmp/trigger", c.init()), "").unwrap();
    wait_for("checks without the guard", Duration::from_secs(20), || {
        c.file("/tmp/after").contains("other-tfo")
    });
    let after = c.file("/tmp/after");
    for part in after.split_whitespace() {
        let (k, v) = part.split_once('=').unwrap();
        let want = if k == "notify" { "EPERM" } else { "ENOSYS" };
        assert_eq!(v, want, "{k} without the guard: {after}");
    }
    assert_eq!(rt.status(&c.id), "running");
}
