//! `fs` events from the kernel's own audit records of Landlock denials (Linux 6.15,
//! Landlock ABI 7).
//!
//! The container's Landlock domains are created with "log after exec" on, so when the kernel's
//! audit is enabled (auditd running, or `audit=1`) each denied file access of the workload
//! becomes a `LANDLOCK_ACCESS` record, and each domain's first denial a `LANDLOCK_DOMAIN`
//! record naming the process that created the domain. The container's helper reads every
//! record through the audit netlink multicast group (read-only: it does not replace auditd)
//! and keeps those of domains created by a process of this container.
//!
//! Threat: the records are the whole node's, and the workload chooses how many denials it
//! causes. So only records of domains this container created count, the state kept per
//! domain is bounded, and the events go through the same merging as the guard's.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{Decision, Event, Kind};

const NETLINK_AUDIT: i32 = 9;
const AUDIT_GET: u16 = 1000;
const AUDIT_NLGRP_READLOG: u32 = 1;
const LANDLOCK_ACCESS: u16 = 1423;
const LANDLOCK_DOMAIN: u16 = 1424;
/// Domains remembered (ours or not); beyond it the memory starts over.
const MAX_DOMAINS: usize = 4096;
/// Denials held for a domain not yet known to be ours (its record comes right after).
const MAX_PENDING: usize = 256;

fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned by the OwnedFd below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_AUDIT,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the kernel's audit is enabled (`AUDIT_GET`); `Err` when it cannot be asked
/// (no audit support, or no CAP_AUDIT_CONTROL).
pub fn enabled() -> std::io::Result<bool> {
    let s = socket()?;
    let mut req = [0u8; 16];
    req[0..4].copy_from_slice(&16u32.to_ne_bytes());
    req[4..6].copy_from_slice(&AUDIT_GET.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: send/recv on an owned socket with buffers of the lengths given.
    if unsafe { libc::send(s.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    set_timeout(&s, Duration::from_secs(1));
    let mut buf = [0u8; 8192];
    // SAFETY: as above.
    let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let msg = &buf[..n as usize];
    if msg.len() < 16 + 8 {
        return Err(std::io::Error::other("short audit reply"));
    }
    let typ = u16::from_ne_bytes([msg[4], msg[5]]);
    if typ == libc::NLMSG_ERROR as u16 {
        let errno = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
        return Err(std::io::Error::from_raw_os_error(-errno));
    }
    // struct audit_status: mask, then enabled.
    Ok(u32::from_ne_bytes([msg[20], msg[21], msg[22], msg[23]]) != 0)
}

fn set_timeout(s: &OwnedFd, d: Duration) {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with a timeval of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
}

/// A socket receiving every audit record of the node (needs CAP_AUDIT_READ).
pub fn subscribe() -> std::io::Result<OwnedFd> {
    let s = socket()?;
    // SAFETY: a zeroed sockaddr_nl is valid; bind with its size.
    let rc = unsafe {
        let mut a: libc::sockaddr_nl = std::mem::zeroed();
        a.nl_family = libc::AF_NETLINK as u16;
        a.nl_groups = 1 << (AUDIT_NLGRP_READLOG - 1);
        libc::bind(
            s.as_raw_fd(),
            (&a as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    set_timeout(&s, Duration::from_secs(1));
    Ok(s)
}

/// `key=value` pairs of an audit record's text (after `audit(…): `). Values are quoted, or
/// hex when the kernel thought them untrusted, or bare.
pub fn fields(text: &str) -> Vec<(String, String)> {
    let body = text.split_once("): ").map_or(text, |(_, b)| b);
    let mut out = Vec::new();
    let mut rest = body.trim_start();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_string();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let raw = &after[..end];
            // Only the untrusted strings are ever hex; a number such as a pid may look like hex.
            let value = match UNTRUSTED.contains(&key.as_str()) {
                true => unhex(raw).unwrap_or_else(|| raw.to_string()),
                false => raw.to_string(),
            };
            (value, &after[end..])
        };
        out.push((key, value));
        rest = next.trim_start();
    }
    out
}

/// Fields the kernel writes with `audit_log_untrustedstring`: quoted, or hex when they hold
/// spaces, quotes or control characters.
const UNTRUSTED: [&str; 5] = ["path", "exe", "comm", "dev", "name"];

/// A hex-encoded untrusted string.
fn unhex(raw: &str) -> Option<String> {
    if raw.len() < 2 || raw.len() % 2 != 0 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..raw.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&raw[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn get<'a>(f: &'a [(String, String)], key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// One denial the kernel reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub domain: String,
    pub blockers: String,
    pub path: Option<String>,
    pub time: String,
}

impl Denial {
    pub fn event(&self) -> Event {
        Event::new(
            Kind::Fs,
            Decision::Denied,
            "landlock",
            format!(
                "the kernel refused {} (filesystem_policy)",
                self.blockers.replace(',', ", ")
            ),
        )
        .request(serde_json::json!({
            "path": self.path,
            "access": self.blockers.split(',').collect::<Vec<_>>(),
            "landlock_domain": self.domain,
        }))
    }
}

/// Which domains are this container's, and the denials waiting for that answer.
pub struct Tracker {
    /// Decides whether the process that created a domain is one of this container's.
    ours: Box<dyn Fn(i32) -> bool + Send>,
    domains: HashMap<String, bool>,
    pending: std::collections::VecDeque<Denial>,
}

impl Tracker {
    pub fn new(ours: Box<dyn Fn(i32) -> bool + Send>) -> Tracker {
        Tracker {
            ours,
            domains: HashMap::new(),
            pending: std::collections::VecDeque::new(),
        }
    }

    /// Take one record; returns the denials now known to be this container's.
    pub fn record(&mut self, typ: u16, text: &str) -> Vec<Denial> {
        let f = fields(text);
        let Some(domain) = get(&f, "domain").map(str::to_string) else {
            return Vec::new();
        };
        match typ {
            LANDLOCK_ACCESS => {
                let blockers = get(&f, "blockers").unwrap_or_default().to_string();
                if !blockers.split(',').any(|b| b.starts_with("fs.")) {
                    return Vec::new();
                }
                let d = Denial {
                    domain: domain.clone(),
                    blockers,
                    path: get(&f, "path").map(str::to_string),
                    time: super::now(),
                };
                match self.domains.get(&domain) {
                    Some(true) => vec![d],
                    Some(false) => Vec::new(),
                    None => {
                        // The domain's own record follows at once; the oldest waiting go
                        // first, so what never gets an answer cannot block what does.
                        if self.pending.len() >= MAX_PENDING {
                            self.pending.pop_front();
                        }
                        self.pending.push_back(d);
                        Vec::new()
                    }
                }
            }
            LANDLOCK_DOMAIN => {
                if get(&f, "status") == Some("deallocated") {
                    self.domains.remove(&domain);
                    return Vec::new();
                }
                let ours = get(&f, "pid")
                    .and_then(|p| p.parse().ok())
                    .is_some_and(|pid| (self.ours)(pid));
                if self.domains.len() >= MAX_DOMAINS {
                    // Other containers' domains go first: a flood of them must not make this
                    // container forget its own (the kernel names a domain only once).
                    self.domains.retain(|_, ours| *ours);
                    if self.domains.len() >= MAX_DOMAINS {
                        self.domains.clear();
                    }
                }
                self.domains.insert(domain.clone(), ours);
                let (mine, rest): (Vec<Denial>, Vec<Denial>) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|d| d.domain == domain);
                self.pending = rest.into();
                if ours {
                    mine
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }
}

/// Whether `pid` belongs to the container whose init is `init`: in each cgroup hierarchy, at
/// the init's cgroup or below it. Cgroups, not the pid namespace, because pods may share
/// one pid namespace between containers.
pub fn same_container(init: i32, pid: i32) -> bool {
    let read = |p: i32| -> Option<Vec<(String, String)>> {
        let text = std::fs::read_to_string(format!("/proc/{p}/cgroup")).ok()?;
        Some(
            text.lines()
                .filter_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (id, ctrl, path) = (parts.next()?, parts.next()?, parts.next()?);
                    Some((format!("{id}:{ctrl}"), path.to_string()))
                })
                .collect(),
        )
    };
    let (Some(theirs), Some(ours)) = (read(pid), read(init)) else {
        return false;
    };
    let below = |path: &str, base: &str| {
        base != "/"
            && (path == base
                || path
                    .strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with('/')))
    };
    let matches =
        |h: &String, base: &String| theirs.iter().any(|(k, path)| k == h && below(path, base));
    // The unified hierarchy says it all where the container has a place in it; otherwise
    // every controller the container was placed in must agree. Named hierarchies
    // (`name=systemd`) are the engine's bookkeeping, not the container's.
    if let Some((h, base)) = ours.iter().find(|(h, b)| h == "0:" && b != "/") {
        return matches(h, base);
    }
    let placed: Vec<&(String, String)> = ours
        .iter()
        .filter(|(h, b)| b != "/" && !h.contains("name="))
        .collect();
    !placed.is_empty() && placed.iter().all(|(h, base)| matches(h, base))
}

/// Read records from `sock` until `stop` says so (then what is still queued, for at most
/// half a second: the kernel delivers records from its own thread), handing this container's
/// denials to `out` and calling `tick` once a second whatever the traffic.
pub fn watch(
    sock: &OwnedFd,
    tracker: &mut Tracker,
    out: &dyn Fn(Event),
    tick: &dyn Fn(),
    stop: &dyn Fn() -> bool,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut stopping: Option<std::time::Instant> = None;
    let mut last_tick = std::time::Instant::now();
    loop {
        if last_tick.elapsed() >= Duration::from_secs(1) {
            tick();
            last_tick = std::time::Instant::now();
        }
        match stopping {
            None if stop() => {
                stopping = Some(std::time::Instant::now());
                set_timeout(sock, Duration::from_millis(100));
            }
            Some(t) if t.elapsed() >= Duration::from_millis(500) => return,
            _ => {}
        }
        // SAFETY: a zeroed sockaddr_nl is valid; recvfrom into buffers of the sizes given.
        let (n, sender) = unsafe {
            let mut from: libc::sockaddr_nl = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            let n = libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_nl).cast(),
                &mut len,
            );
            (n, from.nl_pid)
        };
        if n <= 0 {
            if stopping.is_some() {
                return;
            }
            continue;
        }
        // Only the kernel (port 0) speaks for the kernel.
        let msg = &buf[..n as usize];
        if sender != 0 || msg.len() < 16 {
            continue;
        }
        let typ = u16::from_ne_bytes([msg[4], msg[5]]);
        if typ != LANDLOCK_ACCESS && typ != LANDLOCK_DOMAIN {
            continue;
        }
        // One record per message. Its header's length is not to be trusted (audit records
        // historically count only the payload), so the payload is the rest of the datagram.
        let text = String::from_utf8_lossy(&msg[16..]);
        for d in tracker.record(typ, text.trim_end_matches('\0')) {
            out(d.event());
        }
    }
}

/// The helper's service reading the records for one container.
pub struct FsAudit {
    sock: OwnedFd,
    init_pid: i32,
    throttle: std::sync::Arc<super::Throttle>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FsAudit {
    /// Subscribe now (before the container starts), so no record is missed.
    pub fn new(init_pid: i32, out: super::Recorder) -> std::io::Result<FsAudit> {
        Ok(FsAudit {
            sock: subscribe()?,
            init_pid,
            throttle: std::sync::Arc::new(super::Throttle::new(out.background())),
            stop: std::sync::Arc::default(),
            thread: None,
        })
    }
}

impl crate::helper::HelperService for FsAudit {
    fn name(&self) -> &'static str {
        "kernel audit reader"
    }

    fn keep_fds(&self) -> Vec<i32> {
        vec![self.sock.as_raw_fd()]
    }

    /// Reads on a thread of its own and returns at once: the guard, when there is one, runs
    /// after it in the same process.
    fn run(&mut self, _init_exit: &OwnedFd) {
        let Ok(sock) = self.sock.try_clone() else {
            return;
        };
        let (throttle, stop, init) = (self.throttle.clone(), self.stop.clone(), self.init_pid);
        let spawned = std::thread::Builder::new()
            .name("fs-audit".into())
            .spawn(move || {
                // The init is this container's even when it is gone by the time its record
                // arrives; other processes are judged while they exist.
                let mut tracker = Tracker::new(Box::new(move |pid| {
                    pid == init || same_container(init, pid)
                }));
                watch(
                    &sock,
                    &mut tracker,
                    &|ev| throttle.record(&ev),
                    &|| throttle.flush(false),
                    &|| stop.load(std::sync::atomic::Ordering::Relaxed),
                );
            });
        match spawned {
            Ok(t) => self.thread = Some(t),
            Err(e) => tracing::error!("kernel audit reader: {e}"),
        }
    }

    fn finish(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.throttle.flush(true);
        self.throttle.recorder().finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_take_quoted_hex_and_bare_values() {
        let f = fields(
            "audit(1729738800.268:30): domain=1a6fdc66f blockers=fs.write_file path=\"/etc/x\" \
             dev=\"overlay\" ino=351 exe=2F746D702F6120622063",
        );
        assert_eq!(get(&f, "domain"), Some("1a6fdc66f"));
        assert_eq!(get(&f, "path"), Some("/etc/x"));
        assert_eq!(get(&f, "ino"), Some("351"));
        assert_eq!(get(&f, "exe"), Some("/tmp/a b c"));
    }

    #[test]
    fn only_denials_of_our_domains_come_out() {
        let mut t = Tracker::new(Box::new(|pid| pid == 100));
        let access = |d: &str| {
            format!("audit(1.2:3): domain={d} blockers=fs.make_reg path=\"/etc\" dev=\"sda\" ino=2")
        };
        // The access record comes first; the domain record names its creator.
        assert!(t.record(LANDLOCK_ACCESS, &access("aa")).is_empty());
        let got = t.record(
            LANDLOCK_DOMAIN,
            "audit(1.2:3): domain=aa status=allocated mode=enforcing pid=100 uid=0 exe=\"/x\"",
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path.as_deref(), Some("/etc"));
        assert_eq!(t.record(LANDLOCK_ACCESS, &access("aa")).len(), 1);
        // Another container's domain.
        assert!(t.record(LANDLOCK_ACCESS, &access("bb")).is_empty());
        assert!(t
            .record(
                LANDLOCK_DOMAIN,
                "audit(1.2:4): domain=bb status=allocated mode=enforcing pid=200 uid=0"
            )
            .is_empty());
        assert!(t.record(LANDLOCK_ACCESS, &access("bb")).is_empty());
        // Network and scope denials are not fs events.
        assert!(t
            .record(
                LANDLOCK_ACCESS,
                "audit(1.2:5): domain=aa blockers=net.connect_tcp daddr=1.2.3.4 dest=80"
            )
            .is_empty());
    }

    #[test]
    fn numbers_that_look_like_hex_stay_numbers() {
        for pid in [123456, 3132, 10] {
            let mut t = Tracker::new(Box::new(move |p| p == pid));
            t.record(
                LANDLOCK_ACCESS,
                "audit(1.2:3): domain=cc blockers=fs.read_file path=2F6574632F736861646F77",
            );
            let got = t.record(
                LANDLOCK_DOMAIN,
                &format!("audit(1.2:3): domain=cc status=allocated mode=enforcing pid={pid} uid=0"),
            );
            assert_eq!(got.len(), 1, "pid {pid}");
            assert_eq!(got[0].path.as_deref(), Some("/etc/shadow"));
        }
    }

    #[test]
    fn a_flood_of_foreign_domains_does_not_forget_ours() {
        let mut t = Tracker::new(Box::new(|pid| pid == 1));
        let dom = |d: &str, pid: i32| {
            format!("audit(1.2:3): domain={d} status=allocated mode=enforcing pid={pid} uid=0")
        };
        t.record(LANDLOCK_DOMAIN, &dom("mine", 1));
        for i in 0..(MAX_DOMAINS * 2) {
            t.record(LANDLOCK_DOMAIN, &dom(&format!("f{i}"), 2));
        }
        let got = t.record(
            LANDLOCK_ACCESS,
            "audit(1.2:9): domain=mine blockers=fs.write_file path=\"/etc/x\"",
        );
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn pending_denials_are_bounded() {
        let mut t = Tracker::new(Box::new(|_| true));
        for i in 0..(MAX_PENDING * 4) {
            t.record(
                LANDLOCK_ACCESS,
                &format!("audit(1.2:3): domain=d{i} blockers=fs.read_file path=\"/x\""),
            );
        }
        assert_eq!(t.pending.len(), MAX_PENDING);
        // The newest are kept: the last one still finds its domain.
        let last = format!(
            "audit(1.2:3): domain=d{} status=allocated mode=enforcing pid=1 uid=0",
            MAX_PENDING * 4 - 1
        );
        assert_eq!(t.record(LANDLOCK_DOMAIN, &last).len(), 1);
    }
}
