//! Making the engine take a changed configuration: dockerd reloads `runtimes` on SIGHUP;
//! containerd and CRI-O read theirs at start, so they are restarted through systemd when it runs
//! (otherwise the user is told); podman reads its drop-ins at every command.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Engine, InstallError, Restart};

/// The dockerd processes that read `config`: named dockerd, running as root (the real uid in
/// `status`; `/proc/PID`'s owner is root for any non-dumpable process too), and in our mount
/// namespace, so that a docker-in-docker daemon reading its own `/etc/docker/daemon.json` is not
/// taken for the host's.
fn dockerds_reading(config: &Path) -> Vec<i32> {
    let want = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let our_ns = std::fs::metadata("/proc/self/ns/mnt")
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let base = PathBuf::from(format!("/proc/{pid}"));
            let is_dockerd =
                std::fs::read_to_string(base.join("comm")).is_ok_and(|c| c.trim_end() == "dockerd");
            let root = std::fs::read_to_string(base.join("status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next())
                    == Some("0")
            });
            let same_ns = std::fs::metadata(base.join("ns/mnt"))
                .map(|m| (m.dev(), m.ino()))
                .ok()
                == our_ns;
            is_dockerd
                && root
                && same_ns
                && std::fs::read(base.join("cmdline")).is_ok_and(|c| {
                    let used = config_file_arg(&c);
                    std::fs::canonicalize(&used).unwrap_or(used) == want
                })
        })
        .collect()
}

/// dockerd's `--config-file` from its NUL-separated command line, or its default.
fn config_file_arg(cmdline: &[u8]) -> PathBuf {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix(b"--config-file=") {
            return PathBuf::from(String::from_utf8_lossy(v).into_owned());
        }
        if *a == b"--config-file" {
            if let Some(v) = args.get(i + 1) {
                return PathBuf::from(String::from_utf8_lossy(v).into_owned());
            }
        }
    }
    PathBuf::from("/etc/docker/daemon.json")
}

fn has_runtimes_key(config: &Path) -> bool {
    std::fs::read(config)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("runtimes").is_some())
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn restart_unit(unit: &str, restart: Restart) -> Result<String, InstallError> {
    if restart == Restart::Never || !systemd_running() {
        return Ok(format!(
            "restart {unit} to apply (systemctl restart {unit})"
        ));
    }
    let status = Command::new("systemctl")
        .args(["restart", unit])
        .status()
        .map_err(|e| InstallError::Reload(format!("systemctl restart {unit}: {e}")))?;
    if !status.success() {
        return Err(InstallError::Reload(format!(
            "systemctl restart {unit}: {status}"
        )));
    }
    Ok(format!("restarted {unit}"))
}

pub(super) fn reload(
    engine: Engine,
    config: &Path,
    restart: Restart,
) -> Result<String, InstallError> {
    match engine {
        Engine::Docker => {
            let pids = dockerds_reading(config);
            if restart == Restart::Never || pids.is_empty() {
                let why = if pids.is_empty() {
                    format!(
                        "no running dockerd reads {}; it applies at docker's next start",
                        config.display()
                    )
                } else {
                    "reload docker to apply (kill -HUP $(pidof dockerd))".to_string()
                };
                return Ok(why);
            }
            for pid in &pids {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGHUP,
                )
                .map_err(|e| InstallError::Reload(format!("SIGHUP to dockerd {pid}: {e}")))?;
            }
            let mut said = format!("sent SIGHUP to dockerd (pid {pids:?}) to reload its runtimes");
            if !has_runtimes_key(config) {
                // dockerd's reload replaces only the keys the file sets.
                said.push_str(
                    "; daemon.json no longer sets \"runtimes\", which dockerd keeps until it \
                     restarts: restart docker to drop the runtime",
                );
            }
            Ok(said)
        }
        Engine::Containerd => restart_unit("containerd", restart),
        Engine::Crio => restart_unit("crio", restart),
        Engine::Podman => Ok("podman reads it at its next command".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerd_config_file_is_read_from_its_command_line() {
        assert_eq!(
            config_file_arg(b"dockerd\0--config-file\0/x/d.json\0-H\0unix:///s"),
            PathBuf::from("/x/d.json")
        );
        assert_eq!(
            config_file_arg(b"dockerd\0--config-file=/y.json"),
            PathBuf::from("/y.json")
        );
        assert_eq!(
            config_file_arg(b"/usr/sbin/dockerd\0-H\0fd://"),
            PathBuf::from("/etc/docker/daemon.json")
        );
    }
}
