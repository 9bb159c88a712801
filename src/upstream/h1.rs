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
use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header;
use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

use super::batched_write;
use super::stream::Stream;
use crate::headers::{visible, Headers, Outbound};
use crate::parsed_value::HeaderSpans;

mod body;

pub use self::body::RawBody;

/// The read buffer an exchange starts with; responses larger than this stream through it.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// The largest response head accepted from an upstream, 1xx heads included.
const UPSTREAM_MAX_HEAD_BYTES: usize = 64 * 1024;
/// Response headers parsed at most (hyper's client default is 100 too).
const MAX_HEADERS: usize = 100;

/// An upstream connection used without hyper: the socket and bytes read but not yet used.
pub struct RawConn {
    pub stream: Stream,
    pub rbuf: BytesMut,
    /// The request head being written; kept with the connection so that each exchange on
    /// it reuses the memory (a head with a token is about 1 KiB).
    pub wbuf: Vec<u8>,
    /// Where the last response head's headers lay, reused like `wbuf`.
    pub spans: HeaderSpans,
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
pub fn takes<H: Headers>(request: &Outbound<H>) -> bool {
    use http_body::Body as _;
    request.body.is_end_stream()
        && !request.headers.contains(&header::TRANSFER_ENCODING)
        && request
            .headers
            .values(&header::CONTENT_LENGTH)
            .all(|v| v == b"0")
}

/// The bytes `write_request` writes for `request`, at most.
fn head_size<H: Headers>(request: &Outbound<H>) -> usize {
    let target = request
        .uri
        .path_and_query()
        .map_or(1, |pq| pq.as_str().len());
    let headers: usize = request
        .headers
        .fields()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum();
    // Method, spaces, version, `content-length: 0` and the CRLFs.
    request.method.as_str().len() + target + headers + 48
}

/// Writes the request head (origin-form target, Host set by the caller), after every other
/// request ready in this turn of the event loop has been read (`batched_write`).
pub async fn write_request<H: Headers>(
    conn: &mut RawConn,
    request: &Outbound<H>,
) -> io::Result<()> {
    let out = &mut conn.wbuf;
    out.clear();
    // Sized once: growing it from empty cost about five reallocations per request.
    out.reserve(head_size(request));
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    let target = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers.fields() {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    // Methods that usually carry a body say there is none, as hyper's client does.
    let says_empty = matches!(request.method, Method::POST | Method::PUT | Method::PATCH)
        && !request.headers.contains(&header::CONTENT_LENGTH);
    if says_empty {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    match &mut conn.stream {
        Stream::Plain(tcp) => batched_write::write_all(tcp, &conn.wbuf).await,
        Stream::Tls(_) => {
            batched_write::behind_queued_tasks().await;
            conn.stream.write_all(&conn.wbuf).await?;
            // rustls keeps written bytes until flushed.
            conn.stream.flush().await
        }
    }
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

/// A parsed response head: the status and headers, how the body ends, and whether the
/// connection may serve another request afterwards.
pub struct Head<R> {
    pub status: StatusCode,
    pub headers: R,
    pub framing: Framing,
    pub reusable: bool,
}

/// Reads the final response head (interim 1xx responses skipped).
pub async fn read_head<R: Headers>(
    conn: &mut RawConn,
    method: &Method,
) -> Result<Head<R>, H1Error> {
    let mut any_byte = !conn.rbuf.is_empty();
    loop {
        if let Some(head) = parse_head(&mut conn.rbuf, &mut conn.spans, method)? {
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
fn parse_head<R: Headers>(
    buf: &mut BytesMut,
    spans: &mut HeaderSpans,
    method: &Method,
) -> Result<Option<Head<R>>, H1Error> {
    loop {
        // Left uninitialised: httparse writes the slots it fills, and 100 of them are 3.2 KiB.
        let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut slots);
        let len = match parsed {
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
        spans.clear();
        for h in res.headers.iter() {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            spans.push(((name, name + h.name.len()), (value, value + h.value.len())));
        }
        let head = buf.split_to(len);
        let headers =
            R::from_parsed(head, spans).ok_or(H1Error::Protocol("invalid header name"))?;
        let framing = framing(status, &headers, method)?;
        let close = headers
            .values(&header::CONNECTION)
            .filter_map(visible)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("close"));
        return Ok(Some(Head {
            status,
            headers,
            framing,
            reusable: http11 && !close && framing != Framing::Close,
        }));
    }
}

fn framing<R: Headers>(
    status: StatusCode,
    headers: &R,
    method: &Method,
) -> Result<Framing, H1Error> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(last) = headers.values(&header::TRANSFER_ENCODING).last() {
        let chunked_last = visible(last)
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked_last {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.values(&header::CONTENT_LENGTH) {
        // `Content-Length: 5, 5` and repeated equal headers are one length (RFC 9110 §8.6).
        for part in visible(value).unwrap_or("x").split(',') {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn head(text: &str, method: &Method) -> Result<Option<Head<HeaderMap>>, H1Error> {
        let mut buf = BytesMut::from(text.as_bytes());
        let raw = parse_head::<crate::headers::RawHeaders>(
            &mut buf.clone(),
            &mut HeaderSpans::new(),
            method,
        );
        let map = parse_head(&mut buf, &mut HeaderSpans::new(), method);
        // Both shapes of headers read a head the same way.
        match (&raw, &map) {
            (Ok(Some(r)), Ok(Some(m))) => {
                assert_eq!((r.framing, r.reusable), (m.framing, m.reusable));
            }
            (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
            _ => panic!("the two header shapes disagree on {text:?}"),
        }
        map
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
        assert_eq!(h.status, 200);
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
