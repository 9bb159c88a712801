//! The verified-token cache: a client that sends the same token again skips signature
//! verification (jsonwebtoken's author leaves caching to the application).
//!
//! - Never holds a usable token: an entry keeps the token's header and payload (whose
//!   claims it keeps anyway) and only the SHA-256 of its signature. A hit needs both: the
//!   signature's digest finds the entry, and the header and payload must be the very bytes
//!   that were verified with it. Hashing only the signature takes 6 SHA-256 blocks instead
//!   of 11 for an RS256 token (2 instead of 7 for ES256); the hash was the largest single
//!   user-space cost of a cached request, and the compare that replaces the rest is a
//!   `memcmp`.
//! - Bounded in entries; an entry lives until the token's `exp` (plus the issuer's leeway).
//! - A hit is re-checked against what can change after verification: the clock, the
//!   route's issuer list, and the issuer's key set (any change to it, such as a `kid` that
//!   left, evicts the entry and the token is verified again in full, which then fails).
//! - Failures are never cached: a bad token always pays for full verification, and a
//!   cache full of garbage cannot be built from the outside.
//! - One cache per config snapshot: a reload (new audiences, new issuers) starts empty.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::jwks::KeySet;
use super::verify::VerifiedToken;
use crate::prehashed::BuildPrehashed;

/// SHA-256 of a token's signature part.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Digest([u8; 32]);

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]));
    }
}

/// Keyed by digest, hashed by the digest's own first bytes (already uniform). Only verified
/// tokens are inserted, so chosen digests cannot crowd the table.
type Entries = HashMap<Digest, Entry, BuildPrehashed>;

struct Entry {
    /// The token's `header.payload`: with the signature's digest, it pins the exact token.
    signed: Box<[u8]>,
    token: VerifiedToken,
    /// The key set the signature was checked against. A hit requires the issuer's current
    /// set to be this very set: after any key change (a `kid` removed, or reused with new
    /// key material) the token is verified again in full, once.
    keys: Arc<KeySet>,
    /// `exp` + leeway, seconds since the epoch.
    valid_until: f64,
}

pub struct TokenCache {
    max_entries: usize,
    entries: RwLock<Entries>,
    /// Last sweep for expired entries (seconds since the epoch): a full cache sweeps at most
    /// once a second instead of on every insert, which would hold the write lock for a scan
    /// of every entry while readers wait.
    last_sweep: AtomicU64,
}

/// A token's `header.payload` and the digest of its signature; `None` without a dot (a
/// verified token has two, so such bytes can never hit).
fn split(token: &[u8]) -> Option<(&[u8], Digest)> {
    // memrchr: a byte-at-a-time scan back over an RS256 signature (342 bytes) cost more
    // instructions than the lookup it serves.
    let dot = memchr::memrchr(b'.', token)?;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &token[dot + 1..]);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Some((&token[..dot], Digest(out)))
}

impl TokenCache {
    pub fn new(max_entries: usize) -> Self {
        TokenCache {
            max_entries,
            entries: RwLock::new(Entries::default()),
            last_sweep: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A still-valid verified token for `token`, if cached and acceptable on this route.
    /// Bytes are enough: only tokens that verified are ever inserted, so a hit means the
    /// bytes are a token that passed every check, its syntax included.
    pub fn get(
        &self,
        token: &[u8],
        allowed_issuers: Option<&[String]>,
        now: u64,
    ) -> Option<VerifiedToken> {
        let (signed, key) = split(token)?;
        let hit = {
            let map = self.entries.read().ok()?;
            let entry = map.get(&key)?;
            // Another token that shares the signature (spliced onto other claims) is not
            // this entry's token, and does not evict it either. A plain compare: getting
            // here takes the signature's digest, that is, the signature itself.
            if *entry.signed != *signed {
                return None;
            }
            let (current, _) = entry.token.issuer.keys.current();
            let fresh = (now as f64) < entry.valid_until && Arc::ptr_eq(&current, &entry.keys);
            fresh.then(|| entry.token.clone())
        };
        let Some(hit) = hit else {
            if let Ok(mut map) = self.entries.write() {
                map.remove(&key);
            }
            return None;
        };
        // The route may not accept this issuer: full verification gives the precise error.
        if allowed_issuers.is_some_and(|ids| !ids.iter().any(|id| *id == hit.issuer.id)) {
            return None;
        }
        Some(hit)
    }

    /// Remembers a token verified against `keys`.
    pub fn insert(&self, token: &str, verified: &VerifiedToken, keys: Arc<KeySet>, now: u64) {
        let Some((signed, key)) = split(token.as_bytes()) else {
            return;
        };
        let Ok(mut map) = self.entries.write() else {
            return;
        };
        if map.len() >= self.max_entries {
            if self.last_sweep.swap(now, Ordering::Relaxed) != now {
                map.retain(|_, e| e.valid_until > now as f64);
            }
            if map.len() >= self.max_entries {
                // Still full of live entries: make room by dropping an arbitrary one.
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        let valid_until = verified.exp + verified.issuer.leeway_secs as f64;
        map.insert(
            key,
            Entry {
                signed: signed.into(),
                token: verified.clone(),
                keys,
                valid_until,
            },
        );
    }
}
