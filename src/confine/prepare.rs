//! The policy part of the spec-rewrite stage, at `create`: identity, mount layout, Landlock
//! plan (refused here under `hard_requirement` when the kernel lacks something), seccomp
//! profile. Everything lands in the rewritten spec and the confinement plan; nothing is
//! written outside the container's state directory.

use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Spec};

use super::landlock::{self, LandlockPlan};
use super::seccomp;
use crate::bundle::{BundleError, Rewritten, SourceBundle};
use crate::container_dir::ContainerDir;
use crate::identity::{self, Identity};
use crate::layout::{self, Plan};
use crate::plan::{Filter, Plan as ConfinementPlan};
use crate::policy::merge::Effective;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error(transparent)]
    Landlock(#[from] landlock::LandlockError),
    #[error(transparent)]
    Bundle(Box<BundleError>),
    #[error(transparent)]
    Bpf(#[from] super::bpf::BpfError),
    #[error(transparent)]
    NetGuard(#[from] crate::netguard::prepare::NetPrepareError),
}

/// Ports of every endpoint of the effective network policy.
pub fn tcp_ports(eff: &Effective) -> Vec<u16> {
    let mut ports: Vec<u16> = eff
        .network_policies
        .values()
        .flat_map(|n| n.policy.endpoints.iter())
        .flat_map(|e| {
            e.port
                .into_iter()
                .chain(e.ports.clone().unwrap_or_default())
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn has_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == typ && n.path().is_none()))
}

/// Set the process's user from the policy; a non-root identity keeps only the bounding set
/// of capabilities, as it would have logging in.
fn apply_identity(spec: &mut Spec, id: &Identity) {
    if !id.from_policy {
        return;
    }
    let mut process = spec.process().clone().unwrap_or_default();
    identity::impose(&mut process, id.uid, id.gid);
    if let Some(home) = &id.home {
        let mut env = process.env().clone().unwrap_or_default();
        let has_home = env
            .iter()
            .any(|e| e.starts_with("HOME=") && e != "HOME=/root");
        if !has_home {
            env.retain(|e| !e.starts_with("HOME="));
            env.push(format!("HOME={}", home.display()));
        }
        process.set_env(Some(env));
    }
    spec.set_process(Some(process));
}

/// The plan's seccomp programs in load order: the network guard's notification filter, the
/// always-denied filter, the socket filter, `sandbox`'s own refusals, then the profile. What
/// compiles ahead (cached across containers under the runtime root) is written as files in
/// the container directory; a profile that does not is loaded by libseccomp in the process.
fn build_filters(
    profile: &LinuxSeccomp,
    local_denials: Option<&LinuxSeccomp>,
    own: &ContainerDir,
) -> Result<Vec<Filter>, PrepareError> {
    let cache = own.bpf_cache();
    let compiled = |index: usize, p: &LinuxSeccomp| -> Result<Filter, PrepareError> {
        let bpf = super::bpf::compile_cached(&cache, p)?;
        let file = ContainerDir::filter_name(index);
        let path = own.filter(&file);
        std::fs::write(&path, &bpf)
            .map_err(crate::path_error::io_err(&path))
            .map_err(super::bpf::BpfError::from)?;
        Ok(Filter::Compiled {
            file,
            flags: super::bpf::flags(p),
        })
    };
    let mut filters = vec![
        Filter::NetGuard {
            file: ContainerDir::NET_FILTER.to_string(),
        },
        compiled(0, &seccomp::always_denied())?,
        Filter::Sockets,
    ];
    if let Some(p) = local_denials {
        filters.push(compiled(1, p)?);
    }
    filters.push(if super::bpf::compilable(profile) {
        compiled(2, profile)?
    } else {
        Filter::Profile {
            profile: profile.clone(),
        }
    });
    Ok(filters)
}

/// Directories of the symlink guards: the layout takes `w` away from them.
fn guard_dirs(eff: &Effective) -> Vec<String> {
    eff.symlink_guards
        .iter()
        .map(|g| g.value.dir.clone())
        .collect()
}

/// Who the processes of a (base-rewritten) spec run as under `eff`.
fn identity_of(spec: &Spec, eff: &Effective) -> Result<Identity, PrepareError> {
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let user = spec
        .process()
        .as_ref()
        .map(|p| p.user().clone())
        .unwrap_or_default();
    Ok(identity::resolve(
        &rootfs,
        eff.process.as_ref().map(|p| &p.value),
        user.uid(),
        user.gid(),
    )?)
}

/// The layout plan a bundle would get, without creating anything (`policy explain`).
pub fn plan_only(src: &SourceBundle, eff: &Effective) -> Result<Plan, PrepareError> {
    let rw = crate::bundle::rewrite_base(src, "explain")
        .map_err(|e| PrepareError::Bundle(Box::new(e)))?;
    let id = identity_of(&rw.spec, eff)?;
    Ok(layout::plan_for_spec(
        &eff.filesystem_policy,
        &guard_dirs(eff),
        &rw.spec,
        id.home.as_deref(),
        &id.label,
    )?)
}

/// What `create` knows beyond the spec and the effective policy.
#[derive(Debug, Clone, Default)]
pub struct PlanInputs {
    /// `sandbox`'s own refusals (`seccomp::local_denials`).
    pub local_denials: Option<LinuxSeccomp>,
    /// Have the kernel's audit record Landlock denials (node configuration), where it can.
    pub log_denials: bool,
    /// A sandbox run without root: the network guard relays (`netguard::relay`).
    pub relay: bool,
}

/// Rewrite `rw` to carry the effective policy, and build the confinement plan: the one place
/// it is made. Returns it with the layout plan (for logs, explain).
pub fn prepare(
    rw: &mut Rewritten,
    eff: &Effective,
    own: &ContainerDir,
    container_id: &str,
    inputs: PlanInputs,
) -> Result<(ConfinementPlan, Plan), PrepareError> {
    let id = identity_of(&rw.spec, eff)?;
    let spec = &mut rw.spec;
    apply_identity(spec, &id);

    let timed = crate::timing::span("layout");
    let planned = crate::timing::span("layout-plan");
    let plan = layout::plan_for_spec(
        &eff.filesystem_policy,
        &guard_dirs(eff),
        spec,
        id.home.as_deref(),
        &id.label,
    )?;
    drop(planned);

    let (abi, cap) = landlock::available_abi();
    landlock::check(eff.landlock.value, abi, cap)?;
    // The image's root, before a restrictive layout swaps in its skeleton.
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    layout::apply(&plan, spec, own)?;
    drop(timed);

    let bounding: Vec<String> = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().clone())
        .map(|b| b.iter().map(|c| c.to_string()).collect())
        .unwrap_or_default();
    let profile = rw
        .seccomp
        .clone()
        .unwrap_or_else(|| seccomp::default_profile(&bounding));
    let filters = {
        let _t = crate::timing::span("filters");
        build_filters(&profile, inputs.local_denials.as_ref(), own)?
    };
    let netguard = {
        let _t = crate::timing::span("netguard-prepare");
        crate::netguard::prepare::prepare(
            spec,
            &rootfs,
            own,
            container_id,
            &own.bpf_cache(),
            inputs.relay,
        )?
    };
    let confinement = ConfinementPlan {
        version: crate::plan::PLAN_VERSION,
        filters,
        landlock: Some(LandlockPlan {
            abi,
            grants: plan.grants.clone(),
            // The guard makes every TCP connection on the workload's behalf; the workload's
            // own connect is refused, so a socket swapped under a call the guard let continue
            // (unix sockets) cannot reach the network by itself.
            tcp_ports: Vec::new(),
            exec_scope_signal: !has_namespace(spec, LinuxNamespaceType::Pid),
            exec_scope_abstract_unix: !has_namespace(spec, LinuxNamespaceType::Network),
            pinned: false,
            log_denials: inputs.log_denials && abi >= 7,
        }),
        compatibility: eff.landlock.value,
        run_as: id.from_policy.then_some((id.uid, id.gid)),
        nested_user: None,
        loopback_up: false,
        rootless: false,
        netguard: Some(netguard),
        unconfined: false,
        seccomp_listener: None,
    };
    Ok((confinement, plan))
}
