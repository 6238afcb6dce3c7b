//! Command line, spelled as runc's so engines can call it in runc's place.

mod install;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use nemosandbox::lifecycle::{CreateOptions, ExecOptions, PolicyInputs, Runtime};
use nemosandbox::logging::{self, LogFormat};
use nemosandbox::policy::{self, render, select::NodeConfig};
use nemosandbox::{info, sandbox, signals};

#[derive(Parser, Debug)]
#[command(
    name = "nemosandbox",
    disable_version_flag = true,
    about = "A runc-compatible OCI runtime that confines untrusted code"
)]
struct Cli {
    /// Root directory for container state
    #[arg(long, global = true, default_value = "/run/nemosandbox")]
    root: PathBuf,
    /// Log file (appended to)
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: LogFormat,
    /// Debug logging
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd to manage cgroups (fails on a host without systemd)
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility: true, false or auto
    #[arg(long, global = true)]
    rootless: Option<String>,
    /// Accepted for runc compatibility (checkpointing is not supported)
    #[arg(long, global = true)]
    criu: Option<String>,
    /// Node configuration file
    #[arg(long, global = true, default_value = "/etc/nemosandbox/config.yaml")]
    config: PathBuf,
    /// Preset to add to every container's policy (repeatable)
    #[arg(long, global = true)]
    preset: Vec<String>,
    /// Baseline policy, by name or file
    #[arg(long, global = true)]
    policy: Option<String>,
    /// Shape of the node audit sink's lines for containers created now: json or ocsf
    /// (overrides audit.format in the node configuration)
    #[arg(long = "audit-format", global = true)]
    audit_format: Option<nemosandbox::audit::Format>,
    /// Print the version
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// `--format` of the listing commands (ps, list, doctor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Listing {
    Table,
    Json,
}

/// `--format` of the reports (audit, policy explain).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Report {
    Text,
    Json,
}

/// `--format` of `policy show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PolicyFormat {
    Yaml,
    Json,
}

#[derive(Args, Debug, Clone)]
struct CreateArgs {
    /// Path to the bundle directory
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket to receive the pty master
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// File to write the init pid to
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Do not use pivot_root
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for runc compatibility
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass N extra fds (3…3+N-1) to the container
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: i32,
    /// The container's id (letters, digits, `_`, `-`, `.`)
    id: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a container
    Create(CreateArgs),
    /// Start a created container
    Start {
        /// The container
        id: String,
    },
    /// Create and start a container
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Detach from the container's process
        #[arg(short = 'd', long)]
        detach: bool,
        /// Do not delete the container after it exits
        #[arg(long)]
        keep: bool,
    },
    /// Print the state of a container
    State {
        /// The container
        id: String,
    },
    /// Send a signal to the container's init process
    Kill {
        /// Send the signal to all processes of the container
        #[arg(short = 'a', long)]
        all: bool,
        /// The container
        id: String,
        /// Signal name or number (default SIGTERM); real-time signals as a number up to
        /// SIGRTMAX or as RTMIN+n / RTMAX-n
        signal: Option<String>,
    },
    /// Delete a container
    Delete {
        /// Kill the container if it still runs
        #[arg(short = 'f', long)]
        force: bool,
        /// The container
        id: String,
    },
    /// Run a new process inside a running container
    Exec(Box<ExecArgs>),
    /// List the processes of a container
    Ps {
        /// table (ps(1) output) or json (the pids)
        #[arg(short = 'f', long, value_enum, default_value_t = Listing::Table)]
        format: Listing,
        /// The container
        id: String,
        /// Arguments for ps(1)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers
    List {
        /// table or json
        #[arg(short = 'f', long, value_enum, default_value_t = Listing::Table)]
        format: Listing,
        /// Print the ids only
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Pause all processes of a container
    Pause {
        /// The container
        id: String,
    },
    /// Resume a paused container
    Resume {
        /// The container
        id: String,
    },
    /// Container statistics
    Events {
        /// Interval between samples, as a Go duration (5s, 500ms, 1m30s)
        #[arg(long, default_value = "5s")]
        interval: String,
        /// Print one sample and exit
        #[arg(long)]
        stats: bool,
        /// The container
        id: String,
    },
    /// Update resource limits
    Update(Box<UpdateArgs>),
    /// Write a default config.json
    Spec {
        /// The bundle directory to write config.json into
        #[arg(short = 'b', long, default_value = ".")]
        bundle: PathBuf,
        /// A configuration for a rootless container
        #[arg(long = "rootless")]
        rootless_spec: bool,
    },
    /// Print the OCI features document
    Features,
    /// Not supported
    Checkpoint {
        /// Ignored
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Not supported
    Restore {
        /// Ignored
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Kernel features relevant to enforcement, and what degrades without them; exits 1 when
    /// a required one (seccomp user notification, pidfd_getfd, cgroup bpf) is missing
    Doctor {
        /// table or json
        #[arg(long, value_enum, default_value_t = Listing::Table)]
        format: Listing,
    },
    /// Policy tools: lint, list, show, explain, schema, update
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Audit events: the node sink (kept after delete), or a container's own file while it
    /// exists
    Audit {
        /// Only this container's events (read from its own file while it exists)
        id: Option<String>,
        /// Keep printing new events as they come, across rotations of the sink
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only events newer than this long ago: 30s, 10m, 1h30m, 2days
        #[arg(long)]
        since: Option<String>,
        /// Only events of this kind (repeatable): network, http, dns, exec, fs, symlink, policy
        #[arg(long)]
        kind: Vec<nemosandbox::audit::Kind>,
        /// text (one readable line per event) or json (the events as written)
        #[arg(long, value_enum, default_value_t = Report::Text)]
        format: Report,
    },
    /// Register nemosandbox with an engine (docker, containerd, podman, crio) in its own
    /// configuration; the global --preset/--policy become docker's runtime arguments
    Install(install::InstallArgs),
    /// Take out exactly what install wrote
    Uninstall(install::UninstallArgs),
    /// Label this Kubernetes node nemosandbox.dev/installed=true (or remove the label) with the
    /// pod's service account
    NodeLabel(install::NodeLabelArgs),
    /// Write man pages and shell completions into a directory (for packages)
    #[command(hide = true)]
    GenerateDocs {
        /// The directory (man/ and completions/ are made in it)
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a host command in a fresh sandbox (host root read-only), no image needed
    Sandbox {
        /// The host command and its arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Validate policy files; exit 1 on errors (warnings keep exit 0)
    Lint {
        /// Policy files (YAML)
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Built-in and installed policies with their descriptions
    List,
    /// The effective merged policy, each entry marked with its source
    Show {
        /// Take annotations from this bundle's config.json
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// yaml or json
        #[arg(long, value_enum, default_value_t = PolicyFormat::Yaml)]
        format: PolicyFormat,
    },
    /// What will be enforced for the effective policy; with --connect or --exec, what the
    /// guard or the exec gate would decide for one request, and why
    #[command(group(clap::ArgGroup::new("target").args(["bundle", "id"])))]
    Explain {
        /// Take annotations (and, for --connect, the image) from this bundle
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// A running container (its live policy and root)
        id: Option<String>,
        /// Decide a connection to HOST:PORT (a name or an address)
        #[arg(long, value_name = "HOST:PORT", requires = "exe")]
        connect: Option<String>,
        /// The executable making the connection, as a path inside the container
        #[arg(long, value_name = "PATH")]
        exe: Option<PathBuf>,
        /// For a name: the address its resolver would answer (default: what this host resolves)
        #[arg(long, value_name = "IP")]
        address: Option<std::net::IpAddr>,
        /// Decide an exec of this command line (run as `sh -c LINE`) in the running container ID
        #[arg(long, value_name = "LINE", requires = "id", conflicts_with = "connect")]
        exec: Option<String>,
        /// text or json (for --connect)
        #[arg(long, value_enum, default_value_t = Report::Text)]
        format: Report,
    },
    /// JSON Schema of the policy format
    Schema,
    /// Change a running container's network policies: add or remove a preset
    #[command(group(clap::ArgGroup::new("change").required(true).args(["add_preset", "remove"])))]
    Update {
        /// The running container
        id: String,
        /// Add this preset's network policies (name or file)
        // Its own id: the global `--preset` (presets for new containers) is another argument.
        #[arg(long = "preset", id = "add_preset")]
        add_preset: Option<String>,
        /// Remove the network policies a preset brought
        #[arg(long)]
        remove: Option<String>,
    },
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// process.json describing the process
    #[arg(short = 'p', long)]
    process: Option<PathBuf>,
    /// Do not wait for the process; print nothing of it
    #[arg(short = 'd', long)]
    detach: bool,
    /// File to write the process's pid to
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket to receive the pty master (with --tty)
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Give the process a pseudo-terminal
    #[arg(short = 't', long)]
    tty: bool,
    /// Working directory in the container (default /)
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// KEY=VALUE to set in the process's environment (repeatable)
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// uid[:gid] to run as (the policy's run_as_user wins)
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Additional group ids (repeatable)
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// Capability to add, within the container's bounding set (repeatable)
    #[arg(short = 'c', long = "cap")]
    cap: Vec<String>,
    /// Set no_new_privs (confined containers always have it)
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    /// Accepted for runc compatibility (SELinux labels are not applied)
    #[arg(long = "process-label")]
    process_label: Option<String>,
    /// Accepted for runc compatibility (AppArmor profiles are not applied)
    #[arg(long)]
    apparmor: Option<String>,
    /// Pass N extra fds (3…3+N-1) to the process
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: i32,
    /// Exec even when the container is paused
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    /// Sub-cgroup of the container's to run the process in
    #[arg(long)]
    cgroup: Option<String>,
    /// The container
    id: String,
    /// The command and its arguments (unless --process gives them)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
struct UpdateArgs {
    /// JSON LinuxResources file, or - for stdin
    #[arg(short = 'r', long)]
    resources: Option<String>,
    /// Memory limit in bytes
    #[arg(long)]
    memory: Option<i64>,
    /// Memory soft limit in bytes
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<i64>,
    /// Memory plus swap limit in bytes (-1: unlimited)
    #[arg(long = "memory-swap")]
    memory_swap: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(long = "cpu-shares", alias = "cpu-share")]
    cpu_shares: Option<u64>,
    /// CPU CFS period in microseconds
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds
    #[arg(long = "cpu-quota")]
    cpu_quota: Option<i64>,
    /// CPUs the container may use (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// Memory nodes the container may use
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Maximum number of processes (-1: unlimited)
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
    /// Block IO weight (10-1000)
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    /// The container
    id: String,
}

/// Go-style duration: `5s`, `500ms`, `1m`, `1h`, or bare seconds.
/// A Go duration as runc takes it (`5s`, `500ms`, `1m30s`, `1h`), through humantime; a bare
/// number is seconds.
fn parse_interval(s: &str) -> Result<std::time::Duration> {
    let text = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        format!("{s}s")
    } else {
        s.to_string()
    };
    let d = humantime::parse_duration(&text).map_err(|e| anyhow!("invalid interval {s:?}: {e}"))?;
    if d.is_zero() {
        bail!("invalid interval {s:?}: must be positive");
    }
    Ok(d)
}

fn parse_user(s: &str) -> Result<(u32, Option<u32>)> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = u
        .parse()
        .with_context(|| format!("--user {s:?}: uid must be numeric"))?;
    let gid = g
        .map(|g| {
            g.parse()
                .with_context(|| format!("--user {s:?}: gid must be numeric"))
        })
        .transpose()?;
    Ok((uid, gid))
}

fn create_options(a: &CreateArgs, detach: bool) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
        detach,
        sandbox: false,
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn read_resources(src: &str) -> Result<oci_spec::runtime::LinuxResources> {
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

fn update_resources(a: &UpdateArgs) -> Result<oci_spec::runtime::LinuxResources> {
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

fn list_table(states: &[nemosandbox::state::RuncState]) {
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

fn ps_table(pids: &[i32], ps_args: &[String]) -> Result<()> {
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

fn dispatch(mut cli: Cli) -> Result<i32> {
    if cli.version {
        print!("{}", info::version_text());
        return Ok(0);
    }
    let Some(cmd) = cli.cmd.take() else {
        bail!("no command given; see --help");
    };
    let globals = install::Globals {
        root: &cli.root,
        presets: &cli.preset,
        policy: cli.policy.as_deref(),
    };
    match cmd {
        Cmd::Install(a) => install::install_cmd(a, &globals),
        Cmd::Uninstall(a) => install::uninstall_cmd(a),
        Cmd::NodeLabel(a) => install::node_label_cmd(a),
        Cmd::GenerateDocs { out } => {
            install::generate_docs(<Cli as clap::CommandFactory>::command(), &out)
        }
        cmd => dispatch_runtime(&cli, cmd),
    }
}

fn dispatch_runtime(cli: &Cli, cmd: Cmd) -> Result<i32> {
    let mut rt = Runtime::new(&cli.root, cli.systemd_cgroup);
    rt.policy = PolicyInputs {
        config: cli.config.clone(),
        flag_policy: cli.policy.clone(),
        flag_presets: cli.preset.clone(),
        audit_format: cli.audit_format,
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
        Cmd::Sandbox { command } => {
            let id = sandbox::sandbox_id();
            let opts = CreateOptions {
                id,
                detach: false,
                sandbox: true,
                ..Default::default()
            };
            // Without network policies there is no egress to make: the sandbox gets a network
            // namespace of its own (nothing listens on the host's, no host abstract socket).
            let egress = !rt
                .policy
                .effective(&Default::default())?
                .network_policies
                .is_empty();
            let bundle = sandbox::sandbox_bundle(command, &cli.root, egress)
                .context("preparing the sandbox root")?;
            return Ok(rt.run_from(&opts, bundle, false)?);
        }
    }
    Ok(0)
}

/// Annotations of a bundle's config.json (for `policy show/explain --bundle`).
fn bundle_annotations(
    bundle: Option<&PathBuf>,
) -> Result<std::collections::HashMap<String, String>> {
    match bundle {
        None => Ok(Default::default()),
        Some(b) => {
            let src = nemosandbox::bundle::SourceBundle::load(b)?;
            Ok(src.spec.annotations().clone().unwrap_or_default())
        }
    }
}

/// Binaries of a document's network policies that its filesystem rules (or, for a preset, the
/// built-in default's) leave writable.
fn writable_binary_warnings(l: &policy::Loaded, file: &std::path::Path) -> Vec<policy::Diagnostic> {
    use nemosandbox::policy::{builtin, merge};
    let eff = if l.is_preset() {
        match builtin::load_builtin_named_checked("default") {
            Some(base) => merge::merge(&base, std::slice::from_ref(l), None),
            _ => return Vec::new(),
        }
    } else {
        merge::merge(l, &[], None)
    };
    let Ok(eff) = eff else { return Vec::new() };
    let text = std::fs::read_to_string(file).unwrap_or_default();
    nemosandbox::layout::writable_binaries(&eff)
        .into_iter()
        .map(|w| policy::warning_at(&l.origin, &text, &w.field, w.message()))
        .collect()
}

fn policy_cmd(rt: &Runtime, cmd: PolicyCmd) -> Result<i32> {
    match cmd {
        PolicyCmd::Lint { files } => {
            let mut failed = false;
            for f in &files {
                match policy::load_file(f) {
                    Ok(l) => {
                        l.warnings.iter().for_each(|w| println!("{w}"));
                        for w in writable_binary_warnings(&l, f) {
                            println!("{w}");
                        }
                    }
                    Err(e) => {
                        failed = true;
                        println!("{e}");
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        PolicyCmd::List => {
            let node = NodeConfig::load(&rt.policy.config).map_err(|e| anyhow!("{e}"))?;
            let lib = node.library();
            println!("{:<20} {:<9} {:<40} DESCRIPTION", "NAME", "KIND", "SOURCE");
            for name in lib.names() {
                match lib.get(&name) {
                    Some(Ok(l)) => {
                        let kind = if l.is_preset() { "preset" } else { "baseline" };
                        let desc = l
                            .doc
                            .preset
                            .as_ref()
                            .and_then(|p| p.description.clone())
                            .unwrap_or_default();
                        println!("{name:<20} {kind:<9} {:<40} {desc}", l.origin);
                    }
                    Some(Err(e)) => println!("{name:<20} {:<9} {e}", "invalid"),
                    None => {}
                }
            }
            Ok(0)
        }
        PolicyCmd::Show { bundle, format } => {
            let eff = rt.policy.effective(&bundle_annotations(bundle.as_ref())?)?;
            match format {
                PolicyFormat::Json => println!("{}", serde_json::to_string_pretty(&eff)?),
                PolicyFormat::Yaml => print!("{}", render::yaml_text(&eff)),
            }
            Ok(0)
        }
        PolicyCmd::Explain {
            bundle,
            id,
            connect,
            exe,
            address,
            exec,
            format,
        } => {
            if let Some(target) = connect {
                let exe = exe.ok_or_else(|| anyhow!("--connect needs --exe"))?;
                return explain_connect(
                    rt,
                    bundle.as_ref(),
                    id.as_deref(),
                    &target,
                    exe,
                    address,
                    format,
                );
            }
            if let Some(line) = exec {
                let id = id.ok_or_else(|| anyhow!("--exec needs a running container ID"))?;
                return explain_exec(rt, &id, &line);
            }
            if id.is_some() {
                bail!("a container ID goes with --connect or --exec");
            }
            let eff = rt.policy.effective(&bundle_annotations(bundle.as_ref())?)?;
            print!("{}", render::explain(&eff));
            for w in nemosandbox::layout::writable_binaries(&eff) {
                println!("  warning: {}: {}", w.field, w.message());
            }
            if let Some(b) = bundle.as_ref().filter(|_| !eff.unconfined) {
                let src = nemosandbox::bundle::SourceBundle::load(b)?;
                let plan = nemosandbox::confine::prepare::plan_only(&src, &eff)?;
                println!("\nfilesystem plan for {}:", src.dir.display());
                print!("{}", nemosandbox::layout::bwrap::describe(&plan));
            }
            Ok(0)
        }
        PolicyCmd::Schema => {
            print!("{}", render::schema_json());
            Ok(0)
        }
        PolicyCmd::Update {
            id,
            add_preset,
            remove,
        } => {
            use nemosandbox::lifecycle::policy_update::Change;
            let change = match (add_preset, remove) {
                (Some(p), None) => Change::Add(p),
                (None, Some(r)) => Change::Remove(r),
                _ => bail!("give exactly one of --preset and --remove"),
            };
            let out = rt.policy_update(&id, &change)?;
            for n in &out.notes {
                eprintln!("note: {n}");
            }
            println!(
                "container {id}: network policy generation {} ({}), sha256 {}",
                out.generation,
                out.sources.join(","),
                out.sha256
            );
            Ok(0)
        }
    }
}

/// `policy explain --connect`.
fn explain_connect(
    rt: &Runtime,
    bundle: Option<&PathBuf>,
    id: Option<&str>,
    target: &str,
    exe: PathBuf,
    address: Option<std::net::IpAddr>,
    format: Report,
) -> Result<i32> {
    use nemosandbox::netguard::explain;
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--connect {target:?}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("--connect {target:?}: {port:?} is not a port"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let (root, eff) = match (id, bundle) {
        (Some(id), _) => rt.live_policy(id)?,
        (None, b) => {
            let eff = rt.policy.effective(&bundle_annotations(b)?)?;
            let root = match b {
                Some(b) => nemosandbox::bundle::SourceBundle::load(b)?.rootfs(),
                None => PathBuf::from("/"),
            };
            (root, eff)
        }
    };
    let q = explain::Query {
        host,
        port,
        exe,
        address,
    };
    let answer = explain::explain(&root, &eff.network_policies, &q);
    match format {
        Report::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Report::Text => print!("{}", explain::render(&answer)),
    }
    Ok(0)
}

/// `policy explain --exec LINE ID`.
fn explain_exec(rt: &Runtime, id: &str, line: &str) -> Result<i32> {
    match rt.explain_exec(id, line)? {
        None => println!("allowed: container {id} has no exec policy (every exec is allowed)"),
        Some(Ok(files)) => {
            println!("allowed: sh -c {line:?}");
            println!("  by: exec_policy");
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!("  may execute: {}", files.join(", "));
        }
        Some(Err(d)) => {
            println!("denied: sh -c {line:?}");
            println!("  by: exec_policy");
            println!("  segment: {}", d.segment);
            println!("  reason: {}", d.reason);
        }
    }
    Ok(0)
}

/// `nemosandbox audit`.
fn audit_cmd(
    rt: &Runtime,
    id: Option<String>,
    follow: bool,
    since: Option<String>,
    kinds: Vec<nemosandbox::audit::Kind>,
    format: Report,
) -> Result<i32> {
    use nemosandbox::audit::{self, read};
    let json = format == Report::Json;
    let since = since
        .map(|s| {
            humantime::parse_duration(&s)
                .map_err(|e| anyhow!("--since {s:?}: {e} (like 30s, 10m, 1h30m)"))
                .and_then(|d| {
                    chrono::Duration::from_std(d).map_err(|_| anyhow!("--since {s:?}: too long"))
                })
                .map(|d| chrono::Utc::now() - d)
        })
        .transpose()?;
    if let Some(id) = &id {
        nemosandbox::state::validate_id(id)?;
    }
    let filter = read::Filter {
        container: id.clone(),
        since,
        kinds,
    };
    let node = NodeConfig::load(&rt.policy.config).map_err(|e| anyhow!("{e}"))?;
    let own_file = id
        .as_ref()
        .map(|id| rt.root.container_dir(id).join(audit::CONTAINER_FILE))
        .filter(|f| f.exists());
    // A live container's own file has all its events (the sink may have missed some); once
    // it is gone, the node sink has them.
    let (history, current): (Vec<PathBuf>, PathBuf) = match own_file {
        Some(f) => (Vec::new(), f),
        None if node.audit.enabled => {
            let mut files = node.audit.files();
            let current = files.pop().unwrap_or_else(|| node.audit.path.clone());
            (files, current)
        }
        None => match &id {
            Some(id) => bail!(
                "container {id:?} does not exist and the node audit sink is disabled (audit.enabled in {})",
                rt.policy.config.display()
            ),
            None => bail!(
                "the node audit sink is disabled (audit.enabled in {})",
                rt.policy.config.display()
            ),
        },
    };
    let mut stdout = std::io::stdout().lock();
    let mut print = |rec: &audit::Record| -> bool {
        use std::io::Write;
        let line = if json {
            serde_json::to_string(rec).unwrap_or_default()
        } else {
            read::text(rec)
        };
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_ok()
    };
    // Following from now on skips what is already there, unless --since asks for it.
    if !follow || filter.since.is_some() {
        read::read_all(&history, &filter, &mut |r| {
            print(r);
        });
    }
    if follow {
        read::follow(&current, filter.since.is_some(), &filter, &mut print);
    } else {
        read::read_all(&[current], &filter, &mut |r| {
            print(r);
        });
    }
    Ok(0)
}

/// The error chain on one line, without the repetitions libcontainer's nested errors carry.
fn error_text(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let (log, format, debug) = (cli.log.clone(), cli.log_format, cli.debug);
    if let Err(e) = logging::init(log.as_deref(), format, debug) {
        eprintln!(
            "opening log {}: {e}",
            log.as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        return 1;
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = error_text(&e);
            logging::log_error(log.as_deref(), format, &msg);
            eprintln!("nemosandbox: {msg}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["nemosandbox", "policy", "update", "c1", "--preset", "npm"])
            .unwrap();
        assert!(
            cli.preset.is_empty(),
            "the update's preset is not a global one"
        );
        assert!(matches!(
            cli.cmd,
            Some(Cmd::Policy(PolicyCmd::Update { add_preset: Some(ref p), remove: None, .. })) if p == "npm"
        ));
        assert!(Cli::try_parse_from([
            "nemosandbox",
            "policy",
            "update",
            "c1",
            "--preset",
            "a",
            "--remove",
            "b"
        ])
        .is_err());
    }

    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(
            &<Cli as clap::CommandFactory>::command(),
            "nemosandbox",
            &mut missing,
        );
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn intervals_parse_like_go_durations() {
        assert_eq!(parse_interval("5s").unwrap().as_secs(), 5);
        assert_eq!(parse_interval("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_interval("2").unwrap().as_secs(), 2);
        assert_eq!(parse_interval("1m30s").unwrap().as_secs(), 90);
        assert_eq!(parse_interval("1h").unwrap().as_secs(), 3600);
        assert!(parse_interval("5x").is_err());
        assert!(parse_interval("").is_err());
        assert!(parse_interval("0s").is_err());
    }

    #[test]
    fn runc_spellings_parse() {
        for argv in [
            &[
                "nemosandbox",
                "--root",
                "/r",
                "--log",
                "/l",
                "--log-format",
                "json",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "c1",
            ][..],
            &["nemosandbox", "kill", "c1"],
            &["nemosandbox", "kill", "--all", "c1", "KILL"],
            &["nemosandbox", "events", "--interval=5s", "c1"],
            &[
                "nemosandbox",
                "exec",
                "--process",
                "/p.json",
                "--detach",
                "--pid-file",
                "/pid",
                "c1",
            ],
            &["nemosandbox", "exec", "-t", "c1", "sh", "-c", "echo hi"],
            &["nemosandbox", "ps", "--format", "json", "c1"],
            &["nemosandbox", "update", "--resources", "-", "c1"],
            &[
                "nemosandbox",
                "--rootless",
                "false",
                "run",
                "-d",
                "--bundle",
                "/b",
                "c1",
            ],
            &["nemosandbox", "sandbox", "--", "ls", "-la"],
            &["nemosandbox", "--preset", "npm", "sandbox", "--", "true"],
            &["nemosandbox", "policy", "lint", "a.yaml", "b.yaml"],
            &[
                "nemosandbox",
                "--preset",
                "npm",
                "--preset",
                "pypi",
                "policy",
                "show",
                "--format",
                "json",
            ],
            &["nemosandbox", "policy", "explain", "--bundle", "/b"],
            &["nemosandbox", "checkpoint", "--image-path", "/x", "c1"],
        ] {
            Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
    }
}
