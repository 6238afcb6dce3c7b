//! Local sockets of `sandbox`: unix connects and sends, and listening, decided by the guard.
//!
//! Threat: the sandbox sees the host's files (read-only) and, with network policies, shares
//! the host's network namespace. A unix socket on a read-only mount still accepts connects,
//! Landlock has no rule for pathname sockets, and a listening inet socket there is open to
//! the host's networks (an inbound channel no egress rule sees). Names are the workload's: a
//! path can be renamed or swapped for a symlink between a check and the kernel's lookup, and
//! the sockaddr or msghdr rewritten by another thread.
//!
//! So the kernel fence lets only the guard make unix connects and addressed unix sends
//! (cgroup unix hooks, Linux 6.7), and the guard makes them itself: it opens the path in the
//! caller's root and working directory, judges the file it opened (a socket on a filesystem
//! of the sandbox's own, not one the host has mounted, and writable by the caller), and
//! connects to that very file through `/proc/self/fd/N`. Abstract names are connected by the
//! guard where the sandbox has its own network namespace and refused where it shares the
//! host's. `listen` is made by the guard on its copy of the socket, for unix sockets with a
//! path and inet sockets bound to a loopback address; the fence refuses binds to other
//! addresses with a port. Every later read about the caller goes through its `/proc/TID`
//! directory, opened before the notification was checked valid.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

/// What the guard enforces on local sockets, beyond the network policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRules {
    /// Unix connects and addressed sends go through the guard (the fence's unix hooks hold
    /// everyone else).
    #[serde(default)]
    pub unix: bool,
    /// Abstract unix names may be connected (the sandbox has its own network namespace).
    #[serde(default)]
    pub abstract_names: bool,
    /// Only unix sockets and inet sockets bound to loopback may listen.
    #[serde(default)]
    pub loopback_listen: bool,
    /// A relayed container (a rootless engine's): every unix call is the guard's to make, and
    /// a path names a file of the container's own tree, wherever it is mounted from (as a
    /// container's connect does under root), looked up in its root and bound there too.
    #[serde(default)]
    pub own_files: bool,
}

/// Where a unix address leads.
pub enum Target {
    /// An abstract name or an unnamed address: the copied address itself.
    Address(Vec<u8>),
    /// A socket file, opened by the guard (`O_PATH`): connect through `/proc/self/fd/N`.
    File(OwnedFd),
}

impl Target {
    /// The address to hand the kernel; `File` targets must outlive the call.
    pub fn sockaddr(&self) -> Vec<u8> {
        match self {
            Target::Address(a) => a.clone(),
            Target::File(fd) => {
                unix_sockaddr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())
            }
        }
    }
}

/// A refusal: the errno the caller sees and, for the audit stream, why (none when the kernel
/// would have failed the call the same way).
#[derive(Debug)]
pub struct Refused {
    pub errno: Errno,
    pub why: Option<String>,
}

fn refused(why: impl Into<String>) -> Refused {
    Refused {
        errno: Errno::EACCES,
        why: Some(why.into()),
    }
}

fn failed(errno: Errno) -> Refused {
    Refused { errno, why: None }
}

pub fn unix_sockaddr(path: &[u8]) -> Vec<u8> {
    let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(path);
    a.push(0);
    a
}

/// Decide a unix address the caller passed, from the guard's copy `addr`. `proc` is the
/// caller thread's `/proc/TID` directory, opened before the notification was checked valid:
/// every later read goes through it, so a thread id reused meanwhile names nothing.
pub fn judge(rules: &LocalRules, proc: &std::fs::File, addr: &[u8]) -> Result<Target, Refused> {
    judge_in(rules, proc, None, addr)
}

/// `judge`, with the caller's root and working directory already taken (`CallerFs`), for a
/// lookup made as the caller (`as_caller`), who may not read them in `/proc`.
fn judge_in(
    rules: &LocalRules,
    proc: &std::fs::File,
    fs: Option<&CallerFs>,
    addr: &[u8],
) -> Result<Target, Refused> {
    if addr.len() < 2 || u16::from_ne_bytes([addr[0], addr[1]]) != libc::AF_UNIX as u16 {
        return Err(failed(Errno::EINVAL));
    }
    let path = &addr[2..];
    if path.is_empty() {
        return Ok(Target::Address(addr.to_vec()));
    }
    if path[0] == 0 {
        return if rules.abstract_names {
            Ok(Target::Address(addr.to_vec()))
        } else {
            Err(refused(
                "abstract unix sockets of the host's network namespace",
            ))
        };
    }
    let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&path[..end]);
    let file = match fs {
        Some(fs) => open_at(fs, Path::new(name)),
        None => open_in(proc, Path::new(name)),
    }
    .map_err(failed)?;
    check_file(&file, proc, !rules.own_files)?;
    Ok(Target::File(file))
}

/// `judge`, then `then` on the target, on one thread that has taken the caller's identity
/// (`as_caller`): the lookup has the caller's rights, and so does what `then` does.
pub fn judge_as_caller<T: Send>(
    rules: &LocalRules,
    proc: &std::fs::File,
    addr: &[u8],
    then: impl FnOnce(&Target) -> T + Send,
) -> Result<(Target, T), Refused> {
    let fs = caller_fs(proc).map_err(failed)?;
    as_caller(proc, || {
        Ok(judge_in(rules, proc, Some(&fs), addr).map(|t| {
            let r = then(&t);
            (t, r)
        }))
    })
    .unwrap_or_else(|e| Err(failed(e)))
}

/// Bind a unix socket of a relayed container (`LocalRules::own_files`) to the address the
/// caller passed (the guard's copy `addr`), as the caller (`as_caller`): a path is made in
/// the directory the caller would name, inside its root, with the kernel checking the caller's
/// rights and applying its umask; an abstract name is its own network namespace's.
pub fn bind_unix(
    rules: &LocalRules,
    proc: &std::fs::File,
    sock: &OwnedFd,
    addr: &[u8],
) -> Result<(), Refused> {
    use std::os::unix::ffi::OsStrExt;
    let path = addr.get(2..).ok_or(failed(Errno::EINVAL))?;
    if path.is_empty() || path[0] == 0 {
        if !rules.abstract_names && !path.is_empty() {
            return Err(refused(
                "abstract unix sockets of the host's network namespace",
            ));
        }
        return as_caller(proc, || bind(sock, addr)).map_err(failed);
    }
    let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
    let name = Path::new(std::ffi::OsStr::from_bytes(&path[..end]));
    let base = match name.file_name() {
        Some(b) if !name.as_os_str().as_bytes().ends_with(b"/") => b,
        _ => return Err(failed(Errno::EINVAL)),
    };
    let parent = match name.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fs = caller_fs(proc).map_err(failed)?;
    as_caller(proc, || {
        let dir = open_at(&fs, parent)?;
        let mut at = format!("/proc/thread-self/fd/{}/", dir.as_raw_fd()).into_bytes();
        at.extend_from_slice(base.as_bytes());
        if at.len() >= 108 {
            return Err(Errno::ENAMETOOLONG);
        }
        bind(sock, &unix_sockaddr(&at))
    })
    .map_err(failed)
}

/// A thread's identity from the kernel's account (`/proc/TID/status`): what `as_caller` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Real, effective, saved and filesystem ids, in that order.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_eff: u64,
    pub cap_prm: u64,
    pub umask: u32,
}

impl Identity {
    pub fn parse(status: &str) -> Option<Identity> {
        let field = |name: &str| status_field(status, name);
        let ids = |name: &str| -> Option<[u32; 4]> {
            let v: Vec<u32> = field(name)?.iter().filter_map(|x| x.parse().ok()).collect();
            v.try_into().ok()
        };
        let hex = |name: &str| u64::from_str_radix(field(name)?.first()?, 16).ok();
        Some(Identity {
            uids: ids("Uid:")?,
            gids: ids("Gid:")?,
            groups: field("Groups:")?
                .iter()
                .map(|g| g.parse().ok())
                .collect::<Option<Vec<u32>>>()?,
            cap_eff: hex("CapEff:")?,
            cap_prm: hex("CapPrm:")?,
            umask: u32::from_str_radix(field("Umask:")?.first()?, 8).ok()?,
        })
    }
}

/// Run `f` on a thread of its own that has taken the identity of the caller behind `proc`:
/// its ids, groups, capabilities (never more than the guard's) and umask. The kernel then
/// checks paths, makes files and records peer credentials (`SO_PEERCRED`) as for the caller,
/// which the guard, root of a rootless engine's user namespace, is not. The thread's
/// filesystem context is unshared first, so its umask is its own, and it ends with `f`:
/// nothing of the caller's identity stays in the guard.
pub fn as_caller<T: Send>(
    proc: &std::fs::File,
    f: impl FnOnce() -> Result<T, Errno> + Send,
) -> Result<T, Errno> {
    let who = proc_text(proc, "status")
        .ok()
        .and_then(|t| Identity::parse(&t))
        .ok_or(Errno::ESRCH)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                take_identity(&who)?;
                f()
            })
            .join()
            .unwrap_or(Err(Errno::EIO))
    })
}

/// Make the calling thread `who`. Each step is the raw system call, which the kernel applies
/// to this thread alone (libc's wrappers would apply them to every thread of the guard).
fn take_identity(who: &Identity) -> Result<(), Errno> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
    // SAFETY: umask only changes this thread's (now unshared) filesystem context.
    unsafe { libc::umask(who.umask & 0o777) };
    let [ruid, euid, suid, fsuid] = who.uids;
    let [rgid, egid, sgid, fsgid] = who.gids;
    // SAFETY: raw credential system calls on the calling thread, with plain integers and a
    // pointer to a slice that outlives the call.
    unsafe {
        let checked = |r: libc::c_long| if r < 0 { Err(Errno::last()) } else { Ok(()) };
        checked(libc::syscall(
            libc::SYS_setgroups,
            who.groups.len(),
            who.groups.as_ptr(),
        ))?;
        checked(libc::syscall(libc::SYS_setresgid, rgid, egid, sgid))?;
        checked(libc::syscall(libc::SYS_setresuid, ruid, euid, suid))?;
        libc::syscall(libc::SYS_setfsgid, fsgid);
        libc::syscall(libc::SYS_setfsuid, fsuid);
        if libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 != fsuid
            || libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 != fsgid
        {
            return Err(Errno::EPERM);
        }
    }
    // A caller that is uid 0 keeps what the guard holds through the id change: cut to the
    // caller's own sets (the kernel already cleared them for any other uid).
    let keep = |mask: u64| -> Result<caps::CapsHashSet, Errno> {
        let have = caps::read(None, caps::CapSet::Permitted).map_err(|_| Errno::EPERM)?;
        Ok(have
            .into_iter()
            .filter(|c| mask & c.bitmask() != 0)
            .collect())
    };
    let (eff, prm) = (keep(who.cap_eff)?, keep(who.cap_prm)?);
    caps::set(None, caps::CapSet::Inheritable, &caps::CapsHashSet::new())
        .and_then(|()| caps::set(None, caps::CapSet::Effective, &eff))
        .and_then(|()| caps::set(None, caps::CapSet::Permitted, &prm))
        .map_err(|_| Errno::EPERM)
}

/// Open an entry of a `/proc/TID` directory.
fn proc_entry(
    proc: &std::fs::File,
    name: &str,
    flags: nix::fcntl::OFlag,
) -> Result<OwnedFd, Errno> {
    let fd = nix::fcntl::openat(
        Some(proc.as_raw_fd()),
        name,
        flags | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn proc_text(proc: &std::fs::File, name: &str) -> Result<String, Errno> {
    use std::io::Read;
    let fd = proc_entry(proc, name, nix::fcntl::OFlag::O_RDONLY)?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .map_err(|_| Errno::ESRCH)?;
    Ok(text)
}

/// A thread's root directory and working directory, taken from `/proc/TID` by the guard.
struct CallerFs {
    root: OwnedFd,
    cwd: PathBuf,
}

/// Take the thread's root and working directory (reading them needs the right to trace it,
/// which the guard has and the caller's identity may not).
fn caller_fs(proc: &std::fs::File) -> Result<CallerFs, Errno> {
    let cwd = nix::fcntl::readlinkat(Some(proc.as_raw_fd()), "cwd").map_err(|_| Errno::ESRCH)?;
    let root = proc_entry(
        proc,
        "root",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
    )
    .map_err(|_| Errno::ESRCH)?;
    Ok(CallerFs {
        root,
        cwd: PathBuf::from(cwd),
    })
}

/// Open `path` as the thread would name it: relative to its working directory, inside its
/// root, every link followed without leaving that root.
fn open_in(proc: &std::fs::File, path: &Path) -> Result<OwnedFd, Errno> {
    open_at(&caller_fs(proc)?, path)
}

/// `open_in` from a root and working directory already taken; the lookup has the rights of
/// the calling thread.
fn open_at(fs: &CallerFs, path: &Path) -> Result<OwnedFd, Errno> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        fs.cwd.join(path)
    };
    let root = fs.root.try_clone().map_err(|_| Errno::EMFILE)?;
    let root = pathrs::Root::from_fd(root);
    let handle = root.resolve(&full).map_err(|e| match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(n)) => Errno::from_raw(n),
        _ => Errno::ENOENT,
    })?;
    handle
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)))
}

/// The file must be a socket (else the kernel's answer), on a filesystem of the sandbox's
/// own (see `private_filesystem`), and writable by the caller's credentials (the guard
/// itself is root).
fn check_file(file: &OwnedFd, proc: &std::fs::File, private: bool) -> Result<(), Refused> {
    let st = nix::sys::stat::fstat(file.as_raw_fd()).map_err(failed)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(failed(Errno::ECONNREFUSED));
    }
    if private && !private_filesystem(proc, st.st_dev).map_err(failed)? {
        return Err(refused(
            "a unix socket on a filesystem the sandbox shares with the host",
        ));
    }
    let creds = proc_text(proc, "status")
        .ok()
        .and_then(|t| Creds::parse(&t))
        .ok_or_else(|| failed(Errno::ESRCH))?;
    if !creds.may_write(st.st_uid, st.st_gid, st.st_mode) {
        return Err(failed(Errno::EACCES));
    }
    Ok(())
}

/// Whether device `dev` is a filesystem mounted in the caller's mount namespace and in none
/// of the guard's (the host's): the sandbox's fresh tmpfs. Any filesystem the host has mounted
/// (its root, a working directory or `read_write` path bound in, a mount that appears later)
/// may hold a host daemon's socket, whatever its permissions say; and a device number the
/// caller's table does not list (btrfs subvolumes report their own) is refused too.
///
/// The caller's table is read first: a host mount that propagates in is in the host's table
/// before it is in the caller's, so it cannot slip between the two reads.
fn private_filesystem(proc: &std::fs::File, dev: u64) -> Result<bool, Errno> {
    let theirs = proc_text(proc, "mountinfo")?;
    if !mount_devices(&theirs).any(|d| d == dev) {
        return Ok(false);
    }
    let ours = std::fs::read_to_string("/proc/self/mountinfo").map_err(|_| Errno::EIO)?;
    let shared = mount_devices(&ours).any(|d| d == dev);
    Ok(!shared)
}

/// The device numbers (`major:minor`, third field) of a mountinfo table.
fn mount_devices(table: &str) -> impl Iterator<Item = u64> + '_ {
    table.lines().filter_map(|line| {
        let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
        Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
    })
}

/// The words of the `/proc/TID/status` line `name` ("Uid:", "Groups:", …).
fn status_field<'a>(status: &'a str, name: &str) -> Option<Vec<&'a str>> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.split_whitespace().collect())
}

/// capabilities(7): bypass file write, read and execute permission checks.
const CAP_DAC_OVERRIDE: u32 = 1;

/// A thread's filesystem credentials, from the kernel's own account (/proc/TID/status).
struct Creds {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
    dac_override: bool,
}

impl Creds {
    fn parse(text: &str) -> Option<Creds> {
        let field = |name: &str| status_field(text, name);
        let fourth = |v: Vec<&str>| v.get(3).and_then(|s| s.parse().ok());
        let cap_eff = field("CapEff:")?
            .first()
            .and_then(|h| u64::from_str_radix(h, 16).ok())?;
        Some(Creds {
            fsuid: fourth(field("Uid:")?)?,
            fsgid: fourth(field("Gid:")?)?,
            groups: field("Groups:")?
                .iter()
                .filter_map(|g| g.parse().ok())
                .collect(),
            dac_override: cap_eff & (1 << CAP_DAC_OVERRIDE) != 0,
        })
    }

    fn may_write(&self, uid: u32, gid: u32, mode: u32) -> bool {
        if self.dac_override {
            return true;
        }
        let bit = if uid == self.fsuid {
            0o200
        } else if gid == self.fsgid || self.groups.contains(&gid) {
            0o020
        } else {
            0o002
        };
        mode & bit != 0
    }
}

/// Whether a unix address (a `getsockname` result) is an abstract name, autobound ones
/// included.
pub fn is_abstract(addr: &[u8]) -> bool {
    addr.len() > 2 && addr[2] == 0
}

/// Whether a bound inet address (a `getsockname` result) is a loopback one.
pub fn loopback_bound(addr: &[u8]) -> bool {
    let family = addr
        .get(..2)
        .map(|f| u16::from_ne_bytes([f[0], f[1]]) as i32);
    match family {
        Some(libc::AF_INET) if addr.len() >= 8 => addr[4] == 127 && addr[2..4] != [0, 0],
        Some(libc::AF_INET6) if addr.len() >= 24 => {
            let ip: [u8; 16] = addr[8..24].try_into().expect("16 bytes");
            let ip = std::net::Ipv6Addr::from(ip);
            let port_set = addr[2..4] != [0, 0];
            port_set && (ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
        }
        _ => false,
    }
}

/// The local address of a socket.
pub fn local_address(sock: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is ours and `len` is its size.
    let r = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::sockaddr,
            &mut len,
        )
    };
    (r == 0).then(|| buf[..(len as usize).min(buf.len())].to_vec())
}

/// `listen` on the guard's copy of the caller's socket: the same socket, so the same effect.
/// The resolver's UDP and TCP sockets on `addr`, port 53, in the caller's network namespace:
/// the guard's when it can enter the container's, the init's (handed over) when it cannot.
pub fn resolver_sockets(addr: std::net::Ipv4Addr) -> Result<(OwnedFd, OwnedFd), Errno> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    let bound = |ty: SockType| -> Result<OwnedFd, Errno> {
        let fd = socket::socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)?;
        // The loopback interface may come up after `create` (engines configure it in hooks).
        let _ = socket::setsockopt(&fd, sockopt::IpFreebind, &true);
        let _ = socket::setsockopt(&fd, sockopt::ReuseAddr, &true);
        socket::bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(std::net::SocketAddrV4::new(addr, 53)),
        )?;
        if ty == SockType::Stream {
            socket::listen(&fd, socket::Backlog::new(64).expect("valid backlog"))?;
        }
        Ok(fd)
    };
    Ok((bound(SockType::Datagram)?, bound(SockType::Stream)?))
}

/// `bind` on the guard's copy of a socket, to an address read from the caller once.
pub fn bind(sock: &OwnedFd, addr: &[u8]) -> Result<(), Errno> {
    // SAFETY: `addr` is a buffer we own, of the length given; the descriptor is ours.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            addr.as_ptr() as *const libc::sockaddr,
            addr.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

pub fn listen(sock: &OwnedFd, backlog: i32) -> Result<(), Errno> {
    // SAFETY: a plain syscall on a descriptor we own.
    let r = unsafe { libc::listen(sock.as_raw_fd(), backlog) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Bring the loopback interface of the network namespace of `pid` up (a sandbox with a
/// network namespace of its own starts with it down).
pub fn loopback_up(pid: i32) -> std::io::Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
        set_lo_up()
    })
    .join()
    .map_err(|_| std::io::Error::other("loopback thread panicked"))?
}

/// `ip link set lo up` in the calling thread's network namespace.
pub fn set_lo_up() -> std::io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: an all-zero ifreq is valid; the name is "lo" and NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_identity_is_read_from_its_status() {
        let status = "Name:\tsh\nUmask:\t0027\nUid:\t1000\t1001\t1002\t1003\n\
                      Gid:\t50\t51\t52\t53\nGroups:\t4 24 \nCapInh:\t0000000000000000\n\
                      CapPrm:\t00000000800405fb\nCapEff:\t0000000000000400\n";
        let who = Identity::parse(status).unwrap();
        assert_eq!(who.uids, [1000, 1001, 1002, 1003]);
        assert_eq!(who.gids, [50, 51, 52, 53]);
        assert_eq!(who.groups, vec![4, 24]);
        assert_eq!((who.cap_prm, who.cap_eff), (0x800405fb, 0x400));
        assert_eq!(who.umask, 0o027);
        // A field missing or malformed: no identity, so no call is made as anyone.
        assert!(Identity::parse(&status.replace("Umask:\t0027\n", "")).is_none());
        assert!(Identity::parse(&status.replace("Groups:\t4 24", "Groups:\t4 x")).is_none());
        assert!(Identity::parse("Uid:\t1\t2\t3\n").is_none());
    }

    #[test]
    fn loopback_addresses_are_told_from_others() {
        let v4 = |ip: [u8; 4], port: u16| {
            let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
            a.extend(port.to_be_bytes());
            a.extend(ip);
            a.extend([0u8; 8]);
            a
        };
        assert!(loopback_bound(&v4([127, 0, 0, 1], 80)));
        assert!(loopback_bound(&v4([127, 9, 9, 9], 80)));
        assert!(!loopback_bound(&v4([0, 0, 0, 0], 80)));
        assert!(!loopback_bound(&v4([10, 0, 0, 1], 80)));
        let v6 = |ip: std::net::Ipv6Addr| {
            let mut a = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
            a.extend(80u16.to_be_bytes());
            a.extend([0u8; 4]);
            a.extend(ip.octets());
            a.extend([0u8; 4]);
            a
        };
        assert!(loopback_bound(&v6(std::net::Ipv6Addr::LOCALHOST)));
        assert!(loopback_bound(&v6("::ffff:127.0.0.1".parse().unwrap())));
        assert!(!loopback_bound(&v6(std::net::Ipv6Addr::UNSPECIFIED)));
    }

    #[test]
    fn credentials_decide_like_the_kernel() {
        let c = Creds {
            fsuid: 1000,
            fsgid: 1000,
            groups: vec![20],
            dac_override: false,
        };
        assert!(c.may_write(1000, 0, 0o600));
        assert!(!c.may_write(0, 0, 0o660));
        assert!(c.may_write(0, 20, 0o660));
        assert!(c.may_write(0, 0, 0o666));
        assert!(
            !c.may_write(1000, 1000, 0o466),
            "owner bits decide for the owner"
        );
    }

    #[test]
    fn status_gives_filesystem_ids_groups_and_dac_override() {
        let status = "Name:\tsh\nUid:\t0\t0\t0\t1000\nGid:\t5\t5\t5\t1001\n\
                      Groups:\t20 30 \nCapEff:\t0000000000000002\n";
        let c = Creds::parse(status).unwrap();
        assert_eq!(
            (c.fsuid, c.fsgid, c.groups.clone()),
            (1000, 1001, vec![20, 30])
        );
        assert!(c.dac_override);
        assert!(
            Creds::parse("Uid:\t0\n").is_none(),
            "a partial status decides nothing"
        );
    }

    #[test]
    fn mount_devices_are_read_from_the_third_field() {
        let table = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                     90 22 0:52 / /tmp rw - tmpfs tmpfs rw\nbroken line\n";
        let devs: Vec<u64> = mount_devices(table).collect();
        assert_eq!(devs, vec![libc::makedev(8, 1), libc::makedev(0, 52)]);
    }

    #[test]
    fn abstract_names_are_told_from_paths() {
        assert!(is_abstract(&[1, 0, 0, b'x']));
        assert!(!is_abstract(&[1, 0, b'/', b'x', 0]));
        assert!(!is_abstract(&[1, 0]));
    }
}
