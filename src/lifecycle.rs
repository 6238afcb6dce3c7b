//! Container lifecycle: the runc verbs on top of libcontainer, with the policy hook points.
//!
//! create:  load bundle → spec-rewrite stage (state dir) → libcontainer build (init waits on the
//!          notify socket; its in-container stage runs after `start`) → between-create-and-start
//!          stage (start time, helper process, policy stages) → `created`.
//! Any failure after something exists removes all of it: libcontainer's dir, ours, the cgroup,
//! the init process and the helper.

pub mod policy_update;

use std::collections::HashMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager, ControllerOpt};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxCapabilities, LinuxResources, Process};

use crate::bundle::{self, BundleError, SourceBundle};
use crate::confine;
use crate::container_dir::ContainerDir;
use crate::executor::ConfiningExecutor;
use crate::foreground::{self, ForegroundError};
use crate::helper::{self, HelperError};
use crate::netguard::local::LocalRules;
use crate::policy::merge::{sha256_hex, Effective};
use crate::policy::model::SymlinkGuard;
use crate::policy::select::{self, NodeConfig};
use crate::state::{self, effective_status, status_word, Meta, StateError, StateRoot};
use crate::{audit, netguard, symlinks};

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
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
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

/// Clear the immutable attributes symlink guards set, so engines can remove the files.
fn undo_guards(outcomes: &[symlinks::Outcome]) {
    for o in outcomes {
        if let Some((path, dev, ino)) = &o.immutable {
            symlinks::clear_immutable(path, *dev, *ino);
        }
    }
}

type Result<T> = std::result::Result<T, LifecycleError>;

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

fn lc<'a>(op: &'static str, id: &'a str) -> impl FnOnce(LibcontainerError) -> LifecycleError + 'a {
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

fn cgroup_err<E: std::fmt::Display>(id: &str) -> impl FnOnce(E) -> LifecycleError + '_ {
    move |e| LifecycleError::Cgroup {
        id: id.to_string(),
        msg: e.to_string(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LifecycleError + '_ {
    move |source| LifecycleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options of `create` and `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    pub detach: bool,
    /// `nemosandbox sandbox`: the host's own root, so local sockets are held too
    /// (`netguard::local`).
    pub sandbox: bool,
}

/// How a container's network is set up beyond the spec: the fence's extra hooks and, for a
/// sandbox with a network namespace of its own, its loopback interface.
#[derive(Debug, Clone, Copy)]
struct Net {
    extra: netguard::fence::Extra,
    loopback_up: bool,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub id: String,
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
    pub sub_cgroup: Option<String>,
    /// `--no-new-privs` (confined containers always get it).
    pub no_new_privs: bool,
}

/// The runtime as configured by the global flags.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: StateRoot,
    pub systemd_cgroup: bool,
    pub policy: PolicyInputs,
}

/// What the administrator set for policy selection: node configuration file and runtime flags.
#[derive(Debug, Clone)]
pub struct PolicyInputs {
    pub config: PathBuf,
    pub flag_policy: Option<String>,
    pub flag_presets: Vec<String>,
    /// `--audit-format`: the node sink's line shape, over the node configuration's.
    pub audit_format: Option<crate::audit::Format>,
}

impl Default for PolicyInputs {
    fn default() -> Self {
        PolicyInputs {
            config: PathBuf::from(select::DEFAULT_CONFIG),
            flag_policy: None,
            flag_presets: Vec::new(),
            audit_format: None,
        }
    }
}

impl PolicyInputs {
    /// The effective policy for a spec with these annotations.
    pub fn effective(&self, annotations: &HashMap<String, String>) -> Result<Effective> {
        self.resolve(annotations).map(|(_, e)| e)
    }

    /// The node configuration, read once, and the effective policy under it.
    pub fn resolve(
        &self,
        annotations: &HashMap<String, String>,
    ) -> Result<(NodeConfig, Effective)> {
        let mut node =
            NodeConfig::load(&self.config).map_err(|e| LifecycleError::Policy(e.to_string()))?;
        if let Some(f) = self.audit_format {
            node.audit.format = f;
        }
        let req = select::Request {
            flag_policy: self.flag_policy.clone(),
            flag_presets: self.flag_presets.clone(),
            annotations: annotations.clone(),
        };
        let eff =
            select::effective(&node, &req).map_err(|e| LifecycleError::Policy(e.to_string()))?;
        Ok((node, eff))
    }
}

/// How long `delete` lets the helper finish on its own (the guard's last audit lines).
const HELPER_GRACE: Duration = Duration::from_secs(2);

/// Removes a file or directory on drop unless disarmed: a failed create leaves nothing.
struct RemoveOnDrop {
    path: Option<PathBuf>,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            if fs::remove_dir_all(&p).is_err() {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>, systemd_cgroup: bool) -> Self {
        Self {
            root: StateRoot::new(root),
            systemd_cgroup,
            policy: PolicyInputs::default(),
        }
    }

    fn check_systemd(&self) -> Result<()> {
        if self.systemd_cgroup && !Path::new("/run/systemd/system").is_dir() {
            return Err(LifecycleError::NoSystemd);
        }
        Ok(())
    }

    /// `create` from a bundle directory.
    pub fn create(&self, opts: &CreateOptions) -> Result<Container> {
        state::validate_id(&opts.id)?;
        self.check_systemd()?;
        let src = SourceBundle::load(&opts.bundle)?;
        self.create_from(opts, src)
    }

    /// `create` from an already loaded bundle (also used by `sandbox`, whose spec is built in
    /// memory).
    pub fn create_from(&self, opts: &CreateOptions, src: SourceBundle) -> Result<Container> {
        let id = opts.id.as_str();
        state::validate_id(id)?;
        self.check_systemd()?;
        if self.root.container_dir(id).exists() {
            return Err(StateError::Exists(id.to_string()).into());
        }

        // Policy selection and merge: an unknown or disallowed preset fails here, before
        // anything exists.
        let annotations = src.spec.annotations().clone().unwrap_or_default();
        let (node, effective) = self.policy.resolve(&annotations)?;

        // Spec-rewrite stage.
        let mut rw = if effective.unconfined {
            crate::sealed::ensure().map_err(LifecycleError::Policy)?;
            tracing::warn!("container {id:?}: baseline \"oci\": unconfined, runs as runc would");
            bundle::rewrite_oci(&src, id)?
        } else {
            bundle::rewrite_base(&src, id)?
        };

        let own = self.root.own_dir(id);
        // No libcontainer state exists for this id, so anything here is a leftover of a crash.
        let _ = fs::remove_dir_all(&own);
        fs::create_dir_all(&own).map_err(io_err(&own))?;
        let mut guard = RemoveOnDrop {
            path: Some(own.path().to_path_buf()),
        };
        // The image root, before a restrictive layout swaps in its skeleton.
        let image_root = rw
            .spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_default();
        // A sandbox sees the host's files: its local sockets are the guard's to hold too.
        let host_net = !rw
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| {
                ns.iter()
                    .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
            });
        let local = if opts.sandbox {
            let unix = netguard::fence::unix_hooks();
            if !unix {
                tracing::warn!(
                    "sandbox: this kernel has no cgroup unix socket hooks (Linux 6.7): the \
                     sandbox cannot create unix sockets (socketpair still works)"
                );
            }
            LocalRules {
                unix,
                abstract_names: !host_net,
                loopback_listen: host_net,
            }
        } else {
            LocalRules::default()
        };
        if !effective.unconfined {
            rw.plan.local_denials = confine::seccomp::local_denials(
                opts.sandbox && !local.unix,
                opts.sandbox && host_net,
            );
            let layout = confine::prepare::prepare(&mut rw, &effective, &own, id)?;
            for note in &layout.notes {
                tracing::debug!("container {id:?} layout: {note}");
            }
        }
        let secrets = netguard::l7::credentials::install(&mut rw.spec, &effective, &own)
            .map_err(|e| LifecycleError::Policy(format!("credentials: {e}")))?;
        if secrets > 0 {
            tracing::debug!("container {id:?}: {secrets} credential(s) replaced by placeholders");
        }
        let inspected = effective
            .network_policies
            .values()
            .flat_map(|n| n.policy.endpoints.iter())
            .any(netguard::l7::inspected);
        if inspected && rw.plan.netguard.is_some() {
            let note = netguard::l7::trust::install(&mut rw.spec, &image_root, &own, id)
                .map_err(|e| LifecycleError::Policy(format!("layer-7 CA: {e}")))?;
            if let Some(n) = note {
                tracing::warn!("container {id:?}: {n}");
            }
        }
        if effective.unconfined {
            rw.plan.seccomp_listener = crate::listener::redirect(&mut rw.spec, &own);
        }
        if let Some(l) = rw.plan.landlock.as_mut() {
            l.log_denials = node.audit.landlock_denials && l.abi >= 7 && !effective.unconfined;
        }
        bundle::write_rewritten(&own, &rw)?;
        let effective_path = own.effective();
        let canonical = effective.canonical_json();
        fs::write(&effective_path, &canonical).map_err(io_err(&effective_path))?;
        let mut meta = Meta {
            bundle: src.dir.clone(),
            rootfs: image_root,
            poststop: rw.poststop.clone(),
            ..Meta::default()
        };
        meta.annotations
            .insert(state::POLICY_HASH_ANNOTATION.into(), sha256_hex(&canonical));
        meta.audit = audit::Context {
            container: id.to_string(),
            pod: audit::Pod::from_annotations(&annotations),
            policy_sha256: sha256_hex(&canonical),
            sink: node.audit.enabled.then(|| node.audit.clone()),
            kernel_records: rw.plan.landlock.as_ref().is_some_and(|l| l.log_denials)
                && audit::kernel::enabled().unwrap_or(false),
        };
        meta.annotations.insert(
            state::POLICY_SOURCES_ANNOTATION.into(),
            effective.sources.join(","),
        );
        // Saved once, by the between-create-and-start stage, when the init pid is known.

        // The guard's socket exists before the init process, which inherits a connection
        // to it and hands its notification listener over at `start`.
        let (control, channel) = match rw.plan.netguard.as_mut() {
            Some(n) => {
                let control = netguard::control::bind(&own)?;
                let channel = netguard::control::connect(&own)?;
                n.channel = Some(channel.as_raw_fd());
                (Some(control), Some(channel))
            }
            None => (None, None),
        };
        let relay = self.listener_relay(&rw.plan, &own, &src.dir)?;
        let parents = crate::cgroups::prepare(&rw.spec, self.systemd_cgroup).map_err(|e| {
            LifecycleError::Invalid {
                what: format!("container {id:?} cgroup"),
                msg: e.to_string(),
            }
        })?;
        let systemd = crate::cgroupv1::SystemdJoin::enter(&rw.spec).map_err(|e| {
            parents.remove();
            LifecycleError::Invalid {
                what: format!("container {id:?} name=systemd cgroup"),
                msg: e.to_string(),
            }
        })?;
        meta.systemd_cgroup = systemd.as_ref().map(|s| s.dir.clone());
        let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_executor(ConfiningExecutor::new(rw.plan.clone(), false))
            .with_root_path(self.root.path())
            .and_then(|b| b.with_pid_file(opts.pid_file.as_ref()))
            .map(|b| {
                b.with_console_socket(opts.console_socket.as_ref())
                    .with_preserved_fds(opts.preserve_fds)
            })
            .and_then(|b| b.validate_id())
            .and_then(|b| {
                b.as_init(own.path())
                    .with_systemd(self.systemd_cgroup)
                    .with_detach(opts.detach)
                    .with_no_pivot(opts.no_pivot)
                    .build()
            });
        drop(channel);
        if let Some(s) = &systemd {
            s.leave();
        }
        let relayed = match (&built, relay) {
            (Ok(_), Some(r)) => r.finish(Duration::from_secs(10)),
            _ => Ok(()),
        };
        let built = match (built, relayed) {
            (Ok(mut c), Err(e)) => {
                let _ = c.kill(Signal::SIGKILL, true);
                let _ = c.delete(true);
                Err(LibcontainerError::Other(format!("seccomp listener: {e}")))
            }
            (b, _) => b,
        };
        let mut container = match built {
            Ok(c) => c,
            Err(e) => {
                // libcontainer removes what it made once its process started; not before.
                if let Some(s) = &systemd {
                    s.made.remove();
                }
                parents.remove();
                self.purge(id);
                return Err(lc("create", id)(e));
            }
        };

        let guards: Vec<SymlinkGuard> = effective
            .symlink_guards
            .iter()
            .map(|g| g.value.clone())
            .collect();
        let extra = netguard::fence::Extra {
            unix: local.unix,
            bind: local.loopback_listen,
        };
        let guard_service = rw.plan.netguard.as_ref().zip(control).map(|(n, control)| {
            (
                control,
                netguard::guard::GuardConfigBase {
                    id: id.to_string(),
                    audit_dir: self.root.container_dir(id),
                    audit: meta.audit.clone(),
                    own: own.clone(),
                    resolver: n.resolver,
                    upstream: n.upstream.clone(),
                    fence: None,
                    local,
                    l7_roots: node.l7_upstream_roots.clone(),
                },
            )
        });
        let exec_shells: Option<Vec<String>> = effective
            .exec_policy
            .as_ref()
            .map(|e| e.shells.iter().map(|s| s.value.clone()).collect());
        let net = Net {
            extra,
            loopback_up: opts.sandbox && !host_net,
        };
        let staged = cgroup_fixups(&container, &rw.spec);
        if let Err(e) = staged.and_then(|()| {
            self.between_create_and_start(
                &mut container,
                &mut meta,
                &guards,
                guard_service,
                exec_shells.as_deref(),
                net,
            )
        }) {
            let _ = container.kill(Signal::SIGKILL, true);
            if let Some(pid) = meta.helper_pid {
                helper::kill_helper(pid, meta.helper_start_time);
            }
            if let Some(f) = &meta.fence {
                f.tear_down(meta.helper_pid);
            }
            let _ = container.delete(true);
            if let Some(d) = &meta.systemd_cgroup {
                crate::cgroupv1::remove_systemd_cgroup(d);
            }
            self.purge(id);
            return Err(e);
        }
        guard.path = None;
        Ok(container)
    }

    /// The relay to the engine's seccomp listener (`oci` baseline), started before
    /// libcontainer sends to it.
    fn listener_relay(
        &self,
        plan: &bundle::ConfinementPlan,
        own: &ContainerDir,
        bundle: &Path,
    ) -> Result<Option<crate::listener::Relay>> {
        let Some(target) = &plan.seccomp_listener else {
            return Ok(None);
        };
        crate::listener::start(own, target.clone(), bundle.to_path_buf())
            .map(Some)
            .map_err(io_err(own))
    }

    /// The stage between `create` and `start`: the container's mounts exist and its init
    /// process waits for `start`.
    fn between_create_and_start(
        &self,
        container: &mut Container,
        meta: &mut Meta,
        guards: &[SymlinkGuard],
        net: Option<(UnixListener, netguard::guard::GuardConfigBase)>,
        exec_shells: Option<&[String]>,
        local_net: Net,
    ) -> Result<()> {
        let id = container.id().to_string();
        let pid = container.pid().ok_or_else(|| LifecycleError::Invalid {
            what: format!("container {id:?}"),
            msg: "no init pid after create".into(),
        })?;
        meta.init_start_time = state::process_start_time(pid.as_raw());
        let mut services: Vec<Box<dyn helper::HelperService>> = Vec::new();
        if meta.audit.kernel_records {
            // First: it only starts a thread, and the guard's `run` holds the helper.
            let out = audit::Recorder::new(meta.audit.clone(), &self.root.container_dir(&id));
            match audit::kernel::FsAudit::new(pid.as_raw(), out) {
                Ok(s) => services.push(Box::new(s)),
                Err(e) => tracing::warn!(
                    "container {id:?}: no fs audit events: cannot read the kernel's audit records: {e}"
                ),
            }
        }
        if let Some((control, mut base)) = net {
            // The fence goes up before anything of the container runs; the guard joins its
            // cgroup right after the fork, before it serves any call.
            let fence = netguard::fence::Fence::set_up(
                pid.as_raw(),
                &id,
                self.root.path(),
                local_net.extra,
            )?;
            meta.fence = Some(fence.clone());
            base.fence = Some(fence);
            services.push(Box::new(netguard::guard::Guard::new(
                base.with(pid.as_raw(), control),
            )));
        }
        if local_net.loopback_up {
            netguard::local::loopback_up(pid.as_raw()).map_err(|e| LifecycleError::Invalid {
                what: format!("container {id:?}"),
                msg: format!("bringing the loopback interface up: {e}"),
            })?;
        }
        let fs = crate::execgate::eval::PrefixFs {
            prefix: PathBuf::from(format!("/proc/{}/root", pid.as_raw())),
            grants: None,
        };
        if let Some(extra) = exec_shells {
            meta.shells = crate::execgate::shell_ids(&fs, extra);
        }
        self.pin_landlock_grants(&id, &fs)?;
        let (hpid, hstart) = helper::spawn(pid.as_raw(), services)?;
        meta.helper_pid = Some(hpid);
        meta.helper_start_time = hstart;
        if let Some(f) = &meta.fence {
            f.arm(hpid)?;
        }
        self.symlink_guards(&id, pid.as_raw(), guards, meta)?;
        meta.save(&self.root, &id)?;
        Ok(())
    }

    /// Record, in the plan `exec` reads, what every Landlock grant's path names now: the
    /// workload may later swap such a path for a link (to `/`), and an exec'd process must not
    /// follow it to wider rights.
    fn pin_landlock_grants(&self, id: &str, fs: &crate::execgate::eval::PrefixFs) -> Result<()> {
        let own = self.root.own_dir(id);
        let mut plan = bundle::load_plan(&own)?;
        if let Some(l) = plan.landlock.as_mut() {
            crate::execgate::pin_grants(l, fs);
            bundle::write_plan(&own, &plan)?;
        }
        Ok(())
    }

    /// Validate and freeze each symlink guard; on a mismatch undo what earlier
    /// guards set and fail.
    fn symlink_guards(
        &self,
        id: &str,
        pid: i32,
        guards: &[SymlinkGuard],
        meta: &mut Meta,
    ) -> Result<()> {
        let container_root = PathBuf::from(format!("/proc/{pid}/root"));
        let recorder = audit::Recorder::new(meta.audit.clone(), &self.root.container_dir(id));
        for g in guards {
            match symlinks::harden(g, &container_root, &meta.rootfs) {
                Ok(o) => {
                    let line = format!("symlink guard {}: {}", o.dir, o.annotation_value());
                    if o.outcome == symlinks::Stage::Hardened {
                        tracing::info!("{line}");
                    } else {
                        tracing::warn!("{line}");
                    }
                    recorder.record(
                        &audit::Event::new(
                            audit::Kind::Symlink,
                            o.outcome.as_str(),
                            "symlink_guards",
                            o.detail.as_str(),
                        )
                        .request(serde_json::json!({"dir": o.dir, "target_dir": g.target_dir})),
                    );
                    meta.annotations.insert(
                        format!("{}{}", state::GUARD_ANNOTATION_PREFIX, o.dir),
                        o.annotation_value(),
                    );
                    meta.guards.push(o);
                }
                Err(e) => {
                    undo_guards(&meta.guards);
                    let msg = e.to_string();
                    recorder.record(
                        &audit::Event::new(audit::Kind::Symlink, "refused", "symlink_guards", msg)
                            .request(serde_json::json!({"dir": g.dir, "target_dir": g.target_dir})),
                    );
                    return Err(LifecycleError::Guard(e));
                }
            }
        }
        Ok(())
    }

    /// Remove whatever state a container id has left: both directories and its cgroup.
    fn purge(&self, id: &str) {
        let _ = fs::remove_dir_all(self.root.container_dir(id));
        let _ = fs::remove_dir_all(self.root.own_dir(id));
    }

    pub fn load(&self, id: &str) -> Result<Container> {
        Ok(self.root.load(id)?)
    }

    /// The container, its metadata and its status corrected for a reused pid.
    pub(crate) fn load_with_status(
        &self,
        id: &str,
    ) -> Result<(Container, Option<Meta>, ContainerStatus)> {
        let c = self.load(id)?;
        let meta = Meta::load(&self.root, id).ok();
        let status = effective_status(&c, meta.as_ref());
        Ok((c, meta, status))
    }

    /// Load a container whose status `allowed` accepts; otherwise a wrong-state error for `op`.
    fn load_for(
        &self,
        id: &str,
        op: &'static str,
        allowed: impl Fn(ContainerStatus) -> bool,
    ) -> Result<Container> {
        let (c, _, status) = self.load_with_status(id)?;
        if !allowed(status) {
            return Err(LifecycleError::WrongState {
                id: id.into(),
                status: status_word(status),
                op,
            });
        }
        Ok(c)
    }

    pub fn start(&self, id: &str) -> Result<()> {
        let mut c = self.load_for(id, "start", |s| s == ContainerStatus::Created)?;
        c.start().map_err(lc("start", id))
    }

    /// `run`: create + start, then (foreground) forward signals, wait, delete. Returns the exit
    /// code to exit with.
    pub fn run(&self, opts: &CreateOptions, keep: bool) -> Result<i32> {
        let src = SourceBundle::load(&opts.bundle)?;
        self.run_from(opts, src, keep)
    }

    pub fn run_from(&self, opts: &CreateOptions, src: SourceBundle, keep: bool) -> Result<i32> {
        if !opts.detach {
            foreground::block_forwarded_signals()?;
        }
        let mut c = self.create_from(opts, src)?;
        if let Err(e) = c.start() {
            let _ = self.delete(&opts.id, true);
            return Err(lc("start", &opts.id)(e));
        }
        if opts.detach {
            return Ok(0);
        }
        let pid = c.pid().expect("created container has a pid");
        let code = foreground::wait_forwarding(pid);
        if !keep {
            if let Err(e) = self.delete(&opts.id, true) {
                tracing::warn!("deleting container {:?} after run: {e}", opts.id);
            }
        }
        Ok(code?)
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        state::validate_id(id)?;
        if !self.root.exists(id) {
            self.purge(id);
            if force {
                return Ok(());
            }
            return Err(StateError::NotExist(id.to_string()).into());
        }
        let (mut c, meta, status) = self.load_with_status(id)?;
        if status == ContainerStatus::Stopped && c.pid().is_some() {
            // The recorded pid may now belong to someone else, and libcontainer's delete
            // re-reads liveness from it and kills it: forget the pid first.
            c.state.pid = None;
            c.set_status(ContainerStatus::Stopped);
            c.save().map_err(lc("delete", id))?;
        }
        if !force && matches!(status, ContainerStatus::Running | ContainerStatus::Paused) {
            return Err(LifecycleError::NotStopped(
                id.to_string(),
                status_word(status),
            ));
        }
        if status == ContainerStatus::Paused {
            // A frozen cgroup cannot be emptied: thaw it so SIGKILL is delivered.
            let _ = c.resume();
        }
        if status != ContainerStatus::Stopped {
            // Kill first and wait for the cgroup to empty: removing a cgroup whose processes
            // are still dying fails, and libcontainer only retries for ~100 ms.
            let _ = c.kill(Signal::SIGKILL, true);
            self.wait_cgroup_empty(&c, Duration::from_secs(10));
        }
        if let Some(m) = &meta {
            // The guard lives in a child of the container's cgroup: it goes first, or the
            // container's cgroup cannot be removed.
            if let Some(pid) = m.helper_pid {
                helper::stop_helper(pid, m.helper_start_time, HELPER_GRACE);
            }
            if let Some(f) = &m.fence {
                f.tear_down(m.helper_pid);
            }
        }
        let annotations = c.state.annotations.clone().unwrap_or_default();
        let mut attempt = 0;
        loop {
            match c.delete(true) {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    tracing::debug!("delete {id}: {e}; retrying");
                    attempt += 1;
                    let _ = c.kill(Signal::SIGKILL, true);
                    self.wait_cgroup_empty(&c, Duration::from_secs(2));
                }
                Err(e) => return Err(lc("delete", id)(e)),
            }
        }
        if let Some(m) = &meta {
            undo_guards(&m.guards);
            if let Some(d) = &m.systemd_cgroup {
                crate::cgroupv1::remove_systemd_cgroup(d);
            }
        }
        self.purge(id);
        if let Some(m) = &meta {
            crate::hooks::run_poststop(&m.poststop, id, &m.bundle, &annotations);
        }
        Ok(())
    }

    fn wait_cgroup_empty(&self, c: &Container, limit: Duration) {
        let Ok(m) = self.cgroup_manager(c) else {
            return;
        };
        let start = Instant::now();
        while start.elapsed() < limit {
            match m.get_all_pids() {
                Ok(p) if !p.is_empty() => std::thread::sleep(Duration::from_millis(5)),
                _ => return,
            }
        }
    }

    /// Send signal number `signo` to the init process (or, with `all`, every process of the
    /// container).
    pub fn kill(&self, id: &str, signo: i32, all: bool) -> Result<()> {
        let mut c = self.load_for(id, "kill", |s| all || s != ContainerStatus::Stopped)?;
        let Ok(sig) = Signal::try_from(signo) else {
            return self.kill_realtime(&c, id, signo, all);
        };
        match c.kill(sig, all) {
            // libcontainer saves the state after signalling; a foreground `run` (or the
            // engine) may already have deleted the container the signal just killed.
            Err(_) if !self.root.exists(id) => Ok(()),
            r => r.map_err(lc("kill", id)),
        }
    }

    /// A real-time signal (libcontainer's signal type has none): through a pidfd of each
    /// target, so a pid reused since it was read is never signalled; the init is checked
    /// against its recorded start time first.
    fn kill_realtime(&self, c: &Container, id: &str, signo: i32, all: bool) -> Result<()> {
        let targets = if all {
            self.pids(id)?
        } else {
            let pid = c
                .pid()
                .map(|p| p.as_raw())
                .ok_or_else(|| LifecycleError::Invalid {
                    what: format!("container {id:?}"),
                    msg: "no init process".into(),
                })?;
            let recorded = Meta::load(&self.root, id)
                .ok()
                .and_then(|m| m.init_start_time);
            if recorded.is_some() && state::process_start_time(pid) != recorded {
                return Err(LifecycleError::Invalid {
                    what: format!("container {id:?}"),
                    msg: "its init process is gone".into(),
                });
            }
            vec![pid]
        };
        for pid in targets {
            let Ok(fd) = helper::pidfd_open(pid) else {
                continue;
            };
            // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    signo,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            let e = std::io::Error::last_os_error();
            if rc < 0 && e.raw_os_error() != Some(libc::ESRCH) {
                return Err(LifecycleError::Invalid {
                    what: format!("kill {id:?} with signal {signo}"),
                    msg: e.to_string(),
                });
            }
        }
        Ok(())
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        self.load(id)?.pause().map_err(lc("pause", id))
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        self.load(id)?.resume().map_err(lc("resume", id))
    }

    pub fn state(&self, id: &str) -> Result<state::RuncState> {
        let c = self.load(id)?;
        Ok(state::runc_state(&self.root, &c))
    }

    pub fn list(&self) -> Result<Vec<state::RuncState>> {
        let mut out = Vec::new();
        for id in self.root.ids()? {
            // A container being created or deleted concurrently may vanish between the two.
            if let Ok(c) = self.root.load(&id) {
                out.push(state::runc_state(&self.root, &c));
            }
        }
        Ok(out)
    }

    fn cgroup_manager(&self, c: &Container) -> Result<libcgroups::common::AnyCgroupManager> {
        let id = c.id().to_string();
        let cfg = c.spec().map_err(lc("read config of", &id))?;
        create_cgroup_manager(CgroupConfig {
            cgroup_path: cfg.cgroup_path,
            systemd_cgroup: c.systemd(),
            container_name: id.clone(),
        })
        .map_err(cgroup_err(&id))
    }

    /// Pids in the container's cgroup.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let c = self.load(id)?;
        let m = self.cgroup_manager(&c)?;
        // The guard is charged to the container's cgroup but is not one of its processes.
        let helper = Meta::load(&self.root, id).ok().and_then(|m| m.helper_pid);
        let mut pids: Vec<i32> = m
            .get_all_pids()
            .map_err(cgroup_err(id))?
            .into_iter()
            .map(|p: Pid| p.as_raw())
            .filter(|p| Some(*p) != helper)
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// Apply new resource limits (runc's `update --resources`).
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let c = self.load_for(id, "update", |s| s != ContainerStatus::Stopped)?;
        let m = self.cgroup_manager(&c)?;
        m.apply(&ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(cgroup_err(id))
    }

    /// One stats sample as runc's `events` prints it.
    pub fn stats_event(&self, id: &str) -> Result<serde_json::Value> {
        let c = self.load_for(id, "read events of", |s| s != ContainerStatus::Stopped)?;
        let m = self.cgroup_manager(&c)?;
        let stats = m.stats().map_err(cgroup_err(id))?;
        Ok(serde_json::json!({"type": "stats", "id": id, "data": stats}))
    }

    /// The file that counts OOM kills in the container's cgroup (memory.events on cgroup v2,
    /// memory.oom_control on v1), for `cgroups::oom_kills`; `None` when neither exists.
    pub fn oom_file(&self, id: &str) -> Result<Option<PathBuf>> {
        let c = self.load(id)?;
        let cfg = c.spec().map_err(lc("read config of", id))?;
        let rel = cfg
            .cgroup_path
            .strip_prefix("/")
            .unwrap_or(&cfg.cgroup_path);
        let candidates = [
            Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
            Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.oom_control"),
        ];
        Ok(candidates.into_iter().find(|f| f.exists()))
    }

    /// `exec`: start a process in a running container under the container's confinement.
    pub fn exec(&self, opts: &ExecOptions) -> Result<i32> {
        let id = opts.id.as_str();
        self.load_for(id, "exec in", |s| {
            s == ContainerStatus::Running || (opts.ignore_paused && s == ContainerStatus::Paused)
        })?;
        let own = self.root.own_dir(id);
        let mut plan = bundle::load_plan(&own)?;
        if plan.unconfined {
            crate::sealed::ensure().map_err(LifecycleError::Policy)?;
        }
        let spec = bundle::load_rewritten_spec(&own)?;
        if let Some(l) = plan.landlock.as_mut() {
            // The kernel cannot have changed, but the ABI cap may have: decide again.
            let (abi, cap) = confine::landlock::available_abi();
            l.abi = l.abi.min(abi);
            confine::landlock::check(plan.compatibility, l.abi, cap)
                .map_err(|e| LifecycleError::Prepare(e.into()))?;
        }
        let bounding = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .unwrap_or_default();

        for cap in &opts.caps {
            let want = normalize_cap(cap);
            if !bounding
                .bounding()
                .as_ref()
                .is_some_and(|b| b.iter().any(|c| c.to_string() == want))
            {
                return Err(LifecycleError::Invalid {
                    what: format!("--cap {cap}"),
                    msg: "not in the container's bounding set".into(),
                });
            }
        }

        // Engines pass the container's configured environment again: its secrets stay outside.
        let secrets = netguard::l7::credentials::load(&own)
            .map_err(|e| LifecycleError::Policy(format!("credentials: {e}")))?;
        // The engine's process.json is not ours to change: bound it into a copy.
        let process_copy = match &opts.process {
            Some(path) => Some(bounded_process_copy(
                path,
                &bounding,
                plan.run_as,
                &own,
                &secrets,
                !plan.unconfined,
            )?),
            None => None,
        };
        let _cleanup = RemoveOnDrop {
            path: process_copy.clone(),
        };
        self.exec_gate(opts, &spec, process_copy.as_deref(), &mut plan)?;

        // A process of a guarded container hands its listener to the running guard; with no
        // guard there is no exec (fail closed).
        let channel = match plan.netguard.as_mut() {
            Some(n) => {
                let c = netguard::control::connect(&own)?;
                n.channel = Some(c.as_raw_fd());
                Some(c)
            }
            None => None,
        };
        if !opts.detach {
            foreground::block_forwarded_signals()?;
        }
        let mut requested = opts.env.clone();
        netguard::l7::credentials::scrub(&mut requested, &secrets);
        let env: HashMap<String, String> = requested
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let (user, group) = match plan.run_as {
            Some((u, g)) => (Some(u), Some(g)),
            None => (opts.user, opts.group),
        };
        // Confined: always. Unconfined (`oci`): as runc, the flag or else the spec's value.
        let force_nnp = !plan.unconfined || opts.no_new_privs;
        // One exec at a time per container talks to the relay socket (its path is in the
        // spec every exec loads).
        let _listener_lock = match &plan.seccomp_listener {
            Some(_) => {
                let path = own.listener_lock();
                Some(state::lock_exclusive(&path).map_err(io_err(&path))?)
            }
            None => None,
        };
        let relay = match &plan.seccomp_listener {
            Some(_) => {
                let meta = Meta::load(&self.root, id)?;
                self.listener_relay(&plan, &own, &meta.bundle)?
            }
            None => None,
        };
        let pid = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_executor(ConfiningExecutor::new(plan, true))
            .with_root_path(self.root.path())
            .and_then(|b| b.with_pid_file(opts.pid_file.as_ref()))
            .map(|b| {
                b.with_console_socket(opts.console_socket.as_ref())
                    .with_preserved_fds(opts.preserve_fds)
            })
            .and_then(|b| b.validate_id())
            .and_then(|b| {
                let t = b.as_tenant();
                let t = if force_nnp {
                    t.with_no_new_privs(true)
                } else {
                    t
                };
                t.with_detach(opts.detach)
                    .with_cwd(opts.cwd.as_ref())
                    .with_env(env)
                    .with_process(process_copy.as_ref())
                    .with_container_args(opts.args.clone())
                    .with_capabilities(opts.caps.iter().map(|c| normalize_cap(c)).collect())
                    .with_additional_gids(opts.additional_gids.clone())
                    .with_user(user)
                    .with_group(group)
                    .with_ignore_paused(opts.ignore_paused)
                    .with_sub_cgroup(opts.sub_cgroup.clone())
                    .build()
            })
            .map_err(lc("exec in", id))?;
        drop(channel);
        if let Some(r) = relay {
            if let Err(e) = r.finish(Duration::from_secs(10)) {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                return Err(LifecycleError::Policy(format!("seccomp listener: {e}")));
            }
        }
        if opts.detach {
            return Ok(0);
        }
        Ok(foreground::wait_forwarding(pid)?)
    }
}

impl Runtime {
    /// when the policy has `exec_policy`, decide before anything starts; an allowed
    /// process gets execute rights only on what was allowed.
    fn exec_gate(
        &self,
        opts: &ExecOptions,
        spec: &oci_spec::runtime::Spec,
        process_file: Option<&Path>,
        plan: &mut bundle::ConfinementPlan,
    ) -> Result<()> {
        let id = opts.id.as_str();
        let base = spec.process().clone().unwrap_or_default();
        let base_env = base.env().clone().unwrap_or_default();
        // What libcontainer will run: a process.json as written (it ignores --cwd and
        // --user then), or the arguments over the spec's environment, cwd `/` by default.
        let (argv, env, cwd, uid) = match process_file {
            Some(p) => {
                let process: Process = bundle::read_json(p)?;
                (
                    process.args().clone().unwrap_or_default(),
                    process.env().clone().unwrap_or_default(),
                    process.cwd().clone(),
                    process.user().uid(),
                )
            }
            None => (
                opts.args.clone(),
                exec_environment(&base_env, &opts.env),
                opts.cwd.clone().unwrap_or_else(|| PathBuf::from("/")),
                plan.run_as.map_or(opts.user.unwrap_or(0), |r| r.0),
            ),
        };
        // What the request sets beyond the container's own environment.
        let exec_env: Vec<String> = env
            .iter()
            .filter(|e| !base_env.contains(e))
            .cloned()
            .collect();
        let req = ExecRequest {
            argv,
            env,
            exec_env,
            cwd,
            uid,
        };
        let meta = Meta::load(&self.root, id)?;
        let refuse = |denied: crate::execgate::eval::Denied| -> LifecycleError {
            audit::Recorder::new(meta.audit.clone(), &self.root.container_dir(id)).record(
                &audit::Event::new(
                    audit::Kind::Exec,
                    "denied",
                    "exec_policy",
                    denied.reason.as_str(),
                )
                .request(serde_json::json!({"command": req.argv})),
            );
            denied.into()
        };
        match self.exec_verdict(id, &req, plan, &meta, stdin_is_socket())? {
            None => Ok(()),
            Some(Err(denied)) => Err(refuse(denied)),
            Some(Ok((allowed, fs))) => {
                if let Some(l) = plan.landlock.as_mut() {
                    let files = crate::execgate::execute_set(&allowed, &fs).map_err(refuse)?;
                    crate::execgate::restrict_execute(l, &files, &fs);
                }
                Ok(())
            }
        }
    }

    /// The exec gate's verdict on one request (`None`: the policy has no exec gate). Shared by
    /// `exec` and `policy explain --exec`, so the two cannot disagree.
    fn exec_verdict(
        &self,
        id: &str,
        req: &ExecRequest,
        plan: &bundle::ConfinementPlan,
        meta: &Meta,
        stdin_socket: bool,
    ) -> Result<Option<ExecVerdict>> {
        let own = self.root.own_dir(id);
        let effective: Effective = bundle::read_json(&own.effective())?;
        let Some(policy) = &effective.exec_policy else {
            return Ok(None);
        };
        let deny = |reason: String| {
            Some(Err(crate::execgate::eval::Denied {
                segment: req.argv.first().cloned().unwrap_or_default(),
                reason,
            }))
        };
        let path_var = crate::executor::path_var(&req.env).map(str::to_string);
        // The process gets the last non-empty HOME, else its user's home from the image.
        let home = match req
            .env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("HOME="))
            .filter(|h| !h.is_empty())
        {
            Some(h) if h.starts_with('/') => PathBuf::from(h),
            Some(h) => {
                return Ok(deny(format!(
                    "HOME={h} is not an absolute path (the shell would read its startup files relative to the working directory)"
                )))
            }
            None => crate::identity::resolve(&meta.rootfs, None, req.uid, 0)
                .ok()
                .and_then(|i| i.home)
                .unwrap_or_else(|| PathBuf::from("/")),
        };
        // Without Landlock nothing holds an allowed process to the files decided on.
        if plan.landlock.as_ref().is_none_or(|l| l.abi == 0) {
            return Ok(deny(
                "the exec gate needs Landlock, which this kernel does not offer".into(),
            ));
        }
        let init = self
            .load(id)?
            .pid()
            .ok_or_else(|| LifecycleError::Invalid {
                what: format!("container {id:?}"),
                msg: "no init pid".into(),
            })?;
        let fs = crate::execgate::eval::PrefixFs {
            prefix: PathBuf::from(format!("/proc/{}/root", init.as_raw())),
            grants: plan
                .landlock
                .as_ref()
                .filter(|l| l.abi > 0)
                .map(|l| l.grants.clone()),
        };
        let allowlist: Vec<String> = policy
            .allowlist
            .iter()
            .map(|p| p.value.pattern.clone())
            .collect();
        let ctx = crate::execgate::eval::Context {
            allowlist: &allowlist,
            safe_builtins: policy.safe_builtins,
            path_var: path_var.as_deref(),
            cwd: req.cwd.clone(),
            home,
            shells: &meta.shells,
            exec_env: &req.exec_env,
            env: &req.env,
            stdin_socket,
        };
        Ok(Some(
            crate::execgate::eval::evaluate(&req.argv, &ctx, &fs).map(|a| (a, fs)),
        ))
    }

    /// A running container's root (through its init process) and its live effective policy,
    /// for `policy explain --connect ID`.
    pub fn live_policy(&self, id: &str) -> Result<(PathBuf, Effective)> {
        let c = self.load_for(id, "explain", |s| s == ContainerStatus::Running)?;
        let pid = c.pid().ok_or_else(|| LifecycleError::Invalid {
            what: format!("container {id:?}"),
            msg: "no init pid".into(),
        })?;
        let effective: Effective = bundle::read_json(&self.root.own_dir(id).effective())?;
        Ok((
            PathBuf::from(format!("/proc/{}/root", pid.as_raw())),
            effective,
        ))
    }

    /// `policy explain --exec LINE ID`: what the exec gate would say to `sh -c LINE` exec'd
    /// into the running container with its own environment, as its user, in `/`, with a
    /// standard input that is not a socket. `Ok(None)`: the container has no exec gate.
    pub fn explain_exec(
        &self,
        id: &str,
        line: &str,
    ) -> Result<Option<std::result::Result<Vec<PathBuf>, crate::execgate::eval::Denied>>> {
        self.load_for(id, "explain exec in", |s| s == ContainerStatus::Running)?;
        let own = self.root.own_dir(id);
        let plan = bundle::load_plan(&own)?;
        let spec = bundle::load_rewritten_spec(&own)?;
        let env = spec
            .process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default();
        let req = ExecRequest {
            argv: vec!["sh".into(), "-c".into(), line.to_string()],
            env,
            exec_env: Vec::new(),
            cwd: PathBuf::from("/"),
            uid: plan.run_as.map_or(0, |r| r.0),
        };
        let meta = Meta::load(&self.root, id)?;
        Ok(self
            .exec_verdict(id, &req, &plan, &meta, false)?
            .map(|v| v.and_then(|(allowed, fs)| crate::execgate::execute_set(&allowed, &fs))))
    }
}

/// One exec request as the gate sees it.
struct ExecRequest {
    argv: Vec<String>,
    env: Vec<String>,
    /// Variables the request sets beyond the container's own environment.
    exec_env: Vec<String>,
    cwd: PathBuf,
    uid: u32,
}

type ExecVerdict = std::result::Result<
    (
        crate::execgate::eval::Allowed,
        crate::execgate::eval::PrefixFs,
    ),
    crate::execgate::eval::Denied,
>;

/// The environment libcontainer gives an exec without a process.json: the container's,
/// minus the keys the request sets, then the request's (the last value of a repeated key).
/// What libcontainer leaves undone on cgroup v1 hosts (`cgroupv1`), once the init process
/// exists.
fn cgroup_fixups(container: &Container, spec: &oci_spec::runtime::Spec) -> Result<()> {
    let Some(pid) = container.pid() else {
        return Ok(());
    };
    let v1 = |e: crate::cgroupv1::CgroupV1Error| LifecycleError::Invalid {
        what: format!("container {:?} cgroups", container.id()),
        msg: e.to_string(),
    };
    crate::cgroupv1::fix_mounts(spec, pid.as_raw()).map_err(v1)?;
    crate::cgroupv1::apply_oom_control(spec, pid.as_raw()).map_err(v1)
}

fn exec_environment(base: &[String], request: &[String]) -> Vec<String> {
    let mut set: Vec<(&str, &str)> = Vec::new();
    for e in request {
        if let Some((k, v)) = e.split_once('=') {
            set.retain(|(key, _)| *key != k);
            set.push((k, v));
        }
    }
    base.iter()
        .filter(|e| {
            let k = e.split('=').next().unwrap_or(e);
            !set.iter().any(|(key, _)| *key == k)
        })
        .cloned()
        .chain(set.iter().map(|(k, v)| format!("{k}={v}")))
        .collect()
}

/// Whether this process's standard input, which the exec'd process inherits, is a socket.
fn stdin_is_socket() -> bool {
    nix::sys::stat::fstat(0).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

fn normalize_cap(cap: &str) -> String {
    let up = cap.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Copy of an exec process.json with capabilities limited to the container's and
/// no_new_privs set (when `nnp`); written into our state dir, removed after the exec.
fn bounded_process_copy(
    path: &Path,
    container: &LinuxCapabilities,
    run_as: Option<(u32, u32)>,
    own: &ContainerDir,
    secrets: &[netguard::l7::credentials::Secret],
    nnp: bool,
) -> Result<PathBuf> {
    let mut process: Process = bundle::read_json(path)?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(LifecycleError::Invalid {
            what: format!("{}: process.args", path.display()),
            msg: "at least one argument is required".into(),
        });
    }
    if let Some(mut caps) = process.capabilities().clone() {
        let limit = |set: &Option<oci_spec::runtime::Capabilities>,
                     bound: &Option<oci_spec::runtime::Capabilities>| {
            set.as_ref().map(|s| {
                s.iter()
                    .filter(|c| bound.as_ref().is_some_and(|b| b.contains(c)))
                    .cloned()
                    .collect::<oci_spec::runtime::Capabilities>()
            })
        };
        let bounding = container.bounding();
        caps.set_bounding(limit(caps.bounding(), bounding));
        caps.set_effective(limit(caps.effective(), bounding));
        caps.set_permitted(limit(caps.permitted(), bounding));
        caps.set_inheritable(limit(caps.inheritable(), bounding));
        caps.set_ambient(limit(caps.ambient(), bounding));
        process.set_capabilities(Some(caps));
    }
    if let Some((uid, gid)) = run_as {
        // The policy's identity holds for every process.
        crate::identity::impose(&mut process, uid, gid);
    }
    if nnp {
        process.set_no_new_privileges(Some(true));
    } else if process.no_new_privileges() == Some(false) {
        // As at create: libcontainer treats a present `false` as "load seccomp late".
        process.set_no_new_privileges(None);
    }
    if let Some(mut env) = process.env().clone() {
        netguard::l7::credentials::scrub(&mut env, secrets);
        process.set_env(Some(env));
    }
    let out = own.exec_process();
    fs::write(
        &out,
        serde_json::to_vec(&process).expect("process serializes"),
    )
    .map_err(io_err(&out))?;
    Ok(out)
}
