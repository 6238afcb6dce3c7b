//! `nemosandbox install|uninstall` against the engines themselves: the engine picks the runtime
//! up (a container runs through it), a second install changes nothing, and uninstall leaves the
//! configuration byte-identical to before. `node-label` against a TLS server standing in for the
//! Kubernetes API server.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::daemon::{Daemon, Dockerd};
use common::*;

fn run(args: &[&str]) -> Output {
    output_within(
        {
            let mut c = Command::new(bin());
            c.args(args).stdin(Stdio::null());
            c
        },
        Duration::from_secs(60),
    )
}

/// `nemosandbox ARGS`, which must succeed; its stdout.
fn cli_ok(args: &[&str]) -> String {
    let out = run(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `sh`, stdout and stderr together.
fn sh_all(mut cmd: Command) -> (i32, String) {
    let (code, out, err) = sh(&mut cmd);
    (code, out + &err)
}

fn busybox_tar(dir: &Path) -> String {
    let rootfs = dir.join("rootfs");
    make_busybox_rootfs(&rootfs);
    common::daemon::tar_of(&rootfs, &dir.join("rootfs.tar"))
        .display()
        .to_string()
}

#[test]
fn docker_install_reloads_dockerd_and_uninstall_restores_daemon_json() {
    let dir = TempDir::new("inst-docker");
    let cfg = dir.path().join("daemon.json");
    // The admin's own formatting and keys, which install must keep and uninstall restore.
    let original =
        "{\n    \"iptables\": false, \"ip-masq\": false,\n    \"bridge\": \"none\",\n    \
                    \"storage-driver\": \"overlay2\"\n}\n";
    std::fs::write(&cfg, original).unwrap();
    let d = Dockerd::start(dir.path(), &cfg);
    let (code, out) =
        sh_all(d.cli(&["import", &busybox_tar(dir.path()), "localhost/nemo-bb:inst"]));
    assert_eq!(code, 0, "{out}");
    let runtimes = || sh_all(d.cli(&["info", "--format", "{{json .Runtimes}}"])).1;
    assert!(!runtimes().contains("nemo-inst"));

    let cfg_s = cfg.to_str().unwrap();
    let args = [
        "--preset",
        "npm",
        "install",
        "docker",
        "--name",
        "nemo-inst",
        "--engine-config",
        cfg_s,
    ];
    let dry = cli_ok(&[&args[..], &["--dry-run"]].concat());
    assert!(dry.contains("+    \"nemo-inst\": {"), "{dry}");
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        original,
        "--dry-run writes nothing"
    );
    let out = cli_ok(&args);
    assert!(out.contains(&format!("changed {cfg_s}")), "{out}");
    assert!(out.contains("sent SIGHUP to dockerd"), "{out}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(doc["storage-driver"], "overlay2", "the admin's keys stay");
    assert_eq!(
        doc["runtimes"]["nemo-inst"]["runtimeArgs"],
        serde_json::json!(["--preset", "npm"])
    );
    wait_until(|| runtimes().contains("nemo-inst"));

    // The engine runs containers through it: no_new_privs and a seccomp filter, which docker
    // with runc does not set, and the preset given to install reached the runtime.
    let (code, out) = sh_all(d.cli(&[
        "run",
        "-d",
        "--runtime",
        "nemo-inst",
        "--network",
        "none",
        "localhost/nemo-bb:inst",
        "sleep",
        "60",
    ]));
    assert_eq!(code, 0, "{out}");
    let id = out.trim().to_string();
    let (code, out) = sh_all(d.cli(&[
        "exec",
        &id,
        "grep",
        "-E",
        "NoNewPrivs|Seccomp:",
        "/proc/self/status",
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"),
        "{out}"
    );
    let root = dir.path().join("exec/runtime-runc/moby");
    let state = cli_ok(&["--root", root.to_str().unwrap(), "state", &id]);
    assert!(
        state.contains("npm"),
        "the preset is in the container's policy: {state}"
    );
    let (code, out) = sh_all(d.cli(&["rm", "-f", &id]));
    assert_eq!(code, 0, "{out}");

    let again = cli_ok(&args);
    assert!(
        again.contains("already up to date") && !again.contains("SIGHUP"),
        "{again}"
    );

    let out = cli_ok(&[
        "uninstall",
        "docker",
        "--name",
        "nemo-inst",
        "--engine-config",
        cfg_s,
    ]);
    // The original file sets no "runtimes", and dockerd's reload keeps what the file omits.
    assert!(
        out.contains("sent SIGHUP to dockerd") && out.contains("restart docker"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        original,
        "byte-identical after uninstall"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("daemon.json") && n != "daemon.json")
        .collect();
    assert!(
        leftovers.is_empty(),
        "uninstall removes its record: {leftovers:?}"
    );
    drop(d);
    let d = Dockerd::start(dir.path(), &cfg);
    let (_, rts) = sh_all(d.cli(&["info", "--format", "{{json .Runtimes}}"]));
    assert!(!rts.contains("nemo-inst"), "{rts}");
    let (code, out) = sh_all(d.cli(&[
        "run",
        "--rm",
        "--runtime",
        "nemo-inst",
        "localhost/nemo-bb:inst",
        "true",
    ]));
    assert_ne!(
        code, 0,
        "the runtime is gone from docker after its restart: {out}"
    );
    let again = cli_ok(&[
        "uninstall",
        "docker",
        "--name",
        "nemo-inst",
        "--engine-config",
        cfg_s,
    ]);
    assert!(again.contains("has no nemo-inst entry"), "{again}");
}

#[test]
fn podman_install_writes_a_drop_in_podman_uses() {
    let work = TempDir::new("inst-podman");
    let name = format!("nemo-inst-{}", std::process::id());
    let dropin = Path::new("/etc/containers/containers.conf.d").join(format!("50-{name}.conf"));
    let existed = dropin.parent().unwrap().exists();
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(work.path().join("storage"))
            .arg("--runroot")
            .arg(work.path().join("run"))
            .stdin(Stdio::null());
        c
    };
    let (code, out) = sh_all({
        let mut c = podman();
        c.args([
            "import",
            &busybox_tar(work.path()),
            "localhost/nemo-bb:inst",
        ]);
        c
    });
    assert_eq!(code, 0, "{out}");
    let out = cli_ok(&["install", "podman", "--name", &name]);
    assert!(
        out.contains(&format!("changed {}", dropin.display())),
        "{out}"
    );
    let (code, out) = sh_all({
        let mut c = podman();
        c.args(["--runtime", &name, "run", "--rm", "--network", "none"])
            .args([
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
                "localhost/nemo-bb:inst",
            ])
            .args([
                "sh",
                "-c",
                "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status; exit 3",
            ]);
        c
    });
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"),
        "{out}"
    );
    assert!(cli_ok(&["install", "podman", "--name", &name]).contains("already up to date"));
    cli_ok(&["uninstall", "podman", "--name", &name]);
    assert!(!dropin.exists());
    assert_eq!(
        dropin.parent().unwrap().exists(),
        existed,
        "the drop-in directory as before"
    );
    let (code, _) = sh_all({
        let mut c = podman();
        c.args([
            "--runtime",
            &name,
            "run",
            "--rm",
            "localhost/nemo-bb:inst",
            "true",
        ]);
        c
    });
    assert_ne!(code, 0, "podman no longer knows the runtime");
}

/// containerd 1.x (the version here) reads the handler install wrote where its CRI plugin looks
/// for it, and uninstall restores the file. (Running pods through it: integration/cri.rs, whose
/// node registers its handler with `install containerd`. Config version 3 is checked by parsing
/// in the unit tests: containerd 2.x is not packaged here.)
#[test]
fn containerd_reads_the_installed_handler_and_uninstall_restores_config() {
    let dir = TempDir::new("inst-ctrd");
    let cfg = dir.path().join("config.toml");
    let sock = dir.path().join("containerd.sock");
    let original = format!(
        "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true",
        dir.path().display(),
        sock.display()
    );
    std::fs::write(&cfg, &original).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let out = cli_ok(&[
        "install",
        "containerd",
        "--engine-config",
        cfg_s,
        "--path",
        "/opt/nemo/bin/nemosandbox",
    ]);
    // No systemd on this machine: install says what to do instead of restarting.
    assert!(out.contains("restart containerd to apply"), "{out}");
    let log = dir.path().join("containerd.log");
    let mut child = Command::new("containerd")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("containerd");
    common::daemon::wait_for_socket(&sock, &mut child, &log);
    let _daemon = Daemon(child);
    // What the running daemon's CRI plugin was configured with.
    let (code, dump) = sh_all({
        let mut c = Command::new("containerd");
        c.arg("--config").arg(&cfg).args(["config", "dump"]);
        c
    });
    assert_eq!(code, 0, "{dump}");
    let doc: toml::Table = dump.parse().expect("containerd's dump is TOML");
    let rt = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["nemosandbox"];
    assert_eq!(rt["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
    assert_eq!(
        rt["options"]["BinaryName"].as_str(),
        Some("/opt/nemo/bin/nemosandbox")
    );
    assert_eq!(
        rt["options"]["SystemdCgroup"].as_bool(),
        Some(true),
        "copied from runc's handler"
    );
    assert_eq!(rt["pod_annotations"][0].as_str(), Some("dev.nemosandbox.*"));
    let (code, plugins) = sh_all({
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&sock).args(["plugins", "ls"]);
        c
    });
    assert_eq!(code, 0, "{plugins}");
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("io.containerd.grpc.v1") && l.contains("cri") && l.contains("ok")),
        "{plugins}"
    );
    assert!(cli_ok(&[
        "install",
        "containerd",
        "--engine-config",
        cfg_s,
        "--path",
        "/opt/nemo/bin/nemosandbox"
    ])
    .contains("already up to date"));
    cli_ok(&[
        "uninstall",
        "containerd",
        "--engine-config",
        cfg_s,
        "--no-restart",
    ]);
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        original,
        "byte-identical after uninstall"
    );
}

#[test]
fn bad_engine_configs_are_refused_and_left_alone() {
    let dir = TempDir::new("inst-bad");
    for (engine, file, text, says) in [
        (
            "docker",
            "daemon.json",
            "{\"runtimes\": [",
            "not valid JSON",
        ),
        ("containerd", "config.toml", "[plugins\n", "not valid TOML"),
        (
            "containerd",
            "v9.toml",
            "version = 9\n",
            "unsupported config version 9",
        ),
        (
            "podman",
            "50-x.conf",
            "[engine]\n",
            "not written by `nemosandbox install`",
        ),
    ] {
        let p = dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        let out = run(&["install", engine, "--engine-config", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{engine}: {err}");
        assert!(
            err.contains(p.to_str().unwrap()) && err.contains(says),
            "{engine}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text, "left as it was");
    }
    let out = run(&[
        "--preset",
        "npm",
        "install",
        "containerd",
        "--engine-config",
        "/nonexistent/c.toml",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("dev.nemosandbox.presets annotation"));
    assert!(!Path::new("/nonexistent").exists());
    let out = run(&[
        "install",
        "docker",
        "--name",
        "../x",
        "--engine-config",
        "/nonexistent/d.json",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid runtime name"));
}

/// An HTTPS server with its own CA standing in for the API server: answers each request with
/// `status` and hands the requests to the test.
fn api_server(
    status: u16,
) -> (
    u16,
    std::path::PathBuf,
    std::sync::mpsc::Receiver<String>,
    TempDir,
) {
    let sa = TempDir::new("sa");
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(sa.path().join("ca.crt"), key.cert.pem()).unwrap();
    std::fs::write(sa.path().join("token"), "t0k3n\n").unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
            )
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(server) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(server, conn);
            let mut buf = vec![0u8; 8192];
            let mut req = Vec::new();
            // Headers, then the body by Content-Length.
            while let Ok(n) = tls.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req);
                if let Some(h) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if req.len() >= h + 4 + len {
                        break;
                    }
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&req).into_owned());
            let body = "{\"kind\":\"Status\"}";
            let _ = write!(
                tls,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    let dir = sa.path().to_path_buf();
    (port, dir, rx, sa)
}

fn node_label(port: u16, sa: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(["node-label", "--service-account", sa.to_str().unwrap()])
        .args(extra)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port.to_string())
        .env("NODE_NAME", "worker-1")
        .stdin(Stdio::null());
    output_within(c, Duration::from_secs(30))
}

#[test]
fn node_label_patches_the_node_through_the_api_server() {
    let (port, sa, requests, _keep) = api_server(200);
    let out = node_label(port, &sa, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let req = requests.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        req.starts_with("PATCH /api/v1/nodes/worker-1 HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(req.contains("Authorization: Bearer t0k3n\r\n"), "{req}");
    assert!(
        req.contains("Content-Type: application/merge-patch+json"),
        "{req}"
    );
    assert!(
        req.ends_with(r#"{"metadata":{"labels":{"nemosandbox.dev/installed":"true"}}}"#),
        "{req}"
    );
    let out = node_label(port, &sa, &["--remove", "--node", "w2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let req = requests.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(req.starts_with("PATCH /api/v1/nodes/w2 "), "{req}");
    assert!(
        req.ends_with(r#"{"metadata":{"labels":{"nemosandbox.dev/installed":null}}}"#),
        "{req}"
    );
}

#[test]
fn node_label_fails_closed() {
    // Refused by the API server (no RBAC): the status reaches the user, exit 1.
    let (port, sa, _requests, _keep) = api_server(403);
    let out = node_label(port, &sa, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A server the service account's CA did not sign: nothing is sent.
    let (port2, _sa2, requests2, _keep2) = api_server(200);
    let out = node_label(port2, &sa, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        requests2
            .recv_timeout(Duration::from_secs(2))
            .map_or(true, |r| r.is_empty()),
        "no request over an unverified connection"
    );
    // A node name that would change the request path.
    let out = node_label(port, &sa, &["--node", "../namespaces"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid node name"));
}
