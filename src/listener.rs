//! `linux.seccomp.listenerPath` under the unconfined `oci` baseline, as runc does it: the
//! notification fd and the container's state go to the engine's listener socket.
//!
//! libcontainer sends them itself, but with the state of the container it built, whose
//! `bundle` is the runtime's rewritten directory. So the rewritten spec names a socket of the
//! runtime's instead, and a relay thread takes the one message libcontainer sends there, sets
//! the engine's bundle in the state, and passes message and fd on to the real listener.
//! Confined baselines refuse listeners: the runtime owns user notification there.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

use crate::container_dir::ContainerDir;

/// The relay's socket in the container's state directory.
/// Largest message accepted from libcontainer.
const MAX_MESSAGE: usize = 1024 * 1024;

/// Point the spec's listener at the relay's socket in `own`; the engine's listener path, if
/// the spec has one.
pub fn redirect(spec: &mut oci_spec::runtime::Spec, own: &ContainerDir) -> Option<PathBuf> {
    let mut linux = spec.linux().clone()?;
    let mut seccomp = linux.seccomp().clone()?;
    let target = seccomp.listener_path().clone()?;
    seccomp.set_listener_path(Some(own.listener_socket()));
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
    Some(target)
}

/// A relay waiting for libcontainer's message.
pub struct Relay {
    done: mpsc::Receiver<Result<(), String>>,
}

/// Listen on the relay socket in `own` and relay one message to `target`, with `bundle` in its
/// state.
pub fn start(own: &ContainerDir, target: PathBuf, bundle: PathBuf) -> std::io::Result<Relay> {
    let path = own.listener_socket();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let (tx, done) = mpsc::channel();
    std::thread::Builder::new()
        .name("seccomp-relay".into())
        .spawn(move || {
            let r = relay_one(&listener, &target, &bundle);
            let _ = std::fs::remove_file(&path);
            let _ = tx.send(r);
        })?;
    Ok(Relay { done })
}

impl Relay {
    /// Wait for the message to have been passed on (libcontainer has sent it by the time its
    /// build returns).
    pub fn finish(self, limit: Duration) -> Result<(), String> {
        self.done
            .recv_timeout(limit)
            .map_err(|_| "no notification fd came from the container".to_string())?
    }
}

fn relay_one(listener: &UnixListener, target: &Path, bundle: &Path) -> Result<(), String> {
    let (conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let (msg, fds) = receive(conn.as_raw_fd())?;
    let msg = crate::hooks::rebundle(&msg, "/state", bundle);
    let out = socket::socket(
        socket::AddressFamily::Unix,
        socket::SockType::Stream,
        socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = UnixAddr::new(target).map_err(|e| format!("{}: {e}", target.display()))?;
    socket::connect(out.as_raw_fd(), &addr)
        .map_err(|e| format!("connecting to {}: {e}", target.display()))?;
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    socket::sendmsg::<()>(
        out.as_raw_fd(),
        &[std::io::IoSlice::new(&msg)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sending to {}: {e}", target.display()))?;
    Ok(())
}

/// Read the whole message (to EOF) and the descriptors that came with it.
fn receive(fd: RawFd) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    let mut msg = Vec::new();
    let mut fds = Vec::new();
    loop {
        let mut buf = [0u8; 16 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let r = socket::recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| format!("recvmsg: {e}"))?;
        let n = r.bytes;
        for c in r.cmsgs().map_err(|e| format!("control data: {e}"))? {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel just installed these descriptors for this process.
                fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        if n == 0 {
            break;
        }
        msg.extend_from_slice(&buf[..n]);
        if msg.len() > MAX_MESSAGE {
            return Err("message too large".into());
        }
    }
    Ok((msg, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relayed_state_names_the_engines_bundle() {
        let m = br#"{"ociVersion":"1.0.2","fds":["seccompFd"],"pid":7,"metadata":"m","state":{"id":"c","bundle":"/run/x/.nemosandbox/c"}}"#;
        let v: serde_json::Value =
            serde_json::from_slice(&crate::hooks::rebundle(m, "/state", Path::new("/engine/b")))
                .unwrap();
        assert_eq!(v["state"]["bundle"], "/engine/b");
        assert_eq!(v["metadata"], "m");
    }
}
