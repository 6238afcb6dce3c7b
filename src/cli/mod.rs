//! Command line, spelled as runc's so engines can call it in runc's place.

mod audit_cmd;
mod install;
mod policy_cmds;
mod verbs;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use nemosandbox::lifecycle::{CreateOptions, ExecOptions, PolicyInputs, Runtime};
use nemosandbox::logging::{self, LogFormat};
use nemosandbox::policy::{self, render, select::NodeConfig};
use nemosandbox::{info, sandbox, signals};

use audit_cmd::*;
use policy_cmds::*;
use verbs::*;

#[derive(Parser, Debug)]
#[command(
    name = "nemosandbox",
    disable_version_flag = true,
    about = "A runc-compatible OCI runtime that confines untrusted code"
)]
struct Cli {
    /// Root directory for container state (without root: $XDG_RUNTIME_DIR/nemosandbox)
    #[arg(long, global = true, default_value_os_t = nemosandbox::state::default_root())]
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
// Only the subcommand given is built: building every verb's arguments took most of the
// runtime's start-up.
#[command(defer = true)]
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
    Sandbox(SandboxArgs),
}

#[derive(clap::Args, Debug)]
struct SandboxArgs {
    /// Make this host path writable, as the policy's read_write would (repeatable)
    #[arg(long, value_name = "PATH")]
    rw: Vec<PathBuf>,
    /// Keep this path read-only, as the policy's read_only would (repeatable)
    #[arg(long, value_name = "PATH")]
    ro: Vec<PathBuf>,
    /// Pass the caller's KEY, or set KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Pass none of the caller's environment but what --env names (PATH gets a default)
    #[arg(long)]
    clear_env: bool,
    /// Working directory inside (default: the current one)
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Without root: be uid and gid 0 inside (the caller's ids outside); with root: ignored
    #[arg(long)]
    map_root: bool,
    /// The host command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
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
    let timed = nemosandbox::timing::span("cli-parse");
    let parsed = Cli::try_parse();
    drop(timed);
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let (log, format, debug) = (cli.log.clone(), cli.log_format, cli.debug);
    let timed = nemosandbox::timing::span("logging-init");
    let logging = logging::init(log.as_deref(), format, debug);
    drop(timed);
    if let Err(e) = logging {
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
mod tests;
