//! Test harness: busybox-static bundles, an isolated runtime root per test, and the checks
//! that nothing is left behind. Tests run the real binary as root against the real kernel.
#![allow(dead_code)]

pub mod daemon;
pub mod net;
pub mod probe;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The runtime under test. `NEMOSANDBOX_TEST_BIN` swaps it (scripts/runc-shim.sh runs the
/// attack tests against runc, where they must fail).
pub fn bin() -> String {
    std::env::var("NEMOSANDBOX_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_nemosandbox").to_string())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique in this test process and across runs.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{t}", std::process::id())
}

pub use nemosandbox::testutil::TempDir;

fn busybox_path() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox-static is not installed (apt-get install busybox-static)");
}

/// Put a host binary into a rootfs as a hard link, not a copy: a copy's write descriptor is
/// briefly inherited by processes other test threads fork, and executing the file meanwhile
/// fails with ETXTBSY. Tests never write to it.
pub fn install_binary(src: &Path, dst: &Path) {
    if std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst).unwrap();
    }
}

/// Populate `rootfs` with busybox-static and a symlink per applet.
pub fn make_busybox_rootfs(rootfs: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root", "var/tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    install_binary(&busybox_path(), &rootfs.join("bin/busybox"));
    // List applets with the host's copy: executing the fresh copy races with other threads'
    // forks that briefly hold its write descriptor (ETXTBSY).
    let list = Command::new(busybox_path()).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

/// A bundle with a busybox rootfs and runc's default config running `args`.
pub struct Bundle {
    pub dir: TempDir,
}

impl Bundle {
    pub fn busybox(args: &[&str]) -> Bundle {
        let dir = TempDir::new("nsbundle");
        make_busybox_rootfs(&dir.path().join("rootfs"));
        let out = Command::new(bin())
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let b = Bundle { dir };
        b.edit(|c| {
            c["process"]["terminal"] = false.into();
            c["process"]["args"] = serde_json::json!(args);
            c["root"]["readonly"] = false.into();
        });
        b
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn config(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path().join("config.json")).unwrap()).unwrap()
    }
    pub fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let mut c = self.config();
        f(&mut c);
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(&c).unwrap(),
        )
        .unwrap();
    }
    /// Add a seccomp profile that allows everything but makes mkdir/mkdirat fail with EPERM.
    pub fn with_mkdir_denying_seccomp(&self) {
        self.edit(|c| {
            c["linux"]["seccomp"] = serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
            });
        });
    }
}

/// Arguments of `--policy POLICY create --bundle B ID`.
pub fn create_args<'a>(policy: &'a str, bundle: &'a Bundle, id: &'a str) -> [&'a str; 6] {
    [
        "--policy",
        policy,
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        id,
    ]
}

/// The runtime with its own `--root`, so tests never see each other's containers.
pub struct Runtime {
    pub root: TempDir,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Self {
        Runtime {
            root: TempDir::new("nsroot"),
        }
    }
    /// The runtime's own directory for container `id` (its file names are the runtime's).
    pub fn own_dir(&self, id: &str) -> nemosandbox::container_dir::ContainerDir {
        nemosandbox::state::StateRoot::new(self.root.path()).own_dir(id)
    }
    /// The container's audit file.
    pub fn audit_file(&self, id: &str) -> PathBuf {
        nemosandbox::state::StateRoot::new(self.root.path())
            .container_dir(id)
            .join(nemosandbox::audit::CONTAINER_FILE)
    }
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--root").arg(self.root.path()).args(args);
        c.stdin(Stdio::null());
        c
    }
    /// `run --keep` of `b` as `id`, with the global options `global` (`--policy`, `--config`).
    pub fn kept_command(&self, global: &[&str], b: &Bundle, id: &str) -> Command {
        let mut args = global.to_vec();
        args.extend(["run", "--keep", "--bundle", b.path().to_str().unwrap(), id]);
        self.command(&args)
    }
    /// `kept_command` run with the deadline of `run`.
    pub fn run_kept_with(&self, global: &[&str], b: &Bundle, id: &str) -> Output {
        output_within(self.kept_command(global, b, id), Duration::from_secs(60))
    }
    /// Run with a deadline: a hang is a test failure, not a stuck CI.
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(self.command(args), Duration::from_secs(60))
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "nemosandbox {args:?} failed ({:?}): {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    /// Run, expect failure, return stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "nemosandbox {args:?} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
    pub fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }
    /// Create + start a long-running container.
    pub fn start_sleeper(&self, bundle: &Bundle, id: &str) {
        self.ok(&["create", "--bundle", bundle.path().to_str().unwrap(), id]);
        self.ok(&["start", id]);
        wait_until(|| self.status(id) == "running");
    }
    pub fn remove(&self, id: &str) {
        let _ = self.run(&["delete", "--force", id]);
    }
    /// `run --keep` of `b` as `id` under `policy`: its stdout and its audit trail. The
    /// container is removed after, and nothing of it may remain.
    pub fn run_kept(&self, policy: &str, b: &Bundle, id: &str) -> (String, String) {
        let out = self.run_kept_with(&["--policy", policy], b, id);
        let audit = std::fs::read_to_string(self.audit_file(id)).unwrap_or_default();
        self.remove(id);
        assert_nothing_left(self, id);
        (String::from_utf8_lossy(&out.stdout).into_owned(), audit)
    }
}

/// Run `cmd` to completion with a deadline. Output goes to files, not pipes: like runc's, a
/// created container keeps the runtime's stdio, so EOF on a pipe would wait for the container.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let dir = TempDir::new("out");
    let (o, e) = (dir.path().join("stdout"), dir.path().join("stderr"));
    cmd.stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap());
    let mut child = cmd.spawn().expect("spawn");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command {cmd:?} hung for more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output {
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    }
}

/// Run `cmd` within `limit` (scaled): its exit code (-1 after a signal), stdout and stderr.
pub fn sh_within(cmd: Command, limit: Duration) -> (i32, String, String) {
    let out = output_within(cmd, scaled(limit));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `cmd`, which must succeed within `limit` (scaled); its stdout.
pub fn ok_within(cmd: Command, limit: Duration) -> String {
    let desc = format!("{cmd:?}");
    let (code, out, err) = sh_within(cmd, limit);
    assert_eq!(code, 0, "{desc}: {out}{err}");
    out
}

/// `sh_within` two minutes.
pub fn sh(cmd: &mut Command) -> (i32, String, String) {
    sh_within(
        std::mem::replace(cmd, Command::new("true")),
        Duration::from_secs(120),
    )
}

/// `ok_within` two minutes.
pub fn ok(cmd: &mut Command) -> String {
    ok_within(
        std::mem::replace(cmd, Command::new("true")),
        Duration::from_secs(120),
    )
}

/// Write a policy document next to the runtime root and return its path.
pub fn policy(rt: &Runtime, yaml: &str) -> String {
    let p = rt.root.path().join(format!("{}.yaml", unique("policy")));
    std::fs::write(&p, yaml).unwrap();
    p.to_string_lossy().into_owned()
}

/// `d` stretched by `NEMOSANDBOX_TEST_TIME_SCALE` (default 1): the kernel-matrix guest runs
/// under emulation, several times slower, and sets it. Only patience is scaled, never a
/// bound the runtime itself promises.
pub fn scaled(d: Duration) -> Duration {
    let k: u32 = std::env::var("NEMOSANDBOX_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    d * k
}

pub fn wait_until(mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let limit = scaled(Duration::from_secs(20));
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not reached in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This kernel as the runtime's own feature table (`doctor --format json`) describes it.
/// A test whose expectation depends on the kernel asserts the degraded behaviour (and the
/// warning or refusal) from this, and never skips.
#[derive(Debug)]
pub struct Kernel {
    /// The Landlock ABI (0: no Landlock).
    pub landlock_abi: u32,
    pub cgroup_v2: bool,
    /// cgroup BPF hooks on unix connect/sendmsg (Linux 6.7).
    pub unix_hooks: bool,
    /// The fence checks the caller's pid, not only its cgroup (Linux 6.10).
    pub fence_pid_check: bool,
    /// pidfds name threads (`PIDFD_THREAD`, Linux 6.9).
    pub pidfd_threads: bool,
}

impl Kernel {
    /// Landlock scopes signals and abstract unix sockets (ABI 6).
    pub fn landlock_scopes(&self) -> bool {
        self.landlock_abi >= 6
    }
    /// Landlock limits TCP connect and bind by port (ABI 4).
    pub fn landlock_tcp(&self) -> bool {
        self.landlock_abi >= 4
    }
}

pub fn kernel() -> &'static Kernel {
    static K: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    K.get_or_init(|| {
        let out = Command::new(bin())
            .args(["doctor", "--format", "json"])
            .env_remove("NEMOSANDBOX_LANDLOCK_ABI_MAX")
            .output()
            .unwrap();
        assert!(out.status.success(), "doctor: {out:?}");
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        // A row the runtime under test does not have (an older binary, run for comparison
        // with NEMOSANDBOX_TEST_BIN) reads as "unavailable".
        let status = |f: &str| -> String {
            rows.iter()
                .find(|r| r["feature"] == f)
                .and_then(|r| r["status"].as_str())
                .unwrap_or("unavailable")
                .to_string()
        };
        let ll = status("landlock");
        let k = Kernel {
            landlock_abi: ll
                .strip_prefix("ABI ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            cgroup_v2: status("cgroup mode").starts_with("v2"),
            unix_hooks: status("cgroup unix hooks (sandbox)") == "available",
            fence_pid_check: status("cgroup bpf (network fence)") == "available",
            pidfd_threads: status("pidfd for threads") == "available",
        };
        eprintln!("kernel features (doctor): {k:?}");
        k
    })
}

/// Cgroup directories (v1 hierarchies and the v2 tree) that name this container.
pub fn cgroup_dirs_of(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    // cgroup v2: the container's directory sits right under the mount.
    for parent in ["nemosandbox", ""] {
        let p = Path::new("/sys/fs/cgroup").join(parent).join(id);
        if p.exists() && !found.contains(&p) {
            found.push(p);
        }
    }
    for h in rd.filter_map(|e| e.ok()) {
        for parent in ["nemosandbox", ""] {
            let p = h.path().join(parent).join(id);
            if p.exists() && !found.contains(&p) {
                found.push(p);
            }
        }
    }
    found
}

/// Processes whose command line names this container (the init has it in its cgroup, the
/// helper in its inherited argv).
pub fn processes_of(id: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cgroup = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        let argv = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie && (argv.split(' ').any(|a| a == id) || cgroup.contains(&format!("/{id}\n"))) {
            pids.push(pid);
        }
    }
    pids
}

/// No sandbox left state of its own: only the mount point and the compiled seccomp cache,
/// which every sandbox shares, remain under the runtime's own directory.
pub fn assert_no_sandbox_left(rt: &Runtime) {
    let left: Vec<_> =
        std::fs::read_dir(nemosandbox::state::StateRoot::new(rt.root.path()).own_dirs())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n != ".sandbox-root" && n != ".bpf-cache")
            .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Nothing of the container remains: state dirs, cgroups, processes, mounts.
pub fn assert_nothing_left(rt: &Runtime, id: &str) {
    let start = Instant::now();
    loop {
        let state_dir = rt.root.path().join(id);
        let own_dir = rt.own_dir(id).to_path_buf();
        let cgroups = cgroup_dirs_of(id);
        let procs = processes_of(id);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounted = mounts
            .lines()
            .any(|l| l.contains(&format!("/{id}/")) || l.contains(&format!("/{id} ")));
        let clean = !state_dir.exists()
            && !own_dir.exists()
            && cgroups.is_empty()
            && procs.is_empty()
            && !mounted;
        if clean {
            return;
        }
        // The helper notices init's exit asynchronously; give it a moment.
        if start.elapsed() > scaled(Duration::from_secs(5)) {
            panic!(
                "container {id} left: state_dir={} own_dir={} cgroups={cgroups:?} procs={procs:?} mounted={mounted}",
                state_dir.exists(),
                own_dir.exists()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The helper process (the network guard) of container `id`, if it runs.
pub fn helper_of(id: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (comm.trim() == "nemosandbox-hlp" && String::from_utf8_lossy(&cmd).contains(id))
            .then_some(pid)
    })
}

/// A node program that listens on loopback and connects to itself: `ok` or the error code.
pub const NODE_CONNECT: &str = "const net = require('net');\n\
const port = +process.argv[process.argv.length - 1];\n\
net.createServer(s => s.destroy()).listen(port, '127.0.0.1', () => {\n\
  const c = net.connect(port, '127.0.0.1');\n\
  c.on('connect', () => { console.log('ok'); process.exit(0); });\n\
  c.on('error', e => { console.log(e.code); process.exit(0); });\n\
});\n";
