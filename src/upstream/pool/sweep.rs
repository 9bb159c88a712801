//! The pool's sweeper: closes idle connections past the idle timeout and parks those idle
//! past `UPSTREAM_PARK_AFTER_MS`.

use std::sync::Weak;
use std::time::Duration;

use super::{Held, Idle, Inner, POOL_SWEEP_INTERVAL_MAX_MS, UPSTREAM_PARK_AFTER_MS};

/// Until the pool is dropped: closes connections idle longer than the idle timeout, and parks
/// those idle longer than `UPSTREAM_PARK_AFTER_MS`.
pub(super) async fn sweep(pool: Weak<Inner>) {
    let every = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).min(Duration::from_millis(POOL_SWEEP_INTERVAL_MAX_MS)),
        None => return,
    };
    let park_after = Duration::from_millis(UPSTREAM_PARK_AFTER_MS);
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut closed: Vec<Idle> = Vec::new();
        let mut parked_any = false;
        {
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            for list in idle.values_mut() {
                // Oldest first: connections are pushed as they are released.
                let stale = list
                    .iter()
                    .take_while(|i| i.since.elapsed() >= pool.idle_timeout)
                    .count();
                closed.extend(list.drain(..stale));
                let parkable = list
                    .iter()
                    .take_while(|i| i.since.elapsed() >= park_after)
                    .count();
                let kept: Vec<Idle> = list
                    .drain(..parkable)
                    .filter_map(|i| match i.held {
                        Held::Parked(_) => Some(i),
                        held => {
                            parked_any = true;
                            held.into_stream().map(|stream| Idle {
                                held: Held::Parked(stream),
                                since: i.since,
                            })
                        }
                    })
                    .collect();
                list.splice(..0, kept);
            }
            idle.retain(|_, list| !list.is_empty());
        }
        // Closed outside the lock: dropping a connection closes its socket.
        drop(closed);
        if parked_any {
            // Their buffers are free: let the heap hand them back (see `heap`).
            crate::heap::freed();
        }
    }
}
