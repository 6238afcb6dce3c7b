//! The terminal of a foreground `sandbox` run from a terminal, as `docker run -it` gives one.
//!
//! The container gets a pseudo-terminal of its own (the spec's `process.terminal`): libcontainer
//! makes it inside the container and sends its master over a console socket. The runtime puts
//! the caller's terminal in raw mode and relays bytes both ways, and the window size on every
//! SIGWINCH. Ctrl-C is then a byte like any other: the container's terminal turns it into
//! SIGINT for the container's foreground process group, as the caller's terminal would have for
//! the plain command. The container never holds the caller's terminal, so it cannot push input
//! into it (TIOCSTI) or change its modes.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the container's terminal did not arrive within {0:?}")]
    Timeout(Duration),
    #[error("the container's terminal: {0}")]
    Receive(nix::Error),
    #[error("the caller's terminal: {0}")]
    Terminal(nix::Error),
    #[error("the terminal relay: {0}")]
    Relay(std::io::Error),
}

/// Whether the caller's stdin and stdout are both a terminal.
pub fn caller_has_terminal() -> bool {
    nix::unistd::isatty(std::io::stdin().as_raw_fd()).unwrap_or(false)
        && nix::unistd::isatty(std::io::stdout().as_raw_fd()).unwrap_or(false)
}

/// The console socket libcontainer sends the terminal's master to; removed when dropped.
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> Result<ConsoleSocket, ConsoleError> {
        let err = |source| ConsoleError::Socket {
            path: path.to_path_buf(),
            source,
        };
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        Ok(ConsoleSocket {
            path: path.to_path_buf(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle for the thread that waits for the terminal; the socket's file stays with
    /// `self`.
    pub fn listener(&self) -> Result<UnixListener, ConsoleError> {
        self.listener
            .try_clone()
            .map_err(|source| ConsoleError::Socket {
                path: self.path.clone(),
                source,
            })
    }
}

/// The master the container's init sends on `listener`, within `limit`. Only a peer of the
/// runtime's own user is heard: no other user may hand the caller a terminal of theirs.
pub fn receive(listener: &UnixListener, limit: Duration) -> Result<OwnedFd, ConsoleError> {
    let io = |source| ConsoleError::Socket {
        path: PathBuf::from("console socket"),
        source,
    };
    let deadline = Instant::now() + limit;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => {
                let peer =
                    nix::sys::socket::getsockopt(&c, nix::sys::socket::sockopt::PeerCredentials)
                        .map_err(ConsoleError::Receive)?;
                if peer.uid() == nix::unistd::geteuid().as_raw() {
                    break c;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(ConsoleError::Timeout(limit));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => return Err(io(source)),
        }
    };
    conn.set_nonblocking(false)
        .and_then(|()| conn.set_read_timeout(Some(limit)))
        .map_err(io)?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(ConsoleError::Receive)?;
    for c in msg.cmsgs().map_err(ConsoleError::Receive)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed these descriptors in this process; each is
            // owned here once.
            let mut owned: Vec<OwnedFd> = fds
                .into_iter()
                .map(|fd| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
                .collect();
            if let Some(master) = owned.pop() {
                return Ok(master);
            }
        }
    }
    Err(ConsoleError::Receive(nix::errno::Errno::EBADMSG))
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The caller's terminal in raw mode, restored when dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> Result<RawMode, ConsoleError> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).map_err(ConsoleError::Terminal)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).map_err(ConsoleError::Terminal)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        // What the terminal answered to the command's last queries (cursor position and the
        // like) must not reach the caller's shell as typed input.
        let _ = termios::tcflush(stdin.as_fd(), termios::FlushArg::TCIFLUSH);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copy the caller's window size to the container's terminal.
fn copy_window_size(master: BorrowedFd<'_>) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize we pass; TIOCSWINSZ reads it.
    unsafe {
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Block SIGWINCH in this thread and every thread it starts, so that the relay reads it from
/// a signalfd. Call before the relay's threads (and the container) exist.
pub fn block_window_changes() -> Result<(), ConsoleError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    set.thread_block().map_err(ConsoleError::Terminal)
}

/// Relay between the caller's terminal and the container's until every holder of the
/// container's side has closed it. The caller-to-container direction runs on a thread of its
/// own, which ends with the process.
pub fn relay(master: OwnedFd) -> Result<(), ConsoleError> {
    copy_window_size(master.as_fd());
    let input = master.try_clone().map_err(ConsoleError::Relay)?;
    std::thread::Builder::new()
        .name("console-input".into())
        .spawn(move || relay_input(input))
        .map_err(ConsoleError::Relay)?;
    let mut from = std::fs::File::from(master);
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            // EIO: every holder of the container's side closed it.
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// The caller's keystrokes to the container, and window size changes as they come.
fn relay_input(master: OwnedFd) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    let Ok(winch) = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC) else {
        return;
    };
    // Unbuffered: a buffered reader could hold bytes that poll no longer reports.
    // SAFETY: fd 0 stays open for the life of the process.
    let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
    let mut to = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(stdin, PollFlags::POLLIN),
            PollFd::new(winch.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        if ready(1) {
            let _ = winch.read_signal();
            copy_window_size(to.as_fd());
        }
        if ready(0) {
            match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}
