//! Process identity: `process.run_as_user/group` resolved in the container's own
//! `/etc/passwd` and `/etc/group` (never the host's), and the home `~` stands for.

use std::path::{Path, PathBuf};

use crate::layout::tree::resolve_in;
use crate::policy::model::{IdOrName, ProcessPolicy};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("process.{field}: no {what} {name:?} in the container's {file}")]
    Unknown {
        field: &'static str,
        what: &'static str,
        name: String,
        file: &'static str,
    },
    #[error("process.{field}: {name:?} is id 0; a policy may not run the container as root")]
    Root { field: &'static str, name: String },
}

/// Who the container's processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<PathBuf>,
    /// Set by the policy (not the spec's own user).
    pub from_policy: bool,
    /// For messages: the name or `uid N`.
    pub label: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn read_in_root(rootfs: &Path, rel: &str) -> String {
    resolve_in(rootfs, Path::new(rel))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

fn passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    read_in_root(rootfs, "etc/passwd")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].into(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
            })
        })
        .collect()
}

fn group_id(rootfs: &Path, name: &str) -> Option<u32> {
    read_in_root(rootfs, "etc/group").lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// The identity for a container whose spec runs as `spec_uid:spec_gid`.
pub fn resolve(
    rootfs: &Path,
    policy: Option<&ProcessPolicy>,
    spec_uid: u32,
    spec_gid: u32,
) -> Result<Identity, IdentityError> {
    let users = passwd(rootfs);
    let by_uid = |uid: u32| users.iter().find(|u| u.uid == uid);
    let run_as_user = policy.and_then(|p| p.run_as_user.as_ref());
    let run_as_group = policy.and_then(|p| p.run_as_group.as_ref());

    let (uid, mut gid, home, label) =
        match run_as_user {
            None => {
                let home = by_uid(spec_uid)
                    .map(|u| u.home.clone())
                    .or_else(|| (spec_uid == 0).then(|| PathBuf::from("/root")));
                (spec_uid, spec_gid, home, format!("uid {spec_uid}"))
            }
            Some(IdOrName::Id(uid)) => {
                let entry = by_uid(*uid);
                (
                    *uid,
                    entry.map_or(*uid, |u| u.gid),
                    entry.map(|u| u.home.clone()),
                    format!("uid {uid}"),
                )
            }
            Some(IdOrName::Name(name)) => {
                let u = users.iter().find(|u| &u.name == name).ok_or_else(|| {
                    IdentityError::Unknown {
                        field: "run_as_user",
                        what: "user",
                        name: name.clone(),
                        file: "/etc/passwd",
                    }
                })?;
                (u.uid, u.gid, Some(u.home.clone()), name.clone())
            }
        };
    if run_as_user.is_some() && uid == 0 {
        return Err(IdentityError::Root {
            field: "run_as_user",
            name: label,
        });
    }
    match run_as_group {
        None => {}
        Some(IdOrName::Id(g)) => gid = *g,
        Some(IdOrName::Name(name)) => {
            gid = group_id(rootfs, name).ok_or_else(|| IdentityError::Unknown {
                field: "run_as_group",
                what: "group",
                name: name.clone(),
                file: "/etc/group",
            })?;
        }
    }
    if let (Some(g), 0) = (run_as_group, gid) {
        let name = match g {
            IdOrName::Id(i) => i.to_string(),
            IdOrName::Name(n) => n.clone(),
        };
        return Err(IdentityError::Root {
            field: "run_as_group",
            name,
        });
    }
    Ok(Identity {
        uid,
        gid,
        home,
        from_policy: run_as_user.is_some() || run_as_group.is_some(),
        label,
    })
}

/// A non-root identity keeps only the bounding set of capabilities, as a login of that user
/// would: effective, permitted, inheritable and ambient are emptied.
pub fn drop_to_bounding(caps: &mut oci_spec::runtime::LinuxCapabilities) {
    caps.set_effective(None);
    caps.set_permitted(None);
    caps.set_inheritable(None);
    caps.set_ambient(None);
}

/// Run `process` as `uid:gid`, without supplementary groups or more than bounding caps.
pub fn impose(process: &mut oci_spec::runtime::Process, uid: u32, gid: u32) {
    let mut user = process.user().clone();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids(None);
    process.set_user(user);
    if let Some(mut caps) = process.capabilities().clone() {
        drop_to_bounding(&mut caps);
        process.set_capabilities(Some(caps));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn rootfs() -> TempDir {
        let d = TempDir::new("nemo-id");
        std::fs::create_dir_all(d.0.join("etc")).unwrap();
        std::fs::write(
            d.0.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000::/sandbox:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.0.join("etc/group"),
            "root:x:0:\nsandbox:x:1000:\nwheel:x:10:\n",
        )
        .unwrap();
        d
    }

    fn policy(user: Option<IdOrName>, group: Option<IdOrName>) -> ProcessPolicy {
        ProcessPolicy {
            run_as_user: user,
            run_as_group: group,
        }
    }

    #[test]
    fn names_resolve_in_the_container() {
        let d = rootfs();
        let r = d.path();
        let p = policy(Some(IdOrName::Name("sandbox".into())), None);
        let id = resolve(r, Some(&p), 0, 0).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.home.as_deref(), Some(Path::new("/sandbox")));
        let p = policy(
            Some(IdOrName::Name("sandbox".into())),
            Some(IdOrName::Name("wheel".into())),
        );
        assert_eq!(resolve(r, Some(&p), 0, 0).unwrap().gid, 10);
        let p = policy(Some(IdOrName::Name("nobody-here".into())), None);
        let e = resolve(r, Some(&p), 0, 0).unwrap_err().to_string();
        assert!(
            e.contains("run_as_user") && e.contains("/etc/passwd"),
            "{e}"
        );
        let p = policy(Some(IdOrName::Name("root".into())), None);
        assert!(matches!(
            resolve(r, Some(&p), 0, 0),
            Err(IdentityError::Root { .. })
        ));
        let id = resolve(r, None, 0, 0).unwrap();
        assert_eq!(id.home.as_deref(), Some(Path::new("/root")));
    }
}
