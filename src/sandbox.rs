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
//! listener on the host's networks); with them, run as root, it shares the host's, where it may
//! listen on loopback only and abstract sockets are refused. Run without root it keeps its own
//! namespace even then, and the guard relays each allowed connection (`netguard::relay`).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilities, LinuxIdMapping,
    LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use crate::bundle::SourceBundle;
use crate::layout::rules::RuleError;
use crate::layout::{Rights, RuleSet};
use crate::policy::merge::EffectiveFs;

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
const FRESH: [&str; 7] = [
    "/tmp", "/var/tmp", "/proc", "/dev", "/sys", "/run", "/var/run",
];
/// Empty, writable tmpfs: the scratch directories programs expect to write.
const SCRATCH: [&str; 2] = ["/tmp", "/var/tmp"];
/// The `PATH` a sandbox gets when the caller's environment has none (or is cleared).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the caller asked of one sandbox run, beyond the policy.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub argv: Vec<String>,
    /// The working directory inside, as `sandbox_cwd` resolved it (default: the caller's).
    pub cwd: Option<PathBuf>,
    /// `--clear-env`: pass no variable of the caller's but those `env` names.
    pub clear_env: bool,
    /// `--env KEY` passes the caller's KEY (with `clear_env`), `--env KEY=VALUE` sets it.
    pub env: Vec<String>,
    /// The command gets a terminal of its own (`console`): the caller runs it from one.
    pub terminal: bool,
    /// Run by a user without root: the sandbox gets a user namespace mapping the caller.
    pub user_map: Option<UserMap>,
}

/// A caller without root and the ids its command has inside: its own, or 0 with
/// `--map-root`. The container's user namespace maps one id, 0, to the caller (libcontainer
/// sets the container up as 0; one id needs no setuid helper such as `newuidmap`); the
/// command then takes the caller's ids in a namespace nested in that one
/// (`Plan::nested_user`). No supplementary group can be set, so the caller's stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserMap {
    pub host_uid: u32,
    pub host_gid: u32,
    pub inside_uid: u32,
    pub inside_gid: u32,
}

impl UserMap {
    /// The map for this process, or `None` when it runs as root (no user namespace: the
    /// sandbox runs as the caller's ids directly).
    pub fn for_caller(map_root: bool) -> Option<UserMap> {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        (uid != 0).then_some(UserMap {
            host_uid: uid,
            host_gid: gid,
            inside_uid: if map_root { 0 } else { uid },
            inside_gid: if map_root { 0 } else { gid },
        })
    }

    /// The ids the command takes in a nested user namespace, unless they are 0.
    pub fn nested(self) -> Option<(u32, u32)> {
        (self.inside_uid != 0 || self.inside_gid != 0).then_some((self.inside_uid, self.inside_gid))
    }

    fn mappings(self) -> (LinuxIdMapping, LinuxIdMapping) {
        let one = |inside: u32, host: u32| {
            LinuxIdMappingBuilder::default()
                .container_id(inside)
                .host_id(host)
                .size(1u32)
                .build()
                .expect("id mapping")
        };
        (one(0, self.host_uid), one(0, self.host_gid))
    }
}

/// The environment of the command: the caller's (or none of it with `clear`), then `env`.
pub fn environment(
    caller: impl Iterator<Item = (String, String)>,
    clear: bool,
    env: &[String],
) -> Vec<String> {
    let caller: Vec<(String, String)> = caller.collect();
    let mut out: Vec<(String, String)> = if clear { Vec::new() } else { caller.clone() };
    for e in env {
        let (key, value) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (
                e.clone(),
                caller.iter().find(|(k, _)| k == e).map(|(_, v)| v.clone()),
            ),
        };
        out.retain(|(k, _)| *k != key);
        if let Some(v) = value {
            out.push((key, v));
        }
    }
    let mut env: Vec<String> = out.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.into());
    }
    env
}
/// Host directories hidden behind an empty tmpfs: daemons' sockets and runtime state.
const HIDDEN: [&str; 2] = ["/run", "/var/run"];

/// The working directory inside: `/` when it lies under a fresh mount (it would not exist
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

/// `/sys`, read-only and fresh. A sandbox in a user namespace always has a network
/// namespace of its own, which its user namespace owns, as the kernel requires to mount sysfs.
fn sys_mount() -> Mount {
    mount(
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "ro"],
    )
}

/// The default capabilities, plus what the in-container stage needs without root before
/// the command runs, in the container's user namespace only:
/// - CAP_NET_ADMIN, with a network namespace of its own, to bring the loopback interface
///   up (`Plan::loopback_up`; the runtime cannot do it from outside: without root it may not
///   enter the container's namespaces before the command starts); dropped right after.
/// - CAP_SETFCAP, for the nested user namespace (`Plan::nested_user`): the kernel lets a
///   namespace map its parent's uid 0 only if its creator held it. Entering that namespace
///   leaves every capability of the container's behind.
fn sandbox_caps(
    mut caps: LinuxCapabilities,
    loopback_inside: bool,
    nested_user: bool,
) -> LinuxCapabilities {
    let extra: Vec<Capability> = [
        (loopback_inside, Capability::NetAdmin),
        (nested_user, Capability::Setfcap),
    ]
    .into_iter()
    .filter_map(|(wanted, cap)| wanted.then_some(cap))
    .collect();
    let add = |set: &Option<Capabilities>| {
        let mut set = set.clone().unwrap_or_default();
        set.extend(extra.iter().copied());
        Some(set)
    };
    caps.set_bounding(add(caps.bounding()));
    caps.set_permitted(add(caps.permitted()));
    caps.set_effective(add(caps.effective()));
    caps
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

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox's policy: {0}")]
    Policy(#[from] RuleError),
    #[error("--rw {path}: {why}; a sandbox does not make it writable")]
    Refused { path: String, why: String },
}

/// Why a host directory must not be bound writable into a sandbox, if so: a system tree or the
/// caller's home (or above one), or a directory at or above what the sandbox mounts afresh or
/// hides (the writable bind would cover it).
fn refusal(dir: &Path, home: Option<&Path>, state_root: &Path) -> Option<String> {
    if dir == Path::new("/") {
        return Some("it is the root".into());
    }
    if let Some(why) = crate::layout::rules::protected_dir(dir, home) {
        return Some(why);
    }
    FRESH
        .iter()
        .map(Path::new)
        .chain(HIDDEN.iter().map(Path::new))
        .chain(std::iter::once(state_root))
        .find(|covered| covered.starts_with(dir))
        .map(|covered| format!("it is {} or above it", covered.display()))
}

/// The host directories bound read-write over the read-only host root: the working directory
/// where the policy gives it `w` (`include_workdir`) and nothing refuses it, and each `--rw`
/// path the policy gives `w` (a refused one is an error). The layout and Landlock then grant
/// what the policy says beneath them. A path under a fresh mount is not the host's and needs
/// no bind. `home` and `state_root` are resolved paths.
pub fn writable_binds(
    fs: &EffectiveFs,
    cwd: &Path,
    home: Option<&Path>,
    user: &str,
    rw: &[PathBuf],
    state_root: &Path,
) -> Result<Vec<PathBuf>, SandboxError> {
    let rules = RuleSet::from_policy(fs, cwd, home, user)?;
    let fresh = |p: &Path| FRESH.iter().any(|f| p.starts_with(f));
    let writable = |p: &Path| rules.decide(p).rights.has(Rights::W) && !fresh(p);
    let mut out: Vec<PathBuf> = Vec::new();
    if writable(cwd) && refusal(cwd, home, state_root).is_none() {
        out.push(cwd.to_path_buf());
    }
    for p in rw {
        if let Some(why) = refusal(p, home, state_root) {
            return Err(SandboxError::Refused {
                path: p.display().to_string(),
                why,
            });
        }
        if writable(p) && !out.contains(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The spec of a sandbox running `req` with the caller's identity. `writable` are host
/// directories bound read-write (see `writable_binds`). `mount_point` is an empty directory the
/// host root is bound onto inside the container's own mount namespace (pivot_root cannot make
/// `/` itself the new root); `state_root` is the runtime's root, hidden inside as well.
pub fn sandbox_spec(
    req: &Request,
    writable: &[PathBuf],
    mount_point: &Path,
    state_root: &Path,
    egress: bool,
) -> Spec {
    let cwd = req
        .cwd
        .clone()
        .unwrap_or_else(|| sandbox_cwd(std::env::current_dir().ok()));
    let env = environment(std::env::vars(), req.clear_env, &req.env);
    let mut spec = Spec::default();
    let (uid, gid) = match req.user_map {
        Some(_) => (0, 0),
        None => (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ),
    };
    // With network policies a sandbox run as root shares the host's network, under the kernel
    // fence; without root it keeps a namespace of its own and the guard relays what it allows
    // (`netguard::relay`).
    let host_net = egress && req.user_map.is_none();
    let base_process = spec.process().clone().expect("default spec has a process");
    let process = ProcessBuilder::default()
        .terminal(req.terminal)
        .args(req.argv.clone())
        .env(env)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .expect("user"),
        )
        .capabilities(sandbox_caps(
            base_process.capabilities().clone().expect("default caps"),
            req.user_map.is_some() && !host_net,
            req.user_map.and_then(UserMap::nested).is_some(),
        ))
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
        sys_mount(),
    ];
    let mut mounts = mounts;
    // Not recursive: a host filesystem mounted beneath (a device tree, another disk) keeps
    // the read-only copy the root bind brought. Before the fresh and hidden mounts, which
    // must stay on top (`writable_binds` refuses a directory above them anyway).
    for dir in writable {
        let d = dir.to_string_lossy();
        mounts.push(mount(&d, "bind", &d, &["bind", "rw", "nosuid", "nodev"]));
    }
    for dir in SCRATCH {
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            mounts.push(mount(
                dir,
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=1777"],
            ));
        }
    }
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
    if !host_net {
        types.push(LinuxNamespaceType::Network);
    }
    if req.user_map.is_some() {
        types.push(LinuxNamespaceType::User);
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
    let mut linux = LinuxBuilder::default();
    if let Some(m) = req.user_map {
        let (u, g) = m.mappings();
        linux = linux.uid_mappings(vec![u]).gid_mappings(vec![g]);
    }
    let linux = linux
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
/// network policies apply (run as root, the sandbox then shares the host's network namespace).
pub fn sandbox_bundle(
    req: &Request,
    writable: &[PathBuf],
    state_root: &Path,
    egress: bool,
) -> std::io::Result<SourceBundle> {
    let mount_point = state_root.join(".nemosandbox").join(".sandbox-root");
    std::fs::create_dir_all(&mount_point)?;
    Ok(SourceBundle {
        dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        spec: sandbox_spec(req, writable, &mount_point, state_root, egress),
    })
}

/// Where a sandbox run's console socket is bound while it starts.
pub fn console_socket_path(state_root: &Path, id: &str) -> PathBuf {
    state_root
        .join(".nemosandbox")
        .join(format!("{id}.console"))
}

/// What keeps this host from giving an ordinary user a user namespace, if anything, with
/// the setting to change. `read` returns a `/proc/sys` file's contents (None: absent).
pub fn userns_blocker(read: impl Fn(&str) -> Option<String>) -> Option<String> {
    let value = |f: &str| read(f).and_then(|v| v.trim().parse::<u64>().ok());
    if value("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Some(
            "user namespaces are disabled (sysctl user.max_user_namespaces = 0); set it above \
             0, e.g. `sysctl -w user.max_user_namespaces=15000`"
                .into(),
        );
    }
    if value("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Some(
            "this kernel forbids user namespaces to users without root (sysctl \
             kernel.unprivileged_userns_clone = 0); enable them with \
             `sysctl -w kernel.unprivileged_userns_clone=1`"
                .into(),
        );
    }
    if value("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return Some(
            "AppArmor restricts user namespaces of unconfined programs (sysctl \
             kernel.apparmor_restrict_unprivileged_userns = 1); give nemosandbox an AppArmor \
             profile with `userns,` or set the sysctl to 0"
                .into(),
        );
    }
    None
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
    fn userns_blockers_name_their_setting() {
        let host = |files: &'static [(&'static str, &'static str)]| {
            move |f: &str| {
                files
                    .iter()
                    .find(|(name, _)| *name == f)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(userns_blocker(host(&[])), None);
        assert_eq!(
            userns_blocker(host(&[
                ("/proc/sys/user/max_user_namespaces", "63000\n"),
                ("/proc/sys/kernel/unprivileged_userns_clone", "1\n"),
                (
                    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
                    "0\n"
                ),
            ])),
            None
        );
        let e = userns_blocker(host(&[("/proc/sys/user/max_user_namespaces", "0\n")])).unwrap();
        assert!(e.contains("user.max_user_namespaces"), "{e}");
        let e =
            userns_blocker(host(&[("/proc/sys/kernel/unprivileged_userns_clone", "0")])).unwrap();
        assert!(e.contains("kernel.unprivileged_userns_clone=1"), "{e}");
        let e = userns_blocker(host(&[(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
        )]))
        .unwrap();
        assert!(e.contains("AppArmor"), "{e}");
    }

    #[test]
    fn without_root_the_sandbox_maps_the_caller_to_0_and_nests_its_ids() {
        let map = UserMap {
            host_uid: 1000,
            host_gid: 1000,
            inside_uid: 1000,
            inside_gid: 1000,
        };
        assert_eq!(map.nested(), Some((1000, 1000)));
        let root = UserMap {
            inside_uid: 0,
            inside_gid: 0,
            ..map
        };
        assert_eq!(root.nested(), None);
        let req = Request {
            argv: vec!["true".into()],
            user_map: Some(map),
            ..Request::default()
        };
        // Own network namespace: sysfs mounted afresh, CAP_NET_ADMIN for the loopback.
        let spec = sandbox_spec(&req, &[], Path::new("/mnt/empty"), Path::new("/s"), false);
        let linux = spec.linux().as_ref().unwrap();
        let uid = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!(
            (uid.container_id(), uid.host_id(), uid.size()),
            (0, 1000, 1)
        );
        assert!(linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User));
        let process = spec.process().as_ref().unwrap();
        assert_eq!((process.user().uid(), process.user().gid()), (0, 0));
        let caps = process.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert!(bounding.contains(&Capability::NetAdmin));
        assert!(bounding.contains(&Capability::Setfcap));
        assert!(!caps
            .ambient()
            .as_ref()
            .unwrap()
            .contains(&Capability::NetAdmin));
        let sys = |spec: &Spec| {
            spec.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.destination() == Path::new("/sys"))
                .map(|m| m.typ().clone().unwrap())
        };
        assert_eq!(sys(&spec).as_deref(), Some("sysfs"));
        // Egress without root: still a network namespace of its own (the guard relays), with
        // its loopback to bring up and its own sysfs.
        let egress = sandbox_spec(&req, &[], Path::new("/mnt/empty"), Path::new("/s"), true);
        assert_eq!(sys(&egress).as_deref(), Some("sysfs"));
        let bounds = |spec: &Spec, cap: Capability| {
            let process = spec.process().as_ref().unwrap();
            let caps = process.capabilities().as_ref().unwrap();
            caps.bounding().as_ref().unwrap().contains(&cap)
        };
        assert!(bounds(&egress, Capability::NetAdmin));
        let ns = egress
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        // With --map-root, no nested namespace and so no CAP_SETFCAP.
        let req = Request {
            user_map: Some(root),
            ..req
        };
        let spec = sandbox_spec(&req, &[], Path::new("/mnt/empty"), Path::new("/s"), false);
        assert!(!bounds(&spec, Capability::Setfcap));
    }

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
        let req = Request {
            argv: vec!["true".into()],
            ..Request::default()
        };
        let spec = sandbox_spec(
            &req,
            &[],
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
        let own = sandbox_spec(
            &Request::default(),
            &[],
            Path::new("/m"),
            Path::new("/s"),
            false,
        );
        let own_ns = own.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(
            own_ns
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network),
            "no egress: a network namespace of its own"
        );
    }

    #[test]
    fn environment_passes_clears_and_sets() {
        let caller = || {
            [("HOME", "/h"), ("SECRET", "s"), ("PATH", "/bin")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
        };
        let all = environment(caller(), false, &[]);
        assert_eq!(all, ["HOME=/h", "SECRET=s", "PATH=/bin"]);
        let kept = environment(
            caller(),
            true,
            &["HOME".into(), "X=1".into(), "NONE".into()],
        );
        assert_eq!(kept, ["HOME=/h", "X=1", DEFAULT_PATH]);
        let set = environment(caller(), false, &["SECRET=other".into()]);
        assert_eq!(set, ["HOME=/h", "PATH=/bin", "SECRET=other"]);
    }

    #[test]
    fn only_paths_the_policy_makes_writable_are_bound() {
        let mut fs = EffectiveFs {
            include_workdir: true,
            ..EffectiveFs::default()
        };
        let from = |v: &str| crate::policy::merge::From {
            value: v.to_string(),
            from: "test".into(),
        };
        fs.permissions.insert("/**".into(), from("r-x"));
        fs.read_only.push(from("/srv/ro"));
        let state = Path::new("/var/lib/nemo/state");
        let home = Some(Path::new("/home/u"));
        let binds = |fs: &EffectiveFs, cwd: &str, rw: &[&str]| {
            let rw: Vec<PathBuf> = rw.iter().map(PathBuf::from).collect();
            writable_binds(fs, Path::new(cwd), home, "u", &rw, state)
        };
        let cwd = PathBuf::from("/srv/proj");
        assert_eq!(
            binds(&fs, "/srv/proj", &[]).unwrap(),
            std::slice::from_ref(&cwd)
        );
        // A path the policy leaves read-only is not bound; one it makes writable is.
        assert_eq!(
            binds(&fs, "/srv/proj", &["/srv/ro/data"]).unwrap(),
            std::slice::from_ref(&cwd)
        );
        fs.read_write.push(from("/srv/ro/data"));
        assert_eq!(
            binds(&fs, "/srv/proj", &["/srv/ro/data"]).unwrap(),
            [cwd.clone(), PathBuf::from("/srv/ro/data")]
        );
        // The working directory stays read-only where it is protected; a --rw there is refused.
        for protected in [
            "/",
            "/etc",
            "/usr",
            "/home",
            "/home/u",
            "/var",
            "/var/lib/nemo",
        ] {
            let b = binds(&fs, protected, &[]).unwrap();
            assert!(b.is_empty(), "{protected}: {b:?}");
            let e = binds(&fs, "/srv/proj", &[protected])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("--rw {protected}:")), "{e}");
        }
        assert!(
            binds(&fs, "/tmp/x", &[]).unwrap().is_empty(),
            "under a fresh mount"
        );
        assert_eq!(
            binds(&fs, "/home/u/proj", &[]).unwrap(),
            [PathBuf::from("/home/u/proj")]
        );
        fs.include_workdir = false;
        assert!(binds(&fs, "/srv/proj", &[]).unwrap().is_empty());
    }
}
