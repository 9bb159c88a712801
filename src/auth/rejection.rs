//! Why a token is refused: the reason (a stable name for logs and metrics), the description
//! sent in the RFC 6750 challenge, and the issuer when the token named a trusted one.

use std::sync::Arc;

use super::issuer::Issuer;

/// Why a token was rejected; becomes `401 invalid_token` with `description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenError {
    pub reason: Reason,
    /// Safe for a quoted-string in `WWW-Authenticate` (no `"` or `\`, RFC 6750 §3).
    pub description: &'static str,
}

/// A refused token and, when it named a trusted issuer, that issuer (for metrics).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub error: TokenError,
    pub issuer: Option<Arc<Issuer>>,
}

impl From<TokenError> for Rejection {
    fn from(error: TokenError) -> Self {
        Rejection {
            error,
            issuer: None,
        }
    }
}

/// Rejection reasons, stable names for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Malformed,
    Oversized,
    UnsupportedAlg,
    ForbiddenHeader,
    WrongTyp,
    UnknownIssuer,
    IssuerNotAllowed,
    UnknownKid,
    AmbiguousKey,
    BadSignature,
    Expired,
    NotYetValid,
    BadClaim,
    WrongAudience,
}

impl Reason {
    /// Every reason, in declaration order (metrics index counters by `reason as usize`).
    pub const ALL: [Reason; 14] = [
        Reason::Malformed,
        Reason::Oversized,
        Reason::UnsupportedAlg,
        Reason::ForbiddenHeader,
        Reason::WrongTyp,
        Reason::UnknownIssuer,
        Reason::IssuerNotAllowed,
        Reason::UnknownKid,
        Reason::AmbiguousKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::BadClaim,
        Reason::WrongAudience,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Oversized => "oversized",
            Reason::UnsupportedAlg => "unsupported_alg",
            Reason::ForbiddenHeader => "forbidden_header",
            Reason::WrongTyp => "wrong_typ",
            Reason::UnknownIssuer => "wrong_issuer",
            Reason::IssuerNotAllowed => "issuer_not_allowed",
            Reason::UnknownKid => "unknown_kid",
            Reason::AmbiguousKey => "ambiguous_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadClaim => "bad_claim",
            Reason::WrongAudience => "wrong_audience",
        }
    }
}

pub(super) const fn reject(reason: Reason, description: &'static str) -> TokenError {
    TokenError {
        reason,
        description,
    }
}
