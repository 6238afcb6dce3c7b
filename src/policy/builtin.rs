//! The shipped policies (`policies/*.yaml`), embedded at build time. A file with the same name
//! in a configured policy directory overrides the embedded one.

use std::path::{Path, PathBuf};

use super::{load_file, load_str, LoadError, Loaded};

/// (name, YAML) of every shipped document.
pub const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../../policies/default.yaml")),
    (
        "openclaw-sandbox",
        include_str!("../../policies/openclaw-sandbox.yaml"),
    ),
    ("npm", include_str!("../../policies/npm.yaml")),
    ("pypi", include_str!("../../policies/pypi.yaml")),
    ("github", include_str!("../../policies/github.yaml")),
    (
        "huggingface",
        include_str!("../../policies/huggingface.yaml"),
    ),
    ("telegram", include_str!("../../policies/telegram.yaml")),
    ("discord", include_str!("../../policies/discord.yaml")),
    ("slack", include_str!("../../policies/slack.yaml")),
    ("jira", include_str!("../../policies/jira.yaml")),
    ("outlook", include_str!("../../policies/outlook.yaml")),
    ("docker", include_str!("../../policies/docker.yaml")),
    ("brew", include_str!("../../policies/brew.yaml")),
];

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
            .find(|(n, _)| *n == name)
            .map(|(n, text)| load_str(&format!("builtin:{n}"), text))
    }

    /// Every known name (directories and embedded), sorted, without duplicates.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
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
