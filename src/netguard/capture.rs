//! What a process was started with, captured when it called `execve`.
//!
//! Threat: identity beyond the executable file — which script an interpreter runs, which
//! libraries the loader was told to inject — comes from the process's argv and environment.
//! Both live in memory the process can rewrite (`/proc/PID/cmdline` and `environ` read that
//! memory back), and a second thread can rewrite the `execve` arguments while they are being
//! copied. So the guard reads them at the one moment they are the kernel's own copy: the
//! `execve` is a notified call; the guard attaches to the caller with `PTRACE_SEIZE`
//! (`PTRACE_O_TRACEEXEC`), lets the call continue, and reads argv, environment, executable and
//! working directory at the exec stop, after the kernel built the new image and before any of
//! its instructions ran. Then it detaches. No decision depends on the notified arguments: the
//! facts are read from what the kernel actually started.
//!
//! A capture is keyed by the new image's memory layout (code, data, heap, stack, argument and
//! environment addresses, all drawn anew by every exec under ASLR and inherited by `fork`), so
//! threads and forked children find their image's capture and nothing else does. Without ASLR
//! two images could share a layout; the capture is then bound to the exec'ing process alone.
//!
//! Only what a decision needs is kept, bounded: the interpreter options up to the script
//! argument, the names of injection variables, `LD_LIBRARY_PATH`, the working directory.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// (device, inode) of a file.
pub type FileId = (u64, u64);

/// A file as it was when it was looked at: replacing it changes the inode, rewriting it in
/// place moves the change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub id: FileId,
    pub ctime: (i64, i64),
    /// On a read-only mount: the container cannot rewrite it, and its change time may move for
    /// reasons of no consequence (a hard link made elsewhere on the host).
    pub read_only: bool,
}

impl Stamp {
    pub fn of(md: &std::fs::Metadata) -> Stamp {
        Stamp {
            id: (md.dev(), md.ino()),
            ctime: (md.ctime(), md.ctime_nsec()),
            read_only: false,
        }
    }

    /// Whether `now` is still the file this stamp pinned.
    pub fn holds(&self, now: &Stamp) -> bool {
        self.id == now.id && (self.read_only || self.ctime == now.ctime)
    }
}

/// Captures kept at once; the oldest goes first (its processes then lose script identity).
pub const MAX_CAPTURES: usize = 1024;
/// The most of argv kept: the interpreter's options and the script argument.
const MAX_HEAD_ARGS: usize = 8;
const MAX_ARG_LEN: usize = 512;
/// The most of /proc/PID/environ read at the exec stop.
const MAX_ENVIRON: usize = 1 << 20;
/// Symlinks followed while resolving one path.
const MAX_LINKS: usize = 40;
/// The most of one variable's value kept (`LD_LIBRARY_PATH`, `HOME`, `PATH`); a longer value
/// is not judged but refused.
const MAX_VAR: usize = 4096;
const ADDR_NO_RANDOMIZE: u32 = 0x0040000;

/// Variables that make the loader (or a library every TLS client loads) run code the binary
/// does not name. `LD_LIBRARY_PATH` is accepted when every directory it lists is read-only
/// (see `loader_refusal`); every other `LD_*` and `OPENSSL_*` variable is refused.
pub const LOADER_VARS: &[&str] = &["GCONV_PATH"];
const LOADER_PREFIXES: &[&str] = &["LD_", "OPENSSL_"];
/// Interpreter variables that inject code (exact names, then prefixes); any other `PYTHON*`
/// or `NODE_*` variable is refused too unless it is one of the harmless ones below.
const INTERPRETER_VARS: &[&str] = &[
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
];
const INTERPRETER_PREFIXES: &[&str] = &[
    "BASH_FUNC_",
    "BUN_",
    "DENO_",
    "RUBY",
    "GEM_",
    "BUNDLE_",
    "PERL",
    "LUA_",
];
const HARMLESS_PYTHON: &[&str] = &[
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING",
    "PYTHONHASHSEED",
    "PYTHONUTF8",
    "PYTHONFAULTHANDLER",
    "PYTHONNOUSERSITE",
    "PYTHONSAFEPATH",
    "PYTHONCOERCECLOCALE",
];
const HARMLESS_NODE: &[&str] = &[
    "NODE_ENV",
    "NODE_NO_WARNINGS",
    "NODE_DISABLE_COLORS",
    "NODE_EXTRA_CA_CERTS",
    "NODE_TLS_REJECT_UNAUTHORIZED",
    "NODE_DEBUG",
    "NODE_PENDING_DEPRECATION",
];

/// The layout of a process image: its executable and the auxiliary vector the kernel gave it
/// (the addresses of its program headers, loader, vDSO, random bytes and file name, drawn
/// anew by every exec under ASLR, copied by `fork`, not writable by the process).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layout {
    exe: FileId,
    auxv: Vec<u8>,
    /// Set when the image's addresses were not randomized: the capture is that process's only
    /// (its pid and start time, so a reused pid is another process).
    owner: Option<(i32, u64)>,
}

/// A thread as the guard looks it up on each call: its executable and its image's layout.
#[derive(Debug, Clone)]
pub struct Thread {
    pub exe: Stamp,
    layout: Layout,
}

impl Thread {
    fn read(tid: i32) -> Option<Thread> {
        let exe = Stamp::of(&std::fs::metadata(format!("/proc/{tid}/exe")).ok()?);
        let auxv = read_small(&format!("/proc/{tid}/auxv"))?;
        Some(Thread {
            exe,
            layout: Layout {
                exe: exe.id,
                auxv,
                owner: None,
            },
        })
    }
}

/// Threads looked up at once in the cache (it is emptied when full).
const MAX_THREADS: usize = 8192;

/// What the kernel started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub exe: Stamp,
    /// argv up to the first argument that is not an option, plus one; `None` when it was too
    /// long to keep (then no script entry can match).
    pub head: Option<Vec<String>>,
    /// Names of the code-injecting variables that were set.
    pub injection: Vec<String>,
    pub ld_library_path: Option<String>,
    /// `HOME` and `PATH` as the process started with them (`None`: unset, or too long).
    pub home: Option<String>,
    pub path: Option<String>,
    /// `PYTHONNOUSERSITE` was set.
    pub no_user_site: bool,
    /// The working directory and root, as paths in the container.
    pub cwd: String,
    pub root: String,
}

impl Capture {
    /// Why a loader variable makes any binary entry refuse this process (`LD_LIBRARY_PATH`
    /// only when a directory it names could be written).
    pub fn loader_refusal(&self, container_root: &Path) -> Option<String> {
        if let Some(v) = self.injection.iter().find(|v| loader_var(v)) {
            return Some(format!("the environment sets {v}"));
        }
        let lp = self.ld_library_path.as_deref()?;
        if lp.len() > MAX_VAR {
            return Some("LD_LIBRARY_PATH is too long to judge".into());
        }
        for dir in lp.split([':', ';']) {
            if dir.is_empty() {
                return Some("LD_LIBRARY_PATH names the working directory".into());
            }
            if pinned(container_root, &self.root, &self.cwd, dir, true).is_err() {
                return Some(format!(
                    "LD_LIBRARY_PATH names {dir}, which is not read-only"
                ));
            }
        }
        None
    }

    /// Why an interpreter variable makes a script entry refuse this process.
    pub fn interpreter_refusal(&self) -> Option<String> {
        self.injection
            .iter()
            .find(|v| !loader_var(v))
            .map(|v| format!("the environment sets {v}"))
    }
}

/// Keyed captures, bounded.
#[derive(Default)]
pub struct Captures {
    inner: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    by_layout: HashMap<Layout, Capture>,
    order: VecDeque<Layout>,
    /// Captures bound to one process exist (no ASLR somewhere).
    owned: usize,
    /// Threads by the inode of their pidfd (unique for the boot where pidfs exists), so a call
    /// costs no /proc lookup; an entry goes when its process execs.
    threads: HashMap<u64, Thread>,
    /// Threads of processes that exec'd from a thread other than the leader: their pid moves
    /// between tasks at a moment the guard does not see, so they are never cached. When this
    /// set is full, nothing is cached any more.
    uncached: std::collections::HashSet<u64>,
    no_cache: bool,
}

impl Captures {
    pub fn insert(&self, layout: Layout, capture: Capture) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if layout.owner.is_some() {
            s.owned += 1;
        }
        if s.by_layout.insert(layout.clone(), capture).is_none() {
            s.order.push_back(layout);
        }
        while s.order.len() > MAX_CAPTURES {
            if let Some(old) = s.order.pop_front() {
                if old.owner.is_some() {
                    s.owned = s.owned.saturating_sub(1);
                }
                s.by_layout.remove(&old);
            }
        }
    }

    /// Thread `tid` (whose pidfd has inode `key`, where those are unique).
    pub fn thread(&self, tid: i32, key: Option<u64>) -> Option<Thread> {
        let key = {
            let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match key {
                Some(k) if !s.no_cache => {
                    if let Some(t) = s.threads.get(&k) {
                        return Some(t.clone());
                    }
                    Some(k)
                }
                _ => None,
            }
        };
        let t = Thread::read(tid)?;
        if let Some(k) = key {
            let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if !s.no_cache && !s.uncached.contains(&k) {
                if s.threads.len() >= MAX_THREADS {
                    s.threads.clear();
                }
                s.threads.insert(k, t.clone());
            }
        }
        Some(t)
    }

    /// A process execs: forget the cached threads `keys` (the exec'ing thread and its
    /// leader); `for_good` when the exec is not the leader's.
    pub fn forget(&self, keys: &[u64], for_good: bool) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            s.threads.remove(k);
            if for_good {
                if s.uncached.len() >= MAX_THREADS {
                    s.no_cache = true;
                    s.threads.clear();
                }
                s.uncached.insert(*k);
            }
        }
    }

    /// The capture of the image thread `tid` (looked up as `t`) runs.
    pub fn find(&self, tid: i32, t: &Thread) -> Option<Capture> {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = s.by_layout.get(&t.layout) {
            return Some(c.clone());
        }
        if s.owned == 0 {
            return None;
        }
        let mut key = t.layout.clone();
        let tgid = tgid_of(tid)?;
        key.owner = Some((tgid, start_time(tgid)?));
        s.by_layout.get(&key).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_layout
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn tgid_of(tid: i32) -> Option<i32> {
    let status = read_small(&format!("/proc/{tid}/status"))?;
    String::from_utf8_lossy(&status)
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn randomized(tid: i32, system: bool) -> bool {
    let persona = std::fs::read_to_string(format!("/proc/{tid}/personality"))
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim(), 16).ok());
    system && persona.is_some_and(|p| p & ADDR_NO_RANDOMIZE == 0)
}

/// Whether the kernel randomizes stack, mmap and heap (`randomize_va_space` = 2).
pub fn system_aslr() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/randomize_va_space").is_ok_and(|s| s.trim() == "2")
}

fn split_nul(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split(|c| *c == 0).filter(|s| !s.is_empty())
}

/// argv up to and including the first non-option argument (bounded); `None` if longer.
fn head_of(cmdline: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for a in split_nul(cmdline) {
        if out.len() >= MAX_HEAD_ARGS || a.len() > MAX_ARG_LEN {
            return None;
        }
        let a = String::from_utf8_lossy(a).into_owned();
        let last = !out.is_empty() && !a.starts_with('-');
        out.push(a);
        if last {
            break;
        }
    }
    Some(out)
}

fn loader_var(name: &str) -> bool {
    (LOADER_VARS.contains(&name) || LOADER_PREFIXES.iter().any(|p| name.starts_with(p)))
        && name != "LD_LIBRARY_PATH"
}

/// Whether a variable can make a loader, shell or interpreter run code its command line does
/// not name (`LD_LIBRARY_PATH` included); the exec gate refuses these.
pub fn injects_code(name: &str) -> bool {
    injection_var(name) || name == "LD_LIBRARY_PATH"
}

fn injection_var(name: &str) -> bool {
    loader_var(name)
        || INTERPRETER_VARS.contains(&name)
        || INTERPRETER_PREFIXES.iter().any(|p| name.starts_with(p))
        || (name.starts_with("PYTHON") && !HARMLESS_PYTHON.contains(&name))
        || (name.starts_with("NODE_") && !HARMLESS_NODE.contains(&name))
}

/// When `pid` started (field 22 of stat(5), clock ticks since boot).
fn start_time(pid: i32) -> Option<u64> {
    let stat = read_small(&format!("/proc/{pid}/stat"))?;
    let stat = std::str::from_utf8(&stat).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// The argument and environment areas of `tid`'s image (fields 48 to 51 of stat(5)).
fn arg_env_bounds(tid: i32) -> Option<(u64, u64, u64)> {
    let stat = read_small(&format!("/proc/{tid}/stat"))?;
    let stat = std::str::from_utf8(&stat).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Field N of stat(5) is f[N - 3].
    let at = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    let (arg_start, env_start, env_end) = (at(48)?, at(50)?, at(51)?);
    (arg_start <= env_start && env_start <= env_end).then_some((arg_start, env_start, env_end))
}

/// Read the facts of the image `tid` was just started with (it is stopped at its exec stop,
/// so the argument and environment areas are still exactly what the kernel copied). The
/// areas are read in one `process_vm_readv`.
fn read(tid: i32, system_aslr: bool) -> Option<(Layout, Capture)> {
    let proc = format!("/proc/{tid}");
    let t = Thread::read(tid)?;
    let (arg_start, env_start, env_end) = arg_env_bounds(tid)?;
    let want = ((env_end - arg_start) as usize).min(MAX_ENVIRON);
    let mem = super::calls::Mem(Pid::from_raw(tid))
        .read(arg_start, want)
        .ok()?;
    let split = ((env_start - arg_start) as usize).min(mem.len());
    let (cmdline, environ) = mem.split_at(split);
    let link = |n: &str| {
        std::fs::read_link(format!("{proc}/{n}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    };
    let (cwd, root) = (link("cwd")?, link("root")?);
    let uid = auxv_value(&t.layout.auxv, AT_UID);
    let mut injection = Vec::new();
    let (mut ld_library_path, mut home, mut path, mut no_user_site) = (None, None, None, false);
    // The first definition is what getenv(3) returns. A value too long to keep is kept one
    // character too long: whoever reads it refuses.
    let keep = |slot: &mut Option<String>, v: &str| {
        if slot.is_none() {
            *slot = Some(v.chars().take(MAX_VAR + 1).collect());
        }
    };
    for e in split_nul(environ) {
        let e = String::from_utf8_lossy(e);
        let (k, v) = e.split_once('=').unwrap_or((&e, ""));
        match k {
            "LD_LIBRARY_PATH" => keep(&mut ld_library_path, v),
            "HOME" => keep(&mut home, v),
            "PATH" => keep(&mut path, v),
            "PYTHONNOUSERSITE" => no_user_site |= !v.is_empty(),
            _ => {}
        }
        if k != "LD_LIBRARY_PATH"
            && injection_var(k)
            && injection.len() < 16
            && !injection.iter().any(|x| x == k)
        {
            injection.push(k.to_string());
        }
    }
    if ((env_end - arg_start) as usize) > MAX_ENVIRON {
        // An environment too large to read whole cannot be cleared of injection variables.
        injection.push("LD_PRELOAD".into());
    }
    // Without HOME, interpreters look the home up in the passwd file: do it now, as they do
    // at start.
    if home.is_none() {
        home = uid.and_then(|u| passwd_home(&proc, u as u32));
    }
    let mut layout = t.layout;
    if !randomized(tid, system_aslr) {
        layout.owner = Some((tid, start_time(tid)?));
    }
    Some((
        layout,
        Capture {
            exe: t.exe,
            head: head_of(cmdline),
            injection,
            ld_library_path,
            home,
            path,
            no_user_site,
            cwd,
            root,
        },
    ))
}

const AT_UID: u64 = 11;

/// An entry of an auxiliary vector (pairs of native words).
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|c| {
        let k = u64::from_ne_bytes(c[..8].try_into().ok()?);
        let v = u64::from_ne_bytes(c[8..].try_into().ok()?);
        (k == key).then_some(v)
    })
}

/// The home of `uid` in the passwd file of the process's root (`proc`: its /proc directory),
/// read without leaving that root.
fn passwd_home(proc: &str, uid: u32) -> Option<String> {
    let root = crate::container_root::ContainerRoot::open(Path::new(&format!("{proc}/root")))?;
    let text = String::from_utf8(root.read_regular(Path::new("/etc/passwd"), 1 << 20)?).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
    })
}

/// A small /proc file in one `read` (they report size 0, so `read_to_string` reads it in
/// growing pieces; this is on the path of every allowed connect).
fn read_small(path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = f.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// What became of an `execve` the guard let continue.
pub enum Exec {
    /// A new image, and what it was started with.
    Captured(Box<(Layout, Capture)>),
    /// The call failed: the process runs the image it had.
    Failed,
    /// A new image the guard could not read (it could not trace the caller, or the caller
    /// died or gave up): entries that need a capture refuse it.
    Unknown,
}

/// Let the notified `execve` of thread group leader `tid` continue (`respond` answers the
/// notification) and capture what the kernel started at the exec stop.
pub fn continue_and_capture(
    tid: i32,
    system_aslr: bool,
    still_waiting: impl Fn() -> bool,
    respond: impl FnOnce(),
) -> Exec {
    let pid = Pid::from_raw(tid);
    if ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACEEXEC).is_err() {
        respond();
        return Exec::Unknown;
    }
    // Seized by pid: only if the caller still waits is that pid still the caller.
    if !still_waiting() {
        let _ = ptrace::interrupt(pid);
        let _ = waitpid(pid, Some(WaitPidFlag::__WALL));
        let _ = ptrace::detach(pid, None);
        return Exec::Unknown;
    }
    respond();
    // Stops the tracee when the call returns to user space: right after a failed exec, or
    // (cleared by the detach) after the exec stop of one that worked.
    let _ = ptrace::interrupt(pid);
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_EXEC)) => {
                let got = read(tid, system_aslr);
                let _ = ptrace::detach(pid, None);
                return got.map_or(Exec::Unknown, |lc| Exec::Captured(Box::new(lc)));
            }
            Ok(WaitStatus::PtraceEvent(_, _, _)) => {
                let _ = ptrace::detach(pid, None);
                return Exec::Failed;
            }
            // A signal arrived after a failed exec: hand it back on the way out.
            Ok(WaitStatus::Stopped(_, sig)) => {
                let _ = ptrace::detach(pid, sig);
                return Exec::Failed;
            }
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return Exec::Failed,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return Exec::Unknown,
        }
    }
}

mod interpreter;
pub use interpreter::*;

#[cfg(test)]
mod tests;
