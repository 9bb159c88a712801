//! Authentication and authorization: where the token comes from (`extract`), which keys may
//! verify it (`jwks`), whether it is valid (`verify`), and whether it grants the route's
//! scopes (`scopes`).

pub mod extract;
pub mod jwks;
pub mod scopes;
pub mod verify;

pub use verify::{Issuer, Issuers, Reason, TokenError, VerifiedToken};
