//! The exec gate end to end: refused chains print the reason, write an audit event
//! and start nothing; allowed chains run; and an allowed process cannot start a program
//! outside the list even when the parser never saw it (Landlock execute rights).

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

/// An image with an allowlisted `tool` (a script that tries to run `other`) and `other`, a
/// program that is not on the list.
fn bundle() -> Bundle {
    let b = Bundle::busybox(&["sleep", "1000"]);
    let r = b.path().join("rootfs");
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    install_binary(common::probe::probe(), &r.join("usr/bin/other"));
    std::fs::write(
        r.join("usr/bin/tool"),
        "#!/bin/sh\necho tool-ran\n/usr/bin/other memfd\necho other-rc=$?\n",
    )
    .unwrap();
    std::fs::set_permissions(
        r.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    b
}

/// A read-only policy, with an exec gate allowing /usr/bin/tool when `exec_policy`.
fn gate_policy(rt: &Runtime, exec_policy: bool) -> String {
    let gate = if exec_policy {
        "exec_policy:\n  allowlist:\n    - { pattern: /usr/bin/tool }\n  safe_builtins: true\n"
    } else {
        ""
    };
    policy(
        rt,
        &format!("version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n{gate}"),
    )
}

fn started(rt: &Runtime, pol: &str, b: &Bundle) -> String {
    let id = unique("gate");
    rt.ok(&create_args(pol, b, &id));
    rt.ok(&["start", &id]);
    id
}

#[test]
fn refused_execs_start_nothing_and_say_why() {
    let rt = Runtime::new();
    let pol = gate_policy(&rt, true);
    let b = bundle();
    let id = started(&rt, &pol, &b);
    let before = processes_of(&id);
    for (script, want) in [
        ("cd /tmp && other memfd", "exec denied by policy: other memfd: other (/usr/bin/other) is not in the exec allowlist"),
        ("echo \"$(id)\"", "exec denied by policy: echo \"$(id)\": command substitution"),
        ("FOO=1 tool", "exec denied by policy: FOO=1 tool: assignment"),
        ("cd $HOME && tool", "dynamic cd"),
        ("tool > /tmp/x", "redirection"),
    ] {
        let out = rt.run(&["exec", &id, "sh", "-c", script]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{script}");
        assert!(err.contains(want), "{script}: {err}");
        assert_eq!(processes_of(&id), before, "{script}: a process was started");
    }
    // Direct argv: builtins do not count, the program must be on the list.
    let err = rt.fails(&["exec", &id, "/usr/bin/other", "memfd"]);
    assert!(err.contains("is not in the exec allowlist"), "{err}");
    let audit = std::fs::read_to_string(rt.audit_file(&id)).unwrap();
    assert!(
        audit
            .lines()
            .filter(|l| l.contains("\"kind\":\"exec\"") && l.contains("\"denied\""))
            .count()
            >= 6,
        "{audit}"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

#[test]
fn allowed_chains_run_but_cannot_start_other_programs() {
    let rt = Runtime::new();
    let b = bundle();
    // Without exec_policy, the tool's helper program runs.
    let pol = gate_policy(&rt, false);
    let id = started(&rt, &pol, &b);
    let out = rt.ok(&["exec", &id, "sh", "-c", "cd /tmp && tool"]);
    assert!(
        out.contains("tool-ran") && out.contains("other-rc=0"),
        "{out}"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);

    // With it: the chain is allowed, and the program the parser never saw is refused by
    // the kernel (execute rights only on the tool, its interpreter and the wrapping shell).
    let pol = gate_policy(&rt, true);
    let id = started(&rt, &pol, &b);
    let out = rt.ok(&["exec", &id, "sh", "-c", "cd /tmp && [ -d /tmp ] && tool"]);
    assert!(out.contains("tool-ran"), "{out}");
    assert!(out.contains("other-rc=126"), "{out}");
    let out = rt.ok(&["exec", &id, "ash", "-lc", "true"]);
    assert!(out.is_empty(), "{out}");
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

/// Scripts built at random from words, quotes, substitutions and operators: every script the
/// gate accepts is then run by a real shell with only logging stand-ins on PATH, and must not
/// have started anything off the list. Deterministic (fixed seed); prints how many it ran.
#[test]
fn accepted_scripts_run_only_allowlisted_programs_under_a_real_shell() {
    let dir = TempDir::new("gate-prop");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("log");
    for name in ["ok1", "ok2", "bad1", "bad2", "echo", "cat"] {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho {name} >> \"$LOG\"\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The wrapping shell, found on PATH like any command.
    std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).unwrap();
    let allowlist = vec![
        bin.join("ok1").to_string_lossy().into_owned(),
        bin.join("ok2").to_string_lossy().into_owned(),
    ];
    let path_var = bin.to_string_lossy().into_owned();
    // Landlock granting no writes: the host's own files count as unchangeable.
    let fs = nemosandbox::execgate::PrefixFs::new(std::path::Path::new("/"), Some(Vec::new()));
    let shells = nemosandbox::execgate::shell_ids(&fs, &[]);
    let ctx = nemosandbox::execgate::eval::Context {
        allowlist: &allowlist,
        safe_builtins: true,
        path_var: Some(&path_var),
        cwd: "/tmp".into(),
        home: "/tmp".into(),
        shells: &shells,
        exec_env: &[],
        env: &[],
        stdin_socket: false,
    };
    const CMDS: &[&str] = &[
        "ok1",
        "ok2",
        "bad1",
        "bad2",
        "echo",
        "cat",
        "true",
        "false",
        ":",
        "pwd",
        "cd /tmp",
        "cd",
        "test -n x",
        "[ x ]",
        "'ok1'",
        "o'k'1",
        "ok\\1",
        "\"bad1\"",
        "$X",
        "`bad1`",
        "$(bad1)",
        "ok1 $(bad2)",
        "X=1 ok1",
        "eval bad1",
        "ok1 > x",
        "(bad1)",
        "{ bad1; }",
        "ok*",
        "b?d1",
        "cd $HOME",
        "export X=1",
        "ok1 'a;bad1'",
        "ok1 \"b|bad2\"",
        "ok1 \\;bad1",
        "ok1 #; bad1",
        "sh -c 'bad1'",
        "sh -c 'ok1'",
        "sh -c \"ok2 && bad1\"",
        "TRUE",
        "Ok1",
    ];
    const OPS: &[&str] = &[" && ", " || ", "; ", " | ", "\n", " & ", " ", "\\\n", " # "];
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..1500 {
        let mut script = String::new();
        for i in 0..1 + next(5) {
            if i > 0 {
                script.push_str(OPS[next(OPS.len())]);
            }
            script.push_str(CMDS[next(CMDS.len())]);
        }
        let argv = vec!["sh".to_string(), "-c".to_string(), script.clone()];
        if nemosandbox::execgate::eval::evaluate(&argv, &ctx, &fs).is_err() {
            refused += 1;
            continue;
        }
        accepted += 1;
        let _ = std::fs::remove_file(&log);
        let out = output_within(
            {
                let mut c = std::process::Command::new("/bin/sh");
                c.args(["-c", &script])
                    .env_clear()
                    .env("PATH", &path_var)
                    .env("LOG", &log)
                    .current_dir("/tmp")
                    .stdin(std::process::Stdio::null());
                c
            },
            std::time::Duration::from_secs(10),
        );
        let ran = std::fs::read_to_string(&log).unwrap_or_default();
        for name in ran.lines() {
            assert!(
                name == "ok1" || name == "ok2",
                "accepted {script:?} ran {name} ({out:?})"
            );
        }
    }
    eprintln!("gate property: {accepted} scripts accepted and run, {refused} refused");
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}

/// The gate decides on files, not names, and on a working directory only when it is sure of
/// it: each attack from the red-team round is refused (and audited), beside an allowed twin.
#[test]
fn the_gate_cannot_be_walked_around() {
    let rt = Runtime::new();
    let pol = rt.root.path().join(format!("{}.yaml", unique("gate")));
    std::fs::write(
        &pol,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         exec_policy:\n  allowlist:\n    - { pattern: \"**/git\" }\n    - { pattern: /opt/tools/tool }\n  safe_builtins: true\n",
    )
    .unwrap();
    let b = bundle();
    let r = b.path().join("rootfs");
    for (f, body) in [
        ("usr/bin/git", "#!/bin/sh\necho git-ran\n"),
        ("opt/tools/tool", "#!/bin/sh\necho tool-ran\n"),
    ] {
        std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
        std::fs::write(r.join(f), body).unwrap();
        std::fs::set_permissions(r.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The dynamic loader, as images have it.
    b.edit(|c| {
        for p in ["/lib64", "/lib/x86_64-linux-gnu"] {
            c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
                "destination": p, "type": "bind", "source": p, "options": ["rbind", "ro"]
            }));
        }
    });
    let id = started(&rt, pol.to_str().unwrap(), &b);
    wait_until(|| rt.status(&id) == "running");
    // What the workload planted in its writable /tmp (done from the host: the gate would not
    // let these commands run).
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    let tmp = std::path::PathBuf::from(format!("/proc/{init}/root/tmp"));
    std::fs::write(tmp.join("sh"), "#!/bin/sh\necho workload-code\n").unwrap();
    std::fs::set_permissions(tmp.join("sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(tmp.join("link")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/other", tmp.join("link/sh")).unwrap();
    std::fs::create_dir_all(tmp.join("~/bin")).unwrap();
    std::fs::copy(r.join("usr/bin/git"), tmp.join("~/bin/git")).unwrap();
    std::fs::create_dir_all(tmp.join("x")).unwrap();
    std::fs::write(tmp.join("x/git"), "#!/bin/sh\necho workload-code\n").unwrap();
    std::fs::set_permissions(tmp.join("x/git"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let exec = |pre: &[&str], argv: &[&str]| {
        let mut a = vec!["exec"];
        a.extend_from_slice(pre);
        a.push(&id);
        a.extend_from_slice(argv);
        rt.run(&a)
    };
    let refused: &[(&[&str], &[&str], &str)] = &[
        (
            &[],
            &["/tmp/sh", "-c", "true"],
            "is not in the exec allowlist",
        ),
        (
            &[],
            &["/tmp/sh", "-c", "git --version"],
            "is not in the exec allowlist",
        ),
        (
            &["--cwd", "/tmp"],
            &["./link/sh", "-c", "git"],
            "/usr/bin/other",
        ),
        (&["--cwd", "/tmp"], &["sh", "-c", "~/bin/git"], "not found"),
        (&[], &["sh", "-c", "git {status,log}"], "brace expansion"),
        (&[], &["sh", "-c", "cd /opt/tools | ./tool"], "unknown"),
        (
            &[],
            &["sh", "-c", "false && cd /opt/tools; ./tool"],
            "unknown",
        ),
        (&["-e", "HOME=/tmp"], &["sh", "-lc", "git"], "can write"),
        (&["-e", "LD_PRELOAD=/tmp/x.so"], &["git"], "LD_PRELOAD"),
        (
            &["-e", "BASH_ENV=/tmp/sh"],
            &["sh", "-c", "git"],
            "BASH_ENV",
        ),
        (
            &[],
            &["/lib64/ld-linux-x86-64.so.2", "/tmp/sh"],
            "dynamic loader",
        ),
        // A line continuation between `$` and `(`: the shell joins the lines first.
        (
            &[],
            &["sh", "-c", ": \"$\\\n(echo work''load-code >&2)\""],
            "command substitution",
        ),
        // `$'…'` quoting ends where the gate's single quotes did not: line 2 runs.
        (
            &[],
            &["sh", "-c", "git $'\\' x'\necho work\"\"load-code\n'"],
            "ANSI-C quoting",
        ),
        (
            &[],
            &["sh", "-c", "[ -v 'a[$(echo work\"\"load-code >&2)]' ]"],
            "test operator -v",
        ),
        (&["-e", "LD_AUDIT=/tmp/x.so"], &["git"], "LD_AUDIT"),
        (
            &["-e", "BASH_FUNC_git%%=() { echo workload-code; }"],
            &["sh", "-c", "git"],
            "BASH_FUNC_git%%",
        ),
        (
            &["-e", "SSH_CLIENT=10.0.0.1 1 22"],
            &["sh", "-c", "git"],
            "SSH_CLIENT",
        ),
        (
            &["-e", "HOME=tmp"],
            &["sh", "-lc", "git"],
            "not an absolute path",
        ),
        // `**/git` names a file the workload can write: the pattern is not a licence.
        (&[], &["/tmp/x/git"], "can be changed"),
    ];
    // Every attack is tried before judging, so a failure lists all that got through.
    let mut breaches: Vec<String> = Vec::new();
    for (pre, argv, why) in refused {
        let out = exec(pre, argv);
        let err = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let refused_right = !out.status.success()
            && err.contains("exec denied by policy")
            && err.contains(why)
            && !stdout.contains("workload-code")
            && !err.contains("workload-code");
        eprintln!(
            "attack {pre:?} {argv:?}: {}",
            if refused_right { "refused" } else { "BREACH" }
        );
        if !refused_right {
            breaches.push(format!(
                "{pre:?} {argv:?}: exit {:?}, stdout {stdout:?}, stderr {err:?}",
                out.status.code()
            ));
        }
    }
    assert!(breaches.is_empty(), "{}", breaches.join("\n"));
    for (argv, want) in [
        (&["sh", "-c", "git --version"][..], "git-ran"),
        (&["/bin/sh", "-c", "cd /opt/tools && ./tool"], "tool-ran"),
        (&["sh", "-lc", "git"], "git-ran"),
    ] {
        let out = rt.ok(&["exec", &id, argv[0], argv[1], argv[2]]);
        assert!(out.contains(want), "{argv:?}: {out}");
    }
    let audit = std::fs::read_to_string(rt.audit_file(&id)).unwrap();
    let denied = audit
        .lines()
        .filter(|l| l.contains("\"kind\":\"exec\"") && l.contains("\"denied\""))
        .count();
    assert!(denied >= refused.len(), "{audit}");
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

/// An allowlisted script that names its interpreter through `#!/usr/bin/env python3`: the gate
/// gives execute rights to env and to the python3 env finds on PATH (and its loader), so the
/// script runs; a program the script then starts is still refused by the kernel. The image's
/// /usr is the host's (read-only), for a real python3.
#[test]
fn an_allowlisted_env_python_script_runs() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let r = b.path().join("rootfs");
    std::fs::create_dir_all(r.join("usr")).unwrap();
    std::fs::create_dir_all(r.join("opt/tools")).unwrap();
    for (link, to) in [("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        std::os::unix::fs::symlink(to, r.join(link)).unwrap();
    }
    std::fs::write(
        r.join("opt/tools/hello"),
        "#!/usr/bin/env python3\nimport subprocess, sys\nprint('py-ran', sys.version_info[0])\n\
         try:\n    subprocess.run(['/usr/bin/id'], check=True, stdout=subprocess.DEVNULL)\n    print('other-ran')\n\
         except OSError as e:\n    print('other-refused', e.errno)\n",
    )
    .unwrap();
    std::fs::set_permissions(
        r.join("opt/tools/hello"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]
        }));
    });
    let p = rt.root.path().join(format!("{}.yaml", unique("gate")));
    std::fs::write(
        &p,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n\
         exec_policy:\n  allowlist:\n    - { pattern: /opt/tools/hello }\n  safe_builtins: true\n",
    )
    .unwrap();
    let id = started(&rt, p.to_str().unwrap(), &b);
    let out = rt.ok(&["exec", &id, "/opt/tools/hello"]);
    assert!(out.contains("py-ran 3"), "{out}");
    assert!(out.contains("other-refused 13"), "{out}");
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}
