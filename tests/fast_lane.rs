//! The HTTP/1.1 fast lane (`server::fast`) seen from a raw socket: pipelining, the hand-off
//! to hyper for requests the lane does not take (on the same connection), a client hanging
//! up mid-request, shutdown, and the framing and Date of the lane's own answers.

#[path = "support/raw_client.rs"]
mod raw_client;
#[path = "support/harness.rs"]
mod support;

use std::time::Duration;

use raw_client::{text, Conn};
use support::*;

const LANE: &str = r#"
listen: 127.0.0.1:0
admin: 127.0.0.1:0
shutdown_grace_secs: 10
issuers:
  - id: a
    issuer: https://a.example.test
    audiences: [orders-api]
    jwks_file: a.jwks.json
routes:
  - id: orders
    path: /api/orders
    upstream: {up}
    scopes: [orders:read]
    claims_to_headers: {sub: X-User-Id}
  - id: slow
    path: /slow
    upstream: {up}
    auth: none
  - id: public
    path: /
    upstream: {up}
    auth: none
"#;

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let env = start_with(LANE).await;
    let mut c = Conn::open(env.gateway.addr).await;
    c.send(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\nGET /two HTTP/1.1\r\nHost: gw\r\n\r\nGET /three HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await;
    for path in ["/one", "/two", "/three"] {
        let r = c.response(false).await;
        assert_eq!(r.status_line, "HTTP/1.1 200 OK");
        assert_eq!(text(&r), format!("orders {path}"));
    }
    assert_eq!(
        env.upstream.connections(),
        1,
        "one pooled upstream connection"
    );
}

/// The lane keeps each header in the bytes it arrived in (`headers::RawHeaders`): names in
/// any case must still meet the header hygiene of hyper's path, on the way up (identity,
/// hop-by-hop and forwarded headers, the token) and on the way back (the upstream's
/// hop-by-hop headers).
#[tokio::test]
async fn the_lane_keeps_header_hygiene_for_names_in_any_case() {
    let env = start_with(LANE).await;
    let mut c = Conn::open(env.gateway.addr).await;
    let request = format!(
        "GET /api/orders/1 HTTP/1.1\r\nHOST: gw\r\nAuthorization: Bearer {}\r\n\
         X-User-Id: admin\r\nx-USER-id: root\r\nTE: trailers\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nKeep-Alive: timeout=9\r\n\
         X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
         X-Request-ID: abc-1\r\nContent-Length: 0\r\nAccept: */*\r\n\r\n",
        token(|_| {})
    );
    c.send(request.as_bytes()).await;
    let r = c.response(false).await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(text(&r), "orders /api/orders/1");
    let s = env.upstream.last();
    assert_eq!(
        s.headers.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["user-1"],
        "both client copies replaced by the claim"
    );
    for h in [
        "authorization",
        "te",
        "proxy-authorization",
        "keep-alive",
        "content-length",
    ] {
        assert!(s.headers.get(h).is_none(), "{h} was forwarded");
    }
    assert_eq!(s.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(s.headers["x-forwarded-proto"], "http");
    assert_eq!(s.headers["x-forwarded-host"], "gw");
    assert_eq!(s.headers["x-request-id"], "abc-1");
    assert_eq!(s.headers["accept"], "*/*");
    assert_eq!(s.headers.get_all("host").iter().count(), 1);
    assert_ne!(
        s.headers["host"], "gw",
        "the upstream's authority, not the client's"
    );
    // The way back: the request id, and none of the upstream's hop-by-hop headers.
    assert_eq!(r.header("x-request-id"), Some("abc-1"));
    assert_eq!(r.header("x-upstream"), Some("orders"));
    for h in ["x-secret-hop", "keep-alive", "connection"] {
        assert!(r.header(h).is_none(), "{h} came back: {:?}", r.headers);
    }
}

#[tokio::test]
async fn a_request_with_a_body_goes_to_hyper_on_the_same_connection() {
    let env = start_with(LANE).await;
    let mut c = Conn::open(env.gateway.addr).await;
    c.send(b"GET /first HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    assert_eq!(text(&c.response(false).await), "orders /first");
    // A body (Content-Length), then a chunked one, then a bodiless request again.
    c.send(b"POST /form HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    assert_eq!(text(&c.response(false).await), "orders /form");
    c.send(b"PUT /chunks HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await;
    assert_eq!(text(&c.response(false).await), "orders /chunks");
    c.send(b"GET /last HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    assert_eq!(text(&c.response(false).await), "orders /last");
    let seen = env.upstream.seen();
    let bodies: Vec<(&str, &[u8])> = seen
        .iter()
        .map(|s| (s.path_and_query.as_str(), s.body.as_ref()))
        .collect();
    assert_eq!(
        bodies,
        [
            ("/first", &b""[..]),
            ("/form", b"hello"),
            ("/chunks", b"abc"),
            ("/last", b"")
        ]
    );
    // One upstream socket throughout: it went from the crate's client (bodiless requests)
    // to hyper's (bodies) and back between exchanges.
    assert_eq!(env.upstream.connections(), 1);
}

#[tokio::test]
async fn requests_the_lane_does_not_take_get_hypers_answers() {
    let env = start_with(LANE).await;
    // HTTP/1.0: answered, then closed (no keep-alive asked for).
    let mut c = Conn::open(env.gateway.addr).await;
    c.send(b"GET /old HTTP/1.0\r\nHost: gw\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.status_line.ends_with(" 200 OK"), "{}", r.status_line);
    assert_eq!(text(&r), "orders /old");
    assert!(c.closes_within(Duration::from_secs(2)).await);
    // `Connection: close`: answered with it, then closed.
    let mut c = Conn::open(env.gateway.addr).await;
    c.send(b"GET /bye HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closes_within(Duration::from_secs(2)).await);
    // A header name with a space in it: hyper's 400.
    let mut c = Conn::open(env.gateway.addr).await;
    c.send(b"GET /bad HTTP/1.1\r\nHost: gw\r\nBad Name: x\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert!(
        r.status_line.starts_with("HTTP/1.1 400"),
        "{}",
        r.status_line
    );
    // Two Host headers: not the lane's to judge; the request path's answer stands.
    let mut c = Conn::open(env.gateway.addr).await;
    c.send(b"GET /twice HTTP/1.1\r\nHost: gw\r\nHost: other\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert!(r.status_line.starts_with("HTTP/1.1 "), "{}", r.status_line);
    assert!(
        env.upstream
            .seen()
            .iter()
            .all(|s| s.path_and_query != "/bad"),
        "nothing malformed reached the upstream"
    );
}

#[tokio::test]
async fn the_lanes_own_answers_carry_date_and_exact_framing() {
    let env = start_with(LANE).await;
    let mut c = Conn::open(env.gateway.addr).await;
    c.send(b"GET /api/orders/1 HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status_line, "HTTP/1.1 401 Unauthorized");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );
    let date = r.header("date").expect("a Date header");
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    assert_eq!(
        r.header("content-length")
            .map(|n| n.parse::<usize>().unwrap()),
        Some(r.body.len())
    );
    // HEAD: the same head, no body; the next answer on the socket starts cleanly.
    c.send(
        b"HEAD /api/orders/1 HTTP/1.1\r\nHost: gw\r\n\r\nGET /after HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    .await;
    let h = c.response(true).await;
    assert_eq!(h.status_line, "HTTP/1.1 401 Unauthorized");
    assert_eq!(h.header("content-length"), r.header("content-length"));
    let next = c.response(false).await;
    assert_eq!(text(&next), "orders /after");
    // A valid token through the lane.
    let t = token(|_| {});
    c.send(
        format!("GET /api/orders/7 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let ok = c.response(false).await;
    assert_eq!(ok.status_line, "HTTP/1.1 200 OK");
    assert_eq!(text(&ok), "orders /api/orders/7");
    assert!(ok.header("x-request-id").is_some());
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_upstream_request() {
    let env = start_with(LANE).await;
    let mut c = Conn::open(env.gateway.addr).await;
    c.send(b"GET /slow/gone HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    // The upstream answers /slow after 2 s; the client leaves after 0.3 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        env.upstream.seen().is_empty(),
        "the upstream finished a request nobody waits for"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_lane_connections_and_ends_busy_ones_after_their_answer() {
    let env = start_with(LANE).await;
    let mut idle = Conn::open(env.gateway.addr).await;
    idle.send(b"GET /idle HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    assert_eq!(text(&idle.response(false).await), "orders /idle");
    let mut busy = Conn::open(env.gateway.addr).await;
    busy.send(b"GET /slow/busy HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Env {
        gateway,
        upstream: _upstream,
        dir: _dir,
    } = env;
    let stopping = tokio::spawn(gateway.shutdown());
    assert!(
        idle.closes_within(Duration::from_secs(1)).await,
        "an idle connection stayed open during shutdown"
    );
    let r = busy.response(false).await;
    assert_eq!(text(&r), "orders /slow/busy");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(busy.closes_within(Duration::from_secs(1)).await);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_request_head_arriving_byte_by_byte_is_served() {
    let env = start_with(LANE).await;
    let mut c = Conn::open(env.gateway.addr).await;
    for b in b"GET /bytewise HTTP/1.1\r\nHost: gw\r\n\r\n" {
        c.send(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let r = c.response(false).await;
    assert_eq!(text(&r), "orders /bytewise");
    // And the connection goes on with a whole request.
    c.send(b"GET /next HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    assert_eq!(text(&c.response(false).await), "orders /next");
}
