//! Network guard: egress allowed per destination and per executable.
//!
//! - `decide`: the egress rule, pure.
//! - `prepare`: at `create`, the resolver address, the rewritten `/etc/resolv.conf` and the
//!   compiled notification filter.
//! - `fence`: cgroup programs that refuse, in the kernel, inet connects and addressed sends
//!   not made by the guard.
//! - `filter`: the notification filter and the hand-over of its listener (in the container).
//! - `guard`: the per-container guard (in the helper process): its control server takes
//!   listeners (`guard`), reads each notified call (`guard::notify`, `guard::call`), decides it
//!   (`guard::verdict`) and performs allowed ones itself on the caller's socket
//!   (`guard::perform`).
//! - `shared`: what the guard's threads, the resolver and the layer-7 proxy share.
//! - `answers`: the addresses the resolver returned and the names asked for them.
//! - `identity`: which policies' binaries a process is.
//! - `resolver`: the policy-aware DNS resolver.
//! - `control`: the guard's control socket (listener hand-over, live update).
//! - `relay`: without root, the sockets the guard makes on the host's network for allowed
//!   calls and puts in place of the caller's.

pub mod answers;
pub mod calls;
pub mod capture;
pub mod conns;
pub mod control;
pub mod decide;
pub mod explain;
pub mod fence;
pub mod filter;
pub mod guard;
pub mod identity;
pub mod l7;
pub mod local;
pub mod notif;
pub mod prepare;
pub mod protocol;
pub mod relay;
pub mod resolver;
pub mod shared;
pub mod sockaddr;
pub mod waiter;

use std::net::{IpAddr, Ipv4Addr};

/// What the runtime needs to start the guard and what every container process needs to hand
/// its listener over; stored in the confinement plan.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NetPlan {
    /// The resolver's address in the container's network namespace (port 53).
    pub resolver: Ipv4Addr,
    /// The nameservers the container would have used.
    pub upstream: Vec<IpAddr>,
    /// A sandbox run without root (`relay`): the init binds the resolver's sockets in its
    /// network namespace and hands them to the guard with its listener.
    #[serde(default)]
    pub relay: bool,
}
