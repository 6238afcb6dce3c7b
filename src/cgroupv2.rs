//! What libcontainer 0.7 leaves undone on cgroup v2 hosts, done before it creates the
//! container's cgroup.
//!
//! - libcgroups creates each missing component of the cgroup path with `mkdir` and fails on
//!   `EEXIST`, so two containers created at once on a fresh node (the first pods of a
//!   Kubernetes node, `podman run` in parallel) race for the shared parent
//!   (`/sys/fs/cgroup/nemosandbox`) and one of them fails. The parents are created here first,
//!   tolerating each other; libcgroups then only creates the container's own leaf.

use std::fs;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

const HOST_CGROUP: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct CgroupV2Error {
    path: PathBuf,
    source: std::io::Error,
}

/// Is this host on the unified hierarchy alone?
pub fn host_is_v2() -> bool {
    Path::new(HOST_CGROUP).join("cgroup.controllers").exists()
}

/// Create the parents of the spec's (absolute, cgroupfs) cgroups path on a v2 host. Paths
/// that are relative, systemd slices or not plain names are left to libcontainer.
pub fn prepare_parents(spec: &Spec, systemd: bool) -> Result<(), CgroupV2Error> {
    if systemd || !host_is_v2() {
        return Ok(());
    }
    let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
        return Ok(());
    };
    let Some(parent) = plain_parent(&path) else {
        return Ok(());
    };
    let dir = Path::new(HOST_CGROUP).join(parent);
    fs::create_dir_all(&dir).map_err(|source| CgroupV2Error { path: dir, source })
}

/// The parent of an absolute path of plain names, without the leading `/`; `None` for a
/// path directly under the root or one with `..`, `.` or a prefix.
fn plain_parent(path: &Path) -> Option<PathBuf> {
    let mut parts = path.components();
    if parts.next() != Some(Component::RootDir) {
        return None;
    }
    let names: Vec<&std::ffi::OsStr> = parts
        .map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if names.len() < 2 {
        return None;
    }
    Some(names[..names.len() - 1].iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_of_plain_absolute_paths_only() {
        assert_eq!(
            plain_parent(Path::new("/nemosandbox/c1")),
            Some(PathBuf::from("nemosandbox"))
        );
        assert_eq!(
            plain_parent(Path::new("/kubepods/burstable/pod1/c1")),
            Some(PathBuf::from("kubepods/burstable/pod1"))
        );
        assert_eq!(plain_parent(Path::new("/c1")), None);
        assert_eq!(plain_parent(Path::new("nemosandbox/c1")), None);
        assert_eq!(plain_parent(Path::new("/a/../../etc/c1")), None);
        assert_eq!(plain_parent(Path::new("system.slice:nemo:c1")), None);
    }
}
