//! The ceiling experiment of issue 5 (`bench/ceiling.sh`): how many requests per second a
//! tokio proxy with no HTTP library at all moves on this machine, doing the least tollgate's
//! cached RS256 row does per request. Not a gateway: GET only, Content-Length responses only,
//! no timeouts, no limits, no TLS, and it trusts its upstream.
//!
//! Per request it parses the head with httparse, looks the bearer token's SHA-256 up in a
//! map (tollgate's verified-token cache does that on a hit), rewrites the head for the
//! upstream (hop-by-hop headers out; Host, X-Forwarded-For, X-Request-Id and a claim header
//! in), sends it on a pooled keep-alive connection, parses the response head, and writes
//! head and body back to the client in one write. One thread, like the measured rows.
//!
//! It answers one question: is the gap to nginx hyper's, or is it tokio's and this machine's?
//! If this path cannot match nginx either, replacing hyper cannot reach issue 5's targets.
//!
//!   cargo run --release --example ceiling -- LISTEN UPSTREAM TOKEN [--no-yield]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request or response head accepted, in bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Headers parsed per message, at most.
const MAX_HEADERS: usize = 64;

struct Shared {
    upstream: SocketAddr,
    host: String,
    /// SHA-256 of a token -> the `sub` it maps to: what a cache hit yields.
    cache: HashMap<[u8; 32], String>,
    idle: RefCell<Vec<Upstream>>,
    yield_before_write: bool,
    next_id: RefCell<u64>,
}

struct Upstream {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: ceiling LISTEN UPSTREAM TOKEN [--no-yield]");
        std::process::exit(2);
    }
    let listen: SocketAddr = args[1].parse().map_err(io::Error::other)?;
    let upstream: SocketAddr = args[2].parse().map_err(io::Error::other)?;
    let mut cache = HashMap::new();
    cache.insert(digest(args[3].as_bytes()), "user-1".to_owned());
    let shared = Rc::new(Shared {
        upstream,
        host: upstream.to_string(),
        cache,
        idle: RefCell::new(Vec::new()),
        yield_before_write: !args.iter().any(|a| a == "--no-yield"),
        next_id: RefCell::new(0),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(listen).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (client, peer) = listener.accept().await?;
            client.set_nodelay(true)?;
            let shared = Rc::clone(&shared);
            tokio::task::spawn_local(async move {
                // A connection ends on any error: this is a measurement, not a server.
                let _ = serve(shared, client, peer).await;
            });
        }
    })
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

async fn serve(shared: Rc<Shared>, mut client: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    loop {
        // Read until one full request head is in.
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(n) = req.parse(&buf).map_err(|_| bad("request"))? {
                break n;
            }
            if buf.len() > MAX_HEAD_BYTES || client.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        out.clear();
        let status = rewrite_request(&shared, &buf[..head_len], peer, &mut out)?;
        buf.drain(..head_len);
        if let Some(status) = status {
            client.write_all(status.as_bytes()).await?;
            continue;
        }
        if shared.yield_before_write {
            tokio::task::yield_now().await;
        }
        let taken = shared.idle.borrow_mut().pop();
        let mut up = match taken {
            Some(up) => up,
            None => {
                let stream = TcpStream::connect(shared.upstream).await?;
                stream.set_nodelay(true)?;
                Upstream {
                    stream,
                    buf: Vec::with_capacity(4096),
                }
            }
        };
        up.stream.write_all(&out).await?;
        out.clear();
        let (head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) =
                res.parse(&up.buf).map_err(|_| bad("response"))?
            {
                let len = rewrite_response(&res, &mut out)?;
                break (n, len);
            }
            if up.buf.len() > MAX_HEAD_BYTES || up.stream.read_buf(&mut up.buf).await? == 0 {
                return Err(bad("upstream closed"));
            }
        };
        while up.buf.len() < head_len + body_len {
            if up.stream.read_buf(&mut up.buf).await? == 0 {
                return Err(bad("upstream closed mid-body"));
            }
        }
        out.extend_from_slice(&up.buf[head_len..head_len + body_len]);
        up.buf.drain(..head_len + body_len);
        shared.idle.borrow_mut().push(up);
        client.write_all(&out).await?;
    }
}

/// The upstream's request head in `out`, or a ready answer for the client.
fn rewrite_request(
    shared: &Shared,
    head: &[u8],
    peer: SocketAddr,
    out: &mut Vec<u8>,
) -> io::Result<Option<&'static str>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).map_err(|_| bad("request"))?;
    if req.method != Some("GET") {
        return Ok(Some(
            "HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n",
        ));
    }
    let token = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .and_then(|h| h.value.strip_prefix(b"Bearer "));
    let Some(sub) = token.and_then(|t| shared.cache.get(&digest(t))) else {
        return Ok(Some(
            "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer\r\ncontent-length: 0\r\n\r\n",
        ));
    };
    let id = {
        let mut n = shared.next_id.borrow_mut();
        *n += 1;
        *n
    };
    write!(
        out,
        "GET {} HTTP/1.1\r\nhost: {}\r\n",
        req.path.unwrap_or("/"),
        shared.host
    )?;
    for h in req.headers.iter() {
        let hop = [
            "host",
            "connection",
            "keep-alive",
            "authorization",
            "x-user-id",
        ]
        .iter()
        .any(|n| h.name.eq_ignore_ascii_case(n));
        if !hop {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    write!(
        out,
        "x-forwarded-for: {}\r\nx-request-id: {id:016x}\r\nx-user-id: {sub}\r\n\r\n",
        peer.ip()
    )?;
    Ok(None)
}

/// The client's response head in `out`; returns the body length.
fn rewrite_response(res: &httparse::Response<'_, '_>, out: &mut Vec<u8>) -> io::Result<usize> {
    write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        res.code.unwrap_or(502),
        res.reason.unwrap_or("")
    )?;
    let mut length = None;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
        }
        if h.name.eq_ignore_ascii_case("connection") || h.name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    length.ok_or_else(|| bad("response without content-length"))
}
