//! `nemosandbox install|uninstall ENGINE`: registers the runtime with docker, containerd, podman
//! or CRI-O by editing the engine's own configuration, and takes exactly that edit back.
//!
//! Each engine module turns the current bytes of the configuration into the wanted bytes (a pure
//! function, unit-tested on fixtures); this module reads, diffs, writes atomically and tells the
//! engine to reload only when the bytes changed.

mod containerd;
mod docker;
mod dropin;
pub mod node_label;
mod reload;

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::path_error::io_err;

/// The engines `install` knows how to configure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Docker,
    Containerd,
    Podman,
    Crio,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Docker => "docker",
            Engine::Containerd => "containerd",
            Engine::Podman => "podman",
            Engine::Crio => "crio",
        })
    }
}

impl Engine {
    /// Where the engine reads the configuration `install` edits (or the drop-in it writes).
    pub fn default_config(self, name: &str) -> PathBuf {
        match self {
            Engine::Docker => PathBuf::from("/etc/docker/daemon.json"),
            Engine::Containerd => PathBuf::from("/etc/containerd/config.toml"),
            Engine::Podman => {
                PathBuf::from(format!("/etc/containers/containers.conf.d/50-{name}.conf"))
            }
            Engine::Crio => PathBuf::from(format!("/etc/crio/crio.conf.d/50-{name}.conf")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
    #[error("{path}: not valid {format}: {reason}")]
    Parse {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Conflict { path: PathBuf, reason: String },
    #[error("invalid runtime name {0:?}: letters, digits, '-' and '_' only")]
    Name(String),
    #[error("{engine} passes no arguments to the runtime: {hint}")]
    NoArgs { engine: Engine, hint: &'static str },
    #[error("{0}")]
    Reload(String),
}

/// What `install` registers.
#[derive(Clone, Debug)]
pub struct Options {
    /// The runtime's name in the engine (`--runtime=NAME`, the RuntimeClass handler).
    pub name: String,
    /// The binary the engine runs, as the engine's host sees it.
    pub path: PathBuf,
    /// Global runtime flags the engine passes before runc's verb (`--preset P`, `--policy F`).
    pub runtime_args: Vec<String>,
    /// containerd's `Root` option: where the runtime keeps state for the engine's containers.
    pub state_root: PathBuf,
    /// The configuration file to edit; the engine's default when `None`.
    pub config: Option<PathBuf>,
    /// containerd: the config version to write for a new or empty file.
    pub config_version: Option<u8>,
}

impl Options {
    fn config_path(&self, engine: Engine) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| engine.default_config(&self.name))
    }
}

/// One file's change: `None` means the file is (to be) absent.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

impl Change {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }

    /// A unified diff of the change, for `--dry-run` and the log.
    pub fn diff(&self) -> String {
        let text =
            |b: &Option<Vec<u8>>| String::from_utf8_lossy(b.as_deref().unwrap_or(b"")).into_owned();
        let (old, new) = (text(&self.before), text(&self.after));
        let label = self.path.display().to_string();
        let old_label = if self.before.is_some() {
            label.clone()
        } else {
            "/dev/null".into()
        };
        let new_label = if self.after.is_some() {
            label
        } else {
            "/dev/null".into()
        };
        similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&old_label, &new_label)
            .to_string()
    }
}

/// containerd, podman and CRI-O pass no arguments from their configuration to a runtime: a
/// preset or policy given to `install` would silently do nothing, so it is refused, saying how
/// that engine selects policies instead.
pub(crate) fn refuse_runtime_args(engine: Engine, opts: &Options) -> Result<(), InstallError> {
    if opts.runtime_args.is_empty() {
        return Ok(());
    }
    let hint = match engine {
        Engine::Podman => {
            "pass `--runtime-flag preset=P` to podman, or annotate the container with \
             dev.nemosandbox.presets"
        }
        _ => {
            "select presets with the dev.nemosandbox.presets annotation, or with \
             allowed_presets/a baseline in /etc/nemosandbox/config.yaml"
        }
    };
    Err(InstallError::NoArgs { engine, hint })
}

/// A string as a TOML value (quoted and escaped).
pub(crate) fn toml_string(s: impl std::fmt::Display) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn check_name(name: &str) -> Result<(), InstallError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InstallError::Name(name.to_string()))
    }
}

/// The file's bytes, `None` when it does not exist. A symbolic link is refused: renaming over it
/// would replace the link with a file, and a link whose target lies outside a mounted host root
/// reads as missing, which would turn the whole configuration into our block alone.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(InstallError::Conflict {
            path: path.to_path_buf(),
            reason: "is a symbolic link; pass the file it points to with --engine-config".into(),
        });
    }
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e).into()),
    }
}

/// The change `install` would make, computed without touching anything.
pub fn plan_install(engine: Engine, opts: &Options) -> Result<Vec<Change>, InstallError> {
    check_name(&opts.name)?;
    let path = opts.config_path(engine);
    let before = read_optional(&path)?;
    let mut changes = match engine {
        Engine::Docker => docker::install(&path, before.as_deref(), opts)?,
        Engine::Containerd => vec![containerd::install(&path, before.as_deref(), opts)?],
        Engine::Podman => vec![dropin::podman(&path, before.as_deref(), opts)?],
        Engine::Crio => vec![dropin::crio(&path, before.as_deref(), opts)?],
    };
    for c in changes.iter_mut() {
        if c.path == path {
            c.before = before.clone();
        }
    }
    Ok(changes)
}

/// The change `uninstall` would make: what `install` added, and only that.
pub fn plan_uninstall(engine: Engine, opts: &Options) -> Result<Vec<Change>, InstallError> {
    check_name(&opts.name)?;
    let path = opts.config_path(engine);
    let before = read_optional(&path)?;
    match engine {
        Engine::Docker => docker::uninstall(&path, before, &opts.name),
        Engine::Containerd => Ok(vec![containerd::uninstall(&path, before, &opts.name)?]),
        Engine::Podman | Engine::Crio => Ok(vec![dropin::uninstall(&path, before)?]),
    }
}

/// Writes each change atomically (a temporary file in the same directory, renamed over), keeping
/// the mode and owner of a file that existed; removes the files that are to be absent. In order:
/// an engine module lists a record before the file it describes.
pub fn apply(changes: &[Change]) -> Result<(), InstallError> {
    for c in changes.iter().filter(|c| c.changed()) {
        match &c.after {
            Some(bytes) => write_atomic(&c.path, bytes)?,
            None => {
                std::fs::remove_file(&c.path).map_err(io_err(&c.path))?;
                // A drop-in directory install made (podman's and CRI-O's are optional) goes
                // with its last file.
                if let Some(dir) = c
                    .path
                    .parent()
                    .filter(|d| d.extension().is_some_and(|e| e == "d"))
                {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), InstallError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let old = std::fs::metadata(path).ok();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{name}.nemosandbox-{}-{nonce:x}",
        std::process::id()
    ));
    // Owner-only until the final mode is set: the content may be a 0600 file's.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let result = (|| {
        f.write_all(bytes)?;
        let mode = old
            .as_ref()
            .map_or(0o644, |m| m.permissions().mode() & 0o7777);
        if let Some(m) = &old {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Ours: create_new made it.
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result.map_err(io_err(path))?)
}

/// How to make the engine take the new configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Signal or restart the engine when the configuration changed.
    Auto,
    /// Only say what to do.
    Never,
}

/// Tells the engine about a changed configuration; returns what was done, for the user.
pub fn reload(engine: Engine, config: &Path, restart: Restart) -> Result<String, InstallError> {
    reload::reload(engine, config, restart)
}

/// The configuration file `install`/`uninstall` edits for these options.
pub fn config_path(engine: Engine, opts: &Options) -> PathBuf {
    opts.config_path(engine)
}
