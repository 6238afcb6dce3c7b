use super::*;

/// Attack 7: a policy binary on a writable path, rewritten in place or replaced, loses its
/// rights; a binary installed later under a glob still gets them (covered in network.rs).
#[test]
fn a_rewritten_or_replaced_binary_loses_its_rights() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n    \"/app/**\": \"rwx\"\n\
         network_policies:\n  app:\n    endpoints:\n      - { host: 127.0.0.1, port: 18681 }\n\
         \x20   binaries:\n      - { path: /app/probe }\n      - { path: /app/other }\n",
    );
    let lint = rt.run(&["policy", "lint", &pol]);
    let lint_out =
        String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
    assert!(lint.status.success(), "{lint_out}");
    assert!(
        lint_out.contains("/app/probe") && lint_out.contains("writable"),
        "lint names the writable binary: {lint_out}"
    );
    let script = [
        p("before", "/app/probe connect 18681"),
        "cat /bin/probe > /app/other.new; ".to_string(),
        "cat /app/other.new > /app/probe; ".to_string(),
        p("rewritten", "/app/probe connect 18681"),
        p("untouched", "/app/other connect 18681"),
        "cp /app/other /app/other.2; mv /app/other.2 /app/other; ".to_string(),
        p("replaced", "/app/other connect 18681"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    let app = b.path().join("rootfs/app");
    std::fs::create_dir_all(&app).unwrap();
    // Copies, not links to the shared probe: the test writes to them.
    for f in ["probe", "other"] {
        std::fs::copy(probe(), app.join(f)).unwrap();
    }
    let id = unique("bin");
    let (out, audit) = rt.run_kept(&pol, &b, &id);
    expect(
        &out,
        &[
            ("before", "ok"),
            ("rewritten", "EACCES"),
            ("untouched", "ok"),
            ("replaced", "EACCES"),
        ],
    );
    assert!(audit.contains("binary modified"), "{audit}");
    assert!(audit.contains("binary replaced"), "{audit}");
}

/// Attack 8: an agent keeps a stream open across the revocation of the policy that allowed
/// it. `policy update --remove` cuts it within a second; a stream another policy allowed
/// stays up.
#[test]
fn revoking_a_policy_cuts_the_connections_it_allowed() {
    let rt = Runtime::new();
    // Another key than the preset's ("local"): the preset adds, it does not replace.
    let base = probe_policy(&rt, &[18692]);
    let base = {
        let p = format!("{base}.keep.yaml");
        std::fs::write(
            &p,
            std::fs::read_to_string(&base)
                .unwrap()
                .replace("  local:", "  keep:"),
        )
        .unwrap();
        p
    };
    let preset = localnet_preset(&rt.root.path().join("presets"), 18691);
    let b = bundle(&["probe", "hold", "18691", "18692", "60", "/tmp/hold"]);
    host_network(&b);
    let c = Running::start(&rt, &base, &["--preset", preset.to_str().unwrap()], &b);
    wait_for("both streams up", Duration::from_secs(20), || {
        c.file("/tmp/hold").starts_with("a=up at=0.00 b=up")
    });
    let removed = Instant::now();
    rt.ok(&["policy", "update", &c.id, "--remove", "localnet"]);
    wait_for(
        "the revoked stream ends",
        Duration::from_millis(1000),
        || !c.file("/tmp/hold").starts_with("a=up"),
    );
    let took = removed.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let held = c.file("/tmp/hold");
    let fields: HashMap<&str, &str> = held
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    assert!(
        ["EOF", "EPIPE", "ECONNRESET", "ENOTCONN"].contains(&fields["a"]),
        "{held}"
    );
    assert_eq!(fields["b"], "up", "{held}");
    eprintln!("revoked stream ended {took:?} after the update started");
}

/// The cgroup v2 mount point of this host.
fn v2_mount() -> std::path::PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mnt = pre.split_whitespace().nth(4)?;
            post.starts_with("cgroup2 ")
                .then(|| std::path::PathBuf::from(mnt))
        })
        .expect("a cgroup2 mount (the fence made one if the host had none)")
}

/// The fence judges the task, not only its cgroup: a container that can write its cgroup
/// files and moves a process into the guard's cgroup still meets it.
#[test]
fn joining_the_guards_cgroup_does_not_open_the_fence() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n    \"/cg/**\": \"rwx\"\n\
         network_policies:\n  local:\n    endpoints:\n      - { host: 127.0.0.1, port: 18701 }\n\
         \x20   binaries:\n      - { path: /bin/probe }\n",
    );
    let v2 = v2_mount();
    let b = bundle(&["sleep", "1000"]);
    host_network(&b);
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/cg", "type": "bind", "source": v2, "options": ["rbind", "rw"]
        }));
    });
    let c = Running::start(&rt, &pol, &[], &b);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rt.own_dir(&c.id).meta()).unwrap()).unwrap();
    let guard = Path::new(meta["fence"]["guard"].as_str().unwrap());
    let rel = guard.strip_prefix(&v2).unwrap().display().to_string();
    let out = c.exec_sh(&format!(
        "echo $$ > /cg/{rel}/cgroup.procs && echo moved: $(grep -c nemosandbox-guard /proc/self/cgroup); \
         echo \"swap: $(probe swap udp 18702 5)\"; echo \"allowed: $(probe udp 127.0.0.1 18701)\""
    ));
    let r = results(&out);
    assert_eq!(r.get("moved").map(String::as_str), Some("1"), "{out}");
    let full = nemosandbox::netguard::fence::probe() == Ok(true);
    let swap = r["swap"].clone();
    eprintln!("in the guard's cgroup: {swap}");
    if full {
        assert!(
            swap.contains("reached=0") && !swap.contains("BREACH"),
            "{out}"
        );
        // Its own connects go through the guard as before.
        assert_eq!(r["allowed"], "ok", "{out}");
    } else {
        // Before Linux 6.10 the fence checks the cgroup only; doctor says so.
        let doctor = rt.ok(&["doctor"]);
        assert!(doctor.contains("cgroup check only"), "{doctor}");
    }
}
