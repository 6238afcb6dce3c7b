//! Policy documents: load (strict, located errors), the shipped set, node configuration and
//! selection, merge into one effective policy.

pub mod builtin;
pub mod live;
pub mod merge;
pub mod model;
pub mod render;
pub mod select;
pub mod validate;
pub mod yaml;

/// The baseline under which the runtime behaves as runc: the spec as written, no Landlock,
/// no layout rewrite, no network guard, no exec gate. Not a document: nothing to merge.
pub const OCI_BASELINE: &str = "oci";

use std::fmt;
use std::path::Path;

use serde::Deserialize;

pub use model::PolicyDoc;
use validate::{Finding, Severity};

/// A located message: `FILE:LINE:COLUMN: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(
            f,
            "{}:{}:{}: {kind}{}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Loading failed: every error found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError(pub Vec<Diagnostic>);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A document that passed every check, with its warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// Where it came from: `builtin:NAME` or a file path.
    pub origin: String,
    pub doc: PolicyDoc,
    pub warnings: Vec<Diagnostic>,
}

impl Loaded {
    pub fn is_preset(&self) -> bool {
        self.doc.preset.is_some()
    }
}

/// serde's messages carry their own "at line … column …" for JSON; ours come from the path.
fn serde_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Parse and validate one document; `origin` names it in every message.
pub fn load_str(origin: &str, text: &str) -> Result<Loaded, LoadError> {
    let diag = |pos: yaml::Pos, severity, message: String| Diagnostic {
        file: origin.to_string(),
        line: pos.line,
        col: pos.col,
        severity,
        message,
    };
    let spanned =
        yaml::parse(text).map_err(|e| LoadError(vec![diag(e.pos, Severity::Error, e.msg)]))?;
    if !spanned.value.is_object() {
        return Err(LoadError(vec![diag(
            spanned.pos("."),
            Severity::Error,
            "a policy document must be a mapping".into(),
        )]));
    }
    // Path tracking costs; only the failing case needs it.
    let fast: Result<PolicyDoc, _> = PolicyDoc::deserialize(&spanned.value);
    let doc: PolicyDoc = fast
        .or_else(|_| serde_path_to_error::deserialize(&spanned.value))
        .map_err(|e| {
            let path = e.path().to_string();
            let message = serde_message(e.inner());
            // For an unknown key, point at the key itself.
            let pos = message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                .map(|k| {
                    spanned.pos(&if path == "." {
                        k.to_string()
                    } else {
                        format!("{path}.{k}")
                    })
                })
                .unwrap_or_else(|| spanned.pos(&path));
            let field = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            LoadError(vec![diag(
                pos,
                Severity::Error,
                format!("{field}{message}"),
            )])
        })?;
    let findings: Vec<Finding> = validate::validate(&doc, doc.preset.is_some());
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for f in findings {
        let field = if f.path == "." {
            String::new()
        } else {
            format!("{}: ", f.path)
        };
        let d = diag(
            spanned.pos(&f.path),
            f.severity,
            format!("{field}{}", f.message),
        );
        match f.severity {
            Severity::Error => errors.push(d),
            Severity::Warning => warnings.push(d),
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|d| (d.line, d.col));
        return Err(LoadError(errors));
    }
    Ok(Loaded {
        origin: origin.to_string(),
        doc,
        warnings,
    })
}

/// A warning at the place of `field` (a dotted field path) in the document `text`.
pub fn warning_at(origin: &str, text: &str, field: &str, message: String) -> Diagnostic {
    let pos = yaml::parse(text)
        .map(|s| s.pos(field))
        .unwrap_or(yaml::Pos { line: 0, col: 0 });
    Diagnostic {
        file: origin.to_string(),
        line: pos.line,
        col: pos.col,
        severity: Severity::Warning,
        message: format!("{field}: {message}"),
    }
}

/// Load a file from disk.
pub fn load_file(path: &Path) -> Result<Loaded, LoadError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        LoadError(vec![Diagnostic {
            file: origin.clone(),
            line: 0,
            col: 0,
            severity: Severity::Error,
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str(&origin, &text)
}

/// One fuzzing input: load it as a policy and as a node configuration. Must not panic; used
/// by the cargo-fuzz target and by the in-tree mutation test.
pub fn fuzz_one(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(l) = load_str("fuzz.yaml", text) {
            // Whatever loads must also merge (as a baseline or preset) and render.
            let _ = merge::merge(&l, &[], None).map(|e| render::explain(&e));
        }
        let _ = select::NodeConfig::parse("fuzz.yaml", text);
    }
}

#[cfg(test)]
mod tests;
