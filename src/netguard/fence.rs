//! The kernel fence behind the network guard.
//!
//! Threat: the guard lets calls on unix and netlink sockets continue in the kernel, and the
//! kernel then looks the descriptor up again. Another thread can `dup2` an inet socket onto
//! that number in between (and rewrite the sockaddr or msghdr), so the continued call would
//! leave on a socket the guard never judged: a TCP fast-open `sendto`, a UDP datagram, a
//! source-routed message. Landlock's TCP rule does not see fast open or UDP.
//!
//! The fence makes such a swap useless. cgroup `sock_addr` programs on the container's cgroup
//! (cgroup v2) refuse, inside the kernel, every inet `connect` (TCP, UDP, MPTCP, fast open)
//! and every addressed UDP send made by any task that is not the guard. The guard is the only
//! task in its own cgroup, a child of the container's (so its memory and threads are charged
//! to the container), and the programs compare the calling task's cgroup id with it. Sends on
//! a connected socket, whose peer the guard approved at connect, run no hook and need none.
//!
//! The programs are a few instructions of eBPF, written out here. Where the host has no
//! cgroup v2 hierarchy mounted, the fence mounts one under the runtime root; on a cgroup v1
//! host (hybrid) the container gets a v2 cgroup of its own that holds only the fence, and the
//! guard joins the container's v1 memory and pids cgroups for accounting.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::path_error::io_err;
use cgroupfs::*;

mod cgroupfs;

/// The guard's cgroup, a child of the container's v2 cgroup.
pub const GUARD_CGROUP: &str = "nemosandbox-guard";
/// Where containers whose v2 cgroup is not their own (cgroup v1 hosts) get one.
const OWN_PARENT: &str = "nemosandbox";
/// v1 controllers the guard joins so a container's limits hold for it too.
const V1_ACCOUNTING: [V1Accounting; 2] = [
    V1Accounting {
        name: "memory",
        marker: "memory.limit_in_bytes",
    },
    V1Accounting {
        name: "pids",
        marker: "pids.max",
    },
];

/// A v1 accounting controller, and a file only its hierarchy's (non-root) cgroups have.
struct V1Accounting {
    name: &'static str,
    marker: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("no cgroup v2 hierarchy is mounted and mounting one at {path} failed: {source}")]
    Mount { path: PathBuf, source: nix::Error },
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
    #[error("/proc/{0}/cgroup: no cgroup v2 membership")]
    NoV2(i32),
    #[error("loading the fence's cgroup program: {0} (the kernel needs CONFIG_CGROUP_BPF and bpf(2) for this runtime)")]
    Load(String),
    #[error("attaching the fence's cgroup program to {path}: {source}")]
    Attach { path: PathBuf, source: nix::Error },
}

/// What `create` set up and `delete` removes, recorded in the container's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The container's v2 cgroup (the programs are attached here).
    pub container: PathBuf,
    /// The same, relative to the v2 mount: what /proc/PID/cgroup says of its members.
    pub container_rel: String,
    /// Whether the runtime created `container` (a v1 host): then it removes it too.
    #[serde(default)]
    pub own_container: bool,
    /// The guard's cgroup.
    pub guard: PathBuf,
    /// The container's v1 cgroups the guard joins (memory, pids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v1: Vec<PathBuf>,
    /// The hooks a sandbox adds (see `netguard::local`).
    #[serde(default)]
    pub extra: Extra,
}

/// Hooks beyond inet connects and UDP sends, for `sandbox`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    /// Unix connects and addressed unix sends: only the guard (Linux ≥ 6.7).
    #[serde(default)]
    pub unix: bool,
    /// inet binds: port 0 or a loopback address, unless the guard binds.
    #[serde(default)]
    pub bind: bool,
}

/// Move `pid` (every thread of it) into the cgroup at `dir`.
pub fn enter(dir: &Path, pid: i32) -> Result<(), FenceError> {
    let procs = dir.join("cgroup.procs");
    fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .and_then(|mut f| f.write_all(pid.to_string().as_bytes()))
        .map_err(io_err(&procs))?;
    Ok(())
}

/// The container's v1 cgroups of the accounting controllers, where they are its own.
fn v1_accounting(own: &[(String, String)], init: &[(String, String)]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (ctls, path) in init {
        if ctls.is_empty() || own.iter().any(|(c, p)| c == ctls && p == path) {
            continue;
        }
        let names: Vec<&str> = ctls.split(',').collect();
        let Some(ctl) = V1_ACCOUNTING.iter().find(|c| names.contains(&c.name)) else {
            continue;
        };
        if let Some(m) = v1_mount(ctl, &names, path) {
            out.push(join(&m, path));
        }
    }
    out
}

/// Where the v1 hierarchy of `ctl` (one of the line's controllers `names`) is mounted: at
/// `/sys/fs/cgroup/<ctl>` when that is a v1 cgroup mount whose cgroup at `path` has the
/// controller's own file (no mount-table read), else from the mount table by the mount's
/// options.
fn v1_mount(ctl: &V1Accounting, names: &[&str], path: &str) -> Option<PathBuf> {
    let usual = Path::new("/sys/fs/cgroup").join(ctl.name);
    if is_fs(&usual, nix::sys::statfs::CGROUP_SUPER_MAGIC)
        && join(&usual, path).join(ctl.marker).exists()
    {
        return Some(usual);
    }
    cgroup_mounts()
        .iter()
        .find(|(_, t, opts)| {
            t == "cgroup" && names.iter().all(|n| opts.split(',').any(|o| o == *n))
        })
        .map(|(m, _, _)| m.clone())
}

/// Where a container whose v2 cgroup is not its own gets one, relative to the v2 mount.
fn own_rel(id: &str) -> String {
    format!("/{OWN_PARENT}/{id}")
}

/// The v2 cgroup a cgroup v1 host's container gets, made before its first process, which
/// starts in it (`CLONE_INTO_CGROUP`) instead of being moved there. Every move into a
/// cgroup takes the kernel's global threadgroup lock, whose writer waits for an RCU grace
/// period (8 ms on the test machine) whenever nobody took it lately. Removed when dropped,
/// unless `keep` hands it to the fence.
pub struct Birthplace {
    dir: PathBuf,
    fd: OwnedFd,
    keep: bool,
}

impl Birthplace {
    /// On a cgroup v1 host, the container `id`'s v2 cgroup, made now; None elsewhere (the
    /// container's v2 cgroup is libcontainer's).
    pub fn make(id: &str, runtime_root: &Path) -> Result<Option<Birthplace>, FenceError> {
        if !crate::cgroupv1::host_is_v1() {
            return Ok(None);
        }
        let mnt = v2_mount(&runtime_root.join(".cgroup2"))?;
        let dir = join(&mnt, &own_rel(id));
        make_dir_shared_parent(&dir).map_err(io_err(&dir))?;
        match open_dir(&dir) {
            Ok(fd) => Ok(Some(Birthplace {
                dir,
                fd,
                keep: false,
            })),
            Err(e) => {
                let err = io_err(&dir)(e);
                remove_own(&dir);
                Err(err.into())
            }
        }
    }

    /// The directory's descriptor, for `clone3`.
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The fence owns the directory from now on.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Birthplace {
    fn drop(&mut self) {
        if !self.keep {
            remove_own(&self.dir);
        }
    }
}

/// `create_dir_all` of a container's own cgroup, again when a concurrent delete removed the
/// parent all containers share between the parent's making and the child's.
fn make_dir_shared_parent(dir: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match fs::create_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
            r => return r,
        }
    }
}

/// A directory opened for `clone3`'s `CLONE_INTO_CGROUP` (a path descriptor does).
fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)
        .map(OwnedFd::from)
}

/// Remove a container's own v2 cgroup and its parent once empty.
fn remove_own(dir: &Path) {
    remove_dir_retrying(dir);
    if let Some(parent) = dir.parent() {
        let _ = fs::remove_dir(parent);
    }
}

impl Fence {
    /// Prepare the fence around the container whose init is `init` (created, not started):
    /// its v2 cgroup and the guard's. `runtime_root` hosts a cgroup2 mount when the host has
    /// none. On error, whatever was made is removed again. `arm` finishes it.
    pub fn set_up(
        init: i32,
        id: &str,
        runtime_root: &Path,
        extra: Extra,
        born: bool,
    ) -> Result<Fence, FenceError> {
        let mnt = v2_mount(&runtime_root.join(".cgroup2"))?;
        let init_cgroups = cgroups_of(&init.to_string());
        let own_cgroups = cgroups_of("self");
        let init_path = v2_path_in(&init_cgroups).ok_or(FenceError::NoV2(init))?;
        let ours = v2_path_in(&own_cgroups);
        let own_rel = own_rel(id);
        // Started in the cgroup `Birthplace` made: nothing to move. Only then: on a cgroup
        // v2 host the same path can be libcontainer's own cgroup for the container, which is
        // not the fence's to remove (nor its parent, which concurrent creates share).
        let born_in_place = born && init_path == own_rel;
        let mut fence = Fence {
            extra,
            ..Fence::default()
        };
        // `born`: a cgroup v1 host where the birthplace was made. It is the container's v2
        // cgroup even when the clone into it fell back (the init is then in the runtime's
        // cgroup and is moved in), so the directory the caller hands over is the fence's.
        if born || ours.as_deref() == Some(init_path.as_str()) {
            // A cgroup v1 host: the container shares the runtime's v2 cgroup. It gets one.
            fence.container_rel = own_rel;
            fence.container = join(&mnt, &fence.container_rel);
            fence.own_container = true;
            make_dir_shared_parent(&fence.container).map_err(io_err(&fence.container))?;
        } else {
            fence.container = join(&mnt, &init_path);
            fence.container_rel = init_path;
        }
        fence.guard = fence.container.join(GUARD_CGROUP);
        let made = (|| {
            if fence.own_container && !born_in_place {
                enter(&fence.container, init)?;
            }
            fs::create_dir(&fence.guard)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(io_err(&fence.guard))?;
            fence.v1 = v1_accounting(&own_cgroups, &init_cgroups);
            Ok(())
        })();
        match made {
            Ok(()) => Ok(fence),
            Err(e) => {
                if born {
                    // The birthplace is the caller's to remove, once the init (which may be
                    // in it, keeping it busy) is killed.
                    fence.own_container = false;
                }
                fence.tear_down(None);
                Err(e)
            }
        }
    }

    /// The guard's cgroup directory, opened for a process to be born in; None when it
    /// cannot be opened (the process is then moved in by `arm`).
    pub fn guard_dir(&self) -> Option<OwnedFd> {
        open_dir(&self.guard).ok()
    }

    /// The container's v2 cgroup where the runtime made it (a cgroup v1 host), opened for
    /// an exec'd process to be born in; None elsewhere, or when it cannot be opened (the
    /// guard then moves the process in: `admit`).
    pub fn own_container_dir(&self) -> Option<OwnedFd> {
        self.own_container
            .then(|| open_dir(&self.container).ok())
            .flatten()
    }

    /// Put the guard (the helper process `helper`) in its cgroup and in the container's
    /// accounting cgroups, unless it says it started there (`placed`, checked for the v2
    /// cgroup), then attach the programs that let only it through.
    pub fn arm(&self, helper: i32, placed: bool) -> Result<(), FenceError> {
        let _t = crate::timing::span("fence-arm");
        if !(placed && self.guard_holds(helper)) {
            enter(&self.guard, helper)?;
            for dir in &self.v1 {
                enter(dir, helper)?;
            }
        }
        let cgroup = fs::metadata(&self.guard)
            .map_err(io_err(&self.guard))?
            .ino();
        attach_all(&self.container, guard_task(cgroup, helper), self.extra)
    }

    /// Whether `pid` is in the guard's v2 cgroup.
    fn guard_holds(&self, pid: i32) -> bool {
        let guard_rel = Path::new(&self.container_rel).join(GUARD_CGROUP);
        v2_path_of(&pid.to_string()).is_some_and(|rel| Path::new(&rel) == guard_rel)
    }

    /// Whether `pid` is inside the container's v2 cgroup (or below it).
    pub fn holds(&self, pid: i32) -> bool {
        v2_path_of(&pid.to_string())
            .is_some_and(|rel| Path::new(&rel).starts_with(&self.container_rel))
    }

    /// Put a container process that starts outside the container's v2 cgroup (an exec'd
    /// process on a cgroup v1 host, which the engine joins to the v1 cgroups only) into it.
    pub fn admit(&self, pid: i32) -> Result<(), FenceError> {
        if self.holds(pid) {
            return Ok(());
        }
        enter(&self.container, pid)
    }

    /// Remove the guard's cgroup, and the container's when the runtime made it. `helper`
    /// (already killed) is waited for first: a cgroup is removable once its tasks are gone.
    pub fn tear_down(&self, helper: Option<i32>) {
        if let Some(pid) = helper {
            wait_gone(pid, Duration::from_secs(2));
        }
        if !self.guard.as_os_str().is_empty() {
            remove_dir_retrying(&self.guard);
        }
        if self.own_container && !self.container.as_os_str().is_empty() {
            remove_own(&self.container);
        }
    }
}

/// Wait until `pid` has left its cgroups: it is gone, or a zombie (which no cgroup holds).
fn wait_gone(pid: i32, limit: Duration) {
    let start = Instant::now();
    let alive = || {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X']))
        })
    };
    while alive() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn remove_dir_retrying(dir: &Path) {
    let start = Instant::now();
    while dir.exists() && start.elapsed() < Duration::from_secs(2) {
        if fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---- the programs -------------------------------------------------------------------------

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// The attach points: inet4/6 connect (TCP, UDP, MPTCP, fast open) and addressed UDP sends.
const ATTACH_TYPES: [(u32, &str); 4] = [
    (10, "inet4 connect"),
    (11, "inet6 connect"),
    (14, "udp4 sendmsg"),
    (15, "udp6 sendmsg"),
];
/// Unix connect and addressed unix sends (`BPF_CGROUP_UNIX_CONNECT`, `…_SENDMSG`, 6.7).
const UNIX_TYPES: [(u32, &str); 2] = [(49, "unix connect"), (50, "unix sendmsg")];
const BIND4: u32 = 8;
const BIND6: u32 = 9;
const FUNC_GET_CURRENT_CGROUP_ID: i32 = 80;

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EbpfInsn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

const FUNC_GET_NS_CURRENT_PID_TGID: i32 = 120;

/// Who the fence lets through: the task must be in the guard's cgroup and, where the kernel
/// offers the helper, be the guard process itself (its pid in its own pid namespace) — a
/// container that can write its cgroup files could otherwise move a task into that cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardTask {
    pub cgroup: u64,
    /// (device, inode) of the guard's pid namespace, and its pid there.
    pub process: Option<(u64, u64, u32)>,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> EbpfInsn {
    EbpfInsn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// Where a jump of a bind prefix goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    Allow,
    Check,
}

/// The first instructions of a bind program: allow port 0 (the kernel picks one) and loopback
/// addresses for everyone; anything else goes on to the guard check. `r1` is the context
/// (`struct bpf_sock_addr`: user_ip4 at 4, user_ip6 at 8..24, user_port at 24); comparisons
/// are 32-bit (JMP32), so an immediate like 0xffff0000 is not sign-extended.
fn bind_prefix(attach: u32) -> Vec<(EbpfInsn, Option<To>)> {
    const LDXW: u8 = 0x61;
    const JEQ32: u8 = 0x16;
    const JNE32: u8 = 0x56;
    const AND32: u8 = 0x54;
    let ld = |off: i16| (insn(LDXW, 2, 1, off, 0), None);
    let jeq = |imm: i32, to: To| (insn(JEQ32, 2, 0, 0, imm), Some(to));
    let jne = |imm: i32, to: To| (insn(JNE32, 2, 0, 0, imm), Some(to));
    let mut p = vec![ld(24), jeq(0, To::Allow)];
    if attach == BIND4 {
        // 127.0.0.0/8: the first address byte is the low byte of the loaded word.
        p.extend([
            ld(4),
            (insn(AND32, 2, 0, 0, 0xff), None),
            jeq(127, To::Allow),
        ]);
    } else {
        // The first two words are zero in both loopback forms; the third tells them apart.
        p.extend([ld(8), jne(0, To::Check), ld(12), jne(0, To::Check), ld(16)]);
        // ::1 — when the third word is 0 (else skip the next three instructions).
        p.extend([
            (insn(JNE32, 2, 0, 3, 0), None),
            ld(20),
            jeq(0x0100_0000, To::Allow),
            (insn(0x05, 0, 0, 0, 0), Some(To::Check)),
        ]);
        // ::ffff:127.0.0.0/104 — the third word is still in r2.
        p.extend([
            jne(0xffff_0000_u32 as i32, To::Check),
            ld(20),
            (insn(AND32, 2, 0, 0, 0xff), None),
            jeq(127, To::Allow),
        ]);
    }
    p
}

/// The program: allow (1) the guard, refuse (0, EPERM) everyone else.
pub fn program(guard: GuardTask) -> Vec<EbpfInsn> {
    program_for(guard, Vec::new())
}

/// `prefix` runs first; its jumps to `Allow` end at the allow exit, to `Check` at the guard
/// check that follows it.
fn program_for(guard: GuardTask, prefix: Vec<(EbpfInsn, Option<To>)>) -> Vec<EbpfInsn> {
    let i = insn;
    let mut fixups: Vec<(usize, To)> = Vec::new();
    let mut p: Vec<EbpfInsn> = Vec::new();
    for (ins, to) in prefix {
        if let Some(to) = to {
            fixups.push((p.len(), to));
        }
        p.push(ins);
    }
    let check = p.len();
    let imm64 = |dst: u8, v: u64| {
        [
            i(0x18, dst, 0, 0, v as u32 as i32),
            i(0, 0, 0, 0, (v >> 32) as u32 as i32),
        ]
    };
    // r0 = bpf_get_current_cgroup_id()
    p.push(i(0x85, 0, 0, 0, FUNC_GET_CURRENT_CGROUP_ID));
    p.extend(imm64(2, guard.cgroup));
    // if r0 != r2 goto deny (patched below)
    let to_deny = |p: &mut Vec<EbpfInsn>, insn: EbpfInsn| {
        p.push(insn);
        p.len() - 1
    };
    let mut jumps = vec![to_deny(&mut p, i(0x5d, 0, 2, 0, 0))];
    if let Some((dev, ino, tgid)) = guard.process {
        p.extend(imm64(1, dev));
        p.extend(imm64(2, ino));
        // r3 = r10 - 8: a struct bpf_pidns_info { u32 pid; u32 tgid; } on the stack
        p.push(i(0xbf, 3, 10, 0, 0));
        p.push(i(0x07, 3, 0, 0, -8));
        p.push(i(0xb7, 4, 0, 0, 8));
        p.push(i(0x85, 0, 0, 0, FUNC_GET_NS_CURRENT_PID_TGID));
        jumps.push(to_deny(&mut p, i(0x55, 0, 0, 0, 0)));
        // r0 = info.tgid
        p.push(i(0x61, 0, 10, -4, 0));
        jumps.push(to_deny(&mut p, i(0x55, 0, 0, 0, tgid as i32)));
    }
    // allow: r0 = 1; exit
    let allow = p.len();
    p.push(i(0xb7, 0, 0, 0, 1));
    p.push(i(0x95, 0, 0, 0, 0));
    // deny: r0 = 0; exit
    let deny = p.len();
    p.push(i(0xb7, 0, 0, 0, 0));
    p.push(i(0x95, 0, 0, 0, 0));
    for j in jumps {
        p[j].off = (deny - j - 1) as i16;
    }
    for (j, to) in fixups {
        let target = if to == To::Allow { allow } else { check };
        p[j].off = (target - j - 1) as i16;
    }
    p
}

fn encode(prog: &[EbpfInsn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prog.len() * 8);
    for i in prog {
        out.push(i.code);
        out.push((i.src << 4) | (i.dst & 0xf));
        out.extend_from_slice(&i.off.to_ne_bytes());
        out.extend_from_slice(&i.imm.to_ne_bytes());
    }
    out
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> Result<i64, nix::Error> {
    // SAFETY: `attr` is a zero-initialised `union bpf_attr` image of the size we pass; the
    // pointers inside it reference buffers that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(nix::Error::last())
    } else {
        Ok(r)
    }
}

/// Load the program for one attach point.
fn load(guard: GuardTask, attach_type: u32) -> Result<OwnedFd, FenceError> {
    let prefix = if matches!(attach_type, BIND4 | BIND6) {
        bind_prefix(attach_type)
    } else {
        Vec::new()
    };
    let insns = encode(&program_for(guard, prefix));
    // Without the verifier's log, whose formatting was most of a load: it is asked for only
    // when a load fails, to say why.
    load_insns(&insns, attach_type, None).or_else(|_| {
        let mut log = vec![0u8; 4096];
        load_insns(&insns, attach_type, Some(&mut log)).map_err(|e| {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let detail = String::from_utf8_lossy(&log[..end]);
            FenceError::Load(format!("{e} {}", detail.trim()))
        })
    })
}

fn load_insns(
    insns: &[u8],
    attach_type: u32,
    log: Option<&mut Vec<u8>>,
) -> Result<OwnedFd, nix::Error> {
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
    put_u32(&mut attr, 4, (insns.len() / 8) as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    if let Some(log) = log {
        put_u32(&mut attr, 24, 1);
        put_u32(&mut attr, 28, log.len() as u32);
        put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    }
    attr[48..48 + 12].copy_from_slice(b"nemo_fence\0\0");
    put_u32(&mut attr, 68, attach_type);
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: a new program fd returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The guard process `pid` (in this runtime's pid namespace) as the program checks it.
fn guard_task(cgroup: u64, pid: i32) -> GuardTask {
    let ns = fs::metadata("/proc/self/ns/pid").ok();
    GuardTask {
        cgroup,
        process: ns.map(|m| (m.dev(), m.ino(), pid as u32)),
    }
}

fn attach_all(container: &Path, guard: GuardTask, extra: Extra) -> Result<(), FenceError> {
    let dir = fs::File::open(container).map_err(io_err(container))?;
    // Kernels without the pid-namespace helper in cgroup programs (before 6.10) get the
    // cgroup check alone.
    let (guard, mut first) = match load(guard, ATTACH_TYPES[0].0) {
        Ok(prog) => (guard, Some(prog)),
        Err(_) if guard.process.is_some() => (
            GuardTask {
                process: None,
                ..guard
            },
            None,
        ),
        Err(e) => return Err(e),
    };
    let unix = UNIX_TYPES.iter().filter(|_| extra.unix);
    let bind = [(BIND4, "inet4 bind"), (BIND6, "inet6 bind")];
    let bind = bind.iter().filter(|_| extra.bind);
    for &(ty, _) in ATTACH_TYPES.iter().chain(unix).chain(bind) {
        // The probe above loaded the first type's program already.
        let prog = match first.take() {
            Some(prog) => prog,
            None => load(guard, ty)?,
        };
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, dir.as_raw_fd() as u32);
        put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
        put_u32(&mut attr, 8, ty);
        put_u32(&mut attr, 12, BPF_F_ALLOW_MULTI);
        bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| FenceError::Attach {
            path: container.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Whether this kernel has the unix hooks (Linux ≥ 6.7).
pub fn unix_hooks() -> bool {
    let any = GuardTask {
        cgroup: 1,
        process: None,
    };
    load(any, UNIX_TYPES[0].0).is_ok()
}

/// Whether this kernel loads the fence's program (for `doctor`): `Ok(true)` with the check
/// of the guard's own pid, `Ok(false)` with the cgroup check alone, `Err` why not at all.
pub fn probe() -> Result<bool, String> {
    let full = guard_task(1, std::process::id() as i32);
    if load(full, ATTACH_TYPES[0].0).is_ok() {
        return Ok(true);
    }
    load(
        GuardTask {
            cgroup: 1,
            process: None,
        },
        ATTACH_TYPES[0].0,
    )
    .map(|_| false)
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
