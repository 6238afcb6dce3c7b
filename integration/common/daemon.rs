//! Daemons started by tests (containerd, dockerd) and the images they import, built locally:
//! no registry is reachable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::*;

pub fn wait_for_socket(sock: &Path, daemon: &mut Child, log: &Path) {
    let start = Instant::now();
    while !sock.exists() {
        if let Ok(Some(st)) = daemon.try_wait() {
            panic!(
                "daemon exited {st}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no socket {sock:?}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon process stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A single-layer OCI image archive (what `docker save`/`ctr import` understand) of the
/// rootfs tar `layer`, running `cmd`, built with tar and sha256sum only.
pub fn oci_archive(dir: &Path, layer: &Path, name: &str, cmd: &[&str]) -> PathBuf {
    let digest = |p: &Path| -> (String, u64) {
        let out = ok(Command::new("sha256sum").arg(p));
        (
            out.split_whitespace().next().unwrap().to_string(),
            std::fs::metadata(p).unwrap().len(),
        )
    };
    let img = dir.join(format!("oci-{}", unique("img")));
    let blobs = img.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let (layer_sha, layer_size) = digest(layer);
    std::fs::copy(layer, blobs.join(&layer_sha)).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sha}")]}
    });
    let write_blob = |v: &serde_json::Value| -> (String, u64) {
        let tmp = dir.join("blob.tmp");
        std::fs::write(&tmp, v.to_string()).unwrap();
        let (sha, size) = digest(&tmp);
        std::fs::rename(&tmp, blobs.join(&sha)).unwrap();
        (sha, size)
    };
    let (cfg_sha, cfg_size) = write_blob(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cfg_sha}"), "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_sha}"), "size": layer_size}]
    });
    let (man_sha, man_size) = write_blob(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{man_sha}"), "size": man_size,
                       "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}}]
    });
    std::fs::write(img.join("index.json"), index.to_string()).unwrap();
    std::fs::write(img.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let archive = img.with_extension("tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&img)
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    archive
}

/// `rootfs` as a tar file at `tar` (what `podman import`/`docker import` take).
pub fn tar_of(rootfs: &Path, tar: &Path) -> PathBuf {
    let mut cmd = Command::new("tar");
    cmd.arg("--warning=no-file-changed")
        .arg("-C")
        .arg(rootfs)
        .arg("-cf")
        .arg(tar)
        .arg(".");
    let (code, out, err) = sh(&mut cmd);
    // Busybox is hard-linked from the host into every rootfs, so another test linking it
    // meanwhile moves its change time while tar reads it (exit 1, "file changed as we read
    // it"; its bytes are the same). Any other complaint fails.
    assert!(
        code == 0 || (code == 1 && err.trim().is_empty()),
        "tar of {}: exit {code}: {out}{err}",
        rootfs.display()
    );
    tar.to_path_buf()
}

/// A dockerd of the test's own (socket, data and exec roots in `dir`) reading `daemon.json`.
pub struct Dockerd {
    pub dir: PathBuf,
    pub config: PathBuf,
    _daemon: Daemon,
}

impl Dockerd {
    pub fn start(dir: &Path, config: &Path) -> Dockerd {
        let sock = dir.join("docker.sock");
        let err = dir.join("dockerd.err");
        let mut child = Command::new("dockerd")
            .arg("--config-file")
            .arg(config)
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .stdout(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("dockerd (apt-get install docker.io)");
        wait_for_socket(&sock, &mut child, &err);
        let d = Dockerd {
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            _daemon: Daemon(child),
        };
        wait_until(|| d.cli(&["info"]).output().is_ok_and(|o| o.status.success()));
        d
    }

    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.join("docker.sock").display()),
        )
        .args(args)
        .stdin(std::process::Stdio::null());
        c
    }
}
