//! Issue 6, observability: `/-/metrics` after known traffic, X-Request-Id and W3C trace
//! context propagation, and the JSON access log of the real binary.

#[path = "support/harness.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use support::*;

/// GET `/-/metrics` from the admin listener.
async fn scrape(env: &tollgate::Running) -> String {
    let answer = get(
        &format!("http://{}/-/metrics", env.admin_addr.unwrap()),
        None,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    answer.body
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let env = start().await;
    let ok = token(|_| {});
    let expired = token(|c| c["exp"] = (now() - 3600).into());
    let stranger = token(|c| c["iss"] = "https://stranger.test".into());
    let orders = env.url("/api/orders/1");
    for (url, token, status) in [
        (&orders, Some(ok.as_str()), 200),
        (&orders, Some(ok.as_str()), 200),
        (&orders, None, 401),
        (&orders, Some(expired.as_str()), 401),
        (&orders, Some(stranger.as_str()), 401),
        (&env.url("/admin/x"), Some(ok.as_str()), 403),
        (&env.url("/nowhere"), None, 404),
        (&env.url("/down/x"), None, 502),
        (&env.url("/slow/x"), None, 504),
    ] {
        assert_eq!(get(url, token).await.status, status, "{url}");
    }
    // The metrics live on the admin listener only.
    assert_eq!(get(&env.url("/-/metrics"), None).await.status, 404);

    let text = scrape(&env.gateway).await;
    eprintln!("{text}");
    let expect = [
        (
            r#"tollgate_requests_total{route="orders-read",method="GET",status="200"}"#,
            2.0,
        ),
        (
            r#"tollgate_requests_total{route="orders-read",method="GET",status="401"}"#,
            3.0,
        ),
        (
            r#"tollgate_requests_total{route="admin",method="GET",status="403"}"#,
            1.0,
        ),
        (
            r#"tollgate_requests_total{route="",method="GET",status="404"}"#,
            2.0,
        ),
        (
            r#"tollgate_requests_total{route="down",method="GET",status="502"}"#,
            1.0,
        ),
        (
            r#"tollgate_requests_total{route="slow",method="GET",status="504"}"#,
            1.0,
        ),
        (
            r#"tollgate_request_duration_seconds_count{route="orders-read"}"#,
            5.0,
        ),
        (
            r#"tollgate_request_duration_seconds_bucket{route="orders-read",le="+Inf"}"#,
            5.0,
        ),
        (
            r#"tollgate_auth_rejections_total{issuer="",reason="missing"}"#,
            1.0,
        ),
        (
            r#"tollgate_auth_rejections_total{issuer="a",reason="expired"}"#,
            1.0,
        ),
        (
            r#"tollgate_auth_rejections_total{issuer="",reason="wrong_issuer"}"#,
            1.0,
        ),
        (
            r#"tollgate_auth_rejections_total{issuer="a",reason="insufficient_scope"}"#,
            1.0,
        ),
        (
            r#"tollgate_upstream_errors_total{route="down",kind="connect"}"#,
            1.0,
        ),
        (
            r#"tollgate_upstream_errors_total{route="slow",kind="timeout"}"#,
            1.0,
        ),
        (
            r#"tollgate_upstream_errors_total{route="orders-read",kind="connect"}"#,
            0.0,
        ),
        (r#"tollgate_jwks_keys{issuer="a"}"#, 3.0),
        (r#"tollgate_jwks_keys{issuer="b"}"#, 1.0),
        (r#"tollgate_token_cache_entries"#, 1.0),
        (r#"tollgate_config_reloads_total{result="success"}"#, 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    // `/nowhere` and `/-/metrics` on the data plane: both matched no route.
    let slow_sum = sample(
        &text,
        r#"tollgate_request_duration_seconds_sum{route="slow"}"#,
    );
    assert!(slow_sum.unwrap() >= 0.3, "the slow route waited 300 ms");
    let config = get(
        &format!("http://{}/-/config", env.gateway.admin_addr.unwrap()),
        None,
    )
    .await
    .json();
    let info = format!(
        r#"tollgate_config_info{{sha256="{}"}}"#,
        config["sha256"].as_str().unwrap()
    );
    assert_eq!(sample(&text, &info), Some(1.0));
    assert!(text.contains("# TYPE tollgate_request_duration_seconds histogram"));
}

#[tokio::test]
async fn open_connections_follow_the_data_plane_sockets() {
    let env = start().await;
    let gauge = "tollgate_open_connections";
    let base = sample(&scrape(&env.gateway).await, gauge).unwrap();
    let held: Vec<_> = futures_connect(env.gateway.addr, 3).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(&scrape(&env.gateway).await, gauge).unwrap() < base + 3.0 {
        assert!(Instant::now() < deadline, "gauge never rose");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    while sample(&scrape(&env.gateway).await, gauge).unwrap() > base {
        assert!(Instant::now() < deadline, "gauge never fell");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn futures_connect(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    out
}

#[tokio::test]
async fn reload_counters_and_config_info_follow_reloads() {
    let up = Upstream::start("orders").await;
    let (_dir, file) = write_config(ROUTES, &up).await;
    let gw = tollgate::start_from_file(&file, false).await.unwrap();
    let admin = format!("http://{}", gw.admin_addr.unwrap());
    let url = format!("http://{}/public/x", gw.addr);
    assert_eq!(get(&url, None).await.status, 200);
    let reload = || async {
        let req = Request::post(format!("{admin}/-/reload"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(req).await.status.as_u16()
    };
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("timeout_ms: 300", "timeout_mz: 300")).unwrap();
    assert_eq!(reload().await, 422);
    std::fs::write(&file, good.replace("timeout_ms: 300", "timeout_ms: 400")).unwrap();
    assert_eq!(reload().await, 200);
    assert_eq!(get(&url, None).await.status, 200);
    let text = scrape(&gw).await;
    let sha = tollgate::state::sha256_hex(std::fs::read(&file).unwrap().as_slice());
    for (series, value) in [
        (
            r#"tollgate_config_reloads_total{result="success"}"#.to_string(),
            1.0,
        ),
        (
            r#"tollgate_config_reloads_total{result="failure"}"#.to_string(),
            1.0,
        ),
        (format!(r#"tollgate_config_info{{sha256="{sha}"}}"#), 1.0),
        // The route kept its id, so it kept its counters across the reload.
        (
            r#"tollgate_requests_total{route="public",method="GET",status="200"}"#.to_string(),
            2.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_travel_both_ways() {
    let env = start().await;
    let url = env.url("/public/x");
    let with = |id: Option<&str>| {
        let mut b = Request::get(&url);
        if let Some(id) = id {
            b = b.header("x-request-id", id);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let answer = send(with(None)).await;
    let made = answer.header("x-request-id").unwrap().to_string();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    assert_eq!(env.upstream.last().headers["x-request-id"], made.as_str());
    let answer = send(with(Some("abc-123.4"))).await;
    assert_eq!(answer.header("x-request-id"), Some("abc-123.4"));
    assert_eq!(env.upstream.last().headers["x-request-id"], "abc-123.4");
    let answer = send(with(Some("no spaces allowed"))).await;
    let replaced = answer.header("x-request-id").unwrap();
    assert_ne!(replaced, "no spaces allowed");
    assert_eq!(env.upstream.last().headers["x-request-id"], replaced);
    // Answers tollgate writes itself carry it too.
    let denied = get(&env.url("/api/orders/1"), None).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("x-request-id").map(str::len), Some(36));
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn trace_context_passes_through_and_starts_only_when_configured() {
    let traced = |url: &str, parent: Option<&str>| {
        let mut b = Request::get(url).header("tracestate", "vendor=opaque");
        if let Some(p) = parent {
            b = b.header("traceparent", p);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let env = start().await;
    send(traced(&env.url("/public/x"), Some(TRACEPARENT))).await;
    let seen = env.upstream.last().headers;
    assert_eq!(seen["traceparent"], TRACEPARENT);
    assert_eq!(seen["tracestate"], "vendor=opaque");
    send(traced(&env.url("/public/x"), None)).await;
    let seen = env.upstream.last().headers;
    assert!(seen.get("traceparent").is_none(), "not configured to start");
    assert_eq!(seen["tracestate"], "vendor=opaque");

    let env = start_with(&ROUTES.replace(
        "limits:",
        "trace_context: {start_when_absent: true}\nlimits:",
    ))
    .await;
    send(traced(&env.url("/public/x"), Some(TRACEPARENT))).await;
    assert_eq!(env.upstream.last().headers["traceparent"], TRACEPARENT);
    for parent in [None, Some("00-zz-not-valid")] {
        send(traced(&env.url("/public/x"), parent)).await;
        let seen = env.upstream.last().headers;
        let started = seen["traceparent"].to_str().unwrap();
        assert!(
            tollgate::correlation::trace_id(started.as_bytes()).is_some(),
            "{started}"
        );
        assert_ne!(started, TRACEPARENT);
        assert!(started.ends_with("-01"), "sampled by default: {started}");
        assert!(
            seen.get("tracestate").is_none(),
            "belongs to the old parent"
        );
    }
}

/// The real binary with JSON logs, and `extra` flags for `serve`.
fn serve_json(file: &std::path::Path, extra: &[&str]) -> Served {
    let file = file.to_str().unwrap();
    let mut args = vec![
        "--log-format",
        "json",
        "serve",
        "--no-watch",
        "--config",
        file,
    ];
    args.extend(extra);
    Served::start(&args)
}

/// The next JSON log line for which `pick` holds (non-JSON lines fail the test).
fn next_line(served: &Served, pick: impl Fn(&Value) -> bool) -> Value {
    let line = served.next_line(|line| {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        pick(&value)
    });
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn the_access_log_is_one_json_line_per_request_without_the_token() {
    let up = Upstream::start("orders").await;
    let (_dir, file) = write_config(ROUTES, &up).await;
    let served = serve_json(&file, &[]);
    let access = |v: &Value| v["target"] == "tollgate::access";
    let ok = token(|_| {});
    let url = format!("http://{}/api/orders/7?secret=1", served.addr);
    let answer = get(&url, Some(&ok)).await;
    assert_eq!(answer.status, 200);
    let line = next_line(&served, access);
    let text = line.to_string();
    assert!(!text.contains(&ok), "the token is never logged: {text}");
    assert!(!text.contains("secret"), "nor the query: {text}");
    assert_eq!(line["request_id"], answer.header("x-request-id").unwrap());
    assert_eq!(line["route"], "orders-read");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/api/orders/7");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream"], up.url());
    assert_eq!(line["bytes"], answer.body.len());
    assert_eq!(line["complete"], true);
    assert_eq!(line["sub"], "user-1");
    assert_eq!(line["client_id"], "c1");
    assert_eq!(line["reason"], "-");
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    let time = line["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");

    let expired = token(|c| c["exp"] = (now() - 3600).into());
    let answer = get(&url, Some(&expired)).await;
    assert_eq!(answer.status, 401);
    let line = next_line(&served, access);
    assert_eq!(line["status"], 401);
    assert_eq!(line["reason"], "expired");
    assert_eq!(line["sub"], "-", "an unverified token names nobody");
    assert_eq!(line["bytes"], answer.body.len());
    assert!(!line.to_string().contains(&expired));
}

/// Upstream request heads go out in io_uring batches unless `--no-io-uring` says otherwise;
/// the binary says at start which way it writes, and concurrent requests keep their own
/// answers either way.
#[tokio::test]
async fn the_binary_says_how_it_writes_upstream_heads_and_both_ways_answer_each_request() {
    for (flag, says) in [
        (None, "batched (io_uring)"),
        (Some("--no-io-uring"), "one by one"),
    ] {
        let up = Upstream::start("orders").await;
        let (_dir, file) = write_config(ROUTES, &up).await;
        let served = serve_json(&file, flag.as_slice());
        let started: Value = serde_json::from_str(&served.started).unwrap();
        assert_eq!(started["upstream_writes"], says, "{flag:?}");
        let ok = token(|_| {});
        let answers = futures_join((0..32).map(|i| {
            let url = format!("http://{}/api/orders/{i}", served.addr);
            let ok = ok.clone();
            async move { (i, get(&url, Some(&ok)).await) }
        }))
        .await;
        for (i, answer) in answers {
            assert_eq!(answer.status, 200, "{flag:?}");
            assert_eq!(answer.body, format!("orders /orders/{i}"), "{flag:?}");
        }
    }
}

/// Runs `futures` concurrently on this task's runtime and returns their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}
