//! The libcontainer `Executor` that runs the in-container stage, then execs the workload.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::Spec;

use crate::confine;
use crate::plan::LoadedPlan;

/// runc's PATH when the process environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone)]
pub struct ConfiningExecutor {
    plan: LoadedPlan,
    /// Runs an exec'd process rather than the container's init.
    exec: bool,
}

impl ConfiningExecutor {
    pub fn new(plan: LoadedPlan, exec: bool) -> Self {
        Self { plan, exec }
    }
}

fn process_env(spec: &Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
}

/// The PATH a process with environment `env` runs with. libcontainer turns the list into a
/// map, so of several `PATH=` entries the last one is what the process gets; the exec gate
/// resolves commands with this same function.
pub fn path_var(env: &[String]) -> Option<&str> {
    env.iter().rev().find_map(|e| e.strip_prefix("PATH="))
}

/// Resolve `name` as execvp would, with the container's PATH; messages match runc's, which
/// engines map to exit codes 126/127.
pub fn resolve_executable(name: &str, path_var: Option<&str>) -> Result<PathBuf, String> {
    let check = |p: &Path| -> Result<PathBuf, String> {
        let md = std::fs::metadata(p).map_err(|_| {
            format!(
                "exec: {name:?}: stat {}: no such file or directory",
                p.display()
            )
        })?;
        if md.is_dir() || md.permissions().mode() & 0o111 == 0 {
            return Err(format!("exec: {name:?}: permission denied"));
        }
        Ok(p.to_path_buf())
    };
    if name.contains('/') {
        return check(Path::new(name));
    }
    for dir in path_var.unwrap_or(DEFAULT_PATH).split(':') {
        let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(name);
        if let Ok(md) = std::fs::metadata(&candidate) {
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

impl Executor for ConfiningExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        let env = process_env(spec);
        let program = resolve_executable(&args[0], path_var(&env)).map_err(ExecutorError::Other)?;
        let program = CString::new(program.into_os_string().into_encoded_bytes())
            .map_err(|_| ExecutorError::InvalidArg)?;
        let argv: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| ExecutorError::InvalidArg))
            .collect::<Result<_, _>>()?;

        {
            let _t = crate::timing::span("confine");
            confine::apply(&self.plan, self.exec)
                .map_err(|e| ExecutorError::Other(e.to_string()))?;
        }

        let err = nix::unistd::execv(&program, &argv).unwrap_err();
        Err(ExecutorError::Other(format!("exec {:?}: {err}", args[0])))
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        let Some(name) = args.first() else {
            return Err(ExecutorValidationError::ArgValidationError(
                "process.args is empty".into(),
            ));
        };
        let env = process_env(spec);
        resolve_executable(name, path_var(&env))
            .map(|_| ())
            .map_err(ExecutorValidationError::ArgValidationError)
    }

    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        let current: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect();
        for key in current {
            // SAFETY: the container's init process is single-threaded at this point.
            unsafe { std::env::remove_var(key) };
        }
        for (k, v) in envs {
            // SAFETY: as above.
            unsafe { std::env::set_var(k, v) };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_execvp_with_runc_messages() {
        assert_eq!(
            resolve_executable("sh", Some("/nonexistent:/bin")).unwrap(),
            Path::new("/bin/sh")
        );
        let e = resolve_executable("no-such-prog-xyz", Some("/bin")).unwrap_err();
        assert!(e.contains("executable file not found in $PATH"), "{e}");
        let e = resolve_executable("/no/such", None).unwrap_err();
        assert!(e.contains("no such file or directory"), "{e}");
        let plain = std::env::temp_dir().join(format!("nemo-noexec-{}", std::process::id()));
        std::fs::write(&plain, "data").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = resolve_executable(plain.to_str().unwrap(), None).unwrap_err();
        std::fs::remove_file(&plain).unwrap();
        assert!(e.contains("permission denied"), "{e}");
    }
}
