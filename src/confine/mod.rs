//! The in-container stage: the last thing that runs in the init process and in every exec'd
//! process before `execve`, after libcontainer has entered namespaces, pivoted the root and
//! dropped capabilities.
//!
//! Threat: a process of the container must not start outside the container's confinement.
//! libcontainer 0.7 gives exec'd (tenant) processes no seccomp filter, so the container's
//! profile is applied here, for init and exec'd processes alike, with no_new_privs set first
//! (which also lets an unprivileged process install the filter). Later policy stages (Landlock,
//! network notification filter) plug in here, before seccomp, because the profile may deny the
//! syscalls they need.

pub mod bpf;
pub mod cbpf;
pub mod landlock;
pub mod prepare;
pub mod seccomp;
pub mod sockets;

use std::os::fd::BorrowedFd;

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};

use crate::netguard::filter::HandOverError;
use crate::plan::{LoadedPlan, Program};

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    NoNewPrivs(nix::Error),
    #[error("loading the container's seccomp profile: {0}")]
    Seccomp(String),
    #[error(transparent)]
    Landlock(#[from] landlock::LandlockError),
    #[error("resetting the signal mask: {0}")]
    Signals(nix::Error),
    #[error(transparent)]
    NetGuard(#[from] HandOverError),
}

/// Undo what the runtime process did to its own signal state: `run` blocks signals to forward
/// them, and Rust ignores SIGPIPE. An ignored disposition and the mask survive `execve`, and a
/// workload must start as it would under runc.
pub fn reset_signals() -> Result<(), ConfineError> {
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(ConfineError::Signals)?;
    // SAFETY: SIG_DFL installs no handler code; nothing else runs in this single-threaded
    // process between here and execve.
    unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) }
        .map_err(ConfineError::Signals)?;
    Ok(())
}

pub fn set_no_new_privs() -> Result<(), ConfineError> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(ConfineError::NoNewPrivs(nix::Error::last()));
    }
    Ok(())
}

fn load_seccomp(profile: &oci_spec::runtime::LinuxSeccomp) -> Result<(), ConfineError> {
    let notify = libcontainer::seccomp::initialize_seccomp(profile)
        .map_err(|e| ConfineError::Seccomp(e.to_string()))?;
    if let Some(fd) = notify {
        // Profiles with SCMP_ACT_NOTIFY and no listener are refused at create; a stray
        // listener fd closed here makes those syscalls fail, never succeed.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// Load one program of the plan. The network guard's filter hands its listener to the guard
/// over `channel`; without a channel it is refused, as the process would run unguarded.
fn load_program(p: &Program, channel: Option<BorrowedFd>) -> Result<(), ConfineError> {
    match p {
        Program::Bpf { name, bytes, flags } => bpf::load(bytes, *flags)
            .map_err(|e| ConfineError::Seccomp(format!("loading {name}: {e}"))),
        Program::Profile(profile) => load_seccomp(profile),
        Program::Sockets => bpf::load(&sockets::bytes(), 0)
            .map_err(|e| ConfineError::Seccomp(format!("loading the socket filter: {e}"))),
        Program::NetGuard { bytes } => {
            let channel = channel
                .ok_or_else(|| HandOverError::Refused("no channel to the network guard".into()))?;
            Ok(crate::netguard::filter::load_and_hand_over(bytes, channel)?)
        }
    }
}

/// Apply the plan to the calling process (`exec`: an exec'd process, not init): Landlock,
/// then the plan's programs in their order. The order is decided when the plan is built
/// (`confine::prepare`): Landlock needs syscalls a profile may deny; the network guard's
/// notification filter comes before the always-denied filter, which refuses new
/// notification listeners (a workload must never install its own); the always-denied and
/// socket filters come before the profile, so a profile that forbids `seccomp` itself cannot
/// skip them.
pub fn apply(loaded: &LoadedPlan, exec: bool) -> Result<(), ConfineError> {
    reset_signals()?;
    if loaded.plan.unconfined {
        // The `oci` baseline: libcontainer applied the spec's own no_new_privs and seccomp.
        return Ok(());
    }
    set_no_new_privs()?;
    if let Some(l) = &loaded.plan.landlock {
        let _t = crate::timing::span("landlock");
        landlock::apply(l, exec)?;
    }
    let _t = crate::timing::span("seccomp-load");
    for p in loaded.programs() {
        load_program(p, loaded.channel())?;
    }
    Ok(())
}
