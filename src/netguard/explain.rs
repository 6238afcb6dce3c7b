//! `policy explain --connect`: what the guard would decide for one executable reaching one
//! destination, through the guard's own decision function (`decide::decide`) and its own
//! binary resolution (`identity::Binaries::resolve`), with the reason.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::decide::{self, Attempt, Decision};
use super::identity::{Baseline, Binaries};
use crate::policy::merge::EffectiveNetwork;

/// The question: can `exe` reach `host:port`?
#[derive(Debug, Clone)]
pub struct Query {
    /// A name or an IP address.
    pub host: String,
    pub port: u16,
    /// The executable, as a path inside the container.
    pub exe: PathBuf,
    /// The address the resolver would answer for a name (default: what this host resolves).
    pub address: Option<IpAddr>,
}

/// The answer, with everything that went into it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    pub allowed: bool,
    /// Allowed only because the endpoint is in audit mode.
    pub audit_only: bool,
    pub destination: String,
    pub names: Vec<String>,
    pub executable: String,
    /// The policy and endpoint that decided (empty for a denial).
    pub policy: Option<String>,
    pub endpoint: Option<String>,
    pub by: String,
    pub reason: String,
    /// Which policies list this executable as one of their binaries.
    pub binary_of: Vec<String>,
    pub notes: Vec<String>,
}

/// Placeholder for a name this host cannot resolve: a public address (TEST-NET-1).
const SOME_PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// Decide `q` for a container whose root is `root` (the image's root, or `/proc/PID/root`)
/// under `policies`.
pub fn explain(root: &Path, policies: &BTreeMap<String, EffectiveNetwork>, q: &Query) -> Answer {
    let mut notes = Vec::new();
    let literal = q.host.parse::<IpAddr>().ok();
    let names: Vec<String> = match literal {
        Some(_) => Vec::new(),
        None => vec![q.host.trim_end_matches('.').to_ascii_lowercase()],
    };
    let binaries = Binaries::resolve(root, policies, &Baseline::default());
    let exe = stat_in(root, &q.exe);
    let binary_of: Vec<String> = match exe {
        Some(id) => binaries
            .by_policy
            .iter()
            .filter(|(_, set)| {
                set.files.contains_key(&id) || set.scripts.iter().any(|s| s.file.id == id)
            })
            .map(|(k, _)| k.clone())
            .collect(),
        None => {
            notes.push(format!(
                "{} does not exist in the container's root",
                q.exe.display()
            ));
            Vec::new()
        }
    };
    let mut answer = Answer {
        allowed: false,
        audit_only: false,
        destination: String::new(),
        names: names.clone(),
        executable: q.exe.display().to_string(),
        policy: None,
        endpoint: None,
        by: "network_policies".into(),
        reason: String::new(),
        binary_of: binary_of.clone(),
        notes,
    };
    if literal.is_none() && !decide::name_allowed(policies, &names[0]) {
        answer.destination = format!("{}:{}", q.host, q.port);
        answer.by = "network_policies (resolver)".into();
        answer.reason = format!(
            "the resolver refuses {}: no endpoint's host matches this name",
            names[0]
        );
        return answer;
    }
    let ip = literal.or(q.address).unwrap_or_else(|| {
        let found = (q.host.as_str(), q.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip());
        match found {
            Some(ip) => {
                answer
                    .notes
                    .push(format!("{} resolved here to {ip}", q.host));
                ip
            }
            None => {
                answer.notes.push(format!(
                    "{} does not resolve here; assuming a public address (give --address)",
                    q.host
                ));
                SOME_PUBLIC
            }
        }
    });
    answer.destination = std::net::SocketAddr::new(ip, q.port).to_string();
    let attempt = Attempt {
        ip,
        port: q.port,
        names: &names,
    };
    match decide::decide(policies, &attempt, &|key| {
        binary_of.iter().any(|k| k == key)
    }) {
        Decision::Allow {
            policy,
            endpoint,
            audit,
            would_deny,
            ..
        } => {
            answer.allowed = true;
            answer.audit_only = would_deny.is_some();
            answer.reason = match (&would_deny, audit) {
                (Some(why), _) => {
                    format!("allowed only because the endpoint is in audit mode: {why}")
                }
                (None, true) => "the endpoint allows it (audit mode: each pass is recorded)".into(),
                (None, false) => "the endpoint allows it for this executable".into(),
            };
            answer.by = endpoint.clone();
            answer.policy = Some(policy);
            answer.endpoint = Some(endpoint);
        }
        Decision::Deny { reason } => answer.reason = reason,
    }
    answer
}

/// The executable's identity as the guard takes it (its own lookup, regular files only).
fn stat_in(root: &Path, path: &Path) -> Option<(u64, u64)> {
    let root = crate::container_root::ContainerRoot::open(root)?;
    super::identity::stat_in(&root, path).map(|(stamp, _)| stamp.id)
}

/// The answer for people.
pub fn render(a: &Answer) -> String {
    let mut o = String::new();
    let verdict = match (a.allowed, a.audit_only) {
        (true, false) => "allowed",
        (true, true) => "allowed (audit)",
        (false, _) => "denied",
    };
    let names = if a.names.is_empty() {
        String::new()
    } else {
        format!(" ({})", a.names.join(", "))
    };
    let _ = writeln!(
        o,
        "{verdict}: {} connecting to {}{names}",
        a.executable, a.destination
    );
    let _ = writeln!(o, "  by: {}", a.by);
    if let Some(p) = &a.policy {
        let _ = writeln!(o, "  policy: {p}");
    }
    let _ = writeln!(o, "  reason: {}", a.reason);
    let of = if a.binary_of.is_empty() {
        "no policy".to_string()
    } else {
        a.binary_of.join(", ")
    };
    let _ = writeln!(o, "  executable is a binary of: {of}");
    for n in &a.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    o
}
