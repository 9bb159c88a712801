//! The io_uring behind `batched_write`: one ring per process, shared by the runtime's
//! threads under a mutex, that only ever carries non-waiting sends (see the parent module's
//! rules).
// An audited exception to the crate's `deny(unsafe_code)` (listed in lib.rs): the kernel
// reads a queued send's buffer and writes its result cell after `push` returns, which the
// borrow checker cannot see; the parent module's rules are what keep it sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};

use io_uring::{opcode, types, IoUring};
use tokio::net::TcpStream;

use super::behind_queued_tasks;

/// Sends queued at most before a flush; more flush early. Far above the requests one turn of
/// the event loop reads at once (one per client connection with a request ready).
const RING_ENTRIES: u32 = 256;
/// io_uring honours MSG_DONTWAIT on sends (REQ_F_NOWAIT) in every 6.x kernel; older ones are
/// not trusted to, and a send that waited would hold a buffer past `flush`.
const MIN_KERNEL: (u32, u32) = (6, 1);
/// A send not yet submitted; results are byte counts or negative errnos.
const UNSUBMITTED: i32 = i32::MIN;
/// A send the ring could not take: written on the ordinary path instead.
const NOT_SENT: i32 = -libc::EAGAIN;
/// io_uring_enter(2)'s flag to wait for completions (Linux UAPI).
const IORING_ENTER_GETEVENTS: u32 = 1;

pub struct Batcher {
    inner: Mutex<Ring>,
}

struct Ring {
    ring: IoUring,
    /// The result cells of queued sends, in submission order.
    queued: Vec<*const AtomicI32>,
    /// Set after a submission failed: the ring is never entered again, so what it still
    /// holds is never read by the kernel.
    broken: bool,
    /// Submissions made, and sends they carried (tests read the ratio).
    submissions: u64,
    sends: u64,
}

// SAFETY: the cells behind `queued` are atomics that stay alive until their result is stored
// (the parent module's rules); the ring writes them only with the mutex held.
unsafe impl Send for Ring {}

impl Batcher {
    pub fn new() -> Result<Self, String> {
        let (major, minor) = kernel_version().ok_or("the kernel version is unknown")?;
        if (major, minor) < MIN_KERNEL {
            return Err(format!(
                "kernel {major}.{minor} is older than {}.{}",
                MIN_KERNEL.0, MIN_KERNEL.1
            ));
        }
        let ring = IoUring::builder()
            .setup_submit_all()
            .build(RING_ENTRIES)
            .map_err(|e| format!("io_uring_setup failed: {e}"))?;
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("io_uring probe failed: {e}"))?;
        if !probe.is_supported(opcode::Send::CODE) {
            return Err("io_uring has no send operation".into());
        }
        Ok(Batcher {
            inner: Mutex::new(Ring {
                ring,
                queued: Vec::with_capacity(RING_ENTRIES as usize),
                broken: false,
                submissions: 0,
                sends: 0,
            }),
        })
    }

    /// Queues one send, yields, and returns how many bytes went out through the ring (0 when
    /// the socket was full or the ring could not take it: the caller writes the rest).
    pub async fn send(&self, tcp: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        let queued = Queued {
            batcher: self,
            result: AtomicI32::new(UNSUBMITTED),
        };
        queued.push(tcp.as_raw_fd(), buf);
        behind_queued_tasks().await;
        let result = queued.finish();
        match result {
            NOT_SENT => Ok(0),
            n if n >= 0 => Ok(usize::try_from(n).unwrap_or(0).min(buf.len())),
            errno => Err(io::Error::from_raw_os_error(-errno)),
        }
    }

    /// Submissions made so far, and the sends they carried.
    #[cfg(test)]
    pub fn counts(&self) -> (u64, u64) {
        let ring = self.lock();
        (ring.submissions, ring.sends)
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic while the lock was held left no half-made state: every path through
        // `flush` ends with each taken send completed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One send in the ring; lives in the pinned state of `send`'s future, so the address the
/// kernel's completion is written to is stable.
struct Queued<'a> {
    batcher: &'a Batcher,
    /// `UNSUBMITTED` from creation until the send completes (or is refused at `push`).
    result: AtomicI32,
}

impl Queued<'_> {
    fn push(&self, fd: i32, buf: &[u8]) {
        let mut ring = self.batcher.lock();
        if ring.broken {
            self.result.store(NOT_SENT, Ordering::Relaxed);
            return;
        }
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fd(fd), buf.as_ptr(), len)
            .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            .build()
            .user_data(&self.result as *const AtomicI32 as u64);
        if ring.ring.submission().is_full() {
            flush(&mut ring);
            if ring.broken {
                self.result.store(NOT_SENT, Ordering::Relaxed);
                return;
            }
        }
        // SAFETY: `buf` and `fd` stay valid until the send completes: it is flushed, and
        // thereby completed, before `send` returns or its future is dropped (`Drop`).
        let pushed = unsafe { ring.ring.submission().push(&entry) };
        match pushed {
            Ok(()) => ring.queued.push(&self.result),
            Err(_) => self.result.store(NOT_SENT, Ordering::Relaxed),
        }
    }

    /// The send's result, flushing the ring first if nobody has yet. Without the lock when
    /// another task's flush already completed it (the usual case in a batch): a result is
    /// stored only once its completion is reaped, so the kernel is done with the buffer.
    fn finish(&self) -> i32 {
        let result = self.result.load(Ordering::Acquire);
        if result != UNSUBMITTED {
            return result;
        }
        let mut ring = self.batcher.lock();
        if self.result.load(Ordering::Relaxed) == UNSUBMITTED {
            flush(&mut ring);
        }
        self.result.load(Ordering::Relaxed)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Submits every queued send and waits until each one the kernel took has completed;
/// those it did not take are marked `NOT_SENT` and the ring is retired.
fn flush(ring: &mut Ring) {
    if ring.queued.is_empty() {
        return;
    }
    let taken = loop {
        match ring.ring.submit() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "io_uring submission failed; upstream writes go out one by one from now on");
                break 0;
            }
            Ok(n) => break n.min(ring.queued.len()),
        }
    };
    ring.submissions += 1;
    ring.sends += taken as u64;
    let mut done = 0;
    while done < taken {
        done += reap(ring);
        if done < taken {
            // MSG_DONTWAIT sends complete during the submission; waiting here is a guard
            // against a kernel that breaks that, not a path taken. It submits nothing: an
            // entry the kernel did not take must never go out after its writer fell back.
            // SAFETY: no argument is passed; the call only waits for completions.
            let waited = unsafe {
                ring.ring
                    .submitter()
                    .enter::<libc::sigset_t>(0, 1, IORING_ENTER_GETEVENTS, None)
            };
            match waited {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Going on could free a buffer the kernel is about to read.
                    tracing::error!(error = %e, "io_uring wait failed; aborting");
                    std::process::abort();
                }
            }
        }
    }
    if taken < ring.queued.len() {
        // Left in the ring, never to be submitted: their writers use the ordinary path.
        ring.broken = true;
        for cell in &ring.queued[taken..] {
            // SAFETY: an untaken cell still reads UNSUBMITTED, so its `Queued` is waiting for
            // the lock we hold (or has not looked yet) and is alive; this is its one write.
            unsafe { (**cell).store(NOT_SENT, Ordering::Release) };
        }
    }
    ring.queued.clear();
}

/// Stores every available completion in its send's cell; returns how many.
fn reap(ring: &mut Ring) -> usize {
    let mut n = 0;
    for cqe in ring.ring.completion() {
        let cell = cqe.user_data() as *const AtomicI32;
        // SAFETY: user data is the address of a queued send's cell. Until this store it reads
        // UNSUBMITTED, which keeps its `Queued` alive (it waits for the lock we hold); after
        // it, the cell is never touched here again, so its owner may go at once.
        unsafe { (*cell).store(cqe.result(), Ordering::Release) };
        n += 1;
    }
    n
}

/// The running kernel's major and minor version.
pub(super) fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
