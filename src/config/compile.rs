//! Raw structs → validated [`Snapshot`]. Every check records a diagnostic and carries on, so
//! one run of `tollgate check` shows every mistake in the file, not just the first.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, Method, Uri};

use super::defaults as d;
use super::raw::{RawConfig, RawIssuer, RawLimits, RawRoute, RawScopes, RawTls};
use super::Diagnostics;
use crate::auth::jwks::{parse_algorithm, KeySet, SUPPORTED_ALGORITHMS};
use crate::auth::scopes::{is_valid_scope_token, ScopeRequirement};
use crate::auth::verify::normalize_typ;
use crate::auth::{Issuer, Issuers};
use crate::forward::is_reserved_header;
use crate::routes::{AuthMode, Route, RouteTable, Upstream, UpstreamCa};
use crate::state::{Limits, Snapshot};

/// Longest accepted `timeout_ms`: an hour; longer is a typo, not a plan.
const MAX_ROUTE_TIMEOUT_MS: u64 = 3_600_000;

/// Compiles `raw`; returns `None` only when nothing usable could be built. Callers must also
/// check `diags`: a snapshot is only valid when no diagnostic was recorded.
pub fn compile(raw: RawConfig, base_dir: &Path, diags: &mut Diagnostics) -> Option<Snapshot> {
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
    };
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
        issuers: Issuers::new(issuers),
        routes: RouteTable::new(routes),
        identity_headers,
        tls,
        shutdown_grace: Duration::from_secs(grace_secs),
        inputs: ctx.inputs,
        sha256: String::new(),
        loaded_at: SystemTime::now(),
    })
}

/// What compilation needs beyond the raw structs: where relative paths start, and the list
/// of every file read (the reloader watches their directories).
struct Context {
    base_dir: std::path::PathBuf,
    inputs: Vec<std::path::PathBuf>,
    /// Issuers in the file, valid or not: a route is not told "no issuers are configured"
    /// just because the one configured issuer has its own error.
    configured_issuers: usize,
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
    let mut positive = |value: Option<u64>, name: &str, default: u64| -> u64 {
        match value {
            Some(0) => {
                diags.error(format!("limits.{name}"), "must be greater than 0");
                default
            }
            Some(v) => v,
            None => default,
        }
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

fn required<'a>(
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

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_quoted_string_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

fn issuer(
    raw: RawIssuer,
    path: &str,
    ctx: &mut Context,
    diags: &mut Diagnostics,
) -> Option<Issuer> {
    let id = required(&raw.id, format!("{path}.id"), diags);
    if let Some(id) = id.filter(|id| !is_identifier(id)) {
        diags.error(
            format!("{path}.id"),
            format!("`{id}` may only use letters, digits, `-`, `_` and `.`"),
        );
    }
    let iss = required(&raw.issuer, format!("{path}.issuer"), diags);
    let audiences = match raw.audiences {
        Some(a) if !a.is_empty() && a.iter().all(|x| !x.is_empty()) => Some(a),
        Some(_) => {
            diags.error(
                format!("{path}.audiences"),
                "needs at least one non-empty audience",
            );
            None
        }
        None => {
            diags.error(
                format!("{path}.audiences"),
                "is required: a token must be meant for this gateway (RFC 9068 §4)",
            );
            None
        }
    };
    let mut algorithms = Vec::new();
    match &raw.algorithms {
        None => algorithms.extend_from_slice(SUPPORTED_ALGORITHMS),
        Some(list) if list.is_empty() => diags.error(
            format!("{path}.algorithms"),
            "must list at least one algorithm",
        ),
        Some(list) => {
            for (j, name) in list.iter().enumerate() {
                match parse_algorithm(name) {
                    Some(a) => algorithms.push(a),
                    None => diags.error(
                        format!("{path}.algorithms[{j}]"),
                        format!("`{name}` is not supported; use one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"),
                    ),
                }
            }
        }
    }
    let leeway_secs = raw.leeway_secs.unwrap_or(d::LEEWAY_SECS);
    if leeway_secs > d::MAX_LEEWAY_SECS {
        diags.error(
            format!("{path}.leeway_secs"),
            format!("must be at most {} seconds", d::MAX_LEEWAY_SECS),
        );
    }
    let require_typ = raw.require_typ.as_deref().map(normalize_typ);
    if require_typ.as_deref() == Some("") {
        diags.error(format!("{path}.require_typ"), "must not be empty");
    }
    let keys = match required(&raw.jwks_file, format!("{path}.jwks_file"), diags) {
        Some(file) => {
            let file = ctx.base_dir.join(file);
            ctx.inputs.push(file.clone());
            load_jwks_file(&file, &format!("{path}.jwks_file"), &algorithms, diags)
        }
        None => None,
    };
    Some(Issuer {
        id: id?.to_string(),
        issuer: iss?.to_string(),
        audiences: audiences?,
        keys: keys?,
        algorithms,
        leeway_secs,
        require_typ,
    })
}

fn load_jwks_file(
    file: &Path,
    path: &str,
    algorithms: &[jsonwebtoken::Algorithm],
    diags: &mut Diagnostics,
) -> Option<KeySet> {
    let bytes = match std::fs::metadata(file) {
        Ok(m) if m.len() > d::MAX_JWKS_FILE_BYTES => {
            diags.error(
                path,
                format!(
                    "`{}` is larger than {} bytes",
                    file.display(),
                    d::MAX_JWKS_FILE_BYTES
                ),
            );
            return None;
        }
        Ok(_) => std::fs::read(file),
        Err(e) => Err(e),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            diags.error(path, format!("cannot read `{}`: {e}", file.display()));
            return None;
        }
    };
    let (set, refused) = match KeySet::from_json(&bytes) {
        Ok(r) => r,
        Err(e) => {
            diags.error(path, format!("`{}` is {e}", file.display()));
            return None;
        }
    };
    for r in &refused {
        let kid = r
            .kid
            .as_deref()
            .map(|k| format!(" (kid `{k}`)"))
            .unwrap_or_default();
        diags.error(
            path,
            format!(
                "key {}{kid} in `{}` is refused: {}",
                r.index,
                file.display(),
                r.reason
            ),
        );
    }
    if refused.is_empty() && !set.keys.iter().any(|k| algorithms.contains(&k.alg)) {
        diags.error(
            path,
            format!("`{}` has no key for any allowed algorithm", file.display()),
        );
    }
    Some(set)
}

fn route(
    raw: RawRoute,
    path: &str,
    issuer_ids: &HashSet<String>,
    ctx: &mut Context,
    diags: &mut Diagnostics,
) -> Option<Route> {
    let id = required(&raw.id, format!("{path}.id"), diags).map(str::to_string);
    if let Some(id) = id.as_deref().filter(|id| !is_identifier(id)) {
        diags.error(
            format!("{path}.id"),
            format!("`{id}` may only use letters, digits, `-`, `_` and `.`"),
        );
    }
    let route_path = required(&raw.path, format!("{path}.path"), diags)
        .and_then(|p| route_path(p, &format!("{path}.path"), diags));
    let methods = raw
        .methods
        .as_ref()
        .and_then(|list| methods(list, path, diags));
    let mut upstream = required(&raw.upstream, format!("{path}.upstream"), diags)
        .and_then(|u| upstream(u, &format!("{path}.upstream"), diags));
    if let Some(ca_file) = &raw.ca_file {
        let at = format!("{path}.ca_file");
        match upstream.as_mut() {
            Some(u) if u.scheme == http::uri::Scheme::HTTPS => {
                let file = ctx.base_dir.join(ca_file);
                ctx.inputs.push(file.clone());
                u.ca = upstream_ca(&file, &at, diags);
            }
            Some(_) => diags.error(at, "only applies to an https upstream"),
            None => {}
        }
    }
    let strip_prefix = raw.strip_prefix.as_deref().and_then(|sp| {
        let valid = sp.starts_with('/') && sp.len() > 1 && !sp.ends_with('/');
        let fits = route_path
            .as_deref()
            .is_some_and(|p| p == sp || p.starts_with(&format!("{sp}/")));
        if !valid {
            diags.error(
                format!("{path}.strip_prefix"),
                format!("`{sp}` must start with `/` and not end with `/`"),
            );
        } else if route_path.is_some() && !fits {
            diags.error(
                format!("{path}.strip_prefix"),
                format!("`{sp}` is not a leading segment of the route path"),
            );
        }
        (valid && fits).then(|| sp.to_string())
    });
    let auth = match raw.auth.as_deref() {
        None | Some("required") => AuthMode::Required,
        Some("optional") => AuthMode::Optional,
        Some("none") => AuthMode::None,
        Some(other) => {
            diags.error(
                format!("{path}.auth"),
                format!("`{other}` is not one of required, optional, none"),
            );
            AuthMode::Required
        }
    };
    if let Some(list) = &raw.issuers {
        for (j, i) in list.iter().enumerate() {
            if !issuer_ids.contains(i) {
                diags.error(
                    format!("{path}.issuers[{j}]"),
                    format!("no issuer has id `{i}`"),
                );
            }
        }
    }
    if auth != AuthMode::None && ctx.configured_issuers == 0 && raw.issuers.is_none() {
        diags.error(
            format!("{path}.auth"),
            "tokens are checked on this route but no issuers are configured",
        );
    }
    let scopes = scopes(raw.scopes.as_ref(), path, diags);
    if scopes != ScopeRequirement::None && auth != AuthMode::Required {
        diags.error(
            format!("{path}.scopes"),
            "scopes need `auth: required`; without a token a request would pass without them",
        );
    }
    if auth == AuthMode::None && raw.issuers.is_some() {
        diags.error(format!("{path}.issuers"), "has no effect with `auth: none`");
    }
    let claims_to_headers = claims_to_headers(raw.claims_to_headers.as_ref(), path, diags);
    if auth == AuthMode::None && !claims_to_headers.is_empty() {
        diags.error(
            format!("{path}.claims_to_headers"),
            "has no effect with `auth: none`: no token is read, so no claim can be forwarded",
        );
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(d::ROUTE_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > MAX_ROUTE_TIMEOUT_MS {
        diags.error(
            format!("{path}.timeout_ms"),
            format!("must be between 1 and {MAX_ROUTE_TIMEOUT_MS}"),
        );
    }
    Some(Route {
        id: id?,
        path: route_path?,
        methods,
        upstream: upstream?,
        strip_prefix,
        auth,
        issuers: raw.issuers,
        scope_challenge: scopes.challenge(),
        scopes,
        claims_to_headers,
        forward_token: raw.forward_token.unwrap_or(false),
        timeout: Duration::from_millis(timeout_ms),
    })
}

fn route_path(p: &str, path: &str, diags: &mut Diagnostics) -> Option<String> {
    let problem = if !p.starts_with('/') {
        Some("must start with `/`")
    } else if p.len() > 1 && p.ends_with('/') {
        Some("must not end with `/` (a prefix already matches everything below it)")
    } else if p.contains(['?', '#', '%', '\\']) || p.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        Some("may not contain `?`, `#`, `%`, `\\`, spaces or control characters")
    } else if p.len() > 1
        && p[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        Some("may not contain empty, `.` or `..` segments")
    } else {
        None
    };
    match problem {
        Some(msg) => {
            diags.error(path, format!("`{p}` {msg}"));
            None
        }
        None => Some(p.to_string()),
    }
}

fn methods(list: &[String], path: &str, diags: &mut Diagnostics) -> Option<Vec<Method>> {
    if list.is_empty() {
        diags.error(
            format!("{path}.methods"),
            "must list at least one method, or be left out for all",
        );
        return None;
    }
    let mut out = Vec::new();
    for (j, m) in list.iter().enumerate() {
        // Method names are case-sensitive (RFC 9110 §9.1): `get` is not GET.
        if m.is_empty()
            || m.bytes()
                .any(|b| !b.is_ascii_uppercase() && b != b'-' && b != b'_')
        {
            diags.error(
                format!("{path}.methods[{j}]"),
                format!("`{m}` is not an upper-case method name"),
            );
            continue;
        }
        match Method::from_bytes(m.as_bytes()) {
            Ok(method) if !out.contains(&method) => out.push(method),
            Ok(_) => {}
            Err(_) => diags.error(
                format!("{path}.methods[{j}]"),
                format!("`{m}` is not a method name"),
            ),
        }
    }
    Some(out)
}

/// Loads a route's `ca_file` (only meaningful for https upstreams).
fn upstream_ca(file: &Path, path: &str, diags: &mut Diagnostics) -> Option<UpstreamCa> {
    // Read once: the digest that keys the client pool must describe the very bytes the
    // trust store was built from.
    let bytes = match crate::tls::read_pem(file) {
        Ok(b) => b,
        Err(e) => {
            diags.error(path, e);
            return None;
        }
    };
    match crate::tls::client_config_with_ca(&bytes, file) {
        Ok(config) => Some(UpstreamCa {
            digest: crate::state::sha256_hex(&bytes),
            config: Arc::new(config),
        }),
        Err(e) => {
            diags.error(path, e);
            None
        }
    }
}

fn upstream(text: &str, path: &str, diags: &mut Diagnostics) -> Option<Upstream> {
    // A URL with userinfo may carry a password: never echo it.
    let shown = if text.contains('@') { "the URL" } else { text };
    let fail = |diags: &mut Diagnostics, why: &str| {
        diags.error(
            path,
            format!("`{shown}` is not a valid upstream URL: {why}"),
        );
        None
    };
    let Ok(uri) = text.parse::<Uri>() else {
        return fail(diags, "expected scheme://host:port[/base-path]");
    };
    let scheme = match uri.scheme_str() {
        Some("http") => http::uri::Scheme::HTTP,
        Some("https") => http::uri::Scheme::HTTPS,
        Some(_) => return fail(diags, "the scheme must be http or https"),
        None => return fail(diags, "expected scheme://host:port[/base-path]"),
    };
    let Some(authority) = uri.authority().cloned() else {
        return fail(diags, "it has no host");
    };
    if authority.as_str().contains('@') {
        return fail(diags, "credentials in the URL are not supported");
    }
    if authority.host().is_empty() {
        return fail(diags, "it has no host");
    }
    if uri.query().is_some() || text.contains('#') {
        return fail(diags, "a query or fragment is not allowed");
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    Some(Upstream {
        scheme,
        authority,
        base_path,
        display: text.to_string(),
        ca: None,
    })
}

fn scopes(raw: Option<&RawScopes>, path: &str, diags: &mut Diagnostics) -> ScopeRequirement {
    let (list, any) = match raw {
        None => return ScopeRequirement::None,
        Some(RawScopes::AllOf(l)) => (l, false),
        Some(RawScopes::AnyOf(l)) => (l, true),
    };
    if list.is_empty() {
        diags.error(
            format!("{path}.scopes"),
            "must list at least one scope, or be left out",
        );
        return ScopeRequirement::None;
    }
    for s in list {
        if !is_valid_scope_token(s) {
            diags.error(
                format!("{path}.scopes"),
                format!(
                    "`{s}` is not a valid scope (no spaces, quotes or backslashes; RFC 6749 §3.3)"
                ),
            );
        }
    }
    if any {
        ScopeRequirement::AnyOf(list.clone())
    } else {
        ScopeRequirement::AllOf(list.clone())
    }
}

fn claims_to_headers(
    raw: Option<&std::collections::BTreeMap<String, String>>,
    path: &str,
    diags: &mut Diagnostics,
) -> Vec<(Vec<String>, HeaderName)> {
    let mut out: Vec<(Vec<String>, HeaderName)> = Vec::new();
    for (claim, header) in raw.into_iter().flatten() {
        let at = format!("{path}.claims_to_headers.{claim}");
        let segments: Vec<String> = claim.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            diags.error(&at, format!("`{claim}` is not a claim name or dot path"));
            continue;
        }
        let name = match HeaderName::from_bytes(header.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                diags.error(&at, format!("`{header}` is not a valid header name"));
                continue;
            }
        };
        if is_reserved_header(&name) {
            diags.error(
                &at,
                format!("`{header}` is managed by the gateway and cannot carry a claim"),
            );
            continue;
        }
        if out.iter().any(|(_, h)| *h == name) {
            diags.error(
                &at,
                format!("header `{header}` already carries another claim on this route"),
            );
            continue;
        }
        out.push((segments, name));
    }
    out
}

/// The first method both lists accept, if any (`None` lists mean every method).
fn overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> Option<String> {
    match (a, b) {
        (None, None) => Some("every method".into()),
        (Some(l), None) | (None, Some(l)) => l.first().map(|m| m.to_string()),
        (Some(x), Some(y)) => x.iter().find(|m| y.contains(m)).map(|m| m.to_string()),
    }
}
