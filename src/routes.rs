//! The compiled route table: immutable, built once per config, read by every request.
//!
//! Matching is longest prefix on a segment boundary: `/api/orders` matches `/api/orders`,
//! `/api/orders/` and `/api/orders/7`, never `/api/ordersX`. Among routes with the same path
//! the one whose methods include the request's wins; if the longest matching path has no
//! route for the method the answer is 405, never a fallback to a shorter path (which could
//! hand a write to a route configured with weaker rules).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, Uri};

use crate::auth::scopes::ScopeRequirement;
use crate::metrics::RouteMetrics;

/// How a route treats tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid token is required.
    Required,
    /// No token: forwarded as anonymous. A token that is present must be valid.
    Optional,
    /// Tokens are not looked at.
    None,
}

/// A CA bundle that alone verifies one route's `https://` upstream.
#[derive(Debug, Clone)]
pub struct UpstreamCa {
    /// SHA-256 of the bundle, hex: identical bundles share one client (and its pool).
    pub digest: String,
    pub config: Arc<rustls::ClientConfig>,
}

/// Where a route sends requests.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Base path without a trailing slash (`""` for none).
    pub base_path: String,
    /// The URL as configured, for logs.
    pub display: String,
    /// `ca_file` of an `https://` upstream; `None` = the system roots.
    pub ca: Option<UpstreamCa>,
    /// The Host header of requests to it (`host_header`).
    pub host: http::HeaderValue,
    /// Its connection pool's key, from scheme, authority and `ca`.
    pub pool_key: crate::upstream::Key,
}

/// The Host header for an authority: without the scheme's default port, as clients write it
/// (RFC 9110 §7.2, §4.2.1). `None` only for an authority no URI parser would have accepted.
pub fn host_header(
    scheme: &http::uri::Scheme,
    authority: &http::uri::Authority,
) -> Option<http::HeaderValue> {
    let default = if *scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    let text = match authority.port_u16() {
        Some(port) if port == default => authority.host(),
        _ => authority.as_str(),
    };
    http::HeaderValue::from_str(text).ok()
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub id: String,
    pub path: String,
    /// `None` = every method.
    pub methods: Option<Vec<Method>>,
    pub upstream: Upstream,
    pub strip_prefix: Option<String>,
    pub auth: AuthMode,
    /// Config ids of accepted issuers; `None` = any configured issuer.
    pub issuers: Option<Vec<String>>,
    pub scopes: ScopeRequirement,
    /// Precomputed `scope` attribute for 403 challenges.
    pub scope_challenge: String,
    /// (dot path split into segments, header) pairs.
    pub claims_to_headers: Vec<(Vec<String>, HeaderName)>,
    pub forward_token: bool,
    pub timeout: Duration,
    /// This route's counters, set when the snapshot is installed (`Metrics::bind`); unset
    /// in snapshots that never serve (`check`, `explain`).
    pub metrics: OnceLock<Arc<RouteMetrics>>,
}

impl Route {
    fn accepts(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// The path the upstream sees: `strip_prefix` removed, then the upstream base path
    /// prepended (`/base` + `/orders/7`).
    pub fn upstream_path(&self, path: &str) -> String {
        let rest = match &self.strip_prefix {
            Some(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some("") => "/",
                Some(r) if r.starts_with('/') => r,
                // Unreachable for a matched route: compile checks that strip_prefix is a
                // leading segment of the route path. Forward the path unchanged rather than
                // guess.
                Some(_) | None => path,
            },
            None => path,
        };
        if self.upstream.base_path.is_empty() {
            rest.to_string()
        } else if rest == "/" {
            format!("{}/", self.upstream.base_path)
        } else {
            format!("{}{}", self.upstream.base_path, rest)
        }
    }

    /// Whether the upstream sees another path than the client sent.
    pub fn rewrites_path(&self) -> bool {
        self.strip_prefix.is_some() || !self.upstream.base_path.is_empty()
    }

    /// The full upstream URI for a request path and query.
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.upstream.scheme.clone())
            .authority(self.upstream.authority.clone())
            .path_and_query(self.upstream_path_and_query(path, query))
            .build()
    }

    /// The request target the upstream receives, in origin form (RFC 9112 §3.2.1).
    pub fn upstream_target(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        Ok(Uri::from_maybe_shared(Bytes::from(
            self.upstream_path_and_query(path, query),
        ))?)
    }

    fn upstream_path_and_query(&self, path: &str, query: Option<&str>) -> String {
        let mut pq = self.upstream_path(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        pq
    }
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Match<'a> {
    Found(&'a Arc<Route>),
    /// A path matched but no route there takes the method; carries the `Allow` value.
    MethodNotAllowed(&'a str),
    NotFound,
}

/// Routes sharing one path.
#[derive(Debug)]
struct PathGroup {
    routes: Vec<Arc<Route>>,
    /// `Allow` header value for 405 answers, precomputed.
    allow: String,
}

/// Whether `prefix` matches `path` as routing does: equal, or a prefix ending on a segment
/// boundary (`/` covers everything).
pub fn path_covers(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Route lookup by path prefix, then method.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_path: HashMap<String, PathGroup, BuildHasherDefault<PathHasher>>,
    count: usize,
}

/// Hashes paths for the route table, a byte at a time with FxHash's rotate, xor and multiply.
///
/// Not std's SipHash: its keyed hash defends a table that stores keys an attacker chooses
/// against collision floods, and this table stores only configured paths; a client's path is
/// only looked up, which probes the table once whatever its hash. SipHash over the two
/// lookups of `/api/orders/1` was about 1 % of a cached request's instructions (callgrind,
/// issue 5).
#[derive(Default)]
pub struct PathHasher(u64);

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl RouteTable {
    /// Builds the table; overlap checks happen in `config::compile`, which reports them with
    /// positions.
    pub fn new(routes: Vec<Route>) -> Self {
        let count = routes.len();
        let mut by_path: HashMap<String, PathGroup, _> = HashMap::default();
        for route in routes {
            by_path
                .entry(route.path.clone())
                .or_insert_with(|| PathGroup {
                    routes: Vec::new(),
                    allow: String::new(),
                })
                .routes
                .push(Arc::new(route));
        }
        for group in by_path.values_mut() {
            group.allow = allow_header(&group.routes);
        }
        RouteTable { by_path, count }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_path.values().flat_map(|g| g.routes.iter())
    }

    /// Finds the route for a normalized request path (see `proxy::sanitize`).
    pub fn find(&self, path: &str, method: &Method) -> Match<'_> {
        let mut candidate = path;
        loop {
            if let Some(group) = self.by_path.get(candidate) {
                return match group.routes.iter().find(|r| r.accepts(method)) {
                    Some(route) => Match::Found(route),
                    None => Match::MethodNotAllowed(&group.allow),
                };
            }
            // Next shorter prefix on a segment boundary: "/a/b/c" → "/a/b" → "/a" → "/".
            candidate = match candidate.rfind('/') {
                Some(0) if candidate.len() > 1 => "/",
                Some(0) | None => return Match::NotFound,
                Some(i) => &candidate[..i],
            };
        }
    }
}

fn allow_header(routes: &[Arc<Route>]) -> String {
    let mut methods: Vec<&str> = Vec::new();
    for r in routes {
        if let Some(list) = &r.methods {
            for m in list {
                if !methods.contains(&m.as_str()) {
                    methods.push(m.as_str());
                }
            }
        }
    }
    methods.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, path: &str, methods: Option<&[&str]>) -> Route {
        Route {
            id: id.into(),
            path: path.into(),
            methods: methods.map(|m| m.iter().map(|s| s.parse().unwrap()).collect()),
            upstream: Upstream {
                scheme: http::uri::Scheme::HTTP,
                authority: "127.0.0.1:1".parse().unwrap(),
                base_path: String::new(),
                display: "http://127.0.0.1:1".into(),
                ca: None,
                host: http::HeaderValue::from_static("127.0.0.1:1"),
                pool_key: crate::upstream::Key::new(
                    &http::uri::Scheme::HTTP,
                    &"127.0.0.1:1".parse().unwrap(),
                    None,
                ),
            },
            strip_prefix: None,
            auth: AuthMode::None,
            issuers: None,
            scopes: ScopeRequirement::None,
            scope_challenge: String::new(),
            claims_to_headers: Vec::new(),
            forward_token: false,
            timeout: Duration::from_secs(1),
            metrics: OnceLock::new(),
        }
    }

    fn id(m: Match<'_>) -> String {
        match m {
            Match::Found(r) => r.id.clone(),
            Match::MethodNotAllowed(allow) => format!("405 {allow}"),
            Match::NotFound => "404".into(),
        }
    }

    #[test]
    fn host_header_leaves_out_only_the_default_port() {
        let host = |scheme: http::uri::Scheme, authority: &str| {
            host_header(&scheme, &authority.parse().unwrap()).unwrap()
        };
        use http::uri::Scheme;
        assert_eq!(host(Scheme::HTTP, "orders:80"), "orders");
        assert_eq!(host(Scheme::HTTP, "orders:443"), "orders:443");
        assert_eq!(host(Scheme::HTTPS, "orders:443"), "orders");
        assert_eq!(host(Scheme::HTTPS, "[::1]:8443"), "[::1]:8443");
        assert_eq!(host(Scheme::HTTP, "10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = RouteTable::new(vec![
            route("api", "/api", None),
            route("orders-read", "/api/orders", Some(&["GET", "HEAD"])),
            route("orders-write", "/api/orders", Some(&["POST"])),
        ]);
        assert_eq!(id(t.find("/api/orders/7", &Method::GET)), "orders-read");
        assert_eq!(id(t.find("/api/orders", &Method::POST)), "orders-write");
        assert_eq!(id(t.find("/api/orders/", &Method::GET)), "orders-read");
        assert_eq!(id(t.find("/api/ordersX", &Method::GET)), "api");
        assert_eq!(
            id(t.find("/api/orders/7", &Method::DELETE)),
            "405 GET, HEAD, POST"
        );
        assert_eq!(id(t.find("/apix", &Method::GET)), "404");
        assert_eq!(id(t.find("/", &Method::GET)), "404");
    }

    #[test]
    fn root_route_catches_everything_else() {
        let t = RouteTable::new(vec![route("root", "/", None), route("a", "/a", None)]);
        assert_eq!(id(t.find("/b/c", &Method::GET)), "root");
        assert_eq!(id(t.find("/", &Method::GET)), "root");
        assert_eq!(id(t.find("/a/x", &Method::GET)), "a");
    }

    #[test]
    fn strip_prefix_then_base_path() {
        let mut r = route("o", "/api/orders", None);
        r.strip_prefix = Some("/api".into());
        assert_eq!(r.upstream_path("/api/orders/7"), "/orders/7");
        r.upstream.base_path = "/base".into();
        assert_eq!(r.upstream_path("/api/orders/7"), "/base/orders/7");
        r.strip_prefix = Some("/api/orders".into());
        assert_eq!(r.upstream_path("/api/orders"), "/base/");
        let uri = r.upstream_uri("/api/orders/1", Some("a=b")).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:1/base/1?a=b");
    }
}
