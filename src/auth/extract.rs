//! Where the token comes from: the `Authorization` request header (RFC 6750 §2.1).
//!
//! Tokens in the query string (§2.3) are not read: they end up in access logs, proxies'
//! logs and browser history, and RFC 6750 itself says not to use them.

use http::header::AUTHORIZATION;

use crate::headers::{visible, Headers};

/// What the request carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No `Authorization` header, or one with another scheme (`Basic ...`): RFC 6750 §3.1
    /// says the challenge then carries no error code.
    Missing,
    /// A syntactically valid bearer token (not yet verified).
    Bearer(&'a str),
}

/// A malformed `Authorization` header: 400 `invalid_request` (RFC 6750 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedAuthorization(pub &'static str);

/// Reads the bearer token from the request headers.
pub fn bearer_token<H: Headers>(headers: &H) -> Result<Credentials<'_>, MalformedAuthorization> {
    let value = match headers.lone(&AUTHORIZATION) {
        Ok(Some(value)) => value,
        Ok(None) => return Ok(Credentials::Missing),
        Err(_) => return Err(MalformedAuthorization("more than one Authorization header")),
    };
    // The shape nearly every client sends, checked in one pass over the token; anything
    // else (other schemes, extra whitespace, errors) takes the full path below.
    if let Some(token) = plain_bearer(value) {
        return Ok(Credentials::Bearer(token));
    }
    let value = visible(value).ok_or(MalformedAuthorization(
        "Authorization header is not visible ASCII",
    ))?;
    // Field values carry no leading or trailing whitespace (RFC 9110 §5.5).
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = match value.split_once([' ', '\t']) {
        Some((scheme, rest)) => (scheme, rest),
        None => (value, ""),
    };
    // Auth-scheme names are case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Missing);
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(MalformedAuthorization("the bearer token is empty"));
    }
    if !is_b64token(token) {
        return Err(MalformedAuthorization(
            "the bearer token is not a single b64token",
        ));
    }
    Ok(Credentials::Bearer(token))
}

/// The bytes after `Bearer ` (scheme in any case, one space) when the request has exactly one
/// `Authorization` header of that shape; their syntax is NOT checked. For a cache lookup
/// only: the cache holds tokens that verified, and a verified JWS is base64url and dots, all
/// b64token bytes, so a hit is a token [`bearer_token`] would return as it is. Anything
/// else, a miss included, goes through [`bearer_token`].
pub fn bearer_bytes<H: Headers>(headers: &H) -> Option<&[u8]> {
    after_bearer(headers.lone(&AUTHORIZATION).ok()??)
}

/// What follows `Bearer ` (the scheme in any case, then one space), unchecked.
fn after_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme[..6].eq_ignore_ascii_case(b"bearer") && scheme[6] == b' ').then_some(token)
}

/// `Bearer <b64token>` exactly: the scheme in any case, one space, the token. What it
/// accepts the full path accepts as the same token: a b64token is visible ASCII, so the
/// whole value is, and there is no whitespace to trim.
fn plain_bearer(value: &[u8]) -> Option<&str> {
    let token = after_bearer(value)?;
    if !is_b64token_bytes(token) {
        return None;
    }
    std::str::from_utf8(token).ok()
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="` (RFC 6750 §2.1).
fn is_b64token(token: &str) -> bool {
    is_b64token_bytes(token.as_bytes())
}

fn is_b64token_bytes(token: &[u8]) -> bool {
    let padding = token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..token.len() - padding];
    // Every byte is checked, without an early exit and without branches, into a byte that
    // is OR-ed across the token, so the loop runs on vector registers: tokens are about a
    // kilobyte and this runs on every request (the byte-at-a-time version was about 2% of
    // the gateway's CPU in a profile).
    !body.is_empty()
        && body
            .iter()
            .fold(0u8, |bad, &b| bad | u8::from(!is_b64token_byte(b)))
            == 0
}

#[inline]
fn is_b64token_byte(b: u8) -> bool {
    // `-./0123456789` are one run (0x2d..=0x39); `| 0x20` folds ASCII letters to lower case
    // and moves no other byte into `a..=z`.
    let run = b.wrapping_sub(b'-') < 13;
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    run | letter | (b == b'_') | (b == b'~') | (b == b'+')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_branchless_byte_check_matches_rfc_6750() {
        for b in 0..=255u8 {
            let spec =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_byte(b), spec, "byte {b:#04x}");
        }
    }
    use http::{HeaderMap, HeaderValue};

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(
            bearer_token(&with(&["bearer abc.def.ghi"])),
            Ok(Credentials::Bearer("abc.def.ghi"))
        );
        assert_eq!(
            bearer_token(&with(&["BEARER  abc"])),
            Ok(Credentials::Bearer("abc"))
        );
    }

    #[test]
    fn other_schemes_and_absence_are_missing() {
        assert_eq!(bearer_token(&HeaderMap::new()), Ok(Credentials::Missing));
        assert_eq!(
            bearer_token(&with(&["Basic dXNlcjpwYXNz"])),
            Ok(Credentials::Missing)
        );
        assert_eq!(
            bearer_token(&with(&["Bearerabc"])),
            Ok(Credentials::Missing)
        );
    }

    #[test]
    fn the_one_pass_shape_agrees_with_the_full_path() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_~+/.x==";
        for value in [
            format!("Bearer {token}"),
            format!("bEaReR {token}"),
            format!("Bearer  {token}"),
            format!("Bearer\t{token}"),
            format!("Bearer {token} "),
            format!(" Bearer {token}"),
            format!("Bearer {token}x y"),
            format!("Bearer {token}\u{e9}"),
            "Bearer =".to_owned(),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned(),
        ] {
            let map = with(&[value.as_str()]);
            let full = full_path(map.get(AUTHORIZATION).unwrap()).map_err(|_| ());
            assert_eq!(bearer_token(&map).map_err(|_| ()), full, "{value:?}");
            if plain_bearer(value.as_bytes()).is_some() {
                assert_eq!(
                    bearer_token(&map),
                    Ok(Credentials::Bearer(token)),
                    "{value:?}"
                );
            }
        }
        assert_eq!(
            plain_bearer(format!("bearer {token}").as_bytes()),
            Some(token)
        );
        assert_eq!(plain_bearer(format!("Bearer  {token}").as_bytes()), None);
    }

    /// The full path alone, for comparison with the one-pass shape.
    fn full_path(value: &HeaderValue) -> Result<Credentials<'_>, MalformedAuthorization> {
        let value = value
            .to_str()
            .map_err(|_| MalformedAuthorization("ascii"))?;
        let value = value.trim_matches([' ', '\t']);
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Credentials::Missing);
        }
        let token = rest.trim_start_matches([' ', '\t']);
        if token.is_empty() || !is_b64token(token) {
            return Err(MalformedAuthorization("token"));
        }
        Ok(Credentials::Bearer(token))
    }

    #[test]
    fn malformed_headers_are_invalid_requests() {
        assert!(bearer_token(&with(&["Bearer"])).is_err());
        assert!(bearer_token(&with(&["Bearer   "])).is_err());
        assert!(bearer_token(&with(&["Bearer abc def"])).is_err());
        assert!(bearer_token(&with(&["Bearer a", "Bearer b"])).is_err());
        assert!(bearer_token(&with(&["Bearer ===="])).is_err());
    }
}
