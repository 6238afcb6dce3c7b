use super::*;

struct Pipe(std::io::Cursor<Vec<u8>>);
impl Read for Pipe {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}
impl Write for Pipe {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn conn(bytes: &str) -> Conn<Pipe> {
    Conn::new(Pipe(std::io::Cursor::new(bytes.as_bytes().to_vec())))
}

#[test]
fn keep_alive_requests_are_read_one_by_one_with_their_bodies() {
    let mut c = conn(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
             POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
             3;ext=1\r\nxyz\r\n0\r\n\r\n\
             GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let mut seen = Vec::new();
    while let Some(head) = c.read_head().unwrap() {
        let r = parse_request(&head).unwrap();
        let mut body = Vec::new();
        c.copy_body(r.body, Some(&mut body)).unwrap();
        seen.push((r.target, String::from_utf8(body).unwrap()));
    }
    assert_eq!(
        seen,
        vec![
            ("/a".to_string(), "abc".to_string()),
            ("/b".to_string(), "3;ext=1\r\nxyz\r\n0\r\n\r\n".to_string()),
            ("/c".to_string(), String::new()),
        ]
    );
}

#[test]
fn ambiguous_framing_is_refused() {
    for head in [
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET / HTTP/1.1\r\n folded\r\n\r\n",
        // A bare LF ends the head early for lenient servers: a second request hides here.
        "GET /repos/x HTTP/1.1\nHost: a\n\nDELETE /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /repos/x HTTP/1.1\r\nHost: a\r\n\nDELETE /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /repos/x HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
        "GET http://evil.test/repos/x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /repos/x HTTP/1.1\r\nHost: a\r\nHost: evil\r\n\r\n",
        "GET /repos/x HTTP/1.1\r\n\r\n",
        "get /repos/x HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(parse_request(head.as_bytes()).is_err(), "{head:?}");
    }
    for body in [
        "zz\r\n",
        "0\r\nX: y\n\nDELETE /admin HTTP/1.1\nHost: a\n\r\n\r\n",
        "0\r\nTrailer: x\r\n\r\n",
        "3\r\nabcXX0\r\n\r\n",
        "3;a=\"q\"\r\nabc\r\n0\r\n\r\n",
        "3\nabc\r\n0\r\n\r\n",
    ] {
        assert!(
            conn(body).copy_body(Body::Chunked, None).is_err(),
            "{body:?}"
        );
    }
}

#[test]
fn response_bodies_follow_status_and_method() {
    let ok = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).unwrap();
    assert_eq!(ok.body, Body::Length(5));
    let head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
    assert_eq!(head.body, Body::None);
    let none = parse_response(b"HTTP/1.1 304 Not Modified\r\n\r\n", false).unwrap();
    assert_eq!(none.body, Body::None);
    let eof = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
    assert_eq!(eof.body, Body::ToEnd);
    assert!(eof.close);
}

#[test]
fn a_trickled_chunked_body_keeps_the_buffer_small() {
    /// Returns its bytes a few at a time, each read ending inside a chunk line.
    struct Trickle(Vec<u8>, usize);
    impl Read for Trickle {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            let n = 5.min(self.0.len() - self.1).min(b.len());
            b[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let body = "1\r\nx\r\n".repeat(20_000) + "0\r\n\r\n";
    let mut c = Conn::new(Trickle(body.into_bytes(), 0));
    c.copy_body(Body::Chunked, None).unwrap();
    assert!(c.buf.capacity() < 64 * 1024, "{}", c.buf.capacity());
}

#[test]
fn a_trickled_head_runs_out_of_time() {
    struct Slowloris(usize);
    impl Read for Slowloris {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_millis(200));
            self.0 += 1;
            b[0] = b"GET / HTTP/1.1\r\nX: "[self.0.min(18) - 1];
            Ok(1)
        }
    }
    impl Write for Slowloris {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut paced = Vec::new();
    let mut c = Conn::new(Slowloris(0));
    let t = Instant::now();
    let limit = Duration::from_secs(1);
    let r = c.read_head_within(limit, &mut |d| paced.push(d));
    assert!(matches!(r, Err(HttpError::Slow(_))), "{r:?}");
    assert!(t.elapsed() < limit + Duration::from_millis(500));
    assert!(paced.iter().flatten().all(|d| *d <= limit));
    assert_eq!(paced.last(), Some(&None), "the idle timeout is restored");
}

#[test]
fn heads_are_bounded() {
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD + 10));
    assert!(matches!(conn(&big).read_head(), Err(HttpError::TooLarge)));
}
