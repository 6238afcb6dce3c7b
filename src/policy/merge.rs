//! Merge a baseline and presets into the effective policy of one container.
//! Deterministic; every entry remembers the document it came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::*;
use super::Loaded;

/// A value and the document that supplied it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct From<T> {
    pub value: T,
    pub from: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EffectiveFs {
    pub include_workdir: bool,
    pub read_only: Vec<From<String>>,
    pub read_write: Vec<From<String>>,
    pub permissions: BTreeMap<String, From<String>>,
    /// Filesystem entries of presets a workload's annotations selected: they can only take
    /// rights away. A path's rights are what the other entries give it, intersected with what
    /// these give it (where one covers it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub narrowing: BTreeMap<String, From<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveNetwork {
    pub policy: NetworkPolicy,
    pub from: String,
    /// Earlier documents whose entry with this key was replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveExec {
    pub allowlist: Vec<From<ExecPattern>>,
    pub safe_builtins: bool,
    /// Extra wrapper shells the policy names (see `ExecPolicy::shells`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shells: Vec<From<String>>,
}

/// The one policy a container runs under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effective {
    /// Documents in merge order (baseline first).
    pub sources: Vec<String>,
    pub filesystem_policy: EffectiveFs,
    pub landlock: From<Compatibility>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<From<ProcessPolicy>>,
    pub network_policies: BTreeMap<String, EffectiveNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_policy: Option<EffectiveExec>,
    pub symlink_guards: Vec<From<SymlinkGuard>>,
    /// The `oci` baseline: the spec runs as runc would run it, with none of the above.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unconfined: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("{0} is a preset, not a baseline")]
    PresetAsBaseline(String),
    #[error("{0} is a baseline, not a preset (it has no `preset:` header)")]
    BaselineAsPreset(String),
    #[error("{0}: `process` may only be set by the baseline or the node configuration")]
    PresetSetsProcess(String),
    #[error("{by}: network policy {key:?} is already set by {from}; a preset selected by annotation cannot replace it (use another key)")]
    SelectedReplacesNetwork {
        by: String,
        key: String,
        from: String,
    },
}

fn push_unique(list: &mut Vec<From<String>>, value: &str, from: &str) {
    if !list.iter().any(|e| e.value == value) {
        list.push(From {
            value: value.to_string(),
            from: from.to_string(),
        });
    }
}

fn merge_fs(eff: &mut EffectiveFs, fs: &FilesystemPolicy, from: &str) {
    eff.include_workdir |= fs.include_workdir.unwrap_or(false);
    for p in &fs.read_only {
        push_unique(&mut eff.read_only, p, from);
    }
    for p in &fs.read_write {
        push_unique(&mut eff.read_write, p, from);
    }
    for (glob, perm) in &fs.permissions {
        eff.permissions.insert(
            glob.clone(),
            From {
                value: perm.clone(),
                from: from.to_string(),
            },
        );
    }
}

/// The rights both permission strings give (`r-x` and `rw-`: `r--`).
fn intersect(a: &str, b: &str) -> String {
    a.chars()
        .zip(b.chars())
        .map(|(x, y)| if x == y { x } else { '-' })
        .collect()
}

/// The filesystem section of a preset that annotations selected: every entry narrows (a
/// read-only path stays read-only, a masked one masked). `include_workdir` cannot be switched
/// on from here, and `read_write` entries give nothing.
fn narrow_fs(eff: &mut EffectiveFs, fs: &FilesystemPolicy, from: &str) {
    let mut put = |glob: &str, perm: &str| {
        let value = match eff.narrowing.get(glob) {
            Some(old) => intersect(&old.value, perm),
            None => perm.to_string(),
        };
        eff.narrowing.insert(
            glob.to_string(),
            From {
                value,
                from: from.to_string(),
            },
        );
    };
    for p in &fs.read_only {
        put(p, "r-x");
    }
    for (glob, perm) in &fs.permissions {
        put(glob, perm);
    }
}

/// The filesystem layout of the built-in `default`, for baselines that have none.
fn default_fs() -> FilesystemPolicy {
    super::builtin::load_builtin_named("default")
        .doc
        .filesystem_policy
        .expect("default has a filesystem_policy")
}

/// Merge `baseline` then `presets` in order; `node_process` (node configuration) overrides the
/// baseline's `process`.
pub fn merge(
    baseline: &Loaded,
    presets: &[Loaded],
    node_process: Option<&ProcessPolicy>,
) -> Result<Effective, MergeError> {
    merge_selected(baseline, presets, &[], node_process)
}

/// `merge`, then `selected` (presets a workload's annotations chose) whose filesystem entries
/// can only narrow what the others allow.
pub fn merge_selected(
    baseline: &Loaded,
    presets: &[Loaded],
    selected: &[Loaded],
    node_process: Option<&ProcessPolicy>,
) -> Result<Effective, MergeError> {
    if baseline.is_preset() {
        return Err(MergeError::PresetAsBaseline(baseline.origin.clone()));
    }
    let base = &baseline.doc;
    let mut eff = Effective {
        sources: vec![baseline.origin.clone()],
        filesystem_policy: EffectiveFs::default(),
        landlock: From {
            value: base
                .landlock
                .as_ref()
                .map(|l| l.compatibility)
                .unwrap_or_default(),
            from: baseline.origin.clone(),
        },
        process: base.process.clone().map(|p| From {
            value: p,
            from: baseline.origin.clone(),
        }),
        network_policies: BTreeMap::new(),
        exec_policy: None,
        symlink_guards: Vec::new(),
        unconfined: false,
    };
    match &base.filesystem_policy {
        Some(fs) => merge_fs(&mut eff.filesystem_policy, fs, &baseline.origin),
        None => merge_fs(&mut eff.filesystem_policy, &default_fs(), "builtin:default"),
    }
    if let Some(p) = node_process {
        eff.process = Some(From {
            value: p.clone(),
            from: "node-config".into(),
        });
    }
    apply_common(&mut eff, base, &baseline.origin);

    let narrowing = presets.len();
    // Whether the node's documents gate `exec`: then annotations cannot widen the gate.
    let mut node_exec = false;
    for (i, preset) in presets.iter().chain(selected).enumerate() {
        if i == narrowing {
            node_exec = eff.exec_policy.is_some();
        }
        if !preset.is_preset() {
            return Err(MergeError::BaselineAsPreset(preset.origin.clone()));
        }
        let doc = &preset.doc;
        if doc.process.is_some() {
            return Err(MergeError::PresetSetsProcess(preset.origin.clone()));
        }
        eff.sources.push(preset.origin.clone());
        match &doc.filesystem_policy {
            Some(fs) if i >= narrowing => narrow_fs(&mut eff.filesystem_policy, fs, &preset.origin),
            Some(fs) => merge_fs(&mut eff.filesystem_policy, fs, &preset.origin),
            None => {}
        }
        if let Some(l) = &doc.landlock {
            // The stricter compatibility wins.
            if l.compatibility > eff.landlock.value {
                eff.landlock = From {
                    value: l.compatibility,
                    from: preset.origin.clone(),
                };
            }
        }
        if i >= narrowing {
            apply_selected(&mut eff, doc, &preset.origin, node_exec)?;
        } else {
            apply_common(&mut eff, doc, &preset.origin);
        }
    }
    Ok(eff)
}

/// A preset selected by annotation: it adds network policies under new keys and symlink
/// guards; its exec allowlist and shells count only where the node's documents have no
/// `exec_policy` (turning the gate on narrows; adding to the node's list would widen it).
fn apply_selected(
    eff: &mut Effective,
    doc: &PolicyDoc,
    from: &str,
    node_exec: bool,
) -> Result<(), MergeError> {
    for key in doc.network_policies.keys() {
        if let Some(existing) = eff.network_policies.get(key) {
            return Err(MergeError::SelectedReplacesNetwork {
                by: from.to_string(),
                key: key.clone(),
                from: existing.from.clone(),
            });
        }
    }
    let mut doc = doc.clone();
    if node_exec {
        if let Some(ex) = doc.exec_policy.as_mut() {
            ex.allowlist.clear();
            ex.shells.clear();
        }
    }
    apply_common(eff, &doc, from);
    Ok(())
}

/// Set network policy `key` from document `from`; an entry it replaces is remembered, so that
/// removing `from` later (`policy update --remove`) can bring it back.
pub fn put_network(eff: &mut Effective, key: &str, np: &NetworkPolicy, from: &str) {
    let replaced = match eff.network_policies.remove(key) {
        Some(old) => {
            let mut r = old.replaced;
            r.push(old.from);
            r
        }
        None => Vec::new(),
    };
    eff.network_policies.insert(
        key.to_string(),
        EffectiveNetwork {
            policy: np.clone(),
            from: from.to_string(),
            replaced,
        },
    );
}

/// Sections merged the same way for baseline and presets.
fn apply_common(eff: &mut Effective, doc: &PolicyDoc, from: &str) {
    for (key, np) in &doc.network_policies {
        put_network(eff, key, np, from);
    }
    if let Some(ex) = &doc.exec_policy {
        let e = eff.exec_policy.get_or_insert(EffectiveExec {
            allowlist: Vec::new(),
            safe_builtins: true,
            shells: Vec::new(),
        });
        for sh in &ex.shells {
            push_unique(&mut e.shells, sh, from);
        }
        for p in &ex.allowlist {
            if !e.allowlist.iter().any(|x| x.value == *p) {
                e.allowlist.push(From {
                    value: p.clone(),
                    from: from.to_string(),
                });
            }
        }
        // Any document turning builtins off wins: a preset can only make this stricter.
        if ex.safe_builtins == Some(false) {
            e.safe_builtins = false;
        }
    }
    if let Some(guards) = &doc.symlink_guards {
        for g in guards {
            if !eff.symlink_guards.iter().any(|x| x.value == *g) {
                eff.symlink_guards.push(From {
                    value: g.clone(),
                    from: from.to_string(),
                });
            }
        }
    }
}

/// sha256 of bytes, lowercase hex (the form of `dev.nemosandbox.policy.sha256`).
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Effective {
    /// Canonical JSON (maps are ordered) — what is stored and hashed.
    /// The `oci` baseline's policy: nothing enforced by the runtime.
    pub fn unconfined() -> Effective {
        let origin = format!("builtin:{}", super::OCI_BASELINE);
        Effective {
            sources: vec![origin.clone()],
            filesystem_policy: EffectiveFs::default(),
            landlock: From {
                value: Compatibility::default(),
                from: origin,
            },
            process: None,
            network_policies: BTreeMap::new(),
            exec_policy: None,
            symlink_guards: Vec::new(),
            unconfined: true,
        }
    }

    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("effective policy serializes")
    }

    /// sha256 of the canonical JSON, lowercase hex.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.canonical_json())
    }

    /// Does any endpoint run in audit mode?
    pub fn uses_audit_mode(&self) -> bool {
        self.network_policies.values().any(|n| {
            n.policy
                .endpoints
                .iter()
                .any(|e| e.enforcement == Some(Enforcement::Audit))
        })
    }
}
