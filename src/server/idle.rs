//! Plaintext HTTP/1.1 connections that give their buffers back while idle.
//!
//! hyper's HTTP/1 server keeps an 8 KiB write buffer and an 8 KiB read buffer for the whole
//! life of a connection, with no setting to release them (`INIT_BUFFER_SIZE` in hyper's
//! `proto/h1/io.rs`): 10,000 idle keep-alive connections hold 156 MiB that way. Here a
//! connection that has been idle for [`PARK_AFTER_MS`] is *parked*: hyper's connection is
//! taken apart with `into_parts` (which hands back the socket and any bytes read but not yet
//! parsed), and only the socket waits for the next request. When bytes arrive, a new hyper
//! connection is built on the same socket, fed the saved bytes first.
//!
//! "Idle" is decided from facts, not guesses: no request is in flight (counted from the
//! service call until the response body is dropped), hyper's last socket read found nothing,
//! and everything hyper wrote has been flushed. A connection that is busy keeps its hyper
//! connection, so the per-request path is unchanged under load.
//!
//! TLS connections are not parked (rustls holds decrypted bytes the socket cannot announce),
//! nor HTTP/2 connections (their streams and flow-control state live in the connection).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::fast::{self, Lane};
use super::Handler;
use crate::body::{Body, BoxError, RequestBody};
use crate::proxy::Connection;

/// How long a keep-alive connection must be idle before its hyper buffers are released.
/// Long against the gap between requests of a busy client (sub-millisecond on loopback, a
/// few ms across a data centre), so busy connections never pay for a rebuild.
pub const PARK_AFTER_MS: u64 = 500;

/// What the socket wrapper and the service tell the driving loop.
#[derive(Default)]
struct Flags {
    /// Requests handed to the service whose response body has not been dropped yet.
    in_flight: AtomicUsize,
    /// hyper's latest read found no bytes.
    read_pending: AtomicBool,
    /// hyper wrote since its latest successful flush.
    dirty: AtomicBool,
    /// Requests started on this socket (any connection instance).
    started: AtomicUsize,
}

impl Flags {
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.read_pending.load(Ordering::Relaxed)
            && !self.dirty.load(Ordering::Relaxed)
    }
}

/// The socket as hyper sees it: saved bytes first, and flags on every read, write and flush.
struct Tracked {
    inner: TcpStream,
    prefix: Bytes,
    flags: Arc<Flags>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            this.flags.read_pending.store(false, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.flags
            .read_pending
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.flags.dirty.store(true, Ordering::Relaxed);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.flags.dirty.store(true, Ordering::Relaxed);
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            this.flags.dirty.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Counts a request as in flight until its response body is dropped.
struct InFlight(Arc<Flags>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The response body, holding its request's [`InFlight`]. A struct rather than
/// `map_frame`: that combinator drops `size_hint`, and hyper needs it for Content-Length.
struct Guarded {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How one hyper connection instance ended.
enum Ended {
    /// The connection is finished (closed by either side, or an error).
    Closed,
    /// Idle long enough: the socket and the unparsed bytes, to be served again later.
    Parked(TcpStream, Bytes),
}

/// Serves a plaintext HTTP/1 connection until it closes, the idle limit passes, or shutdown.
/// `idle_limit` bounds both the wait for the next request and a request head trickling in.
pub async fn serve_h1<H: Handler>(
    stream: TcpStream,
    builder: Arc<http1::Builder>,
    handler: Arc<H>,
    conn: Connection,
    idle_limit: Duration,
    max_head: usize,
    mut stop: watch::Receiver<bool>,
) {
    let flags = Arc::new(Flags::default());
    let service = {
        let flags = Arc::clone(&flags);
        let handler = Arc::clone(&handler);
        service_fn(move |req: Request<Incoming>| {
            flags.in_flight.fetch_add(1, Ordering::Relaxed);
            flags.started.fetch_add(1, Ordering::Relaxed);
            let in_flight = InFlight(Arc::clone(&flags));
            let handler = Arc::clone(&handler);
            // Boxed for the same reason as in `serve_io`: the slot lives as long as the
            // connection.
            Box::pin(async move {
                let response = handler.call(req.map(RequestBody::Incoming), conn).await;
                Ok::<_, Infallible>(response.map(|inner| {
                    // Not boxed again: hyper takes any body type, and one box per response
                    // (the handler's) is enough.
                    Guarded {
                        inner,
                        _in_flight: in_flight,
                    }
                }))
            })
        })
    };
    let mut stream = stream;
    let mut prefix = Bytes::new();
    // Set while a request head is incomplete across parkings: hyper's own header timer
    // restarts with every new connection instance, this one does not.
    let mut partial_since: Option<(Instant, usize)> = None;
    let mut parked = false;
    loop {
        if prefix.is_empty() {
            partial_since = None;
            let woke = tokio::select! {
                ready = tokio::time::timeout(idle_limit, stream.readable()) => {
                    matches!(ready, Ok(Ok(())))
                }
                _ = stop.wait_for(|s| *s) => false,
            };
            if parked {
                handler.connection_parked(false);
                parked = false;
            }
            if !woke {
                return; // idle too long, the socket failed, or shutdown
            }
        } else {
            let started = flags.started.load(Ordering::Relaxed);
            match partial_since {
                Some((since, n)) if n == started && since.elapsed() >= idle_limit => return,
                Some((_, n)) if n == started => {}
                _ => partial_since = Some((Instant::now(), started)),
            }
        }
        // The fast lane first; hyper takes the requests it does not.
        let turn = fast::Turn {
            handler: &handler,
            conn,
            idle_limit,
            max_head,
            stop: &mut stop,
        };
        // Boxed: its buffers and the request in flight must not stay in a parked socket's task.
        match Box::pin(fast::serve(&mut stream, std::mem::take(&mut prefix), turn)).await {
            Lane::Closed => return,
            Lane::Idle => {
                handler.connection_parked(true);
                parked = true;
                crate::heap::freed();
                continue;
            }
            Lane::Handoff(bytes) => prefix = bytes,
        }
        flags.read_pending.store(false, Ordering::Relaxed);
        let io = Tracked {
            inner: stream,
            prefix,
            flags: Arc::clone(&flags),
        };
        let connection = builder.serve_connection(TokioIo::new(io), service.clone());
        // Boxed: hyper's connection is large, and a parked socket must not carry its slot.
        match Box::pin(drive(connection, &flags, &mut stop)).await {
            Ended::Closed => return,
            Ended::Parked(s, rest) => {
                stream = s;
                prefix = rest;
                if prefix.is_empty() {
                    handler.connection_parked(true);
                    parked = true;
                }
                crate::heap::freed();
            }
        }
    }
}

/// Polls one hyper connection until it ends or has been idle for [`PARK_AFTER_MS`].
async fn drive<S>(
    mut connection: http1::Connection<TokioIo<Tracked>, S>,
    flags: &Flags,
    stop: &mut watch::Receiver<bool>,
) -> Ended
where
    S: hyper::service::HttpService<Incoming, ResBody = Guarded>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let park_after = Duration::from_millis(PARK_AFTER_MS);
    let timer = tokio::time::sleep(park_after);
    tokio::pin!(timer);
    let mut armed = false;
    let mut stopping = false;
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    let idle = std::future::poll_fn(|cx| {
        if !stopping && stopped.as_mut().poll(cx).is_ready() {
            // Finish the request in flight, then close (no keep-alive).
            stopping = true;
            Pin::new(&mut connection).graceful_shutdown();
        }
        if let Poll::Ready(result) = Pin::new(&mut connection).poll(cx) {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return Poll::Ready(false);
        }
        if stopping || !flags.idle() {
            armed = false;
            return Poll::Pending;
        }
        if !armed {
            timer.as_mut().reset(Instant::now() + park_after);
            armed = true;
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        Poll::Pending
    })
    .await;
    if !idle {
        return Ended::Closed;
    }
    let parts = connection.into_parts();
    let tracked = parts.io.into_inner();
    // Bytes hyper read but has not parsed come first, then whatever our wrapper still held.
    let mut rest = parts.read_buf.to_vec();
    rest.extend_from_slice(&tracked.prefix);
    Ended::Parked(tracked.inner, Bytes::from(rest))
}
