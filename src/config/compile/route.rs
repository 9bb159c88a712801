//! `routes[]`: path, methods, upstream (with its CA), auth mode, scopes, claim headers.

use crate::upstream::Key;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, Uri};

use super::{is_identifier, required, Context};
use crate::auth::scopes::{is_valid_scope_token, ScopeRequirement};
use crate::config::defaults as d;
use crate::config::raw::{RawRoute, RawScopes};
use crate::config::Diagnostics;
use crate::forward::is_reserved_header;
use crate::routes::{AuthMode, Route, Upstream, UpstreamCa};

/// Longest accepted `timeout_ms`: an hour; longer is a typo, not a plan.
const MAX_ROUTE_TIMEOUT_MS: u64 = 3_600_000;

pub(super) fn route(
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
                u.pool_key = Key::new(&u.scheme, &u.authority, u.ca.as_ref());
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
        metrics: Default::default(),
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
    let Some(host) = crate::routes::host_header(&scheme, &authority) else {
        return fail(diags, "its host cannot be sent in a Host header");
    };
    Some(Upstream {
        pool_key: Key::new(&scheme, &authority, None),
        host,
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
pub(super) fn overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> Option<String> {
    match (a, b) {
        (None, None) => Some("every method".into()),
        (Some(l), None) | (None, Some(l)) => l.first().map(|m| m.to_string()),
        (Some(x), Some(y)) => x.iter().find(|m| y.contains(m)).map(|m| m.to_string()),
    }
}
