//! Upstream HTTP/1.1 connections, pooled per (scheme, authority, CA bundle) and driven by the
//! requests that use them.
//!
//! hyper-util's pooled client runs each upstream connection as a task of its own: every
//! request hops from the client connection's task to the upstream connection's task and back,
//! and one more task is spawned per request to put the connection back in the pool. Here a
//! checked-out connection is polled by the request's own task, while it waits for the
//! response head and then while the response body streams to the client, and goes back to
//! the pool when the body ends. A connection in the pool is polled by no one: a sweeper drops
//! those idle longer than `upstream_idle_timeout_ms`, and a checkout polls a connection once
//! before use, which finds one the upstream has closed in the meantime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::h1::RawConn;
use super::key::Key;
use super::stream::Stream;
use crate::body::Body;
use crate::prehashed::BuildPrehashed;

mod sweep;
use crate::routes::Upstream;

/// Idle connections kept per upstream; enough for a wrk run of a few hundred connections
/// without reconnect churn.
const POOL_MAX_IDLE_PER_UPSTREAM: usize = 1024;
/// How often idle connections are swept (parked, or closed after the idle timeout), at most.
const POOL_SWEEP_INTERVAL_MAX_MS: u64 = 1_000;
/// An idle connection unused this long gives up hyper's buffers (about 16 KiB: read and write)
/// and keeps only its socket, like the client side's parked connections (`server::idle`).
const UPSTREAM_PARK_AFTER_MS: u64 = 1_000;
/// The ALPN protocol offered to TLS upstreams: tollgate speaks HTTP/1.1 to upstreams.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Tls(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(_) => f.write_str("connect failed"),
            ConnectError::Tls(_) => f.write_str("TLS handshake failed"),
            ConnectError::Handshake(_) => f.write_str("HTTP/1.1 handshake failed"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Timeout => None,
            ConnectError::Io(e) | ConnectError::Tls(e) => Some(e),
            ConnectError::Handshake(e) => Some(e),
        }
    }
}

/// One upstream connection: the sending half and the I/O state machine hyper gives us.
pub struct Conn {
    pub sender: SendRequest<Body>,
    /// Boxed: hyper's connection state is large, and a request's future holds a `Conn` across
    /// several awaits; moving a box is moving a pointer.
    driver: Box<Connection<TokioIo<Stream>, Body>>,
    /// The driver resolved: the connection is closed (or failed) and must not be polled.
    done: bool,
    /// Served a request before this one: a send that fails before writing may be retried.
    pub reused: bool,
}

impl Conn {
    /// Lets the connection read and write what it can; `false` once it has ended.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.done {
            if let Poll::Ready(result) = Pin::new(&mut *self.driver).poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
                self.done = true;
            }
        }
        !self.done
    }
}

impl Conn {
    /// The bare socket of an idle connection; `None` if it ended or holds unread bytes (an
    /// upstream that talks out of turn is not trusted with the next request).
    fn park(self) -> Option<Stream> {
        if self.done {
            return None;
        }
        let parts = self.driver.into_parts();
        parts.read_buf.is_empty().then(|| parts.io.into_inner())
    }

    /// A connection again from a parked socket; hyper's HTTP/1 handshake does no I/O.
    fn unpark(stream: Stream, cx: &mut Context<'_>) -> Option<Conn> {
        let handshake = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream));
        match std::pin::pin!(handshake).poll(cx) {
            Poll::Ready(Ok((sender, driver))) => Some(Conn {
                sender,
                driver: Box::new(driver),
                done: false,
                reused: true,
            }),
            Poll::Ready(Err(_)) | Poll::Pending => None,
        }
    }
}

/// An idle connection: whole (hyper's, or this crate's own `h1` client's), or parked as its
/// socket after `UPSTREAM_PARK_AFTER_MS`. Either client can take any of them: a socket
/// between exchanges is just a socket.
enum Held {
    Live(Conn),
    Raw(RawConn),
    Parked(Stream),
}

impl Held {
    /// The bare socket, for the other client or for parking; `None` if it cannot be reused.
    fn into_stream(self) -> Option<Stream> {
        match self {
            Held::Live(conn) => conn.park(),
            Held::Raw(conn) => conn.rbuf.is_empty().then_some(conn.stream),
            Held::Parked(stream) => Some(stream),
        }
    }
}

struct Idle {
    held: Held,
    since: Instant,
}

/// Pools of upstream connections. They outlive config snapshots, so warm connections
/// survive reloads.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<HashMap<Key, Vec<Idle>, BuildPrehashed>>,
    /// TLS settings per CA digest (`""` for the system roots), with ALPN set.
    tls: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    system_roots: Arc<rustls::ClientConfig>,
}

impl Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Pool {
        let inner = Arc::new(Inner {
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(HashMap::default()),
            tls: Mutex::new(HashMap::new()),
            system_roots: Arc::new(crate::tls::client_config_with_system_roots()),
        });
        // Outside a runtime (`check`, unit tests) nothing is ever pooled, so nothing to sweep.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep::sweep(Arc::downgrade(&inner)));
        }
        Pool { inner }
    }

    /// An open connection for `upstream`: a pooled one if any is usable, else a new one.
    pub async fn checkout(&self, upstream: &Upstream, key: &Key) -> Result<Conn, ConnectError> {
        if let Some(conn) = std::future::poll_fn(|cx| Poll::Ready(self.inner.pooled(key, cx))).await
        {
            return Ok(conn);
        }
        // Boxed: a connect (TCP, TLS and HTTP handshakes) is a large future, and every
        // request's future would otherwise carry its room (and copy it) for the rare case.
        Box::pin(self.connect(upstream, key)).await
    }

    /// A new connection, bypassing the pool.
    pub async fn connect(&self, upstream: &Upstream, key: &Key) -> Result<Conn, ConnectError> {
        let stream = self.open(upstream, key).await?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        Ok(Conn {
            sender,
            driver: Box::new(driver),
            done: false,
            reused: false,
        })
    }

    /// An open connection for the `h1` client: a pooled one if any is usable, else a new one.
    pub async fn checkout_raw(
        &self,
        upstream: &Upstream,
        key: &Key,
    ) -> Result<RawConn, ConnectError> {
        if let Some(conn) =
            std::future::poll_fn(|cx| Poll::Ready(self.inner.pooled_raw(key, cx))).await
        {
            return Ok(conn);
        }
        Box::pin(self.connect_raw(upstream, key)).await
    }

    /// A new connection for the `h1` client, bypassing the pool.
    pub async fn connect_raw(
        &self,
        upstream: &Upstream,
        key: &Key,
    ) -> Result<RawConn, ConnectError> {
        Ok(RawConn {
            stream: self.open(upstream, key).await?,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            spans: Vec::new(),
            reused: false,
        })
    }

    /// Puts an `h1` connection whose exchange is complete back.
    pub fn release_raw(&self, key: Key, conn: RawConn) {
        self.put(key, Held::Raw(conn));
    }

    fn put(&self, key: Key, held: Held) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        if list.len() < POOL_MAX_IDLE_PER_UPSTREAM {
            list.push(Idle {
                held,
                since: Instant::now(),
            });
        }
    }

    /// A socket to the upstream: TCP, and TLS on top for https upstreams.
    async fn open(&self, upstream: &Upstream, key: &Key) -> Result<Stream, ConnectError> {
        let host = upstream.authority.host();
        // `Authority::host` keeps the brackets of an IPv6 literal; the resolver wants none.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = upstream
            .authority
            .port_u16()
            .unwrap_or(if key.tls() { 443 } else { 80 });
        let tcp =
            tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect((host, port)))
                .await
                .map_err(|_| ConnectError::Timeout)?
                .map_err(ConnectError::Io)?;
        let _ = tcp.set_nodelay(true);
        let stream = if key.tls() {
            let name = ServerName::try_from(host.to_owned()).map_err(|e| {
                ConnectError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            })?;
            let connector = tokio_rustls::TlsConnector::from(self.inner.tls_config(upstream));
            // The TLS handshake counts against the connect timeout too.
            let tls =
                tokio::time::timeout(self.inner.connect_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| ConnectError::Timeout)?
                    .map_err(ConnectError::Tls)?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        Ok(stream)
    }

    /// Puts a connection whose exchange is complete back, if it can serve another request.
    pub fn release(&self, key: Key, mut conn: Conn, cx: &mut Context<'_>) {
        // One more turn lets hyper finish the exchange and get ready for the next request.
        if !conn.drive(cx) || conn.sender.is_closed() {
            tracing::debug!("upstream connection ended with its exchange");
            return;
        }
        conn.reused = true;
        self.put(key, Held::Live(conn));
    }

    /// Drops the idle connections of upstreams for which `keep` says no (after a reload).
    pub fn retain(&self, keep: impl Fn(&Key) -> bool) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|key, _| keep(key));
        drop(idle);
        // TLS settings are rebuilt on the next connect (a clone of a config, once per CA
        // bundle): cheaper than tracking which digests the new config still names.
        let mut tls = self.inner.tls.lock().unwrap_or_else(|p| p.into_inner());
        tls.clear();
    }

    /// Idle connections now pooled, over all upstreams: (live, parked).
    pub fn idle_counts(&self) -> (usize, usize) {
        let idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let parked = idle
            .values()
            .flatten()
            .filter(|i| matches!(i.held, Held::Parked(_)))
            .count();
        let all: usize = idle.values().map(Vec::len).sum();
        (all - parked, parked)
    }
}

impl Inner {
    /// The most recently used idle connection of `key` within the idle timeout (expired ones
    /// met on the way are dropped); `None` when there is none.
    fn pop_unexpired(&self, key: &Key) -> Option<Held> {
        loop {
            let Idle { held, since } = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.get_mut(key)?.pop()?
            };
            if since.elapsed() < self.idle_timeout {
                return Some(held);
            }
            tracing::debug!("idle upstream connection expired");
        }
    }

    /// The most recently used idle connection still open and ready, dropping the others met.
    fn pooled(&self, key: &Key, cx: &mut Context<'_>) -> Option<Conn> {
        loop {
            let mut conn = match self.pop_unexpired(key)? {
                Held::Live(conn) => conn,
                other => match other.into_stream().and_then(|s| Conn::unpark(s, cx)) {
                    Some(conn) => conn,
                    None => continue,
                },
            };
            // Polling once reads what arrived while nobody looked: an EOF from an upstream
            // that closed the connection ends the driver here, before a request is lost on it.
            if !conn.drive(cx) {
                tracing::debug!("pooled upstream connection was closed");
                continue;
            }
            if !conn.sender.is_ready() {
                tracing::debug!("pooled upstream connection not ready");
                continue;
            }
            return Some(conn);
        }
    }

    /// Like `pooled`, for the `h1` client.
    fn pooled_raw(&self, key: &Key, cx: &mut Context<'_>) -> Option<RawConn> {
        loop {
            let mut conn = match self.pop_unexpired(key)? {
                Held::Raw(conn) => conn,
                other => match other.into_stream() {
                    Some(stream) => RawConn {
                        stream,
                        rbuf: BytesMut::new(),
                        wbuf: Vec::new(),
                        spans: Vec::new(),
                        reused: true,
                    },
                    None => continue,
                },
            };
            // One read while nobody looked: an upstream that closed the connection (or sent
            // bytes out of turn) is found here, before a request is lost on it. Costs no
            // system call when the socket has nothing (its readiness was cleared).
            conn.rbuf.reserve(64);
            match conn.stream.poll_read_drained(cx, &mut conn.rbuf) {
                Poll::Pending => return Some(conn),
                Poll::Ready(Ok(0)) => tracing::debug!("pooled upstream connection was closed"),
                Poll::Ready(Ok(_)) => {
                    tracing::debug!("pooled upstream connection sent bytes out of turn")
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "pooled upstream connection failed")
                }
            }
        }
    }

    fn tls_config(&self, upstream: &Upstream) -> Arc<rustls::ClientConfig> {
        let digest = upstream.ca.as_ref().map_or("", |c| c.digest.as_str());
        let mut map = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = map.get(digest) {
            return Arc::clone(config);
        }
        let mut config = match &upstream.ca {
            Some(ca) => (*ca.config).clone(),
            None => (*self.system_roots).clone(),
        };
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let config = Arc::new(config);
        map.insert(digest.to_owned(), Arc::clone(&config));
        config
    }
}
