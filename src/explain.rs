//! `tollgate explain METHOD PATH [--token TOKEN]`: what the gateway would do with a
//! request, and why, without running it. Every verdict comes from the same functions the
//! request path uses (`sanitize`, `RouteTable::find`, `auth::authenticate`, the route's
//! scope check), so the explanation cannot drift from the behaviour.

use std::fmt::Write;

use crate::auth::claims::Claims;
use crate::auth::scopes::ScopeRequirement;
use crate::auth::Reason;
use crate::error::GatewayError;
use crate::routes::{path_covers, AuthMode, Match, Route};
use crate::sanitize::normalize_path;
use crate::state::Snapshot;
use base64::Engine;
use http::Method;

/// The report, and whether the request would reach the upstream.
pub struct Explanation {
    pub allowed: bool,
    pub text: String,
}

/// Builds the report for `method target` (target: path with optional query), `now` in
/// seconds since the epoch. Remote key sets must already be fetched (`cli` waits for them).
pub async fn explain(
    snapshot: &Snapshot,
    method: &Method,
    target: &str,
    token: Option<&str>,
    now: u64,
) -> Explanation {
    let mut out = String::new();
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let _ = writeln!(out, "request:  {method} {target}");
    let deny = |mut out: String, error: GatewayError, detail: &str| {
        let _ = writeln!(
            out,
            "decision: DENY, {} {}: {detail}",
            error.status().as_u16(),
            error.reason()
        );
        Explanation {
            allowed: false,
            text: out,
        }
    };
    let path = match normalize_path(raw_path) {
        Ok(p) => p.into_owned(),
        Err(e) => return deny(out, e, "the path is refused before routing"),
    };
    if path != raw_path {
        let _ = writeln!(out, "path:     {path} (normalized)");
    }
    let mut prefixes: Vec<&Route> = snapshot
        .routes
        .routes()
        .map(|r| r.as_ref())
        .filter(|r| path_covers(&r.path, &path))
        .collect();
    prefixes.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.id.cmp(&b.id)));
    let route = match snapshot.routes.find(&path, method) {
        Match::Found(r) => r,
        Match::NotFound => {
            let detail = "no route's path is a prefix of this path (on a segment boundary)";
            return deny(out, GatewayError::RouteNotFound, detail);
        }
        Match::MethodNotAllowed(allow) => {
            let owner = prefixes.first().map_or("", |r| r.path.as_str());
            let detail = format!(
                "the routes at `{owner}`, the longest matching prefix, take {allow}; \
                 shorter prefixes are not tried"
            );
            return deny(out, GatewayError::MethodNotAllowed(allow.into()), &detail);
        }
    };
    let _ = writeln!(out, "route:    {} (path prefix `{}`)", route.id, route.path);
    let others: Vec<String> = prefixes
        .iter()
        .filter(|r| r.path != route.path)
        .map(|r| format!("`{}` ({})", r.path, r.id))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(
            out,
            "          longest matching prefix; shorter ones not used: {}",
            others.join(", ")
        );
    }
    let methods = route.methods.as_ref().map_or("any".to_string(), |m| {
        m.iter().map(Method::as_str).collect::<Vec<_>>().join(", ")
    });
    let _ = writeln!(out, "          methods: {methods}");
    match route.upstream_uri(&path, query) {
        Ok(uri) => {
            let strip = route
                .strip_prefix
                .as_deref()
                .map_or(String::new(), |p| format!(" (strip_prefix `{p}`)"));
            let _ = writeln!(out, "upstream: {uri}{strip}");
        }
        Err(_) => {
            let detail = "the request target cannot be forwarded";
            return deny(out, GatewayError::BadRequestTarget(detail), detail);
        }
    }
    let issuers = route
        .issuers
        .as_ref()
        .map_or("any configured".to_string(), |l| l.join(", "));
    let _ = writeln!(
        out,
        "auth:     {}; issuers: {issuers}; scopes: {}",
        auth_name(route.auth),
        scopes_text(&route.scopes)
    );
    let allow = |mut out: String, detail: &str| {
        let _ = writeln!(out, "decision: ALLOW, forwarded to the upstream{detail}");
        Explanation {
            allowed: true,
            text: out,
        }
    };
    if route.auth == AuthMode::None {
        return allow(out, " (public route: tokens are not looked at)");
    }
    let Some(token) = token else {
        if route.auth == AuthMode::Optional {
            return allow(out, " anonymously (auth: optional, no token)");
        }
        return deny(
            out,
            GatewayError::MissingToken,
            "a bearer token is required (pass one with --token)",
        );
    };
    let verified =
        crate::auth::authenticate(token, &snapshot.issuers, route.issuers.as_deref(), now).await;
    let verified = match verified {
        Ok(v) => v,
        Err(rejection) => {
            let e = rejection.error;
            let detail = match e.reason {
                // Time claims are checked after the signature: their values are authentic.
                Reason::Expired => claim_time(token, "exp")
                    .map(|exp| format!("token expired {} ago", human(now.saturating_sub(exp))))
                    .unwrap_or_else(|| e.description.to_string()),
                Reason::NotYetValid => {
                    format!("{} (clock skew or a token from the future)", e.description)
                }
                _ => e.description.to_string(),
            };
            let by = rejection
                .issuer
                .map_or(String::new(), |i| format!(" [issuer {}]", i.id));
            return deny(out, GatewayError::InvalidToken(e), &format!("{detail}{by}"));
        }
    };
    let claims = &verified.claims;
    let exp = verified.exp as u64;
    let _ = writeln!(
        out,
        "token:    valid; issuer {}, sub {}, client_id {}, expires in {}",
        verified.issuer.id,
        claim(claims, "sub"),
        claim(claims, "client_id"),
        human(exp.saturating_sub(now))
    );
    if !route.scopes.is_satisfied_by(claims) {
        let detail = missing_scopes(&route.scopes, claims);
        let e = GatewayError::InsufficientScope(route.scope_challenge.clone());
        return deny(out, e, &detail);
    }
    allow(out, "")
}

fn auth_name(a: AuthMode) -> &'static str {
    match a {
        AuthMode::Required => "required",
        AuthMode::Optional => "optional",
        AuthMode::None => "none",
    }
}

fn scopes_text(s: &ScopeRequirement) -> String {
    match s {
        ScopeRequirement::None => "none".into(),
        ScopeRequirement::AllOf(l) => format!("all of {}", l.join(", ")),
        ScopeRequirement::AnyOf(l) => format!("any of {}", l.join(", ")),
    }
}

fn missing_scopes(s: &ScopeRequirement, claims: &Claims) -> String {
    let has = |scope: &String| {
        let one = ScopeRequirement::AllOf(vec![scope.clone()]);
        one.is_satisfied_by(claims)
    };
    match s {
        ScopeRequirement::AllOf(l) => {
            let missing: Vec<&str> = l.iter().filter(|x| !has(x)).map(String::as_str).collect();
            format!("missing scope {}", missing.join(", "))
        }
        ScopeRequirement::AnyOf(l) => format!("needs one of the scopes {}", l.join(", ")),
        ScopeRequirement::None => String::new(),
    }
}

fn claim<'c>(claims: &'c Claims, name: &str) -> &'c str {
    claims.str(name).unwrap_or("-")
}

/// A numeric time claim read from the payload (only used once the signature held).
fn claim_time(token: &str, name: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims = Claims::parse(&bytes).ok()?;
    claims.get(name)?.as_f64().map(|v| v as u64)
}

/// `45 s`, `3 min`, `2 h 5 min`, `3 d`.
pub fn human(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7_199 => format!("{} min", secs / 60),
        7_200..=172_799 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d", secs / 86_400),
    }
}
