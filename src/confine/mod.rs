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

use std::os::fd::{AsFd, BorrowedFd};

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
    #[error("PR_SET_DUMPABLE: {0}")]
    Dumpable(String),
    #[error("the sandbox's resolver: {0}")]
    Resolver(String),
    #[error("the sandbox's loopback interface: {0}")]
    Loopback(String),
    #[error("becoming uid {uid} in a user namespace of its own: {step}: {source}")]
    NestedUser {
        uid: u32,
        step: &'static str,
        source: std::io::Error,
    },
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

/// The capability sets `execve` carries over (the bounding set aside: changing it needs
/// CAP_SETPCAP), in the order that keeps each drop allowed.
const PROCESS_CAP_SETS: [caps::CapSet; 4] = [
    caps::CapSet::Ambient,
    caps::CapSet::Inheritable,
    caps::CapSet::Effective,
    caps::CapSet::Permitted,
];

/// The init brings the loopback interface of its network namespace up; every process then
/// drops CAP_NET_ADMIN, so nothing the workload runs holds it. It stays in the bounding set
/// (dropping it there needs CAP_SETPCAP), which no_new_privs makes moot: `execve` cannot
/// raise the permitted set past what the process had.
fn loopback_then_drop(exec: bool) -> Result<(), ConfineError> {
    let failed = |step: &'static str| {
        move |e: std::io::Error| ConfineError::Loopback(format!("{step}: {e}"))
    };
    if !exec {
        crate::netguard::local::set_lo_up().map_err(failed("bringing lo up"))?;
    }
    for set in PROCESS_CAP_SETS {
        caps::drop(None, set, caps::Capability::CAP_NET_ADMIN)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .map_err(failed("dropping CAP_NET_ADMIN"))?;
    }
    Ok(())
}

/// Become `uid`/`gid` in a user namespace nested in the container's. A sandbox run without
/// root has one id, 0 inside (the caller outside), which libcontainer needs to set the
/// container up; the command then runs as the caller's own ids, as under bubblewrap. The
/// nested namespace owns no mount, network or other namespace, and the capabilities it gives
/// are cleared at once: none reaches the command.
///
/// Writing its own maps needs the process dumpable (non-dumpable, its `/proc/self` files
/// belong to the host's root), which only the init is (`Plan::rootless`): an exec'd process
/// would have the workload beside it to attach to it, so it is refused.
fn enter_nested_user(uid: u32, gid: u32, exec: bool) -> Result<(), ConfineError> {
    let failed = |step: &'static str| {
        move |source: std::io::Error| ConfineError::NestedUser { uid, step, source }
    };
    if exec {
        return Err(failed("exec")(std::io::Error::other(
            "a process cannot be exec'd into a sandbox run without root",
        )));
    }
    let outer_uid = nix::unistd::geteuid().as_raw();
    let outer_gid = nix::unistd::getegid().as_raw();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(std::io::Error::from)
        .map_err(failed("unshare"))?;
    // A process may map its own ids into a namespace it made, and its gid only once
    // setgroups(2) is refused there (no dropping a group that denied it access).
    std::fs::write("/proc/self/setgroups", "deny").map_err(failed("setgroups"))?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {outer_uid} 1"))
        .map_err(failed("uid_map"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {outer_gid} 1"))
        .map_err(failed("gid_map"))?;
    // Every capability the namespace gave, so the command starts with none (a file's
    // capabilities cannot raise the set past this, under no_new_privs).
    for set in PROCESS_CAP_SETS {
        caps::clear(None, set)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .map_err(failed("dropping capabilities"))?;
    }
    Ok(())
}

fn set_dumpable(on: bool) -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
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
fn load_program(
    p: &Program,
    channel: Option<BorrowedFd>,
    dns: Option<[BorrowedFd; 2]>,
) -> Result<(), ConfineError> {
    let _t = crate::timing::span(match p {
        Program::Bpf { .. } => "load-bpf",
        Program::Profile(_) => "load-profile",
        Program::Sockets => "load-sockets",
        Program::NetGuard { .. } => "load-netguard",
    });
    match p {
        Program::Bpf { name, bytes, flags } => bpf::load(bytes, *flags)
            .map_err(|e| ConfineError::Seccomp(format!("loading {name}: {e}"))),
        Program::Profile(profile) => load_seccomp(profile),
        Program::Sockets => bpf::load(&sockets::bytes(), 0)
            .map_err(|e| ConfineError::Seccomp(format!("loading the socket filter: {e}"))),
        Program::NetGuard { bytes } => {
            let channel = channel
                .ok_or_else(|| HandOverError::Refused("no channel to the network guard".into()))?;
            Ok(crate::netguard::filter::load_and_hand_over(
                bytes, channel, dns,
            )?)
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
    if loaded.plan.rootless && !exec {
        // libcontainer left the init non-dumpable, and its memory is still the runtime's,
        // so only root could then take its listener, read its calls or write its id maps.
        // Nothing else runs in its fresh pid namespace yet to attach to it; the caller's own
        // processes could, with the rights they have anyway.
        set_dumpable(true).map_err(|e| ConfineError::Dumpable(e.to_string()))?;
    }
    if loaded.plan.loopback_up {
        loopback_then_drop(exec)?;
    }
    // Bound while the init is still root in the container's user namespace (port 53), and
    // closed here once the guard holds them: the workload never has them.
    let dns = match &loaded.plan.netguard {
        Some(n) if n.relay && !exec => Some(
            crate::netguard::local::resolver_sockets(n.resolver)
                .map_err(|e| ConfineError::Resolver(format!("binding {}:53: {e}", n.resolver)))?,
        ),
        _ => None,
    };
    if let Some((uid, gid)) = loaded.plan.nested_user {
        enter_nested_user(uid, gid, exec)?;
    }
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
        let dns = dns.as_ref().map(|(u, t)| [u.as_fd(), t.as_fd()]);
        load_program(p, loaded.channel(), dns)?;
    }
    Ok(())
}
