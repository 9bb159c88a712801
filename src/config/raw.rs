//! The file format of `routes.yaml`, exactly as written by people.
//!
//! Nothing here is validated beyond its YAML type: `compile` turns these structs into the
//! runtime snapshot and reports every semantic error with its position. Unknown keys are not
//! rejected by serde (`deny_unknown_fields` stops at the first one); `config::parse` collects
//! all of them with `serde_ignored` and reports each as an error, so a mistyped `scopes:` is
//! never silently ignored and a file with three mistakes shows three errors.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

// The doc comments of these types and fields are the descriptions of the JSON Schema
// (`tollgate schema`) that editors show; the README's reference tables say more.

/// tollgate's config: listeners, limits, trusted issuers and routes. Unknown keys are errors.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(title = "tollgate routes.yaml", deny_unknown_fields)]
pub struct RawConfig {
    /// Data-plane address `IP:port` (HTTP/1.1 and h2c, or HTTPS with `tls`). Default 127.0.0.1:8080.
    pub listen: Option<String>,
    /// Admin listener `IP:port` (/-/healthz, /-/ready, /-/metrics, /-/config, POST /-/reload). Default: none.
    pub admin: Option<String>,
    /// `realm` of WWW-Authenticate challenges (RFC 6750 §3). Default `tollgate`.
    pub realm: Option<String>,
    /// TLS on the data-plane listener.
    pub tls: Option<RawTls>,
    /// Seconds in-flight requests get after SIGTERM/SIGINT (0 to 3600). Default 30.
    #[schemars(range(max = 3600))]
    pub shutdown_grace_secs: Option<u64>,
    /// Server limits; every key has a default.
    #[serde(default)]
    pub limits: RawLimits,
    /// The verified-token cache (on by default).
    pub token_cache: Option<RawTokenCache>,
    /// W3C Trace Context: `traceparent`/`tracestate` always pass through; optionally start traces.
    pub trace_context: Option<RawTraceContext>,
    /// Trusted token issuers.
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    /// Routes, matched by longest path prefix, then method. At least one is required.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `tls: {cert: FILE, key: FILE}`: PEM certificate chain and private key.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Tls", deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first (relative to the config file's directory).
    pub cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<String>,
}

/// `token_cache: {enabled, max_entries}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "TokenCache", deny_unknown_fields)]
pub struct RawTokenCache {
    /// Default true.
    pub enabled: Option<bool>,
    /// Default 100000.
    #[schemars(range(min = 1))]
    pub max_entries: Option<usize>,
}

/// `trace_context: {start_when_absent, sampled}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "TraceContext", deny_unknown_fields)]
pub struct RawTraceContext {
    /// Start a trace (new `traceparent`) for requests without a valid one. Default false.
    pub start_when_absent: Option<bool>,
    /// The sampled flag of traces tollgate starts. Default true.
    pub sampled: Option<bool>,
}

/// Server limits; every field has a named default in `config::defaults`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Limits", deny_unknown_fields)]
pub struct RawLimits {
    /// Time a client has to send a whole HTTP/1.1 request head or finish TLS. Default 10000.
    #[schemars(range(min = 1))]
    pub header_read_timeout_ms: Option<u64>,
    /// Largest HTTP/1.1 request head, 431 above it; at least 8192. Default 65536.
    #[schemars(range(min = 8192))]
    pub max_request_header_bytes: Option<usize>,
    /// Largest request body forwarded, 413 above it. Default 10485760.
    #[schemars(range(min = 1))]
    pub max_request_body_bytes: Option<u64>,
    /// Open client connections per listener. Default 25000.
    #[schemars(range(min = 1))]
    pub max_connections: Option<usize>,
    /// HTTP/2 streams per connection. Default 128.
    #[schemars(range(min = 1))]
    pub h2_max_concurrent_streams: Option<u32>,
    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE. Default 65536.
    #[schemars(range(min = 1))]
    pub h2_max_header_list_bytes: Option<u32>,
    /// TCP connect deadline to an upstream, 502 after it. Default 5000.
    #[schemars(range(min = 1))]
    pub upstream_connect_timeout_ms: Option<u64>,
    /// How long an idle pooled upstream connection is kept. Default 60000.
    #[schemars(range(min = 1))]
    pub upstream_idle_timeout_ms: Option<u64>,
}

/// One trusted issuer. Keys come from exactly one of `jwks_file`, `jwks_url` or `discovery: true`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Issuer", deny_unknown_fields)]
pub struct RawIssuer {
    /// Name used by routes: letters, digits, `-`, `_`, `.`; unique. Required.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub id: Option<String>,
    /// Exact, case-sensitive value of the token's `iss`. Required.
    pub issuer: Option<String>,
    /// The token's `aud` must contain one of these (RFC 9068 §4). Required.
    #[schemars(length(min = 1))]
    pub audiences: Option<Vec<String>>,
    /// A JWK Set file (relative to the config file's directory), re-read at every reload.
    pub jwks_file: Option<String>,
    /// A JWK Set URL (https, or http on loopback).
    pub jwks_url: Option<String>,
    /// Find `jwks_uri` in `{issuer}/.well-known/openid-configuration`.
    pub discovery: Option<bool>,
    /// Longest time between background refreshes of a remote key set. Default 300.
    #[schemars(range(min = 1))]
    pub jwks_refresh_secs: Option<u64>,
    /// At most one fetch per this many seconds for unknown `kid`s. Default 30.
    #[schemars(range(min = 1))]
    pub jwks_cooldown_secs: Option<u64>,
    /// How long the last good key set serves while fetches fail. Default 86400.
    #[schemars(range(min = 1))]
    pub jwks_max_stale_secs: Option<u64>,
    /// PEM CA bundle for an https IdP (else the system roots).
    pub ca_file: Option<String>,
    /// Report ready before this issuer's keys have been fetched.
    pub ready_without_keys: Option<bool>,
    /// Allowed signature algorithms. Default: all supported.
    #[schemars(with = "Option<Vec<AlgorithmName>>")]
    pub algorithms: Option<Vec<String>>,
    /// Clock skew allowed on exp, nbf and iat (0 to 300). Default 30.
    #[schemars(range(max = 300))]
    pub leeway_secs: Option<u64>,
    /// Required JWS `typ`, e.g. `at+jwt` (RFC 9068 §2.1). Default: not checked.
    pub require_typ: Option<String>,
    /// Scopes this issuer can grant; only read by `tollgate check` to warn about routes
    /// requiring a scope no accepted issuer grants.
    pub scopes: Option<Vec<String>>,
}

/// A signature algorithm name, for the schema only (the config reads it as a string and
/// reports an unknown name with its position).
#[derive(JsonSchema)]
#[allow(clippy::upper_case_acronyms, dead_code)]
pub enum AlgorithmName {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// One route.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Route", deny_unknown_fields)]
pub struct RawRoute {
    /// Name in logs and metrics: letters, digits, `-`, `_`, `.`; unique. Required.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub id: Option<String>,
    /// Path prefix, matched on segment boundaries; the longest match wins. Required.
    #[schemars(regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// Upper-case method names. Default: every method.
    pub methods: Option<Vec<String>>,
    /// `http://` or `https://host[:port][/base-path]`. Required.
    #[schemars(regex(pattern = r"^https?://"))]
    pub upstream: Option<String>,
    /// PEM CA bundle that alone verifies an `https://` upstream (else the system roots).
    pub ca_file: Option<String>,
    /// Leading segment(s) of `path` removed before forwarding.
    pub strip_prefix: Option<String>,
    /// How tokens are treated. Default `required`.
    #[schemars(extend("enum" = ["required", "optional", "none"]))]
    pub auth: Option<String>,
    /// Ids of the issuers accepted here. Default: any configured issuer.
    pub issuers: Option<Vec<String>>,
    /// Scopes the token must grant: a list (all of them), `{all_of: [...]}` or `{any_of: [...]}`.
    pub scopes: Option<RawScopes>,
    /// Claim (or dot path into nested claims) → request header sent upstream.
    pub claims_to_headers: Option<BTreeMap<String, String>>,
    /// Send the client's `Authorization` header upstream. Default false.
    pub forward_token: Option<bool>,
    /// Time for the upstream's response head, 504 after it (1 to 3600000). Default 30000.
    #[schemars(range(min = 1, max = 3_600_000))]
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

impl JsonSchema for RawScopes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scopes".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let list = serde_json::json!({"type": "array", "items": {"type": "string"}, "minItems": 1});
        schemars::json_schema!({
            "oneOf": [
                list,
                {
                    "type": "object",
                    "properties": {"any_of": list, "all_of": list},
                    "additionalProperties": false,
                    "minProperties": 1,
                    "maxProperties": 1
                }
            ]
        })
    }
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
