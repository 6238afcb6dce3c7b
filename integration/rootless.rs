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
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--inh-caps=-all")
            .arg(&self.bin)
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

/// Network policies need the kernel fence, which only root can attach: as an ordinary user
/// they are refused with the reason, and nothing is left behind. The same command without
/// them runs (so the refusal is the policy's, not a broken sandbox).
#[test]
fn without_root_network_policies_are_refused_not_weakened() {
    let u = user();
    let proj = u.project("net");
    let out = u
        .nemosandbox(&proj, &["--preset", "github", "sandbox", "--", "true"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("network policies need root"), "{stderr}");
    u.assert_no_state_left(&proj);
    let out = u.sandbox(&proj, &["--", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
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
    wait_until(|| {
        let out = u.nemosandbox(&proj, &["list", "--quiet"]).output().unwrap();
        id = text(&out.stdout).trim().to_string();
        !id.is_empty()
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
