//! `nemosandbox audit`: read a container's (or the node's) audit events back.

use super::*;

/// `nemosandbox audit`.
pub(super) fn audit_cmd(
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
