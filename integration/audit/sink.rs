use super::*;

#[test]
fn denials_outlive_a_removed_container_in_the_node_sink() {
    let rt = Runtime::new();
    let sink = TempDir::new("sink");
    let cfg = node_config(&rt, sink.path(), "");
    let pol = probe_policy(&rt, 18501);
    let script = [
        p("allowed", "probe connect 18501"),
        p("denied", "probe connect 18502"),
        p("name", "probe dns blocked.example"),
    ]
    .concat();
    let b = guarded_bundle(&["sh", "-c", &script]);
    let id = unique("gone");
    let log = rt.root.path().join("runtime.log");
    let out = rt.ok(&[
        "--config",
        &cfg,
        "--policy",
        &pol,
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    expect(
        &out,
        &[
            ("allowed", "ok"),
            ("denied", "EACCES"),
            // The workload is told why: REFUSED with an Extended DNS Error.
            ("name", "rcode=5 ede=15:blocked by nemosandbox policy"),
        ],
    );
    // The container is gone (`run` deleted it), and so is its own file.
    assert_nothing_left(&rt, &id);
    assert!(!rt.root.path().join(&id).exists());

    let events = audit_json(&rt, &cfg, &[&id]);
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
    };
    let net = find("network");
    assert_eq!(net["decision"], "denied");
    assert_eq!(net["container"], id.as_str());
    assert!(net["request"]["destination"]
        .as_str()
        .unwrap()
        .ends_with(":18502"));
    assert!(net["executable"].as_str().unwrap().ends_with("/probe"));
    assert_eq!(net["policy_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(find("dns")["request"]["name"], "blocked.example");
    // The allowed connect is not an event.
    assert!(
        !events
            .iter()
            .any(|e| e["request"]["destination"].as_str() == Some("127.0.0.1:18501")),
        "{events:?}"
    );

    // Filters and the readable form.
    let dns_only = audit_json(&rt, &cfg, &[&id, "--kind", "dns"]);
    assert!(!dns_only.is_empty() && dns_only.iter().all(|e| e["kind"] == "dns"));
    assert!(audit_json(&rt, &cfg, &[&id, "--since", "1h"]).len() == events.len());
    let text = rt.ok(&["--config", &cfg, "audit", &id]);
    assert!(
        text.lines()
            .any(|l| l.contains(" network denied 127.0.0.1:18502")
                && l.contains("/probe (pid ")
                && l.contains("network_policies")),
        "{text}"
    );
    let bad = rt.fails(&["--config", &cfg, "audit", "--since", "soon"]);
    assert!(bad.contains("--since"), "{bad}");

    // The runtime log has each event as an object, not a string to parse again.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["audit"]["kind"] == "network" && v["audit"]["container"] == id.as_str()
        }),
        "{logged}"
    );
    assert_schema_valid(&[sink.path().join("audit.jsonl")]);
}

#[test]
fn a_hundred_thousand_refused_names_leave_a_bounded_file_with_merged_counts() {
    let rt = Runtime::new();
    let sink = TempDir::new("sink");
    let cfg = node_config(&rt, sink.path(), "  max_size: 128KiB\n  keep: 2\n");
    let pol = probe_policy(&rt, 18511);
    let b = guarded_bundle(&["probe", "dnsflood", "100000"]);
    let id = unique("flood");
    let out = output_within(
        rt.kept_command(&["--config", &cfg, "--policy", &pol], &b, &id),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.trim(), "refused 100000");
    // The guard writes its last merged counts once the container's init is gone, then exits.
    wait_until(|| helper_of(&id).is_none());

    // The container's own file accounts for every refusal, in few lines.
    let own = audit_json(&rt, &cfg, &[&id, "--kind", "dns"]);
    let total: u64 = own.iter().map(|e| e["count"].as_u64().unwrap_or(1)).sum();
    assert_eq!(total, 100_000, "{} lines", own.len());
    eprintln!(
        "flood: 100000 refused names -> {} lines in the container's file",
        own.len()
    );
    assert!(own.len() < 10_000, "{} lines for 100000 events", own.len());
    assert!(
        own.iter()
            .any(|e| e["count"].as_u64().is_some_and(|n| n > 1000) && e["first_time"].is_string()),
        "a merged line with a count and a first time"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);

    // The node sink is bounded by its rotation: at most `keep` old files, each near max_size.
    let files: Vec<PathBuf> = ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
        .iter()
        .map(|f| sink.path().join(f))
        .filter(|f| f.exists())
        .collect();
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        eprintln!("flood: sink file {} is {size} bytes", f.display());
        assert!(size <= (128 << 10) + 8192, "{f:?} is {size} bytes");
    }
    assert!(!sink.path().join("audit.jsonl.3").exists(), "keep: 2 holds");
    assert_schema_valid(&files);
}

#[test]
fn a_read_only_sink_changes_no_decision_and_is_reported() {
    let rt = Runtime::new();
    let dir = TempDir::new("rosink");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(dir.path().to_path_buf());
    let cfg = node_config(&rt, dir.path(), "");
    let pol = probe_policy(&rt, 18521);
    let script = [
        p("allowed", "probe connect 18521"),
        p("denied", "probe connect 18522"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    let id = unique("ro");
    let out = rt.run_kept_with(&["--config", &cfg, "--policy", &pol], &b, &id);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    expect(&stdout, &[("allowed", "ok"), ("denied", "EACCES")]);
    // The container's own file has the denial and the report of the sink's failure.
    let events = audit_json(&rt, &cfg, &[&id]);
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "network" && e["decision"] == "denied"),
        "{events:?}"
    );
    let report = events
        .iter()
        .find(|e| e["kind"] == "policy" && e["by"] == "audit sink")
        .unwrap_or_else(|| panic!("no sink report in {events:?}"));
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{report}"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
    assert!(!dir.path().join("audit.jsonl").exists());
}
