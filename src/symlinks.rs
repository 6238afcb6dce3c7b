//! Symlink guards: configuration directories whose links must point exactly into a
//! target directory, validated and frozen between `create` and `start`.
//!
//! Order closes the time-of-check window: the read-only bind of the directory onto itself is
//! already part of the container's mounts (the layout gives a guarded directory no `w`, so no
//! Landlock write either); the immutable attribute is set next; only then are the links read,
//! through the container's own root (`/proc/<init>/root`, resolved without leaving it). A
//! link swapped before the attribute lands is seen by the check; none can be swapped after.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::tree::resolve_in;
use crate::policy::model::SymlinkGuard;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("symlink guard {dir}: {dir} is a symlink, not a directory")]
    DirIsLink { dir: String },
    #[error("symlink guard {dir}: {dir} is not a directory")]
    NotDir { dir: String },
    #[error("symlink guard {dir}: {dir} does not exist (required: true)")]
    Missing { dir: String },
    #[error("symlink guard {dir}: link {link} points to {found:?}, expected {expected:?}")]
    WrongTarget {
        dir: String,
        link: String,
        found: String,
        expected: String,
    },
    #[error("symlink guard {dir}: reading it: {msg}")]
    Read { dir: String, msg: String },
}

/// How far a guard got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Links validated and the directory made immutable.
    Hardened,
    /// Links validated; a step of the freezing failed (`detail` says which).
    Partial,
    /// Nothing to guard (`required: false` and no directory).
    Skipped,
}

impl Stage {
    /// The stage as an audit event's decision.
    pub fn decision(self) -> crate::audit::Decision {
        match self {
            Stage::Hardened => crate::audit::Decision::Hardened,
            Stage::Partial => crate::audit::Decision::Partial,
            Stage::Skipped => crate::audit::Decision::Skipped,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Hardened => "hardened",
            Stage::Partial => "partial",
            Stage::Skipped => "skipped",
        }
    }
}

/// What happened to one guard, for the log, the state annotations and the audit stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub dir: String,
    pub outcome: Stage,
    /// Which step failed and why (`partial`), or why nothing was done (`skipped`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Host path, device and inode whose immutable attribute this runtime set (to clear it
    /// at `delete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<(PathBuf, u64, u64)>,
}

impl Outcome {
    pub fn annotation_value(&self) -> String {
        if self.detail.is_empty() {
            self.outcome.as_str().to_string()
        } else {
            format!("{}: {}", self.outcome.as_str(), self.detail)
        }
    }
}

const FS_IMMUTABLE_FL: libc::c_int = 0x10;

fn get_flags(fd: RawFd) -> Result<libc::c_int, nix::Error> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int into `flags`.
    let rc = unsafe { libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut flags) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(flags)
}

fn set_flags(fd: RawFd, flags: libc::c_int) -> Result<(), nix::Error> {
    // SAFETY: FS_IOC_SETFLAGS reads one int from `flags`.
    let rc = unsafe { libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &flags) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

fn open_dir(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(p)
}

/// Set the immutable attribute on the host path of the guarded directory, after checking it
/// is the inode the container sees (`dev`, `ino`).
fn make_immutable(host: &Path, dev: u64, ino: u64) -> Result<bool, String> {
    let f = open_dir(host).map_err(|e| format!("immutable: open {}: {e}", host.display()))?;
    let md = f.metadata().map_err(|e| format!("immutable: {e}"))?;
    if (md.dev(), md.ino()) != (dev, ino) {
        return Err("immutable: the host path is not the directory the container sees".into());
    }
    let flags = get_flags(f.as_raw_fd()).map_err(|e| format!("immutable: {e}"))?;
    if flags & FS_IMMUTABLE_FL != 0 {
        // Already immutable: not ours to clear later.
        return Ok(false);
    }
    set_flags(f.as_raw_fd(), flags | FS_IMMUTABLE_FL).map_err(|e| match e {
        // The kernel checks CAP_LINUX_IMMUTABLE in the initial user namespace only: uid 0 of
        // a rootless engine's namespace never has it.
        nix::errno::Errno::EPERM if crate::privilege::current().rootless() => {
            "immutable: EPERM: setting it needs CAP_LINUX_IMMUTABLE in the host's user \
             namespace, which a runtime without the host's root lacks (the links are \
             validated, not frozen)"
                .to_string()
        }
        e => format!("immutable: {e}"),
    })?;
    Ok(true)
}

/// Clear what `make_immutable` set (`delete`, or a failed `create`). Checked by inode, so a
/// directory that replaced it is never touched.
pub fn clear_immutable(host: &Path, dev: u64, ino: u64) {
    let Ok(f) = open_dir(host) else { return };
    let Ok(md) = f.metadata() else { return };
    if (md.dev(), md.ino()) != (dev, ino) {
        return;
    }
    if let Ok(flags) = get_flags(f.as_raw_fd()) {
        if flags & FS_IMMUTABLE_FL != 0 {
            let _ = set_flags(f.as_raw_fd(), flags & !FS_IMMUTABLE_FL);
        }
    }
}

/// Check every link in `dir` (an O_PATH handle inside the container's root).
fn validate_links(g: &SymlinkGuard, dir_fd: &std::fs::File) -> Result<(), GuardError> {
    let read_err = |e: std::io::Error| GuardError::Read {
        dir: g.dir.clone(),
        msg: e.to_string(),
    };
    let listing =
        std::fs::read_dir(format!("/proc/self/fd/{}", dir_fd.as_raw_fd())).map_err(read_err)?;
    let target_dir = g.target_dir.trim_end_matches('/');
    for entry in listing {
        let entry = entry.map_err(read_err)?;
        if !entry.file_type().map_err(read_err)?.is_symlink() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let found = std::fs::read_link(entry.path()).map_err(read_err)?;
        let expected = format!("{target_dir}/{name}");
        if found.as_os_str() != expected.as_str() {
            return Err(GuardError::WrongTarget {
                dir: g.dir.clone(),
                link: format!("{}/{name}", g.dir.trim_end_matches('/')),
                found: found.to_string_lossy().into_owned(),
                expected,
            });
        }
    }
    Ok(())
}

/// Validate and freeze one guard. `container_root` is `/proc/<init>/root`; `host_rootfs` the
/// image root on the host (for the immutable attribute, which a read-only mount refuses).
pub fn harden(
    g: &SymlinkGuard,
    container_root: &Path,
    host_rootfs: &Path,
) -> Result<Outcome, GuardError> {
    let rel = Path::new(g.dir.trim_start_matches('/'));
    // The magic link is followed here, once, on purpose: it is the container's root.
    let root_fd = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(container_root)
    }
    .map_err(|e| GuardError::Read {
        dir: g.dir.clone(),
        msg: format!("{}: {e}", container_root.display()),
    })?;
    let root = pathrs::Root::from_fd(root_fd);
    let handle = match root.resolve_nofollow(rel) {
        Ok(h) => h,
        Err(_) if !g.required.unwrap_or(true) => {
            return Ok(Outcome {
                dir: g.dir.clone(),
                outcome: Stage::Skipped,
                detail: "directory does not exist (required: false)".into(),
                immutable: None,
            })
        }
        Err(_) => return Err(GuardError::Missing { dir: g.dir.clone() }),
    };
    let dir_fd = std::fs::File::from(std::os::fd::OwnedFd::from(handle));
    let md = dir_fd.metadata().map_err(|e| GuardError::Read {
        dir: g.dir.clone(),
        msg: e.to_string(),
    })?;
    if md.file_type().is_symlink() {
        return Err(GuardError::DirIsLink { dir: g.dir.clone() });
    }
    if !md.is_dir() {
        return Err(GuardError::NotDir { dir: g.dir.clone() });
    }

    let mut failed = Vec::new();
    let mut immutable = None;
    match resolve_in(host_rootfs, rel) {
        Some(host) => match make_immutable(&host, md.dev(), md.ino()) {
            Ok(true) => immutable = Some((host, md.dev(), md.ino())),
            Ok(false) => {}
            Err(e) => failed.push(e),
        },
        None => failed.push("immutable: not found in the image root (a volume?)".into()),
    }
    if let Err(e) = validate_links(g, &dir_fd) {
        if let Some((h, d, i)) = &immutable {
            clear_immutable(h, *d, *i);
        }
        return Err(e);
    }
    Ok(Outcome {
        dir: g.dir.clone(),
        outcome: if failed.is_empty() {
            Stage::Hardened
        } else {
            Stage::Partial
        },
        detail: failed.join("; "),
        immutable,
    })
}
