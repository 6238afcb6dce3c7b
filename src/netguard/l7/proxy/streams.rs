//! The proxy's streams: reads bounded by a deadline (TLS reads a whole record in a loop),
//! sends that keep a slow peer from holding the proxy, lingering closes that do not lose an
//! error answer, and the plain tunnels (CONNECT-less websocket and TLS pass-through).

use super::*;

/// When the read in progress must end: shared between a client connection and whoever paces
/// it (the handshake, the head reader).
pub(super) type Clock = std::rc::Rc<std::cell::Cell<Option<Instant>>>;

/// The client's TCP stream, whose reads end at the clock's deadline when one is set. TLS
/// needs it: rustls reads the socket in a loop until a whole record has arrived, so a client
/// trickling one record byte by byte would otherwise outlast any check between reads.
pub struct Timed {
    sock: TcpStream,
    clock: Clock,
    /// A deadline set the socket's timeout, which must go back to `IDLE` once it clears.
    armed: bool,
}

impl Timed {
    pub(super) fn new(sock: TcpStream, clock: Clock) -> Timed {
        Timed {
            sock,
            clock,
            armed: false,
        }
    }
}

impl Read for Timed {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self.clock.get() {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                self.sock.set_read_timeout(Some(left))?;
                self.armed = true;
            }
            None if self.armed => {
                self.sock.set_read_timeout(Some(IDLE))?;
                self.armed = false;
            }
            None => {}
        }
        self.sock.read(b)
    }
}

impl Write for Timed {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.sock.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

/// The TCP connection under a stream (for timeouts).
pub trait Socket {
    fn socket(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Socket for Timed {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

impl Socket for rustls::StreamOwned<rustls::ServerConnection, Timed> {
    fn socket(&self) -> &TcpStream {
        &self.sock.sock
    }
}

impl Socket for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// Most bytes and time spent draining a client after its last answer.
pub(super) const LINGER_BYTES: usize = 1024 * 1024;
pub(super) const LINGER_TIME: Duration = Duration::from_secs(2);

/// Close after an error answer without losing it: closing with unread input resets the
/// connection, and a reset can discard the answer before the client reads it. So the write
/// side is shut first and what the client still sends is read and dropped, within bounds.
pub(super) fn linger(sock: &TcpStream) {
    if sock.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let began = Instant::now();
    let mut drained = 0usize;
    let mut chunk = [0u8; 16 * 1024];
    while drained < LINGER_BYTES {
        let left = LINGER_TIME.saturating_sub(began.elapsed());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*sock).read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Largest body sent in one piece with its head (one TLS record and one write for a small
/// message instead of several).
pub(super) const COALESCE: u64 = 16 * 1024;

/// Send a head and the body that follows it in `from` to `to`: small bodies with a known
/// length go in one write with the head.
pub(super) fn send<R: Read + Write>(
    head: &[u8],
    body: Body,
    from: &mut Conn<R>,
    to: &mut impl Write,
) -> Result<(), HttpError> {
    match body {
        Body::None => to.write_all(head)?,
        Body::Length(n) if n <= COALESCE => {
            let mut out = head.to_vec();
            from.copy_body(body, Some(&mut out))?;
            to.write_all(&out)?;
        }
        _ => {
            to.write_all(head)?;
            from.copy_body(body, Some(to))?;
        }
    }
    to.flush()?;
    Ok(())
}

pub(super) fn pump(mut from: TcpStream, mut to: TcpStream) {
    // A direction with nothing for TUNNEL_IDLE ends (the clones share the socket's timeout).
    let _ = from.set_read_timeout(Some(TUNNEL_IDLE));
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// An upgraded connection: bytes both ways, in one thread, until either side ends. The
/// streams may be TLS sessions (not splittable across threads), so both are polled.
pub(super) fn tunnel<C: Read + Write + Socket, U: Read + Write + Socket>(
    mut client: Conn<C>,
    mut up: Conn<U>,
) {
    let pending = client.take_buffered();
    if !pending.is_empty() && up.stream.write_all(&pending).is_err() {
        return;
    }
    let pending = up.take_buffered();
    if !pending.is_empty() && client.stream.write_all(&pending).is_err() {
        return;
    }
    let _ = (client.stream.flush(), up.stream.flush());
    // Short read timeouts turn the blocking streams into a polling loop.
    for s in [client.stream.socket(), up.stream.socket()] {
        if s.set_read_timeout(Some(TUNNEL_POLL)).is_err() {
            return;
        }
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut idle = Instant::now();
    loop {
        let mut moved = false;
        for dir in 0..2 {
            let (from, to): (&mut dyn Read, &mut dyn Write) = if dir == 0 {
                (&mut client.stream, &mut up.stream)
            } else {
                (&mut up.stream, &mut client.stream)
            };
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() || to.flush().is_err() {
                        return;
                    }
                    moved = true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        if moved {
            idle = Instant::now();
        } else if idle.elapsed() > TUNNEL_IDLE {
            return;
        }
    }
}
