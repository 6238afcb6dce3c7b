use super::*;

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
        "sh -c 'trap \"echo child >> /tmp/rt\" 40; echo child-ready >> /tmp/rt; \
         while :; do sleep 0.1; done' & \
         trap 'echo rt37 >> /tmp/rt' 37; trap 'echo rt40 >> /tmp/rt' 40; \
         echo ready >> /tmp/rt; while :; do sleep 0.1; done",
    ]);
    let id = unique("rtsig");
    rt.start_sleeper(&b, &id);
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    let seen = |line: &str| {
        std::fs::read_to_string(format!("/proc/{init}/root/tmp/rt"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == line)
    };
    // A real-time signal kills a shell that has not set its trap yet, so both shells
    // say when their traps are in place before anything is sent.
    wait_until(|| seen("child-ready") && seen("ready"));
    rt.ok(&["kill", &id, "RTMIN+3"]);
    wait_until(|| seen("rt37"));
    rt.ok(&["kill", "--all", &id, "40"]);
    wait_until(|| seen("rt40") && seen("child"));
    let e = rt.fails(&["kill", &id, "RTMAX+1"]);
    assert!(e.contains("invalid signal"), "{e}");
    let e = rt.fails(&["kill", &id, "65"]);
    assert!(e.contains("invalid signal"), "{e}");
    assert_eq!(rt.status(&id), "running");
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

/// `hierarchy -> path` of /proc/PID/cgroup as the host sees it; v2 is the empty name.
fn memberships(pid: i64) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            Some(
                ctl.split(',')
                    .map(|c| (c.to_string(), path.to_string()))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

/// The guard and the container's processes are in their cgroups from the start, now that
/// nothing moves them there from outside (a move waits on the kernel's global threadgroup
/// lock): the init and an exec'd process in the container's v2 cgroup (the fence's), the guard
/// in its own cgroup below it and, on a cgroup v1 host, in the container's memory and pids
/// cgroups too, which it joins itself, so its memory and threads count against the
/// container's limits. A guard outside them would escape the limits; a process outside the
/// fence's cgroup would escape the fence.
#[test]
fn the_guard_and_every_container_process_start_in_the_containers_cgroups() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["sleep", "1000"]);
    let id = unique("cgplace");
    rt.start_sleeper(&b, &id);
    let init = memberships(rt.state(&id)["pid"].as_i64().unwrap());
    let helper = helper_of(&id).expect("the default policy's network guard");
    let guard = memberships(helper as i64);
    assert_eq!(
        guard[""],
        format!("{}/nemosandbox-guard", init[""]),
        "{guard:?} {init:?}"
    );
    if !kernel().cgroup_v2 {
        assert!(init[""].ends_with(&format!("/{id}")), "{init:?}");
        for c in ["memory", "pids"] {
            assert_eq!(guard[c], init[c], "{c}: {guard:?} {init:?}");
        }
    }

    let dir = TempDir::new("cgplace");
    let pidfile = dir.path().join("exec.pid");
    rt.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    let pid: i64 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let exec = memberships(pid);
    assert_eq!(exec, init, "the exec'd process's cgroups");
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id);
}
