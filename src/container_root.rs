//! Looking inside a container's root (an image's rootfs, or a live container's
//! `/proc/PID/root`) without leaving it: every lookup is the kernel's (pathrs, `openat2` with
//! `RESOLVE_IN_ROOT`), so an absolute link or `..` planted by the workload resolves inside the
//! root, and types are checked on the handle before anything is opened for reading (a FIFO
//! would hang the runtime, opening a device runs its driver). The layout planner, the network
//! guard's binary identities and the exec gate all look through this one type, and share one
//! `#!` parser that follows `#!/usr/bin/env NAME` to the program the kernel ends up running.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::FileStat;
use pathrs::flags::OpenFlags;

use crate::executor::DEFAULT_PATH;

/// A container's root, opened once.
#[derive(Debug)]
pub struct ContainerRoot {
    root: pathrs::Root,
}

impl ContainerRoot {
    /// Open `dir` as the root. `/proc/PID/root` is a magic link pathrs will not open itself,
    /// so the directory is opened first and handed over.
    pub fn open(dir: &Path) -> Option<ContainerRoot> {
        use std::os::unix::fs::OpenOptionsExt;
        // A path handle of a directory: nothing is opened for reading (a FIFO would block).
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .ok()?;
        Some(ContainerRoot {
            root: pathrs::Root::from_fd(fd),
        })
    }

    /// The underlying pathrs root, for callers with lookups of their own.
    pub fn pathrs(&self) -> &pathrs::Root {
        &self.root
    }

    /// An `O_PATH` handle of what `path` names inside the root (`follow`: the last component
    /// too). The kernel resolves it (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`,
    /// what pathrs asks for), retried while a rename elsewhere on the system makes it refuse
    /// (EAGAIN). Called here rather than through pathrs because pathrs turns every miss into
    /// an error naming the root through a checked /proc lookup (eight more syscalls), and the
    /// layout planner and the guard's binary identities probe many paths an image does not
    /// have. Without openat2 (before Linux 5.6) pathrs resolves in user space.
    pub fn handle(&self, path: &Path, follow: bool) -> Option<OwnedFd> {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        // The empty path names the root itself.
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        const RETRIES: usize = 128;
        let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
        if !follow {
            flags |= OFlag::O_NOFOLLOW;
        }
        let how = || {
            OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
        };
        let dir = self.root.as_fd().as_raw_fd();
        for _ in 0..RETRIES {
            match nix::fcntl::openat2(dir, path, how()) {
                // SAFETY: openat2 returned a new descriptor that nothing else owns.
                Ok(fd) => return Some(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(Errno::EAGAIN) => continue,
                // A miss, or openat2 itself refused (an old kernel, or a seccomp profile
                // around the runtime that answers it with any errno): the latter must not
                // read as "nothing there", which would drop the policy's rules for the path.
                Err(_) if openat2_refused() => return self.handle_by_pathrs(path, follow),
                Err(_) => return None,
            }
        }
        None
    }

    fn handle_by_pathrs(&self, path: &Path, follow: bool) -> Option<OwnedFd> {
        let h = if follow {
            self.root.resolve(path)
        } else {
            self.root.resolve_nofollow(path)
        };
        h.ok().map(OwnedFd::from)
    }

    /// `stat` of what `path` names, following links (inside the root).
    pub fn stat(&self, path: &Path) -> Option<FileStat> {
        let h = self.handle(path, true)?;
        nix::sys::stat::fstat(h.as_raw_fd()).ok()
    }

    /// `lstat` of `path`: its last component is not followed.
    pub fn lstat(&self, path: &Path) -> Option<FileStat> {
        let h = self.handle(path, false)?;
        nix::sys::stat::fstat(h.as_raw_fd()).ok()
    }

    /// The (device, inode) `path` names, following links.
    pub fn file_id(&self, path: &Path) -> Option<(u64, u64)> {
        self.stat(path).map(|st| (st.st_dev, st.st_ino))
    }

    /// Whether `path` itself (not followed) is a regular file with an execute bit.
    pub fn is_executable(&self, path: &Path) -> bool {
        self.lstat(path)
            .is_some_and(|st| kind(&st) == libc::S_IFREG && st.st_mode & 0o111 != 0)
    }

    /// Whether `path` itself (not followed) is a directory.
    pub fn is_dir(&self, path: &Path) -> bool {
        self.lstat(path)
            .is_some_and(|st| kind(&st) == libc::S_IFDIR)
    }

    /// Whether the mount `path` lies on is read-only (`None`: nothing there).
    pub fn read_only_mount(&self, path: &Path) -> Option<bool> {
        let h = self.handle(path, true)?;
        let v = nix::sys::statvfs::fstatvfs(&h).ok()?;
        Some(v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    }

    /// The target of the link `path`, if it is one.
    pub fn readlink(&self, path: &Path) -> Option<PathBuf> {
        let h = self.handle(path, false)?;
        nix::fcntl::readlinkat(Some(h.as_raw_fd()), "")
            .ok()
            .map(PathBuf::from)
    }

    /// The first `cap` bytes of the regular file `path` names. The type is checked on the
    /// handle, and the file reopened non-blocking: the name can be swapped in between.
    pub fn read_regular(&self, path: &Path, cap: u64) -> Option<Vec<u8>> {
        let h = pathrs::Handle::from_fd(self.handle(path, true)?);
        let st = nix::sys::stat::fstat(h.as_fd().as_raw_fd()).ok()?;
        if kind(&st) != libc::S_IFREG {
            return None;
        }
        let f = h
            .reopen(OpenFlags::O_RDONLY | OpenFlags::O_NONBLOCK | OpenFlags::O_NOCTTY)
            .ok()?;
        if nix::sys::stat::fstat(f.as_raw_fd()).is_ok_and(|st| kind(&st) != libc::S_IFREG) {
            return None;
        }
        let mut buf = Vec::new();
        f.take(cap).read_to_end(&mut buf).ok()?;
        Some(buf)
    }

    /// Names directly beneath the directory `dir` names.
    pub fn list_dir(&self, dir: &Path) -> Vec<String> {
        let Some(h) = self.handle(dir, true) else {
            return Vec::new();
        };
        std::fs::read_dir(format!("/proc/self/fd/{}", h.as_raw_fd()))
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The host path of what `path` names in the root (as the kernel resolved it).
    pub fn host_path(&self, path: &Path) -> Option<PathBuf> {
        let h = self.handle(path, true)?;
        std::fs::read_link(format!("/proc/self/fd/{}", h.as_raw_fd())).ok()
    }
}

/// Whether `openat2` fails even on the plainest lookup (pathrs's own test, one syscall). A
/// refusal is remembered; success is not, since a seccomp filter can come later.
fn openat2_refused() -> bool {
    static REFUSED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if REFUSED.get().is_some() {
        return true;
    }
    let how =
        nix::fcntl::OpenHow::new().flags(nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC);
    match nix::fcntl::openat2(libc::AT_FDCWD, ".", how) {
        Ok(fd) => {
            let _ = nix::unistd::close(fd);
            false
        }
        Err(_) => {
            let _ = REFUSED.set(());
            true
        }
    }
}

fn kind(st: &FileStat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// What a script's `#!` line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    /// The program the kernel runs: the first word of the line.
    pub interpreter: String,
    /// With `env` as the interpreter: the command env looks up on PATH (the first word that is
    /// not an option; `env -S python3 -u` names python3).
    pub via_env: Option<String>,
}

impl Shebang {
    /// The places, in lookup order, where `env` looks for `via_env` with the default PATH (a
    /// script's own PATH is the workload's to set; the default is what images and the runtime
    /// use).
    pub fn env_candidates(&self) -> Vec<PathBuf> {
        match &self.via_env {
            Some(name) if !name.contains('/') => DEFAULT_PATH
                .split(':')
                .map(|d| Path::new(d).join(name))
                .collect(),
            Some(path) => vec![PathBuf::from(path)],
            None => vec![],
        }
    }
}

/// The `#!` line of `head` (a file's first bytes), if it has one.
pub fn shebang(head: &[u8]) -> Option<Shebang> {
    let rest = head.strip_prefix(b"#!")?;
    let line = String::from_utf8_lossy(rest.split(|b| *b == b'\n').next()?).into_owned();
    let mut words = line.split_whitespace();
    let interpreter = words.next()?.to_string();
    let via_env = if Path::new(&interpreter)
        .file_name()
        .is_some_and(|n| n == "env")
    {
        Some(words.find(|w| !w.starts_with('-'))?.to_string())
    } else {
        None
    };
    Some(Shebang {
        interpreter,
        via_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_stay_inside_the_root_and_refuse_what_is_not_a_regular_file() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = crate::testutil::TempDir::new("container-root");
        let r = dir.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join("bin/tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(r.join("data"), b"plain").unwrap();
        // Absolute and `..` links resolve inside the root, never to the host's files.
        symlink("/bin/tool", r.join("abs")).unwrap();
        symlink("../../../../etc/hostname", r.join("up")).unwrap();
        nix::unistd::mkfifo(
            &r.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let root = ContainerRoot::open(r).unwrap();
        assert!(root.is_executable(Path::new("/bin/tool")));
        assert!(
            !root.is_executable(Path::new("/abs")),
            "a link is not followed"
        );
        assert!(!root.is_executable(Path::new("/data")));
        assert_eq!(
            root.file_id(Path::new("/abs")),
            root.file_id(Path::new("/bin/tool"))
        );
        assert_eq!(root.read_regular(Path::new("/up"), 64), None);
        assert_eq!(
            root.read_regular(Path::new("/abs"), 64).as_deref(),
            Some(&b"#!/bin/sh\n"[..])
        );
        assert_eq!(
            root.read_regular(Path::new("/data"), 3).as_deref(),
            Some(&b"pla"[..])
        );
        assert_eq!(
            root.read_regular(Path::new("/fifo"), 64),
            None,
            "never a FIFO"
        );
        assert!(root.is_dir(Path::new("/bin")));
        assert_eq!(
            root.readlink(Path::new("/abs")),
            Some(PathBuf::from("/bin/tool"))
        );
        let mut names = root.list_dir(Path::new("/"));
        names.sort();
        assert_eq!(names, ["abs", "bin", "data", "fifo", "up"]);
        assert_eq!(
            root.host_path(Path::new("/abs")),
            Some(std::fs::canonicalize(r.join("bin/tool")).unwrap())
        );
    }

    #[test]
    fn lookups_work_where_a_seccomp_profile_refuses_openat2() {
        use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
        use std::os::unix::fs::symlink;
        let dir = crate::testutil::TempDir::new("container-root-no-openat2");
        let r = dir.path().to_path_buf();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/tool"), b"tool").unwrap();
        symlink("/bin/tool", r.join("abs")).unwrap();
        symlink("../../../../etc/hostname", r.join("up")).unwrap();
        // A filter on one thread only (no TSYNC): the test harness keeps openat2.
        let seen = std::thread::spawn(move || {
            let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).unwrap();
            let openat2 = ScmpSyscall::from_name("openat2").unwrap();
            ctx.add_rule(ScmpAction::Errno(libc::EPERM), openat2)
                .unwrap();
            ctx.load().unwrap();
            let root = ContainerRoot::open(&r).unwrap();
            (
                root.stat(Path::new("/bin/tool")).is_some(),
                root.read_regular(Path::new("/abs"), 16),
                root.read_regular(Path::new("/up"), 16),
                root.host_path(Path::new("/abs")),
                root.stat(Path::new("/missing")).is_some(),
            )
        })
        .join()
        .unwrap();
        assert!(seen.0, "an existing file is found, not taken as absent");
        assert_eq!(
            seen.1.as_deref(),
            Some(&b"tool"[..]),
            "links resolve inside"
        );
        assert_eq!(seen.2, None, "and never leave the root");
        assert_eq!(
            seen.3,
            Some(std::fs::canonicalize(dir.path().join("bin/tool")).unwrap())
        );
        assert!(!seen.4);
    }

    #[test]
    fn shebang_lines_parse_like_the_kernel_and_env_read_them() {
        let s = shebang(b"#!/bin/sh -e\necho").unwrap();
        assert_eq!((s.interpreter.as_str(), s.via_env), ("/bin/sh", None));
        let s = shebang(b"#!/usr/bin/env python3\nprint()").unwrap();
        assert_eq!(s.interpreter, "/usr/bin/env");
        assert_eq!(s.via_env.as_deref(), Some("python3"));
        assert_eq!(s.env_candidates()[3], PathBuf::from("/usr/bin/python3"));
        let s = shebang(b"#! /usr/bin/env -S node --flag\n").unwrap();
        assert_eq!(s.via_env.as_deref(), Some("node"));
        let s = shebang(b"#!/usr/bin/env /opt/x/run\n").unwrap();
        assert_eq!(s.env_candidates(), vec![PathBuf::from("/opt/x/run")]);
        assert_eq!(
            shebang(b"#!/usr/bin/env\n"),
            None,
            "env with nothing to run"
        );
        assert_eq!(shebang(b"\x7fELF"), None);
        assert_eq!(shebang(b"#!\n"), None);
    }
}
