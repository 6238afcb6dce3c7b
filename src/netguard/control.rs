//! The guard's control channels. Container processes hand their notification listener over
//! and `policy update` asks the guard to load a new generation of the network policies, one
//! `protocol::Request` per connection:
//! - the socket `<state>/guard.sock`, which `exec` and `policy update` connect to;
//! - the init process's own connection, a socket pair made at `create`: its request comes at
//!   `start`, which an engine may call any time later (`podman create`, then `podman start`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use super::protocol::{Request, Response, MAX_REPLY};
use crate::container_dir::ContainerDir;

const SOCKET: &str = ContainerDir::GUARD_SOCKET;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("network guard socket in {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error("the network guard of this container is not running ({0})")]
    NotRunning(std::io::Error),
    #[error("the network guard answered {0:?}")]
    Reply(String),
}

/// The socket's path through a directory fd: state directories under an engine's root can be
/// longer than a unix socket path may be.
fn short_path(dir: &OwnedFd) -> String {
    format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd())
}

fn open_dir(dir: &Path) -> Result<OwnedFd, ControlError> {
    std::fs::File::open(dir)
        .map(OwnedFd::from)
        .map_err(|source| ControlError::Io {
            dir: dir.display().to_string(),
            source,
        })
}

/// The guard's ends of its control channels.
pub struct GuardEnds {
    pub listener: UnixListener,
    /// The init process's connection. The kernel attaches the sender's credentials to what
    /// comes on it: the receiving end asks for them before the init exists.
    pub init: UnixStream,
}

/// Open the guard's channels at `create`, before the container process exists; the second
/// value is the init process's end.
pub fn open(dir: &Path) -> Result<(GuardEnds, OwnedFd), ControlError> {
    let io = |source| ControlError::Io {
        dir: dir.display().to_string(),
        source,
    };
    let listener = bind(dir)?;
    let (guard, init) = UnixStream::pair().map_err(io)?;
    nix::sys::socket::setsockopt(&guard, nix::sys::socket::sockopt::PassCred, &true)
        .map_err(|e| io(e.into()))?;
    Ok((
        GuardEnds {
            listener,
            init: guard,
        },
        init.into(),
    ))
}

fn bind(dir: &Path) -> Result<UnixListener, ControlError> {
    let d = open_dir(dir)?;
    let _ = std::fs::remove_file(dir.join(SOCKET));
    UnixListener::bind(short_path(&d)).map_err(|source| ControlError::Io {
        dir: dir.display().to_string(),
        source,
    })
}

pub fn connect(dir: &Path) -> Result<UnixStream, ControlError> {
    let d = open_dir(dir)?;
    UnixStream::connect(short_path(&d)).map_err(ControlError::NotRunning)
}

/// Send one request and read the one-line reply.
pub fn request(dir: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let mut s = connect(dir)?;
    let io = |source| ControlError::Io {
        dir: dir.display().to_string(),
        source,
    };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.write_all(&req.encode()).map_err(io)?;
    let mut reply = Vec::new();
    BufReader::new((&s).take(MAX_REPLY as u64))
        .read_until(b'\n', &mut reply)
        .map_err(io)?;
    Response::decode(&reply).map_err(ControlError::Reply)
}

/// Ask the guard to load the network policies now in `effective.json`; returns the generation
/// it confirms.
pub fn reload(dir: &Path) -> Result<u64, ControlError> {
    match request(dir, &Request::Reload, Duration::from_secs(10))? {
        Response::Generation { n } => Ok(n),
        Response::Error { message } => Err(ControlError::Reply(message)),
        other => Err(ControlError::Reply(format!("{other:?}"))),
    }
}
