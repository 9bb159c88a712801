//! Prometheus metrics, served on the admin listener at `GET /-/metrics`.
//!
//! The request path only touches atomics that already exist: every compiled route and
//! issuer holds its own counters (bound when a snapshot is installed), so recording a
//! request is a handful of relaxed `fetch_add`s with no lock, no map lookup and no
//! allocation. Labels are produced at scrape time only (`metrics/render.rs`).
//!
//! Counters belong to the route or issuer *id* and survive reloads: a reload that keeps
//! `orders-read` keeps counting on the same series. Ids removed from the config disappear
//! from the exposition with the reload that removes them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::Method;

use crate::error::GatewayError;
use crate::state::Snapshot;
use crate::upstream::FailureKind;

mod render;

pub use render::{render, CONTENT_TYPE};

/// Method label values; anything else counts as `OTHER` so a client cannot create series.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];

/// Status codes are 100..=999 (`http::StatusCode`); one slot each.
const FIRST_STATUS: u16 = 100;
const STATUS_SLOTS: usize = 900;

/// Upper bounds of the request-duration buckets, in seconds: from a cache-hit request on
/// loopback (~0.1 ms) to the longest sensible route timeout.
pub const DURATION_BUCKETS_SECS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// `kind` label values of upstream failures, indexed like [`upstream_kind_index`].
pub const UPSTREAM_KINDS: [&str; 3] = ["connect", "timeout", "protocol"];

/// `reason` label values of auth rejections: the token reasons in `Reason` order, then the
/// rejections that happen before or after verification. The same names appear in the access
/// log's `reason` field.
pub const REJECT_REASONS: [&str; 17] = [
    "malformed",
    "oversized",
    "unsupported_alg",
    "forbidden_header",
    "wrong_typ",
    "wrong_issuer",
    "issuer_not_allowed",
    "unknown_kid",
    "ambiguous_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "bad_claim",
    "wrong_audience",
    "missing",
    "malformed_authorization",
    "insufficient_scope",
];

/// How many of [`REJECT_REASONS`] are token reasons (`auth::Reason`).
const TOKEN_REASONS: usize = crate::auth::Reason::ALL.len();

/// Counters of one route.
pub struct RouteMetrics {
    /// Per method, per status; a method's row is allocated on its first request.
    requests: [OnceLock<Box<[AtomicU64]>>; METHODS.len()],
    /// Non-cumulative bucket counts; the `+Inf` bucket is `count`.
    buckets: [AtomicU64; DURATION_BUCKETS_SECS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    upstream_errors: [AtomicU64; UPSTREAM_KINDS.len()],
}

impl Default for RouteMetrics {
    fn default() -> Self {
        RouteMetrics {
            requests: Default::default(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            upstream_errors: Default::default(),
        }
    }
}

impl fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn upstream_kind_index(kind: FailureKind) -> usize {
    match kind {
        FailureKind::Connect => 0,
        FailureKind::Timeout => 1,
        FailureKind::Protocol => 2,
    }
}

impl RouteMetrics {
    /// Counts one finished request (duration up to the response head).
    pub fn record(&self, method: &Method, status: u16, elapsed: Duration) {
        let row = self.requests[method_index(method)].get_or_init(|| {
            (0..STATUS_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let slot = usize::from(status.saturating_sub(FIRST_STATUS)).min(STATUS_SLOTS - 1);
        row[slot].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS_SECS.iter().position(|le| secs <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn upstream_error(&self, kind: FailureKind) {
        self.upstream_errors[upstream_kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// `(method, status, count)` for every non-zero cell.
    fn request_counts(&self) -> Vec<(&'static str, u16, u64)> {
        let mut out = Vec::new();
        for (m, row) in self.requests.iter().enumerate() {
            let Some(row) = row.get() else { continue };
            for (slot, cell) in row.iter().enumerate() {
                let n = cell.load(Ordering::Relaxed);
                if n > 0 {
                    // slot < STATUS_SLOTS = 900, so the sum fits in u16.
                    out.push((METHODS[m], FIRST_STATUS + slot as u16, n));
                }
            }
        }
        out
    }
}

/// Rejection counters of one issuer (or of "no issuer": missing or unattributable tokens).
#[derive(Default)]
pub struct IssuerMetrics {
    rejections: [AtomicU64; REJECT_REASONS.len()],
}

impl fmt::Debug for IssuerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuerMetrics")
    }
}

impl IssuerMetrics {
    fn reject(&self, reason: usize) {
        self.rejections[reason].fetch_add(1, Ordering::Relaxed);
    }
}

/// The index in [`REJECT_REASONS`] of an auth rejection; `None` for other errors.
pub fn reject_reason_index(error: &GatewayError) -> Option<usize> {
    match error {
        // `Reason` lists its variants in REJECT_REASONS order (unit test below).
        GatewayError::InvalidToken(e) => Some(e.reason as usize),
        GatewayError::MissingToken => Some(TOKEN_REASONS),
        GatewayError::MalformedAuthorization(_) => Some(TOKEN_REASONS + 1),
        GatewayError::InsufficientScope(_) => Some(TOKEN_REASONS + 2),
        _ => None,
    }
}

/// Process-wide metrics; owned by `SharedState`, so they outlive every snapshot.
#[derive(Default, Debug)]
pub struct Metrics {
    routes: Mutex<HashMap<String, Arc<RouteMetrics>>>,
    /// Requests that matched no route (400 for the target, 404, 405).
    unmatched: RouteMetrics,
    issuers: Mutex<HashMap<String, Arc<IssuerMetrics>>>,
    /// Rejections not attributable to a configured issuer.
    no_issuer: IssuerMetrics,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    open_connections: AtomicI64,
    parked_connections: AtomicI64,
}

impl Metrics {
    /// Gives every route and issuer of `snapshot` its counters, reusing those of the same
    /// id, and forgets ids the snapshot no longer has. Called before the snapshot serves.
    pub fn bind(&self, snapshot: &Snapshot) {
        let mut routes = lock(&self.routes);
        let mut kept = HashMap::with_capacity(snapshot.routes.len());
        for route in snapshot.routes.routes() {
            let m = routes.remove(&route.id).unwrap_or_default();
            let _ = route.metrics.set(Arc::clone(&m));
            kept.insert(route.id.clone(), m);
        }
        *routes = kept;
        drop(routes);
        let mut issuers = lock(&self.issuers);
        let mut kept = HashMap::new();
        for issuer in snapshot.issuers.iter() {
            let m = issuers.remove(&issuer.id).unwrap_or_default();
            let _ = issuer.metrics.set(Arc::clone(&m));
            kept.insert(issuer.id.clone(), m);
        }
        *issuers = kept;
    }

    /// The counters for a request that matched no route.
    pub fn unmatched(&self) -> &RouteMetrics {
        &self.unmatched
    }

    /// Counts an auth rejection against `issuer` (the token's, when it was identified).
    pub fn rejected(&self, error: &GatewayError, issuer: Option<&IssuerMetrics>) {
        if let Some(reason) = reject_reason_index(error) {
            issuer.unwrap_or(&self.no_issuer).reject(reason);
        }
    }

    pub fn reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an open data-plane connection until the guard drops.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(self))
    }
}

impl Metrics {
    pub fn connection_parked(&self, parked: bool) {
        let delta = if parked { 1 } else { -1 };
        self.parked_connections.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Decrements `tollgate_open_connections` when the connection's task ends.
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Reason;

    #[test]
    fn reject_reason_names_follow_the_reason_enum() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            assert_eq!(REJECT_REASONS[i], reason.as_str());
        }
        assert_eq!(Reason::ALL.len(), 14);
        assert_eq!(REJECT_REASONS[14], GatewayError::MissingToken.reason());
        assert_eq!(
            REJECT_REASONS[15],
            GatewayError::MalformedAuthorization("x").reason()
        );
        assert_eq!(
            REJECT_REASONS[16],
            GatewayError::InsufficientScope(String::new()).reason()
        );
    }

    #[test]
    fn durations_land_in_the_first_bucket_that_holds_them() {
        let m = RouteMetrics::default();
        m.record(&Method::GET, 200, Duration::from_micros(300));
        m.record(&Method::GET, 200, Duration::from_millis(1));
        m.record(
            &Method::from_bytes(b"PURGE").unwrap(),
            999,
            Duration::from_secs(120),
        );
        assert_eq!(m.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(m.buckets[1].load(Ordering::Relaxed), 1);
        assert_eq!(m.count.load(Ordering::Relaxed), 3);
        let counts = m.request_counts();
        assert_eq!(counts, vec![("GET", 200, 2), ("OTHER", 999, 1)]);
    }
}
