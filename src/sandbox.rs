//! `nemosandbox sandbox CMD…`: a host command in a fresh container, no image needed.
//!
//! The root is the host's own filesystem, read-only (bubblewrap's "permissive base"), with
//! private pid, mount, ipc and uts namespaces and fresh `/proc`, `/dev`, `/sys` (read-only) and
//! `/tmp`. The spec is built in memory; its rewritten form lives in the state directory only
//! while the command runs.
//!
//! Threat: the sandbox sees the host's files. A unix socket on a read-only mount can still be
//! connected to, and `/run` holds the host's daemons (docker, containerd, D-Bus, systemd) and
//! every runtime's state. So `/run`, `/var/run` and the runtime's own root are empty tmpfs
//! inside, and the guard makes every unix connect and addressed unix send itself, to sockets
//! on the sandbox's own filesystems only (`netguard::local`); its mounts are private, so a
//! filesystem the host mounts later does not appear inside. Without network policies the
//! sandbox has a network namespace of its own (loopback only: no host abstract socket, no
//! listener on the host's networks); with them it shares the host's, where it may listen on
//! loopback only and abstract sockets are refused.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, UserBuilder,
};

use crate::bundle::SourceBundle;

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("static mount is valid")
}

/// Paths the sandbox mounts afresh: host content below them is not visible inside.
const FRESH: [&str; 6] = ["/tmp", "/proc", "/dev", "/sys", "/run", "/var/run"];
/// Host directories hidden behind an empty tmpfs: daemons' sockets and runtime state.
const HIDDEN: [&str; 2] = ["/run", "/var/run"];

/// The caller's working directory, or `/` when it lies under a fresh mount (it would not exist
/// inside the sandbox).
pub fn sandbox_cwd(cwd: Option<PathBuf>) -> PathBuf {
    match cwd {
        Some(c) if !FRESH.iter().any(|f| c.starts_with(f)) => c,
        Some(c) => {
            tracing::warn!(
                "working directory {} is not visible in the sandbox; using /",
                c.display()
            );
            PathBuf::from("/")
        }
        None => PathBuf::from("/"),
    }
}

/// An empty read-only tmpfs over `dest`.
fn hide(dest: &str) -> Mount {
    mount(
        dest,
        "tmpfs",
        "tmpfs",
        &["nosuid", "nodev", "noexec", "ro", "mode=755", "size=4k"],
    )
}

/// The spec of a sandbox running `argv` with the caller's environment and working directory.
/// `mount_point` is an empty directory the host root is bound onto inside the container's own
/// mount namespace (pivot_root cannot make `/` itself the new root); `state_root` is the
/// runtime's root, hidden inside as well.
pub fn sandbox_spec(
    argv: Vec<String>,
    mount_point: &Path,
    state_root: &Path,
    egress: bool,
) -> Spec {
    let cwd = sandbox_cwd(std::env::current_dir().ok());
    let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let mut spec = Spec::default();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let base_process = spec.process().clone().expect("default spec has a process");
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(argv)
        .env(env)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .expect("user"),
        )
        .capabilities(base_process.capabilities().clone().expect("default caps"))
        .rlimits(base_process.rlimits().clone().unwrap_or_default())
        .no_new_privileges(true)
        .build()
        .expect("sandbox process is valid");
    spec.set_process(Some(process));
    spec.set_hostname(Some("nemosandbox".into()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(mount_point)
            .readonly(true)
            .build()
            .expect("root"),
    ));

    let mounts = vec![
        // Recursive read-only: every host submount comes along read-only too.
        mount("/", "bind", "/", &["rbind", "rro", "nosuid", "nodev"]),
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"]),
    ];
    let mut mounts = mounts;
    // `/var/run` is usually a link to `/run`: a mount there would land on `/run` again.
    for dir in HIDDEN {
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            mounts.push(hide(dir));
        }
    }
    let state = std::fs::canonicalize(state_root).unwrap_or_else(|_| state_root.to_path_buf());
    if !FRESH.iter().any(|f| state.starts_with(f)) {
        mounts.push(hide(&state.to_string_lossy()));
    }
    // The resolver configuration the command would have used (often a link into `/run`): named
    // here, so the network guard finds it and puts its own in place.
    if std::fs::metadata("/etc/resolv.conf").is_ok_and(|m| m.is_file()) {
        mounts.push(mount(
            "/etc/resolv.conf",
            "bind",
            "/etc/resolv.conf",
            &["rbind", "ro"],
        ));
    }
    spec.set_mounts(Some(mounts));

    let base_linux = spec.linux().clone().expect("default spec has linux");
    let mut types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ];
    if !egress {
        types.push(LinuxNamespaceType::Network);
    }
    let namespaces = types
        .into_iter()
        .map(|t| {
            LinuxNamespaceBuilder::default()
                .typ(t)
                .build()
                .expect("namespace")
        })
        .collect::<Vec<_>>();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(base_linux.masked_paths().clone().unwrap_or_default())
        .readonly_paths(base_linux.readonly_paths().clone().unwrap_or_default())
        // Not slave: a mount the host makes later (a USB stick, an engine's overlay) would
        // appear inside with its own flags, writable.
        .rootfs_propagation("private")
        .build()
        .expect("linux");
    spec.set_linux(Some(linux));
    spec
}

/// The in-memory bundle of a sandbox; `state_root` is the runtime's `--root`; `egress`:
/// network policies apply, so the sandbox shares the host's network namespace.
pub fn sandbox_bundle(
    argv: Vec<String>,
    state_root: &Path,
    egress: bool,
) -> std::io::Result<SourceBundle> {
    let mount_point = state_root.join(".nemosandbox").join(".sandbox-root");
    std::fs::create_dir_all(&mount_point)?;
    Ok(SourceBundle {
        dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        spec: sandbox_spec(argv, &mount_point, state_root, egress),
    })
}

/// A container id for one sandbox run.
pub fn sandbox_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("sandbox-{}-{nanos:09}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwd_under_fresh_mounts_falls_back_to_root() {
        assert_eq!(
            sandbox_cwd(Some("/work/x".into())),
            PathBuf::from("/work/x")
        );
        assert_eq!(sandbox_cwd(Some("/tmp/build".into())), PathBuf::from("/"));
        assert_eq!(sandbox_cwd(None), PathBuf::from("/"));
    }

    #[test]
    fn sandbox_spec_is_readonly_host_root_with_private_namespaces() {
        let spec = sandbox_spec(
            vec!["true".into()],
            Path::new("/mnt/empty"),
            Path::new("/var/lib/nemo-state"),
            true,
        );
        let dests: Vec<&Path> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().as_path())
            .collect();
        assert!(dests.contains(&Path::new("/run")), "{dests:?}");
        assert!(
            dests.contains(&Path::new("/var/lib/nemo-state")),
            "{dests:?}"
        );
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/mnt/empty"));
        assert_eq!(root.readonly(), Some(true));
        let first = &spec.mounts().as_ref().unwrap()[0];
        assert_eq!(first.destination(), Path::new("/"));
        assert!(first
            .options()
            .as_ref()
            .unwrap()
            .contains(&"rro".to_string()));
        let ns: Vec<_> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(ns.contains(&LinuxNamespaceType::Pid) && ns.contains(&LinuxNamespaceType::Mount));
        assert!(
            !ns.contains(&LinuxNamespaceType::Network),
            "egress: the host's"
        );
        let own = sandbox_spec(vec![], Path::new("/m"), Path::new("/s"), false);
        let own_ns = own.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(
            own_ns
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network),
            "no egress: a network namespace of its own"
        );
    }
}
