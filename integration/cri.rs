//! The Kubernetes path (issue 8): a CRI client (`runtime.v1` over gRPC) drives a real
//! containerd, started with a private configuration, a `nemosandbox` runtime handler and a CNI
//! bridge, through RunPodSandbox, CreateContainer, StartContainer, ExecSync, ContainerStatus,
//! Stop and Remove — and checks from the CRI caller's side what the runtime enforced.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

const PRESET_PORT: u16 = 18541;

/// containerd with the CRI plugin under a private root, state, socket and CNI network.
struct Containerd {
    dir: TempDir,
    sock: PathBuf,
    _daemon: Daemon,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = TempDir::new("cri");
        let d = dir.path();
        // The node's configuration, reached through a wrapper as BinaryName: a node installs
        // /etc/nemosandbox/config.yaml instead.
        std::fs::create_dir_all(d.join("policies")).unwrap();
        std::fs::write(
            d.join("policies/podnet.yaml"),
            format!(
                "preset: {{ name: podnet, description: CRI test preset }}\n\
                 filesystem_policy:\n  permissions:\n    \"/etc/secret\": \"---\"\n\
                 network_policies:\n  local:\n    endpoints:\n      - {{ host: 127.0.0.1, port: {PRESET_PORT} }}\n\
                 \x20   binaries:\n      - {{ path: /bin/probe }}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("config.yaml"),
            format!(
                "policy_dirs: [{}]\nallowed_presets: [podnet]\naudit:\n  path: {}\n",
                d.join("policies").display(),
                d.join("audit/audit.jsonl").display()
            ),
        )
        .unwrap();
        let wrapper = d.join("nemosandbox");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec {} --config {} \"$@\"\n",
                bin(),
                d.join("config.yaml").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

        std::fs::create_dir_all(d.join("cni")).unwrap();
        let bridge = format!("nemo{}", std::process::id() % 10000);
        std::fs::write(
            d.join("cni/10-nemo.conflist"),
            serde_json::json!({
                "cniVersion": "0.4.0", "name": "nemo-cri-test",
                "plugins": [
                    {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                     "ipam": {"type": "host-local", "dataDir": d.join("ipam"),
                              "ranges": [[{"subnet": "10.234.77.0/24"}]]}},
                    {"type": "loopback"}
                ]
            })
            .to_string(),
        )
        .unwrap();
        let sock = d.join("containerd.sock");
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let handler = |name: &str, binary: &str| {
            format!(
                "[{cri}.containerd.runtimes.{name}]\n  runtime_type = \"io.containerd.runc.v2\"\n\
                 \x20 pod_annotations = [\"dev.nemosandbox.*\"]\n  container_annotations = [\"dev.nemosandbox.*\"]\n\
                 [{cri}.containerd.runtimes.{name}.options]\n  BinaryName = \"{binary}\"\n\
                 \x20 Root = \"{}\"\n  SystemdCgroup = false\n",
                d.join(format!("{name}-root")).display()
            )
        };
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{sock}\"\n\
             [{cri}]\n  sandbox_image = \"localhost/nemo-pause:1\"\n  restrict_oom_score_adj = true\n\
             [{cri}.containerd]\n  default_runtime_name = \"runc\"\n  snapshotter = \"overlayfs\"\n\
             [{cri}.cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = \"{cni}\"\n{}",
            handler("runc", "runc"),
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = sock.display(),
            cni = d.join("cni").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        // The nemosandbox handler as a node gets it: `nemosandbox install containerd`.
        let out = Command::new(bin())
            .arg("--root")
            .arg(d.join("nemosandbox-root"))
            .args(["install", "containerd", "--no-restart", "--engine-config"])
            .arg(d.join("config.toml"))
            .arg("--path")
            .arg(&wrapper)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install containerd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = d.join("containerd.log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("containerd");
        wait_for_socket(&sock, &mut child, &log);
        let c = Containerd {
            dir,
            sock,
            _daemon: Daemon(child),
        };
        c.import_images();
        c
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.sock)
            .args(["-n", "k8s.io"])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// The pause image (Debian's static catatonit) and the app image (busybox + probe, with a
    /// secret to mask), as OCI archives.
    fn import_images(&self) {
        let d = self.dir.path();
        let pause = d.join("pause-rootfs");
        std::fs::create_dir_all(&pause).unwrap();
        install_binary(Path::new("/usr/bin/catatonit"), &pause.join("catatonit"));
        let app = d.join("app-rootfs");
        make_busybox_rootfs(&app);
        install_binary(common::probe::probe(), &app.join("bin/probe"));
        std::fs::write(app.join("etc/secret"), "topsecret\n").unwrap();
        for (rootfs, name, cmd) in [
            (&pause, "localhost/nemo-pause:1", vec!["/catatonit", "-P"]),
            (&app, "localhost/nemo-app:1", vec!["sh"]),
        ] {
            let layer = tar_of(rootfs, &rootfs.with_extension("tar"));
            let archive = oci_archive(d, &layer, name, &cmd);
            let out = output_within(
                self.ctr(&["images", "import", archive.to_str().unwrap()]),
                Duration::from_secs(120),
            );
            assert!(
                out.status.success(),
                "ctr import: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    async fn channel(&self) -> Channel {
        let path = self.sock.clone();
        Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .expect("connect to containerd's CRI socket")
    }

    /// The runtime root the runc shim passes to the handler's binary.
    fn runtime_root(&self, handler: &str) -> PathBuf {
        self.dir.path().join(format!("{handler}-root/k8s.io"))
    }
}

fn pod_config(
    name: &str,
    annotations: &[(&str, &str)],
    log_dir: &Path,
    pid: NamespaceMode,
) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: unique("uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: pid as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn app_config(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "localhost/nemo-app:1".into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "300".into()],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// One pod with one app container, through `handler`; returns (pod id, container id) and the
/// time RunPodSandbox + CreateContainer + StartContainer took.
async fn start_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    handler: &str,
    annotations: &[(&str, &str)],
    log_dir: &Path,
    pid: NamespaceMode,
) -> Result<(String, String, Duration), tonic::Status> {
    let name = unique("pod");
    let config = pod_config(&name, annotations, log_dir, pid);
    let t = Instant::now();
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let created = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(app_config("app")),
            sandbox_config: Some(config),
        })
        .await;
    let ctr = match created {
        Ok(r) => r.into_inner().container_id,
        Err(e) => {
            remove_pod(rt, &pod).await;
            return Err(e);
        }
    };
    rt.start_container(StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await?;
    Ok((pod, ctr, t.elapsed()))
}

async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, pod: &str) {
    let _ = rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .expect("RemovePodSandbox");
}

async fn exec(rt: &mut RuntimeServiceClient<Channel>, id: &str, cmd: &[&str]) -> (i32, String) {
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (
        r.exit_code,
        format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        ),
    )
}

/// Nothing of the pod is left: runtime state, cgroups, guard processes, mounts.
fn nothing_left(c: &Containerd, ids: &[&str]) {
    let root = c.runtime_root("nemosandbox");
    for id in ids {
        wait_until(|| {
            let state = nemosandbox::state::StateRoot::new(&root);
            !state.container_dir(id).exists() && !state.own_dir(id).exists()
        });
        assert!(cgroup_dirs_of(id).is_empty(), "cgroups left for {id}");
        assert!(processes_of(id).is_empty(), "processes left for {id}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(id), "mounts left for {id}");
    }
}

#[test]
fn cri_pods_run_through_nemosandbox() {
    let c = Containerd::start();
    let logs = c.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let ch = c.channel().await;
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let mut images = ImageServiceClient::new(ch);
        let listed = images
            .list_images(ListImagesRequest { filter: None })
            .await
            .expect("ListImages")
            .into_inner();
        assert!(
            listed
                .images
                .iter()
                .any(|i| i.repo_tags.iter().any(|t| t == "localhost/nemo-app:1")),
            "{listed:?}"
        );

        let presets = [("dev.nemosandbox.presets", "podnet")];
        let (pod, app, took) = start_pod(
            &mut rt,
            "nemosandbox",
            &presets,
            &logs,
            NamespaceMode::Container,
        )
        .await
        .expect("pod under nemosandbox");
        eprintln!("pod + container start through the CRI (nemosandbox): {took:?}");

        // The container is nemosandbox's, under the annotated preset.
        let status = rt
            .container_status(ContainerStatusRequest {
                container_id: app.clone(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner();
        let info = status.info.get("info").cloned().unwrap_or_default();
        assert!(
            info.contains("nemosandbox") && info.contains("dev.nemosandbox.presets"),
            "{info}"
        );
        assert_eq!(
            status.status.as_ref().unwrap().state,
            ContainerState::ContainerRunning as i32
        );
        let state: serde_json::Value = serde_json::from_slice(
            &Command::new(bin())
                .arg("--root")
                .arg(c.runtime_root("nemosandbox"))
                .args(["state", &app])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(
            state["annotations"]["dev.nemosandbox.policy.sources"]
                .as_str()
                .unwrap_or_default()
                .ends_with("podnet.yaml"),
            "{state}"
        );
        assert_eq!(
            state["annotations"]["dev.nemosandbox.policy.sha256"]
                .as_str()
                .map(str::len),
            Some(64)
        );

        // What ExecSync runs obeys the policy: the masked file reads empty, its neighbour does
        // not; the root is read-only; the preset's destination is reachable, another is not.
        let (_, secret) = exec(&mut rt, &app, &["cat", "/etc/secret"]).await;
        assert_eq!(secret, "");
        let (code, passwd) = exec(&mut rt, &app, &["head", "-c", "4", "/etc/passwd"]).await;
        assert_eq!((code, passwd.as_str()), (0, "root"));
        let (code, out) = exec(&mut rt, &app, &["touch", "/etc/x"]).await;
        assert_ne!(code, 0, "{out}");
        let port = PRESET_PORT.to_string();
        let other = (PRESET_PORT + 1).to_string();
        let (_, out) = exec(&mut rt, &app, &["probe", "connect", &port]).await;
        assert_eq!(out.trim(), "ok");
        let (_, out) = exec(&mut rt, &app, &["probe", "connect", &other]).await;
        assert_eq!(out.trim(), "EACCES");

        // Stop and remove: nothing of either container is left.
        rt.stop_container(StopContainerRequest {
            container_id: app.clone(),
            timeout: 1,
        })
        .await
        .expect("StopContainer");
        rt.remove_container(RemoveContainerRequest {
            container_id: app.clone(),
        })
        .await
        .expect("RemoveContainer");
        remove_pod(&mut rt, &pod).await;
        nothing_left(&c, &[&pod, &app]);

        // The denial outlives the pod, with the pod's names, in the node audit sink.
        let audit = Command::new(bin())
            .arg("--root")
            .arg(c.runtime_root("nemosandbox"))
            .arg("--config")
            .arg(c.dir.path().join("config.yaml"))
            .args(["audit", &app, "--kind", "network", "--format", "json"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&audit.stdout);
        assert!(audit.status.success(), "{text}");
        let denied: serde_json::Value = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| {
                e["decision"] == "denied"
                    && e["request"]["destination"].as_str()
                        == Some(format!("127.0.0.1:{other}").as_str())
            })
            .unwrap_or_else(|| panic!("no denial for port {other}: {text}"));
        assert_eq!(denied["pod"]["namespace"], "default", "{denied}");
        assert_eq!(denied["pod"]["container_name"], "app", "{denied}");
        assert!(denied["pod"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty()));
        assert!(denied["pod"]["uid"].as_str().is_some_and(|n| !n.is_empty()));

        // A preset the node does not allow fails the pod, with the runtime's reason.
        let err = start_pod(
            &mut rt,
            "nemosandbox",
            &[("dev.nemosandbox.presets", "npm")],
            &logs,
            NamespaceMode::Container,
        )
        .await
        .expect_err("a preset outside allowed_presets must fail");
        assert!(
            err.message().contains("not in the node's allowed_presets"),
            "{err:?}"
        );
        let left = rt
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
        for p in &left.items {
            let _ = rt
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await;
        }
        // The refused pod left no container in the runtime's root.
        let listed = Command::new(bin())
            .arg("--root")
            .arg(c.runtime_root("nemosandbox"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "");

        // A shared pid namespace: the app sees the pause process, and its guard still judges
        // its calls.
        let (pod, app, _) = start_pod(&mut rt, "nemosandbox", &presets, &logs, NamespaceMode::Pod)
            .await
            .expect("pod with a shared pid namespace");
        let (_, ps) = exec(&mut rt, &app, &["ps", "-o", "pid,args"]).await;
        assert!(ps.contains("catatonit"), "{ps}");
        let (_, out) = exec(&mut rt, &app, &["probe", "connect", &port]).await;
        assert_eq!(out.trim(), "ok");
        let (_, out) = exec(&mut rt, &app, &["probe", "connect", &other]).await;
        assert_eq!(out.trim(), "EACCES");
        remove_pod(&mut rt, &pod).await;
        nothing_left(&c, &[&pod, &app]);

        // The denial outlives the pod, with the pod's names, in the node audit sink.
        let audit = Command::new(bin())
            .arg("--root")
            .arg(c.runtime_root("nemosandbox"))
            .arg("--config")
            .arg(c.dir.path().join("config.yaml"))
            .args(["audit", &app, "--kind", "network", "--format", "json"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&audit.stdout);
        assert!(audit.status.success(), "{text}");
        let denied: serde_json::Value = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| {
                e["decision"] == "denied"
                    && e["request"]["destination"].as_str()
                        == Some(format!("127.0.0.1:{other}").as_str())
            })
            .unwrap_or_else(|| panic!("no denial for port {other}: {text}"));
        assert_eq!(denied["pod"]["namespace"], "default", "{denied}");
        assert_eq!(denied["pod"]["container_name"], "app", "{denied}");
        assert!(denied["pod"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty()));
        assert!(denied["pod"]["uid"].as_str().is_some_and(|n| !n.is_empty()));

        // Figures: pod + container start, nemosandbox vs runc as the handler, same run.
        let mut times: HashMap<&str, Vec<Duration>> = HashMap::new();
        for round in 0..5 {
            for handler in ["runc", "nemosandbox"] {
                let (pod, _, took) =
                    start_pod(&mut rt, handler, &[], &logs, NamespaceMode::Container)
                        .await
                        .unwrap_or_else(|e| panic!("{handler} round {round}: {e:?}"));
                times.entry(handler).or_default().push(took);
                remove_pod(&mut rt, &pod).await;
            }
        }
        let median = |h: &str| {
            let mut v = times[h].clone();
            v.sort();
            v[v.len() / 2]
        };
        eprintln!(
            "CRI pod + container start, median of 5: runc {:?}, nemosandbox {:?} ({:.2}x)",
            median("runc"),
            median("nemosandbox"),
            median("nemosandbox").as_secs_f64() / median("runc").as_secs_f64()
        );
    });
}
