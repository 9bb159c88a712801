//! The running configuration: one immutable [`Snapshot`] behind an `ArcSwap`.
//!
//! A request loads the snapshot once (`load_full`, an owned `Arc`) and keeps it to the end, so
//! a request in flight finishes on the config it started with; arc-swap's docs warn against
//! holding its `Guard` across `.await`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderName;

use crate::auth::remote::RemoteRegistry;
use crate::auth::Issuers;
use crate::metrics::Metrics;
use crate::routes::RouteTable;
use crate::upstream::{Key, Pool};

/// Server limits, compiled from `limits:` with named defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_request_header_bytes: usize,
    pub max_request_body_bytes: u64,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_bytes: u32,
    pub upstream_connect_timeout: Duration,
    pub upstream_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        use crate::config::defaults as d;
        Limits {
            header_read_timeout: Duration::from_millis(d::HEADER_READ_TIMEOUT_MS),
            max_request_header_bytes: d::MAX_REQUEST_HEADER_BYTES,
            max_request_body_bytes: d::MAX_REQUEST_BODY_BYTES,
            max_connections: d::MAX_CONNECTIONS,
            h2_max_concurrent_streams: d::H2_MAX_CONCURRENT_STREAMS,
            h2_max_header_list_bytes: d::H2_MAX_HEADER_LIST_BYTES,
            upstream_connect_timeout: Duration::from_millis(d::UPSTREAM_CONNECT_TIMEOUT_MS),
            upstream_idle_timeout: Duration::from_millis(d::UPSTREAM_IDLE_TIMEOUT_MS),
        }
    }
}

/// Everything a request needs, validated and compiled.
#[derive(Debug)]
pub struct Snapshot {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub realm: String,
    /// `Bearer realm="..."`, precomputed for 401 answers without an error code.
    pub challenge_prefix: String,
    pub limits: Limits,
    pub issuers: Issuers,
    pub routes: RouteTable,
    /// Every header named in any route's `claims_to_headers`: removed from every incoming
    /// request on every route, so clients can never spoof identity headers.
    pub identity_headers: Vec<HeaderName>,
    /// TLS for the data-plane listener, rebuilt from the PEM files at every load.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether tollgate starts W3C traces for requests that carry none.
    pub trace_context: crate::correlation::TraceContextPolicy,
    /// Time in-flight requests get after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Every file read besides the config itself (key sets, certificates, CA bundles).
    pub inputs: Vec<std::path::PathBuf>,
    /// Likely mistakes found by `config::lint` (`file:line:col: warning: ...` lines).
    pub warnings: Vec<String>,
    /// SHA-256 of the config source, hex.
    pub sha256: String,
    pub loaded_at: SystemTime,
}

impl Snapshot {
    /// Starts the start-up fetch and background refresh of every remote key set (a no-op
    /// for stores that already run, which a reload keeps for unchanged issuers).
    pub fn start_remote_keys(&self) {
        for issuer in self.issuers.iter() {
            if let Some(remote) = issuer.keys.remote() {
                remote.ensure_started();
            }
        }
    }

    /// Every issuer has keys (or may serve without them).
    pub fn keys_ready(&self) -> bool {
        self.issuers.iter().all(|i| i.keys.is_ready())
    }

    /// Records the digest of the source the snapshot was compiled from.
    pub fn with_source_digest(mut self, source: &str) -> Self {
        self.sha256 = sha256_hex(source.as_bytes());
        self
    }
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The swappable holder shared by the server, the admin listener and (later) reloads.
pub struct SharedState {
    current: ArcSwap<Snapshot>,
    /// Upstream connection pools: they survive reloads.
    pool: Pool,
    /// Remote key stores: a reload keeps those of unchanged issuers.
    remote: RemoteRegistry,
    /// The newest rejected config's errors, until a good reload clears them.
    last_error: Mutex<Option<String>>,
    /// A valid config is active and the listeners are bound (false again at shutdown).
    ready: AtomicBool,
    /// Counters that outlive snapshots.
    metrics: Arc<Metrics>,
}

impl SharedState {
    pub fn new(snapshot: Snapshot, remote: RemoteRegistry) -> Arc<Self> {
        let metrics = Arc::new(Metrics::default());
        metrics.bind(&snapshot);
        Arc::new(SharedState {
            metrics,
            remote,
            pool: Pool::new(
                snapshot.limits.upstream_connect_timeout,
                snapshot.limits.upstream_idle_timeout,
            ),
            current: ArcSwap::from_pointee(snapshot),
            last_error: Mutex::new(None),
            ready: AtomicBool::new(false),
        })
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The snapshot for one request, owned for the request's lifetime.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot; requests already running keep the old one.
    pub fn replace(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.metrics.bind(&snapshot);
        let snapshot = Arc::new(snapshot);
        self.current.store(Arc::clone(&snapshot));
        // Idle connections to upstreams (or through CA bundles) the new config no longer
        // names go; the others stay warm.
        let in_use: std::collections::HashSet<Key> = snapshot
            .routes
            .routes()
            .map(|r| r.upstream.pool_key.clone())
            .collect();
        self.pool.retain(|key| in_use.contains(key));
        snapshot
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn remote_registry(&self) -> &RemoteRegistry {
        &self.remote
    }
}
