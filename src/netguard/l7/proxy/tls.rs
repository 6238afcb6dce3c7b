//! TLS in the proxy: the client side is answered with a leaf for its server name minted by
//! the container's CA, once the upstream has been reached and fully verified for that same
//! name (so a client sees an upstream failure as a failed handshake).

use super::*;

/// The upstream TLS client: full verification against the host's system roots and the
/// operator's extra roots.
pub(super) fn client_config(extra: &[std::path::PathBuf]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let system = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ];
    let files: Vec<std::path::PathBuf> = system
        .iter()
        .map(std::path::PathBuf::from)
        .filter(|p| p.exists())
        .take(1)
        .chain(extra.iter().cloned())
        .collect();
    for f in &files {
        let certs =
            CertificateDer::pem_file_iter(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("{}: {e}", f.display()))?;
            // A root the library cannot use is skipped, as every TLS client does.
            let _ = roots.add(c);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

impl Client<'_> {
    pub(super) fn tls(&self, conn: TcpStream) {
        // The ClientHello, and later the rest of the handshake, within HANDSHAKE_TIME each
        // (the upstream's own handshake happens in between).
        let clock = Clock::new(std::cell::Cell::new(Some(Instant::now() + HANDSHAKE_TIME)));
        let mut conn = Timed::new(conn, clock.clone());
        let mut acceptor = rustls::server::Acceptor::default();
        let accepted = loop {
            match acceptor.read_tls(&mut conn) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            match acceptor.accept() {
                Ok(Some(a)) => break a,
                Ok(None) => continue,
                Err((_, mut alert)) => {
                    let _ = alert.write_all(&mut conn);
                    return;
                }
            }
        };
        let sni = accepted
            .client_hello()
            .server_name()
            .map(|s| s.to_ascii_lowercase());
        // Without a server name only an endpoint named by its address can be verified.
        let name = match sni {
            Some(n) => n,
            None => match self.flow.names.first() {
                Some(n) if n.parse::<std::net::IpAddr>().is_ok() => n.clone(),
                _ => {
                    self.event(
                        audit::Decision::Denied,
                        "TLS without a server name",
                        serde_json::json!({"destination": self.flow.dest.to_string()}),
                    );
                    return;
                }
            },
        };
        if !self.allowed_name(&name) {
            self.event(
                audit::Decision::Denied,
                &format!("server name {name} is not what the guard allowed this address for"),
                serde_json::json!({"destination": self.flow.dest.to_string(), "sni": name}),
            );
            return;
        }
        // Upstream first: a certificate it cannot verify fails the client's handshake.
        let upstream = match self.upstream_tls(&name) {
            Ok(u) => u,
            Err(why) => {
                self.event(
                    audit::Decision::Denied,
                    &format!("upstream {name}: {why}"),
                    serde_json::json!({"destination": self.flow.dest.to_string(), "sni": name}),
                );
                return;
            }
        };
        let cfg = match self.proxy.ca.server(&name) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("layer-7 proxy of {}: leaf for {name}: {e}", self.shared.id);
                return;
            }
        };
        let Ok(mut server) = accepted.into_connection(cfg) else {
            return;
        };
        clock.set(Some(Instant::now() + HANDSHAKE_TIME));
        while server.is_handshaking() {
            if server.complete_io(&mut conn).is_err() {
                return;
            }
        }
        clock.set(None);
        let client = rustls::StreamOwned::new(server, conn);
        let host_ok = |h: &str| h.trim_end_matches('.').eq_ignore_ascii_case(&name);
        self.exchange(
            Conn::new(client),
            Conn::new(upstream),
            &host_ok,
            &clock,
            true,
        );
    }

    fn upstream_tls(
        &self,
        name: &str,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
        let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let mut tcp = self.dial().map_err(|e| format!("connect: {e}"))?;
        let mut c = rustls::ClientConnection::new(self.proxy.upstream.clone(), server_name)
            .map_err(|e| e.to_string())?;
        while c.is_handshaking() {
            c.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        Ok(rustls::StreamOwned::new(c, tcp))
    }
}
