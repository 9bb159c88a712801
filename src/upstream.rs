//! The pooled upstream client and the "send" stage.

use std::error::Error as _;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::LengthLimitError;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::error::GatewayError;
use crate::state::Limits;

/// Upstream connections kept idle per upstream host; enough for a wrk run of a few hundred
/// connections without reconnect churn.
const POOL_MAX_IDLE_PER_HOST: usize = 1024;

pub type HttpClient = Client<HttpConnector, Body>;

/// Builds the shared client. It outlives config snapshots so pooled connections survive
/// reloads.
pub fn client(limits: &Limits) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(limits.upstream_connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(limits.upstream_idle_timeout)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
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

/// Sends the request and waits for the response head at most `timeout`.
pub async fn send(
    client: &HttpClient,
    request: Request<Body>,
    timeout: Duration,
) -> Result<Response<Incoming>, (GatewayError, FailureKind)> {
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Err((GatewayError::UpstreamTimeout, FailureKind::Timeout)),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => {
            // A request body over the cap surfaces here, wrapped by hyper: it is the
            // client's fault (413), not the upstream's.
            let mut source = e.source();
            while let Some(s) = source {
                if s.is::<LengthLimitError>() {
                    return Err((GatewayError::BodyTooLarge, FailureKind::Protocol));
                }
                source = s.source();
            }
            let kind = if e.is_connect() {
                FailureKind::Connect
            } else {
                FailureKind::Protocol
            };
            tracing::debug!(error = %e, "upstream request failed");
            Err((GatewayError::UpstreamUnavailable, kind))
        }
    }
}
