//! The upstream connection pool against a raw TCP upstream that writes its answers byte for
//! byte: connections are reused across every kind of response framing, never reused after
//! the upstream closed them or after a body was abandoned half-way, and closed once idle
//! longer than `upstream_idle_timeout_ms`; idle ones give up hyper's buffers after a second.

#[path = "support/raw_client.rs"]
mod raw_client;
#[path = "support/harness.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::send;

/// An upstream speaking HTTP/1.1 by hand, so the test controls framing and closing exactly.
struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// When the gateway closed one of its connections (EOF read while idle).
    closed_by_gateway: Arc<Mutex<Vec<Instant>>>,
    /// When the last response was written.
    answered: Arc<Mutex<Option<Instant>>>,
    /// Every request head received.
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        RawUpstream::start_on("127.0.0.1:0").await
    }

    async fn start_on(addr: &str) -> RawUpstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        let up = RawUpstream {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            closed_by_gateway: Arc::default(),
            answered: Arc::default(),
            heads: Arc::default(),
        };
        let (accepted, closed, answered, heads) = (
            Arc::clone(&up.accepted),
            Arc::clone(&up.closed_by_gateway),
            Arc::clone(&up.answered),
            Arc::clone(&up.heads),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(
                    stream,
                    Arc::clone(&closed),
                    Arc::clone(&answered),
                    Arc::clone(&heads),
                ));
            }
        });
        up
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    closed: Arc<Mutex<Vec<Instant>>>,
    answered: Arc<Mutex<Option<Instant>>>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break Some(buf.drain(..end + 4).collect::<Vec<u8>>());
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let Some(head) = head else {
            closed.lock().unwrap().push(Instant::now());
            return;
        };
        let head = String::from_utf8_lossy(&head).into_owned();
        heads.lock().unwrap().push(head.clone());
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let answer: Vec<u8> = match path {
            "/len" if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
            "/len" | "/once" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec(),
            "/empty" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            // Chunk extensions and trailers, which the gateway must read past and drop.
            "/ext" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                3;note=x\r\nabc\r\n2 ; y\r\nde\r\n0\r\nX-Sum: 5\r\nX-More: 1\r\n\r\n"
                .to_vec(),
            // Interim responses before the final one.
            "/interim" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\
                Link: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
            // No length: the body ends with the connection (written, then closed below).
            "/eof" => b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(),
            "/closing" => {
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye".to_vec()
            }
            "/conflict" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec()
            }
            "/stall" => {
                // Promises a megabyte, sends 16 KiB, then waits for the gateway to give up.
                let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
                a.extend(std::iter::repeat_n(b'x', 16 * 1024));
                a
            }
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        };
        if path == "/trickle" {
            // One byte at a time: the gateway's reads end anywhere inside the framing.
            let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                3;x=y\r\nabc\r\n1\r\nd\r\n0\r\nT: 1\r\n\r\n";
            let _ = stream.set_nodelay(true);
            for b in answer {
                if stream.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            *answered.lock().unwrap() = Some(Instant::now());
            continue;
        }
        if stream.write_all(&answer).await.is_err() {
            return;
        }
        *answered.lock().unwrap() = Some(Instant::now());
        // (After `/closing` the socket stays open on purpose: only the gateway's reading of
        // `Connection: close` keeps it from being used again.)
        if matches!(path, "/eof" | "/conflict") {
            return;
        }
        if path == "/once" {
            // Closes without a `Connection: close`: the gateway learns it only from the socket.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
    }
}

async fn gateway(up: &RawUpstream, idle_ms: u64) -> (tollgate::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
limits:
  upstream_idle_timeout_ms: {idle_ms}
routes:
  - id: raw
    path: /
    upstream: http://{}
    auth: none
",
        up.addr
    );
    // (`SocketAddr` displays an IPv6 address in brackets, as a URL wants it.)
    std::fs::write(&file, yaml).unwrap();
    let snapshot = tollgate::config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    (tollgate::start(snapshot).await.unwrap(), dir)
}

fn request(method: Method, gw: &tollgate::Running, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.addr))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn one_upstream_connection_serves_every_kind_of_response_in_turn() {
    let up = RawUpstream::start().await;
    let (gw, _dir) = gateway(&up, 60_000).await;
    for round in 0..3 {
        let a = send(request(Method::GET, &gw, "/len")).await;
        assert_eq!(
            (a.status.as_u16(), a.body.as_str()),
            (200, "hello"),
            "round {round}"
        );
        assert_eq!(a.header("content-length"), Some("5"));
        let a = send(request(Method::GET, &gw, "/chunked")).await;
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello world"));
        let a = send(request(Method::GET, &gw, "/empty")).await;
        assert_eq!((a.status.as_u16(), a.body.as_str()), (204, ""));
        let a = send(request(Method::HEAD, &gw, "/len")).await;
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, ""));
        assert_eq!(a.header("content-length"), Some("5"));
    }
    // Twelve sequential exchanges, each giving the connection back when its body ended.
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_pooled_is_never_used() {
    let up = RawUpstream::start().await;
    let (gw, _dir) = gateway(&up, 60_000).await;
    for i in 0..5 {
        let a = send(request(Method::GET, &gw, "/once")).await;
        assert_eq!(
            (a.status.as_u16(), a.body.as_str()),
            (200, "hello"),
            "request {i}"
        );
        // Past the upstream's close: the pooled connection is dead by the next request.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up.connections(), 5);
}

#[tokio::test]
async fn a_body_abandoned_half_way_closes_its_connection_instead_of_pooling_it() {
    let up = RawUpstream::start().await;
    let (gw, _dir) = gateway(&up, 60_000).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(request(Method::GET, &gw, "/stall"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    // The client goes away with most of the body unread.
    drop(body);
    drop(client);
    // The gateway closes the upstream connection it can no longer reuse...
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.closed_by_gateway.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stalled connection was kept open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and the next request gets a fresh one and a whole answer.
    let a = send(request(Method::GET, &gw, "/len")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello"));
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let up = RawUpstream::start().await;
    let (gw, _dir) = gateway(&up, 300).await;
    let a = send(request(Method::GET, &gw, "/len")).await;
    assert_eq!(a.status, 200);
    let answered = up.answered.lock().unwrap().expect("the upstream answered");
    let deadline = Instant::now() + Duration::from_secs(5);
    let closed = loop {
        if let Some(at) = up.closed_by_gateway.lock().unwrap().first() {
            break *at;
        }
        assert!(
            Instant::now() < deadline,
            "the idle connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let idle = closed.duration_since(answered);
    // Not before the timeout, and within one sweep (half the timeout) plus slack after it.
    assert!(idle >= Duration::from_millis(300), "closed after {idle:?}");
    assert!(idle < Duration::from_millis(1500), "closed after {idle:?}");
    // The gateway still serves, on a new connection.
    let a = send(request(Method::GET, &gw, "/len")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello"));
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn an_ipv6_literal_upstream_is_reached_and_named_in_host() {
    let up = RawUpstream::start_on("[::1]:0").await;
    let (gw, _dir) = gateway(&up, 60_000).await;
    let a = send(request(Method::GET, &gw, "/len")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello"));
    assert_eq!(up.connections(), 1);
    let head = up.heads.lock().unwrap().pop().unwrap();
    let host = format!("\r\nhost: [::1]:{}\r\n", up.addr.port());
    assert!(head.to_lowercase().contains(&host), "{head}");
    // Origin form: the upstream is not a proxy (RFC 9112 §3.2.1).
    assert!(head.starts_with("GET /len HTTP/1.1\r\n"), "{head}");
}

/// `tollgate_upstream_idle_connections` as (live, parked).
async fn idle_gauge(gw: &tollgate::Running) -> (u64, u64) {
    let admin = gw
        .admin_addr
        .expect("the test config has an admin listener");
    let text = support::get(&format!("http://{admin}/-/metrics"), None)
        .await
        .body;
    let value = |state: &str| {
        let prefix = format!("tollgate_upstream_idle_connections{{state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix} in the metrics"))
            .parse::<u64>()
            .unwrap()
    };
    (value("live"), value("parked"))
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_then_serves_the_next_request() {
    let up = RawUpstream::start().await;
    let (gw, _dir) = gateway(&up, 60_000).await;
    let a = send(request(Method::GET, &gw, "/len")).await;
    assert_eq!(a.status, 200);
    assert_eq!(idle_gauge(&gw).await, (1, 0));
    // Parked after 1 s idle, at the next sweep (every second).
    let deadline = Instant::now() + Duration::from_secs(4);
    while idle_gauge(&gw).await != (0, 1) {
        assert!(
            Instant::now() < deadline,
            "never parked: {:?}",
            idle_gauge(&gw).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The parked socket carries the next exchanges, and is live again after them.
    for path in ["/chunked", "/len"] {
        let a = send(request(Method::GET, &gw, path)).await;
        assert_eq!(a.status, 200, "{path}");
    }
    assert_eq!(up.connections(), 1);
    assert_eq!(idle_gauge(&gw).await, (1, 0));
}

#[tokio::test]
async fn a_parked_connection_the_upstream_closed_is_never_used() {
    let up = RawUpstream::start().await;
    let (gw, _dir) = gateway(&up, 60_000).await;
    let a = send(request(Method::GET, &gw, "/once")).await;
    assert_eq!(a.status, 200);
    let deadline = Instant::now() + Duration::from_secs(4);
    while idle_gauge(&gw).await.1 != 1 {
        assert!(Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The upstream closed that socket 50 ms after answering, long before it was parked.
    let a = send(request(Method::GET, &gw, "/len")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello"));
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn the_client_gets_each_upstream_framing_re_framed_on_the_wire() {
    let up = RawUpstream::start().await;
    let (gw, _dir) = gateway(&up, 60_000).await;
    let mut c = raw_client::Conn::open(gw.addr).await;
    // Chunked from the upstream: chunked to the client, no Content-Length beside it.
    c.send(b"GET /chunked HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(raw_client::text(&r), "hello world");
    // 204: neither Content-Length nor Transfer-Encoding (RFC 9110 §8.6).
    c.send(b"GET /empty HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), None);
    // HEAD: the upstream's Content-Length, no body; a GET right behind it reads cleanly.
    c.send(b"HEAD /len HTTP/1.1\r\nHost: gw\r\n\r\nGET /len HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await;
    let h = c.response(true).await;
    assert_eq!(h.header("content-length"), Some("5"));
    let g = c.response(false).await;
    assert_eq!(raw_client::text(&g), "hello");
    assert!(g.header("date").is_some(), "the upstream's Date or ours");
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn each_way_an_upstream_may_end_a_body_is_read_to_its_end() {
    let up = RawUpstream::start().await;
    let (gw, _dir) = gateway(&up, 60_000).await;
    let a = send(request(Method::GET, &gw, "/ext")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "abcde"));
    assert_eq!(a.header("x-sum"), None, "trailers are not passed on");
    let a = send(request(Method::GET, &gw, "/interim")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "ok"));
    // Still one connection: both bodies had their own framing.
    assert_eq!(up.connections(), 1);
    let a = send(request(Method::GET, &gw, "/eof")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "until the end"));
    let a = send(request(Method::GET, &gw, "/len")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello"));
    assert_eq!(
        up.connections(),
        2,
        "a body read to EOF leaves no connection to reuse"
    );
    let a = send(request(Method::GET, &gw, "/closing")).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "bye"));
    let a = send(request(Method::GET, &gw, "/len")).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.connections(), 3, "Connection: close is honoured");
    // Two Content-Lengths that disagree: nothing of that response reaches the client.
    let a = send(request(Method::GET, &gw, "/conflict")).await;
    assert_eq!(a.status, 502);
    assert!(!a.body.contains("hello"), "{}", a.body);
}

#[tokio::test]
async fn a_chunked_body_arriving_byte_by_byte_is_decoded_whole() {
    let up = RawUpstream::start().await;
    let (gw, _dir) = gateway(&up, 60_000).await;
    for _ in 0..2 {
        let a = send(request(Method::GET, &gw, "/trickle")).await;
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "abcd"));
    }
    // Framing intact to its last byte: the connection served both.
    assert_eq!(up.connections(), 1);
}
