//! The HTTP/1.1 fast lane: plaintext requests without a body are parsed and answered here;
//! everything else is handed to hyper on the same socket, with the bytes read so far.
//!
//! Why: on the measured path (bench/ceiling.sh) a tokio proxy with no HTTP library moved
//! 1.22x an nginx proxy's requests/s while tollgate on hyper moved 0.81x; hyper's HTTP/1
//! server (buffers, dispatch, a boxed future per request) was most of the difference.
//!
//! What the lane takes, and only that (`Parsed::simple`): HTTP/1.1; an origin-form target; exactly one
//! Host; no body (no Transfer-Encoding, Content-Length absent or 0); no Expect, no Upgrade;
//! a Connection header naming at most `keep-alive`; names, values and target that the `http`
//! types accept. Any other request, a parse error, or a head over `max_request_header_bytes`
//! goes to hyper, which answers exactly as it always did (400, 431, bodies, HTTP/1.0, close)
//! and keeps the connection until it next parks (`idle`).
//!
//! Timers: a request head must be complete within the header read timeout of its first byte
//! (silently closed otherwise, like hyper), and a connection waiting for its next request
//! closes after that timeout or is handed back to be parked after `PARK_AFTER_MS`, whichever
//! is first. The idle timer is re-armed only when it fires, not per request.

use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Method, Uri};
use tokio::io::{AsyncReadExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::encode::{write_response, WriteError};
use super::idle::PARK_AFTER_MS;
use super::Handler;
use crate::body::RequestBody;
use crate::headers::{Headers, Inbound, RawHeaders};
use crate::parsed_value::HeaderSpans;
use crate::proxy::Connection;

/// The read buffer a busy connection starts with; it grows up to the head size limit.
const READ_BUFFER_BYTES: usize = 4096;
/// Headers parsed per request at most; more goes to hyper (which answers 431). hyper's own
/// default is 100.
const MAX_HEADERS: usize = 100;

/// How a turn in the lane ended.
pub enum Lane {
    /// The connection is finished: closed by the client, an error, a timeout, or shutdown.
    Closed,
    /// No request for [`PARK_AFTER_MS`]: the socket may wait without buffers.
    Idle,
    /// A request the lane does not take: hyper serves the connection from these bytes on.
    Handoff(Bytes),
}

/// What a turn needs besides the socket.
pub struct Turn<'a, H> {
    pub handler: &'a Arc<H>,
    pub conn: Connection,
    pub idle_limit: Duration,
    pub max_head: usize,
    pub stop: &'a mut watch::Receiver<bool>,
}

/// Serves requests from `stream` (after the already-read `prefix`) until one of [`Lane`].
pub async fn serve<H: Handler>(stream: &mut TcpStream, prefix: Bytes, turn: Turn<'_, H>) -> Lane {
    let Turn {
        handler,
        conn,
        idle_limit,
        max_head,
        stop,
    } = turn;
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES.max(prefix.len()));
    buf.extend_from_slice(&prefix);
    let mut out = Vec::with_capacity(READ_BUFFER_BYTES);
    let mut parsed = Parsed::default();
    let park_after = Duration::from_millis(PARK_AFTER_MS);
    let wait_limit = park_after.min(idle_limit);
    let mut last_active = Instant::now();
    let idle_timer = tokio::time::sleep_until(last_active + wait_limit);
    tokio::pin!(idle_timer);
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    let mut stopping = false;
    loop {
        if buf.is_empty() {
            // Wait for the next request, shutdown, or the idle limit.
            buf.reserve(READ_BUFFER_BYTES);
            let woke = poll_fn(|cx| {
                if !stopping && stopped.as_mut().poll(cx).is_ready() {
                    stopping = true;
                }
                if stopping {
                    return Poll::Ready(Wake::Stop);
                }
                match crate::readiness::poll_read_drained(stream, cx, &mut buf) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Wake::Closed),
                    Poll::Ready(Ok(_)) => return Poll::Ready(Wake::Read),
                    Poll::Pending => {}
                }
                while idle_timer.as_mut().poll(cx).is_ready() {
                    let deadline = last_active + wait_limit;
                    if Instant::now() >= deadline {
                        return Poll::Ready(Wake::Idle);
                    }
                    idle_timer.as_mut().reset(deadline);
                }
                Poll::Pending
            })
            .await;
            match woke {
                Wake::Stop | Wake::Closed => return Lane::Closed,
                Wake::Idle if wait_limit < park_after => return Lane::Closed,
                Wake::Idle => return Lane::Idle,
                Wake::Read => {}
            }
        }
        // Read until one request head is complete; the clock is read only for a head that
        // needs more than one read.
        let mut incomplete_since = None;
        let request = loop {
            match take(&mut buf, max_head, &mut parsed) {
                Take::Request(request) => break request,
                Take::Handoff => return Lane::Handoff(buf.freeze()),
                Take::More => {}
            }
            let since = *incomplete_since.get_or_insert_with(Instant::now);
            buf.reserve(READ_BUFFER_BYTES);
            let read = tokio::time::timeout_at(since + idle_limit, stream.read_buf(&mut buf));
            match read.await {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, failed, or the head did not arrive in time (hyper closes silently too).
                _ => return Lane::Closed,
            }
        };
        let head_request = request.method == Method::HEAD;
        // A client that hangs up drops its request, upstream exchange included, as hyper does.
        // Pinned where it is built: the request path's future is kilobytes, and handing it
        // on by value would copy it again.
        let call = Arc::clone(handler).call_lane(request, conn);
        tokio::pin!(call);
        let Some(response) = unless_gone(stream, call.as_mut()).await else {
            return Lane::Closed;
        };
        if !stopping {
            stopping = poll_fn(|cx| Poll::Ready(stopped.as_mut().poll(cx).is_ready())).await;
        }
        match write_response(stream, &mut out, response, head_request, stopping).await {
            Ok(()) if !stopping => {}
            Ok(()) | Err(WriteError::Body) => return Lane::Closed,
            Err(WriteError::Io(e)) => {
                tracing::debug!(error = %e, peer = %conn.peer, "writing a response failed");
                return Lane::Closed;
            }
        }
        last_active = Instant::now();
    }
}

/// Polls `work` to its end, unless the client hangs up first (`None`). Bytes the client
/// pipelines meanwhile stay in the socket for the next turn.
pub async fn unless_gone<F: Future>(stream: &TcpStream, work: F) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    let mut watching = true;
    poll_fn(|cx| {
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(done));
        }
        if watching {
            let mut byte = [0u8; 1];
            let mut probe = ReadBuf::new(&mut byte);
            match stream.poll_peek(cx, &mut probe) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                // A next request: the client is there, and its bytes wait in the socket.
                Poll::Ready(Ok(_)) => watching = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

enum Wake {
    Read,
    Closed,
    Idle,
    Stop,
}

// Returned and matched at once, never stored: boxing the request would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Take {
    Request(Inbound<RawHeaders>),
    /// Not complete yet, and under the size limit.
    More,
    /// For hyper: `buf` is left whole.
    Handoff,
}

/// The next request out of `buf`, if the lane takes it. Not async: httparse's slots (3.2
/// KiB) never become part of the connection's future; `parsed` is the connection's, filled
/// in place and reused.
fn take(buf: &mut BytesMut, max_head: usize, parsed: &mut Parsed) -> Take {
    match parse(buf, parsed) {
        Ok(true) if parsed.simple => {}
        Ok(false) if buf.len() < max_head => return Take::More,
        // Over the limit, not HTTP/1 as the lane knows it, or not simple: hyper answers.
        _ => return Take::Handoff,
    }
    let head = buf.split_to(parsed.len);
    match build(parsed, head) {
        Ok(request) => Take::Request(request),
        Err(head) => {
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Take::Handoff
        }
    }
}

/// Where a parsed head's parts lie in the buffer, so they can be shared instead of copied.
#[derive(Default)]
struct Parsed {
    len: usize,
    method: (usize, usize),
    target: (usize, usize),
    headers: HeaderSpans,
    /// The lane takes this request (see the module comment).
    simple: bool,
}

/// `Ok(true)`: a complete head, described in `parsed`. `Ok(false)`: not complete yet.
/// `Err`: not an HTTP/1.1 request the lane can read (hyper answers it).
fn parse(buf: &[u8], parsed: &mut Parsed) -> Result<bool, ()> {
    // Left uninitialised: httparse writes the slots it fills, and 100 of them are 3.2 KiB.
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(_) => return Err(()),
    };
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start, start + s.len())
    };
    // Not HTTP/1.1 with a method and a target: hyper's to answer, as for a parse error.
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Err(());
    };
    parsed.len = len;
    parsed.method = span(method.as_bytes());
    parsed.target = span(target.as_bytes());
    parsed.simple = target.starts_with('/') && method != "CONNECT";
    parsed.headers.clear();
    let mut hosts = 0;
    for h in req.headers.iter() {
        parsed
            .headers
            .push((span(h.name.as_bytes()), span(h.value)));
        let name = h.name.as_bytes();
        let plain = if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            true
        } else if name.eq_ignore_ascii_case(b"content-length") {
            h.value == b"0"
        } else if name.eq_ignore_ascii_case(b"connection") {
            h.value.eq_ignore_ascii_case(b"keep-alive")
        } else {
            !(name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"expect")
                || name.eq_ignore_ascii_case(b"upgrade"))
        };
        parsed.simple &= plain;
    }
    parsed.simple &= hosts == 1;
    Ok(true)
}

/// The request the handler sees, sharing `head`'s bytes; `Err(head)` if the `http` types
/// refuse a part (hyper then answers 400 the way it always has). Header names and values are
/// left in `head`: httparse accepts in them only what the `http` types accept
/// (`headers::raw`, `parsed_value`).
fn build(parsed: &Parsed, head: BytesMut) -> Result<Inbound<RawHeaders>, Bytes> {
    let method = head
        .get(parsed.method.0..parsed.method.1)
        .and_then(|m| Method::from_bytes(m).ok());
    let Some(method) = method else {
        return Err(head.freeze());
    };
    // Lower-cases the names in place: a handoff to hyper after that reads the same request.
    let mut headers = RawHeaders::new(head, &parsed.headers).map_err(BytesMut::freeze)?;
    let target = headers.head().get(parsed.target.0..parsed.target.1);
    let Some(uri) = target.and_then(|t| Uri::from_maybe_shared(headers.head().slice_ref(t)).ok())
    else {
        return Err(headers.head().clone());
    };
    // A Content-Length of 0 says there is no body, and the lane's body is empty: it adds
    // nothing the upstream needs, and hyper's client would frame the empty body itself.
    headers.remove(&header::CONTENT_LENGTH);
    Ok(Inbound {
        method,
        uri,
        headers,
        body: RequestBody::Empty,
    })
}
