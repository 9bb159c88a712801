//! The access log: one `tracing` event per request, target `tollgate::access`, level INFO
//! (`RUST_LOG=tollgate::access=off` silences it; `--log-format json` makes it one JSON
//! object per line).
//!
//! The line is written when the response body is finished or abandoned, so `bytes` is what
//! the client was sent and `duration_ms` covers the whole exchange (nginx's
//! `$body_bytes_sent` and `$request_time`). When the access log is disabled no wrapper is
//! built at all. Never logged: the token, the query string (queries can carry secrets) or
//! any header other than the request id.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::auth::claims::Claims;
use crate::body::{Body, BoxError};
use crate::routes::Route;

/// The `tracing` target of access-log events.
pub const TARGET: &str = "tollgate::access";

/// Whether access-log events would be recorded (cached per call site by `tracing`).
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// Everything known about a request once its response head is ready.
pub struct Record {
    pub started: Instant,
    pub request_id: HeaderValue,
    pub trace_id: Option<String>,
    pub method: Method,
    /// The path as the client sent it, without the query.
    pub path: String,
    pub status: u16,
    /// The matched route (its id and upstream URL are logged); shared, not copied.
    pub route: Option<Arc<Route>>,
    pub claims: Option<Arc<Claims>>,
    pub reason: Option<&'static str>,
    pub client: std::net::IpAddr,
}

/// Wraps the response body so the record is logged when the body ends.
pub fn attach(body: Body, record: Record) -> Body {
    let logged = LoggedBody {
        inner: body,
        record: Some(record),
        bytes: 0,
        complete: false,
    };
    logged.boxed()
}

struct LoggedBody {
    inner: Body,
    record: Option<Record>,
    bytes: u64,
    complete: bool,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.complete = true;
                }
            }
            Poll::Ready(None) => self.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            // A body hyper never polled because it was empty (HEAD, 204, 304) is complete.
            let complete = self.complete || self.inner.is_end_stream();
            log(&record, self.bytes, complete, record.started.elapsed());
        }
    }
}

fn claim<'c>(claims: Option<&'c Claims>, name: &str) -> Option<&'c str> {
    claims.and_then(|c| c.str(name))
}

fn log(r: &Record, bytes: u64, complete: bool, elapsed: Duration) {
    let claims = r.claims.as_deref();
    // RFC 9068 §2.2: `client_id` names the client; `azp` is the older OIDC equivalent.
    let client_id = claim(claims, "client_id").or_else(|| claim(claims, "azp"));
    tracing::info!(
        target: TARGET,
        time = %rfc3339_millis(SystemTime::now()),
        request_id = r.request_id.to_str().unwrap_or("-"),
        trace_id = r.trace_id.as_deref().unwrap_or("-"),
        route = r.route.as_ref().map_or("-", |r| r.id.as_str()),
        method = %r.method,
        path = %r.path,
        status = r.status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream = r.route.as_ref().map_or("-", |r| r.upstream.display.as_str()),
        bytes,
        complete,
        sub = claim(claims, "sub").unwrap_or("-"),
        client_id = client_id.unwrap_or("-"),
        reason = r.reason.unwrap_or("-"),
        client = %r.client,
    );
}

/// `2026-11-28T07:22:55.123Z` (RFC 3339, UTC, milliseconds).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let whole = crate::admin::rfc3339(t);
    // `...:55Z` → `...:55.123Z`
    let stem = whole.strip_suffix('Z').unwrap_or(&whole);
    format!("{stem}.{:03}Z", since.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_314_575_042);
        assert_eq!(rfc3339_millis(t), "2025-11-28T07:22:55.042Z");
    }
}
