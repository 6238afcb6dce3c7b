use super::*;

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

/// An engine may call `start` long after `create` (`podman create`, later `podman start`): the
/// init process hands its listener to the network guard at `start`, however late, and runs.
/// Meanwhile the guard answers everyone else: a policy update does not wait for the start.
#[test]
fn start_long_after_create_runs_the_container() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "30"]);
    let id = unique("late");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let asked = std::time::Instant::now();
    rt.ok(&["policy", "update", &id, "--preset", "npm"]);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the update waited {:?} behind the init's hand-over",
        asked.elapsed()
    );
    // Longer than any timeout the guard has for a request that is coming at once.
    std::thread::sleep(Duration::from_secs(7));
    rt.ok(&["start", &id]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rt.status(&id),
        "running",
        "the init process failed at start"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

/// `NEMOSANDBOX_TIMING` gets a line per stage from the runtime and from the container's init
/// (before it executes the workload, in its own pid namespace); `bench/breakdown.sh` reads them.
#[test]
fn timing_spans_come_from_the_runtime_and_the_init() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["true"]);
    let dir = TempDir::new("timing");
    let file = dir.path().join("t.jsonl");
    let id = unique("timing");
    let mut cmd = rt.command(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
    cmd.env("NEMOSANDBOX_TIMING", &file);
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pid_of = |stage: &str| {
        lines
            .iter()
            .find(|l| l["stage"] == stage)
            .map(|l| l["pid"].as_u64().unwrap())
    };
    for stage in [
        "policy",
        "layout",
        "libcontainer-create",
        "helper-start",
        "start",
        "wait",
        "confine",
        "seccomp-load",
        "delete",
    ] {
        assert!(pid_of(stage).is_some(), "no {stage:?} in {lines:?}");
    }
    assert_eq!(pid_of("confine"), Some(1), "the init's own line");
    assert_ne!(pid_of("create"), Some(1));
    assert_nothing_left(&rt, &id);
}

/// `start` refuses a container whose `create` has not finished the stage between create and
/// start (its pins, read-only cgroup mounts and guard): libcontainer already reports it
/// "created" then. The meta, saved last, stands for that stage here; without it the
/// workload would have run in that window.
#[test]
fn start_refuses_a_container_whose_create_is_under_way() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique("early");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let meta = rt.own_dir(&id).meta();
    let aside = meta.with_extension("aside");
    std::fs::rename(&meta, &aside).unwrap();
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("still under way"), "{err}");
    assert_eq!(rt.status(&id), "created");
    // The allowed twin: once the stage is done, start works.
    std::fs::rename(&aside, &meta).unwrap();
    rt.ok(&["start", &id]);
    wait_until(|| rt.status(&id) == "running");
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id);
}
