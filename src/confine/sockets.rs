//! Socket creation and socket options the network guard never sees.
//!
//! Threat: the guard judges every call that carries a destination, but a socket can reach the
//! network in ways that never pass through `connect`/`sendto`: SCTP opens associations from
//! `setsockopt(SCTP_SOCKOPT_CONNECTX)`, raw and packet sockets write frames, exotic families
//! (vsock, TIPC, RDS, SMC) have their own paths, and IP source-routing options send approved
//! traffic through hops the policy never named. This filter allows on `AF_INET`/`AF_INET6`
//! only stream sockets for TCP and MPTCP and datagram sockets for UDP; besides those, only
//! unix and netlink sockets may be created. ICMP (ping) sockets are refused too: an ICMP echo
//! has no port an endpoint could name, and the kernel runs no cgroup hook for ping sends, so
//! neither the guard nor its kernel fence could vouch for one.
//!
//! Every check reads syscall arguments from registers, which the caller cannot change after
//! the filter ran. Only the low 32 bits are compared: the kernel reads these arguments as
//! `int`. The program is written out instruction by instruction because libseccomp cannot say
//! "not one of these values" about one argument.

use crate::confine::cbpf::{Asm, Insn};

/// The errno of every refusal here: a policy decision, as the guard's.
const REFUSED: u32 = libc::EACCES as u32;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_BIT: u32 = 0x4000_0000;

// Syscall numbers (x86_64, i386).
const NR_SOCKET: u32 = 41;
const NR_SETSOCKOPT: u32 = 54;
const NR_I386_SOCKETCALL: u32 = 102;
const NR_I386_SOCKET: u32 = 359;
const NR_I386_SETSOCKOPT: u32 = 366;
/// x32's setsockopt (the compat entry; 54 is 64-bit only).
const NR_X32_SETSOCKOPT: u32 = 541 | X32_BIT;

/// Families a container may create sockets of.
const LOCAL_FAMILIES: [u32; 2] = [libc::AF_UNIX as u32, libc::AF_NETLINK as u32];
const INET_FAMILIES: [u32; 2] = [libc::AF_INET as u32, libc::AF_INET6 as u32];
/// Protocols of an inet stream socket: the type's default (TCP), TCP and MPTCP.
const STREAM_PROTOCOLS: [u32; 3] = [0, libc::IPPROTO_TCP as u32, libc::IPPROTO_MPTCP as u32];
/// Protocols of an inet datagram socket: the type's default (UDP) and UDP.
const DGRAM_PROTOCOLS: [u32; 2] = [0, libc::IPPROTO_UDP as u32];
/// `setsockopt` options that source-route: (level, option).
const ROUTING_OPTIONS: [(u32, u32); 5] = [
    (libc::IPPROTO_IP as u32, libc::IP_OPTIONS as u32),
    (libc::IPPROTO_IP as u32, libc::IP_RETOPTS as u32),
    (libc::IPPROTO_IPV6 as u32, libc::IPV6_RTHDR as u32),
    (libc::IPPROTO_IPV6 as u32, IPV6_2292RTHDR),
    (libc::IPPROTO_IPV6 as u32, IPV6_2292PKTOPTIONS),
];
pub const IPV6_2292RTHDR: u32 = 5;
pub const IPV6_2292PKTOPTIONS: u32 = 6;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn arg(i: u32) -> u32 {
    16 + 8 * i
}

/// The filter program.
pub fn program() -> Vec<Insn> {
    let mut a = Asm::default();
    let (allow, refuse) = (a.label(), a.label());
    let (i386, socket, sockopt) = (a.label(), a.label(), a.label());

    a.load(OFF_ARCH);
    a.jeq(AUDIT_ARCH_I386, i386);
    a.jne(AUDIT_ARCH_X86_64, allow);
    a.load(OFF_NR);
    a.jeq(NR_SOCKET, socket);
    a.jeq(NR_SOCKET | X32_BIT, socket);
    a.jeq(NR_SETSOCKOPT, sockopt);
    a.jeq(NR_X32_SETSOCKOPT, sockopt);
    a.jump(allow);

    // 32-bit processes cannot use the network (the guard cannot read their structures): no
    // socketcall multiplexer, whose arguments are in memory, and no inet sockets. A 64-bit
    // process can make 32-bit calls too (`int 0x80`): their setsockopt is checked like its own.
    a.bind(i386);
    a.load(OFF_NR);
    a.jeq(NR_I386_SOCKETCALL, refuse);
    a.jeq(NR_I386_SETSOCKOPT, sockopt);
    a.jne(NR_I386_SOCKET, allow);
    a.load(arg(0));
    for f in LOCAL_FAMILIES {
        a.jeq(f, allow);
    }
    a.jump(refuse);

    // socket(domain, type, protocol)
    a.bind(socket);
    let (inet, stream, dgram) = (a.label(), a.label(), a.label());
    a.load(arg(0));
    for f in LOCAL_FAMILIES {
        a.jeq(f, allow);
    }
    for f in INET_FAMILIES {
        a.jeq(f, inet);
    }
    a.jump(refuse);
    a.bind(inet);
    a.load(arg(1));
    a.and(0xf);
    a.jeq(libc::SOCK_STREAM as u32, stream);
    a.jeq(libc::SOCK_DGRAM as u32, dgram);
    a.jump(refuse);
    a.bind(stream);
    a.load(arg(2));
    for p in STREAM_PROTOCOLS {
        a.jeq(p, allow);
    }
    a.jump(refuse);
    a.bind(dgram);
    a.load(arg(2));
    for p in DGRAM_PROTOCOLS {
        a.jeq(p, allow);
    }
    a.jump(refuse);

    // setsockopt(fd, level, optname, ...)
    a.bind(sockopt);
    for (level, name) in ROUTING_OPTIONS {
        let next = a.label();
        a.load(arg(1));
        a.jne(level, next);
        a.load(arg(2));
        a.jeq(name, refuse);
        a.bind(next);
    }
    a.jump(allow);

    a.bind(refuse);
    a.ret(libc::SECCOMP_RET_ERRNO | REFUSED);
    a.bind(allow);
    a.ret(libc::SECCOMP_RET_ALLOW);
    a.finish()
}

/// The program as the bytes `seccomp(2)` takes.
pub fn bytes() -> Vec<u8> {
    crate::confine::cbpf::to_bytes(&program())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confine::cbpf::run;

    fn call(arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        run(&program(), &data)
    }

    fn socket(domain: i32, ty: i32, proto: i32) -> u32 {
        call(
            AUDIT_ARCH_X86_64,
            NR_SOCKET,
            [domain as u64, ty as u64, proto as u64, 0, 0, 0],
        )
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const DENY: u32 = libc::SECCOMP_RET_ERRNO | libc::EACCES as u32;

    #[test]
    fn inet_sockets_are_tcp_udp_or_mptcp_only() {
        use libc::{
            AF_ALG, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_RDS, AF_TIPC, AF_UNIX, AF_VSOCK,
            IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_MPTCP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
            IPPROTO_UDPLITE, SOCK_CLOEXEC, SOCK_DCCP, SOCK_DGRAM, SOCK_NONBLOCK, SOCK_RAW,
            SOCK_RDM, SOCK_SEQPACKET, SOCK_STREAM,
        };
        let cases: [(i32, i32, i32, u32); 22] = [
            (AF_INET, SOCK_STREAM, 0, ALLOW),
            (
                AF_INET6,
                SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                IPPROTO_TCP,
                ALLOW,
            ),
            (AF_INET, SOCK_STREAM, IPPROTO_MPTCP, ALLOW),
            (AF_INET, SOCK_DGRAM, 0, ALLOW),
            (AF_INET6, SOCK_DGRAM, IPPROTO_UDP, ALLOW),
            (AF_UNIX, SOCK_STREAM, 0, ALLOW),
            (AF_UNIX, SOCK_SEQPACKET, 0, ALLOW),
            (AF_NETLINK, SOCK_RAW, 0, ALLOW),
            (AF_INET, SOCK_STREAM, IPPROTO_SCTP, DENY),
            (AF_INET, SOCK_SEQPACKET, 0, DENY),
            (AF_INET6, SOCK_SEQPACKET, IPPROTO_SCTP, DENY),
            (AF_INET, SOCK_DCCP, 0, DENY),
            (AF_INET, SOCK_RAW, IPPROTO_ICMP, DENY),
            (AF_INET, SOCK_DGRAM, IPPROTO_ICMP, DENY),
            (AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6, DENY),
            (AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE, DENY),
            (AF_INET, SOCK_STREAM, 256, DENY),
            (AF_PACKET, SOCK_RAW, 0, DENY),
            (AF_VSOCK, SOCK_STREAM, 0, DENY),
            (AF_TIPC, SOCK_RDM, 0, DENY),
            (AF_RDS, SOCK_SEQPACKET, 0, DENY),
            (AF_ALG, SOCK_SEQPACKET, 0, DENY),
        ];
        for (d, t, p, want) in cases {
            assert_eq!(socket(d, t, p), want, "socket({d}, {t}, {p})");
        }
        // The kernel reads an int: high bits do not hide a family.
        let high = call(
            AUDIT_ARCH_X86_64,
            NR_SOCKET,
            [(1u64 << 32) | libc::AF_PACKET as u64, 3, 0, 0, 0, 0],
        );
        assert_eq!(high, DENY);
        assert_eq!(
            call(AUDIT_ARCH_X86_64, NR_SOCKET | X32_BIT, [2, 1, 132, 0, 0, 0]),
            DENY
        );
    }

    #[test]
    fn source_routing_options_are_refused() {
        let so = |level: i32, name: u32| {
            call(
                AUDIT_ARCH_X86_64,
                NR_SETSOCKOPT,
                [3, level as u64, name as u64, 0, 0, 0],
            )
        };
        assert_eq!(so(libc::IPPROTO_IPV6, libc::IPV6_RTHDR as u32), DENY);
        assert_eq!(so(libc::IPPROTO_IPV6, IPV6_2292RTHDR), DENY);
        assert_eq!(so(libc::IPPROTO_IPV6, IPV6_2292PKTOPTIONS), DENY);
        assert_eq!(so(libc::IPPROTO_IP, libc::IP_OPTIONS as u32), DENY);
        assert_eq!(so(libc::IPPROTO_IP, libc::IP_RETOPTS as u32), DENY);
        assert_eq!(so(libc::IPPROTO_IP, libc::IP_TTL as u32), ALLOW);
        assert_eq!(so(libc::SOL_SOCKET, libc::SO_REUSEADDR as u32), ALLOW);
        assert_eq!(so(libc::IPPROTO_TCP, libc::TCP_NODELAY as u32), ALLOW);
    }

    #[test]
    fn compat_setsockopt_entries_are_checked_too() {
        let rthdr = [
            3,
            libc::IPPROTO_IPV6 as u64,
            libc::IPV6_RTHDR as u64,
            0,
            0,
            0,
        ];
        let ipopt = [3, libc::IPPROTO_IP as u64, libc::IP_OPTIONS as u64, 0, 0, 0];
        let ttl = [3, libc::IPPROTO_IP as u64, libc::IP_TTL as u64, 0, 0, 0];
        assert_eq!(call(AUDIT_ARCH_I386, NR_I386_SETSOCKOPT, ipopt), DENY);
        assert_eq!(call(AUDIT_ARCH_I386, NR_I386_SETSOCKOPT, rthdr), DENY);
        assert_eq!(call(AUDIT_ARCH_I386, NR_I386_SETSOCKOPT, ttl), ALLOW);
        assert_eq!(call(AUDIT_ARCH_X86_64, NR_X32_SETSOCKOPT, rthdr), DENY);
        assert_eq!(call(AUDIT_ARCH_X86_64, NR_X32_SETSOCKOPT, ttl), ALLOW);
    }

    #[test]
    fn i386_has_no_socketcall_and_no_inet() {
        assert_eq!(call(AUDIT_ARCH_I386, NR_I386_SOCKETCALL, [1; 6]), DENY);
        assert_eq!(
            call(AUDIT_ARCH_I386, NR_I386_SOCKET, [2, 1, 0, 0, 0, 0]),
            DENY
        );
        assert_eq!(
            call(AUDIT_ARCH_I386, NR_I386_SOCKET, [1, 1, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(call(AUDIT_ARCH_I386, 3, [0; 6]), ALLOW);
        assert_eq!(call(AUDIT_ARCH_X86_64, 0, [0; 6]), ALLOW);
    }
}
