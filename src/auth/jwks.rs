//! JWK Sets (RFC 7517) → verification keys, with the hygiene RFC 8725 asks for.
//!
//! Every key is bound to exactly one algorithm at load time: its `alg` member, or the only
//! algorithm its type and curve allow. A token may then only be verified with a key whose
//! algorithm equals the token's `alg`, which closes the algorithm-confusion attacks
//! (RFC 8725 §2.1, §3.1). Symmetric (`oct`) keys are refused outright: an edge gateway that
//! shares HMAC secrets with every service is one leak away from forged tokens.

use std::collections::HashSet;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::ecdsa::{Curve, EcdsaKey};
use crate::config::defaults::MIN_RSA_BITS;

/// Algorithms tollgate verifies. HS* is deliberately absent (see module docs).
pub const SUPPORTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Parses an algorithm name as it appears in config and in JWS headers.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    let alg: Algorithm = name.parse().ok()?;
    SUPPORTED_ALGORITHMS.contains(&alg).then_some(alg)
}

/// One usable public key.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    /// Parsed once at load for exactly `alg`: verification does no key parsing per request
    /// (jsonwebtoken's aws-lc backend rebuilds the key from the JWK at every call).
    pub key: Verifier,
}

/// A public key ready to check signatures of its one algorithm.
pub enum Verifier {
    /// ES256 and ES384, without aws-lc-rs's conversions (see `ecdsa`).
    Ecdsa(EcdsaKey),
    /// RSA (PKCS#1 v1.5 and PSS) and Ed25519, through aws-lc-rs.
    Parsed(ParsedPublicKey),
}

impl Verifier {
    /// Whether `signature` (as decoded from the JWS) signs `message`.
    pub fn accepts(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Verifier::Ecdsa(key) => key.accepts(message, signature),
            Verifier::Parsed(key) => key.verify_sig(message, signature).is_ok(),
        }
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of logs and debug output.
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The keys of one issuer.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
}

/// Why a key in a set was refused; the caller decides whether that is fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedKey {
    pub index: usize,
    pub kid: Option<String>,
    pub reason: String,
}

impl KeySet {
    /// Parses a JWK Set document. Keys that fail the hygiene rules are returned as refused,
    /// never silently dropped; a document that is not a JWK Set at all is an `Err`.
    pub fn from_json(bytes: &[u8]) -> Result<(KeySet, Vec<RefusedKey>), String> {
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let entries = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("not a JWK Set: there is no `keys` array")?;
        let mut refused = Vec::new();
        let mut keys = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry
                .get("kid")
                .and_then(|k| k.as_str())
                .map(str::to_string);
            match key_from_jwk(entry) {
                Ok(k) => keys.push(k),
                Err(reason) => refused.push(RefusedKey { index, kid, reason }),
            }
        }
        // A kid that appears twice makes "which key signed this?" ambiguous: refuse both.
        let mut seen = HashSet::new();
        let dup: HashSet<String> = keys
            .iter()
            .filter_map(|k| k.kid.clone())
            .filter(|kid| !seen.insert(kid.clone()))
            .collect();
        if !dup.is_empty() {
            for (index, entry) in entries.iter().enumerate() {
                let kid = entry.get("kid").and_then(|k| k.as_str());
                if let Some(kid) = kid.filter(|k| dup.contains(*k)) {
                    refused.push(RefusedKey {
                        index,
                        kid: Some(kid.to_string()),
                        reason: format!("kid `{kid}` appears more than once in the set"),
                    });
                }
            }
            keys.retain(|k| k.kid.as_ref().is_none_or(|kid| !dup.contains(kid)));
        }
        refused.sort_by_key(|r| r.index);
        Ok((KeySet { keys }, refused))
    }

    /// The key for a token: by `kid` if the token names one, else the only key for `alg`.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyKey, KeyLookupError> {
        match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(KeyLookupError::UnknownKid)?;
                if key.alg != alg {
                    return Err(KeyLookupError::AlgMismatch);
                }
                Ok(key)
            }
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.alg == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(k), None) => Ok(k),
                    (None, _) => Err(KeyLookupError::NoKeyForAlg),
                    (Some(_), Some(_)) => Err(KeyLookupError::AmbiguousWithoutKid),
                }
            }
        }
    }
}

/// Why no key could be chosen for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookupError {
    UnknownKid,
    AlgMismatch,
    NoKeyForAlg,
    AmbiguousWithoutKid,
}

fn key_from_jwk(entry: &serde_json::Value) -> Result<VerifyKey, String> {
    if entry.get("kty").and_then(|k| k.as_str()) == Some("oct") {
        return Err("symmetric (`oct`) keys are not accepted".into());
    }
    let jwk: Jwk =
        serde_json::from_value(entry.clone()).map_err(|e| format!("invalid JWK: {e}"))?;
    if let Some(PublicKeyUse::Encryption) = jwk.common.public_key_use {
        return Err("key is for encryption (`use: enc`), not signatures".into());
    }
    if let Some(ops) = &jwk.common.key_operations {
        use jsonwebtoken::jwk::KeyOperations;
        if !ops.iter().any(|o| matches!(o, KeyOperations::Verify)) {
            return Err("key_ops does not include `verify`".into());
        }
    }
    let declared = match &jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(
            key_algorithm_to_alg(a)
                .ok_or_else(|| format!("alg `{a:?}` is not a supported signature algorithm"))?,
        ),
    };
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let bits = rsa_modulus_bits(&p.n)?;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
                ));
            }
            let alg = declared.unwrap_or(Algorithm::RS256);
            if !matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) {
                return Err(format!("alg {alg:?} does not fit an RSA key"));
            }
            alg
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let fits = match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err(format!("curve {:?} is not supported for EC keys", p.curve)),
            };
            match declared {
                Some(a) if a != fits => {
                    return Err(format!("alg {a:?} does not fit curve {:?}", p.curve))
                }
                _ => fits,
            }
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err(format!("curve {:?} is not supported for OKP keys", p.curve));
            }
            match declared {
                Some(a) if a != Algorithm::EdDSA => {
                    return Err(format!("alg {a:?} does not fit an Ed25519 key"))
                }
                _ => Algorithm::EdDSA,
            }
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (`oct`) keys are not accepted".into())
        }
        _ => return Err("unsupported key type".into()),
    };
    // jsonwebtoken's own parse first: the same rules as before for what a usable JWK is.
    DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key material: {e}"))?;
    let key = parsed_key(&jwk.algorithm, alg)?;
    Ok(VerifyKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

fn b64url(field: &str, value: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("`{field}` is not base64url"))
}

/// The verification key for `alg` (RFC 7518 §3: RS* = PKCS#1 v1.5, PS* = PSS, ES* =
/// fixed-length r||s; RFC 8037: EdDSA over Ed25519).
fn parsed_key(params: &AlgorithmParameters, alg: Algorithm) -> Result<Verifier, String> {
    use aws_lc_rs::signature as sig;
    let refused = || "the key material does not form a valid public key".to_string();
    match params {
        AlgorithmParameters::RSA(p) => {
            let (n, e) = (b64url("n", &p.n)?, b64url("e", &p.e)?);
            let strip = |v: &[u8]| v.iter().position(|b| *b != 0).map_or(0, |i| i);
            let rsa: &'static sig::RsaParameters = match alg {
                Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
                other => return Err(format!("alg {other:?} does not fit an RSA key")),
            };
            let components = sig::RsaPublicKeyComponents {
                n: &n[strip(&n)..],
                e: &e[strip(&e)..],
            };
            components
                .to_parsed_public_key(rsa)
                .map(Verifier::Parsed)
                .map_err(|_| refused())
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (x, y) = (b64url("x", &p.x)?, b64url("y", &p.y)?);
            let curve = match alg {
                Algorithm::ES256 => Curve::P256,
                Algorithm::ES384 => Curve::P384,
                other => return Err(format!("alg {other:?} does not fit an EC key")),
            };
            let size = curve.scalar_len();
            if x.len() != size || y.len() != size {
                return Err("EC coordinates have the wrong length for the curve".into());
            }
            // SEC 1 §2.3.3 uncompressed point: 0x04 || x || y.
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            EcdsaKey::new(curve, &point)
                .map(Verifier::Ecdsa)
                .ok_or_else(refused)
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            ParsedPublicKey::new(&sig::ED25519, b64url("x", &p.x)?)
                .map(Verifier::Parsed)
                .map_err(|_| refused())
        }
        _ => Err("unsupported key type".into()),
    }
}

fn key_algorithm_to_alg(a: &KeyAlgorithm) -> Option<Algorithm> {
    let alg = match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    Some(alg)
}

/// Bit length of a base64url-encoded big-endian RSA modulus.
fn rsa_modulus_bits(n_b64: &str) -> Result<usize, String> {
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n_b64.trim_end_matches('='))
        .map_err(|_| "RSA modulus `n` is not base64url".to_string())?;
    let Some(first) = n.iter().position(|b| *b != 0) else {
        return Err("RSA modulus `n` is zero".into());
    };
    let significant = &n[first..];
    Ok(significant.len() * 8 - significant[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_ignore_leading_zero_bytes() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(
            rsa_modulus_bits(&b64.encode([0u8, 0x80, 0, 0])).unwrap(),
            24
        );
        assert_eq!(rsa_modulus_bits(&b64.encode([0x01, 0xff])).unwrap(), 9);
    }

    #[test]
    fn oct_keys_and_short_rsa_keys_are_refused() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let n = b64.encode([0xffu8; 128]); // 1024 bits
        let doc = format!(
            r#"{{"keys":[{{"kty":"oct","k":"c2VjcmV0","kid":"h"}},{{"kty":"RSA","n":"{n}","e":"AQAB","kid":"small"}}]}}"#
        );
        let (set, refused) = KeySet::from_json(doc.as_bytes()).unwrap();
        assert!(set.keys.is_empty());
        assert_eq!(refused.len(), 2);
        assert!(refused[1].reason.contains("1024 bits"), "{:?}", refused[1]);
    }

    #[test]
    fn duplicate_kids_refuse_both_entries() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let doc = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"a"}},{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"a"}},{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"b"}}]}}"#
        );
        let (set, refused) = KeySet::from_json(doc.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("b"));
        assert_eq!(refused.len(), 2);
    }
}
