//! Semantic rules on a parsed document: fail closed, every violation reported
//! with the path of the offending field (turned into file:line:column by the loader).

use std::net::IpAddr;

use super::model::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, located by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Finding {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
        });
    }
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Finding {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Is this a well-formed permission string: exactly `[r-][w-][x-]`?
pub fn valid_permission(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3
        && matches!(b[0], b'r' | b'-')
        && matches!(b[1], b'w' | b'-')
        && matches!(b[2], b'x' | b'-')
}

/// Absolute (or `~`-relative), no `..` component, no NUL.
fn check_path(f: &mut Findings, path: &str, value: &str) {
    if value.contains('\0') {
        f.error(path, "path contains a NUL byte");
        return;
    }
    if !(value.starts_with('/') || value == "~" || value.starts_with("~/")) {
        f.error(
            path,
            format!("path {value:?} must be absolute (or start with ~/)"),
        );
    }
    if value.split('/').any(|c| c == "..") {
        f.error(path, format!("path {value:?} must not contain '..'"));
    }
}

/// Host: exact DNS name, IP literal, or a label glob `*.x.y` / `**.x.y` with at least two
/// literal labels after the wildcard (so `*.com` is refused).
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host is empty".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let (wild, rest) = if let Some(r) = host.strip_prefix("**.") {
        (true, r)
    } else if let Some(r) = host.strip_prefix("*.") {
        (true, r)
    } else {
        (false, host)
    };
    if host == "*" || host == "**" {
        return Err(format!("host {host:?} would allow every destination"));
    }
    let labels: Vec<&str> = rest.split('.').collect();
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return Err(format!("host {host:?} has an empty or over-long label"));
        }
        if l.contains('*') {
            return Err(format!("host {host:?}: wildcards are only allowed as the whole first label (*.x.com or **.x.com)"));
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("host {host:?} has invalid characters"));
        }
    }
    if wild && labels.len() < 2 {
        return Err(format!(
            "host {host:?} is a top-level wildcard; name at least two labels after it"
        ));
    }
    Ok(())
}

fn check_cidr(s: &str) -> Result<(), String> {
    let (addr, len) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not a CIDR (address/length)"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let n: u32 = if len.is_empty() {
        max
    } else {
        len.parse()
            .map_err(|_| format!("{s:?}: bad prefix length"))?
    };
    if n > max {
        return Err(format!("{s:?}: prefix length {n} exceeds {max}"));
    }
    Ok(())
}

/// Validate a document. `is_preset` relaxes `version` (optional in presets).
pub fn validate(doc: &PolicyDoc, is_preset: bool) -> Vec<Finding> {
    let mut f = Findings::default();
    match doc.version {
        Some(1) => {}
        Some(v) => f.error("version", format!("version must be 1, got {v}")),
        None if is_preset => {}
        None => f.error(".", "missing required key `version` (must be 1)"),
    }
    if let Some(p) = &doc.preset {
        if p.name.trim().is_empty() {
            f.error("preset.name", "preset name is empty");
        }
    }
    if let Some(fs) = &doc.filesystem_policy {
        validate_fs(&mut f, fs);
    }
    if let Some(pr) = &doc.process {
        for (key, v) in [
            ("run_as_user", &pr.run_as_user),
            ("run_as_group", &pr.run_as_group),
        ] {
            match v {
                Some(IdOrName::Id(0)) => f.error(
                    format!("process.{key}"),
                    format!("{key}: 0 (root) is refused"),
                ),
                Some(IdOrName::Name(n)) if n == "root" || n == "0" => f.error(
                    format!("process.{key}"),
                    format!("{key}: {n:?} (root) is refused"),
                ),
                Some(IdOrName::Name(n)) if n.is_empty() => {
                    f.error(format!("process.{key}"), format!("{key} is empty"))
                }
                _ => {}
            }
        }
    }
    for (id, np) in &doc.network_policies {
        validate_network(&mut f, &format!("network_policies.{id}"), np);
    }
    if let Some(ex) = &doc.exec_policy {
        for (i, sh) in ex.shells.iter().enumerate() {
            check_path(&mut f, &format!("exec_policy.shells[{i}]"), sh);
        }
        for (i, p) in ex.allowlist.iter().enumerate() {
            if p.pattern.trim().is_empty() {
                f.error(
                    format!("exec_policy.allowlist[{i}].pattern"),
                    "empty pattern",
                );
            } else if !(p.pattern.starts_with('/') || p.pattern.starts_with("**")) {
                f.error(
                    format!("exec_policy.allowlist[{i}].pattern"),
                    format!("pattern {:?} must be absolute or start with ** (it matches resolved paths)", p.pattern),
                );
            }
        }
    }
    if let Some(guards) = &doc.symlink_guards {
        for (i, g) in guards.iter().enumerate() {
            check_path(&mut f, &format!("symlink_guards[{i}].dir"), &g.dir);
            check_path(
                &mut f,
                &format!("symlink_guards[{i}].target_dir"),
                &g.target_dir,
            );
            if g.dir.trim_end_matches('/') == g.target_dir.trim_end_matches('/') {
                f.error(
                    format!("symlink_guards[{i}]"),
                    "dir and target_dir are the same",
                );
            }
        }
    }
    f.0
}

fn validate_fs(f: &mut Findings, fs: &FilesystemPolicy) {
    for (key, list) in [("read_only", &fs.read_only), ("read_write", &fs.read_write)] {
        for (i, p) in list.iter().enumerate() {
            let path = format!("filesystem_policy.{key}[{i}]");
            check_path(f, &path, p);
            if key == "read_write" && p.trim_end_matches('/').is_empty() {
                f.error(&path, "read_write: / would make the whole root writable");
            }
        }
    }
    for (glob, perm) in &fs.permissions {
        let path = format!("filesystem_policy.permissions.{glob}");
        check_path(f, &path, glob);
        if !valid_permission(perm) {
            f.error(
                &path,
                format!("permission {perm:?} for {glob:?} must be three characters [r-][w-][x-]"),
            );
        }
    }
}

fn validate_network(f: &mut Findings, base: &str, np: &NetworkPolicy) {
    for (i, c) in np.credentials.iter().flatten().enumerate() {
        let name_ok = c
            .env
            .chars()
            .next()
            .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && c.env
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !name_ok {
            f.error(
                format!("{base}.credentials[{i}].env"),
                format!("{:?} is not an environment variable name", c.env),
            );
        }
    }
    if np.credentials.is_some() && !np.endpoints.iter().any(crate::netguard::l7::inspected) {
        f.warn(
            format!("{base}.credentials"),
            "credentials are put back only on endpoints with `protocol: rest` and rules or access; this policy has none, so its requests carry the placeholder",
        );
    }
    if np.binaries.is_empty() {
        f.error(
            format!("{base}.binaries"),
            "a network policy needs at least one binary (egress is per executable)",
        );
    }
    if np.endpoints.is_empty() {
        f.error(
            format!("{base}.endpoints"),
            "a network policy needs at least one endpoint",
        );
    }
    for (i, b) in np.binaries.iter().enumerate() {
        let p = format!("{base}.binaries[{i}].path");
        if !b.path.starts_with('/') {
            f.error(
                &p,
                format!("binary {:?} must be an absolute path or glob", b.path),
            );
        }
        if b.path.split('/').any(|c| c == "..") {
            f.error(&p, format!("binary {:?} must not contain '..'", b.path));
        }
    }
    for (i, ep) in np.endpoints.iter().enumerate() {
        let e = format!("{base}.endpoints[{i}]");
        if let Err(m) = check_host(&ep.host) {
            f.error(format!("{e}.host"), m);
        }
        match (&ep.port, &ep.ports) {
            (None, None) => f.error(&e, "endpoint needs `port` or `ports`"),
            (Some(_), Some(_)) => f.error(&e, "use either `port` or `ports`, not both"),
            (Some(0), _) => f.error(format!("{e}.port"), "port 0 is out of range (1-65535)"),
            (None, Some(ps)) if ps.is_empty() => f.error(format!("{e}.ports"), "`ports` is empty"),
            (None, Some(ps)) => {
                for (j, p) in ps.iter().enumerate() {
                    if *p == 0 {
                        f.error(
                            format!("{e}.ports[{j}]"),
                            "port 0 is out of range (1-65535)",
                        );
                    }
                }
            }
            _ => {}
        }
        if let Some(rules) = &ep.rules {
            if rules.is_empty() {
                f.error(
                    format!("{e}.rules"),
                    "`rules: []` allows nothing; remove it or list rules",
                );
            }
            if ep.access.is_some() {
                f.error(
                    format!("{e}.rules"),
                    "`rules` and `access` cannot be used together",
                );
            }
            if ep.protocol.is_none() {
                f.error(format!("{e}.rules"), "`rules` need `protocol`");
            }
            for (j, r) in rules.iter().enumerate() {
                if r.allow.is_some() == r.deny.is_some() {
                    f.error(
                        format!("{e}.rules[{j}]"),
                        "each rule has exactly one of `allow` or `deny`",
                    );
                }
            }
            let http = matches!(
                ep.protocol,
                Some(Protocol::Rest) | Some(Protocol::Websocket)
            );
            if !rules.is_empty() && ep.protocol.is_some() && !http {
                f.warn(
                    format!("{e}.rules"),
                    "layer-7 rules are enforced for `protocol: rest` and `websocket` only; this endpoint is enforced at host/port/binary level",
                );
            }
        }
        if matches!(ep.tls, Some(Tls::Terminate) | Some(Tls::Passthrough)) {
            f.warn(
                format!("{e}.tls"),
                "`tls: terminate`/`passthrough` is deprecated and has no effect",
            );
        }
        if let Some(ips) = &ep.allowed_ips {
            for (j, c) in ips.iter().enumerate() {
                if let Err(m) = check_cidr(c) {
                    f.error(format!("{e}.allowed_ips[{j}]"), m);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_strings() {
        for ok in ["rwx", "r--", "---", "-w-", "r-x"] {
            assert!(valid_permission(ok), "{ok}");
        }
        for bad in ["rwxoops", "xwr", "rw", "RWX", "r w", ""] {
            assert!(!valid_permission(bad), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "api.telegram.org",
            "*.cdn.telegram.org",
            "**.x.com",
            "10.0.0.1",
            "::1",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "*",
            "**",
            "*.com",
            "**.org",
            "a.*.com",
            "x..com",
            "",
            "bad host.com",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }
}
