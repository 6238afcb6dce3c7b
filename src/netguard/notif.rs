//! seccomp user-notification primitives the guard's threads share: receive, answer, check that
//! a notification is still pending, and take a descriptor of the caller.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// The answer to one notification: a return value, an errno, or "continue in the kernel".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Value(i64),
    Error(Errno),
    Continue,
}

impl Reply {
    pub fn of(r: Result<usize, Errno>) -> Reply {
        match r {
            Ok(n) => Reply::Value(n as i64),
            Err(e) => Reply::Error(e),
        }
    }
}

/// Answer notification `id`. ENOENT (the caller was interrupted or died) needs nothing.
pub fn respond(listener: &OwnedFd, id: u64, reply: Reply) {
    // SAFETY: an all-zero response is valid; fields are set below.
    let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
    resp.id = id;
    match reply {
        Reply::Value(v) => resp.val = v,
        Reply::Error(e) => resp.error = -(e as i32),
        Reply::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    }
    // SAFETY: the ioctl reads the response struct we pass by pointer.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut libc::seccomp_notif_resp,
        );
    }
}

/// Whether notification `id` still waits for an answer (its caller was not interrupted).
pub fn valid(listener: &OwnedFd, id: u64) -> bool {
    // SAFETY: the ioctl reads a u64 id we pass by pointer.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        ) == 0
    }
}

/// Receive one notification. `Err(EINTR | ENOENT)`: try again.
pub fn recv(listener: &OwnedFd) -> Result<libc::seccomp_notif, Errno> {
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
        return Err(Errno::last());
    }
    Ok(req)
}

/// The descriptor `fd` of the process (or thread) behind `pidfd`.
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> Result<OwnedFd, Errno> {
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

/// Take the listener `fd` of process `pid`.
pub fn take_listener(pid: i32, fd: i32) -> Result<OwnedFd, Errno> {
    let pidfd = crate::helper::pidfd_open_flags(pid, 0)?;
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

/// A pidfd for the notifying thread: PIDFD_THREAD (Linux 6.9) where the kernel has it, else
/// (EINVAL) one for its thread group.
pub fn pidfd_of_thread(tid: i32) -> Result<OwnedFd, Errno> {
    Ok(ThreadFds::open(tid)?.pidfd)
}

/// The way to the descriptors of a notifying thread.
pub struct ThreadFds {
    pub pidfd: OwnedFd,
    /// Without PIDFD_THREAD, the thread group leader the pidfd names instead of `tid`.
    leader: Option<i32>,
    tid: i32,
}

impl ThreadFds {
    pub fn open(tid: i32) -> Result<ThreadFds, Errno> {
        // PIDFD_THREAD shares O_EXCL's value; a kernel without it answers EINVAL.
        match crate::helper::pidfd_open_flags(tid, libc::O_EXCL as u32) {
            Ok(pidfd) => Ok(ThreadFds {
                pidfd,
                leader: None,
                tid,
            }),
            Err(Errno::EINVAL) => {
                let tgid = super::capture::tgid_of(tid).ok_or(Errno::ESRCH)?;
                let pidfd = crate::helper::pidfd_open_flags(tgid, 0)?;
                Ok(ThreadFds {
                    pidfd,
                    leader: (tgid != tid).then_some(tgid),
                    tid,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The guard's copy of the thread's descriptor `fd`. Without PIDFD_THREAD the copy comes
    /// from the leader's descriptor table; a thread that unshared its own
    /// (`unshare(CLONE_FILES)`) would have its call judged on one file and, where the call
    /// continues in the kernel, run on another. So the two tables must be one, compared after
    /// the copy: tables only ever split, never join, so "one table now" means the copy is the
    /// thread's file. Otherwise (or when the kernel cannot compare) EPERM.
    pub fn get(&self, fd: i32) -> Result<OwnedFd, Errno> {
        let file = pidfd_getfd(&self.pidfd, fd)?;
        if let Some(leader) = self.leader {
            if !same_fd_table(self.tid, leader) {
                return Err(Errno::EPERM);
            }
        }
        Ok(file)
    }
}

/// Do tasks `a` and `b` share one descriptor table (`kcmp(KCMP_FILES)`)?
fn same_fd_table(a: i32, b: i32) -> bool {
    const KCMP_FILES: libc::c_long = 2;
    // SAFETY: kcmp compares two tasks' kernel objects and writes nothing.
    let rc = unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_FILES, 0, 0) };
    rc == 0
}
