use super::*;
use crate::execgate::PrefixFs;
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
    let fs = PrefixFs::new(&r.0, grants);
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
    std::fs::set_permissions(r.0.join("tmp/sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(denied(run(&r, GIT, &["/tmp/sh", "-c", "true"])).contains("not in the exec allowlist"));
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
