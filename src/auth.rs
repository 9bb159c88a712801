//! Authentication and authorization: where the token comes from (`extract`), which keys may
//! verify it (`jwks`, `keystore`, `remote`), whether it is valid (`verify`, with the
//! verified-token `cache` in front), and whether it grants the route's scopes (`scopes`).

pub mod cache;
pub mod claims;
mod ecdsa;
pub mod extract;
mod header;
pub mod issuer;
pub mod jwks;
pub mod keystore;
pub mod rejection;
pub mod remote;
pub mod scopes;
pub mod verify;

use std::sync::Arc;

pub use verify::{Issuer, Issuers, Reason, Rejection, TokenError, VerifiedToken};

/// Verifies a bearer token: the cache first ([`cached`]), then [`verify_uncached`].
pub async fn authenticate(
    token: &str,
    issuers: &Issuers,
    allowed_issuers: Option<&[String]>,
    now: u64,
) -> Result<VerifiedToken, Rejection> {
    if let Some(hit) = cached(token.as_bytes(), issuers, allowed_issuers, now) {
        return Ok(hit);
    }
    verify_uncached(token, issuers, allowed_issuers, now).await
}

/// The verified-token cache's answer for these token bytes, if the cache is on.
pub fn cached(
    token: &[u8],
    issuers: &Issuers,
    allowed_issuers: Option<&[String]>,
    now: u64,
) -> Option<VerifiedToken> {
    issuers.cache()?.get(token, allowed_issuers, now)
}

/// Full verification, without asking the cache (the caller did), and for an unknown `kid`
/// of a remote issuer one more try after the (single-flight, cooldown-bound) refetch. A
/// token that verifies is remembered in the cache.
pub async fn verify_uncached(
    token: &str,
    issuers: &Issuers,
    allowed_issuers: Option<&[String]>,
    now: u64,
) -> Result<VerifiedToken, Rejection> {
    let mut parsed = verify::parse_attributed(token, issuers, allowed_issuers)?;
    let (mut keys, generation) = parsed.issuer.keys.current();
    let mut result = verify::finish(&mut parsed, &keys, now);
    if let (Err(e), Some(remote)) = (&result, parsed.issuer.keys.remote()) {
        if e.reason == Reason::UnknownKid && Box::pin(remote.refresh_after_miss(generation)).await {
            keys = parsed.issuer.keys.current().0;
            result = verify::finish(&mut parsed, &keys, now);
        }
    }
    if let (Ok(verified), Some(cache)) = (&result, issuers.cache()) {
        cache.insert(token, verified, keys, now);
    }
    result.map_err(|error| Rejection {
        error,
        issuer: Some(Arc::clone(&parsed.issuer)),
    })
}
