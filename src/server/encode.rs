//! Writing a response on an HTTP/1.1 connection of the fast lane (`fast`): the status line,
//! the headers, the framing, and the body as it streams.
//!
//! The framing follows RFC 9112 §6 and what hyper's server does with the same response, so a
//! client cannot tell which of the two answered:
//! - no body for HEAD, 1xx, 204 and 304; 1xx and 204 never carry Content-Length (RFC 9110
//!   §8.6), HEAD and 304 keep the one they have;
//! - a Transfer-Encoding the response names is kept and ends in `chunked` (appended if the
//!   upstream's coding list did not end with it);
//! - otherwise a valid Content-Length is kept and held to; without one, the body's exact
//!   size if it has one, else `chunked`.
//!
//! A response without Date gets one (RFC 9110 §6.6.1), formatted once per second.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::StatusCode;
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::body::Body;
use crate::headers::{visible, Headers, Reply};

/// Bytes gathered before they are written: the head and the first frames of most responses
/// go out in one system call.
const WRITE_BUFFER_FLUSH_BYTES: usize = 64 * 1024;
/// A data frame at least this large is written from its own buffer instead of being copied.
const WRITE_DIRECT_BYTES: usize = 16 * 1024;

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes at all.
    None,
    /// Exactly this many bytes; `add` when the Content-Length header is ours to write.
    Length { n: u64, add: bool },
    /// Chunked; `add` when the Transfer-Encoding header is ours to write.
    Chunked { add: bool },
}

/// Why a response could not be written whole; the connection must close after it.
#[derive(Debug)]
pub enum WriteError {
    Io(io::Error),
    /// The body failed, or did not match its Content-Length: the client sees a cut body.
    Body,
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Writes `response` to `stream`. `head_request`: the request was HEAD (no body goes out);
/// `close`: announce `Connection: close` (the connection ends after this response).
pub async fn write_response<H: Headers>(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    response: Reply<H>,
    head_request: bool,
    close: bool,
) -> Result<(), WriteError> {
    let Reply {
        status,
        mut headers,
        mut body,
    } = response;
    let framing = framing(status, &mut headers, &body, head_request);
    out.clear();
    head(out, status, &headers, framing, close);
    // Encoded: memory worth keeping serves a later request (`recycle`).
    headers.recycle();
    if framing == Framing::None {
        // The body is not wanted (HEAD, 204, 304): dropping it is all there is to do.
        stream.write_all(out).await?;
        return Ok(());
    };
    let chunked = matches!(framing, Framing::Chunked { .. });
    let mut sent: u64 = 0;
    loop {
        // Take what is ready without waiting; write what is gathered before waiting for more.
        let ready = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        let frame = match ready {
            Some(frame) => frame,
            None => {
                flush(stream, out).await?;
                match super::fast::unless_gone(stream, body.frame()).await {
                    Some(frame) => frame,
                    // The client hung up: the body (and its upstream connection) goes.
                    None => return Err(WriteError::Body),
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed");
                let _ = flush(stream, out).await;
                return Err(WriteError::Body);
            }
            // Trailers are dropped, as hyper does when the client did not ask for them.
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        // An empty chunk would end a chunked body early.
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if let Framing::Length { n, .. } = framing {
            if sent > n {
                tracing::debug!(declared = n, "response body longer than its Content-Length");
                let _ = flush(stream, out).await;
                return Err(WriteError::Body);
            }
        }
        data_frame(stream, out, data, chunked).await?;
        if out.len() >= WRITE_BUFFER_FLUSH_BYTES {
            flush(stream, out).await?;
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    flush(stream, out).await?;
    match framing {
        Framing::Length { n, .. } if sent != n => {
            tracing::debug!(
                declared = n,
                sent,
                "response body shorter than its Content-Length"
            );
            Err(WriteError::Body)
        }
        _ => Ok(()),
    }
}

async fn data_frame(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    data: Bytes,
    chunked: bool,
) -> io::Result<()> {
    if chunked {
        write_hex(out, data.len());
        out.extend_from_slice(b"\r\n");
    }
    if data.len() >= WRITE_DIRECT_BYTES {
        flush(stream, out).await?;
        stream.write_all(&data).await?;
    } else {
        out.extend_from_slice(&data);
    }
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

async fn flush(stream: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Decides the framing, and fixes the headers that must change for it.
fn framing<H: Headers>(
    status: StatusCode,
    headers: &mut H,
    body: &Body,
    head_request: bool,
) -> Framing {
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        headers.remove(&header::CONTENT_LENGTH);
        headers.remove(&header::TRANSFER_ENCODING);
        return Framing::None;
    }
    if head_request || status == StatusCode::NOT_MODIFIED {
        // The headers describe the body a GET would have had (RFC 9110 §9.3.2, §15.4.5).
        if head_request
            && !headers.contains(&header::CONTENT_LENGTH)
            && !headers.contains(&header::TRANSFER_ENCODING)
        {
            if let Some(n) = body.size_hint().exact() {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        return Framing::None;
    }
    if headers.contains(&header::TRANSFER_ENCODING) {
        // Content-Length next to Transfer-Encoding means nothing (RFC 9112 §6.3).
        headers.remove(&header::CONTENT_LENGTH);
        let last = headers.values(&header::TRANSFER_ENCODING).last();
        let ends_chunked = last
            .and_then(visible)
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        if !ends_chunked {
            headers.append(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        return Framing::Chunked { add: false };
    }
    let declared = match headers.lone(&header::CONTENT_LENGTH) {
        Ok(Some(v)) => visible(v).and_then(|v| v.parse::<u64>().ok()),
        _ => None,
    };
    if let Some(n) = declared {
        return Framing::Length { n, add: false };
    }
    // None, several, or not a number: ours to decide from the body.
    headers.remove(&header::CONTENT_LENGTH);
    if body.is_end_stream() {
        return Framing::Length { n: 0, add: true };
    }
    match body.size_hint().exact() {
        Some(n) => Framing::Length { n, add: true },
        None => Framing::Chunked { add: true },
    }
}

/// The status line and the header block.
fn head<H: Headers>(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &H,
    framing: Framing,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers.fields() {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains(&header::DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length { n, add: true } => {
            out.extend_from_slice(b"content-length: ");
            write_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked { add: true } => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn write_hex(out: &mut Vec<u8>, mut n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

thread_local! {
    /// The IMF-fixdate of the current second, formatted once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn decide(status: u16, headers: &[(&str, &str)], body: Body, head: bool) -> (Framing, String) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let status = StatusCode::from_u16(status).unwrap();
        // The fast lane's headers decide and write the same as a map.
        let mut raw = crate::headers::RawHeaders::from_map(map.clone());
        let raw_framing = framing(status, &mut raw, &body, head);
        let mut raw_out = Vec::new();
        super::head(&mut raw_out, status, &raw, raw_framing, false);
        let framing = framing(status, &mut map, &body, head);
        let mut out = Vec::new();
        super::head(&mut out, status, &map, framing, false);
        assert_eq!((raw_framing, &raw_out), (framing, &out));
        let text = String::from_utf8(out).unwrap();
        // The date changes; the rest must not.
        let text = text
            .lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n");
        (framing, text)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        use crate::body::{empty, full};
        let (f, h) = decide(200, &[], full("hello"), false);
        assert_eq!(f, Framing::Length { n: 5, add: true });
        assert_eq!(h, "HTTP/1.1 200 OK\ncontent-length: 5\n");
        let (f, _) = decide(200, &[], empty(), false);
        assert_eq!(f, Framing::Length { n: 0, add: true });
        let (f, h) = decide(204, &[("content-length", "0")], empty(), false);
        assert_eq!(
            (f, h.as_str()),
            (Framing::None, "HTTP/1.1 204 No Content\n")
        );
        let (f, h) = decide(200, &[("content-length", "42")], empty(), true);
        assert_eq!(f, Framing::None);
        assert_eq!(h, "HTTP/1.1 200 OK\ncontent-length: 42\n");
        let (f, h) = decide(401, &[], full("nope"), true);
        assert_eq!(f, Framing::None);
        assert_eq!(h, "HTTP/1.1 401 Unauthorized\ncontent-length: 4\n");
        let (f, h) = decide(304, &[("etag", "\"x\"")], empty(), false);
        assert_eq!(
            (f, h.as_str()),
            (Framing::None, "HTTP/1.1 304 Not Modified\netag: \"x\"\n")
        );
        let (f, h) = decide(
            200,
            &[("transfer-encoding", "gzip"), ("content-length", "9")],
            full("x"),
            false,
        );
        assert_eq!(f, Framing::Chunked { add: false });
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\ntransfer-encoding: gzip\ntransfer-encoding: chunked\n"
        );
        let (f, h) = decide(
            200,
            &[("transfer-encoding", "gzip, chunked")],
            full("x"),
            false,
        );
        assert_eq!(f, Framing::Chunked { add: false });
        assert_eq!(h, "HTTP/1.1 200 OK\ntransfer-encoding: gzip, chunked\n");
        let (f, h) = decide(
            200,
            &[("content-length", "1"), ("content-length", "2")],
            full("abc"),
            false,
        );
        assert_eq!(f, Framing::Length { n: 3, add: true });
        assert_eq!(h, "HTTP/1.1 200 OK\ncontent-length: 3\n");
    }

    #[test]
    fn numbers_are_written_without_fmt() {
        for n in [0u64, 7, 10, 99, 100, 12_345, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for n in [0usize, 9, 10, 15, 16, 255, 4096, 65_535] {
            let mut out = Vec::new();
            write_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").as_bytes());
        }
    }
}
