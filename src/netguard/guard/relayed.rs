//! Calls of a sandbox run without root (`relay`): an allowed connect or datagram on one of the
//! sandbox's own sockets goes out through a twin the guard makes on the host's network and
//! puts in the caller's place; DNS stays on the sandbox's socket, to the resolver the init
//! bound; every call, local ones too, is made by the guard on the file it judged.

use std::net::IpAddr;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::unistd::Pid;

use super::call::Request;
use super::perform::{send_op, socket_type, CallCtx};
use crate::audit;
use crate::netguard::calls::{self, Mem};
use crate::netguard::notif::Reply;
use crate::netguard::relay::{self, Place};
use crate::netguard::sockaddr::{self, Target};

/// Where a destination sends a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// An address of the sandbox's own network namespace: its resolver, and in a relayed
    /// container any loopback address, or the unspecified one, which the kernel takes for
    /// loopback (a container's loopback is its own, as under root).
    /// On the sandbox's socket only: from a relayed one it would be the host's.
    Inside,
    /// Dissolving an association (`AF_UNSPEC`): on whatever socket it is.
    Unspec,
    /// A destination the policy allowed: through a twin.
    Out,
}

impl CallCtx {
    fn way(&self, addr: &[u8]) -> Way {
        match sockaddr::parse(addr) {
            Target::Inet(d) if d.port() == 53 && d.ip() == IpAddr::V4(self.shared.resolver) => {
                Way::Inside
            }
            Target::Inet(d)
                if self.shared.relay.as_ref().is_some_and(|r| r.own_loopback)
                    && (relay::is_loopback(d.ip()) || d.ip().is_unspecified()) =>
            {
                Way::Inside
            }
            Target::Unspec => Way::Unspec,
            _ => Way::Out,
        }
    }

    /// An inet call in a relayed sandbox, after the guard took the caller's socket.
    pub(super) fn relayed(
        self,
        place: Place,
        sock: OwnedFd,
        request: Request,
        fl: Option<i32>,
        blocking: bool,
    ) {
        let Some(fl) = fl else {
            return self.respond(Reply::Error(Errno::EBADF));
        };
        match request {
            Request::Connect(addr) => self.relay_connect(place, sock, addr, fl, blocking),
            Request::SendTo {
                buf,
                len,
                flags,
                addr,
            } => {
                if let Err(e) = self.allowed_send(&addr) {
                    return self.respond(Reply::Error(e));
                }
                if flags & libc::MSG_FASTOPEN != 0 {
                    // A connect in disguise, on the sandbox's socket: connect first instead.
                    return self.respond(Reply::Error(Errno::EOPNOTSUPP));
                }
                let sock = match self.sending_socket(place, sock, self.way(&addr), fl) {
                    Ok(s) => s,
                    Err(e) => return self.respond(Reply::Error(e)),
                };
                let mem = Mem(Pid::from_raw(self.caller.pid));
                let op = send_op(blocking, flags, move |s, f| {
                    let data = mem.read(buf, len)?;
                    calls::sendto(s, &data, f, &addr)
                });
                self.finish(sock, blocking, flags, op);
            }
            Request::SendMsg(h, flags) => {
                if let Some(opt) = calls::routing_option(&h.control) {
                    self.event(
                        audit::Decision::Denied,
                        "network guard",
                        &format!("control data refused: {opt}"),
                        None,
                        &[],
                    );
                    return self.respond(Reply::Error(Errno::EACCES));
                }
                let sock = match h.name.as_deref() {
                    None => sock,
                    Some(a) => {
                        if let Err(e) = self.allowed_send(a) {
                            return self.respond(Reply::Error(e));
                        }
                        match self.sending_socket(place, sock, self.way(a), fl) {
                            Ok(s) => s,
                            Err(e) => return self.respond(Reply::Error(e)),
                        }
                    }
                };
                let mem = Mem(Pid::from_raw(self.caller.pid));
                let op = send_op(blocking, flags, move |s, f| {
                    let data = calls::read_iov(&mem, h.iov, h.iovlen, calls::MAX_DATA)?;
                    calls::sendmsg(s, h.name.as_deref(), &data, &h.control, f)
                });
                self.finish(sock, blocking, flags, op);
            }
            Request::SendMmsg { vec, hdrs, flags } => {
                // One socket serves the batch: the sandbox's own side or the relayed one.
                let ways: Vec<Way> = hdrs
                    .iter()
                    .filter_map(|h| h.name.as_deref().map(|a| self.way(a)))
                    .collect();
                let way = if ways.iter().all(|w| *w == Way::Inside) {
                    Way::Inside
                } else if ways.contains(&Way::Inside) {
                    self.event(
                        audit::Decision::Denied,
                        "network guard",
                        "one sendmmsg to the sandbox's own addresses and elsewhere",
                        None,
                        &[],
                    );
                    return self.respond(Reply::Error(Errno::EACCES));
                } else {
                    Way::Out
                };
                // Decided before a twin goes in; `sendmmsg` decides each again as it sends.
                for a in hdrs.iter().filter_map(|h| h.name.as_deref()) {
                    if let Err(e) = self.allowed_send(a) {
                        return self.respond(Reply::Error(e));
                    }
                }
                let sock = if ways.is_empty() {
                    sock
                } else {
                    match self.sending_socket(place, sock, way, fl) {
                        Ok(s) => s,
                        Err(e) => return self.respond(Reply::Error(e)),
                    }
                };
                self.sendmmsg(sock, vec, hdrs, flags, blocking)
            }
        }
    }

    /// A connect: to the resolver on the sandbox's socket, to an allowed destination through a
    /// twin put in place once the connect started (a refusal at once leaves the caller's
    /// socket as it was).
    fn relay_connect(self, place: Place, sock: OwnedFd, addr: Vec<u8>, fl: i32, blocking: bool) {
        let (by, flow) = match self.allowed(&addr) {
            Ok(a) => a,
            Err(e) => return self.respond(Reply::Error(e)),
        };
        if flow.is_some() {
            // Live updates can add HTTP rules the proxy cannot serve here.
            self.event(
                audit::Decision::Denied,
                "network guard",
                "endpoints with HTTP rules need root (the layer-7 proxy)",
                None,
                &[],
            );
            return self.respond(Reply::Error(Errno::EACCES));
        }
        let way = self.way(&addr);
        if way == Way::Inside && place != Place::Sandbox {
            return self.refuse_inside();
        }
        if way == Way::Unspec && place != Place::Sandbox {
            // It would also give back the port the twin holds on the host, for a `bind`
            // anywhere there.
            self.event(
                audit::Decision::Denied,
                "network guard",
                "dissolving the association of a relayed socket",
                None,
                &[],
            );
            return self.respond(Reply::Error(Errno::EACCES));
        }
        if way != Way::Out || place != Place::Sandbox {
            let started = calls::connect_nowait(&sock, &addr, fl);
            return self.conclude_connect(sock, started, blocking, by);
        }
        let twin = match relay::twin(&sock) {
            Ok(t) => t,
            Err(e) => return self.respond(Reply::Error(self.unrelayed(e))),
        };
        let started = calls::file_flags(&twin)
            .ok_or(Errno::EBADF)
            .and_then(|tfl| calls::connect_nowait(&twin, &addr, tfl));
        if started.is_ok() {
            let cloexec = relay::cloexec_of(self.tid, self.fd);
            if let Err(e) = relay::place_as(self.listener(), self.id(), &twin, self.fd, fl, cloexec)
            {
                return self.respond(Reply::Error(e));
            }
        }
        self.conclude_connect(twin, started, blocking, by)
    }

    /// The socket a send to `way` goes out on: the resolver only on the sandbox's; an
    /// allowed destination on a datagram twin put in place (bound first), or on the socket
    /// as it is when it is one already (or a stream, which has its peer).
    fn sending_socket(
        &self,
        place: Place,
        sock: OwnedFd,
        way: Way,
        fl: i32,
    ) -> Result<OwnedFd, Errno> {
        match (way, place) {
            (Way::Inside, Place::Sandbox) => Ok(sock),
            (Way::Inside, Place::Elsewhere) => {
                self.inside_refusal();
                Err(Errno::EACCES)
            }
            (Way::Unspec, _) => Err(Errno::EAFNOSUPPORT),
            (Way::Out, Place::Elsewhere) => Ok(sock),
            (Way::Out, Place::Sandbox) if socket_type(&sock) != Some(libc::SOCK_DGRAM) => Ok(sock),
            (Way::Out, Place::Sandbox) => {
                let twin = relay::twin(&sock).map_err(|e| self.unrelayed(e))?;
                let (domain, _) = relay::kind(&twin)?;
                relay::bind_any(&twin, domain)?;
                let cloexec = relay::cloexec_of(self.tid, self.fd);
                relay::place_as(self.listener(), self.id(), &twin, self.fd, fl, cloexec)?;
                Ok(twin)
            }
        }
    }

    fn inside_refusal(&self) {
        self.event(
            audit::Decision::Denied,
            "network guard",
            "the sandbox's own addresses (its resolver, a container's loopback) are reached \
             from its own sockets only: from a relayed one they would be the host's",
            None,
            &[],
        );
    }

    fn refuse_inside(&self) {
        self.inside_refusal();
        self.respond(Reply::Error(Errno::EACCES));
    }

    /// A socket of a kind the guard does not relay (not TCP or UDP): refused, with why.
    fn unrelayed(&self, e: Errno) -> Errno {
        if e == Errno::EACCES {
            self.event(
                audit::Decision::Denied,
                "network guard",
                "only TCP and UDP sockets are relayed without root",
                None,
                &[],
            );
        }
        e
    }

    /// A call on a local (unix or netlink) socket of a relayed sandbox, made on the guard's
    /// copy. Control data is refused: descriptors named in it would be the guard's.
    pub(super) fn local(self, sock: OwnedFd, request: Request) {
        let Some(fl) = calls::file_flags(&sock) else {
            return self.respond(Reply::Error(Errno::EBADF));
        };
        let blocking = calls::may_block(fl, request.flags());
        let mem = Mem(Pid::from_raw(self.caller.pid));
        let refuse_control = |ctx: &CallCtx| {
            ctx.event(
                audit::Decision::Denied,
                "local sockets",
                "control data (descriptors, credentials) on a local socket of a sandbox run \
                 without root",
                None,
                &[],
            );
            ctx.respond(Reply::Error(Errno::EACCES));
        };
        let named = match &request {
            Request::Connect(a) | Request::SendTo { addr: a, .. } => vec![a.as_slice()],
            Request::SendMsg(h, _) => h.name.as_deref().into_iter().collect(),
            Request::SendMmsg { hdrs, .. } => {
                hdrs.iter().filter_map(|h| h.name.as_deref()).collect()
            }
        };
        if let Some((errno, why)) = named.into_iter().find_map(local_refusal) {
            self.event(audit::Decision::Denied, "local sockets", why, None, &[]);
            return self.respond(Reply::Error(errno));
        }
        match request {
            Request::Connect(addr) => {
                let r = calls::connect_nowait(&sock, &addr, fl)
                    .and_then(|n| n.ok_or(Errno::EINPROGRESS));
                self.respond(Reply::of(r))
            }
            Request::SendTo {
                buf,
                len,
                flags,
                addr,
            } => {
                let op = send_op(blocking, flags, move |s, f| {
                    let data = mem.read(buf, len)?;
                    calls::sendto(s, &data, f, &addr)
                });
                self.finish(sock, blocking, flags, op);
            }
            Request::SendMsg(h, flags) => {
                if !h.control.is_empty() {
                    return refuse_control(&self);
                }
                let op = send_op(blocking, flags, move |s, f| {
                    let data = calls::read_iov(&mem, h.iov, h.iovlen, calls::MAX_DATA)?;
                    calls::sendmsg(s, h.name.as_deref(), &data, &[], f)
                });
                self.finish(sock, blocking, flags, op);
            }
            Request::SendMmsg { vec, hdrs, flags } => {
                if hdrs.iter().any(|h| !h.control.is_empty()) {
                    return refuse_control(&self);
                }
                let op = self.mmsg_op(hdrs, vec, flags);
                self.finish(sock, blocking, flags, op);
            }
        }
    }
}

/// Why a local call of a relayed sandbox may not name `addr`, if it may not. The guard makes
/// the call from its own namespaces (the host's mount and network namespaces) with its own
/// rights (it owns the sandbox's user namespace): a unix path or abstract name would be
/// looked up on the host, and a netlink port or group other than the kernel's would be
/// reached with rights the workload does not have (the kernel refuses it EPERM).
pub(super) fn local_refusal(addr: &[u8]) -> Option<(Errno, &'static str)> {
    let family = i32::from(u16::from_ne_bytes(addr.get(..2)?.try_into().ok()?));
    let word = |at: usize| {
        addr.get(at..at + 4)
            .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
    };
    match family {
        libc::AF_UNSPEC => None,
        libc::AF_NETLINK if word(4) == 0 && word(8) == 0 => None,
        libc::AF_NETLINK => Some((
            Errno::EPERM,
            "netlink to a port or group other than the kernel's, from a sandbox run without root",
        )),
        _ => Some((
            Errno::EACCES,
            "a unix address named by a sandbox run without root (it would be the host's)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_calls_name_only_the_kernel_over_netlink() {
        let nl = |pid: u32, groups: u32| {
            let mut a = (libc::AF_NETLINK as u16).to_ne_bytes().to_vec();
            a.extend([0, 0]);
            a.extend(pid.to_ne_bytes());
            a.extend(groups.to_ne_bytes());
            a
        };
        assert_eq!(local_refusal(&nl(0, 0)), None);
        assert_eq!(local_refusal(&nl(77, 0)).map(|r| r.0), Some(Errno::EPERM));
        assert_eq!(local_refusal(&nl(0, 1)).map(|r| r.0), Some(Errno::EPERM));
        let mut unix = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        unix.extend(b"/run/user/1000/bus\0");
        assert_eq!(local_refusal(&unix).map(|r| r.0), Some(Errno::EACCES));
        assert_eq!(local_refusal(&(libc::AF_UNSPEC as u16).to_ne_bytes()), None);
        assert_eq!(local_refusal(&[]), None);
    }
}
