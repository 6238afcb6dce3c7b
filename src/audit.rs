//! The audit stream (SPEC §10): one JSON object per line in `<root>/<id>/audit.jsonl`, and the
//! same event in the runtime log at warn level.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    pub time: String,
    pub container: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<&'a str>,
    /// `network`, `dns`, `exec`, `fs`, `symlink`.
    pub kind: &'a str,
    pub request: serde_json::Value,
    pub decision: &'a str,
    /// The policy, endpoint or rule that decided.
    pub by: &'a str,
    pub reason: &'a str,
}

impl<'a> Event<'a> {
    pub fn new(
        container: &'a str,
        kind: &'a str,
        decision: &'a str,
        by: &'a str,
        reason: &'a str,
    ) -> Self {
        Event {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            container,
            pid: None,
            executable: None,
            kind,
            request: serde_json::Value::Null,
            decision,
            by,
            reason,
        }
    }
}

/// Append `event` to the container's audit file (in `container_dir`) and log it.
pub fn record(container_dir: &Path, event: &Event) {
    let line = serde_json::to_string(event).expect("event serializes");
    tracing::warn!(target: "nemosandbox::audit", "audit {line}");
    let path = container_dir.join("audit.jsonl");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        tracing::warn!("audit: cannot write {}: {e}", path.display());
    }
}
