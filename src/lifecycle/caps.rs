//! Capabilities of an exec'd process: never more than the container's bounding set, with the
//! policy's identity and no_new_privs imposed on a process.json the engine wrote.

use super::*;

pub(super) fn normalize_cap(cap: &str) -> String {
    let up = cap.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Copy of an exec process.json with capabilities limited to the container's and
/// no_new_privs set (when `nnp`); written into our state dir, removed after the exec.
pub(super) fn bounded_process_copy(
    path: &Path,
    container: &LinuxCapabilities,
    run_as: Option<(u32, u32)>,
    own: &ContainerDir,
    secrets: &[netguard::l7::credentials::Secret],
    nnp: bool,
) -> Result<PathBuf> {
    let mut process: Process = bundle::read_json(path)?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(LifecycleError::Invalid {
            what: format!("{}: process.args", path.display()),
            msg: "at least one argument is required".into(),
        });
    }
    if let Some(mut caps) = process.capabilities().clone() {
        let limit = |set: &Option<oci_spec::runtime::Capabilities>,
                     bound: &Option<oci_spec::runtime::Capabilities>| {
            set.as_ref().map(|s| {
                s.iter()
                    .filter(|c| bound.as_ref().is_some_and(|b| b.contains(c)))
                    .cloned()
                    .collect::<oci_spec::runtime::Capabilities>()
            })
        };
        let bounding = container.bounding();
        caps.set_bounding(limit(caps.bounding(), bounding));
        caps.set_effective(limit(caps.effective(), bounding));
        caps.set_permitted(limit(caps.permitted(), bounding));
        caps.set_inheritable(limit(caps.inheritable(), bounding));
        caps.set_ambient(limit(caps.ambient(), bounding));
        process.set_capabilities(Some(caps));
    }
    if let Some((uid, gid)) = run_as {
        // The policy's identity holds for every process.
        crate::identity::impose(&mut process, uid, gid);
    }
    if nnp {
        process.set_no_new_privileges(Some(true));
    } else if process.no_new_privileges() == Some(false) {
        // As at create: libcontainer treats a present `false` as "load seccomp late".
        process.set_no_new_privileges(None);
    }
    if let Some(mut env) = process.env().clone() {
        netguard::l7::credentials::scrub(&mut env, secrets);
        process.set_env(Some(env));
    }
    let out = own.exec_process();
    fs::write(
        &out,
        serde_json::to_vec(&process).expect("process serializes"),
    )
    .map_err(io_err(&out))?;
    Ok(out)
}
