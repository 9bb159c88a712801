//! `issuers[]`: identity, audiences, algorithms, and the JWK Set file with its key hygiene.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use super::{at_least_one, is_identifier, required, Context};
use crate::auth::jwks::{parse_algorithm, KeySet, SUPPORTED_ALGORITHMS};
use crate::auth::keystore::KeySource;
use crate::auth::remote::{check_fetch_url, RemoteSource, RemoteSpec};
use crate::auth::verify::normalize_typ;
use crate::auth::Issuer;
use crate::config::defaults as d;
use crate::config::raw::RawIssuer;
use crate::config::Diagnostics;

pub(super) fn issuer(
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
    let audiences = match raw.audiences.clone() {
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
    let keys = key_source(&raw, path, iss, id, &algorithms, ctx, diags);
    Some(Issuer {
        id: id?.to_string(),
        issuer: iss?.to_string(),
        audiences: audiences?,
        keys: keys?,
        algorithms,
        leeway_secs,
        require_typ,
        metrics: Default::default(),
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

/// Exactly one of `jwks_file`, `jwks_url`, `discovery: true`.
fn key_source(
    raw: &RawIssuer,
    path: &str,
    iss: Option<&str>,
    id: Option<&str>,
    algorithms: &[jsonwebtoken::Algorithm],
    ctx: &mut Context,
    diags: &mut Diagnostics,
) -> Option<KeySource> {
    let discovery = raw.discovery.unwrap_or(false);
    let given = usize::from(raw.jwks_file.is_some())
        + usize::from(raw.jwks_url.is_some())
        + usize::from(discovery);
    if given != 1 {
        diags.error(
            path,
            "set exactly one of `jwks_file`, `jwks_url` or `discovery: true`",
        );
        return None;
    }
    if let Some(file) = &raw.jwks_file {
        for (key, set) in [
            ("jwks_refresh_secs", raw.jwks_refresh_secs.is_some()),
            ("jwks_cooldown_secs", raw.jwks_cooldown_secs.is_some()),
            ("jwks_max_stale_secs", raw.jwks_max_stale_secs.is_some()),
            ("ca_file", raw.ca_file.is_some()),
            ("ready_without_keys", raw.ready_without_keys.is_some()),
        ] {
            if set {
                diags.error(
                    format!("{path}.{key}"),
                    "only applies to `jwks_url` or `discovery`",
                );
            }
        }
        let file = ctx.base_dir.join(file);
        ctx.inputs.push(file.clone());
        let set = load_jwks_file(&file, &format!("{path}.jwks_file"), algorithms, diags)?;
        return Some(KeySource::Static(Arc::new(set)));
    }
    let source = match &raw.jwks_url {
        Some(url) => {
            let at = format!("{path}.jwks_url");
            let uri = url
                .parse::<Uri>()
                .map_err(|_| "is not a URL".to_string())
                .and_then(|u| check_fetch_url(&u).map(|()| u));
            match uri {
                Ok(u) => RemoteSource::JwksUrl(u),
                Err(e) => {
                    diags.error(at, format!("`{url}`: {e}"));
                    return None;
                }
            }
        }
        None => {
            // OIDC Discovery §4: the issuer URL + /.well-known/openid-configuration.
            let iss = iss?;
            let well_known = format!(
                "{}/.well-known/openid-configuration",
                iss.trim_end_matches('/')
            );
            match well_known
                .parse::<Uri>()
                .map_err(|_| "is not a URL".to_string())
                .and_then(|u| check_fetch_url(&u).map(|()| u))
            {
                Ok(u) => RemoteSource::Discovery(u),
                Err(e) => {
                    diags.error(
                        format!("{path}.discovery"),
                        format!("the issuer `{iss}` cannot be used for discovery: {e}"),
                    );
                    return None;
                }
            }
        }
    };
    let secs = |value: Option<u64>, key: &str, default: u64, diags: &mut Diagnostics| {
        at_least_one(value, format!("{path}.{key}"), default, diags)
    };
    let refresh_max = secs(
        raw.jwks_refresh_secs,
        "jwks_refresh_secs",
        d::JWKS_REFRESH_SECS,
        diags,
    );
    let cooldown = secs(
        raw.jwks_cooldown_secs,
        "jwks_cooldown_secs",
        d::JWKS_COOLDOWN_SECS,
        diags,
    );
    let max_stale = secs(
        raw.jwks_max_stale_secs,
        "jwks_max_stale_secs",
        d::JWKS_MAX_STALE_SECS,
        diags,
    );
    let plain_http = match &source {
        RemoteSource::JwksUrl(u) | RemoteSource::Discovery(u) => u.scheme_str() == Some("http"),
    };
    if plain_http && raw.ca_file.is_some() {
        diags.error(format!("{path}.ca_file"), "only applies to an https IdP");
        return None;
    }
    let (tls, ca_digest) = match &raw.ca_file {
        Some(ca) => {
            let file = ctx.base_dir.join(ca);
            ctx.inputs.push(file.clone());
            let bytes = match crate::tls::read_pem(&file) {
                Ok(b) => b,
                Err(e) => {
                    diags.error(format!("{path}.ca_file"), e);
                    return None;
                }
            };
            match crate::tls::client_config_with_ca(&bytes, &file) {
                Ok(c) => (Arc::new(c), Some(crate::state::sha256_hex(&bytes))),
                Err(e) => {
                    diags.error(format!("{path}.ca_file"), e);
                    return None;
                }
            }
        }
        None => (ctx.system_roots(), None),
    };
    let spec = RemoteSpec {
        issuer_id: id?.to_string(),
        issuer: iss?.to_string(),
        source,
        refresh_max: Duration::from_secs(refresh_max),
        refresh_min: Duration::from_secs(d::JWKS_MIN_REFRESH_SECS.min(refresh_max)),
        cooldown: Duration::from_secs(cooldown),
        max_stale: Duration::from_secs(max_stale),
        ready_without_keys: raw.ready_without_keys.unwrap_or(false),
        algorithms: algorithms.to_vec(),
        ca_digest,
        tls,
    };
    let limits = ctx.limits.clone();
    let store = ctx.remote.get_or_create(spec.clone(), || {
        crate::upstream::build_client(&limits, (*spec.tls).clone())
    });
    Some(KeySource::Remote(store))
}
