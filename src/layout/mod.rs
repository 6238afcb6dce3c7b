//! Filesystem layout: the effective policy's glob → `rwx` map becomes a mount plan
//! (applied by rewriting the spec's root and mounts in the state directory) and the Landlock
//! grants the in-container stage installs.

pub mod bwrap;
pub mod plan;
pub mod rules;
pub mod tree;

#[cfg(test)]
mod tests;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder, Spec};

pub use plan::{Action, Base, Grant, Plan, Step};
pub use rules::{Rights, RuleSet};
pub use tree::ContainerTree;

use crate::path_error::io_err;
use crate::policy::merge::EffectiveFs;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Rule(#[from] rules::RuleError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
}

/// A network policy's binary on a path the filesystem rules make writable: the container
/// could replace it (the guard then refuses it), and a script entry there never matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableBinary {
    /// `network_policies.KEY.binaries[I].path`
    pub field: String,
    pub path: String,
    /// The rule that grants `w` there.
    pub rule: String,
}

/// Every binary of `eff`'s network policies that lies under a writable path (the working
/// directory unknown: only the policy's own rules count).
pub fn writable_binaries(eff: &crate::policy::merge::Effective) -> Vec<WritableBinary> {
    let mut fs = eff.filesystem_policy.clone();
    fs.include_workdir = false;
    let Ok(rules) = RuleSet::from_policy(&fs, Path::new("/"), None, "") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, net) in &eff.network_policies {
        for (i, b) in net.policy.binaries.iter().enumerate() {
            let d = rules.decide(Path::new(&b.path));
            if d.rights.has(Rights::W) {
                out.push(WritableBinary {
                    field: format!("network_policies.{key}.binaries[{i}].path"),
                    path: b.path.clone(),
                    rule: d.by.join(", "),
                });
            }
        }
    }
    out
}

impl WritableBinary {
    pub fn message(&self) -> String {
        format!(
            "{} is writable in the container ({}): it could be replaced; the network guard \
             refuses a binary changed after create, and a script entry there never matches",
            self.path, self.rule
        )
    }
}

/// Plan the layout of a spec whose root and mounts are final (after the base rewrite).
pub fn plan_for_spec(
    fs: &EffectiveFs,
    frozen: &[String],
    spec: &Spec,
    home: Option<&Path>,
    user: &str,
) -> Result<Plan, LayoutError> {
    let cwd = spec
        .process()
        .as_ref()
        .map(|p| p.cwd().clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut rules = RuleSet::from_policy(fs, &cwd, home, user)?;
    rules.freeze(frozen)?;
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let tree = ContainerTree::new(&rootfs, spec.mounts().as_deref().unwrap_or_default());
    Ok(plan::plan(&rules, &tree)?)
}

fn mount(dest: &Path, typ: &str, source: &Path, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .expect("all mount fields set")
}

/// Rewrite `spec` to carry `plan`: read-only root (a skeleton in `own` for the restrictive
/// base), the plan's mounts placed after the spec mounts they sit on and before those beneath
/// them, masks of special filesystems as `maskedPaths`.
pub fn apply(
    plan: &Plan,
    spec: &mut Spec,
    own: &crate::container_dir::ContainerDir,
) -> Result<(), LayoutError> {
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_readonly(Some(!plan.root_writable));
    if plan.base == Base::Restrictive {
        let skeleton = own.root_skeleton();
        fs::create_dir(&skeleton).map_err(io_err(&skeleton))?;
        fs::set_permissions(&skeleton, fs::Permissions::from_mode(0o755))
            .map_err(io_err(&skeleton))?;
        for s in &plan.steps {
            if let Action::Symlink { target } = &s.action {
                let at = skeleton.join(s.dest.strip_prefix("/").unwrap_or(&s.dest));
                std::os::unix::fs::symlink(target, &at).map_err(io_err(&at))?;
            }
        }
        root.set_path(skeleton);
    }
    spec.set_root(Some(root));

    let empty = own.empty_file();
    if plan.steps.iter().any(|s| s.action == Action::MaskFile) {
        fs::write(&empty, b"").map_err(io_err(&empty))?;
        fs::set_permissions(&empty, fs::Permissions::from_mode(0o400)).map_err(io_err(&empty))?;
    }

    let spec_mounts = spec.mounts().clone().unwrap_or_default();
    let mut placed: Vec<(usize, Mount)> = Vec::new();
    let mut masked = Vec::new();
    for s in &plan.steps {
        let m = match &s.action {
            Action::BindRw { source } => mount(&s.dest, "bind", source, &["rbind", "rw"]),
            Action::BindRo { source } => mount(&s.dest, "bind", source, &["rbind", "ro"]),
            Action::MaskDir => mount(
                &s.dest,
                "tmpfs",
                Path::new("tmpfs"),
                &["ro", "nosuid", "nodev", "noexec", "mode=755", "size=4k"],
            ),
            Action::MaskFile => mount(
                &s.dest,
                "bind",
                &empty,
                &["bind", "ro", "nosuid", "nodev", "noexec"],
            ),
            Action::Tmpfs => mount(
                &s.dest,
                "tmpfs",
                Path::new("tmpfs"),
                &["nosuid", "nodev", "mode=1777"],
            ),
            Action::MaskSpecial => {
                masked.push(s.dest.to_string_lossy().into_owned());
                continue;
            }
            Action::Symlink { .. } => continue,
        };
        // After the last spec mount it sits on, so it is not hidden by it; before the spec
        // mounts beneath it, so it does not hide them.
        let pos = spec_mounts
            .iter()
            .rposition(|sm| s.dest.starts_with(sm.destination()))
            .map_or(0, |i| i + 1);
        placed.push((pos, m));
    }
    let mut mounts = Vec::with_capacity(spec_mounts.len() + placed.len());
    for (i, sm) in spec_mounts.into_iter().enumerate() {
        mounts.extend(
            placed
                .iter()
                .filter(|(p, _)| *p == i)
                .map(|(_, m)| m.clone()),
        );
        mounts.push(sm);
    }
    let n = spec.mounts().as_ref().map_or(0, |m| m.len());
    mounts.extend(
        placed
            .iter()
            .filter(|(p, _)| *p >= n)
            .map(|(_, m)| m.clone()),
    );
    spec.set_mounts(Some(mounts));

    if !masked.is_empty() {
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut paths = linux.masked_paths().clone().unwrap_or_default();
        paths.extend(masked);
        linux.set_masked_paths(Some(paths));
        spec.set_linux(Some(linux));
    }
    Ok(())
}
