//! The per-container network guard, run in the helper process for the container's
//! life. Each container process hands it the listener of its notification filter; a thread
//! per listener receives the notified calls, decides and, when allowed, performs
//! the call itself on the caller's socket (`pidfd_getfd`) with the arguments it validated.
//!
//! What it never does: answer "continue" for a call on an inet socket. Calls on unix and
//! netlink sockets continue in the kernel; a descriptor swapped under such a call meets the
//! kernel fence (`fence`), which refuses inet connects and addressed sends by anyone but the
//! guard. `execve` continues too, with the guard attached to read what the kernel started
//! (`capture`). Everything it holds for a call is bounded: listener threads, waiting calls,
//! copied bytes, captures, remembered connections, audit lines.
//!
//! When the guard is gone its listeners close and the kernel fails every notified call
//! (ENOSYS): the container keeps running without network and cannot start new programs.

use std::collections::{BTreeMap, HashSet};
use std::io::{IoSliceMut, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags};
use nix::unistd::Pid;

use super::calls::{self, Header, Mem, MMSGHDR_LEN};
use super::capture::{self, Captures};
use super::conns::Connections;
use super::decide::{self, Attempt, Decision};
use super::fence::Fence;
use super::identity::{self, Baseline, Binaries, Caller};
use super::l7;
use super::local::{self, local_address, LocalRules};
use super::notif::{self, Reply};
use super::protocol::{self, Response, MAX_REQUEST};
use super::resolver::{self, Answers};
use super::sockaddr::{self, Target};
use super::waiter::{Pending, Waiter};
use crate::audit::{self, Throttle};
use crate::helper::{self, HelperService};
use crate::policy::merge::{Effective, EffectiveNetwork};
use crate::policy::model::Endpoint;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_BIT: i64 = 0x4000_0000;
/// i386 and x32 execve/execveat: they continue, without a capture.
const EXEC_32: [(u32, i64); 4] = [
    (0x4000_0003, 11),
    (0x4000_0003, 358),
    (AUDIT_ARCH_X86_64, X32_BIT | 520),
    (AUDIT_ARCH_X86_64, X32_BIT | 545),
];
/// Binaries are resolved again on a miss at most this often (a program installed later).
const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// Process trees (init and each `exec`) served at once; one thread each.
pub const MAX_LISTENERS: usize = 64;

/// One generation of the network policies and the binaries they name.
pub struct Generation {
    pub n: u64,
    pub policies: BTreeMap<String, EffectiveNetwork>,
    pub binaries: Binaries,
    /// When the resolution of `binaries` started.
    pub resolved_at: Instant,
    /// The HTTP rules of every inspected endpoint, compiled once per generation.
    pub rules: Arc<CompiledRules>,
}

/// Each inspected endpoint with its compiled rules (or why they do not compile).
pub type CompiledRules = Vec<(Endpoint, Result<Arc<l7::Rules>, String>)>;

fn compile_rules(policies: &BTreeMap<String, EffectiveNetwork>) -> Arc<CompiledRules> {
    let mut out: CompiledRules = Vec::new();
    for ep in policies.values().flat_map(|n| n.policy.endpoints.iter()) {
        if l7::inspected(ep) && !out.iter().any(|(e, _)| e == ep) {
            let rules = l7::Rules::compile(&l7::endpoint_rules(ep))
                .map(Arc::new)
                .map_err(|e| e.to_string());
            out.push((ep.clone(), rules));
        }
    }
    Arc::new(out)
}

/// What every guard thread shares.
pub struct Shared {
    pub id: String,
    audit: Throttle,
    /// The runtime's state directory: the effective policy.
    pub own: crate::container_dir::ContainerDir,
    pub init_pid: i32,
    pub resolver: Ipv4Addr,
    pub generation: RwLock<Arc<Generation>>,
    pub answers: Answers,
    pub captures: Captures,
    baseline: Baseline,
    conns: Connections,
    fence: Option<Fence>,
    local: LocalRules,
    aslr: bool,
    /// pidfds have inodes unique per pid (caller lookups can be cached).
    pidfs: bool,
    last_refresh: Mutex<Instant>,
    listeners: AtomicUsize,
    waiter: OnceLock<Waiter>,
    /// The layer-7 proxy, started at the first connect that needs it.
    l7: OnceLock<Result<Arc<l7::Proxy>, String>>,
    /// PEM files of roots the proxy trusts upstream besides the host's.
    l7_roots: Vec<PathBuf>,
}

impl Shared {
    fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.init_pid))
    }

    pub fn current(&self) -> Arc<Generation> {
        self.generation
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn load_policies(&self) -> Result<BTreeMap<String, EffectiveNetwork>, String> {
        let path = self.own.effective();
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let eff: Effective =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(eff.network_policies)
    }

    /// Load `effective.json` as the next generation and end the connections of policies it
    /// no longer has (or has changed); returns the generation's number.
    pub fn reload(&self) -> Result<u64, String> {
        let policies = self.load_policies()?;
        let resolved_at = Instant::now();
        let binaries = Binaries::resolve(&self.root(), &policies, &self.baseline);
        let (n, revoked) = {
            let mut g = self.generation.write().unwrap_or_else(|e| e.into_inner());
            let revoked: HashSet<String> = g
                .policies
                .iter()
                .filter(|(k, old)| {
                    policies.get(*k).is_none_or(|new| {
                        serde_json::to_value(&new.policy).ok()
                            != serde_json::to_value(&old.policy).ok()
                    })
                })
                .map(|(k, _)| k.clone())
                .collect();
            let n = g.n + 1;
            *g = Arc::new(Generation {
                n,
                rules: compile_rules(&policies),
                policies,
                binaries,
                resolved_at,
            });
            (n, revoked)
        };
        if let Some(f) = &self.fence {
            let cut = self
                .conns
                .revoke(&revoked, &f.container.join("cgroup.procs"));
            if cut > 0 {
                tracing::info!("network guard of {}: revoked {cut} connection(s)", self.id);
            }
        }
        Ok(n)
    }

    /// Resolve binaries again (same generation) after a caller's lookup at `looked_at` missed:
    /// a binary may have been installed since. A resolution that started after the lookup
    /// already sees the caller's executable, which existed before the caller ran it. One
    /// resolution per REFRESH_EVERY at most; a caller arriving sooner waits for the next one
    /// rather than being refused on a stale view. The wait is on a path to a likely refusal,
    /// and holds up only the listener of the caller's own process tree.
    fn refresh_binaries(&self, looked_at: Instant) -> Arc<Generation> {
        let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current();
        if cur.resolved_at > looked_at {
            return cur;
        }
        let wait = REFRESH_EVERY.saturating_sub(last.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let started = Instant::now();
        let binaries = Binaries::resolve(&self.root(), &cur.policies, &self.baseline);
        *last = Instant::now();
        let next = Arc::new(Generation {
            n: cur.n,
            policies: cur.policies.clone(),
            binaries,
            resolved_at: started,
            rules: cur.rules.clone(),
        });
        let mut g = self.generation.write().unwrap_or_else(|e| e.into_inner());
        if g.n == cur.n {
            *g = next.clone();
        }
        next
    }

    pub fn audit(&self, ev: audit::Event) {
        self.audit.record(&ev);
    }

    /// The inode of a pidfd, where the kernel gives every pid its own (pidfs, Linux 6.9).
    fn pid_key(&self, pidfd: &OwnedFd) -> Option<u64> {
        if !self.pidfs {
            return None;
        }
        nix::sys::stat::fstat(pidfd.as_raw_fd())
            .ok()
            .map(|st| st.st_ino)
    }
}

/// Whether pidfds of different processes have different inodes (pidfs).
fn pidfs() -> bool {
    let ino = |pid: i32| {
        crate::helper::pidfd_open_flags(pid, 0)
            .ok()
            .and_then(|fd| nix::sys::stat::fstat(fd.as_raw_fd()).ok())
            .map(|st| st.st_ino)
    };
    matches!((ino(std::process::id() as i32), ino(1)), (Some(a), Some(b)) if a != b)
}

/// The guard as a helper service.
pub struct Guard {
    shared: Option<Arc<Shared>>,
    control: Option<UnixListener>,
    upstream: Vec<IpAddr>,
}

/// What `create` knows of the guard before the init process exists.
pub struct GuardConfigBase {
    pub id: String,
    /// The container's directory (its audit file) and what its events carry.
    pub audit_dir: PathBuf,
    pub audit: audit::Context,
    pub own: crate::container_dir::ContainerDir,
    pub resolver: Ipv4Addr,
    pub upstream: Vec<IpAddr>,
    /// The kernel fence, set up between create and start.
    pub fence: Option<Fence>,
    /// Local socket rules (`sandbox`).
    pub local: LocalRules,
    /// Roots the layer-7 proxy trusts upstream besides the host's (node configuration).
    pub l7_roots: Vec<PathBuf>,
}

impl GuardConfigBase {
    pub fn with(self, init_pid: i32, control: UnixListener) -> GuardConfig {
        GuardConfig {
            base: self,
            init_pid,
            control,
        }
    }
}

pub struct GuardConfig {
    pub base: GuardConfigBase,
    pub init_pid: i32,
    pub control: UnixListener,
}

impl Guard {
    pub fn new(c: GuardConfig) -> Guard {
        let shared = Shared {
            id: c.base.id,
            audit: Throttle::new(
                audit::Recorder::new(c.base.audit, &c.base.audit_dir).background(),
            ),
            own: c.base.own,
            init_pid: c.init_pid,
            resolver: c.base.resolver,
            generation: RwLock::new(Arc::new(Generation {
                n: 0,
                policies: BTreeMap::new(),
                binaries: Binaries::default(),
                resolved_at: Instant::now(),
                rules: Arc::default(),
            })),
            answers: Answers::default(),
            captures: Captures::default(),
            baseline: Baseline::default(),
            conns: Connections::default(),
            fence: c.base.fence,
            local: c.base.local,
            aslr: capture::system_aslr(),
            pidfs: pidfs(),
            last_refresh: Mutex::new(Instant::now() - REFRESH_EVERY),
            listeners: AtomicUsize::new(0),
            waiter: OnceLock::new(),
            l7: OnceLock::new(),
            l7_roots: c.base.l7_roots,
        };
        Guard {
            shared: Some(Arc::new(shared)),
            control: Some(c.control),
            upstream: c.base.upstream,
        }
    }
}

impl HelperService for Guard {
    fn name(&self) -> &'static str {
        "network guard"
    }

    fn keep_fds(&self) -> Vec<i32> {
        self.control.iter().map(|c| c.as_raw_fd()).collect()
    }

    fn run(&mut self, init_exit: &OwnedFd) {
        let (Some(shared), Some(control)) = (self.shared.take(), self.control.take()) else {
            return;
        };
        if let Err(e) = shared.reload() {
            // No policies means no egress: every call is refused, none is let through.
            tracing::error!("network guard of {}: {e}", shared.id);
        }
        let s = shared.clone();
        match Waiter::start(Box::new(move || s.audit.flush(false))) {
            Ok(w) => {
                let _ = shared.waiter.set(w);
            }
            // Without the waiter, calls that would wait fail with EAGAIN.
            Err(e) => tracing::error!("network guard of {}: waiter: {e}", shared.id),
        }
        if let Err(e) = resolver::start(shared.clone(), std::mem::take(&mut self.upstream)) {
            tracing::error!("network guard of {}: resolver: {e}", shared.id);
        }
        let s = shared.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("guard-control".into())
            .spawn(move || control_loop(s, control))
        {
            tracing::error!("network guard of {}: control thread: {e}", shared.id);
        }
        helper::wait_exit(init_exit);
        shared.audit.flush(true);
        shared.audit.recorder().finish();
    }
}

fn control_loop(shared: Arc<Shared>, control: UnixListener) {
    for conn in control.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        if let Err(e) = serve_control(&shared, conn) {
            tracing::warn!("network guard of {}: control: {e}", shared.id);
        }
    }
}

/// Read one request and the pid the kernel attached to it.
fn read_request(
    conn: &UnixStream,
) -> std::io::Result<(Result<protocol::Request, String>, Option<i32>)> {
    socket::setsockopt(conn, sockopt::PassCred, &true)?;
    let mut buf = [0u8; MAX_REQUEST];
    let mut cmsg = nix::cmsg_space!(libc::ucred);
    let (n, pid) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )?;
        let pid = msg.cmsgs()?.find_map(|c| match c {
            ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
            _ => None,
        });
        (msg.bytes, pid)
    };
    Ok((protocol::Request::decode(&buf[..n]), pid))
}

fn serve_control(shared: &Arc<Shared>, mut conn: UnixStream) -> std::io::Result<()> {
    let (req, pid) = read_request(&conn)?;
    let error = |message: String| Response::Error { message };
    let reply = match req {
        Ok(protocol::Request::Listener { fd }) => match pid {
            Some(pid) => adopt(shared, pid, fd).map_or_else(error, |()| Response::Ok),
            None => error("no credentials".into()),
        },
        Ok(protocol::Request::Reload) => shared
            .reload()
            .map_or_else(error, |n| Response::Generation { n }),
        Ok(protocol::Request::Generation) => Response::Generation {
            n: shared.current().n,
        },
        Err(e) => error(e),
    };
    conn.write_all(&reply.encode())
}

/// Take the listener of a new container process and serve it on a thread of its own. The
/// process waits for the answer, so it runs nothing before it is in the fence.
fn adopt(shared: &Arc<Shared>, pid: i32, fd: i32) -> Result<(), String> {
    if let Some(f) = &shared.fence {
        f.admit(pid).map_err(|e| e.to_string())?;
    }
    if shared.listeners.fetch_add(1, Ordering::SeqCst) >= MAX_LISTENERS {
        shared.listeners.fetch_sub(1, Ordering::SeqCst);
        return Err(format!(
            "{MAX_LISTENERS} process trees are already under this guard"
        ));
    }
    let listener = match notif::take_listener(pid, fd) {
        Ok(l) => l,
        Err(e) => {
            shared.listeners.fetch_sub(1, Ordering::SeqCst);
            return Err(format!("taking fd {fd} of pid {pid}: {e}"));
        }
    };
    let s = shared.clone();
    std::thread::Builder::new()
        .name("guard-listener".into())
        .spawn(move || {
            serve_listener(&s, Arc::new(listener));
            s.listeners.fetch_sub(1, Ordering::SeqCst);
        })
        .map(drop)
        .map_err(|e| {
            shared.listeners.fetch_sub(1, Ordering::SeqCst);
            format!("no thread for the listener: {e}")
        })
}

fn serve_listener(shared: &Arc<Shared>, listener: Arc<OwnedFd>) {
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if !revents.contains(PollFlags::POLLIN) {
            // Every process using this filter is gone.
            return;
        }
        match notif::recv(&listener) {
            Ok(req) => handle(shared, &listener, &req),
            Err(Errno::EINTR | Errno::ENOENT) => continue,
            Err(_) => return,
        }
    }
}

/// What a notified call asks for. Destinations and control data are copied from the caller
/// once, when the call is decided; payloads are read when they are sent.
enum Request {
    Connect(Vec<u8>),
    SendTo {
        buf: u64,
        len: usize,
        flags: i32,
        addr: Vec<u8>,
    },
    SendMsg(Header, i32),
    SendMmsg {
        vec: u64,
        hdrs: Vec<Header>,
        flags: i32,
    },
}

impl Request {
    fn flags(&self) -> i32 {
        match self {
            Request::Connect(_) => 0,
            Request::SendTo { flags, .. }
            | Request::SendMsg(_, flags)
            | Request::SendMmsg { flags, .. } => *flags,
        }
    }
}

fn read_request_args(mem: &Mem, nr: i64, a: &[u64; 6]) -> Result<Request, Errno> {
    match nr {
        libc::SYS_connect => Ok(Request::Connect(calls::read_sockaddr(mem, a[1], a[2])?)),
        libc::SYS_sendto => Ok(Request::SendTo {
            buf: a[1],
            len: (a[2] as usize).min(calls::MAX_DATA),
            flags: a[3] as i32,
            addr: calls::read_sockaddr(mem, a[4], a[5])?,
        }),
        libc::SYS_sendmsg => Ok(Request::SendMsg(
            calls::read_header(mem, a[1])?,
            a[2] as i32,
        )),
        libc::SYS_sendmmsg => {
            let n = (a[2] as u32 as usize).min(calls::MAX_MMSG);
            let hdrs = (0..n)
                .map(|i| calls::read_header(mem, a[1] + (i * MMSGHDR_LEN) as u64))
                .collect::<Result<_, _>>()?;
            Ok(Request::SendMmsg {
                vec: a[1],
                hdrs,
                flags: a[3] as i32,
            })
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn syscall_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_connect => "connect",
        libc::SYS_sendto => "sendto",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_sendmmsg => "sendmmsg",
        _ => "socket call",
    }
}

fn refuse(
    shared: &Shared,
    listener: &OwnedFd,
    id: u64,
    tid: i32,
    why: &str,
    request: serde_json::Value,
) {
    shared.audit(
        audit::Event::new(audit::Kind::Network, "denied", "network guard", why)
            .pid(tid)
            .request(request),
    );
    notif::respond(listener, id, Reply::Error(Errno::EACCES));
}

/// The flags a send passes in a register: a fast open on a socket the guard lets continue
/// would be the kernel's to perform on whatever socket the number names by then.
fn register_flags(nr: i64, a: &[u64; 6]) -> i32 {
    match nr {
        libc::SYS_sendto | libc::SYS_sendmmsg => a[3] as i32,
        libc::SYS_sendmsg => a[2] as i32,
        _ => 0,
    }
}

fn handle(shared: &Arc<Shared>, listener: &Arc<OwnedFd>, req: &libc::seccomp_notif) {
    let id = req.id;
    let nr = req.data.nr as i64;
    let tid = req.pid as i32;
    if EXEC_32.contains(&(req.data.arch, nr)) {
        // Not captured; its image must not be taken for the one cached before.
        forget_for_good(shared, tid);
        return notif::respond(listener, id, Reply::Continue);
    }
    if req.data.arch != AUDIT_ARCH_X86_64 || nr & X32_BIT != 0 {
        return refuse(
            shared,
            listener,
            id,
            tid,
            "network calls of 32-bit processes are not supported",
            serde_json::Value::Null,
        );
    }
    match nr {
        libc::SYS_execve | libc::SYS_execveat => return exec(shared, listener, id, tid),
        libc::SYS_listen => return listen(shared, listener, id, tid, &req.data.args),
        libc::SYS_connect | libc::SYS_sendto | libc::SYS_sendmsg | libc::SYS_sendmmsg => {}
        _ => return notif::respond(listener, id, Reply::Error(Errno::ENOSYS)),
    }
    let fds = match notif::ThreadFds::open(tid) {
        Ok(p) => p,
        Err(_) => return notif::respond(listener, id, Reply::Error(Errno::ESRCH)),
    };
    if !notif::valid(listener, id) {
        return;
    }
    let sock = match fds.get(req.data.args[0] as i32) {
        Ok(s) => s,
        Err(e) => return notif::respond(listener, id, Reply::Error(e)),
    };
    let pidfd = fds.pidfd;
    let Some(domain) = domain_of(&sock) else {
        return notif::respond(listener, id, Reply::Error(Errno::ENOTSOCK));
    };
    let what = || serde_json::json!({"syscall": syscall_name(nr), "family": domain});
    match domain {
        libc::AF_INET | libc::AF_INET6 => {}
        libc::AF_UNIX | libc::AF_NETLINK => {
            if register_flags(nr, &req.data.args) & libc::MSG_FASTOPEN != 0 {
                return refuse(
                    shared,
                    listener,
                    id,
                    tid,
                    "fast open on a local socket",
                    what(),
                );
            }
            if domain == libc::AF_UNIX && shared.local.unix {
                return unix_call(shared, listener, id, tid, nr, &req.data.args, sock, pidfd);
            }
            // Local sockets: no network to guard. If another thread swaps an inet socket
            // onto this descriptor before the kernel looks it up again, the kernel fence
            // refuses the inet connect or addressed send (the caller is not the guard).
            return notif::respond(listener, id, Reply::Continue);
        }
        _ => {
            return refuse(
                shared,
                listener,
                id,
                tid,
                "only inet, unix and netlink sockets may send",
                what(),
            )
        }
    }
    let mem = Mem(Pid::from_raw(tid));
    let request = match read_request_args(&mem, nr, &req.data.args) {
        Ok(r) => r,
        Err(e) => return notif::respond(listener, id, Reply::Error(e)),
    };
    // The pid in the notification is still the caller: its memory was the caller's.
    if !notif::valid(listener, id) {
        return;
    }
    let Some(ctx) = CallCtx::of(shared, listener, id, tid, nr, pidfd) else {
        return;
    };
    ctx.run(sock, request);
}

/// A unix call of a sandbox whose fence holds unix connects and addressed sends for the
/// guard (`local`): calls without an address continue (a racing thread that adds one meets the
/// fence); addressed ones the guard judges on the file and makes itself.
#[allow(clippy::too_many_arguments)]
fn unix_call(
    shared: &Arc<Shared>,
    listener: &Arc<OwnedFd>,
    id: u64,
    tid: i32,
    nr: i64,
    args: &[u64; 6],
    sock: OwnedFd,
    pidfd: OwnedFd,
) {
    let what = || serde_json::json!({"syscall": syscall_name(nr), "family": libc::AF_UNIX});
    let request = match read_request_args(&Mem(Pid::from_raw(tid)), nr, args) {
        Ok(r) => r,
        Err(e) => return notif::respond(listener, id, Reply::Error(e)),
    };
    // Opened before the validity check: it names this thread, not a later owner of its id.
    let Ok(proc) = std::fs::File::open(format!("/proc/{tid}")) else {
        return notif::respond(listener, id, Reply::Error(Errno::ESRCH));
    };
    if !notif::valid(listener, id) {
        return;
    }
    match &request {
        Request::SendMsg(h, _) if h.name.is_none() => {
            return notif::respond(listener, id, Reply::Continue)
        }
        Request::SendMmsg { hdrs, .. } if hdrs.iter().all(|h| h.name.is_none()) => {
            return notif::respond(listener, id, Reply::Continue)
        }
        Request::SendMmsg { .. } => {
            return refuse(
                shared,
                listener,
                id,
                tid,
                "addressed unix datagrams in sendmmsg",
                what(),
            )
        }
        Request::SendMsg(h, _) if !h.control.is_empty() => {
            return refuse(
                shared,
                listener,
                id,
                tid,
                "control data (descriptors, credentials) in an addressed unix datagram",
                what(),
            )
        }
        _ => {}
    }
    let Some(ctx) = CallCtx::of(shared, listener, id, tid, nr, pidfd) else {
        return;
    };
    ctx.unix(tid, &proc, sock, request);
}

/// `listen`: where only loopback may listen, the guard listens on its copy of the socket (so
/// a descriptor swapped meanwhile changes nothing); elsewhere the call continues.
fn listen(shared: &Shared, listener: &Arc<OwnedFd>, id: u64, tid: i32, args: &[u64; 6]) {
    if !shared.local.loopback_listen {
        return notif::respond(listener, id, Reply::Continue);
    }
    let fds = match notif::ThreadFds::open(tid) {
        Ok(p) => p,
        Err(_) => return notif::respond(listener, id, Reply::Error(Errno::ESRCH)),
    };
    if !notif::valid(listener, id) {
        return;
    }
    let sock = match fds.get(args[0] as i32) {
        Ok(s) => s,
        Err(e) => return notif::respond(listener, id, Reply::Error(e)),
    };
    let Some(domain) = domain_of(&sock) else {
        return notif::respond(listener, id, Reply::Error(Errno::ENOTSOCK));
    };
    let inet = matches!(domain, libc::AF_INET | libc::AF_INET6);
    let abstract_name = domain == libc::AF_UNIX
        && !shared.local.abstract_names
        && local_address(&sock).is_some_and(|a| local::is_abstract(&a));
    if abstract_name {
        return refuse(
            shared,
            listener,
            id,
            tid,
            "listening on an abstract unix name (the host's processes can connect to it)",
            serde_json::json!({"syscall": "listen", "family": domain}),
        );
    }
    if inet && !local_address(&sock).is_some_and(|a| local::loopback_bound(&a)) {
        return refuse(
            shared,
            listener,
            id,
            tid,
            "listening on a non-loopback address (the sandbox shares the host's network)",
            serde_json::json!({"syscall": "listen", "family": domain}),
        );
    }
    notif::respond(
        listener,
        id,
        Reply::of(local::listen(&sock, args[1] as i32).map(|_| 0)),
    );
}

/// An `execve`: it continues, and the guard reads what the kernel started at the exec stop.
/// The cached lookups of the exec'ing thread and its leader go: their image changes.
fn exec(shared: &Shared, listener: &Arc<OwnedFd>, id: u64, tid: i32) {
    let cont = || notif::respond(listener, id, Reply::Continue);
    // A pidfd without PIDFD_THREAD opens only for a thread group's leader.
    let Ok(leader) = crate::helper::pidfd_open_flags(tid, 0) else {
        // A thread that is not the leader takes the leader's pid during the exec, at a moment
        // the guard does not see: that process gets no capture and is never cached again.
        forget_for_good(shared, tid);
        return cont();
    };
    let got = capture::continue_and_capture(tid, shared.aslr, || notif::valid(listener, id), cont);
    let key: Vec<u64> = shared.pid_key(&leader).into_iter().collect();
    match got {
        capture::Exec::Captured(got) => {
            let (layout, cap) = *got;
            shared.captures.forget(&key, false);
            shared.captures.insert(layout, cap);
        }
        capture::Exec::Failed => {}
        // Untraced (the exec may still be under way): not cached from now on.
        capture::Exec::Unknown => shared.captures.forget(&key, true),
    }
}

/// The process of thread `tid` execs without a capture: its cached lookups go, for good.
fn forget_for_good(shared: &Shared, tid: i32) {
    let tgid = capture::tgid_of(tid).unwrap_or(tid);
    let keys: Vec<u64> = [tid, tgid]
        .iter()
        .filter_map(|p| notif::pidfd_of_thread(*p).ok())
        .filter_map(|fd| shared.pid_key(&fd))
        .collect();
    shared.captures.forget(&keys, true);
}

/// The source port of the caller's socket, binding it to the wildcard address and an
/// ephemeral port first if it has none (as `connect` would).
fn source_port(sock: &OwnedFd, v6: bool) -> Result<u16, Errno> {
    let port = |a: &[u8]| match sockaddr::parse(a) {
        Target::Inet(d) => d.port(),
        _ => 0,
    };
    let bound = local_address(sock).map(|a| port(&a)).unwrap_or(0);
    if bound != 0 {
        return Ok(bound);
    }
    let any = if v6 {
        SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    };
    let a = sockaddr::encode(&any);
    // SAFETY: `a` is a valid sockaddr of its length; the descriptor is ours.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            a.as_ptr() as *const libc::sockaddr,
            a.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    match local_address(sock).map(|a| port(&a)) {
        Some(p) if p != 0 => Ok(p),
        _ => Err(Errno::EADDRNOTAVAIL),
    }
}

fn socket_type(sock: &OwnedFd) -> Option<i32> {
    socket::getsockopt(sock, sockopt::SockType)
        .ok()
        .map(|t| t as i32)
}

fn domain_of(sock: &OwnedFd) -> Option<i32> {
    let mut d: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_DOMAIN writes one int into `d`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            &mut d as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(d)
}

/// A send the guard performs: `Err(EAGAIN)` from a caller that may wait means "not yet".
type Op = Box<dyn FnMut(&OwnedFd) -> Result<usize, Errno> + Send>;

/// One notified call after its arguments were read.
struct CallCtx {
    shared: Arc<Shared>,
    listener: Arc<OwnedFd>,
    id: u64,
    caller: Caller,
    /// The calling thread (its pidfd): signals go to it, never to a pid number.
    pidfd: Arc<OwnedFd>,
    syscall: &'static str,
}

impl CallCtx {
    /// The context of thread `tid`'s notified call `nr`; `None` (answered ESRCH) when the
    /// caller is gone.
    fn of(
        shared: &Arc<Shared>,
        listener: &Arc<OwnedFd>,
        id: u64,
        tid: i32,
        nr: i64,
        pidfd: OwnedFd,
    ) -> Option<CallCtx> {
        let Some(caller) = Caller::of(tid, &shared.captures, shared.pid_key(&pidfd)) else {
            notif::respond(listener, id, Reply::Error(Errno::ESRCH));
            return None;
        };
        Some(CallCtx {
            shared: shared.clone(),
            listener: listener.clone(),
            id,
            caller,
            pidfd: Arc::new(pidfd),
            syscall: syscall_name(nr),
        })
    }

    fn respond(&self, r: Reply) {
        notif::respond(&self.listener, self.id, r);
    }

    /// An addressed unix call (see `unix_call`), made by the guard on the file it judged.
    fn unix(self, tid: i32, proc: &std::fs::File, sock: OwnedFd, request: Request) {
        let fl = calls::file_flags(&sock);
        let blocking = fl.is_some_and(|fl| calls::may_block(fl, request.flags()));
        let mem = Mem(Pid::from_raw(tid));
        let (addr, payload) = match request {
            Request::Connect(addr) => (addr, None),
            Request::SendTo {
                buf,
                len,
                flags,
                addr,
            } => (addr, Some((buf, len as u64, None, flags))),
            Request::SendMsg(h, flags) => (
                h.name.unwrap_or_default(),
                Some((h.iov, h.iovlen, Some(()), flags)),
            ),
            Request::SendMmsg { .. } => return self.respond(Reply::Error(Errno::EACCES)),
        };
        let target = match local::judge(&self.shared.local, proc, &addr) {
            Ok(t) => t,
            Err(r) => {
                if let Some(why) = &r.why {
                    self.event("denied", "local sockets", why, None, &[]);
                }
                return self.respond(Reply::Error(r.errno));
            }
        };
        let to = target.sockaddr();
        let Some((buf, len, iov, flags)) = payload else {
            // Never a blocking connect in the guard, whatever the caller's flags say by now.
            let Some(fl) = fl else {
                return self.respond(Reply::Error(Errno::EBADF));
            };
            let started = calls::connect_nowait(&sock, &to, fl);
            drop(target);
            // A unix connect is over at once (EAGAIN: the listener's backlog is full).
            return self.respond(match started {
                Ok(_) => Reply::Value(0),
                Err(e) => Reply::Error(e),
            });
        };
        let op = send_op(blocking, flags, move |s, f| {
            let _keep = &target;
            let data = match iov {
                None => mem.read(buf, len as usize)?,
                Some(()) => calls::read_iov(&mem, buf, len, calls::MAX_DATA)?,
            };
            calls::sendto(s, &data, f, &to)
        });
        self.finish(sock, blocking, flags, op);
    }

    fn run(self, sock: OwnedFd, request: Request) {
        // The file's flags, read once: whether the call may wait, and what to restore after a
        // connect the guard makes non-blocking.
        let fl = calls::file_flags(&sock);
        let blocking = fl.is_some_and(|fl| calls::may_block(fl, request.flags()));
        match request {
            Request::Connect(addr) => self.connect(sock, addr, fl, blocking),
            Request::SendTo {
                buf,
                len,
                flags,
                addr,
            } => {
                let by = match self.allowed_send(&addr) {
                    Ok(by) => by,
                    Err(e) => return self.respond(Reply::Error(e)),
                };
                if flags & libc::MSG_FASTOPEN != 0 {
                    if let Some(by) = &by {
                        self.shared.conns.add(&sock, by);
                    }
                }
                let mem = Mem(Pid::from_raw(self.caller.pid));
                let op = send_op(blocking, flags, move |s, f| {
                    let data = mem.read(buf, len)?;
                    calls::sendto(s, &data, f, &addr)
                });
                self.finish(sock, blocking, flags, op);
            }
            Request::SendMsg(h, flags) => {
                if let Some(opt) = calls::routing_option(&h.control) {
                    return self.refuse_option(opt);
                }
                if let Err(e) = h.name.as_deref().map_or(Ok(None), |a| self.allowed_send(a)) {
                    return self.respond(Reply::Error(e));
                }
                let mem = Mem(Pid::from_raw(self.caller.pid));
                let op = send_op(blocking, flags, move |s, f| {
                    let data = calls::read_iov(&mem, h.iov, h.iovlen, calls::MAX_DATA)?;
                    calls::sendmsg(s, h.name.as_deref(), &data, &h.control, f)
                });
                self.finish(sock, blocking, flags, op);
            }
            Request::SendMmsg { vec, hdrs, flags } => {
                self.sendmmsg(sock, vec, hdrs, flags, blocking)
            }
        }
    }

    /// A connect, decided; on a blocking socket started without blocking, and finished on the
    /// waiter when the handshake is not over at once (loopback and refusals usually are).
    fn connect(self, sock: OwnedFd, addr: Vec<u8>, fl: Option<i32>, blocking: bool) {
        let (by, flow) = match self.allowed(&addr) {
            Ok(a) => a,
            Err(e) => return self.respond(Reply::Error(e)),
        };
        let addr = match flow {
            None => addr,
            // A datagram socket "connected" to such an endpoint would send uninspected.
            Some(_) if socket_type(&sock) != Some(libc::SOCK_STREAM) => {
                return self.respond(Reply::Error(Errno::EACCES))
            }
            Some(flow) => match self.splice(&sock, flow) {
                Ok(a) => a,
                Err(e) => return self.respond(Reply::Error(e)),
            },
        };
        // Never a blocking connect in the guard: the caller may clear O_NONBLOCK after the
        // guard read the flags.
        let started = match fl {
            Some(fl) => calls::connect_nowait(&sock, &addr, fl),
            None => Err(Errno::EBADF),
        };
        let started = match started {
            Ok(None) if !blocking => Err(Errno::EINPROGRESS),
            r => r,
        };
        if matches!(started, Ok(_) | Err(Errno::EINPROGRESS)) {
            if let Some(by) = &by {
                self.shared.conns.add(&sock, by);
            }
        }
        match started {
            Ok(Some(n)) => self.respond(Reply::Value(n as i64)),
            Err(e) => self.respond(Reply::Error(e)),
            // Most handshakes (loopback, a host on the same link, a refusal) are over by now.
            Ok(None) => match calls::connect_result(&sock, 0) {
                Some(r) => self.respond(Reply::of(r)),
                None => {
                    let ready = Box::new(|s: &OwnedFd| calls::connect_result(s, 0).map(Reply::of));
                    self.wait(sock, ready);
                }
            },
        }
    }

    /// Perform `op` now; if it would block a caller that may wait, let the waiter retry it
    /// when the socket is writable.
    fn finish(self, sock: OwnedFd, blocking: bool, flags: i32, mut op: Op) {
        match op(&sock) {
            Err(Errno::EAGAIN) if blocking => {
                let (pidfd, signal) = (self.pidfd.clone(), flags & libc::MSG_NOSIGNAL == 0);
                let ready = Box::new(move |s: &OwnedFd| match op(s) {
                    Err(Errno::EAGAIN) => None,
                    r => {
                        sigpipe(&pidfd, &r, signal);
                        Some(Reply::of(r))
                    }
                });
                self.wait(sock, ready);
            }
            r => {
                sigpipe(&self.pidfd, &r, flags & libc::MSG_NOSIGNAL == 0);
                self.respond(Reply::of(r));
            }
        }
    }

    fn wait(self, sock: OwnedFd, ready: super::waiter::Ready) {
        let pending = Pending {
            sock,
            listener: self.listener.clone(),
            id: self.id,
            ready,
        };
        let full = match self.shared.waiter.get() {
            Some(w) => w.submit(pending).is_err(),
            None => true,
        };
        if full {
            self.respond(Reply::Error(Errno::EAGAIN));
        }
    }

    /// Messages in order; the first refused or failed one ends the batch, as in the kernel.
    /// At most `MAX_DATA` bytes go out per call; the count says how many messages did.
    fn sendmmsg(self, sock: OwnedFd, vec: u64, hdrs: Vec<Header>, flags: i32, blocking: bool) {
        let mut allowed = Vec::with_capacity(hdrs.len());
        let mut first_refusal = None;
        for h in &hdrs {
            if let Some(opt) = calls::routing_option(&h.control) {
                self.event(
                    "denied",
                    "network guard",
                    &format!("source routing ({opt})"),
                    None,
                    &[],
                );
                first_refusal = Some(Errno::EACCES);
                break;
            }
            match h.name.as_deref().map_or(Ok(None), |a| self.allowed_send(a)) {
                Ok(_) => allowed.push(h.clone()),
                Err(e) => {
                    first_refusal = Some(e);
                    break;
                }
            }
        }
        if allowed.is_empty() {
            return self.respond(Reply::Error(first_refusal.unwrap_or(Errno::EINVAL)));
        }
        let mem = Mem(Pid::from_raw(self.caller.pid));
        let (listener, id) = (self.listener.clone(), self.id);
        let mut next = 0usize;
        let mut sent = 0usize;
        let mut bytes = 0usize;
        let op: Op = Box::new(move |s| {
            let f = flags | libc::MSG_DONTWAIT;
            while next < allowed.len() && bytes < calls::MAX_DATA {
                let h = &allowed[next];
                let r = calls::read_iov(&mem, h.iov, h.iovlen, calls::MAX_DATA - bytes)
                    .and_then(|data| calls::sendmsg(s, h.name.as_deref(), &data, &h.control, f));
                match r {
                    Ok(n) => {
                        let at = vec + (next * MMSGHDR_LEN) as u64 + calls::MSGHDR_LEN as u64;
                        // Written only while the caller still waits: its pid is its own.
                        if !notif::valid(&listener, id)
                            || mem.write(at, &(n as u32).to_ne_bytes()).is_err()
                        {
                            return Ok(sent);
                        }
                        bytes += n;
                        sent += 1;
                        next += 1;
                    }
                    Err(e) if sent == 0 => return Err(e),
                    Err(_) => return Ok(sent),
                }
            }
            Ok(sent)
        });
        self.finish(sock, blocking, flags, op);
    }

    fn refuse_option(&self, opt: &str) {
        self.event(
            "denied",
            "network guard",
            &format!("source routing ({opt}) is not allowed"),
            None,
            &[],
        );
        self.respond(Reply::Error(Errno::EACCES));
    }

    /// Decide the destination `addr` of a connect: `Ok(policy that allowed it)`, `Ok(None)`
    /// when there is no destination to judge (`AF_UNSPEC` dissolves an association),
    /// `Err(EACCES)` when refused (with an audit event).
    /// Decide a connect: the policy that allowed it and, for an endpoint with HTTP rules,
    /// what the layer-7 proxy needs.
    fn allowed(&self, addr: &[u8]) -> Result<(Option<String>, Option<l7::Flow>), Errno> {
        let dest = match sockaddr::parse(addr) {
            Target::Unspec => return Ok((None, None)),
            Target::Inet(d) => d,
            Target::Invalid(e) => return Err(Errno::from_raw(e)),
        };
        let (policy, endpoint, audit_pass) = self.decided(dest)?;
        let flow = match (&policy, endpoint) {
            (Some(p), Some(ep)) if l7::inspected(&ep) => {
                Some(self.flow(p, &ep, dest, !audit_pass)?)
            }
            _ => None,
        };
        Ok((policy, flow))
    }

    /// What the proxy needs for a connect `policy`'s endpoint `ep` allowed; `secrets`: the
    /// policy's credentials may go back in (not for a pass an audit-mode endpoint let by).
    fn flow(
        &self,
        policy: &str,
        ep: &Endpoint,
        dest: SocketAddr,
        secrets: bool,
    ) -> Result<l7::Flow, Errno> {
        // Compiled with the generation; an endpoint a reload replaced meanwhile, here.
        let compiled = self
            .shared
            .current()
            .rules
            .iter()
            .find(|(e, _)| e == ep)
            .map(|(_, r)| r.clone());
        let rules = compiled
            .unwrap_or_else(|| {
                l7::Rules::compile(&l7::endpoint_rules(ep))
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| {
                self.event("denied", policy, &e, Some(dest), &[]);
                Errno::EACCES
            })?;
        let names = if ep.host.parse::<IpAddr>().is_ok() {
            vec![ep.host.clone()]
        } else {
            self.shared
                .answers
                .names_for(dest.ip())
                .into_iter()
                .filter(|n| super::decide::host_matches(&ep.host, n))
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        Ok(l7::Flow {
            dest,
            rules,
            tls_skip: ep.tls == Some(crate::policy::model::Tls::Skip),
            websocket: ep.protocol == Some(crate::policy::model::Protocol::Websocket),
            names,
            policy: policy.to_string(),
            secrets,
            by: format!("{policy} {}", ep.host),
            pid: self.caller.pid,
            exe: self.caller.exe_path(),
        })
    }

    /// Point the caller's socket at the layer-7 proxy: bind it (if it is not) to learn its
    /// source port, announce the flow under that port, and return the proxy's address.
    fn splice(&self, sock: &OwnedFd, flow: l7::Flow) -> Result<Vec<u8>, Errno> {
        let proxy = self
            .shared
            .l7
            .get_or_init(|| {
                l7::Proxy::start(
                    self.shared.clone(),
                    self.shared.resolver,
                    &self.shared.l7_roots,
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| {
                tracing::error!("network guard of {}: {e}", self.shared.id);
                Errno::EACCES
            })?
            .clone();
        let v6 = domain_of(sock) == Some(libc::AF_INET6);
        let port = source_port(sock, v6)?;
        if !proxy.expect(port, flow) {
            return Err(Errno::EADDRINUSE);
        }
        let to = std::net::SocketAddr::V4(proxy.addr());
        Ok(if v6 {
            sockaddr::encode(&std::net::SocketAddr::new(
                IpAddr::V6(proxy.addr().ip().to_ipv6_mapped()),
                proxy.addr().port(),
            ))
        } else {
            sockaddr::encode(&to)
        })
    }

    /// Decide the destination of a send. `AF_UNSPEC` is refused: IPv4 UDP takes its address
    /// and port as a destination. Endpoints with HTTP rules take connects only: a datagram
    /// (QUIC) or a fast-open send would pass uninspected.
    fn allowed_send(&self, addr: &[u8]) -> Result<Option<String>, Errno> {
        let dest = match sockaddr::parse(addr) {
            Target::Inet(d) => d,
            Target::Unspec => return Err(Errno::EAFNOSUPPORT),
            Target::Invalid(e) => return Err(Errno::from_raw(e)),
        };
        let (policy, endpoint, _) = self.decided(dest)?;
        if endpoint.as_ref().is_some_and(l7::inspected) {
            let why =
                "an endpoint with HTTP rules takes TCP connects only (datagrams and fast-open \
                       sends would pass uninspected)";
            self.event("denied", "network_policies", why, Some(dest), &[]);
            return Err(Errno::EACCES);
        }
        Ok(policy)
    }

    /// The policy and endpoint that allowed a destination, and whether only an audit-mode
    /// endpoint let it by.
    fn decided(&self, dest: SocketAddr) -> Result<(Option<String>, Option<Endpoint>, bool), Errno> {
        match judge(&self.shared, &self.caller, dest) {
            Verdict::Allow { policy, endpoint } => Ok((policy, endpoint, false)),
            Verdict::AuditPass {
                policy,
                endpoint,
                by,
                why,
                names,
            } => {
                self.event("allowed (audit)", &by, &why, Some(dest), &names);
                Ok((Some(policy), Some(endpoint), true))
            }
            Verdict::Deny { why, names } => {
                self.event("denied", "network_policies", &why, Some(dest), &names);
                Err(Errno::EACCES)
            }
        }
    }

    fn event(
        &self,
        decision: &str,
        by: &str,
        why: &str,
        dest: Option<SocketAddr>,
        names: &[String],
    ) {
        let ev = audit::Event::new(audit::Kind::Network, decision, by, why)
            .pid(self.caller.pid)
            .executable(self.caller.exe_path())
            .request(serde_json::json!({
                "syscall": self.syscall,
                "destination": dest.map(|d| d.to_string()),
                "names": names,
            }));
        self.shared.audit(ev);
    }
}

/// A send operation with the flags the caller gave; a caller that may wait gets the send
/// made without waiting (the waiter retries it), and a fast open still in its handshake
/// finishes with a plain send of the data once the connection is up.
fn send_op(
    blocking: bool,
    flags: i32,
    mut send: impl FnMut(&OwnedFd, i32) -> Result<usize, Errno> + Send + 'static,
) -> Op {
    let mut connecting = false;
    let mut f = flags;
    Box::new(move |s| {
        if connecting {
            match calls::connect_result(s, 0) {
                None => return Err(Errno::EAGAIN),
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) => {
                    connecting = false;
                    f &= !libc::MSG_FASTOPEN;
                }
            }
        }
        // Always: a caller that clears O_NONBLOCK after the guard read it must not make the
        // guard wait; a non-blocking caller gets EAGAIN either way.
        match send(s, f | libc::MSG_DONTWAIT) {
            Err(Errno::EINPROGRESS) if blocking && f & libc::MSG_FASTOPEN != 0 => {
                connecting = true;
                Err(Errno::EAGAIN)
            }
            r => r,
        }
    })
}

/// A send that hits a closed stream raises SIGPIPE in the caller, as the kernel would.
fn sigpipe(pidfd: &OwnedFd, r: &Result<usize, Errno>, signal: bool) {
    if signal && *r == Err(Errno::EPIPE) {
        // SAFETY: pidfd_send_signal with a pidfd we hold, a signal number and no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                libc::SIGPIPE,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

#[derive(Debug)]
enum Verdict {
    Allow {
        policy: Option<String>,
        /// The endpoint that allowed it (none for the resolver).
        endpoint: Option<Endpoint>,
    },
    AuditPass {
        policy: String,
        endpoint: Endpoint,
        by: String,
        why: String,
        names: Vec<String>,
    },
    Deny {
        why: String,
        names: Vec<String>,
    },
}

fn judge(shared: &Shared, caller: &Caller, dest: SocketAddr) -> Verdict {
    if dest.port() == 53 {
        return if dest.ip() == IpAddr::V4(shared.resolver) {
            Verdict::Allow {
                policy: None,
                endpoint: None,
            }
        } else {
            Verdict::Deny {
                why: "DNS goes through the container's resolver only".into(),
                names: Vec::new(),
            }
        };
    }
    let names = shared.answers.names_for(dest.ip());
    let looked_at = Instant::now();
    let gen = shared.current();
    let (mut d, mut refusal) = decide_with(shared, &gen, caller, dest, &names);
    let mut gen = gen;
    if matches!(d, Decision::Deny { .. }) && !gen.binaries.knows(caller.exe.id) {
        gen = shared.refresh_binaries(looked_at);
        (d, refusal) = decide_with(shared, &gen, caller, dest, &names);
    }
    let endpoint_of = |policy: &str, index: usize| {
        gen.policies
            .get(policy)
            .and_then(|n| n.policy.endpoints.get(index))
            .cloned()
            .unwrap_or_default()
    };
    match d {
        Decision::Allow {
            would_deny: Some(why),
            policy,
            endpoint,
            index,
            ..
        } => Verdict::AuditPass {
            by: format!("{policy} {endpoint}"),
            endpoint: endpoint_of(&policy, index),
            policy,
            why,
            names,
        },
        Decision::Allow { policy, index, .. } => Verdict::Allow {
            endpoint: Some(endpoint_of(&policy, index)),
            policy: Some(policy),
        },
        Decision::Deny { reason } => {
            let why = match (gen.binaries.tampered.get(&caller.exe.id), refusal) {
                (Some(t), _) => format!("{reason} ({t})"),
                (None, Some(s)) => format!("{reason} ({s})"),
                (None, None) => reason,
            };
            Verdict::Deny { why, names }
        }
    }
}

fn decide_with(
    shared: &Shared,
    gen: &Generation,
    caller: &Caller,
    dest: SocketAddr,
    names: &[String],
) -> (Decision, Option<String>) {
    let root = shared.root();
    let refusal: Mutex<Option<String>> = Mutex::new(None);
    let binary_allowed = |key: &str| -> bool {
        let Some(set) = gen.binaries.by_policy.get(key) else {
            return false;
        };
        match identity::matches(set, caller, &shared.captures, &root) {
            Ok(m) => m,
            Err(why) => {
                *refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                false
            }
        }
    };
    let d = decide::decide(
        &gen.policies,
        &Attempt {
            ip: dest.ip(),
            port: dest.port(),
            names,
        },
        &binary_allowed,
    );
    (d, refusal.into_inner().unwrap_or_else(|e| e.into_inner()))
}
