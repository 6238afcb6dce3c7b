//! The kernel fence behind the network guard (SPEC §7.3).
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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The guard's cgroup, a child of the container's v2 cgroup.
pub const GUARD_CGROUP: &str = "nemosandbox-guard";
/// Where containers whose v2 cgroup is not their own (cgroup v1 hosts) get one.
const OWN_PARENT: &str = "nemosandbox";
/// v1 controllers the guard joins so a container's limits hold for it too.
const V1_ACCOUNTING: [&str; 2] = ["memory", "pids"];

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("no cgroup v2 hierarchy is mounted and mounting one at {path} failed: {source}")]
    Mount { path: PathBuf, source: nix::Error },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("/proc/{0}/cgroup: no cgroup v2 membership")]
    NoV2(i32),
    #[error("loading the fence's cgroup program: {0} (the kernel needs CONFIG_CGROUP_BPF and bpf(2) for this runtime)")]
    Load(String),
    #[error("attaching the fence's cgroup program to {path}: {source}")]
    Attach { path: PathBuf, source: nix::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FenceError + '_ {
    move |source| FenceError::Io {
        path: path.to_path_buf(),
        source,
    }
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
}

/// One line of /proc/PID/mountinfo: mount point, filesystem type, super options.
fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mnt = pre.split_whitespace().nth(4)?;
            let mut post = post.split_whitespace();
            let fstype = post.next()?.to_string();
            let opts = post.nth(1).unwrap_or_default().to_string();
            Some((PathBuf::from(unescape(mnt)), fstype, opts))
        })
        .collect()
}

/// mountinfo escapes spaces and a few other bytes as octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let oct: String = chars.by_ref().take(3).collect();
            if let Ok(v) = u8::from_str_radix(&oct, 8) {
                out.push(v as char);
                continue;
            }
            out.push(c);
            out.push_str(&oct);
        } else {
            out.push(c);
        }
    }
    out
}

/// The cgroup v2 mount point; one is mounted under `fallback` when the host has none.
fn v2_mount(fallback: &Path) -> Result<PathBuf, FenceError> {
    if let Some((m, _, _)) = mounts().into_iter().find(|(_, t, _)| t == "cgroup2") {
        return Ok(m);
    }
    fs::create_dir_all(fallback).map_err(io(fallback))?;
    nix::mount::mount(
        Some("cgroup2"),
        fallback,
        Some("cgroup2"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|source| FenceError::Mount {
        path: fallback.to_path_buf(),
        source,
    })?;
    Ok(fallback.to_path_buf())
}

/// Each controller-or-hierarchy → path line of /proc/PID/cgroup; v2 is the empty name.
fn cgroups_of(pid: &str) -> Vec<(String, String)> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctl.to_string(), path.to_string()))
        })
        .collect()
}

fn v2_path_of(pid: &str) -> Option<String> {
    cgroups_of(pid)
        .into_iter()
        .find(|(c, _)| c.is_empty())
        .map(|(_, p)| p)
}

fn join(mnt: &Path, rel: &str) -> PathBuf {
    mnt.join(rel.trim_start_matches('/'))
}

/// Move `pid` (every thread of it) into the cgroup at `dir`.
pub fn enter(dir: &Path, pid: i32) -> Result<(), FenceError> {
    let procs = dir.join("cgroup.procs");
    fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .and_then(|mut f| f.write_all(pid.to_string().as_bytes()))
        .map_err(io(&procs))
}

/// The container's v1 cgroups of the accounting controllers, where they are its own.
fn v1_accounting(init: i32) -> Vec<PathBuf> {
    let own = cgroups_of("self");
    let mounts = mounts();
    let mut out = Vec::new();
    for (ctls, path) in cgroups_of(&init.to_string()) {
        if ctls.is_empty() || own.iter().any(|(c, p)| *c == ctls && *p == path) {
            continue;
        }
        let names: Vec<&str> = ctls.split(',').collect();
        if !names.iter().any(|n| V1_ACCOUNTING.contains(n)) {
            continue;
        }
        let mnt = mounts.iter().find(|(_, t, opts)| {
            t == "cgroup" && names.iter().all(|n| opts.split(',').any(|o| o == *n))
        });
        if let Some((m, _, _)) = mnt {
            out.push(join(m, &path));
        }
    }
    out
}

impl Fence {
    /// Set the fence up around the container whose init is `init` (created, not started):
    /// its v2 cgroup, the guard's cgroup and the programs. `runtime_root` hosts a cgroup2
    /// mount when the host has none. On error, whatever was made is removed again.
    pub fn set_up(init: i32, id: &str, runtime_root: &Path) -> Result<Fence, FenceError> {
        let mnt = v2_mount(&runtime_root.join(".cgroup2"))?;
        let init_path = v2_path_of(&init.to_string()).ok_or(FenceError::NoV2(init))?;
        let ours = v2_path_of("self");
        let mut fence = Fence::default();
        if ours.as_deref() == Some(init_path.as_str()) {
            // A cgroup v1 host: the container shares the runtime's v2 cgroup. It gets one.
            fence.container_rel = format!("/{OWN_PARENT}/{id}");
            fence.container = join(&mnt, &fence.container_rel);
            fence.own_container = true;
            fs::create_dir_all(&fence.container).map_err(io(&fence.container))?;
        } else {
            fence.container = join(&mnt, &init_path);
            fence.container_rel = init_path;
        }
        fence.guard = fence.container.join(GUARD_CGROUP);
        let made = (|| {
            if fence.own_container {
                enter(&fence.container, init)?;
            }
            fs::create_dir(&fence.guard)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(io(&fence.guard))?;
            let guard_id = fs::metadata(&fence.guard).map_err(io(&fence.guard))?.ino();
            attach_all(&fence.container, guard_id)?;
            fence.v1 = v1_accounting(init);
            Ok(())
        })();
        match made {
            Ok(()) => Ok(fence),
            Err(e) => {
                fence.tear_down(None);
                Err(e)
            }
        }
    }

    /// Put the guard (the helper process) in its cgroup and in the container's accounting
    /// cgroups.
    pub fn admit_guard(&self, helper: i32) -> Result<(), FenceError> {
        enter(&self.guard, helper)?;
        for dir in &self.v1 {
            enter(dir, helper)?;
        }
        Ok(())
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
            remove_dir_retrying(&self.container);
            if let Some(parent) = self.container.parent() {
                let _ = fs::remove_dir(parent);
            }
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

/// The program: allow (1) when the calling task's cgroup is the guard's, refuse (0, EPERM)
/// otherwise.
pub fn program(guard_cgroup_id: u64) -> Vec<EbpfInsn> {
    let i = |code, dst, src, off, imm| EbpfInsn {
        code,
        dst,
        src,
        off,
        imm,
    };
    vec![
        // r0 = bpf_get_current_cgroup_id()
        i(0x85, 0, 0, 0, FUNC_GET_CURRENT_CGROUP_ID),
        // r2 = guard_cgroup_id (a 64-bit immediate takes two slots)
        i(0x18, 2, 0, 0, guard_cgroup_id as u32 as i32),
        i(0, 0, 0, 0, (guard_cgroup_id >> 32) as u32 as i32),
        // if r0 == r2 goto allow
        i(0x1d, 0, 2, 2, 0),
        // r0 = 0; exit
        i(0xb7, 0, 0, 0, 0),
        i(0x95, 0, 0, 0, 0),
        // allow: r0 = 1; exit
        i(0xb7, 0, 0, 0, 1),
        i(0x95, 0, 0, 0, 0),
    ]
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
fn load(guard_cgroup_id: u64, attach_type: u32) -> Result<OwnedFd, FenceError> {
    let insns = encode(&program(guard_cgroup_id));
    let license = b"GPL\0";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
    put_u32(&mut attr, 4, (insns.len() / 8) as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 24, 1);
    put_u32(&mut attr, 28, log.len() as u32);
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    attr[48..48 + 12].copy_from_slice(b"nemo_fence\0\0");
    put_u32(&mut attr, 68, attach_type);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a new program fd returned by the kernel, owned by nobody else.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let detail = String::from_utf8_lossy(&log[..end]);
            Err(FenceError::Load(format!("{e} {}", detail.trim())))
        }
    }
}

fn attach_all(container: &Path, guard_cgroup_id: u64) -> Result<(), FenceError> {
    let dir = fs::File::open(container).map_err(io(container))?;
    for (ty, _) in ATTACH_TYPES {
        let prog = load(guard_cgroup_id, ty)?;
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

/// Whether this kernel loads the fence's program (for `doctor`): `Err` says why not.
pub fn probe() -> Result<(), String> {
    load(1, ATTACH_TYPES[0].0)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_compares_the_callers_cgroup_with_the_guards() {
        let p = program(0x1_0000_0002);
        assert_eq!(p.len(), 8);
        assert_eq!(
            (p[1].imm, p[2].imm),
            (2, 1),
            "64-bit immediate, low then high"
        );
        assert_eq!(p[3].off, 2, "equal: skip the refusal");
        assert_eq!((p[4].imm, p[6].imm), (0, 1), "refuse, then allow");
        let bytes = encode(&p);
        assert_eq!(bytes.len(), 64);
        assert_eq!(bytes[8 * 3 + 1], 0x20, "src r2, dst r0");
    }

    #[test]
    fn mountinfo_fields_and_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
