//! Server limits: header read timeout, request head size, connection cap.

#[path = "support/harness.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITED: &str = r#"
listen: 127.0.0.1:0
limits:
  header_read_timeout_ms: 300
  max_request_header_bytes: 8192
  max_connections: 2
routes:
  - id: public
    path: /
    upstream: {up}
    auth: none
"#;

/// Reads until the peer closes or `limit` passes; returns what arrived.
async fn read_for(s: &mut TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off() {
    let env = start_with(LIMITED).await;
    let mut s = TcpStream::connect(env.gateway.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_for(&mut s, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "connection still open after {waited:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let env = start_with(LIMITED).await;
    let mut s = TcpStream::connect(env.gateway.addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_for(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "idle connection kept open"
    );
}

#[tokio::test]
async fn silent_connections_are_closed_and_free_their_slot() {
    let env = start_with(LIMITED).await;
    // Both slots (max_connections: 2) taken by clients that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(env.gateway.addr).await.unwrap());
    }
    let started = Instant::now();
    let a = get(&env.url("/x"), None).await;
    assert_eq!(a.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    for mut s in silent {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection stayed open"
        );
    }
}

#[tokio::test]
async fn an_oversized_request_head_is_rejected() {
    let env = start_with(LIMITED).await;
    let mut s = TcpStream::connect(env.gateway.addr).await.unwrap();
    let big = "a".repeat(20_000);
    let req = format!("GET / HTTP/1.1\r\nHost: gw\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let answer = read_for(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    // hyper runs the header read timer while a keep-alive connection waits for its next
    // request, so the held connections need a longer one than the other tests use.
    let env = start_with(&LIMITED.replace(
        "header_read_timeout_ms: 300",
        "header_read_timeout_ms: 10000",
    ))
    .await;
    let request = b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n";
    // Two keep-alive connections take both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(env.gateway.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    // A third connection is not served while they stay open...
    let mut third = TcpStream::connect(env.gateway.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served over max_connections: 2"
    );
    // ...and is served as soon as one closes.
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut buf))
        .await
        .expect("the third connection was never served")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}

const PARKING: &str = r#"
listen: 127.0.0.1:0
admin: 127.0.0.1:0
limits:
  header_read_timeout_ms: 2500
routes:
  - id: public
    path: /
    upstream: {up}
    auth: none
"#;

async fn parked(env: &Env) -> f64 {
    let text = get(
        &format!("http://{}/-/metrics", env.gateway.admin_addr.unwrap()),
        None,
    )
    .await
    .body;
    text.lines()
        .find_map(|l| l.strip_prefix("tollgate_parked_connections "))
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads one complete `Content-Length` response from a keep-alive socket.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response timed out")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_serves_the_next_request_on_the_same_socket() {
    let env = start_with(PARKING).await;
    let mut s = TcpStream::connect(env.gateway.addr).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Busy connections keep their buffers; after 0.5 s idle this one gives them back.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(parked(&env).await, 1.0);
    s.write_all(b"GET /two HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("orders /two"), "{answer}");
    assert_eq!(parked(&env).await, 0.0);
    // A request head split across a parking arrives whole.
    s.write_all(b"GET /three HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b"st: gw\r\n\r\n").await.unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.ends_with("orders /three"), "{answer}");
    let paths: Vec<String> = env
        .upstream
        .seen()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(paths, ["/one", "/two", "/three"]);
}

#[tokio::test]
async fn a_head_trickling_in_across_parkings_is_still_cut_off() {
    let env = start_with(PARKING).await;
    let mut s = TcpStream::connect(env.gateway.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    // A byte every 700 ms: the connection parks in every gap (0.5 s idle), which restarts
    // hyper's own header timer each time; the gateway's own deadline does not restart.
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        if s.write_all(b"X").await.is_err() || started.elapsed() > Duration::from_secs(8) {
            break started.elapsed();
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
        {
            break started.elapsed();
        }
    };
    assert!(
        closed < Duration::from_secs(6),
        "still open after {closed:?}"
    );
    assert!(env.upstream.seen().is_empty());
}
