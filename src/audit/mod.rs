//! The audit stream: every decision worth a record (a refused connect, name, exec or file
//! access; a symlink guard's outcome) as one JSON object per line.
//!
//! Each event goes to three places:
//! - the container's own file, `<root>/<id>/audit.jsonl`, capped in size and gone with the
//!   container (`nemosandbox audit ID` reads it while the container exists);
//! - the node sink (`audit:` in the node configuration), which outlives the container, is
//!   rotated by size and shared by every container and runtime process on the node;
//! - the runtime log, as a structured `audit` field.
//!
//! Threat: the workload chooses how many events it causes and what they carry (names,
//! addresses, command lines). So the guard merges repeats (`Throttle`), a line is capped in
//! size, and a sink that cannot be written is counted and reported but never holds up or
//! changes a decision.

pub mod kernel;
pub mod ocsf;
pub mod read;
pub mod sink;
mod throttle;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use sink::{Format, Sink, SinkConfig};
pub use throttle::{Throttle, MAX_KEYS, WINDOW};

/// The container's file, in libcontainer's directory for it.
pub const CONTAINER_FILE: &str = "audit.jsonl";
/// The per-container file stops growing here; later events still reach the node sink.
pub const MAX_FILE: u64 = 16 << 20;
/// A line longer than this has its `request` cut down (command lines can be megabytes).
pub const MAX_LINE: usize = 8 << 10;

/// What kind of decision an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A connect or send the network guard decided.
    Network,
    /// A request the layer-7 proxy decided.
    Http,
    /// A name the guard's resolver refused.
    Dns,
    /// An `exec` the exec policy refused.
    Exec,
    /// A file access the kernel refused and reported.
    Fs,
    /// A symlink guard's outcome.
    Symlink,
    /// The audit machinery itself, or policy handling (a sink that cannot be written).
    Policy,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Network,
        Kind::Http,
        Kind::Dns,
        Kind::Exec,
        Kind::Fs,
        Kind::Symlink,
        Kind::Policy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Http => "http",
            Kind::Dns => "dns",
            Kind::Exec => "exec",
            Kind::Fs => "fs",
            Kind::Symlink => "symlink",
            Kind::Policy => "policy",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {s:?} (one of {})", names.join(", "))
            })
    }
}

/// The Kubernetes pod a container belongs to, from the annotations the CRI runtime sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Pod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The container's name in the pod spec (absent for the pod's sandbox container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// (field, containerd's annotation, CRI-O's annotation)
const POD_ANNOTATIONS: [(&str, &str, &str); 4] = [
    (
        "namespace",
        "io.kubernetes.cri.sandbox-namespace",
        "io.kubernetes.pod.namespace",
    ),
    (
        "name",
        "io.kubernetes.cri.sandbox-name",
        "io.kubernetes.pod.name",
    ),
    (
        "uid",
        "io.kubernetes.cri.sandbox-uid",
        "io.kubernetes.pod.uid",
    ),
    (
        "container_name",
        "io.kubernetes.cri.container-name",
        "io.kubernetes.container.name",
    ),
];

impl Pod {
    /// The pod named by a spec's annotations (containerd's or CRI-O's), if any.
    pub fn from_annotations(a: &HashMap<String, String>) -> Option<Pod> {
        let mut pod = Pod::default();
        for (field, containerd, crio) in POD_ANNOTATIONS {
            let v = a.get(containerd).or_else(|| a.get(crio)).cloned();
            match field {
                "namespace" => pod.namespace = v,
                "name" => pod.name = v,
                "uid" => pod.uid = v,
                _ => pod.container_name = v,
            }
        }
        (pod != Pod::default()).then_some(pod)
    }
}

/// What every event of one container carries, fixed at create and kept in its metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    #[serde(default)]
    pub policy_sha256: String,
    /// The node sink the container's events also go to (none: disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkConfig>,
    /// The kernel's audit records the container's Landlock denials (`fs` events).
    #[serde(default)]
    pub kernel_records: bool,
}

/// One decision, as the code that made it describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub decision: Decision,
    /// The policy, endpoint or rule that decided.
    pub by: String,
    pub reason: String,
    pub pid: Option<i32>,
    pub executable: Option<String>,
    pub request: serde_json::Value,
}

/// What was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A call or request refused by a rule.
    Denied,
    /// A name or set-up refused (the resolver, a symlink guard that does not validate).
    Refused,
    /// Let by an endpoint in audit mode that would otherwise have refused it.
    AllowedAudit,
    /// The audit machinery itself failed.
    Error,
    /// A symlink guard's outcomes.
    Hardened,
    Partial,
    Skipped,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Denied => "denied",
            Decision::Refused => "refused",
            Decision::AllowedAudit => "allowed (audit)",
            Decision::Error => "error",
            Decision::Hardened => "hardened",
            Decision::Partial => "partial",
            Decision::Skipped => "skipped",
        }
    }
}

impl Event {
    /// An event of `kind`: what was decided, by which rule (`by`), and why.
    pub fn new(
        kind: Kind,
        decision: Decision,
        by: impl Into<String>,
        reason: impl Into<String>,
    ) -> Event {
        Event {
            kind,
            decision,
            by: by.into(),
            reason: reason.into(),
            pid: None,
            executable: None,
            request: serde_json::Value::Null,
        }
    }

    pub fn request(mut self, request: serde_json::Value) -> Event {
        self.request = request;
        self
    }

    pub fn pid(mut self, pid: i32) -> Event {
        self.pid = Some(pid);
        self
    }

    pub fn executable(mut self, exe: impl Into<String>) -> Event {
        let exe = exe.into();
        self.executable = (!exe.is_empty()).then_some(exe);
        self
    }
}

/// One line of the stream (docs/audit.md has its JSON Schema).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "nemosandbox audit event")]
pub struct Record {
    /// When it happened (for a merged line: the last repeat), RFC 3339 UTC.
    pub time: String,
    /// The container id.
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    pub kind: Kind,
    /// The calling process's executable, where one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// The calling thread, as the host sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// What was asked, by kind: `destination`/`names`/`syscall`, `name`, `command`, `path`.
    #[serde(default)]
    pub request: serde_json::Value,
    /// `denied`, `refused`, `allowed (audit)`, or a symlink guard's outcome.
    pub decision: String,
    /// The policy, endpoint or rule that decided.
    pub by: String,
    pub reason: String,
    /// sha256 of the effective policy the decision was made under.
    #[serde(default)]
    pub policy_sha256: String,
    /// Repeats merged into this line (absent: it happened once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For a merged line, when the first merged repeat happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_time: Option<String>,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Longest text field kept from an event (reasons and executables can carry what the
/// workload chose).
const MAX_FIELD: usize = 1024;
/// Longest `request` kept whole, as JSON; a longer one keeps its first `MAX_FIELD` bytes.
const MAX_REQUEST: usize = 2048;

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn bounded_request(request: &serde_json::Value) -> serde_json::Value {
    let text = request.to_string();
    if text.len() <= MAX_REQUEST {
        return request.clone();
    }
    serde_json::json!({"truncated": clip(&text, MAX_FIELD), "bytes": text.len()})
}

impl Record {
    /// The record of an event, every field the workload can influence cut to a bound first:
    /// what the merging keys, the log line, the text form and OCSF are all made from this.
    pub fn of(ctx: &Context, ev: &Event) -> Record {
        Record {
            time: now(),
            container: ctx.container.clone(),
            pod: ctx.pod.clone(),
            kind: ev.kind,
            executable: ev.executable.as_deref().map(|e| clip(e, MAX_FIELD)),
            pid: ev.pid,
            request: bounded_request(&ev.request),
            decision: ev.decision.as_str().to_string(),
            by: clip(&ev.by, 256),
            reason: clip(&ev.reason, MAX_FIELD),
            policy_sha256: ctx.policy_sha256.clone(),
            count: None,
            first_time: None,
        }
    }

    /// The line as written: JSON, with an oversized `request` replaced by its start.
    pub fn to_line(&self) -> String {
        let line = serde_json::to_string(self).expect("a record serializes");
        if line.len() <= MAX_LINE {
            return line;
        }
        let mut cut = self.clone();
        let text = self.request.to_string();
        let mut end = 1024.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        cut.request = serde_json::json!({"truncated": &text[..end], "bytes": text.len()});
        cut.reason = cut.reason.chars().take(1024).collect();
        serde_json::to_string(&cut).expect("a record serializes")
    }
}

/// Writes one container's events to its file, the node sink and the log.
pub struct Recorder {
    writer: std::sync::Arc<Writer>,
    /// With a background writer: its queue and thread, started by the first event.
    queue: Option<std::sync::Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    tx: Option<std::sync::mpsc::SyncSender<Record>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// `finish` ran: later events are written in place.
    closed: bool,
}

/// Records waiting for the background writer; beyond it they are counted as lost.
pub const QUEUE: usize = 4096;

struct Writer {
    ctx: Context,
    file: PathBuf,
    sink: Option<Sink>,
    /// Events the node sink could not take.
    lost: AtomicU64,
}

impl Recorder {
    /// `container_dir`: libcontainer's directory for the container (its file goes there).
    pub fn new(ctx: Context, container_dir: &Path) -> Recorder {
        let sink = ctx.sink.clone().map(Sink::new);
        Recorder {
            writer: std::sync::Arc::new(Writer {
                ctx,
                file: container_dir.join(CONTAINER_FILE),
                sink,
                lost: AtomicU64::new(0),
            }),
            queue: None,
        }
    }

    /// Write from a thread of its own, so a slow or busy sink never holds up the decision
    /// that caused an event (the guard's and the kernel reader's). The thread starts with the
    /// first event, in the process that has it (recorders are made before the helper forks,
    /// and threads do not cross a fork). `finish` waits for it.
    pub fn background(mut self) -> Recorder {
        self.queue = Some(std::sync::Mutex::new(Queue::default()));
        self
    }

    pub fn context(&self) -> &Context {
        &self.writer.ctx
    }

    /// Record one event now.
    pub fn record(&self, ev: &Event) {
        self.write(&Record::of(&self.writer.ctx, ev));
    }

    /// The background writer's queue, started if need be (`None`: write in place).
    fn sender(&self) -> Option<std::sync::mpsc::SyncSender<Record>> {
        let mut q = self
            .queue
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if q.closed {
            return None;
        }
        if q.tx.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(QUEUE);
            let w = self.writer.clone();
            let spawned = std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || {
                    for rec in rx {
                        w.remote(&rec, &rec.to_line());
                    }
                });
            // Without the thread, events are written in place: slower, never lost.
            let t = spawned.ok()?;
            q.tx = Some(tx);
            q.thread = Some(t);
        }
        q.tx.clone()
    }

    /// Write a finished record everywhere it goes: the container's own file and the log at
    /// once (a tmpfs append, what readers of a live container expect to see), the node sink
    /// through the background writer when there is one.
    pub fn write(&self, rec: &Record) {
        let line = rec.to_line();
        self.writer.local(rec, &line);
        if self.writer.sink.is_none() {
            return;
        }
        let Some(tx) = self.sender() else {
            return self.writer.remote(rec, &line);
        };
        match tx.try_send(rec.clone()) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                let lost = self.writer.lost.fetch_add(1, Ordering::Relaxed) + 1;
                if lost.is_power_of_two() {
                    tracing::error!(
                        "container {}: audit writer behind: {lost} event(s) dropped so far",
                        self.writer.ctx.container
                    );
                }
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(r)) => self.writer.remote(&r, &line),
        }
    }

    /// Wait until the background writer has written everything queued.
    pub fn finish(&self) {
        let Some(q) = &self.queue else {
            return;
        };
        let thread = {
            let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
            q.closed = true;
            q.tx = None;
            q.thread.take()
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Events lost so far (the node sink could not take them, or the queue was full).
    pub fn lost(&self) -> u64 {
        self.writer.lost.load(Ordering::Relaxed)
    }
}

impl Writer {
    /// The container's own file and the runtime log.
    fn local(&self, rec: &Record, line: &str) {
        tracing::warn!(target: "nemosandbox::audit", audit = %line, "{}", read::text(rec));
        append_capped(&self.file, line);
    }

    /// The node sink.
    fn remote(&self, rec: &Record, line: &str) {
        let Some(sink) = &self.sink else {
            return;
        };
        if let Err(e) = sink.write(rec, line) {
            let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
            // Reported at the first loss and then at each doubling, so a dead disk cannot
            // turn the reports themselves into a flood.
            if lost.is_power_of_two() {
                self.sink_failed(sink, &e, lost);
            }
        }
    }

    fn sink_failed(&self, sink: &Sink, e: &sink::SinkError, lost: u64) {
        let reason = format!(
            "node audit sink {}: {e}; {lost} event(s) not written there so far (the decisions \
             stand; this file still has them)",
            sink.path().display()
        );
        tracing::error!("container {}: {reason}", self.ctx.container);
        let rec = Record::of(
            &self.ctx,
            &Event::new(Kind::Policy, Decision::Error, "audit sink", reason),
        );
        append_capped(&self.file, &rec.to_line());
    }
}

/// Append a line to the container's own file unless it has reached its cap.
fn append_capped(path: &Path, line: &str) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= MAX_FILE) {
        return;
    }
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        tracing::warn!("audit: cannot write {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests;
