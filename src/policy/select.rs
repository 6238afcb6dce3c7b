//! Node configuration and policy selection: node config, then runtime flags, then
//! the bundle's annotations — which can add allowed presets but never weaken what the node
//! fixes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::builtin::{load_name_or_file, valid_name, Library};
use super::merge::{merge_selected, Effective, MergeError};
use super::model::ProcessPolicy;
use super::{yaml, Diagnostic, LoadError, Loaded};

pub const ANNOTATION_PRESETS: &str = "dev.nemosandbox.presets";
pub const ANNOTATION_POLICY: &str = "dev.nemosandbox.policy";
pub const DEFAULT_CONFIG: &str = "/etc/nemosandbox/config.yaml";
pub const DEFAULT_POLICY_DIR: &str = "/etc/nemosandbox/policies";

/// `/etc/nemosandbox/config.yaml`: what the node administrator fixes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Baseline for every container (name or file); annotations cannot replace it.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Presets every container gets, before any the annotations add.
    #[serde(default)]
    pub presets: Vec<String>,
    /// Presets annotations may add; absent = every installed preset.
    #[serde(default)]
    pub allowed_presets: Option<Vec<String>>,
    /// Directories searched for policies before the built-in set.
    #[serde(default = "default_dirs")]
    pub policy_dirs: Vec<PathBuf>,
    /// Baselines the annotation `dev.nemosandbox.policy` may name when the node fixes none;
    /// absent = only the built-in `default`.
    #[serde(default)]
    pub allowed_baselines: Option<Vec<String>>,
    /// May annotations name policy files (not just names)?
    #[serde(default)]
    pub allow_policy_files: bool,
    /// May annotation-selected documents use `enforcement: audit`?
    #[serde(default)]
    pub allow_audit_mode: bool,
    /// Process identity for every container (overrides the baseline's).
    #[serde(default)]
    pub process: Option<ProcessPolicy>,
    /// PEM files of roots the layer-7 proxy trusts upstream, besides the host's system roots
    /// (a private registry's or a test CA).
    #[serde(default)]
    pub l7_upstream_roots: Vec<PathBuf>,
    /// The node audit sink: every container's events, kept after the container is gone.
    #[serde(default)]
    pub audit: crate::audit::SinkConfig,
}

fn default_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from(DEFAULT_POLICY_DIR)]
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            baseline: None,
            presets: Vec::new(),
            allowed_presets: None,
            allowed_baselines: None,
            policy_dirs: default_dirs(),
            allow_policy_files: false,
            allow_audit_mode: false,
            process: None,
            l7_upstream_roots: Vec::new(),
            audit: crate::audit::SinkConfig::default(),
        }
    }
}

impl NodeConfig {
    /// Load; an absent file means built-in defaults.
    pub fn load(path: &Path) -> Result<NodeConfig, LoadError> {
        let origin = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NodeConfig::default()),
            Err(e) => {
                return Err(LoadError(vec![Diagnostic {
                    file: origin,
                    line: 0,
                    col: 0,
                    severity: super::validate::Severity::Error,
                    message: format!("cannot read: {e}"),
                }]))
            }
        };
        Self::parse(&origin, &text)
    }

    pub fn parse(origin: &str, text: &str) -> Result<NodeConfig, LoadError> {
        let err = |pos: yaml::Pos, message: String| {
            LoadError(vec![Diagnostic {
                file: origin.to_string(),
                line: pos.line,
                col: pos.col,
                severity: super::validate::Severity::Error,
                message,
            }])
        };
        let spanned = yaml::parse(text).map_err(|e| err(e.pos, e.msg))?;
        if spanned.value.is_null() {
            return Ok(NodeConfig::default());
        }
        let node: NodeConfig = serde_path_to_error::deserialize(&spanned.value).map_err(|e| {
            let path = e.path().to_string();
            err(spanned.pos(&path), format!("{path}: {}", e.inner()))
        })?;
        node.audit
            .check()
            .map_err(|m| err(spanned.pos("audit"), m))?;
        Ok(node)
    }

    pub fn library(&self) -> Library {
        Library::new(self.policy_dirs.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("{0}")]
    Load(LoadError),
    #[error("{source_name}: unknown policy {name:?}")]
    Unknown { source_name: String, name: String },
    #[error("annotation {ANNOTATION_PRESETS}: preset {0:?} is not in the node's allowed_presets")]
    NotAllowed(String),
    #[error("annotation {ANNOTATION_POLICY}: baseline {0:?} is not in the node's allowed_baselines (add it to allowed_baselines in the node configuration, or fix the baseline there)")]
    BaselineNotAllowed(String),
    #[error("{source_name}: {name:?} is a file path; the node configuration does not allow policy files (allow_policy_files)")]
    FilesNotAllowed { source_name: String, name: String },
    #[error("annotation {ANNOTATION_POLICY}={0:?}: the node fixes the baseline ({1:?}); annotations cannot replace it")]
    BaselineFixed(String, String),
    #[error(
        "{0}: `enforcement: audit` is not allowed by the node configuration (allow_audit_mode)"
    )]
    AuditNotAllowed(String),
    #[error("{0}")]
    Merge(#[from] MergeError),
    #[error("annotation {ANNOTATION_POLICY}={OCI_BASELINE:?}: the unconfined baseline can be chosen only by the node configuration or the runtime's --policy flag")]
    OciByAnnotation,
    #[error("baseline {OCI_BASELINE:?} is unconfined and takes no presets ({0}): presets need the confinement it leaves out")]
    OciWithPresets(String),
}

pub use super::OCI_BASELINE;

/// Where the request for policies came from.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--policy` runtime flag.
    pub flag_policy: Option<String>,
    /// `--preset` runtime flags.
    pub flag_presets: Vec<String>,
    /// The bundle's annotations.
    pub annotations: HashMap<String, String>,
}

/// The documents chosen for one container, in merge order.
#[derive(Debug, Clone)]
pub struct Selection {
    pub baseline: Loaded,
    /// From the node configuration and runtime flags.
    pub presets: Vec<Loaded>,
    /// From the workload's annotations: their filesystem entries only narrow.
    pub selected: Vec<Loaded>,
}

fn fetch(lib: &Library, source: &str, name: &str, files_ok: bool) -> Result<Loaded, SelectError> {
    if name.contains('/') && !files_ok {
        return Err(SelectError::FilesNotAllowed {
            source_name: source.into(),
            name: name.into(),
        });
    }
    if !name.contains('/') && !valid_name(name) {
        return Err(SelectError::Unknown {
            source_name: source.into(),
            name: name.into(),
        });
    }
    match load_name_or_file(lib, name) {
        Some(Ok(l)) => Ok(l),
        Some(Err(e)) => Err(SelectError::Load(e)),
        None => Err(SelectError::Unknown {
            source_name: source.into(),
            name: name.into(),
        }),
    }
}

/// Choose the baseline and presets for a container.
pub fn select(node: &NodeConfig, req: &Request) -> Result<Selection, SelectError> {
    let lib = node.library();
    let ann_policy = req
        .annotations
        .get(ANNOTATION_POLICY)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    // The node (config or runtime flags, both set by the administrator) fixes the baseline.
    let fixed = req.flag_policy.clone().or_else(|| node.baseline.clone());
    let baseline = match (&fixed, &ann_policy) {
        (Some(f), Some(a)) if f != a => {
            return Err(SelectError::BaselineFixed(a.clone(), f.clone()))
        }
        (Some(f), _) => fetch(&lib, "node baseline", f, true)?,
        (None, Some(a)) => {
            let loaded = fetch(
                &lib,
                &format!("annotation {ANNOTATION_POLICY}"),
                a,
                node.allow_policy_files,
            )?;
            let allowed = node
                .allowed_baselines
                .clone()
                .unwrap_or_else(|| vec!["default".to_string()]);
            if !allowed.contains(a) {
                return Err(SelectError::BaselineNotAllowed(a.clone()));
            }
            loaded
        }
        (None, None) => fetch(&lib, "built-in default", "default", false)?,
    };

    let mut presets: Vec<Loaded> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for name in node.presets.iter().chain(req.flag_presets.iter()) {
        if !seen.contains(name) {
            presets.push(fetch(&lib, "node presets", name, true)?);
            seen.push(name.clone());
        }
    }
    let ann_presets: Vec<String> = req
        .annotations
        .get(ANNOTATION_PRESETS)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let source = format!("annotation {ANNOTATION_PRESETS}");
    let mut from_annotations: Vec<Loaded> = Vec::new();
    for name in ann_presets {
        if seen.contains(&name) {
            continue;
        }
        let loaded = fetch(&lib, &source, &name, node.allow_policy_files)?;
        if let Some(allowed) = &node.allowed_presets {
            if !allowed.contains(&name) {
                return Err(SelectError::NotAllowed(name));
            }
        }
        seen.push(name);
        from_annotations.push(loaded);
    }
    if !node.allow_audit_mode {
        let ann_baseline = fixed.is_none() && ann_policy.is_some();
        for l in from_annotations
            .iter()
            .chain(ann_baseline.then_some(&baseline))
        {
            let audit = l.doc.network_policies.values().any(|n| {
                n.endpoints
                    .iter()
                    .any(|e| e.enforcement == Some(super::model::Enforcement::Audit))
            });
            if audit {
                return Err(SelectError::AuditNotAllowed(l.origin.clone()));
            }
        }
    }
    Ok(Selection {
        baseline,
        presets,
        selected: from_annotations,
    })
}

/// The `oci` baseline, when the node or the runtime flags fix it; an annotation asking for it
/// is refused (a workload cannot opt out of confinement), as are presets beside it.
fn oci(node: &NodeConfig, req: &Request) -> Result<Option<Effective>, SelectError> {
    let ann = req
        .annotations
        .get(ANNOTATION_POLICY)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    let fixed = req.flag_policy.as_deref().or(node.baseline.as_deref());
    if fixed != Some(OCI_BASELINE) {
        return match ann {
            Some(OCI_BASELINE) if fixed.is_none() => Err(SelectError::OciByAnnotation),
            _ => Ok(None),
        };
    }
    if let Some(a) = ann.filter(|a| *a != OCI_BASELINE) {
        return Err(SelectError::BaselineFixed(a.into(), OCI_BASELINE.into()));
    }
    let ann_presets = req
        .annotations
        .get(ANNOTATION_PRESETS)
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()));
    let presets: Vec<&str> = node
        .presets
        .iter()
        .chain(req.flag_presets.iter())
        .map(String::as_str)
        .chain(ann_presets.into_iter().flatten())
        .collect();
    if !presets.is_empty() {
        return Err(SelectError::OciWithPresets(presets.join(", ")));
    }
    Ok(Some(Effective::unconfined()))
}

/// Select and merge: the effective policy of a container.
pub fn effective(node: &NodeConfig, req: &Request) -> Result<Effective, SelectError> {
    if let Some(e) = oci(node, req)? {
        return Ok(e);
    }
    let sel = select(node, req)?;
    Ok(merge_selected(
        &sel.baseline,
        &sel.presets,
        &sel.selected,
        node.process.as_ref(),
    )?)
}
