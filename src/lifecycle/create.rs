//! `create`: the spec-rewrite stage, libcontainer's build, and the stage between `create`
//! and `start` (helper process, guard, fence, exec-gate shells, Landlock grants pinned).

use super::*;

impl Runtime {
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
        let timed = crate::timing::span("policy");
        let (node, effective) = self.policy.resolve(&annotations)?;
        drop(timed);
        let timed = crate::timing::span("rewrite");

        // Spec-rewrite stage.
        let mut rw = if effective.unconfined {
            crate::sealed::ensure().map_err(LifecycleError::Policy)?;
            tracing::warn!("container {id:?}: baseline \"oci\": unconfined, runs as runc would");
            bundle::rewrite_oci(&src, id)?
        } else {
            bundle::rewrite_base(&src, id)?
        };

        drop(timed);
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
        // Without the host's root there is no kernel fence (cgroup programs need it): the
        // guard's decisions hold only where a swapped socket cannot reach anything, a network
        // namespace of the container's own with nothing in it but loopback.
        let standing = crate::privilege::current();
        let rootless = standing.rootless();
        if rootless && !opts.sandbox && standing == crate::privilege::Privilege::User {
            return Err(LifecycleError::NeedsRoot(
                id.to_string(),
                ROOTLESS_CONTAINERS,
            ));
        }
        if rootless && !effective.unconfined && host_net {
            return Err(LifecycleError::NeedsRoot(
                id.to_string(),
                ROOTLESS_NETWORK_POLICIES,
            ));
        }
        // A rootless engine's container (podman's, as uid 0 of the user's namespace) would
        // join the network the engine made, which reaches out (slirp4netns, pasta): it gets a
        // fresh one instead, and the guard relays what the policy allows.
        let private_net = rootless && !opts.sandbox && !effective.unconfined;
        if private_net {
            // With either, a process could join another namespace of the engine's user
            // namespace (podman's own network, through a shared pid namespace) or move an
            // interface into its own: no fence would see that traffic.
            if let Some(cap) = bundle::network_capability(&rw.spec) {
                return Err(LifecycleError::NeedsRoot(
                    id.to_string(),
                    match cap {
                        "CAP_SYS_ADMIN" => ROOTLESS_SYS_ADMIN,
                        _ => ROOTLESS_NET_ADMIN,
                    },
                ));
            }
            bundle::private_network(&mut rw.spec);
        }
        let inspected = effective
            .network_policies
            .values()
            .flat_map(|n| n.policy.endpoints.iter())
            .any(netguard::l7::inspected);
        // The layer-7 proxy listens in the container's network namespace, which only root
        // may enter from outside.
        if inspected && rootless {
            return Err(LifecycleError::NeedsRoot(
                id.to_string(),
                ROOTLESS_INSPECTION,
            ));
        }
        let local = if opts.sandbox {
            // Without root, no cgroup hook holds unix connects to the guard's decisions:
            // the sandbox makes no named unix socket (socketpair still works).
            let unix = netguard::fence::unix_hooks() && !rootless;
            if !unix && !rootless {
                tracing::warn!(
                    "sandbox: this kernel has no cgroup unix socket hooks (Linux 6.7): the \
                     sandbox cannot create unix sockets (socketpair still works)"
                );
            }
            LocalRules {
                unix,
                abstract_names: !host_net,
                loopback_listen: host_net,
                own_files: false,
            }
        } else if private_net {
            // A loopback-only network of its own; its unix paths are its own files.
            LocalRules {
                abstract_names: true,
                own_files: true,
                ..LocalRules::default()
            }
        } else {
            LocalRules::default()
        };
        let plan = if effective.unconfined {
            crate::plan::Plan::unconfined(crate::listener::redirect(&mut rw.spec, &own))
        } else {
            let inputs = confine::prepare::PlanInputs {
                // SO_REUSEPORT: on the host's network (or a relayed socket, which is on it)
                // a group with a host service would share its traffic.
                local_denials: confine::seccomp::local_denials(
                    opts.sandbox && !local.unix,
                    opts.sandbox && (host_net || rootless),
                ),
                relay: rootless,
                log_denials: node.audit.landlock_denials,
            };
            let _t = crate::timing::span("prepare");
            let (plan, layout) = confine::prepare::prepare(&mut rw, &effective, &own, id, inputs)?;
            for note in &layout.notes {
                tracing::debug!("container {id:?} layout: {note}");
            }
            plan
        };
        let plan = crate::plan::Plan {
            nested_user: opts.nested_user,
            // Only an ordinary user's guard needs the init dumpable to take its listener; a
            // rootless engine's is root in the namespace the init is made in.
            rootless: standing == crate::privilege::Privilege::User,
            // A rootless engine's runtime is root over the container's network namespace
            // and brings `lo` up from outside (`Net::loopback_up`).
            loopback_up: rootless && opts.sandbox && !host_net,
            ..plan
        };

        let timed = crate::timing::span("l7-setup");
        let secrets = netguard::l7::credentials::install(&mut rw.spec, &effective, &own)
            .map_err(|e| LifecycleError::Policy(format!("credentials: {e}")))?;
        if secrets > 0 {
            tracing::debug!("container {id:?}: {secrets} credential(s) replaced by placeholders");
        }
        if inspected && plan.netguard.is_some() {
            let note = netguard::l7::trust::install(&mut rw.spec, &image_root, &own, id)
                .map_err(|e| LifecycleError::Policy(format!("layer-7 CA: {e}")))?;
            if let Some(n) = note {
                tracing::warn!("container {id:?}: {n}");
            }
        }
        drop(timed);
        let timed = crate::timing::span("state-write");
        bundle::write_rewritten(&own, &rw)?;
        plan.write(&own)?;
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
            kernel_records: plan.landlock.as_ref().is_some_and(|l| l.log_denials)
                && audit::kernel::enabled().unwrap_or(false),
        };
        meta.annotations.insert(
            state::POLICY_SOURCES_ANNOTATION.into(),
            effective.sources.join(","),
        );
        // Saved once, by the between-create-and-start stage, when the init pid is known.
        drop(timed);

        // The guard's channels exist before the init process, which inherits its end of a
        // socket pair and hands its notification listener over on it at `start`.
        let timed = crate::timing::span("guard-channel");
        let (control, channel) = match plan.netguard {
            Some(_) => {
                let (guard_ends, init_end) = netguard::control::open(&own)?;
                (Some(guard_ends), Some(init_end))
            }
            None => (None, None),
        };
        // The programs' bytes come from the files just written, as every exec reads them.
        let loaded = crate::plan::LoadedPlan::of(plan.clone(), &own)?.with_channel(channel);
        drop(timed);
        let relay = self.listener_relay(&plan, &own, &src.dir)?;
        let timed = crate::timing::span("cgroups-prepare");
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
        drop(timed);
        let engine_io = EngineIo {
            pid_file: opts.pid_file.as_ref(),
            console_socket: opts.console_socket.as_ref(),
            preserve_fds: opts.preserve_fds,
        };
        // A cgroup v1 host's container starts in the fence's v2 cgroup instead of being
        // moved there after create (see `Birthplace`).
        let timed = crate::timing::span("birthplace");
        let birthplace = match plan.netguard.is_some() && !rootless {
            true => netguard::fence::Birthplace::make(id, self.root.path()).map_err(|e| {
                if let Some(s) = &systemd {
                    s.leave();
                    s.made.remove();
                }
                parents.remove();
                LifecycleError::Invalid {
                    what: format!("container {id:?} fence cgroup"),
                    msg: e.to_string(),
                }
            })?,
            false => None,
        };
        drop(timed);
        let timed = crate::timing::span("libcontainer-create");
        libcontainer::process::fork::set_clone_into_cgroup(birthplace.as_ref().map(|b| b.fd()));
        let built = self
            .builder(id, ConfiningExecutor::new(loaded.clone(), false), engine_io)
            .and_then(|b| {
                b.as_init(own.path())
                    .with_systemd(self.systemd_cgroup)
                    // libcontainer reads this only to require a console socket with a
                    // terminal; a foreground run given one (a sandbox in a terminal) relays it.
                    .with_detach(opts.detach || opts.console_socket.is_some())
                    .with_no_pivot(opts.no_pivot)
                    .build()
            });
        libcontainer::process::fork::set_clone_into_cgroup(None);
        drop(timed);
        // The process has its copy of the channel; ours closes.
        drop(loaded);
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
                drop(birthplace);
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
        let guard_service = plan.netguard.as_ref().zip(control).map(|(n, control)| {
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
                    relay: rootless,
                    own_loopback: private_net,
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
            // Without root, the init does it (`Plan::loopback_up`).
            loopback_up: (opts.sandbox && !host_net && !rootless) || private_net,
            fence: !rootless,
            born: birthplace.is_some(),
        };
        let _t = crate::timing::span("after-create");
        let rights = Rights {
            guards: &guards,
            exec_shells: exec_shells.as_deref(),
            landlock: plan.landlock.as_ref(),
            spec: &rw.spec,
        };
        if let Err(e) =
            self.between_create_and_start(&mut container, &mut meta, rights, guard_service, net)
        {
            let _ = container.kill(Signal::SIGKILL, true);
            if let Some(pid) = meta.helper_pid {
                helper::kill_own_helper(pid);
            }
            if let Some(f) = &meta.fence {
                f.tear_down(meta.helper_pid);
            }
            let _ = container.delete(true);
            if let Some(d) = &meta.systemd_cgroup {
                crate::cgroupv1::remove_systemd_cgroup(d);
            }
            drop(birthplace);
            self.purge(id);
            return Err(e);
        }
        // The fence's from now on: its tear-down (at delete) removes it.
        if let Some(b) = birthplace {
            b.keep();
        }
        guard.path = None;
        Ok(container)
    }

    /// The relay to the engine's seccomp listener (`oci` baseline), started before
    /// libcontainer sends to it.
    pub(super) fn listener_relay(
        &self,
        plan: &crate::plan::Plan,
        own: &ContainerDir,
        bundle: &Path,
    ) -> Result<Option<crate::listener::Relay>> {
        let Some(target) = &plan.seccomp_listener else {
            return Ok(None);
        };
        crate::listener::start(own, target.clone(), bundle.to_path_buf())
            .map(Some)
            .map_err(|e| io_err(own)(e).into())
    }

    /// The stage between `create` and `start`: the container's mounts exist and its init
    /// process waits for `start`.
    fn between_create_and_start(
        &self,
        container: &mut Container,
        meta: &mut Meta,
        rights: Rights<'_>,
        net: Option<(
            netguard::control::GuardEnds,
            netguard::guard::GuardConfigBase,
        )>,
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
            let _t = crate::timing::span("fence");
            // Without root, `create_from` let only a sandbox with a loopback-only network
            // namespace of its own through: that namespace is its fence.
            if local_net.fence {
                let fence = netguard::fence::Fence::set_up(
                    pid.as_raw(),
                    &id,
                    self.root.path(),
                    local_net.extra,
                    local_net.born,
                )?;
                meta.fence = Some(fence.clone());
                base.fence = Some(fence);
            }
            services.push(Box::new(netguard::guard::Guard::new(
                base.with(pid.as_raw(), control),
            )));
        }
        if local_net.loopback_up {
            // Before the helper: the guard's resolver binds a loopback address.
            let _t = crate::timing::span("loopback-up");
            netguard::local::loopback_up(pid.as_raw()).map_err(|e| LifecycleError::Invalid {
                what: format!("container {id:?}"),
                msg: format!("bringing the loopback interface up: {e}"),
            })?;
        }
        let timed = crate::timing::span("helper-start");
        // The helper starts in the guard's cgroup (see `helper::Placement`).
        let guard_dir = meta.fence.as_ref().and_then(|f| f.guard_dir());
        let placement = meta
            .fence
            .as_ref()
            .zip(guard_dir.as_ref())
            .map(|(f, dir)| helper::Placement { v2: dir, v1: &f.v1 });
        let (hpid, hstart, placed) = helper::spawn(pid.as_raw(), services, placement)?;
        drop(guard_dir);
        drop(timed);
        meta.helper_pid = Some(hpid);
        meta.helper_start_time = hstart;
        // The rest runs while the helper boots, so the guard's set-up overlaps it; still
        // before `start`, so nothing of the workload has run to swap what it names. The
        // cgroup v1 fix-ups (mostly remounts) go on a thread of their own beside the fence's
        // arming and the pins: no fork follows in this process.
        let spec = rights.spec;
        let shared: &Container = container;
        let fix = || {
            let _t = crate::timing::span("cgroup-fixups");
            cgroup_fixups(shared, spec)
        };
        std::thread::scope(|s| {
            // Only a cgroup v1 host has fix-ups to make; a thread that cannot be started (a
            // pids limit) leaves them to this one, after the rest.
            let beside = crate::cgroupv1::host_is_v1()
                .then(|| std::thread::Builder::new().spawn_scoped(s, fix).ok())
                .flatten();
            let armed = self.arm_and_pin(&id, pid.as_raw(), (hpid, placed), meta, &rights);
            let fixed = match beside {
                Some(t) => t.join().unwrap_or_else(|_| {
                    Err(LifecycleError::Invalid {
                        what: format!("container {id:?} cgroups"),
                        msg: "the cgroup fix-up thread panicked".into(),
                    })
                }),
                None => armed.as_ref().map_or(Ok(()), |_| fix()),
            };
            armed.and(fixed)
        })?;
        {
            let _t = crate::timing::span("symlink-guards");
            self.symlink_guards(&id, pid.as_raw(), rights.guards, meta)?;
        }
        let _t = crate::timing::span("meta-save");
        meta.save(&self.root, &id)?;
        Ok(())
    }

    /// The guard `helper` into the fence (unless it `placed` itself), then the image's shells and the Landlock grants
    /// pinned (the container's files, read through its init `pid`).
    fn arm_and_pin(
        &self,
        id: &str,
        pid: i32,
        (helper, placed): (i32, helper::Placed),
        meta: &mut Meta,
        rights: &Rights<'_>,
    ) -> Result<()> {
        if let Some(f) = &meta.fence {
            f.arm(helper, placed.confirmed())?;
        }
        let _t = crate::timing::span("shells-pins");
        let fs = crate::execgate::PrefixFs::new(Path::new(&format!("/proc/{pid}/root")), None);
        if let Some(extra) = rights.exec_shells {
            meta.shells = crate::execgate::shell_ids(&fs, extra);
        }
        if let Some(landlock) = rights.landlock {
            pin_landlock_grants(&self.root.own_dir(id), landlock, &fs)?;
        }
        Ok(())
    }
}

/// What the stage between create and start fixes for later processes: the symlink guards to
/// freeze, the shells the exec gate knows, the Landlock grants to pin.
struct Rights<'a> {
    guards: &'a [SymlinkGuard],
    exec_shells: Option<&'a [String]>,
    landlock: Option<&'a crate::confine::landlock::LandlockPlan>,
    /// For what libcontainer leaves undone on cgroup v1 hosts.
    spec: &'a oci_spec::runtime::Spec,
}

/// Record, beside the plan `exec` reads, what every Landlock grant's path names now: the
/// workload may later swap such a path for a link (to `/`), and an exec'd process must not
/// follow it to wider rights.
fn pin_landlock_grants(
    own: &ContainerDir,
    landlock: &crate::confine::landlock::LandlockPlan,
    fs: &crate::execgate::PrefixFs,
) -> Result<()> {
    let mut l = landlock.clone();
    crate::execgate::pin_grants(&mut l, fs);
    crate::plan::Pins::of(&l).write(own)?;
    Ok(())
}

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
