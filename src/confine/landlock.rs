//! Landlock: the filesystem grants of the layout, TCP connect ports of the network
//! policy, signal and abstract-socket scoping — what the kernel's ABI can carry, decided at
//! `create` (where `hard_requirement` can still refuse) and applied in every process.

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use serde::{Deserialize, Serialize};

use crate::layout::{Grant, Rights};
use crate::policy::model::Compatibility;

/// The highest ABI this runtime knows how to use.
pub const MAX_ABI: u8 = 7;

/// Lowers the ABI the runtime uses below what the kernel offers: how tests (and operators
/// checking a policy for older kernels) see what degrades.
pub const ABI_CAP_ENV: &str = "NEMOSANDBOX_LANDLOCK_ABI_MAX";

/// One restriction Landlock provides from some ABI on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub abi: u8,
    /// What is not enforced without it.
    pub lost: &'static str,
    /// Missing it weakens confinement (refer does not: without it the kernel refuses every
    /// cross-directory rename or link).
    pub security: bool,
}

pub const FEATURES: [Feature; 7] = [
    Feature {
        name: "filesystem",
        abi: 1,
        lost: "read/write/execute per path (the mount layout still applies)",
        security: true,
    },
    Feature {
        name: "refer",
        abi: 2,
        lost: "cross-directory rename and link are refused everywhere",
        security: false,
    },
    Feature {
        name: "truncate",
        abi: 3,
        lost: "truncate of files the policy makes read-only but mounts leave writable",
        security: true,
    },
    Feature {
        name: "tcp_connect",
        abi: 4,
        lost: "TCP connect limited to the network policy's ports",
        security: true,
    },
    Feature {
        name: "ioctl_dev",
        abi: 5,
        lost: "ioctl on device files limited to writable paths",
        security: true,
    },
    Feature {
        name: "scope_signal",
        abi: 6,
        lost: "signals to processes outside the container's Landlock domain",
        security: true,
    },
    Feature {
        name: "scope_abstract_unix",
        abi: 6,
        lost: "connect to abstract unix sockets outside the container's domain",
        security: true,
    },
];

/// What the in-container stage installs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// The ABI whose rights are handled (kernel's, capped); 0 = none.
    pub abi: u8,
    pub grants: Vec<Grant>,
    /// TCP ports connect may reach (ABI ≥ 4); empty = none.
    pub tcp_ports: Vec<u16>,
    /// Scoping for exec'd processes: only where the container shares the host's pid (signals)
    /// or network (abstract sockets) namespace. A private namespace already confines them,
    /// and an exec'd process, in a domain of its own, must still be able to signal the
    /// container's main processes (`kubectl exec … kill -HUP 1`).
    pub exec_scope_signal: bool,
    pub exec_scope_abstract_unix: bool,
    /// The grants carry what their paths named after create: an exec'd process adds a rule
    /// only where its path still names that (and none for a path that did not exist).
    #[serde(default)]
    pub pinned: bool,
    /// Have the kernel's audit record the workload's denials (ABI 7; node configuration
    /// `audit.landlock_denials`).
    #[serde(default)]
    pub log_denials: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock.compatibility is hard_requirement, but the kernel's Landlock ABI is {abi}{capped} and lacks: {missing}")]
    Missing {
        abi: u8,
        capped: String,
        missing: String,
    },
    #[error("landlock: {0}")]
    Ruleset(String),
    #[error("landlock: the kernel did not enforce the ruleset")]
    NotEnforced,
}

/// The kernel's ABI and the cap from the environment, if any.
pub fn available_abi() -> (u8, Option<u8>) {
    let kernel = landlock_abi()
        .map(|v| v.clamp(0, MAX_ABI as i64) as u8)
        .unwrap_or(0);
    let cap = std::env::var(ABI_CAP_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u8>().ok());
    // A cap at or above the kernel's ABI changes nothing and is not reported.
    let cap = cap.filter(|c| *c < kernel);
    (cap.map_or(kernel, |c| kernel.min(c)), cap)
}

/// Features the ABI lacks that matter for confinement (the list `hard_requirement` refuses
/// and `best_effort` logs).
pub fn missing(abi: u8) -> Vec<Feature> {
    FEATURES.iter().filter(|f| f.abi > abi).copied().collect()
}

/// Decide at create/exec: refuse under `hard_requirement`, else warn once per missing right.
pub fn check(compat: Compatibility, abi: u8, cap: Option<u8>) -> Result<(), LandlockError> {
    let lost = missing(abi);
    if lost.is_empty() {
        return Ok(());
    }
    if compat == Compatibility::HardRequirement && lost.iter().any(|f| f.security) {
        return Err(LandlockError::Missing {
            abi,
            capped: cap.map_or(String::new(), |c| {
                format!(" (capped to {c} by {ABI_CAP_ENV})")
            }),
            missing: lost
                .iter()
                .map(|f| format!("{} (ABI {})", f.name, f.abi))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for f in lost {
        tracing::warn!(
            "landlock ABI {abi}: {} not enforced (needs ABI {}): {}",
            f.name,
            f.abi,
            f.lost
        );
    }
    Ok(())
}

fn abi_of(v: u8) -> ABI {
    ABI::from(v as i32)
}

/// Landlock rights for policy rights under `abi`.
pub fn access_for(rights: Rights, dir: bool, abi: ABI) -> BitFlags<AccessFs> {
    let mut a = BitFlags::<AccessFs>::empty();
    if rights.has(Rights::R) {
        a |= AccessFs::ReadFile | AccessFs::ReadDir;
    }
    if rights.has(Rights::X) {
        a |= AccessFs::Execute;
    }
    if rights.has(Rights::W) {
        a |= AccessFs::from_write(abi);
    }
    let handled = if dir {
        AccessFs::from_all(abi)
    } else {
        AccessFs::from_file(abi)
    };
    a & handled
}

fn rs_err<E: std::fmt::Display>(e: E) -> LandlockError {
    LandlockError::Ruleset(e.to_string())
}

/// Install the plan in the calling process (no_new_privs already set). `exec` selects the
/// exec'd-process scoping.
pub fn apply(plan: &LandlockPlan, exec: bool) -> Result<(), LandlockError> {
    if plan.abi == 0 {
        return Ok(());
    }
    let abi = abi_of(plan.abi);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(rs_err)?;
    if plan.abi >= 4 {
        ruleset = ruleset
            .handle_access(AccessNet::ConnectTcp)
            .map_err(rs_err)?;
    }
    if plan.abi >= 6 {
        let mut scopes = BitFlags::<Scope>::empty();
        if !exec || plan.exec_scope_signal {
            scopes |= Scope::Signal;
        }
        if !exec || plan.exec_scope_abstract_unix {
            scopes |= Scope::AbstractUnixSocket;
        }
        if !scopes.is_empty() {
            ruleset = ruleset.scope(scopes).map_err(rs_err)?;
        }
    }
    let mut created = ruleset.create().map_err(rs_err)?;
    for g in &plan.grants {
        let access = access_for(g.rights, g.dir, abi);
        if access.is_empty() {
            continue;
        }
        // Paths absent in this process's view (a device node without a terminal, a file
        // removed since create) simply get no rule: less access, never more.
        let Ok(fd) = PathFd::new(&g.path) else {
            continue;
        };
        if exec && plan.pinned {
            use std::os::fd::{AsFd, AsRawFd};
            let now = nix::sys::stat::fstat(fd.as_fd().as_raw_fd())
                .ok()
                .map(|st| (st.st_dev, st.st_ino));
            if g.pinned.is_none() || now != g.pinned {
                continue;
            }
        }
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(rs_err)?;
    }
    if plan.abi >= 4 {
        for port in &plan.tcp_ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(rs_err)?;
        }
    }
    if plan.abi >= 7 && plan.log_denials {
        // The kernel's audit (when enabled) records the workload's denials, which the helper
        // turns into `fs` events; the runtime's own steps before the exec are not the
        // workload's and stay out of it.
        created = created
            .log_same_exec(false)
            .and_then(|c| c.log_new_exec(true))
            .map_err(rs_err)?;
    }
    let status = created.restrict_self().map_err(rs_err)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(LandlockError::NotEnforced);
    }
    Ok(())
}

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// The Landlock ABI the kernel offers, or the errno that says why not.
pub fn landlock_abi() -> Result<i64, nix::Error> {
    // SAFETY: with a NULL attr, size 0 and the VERSION flag the call only returns the ABI.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if rc < 0 {
        Err(nix::Error::last())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_requirement_names_what_is_missing() {
        let e = check(Compatibility::HardRequirement, 5, Some(5)).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("scope_signal (ABI 6)") && s.contains("capped to 5"),
            "{s}"
        );
        assert!(check(Compatibility::BestEffort, 3, None).is_ok());
        assert!(check(Compatibility::HardRequirement, 7, None).is_ok());
    }

    #[test]
    fn rights_map_to_landlock_access() {
        let a = access_for(Rights::R, true, ABI::V5);
        assert!(a.contains(AccessFs::ReadDir) && !a.contains(AccessFs::Execute));
        let f = access_for(Rights::ALL, false, ABI::V5);
        assert!(f.contains(AccessFs::Truncate) && f.contains(AccessFs::IoctlDev));
        assert!(!f.contains(AccessFs::MakeDir));
        let old = access_for(Rights::W, true, ABI::V2);
        assert!(!old.contains(AccessFs::Truncate) && old.contains(AccessFs::Refer));
    }
}
