//! The admin listener: health and readiness now; metrics and reload arrive later. It never
//! shares a port with the data plane, so probes and operators' endpoints stay off the
//! public surface.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{full, Body};
use crate::proxy::Connection;
use crate::server::Handler;

/// Admin endpoints.
pub struct Admin {
    /// Set once a valid config is active and the data-plane listener is bound.
    pub ready: AtomicBool,
}

fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

impl Handler for Admin {
    async fn call(self: Arc<Self>, req: Request<Incoming>, _conn: Connection) -> Response<Body> {
        let path = req.uri().path();
        if !matches!(path, "/-/healthz" | "/-/ready") {
            return json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed"}"#,
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/-/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#),
            _ if self.ready.load(Ordering::Acquire) => json(StatusCode::OK, r#"{"ready":true}"#),
            _ => json(StatusCode::SERVICE_UNAVAILABLE, r#"{"ready":false}"#),
        }
    }
}
