//! Policy selection end to end: annotations on a real bundle, node configuration gates, and
//! the `policy` commands through the binary.

mod common;

use common::*;

fn with_annotations(b: &Bundle, pairs: &[(&str, &str)]) {
    b.edit(|c| {
        let mut ann = serde_json::Map::new();
        for (k, v) in pairs {
            ann.insert(k.to_string(), serde_json::Value::String(v.to_string()));
        }
        c["annotations"] = serde_json::Value::Object(ann);
    });
}

#[test]
fn annotation_presets_are_merged_stored_and_hashed_in_state() {
    let rt = Runtime::new();
    let cfg = rt.root.path().join("no-config.yaml");
    let b = Bundle::busybox(&["sleep", "1000"]);
    with_annotations(&b, &[("dev.nemosandbox.presets", "npm,pypi")]);
    let id = unique("pol");
    rt.ok(&[
        "--config",
        cfg.to_str().unwrap(),
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let st = rt.state(&id);
    let hash = st["annotations"]["dev.nemosandbox.policy.sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(hash.len(), 64);
    assert_eq!(
        st["annotations"]["dev.nemosandbox.policy.sources"],
        "builtin:default,builtin:npm,builtin:pypi"
    );
    // The user's own annotation is still there too.
    assert_eq!(st["annotations"]["dev.nemosandbox.presets"], "npm,pypi");
    // The stored effective policy is what `policy show` computes for the same bundle.
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rt.own_dir(&id).effective()).unwrap()).unwrap();
    let shown: serde_json::Value = serde_json::from_str(&rt.ok(&[
        "--config",
        cfg.to_str().unwrap(),
        "policy",
        "show",
        "--format",
        "json",
        "--bundle",
        b.path().to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(stored, shown);
    assert!(
        stored["network_policies"]["npm"]["policy"]["binaries"]
            .as_array()
            .unwrap()
            .len()
            > 1
    );
    assert!(stored["network_policies"]["pypi"].is_object());
    let explain = rt.ok(&[
        "--config",
        cfg.to_str().unwrap(),
        "policy",
        "explain",
        "--bundle",
        b.path().to_str().unwrap(),
    ]);
    assert!(explain.contains(&hash), "{explain}");
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id);

    // Without annotations the default baseline applies, with a different hash.
    let plain = Bundle::busybox(&["true"]);
    let id2 = unique("pol");
    rt.ok(&[
        "--config",
        cfg.to_str().unwrap(),
        "create",
        "--bundle",
        plain.path().to_str().unwrap(),
        &id2,
    ]);
    let st2 = rt.state(&id2);
    assert_eq!(
        st2["annotations"]["dev.nemosandbox.policy.sources"],
        "builtin:default"
    );
    assert_ne!(
        st2["annotations"]["dev.nemosandbox.policy.sha256"],
        hash.as_str()
    );
    rt.ok(&["delete", "--force", &id2]);
    assert_nothing_left(&rt, &id2);
}

/// `nemosandbox --config CFG create --bundle B ID`.
fn create_args<'a>(cfg: &'a str, b: &'a Bundle, id: &'a str) -> [&'a str; 6] {
    [
        "--config",
        cfg,
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        id,
    ]
}

#[test]
fn unknown_or_disallowed_presets_fail_create_and_leave_nothing() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["true"]);
    let id = unique("polbad");
    let cfg = rt.root.path().join("config.yaml");
    std::fs::write(&cfg, "allowed_presets: [npm]\npolicy_dirs: []\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    with_annotations(&b, &[("dev.nemosandbox.presets", "npm,no-such-preset")]);
    let e = rt.fails(&create_args(cfg, &b, &id));
    assert!(e.contains("unknown policy \"no-such-preset\""), "{e}");
    assert_nothing_left(&rt, &id);
    with_annotations(&b, &[("dev.nemosandbox.presets", "pypi")]);
    let e = rt.fails(&create_args(cfg, &b, &id));
    assert!(e.contains("not in the node's allowed_presets"), "{e}");
    assert_nothing_left(&rt, &id);
    with_annotations(&b, &[("dev.nemosandbox.policy", "/etc/passwd")]);
    let e = rt.fails(&create_args(cfg, &b, &id));
    assert!(e.contains("allow_policy_files"), "{e}");
    assert_nothing_left(&rt, &id);
    // The allowed twin works.
    with_annotations(&b, &[("dev.nemosandbox.presets", "npm")]);
    rt.ok(&create_args(cfg, &b, &id));
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id);
    // A broken node configuration fails closed, naming the place.
    let bad = rt.root.path().join("bad.yaml");
    std::fs::write(&bad, "allowed_presets: [npm]\nallow_all: true\n").unwrap();
    let e = rt.fails(&[
        "--config",
        bad.to_str().unwrap(),
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(e.contains("bad.yaml:2:"), "{e}");
    assert_nothing_left(&rt, &id);
}

#[test]
fn runtime_flags_pin_presets_for_engines_without_annotations() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["true"]);
    let id = unique("polflag");
    rt.ok(&[
        "--config",
        "/nonexistent.yaml",
        "--preset",
        "telegram",
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let b2 = Bundle::busybox(&["sleep", "100"]);
    // openclaw-sandbox runs as `sandbox`, which the image must define, and guards its
    // configuration directory, which must exist.
    std::fs::create_dir_all(b2.path().join("rootfs/sandbox/.openclaw")).unwrap();
    std::fs::write(
        b2.path().join("rootfs/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000::/sandbox:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        b2.path().join("rootfs/etc/group"),
        "root:x:0:\nsandbox:x:1000:\n",
    )
    .unwrap();
    rt.ok(&[
        "--config",
        "/nonexistent.yaml",
        "--policy",
        "openclaw-sandbox",
        "--preset",
        "github",
        "create",
        "--bundle",
        b2.path().to_str().unwrap(),
        &id,
    ]);
    assert_eq!(
        rt.state(&id)["annotations"]["dev.nemosandbox.policy.sources"],
        "builtin:openclaw-sandbox,builtin:github"
    );
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id);
}

#[test]
fn lint_reports_file_line_column_and_exit_codes() {
    let rt = Runtime::new();
    let dir = TempDir::new("lint");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nnetwork_policies:\n  x:\n    endpoints:\n      - { host: \"*.com\", port: 443 }\n    binaries: []\n").unwrap();
    let out = rt.run(&["policy", "lint", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!("{}:5:", bad.display())),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!("{}:6:", bad.display())),
        "{text}"
    );
    let warn = dir.path().join("warn.yaml");
    std::fs::write(&warn, "version: 1\nnetwork_policies:\n  x:\n    endpoints:\n      - { host: a.example.com, port: 443, tls: terminate }\n    binaries: [{path: /bin/x}]\n").unwrap();
    let out = rt.run(&["policy", "lint", warn.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(":5:"));
    // Every shipped file lints clean through the CLI too.
    let shipped: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(shipped.len() >= 13);
    let mut args = vec!["policy", "lint"];
    args.extend(shipped.iter().map(|s| s.as_str()));
    rt.ok(&args);
    let list = rt.ok(&["--config", "/nonexistent.yaml", "policy", "list"]);
    for (name, _, _) in nemosandbox::policy::builtin::BUILTIN {
        assert!(
            list.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing:\n{list}"
        );
    }
}

#[test]
fn explain_prints_the_mount_plan_glob_matches_and_bwrap_arguments() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["true"]);
    let r = b.path().join("rootfs");
    std::fs::create_dir_all(r.join("var/log")).unwrap();
    for f in ["var/log/secret1", "var/log/secret2", "etc/shadow"] {
        std::fs::write(r.join(f), "x").unwrap();
    }
    let pol = rt.root.path().join("explain.yaml");
    std::fs::write(
        &pol,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/etc/shadow\": \"---\"\n    \"/var/log/secret*\": \"---\"\n",
    )
    .unwrap();
    let out = rt.ok(&[
        "--policy",
        pol.to_str().unwrap(),
        "policy",
        "explain",
        "--bundle",
        b.path().to_str().unwrap(),
    ]);
    assert!(out.contains("base: permissive"), "{out}");
    assert!(
        out.contains("/etc/shadow") && out.contains("masked: empty read-only file"),
        "{out}"
    );
    assert!(
        out.contains("glob \"/var/log/secret*\" matched 2 path(s)"),
        "{out}"
    );
    assert!(out.contains("/var/log/secret2"), "{out}");
    assert!(
        out.contains("bwrap --ro-bind / / --proc /proc --dev /dev --tmpfs /tmp"),
        "{out}"
    );
    assert!(out.contains("--ro-bind-data 3 /etc/shadow"), "{out}");
    // Nothing was created for an explain.
    assert!(std::fs::read_dir(rt.root.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .all(|e| e.path().extension().is_some_and(|x| x == "yaml")));
}

/// Annotations cannot widen what the node allows: a baseline the node did not list in
/// `allowed_baselines` fails create (naming the setting), and a preset they select can only
/// narrow the filesystem — the mask the baseline sets holds, where the same preset pinned by
/// the administrator (a runtime flag) would lift it.
#[test]
fn annotations_cannot_name_other_baselines_or_unmask_paths() {
    let rt = Runtime::new();
    let dir = rt.root.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("masked.yaml"),
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n    \"/etc/shadow\": \"---\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("open.yaml"),
        "preset: { name: open }\nfilesystem_policy:\n  read_write: [/etc]\n  permissions:\n    \"/etc/shadow\": \"rwx\"\n",
    )
    .unwrap();
    let cfg = rt.root.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "policy_dirs: [{}]\nallowed_baselines: [default, masked]\n",
            dir.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();

    // A baseline the node does not allow annotations to name.
    let b = common::probe::bundle(&["probe", "read", "/etc/shadow"]);
    with_annotations(&b, &[("dev.nemosandbox.policy", "openclaw-sandbox")]);
    let id = unique("pol");
    let err = rt.fails(&create_args(cfg, &b, &id));
    assert!(err.contains("allowed_baselines"), "{err}");
    assert_nothing_left(&rt, &id);

    // An allowed baseline with a mask, and a preset selected by annotation that would lift it.
    let read = |annotations: &[(&str, &str)], flags: &[&str]| -> String {
        let b = common::probe::bundle(&["sh", "-c", "probe read /etc/shadow; probe write /etc/x"]);
        with_annotations(&b, annotations);
        let id = unique("pol");
        let mut args = vec!["--config", cfg];
        args.extend_from_slice(flags);
        args.extend(["run", "--bundle", b.path().to_str().unwrap(), &id]);
        let out = rt.run(&args);
        assert_nothing_left(&rt, &id);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let selected = read(
        &[
            ("dev.nemosandbox.policy", "masked"),
            ("dev.nemosandbox.presets", "open"),
        ],
        &[],
    );
    let lines: Vec<&str> = selected.lines().collect();
    assert!(
        lines[0] == "ok 0" || lines[0] == "EACCES",
        "the mask holds: {selected}"
    );
    assert_ne!(
        lines[1], "ok",
        "read_write from an annotation gives nothing: {selected}"
    );
    // The same preset pinned by the administrator applies as written.
    let pinned = read(&[], &["--policy", "masked", "--preset", "open"]);
    assert!(pinned.starts_with("ok 6"), "{pinned}");
}
