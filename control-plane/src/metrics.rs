//! The control plane's own metrics, in Prometheus exposition format at `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the control plane exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reports_received: IntCounter,
    pub reports_duplicate: IntCounter,
    pub reports_undecryptable: IntCounter,
    pub reports_late: IntCounter,
    pub commit_seconds: Histogram,
    pub commit_batch_reports: Histogram,
    pub commit_errors: IntCounter,
    pub sessions: IntGauge,
    pub sessions_opened: IntCounter,
    pub sessions_closed: IntCounterVec,
    pub joins: IntCounterVec,
    pub admission_deferred: IntCounter,
    pub admission_held: IntCounter,
    pub runtime_lag_seconds: prometheus::Gauge,
    pub admission_refused: IntCounter,
    pub handshake_failures: IntCounter,
    pub asset_changes: IntCounter,
    pub payload_errors: IntCounter,
    pub resync_requests: IntCounter,
    pub reports_projected: IntCounter,
    pub reports_renumbered: IntCounter,
    pub projection_lag_seconds: prometheus::Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric name");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    let gauge = prometheus::Gauge::new(name, help).expect("valid metric name");
    registry
        .register(Box::new(gauge.clone()))
        .expect("metric registered once");
    gauge
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric name");
    registry
        .register(Box::new(histogram.clone()))
        .expect("metric registered once");
    histogram
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let sessions = IntGauge::new("bagui_sessions", "Agent sessions currently open")
            .expect("valid metric name");
        registry
            .register(Box::new(sessions.clone()))
            .expect("metric registered once");
        Metrics {
            reports_received: counter(
                &registry,
                "bagui_reports_received_total",
                "Reports received from agents",
            ),
            reports_duplicate: counter(
                &registry,
                "bagui_reports_duplicate_total",
                "Reports received again after being stored (acknowledged, not stored twice)",
            ),
            reports_undecryptable: counter(
                &registry,
                "bagui_reports_undecryptable_total",
                "Sealed reports that could not be opened (stored sealed, as received)",
            ),
            reports_late: counter(
                &registry,
                "bagui_reports_late_total",
                "Reports stored late (buffered by the agent)",
            ),
            commit_seconds: histogram(
                &registry,
                "bagui_ingest_commit_seconds",
                "Time to store and flush one group commit",
                vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
                ],
            ),
            commit_batch_reports: histogram(
                &registry,
                "bagui_ingest_commit_batch_reports",
                "Reports per group commit",
                vec![
                    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
                ],
            ),
            commit_errors: counter(
                &registry,
                "bagui_ingest_commit_errors_total",
                "Group commits that failed",
            ),
            sessions,
            sessions_opened: counter(
                &registry,
                "bagui_sessions_opened_total",
                "Agent sessions opened",
            ),
            sessions_closed: counter_vec(
                &registry,
                "bagui_sessions_closed_total",
                "Agent sessions closed, by reason",
                &["reason"],
            ),
            joins: counter_vec(
                &registry,
                "bagui_joins_total",
                "Enrollment requests, by result",
                &["result"],
            ),
            admission_deferred: counter(
                &registry,
                "bagui_admission_deferred_total",
                "Sessions told to come back later by admission control",
            ),
            runtime_lag_seconds: gauge(
                &registry,
                "bagui_runtime_lag_seconds",
                "How late the async runtime runs timers (smoothed); admission pauses above 20 ms",
            ),
            admission_held: counter(
                &registry,
                "bagui_admission_held_total",
                "Connection attempts held until their admission slot before the handshake",
            ),
            admission_refused: counter(
                &registry,
                "bagui_admission_refused_total",
                "Connection attempts dropped unanswered before the handshake (overloaded or beyond the horizon; the client retransmits)",
            ),
            handshake_failures: counter(
                &registry,
                "bagui_quic_handshake_failures_total",
                "QUIC handshakes that failed",
            ),
            asset_changes: counter(
                &registry,
                "bagui_asset_changes_total",
                "Asset changes recorded in the ledger's history",
            ),
            payload_errors: counter(
                &registry,
                "bagui_payload_errors_total",
                "Reports whose payload could not be decoded (stored raw, not projected)",
            ),
            resync_requests: counter(
                &registry,
                "bagui_asset_resync_requests_total",
                "Full asset snapshots asked for because changes did not match the stored state",
            ),
            reports_projected: counter(
                &registry,
                "bagui_reports_projected_total",
                "Stored reports projected into the asset ledger, health, checks and posture",
            ),
            reports_renumbered: counter(
                &registry,
                "bagui_reports_renumbered_total",
                "Reports not stored because another report holds their seq (agent state restored from a backup); the agent renumbers them",
            ),
            projection_lag_seconds: gauge(
                &registry,
                "bagui_projection_lag_seconds",
                "Age of the oldest report in the projector's latest round (0: the queue is empty)",
            ),
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "encoding metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
