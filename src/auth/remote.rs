//! Remote key sets: a JWKS URL, or OIDC discovery (`{issuer}/.well-known/openid-configuration`
//! → `jwks_uri`), with the whole key lifecycle:
//!
//! - fetched at start (before the gateway reports ready) and refreshed in the background,
//!   off the request path, every `Cache-Control: max-age` clamped to [min, `jwks_refresh_secs`];
//! - an unknown `kid` triggers at most one fetch in flight per issuer (concurrent requests
//!   wait for it) and at most one per cooldown; misses inside the cooldown are 401 without a
//!   fetch. Start-up and scheduled refreshes do not start the cooldown, so a key rotated right
//!   after start is still picked up at once. (Envoy never refetches on a miss; the OpenResty
//!   library behind Kong refetches without limit, a DoS lever.)
//! - stale-if-error: when the IdP fails (refused, 500, HTML, oversized, slow) the last good
//!   set keeps serving up to `jwks_max_stale_secs`; after that its keys are dropped.
//! - hygiene: size cap, fetch timeout, TLS verified by rustls, refused keys logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};

use super::jwks::KeySet;
use crate::upstream::HttpClient;

/// Largest JWKS or discovery document accepted.
pub const MAX_REMOTE_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Deadline for one HTTP request (discovery or JWKS), connect to last byte.
pub const FETCH_TIMEOUT_MS: u64 = 5_000;
/// Retry interval after a failed refresh (never longer than the refresh interval itself).
pub const FAILED_REFRESH_RETRY_SECS: u64 = 5;

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSource {
    JwksUrl(Uri),
    /// `{issuer}/.well-known/openid-configuration`.
    Discovery(Uri),
}

/// Everything that defines a remote key set; identical specs share one store across reloads.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    pub issuer_id: String,
    pub issuer: String,
    pub source: RemoteSource,
    pub refresh_max: Duration,
    pub refresh_min: Duration,
    pub cooldown: Duration,
    pub max_stale: Duration,
    pub ready_without_keys: bool,
    /// The issuer's allowed algorithms: a set without a key for any of them is refused.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// SHA-256 of the CA bundle, if any (part of the identity of the spec).
    pub ca_digest: Option<String>,
    pub tls: Arc<rustls::ClientConfig>,
}

impl RemoteSpec {
    fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}",
            self.issuer_id,
            self.issuer,
            self.source,
            self.refresh_max,
            self.refresh_min,
            self.cooldown,
            self.max_stale,
            self.ready_without_keys,
            self.algorithms,
            self.ca_digest
        )
    }
}

/// Live stores by spec, so that a reload keeps the keys of unchanged issuers.
#[derive(Default, Clone)]
pub struct RemoteRegistry {
    stores: Arc<Mutex<HashMap<String, Weak<RemoteKeys>>>>,
}

impl RemoteRegistry {
    /// The store for `spec`: the live one if an identical spec has one, else a new one.
    pub fn get_or_create(
        &self,
        spec: RemoteSpec,
        client: impl FnOnce() -> HttpClient,
    ) -> Arc<RemoteKeys> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.retain(|_, w| w.strong_count() > 0);
        let key = spec.fingerprint();
        if let Some(live) = stores.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        let store = RemoteKeys::new(spec, client());
        // A changed definition of the same issuer and source (say, another cooldown) starts
        // from the keys already fetched, so a reload while the IdP is down loses nothing.
        let predecessor = stores.values().filter_map(Weak::upgrade).find(|s| {
            s.spec.issuer_id == store.spec.issuer_id && s.spec.source == store.spec.source
        });
        if let Some(p) = predecessor {
            if p.ever_fetched.load(Ordering::Acquire) {
                store.current.store(p.current.load_full());
                store.ever_fetched.store(true, Ordering::Release);
                let fetched_at = p.state().fetched_at;
                store.state().fetched_at = fetched_at;
            }
        }
        let store = Arc::new(store);
        stores.insert(key, Arc::downgrade(&store));
        store
    }
}

#[derive(Default)]
struct FetchState {
    /// When the current set was fetched.
    fetched_at: Option<Instant>,
    /// Refresh interval from the last good response.
    interval: Option<Duration>,
    /// The last fetch failed (retry sooner).
    failing: bool,
    /// No miss-triggered fetch before this instant.
    cooldown_until: Option<Instant>,
    /// `jwks_uri` found by discovery.
    jwks_uri: Option<Uri>,
}

/// One issuer's remote key set.
pub struct RemoteKeys {
    pub spec: RemoteSpec,
    client: HttpClient,
    current: ArcSwap<KeySet>,
    generation: AtomicU64,
    fetches: AtomicU64,
    failures: AtomicU64,
    /// A fetch has succeeded at least once (readiness is about start-up only).
    ever_fetched: AtomicBool,
    state: Mutex<FetchState>,
    /// One fetch at a time per issuer (single flight).
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
    started: AtomicBool,
}

/// Why a refresh ran, for logs.
#[derive(Debug, Clone, Copy)]
enum Why {
    Startup,
    Scheduled,
    UnknownKid,
}

impl RemoteKeys {
    fn new(spec: RemoteSpec, client: HttpClient) -> Self {
        RemoteKeys {
            spec,
            client,
            current: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ever_fetched: AtomicBool::new(false),
            state: Mutex::new(FetchState::default()),
            fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
            started: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key set now and its generation (bumped by every successful fetch).
    pub fn current(&self) -> (Arc<KeySet>, u64) {
        let generation = self.generation.load(Ordering::Acquire);
        (self.current.load_full(), generation)
    }

    /// JWKS fetches attempted so far (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Failed fetches so far.
    pub fn failure_count(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Ready once the first fetch succeeded (or when the issuer may serve without keys).
    /// Only start-up counts: an IdP outage later must not take every replica out of its
    /// load balancer at once, public routes and file-backed issuers included; it shows in
    /// the logs, the failure count and 401s for that issuer's tokens.
    pub fn is_ready(&self) -> bool {
        self.spec.ready_without_keys || self.ever_fetched.load(Ordering::Acquire)
    }

    /// Starts the start-up fetch and the background refresh, once per store.
    pub fn ensure_started(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        // Take the fetch lock now, so that a request arriving before the task runs waits
        // for the start-up fetch instead of starting a cooldown-bound fetch of its own.
        let early_guard = Arc::clone(&self.fetch_lock).try_lock_owned().ok();
        let lock = Arc::clone(&self.fetch_lock);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            // Someone else held the lock (cannot happen before start, but never skip the
            // start-up fetch because of it): wait for it.
            let guard = match early_guard {
                Some(g) => g,
                None => lock.lock_owned().await,
            };
            if let Some(this) = weak.upgrade() {
                this.fetch_and_store(Why::Startup).await;
            }
            drop(guard);
            refresh_loop(weak).await;
        });
    }

    /// After a `kid` miss seen at `seen_generation`: waits for a fetch in flight, or starts
    /// one unless the cooldown forbids it. True when the key set may have changed.
    pub async fn refresh_after_miss(&self, seen_generation: u64) -> bool {
        let _one = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen_generation {
            return true;
        }
        {
            let mut st = self.state();
            let now = Instant::now();
            if st.cooldown_until.is_some_and(|until| now < until) {
                return false;
            }
            st.cooldown_until = Some(now + self.spec.cooldown);
        }
        self.fetch_and_store(Why::UnknownKid).await
    }

    /// Time until the next scheduled refresh.
    fn next_delay(&self) -> Duration {
        let st = self.state();
        let interval = st.interval.unwrap_or(self.spec.refresh_max);
        if st.failing || st.fetched_at.is_none() {
            return interval.min(Duration::from_secs(FAILED_REFRESH_RETRY_SECS));
        }
        interval
    }

    /// Fetches and swaps in the set; on failure keeps the old one (until `max_stale`).
    /// The caller holds the fetch lock.
    async fn fetch_and_store(&self, why: Why) -> bool {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let id = &self.spec.issuer_id;
        match self.fetch().await {
            Ok((set, max_age)) => {
                let interval = max_age
                    .unwrap_or(self.spec.refresh_max)
                    .clamp(self.spec.refresh_min, self.spec.refresh_max);
                tracing::info!(issuer = %id, ?why, keys = set.keys.len(), refresh_in_secs = interval.as_secs(), "JWKS fetched");
                self.current.store(Arc::new(set));
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.ever_fetched.store(true, Ordering::Release);
                let mut st = self.state();
                st.fetched_at = Some(Instant::now());
                st.interval = Some(interval);
                st.failing = false;
                true
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let mut st = self.state();
                st.failing = true;
                // The IdP may have moved its JWKS: discover again next time.
                st.jwks_uri = None;
                let had_keys = !self.current.load().keys.is_empty();
                let stale = st
                    .fetched_at
                    .is_some_and(|t| t.elapsed() > self.spec.max_stale);
                if stale && !self.current.load().keys.is_empty() {
                    tracing::error!(issuer = %id, ?why, error = %e, "JWKS fetch failed and the last good set is older than jwks_max_stale_secs: its keys are dropped");
                    self.current.store(Arc::new(KeySet::default()));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                } else if had_keys {
                    tracing::warn!(issuer = %id, ?why, error = %e, "JWKS fetch failed; the last good set keeps serving");
                } else {
                    tracing::warn!(issuer = %id, ?why, error = %e, "JWKS fetch failed; this issuer has no keys yet");
                }
                false
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), String> {
        let uri = match &self.spec.source {
            RemoteSource::JwksUrl(u) => u.clone(),
            RemoteSource::Discovery(well_known) => {
                let known = self.state().jwks_uri.clone();
                match known {
                    Some(u) => u,
                    None => {
                        let u = self.discover(well_known).await?;
                        self.state().jwks_uri = Some(u.clone());
                        u
                    }
                }
            }
        };
        let (body, cache_control) = self.get(&uri).await?;
        let (set, refused) = KeySet::from_json(&body)?;
        for r in &refused {
            tracing::warn!(issuer = %self.spec.issuer_id, key = r.index, kid = ?r.kid, reason = %r.reason, "JWKS key refused");
        }
        if !set
            .keys
            .iter()
            .any(|k| self.spec.algorithms.contains(&k.alg))
        {
            return Err("the key set has no usable key for the issuer's algorithms".into());
        }
        Ok((set, cache_control.as_deref().and_then(max_age)))
    }

    /// OIDC Discovery §4: the document's `issuer` must equal ours exactly.
    async fn discover(&self, well_known: &Uri) -> Result<Uri, String> {
        let (body, _) = self.get(well_known).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("discovery document is not JSON: {e}"))?;
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(self.spec.issuer.as_str()) {
            return Err("discovery document names another issuer".into());
        }
        let uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or("discovery document has no jwks_uri")?;
        let parsed: Uri = uri
            .parse()
            .map_err(|_| "discovery jwks_uri is not a URL".to_string())?;
        check_fetch_url(&parsed)?;
        Ok(parsed)
    }

    async fn get(&self, uri: &Uri) -> Result<(Bytes, Option<String>), String> {
        let request = Request::get(uri.clone())
            .header(header::ACCEPT, "application/json")
            .body(crate::body::full(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{uri}: {e}"))?;
            if response.status() != StatusCode::OK {
                return Err(format!("{uri}: HTTP {}", response.status().as_u16()));
            }
            let cache_control = response
                .headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = Limited::new(response.into_body(), MAX_REMOTE_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|_| {
                    format!("{uri}: larger than {MAX_REMOTE_DOCUMENT_BYTES} bytes or cut short")
                })?
                .to_bytes();
            Ok((body, cache_control))
        };
        tokio::time::timeout(Duration::from_millis(FETCH_TIMEOUT_MS), exchange)
            .await
            .map_err(|_| format!("{uri}: no complete answer within {FETCH_TIMEOUT_MS} ms"))?
    }
}

async fn refresh_loop(weak: Weak<RemoteKeys>) {
    loop {
        let Some(delay) = weak.upgrade().map(|s| s.next_delay()) else {
            return;
        };
        tokio::time::sleep(delay).await;
        let Some(this) = weak.upgrade() else {
            return;
        };
        let _one = this.fetch_lock.lock().await;
        this.fetch_and_store(Why::Scheduled).await;
    }
}

/// `max-age` from a Cache-Control value; `no-cache`/`no-store` mean "as soon as allowed".
fn max_age(value: &str) -> Option<Duration> {
    let mut result = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            result = n
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    result
}

/// `https://`, or `http://` to a loopback host (development and tests only).
pub fn check_fetch_url(uri: &Uri) -> Result<(), String> {
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if uri.host().is_some_and(is_loopback_host) => Ok(()),
        Some("http") => Err("http:// is only allowed for loopback hosts; use https".into()),
        _ => Err("the URL must be https:// (or http:// on loopback)".into()),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("private"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(check_fetch_url(&"http://127.0.0.1:8/j".parse().unwrap()).is_ok());
        assert!(check_fetch_url(&"http://[::1]:8/j".parse().unwrap()).is_ok());
        assert!(check_fetch_url(&"http://localhost/j".parse().unwrap()).is_ok());
        assert!(check_fetch_url(&"http://idp.example.test/j".parse().unwrap()).is_err());
        assert!(check_fetch_url(&"https://idp.example.test/j".parse().unwrap()).is_ok());
        assert!(check_fetch_url(&"ftp://x/j".parse().unwrap()).is_err());
    }
}
