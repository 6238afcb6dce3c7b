//! What a lifecycle verb can fail with, and the conversions from the layers below.

use libcontainer::error::LibcontainerError;

use crate::bundle::BundleError;
use crate::foreground::ForegroundError;
use crate::helper::HelperError;
use crate::state::{status_word, StateError};
use crate::symlinks;

/// Why a sandbox, or a confined container, sharing the host's network is refused without root.
pub const ROOTLESS_NETWORK_POLICIES: &str = "sharing the host's network needs root: the kernel \
    fence that keeps the network guard's decisions there is a cgroup program only root can \
    attach; without root a sandbox or container keeps a network namespace of its own \
    (docs/rootless.md)";
/// Why a rootless engine's confined container may not hold CAP_SYS_ADMIN or CAP_NET_ADMIN.
pub const ROOTLESS_SYS_ADMIN: &str = "CAP_SYS_ADMIN needs root: in a rootless engine's \
    container it would let a process join a network namespace of the engine's, which no fence \
    watches; drop it (--privileged, --cap-add) or use the `oci` baseline (docs/rootless.md)";
/// As `ROOTLESS_SYS_ADMIN`, for CAP_NET_ADMIN.
pub const ROOTLESS_NET_ADMIN: &str = "CAP_NET_ADMIN needs root: in a rootless engine's \
    container it would let a process move an interface into its network, which no fence \
    watches; drop it (--privileged, --cap-add) or use the `oci` baseline (docs/rootless.md)";
/// Why layer-7 rules (HTTP methods and paths) are refused without root.
pub const ROOTLESS_INSPECTION: &str = "endpoints with HTTP rules need root: the layer-7 proxy \
    listens inside the sandbox's network namespace, which only root can enter from outside; \
    allow the host and port without rules, or run as root (docs/rootless.md)";
/// Why containers other than `sandbox` are refused without root.
pub const ROOTLESS_CONTAINERS: &str = "containers need root, or the user namespace of \
    a rootless engine such as podman, which an ordinary user's call lacks; \
    `nemosandbox sandbox` needs neither (docs/rootless.md)";

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    State(Box<StateError>),
    #[error(transparent)]
    Bundle(Box<BundleError>),
    #[error("{op} container {id:?}: {source}")]
    Libcontainer {
        op: &'static str,
        id: String,
        #[source]
        source: Box<LibcontainerError>,
    },
    #[error("container {id:?} is {status}: cannot {op}")]
    WrongState {
        id: String,
        status: &'static str,
        op: &'static str,
    },
    #[error("cannot delete container {0:?} that is not stopped: {1}")]
    NotStopped(String, &'static str),
    #[error("--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); use the cgroupfs driver")]
    NoSystemd,
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
    #[error("container {0:?}: {1}")]
    NeedsRoot(String, &'static str),
    #[error(transparent)]
    Foreground(#[from] ForegroundError),
    #[error("starting the helper process: {0}")]
    Helper(#[from] HelperError),
    #[error("policy: {0}")]
    Policy(String),
    #[error("policy: {0}")]
    Prepare(#[from] crate::confine::prepare::PrepareError),
    #[error("cgroup of container {id:?}: {msg}")]
    Cgroup { id: String, msg: String },
    #[error(transparent)]
    Guard(#[from] symlinks::GuardError),
    #[error(transparent)]
    ExecDenied(#[from] crate::execgate::eval::Denied),
    #[error(transparent)]
    NetGuard(#[from] crate::netguard::control::ControlError),
    #[error("network guard: {0}")]
    Fence(#[from] crate::netguard::fence::FenceError),
}

pub(super) type Result<T> = std::result::Result<T, LifecycleError>;

impl From<StateError> for LifecycleError {
    fn from(e: StateError) -> Self {
        LifecycleError::State(Box::new(e))
    }
}

impl From<BundleError> for LifecycleError {
    fn from(e: BundleError) -> Self {
        LifecycleError::Bundle(Box::new(e))
    }
}

pub(super) fn lc<'a>(
    op: &'static str,
    id: &'a str,
) -> impl FnOnce(LibcontainerError) -> LifecycleError + 'a {
    move |source| match source {
        LibcontainerError::IncorrectStatus(s) => LifecycleError::WrongState {
            id: id.to_string(),
            status: status_word(s),
            op,
        },
        source => LifecycleError::Libcontainer {
            op,
            id: id.to_string(),
            source: Box::new(source),
        },
    }
}

pub(super) fn cgroup_err<E: std::fmt::Display>(id: &str) -> impl FnOnce(E) -> LifecycleError + '_ {
    move |e| LifecycleError::Cgroup {
        id: id.to_string(),
        msg: e.to_string(),
    }
}
