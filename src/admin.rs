//! The admin listener: health, readiness, the active config, and reload. It never shares a
//! port with the data plane, so probes and operators' endpoints stay off the public surface.
//!
//! - `GET /-/healthz`: the process is alive.
//! - `GET /-/ready`: a valid config is active, the listeners are bound, and every remote
//!   issuer has had its first key set fetched (unless `ready_without_keys`); 503 otherwise,
//!   and from the moment shutdown starts, while requests drain.
//! - `GET /-/config`: `{"sha256", "loaded_at", "routes", "last_error",
//!   "token_cache_entries", "issuers": [{"id", "keys", "remote", "jwks_fetches",
//!   "jwks_fetch_failures"}]}`.
//! - `GET /-/metrics`: Prometheus text format (see `metrics`).
//! - `POST /-/reload`: reload the file now (200, or 422 with the errors).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::body::RequestBody;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{full, Body};
use crate::proxy::Connection;
use crate::reload::{Reloader, Trigger};
use crate::server::Handler;
use crate::state::SharedState;

/// Admin endpoints.
pub struct Admin {
    pub state: Arc<SharedState>,
    /// `None` when the gateway was started from an in-memory config (nothing to reload).
    pub reloader: Option<Arc<Reloader>>,
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error": "method_not_allowed"}),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

impl Admin {
    /// Prometheus text format (0.0.4).
    fn metrics(&self) -> Response<Body> {
        let text = crate::metrics::render(
            self.state.metrics(),
            self.state.snapshot(),
            self.state.pool().idle_counts(),
        );
        match text {
            Ok(text) => {
                let mut r = Response::new(full(text));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                r
            }
            // Writing into a String cannot fail; the encoder's signature says it might.
            Err(_) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "metrics_encoding_failed"}),
            ),
        }
    }

    fn config(&self) -> Response<Body> {
        let s = self.state.snapshot();
        json_response(
            StatusCode::OK,
            json!({
                "sha256": s.sha256,
                "loaded_at": rfc3339(s.loaded_at),
                "routes": s.routes.len(),
                "last_error": self.state.last_error(),
                "token_cache_entries": s.issuers.cache().map(|c| c.len()),
                "issuers": issuers(&s),
            }),
        )
    }

    async fn reload(&self) -> Response<Body> {
        let Some(reloader) = &self.reloader else {
            return json_response(
                StatusCode::CONFLICT,
                json!({"error": "not_reloadable", "error_description": "this gateway was not started from a file"}),
            );
        };
        match reloader.reload(Trigger::Admin).await {
            Ok(s) => json_response(
                StatusCode::OK,
                json!({"result": "reloaded", "sha256": s.sha256, "routes": s.routes.len()}),
            ),
            Err(e) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"result": "rejected", "errors": e.lines().collect::<Vec<_>>()}),
            ),
        }
    }
}

impl Handler for Admin {
    async fn call(self: Arc<Self>, req: Request<RequestBody>, _conn: Connection) -> Response<Body> {
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        match req.uri().path() {
            "/-/healthz" if read => json_response(StatusCode::OK, json!({"status": "ok"})),
            "/-/ready" if read => {
                if self.state.is_ready() && self.state.snapshot().keys_ready() {
                    json_response(StatusCode::OK, json!({"ready": true}))
                } else {
                    json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false}))
                }
            }
            "/-/config" if read => self.config(),
            "/-/metrics" if read => self.metrics(),
            "/-/healthz" | "/-/ready" | "/-/config" | "/-/metrics" => {
                method_not_allowed("GET, HEAD")
            }
            "/-/reload" if req.method() == Method::POST => self.reload().await,
            "/-/reload" => method_not_allowed("POST"),
            _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        }
    }
}

/// Per issuer, sorted by id: key count and, for remote sets, fetch attempts.
fn issuers(s: &crate::state::Snapshot) -> Vec<Value> {
    let mut list: Vec<_> = s.issuers.iter().collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    list.into_iter()
        .map(|i| {
            json!({
                "id": i.id,
                "keys": i.keys.current().0.keys.len(),
                "remote": i.keys.remote().is_some(),
                "jwks_fetches": i.keys.remote().map(|r| r.fetch_count()),
                "jwks_fetch_failures": i.keys.remote().map(|r| r.failure_count()),
            })
        })
        .collect()
}

/// `2026-11-28T07:22:55Z` (RFC 3339, UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_850_575)),
            "2026-11-28T07:22:55Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
