//! Static answers: `--version`, `features`, `spec`.

use std::path::Path;

use oci_spec::runtime::Spec;

/// The OCI runtime-spec version this runtime implements (oci-spec 0.10's).
pub const OCI_VERSION: &str = "1.2.1";

pub fn version_text() -> String {
    format!(
        "nemosandbox version {}\ncommit: {}\nspec: {}\nlibcontainer: 0.7.0\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("NEMOSANDBOX_COMMIT").unwrap_or("unknown"),
        OCI_VERSION
    )
}

/// OCI runtime features document (runtime-spec features.md), as `runc features` prints it.
pub fn features() -> serde_json::Value {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    let mut caps = caps;
    caps.sort();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime", "noexec",
            "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid",
            "nosymfollow", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rro",
            "rrw", "rshared", "rslave", "runbindable", "rw", "shared", "silent", "slave",
            "strictatime", "suid", "symfollow", "sync", "tmpcopyup", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": true},
            "mountExtensions": {"idmap": {"enabled": true}}
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "dev.nemosandbox.version": env!("CARGO_PKG_VERSION")
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SpecTemplateError {
    #[error("File {0} exists. Remove it first")]
    Exists(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Write runc's default `config.json` into `bundle` (never over an existing one).
pub fn write_spec_template(bundle: &Path, rootless: bool) -> Result<(), SpecTemplateError> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(SpecTemplateError::Exists(path.display().to_string()));
    }
    let spec = if rootless {
        Spec::rootless(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    } else {
        Spec::default()
    };
    let data = serde_json::to_string_pretty(&spec).expect("spec serializes");
    std::fs::write(&path, data).map_err(|source| SpecTemplateError::Io {
        path: path.display().to_string(),
        source,
    })
}
