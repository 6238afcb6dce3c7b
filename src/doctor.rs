//! `nemosandbox doctor`: the kernel features enforcement relies on, probed directly (a syscall
//! with arguments that cannot succeed tells "exists" from ENOSYS), and what degrades without.

use std::path::Path;

/// One probed feature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub feature: &'static str,
    pub status: String,
    pub ok: bool,
    /// What is weaker when the feature is missing (empty when present).
    pub degrades: String,
}

use crate::confine::landlock::landlock_abi;

/// Does the syscall exist? Called with arguments that fail before doing anything.
fn syscall_exists(nr: libc::c_long, a: libc::c_long, b: libc::c_long, c: libc::c_long) -> bool {
    // SAFETY: every probe passes invalid descriptors or NULL pointers, which the kernel rejects
    // (EBADF/EFAULT/EINVAL) without side effects; only ENOSYS means "missing".
    let rc = unsafe { libc::syscall(nr, a, b, c, 0 as libc::c_long) };
    !(rc < 0 && nix::Error::last() == nix::Error::ENOSYS)
}

pub fn cgroup_mode() -> &'static str {
    if crate::cgroups::host_is_v2() {
        "v2 (unified)"
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "v1 hybrid (v2 at /sys/fs/cgroup/unified)"
    } else if Path::new("/sys/fs/cgroup").exists() {
        "v1 (legacy)"
    } else {
        "none"
    }
}

/// A feature that is either there or not; `degrades` is what is lost without it.
fn presence(feature: &'static str, ok: bool, degrades: &str) -> Check {
    Check {
        feature,
        status: if ok {
            "available".into()
        } else {
            "unavailable".into()
        },
        ok,
        degrades: if ok { String::new() } else { degrades.into() },
    }
}

pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    match landlock_abi() {
        Ok(_) => {
            let (abi, cap) = crate::confine::landlock::available_abi();
            let missing: Vec<String> = crate::confine::landlock::missing(abi)
                .iter()
                .map(|f| format!("{} (ABI {}): {}", f.name, f.abi, f.lost))
                .collect();
            let capped = cap.map_or(String::new(), |c| format!(" (capped to {c})"));
            out.push(Check {
                feature: "landlock",
                status: format!("ABI {abi}{capped}"),
                ok: true,
                degrades: if missing.is_empty() {
                    String::new()
                } else {
                    format!("not enforced: {}", missing.join("; "))
                },
            });
        }
        Err(e) => out.push(Check {
            feature: "landlock",
            status: format!("unavailable ({e})"),
            ok: false,
            degrades:
                "no filesystem rights beyond the mount layout; hard_requirement policies fail"
                    .into(),
        }),
    }
    let actions =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let notif = actions.split_whitespace().any(|a| a == "user_notif");
    out.push(presence(
        "seccomp user notification",
        notif,
        "no per-binary network guard: network calls are refused",
    ));
    let getfd = syscall_exists(libc::SYS_pidfd_getfd, -1, -1, 0);
    out.push(presence(
        "pidfd_getfd",
        getfd,
        "the guard cannot act on the caller's socket: network calls are refused",
    ));
    let fence = crate::netguard::fence::probe();
    let standing = crate::privilege::current();
    out.push(match standing {
        crate::privilege::Privilege::HostRoot => fence_check(&fence),
        // Only the host's root attaches cgroup programs; what runs without it does without.
        crate::privilege::Privilege::NamespaceRoot => Check {
            feature: "cgroup bpf (network fence)",
            status: "needs the host's root (uid 0 of a user namespace here)".into(),
            ok: true,
            degrades: "rootless engine: containers get a loopback-only network of their own \
                       and egress is relayed by the guard; no HTTP rules; symlink guards \
                       partial (docs/rootless.md)"
                .into(),
        },
        crate::privilege::Privilege::User => Check {
            feature: "cgroup bpf (network fence)",
            status: "needs root".into(),
            ok: true,
            degrades: "without root: `sandbox`, or containers under rootless podman; egress \
                       relayed by the guard, no HTTP rules, no named unix socket \
                       (docs/rootless.md)"
                .into(),
        },
    });
    if standing == crate::privilege::Privilege::User {
        out.push(subordinate_ids());
    }
    let unix = fence.is_ok() && crate::netguard::fence::unix_hooks();
    out.push(Check {
        feature: "cgroup unix hooks (sandbox)",
        status: if unix { "available" } else { "unavailable" }.into(),
        ok: unix,
        degrades: if unix {
            String::new()
        } else {
            "`sandbox` cannot judge unix connects, so it may not create unix sockets \
             (socketpair works; needs Linux 6.7)"
                .into()
        },
    });
    let abi = landlock_abi().unwrap_or(0);
    let audit = crate::audit::kernel::enabled();
    out.push(Check {
        feature: "landlock audit (fs events)",
        status: match (abi >= 7, &audit) {
            (false, _) => "unavailable (Landlock ABI 7, Linux 6.15)".into(),
            (true, Ok(true)) => "available".into(),
            (true, Ok(false)) => "kernel audit disabled".into(),
            (true, Err(e)) => format!("unavailable ({e})"),
        },
        ok: abi >= 7 && matches!(audit, Ok(true)),
        degrades: match (abi >= 7, &audit) {
            (true, Ok(true)) => String::new(),
            (true, Ok(false)) => "no fs events: enable the kernel's audit (run auditd, or boot with audit=1) for Landlock denials to reach the trail"
                .into(),
            _ => "no fs events: file denials are not reported".into(),
        },
    });
    // PIDFD_THREAD shares O_EXCL's value; older kernels refuse the flag with EINVAL.
    let thread_pidfd =
        crate::helper::pidfd_open_flags(nix::unistd::gettid().as_raw(), libc::O_EXCL as u32)
            .is_ok();
    out.push(presence(
        "pidfd for threads",
        thread_pidfd,
        "network calls of a thread with a descriptor table of its own (cloned without \
         CLONE_FILES) are refused (needs Linux 6.9)",
    ));
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let traceable = yama != Some(3);
    out.push(Check {
        feature: "ptrace (exec capture)",
        status: match yama {
            Some(n) => format!("yama ptrace_scope {n}"),
            None => "available".into(),
        },
        ok: traceable,
        degrades: if traceable {
            String::new()
        } else {
            "the guard cannot read what execve started: every policy binary is refused \
             (no egress)"
                .into()
        },
    });
    let openat2 = syscall_exists(libc::SYS_openat2, -1, 0, 0);
    out.push(presence(
        "openat2 (RESOLVE_IN_ROOT)",
        openat2,
        "symlink guards resolve component by component (slower)",
    ));
    let mode = cgroup_mode();
    out.push(Check {
        feature: "cgroup mode",
        status: mode.into(),
        ok: mode != "none",
        degrades: String::new(),
    });
    let userns: i64 = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let blocker = crate::sandbox::userns_blocker(|f| std::fs::read_to_string(f).ok());
    out.push(Check {
        feature: "user namespaces",
        status: match &blocker {
            None => format!("enabled (max {userns})"),
            Some(_) => "not for users without root".into(),
        },
        ok: true,
        degrades: match blocker {
            None => String::new(),
            Some(why) => format!("`sandbox` without root is refused: {why}"),
        },
    });
    let systemd = Path::new("/run/systemd/system").is_dir();
    out.push(Check {
        feature: "systemd",
        status: if systemd {
            "running".into()
        } else {
            "not running".into()
        },
        ok: true,
        degrades: if systemd {
            String::new()
        } else {
            "--systemd-cgroup is refused; use cgroupfs".into()
        },
    });
    out
}

/// The fence's row, for root.
fn fence_check(fence: &Result<bool, impl std::fmt::Display>) -> Check {
    Check {
        feature: "cgroup bpf (network fence)",
        status: match fence {
            Ok(true) => "available".into(),
            Ok(false) => "available (cgroup check only)".into(),
            Err(e) => format!("unavailable ({e})"),
        },
        ok: fence.is_ok(),
        degrades: match fence {
            Ok(true) => String::new(),
            Ok(false) => "a container that can write its cgroup files could move a task into \
                          the guard's cgroup (the pid check needs Linux 6.10)"
                .into(),
            Err(_) => "containers with a network guard cannot be created".into(),
        },
    }
}

/// The caller's subordinate id ranges, which rootless podman maps the image's other users to
/// (with the setuid `newuidmap` and `newgidmap`). `sandbox` needs none.
fn subordinate_ids() -> Check {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let count = |file: &str| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        subordinate_count(&text, &name, uid.as_raw())
    };
    let (uids, gids) = (count("/etc/subuid"), count("/etc/subgid"));
    let helpers = ["/usr/bin/newuidmap", "/usr/bin/newgidmap"]
        .iter()
        .all(|p| Path::new(p).exists());
    let ok = uids > 0 && gids > 0 && helpers;
    Check {
        feature: "subordinate ids (rootless podman)",
        status: format!(
            "{uids} uids, {gids} gids; newuidmap {}",
            if helpers { "present" } else { "missing" }
        ),
        ok,
        degrades: if ok {
            String::new()
        } else {
            "rootless podman cannot map an image's users: add ranges to /etc/subuid and \
             /etc/subgid and install uidmap (docs/rootless.md)"
                .into()
        },
    }
}

/// How many subordinate ids `/etc/subuid` (or `subgid`) text gives the user, named or by uid.
pub fn subordinate_count(text: &str, name: &str, uid: u32) -> u64 {
    let uid = uid.to_string();
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, n) = (f.next()?, f.next()?, f.next()?);
            start.parse::<u64>().ok()?;
            ((!name.is_empty() && who == name) || who == uid)
                .then(|| n.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// The table `doctor` prints.
/// Features without which the runtime cannot do its job on this node: the network guard (and
/// with it every container with network policies) needs all three. `doctor` exits non-zero
/// when one is missing; the rest only degrade and are reported.
pub const REQUIRED: [&str; 3] = [
    "seccomp user notification",
    "pidfd_getfd",
    "cgroup bpf (network fence)",
];

/// The required features `checks` finds missing.
pub fn missing_required(checks: &[Check]) -> Vec<&'static str> {
    checks
        .iter()
        .filter(|c| !c.ok && REQUIRED.contains(&c.feature))
        .map(|c| c.feature)
        .collect()
}

pub fn table(checks: &[Check]) -> String {
    let mut s = format!("{:<28} {:<44} {}\n", "FEATURE", "STATUS", "WHAT DEGRADES");
    for c in checks {
        let degrades = if c.degrades.is_empty() {
            "-"
        } else {
            &c.degrades
        };
        s.push_str(&format!(
            "{:<28} {:<44} {}\n",
            c.feature, c.status, degrades
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_are_found_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:200000:1000\n# bob:1:2\nbob:x:9\n";
        assert_eq!(subordinate_count(text, "alice", 1000), 65536);
        assert_eq!(subordinate_count(text, "carol", 1001), 1000);
        assert_eq!(subordinate_count(text, "bob", 1002), 0);
        assert_eq!(subordinate_count(text, "", 1000), 0);
    }

    #[test]
    fn only_a_missing_required_feature_fails_doctor() {
        let check = |feature: &'static str, ok: bool| Check {
            feature,
            status: String::new(),
            ok,
            degrades: String::new(),
        };
        let degraded = [check("landlock", false), check("pidfd_getfd", true)];
        assert!(missing_required(&degraded).is_empty());
        let broken = [
            check("landlock", true),
            check("cgroup bpf (network fence)", false),
        ];
        assert_eq!(
            missing_required(&broken),
            vec!["cgroup bpf (network fence)"]
        );
        // Every required name is a row doctor really prints.
        let names: Vec<&str> = checks().iter().map(|c| c.feature).collect();
        for r in REQUIRED {
            assert!(names.contains(&r), "{r}");
        }
    }
}
