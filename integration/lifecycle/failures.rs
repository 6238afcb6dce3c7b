use super::*;

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
    assert_no_sandbox_left(&rt);
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
