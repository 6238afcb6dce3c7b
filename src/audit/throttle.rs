//! Merging the repeats of events whose volume the workload controls (the guard's).
//!
//! An event is written the first time; repeats of the same (kind, decision, by, reason,
//! executable, request) within a window become one line with a `count` and a `first_time`.
//! Beyond `MAX_KEYS` distinct events in a window, events merge per (kind, decision): a
//! workload asking a new name each time cannot grow the map or the file without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Event, Record, Recorder};

/// Repeats within this window are merged into one line.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Distinct events of one kind tracked per window; beyond it, that kind's events merge per
/// (kind, decision).
pub const MAX_KEYS: usize = 1024;

pub struct Throttle {
    out: Recorder,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seen: HashMap<String, Seen>,
    /// Keys per kind in `seen`.
    per_kind: HashMap<&'static str, usize>,
}

struct Seen {
    since: Instant,
    repeats: u64,
    /// The first and latest repeats, to write with the count.
    first: Option<Record>,
    last: Option<Record>,
}

impl Throttle {
    pub fn new(out: Recorder) -> Throttle {
        Throttle {
            out,
            state: Mutex::new(State::default()),
        }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.out
    }

    /// Write `ev` if it is new in this window; otherwise count it.
    pub fn record(&self, ev: &Event) {
        // Keyed on the bounded record: a huge request cannot make a huge key.
        let rec = Record::of(self.out.context(), ev);
        let exact = format!(
            "{}|{}|{}|{}|{}|{}",
            rec.kind.as_str(),
            rec.decision,
            rec.by,
            rec.reason,
            rec.executable.as_deref().unwrap_or_default(),
            rec.request
        );
        let kind_key = format!("{}|{}|*", rec.kind.as_str(), rec.decision);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Beyond the limit, one key per kind and decision: reasons can carry what the workload
        // chose (an address), so they cannot bound the map. The limit is per kind, so a flood
        // of refused names does not blur a connect into a merged line.
        let kind = rec.kind.as_str();
        let key = if !st.seen.contains_key(&exact)
            && st.per_kind.get(kind).copied().unwrap_or(0) >= MAX_KEYS
        {
            kind_key
        } else {
            exact
        };
        let State { seen: m, per_kind } = &mut *st;
        match m.get_mut(&key) {
            Some(seen) => {
                seen.repeats += 1;
                if seen.first.is_none() {
                    seen.first = Some(rec.clone());
                }
                seen.last = Some(rec);
            }
            None => {
                m.insert(
                    key,
                    Seen {
                        since: Instant::now(),
                        repeats: 0,
                        first: None,
                        last: None,
                    },
                );
                *per_kind.entry(kind).or_default() += 1;
                drop(st);
                self.out.write(&rec);
            }
        }
    }

    /// Write the merged repeats of every window that has ended (all of them with `all`).
    pub fn flush(&self, all: bool) {
        let mut out = Vec::new();
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let State { seen: m, per_kind } = &mut *st;
            m.retain(|key, seen| {
                if !all && seen.since.elapsed() < WINDOW {
                    return true;
                }
                if let (Some(first), Some(mut last)) = (seen.first.take(), seen.last.take()) {
                    last.count = Some(seen.repeats);
                    last.first_time = Some(first.time);
                    if key.ends_with("|*") {
                        last.request = serde_json::json!({"merged": "several distinct requests"});
                        last.reason = "several reasons (too many distinct events)".into();
                        last.executable = None;
                        last.pid = None;
                    }
                    out.push(last);
                }
                false
            });
            per_kind.clear();
            for key in m.keys() {
                let kind = key.split('|').next().unwrap_or_default();
                if let Some(k) = super::Kind::ALL.iter().find(|k| k.as_str() == kind) {
                    *per_kind.entry(k.as_str()).or_default() += 1;
                }
            }
        }
        for rec in out {
            self.out.write(&rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Context, Kind, CONTAINER_FILE};
    use super::*;
    use crate::audit::Decision;

    fn throttle(dir: &std::path::Path) -> Throttle {
        let ctx = Context {
            container: "c".into(),
            ..Context::default()
        };
        Throttle::new(Recorder::new(ctx, dir))
    }

    fn lines(dir: &std::path::Path) -> Vec<Record> {
        std::fs::read_to_string(dir.join(CONTAINER_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn repeats_merge_into_one_line_with_a_count() {
        let dir = crate::testutil::TempDir::new("audit");
        let t = throttle(dir.path());
        for i in 0..50 {
            t.record(
                &Event::new(Kind::Network, Decision::Denied, "p", "no")
                    .request(serde_json::json!({"destination": "1.2.3.4:5"})),
            );
            if i == 0 {
                t.record(
                    &Event::new(Kind::Dns, Decision::Refused, "p", "no")
                        .request(serde_json::json!({"name": "x"})),
                );
            }
        }
        t.flush(true);
        let lines = lines(dir.path());
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[2].count, Some(49));
        assert!(lines[2].first_time.as_deref().unwrap() <= lines[2].time.as_str());
    }

    #[test]
    fn distinct_events_beyond_the_key_limit_merge_per_kind() {
        let dir = crate::testutil::TempDir::new("audit");
        let t = throttle(dir.path());
        for i in 0..(MAX_KEYS + 500) {
            t.record(
                &Event::new(Kind::Dns, Decision::Refused, "p", "no")
                    .request(serde_json::json!({"name": format!("n{i}.example")})),
            );
        }
        t.flush(true);
        let lines = lines(dir.path());
        assert_eq!(
            lines.len(),
            MAX_KEYS + 2,
            "a line per key, the first merged one, its count"
        );
        let total: u64 = lines.iter().map(|r| r.count.unwrap_or(1)).sum();
        assert_eq!(
            total,
            (MAX_KEYS + 500) as u64,
            "every event is accounted for"
        );
        assert_eq!(lines.last().unwrap().count, Some(499));
    }

    #[test]
    fn a_flood_of_one_kind_leaves_another_kind_whole() {
        let dir = crate::testutil::TempDir::new("audit");
        let t = throttle(dir.path());
        for i in 0..(MAX_KEYS + 10) {
            t.record(
                &Event::new(Kind::Dns, Decision::Refused, "p", "no")
                    .request(serde_json::json!({"name": format!("n{i}.example")})),
            );
        }
        t.record(
            &Event::new(Kind::Network, Decision::Denied, "p", "no")
                .request(serde_json::json!({"destination": "203.0.113.7:443"})),
        );
        t.flush(true);
        let lines = lines(dir.path());
        assert!(lines
            .iter()
            .any(|r| r.request["destination"] == "203.0.113.7:443" && r.count.is_none()));
    }

    #[test]
    fn huge_requests_make_bounded_keys_and_lines() {
        let dir = crate::testutil::TempDir::new("audit");
        let t = throttle(dir.path());
        let names: Vec<String> = (0..10_000).map(|i| format!("{i:0>250}")).collect();
        for _ in 0..3 {
            t.record(
                &Event::new(Kind::Dns, Decision::Refused, "p", "x".repeat(100_000))
                    .request(serde_json::json!({"names": names})),
            );
        }
        t.flush(true);
        let text = std::fs::read_to_string(dir.path().join(CONTAINER_FILE)).unwrap();
        assert_eq!(text.lines().count(), 2, "merged");
        assert!(text.lines().all(|l| l.len() < 4096), "{}", text.len());
        assert!(t.state.lock().unwrap().seen.is_empty());
    }
}
