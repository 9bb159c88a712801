//! Development keys and tokens: `tollgate keygen`, `tollgate token`, the demo's in-memory
//! identity provider, and the test suite all mint through here, with jsonwebtoken.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

/// A private signing key with its public JWK.
pub struct DevKey {
    pub alg: Algorithm,
    pub kid: String,
    /// PKCS#8 PEM.
    pub private_pem: String,
    pub encoding: EncodingKey,
    pub public_jwk: Value,
}

/// Generates a fresh key pair for `alg` (RS256 → RSA 2048, ES256 → P-256, EdDSA → Ed25519).
pub fn generate(alg: Algorithm, kid: &str) -> Result<DevKey, String> {
    let rng = SystemRandom::new();
    let der: Vec<u8> = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| "RSA key generation failed")?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der =
                pair.as_der().map_err(|_| "RSA key encoding failed")?;
            der.as_ref().to_vec()
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let curve = if alg == Algorithm::ES256 {
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(curve, &rng)
                .map_err(|_| "EC key generation failed")?
                .as_ref()
                .to_vec()
        }
        Algorithm::EdDSA => aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(|_| "Ed25519 key generation failed")?
            .as_ref()
            .to_vec(),
        other => return Err(format!("{other:?} keys are not supported")),
    };
    from_pem(pem_encode("PRIVATE KEY", &der).as_bytes(), kid, alg)
}

/// Loads a PKCS#8 (or PKCS#1 RSA) PEM private key for `alg`.
pub fn from_pem(pem: &[u8], kid: &str, alg: Algorithm) -> Result<DevKey, String> {
    let encoding = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .map_err(|e| format!("the key is not a {alg:?} private key in PEM: {e}"))?;
    let mut jwk = Jwk::from_encoding_key(&encoding, alg)
        .map_err(|e| format!("cannot derive the public key: {e}"))?;
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(key_algorithm(alg));
    let public_jwk = serde_json::to_value(&jwk).map_err(|e| e.to_string())?;
    Ok(DevKey {
        alg,
        kid: kid.to_string(),
        private_pem: String::from_utf8_lossy(pem).into_owned(),
        encoding,
        public_jwk,
    })
}

/// Guesses the algorithm of a PEM private key: Ed25519 → EdDSA, EC → ES256, RSA → RS256.
pub fn infer_algorithm(pem: &[u8]) -> Option<Algorithm> {
    [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256]
        .into_iter()
        .find(|alg| from_pem(pem, "probe", *alg).is_ok())
}

fn key_algorithm(alg: Algorithm) -> KeyAlgorithm {
    match alg {
        Algorithm::RS384 => KeyAlgorithm::RS384,
        Algorithm::RS512 => KeyAlgorithm::RS512,
        Algorithm::PS256 => KeyAlgorithm::PS256,
        Algorithm::PS384 => KeyAlgorithm::PS384,
        Algorithm::PS512 => KeyAlgorithm::PS512,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        Algorithm::ES384 => KeyAlgorithm::ES384,
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
        _ => KeyAlgorithm::RS256,
    }
}

/// A JWK Set document holding the public halves of `keys`.
pub fn jwks_json<'a>(keys: impl IntoIterator<Item = &'a DevKey>) -> String {
    let keys: Vec<&Value> = keys.into_iter().map(|k| &k.public_jwk).collect();
    serde_json::to_string_pretty(&json!({ "keys": keys })).unwrap_or_default()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The claims of a development access token (RFC 9068 §2.2).
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub iss: String,
    pub aud: Vec<String>,
    pub sub: String,
    pub scope: Option<String>,
    pub client_id: String,
    pub ttl: Duration,
    /// Extra claims, merged last (they may override the ones above).
    pub extra: Map<String, Value>,
}

/// Signs an `at+jwt` access token with `key`.
pub fn mint(key: &DevKey, spec: &TokenSpec) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970")?
        .as_secs();
    let mut jti = [0u8; 16];
    SystemRandom::new()
        .fill(&mut jti)
        .map_err(|_| "no randomness available")?;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(spec.iss));
    claims.insert(
        "aud".into(),
        if spec.aud.len() == 1 {
            json!(spec.aud[0])
        } else {
            json!(spec.aud)
        },
    );
    claims.insert("sub".into(), json!(spec.sub));
    claims.insert("client_id".into(), json!(spec.client_id));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + spec.ttl.as_secs()));
    claims.insert(
        "jti".into(),
        json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti)),
    );
    if let Some(scope) = &spec.scope {
        claims.insert("scope".into(), json!(scope));
    }
    for (k, v) in &spec.extra {
        claims.insert(k.clone(), v.clone());
    }
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, &claims, &key.encoding)
        .map_err(|e| format!("signing failed: {e}"))
}

/// Parses `30s`, `15m`, `1h`, `7d` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration like 90s, 15m, 1h or 7d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem_and_jwks() {
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let key = generate(alg, "k1").unwrap();
            let again = from_pem(key.private_pem.as_bytes(), "k1", alg).unwrap();
            assert_eq!(key.public_jwk, again.public_jwk);
            assert_eq!(infer_algorithm(key.private_pem.as_bytes()), Some(alg));
            let (set, refused) =
                crate::auth::jwks::KeySet::from_json(jwks_json([&key]).as_bytes()).unwrap();
            assert!(refused.is_empty(), "{refused:?}");
            assert_eq!(set.keys[0].alg, alg);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert!(parse_duration("1w").is_err());
    }
}
