//! The guard's side of a notified socket call: read the caller's arguments out of its memory
//! once, and perform the call on the caller's socket with that copy. What the caller's threads
//! write to their memory afterwards changes nothing.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

use super::sockaddr::MAX_LEN;

/// The most payload one notified send (or one `sendmmsg` call, all messages together)
/// carries through the guard; more is a partial send, as the kernel may do.
pub const MAX_DATA: usize = 1 << 20;
/// The kernel's UIO_MAXIOV.
const MAX_IOV: u64 = 1024;
/// The most control data one message may carry (the kernel's default optmem limit is 20 KiB;
/// inet control messages are a few bytes each).
pub const MAX_CONTROL: usize = 4096;
/// Messages of one `sendmmsg` the guard reads (the kernel's own limit).
pub const MAX_MMSG: usize = 1024;

/// The caller's memory.
pub struct Mem(pub Pid);

impl Mem {
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        if len == 0 {
            return Ok(buf);
        }
        let n = process_vm_readv(
            self.0,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &[RemoteIoVec {
                base: addr as usize,
                len,
            }],
        )
        .map_err(|_| Errno::EFAULT)?;
        if n != len {
            return Err(Errno::EFAULT);
        }
        Ok(buf)
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        process_vm_writev(
            self.0,
            &[std::io::IoSlice::new(data)],
            &[RemoteIoVec {
                base: addr as usize,
                len: data.len(),
            }],
        )
        .map(drop)
        .map_err(|_| Errno::EFAULT)
    }

    pub fn u64_at(&self, addr: u64) -> Result<u64, Errno> {
        let b = self.read(addr, 8)?;
        Ok(u64::from_ne_bytes(b.try_into().expect("8 bytes")))
    }
}

/// A sockaddr argument: at most what the kernel would read.
pub fn read_sockaddr(mem: &Mem, addr: u64, len: u64) -> Result<Vec<u8>, Errno> {
    if len as usize > MAX_LEN {
        return Err(Errno::EINVAL);
    }
    mem.read(addr, len as usize)
}

/// What the guard keeps of a `struct msghdr` when it decides: the destination and control
/// data (copied: the decision is about them), and where the payload is (read when sent).
#[derive(Debug, Default, Clone)]
pub struct Header {
    pub name: Option<Vec<u8>>,
    pub control: Vec<u8>,
    pub iov: u64,
    pub iovlen: u64,
}

/// x86_64 `struct msghdr`: name, namelen(+pad), iov, iovlen, control, controllen, flags(+pad).
pub const MSGHDR_LEN: usize = 56;
/// `struct mmsghdr`: a msghdr and the `msg_len` the kernel fills in.
pub const MMSGHDR_LEN: usize = 64;

pub fn read_header(mem: &Mem, addr: u64) -> Result<Header, Errno> {
    let h = mem.read(addr, MSGHDR_LEN)?;
    let word = |o: usize| u64::from_ne_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    let name_ptr = word(0);
    let name_len = u32::from_ne_bytes(h[8..12].try_into().expect("4 bytes")) as u64;
    let (iov, iovlen) = (word(16), word(24));
    let (control, controllen) = (word(32), word(40));
    let name = if name_ptr == 0 || name_len == 0 {
        None
    } else {
        Some(read_sockaddr(mem, name_ptr, name_len)?)
    };
    if iovlen > MAX_IOV {
        return Err(Errno::EMSGSIZE);
    }
    if controllen as usize > MAX_CONTROL {
        return Err(Errno::ENOBUFS);
    }
    let control = if control == 0 {
        Vec::new()
    } else {
        mem.read(control, controllen as usize)?
    };
    Ok(Header {
        name,
        control,
        iov,
        iovlen,
    })
}

/// The payload an iovec array describes, at most `room` bytes, read now.
pub fn read_iov(mem: &Mem, iov: u64, iovlen: u64, room: usize) -> Result<Vec<u8>, Errno> {
    if iovlen > MAX_IOV {
        return Err(Errno::EMSGSIZE);
    }
    let vec = mem.read(iov, iovlen as usize * 16)?;
    let mut data = Vec::new();
    for v in vec.chunks_exact(16) {
        let base = u64::from_ne_bytes(v[..8].try_into().expect("8 bytes"));
        let len = u64::from_ne_bytes(v[8..].try_into().expect("8 bytes")) as usize;
        let left = room - data.len();
        if left == 0 {
            break;
        }
        data.extend(mem.read(base, len.min(left))?);
    }
    Ok(data)
}

/// What `routing_option` calls control data whose lengths do not add up.
pub const MALFORMED: &str = "a malformed control message";

/// IPv6 routing headers and IPv4 source-route options in control data: they send
/// an approved packet through hops no policy named. Malformed control data is refused too.
pub fn routing_option(control: &[u8]) -> Option<&'static str> {
    const HDR: usize = 16;
    let mut at = 0;
    while at + HDR <= control.len() {
        let len = u64::from_ne_bytes(control[at..at + 8].try_into().expect("8 bytes")) as usize;
        let level = i32::from_ne_bytes(control[at + 8..at + 12].try_into().expect("4 bytes"));
        let ty = i32::from_ne_bytes(control[at + 12..at + 16].try_into().expect("4 bytes")) as u32;
        let found = match (level, ty) {
            (libc::IPPROTO_IP, t) if t == libc::IP_OPTIONS as u32 => Some("IP_OPTIONS"),
            (libc::IPPROTO_IP, t) if t == libc::IP_RETOPTS as u32 => Some("IP_RETOPTS"),
            (libc::IPPROTO_IPV6, t) if t == libc::IPV6_RTHDR as u32 => Some("IPV6_RTHDR"),
            (libc::IPPROTO_IPV6, crate::confine::sockets::IPV6_2292RTHDR) => Some("IPV6_2292RTHDR"),
            (libc::IPPROTO_IPV6, crate::confine::sockets::IPV6_2292PKTOPTIONS) => {
                Some("IPV6_2292PKTOPTIONS")
            }
            _ => None,
        };
        if found.is_some() {
            return found;
        }
        // A length the caller chose: one past the data (or wrapping when rounded up) would
        // otherwise stop the walk, or never end it. The kernel refuses such messages too.
        match len.checked_add(7).map(|l| l & !7) {
            Some(step) if len >= HDR && len <= control.len() - at => at += step,
            _ => return Some(MALFORMED),
        }
    }
    None
}

fn rc(r: isize) -> Result<usize, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as usize)
    }
}

pub fn connect(sock: &OwnedFd, addr: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `addr` is a buffer we own, of the length given.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            addr.as_ptr() as *const libc::sockaddr,
            addr.len() as libc::socklen_t,
        )
    };
    rc(r as isize)
}

pub fn sendto(sock: &OwnedFd, data: &[u8], flags: i32, addr: &[u8]) -> Result<usize, Errno> {
    // SAFETY: both buffers are ours and outlive the call.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            data.as_ptr() as *const libc::c_void,
            data.len(),
            flags,
            addr.as_ptr() as *const libc::sockaddr,
            addr.len() as libc::socklen_t,
        )
    };
    rc(r)
}

pub fn sendmsg(
    sock: &OwnedFd,
    name: Option<&[u8]>,
    data: &[u8],
    control: &[u8],
    flags: i32,
) -> Result<usize, Errno> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the fields set below point at buffers we own.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(n) = name {
        h.msg_name = n.as_ptr() as *mut libc::c_void;
        h.msg_namelen = n.len() as libc::socklen_t;
    }
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    if !control.is_empty() {
        h.msg_control = control.as_ptr() as *mut libc::c_void;
        h.msg_controllen = control.len();
    }
    // SAFETY: `h` and everything it points at live until the call returns.
    let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &h, flags) };
    rc(r)
}

/// A connect on a blocking socket, made without blocking the guard: the socket's file (whose
/// status flags are `fl`, from `file_flags`) is non-blocking for this one call. `Ok(None)`:
/// the handshake is under way; `connect_result` tells when it ends. Most connects (loopback,
/// a listener on the same host, refusals) end here, at the cost of two fcntl calls instead
/// of a thread.
pub fn connect_nowait(sock: &OwnedFd, addr: &[u8], fl: i32) -> Result<Option<usize>, Errno> {
    let fd = sock.as_raw_fd();
    // SAFETY: F_SETFL on a descriptor we hold.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(Errno::last());
    }
    let r = connect(sock, addr);
    // SAFETY: as above; the caller's flags come back whatever the connect did.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
    match r {
        Ok(n) => Ok(Some(n)),
        Err(Errno::EINPROGRESS) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The outcome of a connect under way, waiting up to `timeout_ms`: `None` while it lasts.
pub fn connect_result(sock: &OwnedFd, timeout_ms: u16) -> Option<Result<usize, Errno>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::from(timeout_ms)) {
        Ok(0) | Err(Errno::EINTR) => return None,
        Err(e) => return Some(Err(e)),
        Ok(_) => {}
    }
    match nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::SocketError) {
        Ok(0) => Some(Ok(0)),
        Ok(e) => Some(Err(Errno::from_raw(e))),
        Err(e) => Some(Err(e)),
    }
}

/// The status flags of the socket's file (`F_GETFL`); `None` if they cannot be read.
pub fn file_flags(sock: &OwnedFd) -> Option<i32> {
    // SAFETY: F_GETFL on a descriptor we own.
    let fl = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_GETFL) };
    (fl >= 0).then_some(fl)
}

/// Whether a call with `flags` on a file with status flags `fl` may wait (blocking socket,
/// no MSG_DONTWAIT): such calls must not hold up the guard's other callers.
pub fn may_block(fl: i32, flags: i32) -> bool {
    fl & libc::O_NONBLOCK == 0 && flags & libc::MSG_DONTWAIT == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, ty: i32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + data.len()) as u64).to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % 8 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn routing_options_in_control_data_are_found() {
        let ttl = cmsg(libc::IPPROTO_IP, libc::IP_TTL, &[64, 0, 0, 0]);
        assert_eq!(routing_option(&ttl), None);
        let rthdr = cmsg(libc::IPPROTO_IPV6, libc::IPV6_RTHDR, &[0; 8]);
        assert_eq!(
            routing_option(&[ttl.clone(), rthdr].concat()),
            Some("IPV6_RTHDR")
        );
        let opts = cmsg(libc::IPPROTO_IP, libc::IP_RETOPTS, &[0x83, 3, 4]);
        assert_eq!(routing_option(&opts), Some("IP_RETOPTS"));
        assert_eq!(routing_option(&[1, 2, 3]), None);
        // Lengths the caller chose: past the data, short, or wrapping when rounded up.
        for len in [u64::MAX - 6, u64::MAX, 4096, 8] {
            let mut bad = ttl.clone();
            bad[..8].copy_from_slice(&len.to_ne_bytes());
            assert_eq!(routing_option(&bad), Some(MALFORMED), "{len}");
        }
    }
}
