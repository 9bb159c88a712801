//! End to end through the real gateway to a real upstream: identity headers, routing, header
//! hygiene, limits and upstream failures.

#[path = "support/harness.rs"]
mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn req(method: Method, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

#[tokio::test]
async fn valid_token_reaches_the_upstream_with_identity_and_without_authorization() {
    let env = start().await;
    let t = token(|c| {
        c["realm_access"] = json!({"roles": ["buyer", "auditor"]});
        c["n"] = json!(42);
    });
    let a = get(&env.url("/api/orders/7?expand=items"), Some(&t)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, "orders /orders/7?expand=items");
    let seen = env.upstream.last();
    assert_eq!(seen.path_and_query, "/orders/7?expand=items");
    assert_eq!(seen.headers["x-user-id"], "user-1");
    assert_eq!(seen.headers["x-user-scopes"], "orders:read");
    assert_eq!(seen.headers["x-user-roles"], "buyer,auditor");
    assert_eq!(seen.headers["x-number"], "42");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["host"], env.upstream.addr.to_string());
}

#[tokio::test]
async fn ec_and_eddsa_tokens_are_accepted() {
    let env = start().await;
    let k = keys();
    for key in [&k.ec, &k.ed] {
        let a = get(&env.url("/api/orders/1"), Some(&token_with(key, &claims()))).await;
        assert_eq!(a.status, 200, "{:?}: {}", key.alg, a.body);
    }
}

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let env = start().await;
    let spoof = |b: http::request::Builder| {
        b.header("x-user-id", "admin")
            .header("X-User-Roles", "superadmin")
            .header("x-user-scopes", "everything")
    };
    // Required route: replaced by the claim.
    let a = send(
        spoof(req(Method::GET, &env.url("/api/orders/1")))
            .header("authorization", format!("Bearer {}", token(|_| {})))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    let s = env.upstream.last();
    assert_eq!(
        s.headers.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["user-1"]
    );
    assert!(
        s.headers.get("x-user-roles").is_none(),
        "claim missing: header removed, not kept"
    );
    // Required route, claim missing: removed.
    let no_sub = token(|c| {
        c.as_object_mut().unwrap().remove("sub");
    });
    send(
        spoof(req(Method::GET, &env.url("/api/orders/1")))
            .header("authorization", format!("Bearer {no_sub}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert!(env.upstream.last().headers.get("x-user-id").is_none());
    // Optional route without a token, and a route that checks nothing: removed.
    for path in ["/feed", "/public", "/api/ordersX"] {
        let a = send(
            spoof(req(Method::GET, &env.url(path)))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200, "{path}");
        let s = env.upstream.last();
        for h in ["x-user-id", "x-user-roles", "x-user-scopes"] {
            assert!(s.headers.get(h).is_none(), "{path}: {h} leaked");
        }
    }
    // Optional route with a token: the claim.
    let a = get(&env.url("/feed"), Some(&token(|_| {}))).await;
    assert_eq!(a.status, 200);
    assert_eq!(env.upstream.last().headers["x-user-id"], "user-1");
}

#[tokio::test]
async fn forward_token_sends_authorization_upstream() {
    let env = start().await;
    let t = token(|_| {});
    assert_eq!(get(&env.url("/through"), Some(&t)).await.status, 200);
    assert_eq!(
        env.upstream.last().headers["authorization"],
        format!("Bearer {t}")
    );
    // ...while other routes, even auth: none, drop it.
    get(&env.url("/public"), Some(&t)).await;
    assert!(env.upstream.last().headers.get("authorization").is_none());
}

#[tokio::test]
async fn scope_matching_is_exact_and_supports_any_of_and_scp() {
    let env = start().await;
    let admin = token(|c| c["scope"] = json!("admin"));
    assert_eq!(get(&env.url("/admin"), Some(&admin)).await.status, 403);
    let superadmin = token(|c| c["scope"] = json!("superadmin"));
    assert_eq!(get(&env.url("/admin"), Some(&superadmin)).await.status, 200);
    let auditor = token(|c| c["scope"] = json!("x auditor"));
    assert_eq!(
        get(&env.url("/reports/q1"), Some(&auditor)).await.status,
        200
    );
    let scp = token(|c| {
        c.as_object_mut().unwrap().remove("scope");
        c["scp"] = json!(["reports:read"]);
    });
    assert_eq!(get(&env.url("/reports/q1"), Some(&scp)).await.status, 200);
    let scp_read = token(|c| {
        c.as_object_mut().unwrap().remove("scope");
        c["scp"] = json!(["orders:read"]);
    });
    assert_eq!(
        get(&env.url("/api/orders/1"), Some(&scp_read)).await.status,
        200
    );
    let neither = token(|c| c["scope"] = json!("reports:readX auditors"));
    assert_eq!(
        get(&env.url("/reports/q1"), Some(&neither)).await.status,
        403
    );
}

#[tokio::test]
async fn routing_longest_prefix_segments_404_405_and_rewrites() {
    let env = start().await;
    let t = token(|c| c["scope"] = json!("orders:read orders:write reports:read"));
    let bearer = format!("Bearer {t}");

    // Segment boundary: /api/ordersX is the /api route (auth none), path kept.
    let a = get(&env.url("/api/ordersX"), None).await;
    assert_eq!(
        (a.status.as_u16(), a.body.as_str()),
        (200, "orders /api/ordersX")
    );
    // Same path, method picks the route: writes are not stripped.
    let a = send(
        req(Method::DELETE, &env.url("/api/orders/9"))
            .header("authorization", &bearer)
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (a.status.as_u16(), a.body.as_str()),
        (200, "orders /api/orders/9")
    );
    // 405 with Allow, no fallback to /api.
    let a = send(
        req(Method::PATCH, &env.url("/api/orders/9"))
            .header("authorization", &bearer)
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("GET, HEAD, POST, PUT, DELETE"));
    assert_eq!(a.json()["error"], "method_not_allowed");
    // 404.
    let a = get(&env.url("/nowhere"), None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"], "not_found");
    // strip_prefix then upstream base path.
    let a = get(&env.url("/reports/q1?y=2026"), Some(&t)).await;
    assert_eq!(a.body, "orders /base/q1?y=2026");
    let a = get(&env.url("/reports"), Some(&t)).await;
    assert_eq!(a.body, "orders /base/");
    // HEAD is routed like GET where the route lists it.
    let a = send(
        req(Method::HEAD, &env.url("/api/orders/1"))
            .header("authorization", &bearer)
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "");
}

#[tokio::test]
async fn confusing_paths_are_normalized_or_rejected_before_matching() {
    let env = start().await;
    // An encoded unreserved character cannot dodge the protected route.
    let a = get(&env.url("/api/%6Frders/1"), None).await;
    assert_eq!(a.status, 401);
    // Merged slashes cannot skip a longer, stricter route either.
    let a = get(&env.url("/api//orders//1"), None).await;
    assert_eq!(a.status, 401);
    let a = get(&env.url("/api//ordersX//1"), None).await;
    assert_eq!(
        (a.status.as_u16(), a.body.as_str()),
        (200, "orders /api/ordersX/1")
    );
    let before = env.upstream.seen().len();
    for path in [
        "/public/../api/orders/1",
        "/public/%2e%2e/api/orders/1",
        "/public%2f..%2fapi",
        "/public/..;/api/orders/1",
    ] {
        let a = get(&env.url(path), None).await;
        assert_eq!(a.status, 400, "{path}");
        assert_eq!(a.json()["error"], "invalid_request");
    }
    assert_eq!(env.upstream.seen().len(), before);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let env = start().await;
    let a = send(
        req(Method::GET, &env.url("/api/orders/1"))
            .header("authorization", format!("Bearer {}", token(|_| {})))
            .header("connection", "X-User-Id, x-custom-hop")
            .header("x-user-id", "admin")
            .header("x-custom-hop", "1")
            .header("te", "trailers")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    let s = env.upstream.last();
    // Connection named X-User-Id: the client copy goes, the gateway's own value stays.
    assert_eq!(s.headers["x-user-id"], "user-1");
    for h in ["x-custom-hop", "te", "proxy-authorization"] {
        assert!(s.headers.get(h).is_none(), "{h} was forwarded");
    }
    assert_ne!(
        s.headers.get("connection").map(|v| v.to_str().unwrap()),
        Some("X-User-Id, x-custom-hop")
    );
    assert_eq!(s.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(s.headers["x-forwarded-proto"], "http");
    assert_eq!(s.headers["x-forwarded-host"], env.gateway.addr.to_string());
    // Response side: the upstream's Connection-named and keep-alive headers stay behind.
    assert_eq!(a.header("x-upstream"), Some("orders"));
    assert!(a.header("x-secret-hop").is_none());
    assert!(a.header("keep-alive").is_none());
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let env = start().await;
    let a = get(&env.url("/down"), None).await;
    assert_eq!(a.status, 502);
    assert_eq!(
        a.json(),
        json!({"error": "bad_gateway", "error_description": "the upstream is unavailable"})
    );
    let started = std::time::Instant::now();
    let a = get(&env.url("/slow"), None).await;
    assert_eq!(a.status, 504);
    assert_eq!(a.json()["error"], "gateway_timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "the 300 ms route timeout was not applied"
    );
    // The gateway keeps serving.
    assert_eq!(get(&env.url("/public"), None).await.status, 200);
}

#[tokio::test]
async fn request_bodies_are_forwarded_and_capped() {
    let env = start().await;
    let a = send(
        req(Method::POST, &env.url("/public/upload"))
            .body(Full::new(Bytes::from("hello")))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(env.upstream.last().body, "hello");
    let before = env.upstream.seen().len();
    let a = send(
        req(Method::POST, &env.url("/public/upload"))
            .body(Full::new(Bytes::from(vec![b'x'; 2048])))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["error"], "payload_too_large");
    assert_eq!(env.upstream.seen().len(), before);

    // Chunked, no Content-Length: the cap applies while streaming.
    let mut s = tokio::net::TcpStream::connect(env.gateway.addr)
        .await
        .unwrap();
    let mut raw = b"POST /public/upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(format!("{:x}\r\n{}\r\n", 600, "y".repeat(600)).as_bytes());
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&raw).await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let env = start().await;
    let r = req(Method::GET, &env.url("/api/orders/3"))
        .header("authorization", format!("Bearer {}", token(|_| {})))
        .header("x-user-id", "admin")
        .body(empty())
        .unwrap();
    let a = send_with(r, true).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let s = env.upstream.last();
    assert_eq!(s.path_and_query, "/orders/3");
    assert_eq!(s.headers["x-user-id"], "user-1");
    assert_eq!(s.headers["x-forwarded-host"], env.gateway.addr.to_string());
    // And the rejections are the same over HTTP/2.
    let r = req(Method::GET, &env.url("/api/orders/3"))
        .body(empty())
        .unwrap();
    assert_eq!(send_with(r, true).await.status, 401);
}

#[tokio::test]
async fn admin_listener_answers_health_and_readiness() {
    let env = start().await;
    let admin = env.gateway.admin_addr.unwrap();
    let a = get(&format!("http://{admin}/-/healthz"), None).await;
    assert_eq!(
        (a.status.as_u16(), a.json()),
        (200, json!({"status": "ok"}))
    );
    let a = get(&format!("http://{admin}/-/ready"), None).await;
    assert_eq!((a.status.as_u16(), a.json()), (200, json!({"ready": true})));
    // Admin paths do not exist on the data plane.
    assert_eq!(get(&env.url("/-/healthz"), None).await.status, 404);
}
