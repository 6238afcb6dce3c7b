//! Live update of a running container's network policies.
//!
//! Only `network_policies` can change under a running workload: mounts, Landlock rulesets and
//! seccomp filters are fixed once the process runs. A preset's other sections are therefore
//! reported as not applied, never half-applied.

use super::merge::{put_network, Effective, EffectiveNetwork};
use super::Loaded;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    #[error("{0} is a baseline, not a preset (it has no `preset:` header)")]
    NotAPreset(String),
    #[error("preset {0:?} is already applied to this container ({1})")]
    AlreadyApplied(String, String),
    #[error("{0:?} is not applied to this container (its documents: {1})")]
    NotApplied(String, String),
    #[error("{0} is the container's baseline; only presets can be removed")]
    IsBaseline(String),
    #[error("network policy {key:?} of {origin} replaced the one from {replaced}, which cannot be loaded again to restore it: {reason}")]
    CannotRestore {
        key: String,
        origin: String,
        replaced: String,
        reason: String,
    },
}

/// The short name an origin answers to: `builtin:NAME` → NAME, `/dir/NAME.yaml` → NAME.
fn origin_name(origin: &str) -> &str {
    if let Some(n) = origin.strip_prefix("builtin:") {
        return n;
    }
    let file = origin.rsplit('/').next().unwrap_or(origin);
    file.strip_suffix(".yaml")
        .or_else(|| file.strip_suffix(".yml"))
        .unwrap_or(file)
}

/// The source of `eff` that `name` (a policy name or the file path it was loaded from) means.
fn find_source(eff: &Effective, name: &str) -> Option<usize> {
    eff.sources
        .iter()
        .position(|o| o == name)
        .or_else(|| eff.sources.iter().position(|o| origin_name(o) == name))
}

/// Sections of a preset that a running container cannot take on, for the caller to report.
fn not_live(preset: &Loaded) -> Vec<&'static str> {
    let d = &preset.doc;
    let mut out = Vec::new();
    if d.filesystem_policy.is_some() {
        out.push("filesystem_policy");
    }
    if d.landlock.is_some() {
        out.push("landlock");
    }
    if d.exec_policy.is_some() {
        out.push("exec_policy");
    }
    if d.symlink_guards.is_some() {
        out.push("symlink_guards");
    }
    out
}

/// Add `preset`'s network policies (same key: the preset's entry replaces the current one, as
/// at create). Returns the sections that were not applied.
pub fn add_preset(eff: &mut Effective, preset: &Loaded) -> Result<Vec<&'static str>, LiveError> {
    if !preset.is_preset() {
        return Err(LiveError::NotAPreset(preset.origin.clone()));
    }
    // By name: the same preset from a policy directory or built in is the same preset.
    if let Some(i) = find_source(eff, origin_name(&preset.origin)) {
        return Err(LiveError::AlreadyApplied(
            origin_name(&preset.origin).into(),
            eff.sources[i].clone(),
        ));
    }
    for (key, np) in &preset.doc.network_policies {
        put_network(eff, key, np, &preset.origin);
    }
    eff.sources.push(preset.origin.clone());
    Ok(not_live(preset))
}

/// Does anything but network policies in `eff` still come from `origin`?
fn other_parts_from(eff: &Effective, origin: &str) -> bool {
    let fs = &eff.filesystem_policy;
    fs.read_only.iter().any(|e| e.from == origin)
        || fs.read_write.iter().any(|e| e.from == origin)
        || fs.permissions.values().any(|e| e.from == origin)
        || eff.landlock.from == origin
        || eff
            .exec_policy
            .as_ref()
            .is_some_and(|x| x.allowlist.iter().any(|e| e.from == origin))
        || eff.symlink_guards.iter().any(|e| e.from == origin)
}

/// What `remove_preset` did besides dropping network policies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removed {
    pub origin: String,
    /// Keys whose earlier entry came back.
    pub restored: Vec<String>,
    /// The preset's other sections stay in force until the container is recreated.
    pub still_in_force: bool,
}

/// Remove the network policies that `name` brought. An entry it had replaced comes back from
/// the document it came from, loaded again by `reload` (origin → document).
pub fn remove_preset(
    eff: &mut Effective,
    name: &str,
    reload: impl Fn(&str) -> Result<Loaded, String>,
) -> Result<Removed, LiveError> {
    let i = find_source(eff, name)
        .ok_or_else(|| LiveError::NotApplied(name.into(), eff.sources.join(", ")))?;
    if i == 0 {
        return Err(LiveError::IsBaseline(eff.sources[0].clone()));
    }
    let origin = eff.sources[i].clone();
    let mut next = eff.network_policies.clone();
    let mut restored = Vec::new();
    for (key, entry) in &eff.network_policies {
        if entry.from != origin {
            // A later document replaced this key: forget that `origin` once held it.
            if let Some(e) = next.get_mut(key) {
                e.replaced.retain(|r| *r != origin);
            }
            continue;
        }
        next.remove(key);
        let mut earlier = entry.replaced.clone();
        if let Some(prev) = earlier.pop() {
            let fail = |reason: String| LiveError::CannotRestore {
                key: key.clone(),
                origin: origin.clone(),
                replaced: prev.clone(),
                reason,
            };
            let doc = reload(&prev).map_err(fail)?;
            let policy = doc
                .doc
                .network_policies
                .get(key)
                .cloned()
                .ok_or_else(|| fail(format!("it no longer has {key:?}")))?;
            next.insert(
                key.clone(),
                EffectiveNetwork {
                    policy,
                    from: prev.clone(),
                    replaced: earlier,
                },
            );
            restored.push(key.clone());
        }
    }
    eff.network_policies = next;
    let still_in_force = other_parts_from(eff, &origin);
    if !still_in_force {
        eff.sources.remove(i);
    }
    Ok(Removed {
        origin,
        restored,
        still_in_force,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{load_str, merge::merge};

    fn doc(origin: &str, text: &str) -> Loaded {
        load_str(origin, text).expect("valid test policy")
    }

    fn base() -> Loaded {
        doc(
            "/etc/nemosandbox/policies/base.yaml",
            "version: 1\nnetwork_policies:\n  api:\n    endpoints: [{host: a.example.com, port: 443}]\n    binaries: [{path: /usr/bin/curl}]\n",
        )
    }

    fn preset(origin: &str, host: &str) -> Loaded {
        doc(
            origin,
            &format!("version: 1\npreset: {{name: p, description: d}}\nnetwork_policies:\n  api:\n    endpoints: [{{host: {host}, port: 443}}]\n    binaries: [{{path: /usr/bin/node}}]\n  extra:\n    endpoints: [{{host: {host}, port: 80}}]\n    binaries: [{{path: /usr/bin/node}}]\n"),
        )
    }

    #[test]
    fn add_then_remove_restores_the_replaced_entry() {
        let b = base();
        let mut eff = merge(&b, &[], None).unwrap();
        let before = eff.clone();
        let p = preset("builtin:tg", "t.example.org");
        assert!(add_preset(&mut eff, &p).unwrap().is_empty());
        assert_eq!(eff.network_policies["api"].from, "builtin:tg");
        assert_eq!(eff.network_policies["api"].replaced, vec![b.origin.clone()]);
        assert_eq!(eff.sources.last().unwrap(), "builtin:tg");
        // Same result as selecting the preset at create.
        assert_eq!(eff, merge(&b, std::slice::from_ref(&p), None).unwrap());

        let bb = b.clone();
        let r = remove_preset(&mut eff, "tg", |o| {
            assert_eq!(o, bb.origin);
            Ok(bb.clone())
        })
        .unwrap();
        assert_eq!(r.restored, vec!["api".to_string()]);
        assert!(!r.still_in_force);
        assert_eq!(eff, before);
    }

    #[test]
    fn bad_changes_are_refused_and_change_nothing() {
        let b = base();
        let p = preset("builtin:tg", "t.example.org");
        let mut eff = merge(&b, std::slice::from_ref(&p), None).unwrap();
        let before = eff.clone();
        assert!(matches!(
            add_preset(&mut eff, &p),
            Err(LiveError::AlreadyApplied(..))
        ));
        assert!(matches!(
            add_preset(&mut eff, &b),
            Err(LiveError::NotAPreset(_))
        ));
        assert!(matches!(
            remove_preset(&mut eff, "base", |_| unreachable!()),
            Err(LiveError::IsBaseline(_))
        ));
        assert!(matches!(
            remove_preset(&mut eff, "nope", |_| unreachable!()),
            Err(LiveError::NotApplied(..))
        ));
        let e = remove_preset(&mut eff, "tg", |_| Err("gone".into())).unwrap_err();
        assert!(e.to_string().contains("cannot be loaded again"), "{e}");
        assert_eq!(eff, before);
    }

    #[test]
    fn removing_a_preset_under_a_later_one_keeps_the_later_entry() {
        let b = base();
        let p = preset("builtin:one", "one.example.org");
        let q = preset("/etc/nemosandbox/policies/two.yaml", "two.example.org");
        let mut eff = merge(&b, &[p, q], None).unwrap();
        let r = remove_preset(&mut eff, "one", |_| unreachable!()).unwrap();
        assert!(r.restored.is_empty());
        assert_eq!(eff.network_policies["api"].from, q_origin());
        assert_eq!(eff.network_policies["api"].replaced, vec![base().origin]);
        assert_eq!(eff.sources, vec![base().origin, q_origin()]);
        // By file path as well as by name.
        remove_preset(&mut eff, &q_origin(), |o| {
            assert_eq!(o, base().origin);
            Ok(base())
        })
        .unwrap();
        assert_eq!(eff.network_policies.len(), 1);
    }

    fn q_origin() -> String {
        "/etc/nemosandbox/policies/two.yaml".into()
    }

    #[test]
    fn other_sections_are_reported_not_applied() {
        let b = base();
        let mut eff = merge(&b, &[], None).unwrap();
        let p = doc(
            "builtin:fs",
            "version: 1\npreset: {name: fs, description: d}\nfilesystem_policy:\n  read_write: [/data]\nnetwork_policies: {}\n",
        );
        assert_eq!(add_preset(&mut eff, &p).unwrap(), vec!["filesystem_policy"]);
        // A preset whose filesystem part was applied at create stays listed after removal.
        let mut eff = merge(&b, &[p], None).unwrap();
        let r = remove_preset(&mut eff, "fs", |_| unreachable!()).unwrap();
        assert!(r.still_in_force);
        assert!(eff.sources.contains(&"builtin:fs".to_string()));
    }
}
