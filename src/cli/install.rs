//! `install`, `uninstall`, `node-label` and `generate-docs`: setting the runtime up on a host.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use nemosandbox::install::{self, node_label, Change, Engine, Options, Restart};

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The engine to register with: docker, containerd, podman or crio
    engine: Engine,
    /// The runtime's name in the engine (`--runtime=NAME`, the RuntimeClass handler)
    #[arg(long, default_value = "nemosandbox")]
    name: String,
    /// The binary the engine runs, as the engine's host sees it (default: this binary)
    #[arg(long, value_name = "BIN")]
    path: Option<PathBuf>,
    /// The engine configuration to edit (default: /etc/docker/daemon.json,
    /// /etc/containerd/config.toml, /etc/containers/containers.conf.d/50-NAME.conf,
    /// /etc/crio/crio.conf.d/50-NAME.conf)
    #[arg(long = "engine-config", value_name = "FILE")]
    engine_config: Option<PathBuf>,
    /// containerd: the config version to write into a new or empty file (2 or 3; default 2,
    /// which containerd 2.x migrates)
    #[arg(long = "config-version", value_parser = clap::value_parser!(u8).range(2..=3))]
    config_version: Option<u8>,
    /// Print the change as a diff and write nothing
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Do not signal or restart the engine; print what to do instead
    #[arg(long = "no-restart")]
    no_restart: bool,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// The engine to take the runtime out of: docker, containerd, podman or crio
    engine: Engine,
    /// The runtime's name given to install
    #[arg(long, default_value = "nemosandbox")]
    name: String,
    /// The engine configuration install edited (default: the engine's)
    #[arg(long = "engine-config", value_name = "FILE")]
    engine_config: Option<PathBuf>,
    /// Print the change as a diff and write nothing
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Do not signal or restart the engine; print what to do instead
    #[arg(long = "no-restart")]
    no_restart: bool,
}

#[derive(Args, Debug)]
pub struct NodeLabelArgs {
    /// The node (default: $NODE_NAME, set from the pod's spec.nodeName)
    #[arg(long)]
    node: Option<String>,
    /// Remove the label instead of setting it
    #[arg(long)]
    remove: bool,
    /// The service account's token and ca.crt
    #[arg(long = "service-account", value_name = "DIR", default_value = node_label::SERVICE_ACCOUNT_DIR)]
    service_account: PathBuf,
}

/// Global flags that matter to install: they become the engine's runtime arguments.
pub struct Globals<'a> {
    pub root: &'a Path,
    pub presets: &'a [String],
    pub policy: Option<&'a str>,
}

fn runtime_args(g: &Globals) -> Vec<String> {
    let mut args = Vec::new();
    for p in g.presets {
        args.extend(["--preset".to_string(), p.clone()]);
    }
    if let Some(p) = g.policy {
        args.extend(["--policy".to_string(), p.to_string()]);
    }
    args
}

fn report(verb: &str, changes: &[Change], dry_run: bool) -> bool {
    let changed: Vec<&Change> = changes.iter().filter(|c| c.changed()).collect();
    for c in &changed {
        if dry_run {
            print!("{}", c.diff());
        } else {
            println!("nemosandbox {verb}: changed {}", c.path.display());
        }
    }
    !changed.is_empty()
}

pub fn install_cmd(a: InstallArgs, g: &Globals) -> Result<i32> {
    let path = match a.path {
        Some(p) => p,
        None => std::env::current_exe().context("locating this binary (pass --path)")?,
    };
    let opts = Options {
        name: a.name,
        path,
        runtime_args: runtime_args(g),
        state_root: g.root.to_path_buf(),
        config: a.engine_config,
        config_version: a.config_version,
    };
    let config = install::config_path(a.engine, &opts);
    let changes = install::plan_install(a.engine, &opts)?;
    if !report("install", &changes, a.dry_run) {
        println!(
            "nemosandbox install: {} already up to date",
            config.display()
        );
        return Ok(0);
    }
    if a.dry_run {
        return Ok(0);
    }
    install::apply(&changes)?;
    finish(a.engine, &config, a.no_restart)
}

pub fn uninstall_cmd(a: UninstallArgs) -> Result<i32> {
    let opts = Options {
        name: a.name.clone(),
        path: PathBuf::new(),
        runtime_args: vec![],
        state_root: PathBuf::new(),
        config: a.engine_config,
        config_version: None,
    };
    let config = install::config_path(a.engine, &opts);
    let changes = install::plan_uninstall(a.engine, &opts)?;
    if !report("uninstall", &changes, a.dry_run) {
        println!(
            "nemosandbox uninstall: {} has no {} entry",
            config.display(),
            a.name
        );
        return Ok(0);
    }
    if a.dry_run {
        return Ok(0);
    }
    install::apply(&changes)?;
    finish(a.engine, &config, a.no_restart)
}

fn finish(engine: Engine, config: &Path, no_restart: bool) -> Result<i32> {
    let restart = if no_restart {
        Restart::Never
    } else {
        Restart::Auto
    };
    println!("nemosandbox: {}", install::reload(engine, config, restart)?);
    Ok(0)
}

pub fn node_label_cmd(a: NodeLabelArgs) -> Result<i32> {
    let node = match a.node.or_else(|| std::env::var("NODE_NAME").ok()) {
        Some(n) => n,
        None => anyhow::bail!("node-label: no --node and no NODE_NAME"),
    };
    let api = node_label::ApiServer::in_cluster(Some(a.service_account))?;
    node_label::set(&api, &node, !a.remove)?;
    let verb = if a.remove { "removed" } else { "set" };
    println!(
        "nemosandbox node-label: {verb} {}=true on node {node}",
        node_label::LABEL
    );
    Ok(0)
}

/// Man pages (section 8, one per command) and bash/zsh/fish completions, from the command line
/// definition itself, for packages.
pub fn generate_docs(cmd: clap::Command, out: &Path) -> Result<i32> {
    let man = out.join("man");
    let comp = out.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
    }
    write_man(&cmd, "nemosandbox", &man)?;
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "nemosandbox.bash"),
        (Shell::Zsh, "_nemosandbox"),
        (Shell::Fish, "nemosandbox.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "nemosandbox", &mut buf);
        let p = comp.join(file);
        std::fs::write(&p, buf).with_context(|| p.display().to_string())?;
    }
    Ok(0)
}

fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .section("8")
        .manual("nemosandbox")
        .source(format!("nemosandbox {}", env!("CARGO_PKG_VERSION")))
        .render(&mut buf)?;
    let p = dir.join(format!("{name}.8"));
    std::fs::write(&p, buf).with_context(|| p.display().to_string())?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_man(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
