//! The runc verbs: options from the command line to the lifecycle, output as runc prints it.

use super::*;
use std::path::Path;
use std::time::Duration;

use nemosandbox::console;

pub(super) fn create_options(a: &CreateArgs, detach: bool) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
        detach,
        sandbox: false,
        nested_user: None,
    }
}

pub(super) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(super) fn read_resources(src: &str) -> Result<oci_spec::runtime::LinuxResources> {
    let mut data = Vec::new();
    if src == "-" {
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading resources from stdin")?;
    } else {
        data = std::fs::read(src).with_context(|| format!("reading {src}"))?;
    }
    serde_json::from_slice(&data)
        .map_err(|e| anyhow!("resources {src}:{}:{}: {e}", e.line(), e.column()))
}

pub(super) fn update_resources(a: &UpdateArgs) -> Result<oci_spec::runtime::LinuxResources> {
    use oci_spec::runtime::*;
    let mut r = match &a.resources {
        Some(src) => read_resources(src)?,
        None => LinuxResources::default(),
    };
    if a.memory.is_some() || a.memory_reservation.is_some() || a.memory_swap.is_some() {
        let mut m = r.memory().unwrap_or_default();
        if let Some(v) = a.memory {
            m.set_limit(Some(v));
        }
        if let Some(v) = a.memory_reservation {
            m.set_reservation(Some(v));
        }
        if let Some(v) = a.memory_swap {
            m.set_swap(Some(v));
        }
        r.set_memory(Some(m));
    }
    if a.cpu_shares.is_some()
        || a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
    {
        let mut c = r.cpu().clone().unwrap_or_default();
        if let Some(v) = a.cpu_shares {
            c.set_shares(Some(v));
        }
        if let Some(v) = a.cpu_period {
            c.set_period(Some(v));
        }
        if let Some(v) = a.cpu_quota {
            c.set_quota(Some(v));
        }
        if let Some(v) = &a.cpuset_cpus {
            c.set_cpus(Some(v.clone()));
        }
        if let Some(v) = &a.cpuset_mems {
            c.set_mems(Some(v.clone()));
        }
        r.set_cpu(Some(c));
    }
    if let Some(v) = a.pids_limit {
        r.set_pids(Some(LinuxPidsBuilder::default().limit(v).build()?));
    }
    if let Some(v) = a.blkio_weight {
        let mut b = r.block_io().clone().unwrap_or_default();
        b.set_weight(Some(v));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

pub(super) fn list_table(states: &[nemosandbox::state::RuncState]) {
    let rows: Vec<[String; 6]> = states
        .iter()
        .map(|s| {
            [
                s.id.clone(),
                s.pid.to_string(),
                s.status.clone(),
                s.bundle.clone(),
                s.created.clone(),
                s.owner.clone(),
            ]
        })
        .collect();
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

pub(super) fn ps_table(pids: &[i32], ps_args: &[String]) -> Result<()> {
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("running ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow!("ps output has no PID column"))?;
    println!("{header}");
    for line in lines {
        let pid: Option<i32> = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

pub(super) fn dispatch_runtime(cli: &Cli, cmd: Cmd) -> Result<i32> {
    let standing = nemosandbox::privilege::current();
    if standing.rootless() {
        // An ordinary user has no namespace to set a container up in (rootless podman gives
        // its runtime one): refused before anything is made, the state root included.
        let creates = matches!(cmd, Cmd::Create(_) | Cmd::Run { .. });
        if creates && standing == nemosandbox::privilege::Privilege::User {
            bail!(nemosandbox::lifecycle::ROOTLESS_CONTAINERS);
        }
        nemosandbox::state::ensure_private_root(&cli.root)?;
    }
    let mut rt = Runtime::new(&cli.root, cli.systemd_cgroup);
    rt.policy = PolicyInputs {
        config: cli.config.clone(),
        flag_policy: cli.policy.clone(),
        flag_presets: cli.preset.clone(),
        audit_format: cli.audit_format,
        sandbox_paths: Default::default(),
    };
    match cmd {
        Cmd::Create(a) => {
            rt.create(&create_options(&a, true))?;
        }
        Cmd::Start { id } => rt.start(&id)?,
        Cmd::Run {
            create,
            detach,
            keep,
        } => return Ok(rt.run(&create_options(&create, detach), keep)?),
        Cmd::State { id } => print_json(&rt.state(&id)?)?,
        Cmd::Kill { all, id, signal } => {
            let sig = signals::parse_signal(signal.as_deref().unwrap_or("SIGTERM"))
                .map_err(|e| anyhow!(e))?;
            rt.kill(&id, sig, all)?;
        }
        Cmd::Delete { force, id } => rt.delete(&id, force)?,
        Cmd::Exec(a) => {
            if a.process.is_none() && a.command.is_empty() {
                bail!("exec: either --process or a command is required");
            }
            if a.tty && a.console_socket.is_none() && !a.detach {
                bail!("exec --tty without --console-socket is not supported; use --console-socket");
            }
            let (user, group) = match &a.user {
                Some(u) => {
                    let (uid, gid) = parse_user(u)?;
                    (Some(uid), gid)
                }
                None => (None, None),
            };
            let opts = ExecOptions {
                id: a.id.clone(),
                process: a.process.clone(),
                args: a.command.clone(),
                env: a.env.clone(),
                cwd: a.cwd.clone(),
                user,
                group,
                additional_gids: a.additional_gids.clone(),
                caps: a.cap.clone(),
                console_socket: a.console_socket.clone(),
                pid_file: a.pid_file.clone(),
                detach: a.detach,
                preserve_fds: a.preserve_fds,
                ignore_paused: a.ignore_paused,
                sub_cgroup: a.cgroup.clone(),
                no_new_privs: a.no_new_privs,
            };
            return Ok(rt.exec(&opts)?);
        }
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = rt.pids(&id)?;
            match format {
                Listing::Json => println!("{}", serde_json::to_string(&pids)?),
                Listing::Table => ps_table(&pids, &ps_args)?,
            }
        }
        Cmd::List { format, quiet } => {
            let states = rt.list()?;
            if quiet {
                states.iter().for_each(|s| println!("{}", s.id));
            } else {
                match format {
                    Listing::Json => println!("{}", serde_json::to_string(&states)?),
                    Listing::Table => list_table(&states),
                }
            }
        }
        Cmd::Pause { id } => rt.pause(&id)?,
        Cmd::Resume { id } => rt.resume(&id)?,
        Cmd::Events {
            interval,
            stats,
            id,
        } => {
            let every = parse_interval(&interval)?;
            if stats {
                println!("{}", rt.stats_event(&id)?);
            } else {
                // runc reports each OOM kill in the container's cgroup as an "oom" event.
                let oom_file = rt.oom_file(&id).ok().flatten();
                let oom_kills = || {
                    oom_file
                        .as_deref()
                        .map_or(0, nemosandbox::cgroups::oom_kills)
                };
                let mut ooms = oom_kills();
                loop {
                    let now = oom_kills();
                    if now > ooms {
                        println!("{}", serde_json::json!({"type": "oom", "id": id}));
                        ooms = now;
                    }
                    match rt.stats_event(&id) {
                        Ok(ev) => println!("{ev}"),
                        // The container ended: runc's events stops then too.
                        Err(_)
                            if !rt.root.exists(&id)
                                || rt.state(&id).is_ok_and(|s| s.status == "stopped") =>
                        {
                            break
                        }
                        Err(e) => return Err(e.into()),
                    }
                    std::thread::sleep(every);
                }
            }
        }
        Cmd::Update(a) => rt.update(&a.id, &update_resources(&a)?)?,
        Cmd::Spec {
            bundle,
            rootless_spec,
        } => info::write_spec_template(&bundle, rootless_spec)?,
        Cmd::Features => println!("{}", serde_json::to_string_pretty(&info::features())?),
        Cmd::Checkpoint { .. } | Cmd::Restore { .. } => {
            bail!("checkpoint/restore is not supported by nemosandbox")
        }
        Cmd::Policy(cmd) => return policy_cmd(&rt, cmd),
        Cmd::Install(_) | Cmd::Uninstall(_) | Cmd::NodeLabel(_) | Cmd::GenerateDocs { .. } => {
            unreachable!("host set-up commands are dispatched before the runtime")
        }
        Cmd::Audit {
            id,
            follow,
            since,
            kind,
            format,
        } => return audit_cmd(&rt, id, follow, since, kind, format),
        Cmd::Doctor { format } => {
            let checks = nemosandbox::doctor::checks();
            match format {
                Listing::Json => println!("{}", serde_json::to_string_pretty(&checks)?),
                Listing::Table => print!("{}", nemosandbox::doctor::table(&checks)),
            }
            let missing = nemosandbox::doctor::missing_required(&checks);
            if !missing.is_empty() {
                eprintln!(
                    "nemosandbox: this node lacks what the runtime requires: {}",
                    missing.join(", ")
                );
                return Ok(1);
            }
        }
        Cmd::Sandbox(a) => return sandbox_cmd(rt, a, &cli.root),
    }
    Ok(0)
}

/// `sandbox`: the policy with the caller's `--rw`/`--ro` paths, the host paths it makes
/// writable bound read-write, then `run` (through a terminal of its own from a terminal).
fn sandbox_cmd(mut rt: Runtime, a: SandboxArgs, root: &Path) -> Result<i32> {
    let here = std::env::current_dir().context("the current directory")?;
    let cwd = a
        .cwd
        .as_deref()
        .map(|c| no_link("--cwd", &here, c))
        .transpose()?;
    let rw =
        a.rw.iter()
            .map(|p| no_link("--rw", &here, p))
            .collect::<Result<Vec<_>>>()?;
    let mut ro =
        a.ro.iter()
            .map(|p| resolved("--ro", &here, p))
            .collect::<Result<Vec<_>>>()?;
    let inside = sandbox::sandbox_cwd(cwd.or(Some(here)));
    // Code a commit would run on the host later: git's hooks and configuration stay
    // read-only in a writable working directory.
    if std::fs::symlink_metadata(inside.join(".git")).is_ok_and(|m| m.is_dir()) {
        for p in [".git/hooks", ".git/config"] {
            if std::fs::symlink_metadata(inside.join(p)).is_ok() {
                ro.push(inside.join(p));
            }
        }
    }
    let text = |v: &[PathBuf]| v.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    rt.policy.sandbox_paths = nemosandbox::lifecycle::SandboxPaths {
        read_write: text(&rw),
        read_only: text(&ro),
    };
    let eff = rt.policy.effective(&Default::default())?;
    // Without network policies there is no egress to make: the sandbox gets a network
    // namespace of its own (nothing listens on the host's, no host abstract socket). Without
    // root it keeps that namespace even with them, and the guard relays what they allow.
    let egress = !eff.network_policies.is_empty();
    let id = sandbox::sandbox_id();
    let req = sandbox::Request {
        argv: a.command,
        cwd: Some(inside.clone()),
        clear_env: a.clear_env,
        env: a.env,
        terminal: console::caller_has_terminal(),
        user_map: sandbox::UserMap::for_caller(a.map_root),
    };
    if req.user_map.is_some() {
        if let Some(why) = sandbox::userns_blocker(|f| std::fs::read_to_string(f).ok()) {
            bail!("sandbox without root needs a user namespace: {why}");
        }
    }
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten();
    // Resolved like the working directory: a home reached through a link is still the home.
    let home = user
        .as_ref()
        .map(|u| std::fs::canonicalize(&u.dir).unwrap_or_else(|_| u.dir.clone()));
    let state_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let writable = sandbox::writable_binds(
        &eff.filesystem_policy,
        &inside,
        home.as_deref(),
        user.as_ref().map_or("", |u| u.name.as_str()),
        &rw,
        &state_root,
    )?;
    let bundle = sandbox::sandbox_bundle(&req, &writable, root, egress)
        .context("preparing the sandbox root")?;
    let mut opts = CreateOptions {
        id: id.clone(),
        detach: false,
        sandbox: true,
        nested_user: req.user_map.and_then(|m| m.nested()),
        ..Default::default()
    };
    if !req.terminal {
        return Ok(rt.run_from(&opts, bundle, false)?);
    }
    // Before any thread exists: a signal to the runtime must reach the forwarding wait, not
    // end the process by default on the relay's threads (leaving the container unwatched).
    nemosandbox::foreground::block_forwarded_signals()?;
    console::block_window_changes()?;
    let socket = console::ConsoleSocket::bind(&sandbox::console_socket_path(root, &id))?;
    opts.console_socket = Some(socket.path().to_path_buf());
    let listener = socket.listener()?;
    let raw = console::RawMode::enter()?;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let relayed =
                console::receive(&listener, Duration::from_secs(30)).and_then(console::relay);
            let _ = done.send(relayed);
        })
        .context("the console relay")?;
    let code = rt.run_from(&opts, bundle, false);
    if code.is_ok() {
        // The container's last output, up to the moment its terminal closed.
        if let Ok(Err(e)) = finished.recv_timeout(Duration::from_secs(2)) {
            tracing::warn!("sandbox terminal: {e}");
        }
    }
    drop(raw);
    drop(socket);
    Ok(code?)
}

/// `p` (relative to `here`) resolved on the host; it must exist.
fn resolved(flag: &str, here: &Path, p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(here.join(p)).with_context(|| format!("{flag} {}", p.display()))
}

/// Like `resolved`, for a path to make writable: one that is or passes through a symbolic
/// link is refused, since the link may have been planted by an earlier run to point at
/// `/etc` or a home directory.
fn no_link(flag: &str, here: &Path, p: &Path) -> Result<PathBuf> {
    let real = resolved(flag, here, p)?;
    let mut lexical = PathBuf::from("/");
    for c in here.join(p).components() {
        match c {
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            std::path::Component::Normal(n) => lexical.push(n),
            _ => {}
        }
    }
    if real != lexical {
        bail!(
            "{flag} {}: is or passes through a symbolic link (to {}); name the directory itself",
            p.display(),
            real.display()
        );
    }
    Ok(real)
}
