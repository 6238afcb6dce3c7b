//! Real engines drive the runtime as they drive runc: podman (conmon), dockerd (containerd's
//! runc shim v2 with a `runtimes` entry) and containerd's `ctr run --runc-binary`. Each test
//! starts its own daemon with private state and an image imported from a
//! busybox-static rootfs, since no registry is reachable.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::daemon::*;
use common::probe::localnet_preset;
use common::*;

/// A busybox rootfs as a tar stream file.
fn rootfs_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    make_busybox_rootfs(&rootfs);
    tar_of(&rootfs, &dir.join("rootfs.tar"))
}

/// A busybox rootfs with the attacker's probe at /bin/probe, as a tar file.
fn probe_rootfs_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("probe-rootfs");
    make_busybox_rootfs(&rootfs);
    install_binary(common::probe::probe(), &rootfs.join("bin/probe"));
    tar_of(&rootfs, &dir.join("probe-rootfs.tar"))
}

/// The network guard's verdicts from inside an engine's container: the listed binary to the
/// listed port, another port, a copy of the binary.
const NET_SCRIPT: &str = "echo listed: $(probe connect PORT); echo port: $(probe connect OTHER); \
     cp /bin/probe /tmp/copy; echo copy: $(/tmp/copy connect PORT)";

fn net_script(port: u16) -> String {
    NET_SCRIPT
        .replace("OTHER", &(port + 1).to_string())
        .replace("PORT", &port.to_string())
}

/// podman with private storage under `work`, this host's ulimits and nemosandbox as
/// the runtime; `extra` global flags before the verb.
fn podman_in(work: &Path, extra: &[&str]) -> Command {
    let conf = work.join("containers.conf");
    if !conf.exists() {
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
        )
        .unwrap();
    }
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", &conf)
        .arg("--root")
        .arg(work.join("storage"))
        .arg("--runroot")
        .arg(work.join("run"))
        .arg("--runtime")
        .arg(bin())
        .args(extra)
        .stdin(Stdio::null());
    c
}

/// The engine's container printed its /proc status lines: seccomp filter and no_new_privs on.
fn assert_confined(status: &str) {
    assert!(
        status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"),
        "{status}"
    );
}

fn no_state_left(root: &Path, id: &str) {
    wait_until(|| {
        let state = nemosandbox::state::StateRoot::new(root);
        !state.container_dir(id).exists() && !state.own_dir(id).exists()
    });
    assert!(
        cgroup_dirs_of(id).is_empty(),
        "cgroups left for {id}: {:?}",
        cgroup_dirs_of(id)
    );
}

/// A single-layer OCI image archive of a busybox rootfs.
pub fn oci_archive(dir: &Path, name: &str) -> PathBuf {
    let layer = rootfs_tar(dir);
    common::daemon::oci_archive(dir, &layer, name, &["sh"])
}

#[path = "engines/daemons.rs"]
mod daemons;
#[path = "engines/overlay.rs"]
mod overlay;
#[path = "engines/podman.rs"]
mod podman;
