//! The file format of `routes.yaml`, exactly as written by people.
//!
//! Nothing here is validated beyond its YAML type: `compile` turns these structs into the
//! runtime snapshot and reports every semantic error with its position. Unknown keys are not
//! rejected by serde (`deny_unknown_fields` stops at the first one); `config::parse` collects
//! all of them with `serde_ignored` and reports each as an error, so a mistyped `scopes:` is
//! never silently ignored and a file with three mistakes shows three errors.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The top level of `routes.yaml`.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub admin: Option<String>,
    pub realm: Option<String>,
    /// TLS on the data-plane listener.
    pub tls: Option<RawTls>,
    pub shutdown_grace_secs: Option<u64>,
    #[serde(default)]
    pub limits: RawLimits,
    pub token_cache: Option<RawTokenCache>,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `tls: {cert: FILE, key: FILE}`: PEM certificate chain and private key.
#[derive(Debug, Deserialize)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `token_cache: {enabled, max_entries}`.
#[derive(Debug, Deserialize)]
pub struct RawTokenCache {
    pub enabled: Option<bool>,
    pub max_entries: Option<usize>,
}

/// Server limits; every field has a named default in `config::defaults`.
#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub header_read_timeout_ms: Option<u64>,
    pub max_request_header_bytes: Option<usize>,
    pub max_request_body_bytes: Option<u64>,
    pub max_connections: Option<usize>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_max_header_list_bytes: Option<u32>,
    pub upstream_connect_timeout_ms: Option<u64>,
    pub upstream_idle_timeout_ms: Option<u64>,
}

/// One trusted token issuer.
#[derive(Debug, Deserialize)]
pub struct RawIssuer {
    pub id: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub jwks_file: Option<String>,
    /// A JWK Set URL (https, or http on loopback).
    pub jwks_url: Option<String>,
    /// Find `jwks_uri` in `{issuer}/.well-known/openid-configuration`.
    pub discovery: Option<bool>,
    pub jwks_refresh_secs: Option<u64>,
    pub jwks_cooldown_secs: Option<u64>,
    pub jwks_max_stale_secs: Option<u64>,
    /// PEM CA bundle for an https IdP (else the system roots).
    pub ca_file: Option<String>,
    /// Report ready before this issuer's keys have been fetched.
    pub ready_without_keys: Option<bool>,
    pub algorithms: Option<Vec<String>>,
    pub leeway_secs: Option<u64>,
    pub require_typ: Option<String>,
}

/// One route.
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub id: Option<String>,
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub upstream: Option<String>,
    /// PEM CA bundle that alone verifies an `https://` upstream (else the system roots).
    pub ca_file: Option<String>,
    pub strip_prefix: Option<String>,
    pub auth: Option<String>,
    pub issuers: Option<Vec<String>>,
    pub scopes: Option<RawScopes>,
    pub claims_to_headers: Option<BTreeMap<String, String>>,
    pub forward_token: Option<bool>,
    pub timeout_ms: Option<u64>,
}

/// `scopes: [a, b]` (all required) or `scopes: {any_of: [a, b]}`.
///
/// A hand-written visitor rather than `#[serde(untagged)]`: untagged enums hide both the real
/// error and unknown keys behind "did not match any variant".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawScopes {
    AllOf(Vec<String>),
    AnyOf(Vec<String>),
}

impl<'de> Deserialize<'de> for RawScopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScopesVisitor;

        impl<'de> Visitor<'de> for ScopesVisitor {
            type Value = RawScopes;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of scopes, or a mapping `{any_of: [...]}` or `{all_of: [...]}`")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawScopes, A::Error> {
                let mut scopes = Vec::new();
                while let Some(scope) = seq.next_element::<String>()? {
                    scopes.push(scope);
                }
                Ok(RawScopes::AllOf(scopes))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawScopes, A::Error> {
                let mut result = None;
                while let Some(key) = map.next_key::<String>()? {
                    if result.is_some() {
                        return Err(de::Error::custom(
                            "`scopes` takes exactly one of `any_of` or `all_of`",
                        ));
                    }
                    let scopes = map.next_value::<Vec<String>>()?;
                    result = Some(match key.as_str() {
                        "any_of" => RawScopes::AnyOf(scopes),
                        "all_of" => RawScopes::AllOf(scopes),
                        other => {
                            return Err(de::Error::unknown_field(other, &["any_of", "all_of"]))
                        }
                    });
                }
                result
                    .ok_or_else(|| de::Error::custom("`scopes` mapping needs `any_of` or `all_of`"))
            }
        }

        deserializer.deserialize_any(ScopesVisitor)
    }
}
