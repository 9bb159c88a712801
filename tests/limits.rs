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
