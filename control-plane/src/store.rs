//! Durable state of the control plane, behind typed methods.
//!
//! This is the only module that knows about sled; every other module speaks in records. sled's
//! last release is from 2021, so keeping it behind this boundary is what lets another engine
//! (redb, or PostgreSQL for the multi-node plan) replace it without touching the rest.
//!
//! Values are MessagePack maps with named fields, like the wire protocol, so that a newer
//! release can add a field to a record and still read the records an older one wrote.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bagui_protocol::assets::{AssetChange, AssetSnapshot, CheckResult};
use bagui_protocol::messages::payload::Sample;
use bagui_protocol::{Lane, LinkStats, MachineFacts, OutboxStats, Role};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::package_index::{Holding, PackageIndex};

/// Page cache of a store opened without a configured size (CLI verbs).
pub const DEFAULT_CACHE_BYTES: u64 = 16 << 20;

/// Version of the stored layout. Recorded at `init`; a store of another version is refused,
/// except an older one this build upgrades in place (see [`Store::open_with_cache`]).
/// 2: projection-queue entries carry their report (see [`queue_entry`]).
pub const SCHEMA_VERSION: u32 = 2;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another process (is `bagui-cp run` running?)")]
    Locked { path: PathBuf },
    #[error("no store at {path} (run `bagui-cp init` first)")]
    Missing { path: PathBuf },
    #[error("the store at {path} has schema version {found}, this build reads version {expected}")]
    Schema {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: record {key:?} in {tree} cannot be decoded: {source}")]
    Decode {
        tree: &'static str,
        key: String,
        #[source]
        source: rmp_serde::decode::Error,
    },
    #[error("store: record {key:?} in {tree} is damaged: {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error("store: encoding a record for {tree}: {source}")]
    Encode {
        tree: &'static str,
        #[source]
        source: rmp_serde::encode::Error,
    },
    #[error("store: {0}")]
    Conflict(String),
}

/// A join token as stored; the secret itself is never stored, only its SM3 digest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenRecord {
    pub id: String,
    pub secret_digest: String,
    pub division: String,
    pub role: Role,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked_ms: Option<u64>,
    pub description: String,
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentRecord {
    pub id: String,
    pub division: String,
    pub role: Role,
    pub instance_id: String,
    pub facts: MachineFacts,
    /// SEC1 uncompressed SM2 public key: verifies identity proofs and signed reports.
    pub sm2_public_key: ByteBuf,
    /// `sm3:` of the current client certificate (DER).
    pub certificate_fingerprint: String,
    pub certificate_issued_ms: u64,
    pub certificate_not_after_ms: u64,
    pub created_ms: u64,
    pub joined_ms: u64,
    pub token_id: String,
    pub agent_version: String,
    pub possible_clone: bool,
    /// The agent whose machine-id this one shares, when flagged.
    pub clone_of: Option<String>,
    pub revoked_ms: Option<u64>,
    /// Admin override of the computed uplink (an agent id).
    pub uplink_override: Option<String>,
    pub last_seen_ms: u64,
    pub outbox: OutboxStats,
    pub link: LinkStats,
}

/// A client certificate the CA issued, by fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CertRecord {
    pub agent_id: String,
    pub issued_ms: u64,
    pub not_after_ms: u64,
    pub revoked: bool,
}

/// One stored report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredReport {
    pub lane: Lane,
    pub kind: String,
    pub created_ms: u64,
    pub received_ms: u64,
    /// Produced long before it arrived (buffered through an outage).
    pub late: bool,
    /// Store-wide arrival order, increasing across restarts.
    pub arrival: u64,
    pub body: ByteBuf,
    /// `""`: `body` is plaintext (as sent, or opened at ingest). Otherwise the body is still
    /// sealed as the agent sent it because it could not be opened (counted in
    /// `bagui_reports_undecryptable_total`), and this names the seal.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cipher: String,
}

/// The current asset state of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AssetRecord {
    pub snapshot: AssetSnapshot,
    /// When the control plane last changed this record.
    pub updated_ms: u64,
    /// Sequence number of the report that last changed it.
    pub seq: u64,
    /// When the last full snapshot arrived.
    pub full_ms: u64,
    /// Changes arrived that did not apply to the stored state (a gap); a full snapshot has
    /// been asked for and will replace this record.
    pub stale: bool,
}

/// One asset change, as appended to the history.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChangeRecord {
    pub agent_id: String,
    /// When the agent saw the change (its snapshot time).
    pub time_ms: u64,
    pub received_ms: u64,
    pub seq: u64,
    pub change: AssetChange,
}

/// The latest health samples of an agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsRecord {
    pub taken_ms: u64,
    pub received_ms: u64,
    pub samples: Vec<Sample>,
}

/// The latest result of one check on one agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckRecord {
    pub received_ms: u64,
    pub result: CheckResult,
    /// When the status last changed.
    pub since_ms: u64,
}

/// The latest baseline run of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PostureRecord {
    pub report: bagui_protocol::assets::PostureReport,
    pub received_ms: u64,
    pub seq: u64,
    /// The report's SM2 signature verified against the key the agent registered at join.
    pub signed: bool,
}

/// A security finding: what the security team is told about (the incident engine routes it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FindingRecord {
    pub agent_id: String,
    pub time_ms: u64,
    pub received_ms: u64,
    pub seq: u64,
    /// `check_failed`, `risky_service`, `file_changed`.
    pub kind: String,
    /// `low`, `medium`, `high`, `critical`.
    pub severity: String,
    /// Check id, `proto/address:port`, or the file path.
    pub subject: String,
    pub title: String,
    pub evidence: Vec<String>,
    pub remediation: String,
}

/// The probes pushed to one agent and whether it confirmed the latest set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeSet {
    pub probes: Vec<bagui_protocol::PushedProbe>,
    /// The command that last carried this set to the agent (0: never sent).
    pub command_id: u64,
    /// The agent confirmed `command_id`; otherwise the set is sent at its next session.
    pub delivered: bool,
}

/// What [`Store::insert_reports`] made of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Stored.
    New,
    /// Already stored — the same lane, kind and creation time under this seq (a resend after
    /// a lost ack, a replay): acknowledged again, not stored twice.
    Duplicate,
    /// A different report is stored under this seq: the agent's numbering went back (its state
    /// restored from a backup or a VM snapshot). Not stored and not acknowledged; the agent
    /// is told to send it again under a new number.
    Reused,
}

/// Writes derived from a batch of stored reports (the asset ledger, health, checks, posture,
/// findings), applied by [`Store::finish_projection`].
#[derive(Debug, Default)]
pub struct Projection {
    pub assets: Vec<(String, AssetRecord)>,
    pub changes: Vec<ChangeRecord>,
    pub health: Vec<(String, MetricsRecord)>,
    pub checks: Vec<(String, String, CheckRecord)>,
    pub posture: Vec<(String, PostureRecord)>,
    pub findings: Vec<FindingRecord>,
    /// `(agent, probe check name, result time, result)`: appended to the probe history.
    pub probe_results: Vec<(String, String, u64, ProbeResultRecord)>,
}

/// One stored result of a probe (a check of convention `probe`), for 服务在线.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeResultRecord {
    /// The probe answered as expected (status OK).
    pub ok: bool,
    /// The measured latency (perfdata `time`), if reported.
    pub latency_ms: Option<u64>,
}

/// One entry of the SM3-chained audit log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditEntry {
    pub seq: u64,
    pub time_ms: u64,
    /// Who acted: `admin`, `agent:<id>`, `system`, a user name later.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    /// Hex SM3 of the previous entry (all zeros for the first).
    pub prev_hash: String,
    /// Hex SM3 over this entry with `hash` empty.
    pub hash: String,
}

/// A report to store, as handed over by ingest.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub agent_id: String,
    pub seq: u64,
    pub report: StoredReport,
}

/// An enrollment to commit (see [`Store::commit_enrollment`]).
#[derive(Clone, Copy)]
pub struct Enrollment<'a> {
    pub agent_id: &'a str,
    /// The record to start from when the agent does not exist yet; `None`: it must exist.
    pub new_agent: Option<&'a AgentRecord>,
    /// Applied to the current record inside the transaction (may run more than once).
    pub change: &'a dyn Fn(&mut AgentRecord),
    pub cert: &'a CertRecord,
    /// A token to use once, checked at `now_ms`.
    pub token: Option<(&'a str, u64)>,
}

/// Why the stored state refused an enrollment commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitRefusal {
    AgentMissing,
    AgentRevoked,
    TokenMissing,
    TokenRevoked,
    TokenExpired,
    TokenUsedUp,
}

enum TxAbort {
    Refused(CommitRefusal),
    Corrupt(String),
}

fn tx_refuse<T>(refusal: CommitRefusal) -> Result<T, ConflictableTransactionError<TxAbort>> {
    Err(ConflictableTransactionError::Abort(TxAbort::Refused(
        refusal,
    )))
}

fn tx_decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, ConflictableTransactionError<TxAbort>> {
    decode(tree, key, bytes)
        .map_err(|error| ConflictableTransactionError::Abort(TxAbort::Corrupt(error.to_string())))
}

fn tx_encode<T: Serialize>(
    tree: &'static str,
    value: &T,
) -> Result<Vec<u8>, ConflictableTransactionError<TxAbort>> {
    encode(tree, value)
        .map_err(|error| ConflictableTransactionError::Abort(TxAbort::Corrupt(error.to_string())))
}

fn machine_key(machine_id: &str, instance_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(machine_id.len() + instance_id.len() + 1);
    key.extend_from_slice(machine_id.as_bytes());
    key.push(0);
    key.extend_from_slice(instance_id.as_bytes());
    key
}

fn encode<T: Serialize>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(value).map_err(|source| StoreError::Encode { tree, source })
}

/// First byte of a packed value: 0xc1 is the one byte MessagePack never uses, so a packed
/// value cannot be mistaken for a plain one (and plain values written before packing existed
/// still read).
const PACKED: u8 = 0xc1;

/// Values at least this large are packed by [`encode_packed`].
const PACK_FROM: usize = 1024;

/// Like [`encode`], LZ4-compressed when large: asset snapshots and the raw reports that carry
/// them. sled keeps the values it writes in memory for a long while, so at province scale
/// their size is the control plane's RSS (18,000 × 500-package snapshots ≈ 450 MB raw).
fn encode_packed<T: Serialize>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    let plain = encode(tree, value)?;
    if plain.len() < PACK_FROM {
        return Ok(plain);
    }
    let mut packed = Vec::with_capacity(plain.len() / 3 + 16);
    packed.push(PACKED);
    packed.extend_from_slice(&lz4_flex::compress_prepend_size(&plain));
    Ok(if packed.len() < plain.len() {
        packed
    } else {
        plain
    })
}

/// (plain, as stored) sizes of a value the store packs, for benchmarks and capacity planning.
pub fn packed_size<T: Serialize>(value: &T) -> Result<(usize, usize), StoreError> {
    Ok((
        encode("packed_size", value)?.len(),
        encode_packed("packed_size", value)?.len(),
    ))
}

/// Largest unpacked value accepted: a corrupt length prefix must not allocate gigabytes.
const UNPACKED_MAX: usize = 256 << 20;

fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let key_text = || String::from_utf8_lossy(key).into_owned();
    let unpacked;
    let plain = match bytes.split_first() {
        Some((&PACKED, packed)) => {
            let claimed = packed
                .get(..4)
                .map(|len| u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize)
                .unwrap_or(usize::MAX);
            if claimed > UNPACKED_MAX {
                return Err(StoreError::Corrupt {
                    tree,
                    key: key_text(),
                    reason: format!("packed value claims {claimed} bytes"),
                });
            }
            unpacked = lz4_flex::decompress_size_prepended(packed).map_err(|error| {
                StoreError::Corrupt {
                    tree,
                    key: key_text(),
                    reason: error.to_string(),
                }
            })?;
            &unpacked[..]
        }
        _ => bytes,
    };
    rmp_serde::from_slice(plain).map_err(|source| StoreError::Decode {
        tree,
        key: key_text(),
        source,
    })
}

fn report_key(agent_id: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(agent_id.len() + 9);
    key.extend_from_slice(agent_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// First byte of a projection-queue entry that carries its report (an agent id, which began
/// every entry of schema version 1, is never empty and never starts with NUL).
const QUEUE_INLINE: u8 = 0;

/// A projection-queue entry: the report's key and its stored bytes. The projector reads the
/// report from here instead of from `reports`, where each agent's latest leaf is somewhere
/// else and, at 50,000 agents, mostly evicted from the page cache (a third of the
/// projector's time went to those reads).
fn queue_entry(report_key: &[u8], stored: &[u8]) -> Vec<u8> {
    if report_key.len() > usize::from(u16::MAX) {
        // Not an id this control plane issues; the key alone still works (version 1).
        return report_key.to_vec();
    }
    let mut entry = Vec::with_capacity(3 + report_key.len() + stored.len());
    entry.push(QUEUE_INLINE);
    entry.extend_from_slice(&(report_key.len() as u16).to_be_bytes());
    entry.extend_from_slice(report_key);
    entry.extend_from_slice(stored);
    entry
}

/// A queue entry's report key and, unless it is a version 1 entry, the report's bytes.
fn parse_queue_entry(entry: &[u8]) -> (&[u8], Option<&[u8]>) {
    if let [QUEUE_INLINE, high, low, rest @ ..] = entry {
        let length = usize::from(u16::from_be_bytes([*high, *low]));
        if length <= rest.len() {
            let (key, stored) = rest.split_at(length);
            return (key, Some(stored));
        }
    }
    (entry, None)
}

/// Applies `writes` to `tree` as one atomic batch. No writes, no batch: an empty sled batch
/// still takes the store-wide write lock and reserves and seals a log entry, and most
/// projection rounds touch two trees of seven.
fn apply_writes(
    tree: &sled::Tree,
    writes: impl IntoIterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>>,
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut any = false;
    for write in writes {
        let (key, value) = write?;
        batch.insert(key, value);
        any = true;
    }
    if any {
        tree.apply_batch(batch)?;
    }
    Ok(())
}

fn joined_key(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|part| part.len() + 1).sum());
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

fn change_key(change: &ChangeRecord, index: u32) -> Vec<u8> {
    let mut key = change.time_ms.to_be_bytes().to_vec();
    key.extend_from_slice(change.agent_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&change.seq.to_be_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn probe_result_key(agent: &str, probe: &str, at: u64) -> Vec<u8> {
    let mut key = joined_key(&[agent.as_bytes(), probe.as_bytes(), b""]);
    key.extend_from_slice(&at.to_be_bytes());
    key
}

fn report_prefix(agent_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(agent_id.len() + 1);
    key.extend_from_slice(agent_id.as_bytes());
    key.push(0);
    key
}

fn seq_of_key(key: &[u8]) -> u64 {
    let tail = &key[key.len().saturating_sub(8)..];
    let mut bytes = [0u8; 8];
    bytes[8 - tail.len()..].copy_from_slice(tail);
    u64::from_be_bytes(bytes)
}

/// How a client certificate stands, from [`Store::certificate_standing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Issued to this agent; neither it nor the agent is revoked.
    Agent(String),
    /// Not issued by this control plane, or issued to an agent it no longer knows.
    Unknown,
    /// The certificate or its agent is revoked.
    Revoked,
    /// Its record (or its agent's) did not decode when the store was opened.
    Unreadable,
}

/// What opening a session reads — certificate → agent, revocations, undelivered probe sets —
/// kept in memory, so that thousands of agents connecting at once never wait on the store:
/// sled takes a process-wide lock for reads while any batch is being applied, and session
/// opens run on the async workers. Built when the store opens; every write of an agent, a
/// certificate or a probe set through [`Store`] updates it right after the write.
/// Revocation only ever goes one way, so an update overtaken by another one cannot undo it.
#[derive(Debug, Default)]
struct SessionIndex {
    /// certificate fingerprint → (agent id, revoked).
    certs: HashMap<Box<str>, (Arc<str>, bool)>,
    /// agent id → revoked.
    agents: HashMap<Arc<str>, bool>,
    /// Agents with a probe set they have not confirmed.
    pending_probes: HashSet<Arc<str>>,
    /// Fingerprints and agent ids whose records did not decode.
    unreadable: HashSet<Box<str>>,
}

impl SessionIndex {
    fn build(
        certs: &sled::Tree,
        agents: &sled::Tree,
        probes: &sled::Tree,
    ) -> Result<SessionIndex, StoreError> {
        let mut index = SessionIndex::default();
        for item in agents.iter() {
            let (key, value) = item?;
            let id = String::from_utf8_lossy(&key);
            match decode::<AgentRecord>("agents", &key, &value) {
                Ok(agent) => index.agent(&agent.id, agent.revoked_ms.is_some()),
                Err(error) => {
                    tracing::warn!(agent = %id, %error, "agent record unreadable: its sessions will be refused");
                    index.unreadable.insert(id.into());
                }
            }
        }
        for item in certs.iter() {
            let (key, value) = item?;
            let fingerprint = String::from_utf8_lossy(&key);
            match decode::<CertRecord>("certs", &key, &value) {
                Ok(cert) => index.cert(&fingerprint, &cert),
                Err(error) => {
                    tracing::warn!(%fingerprint, %error, "certificate record unreadable: sessions with it will be refused");
                    index.unreadable.insert(fingerprint.into());
                }
            }
        }
        for item in probes.iter() {
            let (key, value) = item?;
            // An unreadable set is reported when it is read to be sent, not here.
            if let Ok(set) = decode::<ProbeSet>("probes", &key, &value) {
                index.probes(&String::from_utf8_lossy(&key), &set);
            }
        }
        Ok(index)
    }

    /// The agent's id as the index shares it (a new one if the agent is not known).
    fn shared_id(&self, id: &str) -> Arc<str> {
        self.agents
            .get_key_value(id)
            .map_or_else(|| id.into(), |(key, _)| key.clone())
    }

    fn agent(&mut self, id: &str, revoked: bool) {
        let key = self.shared_id(id);
        let entry = self.agents.entry(key).or_insert(false);
        *entry |= revoked;
        self.unreadable.remove(id);
    }

    fn cert(&mut self, fingerprint: &str, cert: &CertRecord) {
        let revoked = cert.revoked
            || self
                .certs
                .get(fingerprint)
                .is_some_and(|(_, revoked)| *revoked);
        let agent = self.shared_id(&cert.agent_id);
        self.certs.insert(fingerprint.into(), (agent, revoked));
        self.unreadable.remove(fingerprint);
    }

    fn probes(&mut self, agent_id: &str, set: &ProbeSet) {
        if set.delivered {
            self.pending_probes.remove(agent_id);
        } else {
            let key = self.shared_id(agent_id);
            self.pending_probes.insert(key);
        }
    }

    fn standing(&self, fingerprint: &str) -> Standing {
        if self.unreadable.contains(fingerprint) {
            return Standing::Unreadable;
        }
        let Some((agent, cert_revoked)) = self.certs.get(fingerprint) else {
            return Standing::Unknown;
        };
        if *cert_revoked {
            return Standing::Revoked;
        }
        if self.unreadable.contains(&**agent) {
            return Standing::Unreadable;
        }
        match self.agents.get(agent) {
            Some(true) => Standing::Revoked,
            Some(false) => Standing::Agent(agent.to_string()),
            None => Standing::Unknown,
        }
    }
}

/// The control plane's store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    tokens: sled::Tree,
    agents: sled::Tree,
    certs: sled::Tree,
    reports: sled::Tree,
    audit: sled::Tree,
    /// `machine-id \0 instance-id` → the agent last enrolled new from that machine instance.
    machines: sled::Tree,
    /// agent id → [`AssetRecord`]: the current asset snapshot (一本账).
    assets: sled::Tree,
    /// `time_ms \0 agent id \0 seq index` → [`ChangeRecord`]: the append-only change history.
    asset_changes: sled::Tree,
    /// `arrival` (big-endian) → report key and stored report ([`queue_entry`]; schema 1: the
    /// key alone): stored reports not yet projected (see [`Store::pending_projection`]).
    /// Durable, so projection resumes after a crash.
    project_queue: sled::Tree,
    /// Who has which package, in memory; built from `assets` when first needed.
    packages: Arc<Mutex<Option<PackageIndex>>>,
    /// What opening a session reads, in memory (see [`SessionIndex`]).
    sessions: Arc<RwLock<SessionIndex>>,
    /// Every agent's check states and posture score, in memory; built from `checks` and
    /// `posture` when first needed (see [`Store::with_fleet_facts`]).
    fleet: Arc<Mutex<Option<FleetFacts>>>,
    /// Every report arrival id below this one has finished [`Store::insert_reports`] (its
    /// report written or its write failed): a queue entry below it without its report is an
    /// orphan, one at or above it belongs to a write still in progress.
    finished_below: Arc<std::sync::atomic::AtomicU64>,
    /// The first arrival id of this life of the store: a queue entry below it may belong to
    /// a write a crash cut short, so its report is looked up before it is projected.
    life_started: u64,
    /// A reports write failed in this life: its queue entries may have no report, so every
    /// entry's report is looked up from then on (see [`Store::pending_projection`]).
    write_failed: Arc<std::sync::atomic::AtomicBool>,
    /// agent id → its highest stored report seq, for the agents seen since the store opened
    /// (filled from `reports` on first use; only [`Store::insert_reports`] raises it, under
    /// this lock). A report above it is new without a tree lookup — the common case, since
    /// agents send in sequence order — and the session welcome reads it from here.
    stored_seq: Arc<Mutex<HashMap<Box<str>, u64>>>,
    /// agent id → [`MetricsRecord`]: the latest health samples.
    health: sled::Tree,
    /// `agent id \0 check name` → [`CheckRecord`]: the latest result of each check.
    checks: sled::Tree,
    /// agent id → [`ProbeSet`]: the probes operators pushed to it.
    probes: sled::Tree,
    /// agent id → [`PostureRecord`]: the latest baseline run.
    posture: sled::Tree,
    /// `time_ms \0 agent id \0 seq index` → [`FindingRecord`]: security findings, append-only.
    findings: sled::Tree,
    /// `agent id \0 probe name \0 time_ms (be)` → [`ProbeResultRecord`]: every probe result,
    /// append-only (a replayed projection writes the same key again).
    probe_results: sled::Tree,
    /// Problems, management and service online (see `crate::dispatch`): the incident engine,
    /// work orders, their transition log and deadline rows, teams and the notification
    /// outbox, in one tree so that one step of the dispatcher is one atomic batch.
    ops: sled::Tree,
}

/// What the fleet gauges of `/metrics` count for one agent: its latest check states and
/// baseline score. Reading them from the `checks` and `posture` trees for every agent took
/// about a second of CPU per scrape at 50,000 agents (a prefix scan and a packed posture
/// record per agent, most of them evicted from the cache), and Prometheus scrapes every 15 s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFacts {
    /// check name → latest status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    pub checks: std::collections::BTreeMap<String, u8>,
    /// Score of the latest baseline run (0–100).
    pub posture_score: Option<u32>,
}

/// [`AgentFacts`] of every agent that has checks or a baseline run, by agent id.
pub type FleetFacts = HashMap<String, AgentFacts>;

/// Writes to the ops tree, applied all or nothing by [`Store::ops_commit`].
pub struct OpsBatch {
    batch: sled::Batch,
    empty: bool,
}

impl OpsBatch {
    pub fn new() -> OpsBatch {
        OpsBatch {
            batch: sled::Batch::default(),
            empty: true,
        }
    }

    pub fn put<T: Serialize>(&mut self, key: &[u8], value: &T) -> Result<(), StoreError> {
        self.batch.insert(key, encode_packed("ops", value)?);
        self.empty = false;
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.batch.remove(key);
        self.empty = false;
    }

    pub fn is_empty(&self) -> bool {
        self.empty
    }
}

impl Default for OpsBatch {
    fn default() -> OpsBatch {
        OpsBatch::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    fn open_db(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|error| match &error {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Locked {
                        path: path.to_owned(),
                    }
                }
                _ => StoreError::Sled(error),
            })?;
        // Until 2026-11 the package index was a tree of one key per install; it is in memory
        // now (see `package_index`).
        if db.tree_names().iter().any(|name| &name[..] == b"packages") {
            db.drop_tree("packages")?;
        }
        let agents = db.open_tree("agents")?;
        let certs = db.open_tree("certs")?;
        let probes = db.open_tree("probes")?;
        let sessions = SessionIndex::build(&certs, &agents, &probes)?;
        let life_started = db.generate_id()?;
        Ok(Store {
            meta: db.open_tree("meta")?,
            tokens: db.open_tree("tokens")?,
            agents,
            certs,
            reports: db.open_tree("reports")?,
            audit: db.open_tree("audit")?,
            machines: db.open_tree("machines")?,
            assets: db.open_tree("assets")?,
            asset_changes: db.open_tree("asset_changes")?,
            project_queue: db.open_tree("project_queue")?,
            packages: Arc::new(Mutex::new(None)),
            sessions: Arc::new(RwLock::new(sessions)),
            fleet: Arc::new(Mutex::new(None)),
            // Ids only grow, across restarts too: every id before this one is from an
            // earlier life of the store, whose writes are finished or never will be.
            finished_below: Arc::new(std::sync::atomic::AtomicU64::new(life_started)),
            life_started,
            write_failed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            stored_seq: Arc::new(Mutex::new(HashMap::new())),
            health: db.open_tree("health")?,
            checks: db.open_tree("checks")?,
            probes,
            posture: db.open_tree("posture")?,
            findings: db.open_tree("findings")?,
            probe_results: db.open_tree("probe_results")?,
            ops: db.open_tree("ops")?,
            db,
        })
    }

    /// Creates a new store and records the schema version.
    pub fn create(path: &Path) -> Result<Store, StoreError> {
        let store = Store::open_db(path, DEFAULT_CACHE_BYTES)?;
        store
            .meta
            .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
        store.db.flush()?;
        Ok(store)
    }

    /// Opens an existing store, refusing one of another schema version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a given page-cache size.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        if !path.join("conf").exists() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        let store = Store::open_db(path, cache_bytes)?;
        let found = store
            .meta
            .get("schema_version")?
            .and_then(|bytes| <[u8; 4]>::try_from(&bytes[..]).ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        if found == 1 {
            // Version 1 queue entries hold only the report's key; they are still read.
            store
                .meta
                .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
        } else if found != SCHEMA_VERSION {
            return Err(StoreError::Schema {
                path: path.to_owned(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    /// Like [`Store::open`], but waits up to `patience` for another holder of the lock to let
    /// go. sled releases its lock only when its last background write finishes, a moment
    /// after the previous owner dropped it (a restart in the same process, a quick systemd
    /// restart), so a server start should not fail on that moment.
    pub fn open_waiting(
        path: &Path,
        cache_bytes: u64,
        patience: std::time::Duration,
    ) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Store::open_with_cache(path, cache_bytes) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                result => return result,
            }
        }
    }

    /// One ops record.
    pub fn ops_get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.ops
            .get(key)?
            .map(|bytes| decode("ops", key, &bytes))
            .transpose()
    }

    /// Ops records whose key starts with `prefix`, in key order, starting at `prefix ‖ from`
    /// and at most `limit` of them.
    pub fn ops_scan<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut start = prefix.to_vec();
        start.extend_from_slice(from);
        let mut rows = Vec::new();
        for entry in self.ops.range(start..) {
            let (key, bytes) = entry?;
            if !key.starts_with(prefix) || rows.len() >= limit {
                break;
            }
            rows.push((key.to_vec(), decode("ops", &key, &bytes)?));
        }
        Ok(rows)
    }

    /// The last ops record whose key starts with `prefix`.
    pub fn ops_scan_last<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
    ) -> Result<Option<(Vec<u8>, T)>, StoreError> {
        match self.ops.scan_prefix(prefix).next_back() {
            Some(entry) => {
                let (key, bytes) = entry?;
                Ok(Some((key.to_vec(), decode("ops", &key, &bytes)?)))
            }
            None => Ok(None),
        }
    }

    /// Applies `batch` atomically and makes it durable before returning.
    pub fn ops_commit(&self, batch: OpsBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ops.apply_batch(batch.batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Makes every write so far durable (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    // --- tokens ---------------------------------------------------------------------------

    pub fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.tokens
            .insert(token.id.as_bytes(), encode("tokens", token)?)?;
        Ok(())
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens
            .get(id.as_bytes())?
            .map(|bytes| decode("tokens", id.as_bytes(), &bytes))
            .transpose()
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.tokens
            .iter()
            .map(|item| {
                let (key, value) = item?;
                decode("tokens", &key, &value)
            })
            .collect()
    }

    // --- agents and certificates ----------------------------------------------------------

    pub fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.agents
            .get(id.as_bytes())?
            .map(|bytes| decode("agents", id.as_bytes(), &bytes))
            .transpose()
    }

    pub fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.agents
            .insert(agent.id.as_bytes(), encode("agents", agent)?)?;
        self.index().agent(&agent.id, agent.revoked_ms.is_some());
        Ok(())
    }

    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.agents
            .iter()
            .map(|item| {
                let (key, value) = item?;
                decode("agents", &key, &value)
            })
            .collect()
    }

    /// How a certificate fingerprint stands, from memory: never waits on the store.
    pub fn certificate_standing(&self, fingerprint: &str) -> Standing {
        self.sessions
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .standing(fingerprint)
    }

    /// Whether the agent has a probe set it has not confirmed, from memory.
    pub fn has_pending_probes(&self, agent_id: &str) -> bool {
        self.sessions
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .pending_probes
            .contains(agent_id)
    }

    fn index(&self) -> std::sync::RwLockWriteGuard<'_, SessionIndex> {
        self.sessions
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn cert(&self, fingerprint: &str) -> Result<Option<CertRecord>, StoreError> {
        self.certs
            .get(fingerprint.as_bytes())?
            .map(|bytes| decode("certs", fingerprint.as_bytes(), &bytes))
            .transpose()
    }

    pub fn put_cert(&self, fingerprint: &str, cert: &CertRecord) -> Result<(), StoreError> {
        self.certs
            .insert(fingerprint.as_bytes(), encode("certs", cert)?)?;
        self.index().cert(fingerprint, cert);
        Ok(())
    }

    /// Changes an agent record in place, atomically with respect to every other update
    /// (compare-and-swap), so that concurrent writers — a session ending, an admin revoking —
    /// never undo each other. `None` if there is no such agent.
    pub fn update_agent(
        &self,
        id: &str,
        mut change: impl FnMut(&mut AgentRecord),
    ) -> Result<Option<AgentRecord>, StoreError> {
        loop {
            let Some(current) = self.agents.get(id.as_bytes())? else {
                return Ok(None);
            };
            let mut agent: AgentRecord = decode("agents", id.as_bytes(), &current)?;
            change(&mut agent);
            let updated = encode("agents", &agent)?;
            match self
                .agents
                .compare_and_swap(id.as_bytes(), Some(&current), Some(updated))?
            {
                Ok(()) => {
                    self.index().agent(&agent.id, agent.revoked_ms.is_some());
                    return Ok(Some(agent));
                }
                Err(_) => continue,
            }
        }
    }

    /// Marks an agent revoked and revokes every certificate issued to it, then flushes.
    /// The agent record is changed first: authentication checks it, so a crash between the
    /// two steps still refuses the agent.
    pub fn revoke_agent(
        &self,
        agent_id: &str,
        now_ms: u64,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let Some(agent) = self.update_agent(agent_id, |agent| {
            agent.revoked_ms.get_or_insert(now_ms);
        })?
        else {
            return Ok(None);
        };
        for item in self.certs.iter() {
            let (key, value) = item?;
            let mut cert: CertRecord = decode("certs", &key, &value)?;
            if cert.agent_id == agent_id && !cert.revoked {
                cert.revoked = true;
                self.certs.insert(&key, encode("certs", &cert)?)?;
                self.index().cert(&String::from_utf8_lossy(&key), &cert);
            }
        }
        self.flush()?;
        Ok(Some(agent))
    }

    /// Stores the outcome of a join or renewal in one serializable transaction that re-checks
    /// what it depends on: the agent must not be revoked, and a token must still be usable
    /// (not revoked, not expired, uses left), so a concurrent revocation can never be undone.
    /// The change is applied to the agent record as it is *now*, so concurrent updates of other
    /// fields (uplink, last seen) survive. Returns the stored agent, or why the state refused.
    /// Not durable until [`Store::flush`] (callers flush once per request or per batch).
    pub fn commit_enrollment(
        &self,
        enrollment: &Enrollment<'_>,
    ) -> Result<Result<AgentRecord, CommitRefusal>, StoreError> {
        let cert_bytes = encode("certs", enrollment.cert)?;
        let outcome = (&self.agents, &self.certs, &self.tokens, &self.machines).transaction(
            |(agents, certs, tokens, machines)| {
                let id = enrollment.agent_id.as_bytes();
                let existing = agents.get(id)?;
                let created = existing.is_none();
                let mut agent: AgentRecord = match existing {
                    Some(bytes) => tx_decode("agents", id, &bytes)?,
                    None => match enrollment.new_agent {
                        Some(template) => template.clone(),
                        None => return tx_refuse(CommitRefusal::AgentMissing),
                    },
                };
                if agent.revoked_ms.is_some() {
                    return tx_refuse(CommitRefusal::AgentRevoked);
                }
                (enrollment.change)(&mut agent);
                if let Some((token_id, now_ms)) = enrollment.token {
                    let Some(bytes) = tokens.get(token_id.as_bytes())? else {
                        return tx_refuse(CommitRefusal::TokenMissing);
                    };
                    let mut token: TokenRecord = tx_decode("tokens", token_id.as_bytes(), &bytes)?;
                    if token.revoked_ms.is_some() {
                        return tx_refuse(CommitRefusal::TokenRevoked);
                    }
                    if now_ms >= token.expires_ms {
                        return tx_refuse(CommitRefusal::TokenExpired);
                    }
                    if token.uses >= token.max_uses {
                        return tx_refuse(CommitRefusal::TokenUsedUp);
                    }
                    token.uses += 1;
                    tokens.insert(token_id.as_bytes(), tx_encode("tokens", &token)?)?;
                }
                agents.insert(id, tx_encode("agents", &agent)?)?;
                certs.insert(agent.certificate_fingerprint.as_bytes(), cert_bytes.clone())?;
                if created && !agent.facts.machine_id.is_empty() {
                    machines
                        .insert(machine_key(&agent.facts.machine_id, &agent.instance_id), id)?;
                }
                Ok(agent)
            },
        );
        let result = match outcome {
            Ok(agent) => {
                let mut index = self.index();
                index.agent(&agent.id, agent.revoked_ms.is_some());
                index.cert(&agent.certificate_fingerprint, enrollment.cert);
                Ok(agent)
            }
            Err(TransactionError::Abort(TxAbort::Refused(refusal))) => Err(refusal),
            Err(TransactionError::Abort(TxAbort::Corrupt(message))) => {
                return Err(StoreError::Conflict(message));
            }
            Err(TransactionError::Storage(error)) => return Err(StoreError::Sled(error)),
        };
        Ok(result)
    }

    /// The agent last enrolled new from this machine instance, if any.
    pub fn agent_for_machine(
        &self,
        machine_id: &str,
        instance_id: &str,
    ) -> Result<Option<AgentRecord>, StoreError> {
        match self.machines.get(machine_key(machine_id, instance_id))? {
            Some(id) => self.agent(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Changes a token in place (compare-and-swap); `None` if there is no such token.
    pub fn update_token(
        &self,
        id: &str,
        mut change: impl FnMut(&mut TokenRecord),
    ) -> Result<Option<TokenRecord>, StoreError> {
        loop {
            let Some(current) = self.tokens.get(id.as_bytes())? else {
                return Ok(None);
            };
            let mut token: TokenRecord = decode("tokens", id.as_bytes(), &current)?;
            change(&mut token);
            let updated = encode("tokens", &token)?;
            if self
                .tokens
                .compare_and_swap(id.as_bytes(), Some(&current), Some(updated))?
                .is_ok()
            {
                return Ok(Some(token));
            }
        }
    }

    // --- reports --------------------------------------------------------------------------

    /// Stores new reports and queues them for projection; returns which were new (not an
    /// (agent, seq) already stored, or earlier in the same batch). Not durable until [`flush`].
    ///
    /// A report still sealed (`cipher` set: it did not open) is stored but not queued.
    /// Queue entries are written before the reports: after a crash between the two, the
    /// projector finds an entry without its report and drops it, and the agent resends the
    /// unacknowledged report, which is then new again. The other order could store a report
    /// that is never projected.
    ///
    /// [`flush`]: Store::flush
    pub fn insert_reports(&self, reports: &mut [NewReport]) -> Result<Vec<Insert>, StoreError> {
        // Held throughout: the highest stored seqs must not move while this batch is judged.
        let mut stored_seq = self.stored_seq.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::new();
        let mut outcomes = Vec::with_capacity(reports.len());
        for item in reports.iter() {
            let highest = match stored_seq.get(item.agent_id.as_str()) {
                Some(highest) => *highest,
                None => {
                    let highest = self.scan_max_seq(&item.agent_id)?;
                    stored_seq.insert(item.agent_id.as_str().into(), highest);
                    highest
                }
            };
            let key = report_key(&item.agent_id, item.seq);
            let outcome = if seen.contains(&key) {
                Insert::Duplicate
            } else if item.seq > highest {
                Insert::New
            } else {
                match self.reports.get(&key)? {
                    None => Insert::New,
                    Some(bytes) => match decode::<StoredReport>("reports", &key, &bytes) {
                        Ok(stored)
                            if (stored.lane, stored.kind.as_str(), stored.created_ms)
                                == (
                                    item.report.lane,
                                    item.report.kind.as_str(),
                                    item.report.created_ms,
                                ) =>
                        {
                            Insert::Duplicate
                        }
                        // Another report under this seq (or one that no longer decodes: never
                        // acknowledge over what cannot be compared).
                        _ => Insert::Reused,
                    },
                }
            };
            if outcome == Insert::New {
                seen.insert(key);
            }
            outcomes.push(outcome);
        }
        let mut queue = Vec::new();
        let mut batch = Vec::new();
        let mut last_arrival = None;
        let written = (|| {
            for (item, outcome) in reports.iter_mut().zip(&outcomes) {
                if *outcome == Insert::New {
                    item.report.arrival = self.db.generate_id()?;
                    last_arrival = Some(item.report.arrival);
                    let key = report_key(&item.agent_id, item.seq);
                    let stored = encode_packed("reports", &item.report)?;
                    if item.report.cipher.is_empty() {
                        queue.push((
                            item.report.arrival.to_be_bytes().to_vec(),
                            queue_entry(&key, &stored),
                        ));
                    }
                    batch.push((key, stored));
                }
            }
            // Only duplicates (or only sealed reports): no empty batch is applied.
            apply_writes(&self.project_queue, queue.into_iter().map(Ok))?;
            apply_writes(&self.reports, batch.into_iter().map(Ok))
        })();
        // Written or failed: either way the projector may now judge these queue entries —
        // after it knows whether their reports can be missing.
        if written.is_err() {
            self.write_failed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if let Some(last) = last_arrival {
            self.finished_below
                .fetch_max(last + 1, std::sync::atomic::Ordering::AcqRel);
        }
        written?;
        // The reports batch is applied whole or not at all, and it went last.
        for (item, outcome) in reports.iter().zip(&outcomes) {
            if *outcome == Insert::New
                && let Some(highest) = stored_seq.get_mut(item.agent_id.as_str())
            {
                *highest = (*highest).max(item.seq);
            }
        }
        Ok(outcomes)
    }

    /// Up to `limit` stored reports waiting for projection, oldest first, each with its
    /// queue key. The list ends at the first entry whose write is still in progress (see
    /// [`Store::insert_reports`]). An entry whose report is missing — a crash or a failed
    /// write between the queue entry and the report — is returned with `None`, so that
    /// [`Store::finish_projection`] removes it. Entries carry their report; it is looked up
    /// in `reports` only where it can be missing: entries from before this life of the
    /// store, and all entries once a reports write has failed.
    pub fn pending_projection(
        &self,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, Option<NewReport>)>, StoreError> {
        let finished_below = self
            .finished_below
            .load(std::sync::atomic::Ordering::Acquire);
        let write_failed = self.write_failed.load(std::sync::atomic::Ordering::Acquire);
        let mut out = Vec::new();
        for item in self.project_queue.iter().take(limit) {
            let (queue_key, entry) = item?;
            let arrival = <[u8; 8]>::try_from(&queue_key[..])
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if arrival >= finished_below {
                break;
            }
            let (report_key, inline) = parse_queue_entry(&entry);
            let verify = write_failed || arrival < self.life_started;
            let fetched;
            let stored = match inline {
                Some(stored) if !verify || self.reports.contains_key(report_key)? => Some(stored),
                Some(_) => None,
                None => {
                    fetched = self.reports.get(report_key)?;
                    fetched.as_deref()
                }
            };
            let report = match stored {
                Some(bytes) => {
                    let report: StoredReport = decode("reports", report_key, bytes)?;
                    let agent_id = report_key
                        .split(|byte| *byte == 0)
                        .next()
                        .map(|agent| String::from_utf8_lossy(agent).into_owned())
                        .unwrap_or_default();
                    Some(NewReport {
                        agent_id,
                        seq: seq_of_key(report_key),
                        report,
                    })
                }
                None => None,
            };
            out.push((queue_key, report));
        }
        Ok(out)
    }

    /// Whether stored reports are waiting for projection.
    pub fn projection_pending(&self) -> Result<bool, StoreError> {
        Ok(!self.project_queue.is_empty())
    }

    /// Applies a projection and removes the queue entries it came from. Projecting a report
    /// twice (a crash between the two steps) is harmless: snapshots replace, change sets
    /// already applied are recognised by digest, health and checks are last-writer-wins and
    /// findings are keyed by their report.
    pub fn finish_projection(
        &self,
        projection: Projection,
        queue_keys: &[sled::IVec],
    ) -> Result<(), StoreError> {
        self.apply_projection(projection)?;
        if !queue_keys.is_empty() {
            let mut queue = sled::Batch::default();
            for key in queue_keys {
                queue.remove(key);
            }
            self.project_queue.apply_batch(queue)?;
        }
        Ok(())
    }

    fn apply_projection(&self, projection: Projection) -> Result<(), StoreError> {
        apply_writes(
            &self.asset_changes,
            projection
                .changes
                .iter()
                .enumerate()
                .map(|(index, change)| {
                    Ok((
                        change_key(change, index as u32),
                        encode("asset_changes", change)?,
                    ))
                }),
        )?;
        apply_writes(
            &self.assets,
            projection.assets.iter().map(|(agent, record)| {
                Ok((agent.as_bytes().to_vec(), encode_packed("assets", record)?))
            }),
        )?;
        // After the records: an index built concurrently from the tree sees them or gets them
        // here (setting an agent's list is idempotent).
        if !projection.assets.is_empty()
            && let Some(index) = self.package_index().as_mut()
        {
            for (agent, record) in &projection.assets {
                index.set(agent, &record.snapshot.packages);
            }
        }
        apply_writes(
            &self.health,
            projection
                .health
                .iter()
                .map(|(agent, record)| Ok((agent.as_bytes().to_vec(), encode("health", record)?))),
        )?;
        apply_writes(
            &self.checks,
            projection.checks.iter().map(|(agent, name, record)| {
                Ok((
                    joined_key(&[agent.as_bytes(), name.as_bytes()]),
                    encode("checks", record)?,
                ))
            }),
        )?;
        apply_writes(
            &self.posture,
            projection.posture.iter().map(|(agent, record)| {
                Ok((agent.as_bytes().to_vec(), encode_packed("posture", record)?))
            }),
        )?;
        // After the records, like the package index: facts built concurrently from the trees
        // see them or get them here (setting a state is idempotent).
        if (!projection.checks.is_empty() || !projection.posture.is_empty())
            && let Some(facts) = self.fleet_facts().as_mut()
        {
            for (agent, name, record) in &projection.checks {
                let entry = facts.entry(agent.clone()).or_default();
                entry.checks.insert(name.clone(), record.result.status);
            }
            for (agent, record) in &projection.posture {
                facts.entry(agent.clone()).or_default().posture_score = Some(record.report.score);
            }
        }
        apply_writes(
            &self.findings,
            projection
                .findings
                .iter()
                .enumerate()
                .map(|(index, finding)| {
                    let mut key = finding.time_ms.to_be_bytes().to_vec();
                    key.extend_from_slice(finding.agent_id.as_bytes());
                    key.push(0);
                    key.extend_from_slice(&finding.seq.to_be_bytes());
                    key.extend_from_slice(&(index as u32).to_be_bytes());
                    Ok((key, encode("findings", finding)?))
                }),
        )?;
        apply_writes(
            &self.probe_results,
            projection
                .probe_results
                .iter()
                .map(|(agent, probe, at, record)| {
                    Ok((
                        probe_result_key(agent, probe, *at),
                        encode("probe_results", record)?,
                    ))
                }),
        )
    }

    /// The results of `probe` on `agent` with a time in `[from, to)`, oldest first, preceded
    /// by the last result before `from` if there is one (it tells the state at `from`).
    pub fn probe_results(
        &self,
        agent: &str,
        probe: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, ProbeResultRecord)>, StoreError> {
        let prefix = joined_key(&[agent.as_bytes(), probe.as_bytes(), b""]);
        let start = probe_result_key(agent, probe, from);
        let end = probe_result_key(agent, probe, to);
        let row = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<_, StoreError> {
            let (key, value) = item?;
            Ok((
                seq_of_key(&key),
                decode::<ProbeResultRecord>("probe_results", &key, &value)?,
            ))
        };
        let mut rows = Vec::new();
        if let Some(before) = self.probe_results.range(prefix..start.clone()).next_back() {
            rows.push(row(before)?);
        }
        if from < to {
            for item in self.probe_results.range(start..end) {
                rows.push(row(item)?);
            }
        }
        Ok(rows)
    }

    fn package_index(&self) -> std::sync::MutexGuard<'_, Option<PackageIndex>> {
        // A panic while holding the lock leaves at worst a partial index; keep serving it.
        self.packages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Builds the in-memory package index from the asset records unless it is built.
    pub fn ensure_package_index(&self) -> Result<(), StoreError> {
        let mut slot = self.package_index();
        if slot.is_none() {
            let mut index = PackageIndex::default();
            for item in self.assets() {
                let (agent, record) = item?;
                index.set(&agent, &record.snapshot.packages);
            }
            *slot = Some(index);
        }
        Ok(())
    }

    fn fleet_facts(&self) -> std::sync::MutexGuard<'_, Option<FleetFacts>> {
        // A panic while holding the lock leaves at worst facts missing an update; keep them.
        self.fleet
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls `read` with every agent's [`AgentFacts`], building them from the `checks` and
    /// `posture` trees the first time (one pass over each). The projector's updates wait
    /// while `read` runs: keep it to counting.
    pub fn with_fleet_facts<R>(
        &self,
        read: impl FnOnce(&FleetFacts) -> R,
    ) -> Result<R, StoreError> {
        let mut slot = self.fleet_facts();
        if slot.is_none() {
            let mut facts = FleetFacts::new();
            for item in self.checks.iter() {
                let (key, value) = item?;
                let record: CheckRecord = decode("checks", &key, &value)?;
                let mut parts = key.splitn(2, |byte| *byte == 0);
                let agent = String::from_utf8_lossy(parts.next().unwrap_or_default());
                let name = String::from_utf8_lossy(parts.next().unwrap_or_default());
                facts
                    .entry(agent.into_owned())
                    .or_default()
                    .checks
                    .insert(name.into_owned(), record.result.status);
            }
            for item in self.all_posture() {
                let (agent, record) = item?;
                facts.entry(agent).or_default().posture_score = Some(record.report.score);
            }
            *slot = Some(facts);
        }
        Ok(read(slot.get_or_insert_with(FleetFacts::new)))
    }

    // --- posture ----------------------------------------------------------------------------

    pub fn posture(&self, agent_id: &str) -> Result<Option<PostureRecord>, StoreError> {
        self.posture
            .get(agent_id.as_bytes())?
            .map(|bytes| decode("posture", agent_id.as_bytes(), &bytes))
            .transpose()
    }

    /// Every agent's latest baseline run.
    pub fn all_posture(
        &self,
    ) -> impl Iterator<Item = Result<(String, PostureRecord), StoreError>> + '_ {
        self.posture.iter().map(|item| {
            let (key, value) = item?;
            Ok((
                String::from_utf8_lossy(&key).into_owned(),
                decode("posture", &key, &value)?,
            ))
        })
    }

    /// Findings with `time_ms >= since_ms`, oldest first, at most `limit`.
    pub fn findings(
        &self,
        since_ms: u64,
        mut keep: impl FnMut(&FindingRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<FindingRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.findings.range(since_ms.to_be_bytes().to_vec()..) {
            let (key, value) = item?;
            let finding: FindingRecord = decode("findings", &key, &value)?;
            if keep(&finding) {
                out.push(finding);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    // --- pushed probes ----------------------------------------------------------------------

    pub fn probe_set(&self, agent_id: &str) -> Result<Option<ProbeSet>, StoreError> {
        self.probes
            .get(agent_id.as_bytes())?
            .map(|bytes| decode("probes", agent_id.as_bytes(), &bytes))
            .transpose()
    }

    pub fn put_probe_set(&self, agent_id: &str, set: &ProbeSet) -> Result<(), StoreError> {
        // Written under the index lock: a set is not monotonic like a revocation, and the
        // index must end with the last write's state. Rare (operators pushing probes).
        let mut index = self.index();
        self.probes
            .insert(agent_id.as_bytes(), encode("probes", set)?)?;
        index.probes(agent_id, set);
        Ok(())
    }

    /// Marks the set delivered if `command_id` is the command that carried it.
    pub fn confirm_probes(&self, agent_id: &str, command_id: u64) -> Result<(), StoreError> {
        if let Some(mut set) = self.probe_set(agent_id)?
            && set.command_id == command_id
            && !set.delivered
        {
            set.delivered = true;
            self.put_probe_set(agent_id, &set)?;
        }
        Ok(())
    }

    // --- assets and health ----------------------------------------------------------------

    /// The current asset record of an agent.
    pub fn asset(&self, agent_id: &str) -> Result<Option<AssetRecord>, StoreError> {
        self.assets
            .get(agent_id.as_bytes())?
            .map(|bytes| decode("assets", agent_id.as_bytes(), &bytes))
            .transpose()
    }

    /// Every agent's asset record (agent id, record), in agent id order.
    pub fn assets(&self) -> impl Iterator<Item = Result<(String, AssetRecord), StoreError>> + '_ {
        self.assets.iter().map(|item| {
            let (key, value) = item?;
            Ok((
                String::from_utf8_lossy(&key).into_owned(),
                decode("assets", &key, &value)?,
            ))
        })
    }

    /// Asset changes with `time_ms >= since_ms`, oldest first, at most `limit`.
    pub fn asset_changes(
        &self,
        since_ms: u64,
        mut keep: impl FnMut(&ChangeRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.asset_changes.range(since_ms.to_be_bytes().to_vec()..) {
            let (key, value) = item?;
            let change: ChangeRecord = decode("asset_changes", &key, &value)?;
            if keep(&change) {
                out.push(change);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Agents that have package `name` installed, once per arch.
    pub fn package_holders(&self, name: &str) -> Result<Vec<Holding>, StoreError> {
        self.ensure_package_index()?;
        Ok(self
            .package_index()
            .as_ref()
            .map(|index| index.holders(name))
            .unwrap_or_default())
    }

    /// The latest health samples of an agent.
    pub fn health(&self, agent_id: &str) -> Result<Option<MetricsRecord>, StoreError> {
        self.health
            .get(agent_id.as_bytes())?
            .map(|bytes| decode("health", agent_id.as_bytes(), &bytes))
            .transpose()
    }

    /// Every agent's latest health samples.
    pub fn all_health(
        &self,
    ) -> impl Iterator<Item = Result<(String, MetricsRecord), StoreError>> + '_ {
        self.health.iter().map(|item| {
            let (key, value) = item?;
            Ok((
                String::from_utf8_lossy(&key).into_owned(),
                decode("health", &key, &value)?,
            ))
        })
    }

    /// The latest result of every check of an agent, by check name.
    pub fn checks(&self, agent_id: &str) -> Result<Vec<(String, CheckRecord)>, StoreError> {
        let prefix = report_prefix(agent_id);
        self.checks
            .scan_prefix(&prefix)
            .map(|item| {
                let (key, value) = item?;
                let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                Ok((name, decode("checks", &key, &value)?))
            })
            .collect()
    }

    /// The latest result of one check, if any.
    pub fn check(&self, agent_id: &str, name: &str) -> Result<Option<CheckRecord>, StoreError> {
        let key = joined_key(&[agent_id.as_bytes(), name.as_bytes()]);
        self.checks
            .get(&key)?
            .map(|bytes| decode("checks", &key, &bytes))
            .transpose()
    }

    /// Highest stored sequence number of an agent (0 if none).
    pub fn max_seq(&self, agent_id: &str) -> Result<u64, StoreError> {
        let known = self
            .stored_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent_id)
            .copied();
        if let Some(highest) = known {
            return Ok(highest);
        }
        // Scanned without the lock (the commit thread takes it); every write sets the entry
        // under the lock, so an entry found now is at least as new as this scan.
        let scanned = self.scan_max_seq(agent_id)?;
        let mut stored_seq = self.stored_seq.lock().unwrap_or_else(|p| p.into_inner());
        Ok(*stored_seq.entry(agent_id.into()).or_insert(scanned))
    }

    fn scan_max_seq(&self, agent_id: &str) -> Result<u64, StoreError> {
        Ok(self
            .reports
            .scan_prefix(report_prefix(agent_id))
            .next_back()
            .transpose()?
            .map(|(key, _)| seq_of_key(&key))
            .unwrap_or(0))
    }

    /// Stored reports of an agent with `seq > after_seq`, in sequence order.
    pub fn reports(
        &self,
        agent_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredReport)>, StoreError> {
        let start = report_key(agent_id, after_seq.saturating_add(1));
        let end = report_key(agent_id, u64::MAX);
        self.reports
            .range(start..=end)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                Ok((seq_of_key(&key), decode("reports", &key, &value)?))
            })
            .collect()
    }

    // --- audit ----------------------------------------------------------------------------

    pub fn put_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.audit
            .insert(entry.seq.to_be_bytes(), encode("audit", entry)?)?;
        Ok(())
    }

    pub fn last_audit(&self) -> Result<Option<AuditEntry>, StoreError> {
        self.audit
            .last()?
            .map(|(key, value)| decode("audit", &key, &value))
            .transpose()
    }

    /// Audit entries with `seq > after`, oldest first.
    pub fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit
            .range(after.saturating_add(1).to_be_bytes()..)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                decode("audit", &key, &value)
            })
            .collect()
    }

    /// Stored audit records with `seq > after`, oldest first, undecoded: `(seq of the key,
    /// MessagePack bytes)`. Verification decodes them itself so that a damaged record is
    /// reported by its position instead of failing the whole read.
    pub fn audit_raw(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.audit
            .range(after.saturating_add(1).to_be_bytes()..)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                let seq = key
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                Ok((seq, value.to_vec()))
            })
            .collect()
    }

    /// The newest audit entries, newest first.
    pub fn audit_tail(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit
            .iter()
            .rev()
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                decode("audit", &key, &value)
            })
            .collect()
    }

    /// Replaces the stored bytes of one audit record, bypassing encoding: for tamper tests.
    #[doc(hidden)]
    pub fn rewrite_audit_raw(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.audit.insert(seq.to_be_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// The last audit seq delivered to the remote syslog collector (0: none yet).
    pub fn audit_export_cursor(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get("audit_syslog_cursor")?
            .and_then(|bytes| bytes.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Records (and flushes) how far the syslog export got.
    pub fn set_audit_export_cursor(&self, seq: u64) -> Result<(), StoreError> {
        self.meta
            .insert("audit_syslog_cursor", &seq.to_be_bytes())?;
        self.meta.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: u64) -> NewReport {
        NewReport {
            agent_id: "ag-1".into(),
            seq,
            report: StoredReport {
                kind: "metrics".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn large_values_are_packed_small_and_old_plain_ones_still_read() {
        let large = StoredReport {
            kind: "asset_snapshot".into(),
            body: ByteBuf::from(b"package-0001 1.2.3-1 amd64 dpkg\n".repeat(400)),
            ..Default::default()
        };
        let packed = encode_packed("reports", &large).unwrap();
        let plain = encode("reports", &large).unwrap();
        assert_eq!(packed[0], PACKED);
        assert!(
            packed.len() * 4 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        for bytes in [&packed, &plain] {
            let back: StoredReport = decode("reports", b"k", bytes).unwrap();
            assert_eq!(back.body, large.body);
        }
        // Small values stay plain.
        let small = encode_packed("reports", &StoredReport::default()).unwrap();
        assert_eq!(small, encode("reports", &StoredReport::default()).unwrap());
    }

    #[test]
    fn damaged_packed_values_are_errors_not_panics() {
        let large = StoredReport {
            body: ByteBuf::from(vec![7u8; 8192]),
            ..Default::default()
        };
        let packed = encode_packed("reports", &large).unwrap();
        let mut huge_claim = packed.clone();
        huge_claim[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        // (LZ4 blocks carry no checksum: sled's log checksums every record on disk.)
        let cases: [&[u8]; 4] = [
            &packed[..packed.len() / 2],
            &packed[..3],
            &[PACKED],
            &huge_claim,
        ];
        for bytes in cases {
            let result = decode::<StoredReport>("reports", b"ag-1", bytes);
            assert!(
                matches!(
                    result,
                    Err(StoreError::Corrupt {
                        tree: "reports",
                        ..
                    })
                ),
                "{} bytes: {:?}",
                bytes.len(),
                result.map(|_| ())
            );
        }
    }

    #[test]
    fn queue_entries_without_reports_wait_for_their_write_or_are_dropped_as_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        store.insert_reports(&mut [report(1)]).unwrap();
        let pending = store.pending_projection(10).unwrap();
        store
            .finish_projection(Projection::default(), &[pending[0].0.clone()])
            .unwrap();
        let committed = store
            .finished_below
            .load(std::sync::atomic::Ordering::Acquire);
        // An entry from an earlier life whose report never made it: an orphan.
        store
            .project_queue
            .insert(0u64.to_be_bytes(), report_key("ag-1", 7))
            .unwrap();
        // An entry of a write still in progress: its report is not there yet.
        store
            .project_queue
            .insert((committed + 1_000).to_be_bytes(), report_key("ag-x", 8))
            .unwrap();
        let pending = store.pending_projection(10).unwrap();
        assert_eq!(pending.len(), 1, "the in-progress entry ends the list");
        assert!(pending[0].1.is_none());
        store
            .finish_projection(Projection::default(), &[pending[0].0.clone()])
            .unwrap();
        assert!(store.pending_projection(10).unwrap().is_empty());
        // Once the write it belongs to has finished (here: failed), its entry is an orphan.
        store
            .finished_below
            .fetch_max(committed + 1_001, std::sync::atomic::Ordering::AcqRel);
        let pending = store.pending_projection(10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0[..], (committed + 1_000).to_be_bytes());
        assert!(pending[0].1.is_none());
    }

    #[test]
    fn queue_entries_carry_their_report_and_are_checked_where_it_can_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let mut large = report(2);
        large.report.body = ByteBuf::from(b"sample ".repeat(300));
        store
            .insert_reports(&mut [report(1), large.clone()])
            .unwrap();
        // Read from the queue, not from `reports`: gone from there, still projected.
        store.reports.remove(report_key("ag-1", 2)).unwrap();
        let pending = store.pending_projection(10).unwrap();
        let seqs: Vec<_> = pending
            .iter()
            .map(|(_, r)| r.as_ref().map(|r| r.seq))
            .collect();
        assert_eq!(seqs, [Some(1), Some(2)]);
        assert_eq!(
            pending[1].1.as_ref().unwrap().report.body,
            large.report.body
        );
        // Once a reports write has failed, every entry's report is looked up.
        store
            .write_failed
            .store(true, std::sync::atomic::Ordering::Release);
        let seqs: Vec<_> = store
            .pending_projection(10)
            .unwrap()
            .iter()
            .map(|(_, r)| r.as_ref().map(|r| r.seq))
            .collect();
        assert_eq!(seqs, [Some(1), None], "the missing report is an orphan");
        store.flush().unwrap();
        drop(store);
        // Entries from an earlier life are looked up too (a crash may have cut their write).
        let patience = std::time::Duration::from_secs(5);
        let store = Store::open_waiting(dir.path(), DEFAULT_CACHE_BYTES, patience).unwrap();
        let pending = store.pending_projection(10).unwrap();
        let seqs: Vec<_> = pending
            .iter()
            .map(|(_, r)| r.as_ref().map(|r| r.seq))
            .collect();
        assert_eq!(seqs, [Some(1), None]);
        let keys: Vec<_> = pending.into_iter().map(|(key, _)| key).collect();
        store
            .finish_projection(Projection::default(), &keys)
            .unwrap();
        assert!(!store.projection_pending().unwrap());
    }

    #[test]
    fn queue_entries_round_trip_and_hold_only_a_key_too_long_to_frame() {
        let key = report_key("ag-1", 3);
        let entry = queue_entry(&key, b"stored");
        assert_eq!(parse_queue_entry(&entry), (&key[..], Some(&b"stored"[..])));
        // Version 1: the key alone.
        assert_eq!(parse_queue_entry(&key), (&key[..], None));
        let long = report_key(&"a".repeat(70_000), 3);
        assert_eq!(
            parse_queue_entry(&queue_entry(&long, b"stored")),
            (&long[..], None)
        );
    }

    #[test]
    fn a_version_1_store_is_upgraded_and_its_queue_still_projected() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::create(dir.path()).unwrap();
            let mut item = report(5);
            item.report.arrival = store.db.generate_id().unwrap();
            let key = report_key("ag-1", 5);
            store
                .reports
                .insert(&key, encode_packed("reports", &item.report).unwrap())
                .unwrap();
            // Version 1: the queue entry is the report's key alone.
            store
                .project_queue
                .insert(item.report.arrival.to_be_bytes(), key)
                .unwrap();
            store
                .meta
                .insert("schema_version", &1u32.to_be_bytes())
                .unwrap();
            store.flush().unwrap();
        }
        let patience = std::time::Duration::from_secs(5);
        let store = Store::open_waiting(dir.path(), DEFAULT_CACHE_BYTES, patience).unwrap();
        let version = store.meta.get("schema_version").unwrap().unwrap();
        assert_eq!(version[..], SCHEMA_VERSION.to_be_bytes());
        let pending = store.pending_projection(10).unwrap();
        assert_eq!(pending.len(), 1);
        let projected = pending[0].1.as_ref().expect("read through its key");
        assert_eq!((projected.agent_id.as_str(), projected.seq), ("ag-1", 5));
    }

    #[test]
    fn reports_are_deduplicated_by_agent_and_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let mut batch = vec![report(1), report(2), report(2)];
        assert_eq!(
            store.insert_reports(&mut batch).unwrap(),
            [Insert::New, Insert::New, Insert::Duplicate]
        );
        let mut again = vec![report(2), report(3)];
        assert_eq!(
            store.insert_reports(&mut again).unwrap(),
            [Insert::Duplicate, Insert::New]
        );
        assert_eq!(store.max_seq("ag-1").unwrap(), 3);
        assert_eq!(
            store.max_seq("ag-10").unwrap(),
            0,
            "prefix must not leak across agents"
        );
        let stored = store.reports("ag-1", 1, 10).unwrap();
        assert_eq!(
            stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(stored[0].1.arrival < stored[1].1.arrival);
    }

    #[test]
    fn a_different_report_under_a_stored_seq_is_reused_not_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let made_at = |seq: u64, created_ms: u64, lane: Lane, kind: &str| {
            let mut item = report(seq);
            item.report.created_ms = created_ms;
            item.report.lane = lane;
            item.report.kind = kind.into();
            item
        };
        let mut first = vec![
            made_at(1, 100, Lane::Metrics, "metrics"),
            made_at(2, 200, Lane::Security, "finding"),
            made_at(3, 300, Lane::Metrics, "metrics"),
        ];
        assert_eq!(store.insert_reports(&mut first).unwrap(), [Insert::New; 3]);
        // The same records again: duplicates. A restored agent's new records under the same
        // numbers differ in creation time, lane or kind: reused, and not stored.
        let mut again = vec![
            made_at(1, 100, Lane::Metrics, "metrics"),
            made_at(2, 999, Lane::Security, "finding"),
            made_at(3, 300, Lane::State, "metrics"),
            made_at(3, 300, Lane::Metrics, "check_result"),
        ];
        assert_eq!(
            store.insert_reports(&mut again).unwrap(),
            [
                Insert::Duplicate,
                Insert::Reused,
                Insert::Reused,
                Insert::Reused
            ]
        );
        let stored = store.reports("ag-1", 0, 10).unwrap();
        assert_eq!(stored.len(), 3);
        assert_eq!(
            stored[1].1.created_ms, 200,
            "the stored report is untouched"
        );
        // Renumbered above the highest stored seq, it is new.
        let mut renumbered = vec![made_at(4, 999, Lane::Security, "finding")];
        assert_eq!(
            store.insert_reports(&mut renumbered).unwrap(),
            [Insert::New]
        );
    }

    #[test]
    fn duplicates_are_recognised_out_of_order_and_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::create(dir.path()).unwrap();
            // 5 first (a higher lane overtook), then 3 and 4 below the highest stored seq.
            assert_eq!(
                store.insert_reports(&mut [report(5)]).unwrap(),
                [Insert::New]
            );
            assert_eq!(
                store
                    .insert_reports(&mut [report(3), report(5), report(4)])
                    .unwrap(),
                [Insert::New, Insert::Duplicate, Insert::New]
            );
            assert_eq!(store.max_seq("ag-1").unwrap(), 5);
            store.flush().unwrap();
        }
        let patience = std::time::Duration::from_secs(5);
        let store = Store::open_waiting(dir.path(), DEFAULT_CACHE_BYTES, patience).unwrap();
        // A fresh process knows nothing in memory: what is stored still counts.
        assert_eq!(
            store
                .insert_reports(&mut [report(4), report(2), report(6)])
                .unwrap(),
            [Insert::Duplicate, Insert::New, Insert::New]
        );
        assert_eq!(store.max_seq("ag-1").unwrap(), 6);
        assert_eq!(
            store.insert_reports(&mut [report(6)]).unwrap(),
            [Insert::Duplicate]
        );
        // The welcome's view (max_seq) first, then a write: both agree.
        let mut other = report(1);
        other.agent_id = "ag-2".into();
        assert_eq!(store.max_seq("ag-2").unwrap(), 0);
        assert_eq!(
            store.insert_reports(&mut [other.clone()]).unwrap(),
            [Insert::New]
        );
        assert_eq!(
            store.insert_reports(&mut [other]).unwrap(),
            [Insert::Duplicate]
        );
        assert_eq!(store.max_seq("ag-2").unwrap(), 1);
        assert_eq!(
            store
                .reports("ag-1", 0, 10)
                .unwrap()
                .iter()
                .map(|(seq, _)| *seq)
                .collect::<Vec<_>>(),
            [2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn reopen_keeps_flushed_data_and_checks_schema() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::create(dir.path()).unwrap();
            store
                .put_token(&TokenRecord {
                    id: "abcdef".into(),
                    ..Default::default()
                })
                .unwrap();
            store.flush().unwrap();
        }
        // sled lets go of its lock a moment after the last handle is dropped.
        let patience = std::time::Duration::from_secs(5);
        let store = Store::open_waiting(dir.path(), DEFAULT_CACHE_BYTES, patience).unwrap();
        assert_eq!(store.token("abcdef").unwrap().unwrap().id, "abcdef");
        store
            .meta
            .insert("schema_version", &99u32.to_be_bytes())
            .unwrap();
        drop(store);
        let error = Store::open_waiting(dir.path(), DEFAULT_CACHE_BYTES, patience).unwrap_err();
        assert!(
            matches!(error, StoreError::Schema { found: 99, .. }),
            "{error}"
        );
        let missing = Store::open(&dir.path().join("nothing")).unwrap_err();
        assert!(matches!(missing, StoreError::Missing { .. }), "{missing}");
    }

    #[test]
    fn fleet_facts_follow_projections_and_are_rebuilt_from_the_trees() {
        let dir = tempfile::tempdir().unwrap();
        let check = |agent: &str, name: &str, status: u8| {
            (
                agent.to_owned(),
                name.to_owned(),
                CheckRecord {
                    result: CheckResult {
                        name: name.into(),
                        status,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
        };
        let posture = |agent: &str, score: u32| {
            (
                agent.to_owned(),
                PostureRecord {
                    report: bagui_protocol::assets::PostureReport {
                        score,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
        };
        let summary = |store: &Store| {
            store
                .with_fleet_facts(|facts| {
                    let mut rows: Vec<_> = facts
                        .iter()
                        .map(|(agent, facts)| (agent.clone(), facts.clone()))
                        .collect();
                    rows.sort_by(|a, b| a.0.cmp(&b.0));
                    rows
                })
                .unwrap()
        };
        let facts = |checks: &[(&str, u8)], score: Option<u32>| AgentFacts {
            checks: checks.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
            posture_score: score,
        };
        let store = Store::create(dir.path()).unwrap();
        // Written before the facts are first read: found in the trees.
        store
            .finish_projection(
                Projection {
                    checks: vec![check("a1", "disk", 0), check("a1", "ntp", 2)],
                    ..Default::default()
                },
                &[],
            )
            .unwrap();
        assert_eq!(
            summary(&store),
            [("a1".into(), facts(&[("disk", 0), ("ntp", 2)], None))]
        );
        // Written after: the projection updates them in memory.
        store
            .finish_projection(
                Projection {
                    checks: vec![check("a1", "ntp", 0), check("a2", "http", 1)],
                    posture: vec![posture("a2", 87)],
                    ..Default::default()
                },
                &[],
            )
            .unwrap();
        let expected = vec![
            ("a1".to_string(), facts(&[("disk", 0), ("ntp", 0)], None)),
            ("a2".to_string(), facts(&[("http", 1)], Some(87))),
        ];
        assert_eq!(summary(&store), expected);
        store.flush().unwrap();
        drop(store);
        let patience = std::time::Duration::from_secs(5);
        let reopened = Store::open_waiting(dir.path(), DEFAULT_CACHE_BYTES, patience).unwrap();
        assert_eq!(summary(&reopened), expected, "rebuilt from the trees");
    }

    #[test]
    fn a_second_opener_is_told_the_store_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::create(dir.path()).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    }

    #[test]
    fn revocation_marks_agent_and_all_its_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let agent = AgentRecord {
            id: "ag-1".into(),
            certificate_fingerprint: "sm3:b".into(),
            ..Default::default()
        };
        store
            .put_cert(
                "sm3:a",
                &CertRecord {
                    agent_id: "ag-1".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        store
            .commit_enrollment(&Enrollment {
                agent_id: "ag-1",
                new_agent: Some(&agent),
                change: &|_| {},
                cert: &CertRecord {
                    agent_id: "ag-1".into(),
                    ..Default::default()
                },
                token: None,
            })
            .unwrap()
            .unwrap();
        store
            .put_cert(
                "sm3:c",
                &CertRecord {
                    agent_id: "ag-2".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let revoked = store.revoke_agent("ag-1", 77).unwrap().unwrap();
        assert_eq!(revoked.revoked_ms, Some(77));
        assert!(store.cert("sm3:a").unwrap().unwrap().revoked);
        assert!(store.cert("sm3:b").unwrap().unwrap().revoked);
        assert!(!store.cert("sm3:c").unwrap().unwrap().revoked);
        assert!(store.revoke_agent("ag-404", 1).unwrap().is_none());
    }

    #[test]
    fn the_session_index_follows_every_write_and_is_rebuilt_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let patience = std::time::Duration::from_secs(5);
        {
            let store = Store::create(dir.path()).unwrap();
            let cert = |agent: &str| CertRecord {
                agent_id: agent.into(),
                ..Default::default()
            };
            for id in ["ag-1", "ag-2"] {
                let agent = AgentRecord {
                    id: id.into(),
                    certificate_fingerprint: format!("sm3:{id}"),
                    ..Default::default()
                };
                store
                    .commit_enrollment(&Enrollment {
                        agent_id: id,
                        new_agent: Some(&agent),
                        change: &|_| {},
                        cert: &cert(id),
                        token: None,
                    })
                    .unwrap()
                    .unwrap();
            }
            // A certificate of an agent the store does not know.
            store.put_cert("sm3:orphan", &cert("ag-404")).unwrap();
            assert_eq!(
                store.certificate_standing("sm3:ag-1"),
                Standing::Agent("ag-1".into())
            );
            assert_eq!(store.certificate_standing("sm3:orphan"), Standing::Unknown);
            assert_eq!(store.certificate_standing("sm3:never"), Standing::Unknown);

            store.revoke_agent("ag-1", 5).unwrap().unwrap();
            assert_eq!(store.certificate_standing("sm3:ag-1"), Standing::Revoked);
            // A later update of the revoked agent (a session's last-seen) leaves it revoked.
            store
                .update_agent("ag-1", |agent| agent.last_seen_ms = 9)
                .unwrap();
            assert_eq!(store.certificate_standing("sm3:ag-1"), Standing::Revoked);

            assert!(!store.has_pending_probes("ag-2"));
            let set = ProbeSet {
                command_id: 3,
                ..Default::default()
            };
            store.put_probe_set("ag-2", &set).unwrap();
            assert!(store.has_pending_probes("ag-2"));
            store.confirm_probes("ag-2", 2).unwrap();
            assert!(
                store.has_pending_probes("ag-2"),
                "another command's confirmation"
            );
            store.put_probe_set("ag-1", &set).unwrap();
            store.confirm_probes("ag-1", 3).unwrap();
            assert!(!store.has_pending_probes("ag-1"));

            // Damage behind the store's back: found unreadable when the index is rebuilt.
            store
                .certs
                .insert("sm3:ag-2-old", &b"\xff\x00"[..])
                .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open_waiting(dir.path(), DEFAULT_CACHE_BYTES, patience).unwrap();
        assert_eq!(store.certificate_standing("sm3:ag-1"), Standing::Revoked);
        assert_eq!(
            store.certificate_standing("sm3:ag-2"),
            Standing::Agent("ag-2".into())
        );
        assert_eq!(store.certificate_standing("sm3:orphan"), Standing::Unknown);
        assert_eq!(
            store.certificate_standing("sm3:ag-2-old"),
            Standing::Unreadable
        );
        assert!(store.has_pending_probes("ag-2"));
        assert!(!store.has_pending_probes("ag-1"));
        // Rewriting the damaged record makes it readable again.
        store
            .put_cert(
                "sm3:ag-2-old",
                &CertRecord {
                    agent_id: "ag-2".into(),
                    revoked: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            store.certificate_standing("sm3:ag-2-old"),
            Standing::Revoked
        );
    }

    #[test]
    fn enrollment_commits_recheck_revocation_and_tokens_and_keep_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let token = TokenRecord {
            id: "tok".into(),
            expires_ms: 1_000,
            max_uses: 1,
            ..Default::default()
        };
        store.put_token(&token).unwrap();
        let cert = |n: &str| CertRecord {
            agent_id: n.into(),
            ..Default::default()
        };
        let template = AgentRecord {
            id: "ag-1".into(),
            facts: MachineFacts {
                machine_id: "m".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let set_fingerprint = |fingerprint: &'static str| {
            move |agent: &mut AgentRecord| agent.certificate_fingerprint = fingerprint.into()
        };
        let first = set_fingerprint("sm3:1");
        let enrollment = Enrollment {
            agent_id: "ag-1",
            new_agent: Some(&template),
            change: &first,
            cert: &cert("ag-1"),
            token: Some(("tok", 10)),
        };
        assert!(store.commit_enrollment(&enrollment).unwrap().is_ok());
        assert_eq!(store.token("tok").unwrap().unwrap().uses, 1);
        assert_eq!(
            store.agent_for_machine("m", "").unwrap().unwrap().id,
            "ag-1"
        );
        // The token is used up now; expired for a later clock; missing when unknown.
        assert_eq!(
            store.commit_enrollment(&enrollment).unwrap(),
            Err(CommitRefusal::TokenUsedUp)
        );
        store.update_token("tok", |t| t.max_uses = 5).unwrap();
        let late = Enrollment {
            token: Some(("tok", 5_000)),
            ..enrollment
        };
        assert_eq!(
            store.commit_enrollment(&late).unwrap(),
            Err(CommitRefusal::TokenExpired)
        );
        let missing = Enrollment {
            token: Some(("nope", 10)),
            ..enrollment
        };
        assert_eq!(
            store.commit_enrollment(&missing).unwrap(),
            Err(CommitRefusal::TokenMissing)
        );
        store
            .update_token("tok", |t| t.revoked_ms = Some(1))
            .unwrap();
        assert_eq!(
            store.commit_enrollment(&enrollment).unwrap(),
            Err(CommitRefusal::TokenRevoked)
        );

        // A renewal applies its change to the record as it is now: a concurrent uplink
        // override survives, and a revocation in between refuses it.
        store
            .update_agent("ag-1", |a| a.uplink_override = Some("ag-gw".into()))
            .unwrap();
        let second = set_fingerprint("sm3:2");
        let renewal = Enrollment {
            agent_id: "ag-1",
            new_agent: None,
            change: &second,
            cert: &cert("ag-1"),
            token: None,
        };
        let renewed = store.commit_enrollment(&renewal).unwrap().unwrap();
        assert_eq!(renewed.certificate_fingerprint, "sm3:2");
        assert_eq!(renewed.uplink_override.as_deref(), Some("ag-gw"));
        store.revoke_agent("ag-1", 99).unwrap();
        assert_eq!(
            store.commit_enrollment(&renewal).unwrap(),
            Err(CommitRefusal::AgentRevoked)
        );
        let unknown = Enrollment {
            agent_id: "ag-404",
            ..renewal
        };
        assert_eq!(
            store.commit_enrollment(&unknown).unwrap(),
            Err(CommitRefusal::AgentMissing)
        );
    }
}
