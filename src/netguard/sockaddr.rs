//! Socket addresses as the caller wrote them, parsed once; the guard performs the call with the
//! same bytes it parsed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The most the kernel reads of a sockaddr (sizeof(struct sockaddr_storage)).
pub const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IPv4 or IPv6 destination; v4-mapped IPv6 addresses are given as IPv4.
    Inet(SocketAddr),
    /// AF_UNSPEC: `connect` dissolves the association.
    Unspec,
    /// Too short for its family, or a family an inet socket does not take.
    Invalid(i32),
}

pub fn parse(b: &[u8]) -> Target {
    if b.len() < 2 {
        return Target::Invalid(libc::EINVAL);
    }
    let family = u16::from_ne_bytes([b[0], b[1]]) as i32;
    match family {
        libc::AF_UNSPEC => Target::Unspec,
        libc::AF_INET if b.len() >= 16 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Target::Inet(SocketAddr::new(IpAddr::V4(ip), port))
        }
        libc::AF_INET6 if b.len() >= 24 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            let v6 = Ipv6Addr::from(o);
            let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
            Target::Inet(SocketAddr::new(ip, port))
        }
        libc::AF_INET | libc::AF_INET6 => Target::Invalid(libc::EINVAL),
        _ => Target::Invalid(libc::EAFNOSUPPORT),
    }
}

/// The sockaddr bytes of an address (`sockaddr_in` or `sockaddr_in6`).
pub fn encode(a: &SocketAddr) -> Vec<u8> {
    match a {
        SocketAddr::V4(v4) => {
            let mut b = vec![0u8; 16];
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v4.port().to_be_bytes());
            b[4..8].copy_from_slice(&v4.ip().octets());
            b
        }
        SocketAddr::V6(v6) => {
            let mut b = vec![0u8; 28];
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v6.port().to_be_bytes());
            b[8..24].copy_from_slice(&v6.ip().octets());
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_addresses_parse_back() {
        for a in [
            "127.0.0.53:4000",
            "[::ffff:127.0.0.53]:4000",
            "[2001:db8::1]:443",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let want = match a {
                SocketAddr::V6(v6) => v6
                    .ip()
                    .to_ipv4_mapped()
                    .map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
                _ => a,
            };
            assert_eq!(parse(&encode(&a)), Target::Inet(want));
        }
    }

    fn v4(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    #[test]
    fn parses_families() {
        assert_eq!(
            parse(&v4([203, 0, 113, 5], 443)),
            Target::Inet("203.0.113.5:443".parse().unwrap())
        );
        let mut b6 = vec![0u8; 28];
        b6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        b6[2..4].copy_from_slice(&80u16.to_be_bytes());
        b6[8..24].copy_from_slice(&"::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(parse(&b6), Target::Inet("127.0.0.1:80".parse().unwrap()));
        assert_eq!(parse(&[0, 0]), Target::Unspec);
        assert_eq!(
            parse(&v4([1, 2, 3, 4], 1)[..8]),
            Target::Invalid(libc::EINVAL)
        );
        let mut unix = vec![0u8; 16];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse(&unix), Target::Invalid(libc::EAFNOSUPPORT));
    }
}
