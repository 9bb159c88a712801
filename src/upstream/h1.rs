//! HTTP/1.1 to upstreams for requests without a body, without hyper's client: the request
//! head is written from the request's parts, the response head is parsed with httparse, and
//! the body is read as it streams, with the connection back in the pool at its last byte.
//!
//! Why: hyper's client hands every request to its connection through a channel and a
//! oneshot, and allocates for both; `bench/cpu-split.sh` puts that dispatch among the larger
//! parts of the user time per request. Requests with a body keep using hyper's client
//! (`pool::Conn`), which writes a body while it watches for an early answer.
//!
//! Reading responses follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked if
//! the last transfer coding is chunked; to the end of the connection if another coding is
//! named; else a Content-Length (several that disagree, or one that is not a number, is an
//! error); else to the end of the connection. Interim 1xx responses are skipped; a 101 is an
//! error (tollgate never asks to switch protocols). A connection goes back to the pool only
//! after an HTTP/1.1 response that did not say `close`, whose body had its own framing, and
//! with no byte left over.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use super::pool::{Key, Pool};
use super::stream::Stream;
use crate::body::{Body, BoxError};

/// The read buffer an exchange starts with; responses larger than this stream through it.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// The largest response head accepted from an upstream, 1xx heads included.
const UPSTREAM_MAX_HEAD_BYTES: usize = 64 * 1024;
/// Response headers parsed at most (hyper's client default is 100 too).
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (size, extensions) accepted in a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Trailer bytes accepted (and dropped) after a chunked body.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// An upstream connection used without hyper: the socket and bytes read but not yet used.
pub struct RawConn {
    pub stream: Stream,
    pub rbuf: BytesMut,
    /// Served an exchange before this one.
    pub reused: bool,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum H1Error {
    Io(io::Error),
    /// The connection ended before a byte of the response: on a reused connection, the
    /// upstream closed it as the request went out.
    ClosedEarly,
    Protocol(&'static str),
}

impl std::fmt::Display for H1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H1Error::Io(e) => write!(f, "upstream I/O failed: {e}"),
            H1Error::ClosedEarly => f.write_str("upstream closed the connection before answering"),
            H1Error::Protocol(what) => write!(f, "upstream broke HTTP/1.1: {what}"),
        }
    }
}

impl std::error::Error for H1Error {}

impl From<io::Error> for H1Error {
    fn from(e: io::Error) -> Self {
        H1Error::Io(e)
    }
}

/// Whether this client takes `request`: no body, and nothing that says otherwise.
pub fn takes(request: &Request<Body>) -> bool {
    use http_body::Body as _;
    request.body().is_end_stream()
        && !request.headers().contains_key(header::TRANSFER_ENCODING)
        && request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

/// The bytes `write_request` writes for `request`, at most.
pub fn head_size(request: &Request<Body>) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |pq| pq.as_str().len());
    let headers: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    // Method, spaces, version, `content-length: 0` and the CRLFs.
    request.method().as_str().len() + target + headers + 48
}

/// Writes the request head (origin-form target, Host set by the caller).
pub async fn write_request(
    conn: &mut RawConn,
    out: &mut Vec<u8>,
    request: &Request<Body>,
) -> io::Result<()> {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // Methods that usually carry a body say there is none, as hyper's client does.
    let says_empty = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) && !request.headers().contains_key(header::CONTENT_LENGTH);
    if says_empty {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    conn.stream.write_all(out).await?;
    // rustls keeps written bytes until flushed; plain TCP flushes nothing.
    conn.stream.flush().await
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// To the end of the connection.
    Close,
}

/// A parsed response head: the response without its body, how the body ends, and whether
/// the connection may serve another request afterwards.
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    pub reusable: bool,
}

/// Reads the final response head (interim 1xx responses skipped).
pub async fn read_head(conn: &mut RawConn, method: &Method) -> Result<Head, H1Error> {
    let mut any_byte = !conn.rbuf.is_empty();
    loop {
        if let Some(head) = parse_head(&mut conn.rbuf, method)? {
            return Ok(head);
        }
        if conn.rbuf.len() >= UPSTREAM_MAX_HEAD_BYTES {
            return Err(H1Error::Protocol("response head too large"));
        }
        conn.rbuf.reserve(READ_BUFFER_BYTES);
        let read = std::future::poll_fn(|cx| conn.stream.poll_read_drained(cx, &mut conn.rbuf));
        if read.await? == 0 {
            return Err(if any_byte {
                H1Error::Protocol("connection closed inside the response head")
            } else {
                H1Error::ClosedEarly
            });
        }
        any_byte = true;
    }
}

/// Parses one head out of `buf` (consumed); `None` if it is not complete yet.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, H1Error> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut slots);
        let len = match res.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(H1Error::Protocol("malformed response head")),
        };
        let code = res.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| H1Error::Protocol("invalid status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(H1Error::Protocol("unrequested protocol switch"));
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: not forwarded; the final answer follows.
            buf.advance(len);
            continue;
        }
        let http11 = res.version == Some(1);
        let base = buf.as_ptr() as usize;
        let mut spans = [((0usize, 0usize), (0usize, 0usize)); MAX_HEADERS];
        let count = res.headers.len();
        for (slot, h) in spans.iter_mut().zip(res.headers.iter()) {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            *slot = ((name, name + h.name.len()), (value, value + h.value.len()));
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for &((ns, ne), (vs, ve)) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[ns..ne])
                .map_err(|_| H1Error::Protocol("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| H1Error::Protocol("invalid header value"))?;
            headers.append(name, value);
        }
        let framing = framing(status, &headers, method)?;
        let close = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("close"));
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            reusable: http11 && !close && framing != Framing::Close,
        }));
    }
}

fn framing(status: StatusCode, headers: &HeaderMap, method: &Method) -> Result<Framing, H1Error> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(last) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let chunked_last = last
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked_last {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        // `Content-Length: 5, 5` and repeated equal headers are one length (RFC 9110 §8.6).
        for part in value.to_str().unwrap_or("x").split(',') {
            let part = part.trim();
            let n = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
                .ok_or(H1Error::Protocol("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Protocol("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes to go, then CRLF.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one; bytes seen so far.
    Trailers(usize),
}

/// A response body read off its connection; the connection returns to the pool at the end.
pub struct RawBody {
    conn: Option<RawConn>,
    state: State,
    /// Set once the exchange may be reused; cleared by anything that says otherwise.
    reusable: bool,
    pool: Pool,
    key: Option<Key>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

impl RawBody {
    pub fn new(conn: RawConn, framing: Framing, reusable: bool, pool: Pool, key: Key) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::Close => State::Close,
        };
        let mut body = RawBody {
            conn: Some(conn),
            state,
            reusable,
            pool,
            key: Some(key),
        };
        if body.state == State::Done {
            body.finish();
        }
        body
    }

    /// The body ended: the connection goes back, if it can serve another exchange.
    fn finish(&mut self) {
        self.state = State::Done;
        let (Some(mut conn), Some(key)) = (self.conn.take(), self.key.take()) else {
            return;
        };
        // Bytes after the end of the response: the upstream talks out of turn.
        if self.reusable && conn.rbuf.is_empty() {
            conn.reused = true;
            self.pool.release_raw(key, conn);
        }
    }

    /// Reads more bytes into the buffer; `Ok(false)` at the end of the connection.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        conn.rbuf.reserve(READ_BUFFER_BYTES);
        let n = ready!(conn.stream.poll_read_drained(cx, &mut conn.rbuf))?;
        Poll::Ready(Ok(n > 0))
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>> {
        loop {
            let buffered = self.conn.as_ref().map_or(0, |c| c.rbuf.len());
            match self.state {
                State::Done => return Poll::Ready(Ok(None)),
                State::Length(0) => {
                    self.finish();
                    return Poll::Ready(Ok(None));
                }
                State::Length(n) if buffered > 0 => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buffered);
                    let data = self.take(take);
                    self.state = State::Length(n - take as u64);
                    if self.state == State::Length(0) {
                        self.finish();
                    }
                    return Poll::Ready(Ok(Some(data)));
                }
                State::Close if buffered > 0 => return Poll::Ready(Ok(Some(self.take(buffered)))),
                State::Chunked(chunk) => match self.chunk(chunk)? {
                    Some(Some(data)) => return Poll::Ready(Ok(Some(data))),
                    Some(None) => continue,
                    None => {}
                },
                State::Length(_) | State::Close => {}
            }
            // Nothing usable buffered: read.
            if !ready!(self.fill(cx))? {
                if self.state == State::Close {
                    self.state = State::Done;
                    self.conn = None;
                    return Poll::Ready(Ok(None));
                }
                self.conn = None;
                return Poll::Ready(Err("upstream closed the connection inside the body".into()));
            }
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        match self.conn.as_mut() {
            Some(conn) => conn.rbuf.split_to(n).freeze(),
            None => Bytes::new(),
        }
    }

    /// One step of the chunked decoder over what is buffered: `Some(Some(data))` a frame,
    /// `Some(None)` progress without data, `None` more bytes needed.
    fn chunk(&mut self, at: Chunk) -> Result<Option<Option<Bytes>>, BoxError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err("chunked body without a connection".into());
        };
        let buf = &mut conn.rbuf;
        match at {
            Chunk::Size => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if buf.len() > MAX_CHUNK_LINE_BYTES {
                        return Err("chunk-size line too long".into());
                    }
                    return Ok(None);
                };
                let size = chunk_size(&buf[..end]).ok_or("malformed chunk size")?;
                buf.advance(end + 2);
                self.state = State::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
                Ok(Some(None))
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                self.state = State::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Some(Some(data)))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF".into());
                }
                buf.advance(2);
                self.state = State::Chunked(Chunk::Size);
                Ok(Some(None))
            }
            Chunk::Trailers(seen) => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if seen + buf.len() > MAX_TRAILER_BYTES {
                        return Err("chunked trailers too large".into());
                    }
                    return Ok(None);
                };
                buf.advance(end + 2);
                if end == 0 {
                    self.finish();
                } else {
                    // Trailer fields are dropped, as the client never asked for them.
                    self.state = State::Chunked(Chunk::Trailers(seen + end + 2));
                }
                Ok(Some(None))
            }
        }
    }
}

/// `1*HEXDIG [ chunk-ext ]` (RFC 9112 §7.1), without overflow.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    // Extensions (`;name=value`) are allowed and ignored; whitespace before them too.
    let rest_ok = rest.is_empty() || {
        let trimmed = rest.iter().position(|b| !matches!(b, b' ' | b'\t'));
        trimmed.is_some_and(|i| rest[i] == b';')
    };
    if !rest_ok {
        return None;
    }
    let text = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(text, 16).ok()
}

impl http_body::Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match ready!(self.step(cx)) {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => {
                self.state = State::Done;
                self.conn = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            State::Chunked(_) | State::Close => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_follow_rfc_9112() {
        assert_eq!(chunk_size(b"5"), Some(5));
        assert_eq!(chunk_size(b"1aF"), Some(0x1af));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"a;name=value"), Some(10));
        assert_eq!(chunk_size(b"a ;x"), Some(10));
        assert_eq!(chunk_size(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in [&b""[..], b"x", b"-1", b"5 x", b"10000000000000000", b";ext"] {
            assert_eq!(chunk_size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn head(text: &str, method: &Method) -> Result<Option<Head>, H1Error> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_head(&mut buf, method)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let get = Method::GET;
        let f = |t: &str| head(t, &get).unwrap().unwrap().framing;
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Framing::Close
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), Framing::Close);
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"),
            Framing::Empty
        );
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(h.unwrap().unwrap().framing, Framing::Empty);
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(head(bad, &get).is_err(), "{bad}");
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_reuse_is_decided_from_the_head() {
        let h = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.response.status(), 200);
        assert!(h.reusable);
        let close = |t: &str| !head(t, &Method::GET).unwrap().unwrap().reusable;
        assert!(close(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(close("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(close("HTTP/1.1 200 OK\r\n\r\n"));
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le", &Method::GET)
            .unwrap()
            .is_none());
    }
}
