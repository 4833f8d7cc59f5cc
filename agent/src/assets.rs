//! The asset collector: a full snapshot on first contact (or when the control plane asks),
//! afterwards only the changes, each an event with old and new values.
//!
//! The baseline (the last snapshot the control plane has been sent, in full or as changes) is
//! kept in the state directory, so a restarted agent sends changes, not the whole inventory
//! again. It moves forward only once the outputs are in the outbox ([`Collector::committed`]);
//! if the outbox refused them, the next run diffs against the old baseline and nothing is lost.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bagui_plugins::assets::AssetReader;
use bagui_plugins::{CollectError, Collector, HostRoot, Output};
use bagui_protocol::Lane;
use bagui_protocol::assets::{self, ASSET_CHANGES, ASSET_SNAPSHOT, AssetChanges, AssetSnapshot};
use bagui_protocol::messages::payload;

use crate::state::write_atomic;

/// Reads the asset snapshot and sends it whole or as changes.
pub struct AssetsCollector {
    reader: AssetReader,
    baseline_path: PathBuf,
    interval: Duration,
    baseline: Mutex<Option<AssetSnapshot>>,
    /// Produced by the last `collect`, waiting for `committed`.
    pending: Mutex<Option<AssetSnapshot>>,
    full_requested: AtomicBool,
}

impl std::fmt::Debug for AssetsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssetsCollector")
            .field("baseline_path", &self.baseline_path)
            .finish_non_exhaustive()
    }
}

impl AssetsCollector {
    /// `baseline_path` holds the last snapshot sent. A missing or unreadable one means the
    /// next run sends a full snapshot.
    pub fn new(root: HostRoot, baseline_path: PathBuf, interval: Duration) -> AssetsCollector {
        let baseline = match std::fs::read(&baseline_path) {
            Ok(bytes) => match payload::decode::<AssetSnapshot>(&bytes) {
                Ok(snapshot) => Some(snapshot),
                Err(error) => {
                    tracing::warn!(path = %baseline_path.display(), %error, "asset baseline unreadable; the next inventory is sent in full");
                    None
                }
            },
            Err(_) => None,
        };
        AssetsCollector {
            reader: AssetReader::new(root),
            baseline_path,
            interval,
            baseline: Mutex::new(baseline),
            pending: Mutex::new(None),
            full_requested: AtomicBool::new(false),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Collector for AssetsCollector {
    fn name(&self) -> &'static str {
        "assets"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline(&self) -> Duration {
        // Reading a large rpm database on a slow terminal takes seconds, not minutes.
        Duration::from_secs(30).min(self.interval)
    }

    fn collect(&self, now_ms: u64) -> Result<Vec<Output>, CollectError> {
        let mut snapshot = self.reader.read(now_ms);
        let full = self.full_requested.load(Ordering::SeqCst);
        let baseline = lock(&self.baseline).clone();
        let output = match baseline {
            Some(baseline) if !full => {
                assets::carry_failed_sections(&baseline, &mut snapshot);
                snapshot.seal();
                let changes = assets::diff(&baseline, &snapshot);
                if changes.is_empty() {
                    *lock(&self.pending) = None;
                    return Ok(Vec::new());
                }
                Output {
                    lane: Lane::Inventory,
                    kind: ASSET_CHANGES,
                    body: payload::encode(&AssetChanges {
                        taken_ms: now_ms,
                        base_digest: baseline.digest.clone(),
                        digest: snapshot.digest.clone(),
                        changes,
                    }),
                }
            }
            baseline => {
                if let Some(baseline) = &baseline {
                    assets::carry_failed_sections(baseline, &mut snapshot);
                    snapshot.seal();
                }
                Output {
                    lane: Lane::Inventory,
                    kind: ASSET_SNAPSHOT,
                    body: payload::encode(&snapshot),
                }
            }
        };
        *lock(&self.pending) = Some(snapshot);
        Ok(vec![output])
    }

    fn committed(&self) {
        let Some(snapshot) = lock(&self.pending).take() else {
            return;
        };
        if let Err(error) = write_atomic(&self.baseline_path, &payload::encode(&snapshot), 0o600) {
            // The control plane has the new state; without the file a restart sends a full
            // snapshot, which it handles (diffing against what it has).
            tracing::warn!(%error, "saving the asset baseline");
        }
        *lock(&self.baseline) = Some(snapshot);
        self.full_requested.store(false, Ordering::SeqCst);
    }

    fn request_full(&self) {
        self.full_requested.store(true, Ordering::SeqCst);
    }
}
