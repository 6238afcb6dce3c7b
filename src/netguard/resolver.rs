//! The container's resolver: listens on the guard's loopback address in the
//! container's network namespace, answers A and AAAA only for names some endpoint's host
//! matches by asking the nameservers the container would have used, refuses every other name,
//! and records the addresses it returned (with their TTL) for the allow decision.
//!
//! Threat: the workload talks to it directly and may flood it (queries, slow TCP clients)
//! or craft queries that smuggle a second name past the check. So: a query has exactly one
//! question; only answer records owned by the asked name, or reached from it through a CNAME
//! chain, count for the decision; UDP queries wait in a bounded queue for a fixed pool of
//! workers (more are dropped, as a busy server would); TCP clients are limited in number,
//! queries and time; the record table is bounded.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag, QTYPE, RCODE, TYPE};

use super::decide;
use super::shared::Shared;
use crate::audit;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// UDP queries waiting for a worker; more are dropped (clients retry).
const UDP_QUEUE: usize = 256;
/// Threads answering UDP queries (each may wait on the upstream).
pub const UDP_WORKERS: usize = 4;
/// TCP clients served at once; more are closed at once.
pub const TCP_CLIENTS: usize = 16;
/// A TCP client's whole connection, and its idle time between queries.
const TCP_LIFETIME: Duration = Duration::from_secs(10);
const TCP_IDLE: Duration = Duration::from_secs(2);
/// Queries one TCP connection may ask.
const TCP_QUERIES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("entering the container's network namespace: {0}")]
    Netns(String),
    #[error("binding {0}:53: {1}")]
    Bind(Ipv4Addr, nix::Error),
}

/// Run `f` on a thread inside the network namespace `ns` (sockets made there stay there).
fn in_netns<T: Send + 'static>(
    ns: &Arc<OwnedFd>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ResolverError> {
    let ns = ns.clone();
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| ResolverError::Netns(e.to_string()))?;
        Ok(f())
    })
    .join()
    .map_err(|_| ResolverError::Netns("thread panicked".into()))?
}

/// Start the UDP and TCP servers for the container of `shared`.
pub fn start(shared: Arc<Shared>, upstream: Vec<IpAddr>) -> Result<(), ResolverError> {
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", shared.init_pid))
        .map_err(|e| ResolverError::Netns(e.to_string()))?;
    let ns = Arc::new(OwnedFd::from(ns));
    let addr = shared.resolver;
    let (udp, tcp) = in_netns(&ns, move || super::local::resolver_sockets(addr))?
        .map_err(|e| ResolverError::Bind(addr, e))?;
    serve(shared, udp, tcp, Some(ns), upstream)
}

/// Serve on sockets already bound in the container's namespace; `ns`: the namespace the
/// nameservers are asked from (`None`: the guard's own, for a relayed sandbox).
pub fn serve(
    shared: Arc<Shared>,
    udp: OwnedFd,
    tcp: OwnedFd,
    ns: Option<Arc<OwnedFd>>,
    upstream: Vec<IpAddr>,
) -> Result<(), ResolverError> {
    let udp = Arc::new(UdpSocket::from(udp));
    let tcp = TcpListener::from(tcp);
    let up = Arc::new(Upstream {
        ns,
        servers: upstream,
    });

    // Most containers never ask a name: one thread waits for the first query (either
    // socket), and only then are the workers and the TCP server started.
    spawn("resolver-recv", move || {
        wait_readable(&udp, &tcp);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, SocketAddr)>(UDP_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..UDP_WORKERS {
            let (s, u, q, rx) = (shared.clone(), udp.clone(), up.clone(), rx.clone());
            let worker = spawn("resolver-udp", move || loop {
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((query, from)) = job else { return };
                if let Some(reply) = answer(&s, &q, &query, false) {
                    let _ = u.send_to(&reply, from);
                }
            });
            // Fewer workers answer more slowly; none leaves queries unanswered (no egress).
            if let Err(e) = worker {
                tracing::error!("resolver of {}: {e}", shared.id);
            }
        }
        let s = shared.clone();
        if let Err(e) = spawn("resolver-tcp", move || tcp_loop(s, tcp, up)) {
            tracing::error!("resolver of {}: {e}", shared.id);
        }
        udp_loop(udp, tx)
    })
}

/// Wait until a query arrives on either socket.
fn wait_readable(udp: &UdpSocket, tcp: &TcpListener) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [
            PollFd::new(udp.as_fd(), PollFlags::POLLIN),
            PollFd::new(tcp.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(n) if n > 0 => return,
            Err(nix::Error::EINTR) | Ok(_) => continue,
            // Cannot wait: serve at once rather than never.
            Err(_) => return,
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ResolverError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|e| ResolverError::Netns(format!("no thread for the resolver: {e}")))
}

struct Upstream {
    ns: Option<Arc<OwnedFd>>,
    servers: Vec<IpAddr>,
}

impl Upstream {
    /// Ask each nameserver in turn, from inside the container's network namespace. Runs on
    /// a per-query (or per-connection) thread, which enters the namespace itself.
    fn ask(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        if let Some(ns) = &self.ns {
            nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).ok()?;
        }
        self.servers.iter().find_map(|s| {
            let to = SocketAddr::new(*s, 53);
            if tcp {
                ask_tcp(to, query)
            } else {
                ask_udp(to, query)
            }
        })
    }
}

fn ask_udp(to: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let local: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(local).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    s.connect(to).ok()?;
    s.send(query).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn ask_tcp(to: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let by = Instant::now() + UPSTREAM_TIMEOUT;
    let mut s = TcpStream::connect_timeout(&to, UPSTREAM_TIMEOUT).ok()?;
    write_all_by(&mut s, &(query.len() as u16).to_be_bytes(), by)?;
    write_all_by(&mut s, query, by)?;
    read_framed(&mut s, by)
}

/// One length-prefixed DNS message, all of it before `deadline`.
fn read_framed(s: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    read_exact_by(s, &mut len, deadline)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    read_exact_by(s, &mut buf, deadline)?;
    Some(buf)
}

/// What is left until `deadline` (`None` once it has passed).
fn left_until(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// `read_exact` bounded by `deadline` as a whole: each read waits only for what is left, so a
/// peer trickling a byte at a time cannot hold the connection (and its thread) past it.
fn read_exact_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Option<()> {
    let mut done = 0;
    while done < buf.len() {
        s.set_read_timeout(Some(left_until(deadline)?)).ok()?;
        match s.read(&mut buf[done..]) {
            Ok(0) => return None,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(())
}

/// `write_all` bounded by `deadline` as a whole (a peer that reads slowly is cut off too).
fn write_all_by(s: &mut TcpStream, mut data: &[u8], deadline: Instant) -> Option<()> {
    while !data.is_empty() {
        s.set_write_timeout(Some(left_until(deadline)?)).ok()?;
        match s.write(data) {
            Ok(0) => return None,
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(())
}

fn udp_loop(sock: Arc<UdpSocket>, queue: std::sync::mpsc::SyncSender<(Vec<u8>, SocketAddr)>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        // A full queue drops the query, as an overloaded server would.
        let _ = queue.try_send((buf[..n].to_vec(), from));
    }
}

fn tcp_loop(shared: Arc<Shared>, listener: TcpListener, up: Arc<Upstream>) {
    // Counted by handle, not by a counter the client decrements: a thread that has finished
    // its work is still a thread until it is joined, so a new client could otherwise start
    // while the old thread is still exiting and the bound would be one over.
    let mut clients: Vec<std::thread::JoinHandle<()>> = Vec::with_capacity(TCP_CLIENTS);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        reap_finished(&mut clients);
        if clients.len() >= TCP_CLIENTS {
            continue;
        }
        let (s, q) = (shared.clone(), up.clone());
        if let Ok(t) = std::thread::Builder::new()
            .name("resolver-client".into())
            .spawn(move || serve_tcp(&s, &q, conn))
        {
            clients.push(t);
        }
    }
}

/// Join the client threads that have finished (joining waits for the thread to be gone).
fn reap_finished(clients: &mut Vec<std::thread::JoinHandle<()>>) {
    let mut i = 0;
    while i < clients.len() {
        if clients[i].is_finished() {
            let _ = clients.swap_remove(i).join();
        } else {
            i += 1;
        }
    }
}

fn serve_tcp(shared: &Shared, up: &Upstream, mut conn: TcpStream) {
    let end = Instant::now() + TCP_LIFETIME;
    for _ in 0..TCP_QUERIES {
        // Each query within the idle time, and all of them within the connection's lifetime.
        let by = end.min(Instant::now() + TCP_IDLE);
        let Some(query) = read_framed(&mut conn, by) else {
            return;
        };
        let Some(reply) = answer(shared, up, &query, true) else {
            return;
        };
        let framed = [&(reply.len() as u16).to_be_bytes()[..], &reply].concat();
        if write_all_by(&mut conn, &framed, end.min(Instant::now() + TCP_IDLE)).is_none() {
            return;
        }
    }
}

/// A reply with `rcode` and the query's question, no answers.
fn bare_reply(q: &Packet, rcode: RCODE) -> Option<Vec<u8>> {
    let mut r = Packet::new_reply(q.id());
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if q.has_flags(PacketFlag::RECURSION_DESIRED) {
        r.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    r.questions = q.questions.clone();
    *r.rcode_mut() = rcode;
    r.build_bytes_vec().ok()
}

/// Extended DNS Error (RFC 8914) option code, and its info code 15, "Blocked": refused by
/// the resolver operator's policy.
const EDE_OPTION: u16 = 15;
const EDE_BLOCKED: u16 = 15;
pub const EDE_TEXT: &str = "blocked by nemosandbox policy";

/// REFUSED for a name the policy does not allow, telling a client that shows Extended DNS
/// Errors (dig, systemd-resolved) why. Only a query that itself used EDNS gets the OPT
/// record back (RFC 6891: a responder must not add one otherwise).
fn policy_refusal(q: &Packet) -> Option<Vec<u8>> {
    let mut r = Packet::new_reply(q.id());
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if q.has_flags(PacketFlag::RECURSION_DESIRED) {
        r.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    r.questions = q.questions.clone();
    *r.rcode_mut() = RCODE::Refused;
    if q.opt().is_some() {
        let mut data = EDE_BLOCKED.to_be_bytes().to_vec();
        data.extend_from_slice(EDE_TEXT.as_bytes());
        *r.opt_mut() = Some(simple_dns::rdata::OPT {
            opt_codes: vec![simple_dns::rdata::OPTCode {
                code: EDE_OPTION,
                data: data.into(),
            }],
            udp_packet_size: 1232,
            version: 0,
        });
    }
    r.build_bytes_vec().ok()
}

/// The reply to one query (`None`: drop it).
fn answer(shared: &Shared, up: &Upstream, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    if q.questions.len() != 1 {
        // Several questions would let a refused name ride along with an allowed one.
        shared.audit(
            audit::Event::new(
                audit::Kind::Dns,
                audit::Decision::Refused,
                "network guard",
                "a query must ask exactly one question",
            )
            // A few names are evidence enough; a 64 KiB query holds thousands.
            .request(serde_json::json!({
                "questions": q.questions.len(),
                "names": q.questions.iter().take(4).map(|x| {
                    let n = x.qname.to_string();
                    n.chars().take(255).collect::<String>()
                }).collect::<Vec<_>>()
            })),
        );
        return bare_reply(&q, RCODE::Refused);
    }
    let question = q.questions.first()?;
    let name = question.qname.to_string();
    let policies = shared.current();
    if !decide::name_allowed(&policies.policies, &name) {
        shared.audit(
            audit::Event::new(
                audit::Kind::Dns,
                audit::Decision::Refused,
                "network_policies",
                "no endpoint's host matches this name",
            )
            .request(serde_json::json!({"name": name})),
        );
        return policy_refusal(&q);
    }
    let wanted = matches!(
        question.qtype,
        QTYPE::TYPE(TYPE::A) | QTYPE::TYPE(TYPE::AAAA)
    );
    if !wanted {
        // Allowed name, other record type: no data, so clients fall back to A/AAAA.
        return bare_reply(&q, RCODE::NoError);
    }
    let Some(reply) = up.ask(query, tcp) else {
        return bare_reply(&q, RCODE::ServerFailure);
    };
    if let Ok(r) = Packet::parse(&reply) {
        for (ip, ttl) in addresses_for(&name, &r) {
            shared.answers.record(&name, ip, ttl);
        }
    }
    Some(reply)
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// The addresses an answer gives for `name`: A/AAAA records owned by `name` or by a name a
/// CNAME chain from `name` leads to. Records for any other owner are ignored: a reply may
/// carry them, but they answer nothing that was asked.
pub fn addresses_for(name: &str, reply: &Packet) -> Vec<(IpAddr, Duration)> {
    let mut owners = vec![name.to_string()];
    // Each pass follows one more link; a chain longer than the answer section cannot exist.
    for _ in 0..reply.answers.len() {
        let mut grew = false;
        for rr in &reply.answers {
            if let RData::CNAME(target) = &rr.rdata {
                let owner = rr.name.to_string();
                let target = target.0.to_string();
                if owners.iter().any(|o| same_name(o, &owner))
                    && !owners.iter().any(|o| same_name(o, &target))
                {
                    owners.push(target);
                    grew = true;
                }
            }
        }
        if !grew {
            break;
        }
    }
    reply
        .answers
        .iter()
        .filter(|rr| owners.iter().any(|o| same_name(o, &rr.name.to_string())))
        .filter_map(|rr| {
            let ip = match &rr.rdata {
                RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
                RData::AAAA(a) => IpAddr::V6(Ipv6Addr::from(a.address)),
                _ => return None,
            };
            Some((ip, Duration::from_secs(rr.ttl.into())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickled_query_ends_at_the_deadline_and_a_prompt_one_is_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The attacker: a frame announcing 512 bytes, then one byte every 50 ms.
        let trickler = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            let _ = c.write_all(&512u16.to_be_bytes());
            for _ in 0..100 {
                if c.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let (mut conn, _) = listener.accept().unwrap();
        let started = Instant::now();
        // Each byte comes well within a per-read timeout of 300 ms; the whole frame never does.
        let got = read_framed(&mut conn, Instant::now() + Duration::from_millis(300));
        assert_eq!(got, None);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "held for {took:?}");
        drop(conn);
        trickler.join().unwrap();

        // The allowed twin: a whole frame at once is read.
        let prompt = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(&[0, 3, b'a', b'b', b'c']).unwrap();
        });
        let (mut conn, _) = listener.accept().unwrap();
        let got = read_framed(&mut conn, Instant::now() + Duration::from_secs(5));
        assert_eq!(got.as_deref(), Some(&b"abc"[..]));
        prompt.join().unwrap();
    }

    #[test]
    fn only_the_asked_name_and_its_cname_chain_count() {
        use simple_dns::{Name, ResourceRecord, CLASS};
        let mut r = Packet::new_reply(1);
        let rr = |owner: &'static str, data: RData<'static>| {
            ResourceRecord::new(Name::new_unchecked(owner), CLASS::IN, 60, data)
        };
        r.answers.push(rr(
            "api.example.com",
            RData::CNAME(simple_dns::rdata::CNAME(Name::new_unchecked(
                "edge.cdn.net",
            ))),
        ));
        r.answers.push(rr(
            "edge.cdn.net",
            RData::A(simple_dns::rdata::A {
                address: 0xcb007101,
            }),
        ));
        r.answers.push(rr(
            "evil.example.org",
            RData::A(simple_dns::rdata::A {
                address: 0xcb007163,
            }),
        ));
        let got: Vec<IpAddr> = addresses_for("API.example.com.", &r)
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        assert_eq!(got, vec!["203.0.113.1".parse::<IpAddr>().unwrap()]);
    }

    fn query(edns: bool) -> Vec<u8> {
        let mut q = Packet::new_query(7);
        q.set_flags(PacketFlag::RECURSION_DESIRED);
        q.questions.push(simple_dns::Question::new(
            simple_dns::Name::new_unchecked("evil.example"),
            QTYPE::TYPE(TYPE::A),
            simple_dns::QCLASS::CLASS(simple_dns::CLASS::IN),
            false,
        ));
        if edns {
            *q.opt_mut() = Some(simple_dns::rdata::OPT {
                opt_codes: Vec::new(),
                udp_packet_size: 1232,
                version: 0,
            });
        }
        q.build_bytes_vec().unwrap()
    }

    #[test]
    fn a_refused_name_says_why_to_clients_that_speak_edns() {
        let bytes = query(true);
        let q = Packet::parse(&bytes).unwrap();
        let reply = policy_refusal(&q).unwrap();
        let r = Packet::parse(&reply).unwrap();
        assert_eq!(r.rcode(), RCODE::Refused);
        let opt = r.opt().expect("an OPT record");
        let ede = &opt.opt_codes[0];
        assert_eq!(ede.code, EDE_OPTION);
        assert_eq!(&ede.data[..2], &EDE_BLOCKED.to_be_bytes());
        assert_eq!(&ede.data[2..], EDE_TEXT.as_bytes());
        // Without EDNS in the query, none in the reply.
        let bytes = query(false);
        let plain = Packet::parse(&bytes).unwrap();
        let reply = policy_refusal(&plain).unwrap();
        assert!(Packet::parse(&reply).unwrap().opt().is_none());
    }
}
