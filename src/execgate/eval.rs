//! The gate's decision: every program a direct argv or a shell wrapper's script
//! would start is resolved inside the container (PATH, cwd and `cd`, symlinks within the
//! root) and must match the allowlist; shell scripts may also use the safe builtins.
//!
//! Threat: the request comes from whoever drives the agent, and the container's files are the
//! workload's. So the gate decides on files, not names: a wrapper shell is one of the image's
//! real shells (by device and inode, recorded at create) or a file the policy lists, never
//! "anything called sh"; a login or interactive shell is refused when a startup file it reads
//! could have been written by the workload; the dynamic loader is never a command; an exec
//! that brings loader or shell injection variables is refused; and the working directory is
//! only trusted while every `cd` before a command is sure to have run.

use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::shell::{self, Command, Joined, Word};

use crate::executor::DEFAULT_PATH;
const SHELLS: [&str; 4] = ["sh", "bash", "dash", "ash"];
const SAFE_BUILTINS: [&str; 7] = [":", "true", "false", "pwd", "cd", "test", "["];
const REFUSED_BUILTINS: [&str; 7] = ["eval", "source", ".", "export", "unset", "alias", "exec"];
const MAX_DEPTH: usize = 3;
/// Variables the gate refuses beyond those that inject code into a loader or interpreter
/// (`netguard::capture::injects_code`): with `SSH_CLIENT`/`SSH2_CLIENT` set, Debian's bash
/// reads `~/.bashrc` even for `bash -c`.
const GATE_VARS: [&str; 2] = ["SSH_CLIENT", "SSH2_CLIENT"];
/// bash, dash and busybox ash builtins besides the safe and the refused ones: a script naming
/// one runs the builtin, not the file PATH finds (bash's `printf -v 'a[$(…)]'`, `read`,
/// `declare` and `let` evaluate code). `echo` and `printf` are judged as their files, `printf`
/// without `-v`.
const OTHER_BUILTINS: [&str; 40] = [
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "declare",
    "dirs",
    "disown",
    "enable",
    "exit",
    "fc",
    "fg",
    "getopts",
    "hash",
    "help",
    "history",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "pushd",
    "read",
    "readarray",
    "readonly",
    "return",
    "set",
    "shift",
    "shopt",
    "suspend",
    "times",
    "trap",
    "type",
];
const MORE_BUILTINS: [&str; 5] = ["typeset", "ulimit", "umask", "unalias", "wait"];
/// `test`/`[` operators; bash's `-v` and `-R` evaluate array subscripts (code) and are not
/// among them.
const TEST_OPERATORS: [&str; 36] = [
    "-a", "-b", "-c", "-d", "-e", "-f", "-g", "-h", "-k", "-p", "-r", "-s", "-t", "-u", "-w", "-x",
    "-G", "-L", "-N", "-O", "-S", "-z", "-n", "-o", "-eq", "-ne", "-lt", "-le", "-gt", "-ge",
    "-ef", "-nt", "-ot", "!", "(", ")",
];
/// What a login or interactive shell reads before its command: system-wide, then under HOME.
const SYSTEM_STARTUP: [&str; 3] = ["/etc/profile", "/etc/profile.d", "/etc/bash.bashrc"];
const HOME_STARTUP: [&str; 4] = [".bash_profile", ".bash_login", ".profile", ".bashrc"];

/// (device, inode) of a file.
pub type FileId = (u64, u64);

/// The container's file tree, as the gate needs it.
pub trait ContainerFs {
    /// The real path of `path` (absolute, in the container), symlinks followed without
    /// leaving the root; `None` if it does not exist.
    fn resolve(&self, path: &Path) -> Option<PathBuf>;
    fn is_executable_file(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    /// Device and inode of a resolved path.
    fn file_id(&self, path: &Path) -> Option<FileId>;
    /// Whether a process of the container could write `path` (or create it, when absent).
    fn writable(&self, path: &Path) -> bool;
    /// Whether a process of the container could make `path` name other content: write the
    /// file, or replace an entry in any directory its resolution passes through (a link
    /// target's included).
    fn controllable(&self, path: &Path) -> bool;
    /// Whether the resolved file is a dynamic loader (`ld-linux*.so`, `ld-musl*`).
    fn is_loader(&self, path: &Path) -> bool;
    /// The entries of a directory (absolute container paths); empty if it is not one.
    fn list_dir(&self, dir: &Path) -> Vec<PathBuf>;
}

pub struct Context<'a> {
    pub allowlist: &'a [String],
    pub safe_builtins: bool,
    /// PATH of the exec process's environment.
    pub path_var: Option<&'a str>,
    pub cwd: PathBuf,
    pub home: PathBuf,
    /// The image's real shells and those the policy lists, by device and inode.
    pub shells: &'a [FileId],
    /// Variables the exec request sets (beyond what the container was created with).
    pub exec_env: &'a [String],
    /// The exec process's whole environment.
    pub env: &'a [String],
    /// The exec's standard input is a socket: bash then reads `~/.bashrc` even for `-c`.
    pub stdin_socket: bool,
}

/// What an allowed exec may run: Landlock gives execute rights on these files only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    pub executables: Vec<PathBuf>,
    pub shells: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exec denied by policy: {segment}: {reason}")]
pub struct Denied {
    pub segment: String,
    pub reason: String,
}

fn deny(segment: &str, reason: impl Into<String>) -> Denied {
    Denied {
        segment: segment.into(),
        reason: reason.into(),
    }
}

fn allowlist_set(patterns: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // Validated at policy load; a pattern that does not compile matches nothing.
        if let Ok(g) = GlobBuilder::new(p).literal_separator(true).build() {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

/// Lexical `..` and `.` removal of an absolute path.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// The working directory a command of a script will run in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cwd {
    Known(PathBuf),
    /// A `cd` before it may not have run (or ran in a pipeline's subshell): why.
    Unknown(String),
}

impl Cwd {
    fn get(&self, segment: &str, what: &str) -> Result<&Path, Denied> {
        match self {
            Cwd::Known(p) => Ok(p),
            Cwd::Unknown(why) => Err(deny(
                segment,
                format!("{what} depends on the working directory, which is unknown: {why}"),
            )),
        }
    }
}

/// A program as the exec names it (the path the kernel walks) and the file that path
/// resolves to now.
struct Found {
    named: PathBuf,
    resolved: PathBuf,
}

struct Gate<'a> {
    ctx: &'a Context<'a>,
    fs: &'a dyn ContainerFs,
    allow: GlobSet,
    out: Allowed,
}

/// Decide an exec of `argv`.
pub fn evaluate(argv: &[String], ctx: &Context, fs: &dyn ContainerFs) -> Result<Allowed, Denied> {
    let Some(first) = argv.first() else {
        return Err(deny("", "empty command"));
    };
    if let Some(v) = ctx.exec_env.iter().find_map(|e| {
        let k = e.split('=').next().unwrap_or(e);
        (crate::netguard::capture::injects_code(k) || GATE_VARS.contains(&k)).then_some(k)
    }) {
        return Err(deny(first, format!("the exec sets {v}")));
    }
    let mut g = Gate {
        ctx,
        fs,
        allow: allowlist_set(ctx.allowlist),
        out: Allowed::default(),
    };
    g.argv(argv, &Cwd::Known(ctx.cwd.clone()), 0, first)?;
    g.out.executables.sort();
    g.out.executables.dedup();
    g.out.shells.sort();
    g.out.shells.dedup();
    Ok(g.out)
}

/// A wrapper's script, and whether the shell reads startup files first (login `-l`,
/// `--login`; interactive `-i`).
struct Wrapped<'s> {
    script: &'s str,
    startup: bool,
}

/// `sh -c SCRIPT …`, `bash -lc …`, `busybox sh -c …`: the script, if `argv` has that shape.
/// Whether the program really is a shell is decided on its file, by the caller.
fn wrapped_script(argv: &[String]) -> Option<Wrapped<'_>> {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let mut i = 0;
    if base(&argv[0]) == "busybox" && argv.len() > 1 && SHELLS.contains(&argv[1].as_str()) {
        i = 1;
    }
    if !SHELLS.contains(&base(&argv[i]).as_str()) {
        return None;
    }
    let mut j = i + 1;
    let (mut has_c, mut startup) = (false, false);
    while let Some(opt) = argv.get(j) {
        if opt == "--login" {
            startup = true;
            j += 1;
            continue;
        }
        let Some(flags) = opt.strip_prefix('-') else {
            break;
        };
        if flags.is_empty() || !flags.chars().all(|c| matches!(c, 'l' | 'c' | 'i')) {
            return None;
        }
        has_c |= flags.contains('c');
        startup |= flags.contains(['l', 'i']);
        j += 1;
    }
    if !has_c {
        return None;
    }
    argv.get(j).map(|s| Wrapped {
        script: s.as_str(),
        startup,
    })
}

impl Gate<'_> {
    /// Resolve a command name as the shell would: `~` expanded, with a `/` relative to
    /// `cwd`, else PATH (the first `PATH=` of the exec's environment, as execve reads it).
    fn resolve_command(
        &self,
        word: &Word,
        cwd: &Cwd,
        segment: &str,
    ) -> Result<Option<Found>, Denied> {
        let name = word.text.as_str();
        let name = if word.tilde {
            let rest = &name[1..];
            if !(rest.is_empty() || rest.starts_with('/')) {
                return Err(deny(segment, "~user in a command name"));
            }
            format!("{}{rest}", self.ctx.home.display())
        } else {
            name.to_string()
        };
        // `..` is resolved as the kernel does, after the links before it.
        let found = |p: PathBuf| {
            self.fs
                .resolve(&p)
                .filter(|r| self.fs.is_executable_file(r))
                .map(|resolved| Found { named: p, resolved })
        };
        if name.contains('/') {
            let p = if name.starts_with('/') {
                PathBuf::from(&name)
            } else {
                cwd.get(segment, &name)?.join(&name)
            };
            return Ok(found(p));
        }
        let path_var = self.ctx.path_var.unwrap_or(DEFAULT_PATH);
        for dir in path_var.split(':') {
            let dir = if dir.starts_with('/') {
                PathBuf::from(dir)
            } else {
                cwd.get(segment, &format!("PATH entry {dir:?}"))?.join(dir)
            };
            if let Some(r) = found(dir.join(&name)) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// The startup file of a login or interactive shell the workload could have written (or
    /// could create).
    fn writable_startup(&self) -> Option<PathBuf> {
        let mut files: Vec<PathBuf> = SYSTEM_STARTUP.iter().map(PathBuf::from).collect();
        files.extend(self.fs.list_dir(Path::new("/etc/profile.d")));
        files.extend(HOME_STARTUP.iter().map(|f| self.ctx.home.join(f)));
        files.into_iter().find(|f| self.fs.controllable(f))
    }

    /// Refuse a program file the container could change: its content, or any directory on
    /// its path (an entry there can be swapped after the decision).
    fn unchangeable(&self, file: &Path, segment: &str) -> Result<(), Denied> {
        if self.fs.controllable(file) {
            return Err(deny(
                segment,
                format!(
                    "{} can be changed from inside the container (it or a directory on its path is writable)",
                    file.display()
                ),
            ));
        }
        Ok(())
    }

    fn argv(
        &mut self,
        argv: &[String],
        cwd: &Cwd,
        depth: usize,
        segment: &str,
    ) -> Result<(), Denied> {
        let word = Word {
            text: argv[0].clone(),
            dynamic: false,
            tilde: false,
            brace: false,
        };
        self.run(&word, argv, cwd, depth, segment)
    }

    /// Decide one program with its arguments (`first` is argv[0] as a word).
    fn run(
        &mut self,
        first: &Word,
        argv: &[String],
        cwd: &Cwd,
        depth: usize,
        segment: &str,
    ) -> Result<(), Denied> {
        let Found { named, resolved } = self
            .resolve_command(first, cwd, segment)?
            .ok_or_else(|| deny(segment, format!("{}: not found in the container", argv[0])))?;
        if self.fs.is_loader(&resolved) {
            return Err(deny(
                segment,
                format!(
                    "{} is the dynamic loader, which runs any file",
                    resolved.display()
                ),
            ));
        }
        let is_shell = self
            .fs
            .file_id(&resolved)
            .is_some_and(|id| self.ctx.shells.contains(&id));
        if let Some(w) = wrapped_script(argv).filter(|_| is_shell) {
            if depth >= MAX_DEPTH {
                return Err(deny(
                    segment,
                    format!("shell wrappers nested deeper than {MAX_DEPTH}"),
                ));
            }
            // bash reads ~/.bashrc for `-c` too when it thinks sshd started it.
            let by_ssh = self.ctx.stdin_socket
                || self
                    .ctx
                    .env
                    .iter()
                    .any(|e| GATE_VARS.iter().any(|v| e.starts_with(&format!("{v}="))));
            if w.startup || by_ssh {
                if let Some(f) = self.writable_startup() {
                    return Err(deny(
                        segment,
                        format!(
                            "a login or interactive shell reads {}, which the container can write",
                            f.display()
                        ),
                    ));
                }
            }
            self.unchangeable(&named, segment)?;
            self.out.shells.push(resolved);
            let commands = shell::parse(w.script).map_err(|r| deny(&r.at, r.construct))?;
            return self.script(&commands, cwd.clone(), depth + 1);
        }
        if self.allow.is_match(&resolved) {
            self.unchangeable(&named, segment)?;
            self.out.executables.push(resolved);
            Ok(())
        } else {
            Err(deny(
                segment,
                format!(
                    "{} ({}) is not in the exec allowlist",
                    argv[0],
                    resolved.display()
                ),
            ))
        }
    }

    /// A wrapper's commands in order. A `cd`'s new directory holds for the commands joined to
    /// it by `&&`; once a `;`, newline or `||` follows (it may have failed or not run), or when
    /// it ran in a pipeline (a subshell), the directory is unknown.
    fn script(&mut self, commands: &[Command], cwd: Cwd, depth: usize) -> Result<(), Denied> {
        let mut cwd = cwd;
        // Whether the and-or list so far had an `||`: a `cd` after one may not have run even
        // when the list goes on with `&&`.
        let mut list_or = false;
        let mut pending_cd: Option<String> = None;
        for c in commands {
            match c.joined {
                Joined::Seq => list_or = false,
                Joined::Or => list_or = true,
                Joined::And | Joined::Pipe => {}
            }
            if let Some(cd) = &pending_cd {
                if c.joined != Joined::And {
                    cwd = Cwd::Unknown(format!("`{cd}` may not have run"));
                    pending_cd = None;
                }
            }
            self.command(c, &mut cwd, depth)?;
            if c.words[0].text == "cd" && !c.words[0].dynamic {
                if c.piped || c.joined == Joined::Pipe {
                    cwd = Cwd::Unknown(format!("`{}` ran in a pipeline's subshell", c.source));
                } else if list_or {
                    cwd = Cwd::Unknown(format!("`{}` may not have run", c.source));
                } else {
                    pending_cd = Some(c.source.clone());
                }
            }
        }
        Ok(())
    }

    fn command(&mut self, c: &Command, cwd: &mut Cwd, depth: usize) -> Result<(), Denied> {
        let seg = c.source.as_str();
        let first = &c.words[0];
        if c.words.iter().any(|w| w.brace) {
            return Err(deny(seg, "brace expansion"));
        }
        if first.dynamic {
            return Err(deny(seg, "command name needs expansion"));
        }
        let name = first.text.as_str();
        if let Some((var, _)) = name.split_once('=') {
            if !var.is_empty()
                && var
                    .chars()
                    .all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
            {
                return Err(deny(seg, "assignment"));
            }
        }
        if REFUSED_BUILTINS.contains(&name) {
            return Err(deny(seg, name));
        }
        if SAFE_BUILTINS.contains(&name) {
            if !self.ctx.safe_builtins {
                return Err(deny(seg, format!("{name}: safe builtins are not enabled")));
            }
            return match name {
                "cd" => self.cd(c, cwd),
                "[" if c.words.last().map(|w| w.text.as_str()) != Some("]") => {
                    Err(deny(seg, "[ without ]"))
                }
                "test" | "[" => test_args(c),
                _ => Ok(()),
            };
        }
        if OTHER_BUILTINS.contains(&name) || MORE_BUILTINS.contains(&name) {
            return Err(deny(seg, format!("shell builtin {name}")));
        }
        if name == "printf"
            && c.words
                .get(1)
                .is_some_and(|w| w.dynamic || w.text.starts_with("-v"))
        {
            return Err(deny(seg, "printf -v (assigns, evaluating subscripts)"));
        }
        let argv: Vec<String> = c.words.iter().map(|w| w.text.clone()).collect();
        if wrapped_script(&argv).is_some() {
            let script_dynamic = c.words.iter().skip(1).any(|w| w.dynamic);
            if script_dynamic {
                return Err(deny(seg, "nested shell script needs expansion"));
            }
        }
        self.run(first, &argv, cwd, depth, seg)
    }

    fn cd(&self, c: &Command, cwd: &mut Cwd) -> Result<(), Denied> {
        let seg = c.source.as_str();
        let target = match c.words.get(1) {
            None => self.ctx.home.clone(),
            Some(w) if w.dynamic => return Err(deny(seg, "dynamic cd (argument needs expansion)")),
            Some(w) if w.text == "-" => return Err(deny(seg, "cd -")),
            Some(w) if w.tilde => {
                let rest = w.text.trim_start_matches('~').trim_start_matches('/');
                if w.text.len() > 1 && !w.text.starts_with("~/") {
                    return Err(deny(seg, "cd ~user"));
                }
                self.ctx.home.join(rest)
            }
            Some(w) if w.text.starts_with('/') => PathBuf::from(&w.text),
            Some(_) if self.ctx.env.iter().any(|e| e.starts_with("CDPATH=")) => {
                return Err(deny(seg, "relative cd with CDPATH set"))
            }
            Some(w) => cwd.get(seg, "a relative cd")?.join(&w.text),
        };
        let real = self
            .fs
            .resolve(&normalize(&target))
            .filter(|p| self.fs.is_dir(p))
            .ok_or_else(|| {
                deny(
                    seg,
                    format!(
                        "cd: {} is not a directory in the container",
                        target.display()
                    ),
                )
            })?;
        *cwd = Cwd::Known(real);
        Ok(())
    }
}

/// `test`/`[` arguments: literal words only (a word expanding to `-v` would evaluate its
/// operand), and operators from the harmless list.
fn test_args(c: &Command) -> Result<(), Denied> {
    let seg = c.source.as_str();
    let args = &c.words[1..];
    let args = match c.words[0].text.as_str() {
        "[" => &args[..args.len().saturating_sub(1)],
        _ => args,
    };
    for w in args {
        if w.dynamic {
            return Err(deny(seg, "test with an argument that needs expansion"));
        }
        if w.text.starts_with('-') && w.text.len() > 1 && !TEST_OPERATORS.contains(&w.text.as_str())
        {
            return Err(deny(seg, format!("test operator {}", w.text)));
        }
    }
    Ok(())
}

/// A container root seen through a host path prefix (`/proc/<init>/root`, or a directory in
/// tests). Symlinks are resolved here, component by component, against the prefix, so an
/// absolute link target or `..` never leaves the container's root.
pub struct PrefixFs {
    pub prefix: PathBuf,
    /// The container's Landlock grants, when Landlock holds its processes: a path is writable
    /// only where one gives `w`.
    pub grants: Option<Vec<crate::layout::Grant>>,
}

const MAX_LINKS: usize = 40;

impl PrefixFs {
    fn host(&self, p: &Path) -> PathBuf {
        self.prefix.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// The first `cap` bytes of a regular file of the container, opened without leaving its
    /// root (the workload may swap a link in meanwhile) and never a device or FIFO.
    pub fn read_file(&self, path: &Path, cap: u64) -> Option<Vec<u8>> {
        use std::io::Read;
        use std::os::fd::{AsFd, AsRawFd};
        let root = pathrs::Root::from_fd(std::fs::File::open(&self.prefix).ok()?);
        let handle = root.resolve(path).ok()?;
        let st = nix::sys::stat::fstat(handle.as_fd().as_raw_fd()).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        let file = handle
            .reopen(pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_NONBLOCK)
            .ok()?;
        let mut buf = Vec::new();
        file.take(cap).read_to_end(&mut buf).ok()?;
        Some(buf)
    }

    /// Resolve `path` as `resolve` does, returning also every directory a name was looked up
    /// in, in order.
    fn walk(&self, path: &Path) -> (Option<PathBuf>, Vec<PathBuf>) {
        let mut todo: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .rev()
            .collect();
        let mut done = PathBuf::from("/");
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                done.pop();
                continue;
            }
            dirs.push(done.clone());
            let next = done.join(&name);
            let Ok(md) = std::fs::symlink_metadata(self.host(&next)) else {
                return (None, dirs);
            };
            if md.file_type().is_symlink() {
                links += 1;
                let target = match std::fs::read_link(self.host(&next)) {
                    Ok(t) if links <= MAX_LINKS => t,
                    _ => return (None, dirs),
                };
                if target.is_absolute() {
                    done = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_string_lossy().into_owned()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            } else {
                done = next;
            }
        }
        (Some(done), dirs)
    }
}

impl ContainerFs for PrefixFs {
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
        self.walk(path).0
    }

    fn is_executable_file(&self, path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(self.host(path))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }

    fn is_dir(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(self.host(path)).is_ok_and(|m| m.is_dir())
    }

    fn file_id(&self, path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.host(path))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }

    fn writable(&self, path: &Path) -> bool {
        // The file the shell would open, or the directory it would be created in.
        let target = std::iter::once(path)
            .chain(path.ancestors().skip(1))
            .find_map(|p| self.resolve(&normalize(p)))
            .unwrap_or_else(|| PathBuf::from("/"));
        let mount_rw = nix::sys::statvfs::statvfs(&self.host(&target))
            .is_ok_and(|v| !v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        let landlock_w = self.grants.as_ref().is_none_or(|grants| {
            grants.iter().any(|g| {
                g.rights.has(crate::layout::Rights::W)
                    && (g.path == target || (g.dir && target.starts_with(&g.path)))
            })
        });
        mount_rw && landlock_w
    }

    fn controllable(&self, path: &Path) -> bool {
        let (resolved, mut dirs) = self.walk(path);
        dirs.dedup();
        dirs.iter().any(|d| self.writable(d)) || resolved.is_some_and(|r| self.writable(&r))
    }

    fn is_loader(&self, path: &Path) -> bool {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let loader_name = |n: &str| {
            n.starts_with("ld-linux") || n.starts_with("ld-musl") || n.starts_with("ld64.so")
        };
        if loader_name(&name) {
            return true;
        }
        // A copy under another name is still the loader: its ELF names itself.
        self.read_file(path, 4 << 20)
            .and_then(|b| {
                goblin::elf::Elf::parse(&b)
                    .ok()
                    .and_then(|e| e.soname.map(str::to_string))
            })
            .is_some_and(|so| loader_name(&so))
    }

    fn list_dir(&self, dir: &Path) -> Vec<PathBuf> {
        let Some(real) = self.resolve(dir) else {
            return Vec::new();
        };
        std::fs::read_dir(self.host(&real))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| real.join(e.file_name()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::{symlink, PermissionsExt};

    type Root = TempDir;

    /// A container tree: busybox-style multi-call binary, git, curl, a tool dir, a home.
    fn root() -> Root {
        let root = TempDir::new("nemo-gate");
        let r = root.0.clone();
        for d in [
            "bin",
            "usr/bin",
            "opt/tools",
            "tmp/bin",
            "home/agent",
            "etc",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in [
            "bin/busybox",
            "usr/bin/git",
            "usr/bin/curl",
            "usr/bin/bash",
            "opt/tools/tool",
            "tmp/tool",
            "usr/bin/head",
        ] {
            std::fs::write(r.join(f), "x").unwrap();
            std::fs::set_permissions(r.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(r.join("etc/notexec"), "x").unwrap();
        for applet in ["sh", "ls", "cat"] {
            symlink("busybox", r.join("bin").join(applet)).unwrap();
        }
        symlink("/usr/bin/git", r.join("usr/bin/git-link")).unwrap();
        symlink("../../../../../usr/bin/curl", r.join("tmp/bin/escape")).unwrap();
        root
    }

    fn run(r: &Root, allow: &[&str], argv: &[&str]) -> Result<Allowed, Denied> {
        run_in(r, allow, argv, "/tmp", true, Some("/usr/bin:/bin"))
    }

    fn run_in(
        r: &Root,
        allow: &[&str],
        argv: &[&str],
        cwd: &str,
        safe: bool,
        path: Option<&str>,
    ) -> Result<Allowed, Denied> {
        run_with(r, allow, argv, cwd, safe, path, &[], Some(Vec::new()))
    }

    /// `grants`: the Landlock grants (none: nothing writable), or `None` for no Landlock.
    #[allow(clippy::too_many_arguments)]
    fn run_with(
        r: &Root,
        allow: &[&str],
        argv: &[&str],
        cwd: &str,
        safe: bool,
        path: Option<&str>,
        exec_env: &[&str],
        grants: Option<Vec<crate::layout::Grant>>,
    ) -> Result<Allowed, Denied> {
        let env = Env {
            exec: exec_env,
            all: exec_env,
            stdin_socket: false,
        };
        run_env(r, allow, argv, cwd, safe, path, env, grants)
    }

    /// The exec's environment: what the request sets, all of it, and whether stdin is a
    /// socket.
    #[derive(Clone, Copy)]
    struct Env<'a> {
        exec: &'a [&'a str],
        all: &'a [&'a str],
        stdin_socket: bool,
    }

    #[allow(clippy::too_many_arguments)]
    fn run_env(
        r: &Root,
        allow: &[&str],
        argv: &[&str],
        cwd: &str,
        safe: bool,
        path: Option<&str>,
        env: Env,
        grants: Option<Vec<crate::layout::Grant>>,
    ) -> Result<Allowed, Denied> {
        let allowlist: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let fs = PrefixFs {
            prefix: r.0.clone(),
            grants,
        };
        let shells = crate::execgate::shell_ids(&fs, &["/usr/bin/bash".to_string()]);
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let (exec_env, all_env) = (owned(env.exec), owned(env.all));
        let ctx = Context {
            allowlist: &allowlist,
            safe_builtins: safe,
            path_var: path,
            cwd: PathBuf::from(cwd),
            home: PathBuf::from("/home/agent"),
            shells: &shells,
            exec_env: &exec_env,
            env: &all_env,
            stdin_socket: env.stdin_socket,
        };
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        evaluate(&argv, &ctx, &fs)
    }

    fn grant(path: &str) -> crate::layout::Grant {
        crate::layout::Grant {
            pinned: None,
            path: PathBuf::from(path),
            rights: crate::layout::Rights::ALL,
            dir: true,
        }
    }

    #[test]
    fn scripts_cannot_evaluate_code_through_builtins() {
        let r = root();
        let sh = |script: &str| run(&r, &["/usr/bin/**"], &["sh", "-c", script]);
        assert!(sh("[ -d /tmp ] && test -n x && git status").is_ok());
        for (script, why) in [
            ("[ -v 'a[$(id)]' ]", "test operator -v"),
            ("test -R x", "test operator -R"),
            ("[ \"$X\" ]", "needs expansion"),
            ("[ $X = y ]", "needs expansion"),
            ("printf -v 'a[1]' x", "printf -v"),
            ("printf \"$F\" x", "printf -v"),
            ("read a", "shell builtin read"),
            ("declare -a x", "shell builtin declare"),
            ("kill 1", "shell builtin kill"),
            ("command git", "shell builtin command"),
        ] {
            let e = denied(sh(script));
            assert!(e.contains(why), "{script}: {e}");
        }
        assert!(
            sh("printf '%s' x && git status").is_err(),
            "printf is not a file here"
        );
    }

    #[test]
    fn injected_variables_are_refused_by_family() {
        let r = root();
        for var in [
            "LD_AUDIT=/tmp/a.so",
            "BASH_FUNC_git%%=() { id; }",
            "GCONV_PATH=/tmp",
            "PYTHONPATH=/tmp",
            "NODE_OPTIONS=--require /tmp/x",
            "PERL5OPT=-Mx",
            "JAVA_TOOL_OPTIONS=-javaagent:/tmp/x",
            "SSH_CLIENT=1 2 3",
        ] {
            let env = Env {
                exec: &[var],
                all: &[var],
                stdin_socket: false,
            };
            let e = denied(run_env(
                &r,
                GIT,
                &["git"],
                "/",
                true,
                None,
                env,
                Some(vec![]),
            ));
            assert!(e.contains(var.split('=').next().unwrap()), "{var}: {e}");
        }
        // The container's own value is the operator's.
        let env = Env {
            exec: &[],
            all: &["LD_LIBRARY_PATH=/opt/lib"],
            stdin_socket: false,
        };
        assert!(run_env(&r, GIT, &["git"], "/", true, None, env, Some(vec![])).is_ok());
    }

    #[test]
    fn bash_started_as_if_by_sshd_reads_bashrc() {
        let r = root();
        let home_w = Some(vec![grant("/home/agent")]);
        let plain = Env {
            exec: &[],
            all: &[],
            stdin_socket: false,
        };
        let cmd = &["bash", "-c", "git"];
        assert!(run_env(&r, GIT, cmd, "/", true, None, plain, home_w.clone()).is_ok());
        let ssh = Env {
            all: &["SSH_CLIENT=10.0.0.1 1 22"],
            ..plain
        };
        let socket = Env {
            stdin_socket: true,
            ..plain
        };
        for env in [ssh, socket] {
            let e = denied(run_env(&r, GIT, cmd, "/", true, None, env, home_w.clone()));
            assert!(e.contains("/home/agent/"), "{e}");
        }
    }

    #[test]
    fn files_the_container_can_change_are_not_trusted() {
        let r = root();
        // A startup file linking into a writable directory can be swapped.
        symlink("/tmp/profile", r.0.join("home/agent/.profile")).unwrap();
        std::fs::write(r.0.join("tmp/profile"), "x").unwrap();
        let tmp_w = Some(vec![grant("/tmp")]);
        let login = &["bash", "-lc", "git"];
        let e = denied(run_with(
            &r,
            GIT,
            login,
            "/",
            true,
            None,
            &[],
            tmp_w.clone(),
        ));
        assert!(e.contains("/home/agent/.profile"), "{e}");
        assert!(run_with(&r, GIT, login, "/", true, None, &[], Some(vec![])).is_ok());
        // An allowlisted program in a writable directory.
        let tool = &["/tmp/tool"];
        let e = denied(run_with(
            &r,
            tool,
            &["/tmp/tool"],
            "/",
            true,
            None,
            &[],
            tmp_w.clone(),
        ));
        assert!(e.contains("can be changed"), "{e}");
        // Reached through a link in a writable directory, it can be swapped too.
        symlink("/usr/bin/git", r.0.join("tmp/bin/git")).unwrap();
        let e = denied(run_with(
            &r,
            GIT,
            &["/tmp/bin/git"],
            "/",
            true,
            None,
            &[],
            tmp_w.clone(),
        ));
        assert!(e.contains("can be changed"), "{e}");
        assert!(run_with(&r, GIT, &["/usr/bin/git"], "/", true, None, &[], tmp_w).is_ok());
        // CDPATH would move a relative cd elsewhere.
        let env = Env {
            exec: &[],
            all: &["CDPATH=/tmp"],
            stdin_socket: false,
        };
        let e = denied(run_env(
            &r,
            &["/opt/tools/tool"],
            &["sh", "-c", "cd tools && ./tool"],
            "/opt",
            true,
            None,
            env,
            Some(vec![]),
        ));
        assert!(e.contains("CDPATH"), "{e}");
    }

    fn denied(res: Result<Allowed, Denied>) -> String {
        res.unwrap_err().reason
    }

    const GIT: &[&str] = &["**/git"];

    #[test]
    fn spec_table() {
        let r = root();
        assert!(run(&r, GIT, &["sh", "-c", "cd ~/"]).is_ok());
        assert!(run(&r, GIT, &["sh", "-c", "cd /tmp && git status"]).is_ok());
        assert!(run(&r, GIT, &["sh", "-c", "test -d /tmp && git status"]).is_ok());
        assert!(run(&r, GIT, &["sh", "-c", "[ -d /tmp ] && git status"]).is_ok());
        assert!(denied(run(&r, GIT, &["sh", "-c", "cd /tmp && curl evil.com"])).contains("curl"));
        assert_eq!(
            denied(run(
                &r,
                GIT,
                &["sh", "-c", "export PATH=/tmp/bin:$PATH && git status"]
            )),
            "export"
        );
        assert!(denied(run(&r, &[], &["pwd"])).contains("not found"));
        assert!(run(
            &r,
            &["/opt/tools/tool"],
            &["sh", "-c", "cd /opt/tools && ./tool"]
        )
        .is_ok());
        assert!(run(&r, &["/tmp/tool"], &["sh", "-c", "cd /opt/tools && ./tool"]).is_err());
        assert!(denied(run(&r, GIT, &["sh", "-c", "cd $HOME && ./x"])).contains("dynamic cd"));
        assert!(denied(run(&r, GIT, &["sh", "-c", "CD /tmp"])).contains("CD: not found"));
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "echo \"$(whoami)\""])),
            "command substitution"
        );
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "FOO=1 git status"])),
            "assignment"
        );
        assert!(denied(run(&r, GIT, &["sh", "-c", "git status | head"])).contains("head"));
        assert!(run(&r, GIT, &["bash", "-lc", "git status"]).is_ok());
    }

    #[test]
    fn more_cases() {
        let r = root();
        // Direct argv: the resolved file must match; builtins do not count outside a shell.
        assert_eq!(
            run(&r, GIT, &["git", "log"]).unwrap().executables,
            [PathBuf::from("/usr/bin/git")]
        );
        assert!(
            run(&r, GIT, &["/usr/bin/git-link"]).is_ok(),
            "a symlink resolves to git"
        );
        assert!(run(&r, GIT, &["curl"]).is_err());
        assert!(
            run(&r, &["**/curl"], &["/tmp/bin/escape"]).is_ok(),
            "`..` stops at the root"
        );
        assert!(
            run(&r, &["/etc/notexec"], &["/etc/notexec"]).is_err(),
            "not executable"
        );
        // Multi-call binaries: every applet is the one file.
        assert_eq!(
            run(&r, &["/bin/busybox"], &["ls"]).unwrap().executables,
            [PathBuf::from("/bin/busybox")]
        );
        assert!(
            run(&r, &["/bin/ls"], &["ls"]).is_err(),
            "patterns match the resolved file"
        );
        // Quoting hides operators; escaped operators are words.
        assert!(run(&r, GIT, &["sh", "-c", "git commit -m 'x && curl evil'"]).is_ok());
        assert!(run(&r, GIT, &["sh", "-c", "git log a\\&\\&curl"]).is_ok());
        assert!(run(&r, GIT, &["sh", "-c", "git status # ; curl evil"]).is_ok());
        assert!(run(&r, GIT, &["sh", "-c", "git status; curl evil"]).is_err());
        assert!(run(&r, GIT, &["sh", "-c", "git status || curl evil"]).is_err());
        assert!(run(&r, GIT, &["sh", "-c", "git status\ncurl evil"]).is_err());
        assert!(run(&r, GIT, &["sh", "-c", "'cu'rl x"]).is_err());
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "[ -d /tmp && git status"])),
            "[ without ]"
        );
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "cat <<EOF\nx\nEOF"])),
            "heredoc"
        );
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "git status > /tmp/x"])),
            "redirection"
        );
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "(git status)"])),
            "subshell"
        );
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "git status &"])),
            "background job (&)"
        );
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "eval git status"])),
            "eval"
        );
        assert_eq!(denied(run(&r, GIT, &["sh", "-c", ". /tmp/x"])), ".");
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "source /tmp/x"])),
            "source"
        );
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "unset PATH; git"])),
            "unset"
        );
        assert_eq!(
            denied(run(&r, GIT, &["sh", "-c", "alias git=curl"])),
            "alias"
        );
        assert_eq!(denied(run(&r, GIT, &["sh", "-c", "exec curl"])), "exec");
        assert!(denied(run(&r, GIT, &["sh", "-c", "$CMD"])).contains("needs expansion"));
        assert!(denied(run(&r, GIT, &["sh", "-c", "cd -"])).contains("cd -"));
        // cd chains: `..` and relative paths move the cwd used for later commands.
        assert!(run(
            &r,
            &["/opt/tools/tool"],
            &["sh", "-c", "cd /opt && cd tools && ./tool"]
        )
        .is_ok());
        assert!(run(
            &r,
            &["/opt/tools/tool"],
            &["sh", "-c", "cd /opt/tools/../tools && ./tool"]
        )
        .is_ok());
        assert!(run(
            &r,
            &["/tmp/tool"],
            &["sh", "-c", "cd /opt/tools && cd .. && cd ../tmp && ./tool"]
        )
        .is_ok());
        assert!(run(&r, GIT, &["sh", "-c", "cd /nonexistent && git status"]).is_err());
        assert!(
            run(&r, GIT, &["sh", "-c", "cd && git status"]).is_ok(),
            "cd alone goes home"
        );
        // Builtins are case-sensitive and only count with safe_builtins on.
        assert!(run(&r, GIT, &["sh", "-c", "TRUE"]).is_err());
        assert!(run_in(
            &r,
            GIT,
            &["sh", "-c", "true && git status"],
            "/tmp",
            false,
            None
        )
        .is_err());
        // PATH-less environment: runc's default PATH.
        assert!(run_in(&r, GIT, &["git"], "/", true, None).is_ok());
        // PATH order decides which file runs.
        assert!(run_in(
            &r,
            &["/tmp/tool"],
            &["tool"],
            "/",
            true,
            Some("/tmp:/opt/tools")
        )
        .is_ok());
        assert!(run_in(
            &r,
            &["/tmp/tool"],
            &["tool"],
            "/",
            true,
            Some("/opt/tools:/tmp")
        )
        .is_err());
        // Nested wrappers to depth 3, and `busybox sh -c`.
        assert!(run(&r, GIT, &["sh", "-c", "bash -c 'sh -c \"git status\"'"]).is_ok());
        assert!(
            denied(run(&r, GIT, &["sh", "-c", "sh -c 'sh -c \"sh -c git\"'"]))
                .contains("deeper than 3")
        );
        assert!(run(&r, GIT, &["busybox", "sh", "-c", "git status"]).is_ok());
        assert!(run(&r, GIT, &["sh", "-c", "sh -c \"$X\""]).is_err());
        // A shell without -c is a program like any other.
        assert!(run(&r, GIT, &["sh", "/tmp/script"]).is_err());
        let ok = run(&r, GIT, &["sh", "-c", "git status"]).unwrap();
        assert_eq!(ok.shells, [PathBuf::from("/bin/busybox")]);
    }

    #[test]
    fn wrappers_are_recognised_by_file_not_name() {
        let r = root();
        // A file the workload wrote, named like a shell: a plain program, not on the list.
        std::fs::write(r.0.join("tmp/sh"), "#!/bin/sh\ncurl evil\n").unwrap();
        std::fs::set_permissions(r.0.join("tmp/sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert!(
            denied(run(&r, GIT, &["/tmp/sh", "-c", "true"])).contains("not in the exec allowlist")
        );
        assert!(run(&r, GIT, &["/tmp/sh", "-c", "git --version"]).is_err());
        // A link named sh to another program.
        symlink("/usr/bin/curl", r.0.join("tmp/bin/sh")).unwrap();
        assert!(denied(run_in(
            &r,
            GIT,
            &["./bin/sh", "-c", "git"],
            "/tmp",
            true,
            None
        ))
        .contains("curl"));
        // The real one still wraps.
        assert!(run(&r, GIT, &["/bin/sh", "-c", "git --version"]).is_ok());
        assert!(run(&r, GIT, &["sh", "-c", "git --version"]).is_ok());
    }

    #[test]
    fn tilde_braces_and_uncertain_cd() {
        let r = root();
        // `~/bin/git` is the home's, not a planted `./~/bin/git`.
        std::fs::create_dir_all(r.0.join("tmp/~/bin")).unwrap();
        std::fs::write(r.0.join("tmp/~/bin/git"), "x").unwrap();
        std::fs::set_permissions(
            r.0.join("tmp/~/bin/git"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(denied(run(&r, &["/tmp/**"], &["sh", "-c", "~/bin/git"])).contains("not found"));
        assert!(run(&r, GIT, &["sh", "-c", "git {status,log}"]).is_err());
        // A cd that may not have run leaves the working directory unknown.
        let tool = &["/opt/tools/tool"];
        assert!(denied(run(&r, tool, &["sh", "-c", "cd /opt/tools | ./tool"])).contains("unknown"));
        assert!(denied(run(
            &r,
            tool,
            &["sh", "-c", "false && cd /opt/tools; ./tool"]
        ))
        .contains("unknown"));
        assert!(run(&r, tool, &["sh", "-c", "cd /opt/tools || ./tool"]).is_err());
        assert!(run(&r, tool, &["sh", "-c", "false || cd /opt/tools && ./tool"]).is_err());
        assert!(run(
            &r,
            tool,
            &["sh", "-c", "test -d /opt && cd /opt/tools && ./tool"]
        )
        .is_ok());
        assert!(run(&r, tool, &["sh", "-c", "cd /opt/tools && ./tool"]).is_ok());
        // Absolute names do not depend on the working directory.
        assert!(run(&r, GIT, &["sh", "-c", "cd /opt/tools; git status"]).is_ok());
    }

    #[test]
    fn startup_files_loader_and_injected_environment() {
        let r = root();
        let home_w = vec![crate::layout::Grant {
            pinned: None,
            path: PathBuf::from("/home/agent"),
            rights: crate::layout::Rights::ALL,
            dir: true,
        }];
        let login = &["bash", "-lc", "git --version"];
        assert!(run(&r, GIT, login).is_ok(), "nothing writable");
        let e = denied(run_with(
            &r,
            GIT,
            login,
            "/",
            true,
            None,
            &[],
            Some(home_w.clone()),
        ));
        assert!(e.contains("/home/agent/.bash_profile"), "{e}");
        assert!(run_with(
            &r,
            GIT,
            &["bash", "-c", "git"],
            "/",
            true,
            None,
            &[],
            Some(home_w)
        )
        .is_ok());
        assert!(run(&r, GIT, &["bash", "-ic", "git"]).is_ok());
        for var in [
            "LD_PRELOAD=/tmp/x.so",
            "BASH_ENV=/tmp/x",
            "LD_LIBRARY_PATH=/tmp",
            "PS4=x",
        ] {
            let e = denied(run_with(
                &r,
                GIT,
                &["git"],
                "/",
                true,
                None,
                &[var],
                Some(Vec::new()),
            ));
            assert!(e.contains(var.split('=').next().unwrap()), "{e}");
        }
        std::fs::create_dir_all(r.0.join("lib64")).unwrap();
        std::fs::write(r.0.join("lib64/ld-linux-x86-64.so.2"), "x").unwrap();
        std::fs::set_permissions(
            r.0.join("lib64/ld-linux-x86-64.so.2"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let e = denied(run(
            &r,
            &["/**"],
            &["/lib64/ld-linux-x86-64.so.2", "/tmp/x"],
        ));
        assert!(e.contains("dynamic loader"), "{e}");
    }

    #[test]
    fn one_applet_of_a_multi_call_binary() {
        // The documented way: give the applet its own file at its own path, allowlist that.
        let r = root();
        std::fs::create_dir_all(r.0.join("usr/local/bin")).unwrap();
        std::fs::copy(r.0.join("bin/busybox"), r.0.join("usr/local/bin/ls")).unwrap();
        let only_ls = &["/usr/local/bin/ls"];
        let path = Some("/usr/local/bin:/bin");
        assert!(run_in(&r, only_ls, &["ls", "-l"], "/", true, path).is_ok());
        assert!(run_in(&r, only_ls, &["cat", "/etc/x"], "/", true, path).is_err());
        assert!(run_in(&r, only_ls, &["/bin/ls"], "/", true, path).is_err());
        assert!(run_in(&r, only_ls, &["busybox", "ls"], "/", true, path).is_err());
    }
}
