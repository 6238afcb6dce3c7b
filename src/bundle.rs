//! The spec-rewrite stage: read the engine's bundle, produce the spec that will really run.
//!
//! The user's `config.json` and rootfs are never written. The rewritten spec lives in the
//! runtime's own state directory and is what libcontainer (and every later `exec`) loads, so
//! every policy stage that changes mounts, process or seccomp does it here, once, at `create`.

use crate::container_dir::ContainerDir;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, Spec};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {bundle}: {source}")]
    Dir { bundle: PathBuf, source: io::Error },
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}:{line}:{column}: invalid config.json: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    #[error("{path}: field {field}: {msg}")]
    Field {
        path: PathBuf,
        field: &'static str,
        msg: String,
    },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The engine's bundle as read, before any rewrite.
#[derive(Debug, Clone)]
pub struct SourceBundle {
    pub dir: PathBuf,
    pub spec: Spec,
}

impl SourceBundle {
    /// Read and check `config.json`; every error names the file and the line/column or field.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let dir = fs::canonicalize(dir).map_err(|source| BundleError::Dir {
            bundle: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("config.json");
        let spec: Spec = read_json(&path)?;
        check_spec(&path, &spec)?;
        Ok(SourceBundle { dir, spec })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The image's root, absolute (a relative `root.path` is the bundle's).
    pub fn rootfs(&self) -> PathBuf {
        let root = self
            .spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        self.dir.join(root)
    }
}

fn field_err(path: &Path, field: &'static str, msg: impl Into<String>) -> BundleError {
    BundleError::Field {
        path: path.to_path_buf(),
        field,
        msg: msg.into(),
    }
}

/// Checks libcontainer would otherwise report late or cryptically.
fn check_spec(path: &Path, spec: &Spec) -> Result<(), BundleError> {
    if !spec.version().starts_with("1.") {
        return Err(field_err(
            path,
            "ociVersion",
            format!("unsupported version {:?}, want 1.x", spec.version()),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| field_err(path, "root", "missing"))?;
    if root.path().as_os_str().is_empty() {
        return Err(field_err(path, "root.path", "empty"));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| field_err(path, "process", "missing"))?;
    match process.args() {
        Some(args) if !args.is_empty() => {}
        _ => {
            return Err(field_err(
                path,
                "process.args",
                "at least one argument is required",
            ))
        }
    }
    if let Some(gids) = process.user().additional_gids() {
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = gids.iter().find(|g| !seen.insert(**g)) {
            return Err(field_err(
                path,
                "process.user.additionalGids",
                format!("gid {dup} is listed twice"),
            ));
        }
    }
    if !process.cwd().is_absolute() {
        return Err(field_err(
            path,
            "process.cwd",
            format!("{:?} is not absolute", process.cwd()),
        ));
    }
    if spec.linux().is_none() {
        return Err(field_err(path, "linux", "missing"));
    }
    Ok(())
}

/// The spec that will run, and the seccomp profile taken out of it for the in-container
/// stage (`confine::prepare` builds the plan from it).
#[derive(Debug, Clone)]
pub struct Rewritten {
    pub spec: Spec,
    pub seccomp: Option<LinuxSeccomp>,
    /// The spec's `poststop` hooks, which the runtime runs itself at `delete`.
    pub poststop: Vec<oci_spec::runtime::Hook>,
}

/// The base rewrite every confined container gets: `rewrite_common`, then no_new_privs set
/// and seccomp taken out for the in-container stage.
pub fn rewrite_base(src: &SourceBundle, id: &str) -> Result<Rewritten, BundleError> {
    let cfg = src.config_path();
    let (mut spec, poststop) = rewrite_common(src, id)?;
    let mut linux = spec.linux().clone().expect("checked in load");
    let seccomp = linux.seccomp().clone();
    if let Some(s) = &seccomp {
        if s.listener_path().is_some() {
            return Err(field_err(
                &cfg,
                "linux.seccomp.listenerPath",
                "seccomp notify listeners are not supported (the runtime owns user notification)",
            ));
        }
    }
    linux.set_seccomp(None);
    spec.set_linux(Some(linux));

    let mut process = spec.process().clone().expect("checked in load");
    process.set_no_new_privileges(Some(true));
    spec.set_process(Some(process));

    Ok(Rewritten {
        spec,
        seccomp,
        poststop,
    })
}

/// CAP_SYS_ADMIN or CAP_NET_ADMIN, if any of the process's capability sets holds one.
pub fn network_capability(spec: &Spec) -> Option<&'static str> {
    use oci_spec::runtime::Capability;
    let caps = spec.process().as_ref()?.capabilities().clone()?;
    let sets = [
        caps.bounding(),
        caps.effective(),
        caps.permitted(),
        caps.inheritable(),
        caps.ambient(),
    ];
    [
        (Capability::SysAdmin, "CAP_SYS_ADMIN"),
        (Capability::NetAdmin, "CAP_NET_ADMIN"),
    ]
    .into_iter()
    .find(|(cap, _)| {
        sets.iter()
            .any(|s| s.as_ref().is_some_and(|s| s.contains(cap)))
    })
    .map(|(_, name)| name)
}

/// A network namespace of the container's own in place of the one the spec names (a rootless
/// engine's, which reaches out): the container then starts with loopback only.
pub fn private_network(spec: &mut Spec) {
    use oci_spec::runtime::LinuxNamespaceType;
    let Some(mut linux) = spec.linux().clone() else {
        return;
    };
    let Some(mut namespaces) = linux.namespaces().clone() else {
        return;
    };
    for ns in namespaces
        .iter_mut()
        .filter(|n| n.typ() == LinuxNamespaceType::Network)
    {
        ns.set_path(None);
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
}

/// The rewrite of the unconfined `oci` baseline: `rewrite_common` only. Seccomp (with its
/// listener), no_new_privs, the root's read-only flag and every mount stay as the spec says,
/// for libcontainer to apply as runc would.
pub fn rewrite_oci(src: &SourceBundle, id: &str) -> Result<Rewritten, BundleError> {
    let (mut spec, poststop) = rewrite_common(src, id)?;
    // `false` and absent mean the same, but libcontainer loads the seccomp profile late
    // (after dropping capabilities, where it needs no_new_privs) whenever the field is set.
    let mut process = spec.process().clone().expect("checked in load");
    if process.no_new_privileges() == Some(false) {
        process.set_no_new_privileges(None);
        spec.set_process(Some(process));
    }
    Ok(Rewritten {
        spec,
        seccomp: None,
        poststop,
    })
}

/// What every container's spec needs once it no longer sits beside its rootfs: absolute root
/// and bind sources, a default cgroup path, and the hooks told the engine's bundle. Returns
/// the spec and its `poststop` hooks, taken out of it.
fn rewrite_common(
    src: &SourceBundle,
    id: &str,
) -> Result<(Spec, Vec<oci_spec::runtime::Hook>), BundleError> {
    let cfg = src.config_path();
    let mut spec = src.spec.clone();

    let mut root = spec.root().clone().expect("checked in load");
    let root_path = absolute_in(&src.dir, root.path());
    let root_path = fs::canonicalize(&root_path)
        .map_err(|e| field_err(&cfg, "root.path", format!("{}: {e}", root_path.display())))?;
    root.set_path(root_path);
    spec.set_root(Some(root));

    if let Some(mounts) = spec.mounts().clone() {
        let mounts = mounts
            .into_iter()
            .map(|mut m| {
                let is_bind = m.typ().as_deref() == Some("bind")
                    || m.options()
                        .as_ref()
                        .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"));
                if let Some(source) = m.source().clone() {
                    if is_bind && source.is_relative() {
                        m.set_source(Some(src.dir.join(source)));
                    }
                }
                m
            })
            .collect();
        spec.set_mounts(Some(mounts));
    }

    let mut linux = spec.linux().clone().expect("checked in load");
    if linux.cgroups_path().is_none() {
        linux.set_cgroups_path(Some(PathBuf::from(format!("/nemosandbox/{id}"))));
    }
    spec.set_linux(Some(linux));
    let poststop = crate::hooks::relay_all(&mut spec, &src.dir);
    Ok((spec, poststop))
}

fn absolute_in(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Write the rewritten spec into `dir` (our state directory for the container).
pub fn write_rewritten(dir: &ContainerDir, rw: &Rewritten) -> Result<(), BundleError> {
    let path = dir.spec();
    fs::write(
        &path,
        serde_json::to_vec(&rw.spec).expect("spec serializes"),
    )
    .map_err(|source| BundleError::Write { path, source })
}

/// Read and parse a JSON file; errors name the file and the line/column.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BundleError> {
    let data = fs::read(path).map_err(|source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&data).map_err(|e| BundleError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        msg: e.to_string(),
    })
}

/// Load the rewritten spec written at `create`.
pub fn load_rewritten_spec(dir: &ContainerDir) -> Result<Spec, BundleError> {
    read_json(&dir.spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_network_drops_the_engines_namespace_path_only() {
        let mut spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [
                {"type": "network", "path": "/run/user/1000/netns/x"},
                {"type": "ipc", "path": "/proc/7/ns/ipc"},
                {"type": "mount"}
            ]}
        }))
        .unwrap();
        private_network(&mut spec);
        let ns = spec.linux().clone().unwrap().namespaces().clone().unwrap();
        let path = |t| ns.iter().find(|n| n.typ() == t).unwrap().path().clone();
        use oci_spec::runtime::LinuxNamespaceType as T;
        assert_eq!(path(T::Network), None);
        assert_eq!(path(T::Ipc), Some("/proc/7/ns/ipc".into()));
        assert_eq!(ns.len(), 3);
    }
    use crate::testutil::TempDir;

    fn bundle_with(config: &str) -> (TempDir, Result<SourceBundle, BundleError>) {
        let d = TempDir::new("nemo-unit");
        fs::create_dir(d.0.join("rootfs")).unwrap();
        fs::write(d.0.join("config.json"), config).unwrap();
        let r = SourceBundle::load(&d.0);
        (d, r)
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let (_d, r) = bundle_with("{\n  \"ociVersion\": \"1.0.2\",\n  oops\n}");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("config.json:3:"), "{e}");
    }

    #[test]
    fn missing_args_names_field() {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": [], "user": {"uid": 0, "gid": 0}}, "linux": {}
        });
        let (_d, r) = bundle_with(&spec.to_string());
        let e = r.unwrap_err().to_string();
        assert!(e.contains("process.args"), "{e}");
    }

    #[test]
    fn rewrite_moves_seccomp_and_sets_nnp_without_touching_source() {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_seccomp(Some(
            oci_spec::runtime::LinuxSeccompBuilder::default()
                .default_action(oci_spec::runtime::LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap(),
        ));
        spec.set_linux(Some(linux));
        let (d, r) = bundle_with(&serde_json::to_string(&spec).unwrap());
        let src = r.unwrap();
        let rw = rewrite_base(&src, "c1").unwrap();
        assert!(rw.spec.linux().as_ref().unwrap().seccomp().is_none());
        assert!(rw.seccomp.is_some());
        assert_eq!(
            rw.spec.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
        assert!(rw.spec.root().as_ref().unwrap().path().is_absolute());
        assert_eq!(
            rw.spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
            Some(Path::new("/nemosandbox/c1"))
        );
        let on_disk = fs::read_to_string(d.0.join("config.json")).unwrap();
        assert_eq!(on_disk, serde_json::to_string(&spec).unwrap());
    }
}
