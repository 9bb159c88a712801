//! A raw HTTP/1.1 client for tests that must see the bytes: the status line, the headers
//! as sent, and bodies read exactly to their end so the next response can follow. Included
//! with `#[path = "support/raw_client.rs"] mod raw_client;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response read off a keep-alive socket: the head, lower-cased names, and the body
/// (de-chunked), read exactly to its end so the next response can follow.
pub struct Raw {
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self, at_least: usize) {
        while self.buf.len() < at_least {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk))
                .await
                .expect("response timed out")
                .unwrap();
            assert!(
                n > 0,
                "closed early: {}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf.drain(..i + 2).collect()).unwrap();
                return line.trim_end().to_owned();
            }
            let want = self.buf.len() + 1;
            self.fill(want).await;
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        self.fill(n).await;
        self.buf.drain(..n).collect()
    }

    /// `head`: the request was HEAD (no body follows whatever the headers say).
    pub async fn response(&mut self, head: bool) -> Raw {
        let status_line = self.line().await;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').unwrap();
            headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut raw = Raw {
            status_line,
            headers,
            body: Vec::new(),
        };
        let no_body =
            head || raw.status_line.contains(" 204 ") || raw.status_line.contains(" 304 ");
        if no_body {
            return raw;
        }
        if raw.header("transfer-encoding").is_some() {
            loop {
                let size = usize::from_str_radix(&self.line().await, 16).unwrap();
                let data = self.take(size + 2).await;
                if size == 0 {
                    break;
                }
                raw.body.extend_from_slice(&data[..size]);
            }
        } else {
            let n: usize = raw.header("content-length").unwrap().parse().unwrap();
            raw.body = self.take(n).await;
        }
        raw
    }

    /// Whether the gateway closes the socket within `limit`, with nothing more to say.
    pub async fn closes_within(&mut self, limit: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(limit, self.s.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// The body as text.
pub fn text(r: &Raw) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}
