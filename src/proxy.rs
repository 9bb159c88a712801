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
//! 9. `log`        — metrics at once; one access-log line when the body is done.
//!
//! Before stage 1, `correlate` settles `X-Request-Id` and `traceparent` (`correlation`).
//!
//! Authentication always runs before anything reaches the upstream, and a present but
//! invalid token is rejected even on `auth: optional` routes: a bad token never passes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::Uri;
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};

use crate::access_log;
use crate::auth::claims::Claims;
use crate::auth::extract::{bearer_bytes, bearer_token, Credentials};
use crate::auth::{Issuer, VerifiedToken};
use crate::correlation;
use crate::error::GatewayError;
use crate::forward::{self, ClientInfo};
use crate::headers::{Headers, Inbound, Outbound, Reply};
use crate::routes::{AuthMode, Match, Route};
use crate::sanitize::normalize_path;
use crate::state::{SharedState, Snapshot};
use crate::upstream::{self, FailureKind};

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

/// Facts gathered along the way for metrics and the access log.
#[derive(Default)]
struct Trace {
    route: Option<Arc<Route>>,
    /// The token's issuer, once identified (also for refused tokens).
    issuer: Option<Arc<Issuer>>,
    claims: Option<Arc<Claims>>,
    upstream_failure: Option<FailureKind>,
}

impl Gateway {
    pub fn new(state: Arc<SharedState>) -> Self {
        Gateway { state }
    }

    /// Runs the stages for one request; never fails, never panics on request data. Answers
    /// in `Out`: the lane's `Reply`, or hyper's `http::Response`.
    pub async fn handle<H: Headers, Out: From<Reply<H>>>(
        self: Arc<Self>,
        mut req: Inbound<H>,
        conn: Connection,
    ) -> Out {
        let started = Instant::now();
        let snapshot = self.state.snapshot();
        // 0. correlate: settle X-Request-Id and traceparent before anything can fail.
        let ids = correlation::prepare(&mut req.headers, snapshot.trace_context);
        let method = req.method.clone();
        let logging = access_log::enabled();
        let raw_path = logging.then(|| req.uri.path().to_owned());
        let mut trace = Trace::default();
        let result = self.stages(req, conn, &snapshot, &mut trace).await;
        let (mut response, error) = match result {
            Ok(r) => (r, None),
            Err(e) => {
                let answer = e.clone().into_response(&snapshot.challenge_prefix);
                (Reply::from_response(answer), Some(e))
            }
        };
        // Copied only for the access log: its bytes are shared, the copy costs a count.
        let logged_id = raw_path.is_some().then(|| ids.request_id.clone());
        response
            .headers
            .insert(correlation::REQUEST_ID, ids.request_id);
        let status = response.status.as_u16();
        self.count(&trace, &method, status, error.as_ref(), started);
        // 9. log, when the body is done (see `access_log`).
        let (Some(path), Some(request_id)) = (raw_path, logged_id) else {
            return response.into();
        };
        let record = access_log::Record {
            started,
            request_id,
            trace_id: ids.trace_id,
            method,
            path,
            status,
            route: trace.route,
            claims: trace.claims,
            reason: error.as_ref().map(GatewayError::reason),
            client: conn.peer.ip(),
        };
        response.body = access_log::attach(response.body, record);
        response.into()
    }

    /// Metrics: atomics owned by the route and issuer, nothing allocated.
    fn count(
        &self,
        trace: &Trace,
        method: &http::Method,
        status: u16,
        error: Option<&GatewayError>,
        started: Instant,
    ) {
        let metrics = self.state.metrics();
        let route = trace
            .route
            .as_ref()
            .and_then(|r| r.metrics.get())
            .map_or(metrics.unmatched(), |m| m.as_ref());
        route.record(method, status, started.elapsed());
        if let Some(kind) = trace.upstream_failure {
            route.upstream_error(kind);
        }
        if let Some(e) = error {
            let issuer = trace
                .issuer
                .as_ref()
                .and_then(|i| i.metrics.get())
                .map(|m| m.as_ref());
            metrics.rejected(e, issuer);
        }
    }

    async fn stages<H: Headers>(
        &self,
        req: Inbound<H>,
        conn: Connection,
        snapshot: &Snapshot,
        trace: &mut Trace,
    ) -> Result<Reply<H>, GatewayError> {
        // 1. sanitize (on a copy of the target, which shares its bytes: the request moves on)
        let target = req.uri.clone();
        let path = normalize_path(target.path())?;
        // 2. match
        let route = match snapshot.routes.find(&path, &req.method) {
            Match::Found(route) => Arc::clone(route),
            Match::MethodNotAllowed(allow) => {
                return Err(GatewayError::MethodNotAllowed(allow.to_string()))
            }
            Match::NotFound => return Err(GatewayError::RouteNotFound),
        };
        trace.route = Some(Arc::clone(&route));
        // 3 + 4. extract and verify
        let token = authenticate(&req, &route, snapshot, trace).await?;
        // 5. authorize
        if let Some(t) = &token {
            trace.issuer = Some(Arc::clone(&t.issuer));
            trace.claims = Some(Arc::clone(&t.claims));
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
        let response = upstream::send(
            self.state.pool(),
            &route.upstream,
            upstream_req,
            route.timeout,
        )
        .await
        .map_err(|(e, kind)| {
            if e != GatewayError::BodyTooLarge {
                trace.upstream_failure = Some(kind);
            }
            e
        })?;
        // 8. finish
        Ok(finish(response))
    }
}

/// Stages 3 and 4: the token, if the route looks at tokens and the request carries one.
async fn authenticate<H: Headers>(
    req: &Inbound<H>,
    route: &Route,
    snapshot: &Snapshot,
    trace: &mut Trace,
) -> Result<Option<VerifiedToken>, GatewayError> {
    if route.auth == AuthMode::None {
        return Ok(None);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let allowed = route.issuers.as_deref();
    // The cache first, on the header's bytes: a hit is a token that passed every check when
    // it was first seen, its syntax included (`extract::bearer_bytes`), so the byte checks of
    // `bearer_token` (about 5 % of a cached request's instructions) run only on a miss.
    let missed = match bearer_bytes(&req.headers) {
        Some(raw) => match crate::auth::cached(raw, &snapshot.issuers, allowed, now) {
            Some(hit) => return Ok(Some(hit)),
            None => Some(raw),
        },
        None => None,
    };
    let credentials =
        bearer_token(&req.headers).map_err(|e| GatewayError::MalformedAuthorization(e.0))?;
    match credentials {
        Credentials::Missing if route.auth == AuthMode::Optional => Ok(None),
        Credentials::Missing => Err(GatewayError::MissingToken),
        Credentials::Bearer(token) => {
            // Not asked twice for the same bytes (whitespace around the token, which the
            // full checks trim, makes them differ).
            let verified = if missed == Some(token.as_bytes()) {
                crate::auth::verify_uncached(token, &snapshot.issuers, allowed, now).await
            } else {
                crate::auth::authenticate(token, &snapshot.issuers, allowed, now).await
            };
            verified.map(Some).map_err(|rejection| {
                trace.issuer = rejection.issuer;
                GatewayError::InvalidToken(rejection.error)
            })
        }
    }
}

/// Stage 6: the request the upstream receives.
fn build_upstream_request<H: Headers>(
    req: Inbound<H>,
    route: &Route,
    path: &str,
    token: Option<&VerifiedToken>,
    snapshot: &Snapshot,
    conn: Connection,
) -> Result<Outbound<H>, GatewayError> {
    let max_body = snapshot.limits.max_request_body_bytes;
    let declared = req
        .headers
        .values(&header::CONTENT_LENGTH)
        .next()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Err(GatewayError::BodyTooLarge);
    }
    let Inbound {
        method,
        uri,
        mut headers,
        body,
    } = req;
    // The Host the client used (HTTP/1.1), or its :authority (HTTP/2).
    let host = match headers.value(&header::HOST) {
        Some(h) => Some(h),
        None => uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let client = ClientInfo {
        ip: conn.peer.ip(),
        proto: if conn.tls { "https" } else { "http" },
        host: host.as_ref(),
    };
    rewrite_headers(&mut headers, route, token, snapshot, &client);
    let uri = match uri.path_and_query() {
        // Nothing to rewrite: the client's own target goes on, shared rather than copied.
        Some(pq) if !route.rewrites_path() && pq.path() == path => Uri::from(pq.clone()),
        _ => route.upstream_target(path, uri.query()).map_err(|_| {
            GatewayError::BadRequestTarget("the request target cannot be forwarded")
        })?,
    };
    let body = if body.is_end_stream() {
        // No body at all (most GETs): nothing to stream or cap.
        crate::body::empty()
    } else {
        Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX))
            .map_err(Into::into)
            .boxed()
    };
    // Upstreams are spoken to over HTTP/1.1 whatever the client used (`Outbound`).
    Ok(Outbound {
        method,
        uri,
        headers,
        body,
    })
}

/// Stage 6's header hygiene (`forward`): hop-by-hop and spoofable identity headers out, the
/// token out unless the route forwards it, the upstream's Host, X-Forwarded-*, and the
/// route's claim headers in.
pub fn rewrite_headers<H: Headers>(
    headers: &mut H,
    route: &Route,
    token: Option<&VerifiedToken>,
    snapshot: &Snapshot,
    client: &ClientInfo,
) {
    forward::strip_hop_by_hop(headers);
    for name in &snapshot.identity_headers {
        headers.remove(name);
    }
    if !route.forward_token {
        headers.remove(&header::AUTHORIZATION);
    }
    // The request goes to the upstream's authority, and says so (RFC 9110 §7.2).
    headers.insert(header::HOST, route.upstream.host.clone());
    forward::set_forwarded(headers, client);
    if let Some(t) = token {
        forward::add_claim_headers(headers, &route.claims_to_headers, &t.claims);
    }
}

/// Stage 8: the response the client receives.
fn finish<H: Headers>(mut response: Reply<H>) -> Reply<H> {
    // A Content-Length next to a Transfer-Encoding is a request-smuggling vector (RFC 9112
    // §6.3): the length is meaningless, and the body is re-framed for the client anyway.
    if response.headers.contains(&header::TRANSFER_ENCODING) {
        response.headers.remove(&header::CONTENT_LENGTH);
    }
    forward::strip_hop_by_hop(&mut response.headers);
    response
}
