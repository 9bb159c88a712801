//! Where an issuer's keys live: a file read at load (static) or a remote, refreshed set.

use std::sync::Arc;

use super::jwks::KeySet;
use super::remote::RemoteKeys;

pub enum KeySource {
    /// From `jwks_file`; a reload re-reads the file.
    Static(Arc<KeySet>),
    /// From `jwks_url` or discovery; kept across reloads while the definition is unchanged.
    Remote(Arc<RemoteKeys>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Static(set) => write!(f, "Static({} keys)", set.keys.len()),
            KeySource::Remote(r) => write!(f, "Remote({:?})", r.spec.source),
        }
    }
}

impl KeySource {
    /// The keys now, and a generation that changes whenever they do (0 for static sets).
    pub fn current(&self) -> (Arc<KeySet>, u64) {
        match self {
            KeySource::Static(set) => (Arc::clone(set), 0),
            KeySource::Remote(r) => r.current(),
        }
    }

    pub fn remote(&self) -> Option<&Arc<RemoteKeys>> {
        match self {
            KeySource::Static(_) => None,
            KeySource::Remote(r) => Some(r),
        }
    }

    /// Whether the issuer can serve: static sets always; remote ones once fetched (or when
    /// configured to be ready without keys).
    pub fn is_ready(&self) -> bool {
        match self {
            KeySource::Static(_) => true,
            KeySource::Remote(r) => r.is_ready(),
        }
    }
}
