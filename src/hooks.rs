//! OCI hooks see the engine's bundle, not the runtime's rewritten one.
//!
//! libcontainer runs hooks with the state of the container it built, whose `bundle` is the
//! directory it loaded `config.json` from: the runtime's private rewrite. Hooks (GPU, network,
//! seccomp-profile recorders) read `bundle/config.json` and write beside it, so each hook of
//! the rewritten spec runs through a relay: this same binary (`/proc/self/exe`, which names
//! the running runtime), which puts the engine's bundle into the state
//! on its standard input and then executes the real hook in its place (same pid, so
//! libcontainer's timeout still applies).
//!
//! `poststop` hooks are taken out of the spec libcontainer sees: it fails `delete` for good
//! when one fails. The runtime runs them itself after the container is gone, logs a failure
//! and deletes anyway, as runc does.

use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, HookBuilder, Spec};

/// `argv[0]` of the relay; `main` checks it before anything else.
pub const RELAY_ARG0: &str = "nemosandbox-hook-relay";
/// Largest state accepted on standard input.
const MAX_STATE: u64 = 16 * 1024 * 1024;

fn relayed(hook: &Hook, bundle: &Path) -> Hook {
    let path = hook.path().display().to_string();
    let args = hook.args().clone().unwrap_or_default();
    let (arg0, rest) = match args.split_first() {
        Some((a, r)) => (a.clone(), r.to_vec()),
        None => (path.clone(), Vec::new()),
    };
    let mut relay_args = vec![
        RELAY_ARG0.to_string(),
        bundle.display().to_string(),
        path,
        arg0,
    ];
    relay_args.extend(rest);
    let mut b = HookBuilder::default()
        .path("/proc/self/exe")
        .args(relay_args);
    if let Some(env) = hook.env() {
        b = b.env(env.clone());
    }
    if let Some(t) = hook.timeout() {
        b = b.timeout(t);
    }
    b.build().expect("a hook with a path builds")
}

/// Route every hook of `spec` through the relay, telling it `bundle`; take out and return
/// the `poststop` hooks (the runtime runs them at `delete`).
pub fn relay_all(spec: &mut Spec, bundle: &Path) -> Vec<Hook> {
    let Some(mut hooks) = spec.hooks().clone() else {
        return Vec::new();
    };
    let wrap = |list: &Option<Vec<Hook>>| -> Option<Vec<Hook>> {
        list.as_ref()
            .map(|l| l.iter().map(|h| relayed(h, bundle)).collect())
    };
    #[allow(deprecated)]
    hooks.set_prestart(wrap(hooks.prestart()));
    hooks.set_create_runtime(wrap(hooks.create_runtime()));
    hooks.set_create_container(wrap(hooks.create_container()));
    // startContainer hooks run inside the container after pivot_root: not relayed. The relay
    // would be the host's runtime binary running there with the image's loader, libraries
    // and environment — a handle on the host binary for image code (CVE-2019-5736).
    hooks.set_poststart(wrap(hooks.poststart()));
    let poststop = hooks.poststop().clone().unwrap_or_default();
    hooks.set_poststop(None);
    spec.set_hooks(Some(hooks));
    poststop
}

/// Run `poststop` hooks for a deleted container: each gets the state (status `stopped`, the
/// engine's bundle) on stdin; a failure is logged and the rest still run.
pub fn run_poststop(
    hooks: &[Hook],
    id: &str,
    bundle: &Path,
    annotations: &std::collections::HashMap<String, String>,
) {
    if hooks.is_empty() {
        return;
    }
    let mut state = libcontainer::container::State::new(
        id,
        libcontainer::container::ContainerStatus::Stopped,
        None,
        bundle.to_path_buf(),
    );
    state.annotations = Some(annotations.clone());
    for (i, hook) in hooks.iter().enumerate() {
        let one = vec![hook.clone()];
        if let Err(e) = libcontainer::hooks::run_hooks(Some(&one), Some(&state), None, None, None) {
            tracing::warn!(
                "container {id:?}: poststop hook {i} ({}) failed: {e}; deleting anyway",
                hook.path().display()
            );
        }
    }
}

/// The relay itself: `argv` is `[RELAY_ARG0, bundle, path, arg0, args…]`. Never returns.
pub fn relay(argv: &[OsString]) -> ! {
    let code = match relay_exec(argv) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "nemosandbox hook relay: {e}");
            127
        }
    };
    std::process::exit(code)
}

fn relay_exec(argv: &[OsString]) -> Result<std::convert::Infallible, String> {
    let [_, bundle, path, hook_argv @ ..] = argv else {
        return Err("usage: nemosandbox-hook-relay BUNDLE PATH ARG0 [ARGS…]".into());
    };
    if hook_argv.is_empty() {
        return Err("no arg0 for the hook".into());
    }
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_STATE)
        .read_to_end(&mut input)
        .map_err(|e| format!("reading the state: {e}"))?;
    let state = rebundle(&input, "", Path::new(bundle));
    let fd =
        nix::sys::memfd::memfd_create(c"hook-state", nix::sys::memfd::MemFdCreateFlag::empty())
            .map_err(|e| format!("memfd_create: {e}"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&state)
        .and_then(|()| std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map(|_| ()))
        .map_err(|e| format!("writing the state: {e}"))?;
    nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), 0)
        .map_err(|e| format!("dup2: {e}"))?;
    let cstr = |s: &OsString| CString::new(s.as_bytes()).map_err(|_| "a NUL in an argument");
    let program = cstr(path)?;
    let args: Vec<CString> = hook_argv.iter().map(cstr).collect::<Result<_, _>>()?;
    let err = nix::unistd::execv(&program, &args).unwrap_err();
    Err(format!("exec {}: {err}", PathBuf::from(path).display()))
}

/// A JSON message with `bundle` set in the object at `pointer` (`""`: the top level, for a
/// hook's state; `"/state"`: a seccomp listener's message). Anything else goes through
/// unchanged.
pub fn rebundle(input: &[u8], pointer: &str, bundle: &Path) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(input) else {
        return input.to_vec();
    };
    let Some(obj) = v.pointer_mut(pointer).and_then(|o| o.as_object_mut()) else {
        return input.to_vec();
    };
    obj.insert(
        "bundle".into(),
        serde_json::Value::String(bundle.display().to_string()),
    );
    serde_json::to_vec(&v).unwrap_or_else(|_| input.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(path: &str, args: &[&str]) -> Hook {
        let mut b = HookBuilder::default().path(path).timeout(5);
        if !args.is_empty() {
            b = b.args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        b.build().unwrap()
    }

    #[test]
    fn hooks_go_through_the_relay_and_poststop_is_taken_out() {
        let mut spec = Spec::default();
        let hooks = oci_spec::runtime::HooksBuilder::default()
            .create_runtime(vec![hook("/usr/bin/nvidia-hook", &["nv", "prestart"])])
            .start_container(vec![hook("/bin/true", &[])])
            .poststop(vec![hook("/bin/cleanup", &[])])
            .build()
            .unwrap();
        spec.set_hooks(Some(hooks));
        let poststop = relay_all(&mut spec, Path::new("/engine/bundle"));
        assert_eq!(poststop.len(), 1);
        let h = spec.hooks().clone().unwrap();
        assert!(h.poststop().is_none());
        let cr = &h.create_runtime().as_ref().unwrap()[0];
        assert_eq!(cr.path(), Path::new("/proc/self/exe"));
        assert_eq!(
            cr.args().as_deref().unwrap(),
            [
                RELAY_ARG0,
                "/engine/bundle",
                "/usr/bin/nvidia-hook",
                "nv",
                "prestart"
            ]
        );
        assert_eq!(cr.timeout(), Some(5));
        // startContainer runs inside the container: never the host binary there.
        let sc = &h.start_container().as_ref().unwrap()[0];
        assert_eq!(sc.path(), Path::new("/bin/true"));
    }

    #[test]
    fn the_state_gets_the_engines_bundle() {
        let out = rebundle(
            br#"{"ociVersion":"1.0.2","id":"c","status":"creating","bundle":"/run/x/.nemosandbox/c"}"#,
            "",
            Path::new("/engine/b"),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["bundle"], "/engine/b");
        assert_eq!(v["id"], "c");
        assert_eq!(rebundle(b"not json", "", Path::new("/x")), b"not json");
    }
}
