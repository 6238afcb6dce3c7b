//! podman and CRI-O read every file of a drop-in directory, so `install` writes a file of its own
//! (first line: the marker below) and `uninstall` removes it; neither touches the main config.

use std::path::Path;

use super::{refuse_runtime_args, toml_string, Change, Engine, InstallError, Options};
use crate::policy::select::{ANNOTATION_POLICY, ANNOTATION_PRESETS};

/// How every drop-in install writes starts, whichever engine.
const MARKER_PREFIX: &[u8] = b"# Written by `nemosandbox install ";

fn marker(engine: Engine) -> String {
    format!("# Written by `nemosandbox install {engine}`; `nemosandbox uninstall {engine}` removes this file.\n")
}

fn write(
    path: &Path,
    before: Option<&[u8]>,
    engine: Engine,
    body: String,
) -> Result<Change, InstallError> {
    let ours = |b: &[u8]| b.starts_with(MARKER_PREFIX);
    if let Some(b) = before.filter(|b| !ours(b)) {
        let _ = b;
        return Err(InstallError::Conflict {
            path: path.to_path_buf(),
            reason: "the file exists and was not written by `nemosandbox install`; choose another \
                     --name or --engine-config"
                .into(),
        });
    }
    let text = format!("{}{body}", marker(engine));
    // The engine must read it: parse back what we are about to write.
    text.parse::<toml::Table>()
        .map_err(|e| InstallError::Parse {
            path: path.to_path_buf(),
            format: "TOML",
            reason: e.to_string(),
        })?;
    Ok(Change {
        path: path.to_path_buf(),
        before: None,
        after: Some(text.into_bytes()),
    })
}

pub(super) fn podman(
    path: &Path,
    before: Option<&[u8]>,
    opts: &Options,
) -> Result<Change, InstallError> {
    refuse_runtime_args(Engine::Podman, opts)?;
    let body = format!(
        "[engine.runtimes]\n{} = [{}]\n",
        opts.name,
        toml_string(opts.path.display())
    );
    write(path, before, Engine::Podman, body)
}

pub(super) fn crio(
    path: &Path,
    before: Option<&[u8]>,
    opts: &Options,
) -> Result<Change, InstallError> {
    refuse_runtime_args(Engine::Crio, opts)?;
    let body = format!(
        "[crio.runtime.runtimes.{}]\nruntime_path = {}\nruntime_type = \"oci\"\nruntime_root = {}\n\
         # The policy annotations reach config.json only when listed here.\n\
         allowed_annotations = [\"{ANNOTATION_PRESETS}\", \"{ANNOTATION_POLICY}\"]\n",
        opts.name,
        toml_string(opts.path.display()),
        toml_string(opts.state_root.display()),
    );
    write(path, before, Engine::Crio, body)
}

pub(super) fn uninstall(path: &Path, before: Option<Vec<u8>>) -> Result<Change, InstallError> {
    match &before {
        Some(b) if !b.starts_with(MARKER_PREFIX) => Err(InstallError::Conflict {
            path: path.to_path_buf(),
            reason: "not written by `nemosandbox install`; left as it is".into(),
        }),
        _ => Ok(Change {
            path: path.to_path_buf(),
            before,
            after: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            name: "nemosandbox".into(),
            path: "/usr/bin/nemosandbox".into(),
            runtime_args: vec![],
            state_root: "/run/nemosandbox".into(),
            config: None,
            config_version: None,
        }
    }

    #[test]
    fn drop_ins_parse_and_name_the_binary() {
        let p = Path::new("/etc/x.conf");
        let t: toml::Table = String::from_utf8(podman(p, None, &opts()).unwrap().after.unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            t["engine"]["runtimes"]["nemosandbox"][0].as_str(),
            Some("/usr/bin/nemosandbox")
        );
        let t: toml::Table = String::from_utf8(crio(p, None, &opts()).unwrap().after.unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let rt = &t["crio"]["runtime"]["runtimes"]["nemosandbox"];
        assert_eq!(rt["runtime_path"].as_str(), Some("/usr/bin/nemosandbox"));
        assert_eq!(
            rt["allowed_annotations"][0].as_str(),
            Some(ANNOTATION_PRESETS)
        );
    }

    #[test]
    fn a_file_that_is_not_ours_is_left_alone() {
        let p = Path::new("/etc/x.conf");
        assert!(podman(p, Some(b"[engine]\n"), &opts()).is_err());
        assert!(uninstall(p, Some(b"[engine]\n".to_vec())).is_err());
        let ours = podman(p, None, &opts()).unwrap().after;
        assert_eq!(uninstall(p, ours).unwrap().after, None);
        let args = Options {
            runtime_args: vec!["--preset".into(), "x".into()],
            ..opts()
        };
        assert!(podman(p, None, &args)
            .unwrap_err()
            .to_string()
            .contains("--runtime-flag"));
    }
}
