//! Layer 7: HTTP method and path rules of `protocol: rest` (and `websocket`) endpoints.
//!
//! - `rules`: which requests an endpoint allows (pure).
//! - `http`: strict HTTP/1.1 framing.
//! - `ca`: the container's CA and the leaves it mints per server name.
//! - `proxy`: the per-container proxy the guard splices allowed connects into.

pub mod ca;
pub mod credentials;
pub mod http;
pub mod proxy;
pub mod rules;
pub mod trust;

pub use proxy::{Flow, Proxy};
pub use rules::Rules;

use crate::policy::model::{Access, Endpoint, L7Match, L7Rule, Protocol};

/// Whether connects to this endpoint go through the proxy: an HTTP protocol with `rules` or
/// an `access` level.
pub fn inspected(ep: &Endpoint) -> bool {
    matches!(
        ep.protocol,
        Some(Protocol::Rest) | Some(Protocol::Websocket)
    ) && (ep.rules.is_some() || ep.access.is_some())
}

/// The endpoint's rules: its `rules`, or those an `access` level stands for (read-only: GET,
/// HEAD, OPTIONS; read-write: those and POST, PUT, PATCH; full: every method).
pub fn endpoint_rules(ep: &Endpoint) -> Vec<L7Rule> {
    if let Some(r) = &ep.rules {
        return r.clone();
    }
    let methods: &[&str] = match ep.access {
        Some(Access::ReadOnly) => &["GET", "HEAD", "OPTIONS"],
        Some(Access::ReadWrite) => &["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"],
        Some(Access::Full) => &["*"],
        None => &[],
    };
    methods
        .iter()
        .map(|m| L7Rule {
            allow: Some(L7Match {
                method: Some(m.to_string()),
                path: None,
            }),
            deny: None,
        })
        .collect()
}
