//! Relayed egress, for a sandbox run without root.
//!
//! Without root there is no kernel fence, so the sandbox keeps a network namespace of its own
//! with only loopback in it: a socket the workload makes there reaches nothing else, whatever
//! it does. For a call the guard allows, the guard makes a socket of the same kind in its own
//! namespace (the caller's host network), connects or binds it, and puts it in place of the
//! caller's descriptor with `SECCOMP_IOCTL_NOTIF_ADDFD` (`SETFD`), while the caller still waits
//! in the call. The caller then holds a socket that is already connected to (or, for
//! datagrams, bound and only ever sent from through the guard to) a destination the policy
//! allowed.
//!
//! The guard answers every call on such a sandbox's sockets itself (never "continue"), so a
//! descriptor swapped by another thread between the guard's look and the kernel's cannot put
//! a relayed socket under an undecided connect or send.
//!
//! Only TCP and UDP are relayed: other protocols have ways to reach an address that the guard
//! does not see (SCTP's `connectx` is a socket option).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;

/// `SIOCGSKNS` (linux/sockios.h): a descriptor for the network namespace of a socket.
const SIOCGSKNS: libc::c_ulong = 0x894C;

/// Where a socket was made, told by the inode of its network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The sandbox's own namespace (loopback only): relayed when allowed.
    Sandbox,
    /// Anywhere else: a socket the guard put in place, or one the caller inherited. Calls on
    /// it are performed as they are.
    Elsewhere,
}

/// The inode of the network namespace `sock` lives in. The kernel answers only for a
/// namespace the guard has CAP_NET_ADMIN over (the sandbox's, whose user namespace its user
/// made); for the host's it refuses, which `place` reads as "not the sandbox's".
pub fn netns_inode(sock: &OwnedFd) -> Result<u64, Errno> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor.
    let fd = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGSKNS as _) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new descriptor, ours alone.
    let ns = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ns.metadata()
        .map(|m| m.ino())
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// 127.0.0.0/8, ::1, and 127.0.0.0/8 mapped into IPv6.
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Which side `sock` is on, given the inode of the sandbox's network namespace.
pub fn place(sock: &OwnedFd, sandbox_ns: u64) -> Place {
    match netns_inode(sock) {
        Ok(ino) if ino == sandbox_ns => Place::Sandbox,
        _ => Place::Elsewhere,
    }
}

fn int_option(sock: &OwnedFd, level: i32, name: i32) -> Option<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the option is one int, written into `v`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

fn set_int_option(sock: &OwnedFd, level: i32, name: i32, v: i32) {
    // SAFETY: the option is one int, read from `v`.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// What the caller's socket is: (domain, type), for TCP and UDP only.
pub fn kind(sock: &OwnedFd) -> Result<(i32, i32), Errno> {
    let domain = int_option(sock, libc::SOL_SOCKET, libc::SO_DOMAIN).ok_or(Errno::ENOTSOCK)?;
    let ty = int_option(sock, libc::SOL_SOCKET, libc::SO_TYPE).ok_or(Errno::ENOTSOCK)?;
    let proto = int_option(sock, libc::SOL_SOCKET, libc::SO_PROTOCOL).ok_or(Errno::ENOTSOCK)?;
    match (domain, ty, proto) {
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP)
        | (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Ok((domain, ty)),
        _ => Err(Errno::EACCES),
    }
}

/// Options a program commonly sets before connecting, carried over to the twin. What is not
/// carried (a bound source address, buffer sizes) is the kernel's default on the twin.
const CARRIED: [(i32, i32); 4] = [
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::SOL_SOCKET, libc::SO_BROADCAST),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
];

/// A socket like the caller's `sock`, made in the guard's network namespace: non-blocking
/// and close-on-exec here (the guard never waits on it); `place_as` gives it the caller's
/// flags when it goes in.
pub fn twin(sock: &OwnedFd) -> Result<OwnedFd, Errno> {
    let (domain, ty) = kind(sock)?;
    // SAFETY: plain socket(2); the descriptor is checked below.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new descriptor, ours alone.
    let twin = unsafe { OwnedFd::from_raw_fd(fd) };
    for (level, name) in CARRIED {
        let applies = match level {
            libc::IPPROTO_TCP => ty == libc::SOCK_STREAM,
            libc::IPPROTO_IPV6 => domain == libc::AF_INET6,
            _ => true,
        };
        if let Some(v) = applies.then(|| int_option(sock, level, name)).flatten() {
            set_int_option(&twin, level, name, v);
        }
    }
    Ok(twin)
}

/// Bind a datagram twin to the wildcard address and an ephemeral port before it goes in, so
/// the caller never holds an unbound socket of the host's network to bind where it likes.
pub fn bind_any(twin: &OwnedFd, domain: i32) -> Result<(), Errno> {
    let any = if domain == libc::AF_INET6 {
        std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let a = super::sockaddr::encode(&any);
    // SAFETY: `a` is a valid sockaddr of its length; the descriptor is ours.
    let r = unsafe {
        libc::bind(
            twin.as_raw_fd(),
            a.as_ptr() as *const libc::sockaddr,
            a.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Whether thread `tid` may bind a port below 1024 itself: its effective set holds
/// CAP_NET_BIND_SERVICE. The guard binds on its copy of the socket, and the guard's user made
/// the sandbox's user namespace, so the kernel would let the guard bind a port the workload
/// (whose capabilities are gone) could not.
pub fn may_bind_low(tid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|eff| eff & caps::Capability::CAP_NET_BIND_SERVICE.bitmask() != 0)
}

/// The port an inet `sockaddr` names, if it is one below 1024 other than 0 (0 asks the kernel
/// for any port).
pub fn privileged_port(addr: &[u8]) -> Option<u16> {
    let family = u16::from_ne_bytes(addr.get(..2)?.try_into().ok()?);
    if family != libc::AF_INET as u16 && family != libc::AF_INET6 as u16 {
        return None;
    }
    let port = u16::from_be_bytes(addr.get(2..4)?.try_into().ok()?);
    (port != 0 && port < 1024).then_some(port)
}

/// Whether descriptor `fd` of thread `tid` is close-on-exec (its `fdinfo` flags).
pub fn cloexec_of(tid: i32, fd: i32) -> bool {
    let Ok(info) = std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}")) else {
        return false;
    };
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i64::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|f| f & i64::from(libc::O_CLOEXEC) != 0)
}

/// Put `twin` in place of the caller's descriptor `fd` (notification `id`), with the file
/// status flags `fl` the caller's socket had. Fails when the caller is no longer waiting.
pub fn place_as(
    listener: &OwnedFd,
    id: u64,
    twin: &OwnedFd,
    fd: i32,
    fl: i32,
    cloexec: bool,
) -> Result<(), Errno> {
    // SAFETY: F_SETFL on a descriptor we own; only O_NONBLOCK (and O_ASYNC-like bits the
    // kernel ignores for sockets) are taken from the caller's flags.
    if unsafe { libc::fcntl(twin.as_raw_fd(), libc::F_SETFL, fl & libc::O_NONBLOCK) } < 0 {
        return Err(Errno::last());
    }
    let fd = u32::try_from(fd).map_err(|_| Errno::EBADF)?;
    let add = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd: twin.as_raw_fd() as u32,
        newfd: fd,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: ADDFD reads the struct we pass by pointer; it installs a copy of our descriptor.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &add as *const libc::seccomp_notif_addfd,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(domain: i32, ty: i32, proto: i32) -> OwnedFd {
        // SAFETY: plain socket(2), checked.
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
        assert!(fd >= 0, "{}", Errno::last());
        // SAFETY: a new descriptor.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn loopback_is_every_form_of_it() {
        for ip in ["127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.2"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.18.77.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "fe80::1"] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn low_ports_need_the_callers_own_capability() {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(privileged_port(&a), Some(80));
        a[2..4].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(privileged_port(&a), None);
        a[2..4].copy_from_slice(&1024u16.to_be_bytes());
        assert_eq!(privileged_port(&a), None);
        a[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(privileged_port(&a), None);
        assert_eq!(privileged_port(&a[..3]), None);
        let me = std::process::id() as i32;
        let held = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_NET_BIND_SERVICE,
        )
        .unwrap();
        assert_eq!(may_bind_low(me), held);
        assert!(!may_bind_low(i32::MAX));
    }

    #[test]
    fn only_tcp_and_udp_are_relayed_and_twins_keep_their_options() {
        let tcp = socket(libc::AF_INET6, libc::SOCK_STREAM, 0);
        set_int_option(&tcp, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        set_int_option(&tcp, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1);
        let t = twin(&tcp).unwrap();
        assert_eq!(kind(&t).unwrap(), (libc::AF_INET6, libc::SOCK_STREAM));
        assert_eq!(
            int_option(&t, libc::IPPROTO_TCP, libc::TCP_NODELAY),
            Some(1)
        );
        assert_eq!(
            int_option(&t, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
            Some(1)
        );
        let udp = socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let u = twin(&udp).unwrap();
        bind_any(&u, libc::AF_INET).unwrap();
        assert!(super::super::local::local_address(&u).is_some());
        // Ping sockets and other protocols are refused, not relayed.
        let raw = socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        assert_eq!(kind(&raw), Err(Errno::EACCES));
    }

    #[test]
    fn the_close_on_exec_flag_is_read_from_fdinfo() {
        let s = socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let me = std::process::id() as i32;
        assert!(cloexec_of(me, s.as_raw_fd()));
        let plain = s.try_clone().unwrap();
        // SAFETY: F_SETFD on a descriptor we own.
        unsafe { libc::fcntl(plain.as_raw_fd(), libc::F_SETFD, 0) };
        assert!(!cloexec_of(me, plain.as_raw_fd()));
        assert!(!cloexec_of(me, 99_999));
    }
}
