//! `nemosandbox policy`: show, validate, explain and update policies.

use super::*;

/// Annotations of a bundle's config.json (for `policy show/explain --bundle`).
pub(super) fn bundle_annotations(
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
pub(super) fn writable_binary_warnings(
    l: &policy::Loaded,
    file: &std::path::Path,
) -> Vec<policy::Diagnostic> {
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

pub(super) fn policy_cmd(rt: &Runtime, cmd: PolicyCmd) -> Result<i32> {
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
pub(super) fn explain_connect(
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
pub(super) fn explain_exec(rt: &Runtime, id: &str, line: &str) -> Result<i32> {
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
