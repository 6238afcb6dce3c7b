use super::*;

/// `state` of a container under a runtime root, as JSON.
fn state_in(root: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok(Command::new(bin())
        .arg("--root")
        .arg(root)
        .args(["state", id])))
    .unwrap()
}

/// Fields drop in order: the daemon stops before its directory goes.
struct Docker {
    daemon: Dockerd,
    dir: TempDir,
}

impl Docker {
    fn start() -> Docker {
        let dir = TempDir::new("docker");
        let gate = dir.path().join("gate.yaml");
        std::fs::write(
            &gate,
            "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n\
             exec_policy:\n  allowlist:\n    - { pattern: /bin/busybox }\n  safe_builtins: true\n",
        )
        .unwrap();
        let daemon_json = serde_json::json!({
            "runtimes": {
                "nemosandbox": {"path": bin()},
                "nemosandbox-telegram": {"path": bin(), "runtimeArgs": ["--preset", "telegram"]},
                "nemosandbox-gate": {"path": bin(), "runtimeArgs": ["--policy", gate]},
                "nemosandbox-net": {"path": bin(), "runtimeArgs": ["--preset", localnet_preset(dir.path(), 18521)]}
            },
            "iptables": false, "ip-masq": false, "bridge": "none",
            "storage-driver": "overlay2"
        });
        let cfg = dir.path().join("daemon.json");
        std::fs::write(&cfg, daemon_json.to_string()).unwrap();
        let daemon = Dockerd::start(dir.path(), &cfg);
        Docker { daemon, dir }
    }
    fn cli(&self, args: &[&str]) -> Command {
        self.daemon.cli(args)
    }
    /// The `--root` dockerd's shim passes to runc-compatible runtimes.
    fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("exec/runtime-runc/moby")
    }
    /// `docker run -d --runtime=RUNTIME --network none IMAGE sleep 300`, returning the id.
    fn run_sleeper(&self, runtime: &str) -> String {
        let rt = format!("--runtime={runtime}");
        ok(&mut self.cli(&[
            "run",
            "-d",
            &rt,
            "--network",
            "none",
            "localhost/nemo-bb:test",
            "sleep",
            "300",
        ]))
        .trim()
        .to_string()
    }
}

#[test]
fn docker_runs_and_execs_through_the_runtime() {
    let d = Docker::start();
    let tar = rootfs_tar(d.dir.path());
    ok(
        d.cli(&["import", tar.to_str().unwrap(), "localhost/nemo-bb:test"])
            .stdin(Stdio::null()),
    );

    // Foreground with exit code.
    let (code, out, err) = sh(&mut d.cli(&[
        "run",
        "--rm",
        "--runtime=nemosandbox",
        "--network",
        "none",
        "localhost/nemo-bb:test",
        "sh",
        "-c",
        "grep -E 'Seccomp|NoNewPrivs' /proc/self/status; exit 5",
    ]));
    assert_eq!(code, 5, "{out}{err}");
    assert_confined(&out);

    // runtimeArgs pin a preset for engines that cannot pass annotations.
    let pinned = d.run_sleeper("nemosandbox-telegram");
    let st = state_in(&d.runtime_root(), &pinned);
    assert_eq!(
        st["annotations"]["dev.nemosandbox.policy.sources"],
        "builtin:default,builtin:telegram"
    );
    ok(&mut d.cli(&["rm", "-f", &pinned]));

    // The exec gate through `docker exec`: allowed chains run, refused ones say why.
    let gated = d.run_sleeper("nemosandbox-gate");
    let (code, out, err) = sh(&mut d.cli(&["exec", &gated, "sh", "-c", "cd /tmp && pwd"]));
    assert_eq!((code, out.trim()), (0, "/tmp"), "{err}");
    let (code, out, err) = sh(&mut d.cli(&["exec", &gated, "sh", "-c", "echo \"$(id)\""]));
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("exec denied by policy")
            && format!("{out}{err}").contains("command substitution"),
        "{out}{err}"
    );
    ok(&mut d.cli(&["rm", "-f", &gated]));

    // The network guard under docker, its preset pinned by runtimeArgs: run and exec.
    let tar = probe_rootfs_tar(d.dir.path());
    ok(&mut d.cli(&["import", tar.to_str().unwrap(), "localhost/nemo-probe:test"]));
    let out = ok(&mut d.cli(&[
        "run",
        "--rm",
        "--runtime=nemosandbox-net",
        "--network",
        "host",
        "localhost/nemo-probe:test",
        "sh",
        "-c",
        &net_script(18521),
    ]));
    assert_eq!(out, "listed: ok\nport: EACCES\ncopy: EACCES\n");
    let netc = ok(&mut d.cli(&[
        "run",
        "-d",
        "--runtime=nemosandbox-net",
        "--network",
        "host",
        "localhost/nemo-probe:test",
        "sleep",
        "300",
    ]))
    .trim()
    .to_string();
    let out = ok(&mut d.cli(&["exec", &netc, "sh", "-c", &net_script(18521)]));
    assert_eq!(out, "listed: ok\nport: EACCES\ncopy: EACCES\n");
    // docker's resolv.conf mount is replaced by the guard's resolver (a 127.100-199.x.y address).
    let resolv = ok(&mut d.cli(&["exec", &netc, "cat", "/etc/resolv.conf"]));
    let ns: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .collect();
    assert!(
        ns.len() == 1 && ns[0].starts_with("127.1"),
        "the container's resolv.conf names only the guard: {resolv}"
    );
    ok(&mut d.cli(&["rm", "-f", &netc]));
    no_state_left(&d.runtime_root(), &netc);

    node_installer_image(&d);

    // Detached, exec, top, pause/unpause, update, stop, rm.
    let id = d.run_sleeper("nemosandbox");
    let st = state_in(&d.runtime_root(), &id);
    assert_eq!(st["status"], "running");
    // Terminals go through the console socket: `run -t` and `exec -t` get a pty.
    let (code, out, err) = sh(&mut d.cli(&[
        "run",
        "--rm",
        "-t",
        "--runtime=nemosandbox",
        "--network",
        "none",
        "localhost/nemo-bb:test",
        "sh",
        "-c",
        "tty; exit 3",
    ]));
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("/dev/pts/"), "{out}");
    let tty = ok(&mut d.cli(&["exec", "-t", &id, "tty"]));
    assert!(tty.contains("/dev/pts/"), "{tty}");
    let (code, out, _) = sh(&mut d.cli(&[
        "exec",
        &id,
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; touch /etc/nemo 2>&1; touch /tmp/ok && echo tmp-ok; exit 9",
    ]));
    assert_eq!(code, 9);
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // The default policy holds for the engine's exec: read-only root, writable /tmp.
    assert!(
        out.contains("Read-only file system") && out.contains("tmp-ok"),
        "{out}"
    );
    let (code, out, err) = sh(&mut d.cli(&["exec", &id, "no-such-command"]));
    assert_ne!(code, 0);
    // The docker CLI prints the daemon's error on stdout or stderr depending on its version.
    assert!(
        format!("{out}{err}").contains("executable file not found"),
        "{out}{err}"
    );
    let top = ok(&mut d.cli(&["top", &id]));
    assert!(top.contains("sleep 300"), "{top}");
    ok(&mut d.cli(&["pause", &id]));
    ok(&mut d.cli(&["unpause", &id]));
    ok(&mut d.cli(&["update", "--memory", "64m", "--memory-swap", "128m", &id]));
    ok(&mut d.cli(&["stop", "-t", "1", &id]));
    ok(&mut d.cli(&["rm", &id]));
    no_state_left(&d.runtime_root(), &id);
}

/// `bin()` as a path inside the repository, the installer image's build context (the
/// Dockerfile's `BIN` argument).
fn bin_in_build_context() -> String {
    let repo = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).unwrap();
    let bin = std::fs::canonicalize(bin()).unwrap();
    bin.strip_prefix(&repo)
        .unwrap_or_else(|_| {
            panic!(
                "{} is outside the build context {}",
                bin.display(),
                repo.display()
            )
        })
        .to_str()
        .unwrap()
        .to_string()
}

/// The value at `path` in a parsed TOML document; a missing key fails with the document.
fn toml_at<'a>(doc: &'a toml::Value, path: &[&str], text: &str) -> &'a toml::Value {
    path.iter().fold(doc, |v, key| {
        v.get(*key)
            .unwrap_or_else(|| panic!("no {} in:\n{text}", path.join(".")))
    })
}

/// The node installer (Dockerfile, integration/kubernetes/install.sh): the image built here
/// from the static binary and a local base, run against a scratch host root for each containerd
/// configuration version: it installs (doctor first), a second run changes nothing, and the
/// uninstall leaves containerd's configuration byte for byte as it was.
fn node_installer_image(d: &Docker) {
    let repo = env!("CARGO_MANIFEST_DIR");
    let bin_arg = format!("BIN={}", bin_in_build_context());
    let mut build = d.cli(&[
        "build",
        "-q",
        "--build-arg",
        "BASE=localhost/nemo-bb:test",
        "--build-arg",
        &bin_arg,
        "-t",
        "localhost/nemosandbox-installer:test",
        repo,
    ]);
    build.env("DOCKER_BUILDKIT", "0");
    ok(&mut build);

    // containerd 1.7 (config version 2) and 2.x (version 3) as nodes have them: runc with the
    // systemd cgroup driver, which the nemosandbox handler must copy.
    let v2 = r#"version = 2
# the node's own settings
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = true
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
"#;
    let v3 = r#"version = 3
# the node's own settings
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.k8s.io/pause:3.10'

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = true
"#;
    // Where each version keeps the CRI runtimes: version 2's plugin, then version 3's.
    let (cri_1, cri_2) = ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime");
    for (version, fixture, plugin, other) in [(2, v2, cri_1, cri_2), (3, v3, cri_2, cri_1)] {
        let host = TempDir::new("node-root");
        let config_path = host.path().join("etc/containerd/config.toml");
        std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        std::fs::write(&config_path, fixture).unwrap();
        let mount = format!("{}:/host", host.path().display());
        // What doctor's probes need of the DaemonSet's privileged init container (cgroup BPF,
        // pidfd_getfd, seccomp without docker's filter): `--privileged` itself asks for every
        // capability, more than this machine's bounding set holds. No API server to label a
        // node, no systemd to restart containerd.
        let run = |env: &[&str]| {
            let mut args = vec![
                "run",
                "--rm",
                "--cap-add",
                "SYS_ADMIN",
                "--cap-add",
                "SYS_PTRACE",
                "--cap-add",
                "NET_ADMIN",
                "--security-opt",
                "seccomp=unconfined",
                "--network",
                "none",
                "-v",
                &mount,
                "-e",
                "LABEL_NODE=0",
                "-e",
                "RESTART_CONTAINERD=0",
            ];
            for e in env {
                args.extend(["-e", *e]);
            }
            args.push("localhost/nemosandbox-installer:test");
            let (code, out, err) = sh(&mut d.cli(&args));
            assert_eq!(code, 0, "config version {version}, {env:?}: {out}{err}");
            format!("{out}{err}")
        };
        let done = |out: &str, line: &str| out.lines().any(|l| l.starts_with(line));

        let first = run(&[]);
        assert!(done(&first, "install: done"), "{first}");
        let doctor = first.find("seccomp user notification");
        let changed = first.find("nemosandbox install: changed");
        assert!(
            doctor.is_some() && changed.is_some() && doctor < changed,
            "doctor runs before the install: {first}"
        );
        let text = std::fs::read_to_string(&config_path).unwrap();
        let second = run(&[]);
        assert!(
            done(&second, "install: done")
                && second.contains("already up to date")
                && !second.contains("nemosandbox install: changed"),
            "{second}"
        );
        assert_eq!(
            std::fs::read_to_string(&config_path).unwrap(),
            text,
            "the second run leaves containerd's configuration alone"
        );

        let installed = host.path().join("usr/local/bin/nemosandbox");
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(bin()).unwrap(),
            "the installed binary is the one built"
        );
        // The shipped policies are built into the binary: nothing to copy, nothing to keep
        // in step on upgrades, and an administrator's own files there are never touched.
        let policies = host.path().join("etc/nemosandbox/policies");
        assert!(!policies.exists());
        // No containerd to restart here: the restart stays owed (and the node unlabelled)
        // until one happens, so a later run restarts even though nothing changes then.
        let pending = host
            .path()
            .join("var/lib/nemosandbox/containerd-restart-pending");
        assert!(pending.exists(), "{first}");
        assert!(second.contains("containerd was not restarted"), "{second}");
        let node_config = host.path().join("etc/nemosandbox/config.yaml");
        assert!(node_config.is_file());

        // The node's own bytes first, then the handler as one marked block.
        assert!(text.starts_with(fixture), "{text}");
        for marker in [
            "# BEGIN nemosandbox runtime handler",
            "# END nemosandbox runtime handler",
        ] {
            assert_eq!(text.matches(marker).count(), 1, "{marker}: {text}");
        }
        let doc: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"));
        let runtimes = toml_at(&doc, &["plugins", plugin, "containerd", "runtimes"], &text);
        let handler = toml_at(runtimes, &["nemosandbox"], &text);
        assert_eq!(
            toml_at(handler, &["runtime_type"], &text).as_str(),
            Some("io.containerd.runc.v2"),
            "{text}"
        );
        assert_eq!(
            toml_at(handler, &["options", "BinaryName"], &text).as_str(),
            Some("/usr/local/bin/nemosandbox"),
            "{text}"
        );
        assert_eq!(
            toml_at(handler, &["options", "SystemdCgroup"], &text).as_bool(),
            Some(true),
            "SystemdCgroup copied from runc: {text}"
        );
        for key in ["pod_annotations", "container_annotations"] {
            let list = toml_at(handler, &[key], &text).as_array();
            assert!(
                list.is_some_and(|l| l.iter().any(|v| v.as_str() == Some("dev.nemosandbox.*"))),
                "{key}: {text}"
            );
        }
        assert_eq!(
            toml_at(runtimes, &["runc", "options", "SystemdCgroup"], &text).as_bool(),
            Some(true),
            "runc untouched: {text}"
        );
        assert!(
            toml_at(&doc, &["plugins"], &text).get(other).is_none(),
            "version {version} has no {other} plugin: {text}"
        );

        // Uninstall; on the second node the administrator edited config.yaml, which stays.
        let edited = format!(
            "{}allowed_presets: [github]\n",
            std::fs::read_to_string(&node_config).unwrap()
        );
        if version == 3 {
            std::fs::write(&node_config, &edited).unwrap();
        }
        let out = run(&["UNINSTALL=1"]);
        assert!(
            done(&out, "uninstall: done") && out.contains("nemosandbox uninstall: changed"),
            "{out}"
        );
        assert_eq!(
            std::fs::read_to_string(&config_path).unwrap(),
            fixture,
            "containerd's configuration byte for byte as before the install"
        );
        assert!(!installed.exists(), "the binary is removed");
        assert!(!pending.exists(), "nothing owed once the handler is gone");
        if version == 3 {
            assert_eq!(std::fs::read_to_string(&node_config).unwrap(), edited);
        } else {
            assert!(
                !host.path().join("etc/nemosandbox").exists(),
                "the unedited config.yaml and the directories are removed"
            );
        }
        let again = run(&["UNINSTALL=1"]);
        assert!(
            done(&again, "uninstall: done") && again.contains("has no nemosandbox entry"),
            "{again}"
        );
        assert_eq!(std::fs::read_to_string(&config_path).unwrap(), fixture);
    }
    let _ = sh(&mut d.cli(&["rmi", "-f", "localhost/nemosandbox-installer:test"]));
}

#[test]
fn containerd_ctr_runs_with_runc_binary() {
    let dir = TempDir::new("ctrd");
    let sock = dir.path().join("containerd.sock");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n",
            dir.path().display(),
            sock.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("containerd.log");
    let mut child = Command::new("containerd")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("containerd");
    wait_for_socket(&sock, &mut child, &log);
    let _daemon = Daemon(child);
    let ctr = |args: &[&str]| {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null());
        c
    };
    // containerd imports images as archives: build an OCI layout from the rootfs tar.
    let archive = oci_archive(dir.path(), "localhost/nemo-bb:test");
    ok(&mut ctr(&["image", "import", archive.to_str().unwrap()]));
    let id = unique("ctr");
    let (code, out, err) = sh(&mut ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        &bin(),
        "localhost/nemo-bb:test",
        &id,
        "sh",
        "-c",
        "grep NoNewPrivs /proc/self/status; exit 8",
    ]));
    assert_eq!(code, 8, "{out}{err}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    no_state_left(
        &dir.path()
            .join("state/io.containerd.runtime.v2.task/default"),
        &id,
    );
}
