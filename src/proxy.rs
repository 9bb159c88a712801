//! The request path, as an ordered list of named stages:
//!
//! 1. `sanitize`   — normalize the path; reject confusing targets (400).
//! 2. `match`      — longest-prefix route, then method (404, 405 + Allow).
//! 3. `extract`    — read the bearer token (400 invalid_request; 401 without a token).
//! 4. `verify`     — signature, issuer, audience, time claims (401 invalid_token).
//! 5. `authorize`  — the route's scopes (403 insufficient_scope).
//! 6. `build`      — body cap (413), header hygiene, identity headers, upstream URI.
//! 7. `send`       — pooled upstream request with the route's deadline (502, 504).
//! 8. `finish`     — strip hop-by-hop headers from the response.
//! 9. `log`        — one access-log line, on success and on every error.
//!
//! Authentication always runs before anything reaches the upstream, and a present but
//! invalid token is rejected even on `auth: optional` routes: a bad token never passes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::header;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::extract::{bearer_token, Credentials};
use crate::auth::VerifiedToken;
use crate::body::Body;
use crate::error::GatewayError;
use crate::forward::{self, ClientInfo};
use crate::routes::{AuthMode, Match, Route};
use crate::sanitize::normalize_path;
use crate::state::{SharedState, Snapshot};
use crate::upstream;

/// What one connection tells the stages about its client.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// The data-plane handler shared by every connection.
pub struct Gateway {
    pub state: Arc<SharedState>,
}

/// Facts gathered along the way for the access log.
#[derive(Default)]
struct Trace {
    route: Option<Arc<Route>>,
    sub: Option<String>,
}

impl Gateway {
    pub fn new(state: Arc<SharedState>) -> Self {
        Gateway { state }
    }

    /// Runs the stages for one request; never fails, never panics on request data.
    pub async fn handle(&self, req: Request<Incoming>, conn: Connection) -> Response<Body> {
        let started = Instant::now();
        let snapshot = self.state.snapshot();
        let method = req.method().clone();
        let raw_path = req.uri().path().to_owned();
        let mut trace = Trace::default();
        let result = self.stages(req, conn, &snapshot, &mut trace).await;
        let (response, reason) = match result {
            Ok(r) => (r, None),
            Err(e) => {
                let reason = e.reason();
                (e.into_response(&snapshot.challenge_prefix), Some(reason))
            }
        };
        // Stage 9: log. The path is logged without its query: queries can carry secrets.
        tracing::info!(
            target: "tollgate::access",
            method = %method,
            path = %raw_path,
            status = response.status().as_u16(),
            route = trace.route.as_ref().map(|r| r.id.as_str()).unwrap_or("-"),
            upstream = trace.route.as_ref().map(|r| r.upstream.display.as_str()).unwrap_or("-"),
            sub = trace.sub.as_deref().unwrap_or("-"),
            reason = reason.unwrap_or("-"),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            client = %conn.peer.ip(),
        );
        response
    }

    async fn stages(
        &self,
        req: Request<Incoming>,
        conn: Connection,
        snapshot: &Snapshot,
        trace: &mut Trace,
    ) -> Result<Response<Body>, GatewayError> {
        // 1. sanitize
        let path = normalize_path(req.uri().path())?.into_owned();
        // 2. match
        let route = match snapshot.routes.find(&path, req.method()) {
            Match::Found(route) => Arc::clone(route),
            Match::MethodNotAllowed(allow) => {
                return Err(GatewayError::MethodNotAllowed(allow.to_string()))
            }
            Match::NotFound => return Err(GatewayError::RouteNotFound),
        };
        trace.route = Some(Arc::clone(&route));
        // 3 + 4. extract and verify
        let token = authenticate(&req, &route, snapshot).await?;
        trace.sub = token
            .as_ref()
            .and_then(|t| t.claims.get("sub"))
            .and_then(|s| s.as_str())
            .map(str::to_string);
        // 5. authorize
        if let Some(t) = &token {
            if !route.scopes.is_satisfied_by(&t.claims) {
                return Err(GatewayError::InsufficientScope(
                    route.scope_challenge.clone(),
                ));
            }
        }
        // 6. build
        let upstream_req =
            build_upstream_request(req, &route, &path, token.as_ref(), snapshot, conn)?;
        // 7. send
        let client = self.state.clients().get(route.upstream.ca.as_ref());
        let response = upstream::send(&client, upstream_req, route.timeout)
            .await
            .map_err(|(e, kind)| {
                tracing::debug!(route = %route.id, ?kind, "upstream failure");
                e
            })?;
        // 8. finish
        Ok(finish(response))
    }
}

/// Stages 3 and 4: the token, if the route looks at tokens and the request carries one.
async fn authenticate(
    req: &Request<Incoming>,
    route: &Route,
    snapshot: &Snapshot,
) -> Result<Option<VerifiedToken>, GatewayError> {
    if route.auth == AuthMode::None {
        return Ok(None);
    }
    let credentials =
        bearer_token(req.headers()).map_err(|e| GatewayError::MalformedAuthorization(e.0))?;
    match credentials {
        Credentials::Missing if route.auth == AuthMode::Optional => Ok(None),
        Credentials::Missing => Err(GatewayError::MissingToken),
        Credentials::Bearer(token) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            crate::auth::authenticate(token, &snapshot.issuers, route.issuers.as_deref(), now)
                .await
                .map(Some)
                .map_err(GatewayError::InvalidToken)
        }
    }
}

/// Stage 6: the request the upstream receives.
fn build_upstream_request(
    req: Request<Incoming>,
    route: &Route,
    path: &str,
    token: Option<&VerifiedToken>,
    snapshot: &Snapshot,
    conn: Connection,
) -> Result<Request<Body>, GatewayError> {
    let max_body = snapshot.limits.max_request_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Err(GatewayError::BodyTooLarge);
    }
    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));

    let headers = &mut parts.headers;
    forward::strip_hop_by_hop(headers);
    for name in &snapshot.identity_headers {
        headers.remove(name);
    }
    if !route.forward_token {
        headers.remove(header::AUTHORIZATION);
    }
    // The client connects to the upstream's authority; hyper sets Host from the URI.
    headers.remove(header::HOST);
    forward::set_forwarded(
        headers,
        &ClientInfo {
            ip: conn.peer.ip(),
            proto: if conn.tls { "https" } else { "http" },
            host: host.as_deref(),
        },
    );
    if let Some(t) = token {
        forward::add_claim_headers(headers, &route.claims_to_headers, &t.claims);
    }
    parts.uri = route
        .upstream_uri(path, parts.uri.query())
        .map_err(|_| GatewayError::BadRequestTarget("the request target cannot be forwarded"))?;
    // Upstreams are spoken to over HTTP/1.1 whatever the client used.
    parts.version = Version::HTTP_11;
    let body = Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX))
        .map_err(Into::into)
        .boxed();
    Ok(Request::from_parts(parts, body))
}

/// Stage 8: the response the client receives.
fn finish(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    // A Content-Length next to a Transfer-Encoding is a request-smuggling vector (RFC 9112
    // §6.3): the length is meaningless, and hyper re-frames the body for the client anyway.
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    forward::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(Into::into).boxed())
}
