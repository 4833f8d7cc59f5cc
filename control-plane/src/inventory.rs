//! The asset ledger (一本账) and latest health, projected from reports after they are stored.
//!
//! The commit thread stores reports, makes them durable, acknowledges them and queues them
//! (durably, in the store's projection queue); the projector thread ([`spawn_projector`])
//! takes them from the queue in arrival order and hands each batch to [`project`], which
//! turns asset snapshots, asset change sets, check results, posture reports and metrics into
//! writes on the derived trees (see [`Projection`]). Acknowledgements therefore never wait
//! for decoding a 500-package snapshot or verifying an SM2 signature: at province scale a
//! first-contact storm is 18,000 snapshots, and projecting them inside the group commit made
//! acks wait minutes. The ledger lags the reports by the queue (`bagui_projection_lag_seconds`);
//! the queue survives a crash, so projection resumes where it stopped. The reports stay
//! stored as they came, so the ledger can always be rebuilt from them.
//!
//! An agent sends a full snapshot on first contact and change sets afterwards. A change set
//! names the digest of the snapshot it applies to; when that is not the stored one (a report
//! lost before this control plane's time, a restored agent), the changes are still recorded
//! in the history and applied as well as they go, the record is marked stale and a full
//! snapshot is requested. A full snapshot over an existing record is diffed against it, so the
//! history stays complete across resyncs.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bagui_protocol::assets::{
    self, ASSET_CHANGES, ASSET_SNAPSHOT, AssetChange, AssetChanges, AssetSnapshot, CHECK_RESULT,
    CheckResult,
};
use bagui_protocol::messages::payload::{self, METRICS, Metrics};

use crate::store::{
    AssetRecord, ChangeRecord, CheckRecord, MetricsRecord, NewReport, Projection, Store, StoreError,
};

/// Reports projected per round of the projector.
const PROJECT_BATCH: usize = 512;

/// Once the queue is drained, the next round starts at least this long after the last one
/// began. A round has a fixed cost (a queue scan, a write batch per touched tree, each taking
/// sled's store-wide write lock and a log reservation); woken by every group commit, the
/// projector paid it a hundred times a second at province scale for a few reports each time.
/// The ledger, health and thresholds trail the acknowledged data by at most this much more.
const PROJECT_PACE: Duration = Duration::from_millis(50);

/// What one round of [`project_pending`] did.
#[derive(Debug, Default)]
pub struct Round {
    /// Queue entries taken (reports projected, plus entries whose report was missing).
    pub taken: usize,
    /// `received_ms` of the oldest report projected.
    pub oldest_received_ms: Option<u64>,
    pub resync: Vec<String>,
    pub bad_payloads: u64,
    pub changes: u64,
    /// For the incident engine: check results and baseline checks that changed state.
    pub events: Vec<bagui_ops::incidents::Event>,
}

/// Projects up to `limit` queued reports and removes them from the queue.
pub fn project_pending(store: &Store, limit: usize) -> Result<Round, StoreError> {
    project_pending_observing(store, limit, &mut |_, _| {})
}

/// [`project_pending`], showing each projected health record to `observe` (the thresholds).
pub fn project_pending_observing(
    store: &Store,
    limit: usize,
    observe: &mut dyn FnMut(&str, &MetricsRecord),
) -> Result<Round, StoreError> {
    let pending = store.pending_projection(limit)?;
    let mut keys = Vec::with_capacity(pending.len());
    let mut reports = Vec::with_capacity(pending.len());
    for (key, report) in pending {
        keys.push(key);
        reports.extend(report);
    }
    let refs: Vec<&NewReport> = reports.iter().collect();
    let outcome = project(store, &refs);
    for (agent, record) in &outcome.projection.health {
        observe(agent, record);
    }
    store.finish_projection(outcome.projection, &keys)?;
    Ok(Round {
        taken: keys.len(),
        oldest_received_ms: reports.iter().map(|r| r.report.received_ms).min(),
        resync: outcome.resync,
        bad_payloads: outcome.bad_payloads,
        changes: outcome.changes,
        events: outcome.events,
    })
}

/// Wakes the projector after a commit.
#[derive(Clone, Debug)]
pub struct ProjectorWaker(std_mpsc::SyncSender<()>);

impl ProjectorWaker {
    pub fn wake(&self) {
        // Full: a wake-up is already pending, which is all we need.
        let _ = self.0.try_send(());
    }
}

/// Starts the projector thread. It builds the package index, drains the queue, then waits
/// for wake-ups; it stops when every [`ProjectorWaker`] is dropped (what is still queued is
/// projected at the next start). `followups` receives the agents whose asset record went
/// stale, for the server to ask each for a full snapshot.
pub fn spawn_projector(
    store: Store,
    metrics: crate::metrics::Metrics,
    followups: tokio::sync::mpsc::UnboundedSender<crate::ingest::Followup>,
    incidents: Option<crate::dispatch::LinkEvents>,
    thresholds: Vec<crate::thresholds::ThresholdRule>,
) -> (ProjectorWaker, std::thread::JoinHandle<()>) {
    let (waker, wakes) = std_mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("bagui-project".into())
        .spawn(move || {
            if let Err(error) = store.ensure_package_index() {
                tracing::error!(%error, "building the package index; `asset find --package` will retry");
            }
            let mut watch = crate::thresholds::ThresholdWatch::new(thresholds);
            let mut drained_at: Option<Instant> = None;
            loop {
                if let Some(drained_at) = drained_at.take() {
                    std::thread::sleep(PROJECT_PACE.saturating_sub(drained_at.elapsed()));
                }
                let round_started = Instant::now();
                let mut breaches = Vec::new();
                let mut observe = |agent: &str, record: &MetricsRecord| {
                    breaches.extend(watch.observe(agent, record.taken_ms, &record.samples));
                };
                let result = project_pending_observing(&store, PROJECT_BATCH, &mut observe);
                if let Some(incidents) = &incidents {
                    for event in breaches {
                        incidents.send(event);
                    }
                }
                match result {
                    Ok(round) if round.taken > 0 => {
                        let now = bagui_agent::join::now_ms();
                        if let Some(oldest) = round.oldest_received_ms {
                            metrics
                                .projection_lag_seconds
                                .set(now.saturating_sub(oldest) as f64 / 1000.0);
                        }
                        metrics.reports_projected.inc_by(round.taken as u64);
                        metrics.asset_changes.inc_by(round.changes);
                        metrics.payload_errors.inc_by(round.bad_payloads);
                        if let Some(incidents) = &incidents {
                            for event in round.events {
                                incidents.send(event);
                            }
                        }
                        for agent_id in round.resync {
                            metrics.resync_requests.inc();
                            // Nobody listening only means the server is stopping.
                            let _ = followups
                                .send(crate::ingest::Followup::FullSnapshot(agent_id));
                        }
                        // Stopping: what is left stays queued for the next start.
                        if let Err(std_mpsc::TryRecvError::Disconnected) = wakes.try_recv() {
                            break;
                        }
                        if round.taken < PROJECT_BATCH {
                            drained_at = Some(round_started);
                        }
                        continue;
                    }
                    Ok(_) => metrics.projection_lag_seconds.set(0.0),
                    Err(error) => {
                        tracing::error!(%error, "projecting stored reports; retrying in 1 s");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
                // The timeout is a safety net only: every commit wakes us.
                match wakes.recv_timeout(Duration::from_secs(1)) {
                    Ok(()) | Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        })
        .expect("spawning the projector thread");
    (ProjectorWaker(waker), thread)
}

/// What a batch projection produced besides store writes.
#[derive(Debug, Default)]
pub struct Outcome {
    pub projection: Projection,
    /// Agents whose stored snapshot no longer matches: ask them for a full snapshot.
    pub resync: Vec<String>,
    /// Reports whose payload could not be decoded (stored raw all the same).
    pub bad_payloads: u64,
    pub changes: u64,
    /// State changes for the incident engine (see [`Round::events`]).
    pub events: Vec<bagui_ops::incidents::Event>,
}

/// Projects a batch of fresh reports. Reads the current records from `store`; never fails:
/// an unreadable record or payload is logged and skipped (the raw report is still stored).
pub fn project(store: &Store, reports: &[&NewReport]) -> Outcome {
    let mut projector = Projector {
        store,
        assets: HashMap::new(),
        dirty: HashSet::new(),
        posture_seen: HashMap::new(),
        check_status: HashMap::new(),
        outcome: Outcome::default(),
    };
    for report in reports {
        projector.report(report);
    }
    projector.finish()
}

/// Who sent a report and when, for findings.
#[derive(Clone, Copy)]
struct Meta<'a> {
    agent_id: &'a str,
    seq: u64,
    received_ms: u64,
}

fn report_meta(report: &NewReport) -> Meta<'_> {
    Meta {
        agent_id: &report.agent_id,
        seq: report.seq,
        received_ms: report.report.received_ms,
    }
}

/// Listening ports that mean a cleartext or remote-shell service (等保: no cleartext remote
/// administration), with the service's name.
pub const RISKY_PORTS: [(u16, &str); 8] = [
    (21, "ftp"),
    (23, "telnet"),
    (69, "tftp"),
    (512, "rexec"),
    (513, "rlogin"),
    (514, "rsh"),
    (111, "rpcbind"),
    (2049, "nfs"),
];

fn is_high(severity: &str) -> bool {
    matches!(severity, "high" | "critical")
}

/// A check result whose status changed, as the incident engine's finding: CRITICAL is P2,
/// WARNING and UNKNOWN are P3, OK clears.
fn check_event(agent_id: &str, result: &CheckResult) -> bagui_ops::incidents::Event {
    use bagui_ops::model::{Category, Severity};
    let (severity, word) = match result.status {
        0 => (Severity::P3, "OK"),
        1 => (Severity::P3, "WARNING"),
        2 => (Severity::P2, "CRITICAL"),
        _ => (Severity::P3, "UNKNOWN"),
    };
    let category = if result.convention == "probe" {
        Category::Network
    } else {
        Category::Host
    };
    let mut title = format!("{} {word} on agent {agent_id}", result.name);
    let output = result.output.trim();
    if !output.is_empty() {
        title.push_str(": ");
        title.extend(output.chars().take(160));
    }
    bagui_ops::incidents::Event::Finding(bagui_ops::incidents::Finding {
        fingerprint: format!("check:{agent_id}:{}", result.name),
        subject: bagui_ops::incidents::Subject::Agent(agent_id.to_owned()),
        severity,
        category,
        title,
        firing: result.status != 0,
        at: result.started_ms,
    })
}

/// A high or critical baseline check (等保 2.0) that started or stopped failing, as a
/// security finding: critical is P1, high is P2.
fn baseline_event(
    agent_id: &str,
    result: &assets::PostureResult,
    failing: bool,
    at: u64,
) -> bagui_ops::incidents::Event {
    use bagui_ops::model::{Category, Severity};
    bagui_ops::incidents::Event::Finding(bagui_ops::incidents::Finding {
        fingerprint: format!("baseline:{agent_id}:{}", result.id),
        subject: bagui_ops::incidents::Subject::Agent(agent_id.to_owned()),
        severity: if result.severity == "critical" {
            Severity::P1
        } else {
            Severity::P2
        },
        category: Category::Security,
        title: format!("{} ({}) fails on agent {agent_id}", result.title, result.id),
        firing: failing,
        at,
    })
}

struct Projector<'a> {
    store: &'a Store,
    /// Asset records touched in this batch (`None`: the agent has none yet).
    assets: HashMap<String, Option<AssetRecord>>,
    /// Agents whose asset record this batch changed.
    dirty: HashSet<String>,
    /// Posture reports already projected in this batch.
    posture_seen: HashMap<String, assets::PostureReport>,
    outcome: Outcome,
    /// Status of each check as of the reports projected so far in this batch.
    check_status: HashMap<(String, String), u8>,
}

impl Projector<'_> {
    fn report(&mut self, report: &NewReport) {
        let kind = report.report.kind.as_str();
        let body = &report.report.body[..];
        let result = match kind {
            ASSET_SNAPSHOT => payload::decode::<AssetSnapshot>(body)
                .map(|snapshot| self.snapshot(report, snapshot)),
            ASSET_CHANGES => {
                payload::decode::<AssetChanges>(body).map(|changes| self.changes(report, changes))
            }
            CHECK_RESULT => {
                payload::decode::<CheckResult>(body).map(|result| self.check(report, result))
            }
            assets::POSTURE_REPORT => payload::decode::<assets::PostureReport>(body)
                .map(|posture| self.posture(report_meta(report), posture)),
            assets::FIM_EVENTS => payload::decode::<assets::FimEvents>(body)
                .map(|events| self.fim(report_meta(report), events)),
            METRICS => payload::decode::<Metrics>(body).map(|metrics| {
                self.outcome.projection.health.push((
                    report.agent_id.clone(),
                    MetricsRecord {
                        taken_ms: metrics.taken_ms,
                        received_ms: report.report.received_ms,
                        samples: metrics.samples,
                    },
                ));
            }),
            _ => Ok(()),
        };
        if let Err(error) = result {
            self.outcome.bad_payloads += 1;
            tracing::warn!(agent = %report.agent_id, seq = report.seq, kind, %error, "undecodable payload; stored raw, not projected");
        }
    }

    fn current(&mut self, agent_id: &str) -> Option<AssetRecord> {
        if let Some(record) = self.assets.get(agent_id) {
            return record.clone();
        }
        let record = match self.store.asset(agent_id) {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(agent = %agent_id, %error, "reading the asset record; replacing it");
                None
            }
        };
        self.assets.insert(agent_id.to_owned(), record.clone());
        record
    }

    fn record_changes(&mut self, report: &NewReport, time_ms: u64, changes: Vec<AssetChange>) {
        self.outcome.changes += changes.len() as u64;
        for change in changes {
            self.outcome.projection.changes.push(ChangeRecord {
                agent_id: report.agent_id.clone(),
                time_ms,
                received_ms: report.report.received_ms,
                seq: report.seq,
                change,
            });
        }
    }

    fn snapshot(&mut self, report: &NewReport, mut snapshot: AssetSnapshot) {
        let current = self.current(&report.agent_id);
        let added: Vec<assets::Listening> = match &current {
            Some(current) => snapshot
                .listening
                .iter()
                .filter(|socket| {
                    !current
                        .snapshot
                        .listening
                        .iter()
                        .any(|old| assets::Section::key(old) == assets::Section::key(*socket))
                })
                .cloned()
                .collect(),
            None => snapshot.listening.clone(),
        };
        self.risky_services(report_meta(report), snapshot.taken_ms, &added);
        if let Some(current) = &current {
            assets::carry_failed_sections(&current.snapshot, &mut snapshot);
            let changes = assets::diff(&current.snapshot, &snapshot);
            self.record_changes(report, snapshot.taken_ms, changes);
        }
        snapshot.normalize();
        if snapshot.digest.is_empty() {
            snapshot.digest = snapshot.compute_digest();
        }
        self.dirty.insert(report.agent_id.clone());
        self.assets.insert(
            report.agent_id.clone(),
            Some(AssetRecord {
                snapshot,
                updated_ms: report.report.received_ms,
                seq: report.seq,
                full_ms: report.report.received_ms,
                stale: false,
            }),
        );
    }

    fn changes(&mut self, report: &NewReport, changes: AssetChanges) {
        let added: Vec<assets::Listening> = changes
            .changes
            .iter()
            .filter(|change| change.section == "listening" && change.op == assets::ChangeOp::Added)
            .filter_map(|change| assets::decode_item(change.new.as_deref()?).ok())
            .collect();
        self.risky_services(report_meta(report), changes.taken_ms, &added);
        let Some(mut record) = self.current(&report.agent_id) else {
            // Changes with nothing to apply them to: keep them in the history, ask for the
            // whole picture.
            self.record_changes(report, changes.taken_ms, changes.changes);
            self.resync(&report.agent_id);
            return;
        };
        if record.snapshot.digest == changes.digest && !changes.digest.is_empty() {
            // Already applied (a resend after a crash between projection and report write).
            return;
        }
        let gap = record.snapshot.digest != changes.base_digest;
        match record.snapshot.apply(&changes.changes) {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(agent = %report.agent_id, %error, "asset changes do not apply; asking for a full snapshot");
                record.stale = true;
            }
        }
        if gap {
            tracing::info!(agent = %report.agent_id, "asset changes are based on another snapshot; asking for a full snapshot");
            record.stale = true;
        }
        if record.stale {
            self.resync(&report.agent_id);
        }
        record.snapshot.digest = changes.digest.clone();
        record.snapshot.taken_ms = changes.taken_ms;
        record.updated_ms = report.report.received_ms;
        record.seq = report.seq;
        self.record_changes(report, changes.taken_ms, changes.changes);
        self.dirty.insert(report.agent_id.clone());
        self.assets.insert(report.agent_id.clone(), Some(record));
    }

    fn check(&mut self, report: &NewReport, result: CheckResult) {
        let previous = self
            .store
            .check(&report.agent_id, &result.name)
            .ok()
            .flatten();
        let since_ms = match &previous {
            Some(previous) if previous.result.status == result.status => previous.since_ms,
            _ => result.started_ms,
        };
        // The engine hears of state changes only (a first result only when it is not OK):
        // a fleet's steady stream of OK results is no work for it.
        let key = (report.agent_id.clone(), result.name.clone());
        let before = self
            .check_status
            .get(&key)
            .copied()
            .or(previous.as_ref().map(|previous| previous.result.status));
        let changed = match before {
            Some(status) => status != result.status,
            None => result.status != 0,
        };
        self.check_status.insert(key, result.status);
        if changed {
            self.outcome
                .events
                .push(check_event(&report.agent_id, &result));
        }
        if let Some((at, record)) = probe_result(&result) {
            // Keyed by agent, probe and time: projecting the report again rewrites the same row.
            self.outcome.projection.probe_results.push((
                report.agent_id.clone(),
                result.name.clone(),
                at,
                record,
            ));
        }
        self.outcome.projection.checks.push((
            report.agent_id.clone(),
            result.name.clone(),
            CheckRecord {
                received_ms: report.report.received_ms,
                result,
                since_ms,
            },
        ));
    }

    fn finding(&mut self, meta: Meta<'_>, time_ms: u64, finding: crate::store::FindingRecord) {
        self.outcome
            .projection
            .findings
            .push(crate::store::FindingRecord {
                agent_id: meta.agent_id.to_owned(),
                time_ms,
                received_ms: meta.received_ms,
                seq: meta.seq,
                ..finding
            });
    }

    fn posture(&mut self, meta: Meta<'_>, report: assets::PostureReport) {
        let previous = self.posture_seen.get(meta.agent_id).cloned().or_else(|| {
            self.store
                .posture(meta.agent_id)
                .ok()
                .flatten()
                .map(|r| r.report)
        });
        let failing_before: HashSet<String> = previous
            .iter()
            .flat_map(|report| report.results.iter())
            .filter(|result| result.result == assets::CheckVerdict::Fail)
            .map(|result| result.id.clone())
            .collect();
        let high_failing_before: HashSet<&str> = previous
            .iter()
            .flat_map(|report| report.results.iter())
            .filter(|result| {
                result.result == assets::CheckVerdict::Fail && is_high(&result.severity)
            })
            .map(|result| result.id.as_str())
            .collect();
        for result in &report.results {
            let failing = result.result == assets::CheckVerdict::Fail && is_high(&result.severity);
            if failing != high_failing_before.contains(result.id.as_str()) {
                self.outcome.events.push(baseline_event(
                    meta.agent_id,
                    result,
                    failing,
                    report.taken_ms,
                ));
            }
            if result.result == assets::CheckVerdict::Fail
                && is_high(&result.severity)
                && !failing_before.contains(&result.id)
            {
                self.finding(
                    meta,
                    report.taken_ms,
                    crate::store::FindingRecord {
                        kind: "check_failed".into(),
                        severity: result.severity.clone(),
                        subject: result.id.clone(),
                        title: result.title.clone(),
                        evidence: result.evidence.clone(),
                        remediation: result.remediation.clone(),
                        ..Default::default()
                    },
                );
            }
        }
        self.posture_seen
            .insert(meta.agent_id.to_owned(), report.clone());
        let signed = self.posture_signed(meta.agent_id, &report);
        if !signed {
            tracing::warn!(agent = %meta.agent_id, "posture report without a valid SM2 signature");
        }
        self.outcome.projection.posture.push((
            meta.agent_id.to_owned(),
            crate::store::PostureRecord {
                report,
                received_ms: meta.received_ms,
                seq: meta.seq,
                signed,
            },
        ));
    }

    /// Whether the report carries a valid SM2 signature by the agent's registered key.
    fn posture_signed(&self, agent_id: &str, report: &assets::PostureReport) -> bool {
        use sm2::dsa::signature::Verifier;
        let Ok(Some(agent)) = self.store.agent(agent_id) else {
            return false;
        };
        let Ok(key) = sm2::dsa::VerifyingKey::from_sec1_bytes(
            bagui_protocol::proof::SM2_DISTID,
            &agent.sm2_public_key,
        ) else {
            return false;
        };
        let Ok(signature) = sm2::dsa::Signature::from_slice(&report.signature) else {
            return false;
        };
        key.verify(
            &bagui_protocol::proof::posture_transcript(agent_id, report),
            &signature,
        )
        .is_ok()
    }

    fn fim(&mut self, meta: Meta<'_>, events: assets::FimEvents) {
        for event in events.events {
            let mut evidence = Vec::new();
            if event.old_sm3 != event.new_sm3 {
                evidence.push(format!(
                    "sm3 {} → {}",
                    if event.old_sm3.is_empty() {
                        "-"
                    } else {
                        &event.old_sm3
                    },
                    if event.new_sm3.is_empty() {
                        "-"
                    } else {
                        &event.new_sm3
                    }
                ));
            }
            if event.old_size != event.new_size {
                evidence.push(format!("size {} → {}", event.old_size, event.new_size));
            }
            if event.old_mode != event.new_mode {
                evidence.push(format!("mode {:o} → {:o}", event.old_mode, event.new_mode));
            }
            if event.old_owner != event.new_owner {
                evidence.push(format!("owner {} → {}", event.old_owner, event.new_owner));
            }
            self.finding(
                meta,
                event.time_ms,
                crate::store::FindingRecord {
                    kind: "file_changed".into(),
                    severity: "high".into(),
                    title: format!("protected file {}: {}", event.change, event.path),
                    subject: event.path.clone(),
                    evidence,
                    remediation: "confirm the change was authorised (change ticket); otherwise restore the file and investigate the host".into(),
                    ..Default::default()
                },
            );
        }
    }

    /// A listening socket on a risky port that was not there before.
    fn risky_services(&mut self, meta: Meta<'_>, time_ms: u64, added: &[assets::Listening]) {
        for socket in added {
            if let Some((_, service)) = RISKY_PORTS.iter().find(|(port, _)| *port == socket.port) {
                self.finding(
                    meta,
                    time_ms,
                    crate::store::FindingRecord {
                        kind: "risky_service".into(),
                        severity: "high".into(),
                        subject: assets::Section::key(socket),
                        title: format!(
                            "{service} listening on {}:{} ({})",
                            socket.address, socket.port, socket.proto
                        ),
                        evidence: vec![format!(
                            "{}/{}:{} process {} pid {}",
                            socket.proto, socket.address, socket.port, socket.process, socket.pid
                        )],
                        remediation: format!(
                            "stop and disable the {service} service; use SSH (or SFTP) instead"
                        ),
                        ..Default::default()
                    },
                );
            }
        }
    }

    fn resync(&mut self, agent_id: &str) {
        if !self.outcome.resync.iter().any(|id| id == agent_id) {
            self.outcome.resync.push(agent_id.to_owned());
        }
    }

    fn finish(mut self) -> Outcome {
        for (agent_id, record) in self.assets {
            if let (Some(record), true) = (record, self.dirty.contains(&agent_id)) {
                self.outcome.projection.assets.push((agent_id, record));
            }
        }
        self.outcome
    }
}

// ---------------------------------------------------------------------------------------------
// Views: what the API and the CLI show
// ---------------------------------------------------------------------------------------------

/// `hardware` of [`AssetView`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HardwareView {
    #[serde(flatten)]
    pub machine: assets::Machine,
    pub disks: Vec<assets::Disk>,
    pub filesystems: Vec<assets::Filesystem>,
    pub nics: Vec<assets::Nic>,
}

/// The current asset record of one agent (`bagui-cp asset show`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AssetView {
    pub agent_id: String,
    pub hostname: String,
    pub division: String,
    pub division_path: String,
    pub online: bool,
    /// RFC 3339: when the agent took the snapshot the record reflects.
    pub taken: String,
    pub updated: String,
    pub full_snapshot: String,
    /// SM3 of the snapshot content, as the agent computed it.
    pub digest: String,
    /// Changes did not apply; a full snapshot has been asked for.
    pub stale: bool,
    pub os: assets::OsInfo,
    pub hardware: HardwareView,
    pub packages: Vec<assets::Package>,
    pub listening: Vec<assets::Listening>,
    pub users: Vec<assets::User>,
    pub groups: Vec<assets::Group>,
    pub services: Vec<assets::Service>,
    /// Sections the agent could not read last time (their previous items are kept).
    pub errors: Vec<assets::SectionError>,
}

impl AssetView {
    pub fn new(agent: &crate::admin::AgentView, record: AssetRecord) -> AssetView {
        let snapshot = record.snapshot;
        AssetView {
            agent_id: agent.id.clone(),
            hostname: agent.hostname.clone(),
            division: agent.division.clone(),
            division_path: agent.division_path.clone(),
            online: agent.online,
            taken: rfc3339(snapshot.taken_ms),
            updated: rfc3339(record.updated_ms),
            full_snapshot: rfc3339(record.full_ms),
            digest: snapshot.digest,
            stale: record.stale,
            os: snapshot.os,
            hardware: HardwareView {
                machine: snapshot.machine,
                disks: snapshot.disks,
                filesystems: snapshot.filesystems,
                nics: snapshot.nics,
            },
            packages: snapshot.packages,
            listening: snapshot.listening,
            users: snapshot.users,
            groups: snapshot.groups,
            services: snapshot.services,
            errors: snapshot.errors,
        }
    }
}

/// One entry of the change history (`bagui-cp asset changes`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ChangeView {
    /// RFC 3339: when the agent saw the change.
    pub time: String,
    pub received: String,
    pub agent_id: String,
    pub hostname: String,
    pub division: String,
    pub section: String,
    pub key: String,
    /// `added`, `removed` or `changed`.
    pub op: String,
    pub old: Option<serde_json::Value>,
    pub new: Option<serde_json::Value>,
    pub seq: u64,
}

fn item_json<T: assets::Section>(bytes: &[u8]) -> serde_json::Value {
    match assets::decode_item::<T>(bytes) {
        Ok(item) => serde_json::to_value(item).unwrap_or(serde_json::Value::Null),
        Err(error) => serde_json::json!({ "undecodable": error.to_string() }),
    }
}

/// An encoded item of `section` as JSON (a section this build does not know shows its size).
pub fn change_item_json(section: &str, bytes: &[u8]) -> serde_json::Value {
    match section {
        "os" => item_json::<assets::OsInfo>(bytes),
        "machine" => item_json::<assets::Machine>(bytes),
        "disk" => item_json::<assets::Disk>(bytes),
        "filesystem" => item_json::<assets::Filesystem>(bytes),
        "nic" => item_json::<assets::Nic>(bytes),
        "package" => item_json::<assets::Package>(bytes),
        "listening" => item_json::<assets::Listening>(bytes),
        "user" => item_json::<assets::User>(bytes),
        "group" => item_json::<assets::Group>(bytes),
        "service" => item_json::<assets::Service>(bytes),
        _ => serde_json::json!({ "unknown_section_bytes": bytes.len() }),
    }
}

impl ChangeView {
    pub fn new(record: ChangeRecord, hostname: &str, division: &str) -> ChangeView {
        let section = record.change.section.clone();
        ChangeView {
            time: rfc3339(record.time_ms),
            received: rfc3339(record.received_ms),
            agent_id: record.agent_id,
            hostname: hostname.to_owned(),
            division: division.to_owned(),
            key: record.change.key,
            op: record.change.op.as_str().to_owned(),
            old: record
                .change
                .old
                .map(|bytes| change_item_json(&section, &bytes)),
            new: record
                .change
                .new
                .map(|bytes| change_item_json(&section, &bytes)),
            section,
            seq: record.seq,
        }
    }

    /// A short `old → new` rendering for tables.
    pub fn summary(&self) -> String {
        fn short(value: &Option<serde_json::Value>) -> String {
            match value {
                None => "-".into(),
                Some(serde_json::Value::Object(map)) => {
                    for field in ["version", "process", "active", "shell", "size_bytes"] {
                        if let Some(value) = map.get(field) {
                            return match value {
                                serde_json::Value::String(text) => text.clone(),
                                other => other.to_string(),
                            };
                        }
                    }
                    serde_json::Value::Object(map.clone()).to_string()
                }
                Some(other) => other.to_string(),
            }
        }
        format!("{} → {}", short(&self.old), short(&self.new))
    }
}

/// One agent matching `bagui-cp asset find`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FindRow {
    pub agent_id: String,
    pub hostname: String,
    pub division: String,
    pub division_path: String,
    pub online: bool,
    pub os: String,
    /// The matching package, when searching by package.
    pub package: Option<assets::Package>,
    /// The matching listening sockets, when searching by port.
    pub listening: Vec<assets::Listening>,
}

/// The latest health of one agent (`bagui-cp health show`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HealthView {
    pub agent_id: String,
    pub online: bool,
    /// RFC 3339 of the latest metrics sample, `null` if none arrived yet.
    pub taken: Option<String>,
    pub samples: Vec<payload::Sample>,
    pub checks: Vec<CheckView>,
    /// The QUIC connection's own statistics from the last heartbeat (while online).
    pub link: Option<bagui_protocol::LinkStats>,
    /// The agent's clock minus the control plane's, in ms (while online).
    pub clock_offset_ms: Option<i64>,
}

/// The latest result of one check.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckView {
    pub name: String,
    /// `OK`, `WARNING`, `CRITICAL` or `UNKNOWN`.
    pub state: String,
    #[serde(flatten)]
    pub result: CheckResult,
    /// RFC 3339: since when the check has had this state.
    pub since: String,
    pub received: String,
}

impl CheckView {
    pub fn new(record: CheckRecord) -> CheckView {
        CheckView {
            name: record.result.name.clone(),
            state: record.result.status_text().to_owned(),
            since: rfc3339(record.since_ms),
            received: rfc3339(record.received_ms),
            result: record.result,
        }
    }
}

fn rfc3339(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    bagui_protocol::units::format_rfc3339(ms)
}

// ---------------------------------------------------------------------------------------------
// Posture views
// ---------------------------------------------------------------------------------------------

/// The latest baseline run of one agent (`bagui-cp posture show`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PostureView {
    pub agent_id: String,
    pub hostname: String,
    pub division: String,
    pub division_path: String,
    pub policy: String,
    /// 0..=100 (severity-weighted share of applicable checks passed).
    pub score: u32,
    pub taken: String,
    pub received: String,
    /// The report carried a valid SM2 signature by the agent's registered identity key.
    pub signed: bool,
    pub results: Vec<assets::PostureResult>,
}

/// One failing check on one agent (`bagui-cp posture failing`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FailingRow {
    pub agent_id: String,
    pub hostname: String,
    pub division: String,
    pub division_path: String,
    pub id: String,
    pub severity: String,
    pub title: String,
    pub evidence: Vec<String>,
    pub remediation: String,
}

/// A security finding (`bagui-cp posture findings`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FindingView {
    pub time: String,
    pub received: String,
    pub agent_id: String,
    pub hostname: String,
    pub division: String,
    pub kind: String,
    pub severity: String,
    pub subject: String,
    pub title: String,
    pub evidence: Vec<String>,
    pub remediation: String,
}

impl FindingView {
    pub fn new(record: crate::store::FindingRecord, hostname: &str, division: &str) -> FindingView {
        FindingView {
            time: rfc3339(record.time_ms),
            received: rfc3339(record.received_ms),
            agent_id: record.agent_id,
            hostname: hostname.to_owned(),
            division: division.to_owned(),
            kind: record.kind,
            severity: record.severity,
            subject: record.subject,
            title: record.title,
            evidence: record.evidence,
            remediation: record.remediation,
        }
    }
}

/// Posture of one division's subtree (`bagui-cp posture divisions`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DivisionPostureRow {
    pub division: String,
    pub name: String,
    /// Agents below it that sent a baseline run.
    pub hosts: u64,
    /// Mean of their scores (the division's posture score); `null` without hosts.
    pub score: Option<f64>,
    pub min_score: Option<u32>,
    /// Failing high or critical checks, summed over the hosts.
    pub failing_high: u64,
}

/// Orders severities for `--severity` filters.
pub fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// The history row of a probe result (a check of convention `probe`): OK is success, the
/// perfdata `time` (seconds) is the latency. `None` for other checks.
pub(crate) fn probe_result(result: &CheckResult) -> Option<(u64, crate::store::ProbeResultRecord)> {
    if result.convention != "probe" {
        return None;
    }
    let latency_ms = result
        .perfdata
        .iter()
        .find(|datum| datum.label == "time")
        .and_then(|datum| {
            let value = datum.value?;
            let factor = match datum.uom.as_str() {
                "s" => 1000.0,
                "ms" => 1.0,
                "us" => 0.001,
                _ => return None,
            };
            let ms = value * factor;
            // Saturating float → integer conversion; a negative time is no measurement.
            (ms.is_finite() && ms >= 0.0).then(|| ms.round() as u64)
        });
    Some((
        result.started_ms,
        crate::store::ProbeResultRecord {
            ok: result.status == 0 && result.error.is_none(),
            latency_ms,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AgentRecord, StoredReport};
    use bagui_protocol::Lane;
    use sm2::dsa::signature::Signer;

    fn signed_report(agent_id: &str, key: &sm2::SecretKey) -> assets::PostureReport {
        let mut report = assets::PostureReport {
            taken_ms: 1,
            policy: "test 1".into(),
            score: 40,
            results: vec![assets::PostureResult {
                id: "BG-SSH-001".into(),
                severity: "high".into(),
                result: assets::CheckVerdict::Fail,
                ..Default::default()
            }],
            signature: Default::default(),
        };
        let signing = sm2::dsa::SigningKey::new(bagui_protocol::proof::SM2_DISTID, key).unwrap();
        let signature: sm2::dsa::Signature = signing.sign(
            &bagui_protocol::proof::posture_transcript(agent_id, &report),
        );
        report.signature = serde_bytes::ByteBuf::from(signature.to_bytes().to_vec());
        report
    }

    fn new_report(agent_id: &str, seq: u64, report: &assets::PostureReport) -> NewReport {
        NewReport {
            agent_id: agent_id.into(),
            seq,
            report: StoredReport {
                lane: Lane::Security,
                kind: assets::POSTURE_REPORT.into(),
                body: serde_bytes::ByteBuf::from(payload::encode(report)),
                ..StoredReport::default()
            },
        }
    }

    #[test]
    fn check_state_changes_reach_the_incident_engine_and_steady_results_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let result = |seq: u64, status: u8| NewReport {
            agent_id: "ag-1".into(),
            seq,
            report: StoredReport {
                lane: Lane::State,
                kind: CHECK_RESULT.into(),
                body: serde_bytes::ByteBuf::from(payload::encode(&CheckResult {
                    name: "disk_root".into(),
                    convention: "nagios".into(),
                    status,
                    output: format!("status {status}"),
                    started_ms: seq * 1000,
                    ..CheckResult::default()
                })),
                ..StoredReport::default()
            },
        };
        let firing = |events: &[bagui_ops::incidents::Event]| -> Vec<bool> {
            events
                .iter()
                .map(|event| match event {
                    bagui_ops::incidents::Event::Finding(finding) => {
                        assert_eq!(finding.fingerprint, "check:ag-1:disk_root");
                        finding.firing
                    }
                    other => panic!("unexpected {other:?}"),
                })
                .collect()
        };
        // OK first: nothing. Then OK, CRITICAL, CRITICAL, OK in one batch: raise, then clear.
        let mut first = [result(1, 0)];
        store.insert_reports(&mut first).unwrap();
        assert!(project_pending(&store, 10).unwrap().events.is_empty());
        let mut batch = [result(2, 0), result(3, 2), result(4, 2), result(5, 0)];
        store.insert_reports(&mut batch).unwrap();
        let round = project_pending(&store, 10).unwrap();
        assert_eq!(firing(&round.events), vec![true, false]);
        // A replay of a stored CRITICAL after the OK is a change again (the engine dedupes).
        let mut again = [result(6, 2)];
        store.insert_reports(&mut again).unwrap();
        assert_eq!(
            firing(&project_pending(&store, 10).unwrap().events),
            vec![true]
        );
    }

    #[test]
    fn a_new_cleartext_service_is_a_finding_but_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let socket = |port: u16, process: &str| assets::Listening {
            proto: "tcp".into(),
            address: "0.0.0.0".into(),
            port,
            process: process.into(),
            pid: 100,
        };
        let mut first = AssetSnapshot {
            listening: vec![socket(22, "sshd")],
            ..AssetSnapshot::default()
        };
        first.seal();
        let report = |seq: u64, kind: &str, body: Vec<u8>| NewReport {
            agent_id: "ag-1".into(),
            seq,
            report: StoredReport {
                lane: Lane::Inventory,
                kind: kind.into(),
                body: serde_bytes::ByteBuf::from(body),
                ..StoredReport::default()
            },
        };
        let snapshot = report(1, ASSET_SNAPSHOT, payload::encode(&first));
        store.insert_reports(&mut [snapshot]).unwrap();
        assert_eq!(project_pending(&store, 10).unwrap().taken, 1);
        assert!(!store.projection_pending().unwrap());
        let mut second = first.clone();
        second.listening.push(socket(23, "in.telnetd"));
        second.seal();
        let changes = AssetChanges {
            taken_ms: 5,
            base_digest: first.digest.clone(),
            digest: second.digest.clone(),
            changes: assets::diff(&first, &second),
        };
        let outcome = project(
            &store,
            &[&report(2, ASSET_CHANGES, payload::encode(&changes))],
        );
        assert_eq!(outcome.projection.findings.len(), 1);
        let finding = &outcome.projection.findings[0];
        assert_eq!(
            (finding.kind.as_str(), finding.severity.as_str()),
            ("risky_service", "high")
        );
        assert!(finding.title.starts_with("telnet listening"), "{finding:?}");
        assert!(finding.evidence[0].contains("in.telnetd"));
        // sshd was there before: nothing about it.
        assert!(
            outcome
                .projection
                .findings
                .iter()
                .all(|f| !f.subject.contains(":22"))
        );
    }

    #[test]
    fn posture_signatures_are_checked_against_the_registered_key_and_failures_raise_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let key = bagui_agent::identity::generate_sm2_key().unwrap();
        store
            .put_agent(&AgentRecord {
                id: "ag-1".into(),
                sm2_public_key: serde_bytes::ByteBuf::from(
                    key.public_key().to_sec1_bytes().to_vec(),
                ),
                ..AgentRecord::default()
            })
            .unwrap();
        let good = signed_report("ag-1", &key);
        let outcome = project(&store, &[&new_report("ag-1", 1, &good)]);
        assert!(outcome.projection.posture[0].1.signed);
        assert_eq!(
            outcome.projection.findings.len(),
            1,
            "a newly failing high check"
        );
        // Signed by someone else, or tampered with after signing: not attributable.
        let other = bagui_agent::identity::generate_sm2_key().unwrap();
        let forged = signed_report("ag-1", &other);
        let mut tampered = good.clone();
        tampered.score = 100;
        for report in [forged, tampered] {
            let outcome = project(&store, &[&new_report("ag-1", 2, &report)]);
            assert!(!outcome.projection.posture[0].1.signed);
        }
        // The same failure reported again (after the first was stored) is not a new finding.
        store
            .insert_reports(&mut [new_report("ag-1", 1, &good)])
            .unwrap();
        project_pending(&store, 10).unwrap();
        let again = project(&store, &[&new_report("ag-1", 3, &good)]);
        assert!(again.projection.findings.is_empty());
    }

    fn snapshot_report(seq: u64, packages: &[(&str, &str)]) -> NewReport {
        let mut snapshot = AssetSnapshot {
            packages: packages
                .iter()
                .map(|(name, version)| assets::Package {
                    name: (*name).into(),
                    version: (*version).into(),
                    arch: "amd64".into(),
                    source: "dpkg".into(),
                })
                .collect(),
            ..AssetSnapshot::default()
        };
        snapshot.seal();
        NewReport {
            agent_id: "ag-1".into(),
            seq,
            report: StoredReport {
                lane: Lane::Inventory,
                kind: ASSET_SNAPSHOT.into(),
                body: serde_bytes::ByteBuf::from(payload::encode(&snapshot)),
                received_ms: 1_000 + seq,
                ..StoredReport::default()
            },
        }
    }

    #[test]
    fn the_projection_queue_survives_a_restart_and_the_package_index_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::create(&path).unwrap();
            let mut reports = [
                snapshot_report(1, &[("openssl", "3.0.11-1")]),
                snapshot_report(1, &[("openssl", "3.0.11-1")]),
            ];
            assert_eq!(
                store.insert_reports(&mut reports).unwrap(),
                [crate::store::Insert::New, crate::store::Insert::Duplicate]
            );
            // A report that did not open is stored, never projected.
            let mut sealed = snapshot_report(2, &[]);
            sealed.report.cipher = "sm4-ccm/sm2".into();
            store.insert_reports(&mut [sealed]).unwrap();
            store.flush().unwrap();
            // Stopped before the projector ran.
        }
        let store = Store::open_waiting(
            &path,
            crate::store::DEFAULT_CACHE_BYTES,
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        assert!(store.projection_pending().unwrap());
        assert!(store.asset("ag-1").unwrap().is_none());
        let round = project_pending(&store, 10).unwrap();
        assert_eq!((round.taken, round.oldest_received_ms), (1, Some(1_001)));
        assert!(!store.projection_pending().unwrap());
        assert_eq!(store.asset("ag-1").unwrap().unwrap().seq, 1);
        assert_eq!(project_pending(&store, 10).unwrap().taken, 0);
        store.flush().unwrap();
        drop(store);
        // The index is memory only: a new process builds it from the asset records.
        let store = Store::open_waiting(
            &path,
            crate::store::DEFAULT_CACHE_BYTES,
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        let holders = store.package_holders("openssl").unwrap();
        assert_eq!(holders.len(), 1);
        assert_eq!(
            (holders[0].agent_id.as_str(), holders[0].version.as_str()),
            ("ag-1", "3.0.11-1")
        );
        // ... and the projector keeps it current.
        store
            .insert_reports(&mut [snapshot_report(3, &[("openssl", "3.0.13-1")])])
            .unwrap();
        project_pending(&store, 10).unwrap();
        assert_eq!(
            store.package_holders("openssl").unwrap()[0].version,
            "3.0.13-1"
        );
    }
}
