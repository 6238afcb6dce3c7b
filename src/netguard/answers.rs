//! The addresses the container's resolver returned, with the names that were asked for them
//! and how long each counts: what the guard matches a destination's names against.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Answers with a shorter TTL still count this long: clients connect right after resolving.
const MIN_TTL: Duration = Duration::from_secs(10);
/// Addresses remembered at once.
const MAX_ADDRESSES: usize = 16_384;

/// Addresses the resolver returned, with the names asked and when each stops counting.
#[derive(Default)]
pub struct Answers {
    by_ip: Mutex<HashMap<IpAddr, Vec<(String, Instant)>>>,
}

impl Answers {
    pub fn record(&self, name: &str, ip: IpAddr, ttl: Duration) {
        let now = Instant::now();
        let until = now + ttl.max(MIN_TTL);
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut m = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_ADDRESSES && !m.contains_key(&ip) {
            m.retain(|_, v| v.iter().any(|(_, t)| *t > now));
            if m.len() >= MAX_ADDRESSES {
                // Full of live answers: this address stays unknown, so it stays refused.
                return;
            }
        }
        let v = m.entry(ip).or_default();
        v.retain(|(n, t)| *n != name && *t > Instant::now());
        v.push((name, until));
    }

    pub fn names_for(&self, ip: IpAddr) -> Vec<String> {
        let now = Instant::now();
        self.by_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .map(|v| {
                v.iter()
                    .filter(|(_, t)| *t > now)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_keep_a_floor() {
        let a = Answers::default();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        a.record("API.Example.com.", ip, Duration::ZERO);
        assert_eq!(a.names_for(ip), vec!["api.example.com".to_string()]);
        a.record("api.example.com", ip, Duration::from_secs(60));
        assert_eq!(a.names_for(ip).len(), 1, "one entry per name");
        assert!(a.names_for("203.0.113.8".parse().unwrap()).is_empty());
    }
}
