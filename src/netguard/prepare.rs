//! The network guard's part of the spec-rewrite stage: the container's
//! `/etc/resolv.conf` is replaced by one naming the guard's resolver, and the nameservers it
//! would otherwise have used become the resolver's upstream.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use oci_spec::runtime::{Mount, MountBuilder, Spec};
use sha2::{Digest, Sha256};

use super::NetPlan;
use crate::confine::bpf::BpfError;
use crate::container_dir::ContainerDir;
use crate::path_error::io_err;

const RESOLV: &str = "/etc/resolv.conf";

#[derive(Debug, thiserror::Error)]
pub enum NetPrepareError {
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

/// A loopback address for the resolver, from the container id: containers sharing the host's
/// network namespace each get their own, and none is a well-known one (127.0.0.1, .53, .11).
pub fn resolver_address(id: &str) -> Ipv4Addr {
    let h = Sha256::digest(id.as_bytes());
    Ipv4Addr::new(127, 100 + h[0] % 100, h[1], 1 + h[2] % 254)
}

/// The `resolv.conf` the container would have seen: an engine's mount, else the image's.
/// `None` when it has none.
fn original_resolv_conf(spec: &Spec, rootfs: &Path) -> Option<String> {
    let mounted = spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|m| m.destination() == Path::new(RESOLV));
    if let Some(m) = mounted {
        let src = m.source().clone().unwrap_or_default();
        return Some(std::fs::read_to_string(src).unwrap_or_default());
    }
    let p = crate::layout::tree::resolve_in(rootfs, Path::new("etc/resolv.conf"))?;
    p.is_file()
        .then(|| std::fs::read_to_string(p).unwrap_or_default())
}

/// Split a resolv.conf into its nameservers and the lines to keep (search, options, domain).
pub fn parse_resolv_conf(text: &str) -> (Vec<IpAddr>, Vec<String>) {
    let mut servers = Vec::new();
    let mut keep = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.split('%').next()?.parse().ok()) {
                    servers.push(ip);
                }
            }
            Some("search" | "domain" | "options") => keep.push(line.trim().to_string()),
            _ => {}
        }
    }
    (servers, keep)
}

/// Write the container's resolv.conf and filter into `own`, mount the former over
/// `/etc/resolv.conf` (after every other mount, so nothing hides it).
pub fn prepare(
    spec: &mut Spec,
    rootfs: &Path,
    own: &ContainerDir,
    id: &str,
    cache: &Path,
    relay: bool,
) -> Result<NetPlan, NetPrepareError> {
    let resolver = resolver_address(id);
    let original = original_resolv_conf(spec, rootfs);
    // With none of its own, the container's upstream is the host's.
    let text = original
        .clone()
        .unwrap_or_else(|| std::fs::read_to_string(RESOLV).unwrap_or_default());
    let (mut upstream, keep) = parse_resolv_conf(&text);
    upstream.retain(|ip| *ip != IpAddr::V4(resolver));

    let mut text =
        format!("# nemosandbox: names resolve through the network guard\nnameserver {resolver}\n");
    for line in keep {
        text.push_str(&line);
        text.push('\n');
    }
    let conf = own.resolv_conf();
    std::fs::write(&conf, text).map_err(io_err(&conf))?;
    if original.is_none() {
        // Nothing to replace (and no file to mount over in a read-only tree): the container
        // has no resolver configuration; its DNS is still refused except through the guard.
        return finish(own, cache, resolver, upstream, relay);
    }
    bind_read_only(spec, RESOLV, &conf);
    finish(own, cache, resolver, upstream, relay)
}

/// Bind `source` (a runtime file) read-only over `dest` in the container.
pub fn bind_read_only(spec: &mut Spec, dest: &str, source: &Path) {
    let mount: Mount = MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(vec!["rbind".to_string(), "ro".to_string()])
        .build()
        .expect("static mount");
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
}

fn finish(
    own: &ContainerDir,
    cache: &Path,
    resolver: Ipv4Addr,
    upstream: Vec<IpAddr>,
    relay: bool,
) -> Result<NetPlan, NetPrepareError> {
    let bpf = super::filter::compile(cache, relay)?;
    let path = own.filter(ContainerDir::NET_FILTER);
    std::fs::write(&path, &bpf).map_err(io_err(&path))?;
    Ok(NetPlan {
        resolver,
        upstream,
        relay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_address_is_loopback_and_stable() {
        let a = resolver_address("c1");
        assert!(a.is_loopback());
        assert_eq!(a, resolver_address("c1"));
        assert_ne!(a, resolver_address("c2"));
        assert!(a.octets()[1] >= 100 && a.octets()[3] != 0 && a.octets()[3] != 255);
    }

    #[test]
    fn resolv_conf_keeps_search_and_options() {
        let (s, k) = parse_resolv_conf(
            "# x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch a.b\noptions ndots:5\nnameserver bogus\n",
        );
        assert_eq!(
            s,
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert_eq!(k, vec!["search a.b", "options ndots:5"]);
    }
}
