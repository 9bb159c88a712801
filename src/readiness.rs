//! Reading a TCP socket without the system call tokio spends learning that it is empty.
//!
//! tokio keeps a socket marked readable until a read finds nothing, which costs one more
//! system call per request. A read that leaves room in the buffer unused has emptied the
//! socket, so it clears the mark itself: `try_io` clears it only if no readiness event came
//! in meanwhile, and never clears a hang-up. Waiting for the next bytes, or watching for a
//! hang-up, then costs no system call. Used by the fast lane (`server::fast`) and the
//! upstream client (`upstream::stream`): 5.06 to 4.06 system calls per request.

use std::io;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Reads what `tcp` holds into `buf`'s spare room (which must have some); pending while
/// the socket has nothing. `Ok(0)`: the peer closed its side.
pub fn poll_read_drained(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_read_ready(cx))?;
        let mut got = 0;
        let read = tcp.try_io(Interest::READABLE, || {
            let room = buf.capacity() - buf.len();
            got = tcp.try_read_buf(buf)?;
            if got > 0 && got < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(got)
            }
        });
        match read {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => {
                return Poll::Ready(Ok(got))
            }
            // The mark was stale and is now cleared: poll again to wait.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
