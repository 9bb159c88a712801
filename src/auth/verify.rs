//! Token verification: RFC 7519 (JWT), RFC 8725 (JWT best current practice) and RFC 9068
//! (JWT access-token profile).
//!
//! The order matters. Cheap structural checks first (size, shape, header), so junk never
//! reaches base64 or crypto; then the issuer, chosen by `iss` so that only that issuer's keys
//! are candidates (a key of issuer A never validates a token claiming issuer B); then the key
//! by `kid`, bound to one algorithm; then the signature; and only then the claims, which mean
//! nothing before the signature holds. Keys are read with jsonwebtoken's JWK types and
//! verified by aws-lc (jsonwebtoken's own backend) through keys parsed once at load:
//! jsonwebtoken rebuilds the key at every call, which cost about 7% of RS256 throughput with
//! the token cache off (A/B on loopback, issue 5). RSA and Ed25519 go through aws-lc-rs,
//! ECDSA through aws-lc's own call (`ecdsa`). The claim checks are ours so that a wrong JSON
//! type is always an error, never "absent".

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use jsonwebtoken::Algorithm;

use super::claims::{Claims, ClaimsError};
pub use super::header::normalize_typ;
use super::header::{
    check_typ, decode_part, header_alg, JwsHeader, Param, MAX_SIGNATURE_BYTES, PART_STACK_BYTES,
};

pub use super::issuer::{Issuer, Issuers, VerifiedToken};
use super::jwks::{KeyLookupError, KeySet};
use super::rejection::reject;
pub use super::rejection::{Reason, Rejection, TokenError};
use crate::config::defaults::MAX_TOKEN_BYTES;

const NOT_A_JWS: TokenError = reject(
    Reason::Malformed,
    "token is not a signed JWT of three base64url parts",
);

/// A token that passed every check needing no key: shape, header, issuer, route, `typ`,
/// algorithm allow-list. What is left needs the issuer's current keys: [`finish`].
pub struct Parsed<'t> {
    token: &'t str,
    signing_input_len: usize,
    signature: &'t str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub issuer: Arc<Issuer>,
    claims: Claims,
}

/// Verifies `token` for a route that accepts `allowed_issuers` (config ids; `None` = any)
/// with the issuer's keys as they are now. `now` is seconds since the Unix epoch.
pub fn verify(
    token: &str,
    issuers: &Issuers,
    allowed_issuers: Option<&[String]>,
    now: u64,
) -> Result<VerifiedToken, TokenError> {
    let mut parsed = parse(token, issuers, allowed_issuers)?;
    let (keys, _) = parsed.issuer.keys.current();
    finish(&mut parsed, &keys, now)
}

/// The checks before any key is needed.
pub fn parse_attributed<'t>(
    token: &'t str,
    issuers: &Issuers,
    allowed_issuers: Option<&[String]>,
) -> Result<Parsed<'t>, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(reject(Reason::Oversized, "token exceeds 8192 bytes").into());
    }
    // memchr rather than `str::split`: the dots are looked for in up to 8 KiB, on every
    // token the cache does not know.
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(NOT_A_JWS.into());
    };
    // Both offsets are of ASCII dots, so every slice below is on char boundaries.
    let (h64, p64, s64) = (
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    );
    if h64.is_empty() || p64.is_empty() || s64.is_empty() {
        return Err(NOT_A_JWS.into());
    }

    let (mut stack, mut heap) = ([0u8; PART_STACK_BYTES], Vec::new());
    let header = decode_part(h64, &mut stack, &mut heap)
        .and_then(JwsHeader::parse)
        .ok_or(reject(
            Reason::Malformed,
            "token header is not a base64url JSON object",
        ))?;
    let alg = header_alg(&header.alg)?;
    if header.crit.is_present() {
        // RFC 7515 §4.1.11: extensions we do not understand must fail verification.
        return Err(reject(
            Reason::ForbiddenHeader,
            "the crit header parameter is not supported",
        )
        .into());
    }
    if let Some(description) = header.key_material_param() {
        return Err(reject(Reason::ForbiddenHeader, description).into());
    }

    let (mut stack, mut heap) = ([0u8; PART_STACK_BYTES], Vec::new());
    let claims = decode_part(p64, &mut stack, &mut heap)
        .ok_or(ClaimsError::NotAnObject)
        .and_then(Claims::parse)
        .map_err(|e| match e {
            ClaimsError::NotAnObject => reject(
                Reason::Malformed,
                "token payload is not a base64url JSON object",
            ),
            ClaimsError::DuplicateName => {
                reject(Reason::Malformed, "token payload has a claim twice")
            }
        })?;
    let issuer = match claims.get("iss").map(|c| c.as_str()) {
        Some(Some(iss)) => issuers
            .by_iss(iss)
            .ok_or(reject(Reason::UnknownIssuer, "token issuer is not trusted"))?,
        Some(None) => return Err(reject(Reason::BadClaim, "iss claim is not a string").into()),
        None => return Err(reject(Reason::BadClaim, "token has no iss claim").into()),
    };
    let kid = issuer_rules(&header, issuer, allowed_issuers, alg).map_err(|error| Rejection {
        error,
        issuer: Some(Arc::clone(issuer)),
    })?;
    Ok(Parsed {
        token,
        signing_input_len: h64.len() + 1 + p64.len(),
        signature: s64,
        alg,
        kid,
        issuer: Arc::clone(issuer),
        claims,
    })
}

/// [`parse_attributed`] without the issuer of a refused token.
pub fn parse<'t>(
    token: &'t str,
    issuers: &Issuers,
    allowed_issuers: Option<&[String]>,
) -> Result<Parsed<'t>, TokenError> {
    parse_attributed(token, issuers, allowed_issuers).map_err(|r| r.error)
}

/// The checks that depend on the token's issuer: accepted on the route, `typ`, algorithm
/// allow-list, and the shape of `kid`, which it returns.
fn issuer_rules(
    header: &JwsHeader<'_>,
    issuer: &Issuer,
    allowed_issuers: Option<&[String]>,
    alg: Algorithm,
) -> Result<Option<String>, TokenError> {
    if let Some(allowed) = allowed_issuers {
        if !allowed.contains(&issuer.id) {
            return Err(reject(
                Reason::IssuerNotAllowed,
                "token issuer is not accepted on this route",
            ));
        }
    }
    check_typ(&header.typ, issuer)?;
    if !issuer.algorithms.contains(&alg) {
        return Err(reject(
            Reason::UnsupportedAlg,
            "token algorithm is not allowed for its issuer",
        ));
    }
    match &header.kid {
        Param::Absent => Ok(None),
        Param::Str(k) => Ok(Some(k.to_string())),
        Param::NotAString => Err(reject(
            Reason::Malformed,
            "kid header parameter is not a string",
        )),
    }
}

/// Key, signature, then the claims, which mean nothing before the signature holds.
/// On success the claims move into the result (no copy); a failure leaves `parsed` intact
/// for one more try after a key refetch.
pub fn finish(
    parsed: &mut Parsed<'_>,
    keys: &KeySet,
    now: u64,
) -> Result<VerifiedToken, TokenError> {
    let key = keys
        .select(parsed.kid.as_deref(), parsed.alg)
        .map_err(|e| match e {
            KeyLookupError::UnknownKid => reject(Reason::UnknownKid, "token key id is unknown"),
            KeyLookupError::AlgMismatch => reject(
                Reason::UnsupportedAlg,
                "token algorithm does not match its key",
            ),
            KeyLookupError::NoKeyForAlg => reject(
                Reason::UnknownKid,
                "issuer has no key for the token algorithm",
            ),
            // Not a missing key: refetching cannot help, so no UnknownKid here.
            KeyLookupError::AmbiguousWithoutKid => reject(
                Reason::AmbiguousKey,
                "token has no kid and its issuer has several keys",
            ),
        })?;

    // The signing input is the two first parts exactly as sent (RFC 7515 §5.2).
    let signing_input = &parsed.token[..parsed.signing_input_len];
    let mut buf = [0u8; MAX_SIGNATURE_BYTES];
    let signature = match URL_SAFE_NO_PAD.decode_slice(parsed.signature, &mut buf) {
        Ok(n) => &buf[..n],
        // Longer than any accepted key's signatures: no key can verify it.
        Err(DecodeSliceError::OutputSliceTooSmall) => {
            return Err(reject(Reason::BadSignature, "token signature is invalid"))
        }
        Err(DecodeSliceError::DecodeError(_)) => {
            return Err(reject(Reason::BadSignature, "token signature is malformed"))
        }
    };
    if !key.key.accepts(signing_input.as_bytes(), signature) {
        return Err(reject(Reason::BadSignature, "token signature is invalid"));
    }

    let exp = check_time_claims(&parsed.claims, parsed.issuer.leeway_secs, now)?;
    check_audience(&parsed.claims, &parsed.issuer.audiences)?;
    Ok(VerifiedToken {
        issuer: Arc::clone(&parsed.issuer),
        claims: Arc::new(std::mem::take(&mut parsed.claims)),
        exp,
    })
}

/// A NumericDate (RFC 7519 §2): a JSON number, possibly non-integer. Any other JSON type is
/// an error, never "absent".
fn numeric_date(claims: &Claims, name: &str) -> Result<Option<f64>, ()> {
    match claims.get(name) {
        None => Ok(None),
        Some(c) => c.as_f64().map(Some).ok_or(()),
    }
}

/// Checks `exp`, `nbf` and `iat`; returns `exp`.
fn check_time_claims(claims: &Claims, leeway: u64, now: u64) -> Result<f64, TokenError> {
    let now = now as f64;
    let leeway = leeway as f64;
    let exp = numeric_date(claims, "exp")
        .map_err(|_| reject(Reason::BadClaim, "exp claim is not a number"))?
        // RFC 9068 §2.2: exp is required in access tokens.
        .ok_or(reject(Reason::BadClaim, "token has no exp claim"))?;
    if now >= exp + leeway {
        return Err(reject(Reason::Expired, "token expired"));
    }
    let nbf = numeric_date(claims, "nbf")
        .map_err(|_| reject(Reason::BadClaim, "nbf claim is not a number"))?;
    if nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(reject(Reason::NotYetValid, "token is not valid yet"));
    }
    let iat = numeric_date(claims, "iat")
        .map_err(|_| reject(Reason::BadClaim, "iat claim is not a number"))?;
    if iat.is_some_and(|iat| iat > now + leeway) {
        return Err(reject(
            Reason::NotYetValid,
            "token was issued in the future",
        ));
    }
    Ok(exp)
}

/// RFC 7519 §4.1.3 / RFC 9068 §4: `aud` (a string or an array of strings) must name us.
fn check_audience(claims: &Claims, audiences: &[String]) -> Result<(), TokenError> {
    let accepted = |a: &str| audiences.iter().any(|x| x == a);
    let Some(aud) = claims.get("aud") else {
        return Err(reject(Reason::WrongAudience, "token has no aud claim"));
    };
    let ok = match (aud.as_str(), aud.as_str_array()) {
        (Some(a), _) => accepted(a),
        (None, Some(items)) => items.iter().any(|a| accepted(a)),
        (None, None) => {
            return Err(reject(
                Reason::BadClaim,
                "aud claim is not a string or array of strings",
            ))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(reject(
            Reason::WrongAudience,
            "token audience is not accepted",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::keystore::KeySource;
    use super::*;
    use serde_json::json;

    fn c(v: serde_json::Value) -> Claims {
        Claims::from_value(&v).unwrap()
    }

    #[test]
    fn time_claims_of_the_wrong_type_are_errors() {
        let e = check_time_claims(&c(json!({"exp": "2000000000"})), 30, 100).unwrap_err();
        assert_eq!(e.description, "exp claim is not a number");
        let e = check_time_claims(&c(json!({"exp": 200, "nbf": true})), 30, 100).unwrap_err();
        assert_eq!(e.description, "nbf claim is not a number");
        let e = check_time_claims(&c(json!({"exp": 200, "iat": null})), 30, 100).unwrap_err();
        assert_eq!(e.description, "iat claim is not a number");
        assert!(
            check_time_claims(&c(json!({"exp": 200.5, "nbf": 120, "iat": 90})), 30, 100).is_ok()
        );
    }

    #[test]
    fn leeway_applies_both_ways() {
        assert!(check_time_claims(&c(json!({"exp": 80})), 30, 100).is_ok());
        assert_eq!(
            check_time_claims(&c(json!({"exp": 70})), 30, 100)
                .unwrap_err()
                .reason,
            Reason::Expired
        );
        assert_eq!(
            check_time_claims(&c(json!({"exp": 900, "nbf": 131})), 30, 100)
                .unwrap_err()
                .reason,
            Reason::NotYetValid
        );
    }

    #[test]
    fn audience_string_or_array() {
        let auds = vec!["api".to_string()];
        assert!(check_audience(&c(json!({"aud": "api"})), &auds).is_ok());
        assert!(check_audience(&c(json!({"aud": ["x", "api"]})), &auds).is_ok());
        assert!(check_audience(&c(json!({"aud": ["x"]})), &auds).is_err());
        assert!(check_audience(&c(json!({"aud": ["api", 3]})), &auds).is_err());
        assert!(check_audience(&c(json!({})), &auds).is_err());
    }

    /// Every supported algorithm verifies its own tokens and refuses a flipped signature.
    #[test]
    fn every_algorithm_round_trips_through_the_parsed_keys() {
        use crate::devkeys::{self, TokenSpec};
        use std::time::Duration;
        for &alg in super::super::jwks::SUPPORTED_ALGORITHMS {
            let key = devkeys::generate(alg, "k").unwrap();
            let (keys, refused) = KeySet::from_json(devkeys::jwks_json([&key]).as_bytes()).unwrap();
            assert!(refused.is_empty(), "{alg:?}: {refused:?}");
            let issuer = Issuer {
                id: "i".into(),
                issuer: "https://i.test".into(),
                audiences: vec!["api".into()],
                keys: KeySource::Static(Arc::new(keys)),
                algorithms: vec![alg],
                leeway_secs: 0,
                require_typ: None,
                metrics: Default::default(),
            };
            let issuers = Issuers::new(vec![issuer], None);
            let spec = TokenSpec {
                iss: "https://i.test".into(),
                aud: vec!["api".into()],
                sub: "s".into(),
                scope: None,
                client_id: "c".into(),
                ttl: Duration::from_secs(60),
                extra: Default::default(),
            };
            let token = devkeys::mint(&key, &spec).unwrap();
            let now = now();
            assert!(verify(&token, &issuers, None, now).is_ok(), "{alg:?}");
            let (input, sig) = token.rsplit_once('.').unwrap();
            let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(sig)
                .unwrap();
            bytes[0] ^= 1;
            let forged = format!(
                "{input}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            );
            let e = verify(&forged, &issuers, None, now).unwrap_err();
            assert_eq!(e.description, "token signature is invalid", "{alg:?}");
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
}
