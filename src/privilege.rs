//! Which rights the runtime holds: the host's root, root of a user namespace an engine made
//! (rootless podman runs its runtime as uid 0 of the user's namespace), or an ordinary user.
//!
//! Only the host's root may attach cgroup programs (the network guard's kernel fence), set the
//! immutable attribute, or write `/run`. uid 0 in a user namespace holds none of that, however
//! many capabilities its namespace gives it, so the runtime decides on the namespace, not on
//! the uid.

use std::sync::OnceLock;

/// The runtime's standing, decided once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// uid 0 in the initial user namespace.
    HostRoot,
    /// uid 0 in a user namespace of its own, such as rootless podman's: root over the
    /// namespaces that namespace owns (the container's network included), nothing on the host.
    NamespaceRoot,
    /// Any other uid.
    User,
}

impl Privilege {
    /// Not the host's root: no kernel fence, no immutable attribute, no system state root.
    pub fn rootless(self) -> bool {
        self != Privilege::HostRoot
    }
}

/// The calling process's standing.
pub fn current() -> Privilege {
    static CURRENT: OnceLock<Privilege> = OnceLock::new();
    *CURRENT.get_or_init(|| classify(nix::unistd::geteuid().as_raw(), uid_map()))
}

/// The calling process's effective uid as the host sees it: for uid 0 of a user namespace,
/// the id it maps to.
pub fn host_euid() -> u32 {
    let euid = nix::unistd::geteuid().as_raw();
    match current() {
        Privilege::NamespaceRoot => host_uid(uid_map()).unwrap_or(euid),
        _ => euid,
    }
}

/// `/proc/self/uid_map`, read once (empty when unreadable).
fn uid_map() -> &'static str {
    static MAP: OnceLock<String> = OnceLock::new();
    MAP.get_or_init(|| std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default())
}

/// Decide from the effective uid and `/proc/self/uid_map`. The initial namespace maps every
/// id to itself in one line of 4294967295; anything else is a namespace someone made. An
/// empty (unreadable) map counts as the initial one: the runtime then takes the root-only
/// steps (the fence), which fail loudly where it is not root, instead of the rootless ways
/// that trust the guard's namespace to hold nothing of the host's.
pub fn classify(euid: u32, uid_map: &str) -> Privilege {
    if euid != 0 {
        return Privilege::User;
    }
    if uid_map.trim().is_empty() {
        return Privilege::HostRoot;
    }
    let initial =
        uid_map.split_whitespace().collect::<Vec<_>>().as_slice() == ["0", "0", "4294967295"];
    if initial {
        Privilege::HostRoot
    } else {
        Privilege::NamespaceRoot
    }
}

/// The host uid that uid 0 of this namespace is (rootless podman's: the user's), from a
/// `uid_map` text.
pub fn host_uid(uid_map: &str) -> Option<u32> {
    uid_map.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&"0")).then(|| f.get(1)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_initial_namespaces_root_is_the_hosts() {
        let initial = "         0          0 4294967295\n";
        let podman = "         0       1001          1\n         1     100000      65536\n";
        assert_eq!(classify(0, initial), Privilege::HostRoot);
        assert_eq!(classify(0, podman), Privilege::NamespaceRoot);
        // A map of everything but one id short is not the initial one; an unreadable one is
        // taken for it (root-only steps then fail loudly rather than being skipped).
        assert_eq!(classify(0, "0 0 4294967294\n"), Privilege::NamespaceRoot);
        assert_eq!(classify(0, ""), Privilege::HostRoot);
        assert_eq!(host_uid("         0       1001          1\n"), Some(1001));
        assert_eq!(host_uid("         1     100000      65536\n"), None);
        assert_eq!(classify(1000, initial), Privilege::User);
        assert!(Privilege::NamespaceRoot.rootless() && Privilege::User.rootless());
        assert!(!Privilege::HostRoot.rootless());
    }
}
