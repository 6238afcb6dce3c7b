//! Runtime log in runc's shapes.
//!
//! Engines (containerd's runc shim, go-runc, dockerd) read the `--log` file to turn a failed
//! runtime call into a message, and they parse it as runc writes it: one object per line
//! `{"level":"error","msg":"…","time":"…"}` with a lowercase level, file opened for append.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log-format {other:?} (expected text or json)"
            )),
        }
    }
}

/// Where log lines go: the `--log` file, or stderr when none was given.
enum Sink {
    File(Mutex<File>),
    Stderr,
}

struct RuncLayer {
    sink: Sink,
    format: LogFormat,
    max: Level,
    own_only: bool,
}

#[derive(Default)]
struct Fields {
    msg: String,
    extra: String,
    /// An audit event's JSON (`audit = %line`): a structured field of its own in the log.
    audit: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.msg, "{value:?}");
        } else if field.name() == "audit" {
            self.audit = Some(format!("{value:?}"));
        } else {
            let _ = write!(self.extra, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg.push_str(value);
        } else {
            let _ = write!(self.extra, " {}={value}", field.name());
        }
    }
}

/// Format one log line in runc's shape; pure so the shape is unit-tested.
pub fn format_line(format: LogFormat, level: &str, msg: &str, time: &str) -> String {
    format_event(format, level, msg, None, time)
}

/// A log line that may carry an audit event: in JSON, an `audit` object beside `msg`; in
/// text, an `audit=` field holding the event's JSON.
pub fn format_event(
    format: LogFormat,
    level: &str,
    msg: &str,
    audit: Option<&str>,
    time: &str,
) -> String {
    match format {
        LogFormat::Json => {
            let mut obj = serde_json::json!({"level": level, "msg": msg, "time": time});
            if let Some(a) = audit {
                obj["audit"] = serde_json::from_str(a).unwrap_or_else(|_| a.into());
            }
            format!("{obj}\n")
        }
        LogFormat::Text => match audit {
            Some(a) => format!("time=\"{time}\" level={level} msg={msg:?} audit={a:?}\n"),
            None => format!("time=\"{time}\" level={level} msg={msg:?}\n"),
        },
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl RuncLayer {
    fn write(&self, line: &str) {
        match &self.sink {
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for RuncLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max
            || (self.own_only && !event.metadata().target().starts_with("nemosandbox"))
        {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let msg = if fields.extra.is_empty() {
            fields.msg
        } else {
            format!("{}{}", fields.msg, fields.extra)
        };
        let lvl = level.as_str().to_ascii_lowercase();
        self.write(&format_event(
            self.format,
            &lvl,
            &msg,
            fields.audit.as_deref(),
            &now_rfc3339(),
        ));
    }
}

/// The `--log` file's descriptor, for the helper process to keep: the guard's audit events
/// and warnings go to the same log as the runtime's.
static LOG_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

pub fn log_fd() -> Option<i32> {
    let fd = LOG_FD.load(std::sync::atomic::Ordering::Relaxed);
    (fd >= 0).then_some(fd)
}

/// Install the global subscriber. Without `--log`, only warnings and errors reach stderr so that
/// `state` and friends keep stdout and stderr clean on success.
pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> std::io::Result<()> {
    let (sink, max) = match log {
        Some(path) => {
            let f = OpenOptions::new().create(true).append(true).open(path)?;
            LOG_FD.store(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                std::sync::atomic::Ordering::Relaxed,
            );
            (
                Sink::File(Mutex::new(f)),
                if debug { Level::DEBUG } else { Level::WARN },
            )
        }
        None => (Sink::Stderr, if debug { Level::DEBUG } else { Level::WARN }),
    };
    // libcontainer logs every failure on its way up at error level; on stderr these would be
    // noise next to the one error line the CLI prints, so stderr only gets them with --debug.
    let own_only = log.is_none() && !debug;
    let layer = RuncLayer {
        sink,
        format,
        max,
        own_only,
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
    Ok(())
}

/// Append the final error of a failed command to the log, as runc does before exiting.
pub fn log_error(log: Option<&Path>, format: LogFormat, msg: &str) {
    if let Some(path) = log {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(format_line(format, "error", msg, &now_rfc3339()).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_runc_shape() {
        let line = format_line(
            LogFormat::Json,
            "error",
            "container \"x\" does not exist",
            "T",
        );
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
        assert_eq!(v["time"], "T");
        assert_eq!(v.as_object().unwrap().len(), 3);
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn an_audit_event_is_an_object_in_the_json_log() {
        let line = format_event(
            LogFormat::Json,
            "warning",
            "network denied",
            Some(r#"{"kind":"network","decision":"denied"}"#),
            "T",
        );
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["audit"]["kind"], "network");
        assert_eq!(v["msg"], "network denied");
    }

    #[test]
    fn text_line_quotes_message() {
        let line = format_line(LogFormat::Text, "warning", "a b", "T");
        assert_eq!(line, "time=\"T\" level=warning msg=\"a b\"\n");
    }
}
