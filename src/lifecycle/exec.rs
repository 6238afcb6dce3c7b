//! `exec`: a new process in a running container, under the container's confinement, with
//! the exec gate deciding first where the policy has one.

use super::caps::{bounded_process_copy, normalize_cap};
use super::*;

impl Runtime {
    /// `exec`: start a process in a running container under the container's confinement.
    pub fn exec(&self, opts: &ExecOptions) -> Result<i32> {
        let id = opts.id.as_str();
        self.load_for(id, "exec in", |s| {
            s == ContainerStatus::Running || (opts.ignore_paused && s == ContainerStatus::Paused)
        })?;
        let own = self.root.own_dir(id);
        // A copy of the saved plan, narrowed below for this process only.
        let loaded = crate::plan::LoadedPlan::of(crate::plan::Plan::load(&own)?, &own)?;
        let mut plan = loaded.plan.clone();
        if plan.nested_user.is_some() || plan.rootless {
            // An ordinary user's processes could not be handed to the guard (only the init is
            // dumpable while it sets up) nor enter the nested user namespace. A rootless
            // engine's runtime is root in the namespace the process is made in, and may.
            return Err(LifecycleError::NeedsRoot(
                id.to_string(),
                "a process cannot be exec'd into a sandbox run without root",
            ));
        }
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
        let channel = match plan.netguard {
            Some(_) => Some(netguard::control::connect(&own)?.into()),
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
        let loaded = loaded.narrowed(plan).with_channel(channel);
        let engine_io = EngineIo {
            pid_file: opts.pid_file.as_ref(),
            console_socket: opts.console_socket.as_ref(),
            preserve_fds: opts.preserve_fds,
        };
        // On a cgroup v1 host the process starts in the fence's v2 cgroup, so the guard
        // need not move it there (a move waits on the kernel's global threadgroup lock).
        let birthplace = Meta::load(&self.root, id)
            .ok()
            .and_then(|m| m.fence)
            .and_then(|f| f.own_container_dir());
        libcontainer::process::fork::set_clone_into_cgroup(
            birthplace.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        );
        // As at create: libcgroups leaves the name=systemd hierarchy out, and the process
        // inherits this thread's place there (runc puts exec'd processes in it too).
        let systemd = crate::cgroupv1::SystemdJoin::enter(&spec).map_err(|e| {
            libcontainer::process::fork::set_clone_into_cgroup(None);
            LifecycleError::Invalid {
                what: format!("container {id:?} name=systemd cgroup"),
                msg: e.to_string(),
            }
        })?;
        let built = self
            .builder(id, ConfiningExecutor::new(loaded.clone(), true), engine_io)
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
            });
        libcontainer::process::fork::set_clone_into_cgroup(None);
        drop(birthplace);
        if let Some(s) = &systemd {
            s.leave();
        }
        let pid = built.map_err(lc("exec in", id))?;
        // The process has its copy of the channel; ours closes.
        drop(loaded);
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

    /// when the policy has `exec_policy`, decide before anything starts; an allowed
    /// process gets execute rights only on what was allowed.
    fn exec_gate(
        &self,
        opts: &ExecOptions,
        spec: &oci_spec::runtime::Spec,
        process_file: Option<&Path>,
        plan: &mut crate::plan::Plan,
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
                    audit::Decision::Denied,
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
        plan: &crate::plan::Plan,
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
        let fs = crate::execgate::PrefixFs::new(
            Path::new(&format!("/proc/{}/root", init.as_raw())),
            plan.landlock
                .as_ref()
                .filter(|l| l.abi > 0)
                .map(|l| l.grants.clone()),
        );
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
        let plan = crate::plan::Plan::load(&own)?;
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
    (crate::execgate::eval::Allowed, crate::execgate::PrefixFs),
    crate::execgate::eval::Denied,
>;

/// The environment libcontainer gives an exec without a process.json: the container's,
/// minus the keys the request sets, then the request's (the last value of a repeated key).
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
