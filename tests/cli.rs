//! The binary itself: `check`, `serve` start-up errors, `keygen` + `token`, and `demo` whose
//! printed curl lines are run as printed.

#[path = "support/harness.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn check_accepts_the_shipped_routes_yaml() {
    let file = Path::new(REPO).join("routes.yaml");
    let (code, out, err) = run(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": ok: 5 routes, 1 issuers, 1 keys"), "{out}");
}

const BROKEN: &str = "\
listen: 127.0.0.1:0
issuers:
  - id: a
    issuer: https://a.example.test
    audiences: [orders-api]
    jwks_file: a.jwks.json
routes:
  - id: read
    path: /api/orders
    methods: [GET]
    upstream: http://127.0.0.1:9001
    scopez: [orders:read]
  - id: read-again
    path: /api/orders
    methods: [GET, HEAD]
    upstream: htp://127.0.0.1:9001
";

#[tokio::test]
async fn check_reports_every_error_with_its_position() {
    let upstream = Upstream::start("unused").await;
    let (dir, file) = write_config(BROKEN, &upstream).await;
    let (code, out, err) = run(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let f = file.display();
    let expected = [
        format!("{f}:12:5: routes[0].scopez: unknown key `scopez`"),
        format!("{f}:14:11: routes[1].path: duplicate route: `read-again` and `read` both take GET on path `/api/orders`"),
        format!("{f}:16:15: routes[1].upstream: `htp://127.0.0.1:9001` is not a valid upstream URL: the scheme must be http or https"),
        format!("{f}: 3 errors"),
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines, expected, "{err}");
    drop(dir);
}

#[tokio::test]
async fn check_reports_yaml_syntax_type_and_duplicate_key_errors() {
    let upstream = Upstream::start("unused").await;
    let cases = [
        ("routes: [\n", ":1:9: routes: unclosed bracket"),
        (
            "routes:\n  - id: a\n    forward_token: maybe\n",
            ":3:20: routes[0].forward_token: invalid boolean",
        ),
        (
            "routes:\n  - id: a\n    scopes: [x]\n    scopes: [y]\n",
            ":4:5: duplicate key: scopes",
        ),
        (
            "issuers:\n  - id: a\n    issuer: x\n    audiences: []\n    jwks_file: missing.json\n",
            ":4:16: issuers[0].audiences: needs at least one non-empty audience",
        ),
    ];
    for (yaml, want) in cases {
        let (dir, file) = write_config(yaml, &upstream).await;
        let (code, _, err) = run(&["check", file.to_str().unwrap()]);
        assert_eq!(code, 1, "{yaml}");
        assert!(
            err.contains(&format!("{}{want}", file.display())),
            "want {want}, got:\n{err}"
        );
        drop(dir);
    }
}

#[tokio::test]
async fn serve_refuses_an_invalid_file_with_its_position() {
    let upstream = Upstream::start("unused").await;
    let (_dir, file) = write_config(BROKEN, &upstream).await;
    let (code, _, err) = run(&["serve", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "{}:12:5: routes[0].scopez: unknown key `scopez`",
            file.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn keygen_and_token_produce_tokens_the_gateway_accepts() {
    let upstream = Upstream::start("orders").await;
    let routes = ROUTES.replace("jwks_file: b.jwks.json", "jwks_file: keys/b-cli.jwks.json");
    let (dir, file) = write_config(&routes, &upstream).await;
    let keys_dir = dir.path().join("keys");
    let keys_dir = keys_dir.to_str().unwrap();
    let (code, out, err) = run(&[
        "keygen", "--alg", "ES256", "--kid", "b-cli", "--out", keys_dir,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(&[
        "keygen", "--alg", "ES256", "--kid", "b-cli", "--out", keys_dir,
    ]);
    assert_eq!(code, 1, "keygen must not overwrite without --force");
    assert!(err.contains("exists"), "{err}");
    let gw = tollgate::start(tollgate::config::load(&file).unwrap())
        .await
        .unwrap();

    let pem = dir.path().join("keys/b-cli.pem");
    let (code, token, err) = run(&[
        "token",
        "--key",
        pem.to_str().unwrap(),
        "--kid",
        "b-cli",
        "--iss",
        ISS_B,
        "--aud",
        "orders-api",
        "--sub",
        "cli-user",
        "--scope",
        "a b",
        "--ttl",
        "5m",
        "--claim",
        "tenant=acme",
    ]);
    assert_eq!(code, 0, "{err}");
    let a = get(&format!("http://{}/b/x", gw.addr), Some(token.trim())).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let claims: serde_json::Value = {
        use base64::Engine;
        let payload = token.trim().split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(claims["sub"], "cli-user");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
}

/// Runs a printed curl line through the shell with `extra` curl options appended.
fn curl(line: &str, extra: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} {extra}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn demo_prints_curl_lines_that_work() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .current_dir(REPO)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut curls = Vec::new();
    while curls.len() < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("curl ") => curls.push(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let result = std::panic::catch_unwind(|| {
        assert_eq!(curls.len(), 5, "the demo printed {curls:?}");
        let status = |line: &str| curl(line, "-s -o /dev/null -w '%{http_code}'");
        assert_eq!(status(&curls[0]), "200");
        assert_eq!(status(&curls[1]), "401");
        assert_eq!(status(&curls[2]), "403");
        assert_eq!(status(&curls[4]), "200");
        // The echo shows what the upstream received: identity, and no Authorization.
        let echo = curl(&curls[0], "-s");
        assert!(echo.contains("\"x-user-id\": \"demo-user\""), "{echo}");
        assert!(!echo.contains("authorization"), "{echo}");
        // The OAuth2 token endpoint issues a token the gateway accepts for writes.
        let answer: serde_json::Value = serde_json::from_str(&curl(&curls[3], "")).unwrap();
        assert_eq!(answer["token_type"], "Bearer");
        let token = answer["access_token"].as_str().unwrap();
        let write = curls[2].replace(
            curls[2].split('\'').nth(1).unwrap(),
            &format!("Authorization: Bearer {token}"),
        );
        assert_eq!(status(&write), "200");
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
