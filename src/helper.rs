//! The per-container helper process.
//!
//! Started at `create`, it lives exactly as long as the container's init process: it holds a
//! pidfd of init and exits when init does; `delete` also kills it. Policy stages that need a
//! process outside the container for the container's whole life (the network guard) run in it.
//! It is a fork of the `create` process, not a new exec, so starting it costs one fork.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{fork, setsid, ForkResult};

use crate::state::process_start_time;

/// The name the helper shows in `ps`; `delete` checks it before signalling a recorded pid.
pub const HELPER_COMM: &str = "nemosandbox-hlp";

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("pidfd_open({pid}): {source}")]
    PidfdOpen { pid: i32, source: nix::Error },
    #[error("fork of the helper process: {0}")]
    Fork(nix::Error),
}

/// Something that runs inside the helper for the container's lifetime.
pub trait HelperService: Send {
    fn name(&self) -> &'static str;
    /// Descriptors the service needs in the helper (the rest are closed).
    fn keep_fds(&self) -> Vec<i32> {
        Vec::new()
    }
    /// Run until the container's init exits; `init_exit` becomes readable then.
    fn run(&mut self, init_exit: &OwnedFd);
    /// After the init has exited and every service's `run` returned: write what is left.
    fn finish(&mut self) {}
}

pub fn pidfd_open(pid: i32) -> Result<OwnedFd, HelperError> {
    pidfd_open_flags(pid, 0).map_err(|source| HelperError::PidfdOpen { pid, source })
}

/// pidfd_open(2) with flags (PIDFD_THREAD for a thread).
pub fn pidfd_open_flags(pid: i32, flags: u32) -> Result<OwnedFd, nix::Error> {
    // SAFETY: pidfd_open takes a pid and flags; on success it returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Wait until the process behind `pidfd` exits.
pub fn wait_exit(pidfd: &OwnedFd) {
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(n) if n > 0 => return,
            Err(nix::Error::EINTR) | Ok(_) => continue,
            Err(_) => return,
        }
    }
}

/// Detach from everything the engine may be watching: its pipes would otherwise stay open and
/// `create` would seem never to finish.
fn detach_stdio_and_fds(keep: &[i32]) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), target);
        }
    }
    if close_all_but(keep).is_ok() {
        return;
    }
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// Close every descriptor above 2 but `keep`, a range at a time (`close_range`, Linux 5.9):
/// no /proc listing and its buffers in a child just forked from the runtime, where every page
/// touched is copied.
fn close_all_but(keep: &[i32]) -> Result<(), Errno> {
    let mut kept: Vec<u32> = keep
        .iter()
        .filter_map(|fd| u32::try_from(*fd).ok())
        .filter(|fd| *fd > 2)
        .collect();
    kept.sort_unstable();
    kept.dedup();
    let mut from = 3u32;
    for k in kept.into_iter().chain([u32::MAX]) {
        if k > from {
            // SAFETY: closes descriptors only; the kept ones are outside every range.
            let r = unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
            Errno::result(r)?;
        }
        from = k.saturating_add(1);
    }
    Ok(())
}

/// Where the helper starts: the cgroup v2 directory open at `v2`, which it is born in
/// (`clone3` with `CLONE_INTO_CGROUP`), and the v1 cgroups at `v1`, which it joins itself
/// first thing. Neither is a move made from outside, which would take the kernel's global
/// threadgroup lock (an RCU grace period, milliseconds, when nobody took it lately).
pub struct Placement<'a> {
    pub v2: &'a OwnedFd,
    pub v1: &'a [std::path::PathBuf],
}

/// The helper's word that it is where `Placement` asked: its pipe's read end, or nothing
/// when it was forked the ordinary way (the caller moves it).
pub struct Placed(Option<OwnedFd>);

impl Placed {
    /// Whether the helper reported that it is in place. Waits for its word; false when it
    /// exited first or could not join a cgroup.
    pub fn confirmed(self) -> bool {
        let Some(fd) = self.0 else {
            return false;
        };
        // The child's first act; a child that has not said it in 10 s is taken as not in
        // place (and is moved, or the create fails).
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(10_000u16)), Ok(n) if n > 0) {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(nix::unistd::read(fd.as_raw_fd(), &mut byte), Ok(1)) && byte[0] == b'y'
    }
}

/// Fork the helper for a container whose init is `init_pid`, where `placement` says if
/// given. Returns the helper's pid, its start time (for a safe kill later) and its word on
/// the placement.
pub fn spawn(
    init_pid: i32,
    mut services: Vec<Box<dyn HelperService>>,
    placement: Option<Placement<'_>>,
) -> Result<(i32, Option<u64>, Placed), HelperError> {
    let pidfd = pidfd_open(init_pid)?;
    let pipe = match placement {
        Some(_) => {
            Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(HelperError::Fork)?)
        }
        None => None,
    };
    let born = match (&placement, &pipe) {
        // SAFETY: single-threaded (no other thread can hold a C library lock the child would
        // need); the child makes syscalls and runs the services, none of which raise signals
        // at themselves or use the C library's error-checking mutexes.
        (Some(p), Some(_)) if single_threaded() => unsafe { clone_into_cgroup(p.v2) }.ok(),
        _ => None,
    };
    let forked = match born {
        Some(r) => r,
        // SAFETY: the runtime CLI is single-threaded here; the child only makes syscalls and
        // runs the services before exiting with _exit.
        None => unsafe { fork() }.map_err(HelperError::Fork)?,
    };
    match forked {
        ForkResult::Parent { child } => {
            drop(pidfd);
            let placed = match (born, pipe) {
                (Some(_), Some((read, _write))) => Placed(Some(read)),
                _ => Placed(None),
            };
            Ok((child.as_raw(), process_start_time(child.as_raw()), placed))
        }
        ForkResult::Child => {
            if let (Some(_), Some(p), Some((read, write))) = (born, &placement, pipe) {
                drop(read);
                // A fresh child has one thread: each join is of the whole process.
                let word = if join_v1_self(p.v1) { b"y" } else { b"n" };
                let _ = nix::unistd::write(&write, word);
            }
            let boot = crate::timing::span("helper-boot");
            let _ = setsid();
            let _ = nix::sys::prctl::set_name(&std::ffi::CString::new(HELPER_COMM).unwrap());
            let mut keep: Vec<i32> = services.iter().flat_map(|s| s.keep_fds()).collect();
            keep.push(pidfd.as_raw_fd());
            keep.extend(crate::logging::log_fd());
            keep.extend(crate::timing::fd());
            detach_stdio_and_fds(&keep);
            drop(boot);
            for svc in services.iter_mut() {
                svc.run(&pidfd);
            }
            wait_exit(&pidfd);
            for svc in services.iter_mut() {
                svc.finish();
            }
            // SAFETY: _exit skips atexit handlers and destructors that belong to the parent.
            unsafe { libc::_exit(0) }
        }
    }
}

/// Whether this process has one thread (`/proc/self/stat`, field 20). Only this thread can
/// start another, so the answer holds until it does.
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/stat").is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.split_whitespace().nth(17) == Some("1"))
    })
}

/// Put this (single-threaded) process into each v1 cgroup directory in `dirs`.
fn join_v1_self(dirs: &[std::path::PathBuf]) -> bool {
    dirs.iter()
        .all(|d| crate::cgroupv1::join_this_thread(&d.join("tasks")).is_ok())
}

/// `fork`, with the child born in the cgroup v2 directory open at `cgroup`.
///
/// # Safety
/// As `fork`, and more: the C library does none of its fork bookkeeping (its cached thread
/// id stays the parent's), so the child must not rely on it: no `raise`, no pthread mutex
/// of the error-checking or recursive kinds. Only for a single-threaded caller.
unsafe fn clone_into_cgroup(cgroup: &OwnedFd) -> Result<ForkResult, nix::Error> {
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    // struct clone_args up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    let mut args = [0u64; 11];
    args[0] = CLONE_INTO_CGROUP;
    args[4] = libc::SIGCHLD as u64;
    args[10] = cgroup.as_raw_fd() as u64;
    // SAFETY: clone3 reads `args` (88 bytes) and, without CLONE_VM, returns twice like fork.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_mut_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    match r {
        -1 => Err(nix::Error::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: nix::unistd::Pid::from_raw(pid as i32),
        }),
    }
}

/// Kill and reap a helper this process forked and has not reaped: its pid cannot have been
/// reused, and it may not carry its name yet (it sets it just after the fork), so no check.
pub fn kill_own_helper(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Kill a helper recorded at create, if that pid is still our helper.
pub fn kill_helper(pid: i32, start_time: Option<u64>) {
    stop_helper(pid, start_time, Duration::ZERO);
}

/// Stop a helper recorded at create, if that pid is still our helper: once the container's
/// init is gone the helper finishes on its own (the guard writes its merged audit counts),
/// so it gets `grace` to do that before it is killed.
pub fn stop_helper(pid: i32, start_time: Option<u64>, grace: Duration) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != HELPER_COMM {
        return;
    }
    if start_time.is_some() && process_start_time(pid) != start_time {
        return;
    }
    let Ok(pidfd) = pidfd_open(pid) else {
        return;
    };
    if !grace.is_zero() {
        let ms = u16::try_from(grace.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
            return;
        }
    }
    // SAFETY: pidfd_send_signal on a pidfd we own: the signal cannot reach a reused pid.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}
