//! Layer-7 rules of `protocol: rest` endpoints, from inside real containers: the guard splices
//! allowed connects into the container's proxy, which terminates TLS with the container's CA,
//! decides each request and verifies the upstream against the roots the node trusts.
//!
//! Upstreams live in a test network namespace: `api.test` (HTTPS, a certificate from a test
//! root the node configuration trusts), `bad.test` (HTTPS, a self-signed certificate nobody
//! trusts) and `plain.test` (HTTP on port 80). They record every request that reaches them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::net::*;
use common::probe::*;
use common::*;

type Seen = Arc<Mutex<Vec<String>>>;

/// A test root and a leaf for `name` signed by it (or self-signed when `root` is `None`).
fn leaf(
    name: &str,
    root: Option<&rcgen::Issuer<'static, rcgen::KeyPair>>,
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let cert = match root {
        Some(r) => params.signed_by(&key, r).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

fn test_root() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nemosandbox test root");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (rcgen::Issuer::new(params, key), cert.pem())
}

/// Serve HTTP/1.1 (keep-alive, Content-Length bodies) on one connection: each request is
/// recorded as `host METHOD path auth=…` and answered 200.
fn serve_http<S: Read + Write>(stream: &mut S, host: &str, seen: &Seen) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0usize;
        let mut auth = String::new();
        let mut upgrade = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("authorization") {
                auth = v.trim().to_string();
            }
            upgrade |= k.eq_ignore_ascii_case("upgrade");
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock()
            .unwrap()
            .push(format!("{host} {method} {path} auth={auth}"));
        if upgrade {
            // An echo tunnel after the switch.
            let s = reader.get_mut();
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            );
            let _ = s.flush();
            let mut buf = [0u8; 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let s = reader.get_mut();
                        if s.write_all(&buf[..n]).is_err() || s.flush().is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let text = format!("{method} {path}\n");
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\necho: {auth}\r\n\r\n{text}",
            text.len()
        );
        let s = reader.get_mut();
        if s.write_all(reply.as_bytes()).is_err() || s.flush().is_err() {
            return;
        }
    }
}

/// Listen on `addr` inside the namespace at `netns`; each connection served on its own thread.
fn listen_in(netns: &str, addr: SocketAddrV4) -> TcpListener {
    let ns = std::fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        TcpListener::bind(addr).unwrap()
    })
    .join()
    .unwrap()
}

fn https_server(
    netns: &str,
    addr: SocketAddrV4,
    host: &'static str,
    cert: (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    seen: Seen,
) {
    let l = listen_in(netns, addr);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(cert.0, cert.1)
            .unwrap(),
    );
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let (cfg, seen) = (cfg.clone(), seen.clone());
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                    return;
                };
                let mut s = rustls::StreamOwned::new(conn, c);
                serve_http(&mut s, host, &seen);
            });
        }
    });
}

fn http_server(netns: &str, addr: SocketAddrV4, host: &'static str, seen: Seen) {
    let l = listen_in(netns, addr);
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || serve_http(&mut c, host, &seen));
        }
    });
}

const CLIENT: &str = r#"import http.client, ssl, sys, urllib.request, urllib.error
def step(name, f):
    try:
        print(name + ':', f(), flush=True)
    except Exception as e:
        print(name + ':', type(e).__name__, flush=True)
def get(url, method='GET'):
    req = urllib.request.Request(url, method=method, data=b'x' if method == 'POST' else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
import os
def auth(url):
    req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + os.environ['GITHUB_TOKEN']})
    with urllib.request.urlopen(req, timeout=10) as r:
        # A server reflecting the header must not hand the real value back.
        return '%d-%s' % (r.status, 'real' if 'real-secret' in r.headers.get('echo', '') else 'masked')
def raw_tls(payload):
    import socket, ssl
    s = ssl.create_default_context().wrap_socket(
        socket.create_connection(('api.test', 443), timeout=10), server_hostname='api.test')
    s.sendall(payload)
    return s.recv(64).split(b' ')[1].decode()
if sys.argv[1] == 'one':
    step('wrong-binary', lambda: get('https://api.test/repos/x'))
    sys.exit(0)
if sys.argv[1] == 'neighbour':
    import time
    codes, end = [], time.time() + float(sys.argv[2])
    while time.time() < end:
        try:
            codes.append(str(get('https://api.test/repos/n')))
        except Exception as e:
            codes.append(type(e).__name__)
        time.sleep(0.2)
    bad = [c for c in codes if c != '200']
    print('neighbour:', 'all-200' if codes and not bad else bad, flush=True)
    print('neighbour-requests:', len(codes), flush=True)
    sys.exit(0)
if sys.argv[1] == 'hostile':
    import socket, threading, time
    def flood():
        import select
        held = [socket.create_connection(('api.test', 443), timeout=10) for _ in range(300)]
        time.sleep(0.5)
        closed = 0
        for s in select.select(held, [], [], 0)[0]:
            try:
                closed += s.recv(1) == b''
            except OSError:
                closed += 1
        during = 'refused'
        try:
            during = str(get('https://api.test/repos/x'))
        except Exception:
            pass
        time.sleep(float(sys.argv[2]))
        for s in held:
            s.close()
        time.sleep(1)
        return '%s-%s-%s' % ('bounded' if closed >= 44 else 'closed%d' % closed, during,
                             get('https://api.test/repos/x'))
    step('flood', flood)
    def timed(f):
        t = time.time(); r = f(); return '%s-%s' % (r, 'in-time' if time.time() - t < 16 else 'late')
    def slowloris():
        s = ssl.create_default_context().wrap_socket(
            socket.create_connection(('api.test', 443), timeout=30), server_hostname='api.test')
        s.sendall(b'GET /repos/x HTTP/1.1\r\nHost: api.test\r\n')
        s.settimeout(0.5)
        for _ in range(60):
            try:
                s.sendall(b'X')
                data = s.recv(64)
                return data.split(b' ')[1].decode() if data else 'closed'
            except socket.timeout:
                continue
            except OSError as e:
                return type(e).__name__
        return 'never-closed'
    def slow_record():
        # A whole TLS record with the head's first bytes, then a record announced at 16 KiB
        # whose bytes come one at a time: rustls waits for the whole record inside one read.
        import os
        s = ssl.create_default_context().wrap_socket(
            socket.create_connection(('api.test', 443), timeout=30), server_hostname='api.test')
        s.sendall(b'GET /repos/x HTTP/1.1\r\n')
        os.write(s.fileno(), bytes([0x17, 0x03, 0x03, 0x41, 0x00]))
        s.settimeout(0.5)
        for _ in range(60):
            try:
                os.write(s.fileno(), b'x')
            except OSError as e:
                return type(e).__name__
            try:
                data = s.recv(64)
                return data.split(b' ')[1].decode() if data else 'closed'
            except socket.timeout:
                continue
            except (OSError, ssl.SSLError) as e:
                return 'closed'
        return 'never-closed'
    def slow_handshake():
        s = socket.create_connection(('api.test', 443), timeout=30)
        s.sendall(b'\x16\x03')
        return 'closed' if s.recv(64) == b'' else 'answered'
    out = {}
    threads = [threading.Thread(target=lambda n=n, f=f: out.__setitem__(n, timed(f)))
               for n, f in [('slowloris', slowloris), ('slow-record', slow_record),
                            ('slow-handshake', slow_handshake)]]
    for t in threads: t.start()
    time.sleep(1)
    step('during-slowloris', lambda: get('https://api.test/repos/x'))
    for t in threads: t.join()
    for n in ('slowloris', 'slow-record', 'slow-handshake'):
        print(n + ':', out.get(n), flush=True)
    step('huge-head', lambda: raw_tls(b'GET /repos/x HTTP/1.1\r\nHost: api.test\r\nX: ' + b'a' * 100000 + b'\r\n\r\n'))
    step('many-headers', lambda: raw_tls(b'GET /repos/x HTTP/1.1\r\nHost: api.test\r\n' + b'X: y\r\n' * 200 + b'\r\n'))
    step('garbage', lambda: raw_tls(b'\x00\x01\x02 nonsense\r\n\r\n'))
    step('after', lambda: get('https://api.test/repos/x'))
    sys.exit(0)
step('get', lambda: get('https://api.test/repos/x'))
step('post', lambda: get('https://api.test/repos/x', 'POST'))
step('admin', lambda: get('https://api.test/admin'))
step('dotdot', lambda: get('https://api.test/repos/%2e%2e/admin'))
def keepalive():
    c = http.client.HTTPSConnection('api.test', 443, timeout=10)
    out = []
    for m, p in [('GET', '/repos/a'), ('POST', '/repos/a'), ('GET', '/repos/b')]:
        c.request(m, p, body=b'y' if m == 'POST' else None)
        r = c.getresponse(); r.read(); out.append(str(r.status))
    return '-'.join(out)
step('keepalive', keepalive)
def fronting():
    c = http.client.HTTPSConnection('api.test', 443, timeout=10)
    c.request('GET', '/repos/x', headers={'Host': 'evil.test'})
    r = c.getresponse(); r.read(); return r.status
step('host-mismatch', fronting)
step('plain', lambda: get('http://plain.test/repos/x'))
step('plain-post', lambda: get('http://plain.test/repos/x', 'POST'))
step('bad-upstream', lambda: get('https://bad.test/repos/x'))
def ws(host, path, proto='websocket'):
    import socket
    s = socket.create_connection((host, 80), timeout=10)
    s.sendall(('GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: %s\r\nConnection: Upgrade\r\n'
               'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'
               % (path, host, proto)).encode())
    head = b''
    while b'\r\n\r\n' not in head:
        head += s.recv(1)
    status = head.split()[1].decode()
    if status != '101':
        return status
    s.sendall(b'ping')
    return status + '-' + s.recv(16).decode()
step('ws', lambda: ws('ws.test', '/ws/chat'))
step('ws-path', lambda: ws('ws.test', '/admin'))
step('ws-on-rest', lambda: ws('plain.test', '/repos/x'))
step('h2c-upgrade', lambda: ws('ws.test', '/ws/chat', 'h2c'))
step('smuggle-lf', lambda: raw_tls(b'GET /repos/x HTTP/1.1\nHost: api.test\n\nDELETE /admin HTTP/1.1\r\nHost: api.test\r\n\r\n'))
step('absolute-form', lambda: raw_tls(b'GET http://evil.test/repos/x HTTP/1.1\r\nHost: api.test\r\n\r\n'))
step('two-hosts', lambda: raw_tls(b'GET /repos/x HTTP/1.1\r\nHost: api.test\r\nHost: evil.test\r\n\r\n'))
step('path-param', lambda: get('https://api.test/repos/..;/admin'))
def direct():
    import socket
    s = socket.create_connection(('api.test', 443), timeout=10)
    peer = s.getpeername(); s.close()
    t = socket.socket(); t.settimeout(5)
    try:
        t.connect(peer); return 'connected'
    except OSError as e:
        return 'errno%d' % e.errno
step('proxy-direct', direct)
def quic():
    import socket
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('api.test', 443)); return 'sent'
    except OSError as e:
        return 'errno%d' % e.errno
step('udp-443', quic)
step('token-env', lambda: os.environ['GITHUB_TOKEN'].startswith('nemosandbox-credential-'))
step('token-environ', lambda: b'real-secret-123' in open('/proc/1/environ', 'rb').read())
step('token-api', lambda: auth('https://api.test/repos/t'))
step('token-other', lambda: auth('http://other.test/t'))
"#;

/// node's own fetch (undici): its own CA store plus NODE_EXTRA_CA_CERTS, no proxy variables.
const NODE_CLIENT: &str = r#"(async () => {
  for (const m of ['GET', 'POST']) {
    try {
      const r = await fetch('https://api.test/repos/x', { method: m, body: m === 'POST' ? 'x' : undefined });
      console.log('node-' + m.toLowerCase() + ':', r.status);
    } catch (e) {
      console.log('node-' + m.toLowerCase() + ':', e.cause ? e.cause.code : e.message);
    }
  }
})();
"#;

/// The upstreams, the DNS server that names them, the node configuration trusting the test
/// root, and the policy every container here runs under.
struct Lab {
    rt: Runtime,
    net: TestNetns,
    _dns: TestDns,
    seen: Seen,
    config: String,
    policy: String,
}

fn lab() -> Lab {
    let rt = Runtime::new();
    let net = TestNetns::new();
    let t = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    let dns = TestDns::start(
        &net.path(),
        t(53),
        &[
            ("api.test", t(10)),
            ("bad.test", t(11)),
            ("plain.test", t(12)),
            ("other.test", t(13)),
            ("ws.test", t(14)),
        ],
    );
    let (root, root_pem) = test_root();
    let seen: Seen = Arc::default();
    https_server(
        &net.path(),
        SocketAddrV4::new(t(10), 443),
        "api.test",
        leaf("api.test", Some(&root)),
        seen.clone(),
    );
    https_server(
        &net.path(),
        SocketAddrV4::new(t(11), 443),
        "bad.test",
        leaf("bad.test", None),
        seen.clone(),
    );
    for (last, host) in [(12, "plain.test"), (13, "other.test"), (14, "ws.test")] {
        http_server(
            &net.path(),
            SocketAddrV4::new(t(last), 80),
            host,
            seen.clone(),
        );
    }
    let roots = rt.root.path().join("test-root.pem");
    std::fs::write(&roots, &root_pem).unwrap();
    let config = rt.root.path().join("node.yaml");
    std::fs::write(
        &config,
        format!("l7_upstream_roots:\n  - {}\n", roots.display()),
    )
    .unwrap();
    let rules = "protocol: rest, rules: [ { allow: { method: GET, path: \"/repos/**\" } } ]";
    let policy = policy(
        &rt,
        &format!(
            "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
             network_policies:\n  api:\n    endpoints:\n\
             \x20     - {{ host: api.test, port: 443, {rules} }}\n\
             \x20     - {{ host: bad.test, port: 443, {rules} }}\n\
             \x20     - {{ host: plain.test, port: 80, {rules} }}\n\
             \x20     - {{ host: ws.test, port: 80, protocol: websocket, rules: [ {{ allow: {{ method: GET, path: \"/ws/**\" }} }} ] }}\n\
             \x20   binaries:\n      - {{ path: /usr/bin/python3.11 }}\n      - {{ path: /usr/bin/curl }}\n      - {{ path: /usr/bin/node }}\n      - {{ path: /app/tls-client }}\n\
             \x20   credentials:\n      - {{ env: GITHUB_TOKEN }}\n\
             \x20 other:\n    endpoints:\n\
             \x20     - {{ host: other.test, port: 80, protocol: rest, access: read-only }}\n\
             \x20   binaries:\n      - {{ path: /usr/bin/python3.11 }}\n"
        ),
    );
    Lab {
        config: config.to_str().unwrap().to_string(),
        rt,
        net,
        _dns: dns,
        seen,
        policy,
    }
}

impl Lab {
    /// A bundle in the lab's network running `sh -c script`, with the clients under /app and
    /// the interpreters of the host.
    fn bundle(&self, script: &str) -> Bundle {
        let b = bundle(&["sh", "-c", script]);
        let rootfs = b.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("app")).unwrap();
        std::fs::write(rootfs.join("app/client.py"), CLIENT).unwrap();
        std::fs::write(rootfs.join("app/client.js"), NODE_CLIENT).unwrap();
        std::fs::copy(tls_client(), rootfs.join("app/tls-client")).unwrap();
        std::fs::create_dir_all(rootfs.join("etc/ssl/certs")).unwrap();
        std::fs::copy(
            "/etc/ssl/certs/ca-certificates.crt",
            rootfs.join("etc/ssl/certs/ca-certificates.crt"),
        )
        .unwrap();
        std::fs::write(
            rootfs.join("etc/resolv.conf"),
            "nameserver 203.0.113.53\noptions attempts:1 timeout:2\n",
        )
        .unwrap();
        with_interpreters(&b);
        b.edit(|c| {
            c["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!("GITHUB_TOKEN=real-secret-123"));
        });
        self.net.join(&b);
        b
    }

    fn run(&self, b: &Bundle, id: &str) -> std::process::Output {
        self.rt
            .run_kept_with(&["--config", &self.config, "--policy", &self.policy], b, id)
    }
}

#[path = "l7/cases.rs"]
mod cases;
