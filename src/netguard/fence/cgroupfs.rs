//! Where the cgroup hierarchies are: the host's mounts, a process's cgroups, and the cgroup
//! v2 mount the fence needs (mounted under the runtime root when the host has none).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::FenceError;
use crate::path_error::io_err;

/// One line of /proc/PID/mountinfo: mount point, filesystem type, super options.
pub(super) fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mnt = pre.split_whitespace().nth(4)?;
            let mut post = post.split_whitespace();
            let fstype = post.next()?.to_string();
            let opts = post.nth(1).unwrap_or_default().to_string();
            Some((PathBuf::from(unescape(mnt)), fstype, opts))
        })
        .collect()
}

/// The cgroup filesystems' mounts (`cgroup`, `cgroup2`), read once per process: one create
/// looks for them up to three times, and the kernel writes out the whole mount table for each
/// read. The hierarchies are not remounted while a runtime command runs.
pub(super) fn cgroup_mounts() -> &'static [(PathBuf, String, String)] {
    static MOUNTS: OnceLock<Vec<(PathBuf, String, String)>> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        mounts()
            .into_iter()
            .filter(|(_, t, _)| t == "cgroup" || t == "cgroup2")
            .collect()
    })
}

/// mountinfo escapes spaces and a few other bytes as octal.
pub(super) fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let oct: String = chars.by_ref().take(3).collect();
            if let Ok(v) = u8::from_str_radix(&oct, 8) {
                out.push(v as char);
                continue;
            }
            out.push(c);
            out.push_str(&oct);
        } else {
            out.push(c);
        }
    }
    out
}

/// The cgroup v2 mount point; one is mounted under `fallback` when the host has none.
pub(super) fn v2_mount(fallback: &Path) -> Result<PathBuf, FenceError> {
    // The fallback mounted by this process is not in the mount table read before.
    static MOUNTED: OnceLock<PathBuf> = OnceLock::new();
    // Where hosts mount it (hybrid v1, then v2), checked by filesystem type before the mount
    // table is read.
    for usual in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if is_fs(Path::new(usual), nix::sys::statfs::CGROUP2_SUPER_MAGIC) {
            return Ok(PathBuf::from(usual));
        }
    }
    if let Some((m, _, _)) = cgroup_mounts().iter().find(|(_, t, _)| t == "cgroup2") {
        return Ok(m.clone());
    }
    if let Some(m) = MOUNTED.get() {
        return Ok(m.clone());
    }
    fs::create_dir_all(fallback).map_err(io_err(fallback))?;
    nix::mount::mount(
        Some("cgroup2"),
        fallback,
        Some("cgroup2"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|source| FenceError::Mount {
        path: fallback.to_path_buf(),
        source,
    })?;
    Ok(MOUNTED.get_or_init(|| fallback.to_path_buf()).clone())
}

/// Whether `path` is the root or inside of a filesystem of type `magic`.
pub(super) fn is_fs(path: &Path, magic: nix::sys::statfs::FsType) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == magic)
}

/// Each controller-or-hierarchy → path line of /proc/PID/cgroup; v2 is the empty name.
pub(super) fn cgroups_of(pid: &str) -> Vec<(String, String)> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctl.to_string(), path.to_string()))
        })
        .collect()
}

pub(super) fn v2_path_of(pid: &str) -> Option<String> {
    v2_path_in(&cgroups_of(pid))
}

/// The v2 line of a `cgroups_of` listing.
pub(super) fn v2_path_in(cgroups: &[(String, String)]) -> Option<String> {
    cgroups
        .iter()
        .find(|(c, _)| c.is_empty())
        .map(|(_, p)| p.clone())
}

pub(super) fn join(mnt: &Path, rel: &str) -> PathBuf {
    mnt.join(rel.trim_start_matches('/'))
}
