//! Expiry of stored reports (`[retention]`).
//!
//! Every report is stored as it came, and at province scale that is ~1,200 reports a second,
//! most of them metrics: kept forever they fill any disk in days. A sweep every
//! `sweep_every` removes, lane by lane, the reports that arrived longer ago than the lane's
//! retention, walking the store's arrival-time index so that it reads only what expires.
//! What the reports were projected into (the ledger, health, checks, posture, findings,
//! probe history) stays; so does each agent's newest report, which duplicate detection
//! needs after a restart.

use std::sync::Arc;
use std::time::Duration;

use bagui_protocol::Lane;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Reports removed per store step: one sled batch for the reports, one for the index.
const STEP: usize = 200;

/// After each step the sweep rests this many times as long as the step took. A removal
/// rewrites its agent's leaf of `reports`, which at province scale is mostly evicted from the
/// page cache, and a batch holds sled's store-wide write lock that every group commit needs:
/// unpaced, a sweep of 12,000 reports put 100 ms on the p99 of acks in its 5 s (measured
/// with 17,965 simulated agents). A quarter of the time still removes several thousand a
/// second, several times what a province fleet stores.
const REST_PER_WORK: u32 = 3;

/// Removes every report that has expired at `now_ms` under `retention` (by `Lane as usize`),
/// unless `stop` turns true first. Returns how many were removed.
pub fn sweep(
    store: &Store,
    retention: &[Duration; 4],
    now_ms: u64,
    stop: &dyn Fn() -> bool,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    for lane in Lane::ALL {
        let kept_ms = u64::try_from(retention[lane as usize].as_millis()).unwrap_or(u64::MAX);
        let before_ms = now_ms.saturating_sub(kept_ms);
        let mut after = None;
        loop {
            if stop() {
                return Ok(removed);
            }
            let started = std::time::Instant::now();
            let step = store.expire_reports(lane, before_ms, after.as_deref(), STEP)?;
            removed += step.removed;
            if step.removed > 0 {
                std::thread::sleep(started.elapsed() * REST_PER_WORK);
            }
            match step.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Ok(removed)
}

/// Sweeps every `every` until `shutdown` turns true, counting what it removes in
/// `bagui_reports_expired_total`. A failed sweep is logged and retried at the next one.
pub fn spawn(
    store: Store,
    retention: [Duration; 4],
    every: Duration,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let sweeping = store.clone();
            let now_ms = clock.now_ms();
            let stopping = shutdown.clone();
            let result = tokio::task::spawn_blocking(move || {
                sweep(&sweeping, &retention, now_ms, &|| *stopping.borrow())
            })
            .await;
            match store.size_on_disk() {
                Ok(bytes) => metrics.store_disk_bytes.set(bytes as f64),
                Err(error) => tracing::warn!(%error, "reading the store's size on disk"),
            }
            match result {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => {
                    metrics.reports_expired.inc_by(removed);
                    tracing::debug!(removed, "expired stored reports");
                }
                Ok(Err(error)) => tracing::error!(%error, "expiring stored reports"),
                Err(error) => tracing::error!(%error, "the expiry sweep panicked"),
            }
        }
    })
}
