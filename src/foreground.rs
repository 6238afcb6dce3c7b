//! Waiting for a foreground process (`run`, `exec` without `--detach`, `sandbox`).
//!
//! libcontainer clones the container process with CLONE_PARENT and no exit signal: the runtime
//! gets no SIGCHLD and a plain waitpid does not see it. So the wait is a poll on a pidfd (which
//! works for any child, however it was cloned, and even if it already exited) next to a signalfd
//! for the signals to forward; the status is then reaped with __WALL. Nothing here can miss an
//! exit that happened before the wait began.

use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::helper::pidfd_open;

#[derive(Debug, thiserror::Error)]
pub enum ForegroundError {
    #[error("signal setup: {0}")]
    Signals(nix::Error),
    #[error("waiting for pid {pid}: {source}")]
    Wait { pid: i32, source: nix::Error },
    #[error(transparent)]
    Pidfd(#[from] crate::helper::HelperError),
}

/// The signals a foreground runtime forwards to the container process, as runc does.
pub fn forwarded_signals() -> SigSet {
    let mut set = SigSet::all();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGWINCH,
        Signal::SIGURG,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGKILL,
        Signal::SIGSTOP,
    ] {
        set.remove(s);
    }
    set
}

/// Block the forwarded signals in the runtime process. Call before the container process
/// exists, so that no signal is lost; the in-container stage unblocks them before execve.
pub fn block_forwarded_signals() -> Result<(), ForegroundError> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded_signals()), None)
        .map_err(ForegroundError::Signals)
}

/// Exit code as a shell reports it: the code, or 128+N for a death by signal N.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Forward signals to `pid` until it exits; returns its exit code.
pub fn wait_forwarding(pid: Pid) -> Result<i32, ForegroundError> {
    let pidfd = pidfd_open(pid.as_raw())?;
    let sfd = SignalFd::with_flags(
        &forwarded_signals(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(ForegroundError::Signals)?;
    loop {
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(ForegroundError::Wait {
                    pid: pid.as_raw(),
                    source,
                })
            }
            Ok(_) => {}
        }
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        let signalled = fds[1]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if signalled {
            while let Ok(Some(info)) = sfd.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    let _ = kill(pid, sig);
                }
            }
        }
        if exited {
            return reap(pid);
        }
    }
}

fn reap(pid: Pid) -> Result<i32, ForegroundError> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    return Ok(code);
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(ForegroundError::Wait {
                    pid: pid.as_raw(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_death_is_128_plus_n() {
        let p = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some(137)
        );
    }

    #[test]
    fn forwarded_set_excludes_sigchld_and_faults() {
        let s = forwarded_signals();
        assert!(s.contains(Signal::SIGTERM) && s.contains(Signal::SIGINT));
        assert!(!s.contains(Signal::SIGCHLD) && !s.contains(Signal::SIGSEGV));
    }
}
