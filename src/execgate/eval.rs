//! The gate's decision (SPEC §9): every program a direct argv or a shell wrapper's script
//! would start is resolved inside the container (PATH, cwd and `cd`, symlinks within the
//! root) and must match the allowlist; shell scripts may also use the safe builtins.

use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::shell::{self, Command};

use crate::executor::DEFAULT_PATH;
const SHELLS: [&str; 4] = ["sh", "bash", "dash", "ash"];
const SAFE_BUILTINS: [&str; 7] = [":", "true", "false", "pwd", "cd", "test", "["];
const REFUSED_BUILTINS: [&str; 7] = ["eval", "source", ".", "export", "unset", "alias", "exec"];
const MAX_DEPTH: usize = 3;

/// The container's file tree, as the gate needs it.
pub trait ContainerFs {
    /// The real path of `path` (absolute, in the container), symlinks followed without
    /// leaving the root; `None` if it does not exist.
    fn resolve(&self, path: &Path) -> Option<PathBuf>;
    fn is_executable_file(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
}

pub struct Context<'a> {
    pub allowlist: &'a [String],
    pub safe_builtins: bool,
    /// PATH of the exec process's environment.
    pub path_var: Option<&'a str>,
    pub cwd: PathBuf,
    pub home: PathBuf,
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

struct Gate<'a> {
    ctx: &'a Context<'a>,
    fs: &'a dyn ContainerFs,
    allow: GlobSet,
    out: Allowed,
}

/// Decide an exec of `argv`.
pub fn evaluate(argv: &[String], ctx: &Context, fs: &dyn ContainerFs) -> Result<Allowed, Denied> {
    let mut g = Gate {
        ctx,
        fs,
        allow: allowlist_set(ctx.allowlist),
        out: Allowed::default(),
    };
    let Some(first) = argv.first() else {
        return Err(deny("", "empty command"));
    };
    g.argv(argv, ctx.cwd.clone(), 0, first)?;
    g.out.executables.sort();
    g.out.executables.dedup();
    g.out.shells.sort();
    g.out.shells.dedup();
    Ok(g.out)
}

/// `sh -c SCRIPT …`, `bash -lc …`, `busybox sh -c …`: the script, if `argv` is a wrapper.
fn wrapped_script(argv: &[String]) -> Option<&str> {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let mut i = 0;
    if base(&argv[0]) == "busybox" && argv.len() > 1 && SHELLS.contains(&argv[1].as_str()) {
        i = 1;
    }
    if !SHELLS.contains(&base(&argv[i]).as_str()) {
        return None;
    }
    let mut j = i + 1;
    let mut has_c = false;
    while let Some(opt) = argv.get(j) {
        let Some(flags) = opt.strip_prefix('-') else {
            break;
        };
        if flags.is_empty() || !flags.chars().all(|c| c == 'l' || c == 'c') {
            return None;
        }
        has_c |= flags.contains('c');
        j += 1;
    }
    if !has_c {
        return None;
    }
    argv.get(j).map(|s| s.as_str())
}

impl Gate<'_> {
    /// Resolve a command name as the shell would: with a `/` relative to `cwd`, else PATH.
    fn resolve_command(&self, name: &str, cwd: &Path) -> Option<PathBuf> {
        if name.contains('/') {
            let p = if name.starts_with('/') {
                PathBuf::from(name)
            } else {
                cwd.join(name)
            };
            return self
                .fs
                .resolve(&normalize(&p))
                .filter(|r| self.fs.is_executable_file(r));
        }
        let path_var = self.ctx.path_var.unwrap_or(DEFAULT_PATH);
        path_var.split(':').find_map(|dir| {
            let dir = if dir.is_empty() {
                cwd.to_path_buf()
            } else {
                cwd.join(dir)
            };
            self.fs
                .resolve(&normalize(&dir.join(name)))
                .filter(|r| self.fs.is_executable_file(r))
        })
    }

    fn argv(
        &mut self,
        argv: &[String],
        cwd: PathBuf,
        depth: usize,
        segment: &str,
    ) -> Result<(), Denied> {
        let resolved = self
            .resolve_command(&argv[0], &cwd)
            .ok_or_else(|| deny(segment, format!("{}: not found in the container", argv[0])))?;
        if let Some(script) = wrapped_script(argv) {
            if depth >= MAX_DEPTH {
                return Err(deny(
                    segment,
                    format!("shell wrappers nested deeper than {MAX_DEPTH}"),
                ));
            }
            self.out.shells.push(resolved);
            let commands = shell::parse(script).map_err(|r| deny(&r.at, r.construct))?;
            let mut cwd = cwd;
            for c in &commands {
                self.command(c, &mut cwd, depth + 1)?;
            }
            return Ok(());
        }
        if self.allow.is_match(&resolved) {
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

    fn command(&mut self, c: &Command, cwd: &mut PathBuf, depth: usize) -> Result<(), Denied> {
        let seg = c.source.as_str();
        let first = &c.words[0];
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
                _ => Ok(()),
            };
        }
        let argv: Vec<String> = c.words.iter().map(|w| w.text.clone()).collect();
        if wrapped_script(&argv).is_some() {
            let script_dynamic = c.words.iter().skip(1).any(|w| w.dynamic);
            if script_dynamic {
                return Err(deny(seg, "nested shell script needs expansion"));
            }
        }
        self.argv(&argv, cwd.clone(), depth, seg)
    }

    fn cd(&self, c: &Command, cwd: &mut PathBuf) -> Result<(), Denied> {
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
            Some(w) => cwd.join(&w.text),
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
        *cwd = real;
        Ok(())
    }
}

/// A container root seen through a host path prefix (`/proc/<init>/root`, or a directory in
/// tests). Symlinks are resolved here, component by component, against the prefix, so an
/// absolute link target or `..` never leaves the container's root.
pub struct PrefixFs {
    pub prefix: PathBuf,
}

const MAX_LINKS: usize = 40;

impl PrefixFs {
    fn host(&self, p: &Path) -> PathBuf {
        self.prefix.join(p.strip_prefix("/").unwrap_or(p))
    }
}

impl ContainerFs for PrefixFs {
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
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
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                done.pop();
                continue;
            }
            let next = done.join(&name);
            let md = std::fs::symlink_metadata(self.host(&next)).ok()?;
            if md.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                let target = std::fs::read_link(self.host(&next)).ok()?;
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
        Some(done)
    }

    fn is_executable_file(&self, path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(self.host(path))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }

    fn is_dir(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(self.host(path)).is_ok_and(|m| m.is_dir())
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
        let allowlist: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let ctx = Context {
            allowlist: &allowlist,
            safe_builtins: safe,
            path_var: path,
            cwd: PathBuf::from(cwd),
            home: PathBuf::from("/home/agent"),
        };
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        evaluate(
            &argv,
            &ctx,
            &PrefixFs {
                prefix: r.0.clone(),
            },
        )
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
