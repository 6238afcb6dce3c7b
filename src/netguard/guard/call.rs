//! What a notified call asks for: its arguments read from the caller once, when the call is
//! decided (destinations, headers, control data), and its name for events.

use nix::errno::Errno;

use crate::netguard::calls::{self, Header, Mem, MMSGHDR_LEN};

/// What a notified call asks for. Destinations and control data are copied from the caller
/// once, when the call is decided; payloads are read when they are sent.
pub(super) enum Request {
    Connect(Vec<u8>),
    SendTo {
        buf: u64,
        len: usize,
        flags: i32,
        addr: Vec<u8>,
    },
    SendMsg(Header, i32),
    SendMmsg {
        vec: u64,
        hdrs: Vec<Header>,
        flags: i32,
    },
}

impl Request {
    pub(super) fn flags(&self) -> i32 {
        match self {
            Request::Connect(_) => 0,
            Request::SendTo { flags, .. }
            | Request::SendMsg(_, flags)
            | Request::SendMmsg { flags, .. } => *flags,
        }
    }
}

pub(super) fn read_request_args(mem: &Mem, nr: i64, a: &[u64; 6]) -> Result<Request, Errno> {
    match nr {
        libc::SYS_connect => Ok(Request::Connect(calls::read_sockaddr(mem, a[1], a[2])?)),
        libc::SYS_sendto => Ok(Request::SendTo {
            buf: a[1],
            len: (a[2] as usize).min(calls::MAX_DATA),
            flags: a[3] as i32,
            addr: calls::read_sockaddr(mem, a[4], a[5])?,
        }),
        libc::SYS_sendmsg => Ok(Request::SendMsg(
            calls::read_header(mem, a[1])?,
            a[2] as i32,
        )),
        libc::SYS_sendmmsg => {
            let n = (a[2] as u32 as usize).min(calls::MAX_MMSG);
            let hdrs = (0..n)
                .map(|i| calls::read_header(mem, a[1] + (i * MMSGHDR_LEN) as u64))
                .collect::<Result<_, _>>()?;
            Ok(Request::SendMmsg {
                vec: a[1],
                hdrs,
                flags: a[3] as i32,
            })
        }
        _ => Err(Errno::ENOSYS),
    }
}

pub(super) fn syscall_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_connect => "connect",
        libc::SYS_sendto => "sendto",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_sendmmsg => "sendmmsg",
        _ => "socket call",
    }
}
