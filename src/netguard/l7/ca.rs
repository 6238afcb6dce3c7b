//! The container's own certificate authority: made at `create`, trusted inside the container,
//! and used by the layer-7 proxy to mint a leaf certificate per server name.
//!
//! Threat: the CA's key signs for any name the container's programs trust. It lives in the
//! runtime's state directory (0600, root), never in the container, and the CA is trusted by
//! this container only.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::container_dir::ContainerDir;
use crate::path_error::io_err;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// Leaves are minted again after this long (they are valid for twice as long).
const LEAF_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Names whose leaves are kept; a container naming more mints again.
const MAX_LEAVES: usize = 256;

/// The CA's fixed identity: what signs and verifies is the key; these fields only have to be
/// the same in the CA certificate and in every leaf's issuer.
fn ca_params(id: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "nemosandbox");
    dn.push(DnType::CommonName, format!("nemosandbox container CA {id}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// Make container `id`'s CA in its state directory `own`; returns the certificate (PEM).
pub fn create(own: &ContainerDir, id: &str) -> Result<String, CaError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params(id);
    let now = time_now();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key)?;
    let key_path = own.ca_key();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(io_err(&key_path))?;
    f.write_all(key.serialize_pem().as_bytes())
        .map_err(io_err(&key_path))?;
    let pem = cert.pem();
    let cert_path = own.ca_cert();
    std::fs::write(&cert_path, &pem).map_err(io_err(&cert_path))?;
    Ok(pem)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A leaf certificate and its key, for rustls.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The CA as the proxy uses it.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The TLS server configuration per name, holding its leaf: built once per name, so
    /// connections share it (and its session cache).
    leaves: Mutex<HashMap<String, (Instant, Arc<rustls::ServerConfig>)>>,
}

impl Ca {
    pub fn load(own: &ContainerDir, id: &str) -> Result<Ca, CaError> {
        let key_path = own.ca_key();
        let pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let key = KeyPair::from_pem(&pem)?;
        Ok(Ca {
            issuer: Issuer::new(ca_params(id), key),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// A new leaf for `name` (a DNS name or an IP literal).
    pub fn mint(&self, name: &str) -> Result<Leaf, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, name.to_string());
        let now = time_now();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(2);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// The server configuration presenting the leaf for `name` (ALPN `http/1.1`), from the
    /// cache while the leaf is fresh.
    pub fn server(&self, name: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let name = name.to_ascii_lowercase();
        let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made, cfg)) = leaves.get(&name) {
            if made.elapsed() < LEAF_REFRESH {
                return Ok(cfg.clone());
            }
        }
        let leaf = self.mint(&name).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = provider
            .key_provider
            .load_private_key(leaf.key)
            .map_err(|e| e.to_string())?;
        let certified = Arc::new(rustls::sign::CertifiedKey::new(leaf.chain, key));
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(FixedCert(certified)));
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        if leaves.len() >= MAX_LEAVES {
            leaves.clear();
        }
        leaves.insert(name, (Instant::now(), cfg.clone()));
        Ok(cfg)
    }
}

/// One leaf whatever the ClientHello says: the proxy checked the server name before.
#[derive(Debug)]
struct FixedCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The CA certificate file of a state directory.
pub fn cert_path(own: &ContainerDir) -> PathBuf {
    own.ca_cert()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_stays_private_and_leaves_name_their_host() {
        let dir =
            ContainerDir::new(std::env::temp_dir().join(format!("nemo-ca-{}", std::process::id())));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = create(&dir, "c1").unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = std::fs::metadata(dir.ca_key()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(
            create(&dir, "c1").is_err(),
            "an existing key is never replaced"
        );
        let ca = Ca::load(&dir, "c1").unwrap();
        let a = ca.server("API.test").unwrap();
        let b = ca.server("api.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one leaf per name, cached");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
