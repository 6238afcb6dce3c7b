//! Where the cgroup hierarchies are: the host's mounts, a process's cgroups, and the cgroup
//! v2 mount the fence needs (mounted under the runtime root when the host has none).

use std::fs;
use std::path::{Path, PathBuf};

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
    if let Some((m, _, _)) = mounts().into_iter().find(|(_, t, _)| t == "cgroup2") {
        return Ok(m);
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
    Ok(fallback.to_path_buf())
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
    cgroups_of(pid)
        .into_iter()
        .find(|(c, _)| c.is_empty())
        .map(|(_, p)| p)
}

pub(super) fn join(mnt: &Path, rel: &str) -> PathBuf {
    mnt.join(rel.trim_start_matches('/'))
}
