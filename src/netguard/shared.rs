//! What every thread of a container's network guard shares: the current generation of
//! policies and resolved binaries, the resolver's answers, the exec captures, the remembered
//! connections and the audit throttle. The resolver and the layer-7 proxy read it too, which
//! is why it lives beside the guard rather than in it.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use super::answers::Answers;
use super::capture::Captures;
use super::conns::Connections;
use super::fence::Fence;
use super::identity::{Baseline, Binaries};
use super::l7;
use super::local::LocalRules;
use super::waiter::Waiter;
use crate::audit::{self, Throttle};
use crate::policy::merge::EffectiveNetwork;
use crate::policy::model::Endpoint;

/// Binaries are resolved again on a miss at most this often (a program installed later).
pub(super) const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// One generation of the network policies and the binaries they name.
pub struct Generation {
    pub n: u64,
    pub policies: BTreeMap<String, EffectiveNetwork>,
    pub binaries: Binaries,
    /// When the resolution of `binaries` started.
    pub resolved_at: Instant,
    /// The HTTP rules of every inspected endpoint, compiled once per generation.
    pub rules: Arc<CompiledRules>,
}

/// Each inspected endpoint with its compiled rules (or why they do not compile).
pub type CompiledRules = Vec<(Endpoint, Result<Arc<l7::Rules>, String>)>;

pub(super) fn compile_rules(policies: &BTreeMap<String, EffectiveNetwork>) -> Arc<CompiledRules> {
    let mut out: CompiledRules = Vec::new();
    for ep in policies.values().flat_map(|n| n.policy.endpoints.iter()) {
        if l7::inspected(ep) && !out.iter().any(|(e, _)| e == ep) {
            let rules = l7::Rules::compile(&l7::endpoint_rules(ep))
                .map(Arc::new)
                .map_err(|e| e.to_string());
            out.push((ep.clone(), rules));
        }
    }
    Arc::new(out)
}

/// Relayed egress (a sandbox run without root, `relay`).
pub struct Relay {
    /// The sandbox's network namespace (its inode), learnt from the resolver sockets its init
    /// hands over. Unknown, no socket counts as the sandbox's: nothing is relayed and nothing
    /// reaches the resolver.
    pub sandbox_ns: OnceLock<u64>,
    /// The nameservers, until the resolver starts on the init's sockets.
    pub upstream: Mutex<Option<Vec<std::net::IpAddr>>>,
    /// A container's (a rootless engine's): loopback addresses are its own network's, never
    /// relayed to the host's. A sandbox shares the host's files, and its loopback rules name
    /// the host's services, as under root.
    pub own_loopback: bool,
}

impl Relay {
    pub fn new(upstream: Vec<std::net::IpAddr>, own_loopback: bool) -> Relay {
        Relay {
            sandbox_ns: OnceLock::new(),
            upstream: Mutex::new(Some(upstream)),
            own_loopback,
        }
    }

    /// Which side `sock` is on.
    pub fn place(&self, sock: &OwnedFd) -> super::relay::Place {
        match self.sandbox_ns.get() {
            Some(ns) => super::relay::place(sock, *ns),
            None => super::relay::Place::Elsewhere,
        }
    }
}

/// What every guard thread shares.
pub struct Shared {
    pub id: String,
    pub(super) audit: Throttle,
    /// The runtime's state directory: the effective policy.
    pub own: crate::container_dir::ContainerDir,
    pub init_pid: i32,
    pub resolver: Ipv4Addr,
    pub generation: RwLock<Arc<Generation>>,
    pub answers: Answers,
    pub captures: Captures,
    pub(super) baseline: Baseline,
    pub(super) conns: Connections,
    pub(super) fence: Option<Fence>,
    /// Without root: allowed calls are relayed through sockets on the host's network.
    pub(super) relay: Option<Relay>,
    pub(super) local: LocalRules,
    pub(super) aslr: bool,
    /// pidfds have inodes unique per pid (caller lookups can be cached).
    pub(super) pidfs: bool,
    pub(super) last_refresh: Mutex<Instant>,
    pub(super) listeners: AtomicUsize,
    pub(super) waiter: OnceLock<Waiter>,
    /// The layer-7 proxy, started at the first connect that needs it.
    pub(super) l7: OnceLock<Result<Arc<l7::Proxy>, String>>,
    /// PEM files of roots the proxy trusts upstream besides the host's.
    pub(super) l7_roots: Vec<PathBuf>,
}

impl Shared {
    pub(super) fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.init_pid))
    }

    pub fn current(&self) -> Arc<Generation> {
        self.generation
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn load_policies(&self) -> Result<BTreeMap<String, EffectiveNetwork>, String> {
        let path = self.own.effective();
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Only the network policies: the rest of the document (the filesystem rules, most of
        // it) is skipped, not built.
        #[derive(serde::Deserialize)]
        struct Network {
            network_policies: BTreeMap<String, EffectiveNetwork>,
        }
        let eff: Network =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(eff.network_policies)
    }

    /// Load `effective.json` as the next generation and end the connections of policies it
    /// no longer has (or has changed); returns the generation's number.
    pub fn reload(&self) -> Result<u64, String> {
        let policies = self.load_policies()?;
        let resolved_at = Instant::now();
        let binaries = Binaries::resolve(&self.root(), &policies, &self.baseline);
        let (n, revoked) = {
            let mut g = self.generation.write().unwrap_or_else(|e| e.into_inner());
            let revoked: HashSet<String> = g
                .policies
                .iter()
                .filter(|(k, old)| {
                    policies.get(*k).is_none_or(|new| {
                        serde_json::to_value(&new.policy).ok()
                            != serde_json::to_value(&old.policy).ok()
                    })
                })
                .map(|(k, _)| k.clone())
                .collect();
            let n = g.n + 1;
            *g = Arc::new(Generation {
                n,
                rules: compile_rules(&policies),
                policies,
                binaries,
                resolved_at,
            });
            (n, revoked)
        };
        if let Some(f) = &self.fence {
            let cut = self
                .conns
                .revoke(&revoked, &f.container.join("cgroup.procs"));
            if cut > 0 {
                tracing::info!("network guard of {}: revoked {cut} connection(s)", self.id);
            }
        }
        Ok(n)
    }

    /// Resolve binaries again (same generation) after a caller's lookup at `looked_at` missed:
    /// a binary may have been installed since. A resolution that started after the lookup
    /// already sees the caller's executable, which existed before the caller ran it. One
    /// resolution per REFRESH_EVERY at most; a caller arriving sooner waits for the next one
    /// rather than being refused on a stale view. The wait is on a path to a likely refusal,
    /// and holds up only the listener of the caller's own process tree.
    pub(super) fn refresh_binaries(&self, looked_at: Instant) -> Arc<Generation> {
        let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current();
        if cur.resolved_at > looked_at {
            return cur;
        }
        let wait = REFRESH_EVERY.saturating_sub(last.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let started = Instant::now();
        let binaries = Binaries::resolve(&self.root(), &cur.policies, &self.baseline);
        *last = Instant::now();
        let next = Arc::new(Generation {
            n: cur.n,
            policies: cur.policies.clone(),
            binaries,
            resolved_at: started,
            rules: cur.rules.clone(),
        });
        let mut g = self.generation.write().unwrap_or_else(|e| e.into_inner());
        if g.n == cur.n {
            *g = next.clone();
        }
        next
    }

    pub fn audit(&self, ev: audit::Event) {
        self.audit.record(&ev);
    }

    /// The inode of a pidfd, where the kernel gives every pid its own (pidfs, Linux 6.9).
    pub(super) fn pid_key(&self, pidfd: &OwnedFd) -> Option<u64> {
        if !self.pidfs {
            return None;
        }
        nix::sys::stat::fstat(pidfd.as_raw_fd())
            .ok()
            .map(|st| st.st_ino)
    }
}

/// Whether pidfds of different processes have different inodes (pidfs).
pub(super) fn pidfs() -> bool {
    let ino = |pid: i32| {
        crate::helper::pidfd_open_flags(pid, 0)
            .ok()
            .and_then(|fd| nix::sys::stat::fstat(fd.as_raw_fd()).ok())
            .map(|st| st.st_ino)
    };
    matches!((ino(std::process::id() as i32), ino(1)), (Some(a), Some(b)) if a != b)
}
