//! Who is calling (SPEC §7.2): the file the kernel runs for the process, by device and inode,
//! against each policy's binaries resolved inside the container's root. A script entry is the
//! interpreter running that script file, without inline code or injection variables.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::executor::DEFAULT_PATH;
use crate::policy::merge::EffectiveNetwork;

/// (device, inode) of a file.
pub type FileId = (u64, u64);

/// Flags that make an interpreter run code from its arguments instead of the script.
const INLINE_CODE: &[&str] = &["-e", "-c", "--eval", "-r", "--require", "--import", "-p"];
/// Environment that injects code into the loader or the interpreter.
const INJECTION_VARS: &[&str] = &[
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "NODE_OPTIONS",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "BUN_OPTIONS",
];
/// Entries visited while expanding one glob inside the container.
const MAX_VISITS: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub file: FileId,
    pub interpreter: FileId,
}

/// One policy's binaries, resolved.
#[derive(Debug, Clone, Default)]
pub struct BinarySet {
    pub files: HashSet<FileId>,
    pub scripts: Vec<Script>,
}

/// Binaries of every policy, by policy key.
#[derive(Debug, Clone, Default)]
pub struct Binaries {
    pub by_policy: BTreeMap<String, BinarySet>,
}

/// A process as the guard sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub pid: i32,
    pub exe: FileId,
}

impl Caller {
    pub fn of(pid: i32) -> Option<Caller> {
        let md = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
        Some(Caller {
            pid,
            exe: (md.dev(), md.ino()),
        })
    }

    /// The executable's path, for audit events only (identity is `exe`).
    pub fn exe_path(&self) -> String {
        std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// The container's root through `/proc/PID/root` (a magic link pathrs will not open itself).
fn open_root(root: &Path) -> Option<pathrs::Root> {
    let dir = std::fs::File::open(root).ok()?;
    Some(pathrs::Root::from_fd(dir))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Open `path` (absolute, in-container) inside `root` without leaving it.
fn stat_in(root: &pathrs::Root, path: &Path) -> Option<(FileId, bool)> {
    let h = root.resolve(path).ok()?;
    let st = nix::sys::stat::fstat(h.as_fd().as_raw_fd()).ok()?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    Some(((st.st_dev, st.st_ino), is_dir))
}

fn read_head(root: &pathrs::Root, path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let h = root.resolve(path).ok()?;
    let mut f = h.reopen(pathrs::flags::OpenFlags::O_RDONLY).ok()?;
    let mut buf = vec![0u8; 256];
    let n = f.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn list_dir(root: &pathrs::Root, dir: &Path) -> Vec<String> {
    let Ok(h) = root.resolve(dir) else {
        return Vec::new();
    };
    let fd = h.as_fd().as_raw_fd();
    std::fs::read_dir(format!("/proc/self/fd/{fd}"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Paths inside the container matching `pattern` (`*`, `?`, `[..]` within a component, `**`
/// across components).
pub fn expand(root: &pathrs::Root, pattern: &str) -> Vec<PathBuf> {
    if !has_glob(pattern) {
        return vec![PathBuf::from(pattern)];
    }
    let matcher = match globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
    {
        Ok(g) => g.compile_matcher(),
        Err(_) => return Vec::new(),
    };
    // The literal prefix bounds the walk.
    let mut base = PathBuf::from("/");
    for c in Path::new(pattern).components() {
        match c {
            Component::Normal(n) if !has_glob(&n.to_string_lossy()) => base.push(n),
            Component::RootDir => {}
            _ => break,
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![base];
    let mut visits = 0;
    while let Some(dir) = todo.pop() {
        for name in list_dir(root, &dir) {
            visits += 1;
            if visits > MAX_VISITS {
                return out;
            }
            let p = dir.join(&name);
            if matcher.is_match(&p) {
                out.push(p.clone());
            }
            if let Ok(h) = root.resolve_nofollow(&p) {
                if nix::sys::stat::fstat(h.as_fd().as_raw_fd())
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                {
                    todo.push(p);
                }
            }
        }
    }
    out
}

/// The interpreter a script names, resolved in the container (`/usr/bin/env NAME` through
/// the default PATH).
fn interpreter_of(root: &pathrs::Root, head: &[u8]) -> Option<FileId> {
    let rest = head.strip_prefix(b"#!")?;
    let line = String::from_utf8_lossy(rest.split(|b| *b == b'\n').next()?).to_string();
    let mut words = line.split_whitespace();
    let interp = words.next()?;
    let interp = if Path::new(interp).file_name().is_some_and(|n| n == "env") {
        let name = words.find(|w| !w.starts_with('-'))?;
        DEFAULT_PATH
            .split(':')
            .map(|d| Path::new(d).join(name))
            .find(|p| stat_in(root, p).is_some())?
    } else {
        PathBuf::from(interp)
    };
    stat_in(root, &interp).map(|(id, _)| id)
}

impl Binaries {
    /// Resolve every policy's binaries inside `root` (the container's `/proc/PID/root`).
    pub fn resolve(root: &Path, policies: &BTreeMap<String, EffectiveNetwork>) -> Binaries {
        let Some(root) = open_root(root) else {
            return Binaries::default();
        };
        let mut by_policy = BTreeMap::new();
        for (key, net) in policies {
            let mut set = BinarySet::default();
            for b in &net.policy.binaries {
                for p in expand(&root, &b.path) {
                    let Some((id, is_dir)) = stat_in(&root, &p) else {
                        continue;
                    };
                    if is_dir {
                        continue;
                    }
                    let head = read_head(&root, &p).unwrap_or_default();
                    if head.starts_with(b"#!") {
                        if let Some(interpreter) = interpreter_of(&root, &head) {
                            set.scripts.push(Script {
                                file: id,
                                interpreter,
                            });
                        }
                    } else {
                        set.files.insert(id);
                    }
                }
            }
            by_policy.insert(key.clone(), set);
        }
        Binaries { by_policy }
    }

    pub fn knows(&self, exe: FileId) -> bool {
        self.by_policy
            .values()
            .any(|s| s.files.contains(&exe) || s.scripts.iter().any(|sc| sc.interpreter == exe))
    }
}

/// What the process looks like beyond its executable, read when a script entry needs it.
#[derive(Debug, Clone, Default)]
pub struct ProcessView {
    pub argv: Vec<String>,
    pub env_keys: Vec<String>,
    /// Its cwd, as a path inside its root.
    pub cwd: PathBuf,
}

impl ProcessView {
    pub fn read(pid: i32) -> Option<ProcessView> {
        let split = |b: Vec<u8>| -> Vec<String> {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let argv = split(std::fs::read(format!("/proc/{pid}/cmdline")).ok()?);
        let env_keys = split(std::fs::read(format!("/proc/{pid}/environ")).ok()?)
            .into_iter()
            .filter_map(|e| e.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        Some(ProcessView {
            argv,
            env_keys,
            cwd,
        })
    }
}

/// Why a process whose interpreter matches a script entry is still not that script.
pub fn script_refusal(view: &ProcessView) -> Option<String> {
    if let Some(v) = view
        .env_keys
        .iter()
        .find(|k| INJECTION_VARS.contains(&k.as_str()))
    {
        return Some(format!("the environment sets {v}"));
    }
    for a in view.argv.iter().skip(1) {
        if !a.starts_with('-') {
            break;
        }
        let flag = a.split('=').next().unwrap_or(a);
        if INLINE_CODE.contains(&flag)
            || (flag.len() > 2 && !flag.starts_with("--") && flag[1..].contains(['c', 'e']))
        {
            return Some(format!("the interpreter was given inline code ({a})"));
        }
    }
    None
}

/// The script argument: the first argument after the interpreter that is not an option.
pub fn script_argument(view: &ProcessView) -> Option<&str> {
    view.argv
        .iter()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(String::as_str)
}

/// Whether `caller` is one of `set`'s binaries; `Err` says why a script match was refused.
pub fn matches(set: &BinarySet, caller: &Caller, root: &Path) -> Result<bool, String> {
    if set.files.contains(&caller.exe) {
        return Ok(true);
    }
    let candidates: Vec<&Script> = set
        .scripts
        .iter()
        .filter(|s| s.interpreter == caller.exe)
        .collect();
    if candidates.is_empty() {
        return Ok(false);
    }
    let Some(view) = ProcessView::read(caller.pid) else {
        return Ok(false);
    };
    if let Some(why) = script_refusal(&view) {
        return Err(why);
    }
    let Some(arg) = script_argument(&view) else {
        return Ok(false);
    };
    let path = view.cwd.join(arg);
    let Some(r) = open_root(root) else {
        return Ok(false);
    };
    let Some((id, _)) = stat_in(&r, &path) else {
        return Ok(false);
    };
    Ok(candidates.iter().any(|s| s.file == id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(argv: &[&str], env: &[&str]) -> ProcessView {
        ProcessView {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env_keys: env.iter().map(|s| s.to_string()).collect(),
            cwd: PathBuf::from("/"),
        }
    }

    #[test]
    fn inline_code_and_injection_are_refused() {
        assert!(script_refusal(&view(&["python3", "/app/x.py"], &["PATH"])).is_none());
        assert!(script_refusal(&view(&["python3", "-u", "/app/x.py"], &[])).is_none());
        for argv in [
            &["python3", "-c", "print(1)"][..],
            &["node", "-e", "1"],
            &["node", "--eval=1"],
            &["node", "--require", "/tmp/x.js", "/app/x.js"],
            &["python3", "-Ic", "1"],
        ] {
            assert!(script_refusal(&view(argv, &[])).is_some(), "{argv:?}");
        }
        let r = script_refusal(&view(&["python3", "/app/x.py"], &["LD_PRELOAD"])).unwrap();
        assert!(r.contains("LD_PRELOAD"), "{r}");
        // Arguments of the script itself are not the interpreter's.
        assert!(script_refusal(&view(&["python3", "/app/x.py", "-c", "y"], &[])).is_none());
    }

    #[test]
    fn script_argument_skips_options() {
        assert_eq!(
            script_argument(&view(&["python3", "-u", "app.py", "-v"], &[])),
            Some("app.py")
        );
        assert_eq!(script_argument(&view(&["python3"], &[])), None);
    }
}

#[cfg(test)]
mod resolve_tests {
    use super::*;
    use crate::policy::model::{Binary, NetworkPolicy};

    #[test]
    fn resolves_binaries_through_proc_root() {
        let mut policies = BTreeMap::new();
        policies.insert(
            "p".to_string(),
            EffectiveNetwork {
                policy: NetworkPolicy {
                    binaries: vec![Binary {
                        path: "/bin/sh".into(),
                    }],
                    ..NetworkPolicy::default()
                },
                from: "t".into(),
                replaced: Vec::new(),
            },
        );
        let b = Binaries::resolve(Path::new("/proc/self/root"), &policies);
        let md = std::fs::metadata("/bin/sh").unwrap();
        assert!(b.knows((md.dev(), md.ino())), "{b:?}");
    }
}
