//! What libcontainer 0.7 leaves undone on cgroup v1 hosts, done between `create` and
//! `start` from outside the container:
//!
//! - The spec's cgroup mount is bound read-write whatever its options say, and the
//!   `name=systemd` hierarchy shows the host's root (with `release_agent`): a container could
//!   raise its own limits. runc scopes every hierarchy to the container's cgroup and honours
//!   `ro`. So the container gets its own `name=systemd` cgroup (the runtime joins it while
//!   libcontainer forks, so the init process starts there), and with `ro` every hierarchy is
//!   remounted read-only in the container's mount namespace.
//! - `linux.resources.memory.disableOOMKiller` is never written (`memory.oom_control`).
//!
//! Threat: none from the workload here; its init process waits for `start` and nothing of it
//! runs yet. The mounts are changed in a thread that joins the container's mount namespace.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::path_error::io_err;
use nix::mount::MsFlags;
use oci_spec::runtime::Spec;

const HOST_CGROUP: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupV1Error {
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
}

/// A cgroup v1 (or hybrid) host: no unified hierarchy at /sys/fs/cgroup.
pub fn host_is_v1() -> bool {
    Path::new(HOST_CGROUP).is_dir() && !crate::cgroups::host_is_v2()
}

/// `hierarchy -> path` of `pid` from /proc/PID/cgroup (`memory`, `name=systemd`, …; every
/// controller of a co-mounted line on its own).
fn cgroups_of(pid: i32) -> Result<Vec<(String, String)>, CgroupV1Error> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, p) = (f.next()?, f.next()?, f.next()?);
            Some(
                ctrl.split(',')
                    .filter(|c| !c.is_empty())
                    .map(|c| (c.to_string(), p.to_string()))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect())
}

/// Write `memory.oom_control` of the container's memory cgroup when the spec disables the
/// OOM killer (cgroup v1 only; v2 has no such switch, as under runc).
pub fn apply_oom_control(spec: &Spec, pid: i32) -> Result<(), CgroupV1Error> {
    let disable = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.disable_oom_killer())
        == Some(true);
    if !disable || !host_is_v1() {
        return Ok(());
    }
    let Some((_, path)) = cgroups_of(pid)?.into_iter().find(|(c, _)| c == "memory") else {
        return Ok(());
    };
    let file = Path::new(HOST_CGROUP)
        .join("memory")
        .join(path.trim_start_matches('/'))
        .join("memory.oom_control");
    Ok(fs::write(&file, "1").map_err(io_err(&file))?)
}

/// The spec's cgroup mount destination and whether it asks for read-only.
fn cgroup_mount(spec: &Spec) -> Option<(PathBuf, bool)> {
    spec.mounts().as_ref()?.iter().find_map(|m| {
        (m.typ().as_deref() == Some("cgroup")).then(|| {
            let ro = m
                .options()
                .as_ref()
                .is_some_and(|o| o.iter().any(|x| x == "ro"));
            (m.destination().clone(), ro)
        })
    })
}

/// With `ro` in the spec's cgroup mount, remount each hierarchy in the container read-only
/// (the tmpfs holding them stays as runc leaves it).
pub fn fix_mounts(spec: &Spec, pid: i32) -> Result<(), CgroupV1Error> {
    let Some((dest, true)) = cgroup_mount(spec) else {
        return Ok(());
    };
    if !host_is_v1() {
        return Ok(());
    }
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
    let ns = fs::File::open(&ns_path).map_err(io_err(&ns_path))?;
    // A container in the runtime's own mount namespace (or one joined by path) would have
    // the host's hierarchies remounted: only a namespace of its own is changed.
    use std::os::unix::fs::MetadataExt;
    let mine = Path::new("/proc/self/ns/mnt");
    let (theirs, ours) = (
        ns.metadata().map_err(io_err(&ns_path))?,
        fs::metadata(mine).map_err(io_err(mine))?,
    );
    let own_ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| {
            n.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Mount && n.path().is_none()
            })
        });
    if !own_ns || (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        tracing::warn!(
            "cgroup v1 mounts left as they are: the container has no mount namespace of its own"
        );
        return Ok(());
    }
    std::thread::scope(|s| {
        s.spawn(|| in_namespace(&ns, &dest))
            .join()
            .unwrap_or_else(|_| {
                Err(CgroupV1Error::Sys {
                    what: "cgroup mount thread".into(),
                    source: nix::Error::EIO,
                })
            })
    })
}

/// The runtime process inside the container's `name=systemd` cgroup while libcontainer
/// forks the container: the init process inherits it, and libcontainer then mounts (or
/// roots the cgroup namespace at) the container's own cgroup instead of the host's root.
pub struct SystemdJoin {
    /// The container's cgroup in the host's hierarchy (`delete` removes it).
    pub dir: PathBuf,
    previous: PathBuf,
    /// The directories this create made (the cgroup and new parents), for a failed create.
    pub made: crate::cgroups::Parents,
}

impl SystemdJoin {
    /// Create the container's `name=systemd` cgroup and move this process into it. `None`
    /// on hosts without the hierarchy or for a relative cgroups path.
    pub fn enter(spec: &Spec) -> Result<Option<SystemdJoin>, CgroupV1Error> {
        let hierarchy = Path::new(HOST_CGROUP).join("systemd");
        // Without the host's root the hierarchy is not the runtime's to write (rootless
        // engines skip it too).
        if cgroup_mount(spec).is_none()
            || !host_is_v1()
            || !hierarchy.join("cgroup.procs").exists()
            || crate::privilege::current().rootless()
        {
            return Ok(None);
        }
        let Some(target) = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .filter(|p| p.is_absolute())
        else {
            return Ok(None);
        };
        // Plain names only: `cgroups::prepare` refused `..` before this runs.
        let me = std::process::id() as i32;
        let Some((_, previous)) = cgroups_of(me)?
            .into_iter()
            .find(|(c, _)| c == "name=systemd")
        else {
            return Ok(None);
        };
        let dir = hierarchy.join(target.strip_prefix("/").unwrap_or(&target));
        let made =
            crate::cgroups::make_dirs(&hierarchy, target.strip_prefix("/").unwrap_or(&target))
                .map_err(|(path, source)| crate::path_error::PathError { path, source })?;
        let tasks = dir.join("tasks");
        if let Err(e) = join_this_thread(&tasks) {
            made.remove();
            return Err(io_err(&tasks)(e).into());
        }
        Ok(Some(SystemdJoin {
            dir,
            previous: hierarchy.join(previous.trim_start_matches('/')),
            made,
        }))
    }

    /// Move this thread back where it was.
    pub fn leave(&self) {
        let tasks = self.previous.join("tasks");
        if let Err(e) = join_this_thread(&tasks) {
            tracing::warn!("{}: {e}", tasks.display());
        }
    }
}

/// Move the calling thread (the one that forks the container, or the helper joining the
/// container's accounting cgroups) into the cgroup whose `tasks` file this is. "0" in `tasks` is the only move the kernel makes without its global
/// threadgroup lock, whose first taking after a quiet spell waits out an RCU grace period
/// (5–15 ms here); a pid in `cgroup.procs` would pay it on every create, twice.
pub(crate) fn join_this_thread(tasks: &Path) -> std::io::Result<()> {
    fs::write(tasks, "0")
}

/// In the container's mount namespace: remount each hierarchy under `dest` read-only.
fn in_namespace(ns: &fs::File, dest: &Path) -> Result<(), CgroupV1Error> {
    let sys = |what: &str| {
        let what = what.to_string();
        move |source| CgroupV1Error::Sys { what, source }
    };
    // setns(CLONE_NEWNS) needs a thread that shares no filesystem context.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(sys("unshare(CLONE_FS)"))?;
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(sys("joining the container's mount namespace"))?;
    use std::os::unix::fs::MetadataExt;
    let top = fs::metadata(dest).map_err(io_err(dest))?;
    for e in fs::read_dir(dest).map_err(io_err(dest))? {
        let e = e.map_err(io_err(dest))?;
        let path = e.path();
        let md = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        // Co-mount links (cpu -> cpu,cpuacct) and anything not mounted stay as they are.
        if md.file_type().is_symlink() || md.dev() == top.dev() {
            continue;
        }
        remount_ro(&path)?;
    }
    Ok(())
}

/// Remount a mount read-only, keeping its other flags (locked ones must be kept).
fn remount_ro(path: &Path) -> Result<(), CgroupV1Error> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|source| CgroupV1Error::Sys {
        what: format!("statvfs {}", path.display()),
        source,
    })?;
    use nix::sys::statvfs::FsFlags;
    let keep = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    for (f, m) in keep {
        if st.flags().contains(f) {
            flags |= m;
        }
    }
    nix::mount::mount(None::<&str>, path, None::<&str>, flags, None::<&str>).map_err(|source| {
        CgroupV1Error::Sys {
            what: format!("remounting {} read-only", path.display()),
            source,
        }
    })
}

/// Remove the `name=systemd` cgroup `fix_mounts` made (empty once the container is gone).
pub fn remove_systemd_cgroup(dir: &Path) {
    if dir.starts_with(Path::new(HOST_CGROUP).join("systemd")) {
        let _ = fs::remove_dir(dir);
    }
}
