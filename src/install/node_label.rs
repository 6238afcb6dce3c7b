//! `nemosandbox node-label`: marks a Kubernetes node `nemosandbox.dev/installed=true` (or takes
//! the mark off) through the API server, with the installer pod's service account, so the
//! RuntimeClass's node selector schedules sandboxed pods only where the runtime is installed.
//!
//! One JSON merge patch over HTTPS, verified against the service account's CA: no client
//! library, no kubectl in the installer image.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const LABEL: &str = "nemosandbox.dev/installed";
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{0} is not set: node-label runs in a pod (in-cluster service account)")]
    Env(&'static str),
    #[error("invalid node name {0:?}")]
    Node(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("API server {addr}: {reason}")]
    Api { addr: String, reason: String },
}

/// Where and as whom to talk to the API server.
#[derive(Debug, Clone)]
pub struct ApiServer {
    pub host: String,
    pub port: u16,
    pub service_account: PathBuf,
}

impl ApiServer {
    /// The in-cluster API server, from the variables the kubelet gives every pod.
    pub fn in_cluster(service_account: Option<PathBuf>) -> Result<ApiServer, LabelError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| LabelError::Env("KUBERNETES_SERVICE_HOST"))?;
        let port = match std::env::var("KUBERNETES_SERVICE_PORT") {
            Err(_) => 443,
            Ok(p) => p
                .parse()
                .map_err(|_| LabelError::Env("a valid KUBERNETES_SERVICE_PORT"))?,
        };
        Ok(ApiServer {
            host,
            port,
            service_account: service_account.unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR)),
        })
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A node name as Kubernetes allows it (an RFC 1123 subdomain: labels of lowercase letters,
/// digits and inner '-', joined by '.'): nothing that could change the request's path.
fn valid_node(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

fn read(path: &Path) -> Result<Vec<u8>, LabelError> {
    std::fs::read(path).map_err(|e| LabelError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn tls_config(ca: &Path) -> Result<rustls::ClientConfig, LabelError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let file_err = |reason: String| LabelError::File {
        path: ca.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read(ca)?) {
        roots
            .add(c.map_err(|e| file_err(e.to_string()))?)
            .map_err(|e| file_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(file_err("no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| file_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Sets (`present`) or removes the label on `node`.
pub fn set(api: &ApiServer, node: &str, present: bool) -> Result<(), LabelError> {
    if !valid_node(node) {
        return Err(LabelError::Node(node.to_string()));
    }
    let token = String::from_utf8_lossy(&read(&api.service_account.join("token"))?)
        .trim()
        .to_string();
    let config = tls_config(&api.service_account.join("ca.crt"))?;
    let api_err = |reason: String| LabelError::Api {
        addr: api.addr(),
        reason,
    };
    let body = serde_json::json!({"metadata": {"labels": {LABEL: if present { serde_json::json!("true") } else { serde_json::Value::Null }}}}).to_string();
    let request = format!(
        "PATCH /api/v1/nodes/{node} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/merge-patch+json\r\nAccept: application/json\r\n\
         User-Agent: nemosandbox/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        api.addr(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let sock = api
        .addr()
        .to_socket_addrs()
        .map_err(|e| api_err(e.to_string()))?
        .next()
        .ok_or_else(|| api_err("no address".into()))?;
    let tcp = TcpStream::connect_timeout(&sock, Duration::from_secs(10))
        .map_err(|e| api_err(e.to_string()))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| api_err(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(api.host.clone())
        .map_err(|e| api_err(e.to_string()))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| api_err(e.to_string()))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes())
        .map_err(|e| api_err(e.to_string()))?;
    let mut response = Vec::new();
    // Bounded: the answer is one node object. A server closing without TLS close_notify ends
    // the read with an error after a complete answer; an empty answer is the error then.
    let read = (&mut tls).take(4 << 20).read_to_end(&mut response);
    if response.is_empty() {
        return Err(api_err(match read {
            Err(e) => e.to_string(),
            Ok(_) => "no answer".into(),
        }));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let status = match parsed.parse(&response) {
        Ok(_) => parsed.code.unwrap_or(0),
        Err(e) => return Err(api_err(format!("bad response: {e}"))),
    };
    if status == 200 {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&response);
    let detail: String = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .chars()
        .take(512)
        .collect();
    Err(api_err(format!(
        "PATCH node {node}: HTTP {status}: {detail}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_that_could_change_the_path_are_refused() {
        assert!(valid_node("worker-1.example"));
        for bad in [
            "", "a/b", "../x", "..", ".", "a..b", "-a", "a-", "A", "n?x=1", "n x",
        ] {
            assert!(!valid_node(bad), "{bad}");
        }
    }
}
