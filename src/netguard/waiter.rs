//! Calls that have to wait — a blocking connect still in its handshake, a send on a full
//! buffer — wait here, on one thread for the whole container, instead of a thread each.
//!
//! Threat: a workload that starts thousands of connects to a peer that never answers, or
//! sends into a peer that never reads, and interrupts each call with a signal, would
//! otherwise pin a guard thread per call for as long as the peer stays silent. Here a waiting
//! call costs a poll slot and the socket descriptor; there are at most `MAX_PENDING`, a call
//! beyond that fails at once with `EAGAIN`, and a call whose caller was interrupted or died
//! is dropped at the next tick.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::notif::{self, Reply};

/// Calls waiting at once, for the whole container.
pub const MAX_PENDING: usize = 1024;
/// How often waiting calls are checked for a caller that gave up, and `tick` runs.
const TICK: Duration = Duration::from_millis(100);

/// What to do when the socket becomes writable: `None` means "not done, wait again".
pub type Ready = Box<dyn FnMut(&OwnedFd) -> Option<Reply> + Send>;

/// One waiting call.
pub struct Pending {
    pub sock: OwnedFd,
    pub listener: Arc<OwnedFd>,
    pub id: u64,
    pub ready: Ready,
}

/// The submitting side, shared by the listener threads.
pub struct Waiter {
    tx: std::sync::Mutex<Sender<Pending>>,
    wake: UnixStream,
    count: Arc<AtomicUsize>,
}

impl Waiter {
    /// Start the waiting thread; `tick` runs on it about every 100 ms.
    pub fn start(tick: Box<dyn Fn() + Send>) -> std::io::Result<Waiter> {
        let (tx, rx) = mpsc::channel();
        let (wake, wake_rx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        std::thread::Builder::new()
            .name("guard-waiter".into())
            .spawn(move || run(rx, wake_rx, c, tick))?;
        Ok(Waiter {
            tx: std::sync::Mutex::new(tx),
            wake,
            count,
        })
    }

    /// Hand a call over; `Err` gives it back when `MAX_PENDING` calls already wait.
    pub fn submit(&self, p: Pending) -> Result<(), Pending> {
        if self.count.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return Err(p);
        }
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(p)
            .map_err(|e| e.0);
        if let Err(p) = sent {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return Err(p);
        }
        use std::io::Write;
        let _ = (&self.wake).write(&[1]);
        Ok(())
    }

    pub fn pending(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

fn run(
    rx: Receiver<Pending>,
    wake: UnixStream,
    count: Arc<AtomicUsize>,
    tick: Box<dyn Fn() + Send>,
) {
    let mut items: Vec<Pending> = Vec::new();
    let mut last_tick = Instant::now();
    loop {
        while let Ok(p) = rx.try_recv() {
            items.push(p);
        }
        let ready: Vec<bool> = {
            let mut fds = Vec::with_capacity(items.len() + 1);
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            for p in &items {
                fds.push(PollFd::new(p.sock.as_fd(), PollFlags::POLLOUT));
            }
            let _ = poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16));
            fds.iter()
                .skip(1)
                .map(|f| {
                    f.revents().is_some_and(|r| {
                        r.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP)
                    })
                })
                .collect()
        };
        let mut drain = [0u8; 64];
        while (&wake).read(&mut drain).is_ok_and(|n| n > 0) {}
        let check_callers = last_tick.elapsed() >= TICK;
        let before = items.len();
        let mut keep = Vec::with_capacity(items.len());
        for (mut p, is_ready) in items
            .drain(..)
            .zip(ready.into_iter().chain(std::iter::repeat(false)))
        {
            if is_ready {
                if let Some(reply) = (p.ready)(&p.sock) {
                    notif::respond(&p.listener, p.id, reply);
                    continue;
                }
            }
            // A caller interrupted by a signal (or gone) no longer waits: drop the call. A
            // connect already started goes on in the kernel, as it would without the guard.
            if check_callers && !notif::valid(&p.listener, p.id) {
                continue;
            }
            keep.push(p);
        }
        items = keep;
        count.fetch_sub(before - items.len(), Ordering::SeqCst);
        if check_callers {
            last_tick = Instant::now();
            tick();
        }
    }
}
