//! The pooled upstream client and the "send" stage.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::LengthLimitError;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::error::GatewayError;
use crate::routes::UpstreamCa;
use crate::state::Limits;

/// Upstream connections kept idle per upstream host; enough for a wrk run of a few hundred
/// connections without reconnect churn.
const POOL_MAX_IDLE_PER_HOST: usize = 1024;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A pooled HTTP/1.1 client over plain TCP or rustls with `tls`.
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
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// The upstream clients. They outlive config snapshots, so pooled connections survive
/// reloads: one client verifies against the system roots, and one per distinct `ca_file`
/// content (keyed by its digest, so an unchanged CA keeps its pool across reloads).
pub struct Clients {
    limits: Limits,
    system: HttpClient,
    by_ca: Mutex<HashMap<String, HttpClient>>,
}

impl Clients {
    pub fn new(limits: &Limits) -> Self {
        Clients {
            limits: limits.clone(),
            system: build_client(limits, crate::tls::client_config_with_system_roots()),
            by_ca: Mutex::new(HashMap::new()),
        }
    }

    /// Drops the clients (and their pools) of CA bundles no longer in `keep`.
    pub fn retain(&self, keep: &std::collections::HashSet<&str>) {
        let mut map = self.by_ca.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|digest, _| keep.contains(digest.as_str()));
    }

    /// The client for a route's upstream.
    pub fn get(&self, ca: Option<&UpstreamCa>) -> HttpClient {
        let Some(ca) = ca else {
            return self.system.clone();
        };
        // A poisoned lock only means another request panicked mid-insert; the map is
        // still consistent (insert is atomic from our point of view).
        let mut map = self.by_ca.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(ca.digest.clone())
            .or_insert_with(|| build_client(&self.limits, (*ca.config).clone()))
            .clone()
    }
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
            // hyper's top-level message ("client error (Connect)") hides the cause, such
            // as a refused connection or a failed certificate check: log the whole chain.
            let mut chain = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            tracing::warn!(error = %chain, "upstream request failed");
            Err((GatewayError::UpstreamUnavailable, kind))
        }
    }
}
