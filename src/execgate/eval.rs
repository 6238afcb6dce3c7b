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
pub(super) fn normalize(p: &Path) -> PathBuf {
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

#[cfg(test)]
mod tests;
