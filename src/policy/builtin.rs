//! The shipped policies (`policies/*.yaml`), embedded at build time. A file with the same name
//! in a configured policy directory overrides the embedded one.

use std::path::{Path, PathBuf};

use super::model::PolicyDoc;
use super::validate::validate;
use super::{load_file, load_str, LoadError, Loaded};

/// (name, YAML text, the same document as JSON converted at build time) of every shipped
/// document.
pub const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "default",
        include_str!("../../policies/default.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/default.json")),
    ),
    (
        "openclaw-sandbox",
        include_str!("../../policies/openclaw-sandbox.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/openclaw-sandbox.json")),
    ),
    (
        "npm",
        include_str!("../../policies/npm.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/npm.json")),
    ),
    (
        "pypi",
        include_str!("../../policies/pypi.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/pypi.json")),
    ),
    (
        "github",
        include_str!("../../policies/github.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/github.json")),
    ),
    (
        "huggingface",
        include_str!("../../policies/huggingface.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/huggingface.json")),
    ),
    (
        "telegram",
        include_str!("../../policies/telegram.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/telegram.json")),
    ),
    (
        "discord",
        include_str!("../../policies/discord.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/discord.json")),
    ),
    (
        "slack",
        include_str!("../../policies/slack.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/slack.json")),
    ),
    (
        "jira",
        include_str!("../../policies/jira.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/jira.json")),
    ),
    (
        "outlook",
        include_str!("../../policies/outlook.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/outlook.json")),
    ),
    (
        "docker",
        include_str!("../../policies/docker.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/docker.json")),
    ),
    (
        "brew",
        include_str!("../../policies/brew.yaml"),
        include_str!(concat!(env!("OUT_DIR"), "/brew.json")),
    ),
];

/// A shipped document: from its build-time JSON when it validates without findings (the
/// common case, no YAML parsing at `create`), else through the YAML loader for positions.
fn load_builtin(name: &str, text: &str, json: &str) -> Result<Loaded, LoadError> {
    let origin = format!("builtin:{name}");
    if let Ok(doc) = serde_json::from_str::<PolicyDoc>(json) {
        if validate(&doc, doc.preset.is_some()).is_empty() {
            return Ok(Loaded {
                origin,
                doc,
                warnings: Vec::new(),
            });
        }
    }
    load_str(&origin, text)
}

/// A shipped document by name (the embedded one, never a directory's override).
pub fn load_builtin_named(name: &str) -> Loaded {
    let (n, text, json) = BUILTIN
        .iter()
        .find(|(n, _, _)| *n == name)
        .expect("shipped policy");
    load_builtin(n, text, json).expect("shipped policies are valid")
}

/// A shipped document by name, or `None` if no such document ships.
pub fn load_builtin_named_checked(name: &str) -> Option<Loaded> {
    BUILTIN
        .iter()
        .any(|(n, _, _)| *n == name)
        .then(|| load_builtin_named(name))
}

/// A policy name: letters, digits, `-`, `_`, `.`; never a path.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where to find documents: policy directories (searched first), then the embedded set.
#[derive(Debug, Clone, Default)]
pub struct Library {
    pub dirs: Vec<PathBuf>,
}

impl Library {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    fn file_for(&self, name: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .flat_map(|d| {
                [
                    d.join(format!("{name}.yaml")),
                    d.join(format!("{name}.yml")),
                ]
            })
            .find(|p| p.is_file())
    }

    /// Load a document by name; `None` if no such document exists.
    pub fn get(&self, name: &str) -> Option<Result<Loaded, LoadError>> {
        if !valid_name(name) {
            return None;
        }
        if let Some(path) = self.file_for(name) {
            return Some(load_file(&path));
        }
        BUILTIN
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(n, text, json)| load_builtin(n, text, json))
    }

    /// Every known name (directories and embedded), sorted, without duplicates.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN.iter().map(|(n, _, _)| n.to_string()).collect();
        for d in &self.dirs {
            let Ok(rd) = std::fs::read_dir(d) else {
                continue;
            };
            for e in rd.filter_map(|e| e.ok()) {
                let p = e.path();
                let ext_ok = p.extension().is_some_and(|x| x == "yaml" || x == "yml");
                if let (true, Some(stem)) = (ext_ok, p.file_stem().and_then(|s| s.to_str())) {
                    if valid_name(stem) {
                        names.push(stem.to_string());
                    }
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Is `name` a preset (has a `preset:` header)?
    pub fn is_preset(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Ok(l)) if l.is_preset())
    }
}

/// Load a baseline given on the command line or in node config: a name, or a file path.
pub fn load_name_or_file(lib: &Library, spec: &str) -> Option<Result<Loaded, LoadError>> {
    if spec.contains('/') {
        return Some(load_file(Path::new(spec)));
    }
    lib.get(spec)
}
