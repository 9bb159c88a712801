//! The trusted issuers of a snapshot, and what a verified token carries.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use jsonwebtoken::Algorithm;

use super::cache::TokenCache;
use super::claims::Claims;
use super::keystore::KeySource;
use crate::metrics::IssuerMetrics;

/// One trusted issuer, compiled from config.
#[derive(Debug)]
pub struct Issuer {
    /// The config `id`, used in routes and logs.
    pub id: String,
    /// Exact, case-sensitive value of `iss`.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    /// Allowed algorithms (the config allow-list, or every supported one).
    pub algorithms: Vec<Algorithm>,
    pub leeway_secs: u64,
    /// Required `typ`, lower-cased without an `application/` prefix (RFC 7515 §4.1.9).
    pub require_typ: Option<String>,
    /// Rejection counters, set when the snapshot is installed (`Metrics::bind`).
    pub metrics: OnceLock<Arc<IssuerMetrics>>,
}

/// All issuers, looked up by their `iss` value, with this snapshot's token cache.
#[derive(Default)]
pub struct Issuers {
    by_iss: HashMap<String, Arc<Issuer>>,
    cache: Option<TokenCache>,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuers")
            .field("by_iss", &self.by_iss)
            .field("cache", &self.cache.as_ref().map(|c| c.len()))
            .finish()
    }
}

impl Issuers {
    pub fn new(list: Vec<Issuer>, cache: Option<TokenCache>) -> Self {
        Issuers {
            by_iss: list
                .into_iter()
                .map(|i| (i.issuer.clone(), Arc::new(i)))
                .collect(),
            cache,
        }
    }

    pub fn cache(&self) -> Option<&TokenCache> {
        self.cache.as_ref()
    }

    pub fn by_iss(&self, iss: &str) -> Option<&Arc<Issuer>> {
        self.by_iss.get(iss)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.by_iss.values()
    }
}

/// A token whose signature and claims have been verified.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub issuer: Arc<Issuer>,
    /// Shared: cache hits hand out the same claims without copying them.
    pub claims: Arc<Claims>,
    /// `exp`, seconds since the epoch.
    pub exp: f64,
}
