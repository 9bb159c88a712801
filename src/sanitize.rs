//! The first stage: make the request path safe to match and forward.
//!
//! Route matching and the upstream must see the same path, or an attacker can pick a path
//! that matches a weak route here and means a protected resource upstream (Envoy's and
//! nginx's path-confusion advisories are this bug). So before matching:
//! - percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2: `%61dmin` is
//!   `admin`), other escapes get upper-case hex (§6.2.2.1);
//! - encoded `/`, `\` and NUL are rejected: they make one path mean two things;
//! - dot segments (`.`, `..`, also as `%2e`, and `..;x` which Java servers read as `..`) are
//!   rejected rather than resolved: a client that sends them is either broken or probing;
//! - runs of slashes are merged (`/catalog//x` is `/catalog/x`): otherwise `//` would skip a
//!   longer, stricter route here while an upstream that merges slashes serves its resource;
//! - only origin-form targets are routed (no `*`, no authority-form).
//!
//! The normalized path is what the upstream receives.

use std::borrow::Cow;

use crate::error::GatewayError;

/// Returns the normalized path, borrowing when nothing changes (the common case).
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, GatewayError> {
    if is_plain(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_full(raw)
}

fn normalize_full(raw: &str) -> Result<Cow<'_, str>, GatewayError> {
    if !raw.starts_with('/') {
        return Err(GatewayError::BadRequestTarget(
            "the request target must be an absolute path",
        ));
    }
    if raw.contains('\\') {
        return Err(GatewayError::BadRequestTarget(
            "the path contains a backslash",
        ));
    }
    let mut path: Cow<str> = if raw.contains('%') {
        Cow::Owned(decode_unreserved(raw)?)
    } else {
        Cow::Borrowed(raw)
    };
    if path.contains("//") {
        let mut merged = String::with_capacity(path.len());
        for (i, c) in path.char_indices() {
            if !(c == '/' && path[..i].ends_with('/')) {
                merged.push(c);
            }
        }
        path = Cow::Owned(merged);
    }
    let is_dot = |segment: &str| {
        // A `;` starts path parameters in some servers (Tomcat reads `..;x` as `..`).
        let name = segment.split(';').next().unwrap_or(segment);
        name == "." || name == ".."
    };
    if path.split('/').any(is_dot) {
        return Err(GatewayError::BadRequestTarget(
            "the path contains a dot segment",
        ));
    }
    Ok(path)
}

/// An absolute path with nothing to decode, merge or refuse: no `\\`, no `%`, no `//`, and
/// no segment starting with `.` (which covers every dot segment, `..;x` included). Such a
/// path is its own normal form; one pass over it decides, where the full checks below take
/// six (a third of the instructions of the whole route match, callgrind, issue 5).
fn is_plain(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut special = false;
    let mut previous = b'/';
    for &b in &bytes[1..] {
        let after_slash = previous == b'/';
        special |= b == b'\\' || b == b'%' || (after_slash && (b == b'/' || b == b'.'));
        previous = b;
    }
    !special
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_unreserved(raw: &str) -> Result<String, GatewayError> {
    const BAD_ESCAPE: GatewayError =
        GatewayError::BadRequestTarget("the path contains an invalid percent-encoding");
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Copy the run up to the next escape as a str slice: `%` is ASCII, so this never
            // splits a UTF-8 sequence.
            let end = raw[i..].find('%').map_or(raw.len(), |n| i + n);
            out.push_str(&raw[i..end]);
            i = end;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(BAD_ESCAPE);
        };
        let decoded = h * 16 + l;
        match decoded {
            b'/' | b'\\' | 0 => {
                return Err(GatewayError::BadRequestTarget(
                    "the path contains an encoded slash, backslash or NUL",
                ))
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                out.push(c as char)
            }
            c => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(c >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(c & 15)]));
            }
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(
            normalize_path("/api/orders/7"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_uppercased() {
        assert_eq!(normalize_path("/api/%61dmin").unwrap(), "/api/admin");
        assert_eq!(normalize_path("/a%20b%c3%a9").unwrap(), "/a%20b%C3%A9");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(
            normalize_path("/catalog//recommendations").unwrap(),
            "/catalog/recommendations"
        );
        assert_eq!(normalize_path("///a///b/").unwrap(), "/a/b/");
    }

    #[test]
    fn confusing_paths_are_rejected() {
        for p in [
            "/catalog/../api",
            "/./x",
            "/a/%2e%2e/b",
            "/a/%2E/b",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "/a%00",
            "/a%zz",
            "/a%4",
            "*",
            "example.com:443",
        ] {
            assert!(normalize_path(p).is_err(), "{p} should be rejected");
        }
        assert!(normalize_path("/a/..b/c.").is_ok());
    }

    #[test]
    fn the_one_pass_check_claims_only_paths_the_full_checks_leave_alone() {
        let mut claimed = 0;
        for p in [
            "/",
            "/api",
            "/api/orders/7",
            "/a/b/",
            "/a.b/c.d",
            "/a/b.",
            "/x;y/z",
            "/a-b_c~d",
            "/a/..b",
            "/.well-known",
            "/a//b",
            "//",
            "/a/./b",
            "/a/../b",
            "/a/..;x/b",
            "/a%41",
            "/a\\b",
            "api",
            "",
            "*",
            "/a/.",
            "/..",
            "/a/%2e",
        ] {
            let full = normalize_full(p);
            if is_plain(p) {
                claimed += 1;
                assert!(
                    matches!(&full, Ok(Cow::Borrowed(q)) if *q == p),
                    "{p:?}: the full checks give {full:?}"
                );
            }
            // Whichever path answers, the answer is the full checks' answer.
            assert_eq!(normalize_path(p), full, "{p:?}");
        }
        assert_eq!(claimed, 8);
    }
}
