//! The egress rule, as pure logic: given the destination, the names the runtime's
//! resolver returned for that address (still within their TTL) and which policies' binaries
//! the calling executable is, allow or refuse — and say why.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::policy::merge::EffectiveNetwork;
use crate::policy::model::{Endpoint, Enforcement};

/// One connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt<'a> {
    pub ip: IpAddr,
    pub port: u16,
    /// Names the resolver answered with `ip` for, still valid.
    pub names: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        policy: String,
        endpoint: String,
        /// Which of the policy's endpoints allowed it.
        index: usize,
        /// The endpoint is in `enforcement: audit`; `would_deny` says what enforce would do.
        audit: bool,
        would_deny: Option<String>,
    },
    Deny {
        reason: String,
    },
}

/// Whether DNS name `name` matches host pattern `pattern`: exact (case-insensitive, a
/// trailing dot ignored), `*.x.com` (exactly one more label) or `**.x.com` (one or more).
pub fn host_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let (any_depth, suffix) = if let Some(s) = pattern.strip_prefix("**.") {
        (true, s)
    } else if let Some(s) = pattern.strip_prefix("*.") {
        (false, s)
    } else {
        return name == pattern;
    };
    let Some(head) = name.strip_suffix(suffix).and_then(|h| h.strip_suffix('.')) else {
        return false;
    };
    !head.is_empty() && !head.split('.').any(str::is_empty) && (any_depth || !head.contains('.'))
}

/// Loopback, private, link-local, unspecified, shared (CGNAT), unique-local and multicast
/// addresses: refused unless an IP-literal host or `allowed_ips` names them.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let shared = IpNet::V4("100.64.0.0/10".parse().expect("valid"));
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || shared.contains(&IpAddr::V4(v4))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
    }
}

/// `allowed_ips` entries: CIDRs or bare addresses (validated at load).
fn in_allowed_ips(ep: &Endpoint, ip: IpAddr) -> bool {
    ep.allowed_ips.iter().flatten().any(|c| {
        c.parse::<IpNet>()
            .map(|n| n.contains(&ip))
            .or_else(|_| c.parse::<IpAddr>().map(|a| a == ip))
            .unwrap_or(false)
    })
}

fn port_matches(ep: &Endpoint, port: u16) -> bool {
    ep.port == Some(port) || ep.ports.as_ref().is_some_and(|ps| ps.contains(&port))
}

/// Whether the endpoint's host covers the address: the literal IP, `allowed_ips`, or a name
/// the resolver returned for it (public addresses only). `Err` says why not, and how far the
/// attempt got (a matching name on an internal address explains more than no name at all).
fn host_covers(ep: &Endpoint, a: &Attempt) -> Result<(), (u8, String)> {
    if let Ok(lit) = ep.host.parse::<IpAddr>() {
        return if lit == a.ip {
            Ok(())
        } else {
            Err((2, format!("{} is not {}", a.ip, ep.host)))
        };
    }
    if in_allowed_ips(ep, a.ip) {
        return Ok(());
    }
    if !a.names.iter().any(|n| host_matches(&ep.host, n)) {
        return Err((
            2,
            format!("{} was not resolved from a name matching {}", a.ip, ep.host),
        ));
    }
    if is_internal(a.ip) {
        return Err((
            3,
            format!(
                "{} ({}) is a loopback/private/link-local address not named by allowed_ips",
                a.ip, ep.host
            ),
        ));
    }
    Ok(())
}

/// Decide one attempt. `binary_allowed(key)` says whether the calling executable is one of
/// policy `key`'s binaries (identity is the guard's job).
pub fn decide(
    policies: &BTreeMap<String, EffectiveNetwork>,
    a: &Attempt,
    binary_allowed: &dyn Fn(&str) -> bool,
) -> Decision {
    // The refusal that got furthest explains the denial best.
    let mut best: (u8, String) = (0, "no network policy allows this destination".into());
    let mut note = |stage: u8, msg: String| {
        if stage > best.0 {
            best = (stage, msg);
        }
    };
    let mut audit_pass: Option<Decision> = None;
    for (key, net) in policies {
        for (i, ep) in net.policy.endpoints.iter().enumerate() {
            let endpoint = format!("{key}.endpoints[{i}] {}", ep.host);
            if !port_matches(ep, a.port) {
                note(1, format!("port {} is not allowed for {}", a.port, ep.host));
                continue;
            }
            if let Err((stage, why)) = host_covers(ep, a) {
                note(stage, why);
                continue;
            }
            let audit = ep.enforcement == Some(Enforcement::Audit);
            if binary_allowed(key) {
                return Decision::Allow {
                    policy: key.clone(),
                    endpoint,
                    index: i,
                    audit,
                    would_deny: None,
                };
            }
            let why = format!("the executable is not one of {key}'s binaries");
            if audit && audit_pass.is_none() {
                audit_pass = Some(Decision::Allow {
                    policy: key.clone(),
                    endpoint,
                    index: i,
                    audit: true,
                    would_deny: Some(why.clone()),
                });
            }
            note(4, why);
        }
    }
    audit_pass.unwrap_or(Decision::Deny { reason: best.1 })
}

/// Whether the resolver may answer `name`: some endpoint's host pattern matches it.
pub fn name_allowed(policies: &BTreeMap<String, EffectiveNetwork>, name: &str) -> bool {
    policies
        .values()
        .flat_map(|n| n.policy.endpoints.iter())
        .any(|ep| ep.host.parse::<IpAddr>().is_err() && host_matches(&ep.host, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Binary, NetworkPolicy};

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port: Some(port),
            ..Endpoint::default()
        }
    }

    fn policies(entries: &[(&str, Vec<Endpoint>)]) -> BTreeMap<String, EffectiveNetwork> {
        entries
            .iter()
            .map(|(k, eps)| {
                (
                    k.to_string(),
                    EffectiveNetwork {
                        policy: NetworkPolicy {
                            name: None,
                            endpoints: eps.clone(),
                            binaries: vec![Binary {
                                path: "/usr/bin/node".into(),
                            }],
                            credentials: None,
                        },
                        from: "test".into(),
                        replaced: vec![],
                    },
                )
            })
            .collect()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn at<'a>(ip: &str, port: u16, names: &'a [String]) -> Attempt<'a> {
        Attempt {
            ip: ip.parse().unwrap(),
            port,
            names,
        }
    }

    #[test]
    fn label_globs() {
        assert!(host_matches("api.telegram.org", "API.Telegram.org."));
        assert!(host_matches("*.x.com", "a.x.com"));
        assert!(!host_matches("*.x.com", "a.b.x.com"));
        assert!(!host_matches("*.x.com", "x.com"));
        assert!(!host_matches("*.x.com", "evilx.com"));
        assert!(host_matches("**.x.com", "a.b.x.com"));
        assert!(!host_matches("**.x.com", "x.com"));
        assert!(!host_matches("**.x.com", ".x.com"));
        assert!(!host_matches(
            "api.telegram.org",
            "api.telegram.org.evil.com"
        ));
    }

    #[test]
    fn internal_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["1.1.1.1", "149.154.167.220", "2001:db8::1"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn the_rule_of_7_1() {
        let p = policies(&[(
            "telegram",
            vec![ep("api.telegram.org", 443), {
                let mut e = ep("*.cdn.x.org", 443);
                e.ports = Some(vec![8443]);
                e
            }],
        )]);
        let tg = names(&["api.telegram.org"]);
        let node = |k: &str| k == "telegram";
        let nobody = |_: &str| false;
        // Allowed binary, allowed name, allowed port.
        assert!(matches!(
            decide(&p, &at("149.154.167.220", 443, &tg), &node),
            Decision::Allow { audit: false, .. }
        ));
        // Another binary to the same destination.
        let Decision::Deny { reason } = decide(&p, &at("149.154.167.220", 443, &tg), &nobody)
        else {
            panic!()
        };
        assert!(
            reason.contains("not one of telegram's binaries"),
            "{reason}"
        );
        // Another port.
        let Decision::Deny { reason } = decide(&p, &at("149.154.167.220", 80, &tg), &node) else {
            panic!()
        };
        assert!(reason.contains("port 80"), "{reason}");
        // An address no allowed name resolved to.
        let Decision::Deny { reason } = decide(&p, &at("1.2.3.4", 443, &[]), &node) else {
            panic!()
        };
        assert!(reason.contains("not resolved"), "{reason}");
        // `ports:` list and a label glob.
        let cdn = names(&["a.cdn.x.org"]);
        assert!(matches!(
            decide(&p, &at("8.8.4.4", 8443, &cdn), &node),
            Decision::Allow { .. }
        ));
        // A name that resolves to a private address (rebinding) is refused.
        let Decision::Deny { reason } = decide(&p, &at("10.0.0.5", 443, &tg), &node) else {
            panic!()
        };
        assert!(reason.contains("allowed_ips"), "{reason}");
        // Also when an earlier endpoint refused it for a lesser reason (no matching name).
        let cdn_private = decide(&p, &at("10.0.0.5", 443, &cdn), &node);
        let Decision::Deny { reason } = cdn_private else {
            panic!()
        };
        assert!(reason.contains("allowed_ips"), "{reason}");
    }

    #[test]
    fn literal_ips_allowed_ips_and_audit() {
        let mut internal = ep("db.internal.corp", 5432);
        internal.allowed_ips = Some(vec!["10.0.0.0/8".into()]);
        let mut audited = ep("**.pypi.org", 443);
        audited.enforcement = Some(Enforcement::Audit);
        let p = policies(&[
            ("local", vec![ep("127.0.0.1", 8080), internal]),
            ("pypi", vec![audited]),
        ]);
        let any = |_: &str| true;
        let none = |_: &str| false;
        let no: Vec<String> = Vec::new();
        assert!(matches!(
            decide(&p, &at("127.0.0.1", 8080, &no), &any),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            decide(&p, &at("127.0.0.2", 8080, &no), &any),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            decide(&p, &at("10.9.9.9", 5432, &no), &any),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            decide(&p, &at("192.168.0.1", 5432, &no), &any),
            Decision::Deny { .. }
        ));
        let files = names(&["files.pypi.org"]);
        let a = at("151.101.0.223", 443, &files);
        let Decision::Allow {
            audit, would_deny, ..
        } = decide(&p, &a, &none)
        else {
            panic!("audit mode allows")
        };
        assert!(audit && would_deny.unwrap().contains("binaries"));
        assert!(name_allowed(&p, "files.pypi.org"));
        assert!(!name_allowed(&p, "evil.com"));
        assert!(!name_allowed(&p, "127.0.0.1"));
    }
}
