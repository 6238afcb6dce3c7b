//! At `create`: the container's CA, and the container's trust in it.
//!
//! The image's system bundle is read inside the image root (links cannot lead out of it),
//! combined with the CA certificate in the state directory, and bound read-only over the
//! image's file; `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS` and `REQUESTS_CA_BUNDLE` name it for
//! programs that do not read the system file. The user's bundle is not changed.

use std::path::Path;

use oci_spec::runtime::Spec;

use super::ca::{self, CaError};

use crate::container_dir::ContainerDir;

/// Where images keep their system bundle, most common first.
const BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// Larger "bundles" are not read.
const MAX_BUNDLE: u64 = 16 * 1024 * 1024;

const ENV: [&str; 3] = ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE"];

/// Make the CA and make the container trust it. Returns a note when the image has no bundle
/// to extend (its programs will then refuse the proxy's certificates: fail closed).
pub fn install(
    spec: &mut Spec,
    rootfs: &Path,
    own: &ContainerDir,
    id: &str,
) -> Result<Option<String>, CaError> {
    let pem = ca::create(own, id)?;
    let Some((path, image)) = image_bundle(rootfs) else {
        return Ok(Some(format!(
            "the image has no CA bundle ({}): HTTPS through the layer-7 proxy will not be trusted",
            BUNDLES.join(", ")
        )));
    };
    let combined = own.ca_bundle();
    let mut text = image;
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&pem);
    std::fs::write(&combined, text).map_err(crate::path_error::io_err(&combined))?;
    crate::netguard::prepare::bind_read_only(spec, path, &combined);
    if let Some(p) = spec.process_mut() {
        let mut env: Vec<String> = p.env().clone().unwrap_or_default();
        env.retain(|e| !ENV.iter().any(|k| e.starts_with(&format!("{k}="))));
        env.extend(ENV.iter().map(|k| format!("{k}={path}")));
        p.set_env(Some(env));
    }
    Ok(None)
}

/// The image's bundle: its path in the container and its text, read without leaving the root.
fn image_bundle(rootfs: &Path) -> Option<(&'static str, String)> {
    let root = crate::container_root::ContainerRoot::open(rootfs)?;
    BUNDLES.iter().find_map(|p| {
        // A bundle over the limit is not one to extend (and is not read whole).
        let bytes = root.read_regular(Path::new(p), MAX_BUNDLE + 1)?;
        if bytes.len() as u64 > MAX_BUNDLE {
            return None;
        }
        Some((*p, String::from_utf8(bytes).ok()?))
    })
}
