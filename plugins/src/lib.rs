//! Collectors: one trait, registered in one place.
//!
//! A collector turns the host (or a root directory standing in for it in tests) into report
//! payloads. The agent's scheduler runs each one on its own interval, off the async runtime and
//! under a hard deadline, so a collector that hangs — `statvfs` on a dead NFS mount — is
//! abandoned and reported, and never blocks the others or the link. Collectors only read the host
//! (and, for the configured probes in [`checks::probes`], connect to their configured targets);
//! they never touch the outbox or the link — the scheduler does that with what they return.
#![forbid(unsafe_code)]

pub mod assets;
pub mod checks;
pub mod fim;
pub mod host;
pub mod inventory;
pub mod packages;
pub mod posture;

use std::path::PathBuf;
use std::time::Duration;

use bagui_protocol::Lane;

/// One payload produced by a collector, ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub lane: Lane,
    /// Payload kind (`bagui_protocol::messages::payload`).
    pub kind: &'static str,
    /// Encoded payload body.
    pub body: Vec<u8>,
}

/// Why a collector produced nothing this round.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Where a collector looks for the host's files: `/` in production, a fixture tree in tests.
#[derive(Debug, Clone)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> HostRoot {
        HostRoot(root.into())
    }

    /// `path` (absolute, as on the host) under this root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }

    /// Reads a file under the root.
    pub fn read(&self, path: &str) -> Result<String, CollectError> {
        let full = self.path(path);
        std::fs::read_to_string(&full).map_err(|source| CollectError::Read { path: full, source })
    }

    /// Reads a file under the root, `None` if it is missing or unreadable.
    pub fn read_optional(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.path(path)).ok()
    }
}

impl Default for HostRoot {
    fn default() -> HostRoot {
        HostRoot::new("/")
    }
}

/// A source of report payloads, run on a schedule under a deadline.
pub trait Collector: Send + Sync + 'static {
    /// Stable name, used in logs, metrics and config (`[collectors.NAME]`).
    fn name(&self) -> &'static str;
    /// How often to run by default.
    fn interval(&self) -> Duration;
    /// How long one run may take before it is abandoned and reported as an error.
    fn deadline(&self) -> Duration {
        Duration::from_secs(10)
    }
    /// Runs once. `now_ms` is the scheduler's clock (ms since the Unix epoch).
    fn collect(&self, now_ms: u64) -> Result<Vec<Output>, CollectError>;
    /// A cheap look, on the scheduler's own thread, whether a tick has work: a collector that
    /// ticks often but rarely has anything to do says no here and costs no thread hand-off.
    fn is_due(&self) -> bool {
        true
    }
    /// Every output of the last `collect` is durably in the outbox. A collector that sends
    /// differences moves its baseline forward here, and only here: if the outbox refused the
    /// outputs, the next run diffs against the old baseline again and nothing is lost.
    fn committed(&self) {}
    /// The control plane asked for everything rather than differences: the next `collect`
    /// sends a full snapshot.
    fn request_full(&self) {}
}

/// The built-in collectors. Adding a collector is one file plus one line here.
pub fn builtin(root: &HostRoot) -> Vec<Box<dyn Collector>> {
    vec![
        Box::new(host::HostFactsCollector::new(root.clone())),
        Box::new(host::BasicMetricsCollector::new(root.clone())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_are_unique_and_deadlines_fit_intervals() {
        let collectors = builtin(&HostRoot::default());
        let mut names = std::collections::HashSet::new();
        for collector in &collectors {
            assert!(
                names.insert(collector.name()),
                "duplicate {}",
                collector.name()
            );
            assert!(
                collector.deadline() <= collector.interval(),
                "{}",
                collector.name()
            );
        }
    }
}
