//! The per-container network guard, run in the helper process for the container's
//! life. Each container process hands it the listener of its notification filter; a thread
//! per listener receives the notified calls, decides and, when allowed, performs
//! the call itself on the caller's socket (`pidfd_getfd`) with the arguments it validated.
//!
//! What it never does: answer "continue" for a call on an inet socket. Calls on unix and
//! netlink sockets continue in the kernel; a descriptor swapped under such a call meets the
//! kernel fence (`fence`), which refuses inet connects and addressed sends by anyone but the
//! guard. `execve` continues too, with the guard attached to read what the kernel started
//! (`capture`). Everything it holds for a call is bounded: listener threads, waiting calls,
//! copied bytes, captures, remembered connections, audit lines.
//!
//! When the guard is gone its listeners close and the kernel fails every notified call
//! (ENOSYS): the container keeps running without network and cannot start new programs.

use std::collections::BTreeMap;
use std::io::{IoSliceMut, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags};

use super::answers::Answers;
use super::capture::{self, Captures};
use super::conns::Connections;
use super::control::GuardEnds;
use super::fence::Fence;
use super::identity::{Baseline, Binaries};
use super::local::LocalRules;
use super::notif;
use super::protocol::{self, Response, MAX_REQUEST};
use super::resolver;
use super::shared::{pidfs, Generation, Relay, Shared, REFRESH_EVERY};
use super::waiter::Waiter;
use crate::audit::{self, Throttle};
use crate::helper::{self, HelperService};

mod call;
mod notify;
mod perform;
mod relayed;
mod verdict;

/// Process trees (init and each `exec`) served at once; one thread each.
pub const MAX_LISTENERS: usize = 64;

/// The guard as a helper service.
pub struct Guard {
    shared: Option<Arc<Shared>>,
    control: Option<GuardEnds>,
    upstream: Vec<IpAddr>,
}

/// What `create` knows of the guard before the init process exists.
pub struct GuardConfigBase {
    pub id: String,
    /// The container's directory (its audit file) and what its events carry.
    pub audit_dir: PathBuf,
    pub audit: audit::Context,
    pub own: crate::container_dir::ContainerDir,
    pub resolver: Ipv4Addr,
    pub upstream: Vec<IpAddr>,
    /// The kernel fence, set up between create and start.
    pub fence: Option<Fence>,
    /// A sandbox run without root: allowed calls are relayed (`relay`), and the resolver
    /// serves on sockets the init hands over.
    pub relay: bool,
    /// Relayed, a container rather than a sandbox: its loopback stays its own (`Relay`).
    pub own_loopback: bool,
    /// Local socket rules (`sandbox`).
    pub local: LocalRules,
    /// Roots the layer-7 proxy trusts upstream besides the host's (node configuration).
    pub l7_roots: Vec<PathBuf>,
}

impl GuardConfigBase {
    pub fn with(self, init_pid: i32, control: GuardEnds) -> GuardConfig {
        GuardConfig {
            base: self,
            init_pid,
            control,
        }
    }
}

pub struct GuardConfig {
    pub base: GuardConfigBase,
    pub init_pid: i32,
    pub control: GuardEnds,
}

impl Guard {
    pub fn new(c: GuardConfig) -> Guard {
        let shared = Shared {
            id: c.base.id,
            audit: Throttle::new(
                audit::Recorder::new(c.base.audit, &c.base.audit_dir).background(),
            ),
            own: c.base.own,
            init_pid: c.init_pid,
            resolver: c.base.resolver,
            generation: RwLock::new(Arc::new(Generation {
                n: 0,
                policies: BTreeMap::new(),
                binaries: Binaries::default(),
                resolved_at: Instant::now(),
                rules: Arc::default(),
            })),
            answers: Answers::default(),
            captures: Captures::default(),
            baseline: Baseline::default(),
            conns: Connections::default(),
            fence: c.base.fence,
            relay: c
                .base
                .relay
                .then(|| Relay::new(c.base.upstream.clone(), c.base.own_loopback)),
            local: c.base.local,
            aslr: capture::system_aslr(),
            pidfs: pidfs(),
            last_refresh: Mutex::new(Instant::now() - REFRESH_EVERY),
            listeners: AtomicUsize::new(0),
            waiter: OnceLock::new(),
            l7: OnceLock::new(),
            l7_roots: c.base.l7_roots,
        };
        Guard {
            shared: Some(Arc::new(shared)),
            control: Some(c.control),
            upstream: c.base.upstream,
        }
    }
}

impl HelperService for Guard {
    fn name(&self) -> &'static str {
        "network guard"
    }

    fn keep_fds(&self) -> Vec<i32> {
        self.control
            .iter()
            .flat_map(|c| [c.listener.as_raw_fd(), c.init.as_raw_fd()])
            .collect()
    }

    fn run(&mut self, init_exit: &OwnedFd) {
        let (Some(shared), Some(control)) = (self.shared.take(), self.control.take()) else {
            return;
        };
        let setup = crate::timing::span("guard-setup");
        // First, so that the thread is running by the time the init asks. Its answer waits
        // until the resolver's sockets are bound (the workload may ask a name first thing)
        // and the first generation is loaded, which pins the policies' binaries before any
        // workload code can replace one.
        let GuardEnds { listener, init } = control;
        let ready = Arc::new(Gate::default());
        let (s, r) = (shared.clone(), ready.clone());
        let init_served = std::thread::Builder::new()
            .name("guard-init".into())
            .spawn(move || {
                if let Err(e) = serve_control(&s, init, Some(&r)) {
                    tracing::warn!("network guard of {}: init's control: {e}", s.id);
                }
            });
        let s = shared.clone();
        match Waiter::start(Box::new(move || s.audit.flush(false))) {
            Ok(w) => {
                let _ = shared.waiter.set(w);
            }
            // Without the waiter, calls that would wait fail with EAGAIN.
            Err(e) => tracing::error!("network guard of {}: waiter: {e}", shared.id),
        }
        // The policies load beside the resolver's start.
        let reload = |s: &Shared| {
            let _t = crate::timing::span("guard-reload");
            s.reload()
        };
        let reloaded = std::thread::scope(|scope| {
            let loading = std::thread::Builder::new()
                .name("guard-reload".into())
                .spawn_scoped(scope, || reload(&shared));
            // Relayed, the resolver starts on the sockets the init hands over (`adopt`).
            if shared.relay.is_none() {
                let timed = crate::timing::span("resolver-start");
                let resolver = resolver::start(shared.clone(), std::mem::take(&mut self.upstream));
                drop(timed);
                if let Err(e) = resolver {
                    tracing::error!("network guard of {}: resolver: {e}", shared.id);
                }
            }
            match loading {
                Ok(t) => t
                    .join()
                    .unwrap_or_else(|_| Err("loading the policies panicked".into())),
                Err(_) => reload(&shared),
            }
        });
        if let Err(e) = reloaded {
            // No policies means no egress: every call is refused, none is let through.
            tracing::error!("network guard of {}: {e}", shared.id);
        }
        ready.open();
        let served = init_served.and_then(|_| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("guard-control".into())
                .spawn(move || control_loop(s, listener))
        });
        if let Err(e) = served {
            tracing::error!("network guard of {}: control thread: {e}", shared.id);
        }
        drop(setup);
        helper::wait_exit(init_exit);
        shared.audit.flush(true);
        shared.audit.recorder().finish();
    }
}

/// A one-way gate: closed until `open`, then open for good.
#[derive(Default)]
struct Gate {
    open: std::sync::atomic::AtomicBool,
    lock: std::sync::Mutex<()>,
    opened: std::sync::Condvar,
}

impl Gate {
    fn open(&self) {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.open.store(true, std::sync::atomic::Ordering::Release);
        self.opened.notify_all();
    }

    fn wait(&self) {
        if self.open.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.open.load(std::sync::atomic::Ordering::Acquire) {
            held = self.opened.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Serve the control socket, one connection at a time: each request is sent as soon as its
/// connection is made (the init's, which may wait, has its own channel).
fn control_loop(shared: Arc<Shared>, control: UnixListener) {
    for conn in control.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        if let Err(e) = serve_control(&shared, conn, None) {
            tracing::warn!("network guard of {}: control: {e}", shared.id);
        }
    }
}

/// Read one request and the pid the kernel attached to it.
fn read_request(
    conn: &UnixStream,
) -> std::io::Result<(Result<protocol::Request, String>, Option<i32>)> {
    socket::setsockopt(conn, sockopt::PassCred, &true)?;
    let mut buf = [0u8; MAX_REQUEST];
    let mut cmsg = nix::cmsg_space!(libc::ucred);
    let (n, pid) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )?;
        let pid = msg.cmsgs()?.find_map(|c| match c {
            ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
            _ => None,
        });
        (msg.bytes, pid)
    };
    Ok((protocol::Request::decode(&buf[..n]), pid))
}

/// Serve one request; the answer waits for `before_reply` when given.
fn serve_control(
    shared: &Arc<Shared>,
    mut conn: UnixStream,
    before_reply: Option<&Gate>,
) -> std::io::Result<()> {
    let (req, pid) = read_request(&conn)?;
    let error = |message: String| Response::Error { message };
    let reply = match req {
        Ok(protocol::Request::Listener { fd, dns }) => match pid {
            Some(pid) => adopt(shared, pid, fd, dns).map_or_else(error, |()| Response::Ok),
            None => error("no credentials".into()),
        },
        Ok(protocol::Request::Reload) => shared
            .reload()
            .map_or_else(error, |n| Response::Generation { n }),
        Ok(protocol::Request::Generation) => Response::Generation {
            n: shared.current().n,
        },
        Err(e) => error(e),
    };
    if let Some(gate) = before_reply {
        gate.wait();
    }
    conn.write_all(&reply.encode())
}

/// Take the listener of a new container process and serve it on a thread of its own. The
/// process waits for the answer, so it runs nothing before it is in the fence.
fn adopt(shared: &Arc<Shared>, pid: i32, fd: i32, dns: Option<[i32; 2]>) -> Result<(), String> {
    let _t = crate::timing::span("adopt");
    if let Some(f) = &shared.fence {
        f.admit(pid).map_err(|e| e.to_string())?;
    }
    if let (Some(relay), Some(dns)) = (&shared.relay, dns) {
        serve_relayed_dns(shared, relay, pid, dns)?;
    }
    if shared.listeners.fetch_add(1, Ordering::SeqCst) >= MAX_LISTENERS {
        shared.listeners.fetch_sub(1, Ordering::SeqCst);
        return Err(format!(
            "{MAX_LISTENERS} process trees are already under this guard"
        ));
    }
    let listener = match notif::take_listener(pid, fd) {
        Ok(l) => l,
        Err(e) => {
            shared.listeners.fetch_sub(1, Ordering::SeqCst);
            return Err(format!("taking fd {fd} of pid {pid}: {e}"));
        }
    };
    let s = shared.clone();
    std::thread::Builder::new()
        .name("guard-listener".into())
        .spawn(move || {
            serve_listener(&s, Arc::new(listener));
            s.listeners.fetch_sub(1, Ordering::SeqCst);
        })
        .map(drop)
        .map_err(|e| {
            shared.listeners.fetch_sub(1, Ordering::SeqCst);
            format!("no thread for the listener: {e}")
        })
}

/// Start the resolver of a relayed sandbox on the sockets its init bound, once; they also
/// name the sandbox's network namespace. Later hand-overs (none: `exec` is refused without
/// root) cannot replace them.
fn serve_relayed_dns(
    shared: &Arc<Shared>,
    relay: &Relay,
    pid: i32,
    dns: [i32; 2],
) -> Result<(), String> {
    let Some(upstream) = relay
        .upstream
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return Err("the resolver's sockets were handed over already".into());
    };
    let pidfd = helper::pidfd_open_flags(pid, 0).map_err(|e| format!("pidfd of {pid}: {e}"))?;
    let take = |fd: i32| {
        notif::pidfd_getfd(&pidfd, fd).map_err(|e| format!("resolver fd {fd} of {pid}: {e}"))
    };
    let (udp, tcp) = (take(dns[0])?, take(dns[1])?);
    let ns = super::relay::netns_inode(&udp)
        .map_err(|e| format!("the network namespace of the resolver's socket: {e}"))?;
    let _ = relay.sandbox_ns.set(ns);
    let _t = crate::timing::span("resolver-start");
    resolver::serve(shared.clone(), udp, tcp, None, upstream).map_err(|e| e.to_string())
}

fn serve_listener(shared: &Arc<Shared>, listener: Arc<OwnedFd>) {
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if !revents.contains(PollFlags::POLLIN) {
            // Every process using this filter is gone.
            return;
        }
        match notif::recv(&listener) {
            Ok(req) => notify::handle(shared, &listener, &req),
            Err(Errno::EINTR | Errno::ENOENT) => continue,
            Err(_) => return,
        }
    }
}
