//! The container's cgroup path, checked and prepared before libcontainer creates the cgroup.
//!
//! - libcontainer 0.7 takes `linux.cgroupsPath` as given. A bundle could name `..` (on v2,
//!   libcgroups then creates directories anywhere on the host as root), the root, or a cgroup
//!   that already holds other processes (a service's, an engine's): the container would join
//!   it, `update` would set its limits and `delete` would kill everything in it. runc keeps the
//!   path below the hierarchy and refuses a populated cgroup; so does this module.
//! - libcgroups creates each missing component on v2 with `mkdir` and fails on `EEXIST`, so
//!   two containers created at once on a fresh node race for their shared parent
//!   (`/sys/fs/cgroup/nemosandbox`) and one of them fails. The parents are created here first,
//!   tolerating each other; libcgroups then only creates the container's own leaf. Parents
//!   created for a container whose create fails are removed again.

use std::fs;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

const HOST_CGROUP: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupPathError {
    #[error("linux.cgroupsPath {0:?}: only plain names may follow the leading / (no `.` or `..`), and at least one")]
    NotPlain(PathBuf),
    #[error("linux.cgroupsPath {0:?}: this cgroup already holds processes; a container's cgroup must be its own")]
    Populated(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The OOM-kill count in `file` (`oom_kill` of memory.events or memory.oom_control); 0 when
/// unreadable.
pub fn oom_kills(file: &Path) -> u64 {
    fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Is this host on the unified hierarchy alone?
pub fn host_is_v2() -> bool {
    Path::new(HOST_CGROUP).join("cgroup.controllers").exists()
}

/// The parent directories this create made; `remove` takes them away again after a failure.
#[derive(Debug, Default)]
pub struct Parents {
    created: Vec<PathBuf>,
}

impl Parents {
    /// Remove the parents this create made, deepest first. One that meanwhile holds another
    /// container's cgroup is not empty and stays.
    pub fn remove(&self) {
        for dir in self.created.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Check the spec's cgroups path and, on a v2 host, create its parents. Systemd slices
/// (`slice:prefix:name` under `--systemd-cgroup`) are systemd's to place.
pub fn prepare(spec: &Spec, systemd: bool) -> Result<Parents, CgroupPathError> {
    let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
        return Ok(Parents::default());
    };
    if systemd && !path.is_absolute() {
        return Ok(Parents::default());
    }
    let names = plain_names(&path).ok_or_else(|| CgroupPathError::NotPlain(path.clone()))?;
    if !path.is_absolute() {
        // Relative to the runtime's own cgroup, which libcontainer resolves: checked for
        // `..` above, nothing to prepare.
        return Ok(Parents::default());
    }
    let rel: PathBuf = names.iter().collect();
    let v2 = host_is_v2();
    if populated(&rel, v2) {
        return Err(CgroupPathError::Populated(path));
    }
    // Without root the parents cannot be made; libcontainer's rootless manager leaves the
    // process in the caller's cgroup instead.
    if !v2 || crate::privilege::current().rootless() {
        return Ok(Parents::default());
    }
    let parent: PathBuf = names[..names.len() - 1].iter().collect();
    make_dirs(Path::new(HOST_CGROUP), &parent)
        .map_err(|(path, source)| CgroupPathError::Io { path, source })
}

/// `mkdir -p base/rel`, tolerating directories that exist or appear meanwhile, and
/// remembering the ones made here. On failure, those are removed again.
pub fn make_dirs(base: &Path, rel: &Path) -> Result<Parents, (PathBuf, std::io::Error)> {
    let mut made = Parents::default();
    let mut dir = base.to_path_buf();
    for name in rel.components() {
        dir.push(name);
        match fs::create_dir(&dir) {
            Ok(()) => made.created.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                made.remove();
                return Err((dir, e));
            }
        }
    }
    Ok(made)
}

/// The names of a path made of plain names only (after an optional leading `/`); `None`
/// for `.`, `..`, a prefix, or no name at all.
fn plain_names(path: &Path) -> Option<Vec<&std::ffi::OsStr>> {
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter(|c| *c != Component::RootDir)
        .map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!names.is_empty()).then_some(names)
}

/// Does the cgroup at `rel` exist with processes in it or below it, in any hierarchy?
fn populated(rel: &Path, v2: bool) -> bool {
    let events_say = |dir: &Path| {
        fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|e| e.lines().any(|l| l == "populated 1"))
    };
    if v2 {
        return events_say(&Path::new(HOST_CGROUP).join(rel));
    }
    let Ok(hierarchies) = fs::read_dir(HOST_CGROUP) else {
        return false;
    };
    hierarchies.filter_map(|h| h.ok()).any(|h| {
        let dir = h.path().join(rel);
        events_say(&dir) || has_tasks(&dir)
    })
}

/// Processes in a v1 cgroup directory or any directory below it.
fn has_tasks(dir: &Path) -> bool {
    if fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()) {
        return true;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .any(|e| has_tasks(&e.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &str) -> Option<Vec<String>> {
        plain_names(Path::new(p))
            .map(|v| v.iter().map(|n| n.to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn only_plain_names_pass() {
        assert_eq!(
            names("/nemosandbox/c1"),
            Some(vec!["nemosandbox".into(), "c1".into()])
        );
        assert_eq!(
            names("/kubepods/burstable/pod1/c1").map(|v| v.len()),
            Some(4)
        );
        assert_eq!(names("nemosandbox/c1").map(|v| v.len()), Some(2));
        assert_eq!(names("/c1"), Some(vec!["c1".into()]));
        assert_eq!(names("/"), None);
        assert_eq!(names(""), None);
        assert_eq!(names("/a/../../etc/c1"), None);
        assert_eq!(names("/../../../tmp/x"), None);
        assert_eq!(names("./c1"), None);
    }
}
