//! Raw structs → validated [`Snapshot`]. Every check records a diagnostic and carries on, so
//! one run of `tollgate check` shows every mistake in the file, not just the first.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, Method};

use super::defaults as d;
use super::raw::{RawConfig, RawLimits, RawTls, RawTokenCache};
use super::Diagnostics;
use crate::auth::cache::TokenCache;
use crate::auth::remote::RemoteRegistry;
use crate::auth::Issuers;
use crate::correlation::TraceContextPolicy;
use crate::routes::{Route, RouteTable};
use crate::state::{Limits, Snapshot};

mod issuer;
mod route;

use self::issuer::issuer;
use self::route::{overlap, route};

/// Compiles `raw`; returns `None` only when nothing usable could be built. Callers must also
/// check `diags`: a snapshot is only valid when no diagnostic was recorded.
pub fn compile(
    raw: RawConfig,
    base_dir: &Path,
    remote: &RemoteRegistry,
    diags: &mut Diagnostics,
) -> Option<Snapshot> {
    let listen = socket_addr(
        raw.listen.as_deref().unwrap_or(d::LISTEN_ADDR),
        "listen",
        diags,
    );
    let admin = raw
        .admin
        .as_deref()
        .and_then(|a| socket_addr(a, "admin", diags));
    // Port 0 (any free port, as tests use) cannot collide.
    if admin.is_some_and(|a| a.port() != 0) && admin == listen {
        diags.error("admin", "must not be the same address as `listen`");
    }
    let realm = raw.realm.unwrap_or_else(|| d::REALM.to_string());
    if !is_quoted_string_safe(&realm) {
        diags.error(
            "realm",
            "realm may only hold printable ASCII without `\"` or `\\`",
        );
    }
    let limits = limits(&raw.limits, diags);
    let mut ctx = Context {
        base_dir: base_dir.to_path_buf(),
        inputs: Vec::new(),
        configured_issuers: 0,
        limits: limits.clone(),
        remote: remote.clone(),
        system_roots: None,
    };
    let token_cache = token_cache(raw.token_cache.as_ref(), diags);
    let tls = raw
        .tls
        .as_ref()
        .and_then(|t| listener_tls(t, &mut ctx, diags));
    let grace_secs = raw.shutdown_grace_secs.unwrap_or(d::SHUTDOWN_GRACE_SECS);
    if grace_secs > d::MAX_SHUTDOWN_GRACE_SECS {
        diags.error(
            "shutdown_grace_secs",
            format!("must be at most {}", d::MAX_SHUTDOWN_GRACE_SECS),
        );
    }

    let mut issuer_ids = HashSet::new();
    let mut iss_values = HashSet::new();
    let mut issuers = Vec::new();
    ctx.configured_issuers = raw.issuers.len();
    let declared_scopes: HashMap<String, Vec<String>> = raw
        .issuers
        .iter()
        .filter_map(|i| Some((i.id.clone()?, i.scopes.clone()?)))
        .collect();
    for (i, ri) in raw.issuers.into_iter().enumerate() {
        let path = format!("issuers[{i}]");
        if let Some(issuer) = issuer(ri, &path, &mut ctx, diags) {
            if !issuer_ids.insert(issuer.id.clone()) {
                diags.error(
                    format!("{path}.id"),
                    format!("issuer id `{}` is used twice", issuer.id),
                );
            }
            if !iss_values.insert(issuer.issuer.clone()) {
                diags.error(
                    format!("{path}.issuer"),
                    "two issuers have the same `issuer` value; tokens could not be told apart",
                );
            }
            issuers.push(issuer);
        }
    }

    let mut routes: Vec<Route> = Vec::new();
    let mut route_ids: HashMap<String, usize> = HashMap::new();
    // (id, path, methods) of every route seen, valid or not: a duplicate is reported even
    // when one of the two routes has other errors too.
    let mut seen: Vec<(String, String, Option<Vec<Method>>)> = Vec::new();
    for (i, rr) in raw.routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let id = rr.id.clone().unwrap_or_default();
        if !id.is_empty() {
            if let Some(prev) = route_ids.insert(id.clone(), i) {
                diags.error(
                    format!("{path}.id"),
                    format!("route id `{id}` is already used by routes[{prev}]"),
                );
            }
        }
        if let Some(p) = rr.path.clone() {
            let methods = rr.methods.as_ref().map(|list| {
                list.iter()
                    .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect::<Vec<_>>()
            });
            for (other_id, other_path, other_methods) in &seen {
                if *other_path == p {
                    if let Some(m) = overlap(other_methods, &methods) {
                        diags.error(
                            format!("{path}.path"),
                            format!("duplicate route: `{id}` and `{other_id}` both take {m} on path `{p}`"),
                        );
                    }
                }
            }
            seen.push((id, p, methods));
        }
        if let Some(route) = route(rr, &path, &issuer_ids, &mut ctx, diags) {
            routes.push(route);
        }
    }
    if routes.is_empty() && diags.is_empty() {
        diags.error("routes", "no routes are configured");
    }
    if diags.is_empty() {
        let ids: Vec<String> = issuers.iter().map(|i| i.id.clone()).collect();
        super::lint::lint(&routes, &ids, &declared_scopes, diags);
    }

    let mut identity_headers: Vec<HeaderName> = Vec::new();
    for r in &routes {
        for (_, h) in &r.claims_to_headers {
            if !identity_headers.contains(h) {
                identity_headers.push(h.clone());
            }
        }
    }
    Some(Snapshot {
        listen: listen?,
        admin,
        challenge_prefix: format!("Bearer realm=\"{realm}\""),
        realm,
        limits,
        issuers: Issuers::new(issuers, token_cache),
        routes: RouteTable::new(routes),
        identity_headers,
        tls,
        trace_context: TraceContextPolicy {
            start_when_absent: raw
                .trace_context
                .as_ref()
                .and_then(|t| t.start_when_absent)
                .unwrap_or(false),
            sampled: raw
                .trace_context
                .as_ref()
                .and_then(|t| t.sampled)
                .unwrap_or(true),
        },
        shutdown_grace: Duration::from_secs(grace_secs),
        inputs: ctx.inputs,
        warnings: Vec::new(),
        sha256: String::new(),
        loaded_at: SystemTime::now(),
    })
}

/// What compilation needs beyond the raw structs: where relative paths start, and the list
/// of every file read (the reloader watches their directories).
pub(super) struct Context {
    base_dir: std::path::PathBuf,
    inputs: Vec<std::path::PathBuf>,
    /// Issuers in the file, valid or not: a route is not told "no issuers are configured"
    /// just because the one configured issuer has its own error.
    configured_issuers: usize,
    limits: Limits,
    /// Remote key stores that outlive snapshots.
    remote: RemoteRegistry,
    /// The OS trust store, loaded on first use only (it costs file reads and may warn).
    system_roots: Option<Arc<rustls::ClientConfig>>,
}

impl Context {
    fn system_roots(&mut self) -> Arc<rustls::ClientConfig> {
        Arc::clone(
            self.system_roots
                .get_or_insert_with(|| Arc::new(crate::tls::client_config_with_system_roots())),
        )
    }
}

/// `token_cache:` (on by default).
fn token_cache(raw: Option<&RawTokenCache>, diags: &mut Diagnostics) -> Option<TokenCache> {
    let enabled = raw.and_then(|c| c.enabled).unwrap_or(true);
    let max = raw
        .and_then(|c| c.max_entries)
        .unwrap_or(d::TOKEN_CACHE_MAX_ENTRIES);
    if max == 0 {
        diags.error(
            "token_cache.max_entries",
            "must be at least 1 (set `enabled: false` to turn the cache off)",
        );
    }
    (enabled && max > 0).then(|| TokenCache::new(max))
}

fn listener_tls(
    raw: &RawTls,
    ctx: &mut Context,
    diags: &mut Diagnostics,
) -> Option<Arc<rustls::ServerConfig>> {
    let cert = required(&raw.cert, "tls.cert".into(), diags);
    let key = required(&raw.key, "tls.key".into(), diags);
    let (cert, key) = (cert?, key?);
    let (cert, key) = (ctx.base_dir.join(cert), ctx.base_dir.join(key));
    ctx.inputs.push(cert.clone());
    ctx.inputs.push(key.clone());
    match crate::tls::server_config(&cert, &key) {
        Ok(c) => Some(c),
        Err(e) => {
            diags.error("tls", e);
            None
        }
    }
}

fn socket_addr(text: &str, path: &str, diags: &mut Diagnostics) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            diags.error(
                path,
                format!("`{text}` is not an IP:port address (for example 127.0.0.1:8080)"),
            );
            None
        }
    }
}

fn limits(raw: &RawLimits, diags: &mut Diagnostics) -> Limits {
    let mut positive = |value: Option<u64>, name: &str, default: u64| {
        at_least_one(value, format!("limits.{name}"), default, diags)
    };
    let header_read_timeout_ms = positive(
        raw.header_read_timeout_ms,
        "header_read_timeout_ms",
        d::HEADER_READ_TIMEOUT_MS,
    );
    let max_body = positive(
        raw.max_request_body_bytes,
        "max_request_body_bytes",
        d::MAX_REQUEST_BODY_BYTES,
    );
    let max_conns = positive(
        raw.max_connections.map(|v| v as u64),
        "max_connections",
        d::MAX_CONNECTIONS as u64,
    );
    let streams = positive(
        raw.h2_max_concurrent_streams.map(u64::from),
        "h2_max_concurrent_streams",
        u64::from(d::H2_MAX_CONCURRENT_STREAMS),
    );
    let h2_headers = positive(
        raw.h2_max_header_list_bytes.map(u64::from),
        "h2_max_header_list_bytes",
        u64::from(d::H2_MAX_HEADER_LIST_BYTES),
    );
    let connect = positive(
        raw.upstream_connect_timeout_ms,
        "upstream_connect_timeout_ms",
        d::UPSTREAM_CONNECT_TIMEOUT_MS,
    );
    let idle = positive(
        raw.upstream_idle_timeout_ms,
        "upstream_idle_timeout_ms",
        d::UPSTREAM_IDLE_TIMEOUT_MS,
    );
    let header_bytes = raw
        .max_request_header_bytes
        .unwrap_or(d::MAX_REQUEST_HEADER_BYTES);
    let header_bytes = if header_bytes < d::MIN_REQUEST_HEADER_BYTES {
        diags.error(
            "limits.max_request_header_bytes",
            format!("must be at least {}", d::MIN_REQUEST_HEADER_BYTES),
        );
        d::MAX_REQUEST_HEADER_BYTES
    } else {
        header_bytes
    };
    Limits {
        header_read_timeout: Duration::from_millis(header_read_timeout_ms),
        max_request_header_bytes: header_bytes,
        max_request_body_bytes: max_body,
        max_connections: max_conns as usize,
        h2_max_concurrent_streams: streams as u32,
        h2_max_header_list_bytes: h2_headers as u32,
        upstream_connect_timeout: Duration::from_millis(connect),
        upstream_idle_timeout: Duration::from_millis(idle),
    }
}

/// A count or duration that must be at least 1 (0 would disable a safety limit by accident);
/// `default` when absent.
pub(super) fn at_least_one(
    value: Option<u64>,
    path: String,
    default: u64,
    diags: &mut Diagnostics,
) -> u64 {
    match value {
        Some(0) => {
            diags.error(path, "must be at least 1");
            default
        }
        Some(v) => v,
        None => default,
    }
}

pub(super) fn required<'a>(
    value: &'a Option<String>,
    path: String,
    diags: &mut Diagnostics,
) -> Option<&'a str> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Some(v),
        Some(_) => {
            diags.error(path, "must not be empty");
            None
        }
        None => {
            diags.error(path, "is required");
            None
        }
    }
}

pub(super) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_quoted_string_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}
