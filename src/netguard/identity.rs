//! Who is calling: the file the kernel runs for the process, by device, inode and
//! change time, against each policy's binaries resolved inside the container's root. A
//! script entry is the interpreter running that script file. What the process was started
//! with (argv, environment, working directory) comes from its exec capture, never from
//! `/proc` at connect time.
//!
//! Binaries are pinned the first time the guard resolves them (at create, or when a binary
//! is installed later): a path that later names another file (replaced) or the same file
//! rewritten in place (a new change time) is refused, with the reason in the audit event.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use super::capture::{self, Capture, Captures, Family, FileId, Stamp};
use crate::container_root::ContainerRoot;
use crate::policy::merge::EffectiveNetwork;

/// Entries visited while expanding one glob inside the container.
const MAX_VISITS: usize = 20_000;
/// The bytes of a file read for its `#!` line.
const HEAD: u64 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub file: Stamp,
    pub interpreter: Stamp,
    pub family: Family,
}

/// One policy's binaries, resolved.
#[derive(Debug, Clone, Default)]
pub struct BinarySet {
    pub files: HashMap<FileId, Stamp>,
    pub scripts: Vec<Script>,
}

/// Binaries of every policy, by policy key.
#[derive(Debug, Clone, Default)]
pub struct Binaries {
    pub by_policy: BTreeMap<String, BinarySet>,
    /// Files found at a pinned path that are not what was pinned there: why they are refused.
    pub tampered: HashMap<FileId, String>,
}

/// Every binary path's stamp the first time the guard saw it.
#[derive(Default)]
pub struct Baseline {
    stamps: Mutex<HashMap<PathBuf, Stamp>>,
}

impl Baseline {
    /// `Ok(stamp)` when `path` still holds what was pinned there (pinning it now if it is
    /// new); `Err(why)` when it holds another file or a rewritten one.
    fn check(&self, path: &Path, now: Stamp) -> Result<Stamp, String> {
        let mut m = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(path) {
            None => {
                m.insert(path.to_path_buf(), now);
                Ok(now)
            }
            Some(was) if was.holds(&now) => Ok(*was),
            Some(was) if was.id == now.id => Err(format!(
                "binary modified: {} was rewritten after the guard pinned it",
                path.display()
            )),
            Some(_) => Err(format!(
                "binary replaced: {} names another file than when the guard pinned it",
                path.display()
            )),
        }
    }
}

/// A process as the guard sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub pid: i32,
    pub exe: Stamp,
    thread: capture::Thread,
}

impl Caller {
    /// Thread `pid`, looked up through `captures` (`key`: its pidfd's inode, where unique).
    pub fn of(pid: i32, captures: &Captures, key: Option<u64>) -> Option<Caller> {
        let thread = captures.thread(pid, key)?;
        Some(Caller {
            pid,
            exe: thread.exe,
            thread,
        })
    }

    /// The executable's path, for audit events only (identity is `exe`).
    pub fn exe_path(&self) -> String {
        std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Open `path` (absolute, in-container) inside `root` without leaving it: its stamp, and
/// whether it is a directory. Only directories and regular files count: a FIFO or device at
/// a binary's path is nothing to run (and reading one could block the guard).
pub(crate) fn stat_in(root: &ContainerRoot, path: &Path) -> Option<(Stamp, bool)> {
    let h = root.handle(path, true)?;
    let st = nix::sys::stat::fstat(h.as_raw_fd()).ok()?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFDIR && kind != libc::S_IFREG {
        return None;
    }
    let stamp = Stamp {
        id: (st.st_dev, st.st_ino),
        ctime: (st.st_ctime, st.st_ctime_nsec),
        read_only: nix::sys::statvfs::fstatvfs(&h)
            .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)),
    };
    Some((stamp, kind == libc::S_IFDIR))
}

/// Paths inside the container matching `pattern` (`*`, `?`, `[..]` within a component, `**`
/// across components).
pub fn expand(root: &ContainerRoot, pattern: &str) -> Vec<PathBuf> {
    if !has_glob(pattern) {
        return vec![PathBuf::from(pattern)];
    }
    // The literal prefix bounds the walk.
    let mut base = PathBuf::from("/");
    for c in Path::new(pattern).components() {
        match c {
            Component::Normal(n) if !has_glob(&n.to_string_lossy()) => base.push(n),
            Component::RootDir => {}
            _ => break,
        }
    }
    // Compiled only once the walk finds something: most images lack most of the places a
    // policy's globs name, and each compile builds a regex (tens of microseconds).
    let mut matcher = None;
    let mut out = Vec::new();
    let mut todo = vec![base];
    let mut visits = 0;
    while let Some(dir) = todo.pop() {
        for name in root.list_dir(&dir) {
            visits += 1;
            if visits > MAX_VISITS {
                return out;
            }
            let p = dir.join(&name);
            let m = matcher.get_or_insert_with(|| {
                globset::GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map(|g| g.compile_matcher())
            });
            let Ok(m) = m else {
                return Vec::new();
            };
            if m.is_match(&p) {
                out.push(p.clone());
            }
            if root.is_dir(&p) {
                todo.push(p);
            }
        }
    }
    out
}

/// The interpreter a script names and its path, resolved in the container (`/usr/bin/env
/// NAME` through the default PATH).
fn interpreter_of(root: &ContainerRoot, head: &[u8]) -> Option<(PathBuf, Stamp)> {
    let sb = crate::container_root::shebang(head)?;
    let interp = if sb.via_env.is_some() {
        sb.env_candidates()
            .into_iter()
            .find(|p| stat_in(root, p).is_some())?
    } else {
        PathBuf::from(sb.interpreter)
    };
    stat_in(root, &interp).map(|(st, _)| (interp, st))
}

impl Binaries {
    /// Resolve every policy's binaries inside `root` (the container's `/proc/PID/root`),
    /// holding each path to what `baseline` pinned there.
    pub fn resolve(
        root: &Path,
        policies: &BTreeMap<String, EffectiveNetwork>,
        baseline: &Baseline,
    ) -> Binaries {
        let Some(root) = ContainerRoot::open(root) else {
            return Binaries::default();
        };
        let mut out = Binaries::default();
        let pin = |path: &Path, now: Stamp, tampered: &mut HashMap<FileId, String>| {
            baseline.check(path, now).map_err(|why| {
                tampered.insert(now.id, why);
            })
        };
        for (key, net) in policies {
            let mut set = BinarySet::default();
            for b in &net.policy.binaries {
                for p in expand(&root, &b.path) {
                    let Some((now, is_dir)) = stat_in(&root, &p) else {
                        continue;
                    };
                    if is_dir {
                        continue;
                    }
                    let Ok(file) = pin(&p, now, &mut out.tampered) else {
                        continue;
                    };
                    let head = root.read_regular(&p, HEAD).unwrap_or_default();
                    if head.starts_with(b"#!") {
                        let Some((ipath, inow)) = interpreter_of(&root, &head) else {
                            continue;
                        };
                        let Ok(interpreter) = pin(&ipath, inow, &mut out.tampered) else {
                            continue;
                        };
                        set.scripts.push(Script {
                            file,
                            interpreter,
                            family: Family::of(&ipath.to_string_lossy()),
                        });
                    } else {
                        set.files.insert(file.id, file);
                    }
                }
            }
            out.by_policy.insert(key.clone(), set);
        }
        out
    }

    pub fn knows(&self, exe: FileId) -> bool {
        self.by_policy.values().any(|s| {
            s.files.contains_key(&exe) || s.scripts.iter().any(|sc| sc.interpreter.id == exe)
        })
    }
}

/// Whether `caller` is one of `set`'s binaries; `Err` says why a matching file was still
/// refused. `root` is the container's root (`/proc/<init>/root`).
pub fn matches(
    set: &BinarySet,
    caller: &Caller,
    captures: &Captures,
    root: &Path,
) -> Result<bool, String> {
    let capture = || -> Result<Capture, String> {
        captures.find(caller.pid, &caller.thread).ok_or_else(|| {
            "no record of how this process was started (its exec was not captured)".to_string()
        })
    };
    if let Some(pinned) = set.files.get(&caller.exe.id) {
        if !pinned.holds(&caller.exe) {
            return Err("binary modified after the guard pinned it".into());
        }
        let cap = capture()?;
        return match cap.loader_refusal(root) {
            Some(why) => Err(why),
            None => Ok(true),
        };
    }
    let candidates: Vec<&Script> = set
        .scripts
        .iter()
        .filter(|s| s.interpreter.id == caller.exe.id)
        .collect();
    if candidates.is_empty() {
        return Ok(false);
    }
    if candidates.iter().all(|s| !s.interpreter.holds(&caller.exe)) {
        return Err("interpreter modified after the guard pinned it".into());
    }
    let cap = capture()?;
    if let Some(why) = cap
        .loader_refusal(root)
        .or_else(|| cap.interpreter_refusal())
    {
        return Err(why);
    }
    let head = cap
        .head
        .as_ref()
        .ok_or("the interpreter's arguments were too long to judge")?;
    let mut why = None;
    for sc in candidates {
        let arg = capture::script_argument(sc.family, head)?;
        match capture::pinned(root, &cap.root, &cap.cwd, &arg, false) {
            Ok(id) if id == sc.file.id => {
                return match capture::family_refusal(sc.family, sc.interpreter.id, &cap, head, root)
                {
                    Some(why) => Err(why),
                    None => Ok(true),
                };
            }
            Ok(_) => {}
            Err(e) => why = Some(format!("script {arg}: {e}")),
        }
    }
    why.map_or(Ok(false), Err)
}

#[cfg(test)]
mod resolve_tests {
    use super::*;
    use crate::policy::model::{Binary, NetworkPolicy};

    fn policies(path: &str) -> BTreeMap<String, EffectiveNetwork> {
        let mut policies = BTreeMap::new();
        policies.insert(
            "p".to_string(),
            EffectiveNetwork {
                policy: NetworkPolicy {
                    binaries: vec![Binary { path: path.into() }],
                    ..NetworkPolicy::default()
                },
                from: "t".into(),
                replaced: Vec::new(),
            },
        );
        policies
    }

    #[test]
    fn resolves_binaries_through_proc_root() {
        let b = Binaries::resolve(
            Path::new("/proc/self/root"),
            &policies("/bin/sh"),
            &Baseline::default(),
        );
        let md = std::fs::metadata("/bin/sh").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(b.knows((md.dev(), md.ino())), "{b:?}");
    }

    #[test]
    fn a_replaced_or_rewritten_binary_is_refused() {
        let dir = crate::testutil::TempDir::new("baseline");
        let f = dir.path().join("tool");
        std::fs::write(&f, "\x7fELF one").unwrap();
        let base = Baseline::default();
        let pol = policies(f.to_str().unwrap());
        let first = Binaries::resolve(Path::new("/proc/self/root"), &pol, &base);
        assert_eq!(first.by_policy["p"].files.len(), 1);
        // Rewritten in place: same inode, new change time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, "\x7fELF two").unwrap();
        let again = Binaries::resolve(Path::new("/proc/self/root"), &pol, &base);
        assert!(again.by_policy["p"].files.is_empty());
        assert!(
            again.tampered.values().any(|w| w.contains("modified")),
            "{again:?}"
        );
        // Replaced by another file (made while the old one exists: a different inode).
        let other = dir.path().join("other");
        std::fs::write(&other, "\x7fELF three").unwrap();
        std::fs::rename(&other, &f).unwrap();
        let third = Binaries::resolve(Path::new("/proc/self/root"), &pol, &base);
        assert!(
            third.tampered.values().any(|w| w.contains("replaced")),
            "{third:?}"
        );
    }
}
