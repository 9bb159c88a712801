//! The one place that turns error conditions into HTTP responses.
//!
//! Error types are named after the condition, never after the status code. Token errors
//! follow RFC 6750 §3 exactly: the status, the `WWW-Authenticate: Bearer` challenge with its
//! attributes, and a small JSON body repeating the error code and description. The token is
//! never echoed.

use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use crate::auth::TokenError;
use crate::body::{full, Body};

/// Every way a request can end without an upstream response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// The request target is not something we route (dot segments, encoded slashes...).
    BadRequestTarget(&'static str),
    RouteNotFound,
    /// Carries the `Allow` header value.
    MethodNotAllowed(String),
    /// No bearer token on a route that requires one (RFC 6750 §3.1: no error code).
    MissingToken,
    /// Malformed `Authorization` header: RFC 6750 `invalid_request`.
    MalformedAuthorization(&'static str),
    /// RFC 6750 `invalid_token`.
    InvalidToken(TokenError),
    /// RFC 6750 `insufficient_scope`; carries the precomputed `scope` attribute.
    InsufficientScope(String),
    BodyTooLarge,
    UpstreamUnavailable,
    UpstreamTimeout,
}

impl GatewayError {
    /// The status code this condition maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequestTarget(_) | GatewayError::MalformedAuthorization(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::RouteNotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::MissingToken | GatewayError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            GatewayError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short stable name for logs (`reason` field).
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::BadRequestTarget(_) => "bad_request_target",
            GatewayError::RouteNotFound => "no_route",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::MissingToken => "missing",
            GatewayError::MalformedAuthorization(_) => "malformed_authorization",
            GatewayError::InvalidToken(e) => e.reason.as_str(),
            GatewayError::InsufficientScope(_) => "insufficient_scope",
            GatewayError::BodyTooLarge => "body_too_large",
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// (error code, description) for the JSON body.
    fn code_and_description(&self) -> (&'static str, &str) {
        match self {
            GatewayError::BadRequestTarget(d) => ("invalid_request", d),
            GatewayError::RouteNotFound => ("not_found", "no route matches this path"),
            GatewayError::MethodNotAllowed(_) => (
                "method_not_allowed",
                "the route does not accept this method",
            ),
            GatewayError::MissingToken => ("unauthorized", "a bearer token is required"),
            GatewayError::MalformedAuthorization(d) => ("invalid_request", d),
            GatewayError::InvalidToken(e) => ("invalid_token", e.description),
            GatewayError::InsufficientScope(_) => (
                "insufficient_scope",
                "the token does not grant the scopes this route requires",
            ),
            GatewayError::BodyTooLarge => ("payload_too_large", "the request body is too large"),
            GatewayError::UpstreamUnavailable => ("bad_gateway", "the upstream is unavailable"),
            GatewayError::UpstreamTimeout => {
                ("gateway_timeout", "the upstream did not answer in time")
            }
        }
    }

    /// The `WWW-Authenticate` challenge for auth errors (RFC 6750 §3).
    fn challenge(&self, prefix: &str) -> Option<String> {
        let (code, description) = self.code_and_description();
        match self {
            GatewayError::MissingToken => Some(prefix.to_string()),
            GatewayError::MalformedAuthorization(_) | GatewayError::InvalidToken(_) => Some(
                format!("{prefix}, error=\"{code}\", error_description=\"{description}\""),
            ),
            GatewayError::InsufficientScope(scope) => Some(format!(
                "{prefix}, error=\"{code}\", error_description=\"{description}\", scope=\"{scope}\""
            )),
            _ => None,
        }
    }

    /// Builds the response. `challenge_prefix` is `Bearer realm="..."` from the snapshot.
    pub fn into_response(self, challenge_prefix: &str) -> Response<Body> {
        let (code, description) = self.code_and_description();
        let body = serde_json::json!({ "error": code, "error_description": description });
        let mut response = Response::new(full(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // RFC 6750 §3: error responses must not be cached.
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        if let Some(challenge) = self.challenge(challenge_prefix) {
            // Descriptions and scopes are validated to be quoted-string safe at compile time.
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                headers.insert(WWW_AUTHENTICATE, v);
            }
        }
        if let GatewayError::MethodNotAllowed(allow) = &self {
            if let Ok(v) = HeaderValue::from_str(allow) {
                headers.insert(ALLOW, v);
            }
        }
        response
    }
}
