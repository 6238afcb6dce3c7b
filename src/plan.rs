//! The confinement plan: what the in-container stage applies to the init process and to every
//! exec'd process. It is built once at `create` (`confine::prepare`), written once into the
//! container directory, and only read after that: `exec` narrows a copy in memory.
//!
//! Live handles never go into the saved plan. `LoadedPlan` holds, beside a copy of it, the
//! programs read back from their files (the container cannot see them) and the connection to
//! the network guard a new process hands its listener over.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::runtime::LinuxSeccomp;

use crate::bundle::{read_json, BundleError};
use crate::confine::landlock::LandlockPlan;
use crate::container_dir::ContainerDir;
use crate::netguard::NetPlan;
use crate::policy::model::Compatibility;

/// The plan format this runtime writes and reads. A plan of another version (a container
/// created by another release) is refused, never read as something weaker.
pub const PLAN_VERSION: u32 = 1;

/// The saved plan.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    #[serde(default)]
    pub version: u32,
    /// The seccomp programs, in the order they are loaded (after Landlock).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock: Option<LandlockPlan>,
    #[serde(default)]
    pub compatibility: Compatibility,
    /// uid and gid from the policy's run_as_user/group: exec'd processes run as them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<(u32, u32)>,
    /// Created by an ordinary user (not root, nor root of a rootless engine's namespace): the
    /// init makes itself dumpable, so the guard (a process of the same user) may take its
    /// listener and read its calls.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rootless: bool,
    /// Without root (a sandbox): the uid and gid the process takes in a user namespace of its
    /// own, nested in the container's (`confine::apply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_user: Option<(u32, u32)>,
    /// Without root, a sandbox with a network namespace of its own: the init brings `lo`
    /// up itself, and every process drops the CAP_NET_ADMIN it was given for that.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub loopback_up: bool,
    /// The network guard's resolver and upstream nameservers (its filter is in `filters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netguard: Option<NetPlan>,
    /// The `oci` baseline: libcontainer applies the spec as it is; the in-container stage
    /// adds nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unconfined: bool,
    /// `oci` only: the engine's seccomp listener socket, reached through the runtime's relay
    /// (`listener`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_listener: Option<PathBuf>,
}

/// One seccomp program of the plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Filter {
    /// Compiled at `create` (cached across containers by content), stored in the container
    /// directory under `file`.
    Compiled { file: String, flags: u32 },
    /// A profile only libseccomp can load, compiled in the process itself.
    Profile { profile: LinuxSeccomp },
    /// The built-in filter of socket families.
    Sockets,
    /// The network guard's notification filter: its listener goes to the guard.
    NetGuard { file: String },
}

/// What each Landlock grant's path named once the container's mounts existed, saved beside
/// the plan (`ContainerDir::pins`) so the plan itself is written once.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Pins {
    /// (device, inode) per grant, in the plan's order; `None` for a path that did not exist.
    pub grants: Vec<Option<(u64, u64)>>,
}

impl Plan {
    /// The plan of the `oci` baseline.
    pub fn unconfined(seccomp_listener: Option<PathBuf>) -> Plan {
        Plan {
            version: PLAN_VERSION,
            unconfined: true,
            seccomp_listener,
            ..Plan::default()
        }
    }

    /// Write the plan into the container directory (once, at `create`).
    pub fn write(&self, dir: &ContainerDir) -> Result<(), BundleError> {
        write_atomic(
            &dir.plan(),
            &dir.plan_tmp(),
            serde_json::to_vec(self).expect("plan serializes"),
        )
    }

    /// Read the saved plan as `create` wrote it (before its grants are pinned), checked.
    pub fn read(dir: &ContainerDir) -> Result<Plan, BundleError> {
        let path = dir.plan();
        let plan: Plan = read_json(&path)?;
        plan.check().map_err(|(field, msg)| BundleError::Field {
            path,
            field,
            msg: msg.into(),
        })?;
        Ok(plan)
    }

    /// Read the saved plan of a started container, with its grant pins applied: a confined
    /// container without them is refused (an exec'd process would follow swapped paths).
    pub fn load(dir: &ContainerDir) -> Result<Plan, BundleError> {
        let mut plan = Plan::read(dir)?;
        if let Some(l) = plan.landlock.as_mut() {
            let pins: Pins = read_json(&dir.pins())?;
            for (g, p) in l.grants.iter_mut().zip(pins.grants) {
                g.pinned = p;
            }
            l.pinned = true;
        }
        Ok(plan)
    }

    /// What every confined plan has, whoever wrote the file: the floor of filters in its
    /// order, and the guard's filter exactly when there is a guard.
    fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.version != PLAN_VERSION {
            return Err((
                "version",
                "written by another release of the runtime; recreate the container",
            ));
        }
        if self.unconfined {
            return Ok(());
        }
        let mut rest = self.filters.iter().peekable();
        let guard = rest
            .next_if(|f| matches!(f, Filter::NetGuard { .. }))
            .is_some();
        if guard != self.netguard.is_some() {
            return Err((
                "filters",
                "the network guard's filter and the guard disagree",
            ));
        }
        if !matches!(rest.next(), Some(Filter::Compiled { .. }))
            || !matches!(rest.next(), Some(Filter::Sockets))
        {
            return Err((
                "filters",
                "the always-denied and socket filters must come first",
            ));
        }
        if rest.next().is_none() {
            return Err(("filters", "no seccomp profile"));
        }
        Ok(())
    }
}

impl Pins {
    /// The pins of `landlock`'s grants as they are now.
    pub fn of(landlock: &LandlockPlan) -> Pins {
        Pins {
            grants: landlock.grants.iter().map(|g| g.pinned).collect(),
        }
    }

    pub fn write(&self, dir: &ContainerDir) -> Result<(), BundleError> {
        write_atomic(
            &dir.pins(),
            &dir.pins_tmp(),
            serde_json::to_vec(self).expect("pins serialize"),
        )
    }
}

/// Write `data` under `tmp`, then rename it to `path`: a reader sees the old file or the new.
fn write_atomic(
    path: &std::path::Path,
    tmp: &std::path::Path,
    data: Vec<u8>,
) -> Result<(), BundleError> {
    std::fs::write(tmp, data)
        .and_then(|()| std::fs::rename(tmp, path))
        .map_err(|source| BundleError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// A program ready to load: the plan's filters with their bytes.
#[derive(Debug, Clone)]
pub enum Program {
    Bpf {
        name: String,
        bytes: Vec<u8>,
        flags: u32,
    },
    Profile(LinuxSeccomp),
    Sockets,
    NetGuard {
        bytes: Vec<u8>,
    },
}

/// The plan of one process about to start: a copy of the saved plan (which `exec` may
/// narrow), the programs it loads, and its connection to the network guard.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    pub plan: Plan,
    programs: Vec<Program>,
    channel: Option<Arc<OwnedFd>>,
}

impl LoadedPlan {
    /// `plan` with its programs read (before the process forks: inside, the files are out of
    /// sight).
    pub fn of(plan: Plan, dir: &ContainerDir) -> Result<LoadedPlan, BundleError> {
        let read = |file: &str| {
            let path = dir.filter(file);
            std::fs::read(&path).map_err(|source| BundleError::Read { path, source })
        };
        let programs = plan
            .filters
            .iter()
            .map(|f| {
                Ok(match f {
                    Filter::Compiled { file, flags } => Program::Bpf {
                        name: file.clone(),
                        bytes: read(file)?,
                        flags: *flags,
                    },
                    Filter::Profile { profile } => Program::Profile(profile.clone()),
                    Filter::Sockets => Program::Sockets,
                    Filter::NetGuard { file } => Program::NetGuard { bytes: read(file)? },
                })
            })
            .collect::<Result<_, BundleError>>()?;
        Ok(LoadedPlan {
            plan,
            programs,
            channel: None,
        })
    }

    /// The same programs under `plan`, a copy `exec` narrowed for one process.
    pub fn narrowed(self, plan: Plan) -> LoadedPlan {
        LoadedPlan { plan, ..self }
    }

    /// The runtime's end of the connection to the guard, inherited by the process.
    pub fn with_channel(mut self, channel: Option<OwnedFd>) -> LoadedPlan {
        self.channel = channel.map(Arc::new);
        self
    }

    pub fn programs(&self) -> &[Program] {
        &self.programs
    }

    pub fn channel(&self) -> Option<BorrowedFd<'_>> {
        self.channel.as_ref().map(|c| c.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn confined() -> Plan {
        Plan {
            version: PLAN_VERSION,
            filters: vec![
                Filter::NetGuard {
                    file: "filter-net.bpf".into(),
                },
                Filter::Compiled {
                    file: "filter-0.bpf".into(),
                    flags: 0,
                },
                Filter::Sockets,
                Filter::Compiled {
                    file: "filter-2.bpf".into(),
                    flags: 0,
                },
            ],
            netguard: Some(NetPlan {
                resolver: std::net::Ipv4Addr::new(127, 0, 0, 53),
                upstream: Vec::new(),
                relay: false,
            }),
            landlock: Some(LandlockPlan::default()),
            ..Plan::default()
        }
    }

    #[test]
    fn a_plan_without_its_floor_of_filters_is_refused() {
        assert_eq!(confined().check(), Ok(()));
        assert_eq!(Plan::unconfined(None).check(), Ok(()));
        let mut p = confined();
        p.filters.clear();
        assert_eq!(p.check().unwrap_err().0, "filters");
        let mut p = confined();
        p.filters.remove(0);
        assert_eq!(
            p.check().unwrap_err().0,
            "filters",
            "a guard without its filter"
        );
        let mut p = confined();
        p.netguard = None;
        assert_eq!(
            p.check().unwrap_err().0,
            "filters",
            "a guard filter without a guard"
        );
        let mut p = confined();
        p.filters.swap(1, 2);
        assert_eq!(
            p.check().unwrap_err().0,
            "filters",
            "the socket filter first"
        );
        let mut p = confined();
        p.filters.truncate(3);
        assert_eq!(p.check().unwrap_err().0, "filters", "no profile");
        let mut p = confined();
        p.version = 0;
        assert_eq!(p.check().unwrap_err().0, "version");
    }

    #[test]
    fn a_started_container_needs_its_pins_and_gets_them() {
        let dir = TempDir::new("plan");
        let own = ContainerDir::new(dir.path());
        let mut p = confined();
        let grant = crate::layout::Grant {
            path: "/work".into(),
            rights: crate::layout::Rights::NONE,
            dir: true,
            pinned: None,
        };
        p.landlock.as_mut().unwrap().grants = vec![grant; 2];
        p.write(&own).unwrap();
        assert!(Plan::read(&own).is_ok(), "before start: no pins yet");
        assert!(
            Plan::load(&own).is_err(),
            "a started container without its pins"
        );
        Pins {
            grants: vec![Some((1, 2)), None],
        }
        .write(&own)
        .unwrap();
        let l = Plan::load(&own).unwrap().landlock.unwrap();
        assert!(l.pinned);
        assert_eq!(l.grants[0].pinned, Some((1, 2)));
        assert_eq!(l.grants[1].pinned, None);
        // The saved plan itself is what create wrote.
        assert!(!Plan::read(&own).unwrap().landlock.unwrap().pinned);
    }
}
