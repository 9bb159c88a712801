//! Remote key sets against a real local identity provider: OIDC discovery, rotation with
//! single-flight refetch and cooldown, the IdP failing in every way, key removal (cached
//! tokens included), malformed sets, reloads keeping keys, and the verified-token cache.

#[path = "support/harness.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tollgate::devkeys::{self, DevKey};

/// How the IdP answers JWKS requests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    Status500,
    Html,
    Oversized,
    NoUsableKeys,
    Hang,
}

struct IdpState {
    keys: Mutex<Vec<Value>>,
    mode: Mutex<Mode>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    issuer: Mutex<String>,
}

/// A local OpenID provider: discovery document and JWK Set, switchable failure modes, and
/// a real "connection refused" (its listener closes) via `down()`.
struct Idp {
    addr: SocketAddr,
    state: Arc<IdpState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Idp {
    async fn start(keys: &[&DevKey]) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(IdpState {
            keys: Mutex::new(keys.iter().map(|k| k.public_jwk.clone()).collect()),
            mode: Mutex::new(Mode::Ok),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            issuer: Mutex::new(format!("http://{addr}")),
        });
        let idp = Idp {
            addr,
            state,
            task: Mutex::new(None),
        };
        idp.serve(listener);
        idp
    }

    fn serve(&self, listener: TcpListener) {
        let state = Arc::clone(&self.state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, req.uri().path()).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_keys(&self, keys: &[&DevKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.public_jwk.clone()).collect();
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Closes the listener: connections are refused.
    fn down(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    async fn up(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }
}

async fn answer(state: &IdpState, path: &str) -> Response<Full<Bytes>> {
    let json = |v: Value| {
        let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    };
    if path == "/.well-known/openid-configuration" {
        state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
        let issuer = state.issuer.lock().unwrap().clone();
        return json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}));
    }
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let mode = *state.mode.lock().unwrap();
    let mut r = match mode {
        Mode::Ok => json(json!({"keys": *state.keys.lock().unwrap()})),
        Mode::Status500 => {
            let mut r = Response::new(Full::new(Bytes::from("oops")));
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
        Mode::Html => Response::new(Full::new(Bytes::from("<html>maintenance</html>"))),
        Mode::Oversized => json(json!({"keys": [], "pad": "x".repeat(2 * 1024 * 1024)})),
        Mode::NoUsableKeys => json(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]})),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            json(json!({"keys": []}))
        }
    };
    // A long max-age: only misses (and the test's short jwks_refresh_secs) cause fetches.
    r.headers_mut()
        .insert("cache-control", "public, max-age=3600".parse().unwrap());
    r
}

fn key(kid: &str) -> DevKey {
    devkeys::generate(Algorithm::ES256, kid).unwrap()
}

fn gateway_config(idp: &Idp, issuer_extra: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin: 127.0.0.1:0
issuers:
  - id: idp
    issuer: {iss}
    audiences: [orders-api]
    discovery: true
{issuer_extra}
routes:
  - id: orders
    path: /api/orders
    upstream: {{up}}
    scopes: [orders:read]
"#,
        iss = idp.url()
    )
}

/// A valid token from `idp` signed with `key`; `sub` makes each token distinct.
fn idp_token(idp: &Idp, key: &DevKey, sub: &str) -> String {
    let mut c = claims();
    c["iss"] = json!(idp.url());
    c["sub"] = json!(sub);
    token_with(key, &c)
}

struct Gw {
    running: tollgate::Running,
    _upstream: Upstream,
    dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

impl Gw {
    async fn start(yaml: &str) -> Gw {
        let upstream = Upstream::start("orders").await;
        let (dir, file) = write_config(yaml, &upstream).await;
        let running = tollgate::start_from_file(&file, false).await.unwrap();
        Gw {
            running,
            _upstream: upstream,
            dir,
            file,
        }
    }

    async fn status(&self, token: &str) -> u16 {
        get(
            &format!("http://{}/api/orders/1", self.running.addr),
            Some(token),
        )
        .await
        .status
        .as_u16()
    }

    async fn admin(&self, path: &str) -> Answer {
        get(
            &format!("http://{}{path}", self.running.admin_addr.unwrap()),
            None,
        )
        .await
    }

    /// `POST /-/reload`, which must succeed.
    async fn reload(&self) {
        let url = format!("http://{}/-/reload", self.running.admin_addr.unwrap());
        let a = send(Request::post(url).body(Full::new(Bytes::new())).unwrap()).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }

    async fn wait_ready(&self) {
        eventually(Duration::from_secs(5), || async {
            self.admin("/-/ready").await.status == 200
        })
        .await;
    }
}

async fn eventually<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_its_tokens_are_accepted() {
    let k1 = key("k1");
    let idp = Idp::start(&[&k1]).await;
    let gw = Gw::start(&gateway_config(&idp, "")).await;
    gw.wait_ready().await;
    assert_eq!(gw.status(&idp_token(&idp, &k1, "a")).await, 200);
    assert_eq!(idp.state.discovery_fetches.load(Ordering::SeqCst), 1);
    assert_eq!(idp.jwks_fetches(), 1);
    // A discovery document naming another issuer is refused.
    *idp.state.issuer.lock().unwrap() = "https://evil.example.test".into();
    let other = Gw::start(&gateway_config(&idp, "")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        other.admin("/-/ready").await.status,
        503,
        "no keys: not ready"
    );
    assert_eq!(
        idp.jwks_fetches(),
        1,
        "the JWKS of a mismatching discovery document is not fetched"
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_on_first_use() {
    let (k1, k2) = (key("k1"), key("k2"));
    let idp = Idp::start(&[&k1]).await;
    let gw = Gw::start(&gateway_config(&idp, "")).await;
    gw.wait_ready().await;
    assert_eq!(idp.jwks_fetches(), 1);
    // Rotation seconds after start: the start-up fetch did not start the cooldown.
    idp.set_keys(&[&k1, &k2]);
    assert_eq!(gw.status(&idp_token(&idp, &k2, "a")).await, 200);
    assert_eq!(idp.jwks_fetches(), 2, "exactly one fetch for the new kid");
    assert_eq!(gw.status(&idp_token(&idp, &k2, "b")).await, 200);
    assert_eq!(gw.status(&idp_token(&idp, &k1, "c")).await, 200);
    assert_eq!(idp.jwks_fetches(), 2);
    let metrics = gw.admin("/-/metrics").await.body;
    for line in [
        r#"tollgate_jwks_fetches_total{issuer="idp",result="success"} 2"#,
        r#"tollgate_jwks_fetches_total{issuer="idp",result="failure"} 0"#,
        r#"tollgate_jwks_keys{issuer="idp"} 2"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn fifty_concurrent_requests_with_a_new_kid_cause_one_fetch() {
    let (k1, k2) = (key("k1"), key("k2"));
    let idp = Arc::new(Idp::start(&[&k1]).await);
    let gw = Arc::new(Gw::start(&gateway_config(&idp, "")).await);
    gw.wait_ready().await;
    idp.set_keys(&[&k1, &k2]);
    let k2 = Arc::new(k2);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (gw, idp, k2) = (Arc::clone(&gw), Arc::clone(&idp), Arc::clone(&k2));
        tasks.push(tokio::spawn(async move {
            gw.status(&idp_token(&idp, &k2, &format!("user-{i}"))).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(idp.jwks_fetches(), 2, "50 concurrent misses: one fetch");
}

#[tokio::test]
async fn unknown_kids_fetch_at_most_once_per_cooldown() {
    let k1 = key("k1");
    let bogus = key("bogus");
    let idp = Idp::start(&[&k1]).await;
    let gw = Gw::start(&gateway_config(&idp, "    jwks_cooldown_secs: 2")).await;
    gw.wait_ready().await;
    let started = Instant::now();
    for i in 0..100 {
        assert_eq!(
            gw.status(&idp_token(&idp, &bogus, &format!("u{i}"))).await,
            401
        );
    }
    let elapsed = started.elapsed();
    let allowed = 1 + (elapsed.as_secs_f64() / 2.0).floor() as usize;
    let fetched = idp.jwks_fetches() - 1;
    assert!(
        fetched >= 1 && fetched <= allowed,
        "{fetched} fetches in {elapsed:?} (at most {allowed})"
    );
    // Known kids never wait for anything.
    assert_eq!(gw.status(&idp_token(&idp, &k1, "ok")).await, 200);
}

#[tokio::test]
async fn known_keys_keep_working_while_the_idp_fails_and_refresh_resumes() {
    let (k1, k2) = (key("k1"), key("k2"));
    let idp = Idp::start(&[&k1]).await;
    let gw = Gw::start(&gateway_config(&idp, "    jwks_refresh_secs: 1")).await;
    gw.wait_ready().await;
    for (what, mode) in [
        ("500", Mode::Status500),
        ("HTML", Mode::Html),
        ("oversized", Mode::Oversized),
        ("no usable keys", Mode::NoUsableKeys),
        ("hang", Mode::Hang),
    ] {
        idp.set_mode(mode);
        let before = idp.jwks_fetches();
        eventually(Duration::from_secs(4), || async {
            idp.jwks_fetches() > before
        })
        .await;
        assert_eq!(
            gw.status(&idp_token(&idp, &k1, what)).await,
            200,
            "{what}: the last good set must keep serving"
        );
    }
    let metrics = gw.admin("/-/metrics").await.body;
    let failures = r#"tollgate_jwks_fetches_total{issuer="idp",result="failure"} "#;
    let failed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(failures))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no failure counter in\n{metrics}"));
    // The four modes that answered have failed; the hanging fetch may still be waiting for
    // its timeout.
    assert!(
        failed >= 4,
        "four failed answers, {failed} failures counted"
    );
    idp.set_mode(Mode::Ok);
    idp.down();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        gw.status(&idp_token(&idp, &k1, "refused")).await,
        200,
        "connection refused"
    );
    // Back, with a rotated set: the scheduled refresh picks it up (no request needed).
    idp.set_keys(&[&k2]);
    idp.up().await;
    // k1 is known, so requests with it never miss: only the scheduled refresh can replace
    // the set, and once it has, k1 no longer validates.
    let k1_token = idp_token(&idp, &k1, "probe");
    eventually(Duration::from_secs(12), || async {
        gw.status(&k1_token).await == 401
    })
    .await;
    let k2_token = idp_token(&idp, &k2, "after");
    eventually(Duration::from_secs(12), || async {
        gw.status(&k2_token).await == 200
    })
    .await;
}

#[tokio::test]
async fn a_stale_set_is_dropped_after_max_stale() {
    let k1 = key("k1");
    let idp = Idp::start(&[&k1]).await;
    let gw = Gw::start(&gateway_config(
        &idp,
        "    jwks_refresh_secs: 1\n    jwks_max_stale_secs: 2",
    ))
    .await;
    gw.wait_ready().await;
    let t = idp_token(&idp, &k1, "stale");
    assert_eq!(gw.status(&t).await, 200);
    idp.set_mode(Mode::Status500);
    // Within max_stale the last good set serves; past it, its keys go (and the cache with).
    assert_eq!(gw.status(&t).await, 200);
    eventually(Duration::from_secs(6), || async {
        gw.status(&t).await == 401
    })
    .await;
    // Readiness is about start-up: an IdP outage must not take every replica out of its
    // load balancer (public routes and other issuers still work). It shows as failures.
    assert_eq!(gw.admin("/-/ready").await.status, 200);
    let cfg = gw.admin("/-/config").await.json();
    assert_eq!(cfg["issuers"][0]["keys"], 0);
    assert!(
        cfg["issuers"][0]["jwks_fetch_failures"].as_u64().unwrap() >= 1,
        "{cfg}"
    );
    idp.set_mode(Mode::Ok);
    eventually(Duration::from_secs(5), || async {
        gw.status(&t).await == 200
    })
    .await;
}

#[tokio::test]
async fn a_removed_key_stops_validating_even_for_cached_tokens() {
    let (k1, k2) = (key("k1"), key("k2"));
    let idp = Idp::start(&[&k1, &k2]).await;
    let gw = Gw::start(&gateway_config(&idp, "    jwks_refresh_secs: 1")).await;
    gw.wait_ready().await;
    let cached = idp_token(&idp, &k1, "cached");
    assert_eq!(gw.status(&cached).await, 200);
    assert_eq!(gw.admin("/-/config").await.json()["token_cache_entries"], 1);
    idp.set_keys(&[&k2]);
    eventually(Duration::from_secs(5), || async {
        gw.status(&cached).await == 401
    })
    .await;
    let a = get(
        &format!("http://{}/api/orders/1", gw.running.addr),
        Some(&cached),
    )
    .await;
    assert_eq!(a.json()["error_description"], "token key id is unknown");
    assert_eq!(
        gw.admin("/-/config").await.json()["token_cache_entries"],
        0,
        "evicted"
    );
}

#[tokio::test]
async fn failures_are_never_cached_and_the_cache_can_be_turned_off() {
    let k1 = key("k1");
    let idp = Idp::start(&[&k1]).await;
    let gw = Gw::start(&gateway_config(&idp, "")).await;
    gw.wait_ready().await;
    let mut expired = claims();
    expired["iss"] = json!(idp.url());
    expired["exp"] = json!(now() - 100);
    assert_eq!(gw.status(&token_with(&k1, &expired)).await, 401);
    assert_eq!(gw.admin("/-/config").await.json()["token_cache_entries"], 0);
    let t = idp_token(&idp, &k1, "x");
    assert_eq!(gw.status(&t).await, 200);
    assert_eq!(gw.status(&t).await, 200);
    assert_eq!(gw.admin("/-/config").await.json()["token_cache_entries"], 1);

    let off = Gw::start(&(gateway_config(&idp, "") + "token_cache: {enabled: false}\n")).await;
    off.wait_ready().await;
    assert_eq!(off.status(&t).await, 200);
    assert_eq!(
        off.admin("/-/config").await.json()["token_cache_entries"],
        Value::Null
    );
}

#[tokio::test]
async fn readiness_waits_for_keys_unless_configured_otherwise() {
    let k1 = key("k1");
    let idp = Idp::start(&[&k1]).await;
    idp.set_mode(Mode::Status500);
    let gw = Gw::start(&gateway_config(&idp, "    jwks_refresh_secs: 1")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.admin("/-/ready").await.status, 503);
    assert_eq!(gw.status(&idp_token(&idp, &k1, "early")).await, 401);
    idp.set_mode(Mode::Ok);
    gw.wait_ready().await;
    assert_eq!(gw.status(&idp_token(&idp, &k1, "late")).await, 200);

    let relaxed = Gw::start(
        &gateway_config(
            &idp,
            "    ready_without_keys: true\n    jwks_url: http://127.0.0.1:9/none",
        )
        .replace("    discovery: true\n", ""),
    )
    .await;
    assert_eq!(relaxed.admin("/-/ready").await.status, 200);
}

#[tokio::test]
async fn a_reload_keeps_the_keys_of_unchanged_issuers() {
    let k1 = key("k1");
    let idp = Idp::start(&[&k1]).await;
    let yaml = gateway_config(&idp, "");
    let gw = Gw::start(&yaml).await;
    gw.wait_ready().await;
    assert_eq!(idp.jwks_fetches(), 1);
    // Same issuer definition, other routes: no new fetch, keys there at once.
    let (_dir2, changed) = (
        0,
        yaml.replace(
            "scopes: [orders:read]",
            "scopes: [orders:read]\n    methods: [GET]",
        ),
    );
    let up = Upstream::start("orders").await;
    std::fs::write(&gw.file, changed.replace("{up}", &up.url())).unwrap();
    gw.reload().await;
    assert_eq!(gw.status(&idp_token(&idp, &k1, "kept")).await, 200);
    assert_eq!(
        idp.jwks_fetches(),
        1,
        "the unchanged issuer kept its fetched keys"
    );
    // A changed issuer definition gets a store of its own (and fetches).
    std::fs::write(
        &gw.file,
        changed.replace("{up}", &up.url()).replace(
            "    discovery: true",
            "    discovery: true\n    jwks_cooldown_secs: 5",
        ),
    )
    .unwrap();
    gw.reload().await;
    eventually(Duration::from_secs(3), || async { idp.jwks_fetches() == 2 }).await;
    assert_eq!(gw.status(&idp_token(&idp, &k1, "new-store")).await, 200);
    // Changed again while the IdP is down: the new store starts from the keys it had.
    idp.set_mode(Mode::Status500);
    let again = changed.replace("{up}", &up.url()).replace(
        "    discovery: true",
        "    discovery: true\n    jwks_cooldown_secs: 7",
    );
    std::fs::write(&gw.file, again).unwrap();
    gw.reload().await;
    assert_eq!(gw.status(&idp_token(&idp, &k1, "down-but-kept")).await, 200);
    assert_eq!(gw.admin("/-/ready").await.status, 200);
    drop(gw.dir);
}
