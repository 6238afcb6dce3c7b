//! The guard's control protocol: one JSON request per connection (or per hand-over on the
//! channel a container process inherits), one JSON reply, each a single line.

use serde::{Deserialize, Serialize};

/// The most a request may take on the wire; a longer one is refused unread.
pub const MAX_REQUEST: usize = 256;
/// The most a reply may take (an error names what failed).
pub const MAX_REPLY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// A container process hands over its seccomp listener, descriptor `fd` in its table (the
    /// guard takes it with pidfd_getfd; the pid comes from the kernel's credentials).
    Listener {
        fd: i32,
        /// A sandbox run without root: its resolver's UDP and TCP sockets, bound by the init
        /// in the sandbox's network namespace (which the guard cannot enter).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dns: Option<[i32; 2]>,
    },
    /// Load the network policies now in the effective policy file.
    Reload,
    /// Which generation of the policies is being enforced.
    Generation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Ok,
    Generation { n: u64 },
    Error { message: String },
}

fn line<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).expect("protocol messages serialise");
    out.push(b'\n');
    out
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        line(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Request, String> {
        serde_json::from_slice(bytes.trim_ascii()).map_err(|e| format!("bad request: {e}"))
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        let mut r = self.clone();
        if let Response::Error { message } = &mut r {
            // Within MAX_REPLY once quoted.
            if message.len() > MAX_REPLY / 2 {
                let mut cut = MAX_REPLY / 2;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
            }
        }
        line(&r)
    }
    pub fn decode(bytes: &[u8]) -> Result<Response, String> {
        if bytes.trim_ascii().is_empty() {
            return Err("the guard closed the channel".into());
        }
        serde_json::from_slice(bytes.trim_ascii()).map_err(|e| format!("bad reply: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_within_their_bounds() {
        for r in [
            Request::Listener { fd: 7, dns: None },
            Request::Listener {
                fd: 7,
                dns: Some([i32::MAX, i32::MAX]),
            },
            Request::Reload,
            Request::Generation,
        ] {
            let bytes = r.encode();
            assert!(bytes.len() <= MAX_REQUEST && bytes.ends_with(b"\n"));
            assert_eq!(Request::decode(&bytes).unwrap(), r);
        }
        let long = Response::Error {
            message: "é".repeat(10_000),
        };
        let bytes = long.encode();
        assert!(bytes.len() <= MAX_REPLY, "{}", bytes.len());
        assert!(matches!(
            Response::decode(&bytes).unwrap(),
            Response::Error { .. }
        ));
        assert_eq!(
            Response::decode(&Response::Generation { n: 3 }.encode()).unwrap(),
            Response::Generation { n: 3 }
        );
        for bad in [
            &b"L 7"[..],
            b"{\"op\":\"listener\"}",
            b"{\"op\":\"listener\",\"fd\":\"7\"}",
            b"",
        ] {
            assert!(
                Request::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Response::decode(b"").unwrap_err().contains("closed"));
    }
}
