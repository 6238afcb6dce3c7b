//! The network guard's red-team round, from inside real containers: each bypass an
//! adversarial review found, tried as a hostile workload would, in init and in an exec'd
//! process, beside its allowed twin. `scripts/escape-runc.sh` runs the same attacks under
//! runc, where they succeed.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::net::*;
use common::probe::*;
use common::*;

/// A policy letting /bin/probe (and only it) reach loopback `ports`, with a writable /tmp.
fn probe_policy(rt: &Runtime, ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    policy(
        rt,
        &format!(
            "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
             network_policies:\n  local:\n    endpoints:\n      - host: 127.0.0.1\n        ports: [{}]\n\
             \x20   binaries:\n      - {{ path: /bin/probe }}\n",
            ports.join(", ")
        ),
    )
}

fn kill9(pid: i32) {
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// A started container running `b` under `policy` (and runtime flags `extra`).
struct Running<'a> {
    rt: &'a Runtime,
    id: String,
}

impl<'a> Running<'a> {
    fn start(rt: &'a Runtime, policy: &str, extra: &[&str], b: &Bundle) -> Running<'a> {
        let id = unique("esc");
        let mut args = vec!["--policy", policy];
        args.extend_from_slice(extra);
        args.extend(["create", "--bundle", b.path().to_str().unwrap(), &id]);
        rt.ok(&args);
        rt.ok(&["start", &id]);
        wait_until(|| rt.status(&id) == "running");
        Running { rt, id }
    }
    fn init(&self) -> i32 {
        self.rt.state(&self.id)["pid"].as_i64().unwrap() as i32
    }
    /// A file in the container, read from the host.
    fn file(&self, path: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/root{path}", self.init())).unwrap_or_default()
    }
    /// `exec ID sh -c SCRIPT`: stdout.
    fn exec_sh(&self, script: &str) -> String {
        let out = self.rt.run(&["exec", &self.id, "sh", "-c", script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn audit(&self) -> String {
        std::fs::read_to_string(self.rt.root.path().join(&self.id).join("audit.jsonl"))
            .unwrap_or_default()
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.rt.remove(&self.id);
        assert_nothing_left(self.rt, &self.id);
    }
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not reached in {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

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
    wait_for("init's attacks", Duration::from_secs(60), || {
        c.file("/tmp/swap-connect-18610").contains('=')
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
    let mut cmd = rt.command(&[
        "--policy",
        &pol,
        "run",
        "--keep",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
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
    let audit =
        std::fs::read_to_string(rt.root.path().join(&id).join("audit.jsonl")).unwrap_or_default();
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

const PY_CONNECT: &str = "import errno, socket, sys\n\
port = int(sys.argv[-1])\n\
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
l.bind(('127.0.0.1', port)); l.listen()\n\
c = socket.socket()\n\
try:\n    c.connect(('127.0.0.1', port)); print('ok')\n\
except OSError as e:\n    print(errno.errorcode.get(e.errno, e.errno))\n";

const NODE_CONNECT: &str = "const net = require('net');\n\
const port = +process.argv[process.argv.length - 1];\n\
net.createServer(s => s.destroy()).listen(port, '127.0.0.1', () => {\n\
  const c = net.connect(port, '127.0.0.1');\n\
  c.on('connect', () => { console.log('ok'); process.exit(0); });\n\
  c.on('error', e => { console.log(e.code); process.exit(0); });\n\
});\n";

/// Attack 5: identity a process could forge after start. The policy allows `/app/ok.py`
/// (python3), `/app/ok.js` (node) and `/bin/probe-dyn` (a dynamically linked ELF). What
/// matters is what `execve` started, captured by the guard at the exec stop.
#[test]
fn identity_is_what_execve_started() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         network_policies:\n  app:\n    endpoints:\n      - { host: 127.0.0.1, ports: [18661, 18662, 18663] }\n\
         \x20   binaries:\n      - { path: /app/ok.py }\n      - { path: /app/ok.js }\n      - { path: /bin/probe-dyn }\n",
    );
    // The evil script rewrites its own argv memory to read `python3 /app/ok.py 18661`, checks
    // that /proc/self/cmdline now says so, then connects.
    let evil = format!(
        "import ctypes\n\
         f = open('/proc/self/stat').read().rsplit(')', 1)[1].split()\n\
         start, end = int(f[45]), int(f[46])\n\
         want = b'python3\\0/app/ok.py\\x0018661\\0'\n\
         assert len(want) <= end - start, (len(want), end - start)\n\
         ctypes.memmove(start, want.ljust(end - start, b'\\0'), end - start)\n\
         assert b'/app/ok.py' in open('/proc/self/cmdline', 'rb').read()\n{PY_CONNECT}"
    );
    // The swapping script replaces itself with a link to the allowed one before connecting.
    let swapper = format!(
        "import os\nos.remove('/tmp/s.py'); os.symlink('/app/ok.py', '/tmp/s.py')\n{PY_CONNECT}"
    );
    let node_code = NODE_CONNECT.replace('\n', " ");
    let script = [
        q("py", "python3 /app/ok.py 18661"),
        q("py-direct", "/app/ok.py 18661"),
        q("py-u", "python3 -u /app/ok.py 18661"),
        q("py-stdin", "python3 - /app/ok.py 18661 < /app/ok.py"),
        q("py-i", "python3 -i /app/ok.py 18661 < /dev/null"),
        q("py-W", "python3 -W x /app/ok.py /tmp/evil.py 18661"),
        q("py-evil-argv", "python3 /tmp/evil.py 18661"),
        q("py-swap", "python3 /tmp/s.py 18661"),
        q("py-path", "PYTHONPATH=/tmp python3 /app/ok.py 18661"),
        q("py-user-site", "HOME=/tmp/h python3 /app/ok.py 18661"),
        q(
            "py-user-site-off",
            "HOME=/tmp/h python3 -s /app/ok.py 18661",
        ),
        q(
            "py-venv",
            "probe execas /tmp/v/bin/python3 /usr/bin/python3 /app/ok.py 18661",
        ),
        q(
            "py-argv0",
            "probe execas /usr/bin/python3 /usr/bin/python3 /app/ok.py 18661",
        ),
        q("node", "node /app/ok.js 18662"),
        q("node-opt", "node --no-warnings /app/ok.js 18662"),
        q("node-stdin", "node - /app/ok.js 18662 < /app/ok.js"),
        q(
            "node-print",
            &format!("node --print \"{node_code}\" /app/ok.js 18662 | tail -1"),
        ),
        q("node-loader", "node --loader=/tmp/l.mjs /app/ok.js 18662"),
        q(
            "node-exp-loader",
            "node --experimental-loader=/tmp/l.mjs /app/ok.js 18662",
        ),
        q("node-import", "node --import=/tmp/l.mjs /app/ok.js 18662"),
        q("node-env-file", "node --env-file=/tmp/env /app/ok.js 18662"),
        q("node-home", "HOME=/tmp/h node /app/ok.js 18662"),
        q("elf", "probe-dyn connect 18663"),
        q(
            "elf-preload",
            "LD_PRELOAD=/tmp/x.so PRELOAD_PORT=18661 probe-dyn connect 18663 | tr '\\n' ' '",
        ),
        q(
            "elf-libpath",
            "LD_LIBRARY_PATH=/tmp probe-dyn connect 18663",
        ),
        q(
            "elf-libpath-ro",
            "LD_LIBRARY_PATH=/lib/x86_64-linux-gnu probe-dyn connect 18663",
        ),
        q(
            "elf-openssl",
            "OPENSSL_CONF=/tmp/ssl.cnf probe-dyn connect 18663",
        ),
        q("probe", "probe connect 18663"),
    ]
    .concat();
    // Each run gets fresh copies of the files the attacks change.
    let setup =
        "cp /app/evil.py /tmp/evil.py; cp /app/swap.py /tmp/s.py; cp /app/l.mjs /tmp/l.mjs; \
                 cp /app/env /tmp/env; cp /app/x.so /tmp/x.so; ";
    let b = bundle(&["sh", "-c", &format!("{setup}{script}")]);
    host_network(&b);
    with_interpreters(&b);
    let r = b.path().join("rootfs");
    install_binary(probe_dynamic(), &r.join("bin/probe-dyn"));
    std::fs::create_dir_all(r.join("app")).unwrap();
    let exe = |f: &str, content: &str| {
        std::fs::write(r.join("app").join(f), content).unwrap();
        std::fs::set_permissions(
            r.join("app").join(f),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    };
    exe("ok.py", &format!("#!/usr/bin/python3\n{PY_CONNECT}"));
    exe("ok.js", &format!("#!/usr/bin/node\n{NODE_CONNECT}"));
    exe("evil.py", &evil);
    exe("swap.py", &swapper);
    // Injected modules and env files could hold anything; the options alone are refused, so
    // these stay harmless and the allowed script's own connect shows the refusal.
    exe("l.mjs", "export {};\n");
    exe("env", "X=1\n");
    // Harmless here; what matters is that python would run it inside the allowed script.
    exe("evil.pth", "import os; os.environ['PTH_RAN'] = '1'\n");
    std::fs::copy(preload_library(), r.join("app/x.so")).unwrap();
    let want = [
        ("py", "ok"),
        ("py-direct", "ok"),
        ("py-u", "ok"),
        ("py-stdin", "EACCES"),
        ("py-i", "EACCES"),
        ("py-W", "EACCES"),
        ("py-evil-argv", "EACCES"),
        ("py-swap", "EACCES"),
        ("py-path", "EACCES"),
        ("py-user-site", "EACCES"),
        ("py-user-site-off", "ok"),
        ("py-venv", "EACCES"),
        ("py-argv0", "ok"),
        ("node", "ok"),
        ("node-opt", "ok"),
        ("node-stdin", "EACCES"),
        ("node-print", "EACCES"),
        ("node-loader", "EACCES"),
        ("node-exp-loader", "EACCES"),
        ("node-import", "EACCES"),
        ("node-env-file", "EACCES"),
        ("node-home", "EACCES"),
        ("elf", "ok"),
        ("elf-preload", "preload: EACCES EACCES"),
        ("elf-libpath", "EACCES"),
        ("elf-libpath-ro", "ok"),
        ("elf-openssl", "EACCES"),
        ("probe", "EACCES"),
    ];
    let out = run_bundle(&rt, Some(&pol), &b, &[]);
    expect(&out, &want);
    // The same from an exec'd process.
    let b2 = bundle(&["sleep", "1000"]);
    host_network(&b2);
    with_interpreters(&b2);
    let r2 = b2.path().join("rootfs");
    std::fs::remove_dir_all(r2.join("app")).ok();
    copy_dir(&r.join("app"), &r2.join("app"));
    install_binary(probe_dynamic(), &r2.join("bin/probe-dyn"));
    let c = Running::start(&rt, &pol, &[], &b2);
    let out = c.exec_sh(&format!("{setup}{script}"));
    expect(&out, &want);
    let audit = c.audit();
    for needle in [
        "standard input",
        "given -i",
        "given -W",
        "not read-only",
        "PYTHONPATH",
        "LD_PRELOAD",
        "--loader",
    ] {
        assert!(
            audit.contains(needle),
            "no audit reason {needle:?}: {audit}"
        );
    }
}

/// Like `p`, with the command's standard error dropped (interpreters' warnings).
fn q(label: &str, cmd: &str) -> String {
    format!("echo \"{label}: $({cmd} 2>/dev/null)\"; ")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Attack 6: a query with two questions, and an upstream answer that carries an address
/// for a name nobody asked.
#[test]
fn the_resolver_answers_one_question_with_the_asked_names_addresses_only() {
    let rt = Runtime::new();
    let net = TestNetns::new();
    let t = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    let _dns = TestDns::start_with_extra(
        &net.path(),
        t(53),
        &[("ok.nemo.test", t(20)), ("other.nemo.test", t(21))],
        &[("ok.nemo.test", "evil.nemo.test", t(66))],
    );
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         network_policies:\n  named:\n    endpoints:\n      - { host: ok.nemo.test, port: 18671 }\n\
         \x20   binaries:\n      - { path: /bin/probe }\n",
    );
    let id_hint = "RESOLVER";
    let script = [
        p(
            "two",
            &format!("probe dns2 {id_hint} ok.nemo.test other.nemo.test"),
        ),
        p("name", "probe name ok.nemo.test 18671"),
        p("asked-ip", "probe connect 18671 203.0.113.20"),
        p("extra-ip", "probe connect 18671 203.0.113.66"),
    ]
    .concat();
    let id = unique("dns");
    let resolver = nemosandbox::netguard::prepare::resolver_address(&id).to_string();
    let b = bundle(&["sh", "-c", &script.replace(id_hint, &resolver)]);
    std::fs::write(
        b.path().join("rootfs/etc/resolv.conf"),
        "nameserver 203.0.113.53\noptions attempts:1 timeout:2\n",
    )
    .unwrap();
    net.join(&b);
    let out = rt.run(&[
        "--policy",
        &pol,
        "run",
        "--keep",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let audit =
        std::fs::read_to_string(rt.root.path().join(&id).join("audit.jsonl")).unwrap_or_default();
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    expect(
        &out,
        &[
            ("two", "REFUSED answers=0"),
            ("name", "ok"),
            ("asked-ip", "ok"),
            ("extra-ip", "EACCES"),
        ],
    );
    assert!(audit.contains("exactly one question"), "{audit}");
}

/// Attack 7: a policy binary on a writable path, rewritten in place or replaced, loses its
/// rights; a binary installed later under a glob still gets them (covered in network.rs).
#[test]
fn a_rewritten_or_replaced_binary_loses_its_rights() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n    \"/app/**\": \"rwx\"\n\
         network_policies:\n  app:\n    endpoints:\n      - { host: 127.0.0.1, port: 18681 }\n\
         \x20   binaries:\n      - { path: /app/probe }\n      - { path: /app/other }\n",
    );
    let lint = rt.run(&["policy", "lint", &pol]);
    let lint_out =
        String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
    assert!(lint.status.success(), "{lint_out}");
    assert!(
        lint_out.contains("/app/probe") && lint_out.contains("writable"),
        "lint names the writable binary: {lint_out}"
    );
    let script = [
        p("before", "/app/probe connect 18681"),
        "cat /bin/probe > /app/other.new; ".to_string(),
        "cat /app/other.new > /app/probe; ".to_string(),
        p("rewritten", "/app/probe connect 18681"),
        p("untouched", "/app/other connect 18681"),
        "cp /app/other /app/other.2; mv /app/other.2 /app/other; ".to_string(),
        p("replaced", "/app/other connect 18681"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    let app = b.path().join("rootfs/app");
    std::fs::create_dir_all(&app).unwrap();
    // Copies, not links to the shared probe: the test writes to them.
    for f in ["probe", "other"] {
        std::fs::copy(probe(), app.join(f)).unwrap();
    }
    let id = unique("bin");
    let out = rt.run(&[
        "--policy",
        &pol,
        "run",
        "--keep",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let audit =
        std::fs::read_to_string(rt.root.path().join(&id).join("audit.jsonl")).unwrap_or_default();
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    expect(
        &out,
        &[
            ("before", "ok"),
            ("rewritten", "EACCES"),
            ("untouched", "ok"),
            ("replaced", "EACCES"),
        ],
    );
    assert!(audit.contains("binary modified"), "{audit}");
    assert!(audit.contains("binary replaced"), "{audit}");
}

/// Attack 8: an agent keeps a stream open across the revocation of the policy that allowed
/// it. `policy update --remove` cuts it within a second; a stream another policy allowed
/// stays up.
#[test]
fn revoking_a_policy_cuts_the_connections_it_allowed() {
    let rt = Runtime::new();
    // Another key than the preset's ("local"): the preset adds, it does not replace.
    let base = probe_policy(&rt, &[18692]);
    let base = {
        let p = format!("{base}.keep.yaml");
        std::fs::write(
            &p,
            std::fs::read_to_string(&base)
                .unwrap()
                .replace("  local:", "  keep:"),
        )
        .unwrap();
        p
    };
    let preset = localnet_preset(&rt.root.path().join("presets"), 18691);
    let b = bundle(&["probe", "hold", "18691", "18692", "60", "/tmp/hold"]);
    host_network(&b);
    let c = Running::start(&rt, &base, &["--preset", preset.to_str().unwrap()], &b);
    wait_for("both streams up", Duration::from_secs(20), || {
        c.file("/tmp/hold").starts_with("a=up at=0.00 b=up")
    });
    let removed = Instant::now();
    rt.ok(&["policy", "update", &c.id, "--remove", "localnet"]);
    wait_for(
        "the revoked stream ends",
        Duration::from_millis(1000),
        || !c.file("/tmp/hold").starts_with("a=up"),
    );
    let took = removed.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let held = c.file("/tmp/hold");
    let fields: HashMap<&str, &str> = held
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    assert!(
        ["EOF", "EPIPE", "ECONNRESET", "ENOTCONN"].contains(&fields["a"]),
        "{held}"
    );
    assert_eq!(fields["b"], "up", "{held}");
    eprintln!("revoked stream ended {took:?} after the update started");
}

/// The cgroup v2 mount point of this host.
fn v2_mount() -> std::path::PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mnt = pre.split_whitespace().nth(4)?;
            post.starts_with("cgroup2 ")
                .then(|| std::path::PathBuf::from(mnt))
        })
        .expect("a cgroup2 mount (the fence made one if the host had none)")
}

/// The fence judges the task, not only its cgroup: a container that can write its cgroup
/// files and moves a process into the guard's cgroup still meets it.
#[test]
fn joining_the_guards_cgroup_does_not_open_the_fence() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n    \"/cg/**\": \"rwx\"\n\
         network_policies:\n  local:\n    endpoints:\n      - { host: 127.0.0.1, port: 18701 }\n\
         \x20   binaries:\n      - { path: /bin/probe }\n",
    );
    let v2 = v2_mount();
    let b = bundle(&["sleep", "1000"]);
    host_network(&b);
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/cg", "type": "bind", "source": v2, "options": ["rbind", "rw"]
        }));
    });
    let c = Running::start(&rt, &pol, &[], &b);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            rt.root
                .path()
                .join(".nemosandbox")
                .join(&c.id)
                .join("meta.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let guard = Path::new(meta["fence"]["guard"].as_str().unwrap());
    let rel = guard.strip_prefix(&v2).unwrap().display().to_string();
    let out = c.exec_sh(&format!(
        "echo $$ > /cg/{rel}/cgroup.procs && echo moved: $(grep -c nemosandbox-guard /proc/self/cgroup); \
         echo \"swap: $(probe swap udp 18702 5)\"; echo \"allowed: $(probe udp 127.0.0.1 18701)\""
    ));
    let r = results(&out);
    assert_eq!(r.get("moved").map(String::as_str), Some("1"), "{out}");
    let full = nemosandbox::netguard::fence::probe() == Ok(true);
    let swap = r["swap"].clone();
    eprintln!("in the guard's cgroup: {swap}");
    if full {
        assert!(
            swap.contains("reached=0") && !swap.contains("BREACH"),
            "{out}"
        );
        // Its own connects go through the guard as before.
        assert_eq!(r["allowed"], "ok", "{out}");
    } else {
        // Before Linux 6.10 the fence checks the cgroup only; doctor says so.
        let doctor = rt.ok(&["doctor"]);
        assert!(doctor.contains("cgroup check only"), "{doctor}");
    }
}

/// `sandbox` shares the host's network and sees its files: no host daemon's unix socket (under
/// `/run`, or abstract) can be reached from it, the runtime's state is not visible, and a
/// socket of its own works.
#[test]
fn the_sandbox_reaches_no_host_daemon_and_sees_no_runtime_state() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
    let rt = Runtime::new();
    // Another container's state under the same runtime root.
    let b = bundle(&["sleep", "1000"]);
    let other = unique("other");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &other]);
    // Host daemons: one under /run, one elsewhere on the host (a read-only path inside the
    // sandbox), a datagram one, and an abstract one.
    let name = unique("daemon");
    let run_path = format!("/run/{name}.sock");
    let dir = std::path::PathBuf::from(format!("/var/lib/{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    /// Removes the host paths the test made, also when it fails.
    struct Cleanup(Vec<std::path::PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    let _cleanup = Cleanup(vec![dir.clone(), format!("/run/{name}.sock").into()]);
    let var_path = dir.join("d.sock");
    let dgram_path = dir.join("g.sock");
    let run_daemon = UnixListener::bind(&run_path).unwrap();
    let var_daemon = UnixListener::bind(&var_path).unwrap();
    let dgram_daemon = UnixDatagram::bind(&dgram_path).unwrap();
    let abstract_daemon =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    for l in [&run_daemon, &var_daemon, &abstract_daemon] {
        l.set_nonblocking(true).unwrap();
    }
    dgram_daemon.set_nonblocking(true).unwrap();
    let state = rt.root.path().join(&other);
    let script = dir.join("attack.py");
    std::fs::write(
        &script,
        format!(
            r#"import os, socket, threading
def step(name, f):
    try:
        r = f()
        print(name + ':', 'ok' if r is None else r)
    except OSError as e:
        print(name + ':', 'errno%d' % e.errno)
def c(a):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(a); return 'ok'
    except OSError as e:
        return 'errno%d' % e.errno
def send(a):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b'x', a)
step('run', lambda: c('{run_path}'))
step('host', lambda: c('{var}'))
os.chdir('{dir}')
step('relative', lambda: c('d.sock'))
os.chdir('/')
step('abstract', lambda: c('\0{name}'))
step('dgram', lambda: send('{dgram}'))
keep = []
def own():
    s = socket.socket(socket.AF_UNIX); keep.append(s); s.bind('/tmp/own.sock'); s.listen(4096)
    return c('/tmp/own.sock')
step('own', own)
def own_dgram():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind('/tmp/own.dgram')
    send('/tmp/own.dgram')
step('own-dgram', own_dgram)
def listen_abstract():
    s = socket.socket(socket.AF_UNIX); keep.append(s); s.bind('\0own-{name}'); s.listen()
step('listen-abstract', listen_abstract)
step('own-abstract', lambda: c('\0own-{name}'))
os.symlink('{var}', '/tmp/link.sock')
step('link', lambda: c('/tmp/link.sock'))
# The name flips between the sandbox's own socket and a link to the host's while connects run.
stop = False
def flip():
    while not stop:
        try:
            os.symlink('{var}', '/tmp/flip.tmp'); os.rename('/tmp/flip.tmp', '/tmp/flip.sock')
            os.symlink('/tmp/own.sock', '/tmp/flip.tmp'); os.rename('/tmp/flip.tmp', '/tmp/flip.sock')
        except OSError:
            pass
t = threading.Thread(target=flip); t.start()
results = [c('/tmp/flip.sock') for _ in range(1500)]
stop = True; t.join()
print('flip-own:', 'some' if results.count('ok') > 0 else 'none')
def listen_any():
    t = socket.socket(); t.bind(('0.0.0.0', 0)); t.listen()
step('listen-any', listen_any)
step('bind-port', lambda: socket.socket().bind(('0.0.0.0', 18089)))
def listen_loopback():
    t = socket.socket(); t.bind(('127.0.0.1', 0)); t.listen()
step('listen-loopback', listen_loopback)
step('reuseport', lambda: socket.socket().setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1))
# A full datagram peer, and a socket flipped between blocking and not while it sends there:
# the guard must never wait in the call itself (the sandbox's every later call would wait).
def wedge():
    import subprocess, time
    r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); keep.append(r); r.bind('/tmp/full')
    w = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); w.setblocking(False)
    try:
        while True:
            w.sendto(b'x' * 512, '/tmp/full')
    except OSError:
        pass
    def toggle():
        while True:
            w.setblocking(True); w.setblocking(False)
    def sends():
        while True:
            try:
                w.sendto(b'x', '/tmp/full')
            except OSError:
                pass
    for f in (toggle, sends):
        threading.Thread(target=f, daemon=True).start()
    time.sleep(2)
    try:
        subprocess.run(['true'], timeout=10)
        return 'alive'
    except subprocess.TimeoutExpired:
        return 'wedged'
step('wedge', wedge)
print('run-entries:', len(os.listdir('/run')))
print('runtime-state:', os.path.exists('{state}'), flush=True)
os._exit(0)
"#,
            var = var_path.display(),
            dir = dir.display(),
            dgram = dgram_path.display(),
            state = state.display(),
        ),
    )
    .unwrap();
    let unix_fence = nemosandbox::netguard::fence::unix_hooks();
    // Without network policies the sandbox has its own network namespace; with them it
    // shares the host's (a preset that allows nothing local).
    for egress in [false, true] {
        let mut argv = vec![];
        if egress {
            argv.extend(["--preset", "github"]);
        }
        argv.extend(["sandbox", "--", "python3", script.to_str().unwrap()]);
        let out = rt.run(&argv);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut want = vec![
            ("listen-loopback", "ok"),
            ("run-entries", "0"),
            ("runtime-state", "False"),
            ("host", "errno13"),
            ("relative", "errno13"),
            ("link", "errno13"),
            ("dgram", "errno13"),
        ];
        if unix_fence {
            // The sandbox's own sockets, on its own /tmp, work.
            want.extend([
                ("wedge", "alive"),
                ("run", "errno2"),
                ("own", "ok"),
                ("own-dgram", "ok"),
                ("flip-own", "some"),
            ]);
        } else {
            // Without the kernel's unix hooks no unix socket can be made at all.
            want.extend([
                ("run", "errno13"),
                ("own", "errno13"),
                ("own-dgram", "errno13"),
                ("flip-own", "none"),
                ("listen-abstract", "errno13"),
                ("own-abstract", "errno13"),
            ]);
        }
        if egress {
            want.extend([
                ("listen-any", "errno13"),
                ("bind-port", "errno1"),
                ("abstract", "errno13"),
                ("listen-abstract", "errno13"),
                ("own-abstract", "errno13"),
                ("reuseport", "errno1"),
            ]);
        } else {
            want.extend([
                ("listen-any", "ok"),
                ("bind-port", "ok"),
                ("reuseport", "ok"),
            ]);
            if unix_fence {
                want.extend([
                    ("abstract", "errno111"),
                    ("listen-abstract", "ok"),
                    ("own-abstract", "ok"),
                ]);
            }
        }
        eprintln!("egress={egress}:\n{stdout}");
        expect(&stdout, &want);
        for (what, l) in [
            ("/run", &run_daemon),
            ("/var/lib", &var_daemon),
            ("abstract", &abstract_daemon),
        ] {
            assert!(l.accept().is_err(), "the {what} daemon got a connection");
        }
        assert!(
            dgram_daemon.recv(&mut [0u8; 8]).is_err(),
            "a datagram arrived"
        );
    }
    rt.remove(&other);
}

/// The sandbox's root is the host's, read-only: a host daemon's socket in the working
/// directory (under a 0700 directory, the socket itself 0666) is not the sandbox's to connect,
/// and a filesystem the host mounts after start (a USB stick, an engine's overlay) neither
/// appears inside nor becomes writable there.
#[test]
fn the_sandbox_reaches_no_host_socket_in_its_working_directory_or_on_later_mounts() {
    use std::io::{BufRead, Write};
    use std::os::unix::net::UnixListener;
    let rt = Runtime::new();
    let name = unique("work");
    let dir = std::path::PathBuf::from(format!("/var/lib/{name}"));
    let late = dir.join("late");
    let private = dir.join("private");
    std::fs::create_dir_all(&late).unwrap();
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0.join("late"), nix::mount::MntFlags::MNT_DETACH);
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    // A shared mount, as systemd makes every host mount: what the host mounts below it
    // propagates to copies that are its slaves.
    let bind = |flags: nix::mount::MsFlags| {
        nix::mount::mount(Some(&dir), &dir, None::<&str>, flags, None::<&str>).unwrap()
    };
    bind(nix::mount::MsFlags::MS_BIND);
    bind(nix::mount::MsFlags::MS_SHARED);
    let daemon = UnixListener::bind(private.join("d.sock")).unwrap();
    std::fs::set_permissions(
        private.join("d.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    daemon.set_nonblocking(true).unwrap();
    let script = r#"import socket, sys
def step(name, f):
    try:
        r = f()
        print(name + ':', 'ok' if r is None else r, flush=True)
    except OSError as e:
        print(name + ':', 'errno%d' % e.errno, flush=True)
step('work-host', lambda: socket.socket(socket.AF_UNIX).connect('private/d.sock'))
print('ready', flush=True)
sys.stdin.readline()
step('late-connect', lambda: socket.socket(socket.AF_UNIX).connect('late/l.sock'))
step('late-write', lambda: open('late/x', 'w').close())
"#;
    std::fs::write(dir.join("attack.py"), script).unwrap();
    let mut cmd = rt.command(&["sandbox", "--", "python3", "attack.py"]);
    cmd.current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stdout += &line;
        stdout += "\n";
        if line == "ready" {
            break;
        }
    }
    // The host mounts a filesystem below the sandbox's working directory and listens there.
    nix::mount::mount(
        Some("tmpfs"),
        &late,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let late_daemon = UnixListener::bind(late.join("l.sock")).unwrap();
    late_daemon.set_nonblocking(true).unwrap();
    writeln!(stdin, "go").unwrap();
    for line in lines {
        stdout += &line.unwrap();
        stdout += "\n";
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success());
    // With the unix hooks (Linux 6.7) the later mount is simply not there (ENOENT); without
    // them the sandbox may not create unix sockets at all (EACCES), and says so at start.
    let hooks = kernel().unix_hooks;
    expect(
        &stdout,
        &[
            ("work-host", "errno13"),
            ("late-connect", if hooks { "errno2" } else { "errno13" }),
            ("late-write", "errno30"),
        ],
    );
    assert_eq!(
        stderr.contains("no cgroup unix socket hooks"),
        !hooks,
        "the warning must match the kernel"
    );
    assert!(daemon.accept().is_err(), "the host daemon got a connection");
    assert!(late_daemon.accept().is_err(), "the late daemon got one");
    assert!(
        !late.join("x").exists(),
        "the sandbox wrote on the host's later mount"
    );
}

/// Landlock grants are what their paths named at create: a grant directory under a writable
/// parent, swapped for a link to `/`, gives a later `exec` no extra rights.
#[test]
fn a_grant_swapped_for_a_link_gives_later_execs_nothing() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n    \"/sandbox/**\": \"rw-\"\n    \"/sandbox/tools/**\": \"rwx\"\n",
    );
    let b = bundle(&["sleep", "1000"]);
    let r = b.path().join("rootfs");
    std::fs::create_dir_all(r.join("sandbox/tools")).unwrap();
    for f in ["sandbox/tools/ok", "sandbox/evil"] {
        std::fs::copy(probe(), r.join(f)).unwrap();
    }
    let c = Running::start(&rt, &pol, &[], &b);
    let run = |argv: &[&str]| {
        let mut a = vec!["exec", c.id.as_str()];
        a.extend_from_slice(argv);
        rt.run(&a).status.success()
    };
    assert!(
        run(&["/sandbox/tools/ok", "memfd"]),
        "the grant's own program runs"
    );
    assert!(
        !run(&["/sandbox/evil", "memfd"]),
        "no execute right outside the grant"
    );
    c.exec_sh("rm -rf /sandbox/tools && ln -s / /sandbox/tools && echo swapped");
    assert!(
        std::fs::read_link(format!("/proc/{}/root/sandbox/tools", c.init())).is_ok(),
        "the workload swapped the grant for a link"
    );
    assert!(
        !run(&["/sandbox/evil", "memfd"]),
        "the link gave the exec execute rights on /"
    );
    assert!(
        run(&["/bin/probe", "memfd"]),
        "the rest of the layout is unchanged"
    );
}
