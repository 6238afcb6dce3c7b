//! The node sink: one file for every container on the node, kept after `delete` and
//! rotated by size.
//!
//! Guards and runtime processes of many containers append to it at once. Each line is
//! written with one `write(2)` on an `O_APPEND` file while holding an exclusive `flock` on
//! the sink's directory, so lines never interleave and only one writer rotates at a time.
//! The rotation itself (renaming `audit.jsonl` to `.1`, `.1` to `.2`, dropping the oldest)
//! is the `file-rotate` crate's, reopened for each line so every writer sees the file as
//! the last one left it.
//!
//! The lock is taken with a deadline: a writer that cannot get it in time loses the line
//! (counted) rather than holding up the decision that caused it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::Record;

pub const DEFAULT_PATH: &str = "/var/log/nemosandbox/audit.jsonl";
pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;
pub const DEFAULT_KEEP: usize = 4;
/// How long a writer waits for another to finish its line.
const LOCK_WAIT: Duration = Duration::from_millis(250);

/// How the sink's lines are shaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// nemosandbox's own event (docs/audit.md).
    #[default]
    Json,
    /// OCSF 1.x Network Activity, DNS Activity, Process Activity and File System Activity.
    Ocsf,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "json" => Ok(Format::Json),
            "ocsf" => Ok(Format::Ocsf),
            other => Err(format!("unknown audit format {other:?} (json or ocsf)")),
        }
    }
}

/// `audit:` in the node configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Write the node sink at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The current file; rotated files get `.1` (newest) … `.KEEP` beside it.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Rotate once the file has grown past this size: bytes, or with a unit (`64MiB`, `512KiB`).
    #[serde(default = "default_max_size", deserialize_with = "size")]
    #[schemars(with = "serde_json::Value")]
    pub max_size: u64,
    /// Rotated files kept.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// `json` (nemosandbox's events) or `ocsf`.
    #[serde(default)]
    pub format: Format,
    /// Have Landlock record the workload's refused file accesses in the kernel's audit
    /// (Linux 6.15+, with the kernel's audit enabled) and report them as `fs` events. Off by
    /// default: every refusal then becomes a kernel audit record, which the workload can
    /// flood (see the kernel audit's rate and backlog limits).
    #[serde(default)]
    pub landlock_denials: bool,
}

fn yes() -> bool {
    true
}
fn default_path() -> PathBuf {
    PathBuf::from(DEFAULT_PATH)
}
fn default_max_size() -> u64 {
    DEFAULT_MAX_SIZE
}
fn default_keep() -> usize {
    DEFAULT_KEEP
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            enabled: true,
            path: default_path(),
            max_size: DEFAULT_MAX_SIZE,
            keep: DEFAULT_KEEP,
            format: Format::Json,
            landlock_denials: false,
        }
    }
}

impl SinkConfig {
    /// What is wrong with it, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if !self.path.is_absolute() || self.path.file_name().is_none() {
            return Err(format!(
                "audit.path: {:?} is not an absolute file path",
                self.path
            ));
        }
        if self.max_size < 4096 {
            return Err(format!(
                "audit.max_size: {} bytes is below the 4KiB minimum",
                self.max_size
            ));
        }
        if self.keep == 0 {
            return Err("audit.keep: keep at least one rotated file".into());
        }
        Ok(())
    }

    /// The sink's files, oldest first: `path.KEEP` … `path.1`, `path` (those that exist).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = (1..=self.keep)
            .rev()
            .map(|n| rotated(&self.path, n))
            .filter(|p| p.exists())
            .collect();
        out.push(self.path.clone());
        out
    }
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// A size: a number of bytes, or a number with B, KiB, MiB, GiB (or K, M, G, KB, MB, GB,
/// all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 64MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?} (B, KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("another writer held the sink for {0:?}")]
    Busy(Duration),
}

/// The node sink, as one writer sees it.
pub struct Sink {
    cfg: SinkConfig,
}

impl Sink {
    pub fn new(cfg: SinkConfig) -> Sink {
        Sink { cfg }
    }

    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    /// Append one record (`line` is its native JSON form).
    pub fn write(&self, rec: &Record, line: &str) -> Result<(), SinkError> {
        let mut text = match self.cfg.format {
            Format::Json => line.to_string(),
            Format::Ocsf => super::ocsf::event(rec).to_string(),
        };
        text.push('\n');
        let dir = self.cfg.path.parent().unwrap_or(Path::new("/"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| SinkError::Io(p, e)
        };
        // A directory only: anything else planted there (a FIFO) would hold the writer.
        let open_dir = |d: &Path| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(d)
        };
        let lock = match open_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Command lines and names are not every host user's to read.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
                    .map_err(io(dir))?;
                open_dir(dir).map_err(io(dir))?
            }
            opened => opened.map_err(io(dir))?,
        };
        lock_within(&lock, LOCK_WAIT)?;
        // Opened here first: file-rotate would swallow a failure to open and drop the line.
        let mut opts = OpenOptions::new();
        opts.read(true).create(true).append(true).mode(0o640);
        let mut current = opts.open(&self.cfg.path).map_err(io(&self.cfg.path))?;
        let len = current.metadata().map_err(io(&self.cfg.path))?.len();
        if len <= self.cfg.max_size {
            // No rotation due (file-rotate rotates only a file already past the limit): the
            // line goes to the file just opened, without file-rotate's scan of the directory.
            return current
                .write_all(text.as_bytes())
                .map_err(io(&self.cfg.path));
        }
        drop(current);
        let max = usize::try_from(self.cfg.max_size).unwrap_or(usize::MAX);
        let mut file = FileRotate::new(
            &self.cfg.path,
            AppendCount::new(self.cfg.keep),
            ContentLimit::BytesSurpassed(max),
            Compression::None,
            Some(opts),
        );
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .map_err(io(&self.cfg.path))
        // The lock goes with `lock`.
    }
}

/// An exclusive flock on `f`, waiting at most `wait`.
fn lock_within(f: &File, wait: Duration) -> Result<(), SinkError> {
    let start = Instant::now();
    loop {
        // SAFETY: flock(2) on a descriptor this function borrows.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(SinkError::Io(PathBuf::from("flock"), e));
        }
        if start.elapsed() >= wait {
            return Err(SinkError::Busy(wait));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Context, Decision, Event, Kind};

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    fn record(i: usize) -> Record {
        let ctx = Context {
            container: format!("c{i}"),
            ..Context::default()
        };
        Record::of(
            &ctx,
            &Event::new(Kind::Dns, Decision::Refused, "p", "no")
                .request(serde_json::json!({"name": format!("n{i}.example")})),
        )
    }

    #[test]
    fn concurrent_writers_rotate_without_losing_or_tearing_lines() {
        let dir = crate::testutil::TempDir::new("sink");
        let cfg = SinkConfig {
            path: dir.path().join("log/audit.jsonl"),
            max_size: 16 << 10,
            keep: 50,
            ..SinkConfig::default()
        };
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    let sink = Sink::new(cfg);
                    for i in 0..250 {
                        let rec = record(t * 1000 + i);
                        sink.write(&rec, &rec.to_line()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut n = 0;
        let files = cfg.files();
        assert!(files.len() > 3, "rotated: {files:?}");
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(
                text.len() as u64 <= cfg.max_size + MAX_TEST_LINE,
                "{f:?} {}",
                text.len()
            );
            for l in text.lines() {
                serde_json::from_str::<Record>(l).unwrap();
                n += 1;
            }
        }
        assert_eq!(n, 1000);
    }
    const MAX_TEST_LINE: u64 = 512;

    #[test]
    fn rotation_keeps_only_keep_files() {
        let dir = crate::testutil::TempDir::new("sink");
        let cfg = SinkConfig {
            path: dir.path().join("audit.jsonl"),
            max_size: 4096,
            keep: 2,
            ..SinkConfig::default()
        };
        let sink = Sink::new(cfg.clone());
        for i in 0..200 {
            let rec = record(i);
            sink.write(&rec, &rec.to_line()).unwrap();
        }
        let files = cfg.files();
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(!dir.path().join("audit.jsonl.3").exists());
    }

    #[test]
    fn a_bad_config_names_the_field() {
        let bad = SinkConfig {
            keep: 0,
            ..SinkConfig::default()
        };
        assert!(bad.check().unwrap_err().contains("audit.keep"));
        let rel = SinkConfig {
            path: "audit.jsonl".into(),
            ..SinkConfig::default()
        };
        assert!(rel.check().unwrap_err().contains("audit.path"));
    }
}
