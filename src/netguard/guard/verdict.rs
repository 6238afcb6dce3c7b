//! Decisions: a destination against the current generation of policies for the calling
//! binary (resolving binaries again once on a miss), audit-mode passes, and what the
//! layer-7 proxy needs for an endpoint with HTTP rules.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::errno::Errno;

use super::perform::CallCtx;
use crate::audit;
use crate::netguard::decide::{self, Attempt, Decision};
use crate::netguard::identity::{self, Caller};
use crate::netguard::l7;
use crate::netguard::shared::{Generation, Shared};
use crate::netguard::sockaddr::{self, Target};
use crate::policy::model::Endpoint;

impl CallCtx {
    /// Decide a connect: the policy that allowed it and, for an endpoint with HTTP rules,
    /// what the layer-7 proxy needs.
    pub(super) fn allowed(&self, addr: &[u8]) -> Result<(Option<String>, Option<l7::Flow>), Errno> {
        let dest = match sockaddr::parse(addr) {
            Target::Unspec => return Ok((None, None)),
            Target::Inet(d) => d,
            Target::Invalid(e) => return Err(Errno::from_raw(e)),
        };
        let (policy, endpoint, audit_pass) = self.decided(dest)?;
        let flow = match (&policy, endpoint) {
            (Some(p), Some(ep)) if l7::inspected(&ep) => {
                Some(self.flow(p, &ep, dest, !audit_pass)?)
            }
            _ => None,
        };
        Ok((policy, flow))
    }

    /// What the proxy needs for a connect `policy`'s endpoint `ep` allowed; `secrets`: the
    /// policy's credentials may go back in (not for a pass an audit-mode endpoint let by).
    pub(super) fn flow(
        &self,
        policy: &str,
        ep: &Endpoint,
        dest: SocketAddr,
        secrets: bool,
    ) -> Result<l7::Flow, Errno> {
        // Compiled with the generation; an endpoint a reload replaced meanwhile, here.
        let compiled = self
            .shared
            .current()
            .rules
            .iter()
            .find(|(e, _)| e == ep)
            .map(|(_, r)| r.clone());
        let rules = compiled
            .unwrap_or_else(|| {
                l7::Rules::compile(&l7::endpoint_rules(ep))
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| {
                self.event(audit::Decision::Denied, policy, &e, Some(dest), &[]);
                Errno::EACCES
            })?;
        let names = if ep.host.parse::<IpAddr>().is_ok() {
            vec![ep.host.clone()]
        } else {
            self.shared
                .answers
                .names_for(dest.ip())
                .into_iter()
                .filter(|n| decide::host_matches(&ep.host, n))
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        Ok(l7::Flow {
            dest,
            rules,
            tls_skip: ep.tls == Some(crate::policy::model::Tls::Skip),
            websocket: ep.protocol == Some(crate::policy::model::Protocol::Websocket),
            names,
            policy: policy.to_string(),
            secrets,
            by: format!("{policy} {}", ep.host),
            pid: self.caller.pid,
            exe: self.caller.exe_path(),
        })
    }

    /// Decide the destination of a send. `AF_UNSPEC` is refused: IPv4 UDP takes its address
    /// and port as a destination. Endpoints with HTTP rules take connects only: a datagram
    /// (QUIC) or a fast-open send would pass uninspected.
    pub(super) fn allowed_send(&self, addr: &[u8]) -> Result<Option<String>, Errno> {
        let dest = match sockaddr::parse(addr) {
            Target::Inet(d) => d,
            Target::Unspec => return Err(Errno::EAFNOSUPPORT),
            Target::Invalid(e) => return Err(Errno::from_raw(e)),
        };
        let (policy, endpoint, _) = self.decided(dest)?;
        if endpoint.as_ref().is_some_and(l7::inspected) {
            let why =
                "an endpoint with HTTP rules takes TCP connects only (datagrams and fast-open \
                       sends would pass uninspected)";
            self.event(
                audit::Decision::Denied,
                "network_policies",
                why,
                Some(dest),
                &[],
            );
            return Err(Errno::EACCES);
        }
        Ok(policy)
    }

    /// The policy and endpoint that allowed a destination, and whether only an audit-mode
    /// endpoint let it by.
    pub(super) fn decided(
        &self,
        dest: SocketAddr,
    ) -> Result<(Option<String>, Option<Endpoint>, bool), Errno> {
        match judge(&self.shared, &self.caller, dest) {
            Verdict::Allow { policy, endpoint } => Ok((policy, endpoint, false)),
            Verdict::AuditPass {
                policy,
                endpoint,
                by,
                why,
                names,
            } => {
                self.event(audit::Decision::AllowedAudit, &by, &why, Some(dest), &names);
                Ok((Some(policy), Some(endpoint), true))
            }
            Verdict::Deny { why, names } => {
                self.event(
                    audit::Decision::Denied,
                    "network_policies",
                    &why,
                    Some(dest),
                    &names,
                );
                Err(Errno::EACCES)
            }
        }
    }
}

#[derive(Debug)]
enum Verdict {
    Allow {
        policy: Option<String>,
        /// The endpoint that allowed it (none for the resolver).
        endpoint: Option<Endpoint>,
    },
    AuditPass {
        policy: String,
        endpoint: Endpoint,
        by: String,
        why: String,
        names: Vec<String>,
    },
    Deny {
        why: String,
        names: Vec<String>,
    },
}

fn judge(shared: &Shared, caller: &Caller, dest: SocketAddr) -> Verdict {
    if dest.port() == 53 {
        return if dest.ip() == IpAddr::V4(shared.resolver) {
            Verdict::Allow {
                policy: None,
                endpoint: None,
            }
        } else {
            Verdict::Deny {
                why: "DNS goes through the container's resolver only".into(),
                names: Vec::new(),
            }
        };
    }
    let names = shared.answers.names_for(dest.ip());
    let looked_at = Instant::now();
    let gen = shared.current();
    let (mut d, mut refusal) = decide_with(shared, &gen, caller, dest, &names);
    let mut gen = gen;
    if matches!(d, Decision::Deny { .. }) && !gen.binaries.knows(caller.exe.id) {
        gen = shared.refresh_binaries(looked_at);
        (d, refusal) = decide_with(shared, &gen, caller, dest, &names);
    }
    let endpoint_of = |policy: &str, index: usize| {
        gen.policies
            .get(policy)
            .and_then(|n| n.policy.endpoints.get(index))
            .cloned()
            .unwrap_or_default()
    };
    match d {
        Decision::Allow {
            would_deny: Some(why),
            policy,
            endpoint,
            index,
            ..
        } => Verdict::AuditPass {
            by: format!("{policy} {endpoint}"),
            endpoint: endpoint_of(&policy, index),
            policy,
            why,
            names,
        },
        Decision::Allow { policy, index, .. } => Verdict::Allow {
            endpoint: Some(endpoint_of(&policy, index)),
            policy: Some(policy),
        },
        Decision::Deny { reason } => {
            let why = match (gen.binaries.tampered.get(&caller.exe.id), refusal) {
                (Some(t), _) => format!("{reason} ({t})"),
                (None, Some(s)) => format!("{reason} ({s})"),
                (None, None) => reason,
            };
            Verdict::Deny { why, names }
        }
    }
}

fn decide_with(
    shared: &Shared,
    gen: &Generation,
    caller: &Caller,
    dest: SocketAddr,
    names: &[String],
) -> (Decision, Option<String>) {
    let root = shared.root();
    let refusal: Mutex<Option<String>> = Mutex::new(None);
    let binary_allowed = |key: &str| -> bool {
        let Some(set) = gen.binaries.by_policy.get(key) else {
            return false;
        };
        match identity::matches(set, caller, &shared.captures, &root) {
            Ok(m) => m,
            Err(why) => {
                *refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                false
            }
        }
    };
    let d = decide::decide(
        &gen.policies,
        &Attempt {
            ip: dest.ip(),
            port: dest.port(),
            names,
        },
        &binary_allowed,
    );
    (d, refusal.into_inner().unwrap_or_else(|e| e.into_inner()))
}
