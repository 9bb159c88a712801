//! Test harness: a real recording upstream, the real gateway, both on 127.0.0.1:0, real keys
//! and tokens signed with jsonwebtoken. Included by each test file with
//! `#[path = "support/harness.rs"] mod support;`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use tollgate::devkeys::{self, DevKey};

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP/1.1 upstream that records every request. Paths starting with `/slow` answer
/// after two seconds.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let record = Arc::clone(&seen);
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let record = Arc::clone(&record);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let path_and_query = parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            if path_and_query.contains("/slow") {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                            record.lock().unwrap().push(Seen {
                                method: parts.method,
                                path_and_query: path_and_query.clone(),
                                headers: parts.headers,
                                body: body.clone(),
                            });
                            let mut r = Response::new(Full::new(Bytes::from(format!(
                                "{name} {path_and_query}"
                            ))));
                            r.headers_mut().insert("x-upstream", name.parse().unwrap());
                            // Hop-by-hop headers the gateway must not pass back to the client.
                            r.headers_mut()
                                .insert("connection", "x-secret-hop".parse().unwrap());
                            r.headers_mut().insert("x-secret-hop", "1".parse().unwrap());
                            r.headers_mut()
                                .insert("keep-alive", "timeout=5".parse().unwrap());
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            accepted,
        }
    }

    /// TCP connections accepted so far (pool reuse shows as a count that stays put).
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received no request")
    }
}

/// Test keys: issuer A has an RSA, an EC and an Ed25519 key; issuer B has one RSA key.
pub struct Keys {
    pub rsa: DevKey,
    pub ec: DevKey,
    pub ed: DevKey,
    pub b_rsa: DevKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: devkeys::generate(Algorithm::RS256, "a-rsa").unwrap(),
        ec: devkeys::generate(Algorithm::ES256, "a-ec").unwrap(),
        ed: devkeys::generate(Algorithm::EdDSA, "a-ed").unwrap(),
        b_rsa: devkeys::generate(Algorithm::RS256, "b-rsa").unwrap(),
    })
}

pub const ISS_A: &str = "https://a.example.test";
pub const ISS_B: &str = "https://b.example.test";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a valid token for issuer A with scope orders:read.
pub fn claims() -> Value {
    json!({
        "iss": ISS_A, "aud": "orders-api", "sub": "user-1", "client_id": "c1",
        "iat": now(), "exp": now() + 600, "scope": "orders:read",
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs any header and claims with `key` (the header's `alg` says which algorithm the token
/// claims; `key.alg` is what actually signs).
pub fn sign_raw(key: &DevKey, header: &Value, claims: &Value) -> String {
    sign_text(key, &header.to_string(), &claims.to_string())
}

/// Signs header and claims given as JSON text, for what a `Value` cannot hold (a name twice,
/// escapes as sent).
pub fn sign_text(key: &DevKey, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding, key.alg).unwrap();
    format!("{input}.{sig}")
}

/// The standard header for `key`: alg, kid, typ at+jwt.
pub fn header(key: &DevKey) -> Value {
    json!({"alg": format!("{:?}", key.alg), "kid": key.kid, "typ": "at+jwt"})
}

/// A token with `key`'s standard header and `claims`.
pub fn token_with(key: &DevKey, claims: &Value) -> String {
    sign_raw(key, &header(key), claims)
}

/// A valid issuer-A RS256 token with the default claims, edited by `edit`.
pub fn token(edit: impl FnOnce(&mut Value)) -> String {
    let mut c = claims();
    edit(&mut c);
    token_with(&keys().rsa, &c)
}

/// Loopback listeners (ephemeral ports) and issuer `a` (its keys from `write_config`).
pub const GATEWAY_WITH_ISSUER_A: &str = "listen: 127.0.0.1:0
admin: 127.0.0.1:0
issuers:
  - id: a
    issuer: https://a.example.test
    audiences: [orders-api]
    jwks_file: a.jwks.json";

/// The route set most tests use; `{up}` is the recording upstream, `{down}` a closed port.
pub const ROUTES: &str = r#"
listen: 127.0.0.1:0
admin: 127.0.0.1:0
limits:
  max_request_body_bytes: 1024
issuers:
  - id: a
    issuer: https://a.example.test
    audiences: [orders-api, other-api]
    jwks_file: a.jwks.json
    algorithms: [RS256, ES256, EdDSA]
    leeway_secs: 5
  - id: b
    issuer: https://b.example.test
    audiences: [orders-api]
    jwks_file: b.jwks.json
    require_typ: application/at+jwt
routes:
  - id: orders-read
    path: /api/orders
    methods: [GET, HEAD]
    upstream: {up}
    strip_prefix: /api
    issuers: [a]
    scopes: [orders:read]
    claims_to_headers: {sub: X-User-Id, scope: X-User-Scopes, realm_access.roles: X-User-Roles, n: X-Number}
  - id: orders-write
    path: /api/orders
    methods: [POST, PUT, DELETE]
    upstream: {up}
    scopes: [orders:write]
    claims_to_headers: {sub: X-User-Id}
  - id: api
    path: /api
    upstream: {up}
    auth: none
  - id: admin
    path: /admin
    upstream: {up}
    scopes: [superadmin]
  - id: reports
    path: /reports
    upstream: {up}/base
    strip_prefix: /reports
    scopes: {any_of: [reports:read, auditor]}
  - id: feed
    path: /feed
    upstream: {up}
    auth: optional
    claims_to_headers: {sub: X-User-Id}
  - id: public
    path: /public
    upstream: {up}
    auth: none
  - id: token-through
    path: /through
    upstream: {up}
    forward_token: true
  - id: b-only
    path: /b
    upstream: {up}
    issuers: [b]
  - id: down
    path: /down
    upstream: {down}
    auth: none
  - id: slow
    path: /slow
    upstream: {up}
    auth: none
    timeout_ms: 300
"#;

/// A running gateway with its upstream and the directory holding its config.
pub struct Env {
    pub gateway: tollgate::Running,
    pub upstream: Upstream,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }
}

/// A loopback port with nothing listening on it.
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Writes `yaml` (with `{up}` and `{down}` filled in) and the key files to a temp dir.
pub async fn write_config(
    yaml: &str,
    upstream: &Upstream,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    std::fs::write(
        dir.path().join("a.jwks.json"),
        devkeys::jwks_json([&k.rsa, &k.ec, &k.ed]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.jwks.json"),
        devkeys::jwks_json([&k.b_rsa]),
    )
    .unwrap();
    let yaml = yaml.replace("{up}", &upstream.url()).replace(
        "{down}",
        &format!("http://127.0.0.1:{}", closed_port().await),
    );
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, yaml).unwrap();
    (dir, file)
}

/// Starts an upstream and a gateway serving `yaml`.
pub async fn start_with(yaml: &str) -> Env {
    let upstream = Upstream::start("orders").await;
    let (dir, file) = write_config(yaml, &upstream).await;
    let snapshot = tollgate::config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let gateway = tollgate::start(snapshot).await.unwrap();
    Env {
        gateway,
        upstream,
        dir,
    }
}

pub async fn start() -> Env {
    start_with(ROUTES).await
}

/// Runs the real binary to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real binary running `tollgate ARGS` (RUST_LOG=info), with the data-plane and admin
/// addresses from its "tollgate is serving" line (text or JSON logs) and every stderr line on
/// a channel. Killed and reaped on drop, panics included.
pub struct Served {
    pub child: std::process::Child,
    pub addr: String,
    pub admin: String,
    /// The "tollgate is serving" log line.
    pub started: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    pub fn start(args: &[&str]) -> Served {
        use std::io::BufRead;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let mut served = Served {
            child,
            addr: String::new(),
            admin: String::new(),
            started: String::new(),
            lines,
        };
        // A reader thread keeps draining stderr, so the child never blocks on a full pipe.
        let stderr = served.child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let line = served.next_line(|l| l.contains("tollgate is serving"));
        served.addr = log_field(&line, "listen").expect("listen address");
        served.admin = log_field(&line, "admin").unwrap_or_default();
        served.started = line;
        served
    }

    /// The next stderr line for which `pick` holds; fails after 20 s or when the child exits.
    pub fn next_line(&self, pick: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).expect("no such log line");
            if pick(&line) {
                return line;
            }
        }
    }
}

/// A field of a log line: `name=value` (text) or `"name":"value"` (JSON), with the
/// `Some(...)` of a logged Option removed.
fn log_field(line: &str, name: &str) -> Option<String> {
    let raw = if line.starts_with('{') {
        let v: Value = serde_json::from_str(line).ok()?;
        v[name].as_str()?.to_string()
    } else {
        let rest = &line[line.find(&format!("{name}="))? + name.len() + 1..];
        rest.split(' ').next()?.to_string()
    };
    Some(
        raw.trim_start_matches("Some(")
            .trim_end_matches(')')
            .to_string(),
    )
}

/// A response, fully read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Sends a request over HTTP/1.1 (or HTTP/2 with prior knowledge when `h2`).
pub async fn send_with(req: Request<Full<Bytes>>, h2: bool) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn send(req: Request<Full<Bytes>>) -> Answer {
    send_with(req, false).await
}

/// GET `url` with optional bearer token.
pub async fn get(url: &str, token: Option<&str>) -> Answer {
    let mut b = Request::get(url);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}
