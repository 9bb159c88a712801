//! Handing freed heap memory back to the operating system after connections park.
//!
//! When idle HTTP/1 connections park (`server/idle.rs`, and upstream ones in
//! `upstream/pool.rs`), hyper's 16 KiB of buffers per connection are freed, but glibc's malloc keeps freed memory inside its heaps resident
//! unless it sits at the very top: with 10,000 parked connections RSS stayed at 87 MiB, and
//! `malloc_trim(0)` brought it to 56 MiB (bench/results/connections.txt). So a parking
//! schedules one trim [`RELEASE_DELAY_MS`] later; parkings in the meantime ride along, so a
//! burst of them costs one trim, and steady traffic that never parks costs nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Delay between the first parking of a burst and the trim that follows it; also the
/// shortest interval between two trims, so clients that go idle and come back all the time
/// (pollers) cause at most one trim per this interval.
pub const RELEASE_DELAY_MS: u64 = 2_000;

static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Notes that a noticeable amount of memory was freed; must run inside the tokio runtime.
pub fn freed() {
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        // Cleared however the task ends, also when its runtime shuts down first.
        let _unschedule = Unschedule;
        tokio::time::sleep(Duration::from_millis(RELEASE_DELAY_MS)).await;
        // Cleared before the trim: a parking during the trim schedules the next one.
        drop(_unschedule);
        // The trim walks the heaps (milliseconds for a large one): off the runtime threads.
        let _ = tokio::task::spawn_blocking(release).await;
    });
}

struct Unschedule;

impl Drop for Unschedule {
    fn drop(&mut self) {
        SCHEDULED.store(false, Ordering::Release);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release() {
    // SAFETY: malloc_trim takes no pointers, is thread-safe in glibc (it takes each arena's
    // lock), and only returns free pages to the kernel; it cannot invalidate live memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {
    // Other allocators (musl, macOS) return memory on their own terms.
}
