//! The audit stream: one JSON object per line in `<root>/<id>/audit.jsonl`, and the
//! same event in the runtime log at warn level.
//!
//! Threat: a workload that makes the same refused call in a loop, or a new refused name
//! each time, would fill the disk (the file lives on `/run`, in memory) and the runtime's
//! log. So the file has a size cap, and the guard merges repeats (`Throttle`): an event is
//! written the first time, and repeats of the same (kind, decision, reason, executable,
//! request) within a window become one line with a `count`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The per-container file stops growing here; later events are only counted.
pub const MAX_FILE: u64 = 16 << 20;
/// Repeats within this window are merged into one line.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Distinct events tracked per window; beyond it, events merge per (kind, decision).
pub const MAX_KEYS: usize = 1024;

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
    /// Repeats merged into this line (absent: the event happened once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
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
            time: now(),
            container,
            pid: None,
            executable: None,
            kind,
            request: serde_json::Value::Null,
            decision,
            by,
            reason,
            count: None,
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Append `event` to the container's audit file (in `container_dir`) and log it.
pub fn record(container_dir: &Path, event: &Event) {
    let line = serde_json::to_string(event).expect("event serializes");
    write_line(container_dir, &line);
}

fn write_line(container_dir: &Path, line: &str) {
    let path = container_dir.join("audit.jsonl");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_FILE) {
        return;
    }
    tracing::warn!(target: "nemosandbox::audit", "audit {line}");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        tracing::warn!("audit: cannot write {}: {e}", path.display());
    }
}

/// Merges repeated events (the guard's, whose volume the workload controls).
pub struct Throttle {
    dir: PathBuf,
    state: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    since: Instant,
    repeats: u64,
    /// The latest repeat, serialized with its time, to write with the count.
    last: serde_json::Value,
}

impl Throttle {
    pub fn new(dir: PathBuf) -> Throttle {
        Throttle {
            dir,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Write `ev` if it is new in this window; otherwise count it.
    pub fn record(&self, ev: &Event) {
        let exact = format!(
            "{}|{}|{}|{}|{}|{}",
            ev.kind,
            ev.decision,
            ev.by,
            ev.reason,
            ev.executable.unwrap_or_default(),
            ev.request
        );
        let mut m = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Beyond the limit, one key per kind and decision: reasons can carry what the workload
        // chose (an address), so they cannot bound the map.
        let key = if m.len() >= MAX_KEYS && !m.contains_key(&exact) {
            format!("{}|{}|*", ev.kind, ev.decision)
        } else {
            exact
        };
        match m.get_mut(&key) {
            Some(seen) => {
                seen.repeats += 1;
                seen.last = serde_json::to_value(ev).expect("event serializes");
            }
            None => {
                m.insert(
                    key,
                    Seen {
                        since: Instant::now(),
                        repeats: 0,
                        last: serde_json::Value::Null,
                    },
                );
                drop(m);
                record(&self.dir, ev);
            }
        }
    }

    /// Write the merged repeats of every window that has ended (all of them with `all`).
    pub fn flush(&self, all: bool) {
        let mut out = Vec::new();
        {
            let mut m = self.state.lock().unwrap_or_else(|e| e.into_inner());
            m.retain(|key, seen| {
                if !all && seen.since.elapsed() < WINDOW {
                    return true;
                }
                if seen.repeats > 0 {
                    let mut v = std::mem::take(&mut seen.last);
                    v["count"] = seen.repeats.into();
                    if key.ends_with("|*") {
                        v["request"] = serde_json::json!({"merged": "several distinct requests"});
                        v["reason"] = "several reasons (too many distinct events)".into();
                    }
                    out.push(v.to_string());
                }
                false
            });
        }
        for line in out {
            write_line(&self.dir, &line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_merge_into_one_line_with_a_count() {
        let dir = crate::testutil::TempDir::new("audit");
        let t = Throttle::new(dir.path().to_path_buf());
        for i in 0..50 {
            let mut ev = Event::new("c", "network", "denied", "p", "no");
            ev.request = serde_json::json!({"destination": "1.2.3.4:5"});
            t.record(&ev);
            if i == 0 {
                let mut other = Event::new("c", "dns", "refused", "p", "no");
                other.request = serde_json::json!({"name": "x"});
                t.record(&other);
            }
        }
        t.flush(true);
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[2]["count"], 49);
    }

    #[test]
    fn distinct_events_beyond_the_key_limit_merge_per_reason() {
        let dir = crate::testutil::TempDir::new("audit");
        let t = Throttle::new(dir.path().to_path_buf());
        for i in 0..(MAX_KEYS + 500) {
            let mut ev = Event::new("c", "dns", "refused", "p", "no");
            ev.request = serde_json::json!({"name": format!("n{i}.example")});
            t.record(&ev);
        }
        t.flush(true);
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        let n = text.lines().count();
        assert_eq!(
            n,
            MAX_KEYS + 2,
            "a line per key, the first merged one, its count"
        );
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["count"], 499);
    }
}
