//! Requests and responses as the stages see them, over either of two shapes of headers:
//! hyper's (`http::HeaderMap`: HTTP/2, TLS, requests with a body, anything unusual) or the
//! fast lane's (`RawHeaders`: each field left where it lies in the head it arrived in, the
//! client's request head or the upstream's response head).
//!
//! Why two: a `HeaderMap` hashes every name on each insert, lookup and removal, and a
//! request through the lane built two (its own and the upstream's response) only for the
//! stages to look up a handful of names and a writer to write them out again. Under
//! callgrind the maps' building, hashing and probing were about 6,000 of the 40,500
//! user-space instructions of a cached request (issue 5, `bench/results/instructions.txt`).
//! A message has few fields, so a scan of them by name length and bytes costs less than one
//! hash, and nothing has to be built.
//!
//! The stages, the header hygiene (`forward`), the upstream client and the lane's response
//! writer are written once, against [`Headers`]; what differs is only how a name is found.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use crate::body::{Body, RequestBody};
use crate::parsed_value::{header_value, HeaderSpan};

mod raw;

pub use self::raw::RawHeaders;

/// What the request path does with a request's or response's headers. Names are compared
/// case-insensitively, as HTTP does (RFC 9110 §5.1).
pub trait Headers: Send + Sync + Sized + 'static {
    /// Every value of `name`, in order.
    fn values<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a [u8]>;

    /// The first value of `name`, shared rather than copied.
    fn value(&self, name: &HeaderName) -> Option<HeaderValue>;

    /// Removes every value of `name`.
    fn remove(&mut self, name: &HeaderName);

    /// Replaces every value of `name` with `value`, where the first one was (or at the end).
    fn insert(&mut self, name: HeaderName, value: HeaderValue);

    /// Adds a value of `name` after the others.
    fn append(&mut self, name: HeaderName, value: HeaderValue);

    /// Which of `names` are present (`[i]` for `names[i]`).
    fn mark<const N: usize>(&self, names: &[HeaderName; N]) -> [bool; N];

    /// Every field as (name, value), in the order they go out.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// The same headers as a map (for hyper's client and handlers that take `http` types).
    fn into_map(self) -> HeaderMap;

    /// The headers of `map` (the gateway's own answers, hyper's responses).
    fn from_map(map: HeaderMap) -> Self;

    /// The headers at `spans` of a response head httparse parsed (`parsed_value`); `None` if
    /// a name is not one `HeaderName` accepts or a span lies outside `head`.
    fn from_parsed(head: BytesMut, spans: &[HeaderSpan]) -> Option<Self>;

    /// Done with: memory worth keeping goes back for a later request (`recycle`).
    fn recycle(self);

    fn contains(&self, name: &HeaderName) -> bool {
        self.values(name).next().is_some()
    }

    /// The value of `name`: `Ok(None)` if absent, `Err(Repeated)` if it occurs more than once.
    fn lone(&self, name: &HeaderName) -> Result<Option<&[u8]>, Repeated> {
        let mut values = self.values(name);
        match (values.next(), values.next()) {
            (value, None) => Ok(value),
            _ => Err(Repeated),
        }
    }

    /// The value of `name` if it occurs exactly once, shared rather than copied.
    fn single(&self, name: &HeaderName) -> Option<HeaderValue> {
        match self.lone(name) {
            Ok(Some(_)) => self.value(name),
            _ => None,
        }
    }
}

/// A header that may occur once occurred more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// `value` as text, when it is all visible ASCII (and tabs), like `HeaderValue::to_str`.
pub fn visible(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

impl Headers for HeaderMap {
    fn values<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }

    fn value(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.get(name).cloned()
    }

    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }

    fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        HeaderMap::insert(self, name, value);
    }

    fn append(&mut self, name: HeaderName, value: HeaderValue) {
        HeaderMap::append(self, name, value);
    }

    fn mark<const N: usize>(&self, names: &[HeaderName; N]) -> [bool; N] {
        // One pass over the names present: most messages carry none of `names`, and a
        // lookup of each (a hash and a probe) cost more than the pass.
        let mut found = [false; N];
        for name in self.keys() {
            if let Some(i) = names.iter().position(|n| n == name) {
                found[i] = true;
            }
        }
        found
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }

    fn into_map(self) -> HeaderMap {
        self
    }

    fn from_map(map: HeaderMap) -> Self {
        map
    }

    fn from_parsed(head: BytesMut, spans: &[HeaderSpan]) -> Option<Self> {
        let head = head.freeze();
        // Room for the request id a response gains on its way out.
        let mut map = crate::recycle::header_map(spans.len() + 1);
        for &((ns, ne), (vs, ve)) in spans {
            let name = HeaderName::from_bytes(head.get(ns..ne)?).ok()?;
            if vs > ve || ve > head.len() {
                return None;
            }
            // httparse checked the value's bytes (`parsed_value`).
            map.append(name, header_value(head.slice(vs..ve)));
        }
        Some(map)
    }

    fn recycle(self) {
        crate::recycle::give_back(self);
    }

    fn contains(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }
}

/// A client's request on its way through the stages.
pub struct Inbound<H> {
    pub method: Method,
    pub uri: Uri,
    pub headers: H,
    pub body: RequestBody,
}

impl From<Request<RequestBody>> for Inbound<HeaderMap> {
    fn from(request: Request<RequestBody>) -> Self {
        let (parts, body) = request.into_parts();
        Inbound {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        }
    }
}

impl<H: Headers> Inbound<H> {
    /// As an `http` request (HTTP/1.1), for handlers that take one.
    pub fn into_request(self) -> Request<RequestBody> {
        http_request(self.method, self.uri, self.headers, self.body)
    }
}

/// An HTTP/1.1 `http` request of these parts.
fn http_request<H: Headers, B>(method: Method, uri: Uri, headers: H, body: B) -> Request<B> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers.into_map();
    request
}

/// The request an upstream receives: origin-form target, Host set, HTTP/1.1.
pub struct Outbound<H> {
    pub method: Method,
    pub uri: Uri,
    pub headers: H,
    pub body: Body,
}

impl<H: Headers> Outbound<H> {
    /// As an `http` request, for hyper's client.
    pub fn into_request(self) -> Request<Body> {
        http_request(self.method, self.uri, self.headers, self.body)
    }
}

/// A response on its way back to the client: the upstream's, or the gateway's own.
pub struct Reply<H> {
    pub status: StatusCode,
    pub headers: H,
    pub body: Body,
}

impl<H: Headers> Reply<H> {
    pub fn from_response(response: Response<Body>) -> Self {
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: H::from_map(parts.headers),
            body,
        }
    }
}

/// As an `http` response, for hyper's server.
impl<H: Headers> From<Reply<H>> for Response<Body> {
    fn from(reply: Reply<H>) -> Self {
        let mut response = Response::new(reply.body);
        *response.status_mut() = reply.status;
        *response.headers_mut() = reply.headers.into_map();
        response
    }
}
