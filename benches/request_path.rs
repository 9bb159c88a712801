//! Micro-benchmarks of the per-request work (issue 5): path sanitation, route lookup, token
//! verification with and without the verified-token cache, and the header rewrite.
//! `cargo bench --bench request_path`; numbers are for comparing changes on one machine.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::Algorithm;
use tollgate::devkeys::{self, TokenSpec};
use tollgate::forward::ClientInfo;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A compiled config with one issuer (`alg`), the shipped route shapes, and the cache on or off.
fn snapshot(alg: Algorithm, cache: bool) -> (tollgate::state::Snapshot, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = devkeys::generate(alg, "k").unwrap();
    std::fs::write(dir.path().join("k.jwks.json"), devkeys::jwks_json([&key])).unwrap();
    let yaml = format!(
        "token_cache: {{enabled: {cache}}}\nissuers:\n  - id: i\n    issuer: https://idp.bench.test\n    audiences: [orders-api]\n    jwks_file: k.jwks.json\nroutes:\n  - id: read\n    path: /api/orders\n    methods: [GET, HEAD]\n    upstream: http://127.0.0.1:9\n    strip_prefix: /api\n    scopes: [orders:read]\n    claims_to_headers: {{sub: X-User-Id, scope: X-User-Scopes}}\n  - id: write\n    path: /api/orders\n    methods: [POST]\n    upstream: http://127.0.0.1:9\n    scopes: [orders:write]\n  - id: catalog\n    path: /catalog\n    upstream: http://127.0.0.1:9\n    auth: none\n"
    );
    let snapshot = tollgate::config::load_str(&yaml, Path::new("bench.yaml"), dir.path()).unwrap();
    let token = devkeys::mint(
        &key,
        &TokenSpec {
            iss: "https://idp.bench.test".into(),
            aud: vec!["orders-api".into()],
            sub: "bench-user".into(),
            scope: Some("orders:read".into()),
            client_id: "bench".into(),
            ttl: Duration::from_secs(3600),
            extra: Default::default(),
        },
    )
    .unwrap();
    (snapshot, token)
}

fn request_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (snap, _) = snapshot(Algorithm::ES256, true);

    c.bench_function("sanitize /api/orders/7", |b| {
        b.iter(|| tollgate::sanitize::normalize_path(black_box("/api/orders/7")).unwrap())
    });
    c.bench_function("route lookup /api/orders/7 GET", |b| {
        b.iter(|| {
            matches!(
                snap.routes.find(black_box("/api/orders/7"), &Method::GET),
                tollgate::routes::Match::Found(_)
            )
        })
    });

    for (name, alg) in [("RS256", Algorithm::RS256), ("ES256", Algorithm::ES256)] {
        for cache in [false, true] {
            let (snap, token) = snapshot(alg, cache);
            let label = format!(
                "verify {name} cache {}",
                if cache { "on (hit)" } else { "off" }
            );
            c.bench_function(&label, |b| {
                b.iter(|| {
                    rt.block_on(tollgate::auth::authenticate(
                        black_box(&token),
                        &snap.issuers,
                        None,
                        now(),
                    ))
                    .unwrap()
                })
            });
        }
    }

    let (snap, token) = snapshot(Algorithm::ES256, true);
    let verified = rt
        .block_on(tollgate::auth::authenticate(
            &token,
            &snap.issuers,
            None,
            now(),
        ))
        .unwrap();
    let route = match snap.routes.find("/api/orders/7", &Method::GET) {
        tollgate::routes::Match::Found(r) => r.clone(),
        _ => unreachable!(),
    };
    let mut incoming = HeaderMap::new();
    for (k, v) in [
        ("host", "gw.example"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
        ("x-user-id", "spoofed"),
    ] {
        incoming.insert(k, HeaderValue::from_static(v));
    }
    incoming.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let client_host = incoming[http::header::HOST].clone();
    c.bench_function(
        "header rewrite (hop-by-hop, identity, forwarded, claims)",
        |b| {
            b.iter(|| {
                let mut h = incoming.clone();
                let client = ClientInfo {
                    ip: "127.0.0.1".parse().unwrap(),
                    proto: "http",
                    host: Some(&client_host),
                };
                tollgate::proxy::rewrite_headers(&mut h, &route, Some(&verified), &snap, &client);
                h
            })
        },
    );
}

criterion_group!(benches, request_path);
criterion_main!(benches);
