//! Interpreters: how an interpreter's command line names the script it runs (per family of
//! interpreters and their options), and whether that script is pinned (read-only all the way
//! from the container's root) so that its identity cannot change under the guard.

use super::*;

/// How an interpreter's command line names the script it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Python,
    Node,
    /// Any other interpreter: no options at all, the first argument is the script.
    Plain,
}

impl Family {
    /// From the interpreter a script's `#!` line names.
    pub fn of(interpreter: &str) -> Family {
        let base = Path::new(interpreter)
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        if base.starts_with("python") {
            Family::Python
        } else if base == "node" || base == "nodejs" {
            Family::Node
        } else {
            Family::Plain
        }
    }
}

/// Python options that change neither what code runs nor where it is imported from.
const PYTHON_FLAGS: &str = "BEIOPqRsSubdv";
/// Node options that change neither what code runs nor how modules are found.
const NODE_OPTIONS: &[&str] = &[
    "--no-warnings",
    "--no-deprecation",
    "--enable-source-maps",
    "--trace-warnings",
    "--trace-uncaught",
    "--trace-deprecation",
    "--abort-on-uncaught-exception",
    "--expose-gc",
    "--use-openssl-ca",
    "--use-bundled-ca",
    "--preserve-symlinks-main",
];
const NODE_VALUED: &[&str] = &[
    "--max-old-space-size",
    "--max-semi-space-size",
    "--stack-size",
    "--unhandled-rejections",
    "--dns-result-order",
    "--title",
];

pub(super) fn option_ok(family: Family, opt: &str) -> bool {
    match family {
        Family::Python => {
            opt.len() > 1
                && !opt.starts_with("--")
                && opt[1..].chars().all(|c| PYTHON_FLAGS.contains(c))
        }
        Family::Node => {
            NODE_OPTIONS.contains(&opt)
                || opt
                    .split_once('=')
                    .is_some_and(|(k, _)| NODE_VALUED.contains(&k))
        }
        Family::Plain => false,
    }
}

/// The script argument of `head` for `family`; `Err` names the argument that makes the
/// interpreter run something other than a script file.
pub fn script_argument(family: Family, head: &[String]) -> Result<String, String> {
    for a in head.iter().skip(1) {
        if a == "-" {
            return Err("the interpreter reads its program from standard input".into());
        }
        if !a.starts_with('-') {
            return Ok(a.clone());
        }
        if !option_ok(family, a) {
            return Err(format!(
                "the interpreter was given {a}, which may run other code"
            ));
        }
    }
    Err("no script argument".into())
}

// ---- read-only resolution ----------------------------------------------------------------

pub(super) fn read_only(fd: &OwnedFd) -> bool {
    // SAFETY: fstatvfs fills the struct we pass for a descriptor we hold.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) };
    r == 0 && st.f_flag & libc::ST_RDONLY != 0
}

pub(super) fn open_path(dir: &OwnedFd, name: &Path) -> Result<OwnedFd, Errno> {
    let c =
        std::ffi::CString::new(name.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: openat with a NUL-terminated name and a descriptor we hold; the result is ours.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resolve `path` (relative to `cwd`) inside the process root `root` of the container at
/// `container_root`, and require every directory on the way, every link and the final file to
/// be on a read-only mount: then nothing in the container can make the same path name another
/// file later. Returns the file's id; `dir` accepts a directory as the end.
pub fn pinned(
    container_root: &Path,
    root: &str,
    cwd: &str,
    path: &str,
    dir: bool,
) -> Result<FileId, String> {
    if root != "/" {
        return Err(format!("the process runs chrooted in {root}"));
    }
    let full = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(cwd).join(path)
    };
    let top = std::fs::File::open(container_root)
        .map(OwnedFd::from)
        .map_err(|e| format!("{}: {e}", container_root.display()))?;
    let not_ro = |p: &Path| format!("{} is not read-only", p.display());
    if !read_only(&top) {
        return Err(not_ro(Path::new("/")));
    }
    let mut stack: Vec<OwnedFd> = vec![top];
    let mut todo: VecDeque<PathBuf> = full
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut shown = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name.as_os_str() == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            shown.pop();
            continue;
        }
        let cur = stack.last().expect("root stays");
        let fd =
            open_path(cur, &name).map_err(|e| format!("{}: {e}", shown.join(&name).display()))?;
        shown.push(&name);
        let st = nix::sys::stat::fstat(fd.as_fd().as_raw_fd()).map_err(|e| e.to_string())?;
        if !read_only(&fd) {
            return Err(not_ro(&shown));
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!("{}: too many links", shown.display()));
                }
                let target = nix::fcntl::readlinkat(Some(cur.as_raw_fd()), name.as_path())
                    .map_err(|e| e.to_string())?;
                let target = PathBuf::from(target);
                shown.pop();
                let mut rest: VecDeque<PathBuf> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(PathBuf::from(n)),
                        Component::ParentDir => Some(PathBuf::from("..")),
                        _ => None,
                    })
                    .collect();
                if target.is_absolute() {
                    stack.truncate(1);
                    shown = PathBuf::from("/");
                }
                rest.extend(todo.drain(..));
                todo = rest;
            }
            libc::S_IFDIR => stack.push(fd),
            libc::S_IFREG if todo.is_empty() => return Ok((st.st_dev, st.st_ino)),
            _ => return Err(format!("{}: not a regular file", shown.display())),
        }
    }
    if dir && stack.len() > 1 {
        let st = nix::sys::stat::fstat(stack.last().expect("nonempty").as_raw_fd())
            .map_err(|e| e.to_string())?;
        return Ok((st.st_dev, st.st_ino));
    }
    Err(format!("{}: not a file", full.display()))
}

/// Whether `path` cannot be changed from inside the container: it is read-only all the way,
/// or it does not exist and the deepest existing directory above it is (so nothing can be
/// created there).
pub fn sealed(container_root: &Path, root: &str, path: &str) -> Result<(), String> {
    let mut p = PathBuf::from(path);
    loop {
        match pinned(container_root, root, "/", &p.to_string_lossy(), true) {
            Ok(_) => return Ok(()),
            Err(e) if e.contains("ENOENT") && p.pop() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Further conditions a script entry's interpreter sets on how it was started: `None` when
/// the process runs only the entry's code.
pub fn family_refusal(
    family: Family,
    interpreter: FileId,
    cap: &Capture,
    head: &[String],
    container_root: &Path,
) -> Option<String> {
    let home_sealed = |dirs: &[&str], what: &str| -> Option<String> {
        let Some(home) = cap
            .home
            .as_deref()
            .filter(|h| h.starts_with('/') && h.len() <= MAX_VAR)
        else {
            return Some(format!("HOME is not set to a path, so {what} is unknown"));
        };
        dirs.iter().find_map(|d| {
            let p = Path::new(home).join(d);
            sealed(container_root, &cap.root, &p.to_string_lossy())
                .err()
                .map(|e| format!("{what} ({}) could be written: {e}", p.display()))
        })
    };
    match family {
        Family::Python => {
            // sys.prefix, and a pyvenv.cfg next to it, come from where argv[0] says python is.
            if let Err(e) = argv0_is(container_root, cap, &head[0], interpreter) {
                return Some(e);
            }
            let options = head.iter().skip(1).take_while(|a| a.starts_with('-'));
            let no_site = options
                .clone()
                .any(|a| !a.starts_with("--") && a[1..].contains(['s', 'I']));
            if cap.no_user_site || no_site {
                return None;
            }
            home_sealed(&[".local"], "the user site directory")
        }
        // Modules a script requires that its own tree lacks are looked for here.
        Family::Node => home_sealed(&[".node_modules", ".node_libraries"], "node's home folders"),
        Family::Plain => None,
    }
}

/// Whether argv[0] names the interpreter's file: as a path (read-only all the way), or as the
/// first match of a bare name on PATH.
pub(super) fn argv0_is(
    container_root: &Path,
    cap: &Capture,
    argv0: &str,
    id: FileId,
) -> Result<(), String> {
    let same = |p: &str| -> Result<Option<bool>, String> {
        match pinned(container_root, &cap.root, &cap.cwd, p, false) {
            Ok(x) => Ok(Some(x == id)),
            Err(e) if e.contains("ENOENT") => Ok(None),
            Err(e) => Err(format!("argv[0] {argv0}: {e}")),
        }
    };
    let found = if argv0.contains('/') {
        same(argv0)?
    } else {
        let path = cap
            .path
            .as_deref()
            .filter(|p| p.len() <= MAX_VAR)
            .unwrap_or(crate::executor::DEFAULT_PATH);
        let mut found = None;
        for dir in path.split(':') {
            let dir = if dir.is_empty() { "." } else { dir };
            if let Some(hit) = same(&format!("{dir}/{argv0}"))? {
                found = Some(hit);
                break;
            }
        }
        found
    };
    match found {
        Some(true) => Ok(()),
        Some(false) => Err(format!(
            "argv[0] {argv0} names another file than the interpreter"
        )),
        None => Err(format!("argv[0] {argv0} names no file")),
    }
}
