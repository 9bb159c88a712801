//! `issuers[]`: identity, audiences, algorithms, and the JWK Set file with its key hygiene.

use std::path::Path;

use super::{is_identifier, required, Context};
use crate::auth::jwks::{parse_algorithm, KeySet, SUPPORTED_ALGORITHMS};
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
