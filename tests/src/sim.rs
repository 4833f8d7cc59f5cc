//! The fleet simulator: thousands of agents, each with its own enrolled identity and its own
//! QUIC connection with mutual TLS, multiplexed over a few UDP sockets, sending the report mix
//! of real agents (heartbeats, metrics every interval, occasional asset changes and security
//! findings) — and keeping exact per-agent accounting of what was sent and acknowledged, so a
//! run can prove that nothing acknowledged was lost and nothing stored twice.
//!
//! Identities come from the control plane's bulk issuance (`POST /api/v1/agents/issue`, the
//! same enrollment code as a join) and are cached next to the data directory, so only the first
//! run pays for them. Only loopback addresses are ever dialled: the control plane's own
//! advertised address, which must be a loopback address.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bagui_control_plane::admin::{IssueAgent, IssueRequest, IssueResponse};
use bagui_control_plane::client::ApiClient;
use bagui_control_plane::datadir::DataDir;
use bagui_control_plane::divisions::Divisions;
use bagui_control_plane::receive_thread::ReceiveThread;
use bagui_protocol::assets::{self, AssetChanges, AssetSnapshot};
use bagui_protocol::digest::{self, hex, unhex};
use bagui_protocol::messages::payload;
use bagui_protocol::{
    AgentMessage, Decoded, FrameDecoder, Heartbeat, Hello, Lane, Report, ServerMessage,
};
use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::watch;

/// One simulated agent's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimIdentity {
    pub agent_id: String,
    pub division: String,
    pub key_pkcs8: ByteBuf,
    pub certificate: ByteBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IdentityCache {
    ca_fingerprint: String,
    identities: Vec<SimIdentity>,
}

/// How long a fleet of `agents` spreads its first connections: 2 ms per agent, the control
/// plane's default admission rate (500 sessions/s), at most 120 s. Dialling faster only earns
/// come-back hints: the extra attempts are deferred and retried, which costs both sides
/// handshakes for nothing.
pub fn default_ramp(agents: usize) -> Duration {
    Duration::from_millis(2 * agents as u64).min(Duration::from_secs(120))
}

/// The divisions a fleet of `count` agents is spread over: every township and village (the
/// province-scale case is exactly one each, 17,965), round-robin when there are more agents.
pub fn fleet_divisions(divisions: &Divisions, count: usize) -> Vec<(String, &'static str)> {
    let mut places: Vec<(String, &'static str)> = Vec::new();
    let mut stack = vec![divisions.root().code.clone()];
    while let Some(code) = stack.pop() {
        if let Some(division) = divisions.get(&code) {
            match division.level {
                4 => places.push((code.clone(), "gateway")),
                5 => places.push((code.clone(), "terminal")),
                _ => {}
            }
        }
        stack.extend(divisions.children(&code).iter().cloned());
    }
    places.sort();
    (0..count)
        .map(|index| places[index % places.len()].clone())
        .collect()
}

fn cache_path(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("sim").join("identities.msgpack")
}

/// Loads cached identities and issues more until there are `count`.
pub async fn provision(
    data_dir: &DataDir,
    client: &ApiClient,
    count: usize,
) -> Result<Vec<SimIdentity>> {
    let path = cache_path(data_dir);
    let ca = data_dir.ca()?;
    let ca_fingerprint = ca.fingerprint();
    // Under `shangmi` the TLS keys are SM2, certified from the key and its proof of possession
    // (bound to this deployment) instead of a PKCS#10 request.
    let profile = ca.profile();
    let binding = bagui_protocol::proof::bulk_issue_binding(&ca_fingerprint);
    let mut cache: IdentityCache = match std::fs::read(&path) {
        Ok(bytes) => {
            rmp_serde::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?
        }
        Err(_) => IdentityCache::default(),
    };
    if cache.ca_fingerprint != ca_fingerprint {
        cache = IdentityCache {
            ca_fingerprint,
            identities: Vec::new(),
        };
    }
    if cache.identities.len() < count {
        let divisions = data_dir.divisions()?;
        let places = fleet_divisions(&divisions, count);
        let missing: Vec<(usize, (String, &str))> = places
            .into_iter()
            .enumerate()
            .skip(cache.identities.len())
            .collect();
        for chunk in missing.chunks(bagui_control_plane::admin::MAX_ISSUE_BATCH) {
            let chunk = chunk.to_vec();
            let binding = binding.clone();
            // Key generation is CPU work: keep it off the async workers.
            let (keys, request) = tokio::task::spawn_blocking(move || -> Result<_> {
                let mut keys = Vec::with_capacity(chunk.len());
                let mut agents = Vec::with_capacity(chunk.len());
                for (index, (division, role)) in chunk {
                    let request = bagui_agent::identity::certificate_request_for(
                        profile,
                        &format!("sim-{index}"),
                    )?;
                    let tls_key = request.sm2_key_request(&binding)?.unwrap_or_default();
                    let sm2_key = bagui_agent::identity::generate_sm2_key()?;
                    let key = bagui_control_plane::pki::key_der_from_pem(&request.key_pem)?;
                    keys.push(key.secret_der().to_vec());
                    agents.push(IssueAgent {
                        division,
                        role: role.to_owned(),
                        instance_id: format!("sim-{index}"),
                        hostname: format!("sim-{index}"),
                        csr: hex(&request.csr_der),
                        sm2_public_key: hex(&bagui_agent::identity::sm2_public_key(&sm2_key)),
                        tls_public_key: hex(&tls_key.public_key),
                        tls_key_signature: hex(&tls_key.signature),
                    });
                }
                Ok((keys, IssueRequest { agents }))
            })
            .await??;
            let response: IssueResponse = client.post("/api/v1/agents/issue", &request).await?;
            anyhow::ensure!(
                response.agents.len() == keys.len(),
                "the control plane issued fewer identities than asked"
            );
            for (issued, key) in response.agents.into_iter().zip(keys) {
                cache.identities.push(SimIdentity {
                    agent_id: issued.agent_id,
                    division: issued.division,
                    key_pkcs8: ByteBuf::from(key),
                    certificate: ByteBuf::from(
                        unhex(&issued.certificate).context("certificate is not hex")?,
                    ),
                });
            }
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, rmp_serde::to_vec_named(&cache)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    cache.identities.truncate(count);
    Ok(cache.identities)
}

/// How a fleet behaves.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub server: SocketAddr,
    /// Metrics report interval per agent.
    pub interval: Duration,
    /// UDP sockets the connections are spread over.
    pub sockets: usize,
    /// First connections are spread evenly over this long.
    pub ramp: Duration,
    /// Reconnect backoff bounds (full jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Samples in each metrics report.
    pub samples_per_report: usize,
    /// Packages in each agent's first (full) asset snapshot; 0 sends no asset reports.
    pub packages_per_snapshot: usize,
}

/// Counters shared by every simulated agent.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub connected: AtomicUsize,
    pub ever_connected: AtomicUsize,
    pub reports_sent: AtomicU64,
    pub reports_acked: AtomicU64,
    pub samples_sent: AtomicU64,
    pub sessions_opened: AtomicU64,
    pub come_back_hints: AtomicU64,
    pub errors: AtomicU64,
    /// The simulator's own runtime lag (how late a 50 ms timer fires), the worst so far, µs:
    /// a saturated simulator measures itself, not the control plane.
    pub lag_max_us: AtomicU64,
    /// The same since [`FleetStats::take_recent_lag`] last took it.
    lag_recent_us: AtomicU64,
    /// Ack latencies (µs) of reports acknowledged since the last [`Fleet::take_latencies`].
    latencies_us: Mutex<Vec<u32>>,
}

impl FleetStats {
    /// The worst runtime lag since the last call.
    pub fn take_recent_lag(&self) -> Duration {
        Duration::from_micros(self.lag_recent_us.swap(0, Ordering::Relaxed))
    }
}

/// Exact per-agent accounting.
#[derive(Debug, Default, Clone)]
pub struct AgentLedger {
    pub agent_id: String,
    /// Sequence numbers generated so far are `1..next_seq`.
    pub next_seq: u64,
    /// Every sequence number the control plane acknowledged.
    pub acked: Vec<u64>,
    /// Whether it ever had a session.
    pub connected_once: bool,
    /// Digest of the asset state the control plane was last sent; empty before the first
    /// full snapshot.
    pub asset_digest: String,
}

/// The name of the simulator's receive thread (one for all its sockets).
pub const RECEIVE_THREAD_NAME: &str = "bagui-sim-recv";

/// A running fleet.
pub struct Fleet {
    pub stats: Arc<FleetStats>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<AgentLedger>>,
    started: Instant,
}

struct Shared {
    config: FleetConfig,
    ca: CertificateDer<'static>,
    endpoints: Vec<quinn::Endpoint>,
    stats: Arc<FleetStats>,
    /// Every agent's first full snapshot (`None`: no asset reports).
    snapshot: Option<FleetSnapshot>,
}

impl Fleet {
    /// Starts one task per identity; connections ramp up over `config.ramp`.
    pub fn start(
        identities: Vec<SimIdentity>,
        ca: CertificateDer<'static>,
        config: FleetConfig,
    ) -> Result<Fleet> {
        anyhow::ensure!(
            config.server.ip().is_loopback(),
            "the simulator only dials loopback addresses, not {}",
            config.server
        );
        // The sockets' receive loops on a thread of their own: on the shared runtime they
        // fall behind 18,000 connections and the kernel drops datagrams (see the control
        // plane's `receive_thread`).
        let receive = ReceiveThread::start(RECEIVE_THREAD_NAME)?;
        let mut endpoints = Vec::new();
        for _ in 0..config.sockets.max(1) {
            let socket = bagui_agent::wire::udp_socket(
                "127.0.0.1:0".parse().expect("valid address"),
                8 << 20,
            )?;
            endpoints.push(quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                None,
                socket,
                receive.endpoint_runtime()?,
            )?);
        }
        let stats = Arc::new(FleetStats::default());
        let shared = Arc::new(Shared {
            ca,
            endpoints,
            stats: stats.clone(),
            snapshot: (config.packages_per_snapshot > 0)
                .then(|| FleetSnapshot::new(config.packages_per_snapshot)),
            config,
        });
        let (stop, stop_rx) = watch::channel(false);
        {
            let stats = stats.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let period = Duration::from_millis(50);
                loop {
                    let started = Instant::now();
                    tokio::select! {
                        _ = tokio::time::sleep(period) => {}
                        _ = bagui_agent::stopped(&mut stop) => return,
                    }
                    let lag = started.elapsed().saturating_sub(period).as_micros() as u64;
                    stats.lag_max_us.fetch_max(lag, Ordering::Relaxed);
                    stats.lag_recent_us.fetch_max(lag, Ordering::Relaxed);
                }
            });
        }
        let count = identities.len().max(1);
        let tasks = identities
            .into_iter()
            .enumerate()
            .map(|(index, identity)| {
                let delay = shared.config.ramp.mul_f64(index as f64 / count as f64);
                tokio::spawn(run_agent(
                    index,
                    identity,
                    shared.clone(),
                    delay,
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Fleet {
            stats,
            stop,
            tasks,
            started: Instant::now(),
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ack latencies (ms) since the last call.
    pub fn take_latencies(&self) -> Vec<f64> {
        let taken = std::mem::take(
            &mut *self
                .stats
                .latencies_us
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        taken.into_iter().map(|us| f64::from(us) / 1000.0).collect()
    }

    /// Stops every agent (after a last chance for in-flight acks) and returns the ledgers.
    pub async fn stop(self, drain: Duration) -> Vec<AgentLedger> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + drain + Duration::from_secs(5);
        let mut ledgers = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            if let Ok(Ok(ledger)) = tokio::time::timeout_at(deadline, task).await {
                ledgers.push(ledger);
            }
        }
        ledgers
    }
}

/// The names of a simulated metrics report's samples, in turn.
const SAMPLE_NAMES: [&str; 8] = [
    "node_load1",
    "node_memory_MemAvailable_bytes",
    "node_filesystem_free_bytes",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_cpu_seconds_total",
    "node_procs_running",
    "node_time_offset_seconds",
];

/// [`payload::Sample`] with borrowed strings: the same encoding, without the three
/// allocations per sample that building owned ones cost (at province scale about a tenth of the
/// simulator's CPU).
#[derive(Serialize)]
struct SampleRef<'a> {
    name: &'a str,
    value: f64,
    labels: [(&'a str, &'a str); 1],
}

/// [`payload::Metrics`] with borrowed samples.
#[derive(Serialize)]
struct MetricsRef<'a> {
    taken_ms: u64,
    samples: &'a [SampleRef<'a>],
}

/// The `device` label of sample `index`.
fn device_label(index: usize) -> &'static str {
    const DEVICES: [&str; 8] = [
        "eth0", "eth1", "eth2", "eth3", "eth4", "eth5", "eth6", "eth7",
    ];
    DEVICES[(index / SAMPLE_NAMES.len()) % DEVICES.len()]
}

fn metrics_body(samples: usize, seq: u64, taken_ms: u64) -> Vec<u8> {
    let samples: Vec<SampleRef<'_>> = (0..samples)
        .map(|index| SampleRef {
            name: SAMPLE_NAMES[index % SAMPLE_NAMES.len()],
            value: (seq as f64) * 1.5 + index as f64,
            labels: [("device", device_label(index))],
        })
        .collect();
    payload::encode(&MetricsRef {
        taken_ms,
        samples: &samples,
    })
}

/// A township terminal's first asset snapshot: `packages` installed packages, a few users,
/// listening ports and services, like a lean Kylin or UOS install.
pub fn asset_snapshot(agent_id: &str, packages: usize, now_ms: u64) -> AssetSnapshot {
    let mut snapshot = AssetSnapshot {
        taken_ms: now_ms,
        os: assets::OsInfo {
            id: "kylin".into(),
            family: "kylin".into(),
            name: "Kylin Linux Advanced Server".into(),
            version_id: "V10".into(),
            pretty_name: "Kylin Linux Advanced Server V10 (Lance)".into(),
            kernel: "4.19.90-52.22.v2207.ky10.aarch64".into(),
            arch: "aarch64".into(),
            hostname: agent_id.into(),
            ..assets::OsInfo::default()
        },
        machine: assets::Machine {
            cpu_model: "HUAWEI Kunpeng 920".into(),
            cpu_threads: 4,
            cpu_cores: 4,
            cpu_sockets: 1,
            memory_bytes: 8 << 30,
            ..assets::Machine::default()
        },
        packages: (0..packages)
            .map(|index| assets::Package {
                name: format!("package-{index:04}"),
                version: format!(
                    "{}.{}.{}-{}.ky10",
                    index % 7,
                    index % 13,
                    index % 5,
                    index % 3 + 1
                ),
                arch: "aarch64".into(),
                source: "rpm".into(),
            })
            .collect(),
        listening: [22u16, 9100, 10050]
            .iter()
            .map(|port| assets::Listening {
                proto: "tcp".into(),
                address: "0.0.0.0".into(),
                port: *port,
                process: "sshd".into(),
                pid: 1000 + u32::from(*port),
            })
            .collect(),
        users: ["root", "ops", "audit"]
            .iter()
            .enumerate()
            .map(|(uid, name)| assets::User {
                name: (*name).into(),
                uid: uid as u32 * 1000,
                ..assets::User::default()
            })
            .collect(),
        ..AssetSnapshot::default()
    };
    snapshot.seal();
    snapshot
}

/// The first full snapshot every simulated agent sends, encoded once: the fleet is one
/// Kylin image. Generating 18,000 distinct ones (500 packages each, sorted, encoded twice,
/// hashed) took half the simulator's CPU during a ramp and starved its own sessions.
#[derive(Debug, Clone)]
struct FleetSnapshot {
    body: Vec<u8>,
    digest: String,
}

impl FleetSnapshot {
    fn new(packages: usize) -> FleetSnapshot {
        let snapshot = asset_snapshot("kylin-sim", packages, bagui_agent::join::now_ms());
        FleetSnapshot {
            body: payload::encode(&snapshot),
            digest: snapshot.digest,
        }
    }
}

/// One report of the mix: the full asset snapshot first, then metrics every interval; now and
/// then an asset change (1 in 100: one package upgraded, chained by digest like a real agent's)
/// or a security finding (1 in 1,000).
fn next_report(
    ledger: &mut AgentLedger,
    seq: u64,
    samples: usize,
    packages: usize,
    snapshot: Option<&FleetSnapshot>,
) -> (Lane, &'static str, Vec<u8>) {
    let now = bagui_agent::join::now_ms();
    if let Some(snapshot) = snapshot
        && ledger.asset_digest.is_empty()
    {
        ledger.asset_digest = snapshot.digest.clone();
        return (
            Lane::Inventory,
            assets::ASSET_SNAPSHOT,
            snapshot.body.clone(),
        );
    }
    match rand::random_range(0..1000) {
        0 => (Lane::Security, "security_finding", vec![0x5e; 400]),
        1..=10 if packages > 0 => {
            let index = seq as usize % packages;
            let old = assets::Package {
                name: format!("package-{index:04}"),
                arch: "aarch64".into(),
                source: "rpm".into(),
                ..assets::Package::default()
            };
            let new = assets::Package {
                version: format!("{seq}.0-1.ky10"),
                ..old.clone()
            };
            let base = ledger.asset_digest.clone();
            let next = digest::hex(&digest::sm3(format!("{base}/{seq}").as_bytes()));
            ledger.asset_digest = next.clone();
            let changes = AssetChanges {
                taken_ms: now,
                base_digest: base,
                digest: next,
                changes: vec![assets::AssetChange {
                    section: "package".into(),
                    key: format!("{}:aarch64", old.name),
                    op: assets::ChangeOp::Changed,
                    old: Some(ByteBuf::from(payload::encode(&old))),
                    new: Some(ByteBuf::from(payload::encode(&new))),
                }],
            };
            (
                Lane::Inventory,
                assets::ASSET_CHANGES,
                payload::encode(&changes),
            )
        }
        _ => (
            Lane::Metrics,
            payload::METRICS,
            metrics_body(samples, seq, now),
        ),
    }
}

enum SessionEnd {
    Stopped,
    ComeBack(Duration),
    Failed,
}

async fn run_agent(
    index: usize,
    identity: SimIdentity,
    shared: Arc<Shared>,
    delay: Duration,
    mut stop: watch::Receiver<bool>,
) -> AgentLedger {
    let mut ledger = AgentLedger {
        agent_id: identity.agent_id.clone(),
        next_seq: 1,
        ..AgentLedger::default()
    };
    // Reports generated and not yet acknowledged: resent after every reconnect.
    let mut unacked: BTreeMap<u64, Report> = BTreeMap::new();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8.to_vec()));
    let config = match bagui_agent::tls::session_config(
        &shared.ca,
        CertificateDer::from(identity.certificate.to_vec()),
        key,
        bagui_agent::tls::client_transport(Duration::from_secs(30), Duration::from_secs(10)),
    ) {
        Ok(config) => config,
        Err(_) => {
            shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            return ledger;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = bagui_agent::stopped(&mut stop) => return ledger,
    }
    let endpoint = &shared.endpoints[index % shared.endpoints.len()];
    let mut attempt = 0u32;
    // Each agent's report clock has its own phase.
    let mut next_report_at =
        tokio::time::Instant::now() + shared.config.interval.mul_f64(rand::random::<f64>());
    loop {
        if *stop.borrow() {
            return ledger;
        }
        let end = session(
            endpoint,
            &config,
            &shared,
            &identity,
            &mut ledger,
            &mut unacked,
            &mut next_report_at,
            &mut stop,
        )
        .await;
        let wait = match end {
            SessionEnd::Stopped => return ledger,
            SessionEnd::ComeBack(after) => {
                attempt = 0;
                shared.stats.come_back_hints.fetch_add(1, Ordering::Relaxed);
                after + Duration::from_millis(100).mul_f64(rand::random::<f64>())
            }
            SessionEnd::Failed => {
                let wait = bagui_agent::link::backoff(
                    attempt,
                    shared.config.backoff_min,
                    shared.config.backoff_max,
                );
                attempt = attempt.saturating_add(1);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = bagui_agent::stopped(&mut stop) => return ledger,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    shared: &Shared,
    identity: &SimIdentity,
    ledger: &mut AgentLedger,
    unacked: &mut BTreeMap<u64, Report>,
    next_report_at: &mut tokio::time::Instant,
    stop: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let stats = &shared.stats;
    let Ok(connecting) = endpoint.connect_with(config.clone(), shared.config.server, "127.0.0.1")
    else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return SessionEnd::Failed;
    };
    let connection = tokio::select! {
        result = tokio::time::timeout(Duration::from_secs(20), connecting) => match result {
            Ok(Ok(connection)) => connection,
            _ => return SessionEnd::Failed,
        },
        _ = bagui_agent::stopped(stop) => return SessionEnd::Stopped,
    };
    let Ok((mut send, mut recv)) = connection.open_bi().await else {
        return SessionEnd::Failed;
    };
    let mut buffer = BytesMut::new();
    let hello = AgentMessage::from(Hello {
        protocol_version: bagui_protocol::PROTOCOL_VERSION,
        agent_version: "sim".into(),
        agent_id: identity.agent_id.clone(),
        next_seq: ledger.next_seq,
        ..Default::default()
    });
    if hello.encode(1 << 20, &mut buffer).is_err() || send.write_all(&buffer).await.is_err() {
        return SessionEnd::Failed;
    }
    let mut decoder = FrameDecoder::new(1 << 20);
    let welcome = match tokio::time::timeout(
        Duration::from_secs(20),
        bagui_agent::wire::read_frame(&mut recv, &mut decoder),
    )
    .await
    {
        Ok(Ok(Some(frame))) => match ServerMessage::decode(&frame) {
            Ok(Decoded::Known(ServerMessage::Welcome(welcome))) => welcome,
            Ok(Decoded::Known(ServerMessage::ComeBackLater(later))) => {
                return SessionEnd::ComeBack(Duration::from_millis(later.after_ms));
            }
            _ => return SessionEnd::Failed,
        },
        _ => return SessionEnd::Failed,
    };
    stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
    stats.connected.fetch_add(1, Ordering::Relaxed);
    if !ledger.connected_once {
        ledger.connected_once = true;
        stats.ever_connected.fetch_add(1, Ordering::Relaxed);
    }
    struct Connected<'a>(&'a FleetStats);
    impl Drop for Connected<'_> {
        fn drop(&mut self) {
            self.0.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _connected = Connected(stats);

    let window = welcome.max_in_flight.max(1) as usize;
    let mut sent_at: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut heartbeat = tokio::time::interval(Duration::from_millis(
        welcome.heartbeat_interval_ms.max(100),
    ));
    heartbeat.tick().await;
    let mut come_back = None;
    // Everything unacknowledged from the previous session goes again, first, in order.
    let mut resend: VecDeque<u64> = unacked.keys().copied().collect();
    loop {
        buffer.clear();
        let now = Instant::now();
        while sent_at.len() < window {
            let Some(seq) = resend.pop_front() else { break };
            if let Some(report) = unacked.get(&seq) {
                let _ = AgentMessage::from(report.clone()).encode(1 << 20, &mut buffer);
                sent_at.insert(seq, now);
            }
        }
        if !buffer.is_empty() && send.write_all(&buffer).await.is_err() {
            return SessionEnd::Failed;
        }
        tokio::select! {
            biased;
            _ = bagui_agent::stopped(stop) => {
                // A last moment for acks already on their way.
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    drain_acks(&mut recv, &mut decoder, &mut sent_at, unacked, ledger, stats),
                )
                .await;
                connection.close(0u32.into(), b"simulation over");
                return SessionEnd::Stopped;
            }
            frame = bagui_agent::wire::read_frame(&mut recv, &mut decoder) => {
                let Ok(Some(frame)) = frame else {
                    // Closed: by a restart or shutdown (with a come-back hint), or lost.
                    return come_back.map_or(SessionEnd::Failed, SessionEnd::ComeBack);
                };
                match ServerMessage::decode(&frame) {
                    Ok(Decoded::Known(ServerMessage::Ack(ack))) => {
                        acknowledge(&ack, &mut sent_at, unacked, ledger, stats);
                    }
                    Ok(Decoded::Known(ServerMessage::ComeBackLater(later))) => {
                        come_back = Some(Duration::from_millis(later.after_ms));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        return SessionEnd::Failed;
                    }
                }
            }
            _ = tokio::time::sleep_until(*next_report_at) => {
                *next_report_at += shared.config.interval;
                let seq = ledger.next_seq;
                ledger.next_seq += 1;
                let (lane, kind, body) = next_report(
                    ledger,
                    seq,
                    shared.config.samples_per_report,
                    shared.config.packages_per_snapshot,
                    shared.snapshot.as_ref(),
                );
                if lane == Lane::Metrics {
                    stats.samples_sent.fetch_add(shared.config.samples_per_report as u64, Ordering::Relaxed);
                }
                let report = Report {
                    seq,
                    lane,
                    kind: kind.into(),
                    created_ms: bagui_agent::join::now_ms(),
                    body: ByteBuf::from(body),
                    cipher: String::new(),
                    sealed_seq: 0,
                };
                unacked.insert(seq, report.clone());
                stats.reports_sent.fetch_add(1, Ordering::Relaxed);
                if sent_at.len() < window {
                    buffer.clear();
                    let _ = AgentMessage::from(report).encode(1 << 20, &mut buffer);
                    sent_at.insert(seq, Instant::now());
                    if send.write_all(&buffer).await.is_err() {
                        return SessionEnd::Failed;
                    }
                } else {
                    resend.push_back(seq);
                }
            }
            _ = heartbeat.tick() => {
                buffer.clear();
                let beat = AgentMessage::from(Heartbeat {
                    sent_ms: bagui_agent::join::now_ms(),
                    ..Default::default()
                });
                let _ = beat.encode(1 << 20, &mut buffer);
                if send.write_all(&buffer).await.is_err() {
                    return SessionEnd::Failed;
                }
            }
        }
    }
}

fn acknowledge(
    ack: &bagui_protocol::Ack,
    sent_at: &mut BTreeMap<u64, Instant>,
    unacked: &mut BTreeMap<u64, Report>,
    ledger: &mut AgentLedger,
    stats: &FleetStats,
) {
    let Some(seqs) = ack.seqs(1 << 16) else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let now = Instant::now();
    let mut latencies = Vec::with_capacity(seqs.len());
    for seq in seqs {
        if let Some(at) = sent_at.remove(&seq) {
            latencies.push(now.duration_since(at).as_micros().min(u128::from(u32::MAX)) as u32);
        }
        if unacked.remove(&seq).is_some() {
            ledger.acked.push(seq);
            stats.reports_acked.fetch_add(1, Ordering::Relaxed);
        }
    }
    if !latencies.is_empty() {
        stats
            .latencies_us
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .extend(latencies);
    }
}

async fn drain_acks(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
    sent_at: &mut BTreeMap<u64, Instant>,
    unacked: &mut BTreeMap<u64, Report>,
    ledger: &mut AgentLedger,
    stats: &FleetStats,
) {
    while !sent_at.is_empty() {
        let Ok(Some(frame)) = bagui_agent::wire::read_frame(recv, decoder).await else {
            return;
        };
        if let Ok(Decoded::Known(ServerMessage::Ack(ack))) = ServerMessage::decode(&frame) {
            acknowledge(&ack, sent_at, unacked, ledger, stats);
        }
    }
}

/// Percentile of sorted values (`NaN` when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The simulator's summary, as `bagui-sim --output json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub agents: usize,
    pub agents_connected: usize,
    pub agents_ever_connected: usize,
    pub time_to_all_connected_ms: Option<u64>,
    pub reports_sent: u64,
    pub reports_acked: u64,
    pub samples_sent: u64,
    pub reports_per_second: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_max_ms: f64,
    pub sessions_opened: u64,
    pub come_back_hints: u64,
    pub errors: u64,
    /// The simulator's worst runtime lag over the run (see [`FleetStats::lag_max_us`]).
    #[serde(default)]
    pub sim_lag_max_ms: f64,
    pub duration_s: f64,
    pub interval_s: f64,
}

/// Reads what a simulation needs from a control plane's data directory.
pub struct Target {
    pub data_dir: DataDir,
    pub client: ApiClient,
    pub server: SocketAddr,
    pub ca: CertificateDer<'static>,
}

impl Target {
    /// The control plane running from `data_dir` (it must be running: its API is used).
    pub fn open(data_dir: &Path) -> Result<Target> {
        let data_dir = DataDir::new(data_dir);
        let deployment = data_dir.deployment()?;
        let info = data_dir.api_info().context(
            "the control plane must be running from this data directory (`bagui-cp run`)",
        )?;
        let ca = data_dir.ca()?.cert_der().clone();
        let client = ApiClient::new(&info.url, &data_dir.admin_token()?, Some(&ca))?;
        let server: SocketAddr = deployment
            .advertise
            .parse()
            .or_else(|_| info.quic.parse())
            .with_context(|| {
                format!("advertised address {} is not IP:PORT", deployment.advertise)
            })?;
        if !server.ip().is_loopback() {
            bail!("the simulator only targets loopback; this control plane advertises {server}");
        }
        Ok(Target {
            data_dir,
            client,
            server,
            ca,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_metrics_body_decodes_as_the_protocol_s_metrics() {
        let body = metrics_body(20, 7, 1_700_000_000_123);
        let metrics: payload::Metrics = payload::decode(&body).expect("a metrics payload");
        assert_eq!(metrics.taken_ms, 1_700_000_000_123);
        assert_eq!(metrics.samples.len(), 20);
        assert_eq!(
            metrics.samples[9],
            payload::Sample {
                name: "node_memory_MemAvailable_bytes".into(),
                value: 7.0 * 1.5 + 9.0,
                labels: vec![("device".into(), "eth1".into())],
            }
        );
        // Byte for byte what the agent's owned structs encode to.
        assert_eq!(payload::encode(&metrics), body);
    }
}
