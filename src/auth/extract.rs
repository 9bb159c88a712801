//! Where the token comes from: the `Authorization` request header (RFC 6750 §2.1).
//!
//! Tokens in the query string (§2.3) are not read: they end up in access logs, proxies'
//! logs and browser history, and RFC 6750 itself says not to use them.

use http::header::AUTHORIZATION;
use http::HeaderMap;

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
pub fn bearer_token(headers: &HeaderMap) -> Result<Credentials<'_>, MalformedAuthorization> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Credentials::Missing);
    };
    if values.next().is_some() {
        return Err(MalformedAuthorization("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| MalformedAuthorization("Authorization header is not visible ASCII"))?;
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

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="` (RFC 6750 §2.1).
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // Every byte is checked, without an early exit and without branches, so the loop runs
    // on vector registers: tokens are about a kilobyte and this runs on every request (the
    // byte-at-a-time version was about 2% of the gateway's CPU in a profile).
    !body.is_empty() && body.bytes().fold(true, |ok, b| ok & is_b64token_byte(b))
}

#[inline]
fn is_b64token_byte(b: u8) -> bool {
    // `| 0x20` folds ASCII letters to lower case and moves no other byte into `a..=z`.
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
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
    use http::HeaderValue;

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
    fn malformed_headers_are_invalid_requests() {
        assert!(bearer_token(&with(&["Bearer"])).is_err());
        assert!(bearer_token(&with(&["Bearer   "])).is_err());
        assert!(bearer_token(&with(&["Bearer abc def"])).is_err());
        assert!(bearer_token(&with(&["Bearer a", "Bearer b"])).is_err());
        assert!(bearer_token(&with(&["Bearer ===="])).is_err());
    }
}
