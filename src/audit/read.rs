//! Reading the stream back: `nemosandbox audit`.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Kind, Record};

/// Which events to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub container: Option<String>,
    /// Only events at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<Kind>,
}

impl Filter {
    pub fn keeps(&self, rec: &Record) -> bool {
        if self.container.as_ref().is_some_and(|c| *c != rec.container) {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&rec.kind) {
            return false;
        }
        match (&self.since, chrono::DateTime::parse_from_rfc3339(&rec.time)) {
            (Some(since), Ok(t)) => t >= *since,
            _ => true,
        }
    }
}

/// A line of either sink format (a native event, or an OCSF one carrying it).
pub fn parse(line: &str) -> Option<Record> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let native = match v.get("unmapped").and_then(|u| u.get("nemosandbox")) {
        Some(inner) => inner.clone(),
        None => v,
    };
    serde_json::from_value(native).ok()
}

/// A short form of what was asked, by kind.
fn request_text(rec: &Record) -> String {
    let r = &rec.request;
    let s = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
    match rec.kind {
        Kind::Network => {
            let mut out = s("destination").unwrap_or_else(|| r.to_string());
            if let Some(names) = r.get("names").and_then(|n| n.as_array()) {
                if !names.is_empty() {
                    let names: Vec<&str> = names.iter().filter_map(|n| n.as_str()).collect();
                    out.push_str(&format!(" ({})", names.join(", ")));
                }
            }
            out
        }
        Kind::Http => [s("method"), s("destination"), s("path")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        Kind::Dns => s("name").unwrap_or_else(|| r.to_string()),
        Kind::Exec => r
            .get("command")
            .and_then(|c| c.as_array())
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| r.to_string()),
        Kind::Fs => s("path").unwrap_or_else(|| r.to_string()),
        Kind::Symlink => s("dir").unwrap_or_else(|| r.to_string()),
        Kind::Policy => {
            if r.is_null() {
                String::new()
            } else {
                r.to_string()
            }
        }
    }
}

/// One readable line: `TIME CONTAINER [ns/pod] KIND DECISION REQUEST [exe pid] by BY: REASON`.
/// What the workload chose (names, paths, commands) may hold control characters: they are
/// escaped, so a line cannot rewrite the operator's terminal or forge a second line.
pub fn text(rec: &Record) -> String {
    escape_controls(&text_raw(rec))
}

fn escape_controls(s: &str) -> String {
    // Control characters, and the invisible ones that reorder or break a line on screen.
    let invisible = |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn text_raw(rec: &Record) -> String {
    let mut out = format!("{} {}", rec.time, rec.container);
    if let Some(pod) = &rec.pod {
        out.push_str(&format!(
            " [{}/{}]",
            pod.namespace.as_deref().unwrap_or("?"),
            pod.name.as_deref().unwrap_or("?")
        ));
    }
    out.push_str(&format!(" {} {}", rec.kind.as_str(), rec.decision));
    let req = request_text(rec);
    if !req.is_empty() {
        out.push_str(&format!(" {req}"));
    }
    match (&rec.executable, rec.pid) {
        (Some(exe), Some(pid)) => out.push_str(&format!(" by {exe} (pid {pid})")),
        (Some(exe), None) => out.push_str(&format!(" by {exe}")),
        (None, Some(pid)) => out.push_str(&format!(" (pid {pid})")),
        (None, None) => {}
    }
    out.push_str(&format!(" — {}: {}", rec.by, rec.reason));
    if let Some(n) = rec.count {
        out.push_str(&format!(
            " [{n} more since {}]",
            rec.first_time.as_deref().unwrap_or("?")
        ));
    }
    out
}

/// Every kept record of `files` (oldest first), in order.
pub fn read_all(files: &[PathBuf], filter: &Filter, out: &mut dyn FnMut(&Record)) {
    for f in files {
        let Ok(file) = File::open(f) else {
            continue;
        };
        // By bytes: one damaged line (a write cut short on a full disk) must not hide the rest.
        for line in BufReader::new(file).split(b'\n').map_while(Result::ok) {
            if let Some(rec) = parse(&String::from_utf8_lossy(&line)) {
                if filter.keeps(&rec) {
                    out(&rec);
                }
            }
        }
    }
}

/// Stream records appended to `path` (from its start with `from_start`, else from its
/// current end), across rotations (the file renamed away and a new one created), until
/// `out` returns false.
pub fn follow(
    path: &Path,
    from_start: bool,
    filter: &Filter,
    out: &mut dyn FnMut(&Record) -> bool,
) {
    let poll = Duration::from_millis(100);
    let mut current: Option<(BufReader<File>, u64)> = File::open(path).ok().and_then(|mut f| {
        if !from_start {
            f.seek(SeekFrom::End(0)).ok()?;
        }
        let ino = f.metadata().ok()?.ino();
        Some((BufReader::new(f), ino))
    });
    let mut partial = String::new();
    loop {
        if let Some((reader, ino)) = current.as_mut() {
            // Drain what the file has, then see whether the name now holds another file.
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if !line.ends_with('\n') => {
                        partial.push_str(&line);
                        break;
                    }
                    Ok(_) => {
                        partial.push_str(&line);
                        let whole = std::mem::take(&mut partial);
                        if let Some(rec) = parse(whole.trim_end()) {
                            if filter.keeps(&rec) && !out(&rec) {
                                return;
                            }
                        }
                    }
                }
            }
            let renamed = std::fs::metadata(path).map_or(true, |m| m.ino() != *ino);
            if renamed {
                // Writers append only through the name, so what the old file got before the
                // rename is all it will ever have: read it to the end, then move on.
                let mut rest = String::new();
                let _ = std::io::Read::read_to_string(reader, &mut rest);
                partial.push_str(&rest);
                for line in std::mem::take(&mut partial).lines() {
                    if let Some(rec) = parse(line) {
                        if filter.keeps(&rec) && !out(&rec) {
                            return;
                        }
                    }
                }
                current = None;
            }
        }
        if current.is_none() {
            // A new file is read from its start: everything in it is newer than the old one.
            current = File::open(path)
                .ok()
                .and_then(|f| Some((f.metadata().ok()?.ino(), f)))
                .map(|(ino, f)| (BufReader::new(f), ino));
            if current.is_some() {
                continue;
            }
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Context, Decision, Event};

    fn rec(kind: Kind, container: &str) -> Record {
        let ctx = Context {
            container: container.into(),
            ..Context::default()
        };
        Record::of(
            &ctx,
            &Event::new(kind, Decision::Denied, "network_policies", "no endpoint")
                .request(serde_json::json!({"destination": "10.0.0.1:443", "names": ["a.test"]}))
                .pid(9)
                .executable("/bin/curl"),
        )
    }

    #[test]
    fn text_lines_say_what_who_and_why() {
        let t = text(&rec(Kind::Network, "c1"));
        assert!(
            t.ends_with(
                "c1 network denied 10.0.0.1:443 (a.test) by /bin/curl (pid 9) — \
                 network_policies: no endpoint"
            ),
            "{t}"
        );
    }

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        let mut r = rec(Kind::Dns, "c1");
        r.request = serde_json::json!({"name": "evil\u{1b}[2J\nfake line\u{202e}"});
        let t = text(&r);
        assert!(
            !t.contains('\u{1b}') && !t.contains('\n') && !t.contains('\u{202e}'),
            "{t}"
        );
        assert!(t.contains("evil\\u{1b}[2J\\nfake line"), "{t}");
    }

    #[test]
    fn filters_by_container_kind_and_time() {
        let r = rec(Kind::Network, "c1");
        let mut f = Filter::default();
        assert!(f.keeps(&r));
        f.kinds = vec![Kind::Dns];
        assert!(!f.keeps(&r));
        f.kinds = vec![Kind::Network];
        f.container = Some("c2".into());
        assert!(!f.keeps(&r));
        f.container = Some("c1".into());
        f.since = Some(chrono::Utc::now() + chrono::Duration::seconds(60));
        assert!(!f.keeps(&r));
        f.since = Some(chrono::Utc::now() - chrono::Duration::seconds(60));
        assert!(f.keeps(&r));
    }

    #[test]
    fn ocsf_lines_read_back_as_events() {
        let r = rec(Kind::Dns, "c1");
        let line = crate::audit::ocsf::event(&r).to_string();
        assert_eq!(parse(&line), Some(r));
    }
}
