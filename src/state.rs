//! Where the runtime keeps its state, and the runc-shaped views of it.
//!
//! `<root>/<id>/` belongs to libcontainer (state.json, its config, the notify socket).
//! `<root>/.nemosandbox/<id>/` is ours: the rewritten bundle (`config.json`, never the user's),
//! the confinement plan and `meta.json`. It is created before libcontainer's directory, so a
//! failed `create` must remove both; `delete` removes both.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libcontainer::container::{Container, ContainerStatus};
use serde::{Deserialize, Serialize};

/// The annotation that carries the effective policy's hash.
pub const POLICY_HASH_ANNOTATION: &str = "dev.nemosandbox.policy.sha256";
/// The documents merged into the effective policy, in order.
/// Prefix of the per-guard outcome annotations (`…symlink-guard./sandbox/.openclaw`).
pub const GUARD_ANNOTATION_PREFIX: &str = "dev.nemosandbox.symlink-guard.";
pub const POLICY_SOURCES_ANNOTATION: &str = "dev.nemosandbox.policy.sources";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {0:?} does not exist")]
    NotExist(String),
    #[error("container with id {0:?} already exists")]
    Exists(String),
    #[error("invalid container id {0:?}: {1}")]
    BadId(String, &'static str),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state root {path}: {why}; name another with --root")]
    NotPrivate { path: PathBuf, why: String },
    #[error("container {id:?}: {source}")]
    Libcontainer {
        id: String,
        source: Box<libcontainer::error::LibcontainerError>,
    },
}

/// Root's state root.
pub const SYSTEM_ROOT: &str = "/run/nemosandbox";

/// The state root when `--root` is not given: `/run/nemosandbox` for root; for another user
/// `$XDG_RUNTIME_DIR/nemosandbox` (the per-user runtime directory, emptied at logout), or
/// `/tmp/nemosandbox-UID` where no such directory is set.
pub fn default_root() -> PathBuf {
    // uid 0 of a user namespace (rootless podman) is still the user on the host.
    if !crate::privilege::current().rootless() {
        return PathBuf::from(SYSTEM_ROOT);
    }
    // Named for the host's uid: uid 0 of every rootless user's namespace would share a name.
    let uid = crate::privilege::host_euid();
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("nemosandbox"),
        _ => std::env::temp_dir().join(format!("nemosandbox-{uid}")),
    }
}

/// For a runtime without root: `root` exists (created here, mode 0700) and is a directory of
/// this user's that no one else can write or read. Under a shared directory such as `/tmp`
/// another user could have made it first, to read the state or plant links in it.
pub fn ensure_private_root(root: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let not_private = |why: String| StateError::NotPrivate {
        path: root.to_path_buf(),
        why,
    };
    match fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(StateError::Io {
                path: root.to_path_buf(),
                source,
            })
        }
    }
    let m = fs::symlink_metadata(root).map_err(|source| StateError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let uid = nix::unistd::geteuid().as_raw();
    if !m.file_type().is_dir() {
        return Err(not_private(
            "not a directory (a link or a file is there)".into(),
        ));
    }
    if m.uid() != uid {
        return Err(not_private(format!(
            "owned by uid {}, not by this user ({uid})",
            m.uid()
        )));
    }
    if m.mode() & 0o077 != 0 {
        return Err(not_private(format!(
            "mode {:o}: other users may reach it (it must be 0700)",
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The runtime's `--root` and the paths derived from it.
#[derive(Clone, Debug)]
pub struct StateRoot {
    root: PathBuf,
}

impl StateRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn path(&self) -> &Path {
        &self.root
    }
    /// libcontainer's directory for the container.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }
    /// Where the runtime's own container directories are.
    pub fn own_dirs(&self) -> PathBuf {
        self.root.join(".nemosandbox")
    }
    /// Our directory for the container: the rewritten bundle and metadata.
    pub fn own_dir(&self, id: &str) -> crate::container_dir::ContainerDir {
        crate::container_dir::ContainerDir::new(self.own_dirs().join(id))
    }
    pub fn exists(&self, id: &str) -> bool {
        self.container_dir(id).join("state.json").exists()
    }
    /// Container ids, sorted, of every container whose libcontainer state exists.
    pub fn ids(&self) -> Result<Vec<String>, StateError> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && self.exists(n))
            .collect();
        ids.sort();
        Ok(ids)
    }
    pub fn load(&self, id: &str) -> Result<Container, StateError> {
        validate_id(id)?;
        if !self.exists(id) {
            return Err(StateError::NotExist(id.to_string()));
        }
        // libcontainer rewrites state.json in place (truncate, then write); a reader racing a
        // writer can see it empty. Retry briefly instead of reporting a half-written file.
        let mut attempts = 0;
        loop {
            match Container::load(self.container_dir(id)) {
                Ok(c) => return Ok(c),
                Err(_) if attempts < 50 && self.exists(id) => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(source) => {
                    return Err(StateError::Libcontainer {
                        id: id.to_string(),
                        source: Box::new(source),
                    })
                }
            }
        }
    }
}

/// runc's id rule: no path separators, no `.`/`..`, printable and short enough for a dir name.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let bad = |why| Err(StateError::BadId(id.to_string(), why));
    if id.is_empty() {
        return bad("empty");
    }
    if id == "." || id == ".." || id.starts_with('.') {
        return bad("must not start with '.'");
    }
    if id.len() > 1024 {
        return bad("too long");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return bad("only letters, digits, '_', '+', '-' and '.' are allowed");
    }
    Ok(())
}

/// What we record about a container beside libcontainer's state.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Meta {
    /// The bundle the engine gave us; `state` reports it, not the rewritten one.
    pub bundle: PathBuf,
    /// The container's root filesystem, absolute.
    #[serde(default)]
    pub rootfs: PathBuf,
    /// Start time (clock ticks since boot) of the init process, to tell it from a reused pid.
    #[serde(default)]
    pub init_start_time: Option<u64>,
    /// The per-container helper process, if one runs.
    #[serde(default)]
    pub helper_pid: Option<i32>,
    #[serde(default)]
    pub helper_start_time: Option<u64>,
    /// Annotations the runtime adds to `state` (policy hash, stage outcomes).
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// What the container's audit events carry and where they go besides its own file.
    #[serde(default)]
    pub audit: crate::audit::Context,
    /// Symlink guard outcomes (what `delete` must undo).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<crate::symlinks::Outcome>,
    /// The image's real shells (and those the policy lists) by device and inode, recorded at
    /// create for the exec gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shells: Vec<(u64, u64)>,
    /// The network guard's kernel fence (cgroups `delete` removes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<crate::netguard::fence::Fence>,
    /// The spec's `poststop` hooks: `delete` runs them once the container is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststop: Vec<oci_spec::runtime::Hook>,
    /// The container's `name=systemd` cgroup on a cgroup v1 host (`delete` removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_cgroup: Option<PathBuf>,
}

impl Meta {
    pub fn path(root: &StateRoot, id: &str) -> PathBuf {
        root.own_dir(id).meta()
    }
    pub fn load(root: &StateRoot, id: &str) -> Result<Meta, StateError> {
        let path = Self::path(root, id);
        let data = fs::read(&path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|source| StateError::Json { path, source })
    }
    pub fn save(&self, root: &StateRoot, id: &str) -> Result<(), StateError> {
        let path = Self::path(root, id);
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec(self).expect("meta serializes");
        fs::write(&tmp, data).map_err(|source| StateError::Io {
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path).map_err(|source| StateError::Io { path, source })
    }
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
/// Hold an exclusive lock on `path` (created if absent) until the returned value drops:
/// serialises commands that change one container's files.
pub fn lock_exclusive(path: &Path) -> io::Result<nix::fcntl::Flock<fs::File>> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e.into())
}

pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// runc's status words.
pub fn status_word(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// The container's status, corrected for a pid that now belongs to another process.
pub fn effective_status(container: &Container, meta: Option<&Meta>) -> ContainerStatus {
    let status = container.status();
    if status == ContainerStatus::Stopped {
        return status;
    }
    if let (Some(pid), Some(want)) = (container.pid(), meta.and_then(|m| m.init_start_time)) {
        if process_start_time(pid.as_raw()) != Some(want) {
            return ContainerStatus::Stopped;
        }
    }
    status
}

/// The JSON `runc state` prints (and each element of `runc list --format json`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct RuncState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

pub fn runc_state(root: &StateRoot, container: &Container) -> RuncState {
    let id = container.id().to_string();
    let meta = Meta::load(root, &id).ok();
    let status = effective_status(container, meta.as_ref());
    let pid = match status {
        ContainerStatus::Stopped => 0,
        _ => container.pid().map(|p| p.as_raw()).unwrap_or(0),
    };
    let bundle = meta
        .as_ref()
        .map(|m| m.bundle.clone())
        .unwrap_or_else(|| container.bundle().clone());
    let rootfs = meta.as_ref().map(|m| m.rootfs.clone()).unwrap_or_default();
    let mut annotations = container.state.annotations.clone().unwrap_or_default();
    if let Some(m) = &meta {
        annotations.extend(m.annotations.clone());
    }
    RuncState {
        oci_version: "1.2.0".to_string(),
        id,
        pid,
        status: status_word(status).to_string(),
        bundle: bundle.display().to_string(),
        rootfs: rootfs.display().to_string(),
        created: container
            .created()
            .map(|c| c.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_default(),
        owner: String::new(),
        annotations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc_rules() {
        assert!(validate_id("abc-1_2+3.4").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "x\n"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn start_time_of_self_is_readable() {
        assert!(process_start_time(std::process::id() as i32).is_some());
        assert!(process_start_time(i32::MAX).is_none());
    }
}
