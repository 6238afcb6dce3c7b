//! Container lifecycle: the runc verbs on top of libcontainer, with the policy hook points.
//!
//! create:  load bundle → spec-rewrite stage (state dir) → libcontainer build (init waits on the
//!          notify socket; its in-container stage runs after `start`) → between-create-and-start
//!          stage (start time, helper process, policy stages) → `created`.
//! Any failure after something exists removes all of it: libcontainer's dir, ours, the cgroup,
//! the init process and the helper.

mod caps;
mod create;
mod error;
mod exec;
mod guards;
pub mod policy_update;

use std::collections::HashMap;
use std::fs;
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

use crate::bundle::{self, SourceBundle};
use crate::confine;
use crate::container_dir::ContainerDir;
use crate::executor::ConfiningExecutor;
use crate::foreground;
use crate::helper;
use crate::netguard::local::LocalRules;
use crate::policy::merge::{sha256_hex, Effective};
use crate::policy::model::SymlinkGuard;
use crate::policy::select::{self, NodeConfig};
use crate::state::{self, effective_status, status_word, Meta, StateError, StateRoot};
use crate::{audit, netguard, symlinks};

use crate::path_error::io_err;
use error::{cgroup_err, lc, Result};
pub use error::{
    LifecycleError, ROOTLESS_CONTAINERS, ROOTLESS_INSPECTION, ROOTLESS_NETWORK_POLICIES,
    ROOTLESS_NET_ADMIN, ROOTLESS_SYS_ADMIN,
};
use guards::undo_guards;

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
    /// Without root: the ids the process takes in a nested user namespace (`Plan::nested_user`).
    pub nested_user: Option<(u32, u32)>,
}

/// How a container's network is set up beyond the spec: the fence's extra hooks and, for a
/// sandbox with a network namespace of its own, its loopback interface.
#[derive(Debug, Clone, Copy)]
struct Net {
    extra: netguard::fence::Extra,
    loopback_up: bool,
    /// The kernel fence goes up (root only; `create_from` lets a sandbox without root
    /// through only in a loopback-only network namespace of its own).
    fence: bool,
    /// The fence's own v2 cgroup was made before create for the init to start in
    /// (`netguard::fence::Birthplace`, cgroup v1 hosts).
    born: bool,
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
    /// `sandbox --rw`/`--ro`: host paths added to the policy's `read_write`/`read_only`.
    pub sandbox_paths: SandboxPaths,
}

/// Paths the caller of `sandbox` adds, as the policy fields of the same names would.
#[derive(Debug, Clone, Default)]
pub struct SandboxPaths {
    pub read_write: Vec<String>,
    pub read_only: Vec<String>,
}

impl SandboxPaths {
    /// The document name these entries carry in the effective policy.
    pub const SOURCE: &'static str = "sandbox flags";

    fn add_to(&self, eff: &mut Effective) {
        if eff.unconfined || (self.read_write.is_empty() && self.read_only.is_empty()) {
            return;
        }
        let entry = |p: &String| crate::policy::merge::From {
            value: p.clone(),
            from: Self::SOURCE.into(),
        };
        let fs = &mut eff.filesystem_policy;
        fs.read_write.extend(self.read_write.iter().map(entry));
        fs.read_only.extend(self.read_only.iter().map(entry));
        eff.sources.push(Self::SOURCE.into());
    }
}

impl Default for PolicyInputs {
    fn default() -> Self {
        PolicyInputs {
            config: PathBuf::from(select::DEFAULT_CONFIG),
            flag_policy: None,
            flag_presets: Vec::new(),
            audit_format: None,
            sandbox_paths: SandboxPaths::default(),
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
        let mut eff =
            select::effective(&node, &req).map_err(|e| LifecycleError::Policy(e.to_string()))?;
        self.sandbox_paths.add_to(&mut eff);
        Ok((node, eff))
    }
}

/// What the engine hands every new process: where to write its pid, the socket for its
/// terminal, and how many descriptors it inherits.
struct EngineIo<'a> {
    pid_file: Option<&'a PathBuf>,
    console_socket: Option<&'a PathBuf>,
    preserve_fds: i32,
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

    /// The libcontainer builder `create` and `exec` both start from.
    fn builder(
        &self,
        id: &str,
        executor: ConfiningExecutor,
        io: EngineIo,
    ) -> std::result::Result<ContainerBuilder, LibcontainerError> {
        ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_executor(executor)
            .with_root_path(self.root.path())
            .and_then(|b| b.with_pid_file(io.pid_file))
            .map(|b| {
                b.with_console_socket(io.console_socket)
                    .with_preserved_fds(io.preserve_fds)
            })
            .and_then(|b| b.validate_id())
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
        // libcontainer records "created" before the stage between create and start (pins,
        // read-only cgroup mounts, the guard), whose end is the meta's save: a `start` racing
        // a `create` still under way would run the workload before that stage is done.
        if !Meta::path(&self.root, id).exists() {
            return Err(LifecycleError::Invalid {
                what: format!("container {id:?}"),
                msg: "its create is still under way (or failed)".into(),
            });
        }
        c.start().map_err(lc("start", id))
    }

    /// `run`: create + start, then (foreground) forward signals, wait, delete. Returns the exit
    /// code to exit with.
    pub fn run(&self, opts: &CreateOptions, keep: bool) -> Result<i32> {
        let timed = crate::timing::span("bundle-load");
        let src = SourceBundle::load(&opts.bundle)?;
        drop(timed);
        self.run_from(opts, src, keep)
    }

    pub fn run_from(&self, opts: &CreateOptions, src: SourceBundle, keep: bool) -> Result<i32> {
        if !opts.detach {
            foreground::block_forwarded_signals()?;
        }
        let mut c = {
            let _t = crate::timing::span("create");
            self.create_from(opts, src)?
        };
        let timed = crate::timing::span("start");
        if let Err(e) = c.start() {
            let _ = self.delete(&opts.id, true);
            return Err(lc("start", &opts.id)(e));
        }
        drop(timed);
        if opts.detach {
            return Ok(0);
        }
        let pid = c.pid().expect("created container has a pid");
        let code = {
            let _t = crate::timing::span("wait");
            foreground::wait_forwarding(pid)
        };
        if !keep {
            let _t = crate::timing::span("delete");
            if let Err(e) = self.delete_exited(c) {
                tracing::warn!("deleting container {:?} after run: {e}", opts.id);
            }
        }
        Ok(code?)
    }

    /// Delete the container `c` of a foreground `run` whose init this process has waited for
    /// (or failed to): what `delete --force` does, without loading the state again.
    fn delete_exited(&self, mut c: Container) -> Result<()> {
        let id = c.id().to_string();
        if c.pid()
            .is_some_and(|p| state::process_start_time(p.as_raw()).is_some())
        {
            // Not reaped (the wait failed): the full delete kills and waits first.
            return self.delete(&id, true);
        }
        let meta = Meta::load(&self.root, &id).ok();
        // Reaped: the pid may already be someone else's, and libcontainer's delete
        // re-reads liveness from it.
        c.state.pid = None;
        c.set_status(ContainerStatus::Stopped);
        self.remove_stopped(c, meta.as_ref(), &id)
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
        self.remove_stopped(c, meta.as_ref(), id)
    }

    /// The end of `delete`, for a container with no process left: the helper and the fence,
    /// libcontainer's state and cgroups, ours, then the poststop hooks.
    fn remove_stopped(&self, mut c: Container, meta: Option<&Meta>, id: &str) -> Result<()> {
        let timed = crate::timing::span("delete-helper");
        if let Some(m) = meta {
            // The guard lives in a child of the container's cgroup: it goes first, or the
            // container's cgroup cannot be removed.
            if let Some(pid) = m.helper_pid {
                helper::stop_helper(pid, m.helper_start_time, HELPER_GRACE);
            }
            if let Some(f) = &m.fence {
                f.tear_down(m.helper_pid);
            }
        }
        drop(timed);
        let annotations = c.state.annotations.clone().unwrap_or_default();
        let timed = crate::timing::span("delete-libcontainer");
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
        drop(timed);
        let _t = crate::timing::span("delete-purge");
        if let Some(m) = meta {
            undo_guards(&m.guards);
            if let Some(d) = &m.systemd_cgroup {
                crate::cgroupv1::remove_systemd_cgroup(d);
            }
        }
        self.purge(id);
        if let Some(m) = meta {
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
}
