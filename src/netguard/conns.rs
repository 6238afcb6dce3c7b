//! Connections the guard made, by the policy that allowed them, so that revoking a policy
//! (`policy update --remove`) ends them.
//!
//! Threat: an agent whose access is revoked keeps a long-lived stream (a websocket, a
//! tunnel) open and goes on using it. The guard holds no descriptor of its own for a
//! connection — that would keep the socket alive after the workload closed it — only the
//! socket's cookie (unique for the system's uptime; one `getsockopt` on the connect path). On
//! revocation it takes each socket of the container's processes with `pidfd_getfd`, and shuts
//! down those whose cookie a revoked policy allowed.

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
    /// socket cookie → policy key
    by_cookie: HashMap<u64, String>,
    order: VecDeque<u64>,
}

/// The socket's cookie.
pub fn cookie(sock: &OwnedFd) -> Option<u64> {
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
    (r == 0).then_some(cookie)
}

impl Connections {
    /// Remember that `policy` allowed the connection of `sock`.
    pub fn add(&self, sock: &OwnedFd, policy: &str) {
        let Some(c) = cookie(sock) else {
            return;
        };
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.by_cookie.insert(c, policy.to_string()).is_none() {
            m.order.push_back(c);
        }
        while m.order.len() > MAX_CONNECTIONS {
            if let Some(old) = m.order.pop_front() {
                m.by_cookie.remove(&old);
            }
        }
    }

    /// Forget and return the cookies of the connections `policies` allowed.
    fn take(&self, policies: &HashSet<String>) -> HashSet<u64> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let gone: HashSet<u64> = m
            .by_cookie
            .iter()
            .filter(|(_, p)| policies.contains(*p))
            .map(|(c, _)| *c)
            .collect();
        m.by_cookie.retain(|c, _| !gone.contains(c));
        m.order.retain(|c| !gone.contains(c));
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
                let is_socket = std::fs::read_link(e.path())
                    .is_ok_and(|t| t.to_string_lossy().starts_with("socket:["));
                let Some(fd) = e.file_name().to_str().and_then(|f| f.parse::<i32>().ok()) else {
                    continue;
                };
                if !is_socket {
                    continue;
                }
                let Ok(sock) = pidfd_getfd(&pidfd, fd) else {
                    continue;
                };
                if cookie(&sock).is_some_and(|c| gone.contains(&c)) {
                    // SAFETY: shutdown on a descriptor we hold.
                    unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
                    cut += 1;
                }
            }
        }
        cut
    }
}
