//! The runtime's own directory for one container, `<root>/.nemosandbox/<id>`: every stage
//! (create, the helper and guard, exec, update, delete) finds its files through this one type,
//! which alone knows their names.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerDir {
    path: PathBuf,
}

impl ContainerDir {
    /// The control socket's name, for opening it relative to a descriptor of the directory (an
    /// engine's state root can be longer than a socket path may be).
    pub const GUARD_SOCKET: &'static str = "guard.sock";
    /// The seccomp-listener relay's socket, the same way.
    pub const LISTENER_SOCKET: &'static str = "seccomp-listener.sock";

    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The runtime's metadata (`state` fields libcontainer does not keep).
    pub fn meta(&self) -> PathBuf {
        self.path.join("meta.json")
    }
    /// The rewritten spec libcontainer runs.
    pub fn spec(&self) -> PathBuf {
        self.path.join("config.json")
    }
    /// The confinement plan, and its temporary name while it is written.
    pub fn plan(&self) -> PathBuf {
        self.path.join("confine.json")
    }
    pub fn plan_tmp(&self) -> PathBuf {
        self.path.join("confine.json.tmp")
    }
    /// What each Landlock grant's path named once the mounts existed (`plan::Pins`), and its
    /// temporary name while it is written.
    pub fn pins(&self) -> PathBuf {
        self.path.join("landlock-pins.json")
    }
    pub fn pins_tmp(&self) -> PathBuf {
        self.path.join("landlock-pins.json.tmp")
    }
    /// The effective policy, and its temporary name while `policy update` replaces it.
    pub fn effective(&self) -> PathBuf {
        self.path.join("effective.json")
    }
    pub fn effective_tmp(&self) -> PathBuf {
        self.path.join("effective.json.new")
    }
    /// Serialises `policy update`s.
    pub fn policy_lock(&self) -> PathBuf {
        self.path.join("policy.lock")
    }
    /// Serialises exec's use of the seccomp-listener relay.
    pub fn listener_lock(&self) -> PathBuf {
        self.path.join("listener.lock")
    }
    pub fn listener_socket(&self) -> PathBuf {
        self.path.join(Self::LISTENER_SOCKET)
    }
    pub fn guard_socket(&self) -> PathBuf {
        self.path.join(Self::GUARD_SOCKET)
    }
    /// The resolv.conf bound over the container's, naming the guard's resolver.
    pub fn resolv_conf(&self) -> PathBuf {
        self.path.join("resolv.conf")
    }
    /// The read-only skeleton root of the restrictive layout.
    pub fn root_skeleton(&self) -> PathBuf {
        self.path.join("root")
    }
    /// The empty file bound over masked files.
    pub fn empty_file(&self) -> PathBuf {
        self.path.join("empty-file")
    }
    /// A compiled seccomp program, by the name the plan stores.
    pub fn filter(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
    /// The name of the plan's `index`th program, and of the network guard's.
    pub fn filter_name(index: usize) -> String {
        format!("filter-{index}.bpf")
    }
    pub const NET_FILTER: &'static str = "filter-net.bpf";
    /// The layer-7 proxy's certificate authority, the image's CA bundle extended with it, and
    /// the credentials the proxy injects.
    pub fn ca_key(&self) -> PathBuf {
        self.path.join("l7-ca.key")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.path.join("l7-ca.pem")
    }
    pub fn ca_bundle(&self) -> PathBuf {
        self.path.join("ca-bundle.pem")
    }
    pub fn credentials(&self) -> PathBuf {
        self.path.join("credentials.json")
    }
    /// A process.json `exec` hands libcontainer, unique per call, removed after the exec.
    pub fn exec_process(&self) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.path
            .join(format!("exec-{}-{nanos}.json", std::process::id()))
    }
    /// Compiled filters by content hash, shared by every container of the root.
    pub fn bpf_cache(&self) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| self.path.join(".bpf-cache"), |p| p.join(".bpf-cache"))
    }
}

impl std::ops::Deref for ContainerDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for ContainerDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}
