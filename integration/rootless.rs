//! `nemosandbox sandbox` run by an ordinary user: no root, no capability, no setuid helper.
//! The suite creates that user (with subordinate id ranges, as `useradd` gives them) and runs
//! the real binary as it through `setpriv`, with the environment a login would give.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::*;

const NAME: &str = "nemo-rootless";

/// The ordinary user, created once per machine.
struct User {
    uid: u32,
    gid: u32,
    home: PathBuf,
    /// The runtime binary, copied where the user can run it whatever the checkout's modes.
    bin: PathBuf,
}

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, NAME]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn user() -> &'static User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(|| {
        if id_of("-u").is_none() {
            let ok = Command::new("useradd")
                .args(["--create-home", "--shell", "/bin/sh", NAME])
                .status()
                .unwrap()
                .success();
            assert!(ok || id_of("-u").is_some(), "useradd {NAME} failed");
        }
        let has_range = |file: &str| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(&format!("{NAME}:")))
        };
        if !has_range("/etc/subuid") || !has_range("/etc/subgid") {
            let ok = Command::new("usermod")
                .args([
                    "--add-subuids",
                    "300000-365535",
                    "--add-subgids",
                    "300000-365535",
                    NAME,
                ])
                .status()
                .unwrap()
                .success();
            assert!(ok, "usermod --add-subuids {NAME} failed");
        }
        let (uid, gid) = (id_of("-u").unwrap(), id_of("-g").unwrap());
        let home = PathBuf::from(format!("/home/{NAME}"));
        let dir = Path::new("/var/lib/nemosandbox-tests/rootless-bin");
        std::fs::create_dir_all(dir).unwrap();
        own(dir, 0, 0, 0o755);
        let bin = dir.join(format!("nemosandbox-{}", std::process::id()));
        std::fs::copy(common::bin(), &bin).unwrap();
        own(&bin, 0, 0, 0o755);
        User {
            uid,
            gid,
            home,
            bin,
        }
    })
}

fn own(path: &Path, uid: u32, gid: u32, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl User {
    /// `nemosandbox ARGS…` as the user, in project `p`, with a login's environment.
    fn nemosandbox(&self, p: &Project, args: &[&str]) -> Command {
        self.as_user(Command::new("setpriv"), p, args)
    }

    /// Like `nemosandbox`, seeing `resolv_conf` as `/etc/resolv.conf` (a mount namespace of
    /// its own, made as root before dropping to the user): its nameservers are the sandbox's
    /// upstream.
    fn nemosandbox_resolving(&self, p: &Project, resolv_conf: &Path, args: &[&str]) -> Command {
        // A guard that stops answering would hold the command for good: killed after two
        // minutes, so such a failure shows as one.
        let mut c = Command::new("timeout");
        c.args([
            "-s",
            "KILL",
            "120",
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c"])
        .arg("mount --bind \"$0\" /etc/resolv.conf && exec setpriv \"$@\"")
        .arg(resolv_conf);
        self.as_user(c, p, args)
    }

    fn as_user(&self, c: Command, p: &Project, args: &[&str]) -> Command {
        self.running(c, p, self.bin.as_os_str(), args)
    }

    /// `c` (setpriv and what it wraps) running `program ARGS…` as the user, with a login's
    /// environment, in project `p`.
    fn running(
        &self,
        mut c: Command,
        p: &Project,
        program: &std::ffi::OsStr,
        args: &[&str],
    ) -> Command {
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--inh-caps=-all")
            .arg(program)
            .args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", NAME)
            .env("LOGNAME", NAME)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("XDG_RUNTIME_DIR", &p.runtime_dir)
            .current_dir(&p.dir)
            .stdin(Stdio::null());
        c
    }

    fn sandbox(&self, p: &Project, args: &[&str]) -> Output {
        let mut all = vec!["sandbox"];
        all.extend(args);
        self.nemosandbox(p, &all).output().unwrap()
    }

    /// A directory of the user's (its project) and a runtime directory of its own, as a
    /// login would give (`$XDG_RUNTIME_DIR`; no logind on a test host), so tests running at
    /// once see only their own state. Both are removed at the end.
    fn project(&self, name: &str) -> Project {
        let dir = self.home.join(unique(name));
        std::fs::create_dir(&dir).unwrap();
        own(&dir, self.uid, self.gid, 0o755);
        let runtime_dir = Path::new("/var/lib/nemosandbox-tests").join(unique("xdg"));
        std::fs::create_dir_all(&runtime_dir).unwrap();
        own(&runtime_dir, self.uid, self.gid, 0o700);
        Project { dir, runtime_dir }
    }

    /// The user's state root holds nothing of a container once `sandbox` has returned.
    fn assert_no_state_left(&self, p: &Project) {
        let root = p.runtime_dir.join("nemosandbox");
        let entries = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let top: Vec<String> = entries(&root)
            .into_iter()
            .filter(|e| e != ".nemosandbox")
            .collect();
        assert!(top.is_empty(), "left in {}: {top:?}", root.display());
        // The program cache and the empty mount point of the host root are kept, as root's.
        let own: Vec<String> = entries(&root.join(".nemosandbox"))
            .into_iter()
            .filter(|e| e != ".bpf-cache" && e != ".sandbox-root")
            .collect();
        assert!(own.is_empty(), "left in the runtime's directory: {own:?}");
        let out = self.nemosandbox(p, &["list", "--quiet"]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "", "containers left");
    }
}

struct Project {
    dir: PathBuf,
    runtime_dir: PathBuf,
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_case(label: &str, path: &str) -> String {
    format!("touch {path} 2>/dev/null && echo '{label}: ok' || echo '{label}: denied'; ")
}

/// The user's sandbox writes its working directory, as the user (files belong to it on the
/// host), and nothing else of the host: not `/etc`, not the rest of its home. The exit code
/// is the command's. `--map-root` makes it uid 0 inside, still the user outside.
#[test]
fn without_root_the_sandbox_writes_the_workdir_as_the_user() {
    let u = user();
    let proj = u.project("proj");
    let script = [
        "echo \"ids: $(id -u) $(id -g)\"; ".to_string(),
        write_case("workdir", "made-inside"),
        write_case("etc", "/etc/nemo-rootless"),
        write_case(
            "home",
            &format!("{}/nemo-rootless-outside", u.home.display()),
        ),
        write_case("tmp", "/tmp/scratch"),
        "grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; exit 7".into(),
    ]
    .concat();
    let out = u.sandbox(&proj, &["--", "sh", "-c", &script]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", text(&out.stderr));
    for line in [
        format!("ids: {} {}", u.uid, u.gid).as_str(),
        "workdir: ok",
        "etc: denied",
        "home: denied",
        "tmp: ok",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "CapEff:\t0000000000000000",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
    }
    let made = std::fs::metadata(proj.dir.join("made-inside")).unwrap();
    assert_eq!((made.uid(), made.gid()), (u.uid, u.gid));
    assert!(!u.home.join("nemo-rootless-outside").exists());
    u.assert_no_state_left(&proj);

    let out = u.sandbox(
        &proj,
        &["--map-root", "--", "sh", "-c", "id -u; touch as-root"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "0");
    let made = std::fs::metadata(proj.dir.join("as-root")).unwrap();
    assert_eq!((made.uid(), made.gid()), (u.uid, u.gid));
    u.assert_no_state_left(&proj);
}

/// Host daemons the user could reach are not reachable from its sandbox: a unix socket of
/// the user's in its home (filesystem) and one in the host's abstract namespace. `/run` is
/// empty and a masked path reads nothing. The allowed twins: a socket pair inside works, and
/// an unmasked `/proc` file reads.
#[test]
fn without_root_host_sockets_and_masked_paths_stay_out_of_reach() {
    let u = user();
    let proj = u.project("sock");
    let path = u.home.join(unique("agent.sock"));
    let fs_listener = UnixListener::bind(&path).unwrap();
    own(&path, u.uid, u.gid, 0o600);
    fs_listener.set_nonblocking(true).unwrap();
    let name = unique("nemo-rootless-abstract");
    let abs_listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixListener::bind_addr(&addr).unwrap()
    };
    abs_listener.set_nonblocking(true).unwrap();
    let script = format!(
        r#"
import socket
def attempt(label, addr):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(addr)
        print(label + ": connected")
    except OSError as e:
        print(label + ": refused", e.errno)
attempt("home-socket", "{path}")
attempt("abstract", "\0{name}")
a, b = socket.socketpair()
a.send(b"x")
print("socketpair:", b.recv(1).decode())
try:
    print("kcore:", len(open("/proc/kcore", "rb").read(16)))
except OSError as e:
    print("kcore: refused", e.errno)
import os
print("run:", sorted(os.listdir("/run")))
print("status:", open("/proc/self/status").read().startswith("Name:"))
"#,
        path = path.display()
    );
    let out = u.sandbox(&proj, &["--", "python3", "-c", &script]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for want in [
        "home-socket: refused",
        "abstract: refused",
        "socketpair: x",
        "run: []",
        "status: True",
    ] {
        assert!(stdout.contains(want), "{want:?} in {stdout}");
    }
    assert!(
        stdout.contains("kcore: 0") || stdout.contains("kcore: refused"),
        "{stdout}"
    );
    for l in [&fs_listener, &abs_listener] {
        assert!(l.accept().is_err(), "a host socket got a connection");
    }
    let _ = std::fs::remove_file(&path);
    u.assert_no_state_left(&proj);
}

/// The attacks on relayed egress, each beside its allowed twin (see `relayed_egress`).
const RELAY_SCRIPT: &str = r#"
import ctypes, errno, os, signal, socket, struct, sys, threading
signal.alarm(30)
P, U, E, C = (int(a) for a in sys.argv[1:5])
libc = ctypes.CDLL(None, use_errno=True)
def ok(rc):
    if rc < 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
    return rc
def err(e): return "errno%d" % e.errno if isinstance(e, OSError) and e.errno else type(e).__name__
def case(label, f):
    try: print(label + ": " + str(f()))
    except Exception as e: print(label + ": " + err(e))
    sys.stdout.flush()
def tcp():
    s = socket.create_connection(("loop.nemo.test", P), timeout=5)
    return s.recv(5).decode()
case("tcp-by-name", tcp)
case("other-name", lambda: socket.getaddrinfo("other.nemo.test", P))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
case("udp-allowed", lambda: u.sendto(b"ok", ("127.0.0.1", U)))
case("udp-elsewhere", lambda: u.sendto(b"evil", ("127.0.0.1", E)))
resolver = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
# The relayed socket is the host's now: the host's port 53 at the resolver's address is not
# the sandbox's resolver.
case("relayed-to-resolver", lambda: u.sendto(b"\0" * 12, (resolver, 53)))
case("fresh-to-resolver", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"\0" * 12, (resolver, 53)))
# A relayed stream is the host's: it may not listen there, nor give its port back
# (AF_UNSPEC) for a bind of the workload's choosing; one whose connect failed has given it
# back, and may not bind.
t = socket.create_connection(("127.0.0.1", P), timeout=5)
unspec = ctypes.create_string_buffer(16)
case("disconnect-relayed", lambda: ok(libc.connect(t.fileno(), unspec, 16)))
case("listen-relayed", lambda: t.listen(1) or "listening")
case("disconnect-relayed-udp", lambda: ok(libc.connect(u.fileno(), unspec, 16)))
f = socket.socket(); f.setblocking(False)
case("connect-closed", lambda: errno.errorcode.get(f.connect_ex(("127.0.0.1", C)), "0"))
f.setblocking(True)
case("bind-failed-relayed", lambda: f.bind(("0.0.0.0", 0)) or "bound")
own = socket.socket()
case("bind-own", lambda: own.bind(("127.0.0.1", 0)) or "ok")
case("listen-own", lambda: own.listen(1) or "ok")
# The guard binds on its copy, with its user's rights over the sandbox's network: a port
# below 1024 stays the workload's to ask for, and it holds no capability.
case("bind-low-port", lambda: socket.socket().bind(("127.0.0.1", 80)) or "bound")
# Local calls are the guard's to make: the kernel's netlink answers, another port does not;
# a unix path is never looked up on the host.
n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
case("netlink-kernel", lambda: n.sendto(bytes(16), (0, 0)))
case("netlink-group", lambda: n.sendto(bytes(16), (0, 1)))
case("netlink-bind-group", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).bind((0, 1)) or "bound")
sa, sb = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
case("unix-path", lambda: sa.sendto(b"x", "/run/user/0/bus"))
case("unix-pair", lambda: sa.send(b"y") and sb.recv(1).decode())
# The swap: a call on a local socket that the guard let continue would find the relayed
# datagram socket under its number, connect it anywhere, and send past the guard.
a, b = socket.socketpair()
num, keep = a.fileno(), os.dup(a.fileno())
evil = ctypes.create_string_buffer(
    socket.AF_INET.to_bytes(2, "little") + E.to_bytes(2, "big") + socket.inet_aton("127.0.0.1") + bytes(8), 16)
stop = False
def swap():
    while not stop:
        os.dup2(u.fileno(), num); os.dup2(keep, num)
th = threading.Thread(target=swap); th.start()
connected = 0
for i in range(3000):
    if libc.connect(num, evil, 16) == 0:
        connected += 1
        libc.send(num, b"raced", 5, socket.MSG_DONTWAIT)
stop = True; th.join()
print("race-connected: %d" % connected)
# Zero-copy: the guard sends from its own buffer, copied; no completion ever comes back.
def zerocopy():
    u.setsockopt(socket.SOL_SOCKET, 60, 1)
    u.sendto(b"zc", 0x4000000, ("127.0.0.1", U))
    import time; time.sleep(0.2)
    u.recvmsg(64, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    return "completion"
case("zerocopy", zerocopy)
# Last: without its fix this one stops the guard for good.
# Control data whose length wraps when rounded up: refused, and the guard goes on answering.
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int)]
def raw_sendmsg(sock, control):
    dest = struct.pack("=H", socket.AF_INET) + struct.pack(">H", U) + socket.inet_aton("127.0.0.1") + bytes(8)
    data, name, ctl = (ctypes.create_string_buffer(b, len(b)) for b in (b"x", dest, control))
    iov = iovec(ctypes.cast(data, ctypes.c_void_p), 1)
    m = msghdr(ctypes.cast(name, ctypes.c_void_p), len(dest), ctypes.pointer(iov), 1,
               ctypes.cast(ctl, ctypes.c_void_p), len(control), 0)
    return ok(libc.sendmsg(sock.fileno(), ctypes.byref(m), 0))
case("wrapping-cmsg", lambda: raw_sendmsg(u, struct.pack("=Qii", 2**64 - 7, socket.IPPROTO_IP, 0) + bytes(8)))
case("after-wrapping", lambda: u.sendto(b"again", ("127.0.0.1", U)))
"#;

/// Egress without root: the sandbox keeps its own loopback-only network and the guard
/// relays, per binary, what the policy allows. Each attack sits beside its allowed twin:
/// - python (named by the policy) reaches the host's server by name, through the sandbox's
///   resolver and the host's nameserver; curl, not named, is refused at the same address;
/// - a name the policy does not cover is never asked upstream;
/// - an allowed datagram arrives, one to another port of the same host does not;
/// - a relayed datagram socket cannot reach port 53 of the resolver's address on the host;
/// - a relayed socket cannot listen, dissolve its association (which gives its host port
///   back) or, once its connect failed, bind on the host's network; the sandbox's own socket
///   binds and listens, but not on a port below 1024 (the guard could, the workload may not);
/// - control data whose length wraps is refused and the guard goes on answering; a zero-copy
///   send is made as a copy (no completion comes back from the guard's buffer);
/// - the guard makes local calls itself, so they name only the kernel over netlink (a group
///   is refused EPERM, as the kernel would refuse the workload) and never a unix path (which
///   would be the host's); a socket pair works;
/// - a local socket swapped for the relayed one under a connect (another thread's `dup2`)
///   never connects it: the guard makes local calls itself, it never lets them continue.
#[test]
fn without_root_egress_is_relayed_per_binary() {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, UdpSocket};
    let u = user();
    let proj = u.project("relay");
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = accepted.clone();
    std::thread::spawn(move || {
        for mut c in server.incoming().flatten() {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = c.write_all(b"hello");
            let _ = c.read(&mut [0u8; 1]);
        }
    });
    let allowed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let evil = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&allowed, &evil] {
        s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
    }
    let (up, ep) = (
        allowed.local_addr().unwrap().port(),
        evil.local_addr().unwrap().port(),
    );
    // Allowed, and nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ns_ip = Ipv4Addr::new(127, 77, 0, 53);
    let records = [
        ("loop.nemo.test", Ipv4Addr::LOCALHOST),
        ("other.nemo.test", Ipv4Addr::LOCALHOST),
    ];
    let dns = common::net::TestDns::start("/proc/self/ns/net", ns_ip, &records);
    let resolv = proj.runtime_dir.join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {ns_ip}\n")).unwrap();
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let policy = proj.dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nnetwork_policies:\n  loop:\n    endpoints:\n\
             \x20     - {{ host: loop.nemo.test, port: {port}, allowed_ips: [127.0.0.1] }}\n\
             \x20     - {{ host: 127.0.0.1, port: {up} }}\n\
             \x20     - {{ host: 127.0.0.1, port: {closed} }}\n\
             \x20   binaries:\n      - {{ path: {} }}\n",
            python.display()
        ),
    )
    .unwrap();
    let script = proj.dir.join("relay.py");
    std::fs::write(&script, RELAY_SCRIPT).unwrap();
    let curl =
        format!("curl -s -o /dev/null --max-time 5 http://127.0.0.1:{port}/; echo curl-exit: $?");
    let cmd = format!(
        "{curl}; python3 {} {port} {up} {ep} {closed}",
        script.display()
    );
    let out = u
        .nemosandbox_resolving(
            &proj,
            &resolv,
            &[
                "--policy",
                policy.to_str().unwrap(),
                "sandbox",
                "--",
                "sh",
                "-c",
                &cmd,
            ],
        )
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let eacces = format!("errno{}", libc::EACCES);
    let (eagain, eperm) = (
        format!("errno{}", libc::EAGAIN),
        format!("errno{}", libc::EPERM),
    );
    for (what, want) in [
        ("tcp-by-name", "hello"),
        ("udp-allowed", "2"),
        ("udp-elsewhere", eacces.as_str()),
        ("relayed-to-resolver", eacces.as_str()),
        ("listen-relayed", eacces.as_str()),
        ("disconnect-relayed", eacces.as_str()),
        ("disconnect-relayed-udp", eacces.as_str()),
        ("connect-closed", "EINPROGRESS"),
        ("bind-failed-relayed", eacces.as_str()),
        ("bind-own", "ok"),
        ("listen-own", "ok"),
        ("bind-low-port", eacces.as_str()),
        ("wrapping-cmsg", eacces.as_str()),
        ("after-wrapping", "5"),
        ("zerocopy", &eagain),
        ("netlink-kernel", "16"),
        ("netlink-group", &eperm),
        ("netlink-bind-group", &eperm),
        ("unix-path", eacces.as_str()),
        ("unix-pair", "y"),
        ("race-connected", "0"),
        // curl's "could not connect": the guard refused it.
        ("curl-exit", "7"),
    ] {
        let line = format!("{what}: {want}");
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }
    // Asked of the real resolver inside: a refused name fails, an empty query is answered.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("other-name: ") && l != "other-name: ok"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "fresh-to-resolver: 12"),
        "{stdout}"
    );
    let mut buf = [0u8; 16];
    let (n, _) = allowed.recv_from(&mut buf).expect("the allowed datagram");
    assert_eq!(&buf[..n], b"ok");
    assert!(
        evil.recv_from(&mut buf).is_err(),
        "a datagram got past the guard"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "python's two connections, not curl's"
    );
    let asked = dns.asked();
    assert!(
        asked.iter().any(|n| n.starts_with("loop.nemo.test")),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|n| n.starts_with("other")), "{asked:?}");
    u.assert_no_state_left(&proj);
}

/// Layer-7 rules need the proxy, which listens inside the sandbox's network namespace: as an
/// ordinary user they are refused with the reason, and nothing is left behind.
#[test]
fn without_root_http_rules_are_refused_not_weakened() {
    let u = user();
    let proj = u.project("l7");
    let policy = proj.dir.join("l7.yaml");
    std::fs::write(
        &policy,
        "version: 1\nnetwork_policies:\n  api:\n    endpoints:\n\
         \x20     - host: api.nemo.test\n        port: 443\n        protocol: rest\n\
         \x20       rules:\n          - allow: { method: GET, path: \"/**\" }\n\
         \x20   binaries:\n      - { path: /usr/bin/curl }\n",
    )
    .unwrap();
    let out = u
        .nemosandbox(
            &proj,
            &[
                "--policy",
                policy.to_str().unwrap(),
                "sandbox",
                "--",
                "true",
            ],
        )
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("HTTP rules need root"), "{stderr}");
    u.assert_no_state_left(&proj);
}

/// Without `$XDG_RUNTIME_DIR` the state root is `nemosandbox-UID` in the temporary
/// directory, made private (0700). One another user made first is refused, not used.
#[test]
fn without_root_the_state_root_must_be_the_users_own() {
    let u = user();
    let proj = u.project("state");
    let tmp = Path::new("/var/lib/nemosandbox-tests").join(unique("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    own(&tmp, 0, 0, 0o1777);
    let planted = tmp.join(format!("nemosandbox-{}", u.uid));
    std::fs::create_dir(&planted).unwrap();
    own(&planted, 0, 0, 0o777);
    let run = || {
        let mut c = u.nemosandbox(&proj, &["sandbox", "--", "true"]);
        c.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", &tmp);
        c.output().unwrap()
    };
    let out = run();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("owned by uid 0, not by this user ({})", u.uid)),
        "{stderr}"
    );
    std::fs::remove_dir(&planted).unwrap();
    let out = run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made = std::fs::metadata(&planted).unwrap();
    assert_eq!((made.uid(), made.mode() & 0o7777), (u.uid, 0o700));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `doctor` run by the user says what holds without root, and does not fail for the fence it
/// cannot have.
#[test]
fn without_root_doctor_tells_what_holds() {
    let u = user();
    let proj = u.project("doctor");
    let out = u.nemosandbox(&proj, &["doctor"]).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let fence = stdout
        .lines()
        .find(|l| l.contains("cgroup bpf (network fence)"))
        .unwrap_or_default();
    assert!(fence.contains("needs root"), "{stdout}");
    let userns = stdout
        .lines()
        .find(|l| l.contains("user namespaces"))
        .unwrap_or_default();
    assert!(userns.contains("enabled"), "{stdout}");
    // The user's ranges, for rootless podman (useradd gave some, the suite adds more).
    let subids = stdout
        .lines()
        .find(|l| l.contains("subordinate ids"))
        .unwrap_or_default();
    assert!(subids.contains("newuidmap present"), "{stdout}");
    assert!(!subids.contains(" 0 uids"), "{stdout}");
}

/// A datagram socket of a pair could be aimed at any path: such pairs are refused, so a
/// host datagram socket of the user's (a syslog-style listener in its home) hears nothing.
/// Stream pairs, which cannot be redirected, still work.
#[test]
fn without_root_a_datagram_pair_cannot_reach_a_host_socket() {
    use std::os::unix::net::UnixDatagram;
    let u = user();
    let proj = u.project("dgram");
    let path = u.home.join(unique("dg.sock"));
    let host = UnixDatagram::bind(&path).unwrap();
    own(&path, u.uid, u.gid, 0o666);
    host.set_nonblocking(true).unwrap();
    let script = format!(
        r#"
import socket
for kind, name in [(socket.SOCK_DGRAM, "dgram"), (socket.SOCK_RAW, "raw")]:
    try:
        a, b = socket.socketpair(socket.AF_UNIX, kind)
        a.sendto(b"x", "{path}")
        print(name + ": sent")
    except OSError as e:
        print(name + ": refused", e.errno)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
a.send(b"y")
print("stream:", b.recv(1).decode())
"#,
        path = path.display()
    );
    let out = u.sandbox(&proj, &["--", "python3", "-c", &script]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let refused = format!("refused {}", libc::EACCES);
    for want in [
        format!("dgram: {refused}"),
        format!("raw: {refused}"),
        "stream: y".into(),
    ] {
        assert!(stdout.contains(&want), "{want:?} in {stdout}");
    }
    let mut buf = [0u8; 8];
    assert!(
        host.recv(&mut buf).is_err(),
        "the host socket got a datagram"
    );
    let _ = std::fs::remove_file(&path);
}

/// Without root, containers other than `sandbox` are refused before anything is made (not
/// even the state root), and no process can be exec'd into a running sandbox.
#[test]
fn without_root_create_and_exec_are_refused_up_front() {
    let u = user();
    let proj = u.project("verbs");
    let root = proj.runtime_dir.join("explicit-root");
    let out = u
        .nemosandbox(
            &proj,
            &[
                "--root",
                root.to_str().unwrap(),
                "create",
                "--bundle",
                "/nonexistent",
                "c1",
            ],
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("need root"),
        "{}",
        text(&out.stderr)
    );
    assert!(!root.exists(), "create made {}", root.display());

    let mut running = u
        .nemosandbox(&proj, &["sandbox", "--", "sleep", "30"])
        .spawn()
        .unwrap();
    let mut id = String::new();
    // Running, not only listed: an exec into a container still being created is refused
    // for that first.
    wait_until(|| {
        let out = u.nemosandbox(&proj, &["list", "--quiet"]).output().unwrap();
        id = text(&out.stdout).trim().to_string();
        !id.is_empty()
            && text(
                &u.nemosandbox(&proj, &["state", &id])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .contains("\"running\"")
    });
    let out = u
        .nemosandbox(&proj, &["exec", &id, "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot be exec'd into a sandbox run without root"),
        "{}",
        text(&out.stderr)
    );
    let out = u
        .nemosandbox(&proj, &["kill", &id, "KILL"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = running.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 9));
    u.assert_no_state_left(&proj);
}

/// A host address outside loopback, for servers a relayed container may reach.
const HOST_IP: &str = "198.18.77.1";

/// `HOST_IP` on the host's loopback interface while a test needs it.
struct HostAddress(&'static str);

impl HostAddress {
    fn add(ip: &'static str) -> HostAddress {
        let _ = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .status();
        HostAddress(ip)
    }
}

impl Drop for HostAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"])
            .status();
    }
}

/// Rootless podman, with the user's subordinate ids (`newuidmap`) and slirp4netns, in storage
/// and a runtime directory of the project's own (its run root is under the latter). Its pause process (which holds the user's
/// namespace) is killed when done, so nothing of the user's keeps running.
struct Podman<'a> {
    user: &'a User,
    proj: &'a Project,
    policy: PathBuf,
}

impl Podman<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-s", "KILL", "180", "setpriv"]);
        let storage = self.proj.dir.join("storage");
        let policy = format!("policy={}", self.policy.display());
        let mut all = vec![
            "--root",
            storage.to_str().unwrap(),
            "--runtime",
            self.user.bin.to_str().unwrap(),
            "--runtime-flag",
            &policy,
        ];
        all.extend(args);
        self.user
            .running(c, self.proj, std::ffi::OsStr::new("podman"), &all)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `podman ARGS…` fails, saying `why`.
    fn fails(&self, args: &[&str], why: &str) {
        let out = self.cmd(args).output().unwrap();
        assert!(!out.status.success(), "podman {args:?} succeeded");
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let pid = self.proj.runtime_dir.join("libpod/tmp/pause.pid");
        if let Some(pid) = std::fs::read_to_string(pid)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: a plain kill(2) of the test user's pause process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// `podman --runtime nemosandbox` as the user: run, exec, kill and delete work, with the
/// policy's Landlock, seccomp and network guard. The container does not join podman's
/// network (slirp4netns reaches out, and without the host's root there is no fence): it
/// gets a loopback-only one, and the guard relays what the policy allows, per binary. A
/// symlink guard is `partial` (no CAP_LINUX_IMMUTABLE outside the initial namespace), and
/// says why in the state. Sharing the host's network is refused, and nothing is left.
#[test]
fn without_root_podman_runs_execs_and_deletes_under_the_policy() {
    use std::io::{Read, Write};
    let u = user();
    let proj = u.project("podman");
    // Debian's udev makes the tun device everyone's; a bare test host may not have.
    let _ = Command::new("chmod")
        .args(["0666", "/dev/net/tun"])
        .status();
    // A host address that is not loopback: a container's loopback is its own.
    let _addr = HostAddress::add(HOST_IP);
    let serve = |ip: &str| {
        let server = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = accepted.clone();
        std::thread::spawn(move || {
            for mut c in server.incoming().flatten() {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
                let _ = c.read(&mut [0u8; 512]);
            }
        });
        (port, accepted)
    };
    let (port, _) = serve(HOST_IP);
    let (host_lo, host_lo_accepted) = serve("127.0.0.1");
    // A file of the user's on the host that a bind raced with a link must not touch.
    let canary = proj.dir.join("canary");
    std::fs::write(&canary, "secret").unwrap();
    own(&canary, u.uid, u.gid, 0o600);
    let canary_mode = || std::fs::metadata(&canary).unwrap().mode() & 0o7777;
    let img = proj.dir.join("img");
    make_busybox_rootfs(&img);
    // The same program under another name and inode: the policy names /bin/busybox only.
    std::fs::create_dir_all(img.join("opt")).unwrap();
    own(&img.join("tmp"), 0, 0, 0o1777);
    std::fs::copy(img.join("bin/busybox"), img.join("opt/wget")).unwrap();
    std::fs::copy(common::probe::probe(), img.join("bin/probe")).unwrap();
    std::fs::create_dir_all(img.join("sandbox/.oc-data")).unwrap();
    std::fs::create_dir_all(img.join("sandbox/.oc")).unwrap();
    std::fs::write(img.join("sandbox/.oc-data/c.json"), "{}").unwrap();
    std::os::unix::fs::symlink("/sandbox/.oc-data/c.json", img.join("sandbox/.oc/c.json")).unwrap();
    let policy = proj.dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nnetwork_policies:\n  loop:\n    endpoints:\n\
             \x20     - {{ host: {HOST_IP}, port: {port} }}\n\
             \x20     - {{ host: 127.0.0.1, port: {host_lo} }}\n\
             \x20     - {{ host: 0.0.0.0, port: {host_lo} }}\n\
             \x20     - {{ host: 127.0.0.1, port: 8080 }}\n\
             \x20   binaries:\n      - {{ path: /bin/busybox }}\n\
             symlink_guards:\n  - dir: /sandbox/.oc\n    target_dir: /sandbox/.oc-data\n"
        ),
    )
    .unwrap();
    let pm = Podman {
        user: u,
        proj: &proj,
        policy,
    };
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&img)
        .args(["-c", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut import = pm
        .cmd(&["import", "-q", "-", "localhost/nemo-rootless:t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(import.wait_with_output().unwrap().status.success());

    let id = pm.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "localhost/nemo-rootless:t",
        "sleep",
        "300",
    ]);
    let id = id.trim();
    let url = format!("http://{HOST_IP}:{port}/");
    let canary = canary.display();
    let script = format!(
        "echo allowed: $(wget -q -O- {url}); \
         /opt/wget -q -O- {url} >/dev/null 2>&1; echo other-binary: $?; \
         wget -q -O- http://127.0.0.1:{host_lo}/ >/dev/null 2>&1; echo host-loopback: $?; \
         wget -q -O- http://0.0.0.0:{host_lo}/ >/dev/null 2>&1; echo host-unspecified: $?; \
         echo page > /tmp/index.html; httpd -p 127.0.0.1:8080 -h /tmp; \
         echo own-loopback: $(wget -q -O- http://127.0.0.1:8080/); \
         echo unix: $(cd /tmp && probe unix); mkdir -m 0755 /tmp/rootonly; \
         echo peer: $(probe peercred 65534); \
         echo bindrace: $(probe bindrace {canary} 3000); \
         touch /etc/x 2>/dev/null; echo etc: $?; \
         grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; \
         echo ifaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')"
    );
    let out = pm.ok(&["exec", "c1", "sh", "-c", &script]);
    for line in [
        "allowed: hello",
        "other-binary: 1",
        // The policy's 127.0.0.1 is the container's, as under root: nothing listens there.
        "host-loopback: 1",
        // 0.0.0.0 is loopback to the kernel: the container's too.
        "host-unspecified: 1",
        // The guard made the connect, as the caller: the server sees the caller's uid.
        "peer: uid=65534",
        "bindrace: ok",
        "own-loopback: page",
        // Unix sockets in its own tree, bound and connected by the guard as the caller.
        "unix: ok",
        "etc: 1",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "ifaces: lo",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    // The runtime's state, read by the user outside podman's namespace.
    let state = u.nemosandbox(&proj, &["state", id]).output().unwrap();
    let state = text(&state.stdout);
    let guard = state
        .lines()
        .find(|l| l.contains("symlink-guard./sandbox/.oc"))
        .unwrap_or_default();
    assert!(
        guard.contains("partial") && guard.contains("CAP_LINUX_IMMUTABLE"),
        "{state}"
    );
    assert_eq!(
        host_lo_accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the host's loopback was reached"
    );
    assert_eq!(canary_mode(), 0o600, "a raced bind changed a host file");
    // The same, as a user without root inside: its own sockets, with its own rights.
    let out = pm.ok(&[
        "exec",
        "--user",
        "65534",
        "c1",
        "sh",
        "-c",
        "echo unix-nobody: $(probe unix /tmp); echo unix-nobody-root-dir: $(probe unix /tmp/rootonly)",
    ]);
    for line in [
        "unix-nobody: ok",
        // The guard binds as the caller: a directory of root's stays root's.
        "unix-nobody-root-dir: setup-failed EACCES",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    pm.ok(&["kill", "c1"]);
    pm.ok(&["rm", "-f", "-t", "0", "c1"]);

    let out = pm
        .cmd(&[
            "run",
            "--rm",
            "localhost/nemo-rootless:t",
            "sh",
            "-c",
            "exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    // A capability that would let a process join podman's own network, or move an
    // interface into its own, is refused: no fence would see that traffic.
    pm.fails(
        &[
            "run",
            "--rm",
            "--cap-add",
            "SYS_ADMIN",
            "localhost/nemo-rootless:t",
            "true",
        ],
        "CAP_SYS_ADMIN needs root",
    );
    pm.fails(
        &[
            "run",
            "--rm",
            "--network",
            "host",
            "localhost/nemo-rootless:t",
            "true",
        ],
        "sharing the host's network needs root",
    );
    u.assert_no_state_left(&proj);
}
