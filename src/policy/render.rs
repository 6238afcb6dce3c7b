//! Human-facing views of policies: YAML output, the JSON Schema, and `explain`.

use std::fmt::Write as _;

use serde_json::Value;
use yaml_rust2::yaml::{Hash, Yaml};
use yaml_rust2::YamlEmitter;

use super::merge::Effective;
use super::model::{Access, PolicyDoc, Protocol};

fn to_yaml(v: &Value) -> Yaml {
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Array(a.iter().map(to_yaml).collect()),
        Value::Object(o) => {
            let mut h = Hash::new();
            for (k, v) in o {
                h.insert(Yaml::String(k.clone()), to_yaml(v));
            }
            Yaml::Hash(h)
        }
    }
}

/// Any serializable value as a YAML document.
pub fn yaml_text(v: &impl serde::Serialize) -> String {
    let value = serde_json::to_value(v).expect("serializable");
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&to_yaml(&value))
        .expect("emit yaml");
    out.push('\n');
    out
}

/// JSON Schema of the policy document format.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(PolicyDoc);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serializes");
    s.push('\n');
    s
}

/// How an endpoint's protocol-level fields are enforced, when it has any.
fn l7_note(
    protocol: Option<Protocol>,
    has_rules: bool,
    access: Option<Access>,
) -> Option<&'static str> {
    let http = matches!(protocol, Some(Protocol::Rest | Protocol::Websocket));
    if http && (has_rules || access.is_some()) {
        return Some(
            "HTTP rules enforced per request by the layer-7 proxy (TLS terminated with the container's CA unless tls: skip)",
        );
    }
    if has_rules || access.is_some() {
        return Some(
            "rules/access need protocol rest or websocket; enforced at host/port/binary level",
        );
    }
    match protocol {
        Some(Protocol::Rest | Protocol::Http | Protocol::Grpc) => {
            Some("protocol parsed; enforced at host/port/binary level")
        }
        _ => None,
    }
}

/// What will be enforced for this effective policy, section by section.
/// What `explain` says of the `oci` baseline.
const UNCONFINED: &str = "\
!!! UNCONFINED: baseline \"oci\" !!!
The runtime behaves as runc: the spec is applied as written (root read-only only if
root.readonly says so, no_new_privs only if process.noNewPrivileges says so, the spec's
seccomp profile or none, its masked and read-only paths). No Landlock, no mount layout, no
network guard, no exec gate, no symlink guards, no audit of denials. Use it to tell a policy
problem from a runtime problem, or for workloads the operator chooses not to confine.
";

pub fn explain(eff: &Effective) -> String {
    let mut o = String::new();
    if eff.unconfined {
        let _ = writeln!(o, "sources: {}", eff.sources.join(", "));
        let _ = writeln!(o, "policy sha256: {}\n", eff.sha256());
        o.push_str(UNCONFINED);
        return o;
    }
    let _ = writeln!(o, "sources (merge order): {}", eff.sources.join(", "));
    let _ = writeln!(o, "policy sha256: {}", eff.sha256());

    let _ = writeln!(o, "\nfilesystem (path -> rwx, from):");
    let fs = &eff.filesystem_policy;
    for e in &fs.read_only {
        let _ = writeln!(o, "  {:<40} r-x  {}", e.value, e.from);
    }
    for e in &fs.read_write {
        let _ = writeln!(o, "  {:<40} rwx  {}", e.value, e.from);
    }
    for (glob, e) in &fs.permissions {
        let _ = writeln!(o, "  {:<40} {}  {}", glob, e.value, e.from);
    }
    for (glob, e) in &fs.narrowing {
        let _ = writeln!(
            o,
            "  {:<40} {}  {} (selected by annotation: only narrows)",
            glob, e.value, e.from
        );
    }
    if fs.include_workdir {
        let _ = writeln!(o, "  {:<40} rwx  include_workdir", "<process.cwd>");
    }
    let _ = writeln!(
        o,
        "  enforcement: mount layout + Landlock (the plan for a bundle: `policy explain --bundle DIR`)"
    );

    let _ = writeln!(
        o,
        "\nlandlock: compatibility {:?} (from {})",
        eff.landlock.value, eff.landlock.from
    );
    if let Some(p) = &eff.process {
        let _ = writeln!(
            o,
            "\nprocess: {} (from {})",
            serde_json::to_string(&p.value).unwrap_or_default(),
            p.from
        );
    }

    let _ = writeln!(o, "\nnetwork (endpoint x binaries):");
    if eff.network_policies.is_empty() {
        let _ = writeln!(o, "  no egress allowed");
    }
    for (key, n) in &eff.network_policies {
        let replaced = if n.replaced.is_empty() {
            String::new()
        } else {
            format!(", replaces {}", n.replaced.join(", "))
        };
        let _ = writeln!(o, "  [{key}] from {}{replaced}", n.from);
        let bins: Vec<&str> = n.policy.binaries.iter().map(|b| b.path.as_str()).collect();
        for ep in &n.policy.endpoints {
            let ports = match (&ep.port, &ep.ports) {
                (Some(p), _) => p.to_string(),
                (None, Some(ps)) => ps
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                _ => "?".into(),
            };
            let mode = if ep.enforcement == Some(super::model::Enforcement::Audit) {
                "audit"
            } else {
                "enforce"
            };
            let note = l7_note(
                ep.protocol,
                ep.rules.as_ref().is_some_and(|r| !r.is_empty()),
                ep.access,
            )
            .map(|n| format!("  ({n})"))
            .unwrap_or_default();
            let _ = writeln!(
                o,
                "    {}:{ports} [{mode}] <- {}{note}",
                ep.host,
                bins.join(" ")
            );
            if crate::netguard::l7::inspected(ep) {
                for r in crate::netguard::l7::endpoint_rules(ep) {
                    let (verb, m) = match (&r.allow, &r.deny) {
                        (Some(m), _) => ("allow", m),
                        (_, Some(m)) => ("deny", m),
                        _ => continue,
                    };
                    let _ = writeln!(
                        o,
                        "      {verb} {} {}",
                        m.method.as_deref().unwrap_or("*"),
                        m.path.as_deref().unwrap_or("/**")
                    );
                }
            }
        }
    }
    let _ = writeln!(
        o,
        "  enforcement: the network guard decides every connect and addressed send per destination and per executable; the resolver answers only the names above; Landlock grants no TCP connect of its own"
    );

    if let Some(ex) = &eff.exec_policy {
        let _ = writeln!(o, "\nexec allowlist (safe builtins: {}):", ex.safe_builtins);
        for p in &ex.allowlist {
            let _ = writeln!(o, "  {}  {}", p.value.pattern, p.from);
        }
        let _ = writeln!(
            o,
            "  enforcement: every `exec` is checked (shell chains parsed); allowed ones run with execute rights only on what was allowed"
        );
    }
    if !eff.symlink_guards.is_empty() {
        let _ = writeln!(o, "\nsymlink guards:");
        for g in &eff.symlink_guards {
            let _ = writeln!(
                o,
                "  {} -> {}/<name>  {}",
                g.value.dir, g.value.target_dir, g.from
            );
        }
        let _ = writeln!(
            o,
            "  enforcement: validated and frozen between create and start (read-only bind, no Landlock write, immutable attribute)"
        );
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_schema_is_current() {
        let committed = include_str!("../../docs/policy.schema.json");
        assert!(
            committed == super::schema_json(),
            "docs/policy.schema.json is stale: regenerate with `nemosandbox policy schema > docs/policy.schema.json`"
        );
    }
}
