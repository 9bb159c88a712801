//! The verified-token cache: a client that sends the same token again skips signature
//! verification (jsonwebtoken's author leaves caching to the application).
//!
//! - Keyed by SHA-256 of the token, so the cache never holds a usable token.
//! - Bounded in entries; an entry lives until the token's `exp` (plus the issuer's leeway).
//! - A hit is re-checked against what can change after verification: the clock, the
//!   route's issuer list, and the issuer's current keys (a token whose `kid` has left the
//!   key set is evicted and fully re-verified, which then fails).
//! - Failures are never cached: a bad token always pays for full verification, and a
//!   cache full of garbage cannot be built from the outside.
//! - One cache per config snapshot: a reload (new audiences, new issuers) starts empty.

use std::collections::HashMap;
use std::sync::RwLock;

use jsonwebtoken::Algorithm;

use super::verify::VerifiedToken;

type Digest = [u8; 32];

struct Entry {
    token: VerifiedToken,
    kid: Option<String>,
    alg: Algorithm,
    /// `exp` + leeway, seconds since the epoch.
    valid_until: f64,
}

pub struct TokenCache {
    max_entries: usize,
    entries: RwLock<HashMap<Digest, Entry>>,
}

fn digest(token: &str) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl TokenCache {
    pub fn new(max_entries: usize) -> Self {
        TokenCache {
            max_entries,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A still-valid verified token for `token`, if cached and acceptable on this route.
    pub fn get(
        &self,
        token: &str,
        allowed_issuers: Option<&[String]>,
        now: u64,
    ) -> Option<VerifiedToken> {
        let key = digest(token);
        let (hit, evict) = {
            let map = self.entries.read().ok()?;
            let entry = map.get(&key)?;
            let expired = now as f64 >= entry.valid_until;
            let (keys, _) = entry.token.issuer.keys.current();
            let key_gone = keys.select(entry.kid.as_deref(), entry.alg).is_err();
            if expired || key_gone {
                (None, true)
            } else {
                (Some(entry.token.clone()), false)
            }
        };
        if evict {
            if let Ok(mut map) = self.entries.write() {
                map.remove(&key);
            }
            return None;
        }
        let hit = hit?;
        // The route may not accept this issuer: full verification gives the precise error.
        if allowed_issuers.is_some_and(|ids| !ids.iter().any(|id| *id == hit.issuer.id)) {
            return None;
        }
        Some(hit)
    }

    /// Remembers a verified token.
    pub fn insert(
        &self,
        token: &str,
        verified: &VerifiedToken,
        kid: Option<String>,
        alg: Algorithm,
        exp: f64,
        now: u64,
    ) {
        let Ok(mut map) = self.entries.write() else {
            return;
        };
        if map.len() >= self.max_entries {
            map.retain(|_, e| e.valid_until > now as f64);
        }
        if map.len() >= self.max_entries {
            // Still full of live entries: make room by dropping an arbitrary one.
            if let Some(k) = map.keys().next().copied() {
                map.remove(&k);
            }
        }
        let valid_until = exp + verified.issuer.leeway_secs as f64;
        map.insert(
            digest(token),
            Entry {
                token: verified.clone(),
                kid,
                alg,
                valid_until,
            },
        );
    }
}
