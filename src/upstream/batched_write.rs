//! Upstream request heads written together: one io_uring submission carries every head that
//! requests read in the same turn of the event loop, instead of one send(2) each.
//!
//! Why: when the upstream shares a core with the gateway (a sidecar, or the benchmark's
//! one-core comparison), each send wakes it, and the kernel lets the woken upstream preempt
//! the gateway as soon as that send returns to user space, so it finds one request per wake.
//! Sends made inside one io_uring_enter all complete before that return: the upstream wakes
//! once and finds them all. Measured in `bench/results/batched-writes.txt`: 1.11x the
//! requests/s and 0.89x the CPU per request for tokens the cache does not know, 1.16x and
//! 0.86x for tokens it knows. The yield that gathers the batch came first, and alone did
//! part of it (0.92 -> 0.62 context switches per request, `bench/cpu-split.sh`).
//!
//! Soundness rests on three rules:
//! - every send carries `MSG_DONTWAIT`, which io_uring turns into "never wait": the send
//!   completes (or fails with EAGAIN) inside the io_uring_enter that submits it, and `flush`
//!   reaps a completion for every send the kernel took before it returns. After `flush`, the
//!   kernel refers to no buffer and no descriptor of ours;
//! - a queued send is flushed before its future can be dropped (`Queued::drop`), so the
//!   connection's buffer and socket outlive the kernel's use of them;
//! - a send that went out short, or found the socket full, finishes on tokio's ordinary
//!   write path, which waits for room.
//!
//! Without io_uring (kernel older than `MIN_KERNEL`, a seccomp filter that refuses it,
//! `--no-io-uring`) each head goes out with its own send, after the same yield.

use std::io;
use std::sync::OnceLock;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[cfg(target_os = "linux")]
mod uring;
#[cfg(target_os = "linux")]
use self::uring::Batcher;

/// Stands in where io_uring does not exist.
#[cfg(not(target_os = "linux"))]
struct Batcher;

#[cfg(not(target_os = "linux"))]
impl Batcher {
    fn new() -> Result<Self, String> {
        Err("io_uring is Linux-only".into())
    }

    async fn send(&self, _: &TcpStream, _: &[u8]) -> io::Result<usize> {
        Ok(0)
    }
}

static BATCHER: OnceLock<Option<Batcher>> = OnceLock::new();

/// Chooses, once per process and before the first request, whether upstream heads go
/// through io_uring. Returns why not, when asked for it and it is unavailable.
pub fn configure(enabled: bool) -> Option<String> {
    let mut why_not = None;
    let _ = BATCHER.set(if enabled {
        Batcher::new().map_err(|e| why_not = Some(e)).ok()
    } else {
        None
    });
    why_not
}

fn global() -> Option<&'static Batcher> {
    BATCHER.get_or_init(|| Batcher::new().ok()).as_ref()
}

/// Whether this process batches upstream writes.
pub fn enabled() -> bool {
    global().is_some()
}

/// Writes all of `buf` to `tcp`. Every other request ready in this turn of the event loop
/// runs first, so that their writes go out in the same submission.
pub async fn write_all(tcp: &mut TcpStream, buf: &[u8]) -> io::Result<()> {
    write_all_with(global(), tcp, buf).await
}

async fn write_all_with(
    batcher: Option<&Batcher>,
    tcp: &mut TcpStream,
    buf: &[u8],
) -> io::Result<()> {
    let sent = match batcher {
        Some(batcher) => batcher.send(tcp, buf).await?,
        None => {
            behind_queued_tasks().await;
            0
        }
    };
    if sent < buf.len() {
        tcp.write_all(&buf[sent..]).await?;
    }
    Ok(())
}

/// Yields once, to the back of the run queue: every task already queued (other requests read
/// in the same wake-up) runs before this one goes on.
///
/// Not `tokio::task::yield_now`: that one defers the task until after the runtime's next I/O
/// poll, behind the tasks that poll wakes, so each request waited a whole extra round of the
/// event loop. Measured against it (`bench/ab.sh`, 6 rounds): p99 0.913x (2.17 -> 1.98 ms),
/// at 0.989x the requests/s and 1.009x the CPU per request (smaller write batches). A task
/// that wakes itself while being polled is queued at the back in both of tokio's schedulers.
pub async fn behind_queued_tasks() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair on loopback: (the gateway's side, the upstream's side).
    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ours.unwrap(), theirs.unwrap().0)
    }

    async fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
            .await
            .expect("the bytes arrive")
            .unwrap();
        got
    }

    fn batcher() -> &'static Batcher {
        // Leaked: one ring per test, as the gateway has one per process.
        Box::leak(Box::new(
            Batcher::new().expect("io_uring works on the test machine"),
        ))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn writes_queued_in_one_turn_go_out_in_one_submission() {
        let batcher = batcher();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut ends = Vec::new();
        for _ in 0..20 {
            ends.push(pair(&listener).await);
        }
        let mut tasks = Vec::new();
        let mut peers = Vec::new();
        // Spawned with no await in between: all twenty are queued for the same turn.
        for (i, (mut ours, theirs)) in ends.into_iter().enumerate() {
            peers.push(theirs);
            tasks.push(tokio::spawn(async move {
                let head = format!("GET /{i} HTTP/1.1\r\nhost: u\r\n\r\n");
                write_all_with(Some(batcher), &mut ours, head.as_bytes())
                    .await
                    .unwrap();
                ours
            }));
        }
        let mut keep = Vec::new();
        for task in tasks {
            keep.push(task.await.unwrap());
        }
        for (i, peer) in peers.iter_mut().enumerate() {
            let head = format!("GET /{i} HTTP/1.1\r\nhost: u\r\n\r\n");
            assert_eq!(read_exactly(peer, head.len()).await, head.as_bytes());
        }
        // The twenty tasks ran in one turn, and the first to resume submitted for all.
        assert_eq!(batcher.counts(), (1, 20));
    }

    #[test]
    fn a_full_socket_is_not_waited_on_inside_the_ring() {
        // On its own thread: a ring that waited would block that thread for good, and the
        // test must then fail, not hang.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(full_socket());
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(20))
            .expect("a send on a full socket returned, and the rest was written");
    }

    async fn full_socket() {
        let batcher = batcher();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut ours, mut theirs) = pair(&listener).await;
        // Fill the socket (and the peer's receive buffer) until it takes nothing more.
        let chunk = vec![b'x'; 64 * 1024];
        let mut filled = 0;
        while let Ok(n) = ours.try_write(&chunk) {
            filled += n;
        }
        // MSG_DONTWAIT: the ring reports EAGAIN at once instead of waiting (which would block
        // this thread, and with it the reader below, for good).
        let sent = tokio::time::timeout(Duration::from_secs(5), batcher.send(&ours, b"tail"))
            .await
            .expect("a send on a full socket returns at once")
            .unwrap();
        assert_eq!(sent, 0);
        // The ordinary path then waits for room while the peer reads.
        let writer = tokio::spawn(async move {
            write_all_with(Some(batcher), &mut ours, b"tail")
                .await
                .unwrap();
            ours
        });
        let got = read_exactly(&mut theirs, filled + 4).await;
        assert!(got[..filled].iter().all(|&b| b == b'x'));
        assert_eq!(&got[filled..], b"tail");
        writer.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_send_dropped_before_its_turn_is_flushed_first() {
        let batcher = batcher();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ours, mut theirs) = pair(&listener).await;
        {
            let send = batcher.send(&ours, b"GET / HTTP/1.1\r\n\r\n");
            let mut send = std::pin::pin!(send);
            // One poll queues it and yields; then the future is dropped, as a timeout would.
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(send.as_mut().poll(cx)));
            assert!(first.await.is_pending());
            assert_eq!(batcher.counts(), (0, 0));
        }
        // Dropping flushed it: the kernel is done with the buffer and the socket.
        assert_eq!(batcher.counts(), (1, 1));
        drop(ours);
        assert_eq!(
            read_exactly(&mut theirs, 18).await,
            b"GET / HTTP/1.1\r\n\r\n"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_a_ring_each_write_goes_out_by_itself() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut ours, mut theirs) = pair(&listener).await;
        let big = vec![b'y'; 1 << 20];
        let reader = tokio::spawn(async move { read_exactly(&mut theirs, 1 << 20).await });
        write_all_with(None, &mut ours, &big).await.unwrap();
        assert_eq!(reader.await.unwrap(), big);
    }

    #[test]
    fn the_kernel_version_is_read() {
        let (major, _) = uring::kernel_version().expect("a Linux release string");
        assert!(major >= 3);
    }
}
