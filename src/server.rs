//! Accept loop: HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port, a connection cap,
//! header-read timeout, HTTP/2 stream and header-list limits, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::body::RequestBody;
use http::{Request, Response};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

mod encode;
mod fast;
mod first_read;
mod idle;

use self::first_read::FirstReadDeadline;
use crate::body::Body;
use crate::headers::{Inbound, RawHeaders, Reply};
use crate::metrics::ConnectionGuard;
use crate::proxy::Connection;
use crate::state::Limits;

/// Pause after a failed accept (usually EMFILE): retrying at once would spin a core.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 50;
/// HTTP/2 PING interval on quiet connections, and how long a PING may go unanswered before
/// the connection is closed: dead peers must not hold connection slots.
const H2_KEEPALIVE_INTERVAL_SECS: u64 = 30;
const H2_KEEPALIVE_TIMEOUT_SECS: u64 = 10;

/// Something that answers requests on a listener.
pub trait Handler: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        req: Request<RequestBody>,
        conn: Connection,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// A request the HTTP/1.1 fast lane parsed (`fast`), its headers still in the bytes they
    /// arrived in. Handlers without a use for that take it as an `http` request.
    fn call_lane(
        self: Arc<Self>,
        req: Inbound<RawHeaders>,
        conn: Connection,
    ) -> impl Future<Output = Reply<RawHeaders>> + Send {
        let response = self.call(req.into_request(), conn);
        async move { Reply::from_response(response.await) }
    }

    /// TLS for new connections, looked up per connection so a reload can rotate the
    /// certificate without touching the listener. `None`: plaintext (h2c by prior knowledge).
    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        None
    }

    /// Something held for as long as an accepted connection lives (the data plane counts
    /// open connections with it).
    fn connection_opened(&self) -> Option<ConnectionGuard> {
        None
    }

    /// An idle HTTP/1 connection released its buffers (`true`) or woke up or closed (`false`).
    fn connection_parked(&self, _parked: bool) {}
}

/// The HTTP/1 settings, shared by both builders below.
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        // The header read timeout only works with a timer set (hyper docs).
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_request_header_bytes)
        .keep_alive(true);
    builder
}

/// The hyper connection builder with our limits applied (TLS, and plaintext HTTP/2).
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The header read timeout only works with a timer set (hyper docs).
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_request_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_bytes)
        .keep_alive_interval(Some(Duration::from_secs(H2_KEEPALIVE_INTERVAL_SECS)))
        .keep_alive_timeout(Duration::from_secs(H2_KEEPALIVE_TIMEOUT_SECS));
    builder
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and gives open
/// connections up to `grace` to finish their requests.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    // Shared, not copied into every connection task: each idle connection's task is part of
    // the per-connection memory (bench/connections.sh).
    let builder = Arc::new(builder(&limits));
    let h1 = Arc::new(http1_builder(&limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Parked HTTP/1 connections (`idle`) are not hyper connections the graceful watcher
    // knows: they hear about shutdown here.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // Take a permit before accepting: at the cap, new connections wait in the kernel's
        // backlog instead of being accepted and dropped.
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let tls = handler.tls();
        let counted = handler.connection_opened();
        let handshake_timeout = limits.header_read_timeout;
        let job = Job {
            builder: Arc::clone(&builder),
            h1: Arc::clone(&h1),
            handler: Arc::clone(&handler),
            watcher: graceful.watcher(),
            stop: stop_rx.clone(),
            limit: handshake_timeout,
            max_head: limits.max_request_header_bytes,
            peer,
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _counted = counted;
            // Each kind of connection runs in its own box: a task's future is as large as
            // its largest state, and a parked HTTP/1 socket must not carry the room of a
            // TLS handshake or an HTTP/2 connection (bench/connections.sh).
            let Some(tls) = tls else {
                match Box::pin(first_bytes(&stream, job.limit)).await {
                    FirstBytes::Http1 => Box::pin(job.http1(stream)).await,
                    // Nothing within the header read timeout (or the socket failed).
                    FirstBytes::Nothing => {}
                    FirstBytes::Other => Box::pin(job.auto(stream)).await,
                }
                return;
            };
            Box::pin(job.tls(stream, tls)).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = async {
        graceful.shutdown().await;
        // Every connection task holds a permit until it ends, parked ones included.
        let _ = permits.acquire_many(all).await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the shutdown grace"
        );
    }
}

/// What a connection task needs besides its socket.
struct Job<H> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    h1: Arc<http1::Builder>,
    handler: Arc<H>,
    watcher: hyper_util::server::graceful::Watcher,
    stop: tokio::sync::watch::Receiver<bool>,
    /// The header read timeout, also the deadline for the first byte and the TLS handshake.
    limit: Duration,
    /// The request head size limit (`max_request_header_bytes`).
    max_head: usize,
    peer: SocketAddr,
}

impl<H: Handler> Job<H> {
    /// Plaintext HTTP/1, with idle parking.
    async fn http1(self, stream: TcpStream) {
        let conn = Connection {
            peer: self.peer,
            tls: false,
        };
        idle::serve_h1(
            stream,
            self.h1,
            self.handler,
            conn,
            self.limit,
            self.max_head,
            self.stop,
        )
        .await;
    }

    /// Plaintext HTTP/2 by prior knowledge (or whatever the auto builder makes of a prefix).
    async fn auto(self, stream: TcpStream) {
        let conn = Connection {
            peer: self.peer,
            tls: false,
        };
        let io = TokioIo::new(FirstReadDeadline::new(stream, self.limit));
        serve_io(io, &self.builder, self.handler, conn, self.watcher).await;
    }

    /// TLS: the handshake shares the header-read deadline, so a client that opens a socket
    /// and never finishes TLS does not hold a connection slot forever.
    async fn tls(self, stream: TcpStream, tls: Arc<rustls::ServerConfig>) {
        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
        match tokio::time::timeout(self.limit, accept).await {
            Ok(Ok(stream)) => {
                let conn = Connection {
                    peer: self.peer,
                    tls: true,
                };
                let io = TokioIo::new(FirstReadDeadline::new(stream, self.limit));
                // Boxed: the handshake's state stays in this future's room otherwise.
                Box::pin(serve_io(
                    io,
                    &self.builder,
                    self.handler,
                    conn,
                    self.watcher,
                ))
                .await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, peer = %self.peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }
}

/// Serves one accepted connection (plain or TLS) until it ends or shutdown completes it.
async fn serve_io<I, H>(
    io: TokioIo<I>,
    builder: &auto::Builder<TokioExecutor>,
    handler: Arc<H>,
    conn: Connection,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let handler = Arc::clone(&handler);
        // Boxed: hyper keeps a slot the size of the service future in every connection for
        // its whole life, idle or not; the request path's future is large, so it lives on
        // the heap only while a request runs (measured with bench/connections.sh).
        Box::pin(async move {
            Ok::<_, Infallible>(handler.call(req.map(RequestBody::Incoming), conn).await)
        })
    });
    if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
        tracing::debug!(error = %e, peer = %conn.peer, "connection ended with an error");
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): h2c with prior knowledge starts with it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plaintext client's first bytes say.
enum FirstBytes {
    /// Not (a prefix of) the HTTP/2 preface: HTTP/1.
    Http1,
    /// The preface or a prefix of it, or a closed socket: the auto builder decides.
    Other,
    /// No byte within the header read timeout, or a socket error.
    Nothing,
}

/// Peeks at the first bytes without consuming them.
async fn first_bytes(stream: &TcpStream, limit: Duration) -> FirstBytes {
    let mut head = [0u8; 24];
    match tokio::time::timeout(limit, stream.peek(&mut head)).await {
        Ok(Ok(n)) if n > 0 && !H2_PREFACE.starts_with(&head[..n]) => FirstBytes::Http1,
        Ok(Ok(_)) => FirstBytes::Other,
        Ok(Err(_)) | Err(_) => FirstBytes::Nothing,
    }
}

/// Binds a listener, with a clear error naming the address.
pub async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
    })
}
