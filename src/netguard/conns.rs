//! Connections the guard made, by the policy that allowed them, so that revoking a policy
//! (`policy update --remove`) ends them (SPEC §7.7).
//!
//! Threat: an agent whose access is revoked keeps a long-lived stream (a websocket, a
//! tunnel) open and goes on using it. The guard holds no descriptor of its own for a
//! connection — that would keep the socket alive after the workload closed it — but the
//! socket's cookie (unique for the system's uptime) and inode. On revocation it looks for
//! those inodes among the descriptors of the container's processes, takes each with
//! `pidfd_getfd`, checks the cookie, and shuts the socket down.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use super::notif::pidfd_getfd;

/// Connections remembered at once; the oldest are forgotten first (and can no longer be
/// cut by a revocation).
pub const MAX_CONNECTIONS: usize = 16_384;

#[derive(Default)]
pub struct Connections {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// socket inode → (cookie, policy key)
    by_inode: HashMap<u64, (u64, String)>,
    order: VecDeque<u64>,
}

/// The socket's cookie and inode.
pub fn identify(sock: &OwnedFd) -> Option<(u64, u64)> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: SO_COOKIE writes one u64 into `cookie`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    let st = nix::sys::stat::fstat(sock.as_raw_fd()).ok()?;
    (r == 0).then_some((cookie, st.st_ino))
}

impl Connections {
    /// Remember that `policy` allowed the connection of `sock`.
    pub fn add(&self, sock: &OwnedFd, policy: &str) {
        let Some((cookie, ino)) = identify(sock) else {
            return;
        };
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.by_inode
            .insert(ino, (cookie, policy.to_string()))
            .is_none()
        {
            m.order.push_back(ino);
        }
        while m.order.len() > MAX_CONNECTIONS {
            if let Some(old) = m.order.pop_front() {
                m.by_inode.remove(&old);
            }
        }
    }

    /// Forget and return the connections `policies` allowed: inode → cookie.
    fn take(&self, policies: &HashSet<String>) -> HashMap<u64, u64> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let gone: HashMap<u64, u64> = m
            .by_inode
            .iter()
            .filter(|(_, (_, p))| policies.contains(p))
            .map(|(ino, (cookie, _))| (*ino, *cookie))
            .collect();
        for ino in gone.keys() {
            m.by_inode.remove(ino);
        }
        m.order.retain(|i| !gone.contains_key(i));
        gone
    }

    /// Shut down every connection `policies` allowed that a process listed in `procs` (a
    /// `cgroup.procs` file) still holds. Returns how many were cut.
    pub fn revoke(&self, policies: &HashSet<String>, procs: &Path) -> usize {
        if policies.is_empty() {
            return 0;
        }
        let gone = self.take(policies);
        if gone.is_empty() {
            return 0;
        }
        let pids: Vec<i32> = std::fs::read_to_string(procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let mut cut = 0;
        for pid in pids {
            let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            let Ok(pidfd) = crate::helper::pidfd_open_flags(pid, 0) else {
                continue;
            };
            for e in rd.filter_map(|e| e.ok()) {
                let Ok(target) = std::fs::read_link(e.path()) else {
                    continue;
                };
                let Some(ino) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
                else {
                    continue;
                };
                let Some(cookie) = gone.get(&ino) else {
                    continue;
                };
                let Some(fd) = e.file_name().to_str().and_then(|f| f.parse::<i32>().ok()) else {
                    continue;
                };
                let Ok(sock) = pidfd_getfd(&pidfd, fd) else {
                    continue;
                };
                if identify(&sock).is_some_and(|(c, _)| c == *cookie) {
                    // SAFETY: shutdown on a descriptor we hold.
                    unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
                    cut += 1;
                }
            }
        }
        cut
    }
}
