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
    use std::io::Read;
    let dir = std::fs::File::open(format!("{proc}/root")).ok()?;
    let root = pathrs::Root::from_fd(dir);
    let h = root.resolve(Path::new("/etc/passwd")).ok()?;
    let f = h.reopen(pathrs::flags::OpenFlags::O_RDONLY).ok()?;
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
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

// ---- interpreters --------------------------------------------------------------------------

/// How an interpreter's command line names the script it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Python,
    Node,
    /// Any other interpreter: no options at all, the first argument is the script.
    Plain,
}

impl Family {
    /// From the interpreter a script's `#!` line names.
    pub fn of(interpreter: &str) -> Family {
        let base = Path::new(interpreter)
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        if base.starts_with("python") {
            Family::Python
        } else if base == "node" || base == "nodejs" {
            Family::Node
        } else {
            Family::Plain
        }
    }
}

/// Python options that change neither what code runs nor where it is imported from.
const PYTHON_FLAGS: &str = "BEIOPqRsSubdv";
/// Node options that change neither what code runs nor how modules are found.
const NODE_OPTIONS: &[&str] = &[
    "--no-warnings",
    "--no-deprecation",
    "--enable-source-maps",
    "--trace-warnings",
    "--trace-uncaught",
    "--trace-deprecation",
    "--abort-on-uncaught-exception",
    "--expose-gc",
    "--use-openssl-ca",
    "--use-bundled-ca",
    "--preserve-symlinks-main",
];
const NODE_VALUED: &[&str] = &[
    "--max-old-space-size",
    "--max-semi-space-size",
    "--stack-size",
    "--unhandled-rejections",
    "--dns-result-order",
    "--title",
];

fn option_ok(family: Family, opt: &str) -> bool {
    match family {
        Family::Python => {
            opt.len() > 1
                && !opt.starts_with("--")
                && opt[1..].chars().all(|c| PYTHON_FLAGS.contains(c))
        }
        Family::Node => {
            NODE_OPTIONS.contains(&opt)
                || opt
                    .split_once('=')
                    .is_some_and(|(k, _)| NODE_VALUED.contains(&k))
        }
        Family::Plain => false,
    }
}

/// The script argument of `head` for `family`; `Err` names the argument that makes the
/// interpreter run something other than a script file.
pub fn script_argument(family: Family, head: &[String]) -> Result<String, String> {
    for a in head.iter().skip(1) {
        if a == "-" {
            return Err("the interpreter reads its program from standard input".into());
        }
        if !a.starts_with('-') {
            return Ok(a.clone());
        }
        if !option_ok(family, a) {
            return Err(format!(
                "the interpreter was given {a}, which may run other code"
            ));
        }
    }
    Err("no script argument".into())
}

// ---- read-only resolution ----------------------------------------------------------------

fn read_only(fd: &OwnedFd) -> bool {
    // SAFETY: fstatvfs fills the struct we pass for a descriptor we hold.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) };
    r == 0 && st.f_flag & libc::ST_RDONLY != 0
}

fn open_path(dir: &OwnedFd, name: &Path) -> Result<OwnedFd, Errno> {
    let c =
        std::ffi::CString::new(name.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: openat with a NUL-terminated name and a descriptor we hold; the result is ours.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resolve `path` (relative to `cwd`) inside the process root `root` of the container at
/// `container_root`, and require every directory on the way, every link and the final file to
/// be on a read-only mount: then nothing in the container can make the same path name another
/// file later. Returns the file's id; `dir` accepts a directory as the end.
pub fn pinned(
    container_root: &Path,
    root: &str,
    cwd: &str,
    path: &str,
    dir: bool,
) -> Result<FileId, String> {
    if root != "/" {
        return Err(format!("the process runs chrooted in {root}"));
    }
    let full = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(cwd).join(path)
    };
    let top = std::fs::File::open(container_root)
        .map(OwnedFd::from)
        .map_err(|e| format!("{}: {e}", container_root.display()))?;
    let not_ro = |p: &Path| format!("{} is not read-only", p.display());
    if !read_only(&top) {
        return Err(not_ro(Path::new("/")));
    }
    let mut stack: Vec<OwnedFd> = vec![top];
    let mut todo: VecDeque<PathBuf> = full
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut shown = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name.as_os_str() == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            shown.pop();
            continue;
        }
        let cur = stack.last().expect("root stays");
        let fd =
            open_path(cur, &name).map_err(|e| format!("{}: {e}", shown.join(&name).display()))?;
        shown.push(&name);
        let st = nix::sys::stat::fstat(fd.as_fd().as_raw_fd()).map_err(|e| e.to_string())?;
        if !read_only(&fd) {
            return Err(not_ro(&shown));
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!("{}: too many links", shown.display()));
                }
                let target = nix::fcntl::readlinkat(Some(cur.as_raw_fd()), name.as_path())
                    .map_err(|e| e.to_string())?;
                let target = PathBuf::from(target);
                shown.pop();
                let mut rest: VecDeque<PathBuf> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(PathBuf::from(n)),
                        Component::ParentDir => Some(PathBuf::from("..")),
                        _ => None,
                    })
                    .collect();
                if target.is_absolute() {
                    stack.truncate(1);
                    shown = PathBuf::from("/");
                }
                rest.extend(todo.drain(..));
                todo = rest;
            }
            libc::S_IFDIR => stack.push(fd),
            libc::S_IFREG if todo.is_empty() => return Ok((st.st_dev, st.st_ino)),
            _ => return Err(format!("{}: not a regular file", shown.display())),
        }
    }
    if dir && stack.len() > 1 {
        let st = nix::sys::stat::fstat(stack.last().expect("nonempty").as_raw_fd())
            .map_err(|e| e.to_string())?;
        return Ok((st.st_dev, st.st_ino));
    }
    Err(format!("{}: not a file", full.display()))
}

/// Whether `path` cannot be changed from inside the container: it is read-only all the way,
/// or it does not exist and the deepest existing directory above it is (so nothing can be
/// created there).
pub fn sealed(container_root: &Path, root: &str, path: &str) -> Result<(), String> {
    let mut p = PathBuf::from(path);
    loop {
        match pinned(container_root, root, "/", &p.to_string_lossy(), true) {
            Ok(_) => return Ok(()),
            Err(e) if e.contains("ENOENT") && p.pop() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Further conditions a script entry's interpreter sets on how it was started: `None` when
/// the process runs only the entry's code.
pub fn family_refusal(
    family: Family,
    interpreter: FileId,
    cap: &Capture,
    head: &[String],
    container_root: &Path,
) -> Option<String> {
    let home_sealed = |dirs: &[&str], what: &str| -> Option<String> {
        let Some(home) = cap
            .home
            .as_deref()
            .filter(|h| h.starts_with('/') && h.len() <= MAX_VAR)
        else {
            return Some(format!("HOME is not set to a path, so {what} is unknown"));
        };
        dirs.iter().find_map(|d| {
            let p = Path::new(home).join(d);
            sealed(container_root, &cap.root, &p.to_string_lossy())
                .err()
                .map(|e| format!("{what} ({}) could be written: {e}", p.display()))
        })
    };
    match family {
        Family::Python => {
            // sys.prefix, and a pyvenv.cfg next to it, come from where argv[0] says python is.
            if let Err(e) = argv0_is(container_root, cap, &head[0], interpreter) {
                return Some(e);
            }
            let options = head.iter().skip(1).take_while(|a| a.starts_with('-'));
            let no_site = options
                .clone()
                .any(|a| !a.starts_with("--") && a[1..].contains(['s', 'I']));
            if cap.no_user_site || no_site {
                return None;
            }
            home_sealed(&[".local"], "the user site directory")
        }
        // Modules a script requires that its own tree lacks are looked for here.
        Family::Node => home_sealed(&[".node_modules", ".node_libraries"], "node's home folders"),
        Family::Plain => None,
    }
}

/// Whether argv[0] names the interpreter's file: as a path (read-only all the way), or as the
/// first match of a bare name on PATH.
fn argv0_is(container_root: &Path, cap: &Capture, argv0: &str, id: FileId) -> Result<(), String> {
    let same = |p: &str| -> Result<Option<bool>, String> {
        match pinned(container_root, &cap.root, &cap.cwd, p, false) {
            Ok(x) => Ok(Some(x == id)),
            Err(e) if e.contains("ENOENT") => Ok(None),
            Err(e) => Err(format!("argv[0] {argv0}: {e}")),
        }
    };
    let found = if argv0.contains('/') {
        same(argv0)?
    } else {
        let path = cap
            .path
            .as_deref()
            .filter(|p| p.len() <= MAX_VAR)
            .unwrap_or(crate::executor::DEFAULT_PATH);
        let mut found = None;
        for dir in path.split(':') {
            let dir = if dir.is_empty() { "." } else { dir };
            if let Some(hit) = same(&format!("{dir}/{argv0}"))? {
                found = Some(hit);
                break;
            }
        }
        found
    };
    match found {
        Some(true) => Ok(()),
        Some(false) => Err(format!(
            "argv[0] {argv0} names another file than the interpreter"
        )),
        None => Err(format!("argv[0] {argv0} names no file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn script_argument_accepts_only_harmless_options() {
        let py = |a: &[&str]| script_argument(Family::Python, &v(a));
        assert_eq!(py(&["python3", "/app/ok.py"]).unwrap(), "/app/ok.py");
        assert_eq!(
            py(&["python3", "-u", "-B", "/app/ok.py"]).unwrap(),
            "/app/ok.py"
        );
        assert_eq!(py(&["python3", "-Bu", "ok.py"]).unwrap(), "ok.py");
        for bad in [
            &["python3", "-", "/app/ok.py"][..],
            &["python3", "-i", "/app/ok.py"],
            &["python3", "-W", "x", "/app/ok.py"],
            &["python3", "-c", "1"],
            &["python3", "-m", "http.server"],
            &["python3", "-X", "importtime", "/app/ok.py"],
            &["python3", "-Ic", "1"],
            &["python3", "--", "/app/ok.py"],
            &["python3"],
        ] {
            assert!(py(bad).is_err(), "{bad:?}");
        }
        let node = |a: &[&str]| script_argument(Family::Node, &v(a));
        assert_eq!(node(&["node", "/app/ok.js"]).unwrap(), "/app/ok.js");
        assert_eq!(
            node(&[
                "node",
                "--no-warnings",
                "--max-old-space-size=512",
                "/app/ok.js"
            ])
            .unwrap(),
            "/app/ok.js"
        );
        for bad in [
            &["node", "-", "/app/ok.js"][..],
            &["node", "--print=1", "/app/ok.js"],
            &["node", "--loader=/tmp/l.mjs", "/app/ok.js"],
            &["node", "--experimental-loader=/tmp/l.mjs", "/app/ok.js"],
            &["node", "--import=/tmp/x.mjs", "/app/ok.js"],
            &["node", "--env-file=/tmp/e", "/app/ok.js"],
            &["node", "-r", "/tmp/x.js", "/app/ok.js"],
            &["node", "-e", "1"],
            &["node", "--inspect", "/app/ok.js"],
        ] {
            assert!(node(bad).is_err(), "{bad:?}");
        }
        let plain = |a: &[&str]| script_argument(Family::Plain, &v(a));
        assert_eq!(plain(&["sh", "/app/x.sh"]).unwrap(), "/app/x.sh");
        assert!(plain(&["sh", "-x", "/app/x.sh"]).is_err());
        assert!(plain(&["bash", "-c", "curl x"]).is_err());
    }

    #[test]
    fn head_keeps_options_and_the_script_only() {
        let c = b"python3\0-u\0/app/ok.py\0--secret\0arg\0";
        assert_eq!(head_of(c).unwrap(), v(&["python3", "-u", "/app/ok.py"]));
        let long = [b"python3\0".as_slice(), &vec![b'-'; 2000], b"\0"].concat();
        assert!(head_of(&long).is_none());
    }

    #[test]
    fn injection_variables() {
        for k in [
            "LD_PRELOAD",
            "NODE_OPTIONS",
            "NODE_PATH",
            "PYTHONPATH",
            "PYTHONINSPECT",
            "PYTHONWARNINGS",
            "BASH_ENV",
        ] {
            assert!(injection_var(k), "{k}");
        }
        for k in [
            "PATH",
            "HOME",
            "PYTHONUNBUFFERED",
            "NODE_ENV",
            "LD_LIBRARY_PATH",
            "LANG",
        ] {
            assert!(!injection_var(k), "{k}");
        }
        assert_eq!(Family::of("/usr/bin/python3.11"), Family::Python);
        assert_eq!(Family::of("node"), Family::Node);
        assert_eq!(Family::of("/bin/sh"), Family::Plain);
    }

    #[test]
    fn pinned_requires_read_only_all_the_way() {
        // The host's /proc is read-write and /tmp usually too: nothing under them is pinned.
        let dir = crate::testutil::TempDir::new("pinned");
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let p = dir.path().join("f");
        let e = pinned(Path::new("/"), "/", "/", p.to_str().unwrap(), false).unwrap_err();
        assert!(e.contains("not read-only"), "{e}");
        assert!(pinned(Path::new("/"), "/chroot", "/", "/x", false).is_err());
    }
}
