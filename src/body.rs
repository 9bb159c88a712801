//! The body type every handler returns: request and response bodies stream through boxed,
//! while the gateway's own answers are small in-memory bodies.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// An in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// No body. Boxing it allocates nothing: every part of it is zero-sized.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}
