//! The user-notification filter of the network guard and the hand-over of its
//! listener to the guard.
//!
//! The filter sends `connect`, `sendmsg`, `sendmmsg` and `sendto` with a destination to the
//! guard; `sendto` without one (`send`) is decided in BPF, since its destination pointer is a
//! register the workload cannot change after the check. `execve` and `execveat` go to the
//! guard too, which captures what each exec started (`capture`), and `listen`, which a
//! sandbox sharing the host's network only allows on loopback (`local`); a sandbox run
//! without root also sends `bind` (`relay`). The program is compiled once on the host, like the
//! other filters.
//!
//! Hand-over: after loading, the process holds the only listener fd. It writes the fd's number
//! on a unix socket the runtime opened to the guard before the container process was cloned;
//! the kernel attaches the writer's pid (SO_PASSCRED), and the guard takes the fd with
//! `pidfd_getfd`. Only `write` and `read` are used after the filter is in place, because a
//! `sendmsg` would wait on a guard that has no listener yet.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use oci_spec::runtime::{
    Arch, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscallBuilder,
};

use super::protocol::{Request, Response, MAX_REPLY};
use crate::confine::bpf::{self, BpfError};

#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    #[error("loading the network guard's notification filter: {0}")]
    Load(nix::Error),
    #[error("handing the notification listener to the network guard: {0}")]
    Channel(std::io::Error),
    #[error("the network guard refused the notification listener: {0}")]
    Refused(String),
}

/// The notification filter as a profile (compiled by the same code as the others). `relay`
/// (a sandbox run without root) adds `bind`: a relayed socket is on the host's network.
pub fn profile(relay: bool) -> oci_spec::runtime::LinuxSeccomp {
    let notify = |names: &[&str]| {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .action(LinuxSeccompAction::ScmpActNotify)
            .build()
            .expect("static rule")
    };
    let sendto = LinuxSyscallBuilder::default()
        .names(vec!["sendto".to_string()])
        .action(LinuxSeccompAction::ScmpActNotify)
        .args(vec![LinuxSeccompArgBuilder::default()
            .index(4usize)
            .value(0u64)
            .op(LinuxSeccompOperator::ScmpCmpNe)
            .build()
            .expect("static arg")])
        .build()
        .expect("static rule");
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        // 32-bit processes must not slip past on another syscall table; the guard refuses
        // their notifications (their structures differ), see docs/threat-model.md.
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(vec![
            notify(if relay {
                &[
                    "connect", "sendmsg", "sendmmsg", "execve", "execveat", "listen", "bind",
                ]
            } else {
                &[
                    "connect", "sendmsg", "sendmmsg", "execve", "execveat", "listen",
                ]
            }),
            sendto,
        ])
        .build()
        .expect("static profile")
}

pub fn compile(cache: &std::path::Path, relay: bool) -> Result<Vec<u8>, BpfError> {
    bpf::compile_cached(cache, &profile(relay))
}

/// In the container process: load the filter, give its listener to the guard over `channel`
/// and wait for the guard to confirm. The listener and this copy of the channel are closed
/// either way; the inherited channel at `execve`.
///
/// `dns`: the resolver's sockets a sandbox run without root bound for the guard, handed over
/// with the listener (the caller closes its copies once this returns).
pub fn load_and_hand_over(
    program: &[u8],
    channel: BorrowedFd,
    dns: Option<[BorrowedFd; 2]>,
) -> Result<(), HandOverError> {
    // The inherited descriptor must not reach the workload, whatever a layer below did to
    // its flags.
    let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
    nix::fcntl::fcntl(channel.as_raw_fd(), cloexec)
        .map_err(|e| HandOverError::Channel(e.into()))?;
    let mut chan = UnixStream::from(
        channel
            .try_clone_to_owned()
            .map_err(HandOverError::Channel)?,
    );
    let timed = crate::timing::span("listener-load");
    let listener = bpf::load_listener(program).map_err(HandOverError::Load)?;
    drop(timed);
    // The guard learns our pid from the credentials the kernel attaches.
    nix::sys::socket::setsockopt(&chan, nix::sys::socket::sockopt::PassCred, &true)
        .map_err(|e| HandOverError::Channel(e.into()))?;
    let req = Request::Listener {
        fd: std::os::fd::AsRawFd::as_raw_fd(&listener),
        dns: dns.map(|d| d.map(|f| f.as_raw_fd())),
    };
    chan.write_all(&req.encode())
        .map_err(HandOverError::Channel)?;
    let mut reply = vec![0u8; MAX_REPLY];
    let timed = crate::timing::span("handover-reply");
    let n = chan.read(&mut reply).map_err(HandOverError::Channel)?;
    drop(timed);
    drop(listener);
    match Response::decode(&reply[..n]).map_err(HandOverError::Refused)? {
        Response::Ok => Ok(()),
        Response::Error { message } => Err(HandOverError::Refused(message)),
        other => Err(HandOverError::Refused(format!("{other:?}"))),
    }
}
