//! Header values out of heads that httparse has already checked, without checking them again.
//!
//! The fast lane (`server/fast.rs`) and the upstream client (`upstream/h1.rs`) parse heads with
//! httparse, which accepts in a header value exactly the bytes `http::HeaderValue` accepts:
//! HTAB, SP, VCHAR and obs-text (0x80-0xFF), nothing else (RFC 9110 §5.5). Building the value
//! with `HeaderValue::from_maybe_shared` walked every byte a second time, one at a time: for a
//! request with a 1 KiB bearer token, about 2 % of the instructions of a whole request
//! (callgrind, issue 5). The test below holds httparse to that rule for all 256 bytes, so an
//! httparse upgrade that widened it would fail here rather than build invalid values.

use bytes::Bytes;
use http::HeaderValue;

/// Where one header's name and value lie in the head they were parsed from (start, end).
pub type HeaderSpan = ((usize, usize), (usize, usize));

/// Header spans of the last head parsed, kept by the connection that parses: the buffer is
/// reused, where a fixed array of `MAX_HEADERS` spans (3.2 KiB) was zeroed for every head.
pub type HeaderSpans = Vec<HeaderSpan>;

/// `bytes` as a header value; `bytes` must be a header value httparse returned.
#[allow(unsafe_code)]
pub fn header_value(bytes: Bytes) -> HeaderValue {
    // SAFETY: the contract of `from_maybe_shared_unchecked` is that the bytes are valid in a
    // header value. httparse returned these bytes as one (see the module comment and the test
    // `httparse_accepts_no_byte_that_http_refuses`). In debug builds http checks them again.
    unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value httparse returns for `x: a<value>a` in a request (or a response) head.
    fn parsed(value: &[u8], response: bool) -> Option<Vec<u8>> {
        let start: &[u8] = if response {
            b"HTTP/1.1 200 OK\r\n"
        } else {
            b"GET / HTTP/1.1\r\n"
        };
        let head = [start, b"x: a", value, b"a\r\n\r\n"].concat();
        let mut slots = [httparse::EMPTY_HEADER; 4];
        let done = if response {
            httparse::Response::new(&mut slots).parse(&head)
        } else {
            httparse::Request::new(&mut slots).parse(&head)
        };
        match done {
            Ok(httparse::Status::Complete(_)) => Some(slots[0].value.to_vec()),
            _ => None,
        }
    }

    #[test]
    fn httparse_accepts_no_byte_that_http_refuses() {
        for b in 0..=255u8 {
            // Long enough for httparse's vector paths (32 bytes at a time) to see the byte.
            let value = [b; 40];
            for parsed in [parsed(&value, false), parsed(&value, true)]
                .into_iter()
                .flatten()
            {
                assert!(
                    HeaderValue::from_bytes(&parsed).is_ok(),
                    "httparse accepted byte {b:#04x} in a value"
                );
            }
        }
    }

    #[test]
    fn values_keep_their_bytes() {
        let value = header_value(Bytes::from_static(b"Bearer abc.def"));
        assert_eq!(value.as_bytes(), b"Bearer abc.def");
    }
}
