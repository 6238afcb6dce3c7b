//! HTTP/1.1 message framing for the layer-7 proxy: read one head, learn where the body ends,
//! copy exactly that body.
//!
//! Threat: request smuggling. The proxy decides on the requests it sees; the upstream must see
//! the same ones. So framing is strict: a message with both `Content-Length` and
//! `Transfer-Encoding`, several lengths, a coding other than `chunked`, or a malformed chunk
//! line is refused, never guessed at.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Largest request or response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head.
pub const MAX_HEADERS: usize = 100;
/// Time a head may take from its first byte to its blank line. A client trickling bytes
/// (slowloris) loses its connection after this, however short the gaps.
pub const HEAD_TIME: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("head not complete within {0:?} of its first byte")]
    Slow(Duration),
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn malformed(why: impl Into<String>) -> HttpError {
    HttpError::Malformed(why.into())
}

/// A byte stream with a read buffer; writes go straight to the stream.
pub struct Conn<S> {
    pub stream: S,
    buf: Vec<u8>,
    pos: usize,
}

impl<S: Read + Write> Conn<S> {
    pub fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Read more into the buffer; 0 at end of stream.
    fn fill(&mut self) -> std::io::Result<usize> {
        // What was consumed goes before more comes: the buffer holds at most one head or
        // line plus one read.
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    /// The next head (through the blank line), or `None` at a clean end of stream.
    pub fn read_head(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        self.read_head_within(Duration::MAX, &mut |_| {})
    }

    /// As `read_head`, but the head must complete within `limit` of its first byte.
    /// `pace` sets the stream's read timeout: the time left while a head is arriving, `None`
    /// to restore the idle timeout once it is complete.
    pub fn read_head_within(
        &mut self,
        limit: Duration,
        pace: &mut dyn FnMut(Option<Duration>),
    ) -> Result<Option<Vec<u8>>, HttpError> {
        let mut started = (!self.buffered().is_empty()).then(Instant::now);
        let result = self.scan_head(limit, &mut started, pace);
        if started.is_some() {
            pace(None);
        }
        match result {
            Err(HttpError::Io(e))
                if started.is_some()
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                Err(HttpError::Slow(limit))
            }
            r => r,
        }
    }

    fn scan_head(
        &mut self,
        limit: Duration,
        started: &mut Option<Instant>,
        pace: &mut dyn FnMut(Option<Duration>),
    ) -> Result<Option<Vec<u8>>, HttpError> {
        // Where the search resumes: a head trickled in byte by byte is scanned once.
        let mut scanned = 0usize;
        loop {
            if let Some(end) = find(&self.buffered()[scanned..], b"\r\n\r\n") {
                let end = scanned + end;
                let head = self.buffered()[..end + 4].to_vec();
                self.consume(end + 4);
                return Ok(Some(head));
            }
            if self.buffered().len() > MAX_HEAD {
                return Err(HttpError::TooLarge);
            }
            scanned = self.buffered().len().saturating_sub(3);
            if let Some(t) = started {
                let left = limit.saturating_sub(t.elapsed());
                if left.is_zero() {
                    return Err(HttpError::Slow(limit));
                }
                pace(Some(left));
            }
            if self.fill()? == 0 {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(malformed("the stream ended inside a head"))
                };
            }
            started.get_or_insert_with(Instant::now);
        }
    }

    /// One line ending in CRLF, without it (chunk sizes, trailers).
    fn read_line(&mut self) -> Result<Vec<u8>, HttpError> {
        loop {
            if let Some(end) = find(self.buffered(), b"\r\n") {
                let line = self.buffered()[..end].to_vec();
                self.consume(end + 2);
                if line.iter().any(|b| *b == b'\r' || *b == b'\n') {
                    return Err(malformed("a bare CR or LF in a line"));
                }
                return Ok(line);
            }
            if self.buffered().len() > 4096 {
                return Err(malformed("line too long"));
            }
            if self.fill()? == 0 {
                return Err(malformed("the stream ended inside a line"));
            }
        }
    }

    /// Copy `n` bytes to `out` (or drop them when `out` is `None`).
    fn copy_n(&mut self, mut n: u64, out: &mut Option<&mut dyn Write>) -> Result<(), HttpError> {
        while n > 0 {
            if self.buffered().is_empty() && self.fill()? == 0 {
                return Err(malformed("the stream ended inside a body"));
            }
            let take = (self.buffered().len() as u64).min(n) as usize;
            if let Some(o) = out.as_mut() {
                o.write_all(&self.buffered()[..take])?;
            }
            self.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Copy everything to the end of the stream.
    fn copy_to_end(&mut self, out: &mut dyn Write) -> Result<(), HttpError> {
        loop {
            if !self.buffered().is_empty() {
                out.write_all(self.buffered())?;
                let n = self.buffered().len();
                self.consume(n);
            }
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }

    /// Copy a body framed as `body` to `out` (or drop it).
    pub fn copy_body(
        &mut self,
        body: Body,
        mut out: Option<&mut dyn Write>,
    ) -> Result<(), HttpError> {
        match body {
            Body::None => Ok(()),
            Body::Length(n) => self.copy_n(n, &mut out),
            Body::ToEnd => match out {
                Some(o) => self.copy_to_end(o),
                None => Err(malformed("a body to the end of the stream")),
            },
            Body::Chunked => loop {
                let line = self.read_line()?;
                let size = chunk_size(&line)?;
                if let Some(o) = out.as_mut() {
                    o.write_all(&line)?;
                    o.write_all(b"\r\n")?;
                }
                if size == 0 {
                    // No trailers: fields after the body are not decided on.
                    if !self.read_line()?.is_empty() {
                        return Err(malformed("trailer fields"));
                    }
                    if let Some(o) = out.as_mut() {
                        o.write_all(b"\r\n")?;
                    }
                    return Ok(());
                }
                self.copy_n(size, &mut out)?;
                if !self.read_line()?.is_empty() {
                    return Err(malformed("no CRLF after chunk data"));
                }
                if let Some(o) = out.as_mut() {
                    o.write_all(b"\r\n")?;
                }
            },
        }
    }

    /// What is buffered and not yet consumed (handed on when the connection becomes a tunnel).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buffered().to_vec();
        self.buf.clear();
        self.pos = 0;
        rest
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let text = std::str::from_utf8(line).map_err(|_| malformed("chunk line"))?;
    let mut parts = text.split(';');
    let hex = parts.next().unwrap_or("");
    // Extensions: `;name` or `;name=token`, nothing looser.
    for ext in parts {
        let (name, value) = ext.split_once('=').unwrap_or((ext, "x"));
        if !is_token(name) || !is_token(value) {
            return Err(malformed(format!("chunk extension {ext:?}")));
        }
    }
    if hex.is_empty() || hex.len() > 15 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(format!("chunk size {hex:?}")));
    }
    u64::from_str_radix(hex, 16).map_err(|_| malformed("chunk size"))
}

/// How a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
    /// A response delimited by the end of the connection.
    ToEnd,
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub minor: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Body,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether a header lists `token` (comma-separated, case-insensitive).
    pub fn lists(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The connection stays open after this exchange (HTTP/1.1 default).
    pub fn keep_alive(&self) -> bool {
        if self.lists("connection", "close") {
            return false;
        }
        self.minor >= 1 || self.lists("connection", "keep-alive")
    }
}

fn framing(headers: &[(String, Vec<u8>)]) -> Result<Option<Body>, HttpError> {
    let lengths: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_slice())
        .collect();
    let codings: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_slice())
        .collect();
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Ok(None),
        ([l], []) => {
            let s = std::str::from_utf8(l).map_err(|_| malformed("content-length"))?;
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 18 {
                return Err(malformed(format!("content-length {s:?}")));
            }
            Ok(Some(Body::Length(
                s.parse().map_err(|_| malformed("content-length"))?,
            )))
        }
        ([], [c]) if c.trim_ascii().eq_ignore_ascii_case(b"chunked") => Ok(Some(Body::Chunked)),
        ([], _) => Err(malformed("a transfer coding other than chunked")),
        (_, []) => Err(malformed("several content-length fields")),
        _ => Err(malformed("both content-length and transfer-encoding")),
    }
}

fn collect(raw: &[httparse::Header]) -> Result<Vec<(String, Vec<u8>)>, HttpError> {
    raw.iter()
        .map(|h| {
            if h.value
                .iter()
                .any(|b| *b == b'\r' || *b == b'\n' || *b == 0)
            {
                return Err(malformed(format!("header {}", h.name)));
            }
            Ok((h.name.to_string(), h.value.to_vec()))
        })
        .collect()
}

/// Every line ends in CRLF, and no CR or LF stands alone: parsers that accept a bare LF would
/// otherwise see a second message inside this head.
fn strict_lines(head: &[u8]) -> Result<(), HttpError> {
    for (i, b) in head.iter().enumerate() {
        let ok = match b {
            b'\r' => head.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && head[i - 1] == b'\r',
            _ => true,
        };
        if !ok {
            return Err(malformed("a bare CR or LF in the head"));
        }
    }
    Ok(())
}

fn complete(status: httparse::Result<usize>, head: &[u8]) -> Result<(), HttpError> {
    match status {
        Ok(httparse::Status::Complete(n)) if n == head.len() => Ok(()),
        Ok(httparse::Status::Complete(_)) => Err(malformed("bytes after the head")),
        Ok(httparse::Status::Partial) => Err(malformed("partial head")),
        Err(e) => Err(malformed(e.to_string())),
    }
}

/// Parse a request head strictly: CRLF lines, an upper-case method, an origin-form target
/// (`/path`; what the rules decide is what the server routes), exactly one `Host`, and no
/// `Transfer-Encoding` in HTTP/1.0.
pub fn parse_request(head: &[u8]) -> Result<Request, HttpError> {
    strict_lines(head)?;
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let status = req.parse(head);
    complete(status, head)?;
    let headers = collect(req.headers)?;
    let minor = req.version.unwrap_or(1);
    let body = framing(&headers)?.unwrap_or(Body::None);
    if minor == 0 && body == Body::Chunked {
        return Err(malformed("transfer-encoding in HTTP/1.0"));
    }
    let method = req.method.unwrap_or_default().to_string();
    // Methods are short words; a long one would only fill audit events.
    if method.is_empty() || method.len() > 32 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(malformed(format!("method {method:?}")));
    }
    let target = req.path.unwrap_or_default().to_string();
    if !target.starts_with('/') {
        return Err(malformed("only origin-form request targets (/path)"));
    }
    let hosts = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .count();
    if hosts != 1 {
        return Err(malformed("exactly one Host field"));
    }
    Ok(Request {
        method,
        target,
        minor,
        headers,
        body,
    })
}

/// A parsed response head: status and body framing (`head_request`: the request was HEAD).
#[derive(Debug, Clone, Copy)]
pub struct Response {
    pub status: u16,
    pub body: Body,
    pub close: bool,
    /// `Upgrade: websocket` (what a 101 must say for the tunnel to open).
    pub upgrade_websocket: bool,
}

pub fn parse_response(head: &[u8], head_request: bool) -> Result<Response, HttpError> {
    strict_lines(head)?;
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    let status = resp.parse(head);
    complete(status, head)?;
    let status = resp.code.unwrap_or(0);
    let headers = collect(resp.headers)?;
    let upgrade_websocket = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("upgrade") && v.trim_ascii().eq_ignore_ascii_case(b"websocket")
    });
    let close = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection")
            && v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    }) || resp.version == Some(0);
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        Body::None
    } else {
        framing(&headers)?.unwrap_or(Body::ToEnd)
    };
    Ok(Response {
        status,
        body,
        close: close || body == Body::ToEnd,
        upgrade_websocket,
    })
}

/// A complete response the proxy itself gives (403 with a JSON body).
pub fn reply(status: u16, reason: &str, json: &serde_json::Value, close: bool) -> Vec<u8> {
    let body = format!("{json}\n");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

#[cfg(test)]
mod tests;
