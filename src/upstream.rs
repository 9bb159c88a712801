//! The "send" stage: one request to a route's upstream over a pooled HTTP/1.1 connection
//! (`pool`), and the response body that gives the connection back when it ends.
//!
//! Remote JWKS fetches use hyper-util's pooled client instead (`build_client`): they are rare,
//! and that client's redirect-free, pooled behaviour is all they need.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub(crate) mod batched_write;
mod h1;
mod key;
mod pool;
mod stream;

use self::h1::H1Error;
pub use self::key::Key;
pub use self::pool::Pool;
use self::pool::{Conn, ConnectError};
use crate::body::{Body, BoxError};
use crate::error::GatewayError;
use crate::headers::{Headers, Outbound, Reply};
use crate::routes::Upstream;
use crate::state::Limits;

/// Connections the JWKS client keeps idle per host.
const JWKS_POOL_MAX_IDLE_PER_HOST: usize = 8;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A pooled HTTP/1.1 client over plain TCP or rustls with `tls` (remote JWKS).
pub fn build_client(limits: &Limits, tls: rustls::ClientConfig) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(limits.upstream_connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(limits.upstream_idle_timeout)
        .pool_max_idle_per_host(JWKS_POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// How an upstream exchange failed, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Connect,
    Timeout,
    Protocol,
}

/// Sends `request` (origin-form, with its Host set) to `upstream` and waits for the response
/// head at most `timeout`, connecting included.
pub async fn send<H: Headers>(
    pool: &Pool,
    upstream: &Upstream,
    request: Outbound<H>,
    timeout: Duration,
) -> Result<Reply<H>, (GatewayError, FailureKind)> {
    match tokio::time::timeout(timeout, exchange(pool, upstream, request)).await {
        // Dropping the exchange drops its connection: hyper cannot abandon a request
        // half-way through an HTTP/1.1 connection and keep the connection.
        Err(_) => Err((GatewayError::UpstreamTimeout, FailureKind::Timeout)),
        Ok(result) => result,
    }
}

async fn exchange<H: Headers>(
    pool: &Pool,
    upstream: &Upstream,
    request: Outbound<H>,
) -> Result<Reply<H>, (GatewayError, FailureKind)> {
    let key = upstream.pool_key.clone();
    // Both clients let every other request that is ready be read first: their upstream
    // writes then go out together, and the upstream (woken by the first) finds a batch
    // instead of one request (`batched_write`).
    if h1::takes(&request) {
        exchange_h1(pool, upstream, key, request).await
    } else {
        batched_write::behind_queued_tasks().await;
        // Boxed: unboxed, the state of hyper's client (the rarer path, requests with a body)
        // would size the future of every request, and every layer above copies that future
        // once as it starts: 1.8 KiB instead of 0.7 KiB here, five layers deep.
        let response = Box::pin(exchange_hyper(pool, upstream, key, request.into_request())).await;
        response.map(Reply::from_response)
    }
}

/// `exchange` for a request with a body, on hyper's HTTP/1.1 client.
async fn exchange_hyper(
    pool: &Pool,
    upstream: &Upstream,
    key: Key,
    mut request: Request<Body>,
) -> Result<Response<Body>, (GatewayError, FailureKind)> {
    let mut fresh = false;
    loop {
        let conn = if fresh {
            Box::pin(pool.connect(upstream, &key)).await
        } else {
            pool.checkout(upstream, &key).await
        };
        let mut conn = conn.map_err(|e| connect_failed(upstream, &e))?;
        let mut pending = std::pin::pin!(conn.sender.try_send_request(request));
        let result = std::future::poll_fn(|cx| {
            // This task drives the connection: it writes the request and reads the answer.
            conn.drive(cx);
            pending.as_mut().poll(cx)
        })
        .await;
        match result {
            Ok(response) => return Ok(respond(pool, key, conn, response).await),
            Err(mut e) => {
                // A pooled connection the upstream closed just as it was picked: the request
                // was not written, so it is safe to send it again on a new connection.
                if conn.reused {
                    if let Some(unsent) = e.take_message() {
                        tracing::debug!(error = %e.error(), "pooled upstream connection was closed; retrying");
                        request = unsent;
                        fresh = true;
                        continue;
                    }
                }
                return Err(exchange_failed(upstream, &e.into_error()));
            }
        }
    }
}

/// `exchange` for a request without a body, on the crate's own HTTP/1.1 client (`h1`).
async fn exchange_h1<H: Headers>(
    pool: &Pool,
    upstream: &Upstream,
    key: Key,
    request: Outbound<H>,
) -> Result<Reply<H>, (GatewayError, FailureKind)> {
    let mut fresh = false;
    loop {
        let conn = if fresh {
            Box::pin(pool.connect_raw(upstream, &key)).await
        } else {
            pool.checkout_raw(upstream, &key).await
        };
        let mut conn = conn.map_err(|e| connect_failed(upstream, &e))?;
        let (head, written) = match h1::write_request(&mut conn, &request).await {
            Ok(()) => (h1::read_head(&mut conn, &request.method).await, true),
            Err(e) => (Err(H1Error::Io(e)), false),
        };
        let head = match head {
            Ok(head) => head,
            // A pooled connection the upstream closed just as it was picked: a request it
            // cannot have answered may go again on a new connection. A write that failed
            // delivered no whole request; a close before any answer did not answer one, but
            // the request may have been acted on, so only idempotent methods go again
            // (RFC 9110 §9.2.2).
            Err(H1Error::Io(_) | H1Error::ClosedEarly)
                if conn.reused && (!written || request.method.is_idempotent()) =>
            {
                tracing::debug!("pooled upstream connection was closed; retrying");
                fresh = true;
                continue;
            }
            Err(e) => return Err(exchange_failed(upstream, &e)),
        };
        // Written and answered: the request's memory serves a later request (`recycle`).
        request.headers.recycle();
        let body = h1::RawBody::new(conn, head.framing, head.reusable, pool.clone(), key);
        let body = if http_body::Body::is_end_stream(&body) {
            // Already back in the pool: nothing to stream, nothing to box.
            crate::body::empty()
        } else {
            body.boxed()
        };
        return Ok(Reply {
            status: head.status,
            headers: head.headers,
            body,
        });
    }
}

/// The client's response: a body that keeps driving the connection, or, for an empty body,
/// the connection back in the pool at once.
async fn respond(
    pool: &Pool,
    key: Key,
    conn: Conn,
    response: Response<Incoming>,
) -> Response<Body> {
    let (parts, incoming) = response.into_parts();
    if incoming.is_end_stream() {
        let mut parting = Some((key, conn));
        std::future::poll_fn(|cx| {
            if let Some((key, conn)) = parting.take() {
                pool.release(key, conn, cx);
            }
            Poll::Ready(())
        })
        .await;
        return Response::from_parts(parts, incoming.map_err(Into::into).boxed());
    }
    let body = PooledBody {
        incoming,
        conn: Some(conn),
        pool: pool.clone(),
        key: Some(key),
    };
    Response::from_parts(parts, body.boxed())
}

/// An upstream response body: polling it drives the connection it arrives on, and the
/// connection returns to the pool once the last byte is through. A body dropped before its
/// end (the client went away) closes the connection instead: its framing is unknown.
struct PooledBody {
    incoming: Incoming,
    conn: Option<Conn>,
    pool: Pool,
    key: Option<Key>,
}

impl PooledBody {
    fn finish(&mut self, cx: &mut Context<'_>) {
        if let (Some(conn), Some(key)) = (self.conn.take(), self.key.take()) {
            self.pool.release(key, conn, cx);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut frame = Pin::new(&mut this.incoming).poll_frame(cx);
        if frame.is_pending() {
            // Asking for a frame told hyper we want one; let the connection read it now.
            if let Some(conn) = this.conn.as_mut() {
                conn.drive(cx);
            }
            frame = Pin::new(&mut this.incoming).poll_frame(cx);
        }
        let frame = ready!(frame);
        match &frame {
            Some(Ok(_)) if !this.incoming.is_end_stream() => {}
            Some(Err(_)) => this.conn = None,
            _ => this.finish(cx),
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

fn connect_failed(upstream: &Upstream, e: &ConnectError) -> (GatewayError, FailureKind) {
    tracing::warn!(upstream = %upstream.display, error = %chain(e), "upstream connect failed");
    (GatewayError::UpstreamUnavailable, FailureKind::Connect)
}

fn exchange_failed(
    upstream: &Upstream,
    e: &(dyn std::error::Error + 'static),
) -> (GatewayError, FailureKind) {
    // A request body over the cap surfaces here, wrapped by hyper: it is the client's
    // fault (413), not the upstream's.
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<LengthLimitError>() {
            return (GatewayError::BodyTooLarge, FailureKind::Protocol);
        }
        source = s.source();
    }
    tracing::warn!(upstream = %upstream.display, error = %chain(e), "upstream request failed");
    (GatewayError::UpstreamUnavailable, FailureKind::Protocol)
}

/// An error and its causes, joined: hyper's top-level message ("connection closed before
/// message completed") or an I/O error alone often hides the reason.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
