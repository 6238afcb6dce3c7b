//! The runc verbs through the real binary, as root, on busybox-static bundles.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;

#[test]
fn create_start_state_kill_delete() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    b.with_mkdir_denying_seccomp();
    let before = std::fs::read(b.path().join("config.json")).unwrap();
    let id = unique("life");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(
        st["bundle"],
        b.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert!(st["pid"].as_i64().unwrap() > 0);
    rt.ok(&["start", &id]);
    wait_until(|| rt.status(&id) == "running");
    rt.ok(&["kill", &id, "KILL"]);
    wait_until(|| rt.status(&id) == "stopped");
    assert_eq!(rt.state(&id)["pid"], 0);
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id);
    // The user's bundle is untouched (the rewrite moved seccomp out of its own copy only).
    assert_eq!(std::fs::read(b.path().join("config.json")).unwrap(), before);
}

#[test]
fn state_prints_only_json_on_stdout_and_nothing_on_stderr() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique("st");
    rt.start_sleeper(&b, &id);
    let out = rt.run(&["state", &id]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "owner",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id);
}

#[test]
fn run_returns_exit_codes_including_signals() {
    let rt = Runtime::new();
    for (args, want) in [
        (vec!["true"], 0),
        (vec!["sh", "-c", "exit 3"], 3),
        (vec!["false"], 1),
    ] {
        let b = Bundle::busybox(&args);
        let id = unique("run");
        let out = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
        assert_eq!(
            out.status.code(),
            Some(want),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_nothing_left(&rt, &id);
    }
    // Killed by a signal: 128+N. (A pid-namespace init ignores signals it has no handler for,
    // except SIGKILL from outside, so the signal comes from `kill`.)
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique("runsig");
    let child = rt
        .command(&["run", "--bundle", b.path().to_str().unwrap(), &id])
        .spawn()
        .unwrap();
    wait_until(|| rt.run(&["state", &id]).status.success() && rt.status(&id) == "running");
    rt.ok(&["kill", &id, "KILL"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137));
    assert_nothing_left(&rt, &id);
}

#[test]
fn run_forwards_signals_to_the_container() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&[
        "sh",
        "-c",
        "trap 'exit 42' TERM; while true; do sleep 0.05; done",
    ]);
    let id = unique("fwd");
    let mut child = rt
        .command(&["run", "--bundle", b.path().to_str().unwrap(), &id])
        .spawn()
        .unwrap();
    wait_until(|| rt.run(&["state", &id]).status.success() && rt.status(&id) == "running");
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
    assert_nothing_left(&rt, &id);
}

#[test]
fn run_never_hangs_on_fast_exits_under_parallel_load() {
    let rt = std::sync::Arc::new(Runtime::new());
    let b = std::sync::Arc::new(Bundle::busybox(&["true"]));
    // Load: busy loops on every core for the duration of the test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        })
        .collect();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (rt, b) = (rt.clone(), b.clone());
            std::thread::spawn(move || {
                for i in 0..125 {
                    let id = format!("fast-{w}-{i}-{}", std::process::id());
                    let out = output_within(
                        rt.command(&["run", "--bundle", b.path().to_str().unwrap(), &id]),
                        Duration::from_secs(30),
                    );
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "run {id}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    let left = std::fs::read_dir(rt.root.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(left, 0, "state directories left after 500 runs");
}

#[test]
fn exec_runs_under_the_containers_seccomp_capabilities_and_nnp() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    b.with_mkdir_denying_seccomp();
    let id = unique("exec");
    rt.start_sleeper(&b, &id);
    let status = rt.ok(&["exec", &id, "cat", "/proc/self/status"]);
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // runc's default spec: CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE = 0x20000420.
    assert!(status.contains("CapEff:\t0000000020000420"), "{status}");
    assert!(status.contains("CapBnd:\t0000000020000420"), "{status}");
    // The profile is really enforced in the exec'd process, and the allowed twin works.
    let out = rt.run(&["exec", &id, "mkdir", "/tmp/denied"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    rt.ok(&["exec", &id, "touch", "/tmp/allowed"]);
    rt.ok(&["exec", &id, "test", "-f", "/tmp/allowed"]);
    // The init process has the same profile.
    let init = rt.ok(&["exec", &id, "cat", "/proc/1/status"]);
    assert!(init.contains("Seccomp:\t2"), "{init}");
    // Exit codes of exec'd processes come back.
    assert_eq!(
        rt.run(&["exec", &id, "sh", "-c", "exit 5"]).status.code(),
        Some(5)
    );
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id);
}

#[test]
fn exec_with_process_json_is_bounded_by_the_container() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    b.with_mkdir_denying_seccomp();
    let id = unique("execp");
    rt.start_sleeper(&b, &id);
    // What `docker exec --privileged` sends: every capability, no nnp.
    let all: Vec<String> = [
        "CAP_SYS_ADMIN",
        "CAP_KILL",
        "CAP_NET_ADMIN",
        "CAP_AUDIT_WRITE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let process = serde_json::json!({
        "terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["cat", "/proc/self/status"],
        "env": ["PATH=/bin"], "cwd": "/",
        "capabilities": {"bounding": all, "effective": all, "permitted": all},
        "noNewPrivileges": false
    });
    let dir = TempDir::new("proc");
    let pfile = dir.path().join("process.json");
    std::fs::write(&pfile, serde_json::to_vec(&process).unwrap()).unwrap();
    let before = std::fs::read(&pfile).unwrap();
    let out = rt.ok(&["exec", "--process", pfile.to_str().unwrap(), &id]);
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // Only KILL and AUDIT_WRITE are in the container's set: 0x20000020.
    assert!(out.contains("CapEff:\t0000000020000020"), "{out}");
    assert_eq!(
        std::fs::read(&pfile).unwrap(),
        before,
        "the engine's process.json was modified"
    );
    // Detached exec with a pid file.
    let pidfile = dir.path().join("exec.pid");
    let sleeper = serde_json::json!({"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["sleep", "30"], "env": ["PATH=/bin"], "cwd": "/"});
    std::fs::write(&pfile, serde_json::to_vec(&sleeper).unwrap()).unwrap();
    rt.ok(&[
        "exec",
        "--process",
        pfile.to_str().unwrap(),
        "--detach",
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
    ]);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ps: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(ps.contains(&pid), "{ps:?} lacks {pid}");
    let denied = rt.fails(&["exec", "--cap", "CAP_SYS_ADMIN", &id, "true"]);
    assert!(denied.contains("bounding set"), "{denied}");
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id);
}

#[test]
fn pause_resume_ps_events_update_list() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique("ops");
    rt.start_sleeper(&b, &id);
    rt.ok(&["pause", &id]);
    assert_eq!(rt.status(&id), "paused");
    rt.fails(&["exec", &id, "true"]);
    rt.ok(&["resume", &id]);
    assert_eq!(rt.status(&id), "running");

    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(pids, vec![rt.state(&id)["pid"].as_i64().unwrap() as i32]);
    let table = rt.ok(&["ps", &id]);
    assert!(
        table.lines().next().unwrap().contains("PID") && table.contains("sleep 1000"),
        "{table}"
    );

    let ev: serde_json::Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1);
    // runc's spelling of the interval, streaming until interrupted: two reports arrive
    // (waited for, not timed, so a slow machine or an emulated guest passes too).
    let mut stream = rt
        .command(&["events", "--interval=100ms", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stream.stdout.take().unwrap()));
    for _ in 0..2 {
        let line = lines.next().expect("events stream ended").unwrap();
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(ev["type"], "stats", "{line}");
    }
    stream.kill().unwrap();
    let _ = stream.wait();

    let mut upd = rt
        .command(&["update", "--resources", "-", &id])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    upd.stdin
        .take()
        .unwrap()
        .write_all(br#"{"memory": {"limit": 67108864}, "pids": {"limit": 50}}"#)
        .unwrap();
    assert!(upd.wait().unwrap().success());
    let ev: serde_json::Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["data"]["pids"]["limit"], 50);
    assert_eq!(ev["data"]["memory"]["memory"]["limit"], 67108864);
    rt.ok(&["update", "--pids-limit", "60", &id]);
    let ev: serde_json::Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["data"]["pids"]["limit"], 60);

    let list = rt.ok(&["list"]);
    assert!(list.starts_with("ID") && list.contains(&id), "{list}");
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["status"], "running");
    assert_eq!(rt.ok(&["list", "-q"]).trim(), id);

    rt.ok(&["kill", "--all", &id, "9"]);
    wait_until(|| rt.status(&id) == "stopped");
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id);
}

#[test]
fn bad_inputs_fail_clearly_and_leave_nothing() {
    let rt = Runtime::new();
    // Missing config.json.
    let empty = TempDir::new("nobundle");
    let id = unique("bad");
    let e = rt.fails(&["create", "--bundle", empty.path().to_str().unwrap(), &id]);
    assert!(e.contains("config.json"), "{e}");
    assert_nothing_left(&rt, &id);
    // Malformed JSON: file, line and column.
    let b = Bundle::busybox(&["true"]);
    std::fs::write(
        b.path().join("config.json"),
        "{\n \"ociVersion\": \"1.0.2\",\n broken\n}",
    )
    .unwrap();
    let e = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(e.contains("config.json:3:"), "{e}");
    assert_nothing_left(&rt, &id);
    // A spec error names the field.
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| c["process"]["args"] = serde_json::json!([]));
    let e = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(e.contains("process.args"), "{e}");
    assert_nothing_left(&rt, &id);
    // A missing executable is reported at create, nothing left.
    let b = Bundle::busybox(&["/bin/no-such-binary"]);
    let e = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(e.contains("no-such-binary"), "{e}");
    assert_nothing_left(&rt, &id);
    // A missing rootfs.
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| c["root"]["path"] = "nope".into());
    let e = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(e.contains("root.path"), "{e}");
    assert_nothing_left(&rt, &id);
    // Invalid ids.
    for bad in ["../x", "a/b", ".hidden"] {
        let e = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), bad]);
        assert!(e.contains("invalid container id"), "{e}");
    }
    // Unknown container, for every verb that takes one.
    for verb in [
        &["state"][..],
        &["start"],
        &["kill"],
        &["delete"],
        &["pause"],
        &["resume"],
        &["ps"],
        &["exec"],
        &["events", "--stats"],
        &["update", "--pids-limit", "5"],
    ] {
        let mut args = verb.to_vec();
        args.push("no-such-container");
        if verb == ["exec"] {
            args.push("true");
        }
        let e = rt.fails(&args);
        assert!(e.contains("does not exist"), "{verb:?}: {e}");
    }
    // The runc log gets runc's JSON lines.
    let log = TempDir::new("log");
    let logfile = log.path().join("log.json");
    rt.fails(&[
        "--log",
        logfile.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "ghost",
    ]);
    let line = std::fs::read_to_string(&logfile).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("does not exist"));
    assert!(v["time"].is_string());
}

#[test]
fn wrong_state_transitions_and_duplicates_are_refused() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique("trans");
    let bundle = b.path().to_str().unwrap();
    rt.ok(&["create", "--bundle", bundle, &id]);
    let e = rt.fails(&["create", "--bundle", bundle, &id]);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(
        rt.status(&id),
        "created",
        "the duplicate create harmed the original"
    );
    let e = rt.fails(&["exec", &id, "true"]);
    assert!(e.contains("created"), "{e}");
    rt.fails(&["pause", &id]);
    rt.ok(&["start", &id]);
    let e = rt.fails(&["start", &id]);
    assert!(e.contains("running"), "{e}");
    let e = rt.fails(&["delete", &id]);
    assert!(e.contains("not stopped"), "{e}");
    let e = rt.fails(&["kill", &id, "NOTASIGNAL"]);
    assert!(e.contains("invalid signal"), "{e}");
    assert_eq!(rt.status(&id), "running");
    rt.ok(&["kill", &id, "SIGKILL"]);
    wait_until(|| rt.status(&id) == "stopped");
    rt.fails(&["start", &id]);
    let e = rt.fails(&["kill", &id]);
    assert!(e.contains("stopped"), "{e}");
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id);
    // Deleting a created container kills its init.
    rt.ok(&["create", "--bundle", bundle, &id]);
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id);
    rt.ok(&["delete", "--force", "never-existed"]);
}

#[test]
fn systemd_cgroup_without_systemd_fails_clearly() {
    if std::path::Path::new("/run/systemd/system").exists() {
        panic!("this test expects a host without systemd (as CI is)");
    }
    let rt = Runtime::new();
    let b = Bundle::busybox(&["true"]);
    let id = unique("sd");
    let e = rt.fails(&[
        "--systemd-cgroup",
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(e.contains("systemd is not running"), "{e}");
    assert_nothing_left(&rt, &id);
}

#[test]
fn sandbox_runs_host_commands_read_only_with_fresh_tmp() {
    let rt = Runtime::new();
    let marker = format!("/tmp/{}", unique("host-marker"));
    std::fs::write(&marker, "x").unwrap();
    let script = format!(
        "echo pid=$$; hostname; test -e {marker} && echo SEES_HOST_TMP; touch /etc/nemo-x 2>/dev/null && echo WROTE_ETC; \
         touch /var/nemo-x 2>/dev/null && echo WROTE_VAR; echo data > /tmp/f && cat /tmp/f; ls /dev/null >/dev/null && echo DEV_OK; exit 7"
    );
    let out = rt.run(&["sandbox", "--", "sh", "-c", &script]);
    std::fs::remove_file(&marker).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pid=1"), "{stdout}");
    assert!(stdout.contains("nemosandbox"), "{stdout}");
    assert!(!stdout.contains("SEES_HOST_TMP"), "{stdout}");
    assert!(
        !stdout.contains("WROTE_ETC") && !stdout.contains("WROTE_VAR"),
        "{stdout}"
    );
    assert!(
        stdout.contains("data") && stdout.contains("DEV_OK"),
        "{stdout}"
    );
    assert!(!std::path::Path::new("/etc/nemo-x").exists());
    let left: Vec<_> = std::fs::read_dir(rt.root.path().join(".nemosandbox"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        // The sandbox mount point and the compiled seccomp cache are shared, not per container.
        .filter(|n| n != ".sandbox-root" && n != ".bpf-cache")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        std::fs::read_dir(rt.root.path().join(".nemosandbox/.sandbox-root"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn version_features_and_spec() {
    let rt = Runtime::new();
    let v = rt.ok(&["--version"]);
    let lines: Vec<&str> = v.lines().collect();
    assert!(lines[0].starts_with("nemosandbox version "), "{v}");
    assert!(lines[1].starts_with("commit: "), "{v}");
    assert!(lines[2].starts_with("spec: 1."), "{v}");
    let f: serde_json::Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "pid"));
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
    let d = TempDir::new("spec");
    rt.ok(&["spec", "--bundle", d.path().to_str().unwrap()]);
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(c["root"]["path"], "rootfs");
    let e = rt.fails(&["spec", "--bundle", d.path().to_str().unwrap()]);
    assert!(e.contains("exists"), "{e}");
    let e = rt.fails(&["checkpoint", "x"]);
    assert!(e.contains("not supported"), "{e}");
}

#[test]
fn doctor_reports_the_kernel_features() {
    let rt = Runtime::new();
    let table = rt.ok(&["doctor"]);
    assert!(table.starts_with("FEATURE"), "{table}");
    let checks: Vec<serde_json::Value> =
        serde_json::from_str(&rt.ok(&["doctor", "--format", "json"])).unwrap();
    let get = |f: &str| {
        checks
            .iter()
            .find(|c| c["feature"] == f)
            .unwrap_or_else(|| panic!("no {f}"))
            .clone()
    };
    // This machine (and CI) has Landlock, seccomp notification and pidfd_getfd: a missing one
    // is a failure here, never a skip.
    let ll = get("landlock");
    assert_eq!(ll["ok"], true, "{ll}");
    assert!(ll["status"].as_str().unwrap().starts_with("ABI "), "{ll}");
    assert_eq!(get("seccomp user notification")["ok"], true);
    assert_eq!(get("pidfd_getfd")["ok"], true);
    assert!(get("cgroup mode")["status"]
        .as_str()
        .unwrap()
        .starts_with('v'));
}

/// The container's cgroup as the kernel keeps it: on v2 one directory, on v1 one per
/// controller, found from the init's /proc/PID/cgroup.
fn cgroup_file(pid: i64, controller: &str, file: &str) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v2 = kernel().cgroup_v2;
    let line = text
        .lines()
        .find(|l| {
            if v2 {
                l.starts_with("0::")
            } else {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == controller))
            }
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in {text}"));
    let rel = line.splitn(3, ':').nth(2).unwrap().trim_start_matches('/');
    if v2 {
        Path::new("/sys/fs/cgroup").join(rel).join(file)
    } else {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(rel)
            .join(file)
    }
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// `update`, `pause`/`resume`, `events` and `delete` act on the kernel's cgroup files, not
/// only on the runtime's state, on cgroup v1 and v2 alike (the kernel-matrix guest runs v2):
/// the limits land in memory.max/pids.max, a pause freezes the cgroup, an OOM kill in the
/// container is reported by `events` as runc reports it, and `delete` removes the cgroup.
#[test]
fn cgroup_limits_freeze_oom_and_removal_reach_the_kernel() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique("cg");
    rt.start_sleeper(&b, &id);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let v2 = kernel().cgroup_v2;

    rt.ok(&["update", "--memory", "33554432", "--pids-limit", "40", &id]);
    let limit = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(read_trim(&cgroup_file(pid, "memory", limit)), "33554432");
    assert_eq!(read_trim(&cgroup_file(pid, "pids", "pids.max")), "40");
    let ev: serde_json::Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["data"]["memory"]["memory"]["limit"], 33554432);
    assert_eq!(ev["data"]["pids"]["limit"], 40);

    rt.ok(&["pause", &id]);
    if v2 {
        assert_eq!(read_trim(&cgroup_file(pid, "", "cgroup.freeze")), "1");
        wait_until(|| read_trim(&cgroup_file(pid, "", "cgroup.events")).contains("frozen 1"));
    } else {
        assert_eq!(
            read_trim(&cgroup_file(pid, "freezer", "freezer.state")),
            "FROZEN"
        );
    }
    rt.ok(&["resume", &id]);
    if v2 {
        assert_eq!(read_trim(&cgroup_file(pid, "", "cgroup.freeze")), "0");
    } else {
        assert_eq!(
            read_trim(&cgroup_file(pid, "freezer", "freezer.state")),
            "THAWED"
        );
    }
    rt.ok(&["exec", &id, "true"]);

    // An exec'd shell that grows past 32 MiB is OOM-killed; `events` reports it.
    let mut stream = rt
        .command(&["events", "--interval=100ms", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stream.stdout.take().unwrap()));
    assert!(lines.next().unwrap().unwrap().contains("\"stats\""));
    let hog = rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
    ]);
    assert_eq!(hog.status.code(), Some(137), "{hog:?}");
    // At 100 ms a report, 200 lines bound the wait to about 20 s.
    let oom = lines
        .take(200)
        .find(|l| l.as_ref().is_ok_and(|l| l.contains("\"oom\"")))
        .expect("events ended without an oom event")
        .unwrap();
    let oom: serde_json::Value = serde_json::from_str(&oom).unwrap();
    assert_eq!(oom["id"], id.as_str());
    stream.kill().unwrap();
    let _ = stream.wait();
    assert_eq!(rt.status(&id), "running", "the OOM kill took only the hog");

    let dirs = cgroup_dirs_of(&id);
    assert!(
        !dirs.is_empty(),
        "the test does not see the container's cgroup"
    );
    rt.ok(&["kill", &id, "9"]);
    wait_until(|| rt.status(&id) == "stopped");
    rt.ok(&["delete", &id]);
    for d in dirs {
        assert!(!d.exists(), "{} left after delete", d.display());
    }
    assert_nothing_left(&rt, &id);
}

/// The first containers of a node are created at once and share a parent cgroup that does not
/// exist yet. On cgroup v2, libcontainer's `mkdir` of that parent fails with EEXIST for all
/// but one of them (seen on the 6.1 guest); every create must succeed.
#[test]
fn parallel_creates_share_a_fresh_parent_cgroup() {
    let rt = Runtime::new();
    let parent = unique("nemopar");
    let ids: Vec<String> = (0..10).map(|i| format!("{parent}-{i}")).collect();
    let bundles: Vec<Bundle> = ids
        .iter()
        .map(|id| {
            let b = Bundle::busybox(&["sleep", "1000"]);
            b.edit(|c| c["linux"]["cgroupsPath"] = format!("/{parent}/{id}").into());
            b
        })
        .collect();
    let start = std::sync::Barrier::new(ids.len());
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .zip(&bundles)
            .map(|(id, b)| {
                let (rt, start) = (&rt, &start);
                s.spawn(move || {
                    start.wait();
                    rt.run(&["create", "--bundle", b.path().to_str().unwrap(), id])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (id, out) in ids.iter().zip(&outs) {
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for id in &ids {
        rt.ok(&["delete", "--force", id]);
        assert_nothing_left(&rt, id);
    }
    // The shared parent outlives its containers, as runc's does; the test removes its own.
    for dir in cgroup_dirs_of(&parent) {
        let _ = std::fs::remove_dir(&dir);
    }
}

/// A hostile bundle's `linux.cgroupsPath`: `..` out of the hierarchy, the root, and a cgroup
/// that already holds a host process (a service's or an engine's, which the container would
/// join, limit and kill on `delete`). Each is refused at `create` naming the field, the host
/// process survives, nothing is created on the host; parents made for a create that fails
/// later are removed. The allowed twins: a fresh path, and an existing empty cgroup.
#[test]
fn hostile_cgroups_paths_are_refused_and_leave_nothing() {
    let rt = Runtime::new();
    let v2 = kernel().cgroup_v2;
    let create = |path: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let b = Bundle::busybox(&["sleep", "1000"]);
        b.edit(|c| {
            c["linux"]["cgroupsPath"] = path.into();
            edit(c);
        });
        let id = unique("cgpath");
        let out = rt.run(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
        (id, out)
    };
    let refused = |path: &str, why: &str| {
        let (id, out) = create(path, &|_| {});
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path} was accepted");
        assert!(
            err.contains("cgroupsPath") && err.contains(why),
            "{path}: {err}"
        );
        assert_nothing_left(&rt, &id);
    };

    let escape = unique("nemo-esc");
    refused(&format!("/../../../tmp/{escape}/c"), "only plain names");
    assert!(
        !Path::new("/tmp").join(&escape).exists(),
        "created outside the hierarchy"
    );
    refused("/", "only plain names");

    // A host process in a cgroup of its own (pids hierarchy on v1), one level down.
    let victim = unique("nemovictim");
    let base = if v2 {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/pids")
    };
    std::fs::create_dir_all(base.join(&victim).join("svc")).unwrap();
    let mut host = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    std::fs::write(
        base.join(&victim).join("svc/cgroup.procs"),
        host.id().to_string(),
    )
    .unwrap();
    refused(&format!("/{victim}/svc"), "already holds processes");
    refused(&format!("/{victim}"), "already holds processes");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host process was killed"
    );
    host.kill().unwrap();
    host.wait().unwrap();
    wait_until(|| {
        std::fs::read_to_string(base.join(&victim).join("svc/cgroup.procs"))
            .is_ok_and(|p| p.trim().is_empty())
    });

    // Allowed twin: the same cgroup, now empty, is taken (as runc takes it).
    let (id, out) = create(&format!("/{victim}/svc"), &|_| {});
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id);
    let _ = std::fs::remove_dir(base.join(&victim).join("svc"));
    let _ = std::fs::remove_dir(base.join(&victim));

    // A create that fails after the parents were made (a terminal without a console socket)
    // takes them away again.
    let leak = unique("nemoleak");
    let (id, out) = create(&format!("/{leak}/a/c"), &|c| {
        c["process"]["terminal"] = true.into()
    });
    assert!(!out.status.success());
    assert_nothing_left(&rt, &id);
    assert_eq!(cgroup_dirs_of(&leak), Vec::<PathBuf>::new(), "parents left");
}

/// Real-time signals (the stop signal of systemd images, `RTMIN+3`) reach the init by name
/// and by number, and every process with `--all`; past SIGRTMAX is refused.
#[test]
fn real_time_signals_reach_the_container() {
    let rt = Runtime::new();
    // glibc's SIGRTMIN is 34, so RTMIN+3 is 37; busybox's trap takes numbers.
    let b = Bundle::busybox(&[
        "sh",
        "-c",
        "sh -c 'trap \"echo child >> /tmp/rt\" 40; while :; do sleep 0.1; done' & \
         trap 'echo rt37 >> /tmp/rt' 37; trap 'echo rt40 >> /tmp/rt' 40; \
         while :; do sleep 0.1; done",
    ]);
    let id = unique("rtsig");
    rt.start_sleeper(&b, &id);
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    let seen = || std::fs::read_to_string(format!("/proc/{init}/root/tmp/rt")).unwrap_or_default();
    rt.ok(&["kill", &id, "RTMIN+3"]);
    wait_until(|| seen().contains("rt37"));
    // Give the child time to set its trap, then one number to every process.
    std::thread::sleep(Duration::from_millis(300));
    rt.ok(&["kill", "--all", &id, "40"]);
    wait_until(|| seen().contains("rt40") && seen().contains("child"));
    let e = rt.fails(&["kill", &id, "RTMAX+1"]);
    assert!(e.contains("invalid signal"), "{e}");
    let e = rt.fails(&["kill", &id, "65"]);
    assert!(e.contains("invalid signal"), "{e}");
    assert_eq!(rt.status(&id), "running");
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}
