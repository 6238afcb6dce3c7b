use super::*;

#[test]
fn podman_runs_containers_through_the_runtime() {
    let work = TempDir::new("podman");
    let podman = || podman_in(work.path(), &[]);
    let tar = rootfs_tar(work.path());
    ok(podman().args(["import", tar.to_str().unwrap(), "localhost/nemo-bb:test"]));

    let (code, out, err) = sh(podman().args([
        "run",
        "--rm",
        "localhost/nemo-bb:test",
        "sh",
        "-c",
        "grep -E 'Seccomp|NoNewPrivs' /proc/self/status; exit 4",
    ]));
    assert_eq!(code, 4, "{out}{err}");
    assert_confined(&out);

    let id = ok(podman().args([
        "run",
        "-d",
        "--annotation",
        "dev.nemosandbox.presets=npm",
        "localhost/nemo-bb:test",
        "sleep",
        "300",
    ]))
    .trim()
    .to_string();
    let state: serde_json::Value =
        serde_json::from_str(&ok(Command::new(bin()).args(["state", &id]))).unwrap();
    assert_eq!(state["status"], "running");
    // The annotation selected the preset; the policy hash is visible in state.
    assert_eq!(
        state["annotations"]["dev.nemosandbox.policy.sources"],
        "builtin:default,builtin:npm"
    );
    assert_eq!(
        state["annotations"]["dev.nemosandbox.policy.sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    // An unknown preset fails the engine's create with the runtime's error.
    let (code, out, err) = sh(podman().args([
        "run",
        "--rm",
        "--annotation",
        "dev.nemosandbox.presets=no-such",
        "localhost/nemo-bb:test",
        "true",
    ]));
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("unknown policy \"no-such\""),
        "{out}{err}"
    );
    let (code, out, _) = sh(podman().args([
        "exec",
        &id,
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; touch /etc/nemo 2>&1; touch /tmp/ok && echo tmp-ok; exit 6",
    ]));
    assert_eq!(code, 6);
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // The default policy holds for the engine's exec: read-only root, writable /tmp.
    assert!(
        out.contains("Read-only file system") && out.contains("tmp-ok"),
        "{out}"
    );
    let top = ok(podman().args(["top", &id]));
    assert!(top.contains("sleep 300"), "{top}");
    ok(podman().args(["stop", "-t", "1", &id]));
    ok(podman().args(["rm", &id]));
    no_state_left(Path::new("/run/nemosandbox"), &id);
    let _ = sh(podman().args(["rmi", "-f", "localhost/nemo-bb:test"]));
}

/// The network guard under podman, the preset selected by a pod-style annotation from the
/// node's policy directory: allowed with the annotation, refused without it, and a preset
/// outside `allowed_presets` fails the engine's create.
#[test]
fn podman_network_guard_with_an_annotated_preset() {
    let work = TempDir::new("podman-net");
    let dir = work.path().join("policies");
    localnet_preset(&dir, 18531);
    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "policy_dirs: [{}]\nallowed_presets: [localnet]\n",
            dir.display()
        ),
    )
    .unwrap();
    let flag = format!("config={}", config.display());
    let podman = || podman_in(work.path(), &["--runtime-flag", &flag]);
    let tar = probe_rootfs_tar(work.path());
    ok(podman().args(["import", tar.to_str().unwrap(), "localhost/nemo-probe:test"]));
    let annotated = "dev.nemosandbox.presets=localnet";
    let run = |annotation: Option<&str>, args: &[&str]| {
        let mut c = podman();
        c.args(["run", "--rm", "--network", "host"]);
        if let Some(a) = annotation {
            c.args(["--annotation", a]);
        }
        c.arg("localhost/nemo-probe:test").args(args);
        sh(&mut c)
    };
    let script = net_script(18531);
    let (code, out, err) = run(Some(annotated), &["sh", "-c", &script]);
    assert_eq!(
        (code, out.as_str()),
        (0, "listed: ok\nport: EACCES\ncopy: EACCES\n"),
        "{err}"
    );
    let (code, out, err) = run(None, &["probe", "connect", "18531"]);
    assert_eq!((code, out.trim()), (0, "EACCES"), "{err}");
    let (code, out, err) = run(
        Some("dev.nemosandbox.presets=npm"),
        &["probe", "connect", "18531"],
    );
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("not in the node's allowed_presets"),
        "{out}{err}"
    );

    let id = ok(podman().args([
        "run",
        "-d",
        "--network",
        "host",
        "--annotation",
        annotated,
        "localhost/nemo-probe:test",
        "sleep",
        "300",
    ]))
    .trim()
    .to_string();
    let out = ok(podman().args(["exec", &id, "sh", "-c", &script]));
    assert_eq!(out, "listed: ok\nport: EACCES\ncopy: EACCES\n");
    ok(podman().args(["rm", "-f", "-t", "1", &id]));
    no_state_left(Path::new("/run/nemosandbox"), &id);
    let _ = sh(podman().args(["rmi", "-f", "localhost/nemo-probe:test"]));
}
