//! The notified calls as the kernel hands them over: which call it is, the caller's
//! descriptor and arguments, and the calls answered here without a destination to decide
//! (32-bit calls, local sockets, `listen`, `execve`).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::errno::Errno;
use nix::unistd::Pid;

use super::call::{read_request_args, syscall_name, Request};
use super::perform::{domain_of, CallCtx};
use crate::audit;
use crate::netguard::calls::Mem;
use crate::netguard::capture;
use crate::netguard::local::{self, local_address};
use crate::netguard::notif::{self, Reply};
use crate::netguard::relay::{may_bind_low, privileged_port, Place};
use crate::netguard::shared::Shared;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_BIT: i64 = 0x4000_0000;
/// i386 and x32 execve/execveat: they continue, without a capture.
const EXEC_32: [(u32, i64); 4] = [
    (0x4000_0003, 11),
    (0x4000_0003, 358),
    (AUDIT_ARCH_X86_64, X32_BIT | 520),
    (AUDIT_ARCH_X86_64, X32_BIT | 545),
];
fn refuse(
    shared: &Shared,
    listener: &OwnedFd,
    id: u64,
    tid: i32,
    why: &str,
    request: serde_json::Value,
) {
    shared.audit(
        audit::Event::new(
            audit::Kind::Network,
            audit::Decision::Denied,
            "network guard",
            why,
        )
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

pub(super) fn handle(shared: &Arc<Shared>, listener: &Arc<OwnedFd>, req: &libc::seccomp_notif) {
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
        libc::SYS_bind => return bind(shared, listener, id, tid, &req.data.args),
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
            if shared.relay.is_some() {
                // No fence: a relayed socket swapped onto this number before the kernel
                // looked again would connect or send undecided. The guard makes the call.
                return local_call(shared, listener, id, tid, nr, &req.data.args, sock, pidfd);
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
    let Some(ctx) = CallCtx::of(
        shared,
        listener,
        id,
        tid,
        nr,
        req.data.args[0] as i32,
        pidfd,
    ) else {
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
    let Some(ctx) = CallCtx::of(shared, listener, id, tid, nr, args[0] as i32, pidfd) else {
        return;
    };
    ctx.unix(tid, &proc, sock, request);
}

/// `bind`, notified only in a relayed sandbox: a relayed socket whose connect failed (or
/// whose association ended) holds no port on the host any more, and bound there it would
/// hold one of the workload's choosing. The sandbox's own inet sockets bind as usual, on the
/// guard's copy; unix names would be the host's, and netlink groups need rights the
/// workload lacks.
fn bind(shared: &Shared, listener: &Arc<OwnedFd>, id: u64, tid: i32, args: &[u64; 6]) {
    let Some(relay) = &shared.relay else {
        return notif::respond(listener, id, Reply::Continue);
    };
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
    let addr =
        match crate::netguard::calls::read_sockaddr(&Mem(Pid::from_raw(tid)), args[1], args[2]) {
            Ok(a) => a,
            Err(e) => return notif::respond(listener, id, Reply::Error(e)),
        };
    if !notif::valid(listener, id) {
        return;
    }
    let what = || serde_json::json!({"syscall": "bind", "family": domain});
    if domain == libc::AF_UNIX && shared.local.own_files {
        return bind_unix(shared, listener, id, tid, &sock, &addr);
    }
    let refusal = match domain {
        libc::AF_INET | libc::AF_INET6 if relay.place(&sock) != Place::Sandbox => {
            Some((Errno::EACCES, "binding a socket of the host's network"))
        }
        libc::AF_INET | libc::AF_INET6 => (privileged_port(&addr).is_some() && !may_bind_low(tid))
            .then_some((
                Errno::EACCES,
                "binding a port below 1024 without CAP_NET_BIND_SERVICE",
            )),
        _ => super::relayed::local_refusal(&addr),
    };
    if let Some((errno, why)) = refusal {
        shared.audit(
            audit::Event::new(
                audit::Kind::Network,
                audit::Decision::Denied,
                "network guard",
                why,
            )
            .pid(tid)
            .request(what()),
        );
        return notif::respond(listener, id, Reply::Error(errno));
    }
    notif::respond(
        listener,
        id,
        Reply::of(local::bind(&sock, &addr).map(|()| 0)),
    );
}

/// A unix `bind` of a relayed container, made by the guard in the container's tree, as the
/// caller (`local::bind_unix`).
fn bind_unix(
    shared: &Shared,
    listener: &Arc<OwnedFd>,
    id: u64,
    tid: i32,
    sock: &OwnedFd,
    addr: &[u8],
) {
    let Ok(proc) = std::fs::File::open(format!("/proc/{tid}")) else {
        return notif::respond(listener, id, Reply::Error(Errno::ESRCH));
    };
    if !notif::valid(listener, id) {
        return;
    }
    match local::bind_unix(&shared.local, &proc, sock, addr) {
        Ok(()) => notif::respond(listener, id, Reply::Value(0)),
        Err(r) => {
            if let Some(why) = r.why {
                shared.audit(
                    audit::Event::new(
                        audit::Kind::Network,
                        audit::Decision::Denied,
                        "local sockets",
                        &why,
                    )
                    .pid(tid)
                    .request(serde_json::json!({"syscall": "bind", "family": libc::AF_UNIX})),
                );
            }
            notif::respond(listener, id, Reply::Error(r.errno))
        }
    }
}

/// A call on a local (unix or netlink) socket of a relayed sandbox, made by the guard on the
/// file it took: with no fence, "continue" would let the kernel look the number up again.
#[allow(clippy::too_many_arguments)]
fn local_call(
    shared: &Arc<Shared>,
    listener: &Arc<OwnedFd>,
    id: u64,
    tid: i32,
    nr: i64,
    args: &[u64; 6],
    sock: OwnedFd,
    pidfd: OwnedFd,
) {
    let request = match read_request_args(&Mem(Pid::from_raw(tid)), nr, args) {
        Ok(r) => r,
        Err(e) => return notif::respond(listener, id, Reply::Error(e)),
    };
    // A relayed container's unix paths are its own files: judged in its root and reached by
    // the guard (`LocalRules::own_files`). Opened before the validity check: it names this
    // thread, not a later owner of its id.
    let unix_path =
        shared.local.own_files && domain_of(&sock) == Some(libc::AF_UNIX) && addressed(&request);
    let proc = match unix_path.then(|| std::fs::File::open(format!("/proc/{tid}"))) {
        Some(Err(_)) => return notif::respond(listener, id, Reply::Error(Errno::ESRCH)),
        Some(Ok(p)) => Some(p),
        None => None,
    };
    if !notif::valid(listener, id) {
        return;
    }
    if let Some(proc) = proc {
        let what = || serde_json::json!({"syscall": syscall_name(nr), "family": libc::AF_UNIX});
        let refusal = match &request {
            Request::SendMmsg { .. } => Some("addressed unix datagrams in sendmmsg"),
            Request::SendMsg(h, _) if !h.control.is_empty() => {
                Some("control data (descriptors, credentials) in an addressed unix datagram")
            }
            _ => None,
        };
        if let Some(why) = refusal {
            return refuse(shared, listener, id, tid, why, what());
        }
        let Some(ctx) = CallCtx::of(shared, listener, id, tid, nr, args[0] as i32, pidfd) else {
            return;
        };
        return ctx.unix(tid, &proc, sock, request);
    }
    let Some(ctx) = CallCtx::of(shared, listener, id, tid, nr, args[0] as i32, pidfd) else {
        return;
    };
    ctx.local(sock, request);
}

/// Whether a call names a destination (a connect, or a send with an address).
fn addressed(request: &Request) -> bool {
    match request {
        Request::Connect(_) => true,
        Request::SendTo { addr, .. } => !addr.is_empty(),
        Request::SendMsg(h, _) => h.name.is_some(),
        Request::SendMmsg { hdrs, .. } => hdrs.iter().any(|h| h.name.is_some()),
    }
}

/// `listen`: where only loopback may listen, or sockets are relayed, the guard listens on its
/// copy of the socket (so a descriptor swapped meanwhile changes nothing); elsewhere the call
/// continues.
fn listen(shared: &Shared, listener: &Arc<OwnedFd>, id: u64, tid: i32, args: &[u64; 6]) {
    if !shared.local.loopback_listen && shared.relay.is_none() {
        return notif::respond(listener, id, Reply::Continue);
    }
    let fds = match notif::ThreadFds::open(tid) {
        Ok(p) => p,
        Err(_) => return notif::respond(listener, id, Reply::Error(Errno::ESRCH)),
    };
    // For a listen made as the caller (`own_files`). Opened before the validity check: it
    // names this thread, not a later owner of its id.
    let proc = match shared
        .local
        .own_files
        .then(|| std::fs::File::open(format!("/proc/{tid}")))
    {
        Some(Err(_)) => return notif::respond(listener, id, Reply::Error(Errno::ESRCH)),
        opened => opened.and_then(Result::ok),
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
    if let (libc::AF_UNIX, Some(proc)) = (domain, &proc) {
        // As the caller: the listener's credentials are what its peers are told.
        let backlog = args[1] as i32;
        let r = local::as_caller(proc, || local::listen(&sock, backlog));
        return notif::respond(listener, id, Reply::of(r.map(|_| 0)));
    }
    // Relayed, only the sandbox's own sockets listen: a relayed one whose connect failed is a
    // socket of the host's network again, and would listen there.
    if let Some(relay) = &shared.relay {
        if inet && relay.place(&sock) != Place::Sandbox {
            return refuse(
                shared,
                listener,
                id,
                tid,
                "listening on a socket of the host's network",
                serde_json::json!({"syscall": "listen", "family": domain}),
            );
        }
    }
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
    if inet
        && shared.local.loopback_listen
        && !local_address(&sock).is_some_and(|a| local::loopback_bound(&a))
    {
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
    let timed = crate::timing::span("exec-capture");
    let got = capture::continue_and_capture(tid, shared.aslr, || notif::valid(listener, id), cont);
    drop(timed);
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
