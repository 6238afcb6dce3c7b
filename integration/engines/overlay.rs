use super::*;

/// On podman's overlay root: a guarded directory is hardened (or `partial`, saying why), cannot
/// be changed through `podman exec`, `podman exec` goes through the exec gate, and `podman rm`
/// still removes the container's files.
#[test]
fn podman_overlay_symlink_guard_and_removal() {
    let work = TempDir::new("podman-guard");
    let policy = work.path().join("guard.yaml");
    std::fs::write(
        &policy,
        "version: 1\nfilesystem_policy:\n  read_write: [/sandbox]\n  permissions:\n    \"/**\": \"r-x\"\n\
         symlink_guards:\n  - dir: /sandbox/.openclaw\n    target_dir: /sandbox/.openclaw-data\n\
         exec_policy:\n  allowlist:\n    - { pattern: /bin/busybox }\n  safe_builtins: true\n",
    )
    .unwrap();
    let flag = format!("policy={}", policy.display());
    let podman = || podman_in(work.path(), &["--runtime-flag", &flag]);
    let rootfs = work.path().join("rootfs");
    make_busybox_rootfs(&rootfs);
    std::fs::create_dir_all(rootfs.join("sandbox/.openclaw")).unwrap();
    std::fs::create_dir_all(rootfs.join("sandbox/.openclaw-data")).unwrap();
    std::fs::write(
        rootfs.join("sandbox/.openclaw-data/config.json"),
        "cfg-data",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/sandbox/.openclaw-data/config.json",
        rootfs.join("sandbox/.openclaw/config.json"),
    )
    .unwrap();
    let tar = tar_of(&rootfs, &work.path().join("guard.tar"));
    ok(podman().args(["import", tar.to_str().unwrap(), "localhost/nemo-guard:test"]));

    let id = ok(podman().args(["run", "-d", "localhost/nemo-guard:test", "sleep", "300"]))
        .trim()
        .to_string();
    let state: serde_json::Value =
        serde_json::from_str(&ok(Command::new(bin()).args(["state", &id]))).unwrap();
    let outcome = state["annotations"]["dev.nemosandbox.symlink-guard./sandbox/.openclaw"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eprintln!("podman overlay guard outcome: {outcome}");
    assert!(
        outcome == "hardened" || outcome.starts_with("partial: "),
        "{outcome}"
    );
    let (_, out, _) = sh(podman().args([
        "exec",
        &id,
        "sh",
        "-c",
        "cat /sandbox/.openclaw/config.json; echo; rm -f /sandbox/.openclaw/config.json && echo REMOVED; \
         ln -s /etc/shadow /sandbox/.openclaw/new && echo ADDED; true",
    ]));
    assert!(
        out.contains("cfg-data") && !out.contains("REMOVED") && !out.contains("ADDED"),
        "{out}"
    );
    // The exec gate through `podman exec`: a refused construct is reported to the caller and
    // starts nothing.
    let (code, out, err) = sh(podman().args(["exec", &id, "sh", "-c", "echo \"$(id)\""]));
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("exec denied by policy")
            && format!("{out}{err}").contains("command substitution"),
        "{out}{err}"
    );
    ok(podman().args(["rm", "-f", "-t", "1", &id]));
    no_state_left(Path::new("/run/nemosandbox"), &id);
    ok(podman().args(["rmi", "-f", "localhost/nemo-guard:test"]));
}
