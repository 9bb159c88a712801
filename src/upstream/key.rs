//! The identity of interchangeable upstream connections: scheme, authority and CA bundle.

use std::sync::Arc;

use http::uri::Authority;

use crate::routes::UpstreamCa;

/// What identifies interchangeable connections. Built once per upstream when the config is
/// compiled (`routes::Upstream::pool_key`), with its hash: a copy per request is a reference
/// count, and a pool lookup hashes nothing.
#[derive(Debug, Clone)]
pub struct Key(Arc<KeyInner>);

#[derive(Debug)]
struct KeyInner {
    parts: KeyParts,
    hash: u64,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct KeyParts {
    tls: bool,
    authority: Authority,
    /// The digest of the route's `ca_file`; `None`: the system roots.
    ca: Option<String>,
}

impl Key {
    pub fn new(scheme: &http::uri::Scheme, authority: &Authority, ca: Option<&UpstreamCa>) -> Key {
        let parts = KeyParts {
            tls: *scheme == http::uri::Scheme::HTTPS,
            authority: authority.clone(),
            ca: ca.map(|c| c.digest.clone()),
        };
        // Equal parts hash alike, in this config and the next: pooled connections outlive
        // reloads.
        let hash = std::hash::BuildHasher::hash_one(
            &std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default(),
            &parts,
        );
        Key(Arc::new(KeyInner { parts, hash }))
    }

    pub fn tls(&self) -> bool {
        self.0.parts.tls
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.parts == other.0.parts
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}
