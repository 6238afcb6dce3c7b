//! The per-container network guard (SPEC §7.3), run in the helper process for the container's
//! life. Each container process hands it the listener of its notification filter; a thread
//! per listener receives the notified calls, decides (§7.1, §7.2) and, when allowed, performs
//! the call itself on the caller's socket (`pidfd_getfd`) with the arguments it validated.
//! Calls on unix and netlink sockets continue in the kernel untouched.
//!
//! When the guard is gone its listeners close and the kernel fails every notified call
//! (ENOSYS): the container keeps running without network.

use std::collections::BTreeMap;
use std::io::{IoSliceMut, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags};
use nix::unistd::Pid;

use super::calls::{self, Mem, Message, MMSGHDR_LEN};
use super::decide::{self, Attempt, Decision};
use super::identity::{self, Binaries, Caller};
use super::resolver::{self, Answers};
use super::sockaddr::{self, Target};
use crate::audit;
use crate::helper::{self, HelperService};
use crate::policy::merge::{Effective, EffectiveNetwork};

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// Binaries are resolved again on a miss at most this often (a program installed later).
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// One generation of the network policies and the binaries they name.
pub struct Generation {
    pub n: u64,
    pub policies: BTreeMap<String, EffectiveNetwork>,
    pub binaries: Binaries,
    /// When the resolution of `binaries` started.
    pub resolved_at: Instant,
}

/// What every guard thread shares.
pub struct Shared {
    pub id: String,
    /// `<root>/<id>`: the audit stream.
    pub audit_dir: PathBuf,
    /// The runtime's state directory: `effective.json`.
    pub own: PathBuf,
    pub init_pid: i32,
    pub resolver: Ipv4Addr,
    pub generation: RwLock<Arc<Generation>>,
    pub answers: Answers,
    last_refresh: Mutex<Instant>,
}

impl Shared {
    fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.init_pid))
    }

    pub fn current(&self) -> Arc<Generation> {
        self.generation.read().expect("not poisoned").clone()
    }

    fn load_policies(&self) -> Result<BTreeMap<String, EffectiveNetwork>, String> {
        let path = self.own.join("effective.json");
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let eff: Effective =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(eff.network_policies)
    }

    /// Load `effective.json` as the next generation; returns its number.
    pub fn reload(&self) -> Result<u64, String> {
        let policies = self.load_policies()?;
        let resolved_at = Instant::now();
        let binaries = Binaries::resolve(&self.root(), &policies);
        let mut g = self.generation.write().expect("not poisoned");
        let n = g.n + 1;
        *g = Arc::new(Generation {
            n,
            policies,
            binaries,
            resolved_at,
        });
        Ok(n)
    }

    /// Resolve binaries again (same generation) after a caller's lookup at `looked_at` missed:
    /// a binary may have been installed since. A resolution that started after the lookup
    /// already sees the caller's executable, which existed before the caller ran it. One resolution per REFRESH_EVERY at most; a
    /// caller arriving sooner waits for the next one rather than being refused on a stale
    /// view. The wait is on a path to a likely refusal, and holds up only the listener of the
    /// caller's own process tree.
    fn refresh_binaries(&self, looked_at: Instant) -> Arc<Generation> {
        let mut last = self.last_refresh.lock().expect("not poisoned");
        let cur = self.current();
        if cur.resolved_at > looked_at {
            return cur;
        }
        let wait = REFRESH_EVERY.saturating_sub(last.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let started = Instant::now();
        let binaries = Binaries::resolve(&self.root(), &cur.policies);
        *last = Instant::now();
        let next = Arc::new(Generation {
            n: cur.n,
            policies: cur.policies.clone(),
            binaries,
            resolved_at: started,
        });
        let mut g = self.generation.write().expect("not poisoned");
        if g.n == cur.n {
            *g = next.clone();
        }
        next
    }

    pub fn audit(&self, ev: audit::Event) {
        audit::record(&self.audit_dir, &ev);
    }
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
    pub audit_dir: PathBuf,
    pub own: PathBuf,
    pub resolver: Ipv4Addr,
    pub upstream: Vec<IpAddr>,
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
            audit_dir: c.base.audit_dir,
            own: c.base.own,
            init_pid: c.init_pid,
            resolver: c.base.resolver,
            generation: RwLock::new(Arc::new(Generation {
                n: 0,
                policies: BTreeMap::new(),
                binaries: Binaries::default(),
                resolved_at: Instant::now(),
            })),
            answers: Answers::default(),
            last_refresh: Mutex::new(Instant::now() - REFRESH_EVERY),
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
        if let Err(e) = resolver::start(shared.clone(), std::mem::take(&mut self.upstream)) {
            tracing::error!("network guard of {}: resolver: {e}", shared.id);
        }
        let s = shared.clone();
        std::thread::spawn(move || control_loop(s, control));
        helper::wait_exit(init_exit);
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

/// Read one request line and the pid the kernel attached to it.
fn read_request(conn: &UnixStream) -> std::io::Result<(String, Option<i32>)> {
    socket::setsockopt(conn, sockopt::PassCred, &true)?;
    let mut buf = [0u8; 128];
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
    Ok((String::from_utf8_lossy(&buf[..n]).trim().to_string(), pid))
}

fn serve_control(shared: &Arc<Shared>, mut conn: UnixStream) -> std::io::Result<()> {
    let (line, pid) = read_request(&conn)?;
    let reply = match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["L", fd] => match (pid, fd.parse::<i32>()) {
            (Some(pid), Ok(fd)) => match take_listener(pid, fd) {
                Ok(listener) => {
                    let s = shared.clone();
                    std::thread::spawn(move || serve_listener(s, Arc::new(listener)));
                    "ok".to_string()
                }
                Err(e) => format!("error: taking fd {fd} of pid {pid}: {e}"),
            },
            _ => "error: no credentials".to_string(),
        },
        ["R"] => match shared.reload() {
            Ok(n) => format!("gen {n}"),
            Err(e) => format!("error: {e}"),
        },
        ["P"] => format!("gen {}", shared.current().n),
        _ => format!("error: unknown request {line:?}"),
    };
    conn.write_all(format!("{reply}\n").as_bytes())
}

/// The descriptor `fd` of the process (or thread) behind `pidfd`.
fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd duplicates a descriptor of another process into ours.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): the notified side runs on the waker's CPU.
const NOTIF_FD_SYNC_WAKE_UP: libc::c_ulong = 1;

fn take_listener(pid: i32, fd: i32) -> Result<OwnedFd, Errno> {
    let pidfd = helper::pidfd_open_flags(pid, 0)?;
    let listener = pidfd_getfd(&pidfd, fd)?;
    // A notified call is a hand-off: the caller sleeps while the guard works, and the guard
    // sleeps while the caller runs. Waking each other on the same CPU saves two cross-CPU
    // wake-ups per call. Older kernels refuse the flag; the guard works without it.
    // SAFETY: SET_FLAGS takes the flags by value.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    Ok(listener)
}

/// A pidfd for the notifying thread: PIDFD_THREAD (Linux 6.9) where the kernel has it.
fn pidfd_of_thread(tid: i32) -> Result<OwnedFd, Errno> {
    helper::pidfd_open_flags(tid, libc::O_EXCL as u32).or_else(|_| {
        let status =
            std::fs::read_to_string(format!("/proc/{tid}/status")).map_err(|_| Errno::ESRCH)?;
        let tgid = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or(Errno::ESRCH)?;
        helper::pidfd_open_flags(tgid, 0)
    })
}

fn notif_valid(listener: &OwnedFd, id: u64) -> bool {
    // SAFETY: the ioctl reads a u64 id we pass by pointer.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        ) == 0
    }
}

/// The answer to one notification: a return value, an errno, or "continue in the kernel".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Value(i64),
    Error(Errno),
    Continue,
}

fn respond(listener: &OwnedFd, id: u64, reply: Reply) {
    // SAFETY: an all-zero response is valid; fields are set below.
    let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
    resp.id = id;
    match reply {
        Reply::Value(v) => resp.val = v,
        Reply::Error(e) => resp.error = -(e as i32),
        Reply::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    }
    // SAFETY: the ioctl reads the response struct we pass by pointer. ENOENT (the caller was
    // interrupted or died) needs nothing from us.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut libc::seccomp_notif_resp,
        );
    }
}

fn serve_listener(shared: Arc<Shared>, listener: Arc<OwnedFd>) {
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
        // SAFETY: the kernel requires a zeroed struct and fills it.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one notification into `req`.
        let rc = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut req as *mut libc::seccomp_notif,
            )
        };
        if rc != 0 {
            match Errno::last() {
                Errno::EINTR | Errno::ENOENT => continue,
                _ => return,
            }
        }
        handle(&shared, &listener, &req);
    }
}

/// What a notified call asks for, read from the caller once.
enum Request {
    Connect(Vec<u8>),
    SendTo {
        data: Vec<u8>,
        flags: i32,
        addr: Vec<u8>,
    },
    SendMsg(Message, i32),
    SendMmsg {
        vec: u64,
        msgs: Vec<Message>,
        flags: i32,
    },
}

fn read_request_args(mem: &Mem, nr: i64, a: &[u64; 6]) -> Result<Request, Errno> {
    match nr {
        libc::SYS_connect => Ok(Request::Connect(calls::read_sockaddr(mem, a[1], a[2])?)),
        libc::SYS_sendto => Ok(Request::SendTo {
            data: mem.read(a[1], (a[2] as usize).min(calls::MAX_DATA))?,
            flags: a[3] as i32,
            addr: calls::read_sockaddr(mem, a[4], a[5])?,
        }),
        libc::SYS_sendmsg => Ok(Request::SendMsg(
            calls::read_msghdr(mem, a[1])?,
            a[2] as i32,
        )),
        libc::SYS_sendmmsg => {
            let n = (a[2] as usize).min(1024);
            let msgs = (0..n)
                .map(|i| calls::read_msghdr(mem, a[1] + (i * MMSGHDR_LEN) as u64))
                .collect::<Result<_, _>>()?;
            Ok(Request::SendMmsg {
                vec: a[1],
                msgs,
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

fn handle(shared: &Arc<Shared>, listener: &Arc<OwnedFd>, req: &libc::seccomp_notif) {
    let id = req.id;
    let nr = req.data.nr as i64;
    let tid = req.pid as i32;
    if req.data.arch != AUDIT_ARCH_X86_64
        || !matches!(
            nr,
            libc::SYS_connect | libc::SYS_sendto | libc::SYS_sendmsg | libc::SYS_sendmmsg
        )
    {
        let mut ev = audit::Event::new(
            &shared.id,
            "network",
            "denied",
            "network guard",
            "network calls of 32-bit processes are not supported",
        );
        ev.pid = Some(tid);
        shared.audit(ev);
        return respond(listener, id, Reply::Error(Errno::EACCES));
    }
    let pidfd = match pidfd_of_thread(tid) {
        Ok(p) => p,
        Err(_) => return respond(listener, id, Reply::Error(Errno::ESRCH)),
    };
    if !notif_valid(listener, id) {
        return;
    }
    let sock = match pidfd_getfd(&pidfd, req.data.args[0] as i32) {
        Ok(s) => s,
        Err(e) => return respond(listener, id, Reply::Error(e)),
    };
    let domain = match domain_of(&sock) {
        Some(d) => d,
        None => return respond(listener, id, Reply::Error(Errno::ENOTSOCK)),
    };
    match domain {
        libc::AF_INET | libc::AF_INET6 => {}
        // Local sockets: no network to guard.
        libc::AF_UNIX | libc::AF_NETLINK => return respond(listener, id, Reply::Continue),
        _ => {
            let mut ev = audit::Event::new(
                &shared.id,
                "network",
                "denied",
                "network guard",
                "only inet, unix and netlink sockets may send",
            );
            ev.pid = Some(tid);
            ev.request = serde_json::json!({"syscall": syscall_name(nr), "family": domain});
            shared.audit(ev);
            return respond(listener, id, Reply::Error(Errno::EACCES));
        }
    }
    let mem = Mem(Pid::from_raw(tid));
    let request = match read_request_args(&mem, nr, &req.data.args) {
        Ok(r) => r,
        Err(e) => return respond(listener, id, Reply::Error(e)),
    };
    // The pid in the notification is still the caller: its memory was the caller's.
    if !notif_valid(listener, id) {
        return;
    }
    let Some(caller) = Caller::of(tid) else {
        return respond(listener, id, Reply::Error(Errno::ESRCH));
    };
    let ctx = CallCtx {
        shared: shared.clone(),
        listener: listener.clone(),
        id,
        caller,
        syscall: syscall_name(nr),
    };
    // The file's flags, read once: whether the call may wait, and what to restore after a
    // connect the guard makes non-blocking.
    let fl = calls::file_flags(&sock);
    let blocking = fl.is_some_and(|fl| calls::may_block(fl, request_flags(&request)))
        && socket::getsockopt(&sock, sockopt::SockType)
            .is_ok_and(|t| t == socket::SockType::Stream);
    match (request, fl) {
        (Request::Connect(addr), Some(fl)) if blocking => ctx.connect_blocking(sock, addr, fl),
        (request, _) => ctx.dispatch(sock, request, blocking),
    }
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

fn request_flags(r: &Request) -> i32 {
    match r {
        Request::Connect(_) => 0,
        Request::SendTo { flags, .. } | Request::SendMsg(_, flags) => *flags,
        Request::SendMmsg { flags, .. } => *flags,
    }
}

fn to_reply(r: Result<usize, Errno>) -> Reply {
    match r {
        Ok(n) => Reply::Value(n as i64),
        Err(e) => Reply::Error(e),
    }
}

/// One notified call after its arguments were read.
struct CallCtx {
    shared: Arc<Shared>,
    listener: Arc<OwnedFd>,
    id: u64,
    caller: Caller,
    syscall: &'static str,
}

impl CallCtx {
    /// Perform the call here, or on a thread of its own when it may wait.
    fn dispatch(self, sock: OwnedFd, request: Request, blocking: bool) {
        // A send that may wait for buffer space runs on a thread of its own, so one slow peer
        // stalls no other caller.
        if blocking {
            std::thread::spawn(move || self.finish(&sock, request));
        } else {
            self.finish(&sock, request);
        }
    }

    fn finish(self, sock: &OwnedFd, request: Request) {
        let reply = self.perform(sock, request);
        respond(&self.listener, self.id, reply);
    }

    /// A connect on a blocking socket: decided, started without blocking, and finished here
    /// when the handshake is already over (loopback, refusals), else on a thread that waits
    /// for it while the caller is still waiting.
    fn connect_blocking(self, sock: OwnedFd, addr: Vec<u8>, fl: i32) {
        if let Err(e) = self.allowed(&addr) {
            return respond(&self.listener, self.id, Reply::Error(e));
        }
        let result = match calls::connect_nowait(&sock, &addr, fl) {
            Ok(Some(n)) => Ok(n),
            Err(e) => Err(e),
            Ok(None) => match calls::connect_result(&sock, 0) {
                Some(r) => r,
                None => {
                    std::thread::spawn(move || self.await_connect(&sock));
                    return;
                }
            },
        };
        respond(&self.listener, self.id, to_reply(result));
    }

    fn await_connect(self, sock: &OwnedFd) {
        loop {
            // A caller interrupted by a signal no longer waits; its connect goes on, as in
            // the kernel.
            if !notif_valid(&self.listener, self.id) {
                return;
            }
            if let Some(r) = calls::connect_result(sock, 100) {
                return respond(&self.listener, self.id, to_reply(r));
            }
        }
    }

    fn perform(&self, sock: &OwnedFd, request: Request) -> Reply {
        let done = |r: Result<usize, Errno>, flags: i32| match r {
            Ok(n) => Reply::Value(n as i64),
            Err(e) => {
                self.sigpipe(e, flags);
                Reply::Error(e)
            }
        };
        match request {
            Request::Connect(addr) => match self.allowed(&addr) {
                Ok(()) => done(calls::connect(sock, &addr), libc::MSG_NOSIGNAL),
                Err(e) => Reply::Error(e),
            },
            Request::SendTo { data, flags, addr } => match self.allowed(&addr) {
                Ok(()) => done(calls::sendto(sock, &data, flags, &addr), flags),
                Err(e) => Reply::Error(e),
            },
            Request::SendMsg(m, flags) => {
                match m.name.as_deref().map_or(Ok(()), |a| self.allowed(a)) {
                    Ok(()) => done(calls::sendmsg(sock, &m, flags), flags),
                    Err(e) => Reply::Error(e),
                }
            }
            Request::SendMmsg { vec, msgs, flags } => self.sendmmsg(sock, vec, &msgs, flags),
        }
    }

    /// Messages in order; the first refused or failed one ends the batch, as in the kernel.
    fn sendmmsg(&self, sock: &OwnedFd, vec: u64, msgs: &[Message], flags: i32) -> Reply {
        let mem = Mem(Pid::from_raw(self.caller.pid));
        let mut sent = 0i64;
        for (i, m) in msgs.iter().enumerate() {
            let r = match m.name.as_deref().map_or(Ok(()), |a| self.allowed(a)) {
                Ok(()) => calls::sendmsg(sock, m, flags),
                Err(e) => Err(e),
            };
            match r {
                Ok(n) => {
                    let at = vec + (i * MMSGHDR_LEN) as u64 + calls::MSGHDR_LEN as u64;
                    if mem.write(at, &(n as u32).to_ne_bytes()).is_err() {
                        break;
                    }
                    sent += 1;
                }
                Err(e) if sent == 0 => {
                    self.sigpipe(e, flags);
                    return Reply::Error(e);
                }
                Err(_) => break,
            }
        }
        Reply::Value(sent)
    }

    /// A send that hits a closed stream raises SIGPIPE in the caller, as the kernel would.
    fn sigpipe(&self, e: Errno, flags: i32) {
        if e == Errno::EPIPE && flags & libc::MSG_NOSIGNAL == 0 {
            let _ = nix::sys::signal::kill(
                Pid::from_raw(self.caller.pid),
                nix::sys::signal::Signal::SIGPIPE,
            );
        }
    }

    /// Decide the destination `addr`; `Err(EACCES)` when refused (with an audit event).
    fn allowed(&self, addr: &[u8]) -> Result<(), Errno> {
        let dest = match sockaddr::parse(addr) {
            Target::Inet(d) => d,
            Target::Unspec => return Ok(()),
            Target::Invalid(e) => return Err(Errno::from_raw(e)),
        };
        match judge(&self.shared, &self.caller, dest) {
            Verdict::Allow => Ok(()),
            Verdict::AuditPass { by, why, names } => {
                self.event("allowed (audit)", &by, &why, dest, &names);
                Ok(())
            }
            Verdict::Deny { why, names } => {
                self.event("denied", "network_policies", &why, dest, &names);
                Err(Errno::EACCES)
            }
        }
    }

    fn event(&self, decision: &str, by: &str, why: &str, dest: SocketAddr, names: &[String]) {
        let exe = self.caller.exe_path();
        let mut ev = audit::Event::new(&self.shared.id, "network", decision, by, why);
        ev.pid = Some(self.caller.pid);
        ev.executable = Some(&exe);
        ev.request = serde_json::json!({
            "syscall": self.syscall,
            "destination": dest.to_string(),
            "names": names,
        });
        self.shared.audit(ev);
    }
}

#[derive(Debug)]
enum Verdict {
    Allow,
    AuditPass {
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
            Verdict::Allow
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
    let (d, script_why) = decide_with(shared, &gen, caller, dest, &names);
    let (d, script_why) = match &d {
        Decision::Deny { .. } if !gen.binaries.knows(caller.exe) => {
            let g = shared.refresh_binaries(looked_at);
            decide_with(shared, &g, caller, dest, &names)
        }
        _ => (d, script_why),
    };
    match d {
        Decision::Allow {
            would_deny: Some(why),
            policy,
            endpoint,
            ..
        } => Verdict::AuditPass {
            by: format!("{policy} {endpoint}"),
            why,
            names,
        },
        Decision::Allow { .. } => Verdict::Allow,
        Decision::Deny { reason } => Verdict::Deny {
            why: match script_why {
                Some(s) => format!("{reason} ({s})"),
                None => reason,
            },
            names,
        },
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
        match identity::matches(set, caller, &root) {
            Ok(m) => m,
            Err(why) => {
                *refusal.lock().expect("not poisoned") = Some(why);
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
    (d, refusal.into_inner().expect("not poisoned"))
}
