//! The calls the guard makes itself, on its copy of the caller's socket, with the
//! arguments it validated: connects (never blocking the guard), sends of every kind, the
//! splice to the layer-7 proxy, and the waits handed to the waiter.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt};
use nix::unistd::Pid;

use super::call::{syscall_name, Request};
use crate::audit;
use crate::netguard::calls::{self, Header, Mem, MMSGHDR_LEN};
use crate::netguard::identity::Caller;
use crate::netguard::l7;
use crate::netguard::local::{self, local_address};
use crate::netguard::notif::{self, Reply};
use crate::netguard::shared::Shared;
use crate::netguard::sockaddr::{self, Target};
use crate::netguard::waiter::{self, Pending};

/// A send the guard performs: `Err(EAGAIN)` from a caller that may wait means "not yet".
pub(super) type Op = Box<dyn FnMut(&OwnedFd) -> Result<usize, Errno> + Send>;

/// One notified call after its arguments were read.
pub(super) struct CallCtx {
    pub(super) shared: Arc<Shared>,
    listener: Arc<OwnedFd>,
    id: u64,
    pub(super) caller: Caller,
    /// The calling thread (its pidfd): signals go to it, never to a pid number.
    pidfd: Arc<OwnedFd>,
    syscall: &'static str,
    /// The calling thread and the descriptor number it named (where a relayed socket goes).
    pub(super) tid: i32,
    pub(super) fd: i32,
}

impl CallCtx {
    /// The context of thread `tid`'s notified call `nr`; `None` (answered ESRCH) when the
    /// caller is gone.
    pub(super) fn of(
        shared: &Arc<Shared>,
        listener: &Arc<OwnedFd>,
        id: u64,
        tid: i32,
        nr: i64,
        fd: i32,
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
            tid,
            fd,
        })
    }

    pub(super) fn listener(&self) -> &Arc<OwnedFd> {
        &self.listener
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn respond(&self, r: Reply) {
        notif::respond(&self.listener, self.id, r);
    }

    /// An addressed unix call (see `unix_call`), made by the guard on the file it judged.
    pub(super) fn unix(self, tid: i32, proc: &std::fs::File, sock: OwnedFd, request: Request) {
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
        // A connect is never blocking in the guard, whatever the caller's flags say by now.
        let connect_fl = match (&payload, fl) {
            (None, None) => return self.respond(Reply::Error(Errno::EBADF)),
            (None, Some(fl)) => Some(fl),
            (Some(_), _) => None,
        };
        let connect = |t: &local::Target| {
            connect_fl.map(|fl| calls::connect_nowait(&sock, &t.sockaddr(), fl))
        };
        // A relayed container's calls are made as the caller (`local::judge_as_caller`): the
        // path is looked up with its rights, and a connect records its credentials for the
        // peer, on one thread.
        let judged = if self.shared.local.own_files {
            local::judge_as_caller(&self.shared.local, proc, &addr, connect)
        } else {
            local::judge(&self.shared.local, proc, &addr).map(|t| {
                let connected = connect(&t);
                (t, connected)
            })
        };
        let (target, connected) = match judged {
            Ok(t) => t,
            Err(r) => {
                if let Some(why) = &r.why {
                    self.event(audit::Decision::Denied, "local sockets", why, None, &[]);
                }
                return self.respond(Reply::Error(r.errno));
            }
        };
        let to = target.sockaddr();
        let Some((buf, len, iov, flags)) = payload else {
            drop(target);
            // A unix connect is over at once (EAGAIN: the listener's backlog is full).
            return self.respond(match connected {
                Some(Ok(_)) => Reply::Value(0),
                Some(Err(e)) => Reply::Error(e),
                None => Reply::Error(Errno::EBADF),
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

    pub(super) fn run(self, sock: OwnedFd, request: Request) {
        // The file's flags, read once: whether the call may wait, and what to restore after a
        // connect the guard makes non-blocking.
        let fl = calls::file_flags(&sock);
        let blocking = fl.is_some_and(|fl| calls::may_block(fl, request.flags()));
        if let Some(place) = self.shared.relay.as_ref().map(|r| r.place(&sock)) {
            return self.relayed(place, sock, request, fl, blocking);
        }
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
        self.conclude_connect(sock, started, blocking, by);
    }

    /// Answer a connect the guard started on `sock`: at once when it is over (or the caller
    /// does not wait), else from the waiter when the handshake ends.
    pub(super) fn conclude_connect(
        self,
        sock: OwnedFd,
        started: Result<Option<usize>, Errno>,
        blocking: bool,
        by: Option<String>,
    ) {
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
    pub(super) fn finish(self, sock: OwnedFd, blocking: bool, flags: i32, mut op: Op) {
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

    fn wait(self, sock: OwnedFd, ready: waiter::Ready) {
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
    pub(super) fn sendmmsg(
        self,
        sock: OwnedFd,
        vec: u64,
        hdrs: Vec<Header>,
        flags: i32,
        blocking: bool,
    ) {
        let mut allowed = Vec::with_capacity(hdrs.len());
        let mut first_refusal = None;
        for h in &hdrs {
            if let Some(opt) = calls::routing_option(&h.control) {
                self.event(
                    audit::Decision::Denied,
                    "network guard",
                    &format!("control data refused: {opt}"),
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
        let op = self.mmsg_op(allowed, vec, flags);
        self.finish(sock, blocking, flags, op);
    }

    /// Send `allowed` in order, as one `sendmmsg` to vector `vec` of the caller.
    pub(super) fn mmsg_op(&self, allowed: Vec<Header>, vec: u64, flags: i32) -> Op {
        let mem = Mem(Pid::from_raw(self.caller.pid));
        let (listener, id) = (self.listener.clone(), self.id);
        let mut next = 0usize;
        let mut sent = 0usize;
        let mut bytes = 0usize;
        Box::new(move |s| {
            let f = sent_flags(flags);
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
        })
    }

    fn refuse_option(&self, opt: &str) {
        self.event(
            audit::Decision::Denied,
            "network guard",
            &format!("control data refused: {opt}"),
            None,
            &[],
        );
        self.respond(Reply::Error(Errno::EACCES));
    }

    /// Point the caller's socket at the layer-7 proxy: bind it (if it is not) to learn its
    /// source port, announce the flow under that port, and return the proxy's address.
    pub(super) fn splice(&self, sock: &OwnedFd, flow: l7::Flow) -> Result<Vec<u8>, Errno> {
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

    pub(super) fn event(
        &self,
        decision: audit::Decision,
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
pub(super) fn send_op(
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
        match send(s, sent_flags(f)) {
            Err(Errno::EINPROGRESS) if blocking && f & libc::MSG_FASTOPEN != 0 => {
                connecting = true;
                Err(Errno::EAGAIN)
            }
            r => r,
        }
    })
}

/// The flags the guard sends with: never waiting, and never zero-copy, whatever the caller
/// set (with MSG_ZEROCOPY the kernel would go on reading the guard's buffer after the send
/// returned, when the guard has reused that memory for something else).
fn sent_flags(caller: i32) -> i32 {
    (caller | libc::MSG_DONTWAIT) & !libc::MSG_ZEROCOPY
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

pub(super) fn socket_type(sock: &OwnedFd) -> Option<i32> {
    socket::getsockopt(sock, sockopt::SockType)
        .ok()
        .map(|t| t as i32)
}

pub(super) fn domain_of(sock: &OwnedFd) -> Option<i32> {
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
