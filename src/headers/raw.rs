//! The fast lane's headers: where each field lies in the request head the lane parsed, plus
//! the fields the stages set on the way. Nothing is copied or hashed. Names are lower-cased
//! in the head once, as `HeaderName` does, so that a lookup compares bytes; names of a
//! length no field has are answered without a scan, and a request carries a handful of
//! fields, so the scans are short.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::Headers;
use crate::parsed_value::{header_value, HeaderSpan};

/// Fields the request path typically sets on a request (X-Forwarded-*, the request id, claim
/// headers): room for them is made at once, so the list is not grown on the way.
const ADDED_FIELDS_ROOM: usize = 8;

/// Fields the gateway adds to a response (the request id). Kept apart from the request's
/// room: a field is 96 bytes, and a response's list with eight spare ones went past glibc's
/// per-thread cache (1,032 bytes) into malloc's shared bins (callgrind, issue 5).
const RESPONSE_FIELDS_ROOM: usize = 1;

/// Field lists kept longer than this are not reused (a client sent many headers).
const RECYCLED_FIELDS_MAX: usize = 64;

thread_local! {
    /// Field lists of finished messages, for the next ones (`recycle`): a list is about
    /// 1 KiB, and with a batch of requests in flight, most frees missed glibc's per-thread
    /// cache (seven per size) and went through its shared bins.
    static FIELD_LISTS: RefCell<Vec<Vec<Field>>> = const { RefCell::new(Vec::new()) };
}

/// Headers of a parsed request head, edited in place.
pub struct RawHeaders {
    head: Bytes,
    fields: Vec<Field>,
    /// Bit `len % 64` is set for the length of every name that is or was in `fields`: most
    /// names the request path asks for are absent, and this answers for them without a scan
    /// (names of a length over 64 share a bit with a shorter one, which costs only a scan).
    lengths: u64,
}

/// The bit of [`RawHeaders::lengths`] for a name of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << (len % 64)
}

struct Field {
    name: Name,
    value: Value,
    /// The name's length, compared before the name's bytes are looked at.
    name_len: usize,
}

impl Field {
    fn set(name: HeaderName, value: HeaderValue) -> Self {
        Field {
            name_len: name.as_str().len(),
            name: Name::Set(name),
            value: Value::Set(value),
        }
    }
}

enum Name {
    /// `head[start..end]`, lower-cased.
    Head(usize, usize),
    Set(HeaderName),
}

enum Value {
    Head(usize, usize),
    Set(HeaderValue),
}

impl RawHeaders {
    /// The fields at `spans` in `head`, whose names are lower-cased in place (HTTP names are
    /// case-insensitive, RFC 9110 §5.1; hyper's path sends them lower-case too). The spans
    /// must come from httparse, which accepts only names and values the `http` types accept
    /// (see the tests here and in `parsed_value`). `head` comes back if a span lies outside
    /// it, which a parse of `head` never returns.
    pub fn new(head: BytesMut, spans: &[HeaderSpan]) -> Result<Self, BytesMut> {
        Self::with_room(head, spans, ADDED_FIELDS_ROOM)
    }

    fn with_room(mut head: BytesMut, spans: &[HeaderSpan], room: usize) -> Result<Self, BytesMut> {
        let len = head.len();
        if spans
            .iter()
            .any(|&((ns, ne), (vs, ve))| ns > ne || ne > len || vs > ve || ve > len)
        {
            return Err(head);
        }
        let mut fields = crate::recycle::take(&FIELD_LISTS).unwrap_or_default();
        // A no-op when a reused list is large enough, which is the common case.
        fields.reserve(spans.len() + room);
        let mut lengths = 0;
        for &((ns, ne), (vs, ve)) in spans {
            lengths |= length_bit(ne - ns);
            head[ns..ne].make_ascii_lowercase();
            fields.push(Field {
                name: Name::Head(ns, ne),
                value: Value::Head(vs, ve),
                name_len: ne - ns,
            });
        }
        Ok(RawHeaders {
            head: head.freeze(),
            fields,
            lengths,
        })
    }

    /// The whole head the fields lie in.
    pub fn head(&self) -> &Bytes {
        &self.head
    }
}

/// Whether `field` is named `want` (a `HeaderName`'s bytes, lower-case). Every span was
/// checked against `head`, and its name lower-cased, in `new`.
#[inline]
fn is(head: &[u8], field: &Field, want: &[u8]) -> bool {
    field.name_len == want.len() && name_bytes(head, field) == want
}

fn name_bytes<'a>(head: &'a [u8], field: &'a Field) -> &'a [u8] {
    match &field.name {
        Name::Set(n) => n.as_str().as_bytes(),
        Name::Head(s, e) => &head[*s..*e],
    }
}

fn value_bytes<'a>(head: &'a [u8], field: &'a Field) -> &'a [u8] {
    match &field.value {
        Value::Set(v) => v.as_bytes(),
        Value::Head(s, e) => &head[*s..*e],
    }
}

impl RawHeaders {
    /// Whether a field named `want` may be present (`false`: it is not).
    fn may_have(&self, want: &[u8]) -> bool {
        self.lengths & length_bit(want.len()) != 0
    }

    fn shared(&self, field: &Field) -> HeaderValue {
        match &field.value {
            Value::Set(v) => v.clone(),
            // Shares the head's bytes; httparse checked them (`parsed_value`).
            Value::Head(s, e) => header_value(self.head.slice(*s..*e)),
        }
    }
}

impl Headers for RawHeaders {
    fn values<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
        let head = &self.head[..];
        let want = name.as_str().as_bytes();
        let fields = if self.may_have(want) {
            &self.fields[..]
        } else {
            &[]
        };
        fields
            .iter()
            .filter(move |f| is(head, f, want))
            .map(move |f| value_bytes(head, f))
    }

    fn value(&self, name: &HeaderName) -> Option<HeaderValue> {
        let want = name.as_str().as_bytes();
        if !self.may_have(want) {
            return None;
        }
        let field = self.fields.iter().find(|f| is(&self.head, f, want))?;
        Some(self.shared(field))
    }

    fn remove(&mut self, name: &HeaderName) {
        let want = name.as_str().as_bytes();
        if self.may_have(want) {
            let head = &self.head[..];
            self.fields.retain(|f| !is(head, f, want));
        }
    }

    fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        let head = &self.head[..];
        let field = Field::set(name, value);
        let want = name_bytes(head, &field);
        let first = match self.may_have(want) {
            true => self.fields.iter().position(|f| is(head, f, want)),
            false => None,
        };
        self.lengths |= length_bit(field.name_len);
        let Some(first) = first else {
            self.fields.push(field);
            return;
        };
        // The first keeps its place; any later ones go.
        if self.fields[first + 1..].iter().any(|f| is(head, f, want)) {
            let mut index = 0;
            self.fields.retain(|f| {
                let keep = index <= first || !is(head, f, want);
                index += 1;
                keep
            });
        }
        self.fields[first] = field;
    }

    fn append(&mut self, name: HeaderName, value: HeaderValue) {
        let field = Field::set(name, value);
        self.lengths |= length_bit(field.name_len);
        self.fields.push(field);
    }

    fn mark<const N: usize>(&self, names: &[HeaderName; N]) -> [bool; N] {
        let mut found = [false; N];
        for (found, name) in found.iter_mut().zip(names) {
            let want = name.as_str().as_bytes();
            *found = self.may_have(want) && self.fields.iter().any(|f| is(&self.head, f, want));
        }
        found
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let head = &self.head[..];
        self.fields
            .iter()
            .map(move |f| (name_bytes(head, f), value_bytes(head, f)))
    }

    fn from_map(map: HeaderMap) -> Self {
        let mut headers = RawHeaders {
            head: Bytes::new(),
            fields: Vec::with_capacity(map.len() + ADDED_FIELDS_ROOM),
            lengths: 0,
        };
        let mut last: Option<HeaderName> = None;
        for (name, value) in map {
            // The map names each name once, before its first value.
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                headers.append(name.clone(), value);
            }
        }
        headers
    }

    fn from_parsed(head: BytesMut, spans: &[HeaderSpan]) -> Option<Self> {
        RawHeaders::with_room(head, spans, RESPONSE_FIELDS_ROOM).ok()
    }

    fn recycle(mut self) {
        if self.fields.capacity() <= RECYCLED_FIELDS_MAX {
            self.fields.clear();
            crate::recycle::keep(&FIELD_LISTS, self.fields);
        }
    }

    fn into_map(self) -> HeaderMap {
        let mut map = crate::recycle::header_map(self.fields.len());
        for field in &self.fields {
            let name = match &field.name {
                Name::Set(n) => n.clone(),
                // httparse accepts in a name only bytes `HeaderName` accepts (the test
                // below), so this conversion does not fail; were it to, the field is left
                // out rather than the request failed.
                Name::Head(s, e) => match HeaderName::from_bytes(&self.head[*s..*e]) {
                    Ok(n) => n,
                    Err(_) => continue,
                },
            };
            map.append(name, self.shared(field));
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    /// The headers of `head` as the fast lane parses them.
    fn raw(head: &'static [u8]) -> RawHeaders {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut slots);
        assert!(req.parse(head).unwrap().is_complete());
        let base = head.as_ptr() as usize;
        let span = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            (start, start + s.len())
        };
        let spans: Vec<HeaderSpan> = req
            .headers
            .iter()
            .map(|h| (span(h.name.as_bytes()), span(h.value)))
            .collect();
        RawHeaders::new(BytesMut::from(head), &spans).unwrap()
    }

    fn wire(h: &RawHeaders) -> String {
        h.fields()
            .map(|(n, v)| {
                format!(
                    "{}: {}\n",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(v)
                )
            })
            .collect()
    }

    #[test]
    fn names_match_in_any_case_and_values_keep_their_order() {
        let h = raw(b"GET / HTTP/1.1\r\nHost: a\r\nX-Id: 1\r\nx-ID: 2\r\nAccept: */*\r\n\r\n");
        let id = HeaderName::from_static("x-id");
        assert_eq!(h.values(&id).collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(h.value(&header::HOST).unwrap(), "a");
        assert!(h.single(&id).is_none());
        assert_eq!(h.single(&header::ACCEPT).unwrap(), "*/*");
        assert!(!h.contains(&header::AUTHORIZATION));
    }

    #[test]
    fn insert_replaces_in_place_and_remove_takes_every_copy() {
        let mut h = raw(b"GET / HTTP/1.1\r\nHost: a\r\nX-Id: 1\r\nAccept: */*\r\nx-id: 2\r\n\r\n");
        let id = HeaderName::from_static("x-id");
        h.insert(header::HOST, HeaderValue::from_static("up"));
        h.insert(id.clone(), HeaderValue::from_static("3"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        assert_eq!(wire(&h), "host: up\nx-id: 3\naccept: */*\nte: trailers\n");
        h.remove(&header::ACCEPT);
        h.remove(&id);
        h.remove(&id);
        assert_eq!(wire(&h), "host: up\nte: trailers\n");
    }

    #[test]
    fn mark_and_into_map_see_the_same_fields_as_a_map() {
        let h = raw(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: TE\r\nTE: trailers\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        let names = [header::TE, header::UPGRADE, header::CONNECTION];
        let from_raw = h.mark(&names);
        let map = h.into_map();
        let from_map = map.mark(&names);
        assert_eq!(from_raw, [true, false, true]);
        assert_eq!(from_raw, from_map);
        let a: Vec<_> = map.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(map.len(), 5);
    }

    #[test]
    fn spans_outside_the_head_are_refused() {
        let head = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(RawHeaders::new(head.clone(), &[((0, 3), (4, 40))]).is_err());
        assert!(RawHeaders::new(head, &[((3, 2), (4, 5))]).is_err());
    }

    /// httparse accepts in a header name only bytes `HeaderName::from_bytes` accepts: the
    /// lane forwards names as the client wrote them, and `into_map` relies on this.
    #[test]
    fn httparse_accepts_no_name_byte_that_http_refuses() {
        for b in 0..=255u8 {
            let head = [b"GET / HTTP/1.1\r\nx".as_slice(), &[b], b"y: 1\r\n\r\n"].concat();
            let mut slots = [httparse::EMPTY_HEADER; 4];
            let mut req = httparse::Request::new(&mut slots);
            if let Ok(httparse::Status::Complete(_)) = req.parse(&head) {
                let name = req.headers[0].name.as_bytes();
                assert!(
                    HeaderName::from_bytes(name).is_ok(),
                    "httparse accepted byte {b:#04x} in a name"
                );
            }
        }
    }
}
