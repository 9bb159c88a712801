//! Scrape-time encoding of [`Metrics`] and the active snapshot in the Prometheus text
//! format (0.0.4), through `prometheus-client`'s encoder (escaping, `# HELP`/`# TYPE`, the
//! `_total` suffix of counters and cumulative histogram buckets are its business).
//!
//! Everything here runs per scrape, never per request: labels are built from the counters'
//! owners, series are sorted so two scrapes diff cleanly, and all-zero cells are skipped.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{
    lock, IssuerMetrics, Metrics, RouteMetrics, DURATION_BUCKETS_SECS, REJECT_REASONS,
    UPSTREAM_KINDS,
};
use crate::state::Snapshot;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Label value of requests that matched no route and of rejections with no known issuer.
const NONE_LABEL: &str = "";

/// The whole exposition; `upstream_idle` is the pool's (live, parked) idle connections.
pub fn render(
    metrics: &Arc<Metrics>,
    snapshot: Arc<Snapshot>,
    upstream_idle: (usize, usize),
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("tollgate");
    registry.register_collector(Box::new(Scrape {
        metrics: Arc::clone(metrics),
        snapshot,
        upstream_idle,
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    snapshot: Arc<Snapshot>,
    upstream_idle: (usize, usize),
}

fn counter(e: MetricEncoder<'_>, value: u64) -> Result<(), std::fmt::Error> {
    let mut e = e;
    e.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

impl Scrape {
    /// Route metrics, sorted by id, with the "no route" counters last.
    fn routes(&self) -> Vec<(String, Arc<RouteMetrics>)> {
        let mut list: Vec<_> = lock(&self.metrics.routes)
            .iter()
            .map(|(id, m)| (id.clone(), Arc::clone(m)))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    fn issuers(&self) -> Vec<(String, Arc<IssuerMetrics>)> {
        let mut list: Vec<_> = lock(&self.metrics.issuers)
            .iter()
            .map(|(id, m)| (id.clone(), Arc::clone(m)))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    fn requests(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let routes = self.routes();
        let all = routes
            .iter()
            .map(|(id, m)| (id.as_str(), m.as_ref()))
            .chain(std::iter::once((NONE_LABEL, &self.metrics.unmatched)));
        let mut family = enc.encode_descriptor(
            "requests",
            "Requests answered, by route id (empty: no route matched), method and status.",
            None,
            MetricType::Counter,
        )?;
        for (id, m) in all.clone() {
            for (method, status, n) in m.request_counts() {
                let status = status.to_string();
                let labels = [("route", id), ("method", method), ("status", &status)];
                counter(family.encode_family(&labels)?, n)?;
            }
        }
        let mut family = enc.encode_descriptor(
            "request_duration_seconds",
            "Time from the request head to the response head, by route.",
            None,
            MetricType::Histogram,
        )?;
        for (id, m) in all.clone() {
            let count = m.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let buckets: Vec<(f64, u64)> = DURATION_BUCKETS_SECS
                .iter()
                .zip(&m.buckets)
                .map(|(le, n)| (*le, n.load(Ordering::Relaxed)))
                .collect();
            let sum = m.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            family
                .encode_family(&[("route", id)])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let mut family = enc.encode_descriptor(
            "upstream_errors",
            "Upstream exchanges that failed, by route and kind (connect, timeout, protocol).",
            None,
            MetricType::Counter,
        )?;
        for (id, m) in routes.iter() {
            for (kind, cell) in UPSTREAM_KINDS.iter().zip(&m.upstream_errors) {
                let labels = [("route", id.as_str()), ("kind", kind)];
                counter(family.encode_family(&labels)?, cell.load(Ordering::Relaxed))?;
            }
        }
        Ok(())
    }

    fn auth(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let issuers = self.issuers();
        let all = issuers
            .iter()
            .map(|(id, m)| (id.as_str(), m.as_ref()))
            .chain(std::iter::once((NONE_LABEL, &self.metrics.no_issuer)));
        let mut family = enc.encode_descriptor(
            "auth_rejections",
            "Requests refused by authentication or authorization, by issuer id (empty: none \
             identified) and reason.",
            None,
            MetricType::Counter,
        )?;
        for (id, m) in all {
            for (reason, cell) in REJECT_REASONS.iter().zip(&m.rejections) {
                let n = cell.load(Ordering::Relaxed);
                if n > 0 {
                    counter(
                        family.encode_family(&[("issuer", id), ("reason", reason)])?,
                        n,
                    )?;
                }
            }
        }
        let mut list: Vec<_> = self.snapshot.issuers.iter().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        let mut family = enc.encode_descriptor(
            "jwks_fetches",
            "JWK Set fetches of remote issuers, by issuer id and result.",
            None,
            MetricType::Counter,
        )?;
        for issuer in &list {
            if let Some(remote) = issuer.keys.remote() {
                let failures = remote.failure_count();
                let ok = remote.fetch_count().saturating_sub(failures);
                for (result, n) in [("success", ok), ("failure", failures)] {
                    let labels = [("issuer", issuer.id.as_str()), ("result", result)];
                    counter(family.encode_family(&labels)?, n)?;
                }
            }
        }
        let mut family = enc.encode_descriptor(
            "jwks_keys",
            "Verification keys in use, by issuer id.",
            None,
            MetricType::Gauge,
        )?;
        for issuer in &list {
            let keys = issuer.keys.current().0.keys.len();
            family
                .encode_family(&[("issuer", issuer.id.as_str())])?
                .encode_gauge(&keys)?;
        }
        let entries = self.snapshot.issuers.cache().map_or(0, |c| c.len());
        enc.encode_descriptor(
            "token_cache_entries",
            "Verified tokens held by the token cache.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&entries)
    }

    fn process(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut family = enc.encode_descriptor(
            "config_reloads",
            "Config reloads, by result (success, failure: the running config stayed).",
            None,
            MetricType::Counter,
        )?;
        for (result, cell) in [
            ("success", &self.metrics.reloads_ok),
            ("failure", &self.metrics.reloads_failed),
        ] {
            counter(
                family.encode_family(&[("result", result)])?,
                cell.load(Ordering::Relaxed),
            )?;
        }
        enc.encode_descriptor(
            "config_info",
            "The active config, by the SHA-256 of its source (always 1).",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[("sha256", self.snapshot.sha256.as_str())])?
        .encode_gauge(&1u32)?;
        let loaded = self
            .snapshot
            .loaded_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        enc.encode_descriptor(
            "config_loaded_timestamp_seconds",
            "When the active config was loaded (Unix time).",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&loaded)?;
        enc.encode_descriptor(
            "open_connections",
            "Open client connections on the data-plane listener.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&self.metrics.open_connections.load(Ordering::Relaxed))?;
        enc.encode_descriptor(
            "parked_connections",
            "Idle HTTP/1 client connections holding no buffers (parked after 0.5 s idle).",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&self.metrics.parked_connections.load(Ordering::Relaxed))?;
        let mut family = enc.encode_descriptor(
            "upstream_idle_connections",
            "Pooled upstream connections waiting for a request, by state (live; parked: only \
             the socket, after 1 s idle).",
            None,
            MetricType::Gauge,
        )?;
        let (live, parked) = self.upstream_idle;
        for (state, n) in [("live", live), ("parked", parked)] {
            family
                .encode_family(&[("state", state)])?
                .encode_gauge(&n)?;
        }
        enc.encode_descriptor(
            "build_info",
            "The running build (always 1).",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
        .encode_gauge(&1u32)
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.requests(&mut encoder)?;
        self.auth(&mut encoder)?;
        self.process(&mut encoder)
    }
}
