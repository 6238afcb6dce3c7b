//! The per-container layer-7 proxy. The guard connects an allowed socket bound for an
//! endpoint with HTTP rules to this proxy instead of the destination, and tells it first who
//! is coming (by the socket's source port) and where it was going. Nothing in the container
//! is configured for it: clients that ignore proxy variables are covered too.
//!
//! Per connection: a TLS ClientHello is answered with a leaf for its server name minted by
//! the container's CA, after the upstream has been reached and verified for that same name
//! (so a client sees an upstream certificate failure as a failed handshake); anything else is
//! read as plain HTTP. Each request is decided by the endpoint's rules; a refused one gets a
//! 403 with a JSON body and an audit event, and the connection stays usable.
//!
//! Threat: the client is hostile. Its server name and `Host` must be names the guard allowed
//! for this destination (no fronting another name on an allowed address); heads, lines and
//! connections are bounded, idle ones time out, and framing is strict (`http`). A connection
//! the guard did not announce is closed unread. The proxy runs in the guard, so its memory
//! counts in the container's cgroup, and when the guard dies the container's connects fail.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::ca::Ca;
use super::http::{self, Body, Conn, HttpError};
use super::rules::{Rules, Verdict};
use crate::audit;
use crate::netguard::shared::Shared;
use streams::*;
use tls::client_config;

mod streams;
mod tls;

/// Connections served at once; beyond it new ones are closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Announced connections not yet accepted.
const MAX_PENDING: usize = 1024;
/// An announcement not taken within this time is dropped.
const PENDING_TTL: Duration = Duration::from_secs(30);
/// A connection with nothing to read for this long (between requests) is closed.
const IDLE: Duration = Duration::from_secs(60);
/// Time a client has to complete its TLS handshake.
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// How often a tunnel looks at its other direction.
const TUNNEL_POLL: Duration = Duration::from_millis(10);
/// A tunnel with no traffic either way for this long is closed.
const TUNNEL_IDLE: Duration = Duration::from_secs(600);
/// Largest body of a refused request read (and dropped) to keep the connection usable.
const MAX_DISCARD: u64 = 1024 * 1024;

/// What the guard knows of a spliced connection.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Where the client was going.
    pub dest: SocketAddr,
    pub rules: Arc<Rules>,
    /// `tls: skip`: splice bytes unread.
    pub tls_skip: bool,
    /// `protocol: websocket`: upgrades may be allowed.
    pub websocket: bool,
    /// Names the guard allowed this destination for (lower case); the server name and `Host`
    /// must be one of them. For an endpoint given as an IP literal, that literal.
    pub names: Vec<String>,
    /// The policy that allowed the connection (its credentials go back in).
    pub policy: String,
    /// Whether they may: not when only an audit-mode endpoint let the connect by.
    pub secrets: bool,
    /// The policy endpoint, for audit events.
    pub by: String,
    pub pid: i32,
    pub exe: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("layer-7 proxy: {0}")]
    Setup(String),
}

pub struct Proxy {
    addr: SocketAddrV4,
    pending: Mutex<HashMap<u16, (Instant, Flow)>>,
    active: AtomicUsize,
    ca: Ca,
    upstream: Arc<rustls::ClientConfig>,
    /// (placeholder, value) pairs by policy.
    secrets: HashMap<String, Vec<(String, String)>>,
}

impl Proxy {
    /// Start the proxy in the network namespace of `shared.init_pid`, on `ip` (an address of
    /// that namespace's loopback), with the container's CA from its state directory and the
    /// upstream roots (the host's system roots and `extra_roots` PEM files).
    pub fn start(
        shared: Arc<Shared>,
        ip: Ipv4Addr,
        extra_roots: &[std::path::PathBuf],
    ) -> Result<Arc<Proxy>, ProxyError> {
        let setup = |e: String| ProxyError::Setup(e);
        let ca = Ca::load(&shared.own, &shared.id).map_err(|e| setup(e.to_string()))?;
        let upstream = Arc::new(client_config(extra_roots).map_err(setup)?);
        let secrets = super::credentials::load(&shared.own)
            .map(|s| super::credentials::by_policy(&s))
            .map_err(|e| setup(e.to_string()))?;
        let ns: OwnedFd = std::fs::File::open(format!("/proc/{}/ns/net", shared.init_pid))
            .map_err(|e| setup(format!("network namespace: {e}")))?
            .into();
        let (tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("l7-proxy".into())
            .spawn(move || {
                // Every thread this one starts is in the container's namespace too: accepted
                // and upstream sockets are the container's.
                if let Err(e) = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                {
                    let _ = tx.send(Err(format!("entering the network namespace: {e}")));
                    return;
                }
                let listener = match bind(ip) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(format!("listening on {ip}: {e}")));
                        return;
                    }
                };
                let addr = match listener.local_addr() {
                    Ok(SocketAddr::V4(a)) => a,
                    _ => {
                        let _ = tx.send(Err("no local address".into()));
                        return;
                    }
                };
                let proxy = Arc::new(Proxy {
                    addr,
                    pending: Mutex::new(HashMap::new()),
                    active: AtomicUsize::new(0),
                    ca,
                    upstream,
                    secrets,
                });
                let _ = tx.send(Ok(proxy.clone()));
                accept_loop(proxy, s, listener);
            })
            .map_err(|e| setup(format!("no thread: {e}")))?;
        rx.recv()
            .map_err(|_| setup("the proxy thread ended".into()))?
            .map_err(setup)
    }

    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Announce a connection from source port `port`. Refused when too many are pending.
    pub fn expect(&self, port: u16, flow: Flow) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() >= MAX_PENDING {
            p.retain(|_, (t, _)| t.elapsed() < PENDING_TTL);
            if p.len() >= MAX_PENDING {
                return false;
            }
        }
        // A live announcement for this port is never replaced: the first socket keeps it.
        if p.get(&port).is_some_and(|(t, _)| t.elapsed() < PENDING_TTL) {
            return false;
        }
        p.insert(port, (Instant::now(), flow));
        true
    }

    fn take(&self, peer: SocketAddr) -> Option<Flow> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(&peer.port())
            .filter(|(t, _)| t.elapsed() < PENDING_TTL && peer.ip().is_loopback())
            .map(|(_, f)| f)
    }
}

fn bind(ip: Ipv4Addr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let _ = socket::setsockopt(&fd, sockopt::IpFreebind, &true);
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(ip, 0)),
    )?;
    socket::listen(
        &fd,
        socket::Backlog::new(1024).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    Ok(TcpListener::from(fd))
}

fn accept_loop(proxy: Arc<Proxy>, shared: Arc<Shared>, listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            // Out of descriptors or memory: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Some(flow) = conn.peer_addr().ok().and_then(|p| proxy.take(p)) else {
            continue;
        };
        if proxy.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            proxy.active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (p, s) = (proxy.clone(), shared.clone());
        let spawned = std::thread::Builder::new()
            .name("l7-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let c = Client {
                    proxy: &p,
                    shared: &s,
                    flow,
                };
                c.serve(conn);
                p.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            proxy.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

struct Client<'a> {
    proxy: &'a Proxy,
    shared: &'a Shared,
    flow: Flow,
}

impl Client<'_> {
    fn event(&self, decision: audit::Decision, why: &str, request: serde_json::Value) {
        let why = clip(why, 512);
        let ev = audit::Event::new(audit::Kind::Http, decision, self.flow.by.as_str(), why)
            .pid(self.flow.pid)
            .executable(self.flow.exe.as_str())
            .request(request);
        self.shared.audit(ev);
    }

    fn serve(&self, conn: TcpStream) {
        let _ = conn.set_read_timeout(Some(IDLE));
        let _ = conn.set_write_timeout(Some(IDLE));
        let _ = conn.set_nodelay(true);
        if self.flow.tls_skip {
            return self.tunnel_plain(conn);
        }
        let mut first = [0u8; 1];
        match conn.peek(&mut first) {
            Ok(1) if first[0] == 0x16 => self.tls(conn),
            Ok(1) => self.plain(conn),
            _ => {}
        }
    }

    fn dial(&self) -> std::io::Result<TcpStream> {
        let up = TcpStream::connect_timeout(&self.flow.dest, Duration::from_secs(15))?;
        up.set_read_timeout(Some(IDLE))?;
        up.set_write_timeout(Some(IDLE))?;
        let _ = up.set_nodelay(true);
        Ok(up)
    }

    fn allowed_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.flow.names.contains(&name)
    }

    /// `tls: skip`: the bytes go through unread.
    fn tunnel_plain(&self, conn: TcpStream) {
        let Ok(up) = self.dial() else { return };
        let (Ok(c2), Ok(u2)) = (conn.try_clone(), up.try_clone()) else {
            return;
        };
        let t = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || pump(u2, c2));
        pump(conn, up);
        if let Ok(t) = t {
            let _ = t.join();
        }
    }

    fn plain(&self, conn: TcpStream) {
        let Ok(up) = self.dial() else { return };
        let host_ok = |h: &str| self.allowed_name(h);
        // Credentials travel only inside a verified TLS session.
        let clock = Clock::default();
        let client = Conn::new(Timed::new(conn, clock.clone()));
        self.exchange(client, Conn::new(up), &host_ok, &clock, false);
    }

    /// Requests in turn on one connection: each decided, allowed ones forwarded with their
    /// bodies and answered with the upstream's response.
    fn exchange<C: Read + Write + Socket, U: Read + Write + Socket>(
        &self,
        mut client: Conn<C>,
        mut up: Conn<U>,
        host_ok: &dyn Fn(&str) -> bool,
        clock: &Clock,
        tls: bool,
    ) {
        let secrets = match self.proxy.secrets.get(&self.flow.policy) {
            Some(pairs) if tls && self.flow.secrets => pairs.as_slice(),
            _ => &[],
        };
        // Head reads are paced through the clock the client's socket reads by.
        let mut pace = |t: Option<Duration>| clock.set(t.map(|t| Instant::now() + t));
        loop {
            let head = match client.read_head_within(http::HEAD_TIME, &mut pace) {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => return self.bad(&mut client, &e),
            };
            let req = match http::parse_request(&head) {
                Ok(r) => r,
                Err(e) => return self.bad(&mut client, &e),
            };
            let what = serde_json::json!({
                "method": req.method,
                "path": clip(&req.target, 256),
                "destination": self.flow.dest.to_string(),
            });
            let host = req
                .header("host")
                .and_then(|h| std::str::from_utf8(h).ok())
                .map(strip_port)
                .unwrap_or_default();
            let upgrade = req.header("upgrade").is_some();
            let verdict = if !host_ok(host) {
                Verdict::Deny(format!("Host {host:?} is not the allowed server name"))
            } else if upgrade && !self.flow.websocket {
                Verdict::Deny("protocol upgrades need `protocol: websocket`".into())
            } else if upgrade && !websocket_request(&req) {
                Verdict::Deny("only websocket upgrades (Upgrade: websocket, a key)".into())
            } else if req.method == "TRACE" {
                Verdict::Deny("TRACE echoes the request, credentials included".into())
            } else if let Some(h) = METHOD_OVERRIDES.iter().find(|h| req.header(h).is_some()) {
                Verdict::Deny(format!("{h} would change the request after the decision"))
            } else if overrides_in_query(&req.target) {
                Verdict::Deny(
                    "_method in the query would change the method after the decision".into(),
                )
            } else {
                self.flow.rules.decide(&req.method, &req.target)
            };
            if let Verdict::Deny(why) = verdict {
                self.event(audit::Decision::Denied, &why, what);
                let keep = match req.body {
                    Body::None => true,
                    Body::Length(n) if n <= MAX_DISCARD => client.copy_body(req.body, None).is_ok(),
                    _ => false,
                } && req.keep_alive();
                let body = serde_json::json!({
                    "error": "denied by policy",
                    "policy": self.flow.by,
                    "reason": why,
                });
                let _ = client
                    .stream
                    .write_all(&http::reply(403, "Forbidden", &body, !keep));
                let _ = client.stream.flush();
                if keep {
                    continue;
                }
                return linger(client.stream.socket());
            }
            let head = if secrets.is_empty() {
                head
            } else {
                super::credentials::substitute(&head, secrets)
            };
            if send(&head, req.body, &mut client, &mut up.stream).is_err() {
                return;
            }
            // Interim responses (100 Continue, 103) go through; the final one follows.
            let (rhead, resp) = loop {
                let Ok(Some(rhead)) = up.read_head() else {
                    return;
                };
                let Ok(resp) = http::parse_response(&rhead, req.method == "HEAD") else {
                    return;
                };
                let rhead = if secrets.is_empty() {
                    rhead
                } else {
                    super::credentials::mask(&rhead, secrets)
                };
                if (100..200).contains(&resp.status) && resp.status != 101 {
                    if client.stream.write_all(&rhead).is_err() || client.stream.flush().is_err() {
                        return;
                    }
                    continue;
                }
                break (rhead, resp);
            };
            if resp.status == 101 && !(upgrade && resp.upgrade_websocket) {
                // A switch nobody asked for, or to another protocol: no unread tunnel.
                return;
            }
            if resp.status == 101 {
                if client.stream.write_all(&rhead).is_err() || client.stream.flush().is_err() {
                    return;
                }
                return tunnel(client, up);
            }
            if send(&rhead, resp.body, &mut up, &mut client.stream).is_err()
                || resp.close
                || !req.keep_alive()
            {
                return;
            }
        }
    }

    fn bad<C: Read + Write + Socket>(&self, client: &mut Conn<C>, e: &HttpError) {
        if matches!(e, HttpError::Io(_)) {
            return;
        }
        self.event(
            audit::Decision::Denied,
            &format!("malformed request: {e}"),
            serde_json::json!({"destination": self.flow.dest.to_string()}),
        );
        let (status, reason) = match e {
            HttpError::Slow(_) => (408, "Request Timeout"),
            HttpError::TooLarge => (431, "Request Header Fields Too Large"),
            _ => (400, "Bad Request"),
        };
        let body = serde_json::json!({"error": reason, "reason": e.to_string()});
        let _ = client
            .stream
            .write_all(&http::reply(status, reason, &body, true));
        let _ = client.stream.flush();
        linger(client.stream.socket());
    }
}

/// Headers with which frameworks let a request name another method or path than the one
/// the rules decided on.
const METHOD_OVERRIDES: [&str; 6] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
];

/// Text from a request as recorded in an audit event: at most `max` bytes, so a long refused
/// path cannot swell the trail or its rate-limit keys.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A query that asks the framework for another method (`_method=DELETE`).
fn overrides_in_query(target: &str) -> bool {
    target.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|p| p.to_ascii_lowercase().starts_with("_method="))
    })
}

/// A websocket opening handshake: `Upgrade: websocket`, `Connection: upgrade`, a key.
fn websocket_request(req: &http::Request) -> bool {
    req.header("upgrade")
        .is_some_and(|u| u.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        && req.lists("connection", "upgrade")
        && req.header("sec-websocket-key").is_some()
        && req.method == "GET"
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}
