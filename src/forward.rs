//! Header hygiene between client, gateway and upstream.
//!
//! - Hop-by-hop headers are connection-scoped and never forwarded, both ways (RFC 9110 §7.6.1),
//!   including every header the `Connection` header names: a client sending
//!   `Connection: X-User-Id` must not be able to make us delete the identity header we add.
//! - Identity headers (every header any route fills from claims) are removed from every
//!   request before the gateway adds its own, so a client can never spoof them.
//! - `X-Forwarded-For` is appended to; `X-Forwarded-Proto` and `X-Forwarded-Host` are set.

use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use serde_json::Value;

use crate::auth::claims::Claims;
use crate::headers::{visible, Headers};

const HOP_BY_HOP_COUNT: usize = 9;

/// The hop-by-hop headers of RFC 9110 §7.6.1 plus the legacy ones proxies still see, and
/// Upgrade (§7.8): tollgate does not tunnel protocol switches. Connection comes first.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers a route may not fill from claims: the gateway or HTTP itself owns them.
pub fn is_reserved_header(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || *name == header::HOST
        || *name == header::AUTHORIZATION
        || *name == header::CONTENT_LENGTH
        || *name == header::CONTENT_TYPE
        || *name == header::COOKIE
        || *name == X_FORWARDED_FOR
        || *name == X_FORWARDED_PROTO
        || *name == X_FORWARDED_HOST
}

/// Removes hop-by-hop headers, and the headers `Connection` names, in place.
pub fn strip_hop_by_hop<H: Headers>(headers: &mut H) {
    // Which are present first, in one pass: most messages carry no hop-by-hop field or only
    // `Connection`, and removing each of nine names cost more than the pass.
    let found = headers.mark(&HOP_BY_HOP);
    if !found.contains(&true) {
        return;
    }
    // The names a Connection header lists besides the usual `keep-alive` and `close` (which
    // name no header, or one removed below anyway). Collected first: the Connection values
    // go with the rest. Most messages list none, and then nothing is allocated.
    let mut named: Vec<HeaderName> = Vec::new();
    if found[0] {
        for value in headers.values(&header::CONNECTION) {
            let Some(value) = visible(value) else {
                continue;
            };
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("close") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
    }
    for name in &named {
        headers.remove(name);
    }
    for (name, present) in HOP_BY_HOP.iter().zip(found) {
        if present {
            headers.remove(name);
        }
    }
}

/// Request metadata for the X-Forwarded-* headers.
pub struct ClientInfo<'a> {
    pub ip: IpAddr,
    pub proto: &'static str,
    /// The Host (HTTP/1.1) or :authority (HTTP/2) the client used.
    pub host: Option<&'a HeaderValue>,
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto` / `-Host`.
pub fn set_forwarded<H: Headers>(headers: &mut H, client: &ClientInfo) {
    // An IPv6 address is at most 45 characters; no formatting machinery on the request path.
    let mut ip = [0u8; 48];
    let ip = write_ip(&mut ip, client.ip.to_canonical());
    let previous = headers
        .values(&X_FORWARDED_FOR)
        .next()
        .and_then(visible)
        .map(str::as_bytes);
    let value = match previous {
        Some(prev) if !prev.trim_ascii().is_empty() => {
            let mut joined = Vec::with_capacity(prev.len() + 2 + ip.len());
            joined.extend_from_slice(prev);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(ip);
            HeaderValue::from_maybe_shared(bytes::Bytes::from(joined))
        }
        _ => HeaderValue::from_bytes(ip),
    };
    // The previous value was a valid header value, and ", " and an address keep it one.
    if let Ok(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto));
    match client.host {
        Some(v) => headers.insert(X_FORWARDED_HOST, v.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    }
}

/// Writes an address as text into `buf` and returns that part of it.
fn write_ip(buf: &mut [u8; 48], ip: IpAddr) -> &[u8] {
    let IpAddr::V4(v4) = ip else {
        // Rare on the request path (most clients of a gateway arrive over IPv4); the
        // standard formatter handles IPv6's zero compression.
        use std::io::Write;
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cursor, "{ip}");
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        return &buf[..len];
    };
    // At most 15 bytes ("255.255.255.255") go into the 48: every index below is in bounds.
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        let (h, t, o) = (octet / 100, octet / 10 % 10, octet % 10);
        if h > 0 {
            buf[len] = b'0' + h;
            len += 1;
        }
        if h > 0 || t > 0 {
            buf[len] = b'0' + t;
            len += 1;
        }
        buf[len] = b'0' + o;
        len += 1;
    }
    &buf[..len]
}

/// Adds one header per configured claim present in the token. A claim that is missing, of
/// an unsupported shape, or that holds control characters adds nothing (its header was
/// already removed from the client's request).
pub fn add_claim_headers<H: Headers>(
    headers: &mut H,
    mapping: &[(Vec<String>, HeaderName)],
    claims: &Claims,
) {
    for (path, name) in mapping {
        if let Some(value) = claim_header(claims, path) {
            headers.insert(name.clone(), value);
        }
    }
}

/// The header value of the claim at a dot path (`realm_access.roles` follows nested
/// objects). A top-level string, the common case, is read from the token's text as it is;
/// other shapes and nested paths are parsed from the claim's JSON text.
fn claim_header(claims: &Claims, path: &[String]) -> Option<HeaderValue> {
    let (first, rest) = path.split_first()?;
    let claim = claims.get(first)?;
    if rest.is_empty() {
        if let Some(s) = claim.as_str() {
            return string_header_value(s);
        }
    }
    let value = claim.to_value();
    let value = rest
        .iter()
        .try_fold(&value, |v, segment| v.as_object()?.get(segment))?;
    claim_header_value(value)
}

/// A string claim as a header value, copied once; refused if it holds control characters.
fn string_header_value(s: &str) -> Option<HeaderValue> {
    if s.chars().any(char::is_control) {
        None
    } else {
        HeaderValue::from_str(s).ok()
    }
}

/// Strings as they are; numbers and booleans as JSON text; arrays of strings joined with
/// `,`; anything else (objects, null, mixed arrays) is not forwarded.
fn claim_header_value(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::String(s) => return string_header_value(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let strings: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            strings?.join(",")
        }
        Value::Null | Value::Object(_) => return None,
    };
    if text.chars().any(char::is_control) {
        return None;
    }
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use serde_json::json;

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-User-Id"),
        );
        h.insert("x-user-id", HeaderValue::from_static("admin"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-other", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-other"));
    }

    #[test]
    fn claim_values_follow_the_contract() {
        let claims = json!({
            "sub": "u1", "n": 7, "b": true, "roles": ["a", "b"], "mixed": ["a", 1],
            "nested": {"deep": {"x": "y"}}, "ctl": "a\nb", "obj": {"k": 1}
        });
        let claims = Claims::from_value(&claims).unwrap();
        let v = |p: &str| {
            let path: Vec<String> = p.split('.').map(String::from).collect();
            claim_header(&claims, &path)
        };
        assert_eq!(v("sub").unwrap(), "u1");
        assert_eq!(v("n").unwrap(), "7");
        assert_eq!(v("b").unwrap(), "true");
        assert_eq!(v("roles").unwrap(), "a,b");
        assert_eq!(v("nested.deep.x").unwrap(), "y");
        assert!(v("mixed").is_none());
        assert!(v("ctl").is_none());
        assert!(v("obj").is_none());
        assert!(v("missing").is_none());
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        let client = ClientInfo {
            ip: "127.0.0.1".parse().unwrap(),
            proto: "http",
            host: Some(&HeaderValue::from_static("gw.example")),
        };
        set_forwarded(&mut h, &client);
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.9, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_HOST], "gw.example");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn addresses_are_written_as_the_standard_formatter_does() {
        let ips = [
            "0.0.0.0",
            "10.0.9.255",
            "100.64.1.20",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "fe80::1:2:3:4",
        ];
        for text in ips {
            let ip: IpAddr = text.parse().unwrap();
            let mut buf = [0u8; 48];
            assert_eq!(write_ip(&mut buf, ip), ip.to_string().as_bytes(), "{text}");
        }
        // The longest IPv6 text fits.
        let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap();
        let mut buf = [0u8; 48];
        assert_eq!(write_ip(&mut buf, long), long.to_string().as_bytes());
    }

    #[test]
    fn an_unreadable_forwarded_for_is_replaced_and_connection_tokens_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        let client = ClientInfo {
            ip: "::ffff:192.0.2.1".parse().unwrap(),
            proto: "https",
            host: None,
        };
        set_forwarded(&mut h, &client);
        // A v4-mapped client is written as the IPv4 address it is.
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.1");
        assert!(!h.contains_key(X_FORWARDED_HOST));

        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, close"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
