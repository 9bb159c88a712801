//! The body of a response read by the `h1` client: Content-Length, chunked (RFC 9112 §7.1)
//! or to the end of the connection, streamed as the client takes it, with the connection back
//! in the pool at its last byte.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};

use super::{Framing, RawConn, READ_BUFFER_BYTES};
use crate::body::BoxError;
use crate::upstream::{Key, Pool};

/// The longest chunk-size line (size, extensions) accepted in a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Trailer bytes accepted (and dropped) after a chunked body.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes to go, then CRLF.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one; bytes seen so far.
    Trailers(usize),
}

/// A response body read off its connection; the connection returns to the pool at the end.
pub struct RawBody {
    conn: Option<RawConn>,
    state: State,
    /// Set once the exchange may be reused; cleared by anything that says otherwise.
    reusable: bool,
    pool: Pool,
    key: Option<Key>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

impl RawBody {
    pub fn new(conn: RawConn, framing: Framing, reusable: bool, pool: Pool, key: Key) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::Close => State::Close,
        };
        let mut body = RawBody {
            conn: Some(conn),
            state,
            reusable,
            pool,
            key: Some(key),
        };
        if body.state == State::Done {
            body.finish();
        }
        body
    }

    /// The body ended: the connection goes back, if it can serve another exchange.
    fn finish(&mut self) {
        self.state = State::Done;
        let (Some(mut conn), Some(key)) = (self.conn.take(), self.key.take()) else {
            return;
        };
        // Bytes after the end of the response: the upstream talks out of turn.
        if self.reusable && conn.rbuf.is_empty() {
            conn.reused = true;
            self.pool.release_raw(key, conn);
        }
    }

    /// Reads more bytes into the buffer; `Ok(false)` at the end of the connection.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        conn.rbuf.reserve(READ_BUFFER_BYTES);
        let n = ready!(conn.stream.poll_read_drained(cx, &mut conn.rbuf))?;
        Poll::Ready(Ok(n > 0))
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>> {
        loop {
            let buffered = self.conn.as_ref().map_or(0, |c| c.rbuf.len());
            match self.state {
                State::Done => return Poll::Ready(Ok(None)),
                State::Length(0) => {
                    self.finish();
                    return Poll::Ready(Ok(None));
                }
                State::Length(n) if buffered > 0 => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buffered);
                    let data = self.take(take);
                    self.state = State::Length(n - take as u64);
                    if self.state == State::Length(0) {
                        self.finish();
                    }
                    return Poll::Ready(Ok(Some(data)));
                }
                State::Close if buffered > 0 => return Poll::Ready(Ok(Some(self.take(buffered)))),
                State::Chunked(chunk) => match self.chunk(chunk)? {
                    Some(Some(data)) => return Poll::Ready(Ok(Some(data))),
                    Some(None) => continue,
                    None => {}
                },
                State::Length(_) | State::Close => {}
            }
            // Nothing usable buffered: read.
            if !ready!(self.fill(cx))? {
                if self.state == State::Close {
                    self.state = State::Done;
                    self.conn = None;
                    return Poll::Ready(Ok(None));
                }
                self.conn = None;
                return Poll::Ready(Err("upstream closed the connection inside the body".into()));
            }
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        match self.conn.as_mut() {
            Some(conn) => conn.rbuf.split_to(n).freeze(),
            None => Bytes::new(),
        }
    }

    /// One step of the chunked decoder over what is buffered: `Some(Some(data))` a frame,
    /// `Some(None)` progress without data, `None` more bytes needed.
    fn chunk(&mut self, at: Chunk) -> Result<Option<Option<Bytes>>, BoxError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err("chunked body without a connection".into());
        };
        let buf = &mut conn.rbuf;
        match at {
            Chunk::Size => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if buf.len() > MAX_CHUNK_LINE_BYTES {
                        return Err("chunk-size line too long".into());
                    }
                    return Ok(None);
                };
                let size = chunk_size(&buf[..end]).ok_or("malformed chunk size")?;
                buf.advance(end + 2);
                self.state = State::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
                Ok(Some(None))
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                self.state = State::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Some(Some(data)))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF".into());
                }
                buf.advance(2);
                self.state = State::Chunked(Chunk::Size);
                Ok(Some(None))
            }
            Chunk::Trailers(seen) => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if seen + buf.len() > MAX_TRAILER_BYTES {
                        return Err("chunked trailers too large".into());
                    }
                    return Ok(None);
                };
                buf.advance(end + 2);
                if end == 0 {
                    self.finish();
                } else {
                    // Trailer fields are dropped, as the client never asked for them.
                    self.state = State::Chunked(Chunk::Trailers(seen + end + 2));
                }
                Ok(Some(None))
            }
        }
    }
}

/// `1*HEXDIG [ chunk-ext ]` (RFC 9112 §7.1), without overflow.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    // Extensions (`;name=value`) are allowed and ignored; whitespace before them too.
    let rest_ok = rest.is_empty() || {
        let trimmed = rest.iter().position(|b| !matches!(b, b' ' | b'\t'));
        trimmed.is_some_and(|i| rest[i] == b';')
    };
    if !rest_ok {
        return None;
    }
    let text = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(text, 16).ok()
}

impl http_body::Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match ready!(self.step(cx)) {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => {
                self.state = State::Done;
                self.conn = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            State::Chunked(_) | State::Close => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_follow_rfc_9112() {
        assert_eq!(chunk_size(b"5"), Some(5));
        assert_eq!(chunk_size(b"1aF"), Some(0x1af));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"a;name=value"), Some(10));
        assert_eq!(chunk_size(b"a ;x"), Some(10));
        assert_eq!(chunk_size(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in [&b""[..], b"x", b"-1", b"5 x", b"10000000000000000", b";ext"] {
            assert_eq!(chunk_size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
