//! Request correlation: `X-Request-Id` and W3C Trace Context (`traceparent`, `tracestate`).
//!
//! - `X-Request-Id`: a well-formed id from the client is kept (a caller's own correlation
//!   id survives the hop); a missing, repeated or malformed one is replaced by a random
//!   UUID. The id goes to the upstream, back to the client (errors included), and into the
//!   access log.
//! - `traceparent` / `tracestate` (W3C Trace Context Level 1) are passed through untouched.
//!   With `trace_context.start_when_absent`, a request without a valid `traceparent` gets a
//!   new one, and any `tracestate` is dropped: §3.3.1.1 ties it to the parent it came with.

use std::cell::Cell;

use http::header::{HeaderName, HeaderValue};

use crate::headers::Headers;

/// The request-id header (de-facto standard: Heroku, nginx `$request_id`, Envoy).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Longest client-supplied request id kept; longer ones are replaced (they end up in every
/// log line and upstream request).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// `trace_context:` in routes.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceContextPolicy {
    /// Start a trace for requests that arrive without a valid `traceparent`.
    pub start_when_absent: bool,
    /// The sampled flag of traces tollgate starts.
    pub sampled: bool,
}

/// What the request carried (or was given) for correlation.
#[derive(Debug, Clone)]
pub struct Ids {
    pub request_id: HeaderValue,
    /// The trace id of a valid (or started) `traceparent`, 32 lower-case hex digits.
    pub trace_id: Option<String>,
}

/// Settles the request's ids, rewriting `headers` in place: they are forwarded as they are.
pub fn prepare<H: Headers>(headers: &mut H, policy: TraceContextPolicy) -> Ids {
    let request_id = match headers.single(&REQUEST_ID) {
        Some(v) if is_request_id(v.as_bytes()) => v,
        _ => {
            let id = new_request_id();
            headers.insert(REQUEST_ID, id.clone());
            id
        }
    };
    let traceparent = headers.single(&TRACEPARENT);
    let trace_id = match traceparent.as_ref().and_then(|v| trace_id(v.as_bytes())) {
        Some(t) => Some(t.to_owned()),
        None if policy.start_when_absent => {
            let (value, trace_id) = new_traceparent(policy.sampled);
            headers.insert(TRACEPARENT, value);
            headers.remove(&TRACESTATE);
            Some(trace_id)
        }
        None => None,
    };
    Ids {
        request_id,
        trace_id,
    }
}

/// 1–128 characters that are safe in logs and headers: letters, digits and `-_.:+/=@`
/// (UUIDs, ULIDs, base64 and most vendors' trace ids).
pub fn is_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID_BYTES
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b))
}

/// The trace id of a valid `traceparent` (W3C Trace Context §3.2): `version-traceid-
/// parentid-flags`, lower-case hex, ids not all zero, version `ff` invalid; a future
/// version may append fields after the flags.
pub fn trace_id(v: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(v).ok()?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let version = s.get(0..2)?;
    let (trace, parent, flags) = (s.get(3..35)?, s.get(36..52)?, s.get(53..55)?);
    let seps = [s.get(2..3)?, s.get(35..36)?, s.get(52..53)?];
    let rest = s.get(55..)?;
    let ok = lower_hex(version)
        && version != "ff"
        && seps.iter().all(|c| *c == "-")
        && lower_hex(trace)
        && lower_hex(parent)
        && lower_hex(flags)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (rest.is_empty() || (version != "00" && rest.starts_with('-')));
    ok.then_some(trace)
}

thread_local! {
    /// Per-thread generator state, seeded from the OS once per thread.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // The system RNG only fails when the OS has none; ids stay unique within the thread
    // anyway, because the generator below never repeats within its period.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    u64::from_le_bytes(bytes) | 1
}

/// 64 random bits (SplitMix64). Ids must be unique, not secret: this is a correlation id,
/// never an authorization decision.
fn next_u64() -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn hex_into(out: &mut [u8], mut value: u128, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out[i] = HEX[(value & 0xf) as usize];
        value >>= 4;
    }
}

fn random_u128() -> u128 {
    (u128::from(next_u64()) << 64) | u128::from(next_u64())
}

/// A random (version 4) UUID, the format most log tools recognise.
pub fn new_request_id() -> HeaderValue {
    // Version 4 and the RFC 9562 variant bits.
    let v = (random_u128() & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (len, shift) in [(8, 96), (4, 80), (4, 64), (4, 48), (12, 0)] {
        hex_into(&mut out[at..at + len], v >> shift, len);
        at += len + 1;
    }
    // 36 bytes of hex digits and dashes: always a valid header value. Owned by a shared
    // buffer, so the copies for the upstream request and the response only count references.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// A new `traceparent` (version 00) and its trace id.
fn new_traceparent(sampled: bool) -> (HeaderValue, String) {
    let mut trace = random_u128();
    if trace == 0 {
        trace = 1;
    }
    let parent = u128::from(next_u64().max(1));
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&mut out[3..35], trace, 32);
    hex_into(&mut out[36..52], parent, 16);
    if sampled {
        out[54] = b'1';
    }
    let trace_id = String::from_utf8_lossy(&out[3..35]).into_owned();
    let value = HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"));
    (value, trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn generated_ids_are_uuids_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4", "{s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert!(is_request_id(s.as_bytes()));
    }

    #[test]
    fn traceparent_validation_follows_the_spec() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(good.as_bytes()),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // 00 has no extras
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            assert_eq!(trace_id(bad.as_bytes()), None, "{bad}");
        }
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(trace_id(future.as_bytes()).is_some());
        let (value, id) = new_traceparent(true);
        assert_eq!(trace_id(value.as_bytes()), Some(id.as_str()));
        assert!(value.to_str().unwrap().ends_with("-01"));
    }

    #[test]
    fn request_ids_are_kept_only_when_well_formed_and_single() {
        let policy = TraceContextPolicy::default();
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(prepare(&mut h, policy).request_id, "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let ids = prepare(&mut h, policy);
        assert_ne!(ids.request_id, "has space");
        assert_eq!(h.get(REQUEST_ID), Some(&ids.request_id));
        h.append(REQUEST_ID, HeaderValue::from_static("second"));
        let ids = prepare(&mut h, policy);
        assert_eq!(h.get_all(REQUEST_ID).iter().count(), 1);
        assert_eq!(h.get(REQUEST_ID), Some(&ids.request_id));
    }
}
