//! A development-only OAuth2 authorization server: the client credentials grant
//! (RFC 6749 §4.4) with client_secret_basic or client_secret_post authentication
//! (§2.3.1), plus the discovery document and JWK Set an IdP publishes. It exists so the
//! whole flow works with curl and nothing else; it is never part of `serve`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::body::RequestBody;
use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};

use crate::body::{full, Body};
use crate::devkeys::{self, DevKey, TokenSpec};
use crate::proxy::Connection;
use crate::server::Handler;

/// Largest token request body read.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Lifetime of issued tokens.
pub const TOKEN_TTL_SECS: u64 = 3600;

/// One registered client.
pub struct Client {
    pub secret: String,
    /// Scopes this client may ask for; also the default grant.
    pub scopes: Vec<String>,
}

pub struct Idp {
    pub key: DevKey,
    pub issuer: String,
    pub audience: String,
    /// Base URL this server is reachable at (for the discovery document).
    pub base_url: String,
    pub clients: HashMap<String, Client>,
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // RFC 6749 §5.1: token responses must not be cached.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// RFC 6749 §5.2 error response.
fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response<Body> {
    let mut r = json_response(
        status,
        json!({"error": code, "error_description": description}),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tollgate-demo-idp\""),
        );
    }
    r
}

/// `application/x-www-form-urlencoded` → pairs.
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

impl Idp {
    async fn token(&self, req: Request<RequestBody>) -> Response<Body> {
        let basic = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let body = match Limited::new(req.into_body(), MAX_FORM_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "request body too large or unreadable",
                )
            }
        };
        let form = parse_form(&body);
        let (client_id, secret) = match (&basic, form.get("client_id"), form.get("client_secret")) {
            (Some(pair), _, _) => match pair.split_once(':') {
                Some((id, secret)) => (id.to_string(), secret.to_string()),
                None => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "malformed Basic credentials",
                    )
                }
            },
            (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
            _ => {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication is required",
                )
            }
        };
        let Some(client) = self.clients.get(&client_id).filter(|c| c.secret == secret) else {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client or wrong secret",
            );
        };
        match form.get("grant_type").map(String::as_str) {
            Some("client_credentials") => {}
            Some(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "only client_credentials is supported",
                )
            }
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "grant_type is required",
                )
            }
        }
        let scopes: Vec<String> = match form.get("scope") {
            Some(s) if !s.trim().is_empty() => s
                .split(' ')
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
            _ => client.scopes.clone(),
        };
        if let Some(bad) = scopes.iter().find(|s| !client.scopes.contains(s)) {
            let msg = format!("scope {bad} is not allowed for this client");
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &msg);
        }
        let scope = scopes.join(" ");
        let spec = TokenSpec {
            iss: self.issuer.clone(),
            aud: vec![self.audience.clone()],
            sub: client_id.clone(),
            scope: Some(scope.clone()),
            client_id,
            ttl: Duration::from_secs(TOKEN_TTL_SECS),
            extra: Default::default(),
        };
        match devkeys::mint(&self.key, &spec) {
            Ok(token) => json_response(
                StatusCode::OK,
                json!({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL_SECS, "scope": scope}),
            ),
            Err(_) => oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            ),
        }
    }
}

impl Handler for Idp {
    async fn call(self: Arc<Self>, req: Request<RequestBody>, _conn: Connection) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/oauth2/token") => self.token(req).await,
            (&Method::GET, "/.well-known/openid-configuration") => json_response(
                StatusCode::OK,
                json!({
                    "issuer": self.issuer,
                    "token_endpoint": format!("{}/oauth2/token", self.base_url),
                    "jwks_uri": format!("{}/jwks.json", self.base_url),
                    "grant_types_supported": ["client_credentials"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "id_token_signing_alg_values_supported": [format!("{:?}", self.key.alg)],
                }),
            ),
            (&Method::GET, "/jwks.json") => {
                json_response(StatusCode::OK, json!({"keys": [self.key.public_jwk]}))
            }
            _ => oauth_error(StatusCode::NOT_FOUND, "not_found", "unknown endpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_form;

    #[test]
    fn form_decoding() {
        let f =
            parse_form(b"grant_type=client_credentials&scope=orders%3Aread+orders%3Awrite&x=%zz");
        assert_eq!(f["grant_type"], "client_credentials");
        assert_eq!(f["scope"], "orders:read orders:write");
        assert_eq!(f["x"], "%zz");
    }
}
