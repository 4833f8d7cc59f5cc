//! Runs collectors on their intervals, each under its deadline, and puts what they produce
//! into the outbox.
//!
//! A collector runs on a blocking thread. If it misses its deadline the scheduler stops
//! waiting, reports the error and moves on; the stuck thread is abandoned, and the collector
//! is skipped until it returns, so a dead NFS mount costs one thread, not one per interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bagui_plugins::Collector;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::join::now_ms;
use crate::outbox::Outbox;
use crate::status::StatusBoard;

/// One collector and how often it runs.
pub struct Scheduled {
    pub collector: Arc<dyn Collector>,
    pub interval: Duration,
    /// Run once right away (first contact) instead of after a random offset.
    pub run_at_start: bool,
}

async fn run_once(
    collector: &Arc<dyn Collector>,
    running: &Arc<AtomicBool>,
    outbox: &Outbox,
    status: &StatusBoard,
) {
    let name = collector.name();
    if !collector.is_due() {
        return;
    }
    if running.swap(true, Ordering::SeqCst) {
        tracing::warn!(
            collector = name,
            "previous run still hung; skipping this round"
        );
        status.update(|s| s.collector_errors += 1);
        return;
    }
    let task = {
        let collector = collector.clone();
        let running = running.clone();
        tokio::task::spawn_blocking(move || {
            let result = collector.collect(now_ms());
            running.store(false, Ordering::SeqCst);
            result
        })
    };
    match tokio::time::timeout(collector.deadline(), task).await {
        Ok(Ok(Ok(outputs))) => {
            let mut stored = true;
            for output in outputs {
                match outbox.push(output.lane, output.kind, now_ms(), &output.body) {
                    Ok(pushed) if pushed.seq.is_some() => {}
                    Ok(_) => stored = false,
                    Err(error) => {
                        tracing::error!(collector = name, %error, "writing to the outbox");
                        status.update(|s| s.collector_errors += 1);
                        stored = false;
                    }
                }
            }
            if stored {
                collector.committed();
            }
        }
        Ok(Ok(Err(error))) => {
            tracing::warn!(collector = name, %error, "collector failed");
            status.update(|s| s.collector_errors += 1);
        }
        Ok(Err(error)) => {
            tracing::error!(collector = name, %error, "collector panicked");
            status.update(|s| s.collector_errors += 1);
        }
        Err(_) => {
            tracing::warn!(collector = name, deadline = ?collector.deadline(), "collector missed its deadline; abandoned");
            status.update(|s| s.collector_errors += 1);
        }
    }
}

/// Starts one task per collector. `snapshots` asks for an immediate full run of `assets`
/// (and of `host_facts`).
pub fn spawn(
    scheduled: Vec<Scheduled>,
    outbox: Arc<Outbox>,
    status: StatusBoard,
    mut snapshots: mpsc::Receiver<()>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let mut snapshot_collectors = Vec::new();
    for item in scheduled {
        let running = Arc::new(AtomicBool::new(false));
        if matches!(item.collector.name(), "host_facts" | "assets") {
            snapshot_collectors.push((item.collector.clone(), running.clone()));
        }
        let outbox = outbox.clone();
        let status = status.clone();
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            // Spread the fleet: each agent starts each collector at its own offset.
            let offset = if item.run_at_start {
                Duration::ZERO
            } else {
                item.interval.mul_f64(rand::random::<f64>())
            };
            tokio::select! {
                _ = tokio::time::sleep(offset) => {}
                _ = crate::stopped(&mut shutdown) => return,
            }
            let mut tick = tokio::time::interval(item.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => run_once(&item.collector, &running, &outbox, &status).await,
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
        }));
    }
    let mut shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                request = snapshots.recv() => {
                    if request.is_none() {
                        return;
                    }
                    for (collector, running) in &snapshot_collectors {
                        collector.request_full();
                        run_once(collector, running, &outbox, &status).await;
                    }
                }
                _ = crate::stopped(&mut shutdown) => return,
            }
        }
    }));
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use bagui_plugins::{CollectError, Output};
    use bagui_protocol::Lane;

    struct Hanging;
    impl Collector for Hanging {
        fn name(&self) -> &'static str {
            "hanging"
        }
        fn interval(&self) -> Duration {
            Duration::from_millis(50)
        }
        fn deadline(&self) -> Duration {
            Duration::from_millis(20)
        }
        fn collect(&self, _: u64) -> Result<Vec<Output>, CollectError> {
            // Stands in for statvfs on a dead NFS mount.
            std::thread::sleep(Duration::from_secs(3));
            Ok(Vec::new())
        }
    }

    struct Quick;
    impl Collector for Quick {
        fn name(&self) -> &'static str {
            "quick"
        }
        fn interval(&self) -> Duration {
            Duration::from_millis(50)
        }
        fn collect(&self, _: u64) -> Result<Vec<Output>, CollectError> {
            Ok(vec![Output {
                lane: Lane::Metrics,
                kind: "metrics",
                body: vec![1],
            }])
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_collector_does_not_block_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(dir.path(), 1 << 20).unwrap());
        let status = StatusBoard::default();
        let (_snapshot_tx, snapshot_rx) = mpsc::channel(1);
        let (stop, shutdown) = watch::channel(false);
        let tasks = spawn(
            vec![
                Scheduled {
                    collector: Arc::new(Hanging),
                    interval: Duration::from_millis(50),
                    run_at_start: true,
                },
                Scheduled {
                    collector: Arc::new(Quick),
                    interval: Duration::from_millis(50),
                    run_at_start: true,
                },
            ],
            outbox.clone(),
            status.clone(),
            snapshot_rx,
            shutdown,
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        stop.send(true).unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            outbox.stats().records >= 5,
            "quick collector kept running: {:?}",
            outbox.stats()
        );
        // One deadline miss, then "still hung" skips — never a second stuck thread.
        assert!(status.get().collector_errors >= 2, "{:?}", status.get());
    }
}
