//! The QUIC side of the control plane: enrollment connections, agent sessions, admission
//! control and the group commit that makes acknowledgements durable.
//!
//! Only this module knows quinn. A connection's ALPN decides what it is:
//! - `bagui-join/1`: one request (join or renewal after expiry), one answer, close;
//! - `bagui/1`: an authenticated session — the client certificate maps to an agent, the agent
//!   opens one bidirectional stream, says hello, and streams reports, heartbeats and requests.
//!
//! Delivery guarantee: a report is acknowledged only after the [`Committer`] has written it and
//! flushed the store. Reports from all sessions share one writer thread, so one fsync covers
//! every report that arrived while the previous fsync ran (group commit); acks therefore cost
//! no flush each, and a kill -9 can lose only reports that were never acknowledged.
//!
//! Sealed reports (`Report::cipher` = `"sm4-ccm/sm2"`, see [`bagui_protocol::sealed`]) are
//! opened here, before they are stored and projected, by the [`Unsealer`]: it caches each
//! agent data key it unwraps, so the control plane does one SM2 decryption per data key (an
//! agent makes one per start and per hour), not one per report. A report that does not open
//! is stored as received (still sealed, its cipher kept: the flag), counted in
//! `bagui_reports_undecryptable_total`, acknowledged and not projected; the session goes on.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bagui_agent::wire::ReadError;
use bagui_protocol::proof::{EXPORTER_LABEL, EXPORTER_LEN};
use bagui_protocol::sealed::{self, Envelope, Opener, RecordContext, SealError};
use bagui_protocol::{
    ALPN_JOIN, ALPN_SESSION, Ack, AgentMessage, ComeBackLater, CryptoProfile, Decoded, ErrorCode,
    Frame, FrameDecoder, FrameError, Heartbeat, JoinClientMessage, JoinRefusal, JoinRejected,
    JoinServerMessage, RenewalRefused, ServerMessage, Unsupported, Welcome,
};
use bytes::BytesMut;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::audit::Audit;
use crate::clock::Clock;
use crate::enroll::{AuthError, CertRequest, Enroller};
use crate::metrics::Metrics;
use crate::store::{Insert, NewReport, Store, StoredReport};

/// Limits and timers of agent sessions.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub max_frame_len: usize,
    pub heartbeat_interval: Duration,
    /// A session is dropped after this many heartbeat intervals without a frame.
    pub missed_heartbeats: u32,
    pub max_in_flight: u32,
    /// A report produced longer than this before it arrived is marked late.
    pub late_after: Duration,
    /// Sessions admitted per second once the burst is spent.
    pub admission_rate: f64,
    pub admission_burst: f64,
    /// Largest number of reports in one group commit.
    pub max_commit_batch: usize,
    /// How long a group commit waits for more reports after the first (0: no wait).
    pub commit_window: Duration,
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        IngestConfig {
            max_frame_len: bagui_protocol::DEFAULT_MAX_FRAME_LEN,
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            max_in_flight: 256,
            late_after: Duration::from_secs(120),
            admission_rate: 500.0,
            admission_burst: 500.0,
            max_commit_batch: 8192,
            commit_window: Duration::from_millis(5),
        }
    }
}

fn close(connection: &quinn::Connection, code: ErrorCode, reason: &str) {
    connection.close(quinn::VarInt::from_u32(code.code()), reason.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Admission control
// ---------------------------------------------------------------------------------------------

/// The furthest into the future a come-back slot is handed out.
pub const MAX_COME_BACK: Duration = Duration::from_secs(300);

/// How long a connection attempt may be held before its handshake starts. Agents wait 10 s
/// for a handshake by default; holding well below that keeps every held attempt alive.
pub const MAX_HOLD: Duration = Duration::from_secs(4);

/// What to do with one connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Handshake now.
    Now,
    /// Hold the attempt (the client keeps retransmitting its first packet) and handshake after
    /// this long: its reserved slot.
    Hold(Duration),
    /// Beyond the hold window: handshake, then tell the agent to come back after this long.
    ComeBack(Duration),
    /// Beyond the hold window, and already telling as many as the rate allows: drop the attempt
    /// unanswered, without a handshake; the client's retransmission is the next attempt.
    Refuse,
}

/// Paces how fast agents get in, so that a fleet reconnecting at once (a control-plane restart)
/// arrives as a steady stream instead of a storm of handshakes.
///
/// Admissions are slots reserved at the admission rate, `burst` of them available at once.
/// An attempt whose slot is within [`MAX_HOLD`] is simply held until its slot, so it costs
/// exactly one handshake. Later ones are handshaken only to be told when to come back — those
/// return times are spread at the same rate — and only as fast as the rate allows; the rest
/// are dropped unanswered before any cryptography, and their clients' retransmissions try
/// again.
#[derive(Debug)]
pub struct Admission {
    interval: Duration,
    burst: u32,
    state: Mutex<AdmissionState>,
}

#[derive(Debug)]
struct AdmissionState {
    /// The next free admission slot.
    next_slot: Instant,
    /// The next come-back time to promise.
    next_promise: Instant,
    /// The next moment a come-back handshake may be spent.
    next_telling: Instant,
}

impl Admission {
    pub fn new(rate_per_second: f64, burst: f64) -> Admission {
        let now = Instant::now();
        Admission {
            interval: Duration::from_secs_f64(1.0 / rate_per_second.max(1e-3)),
            burst: burst.max(1.0) as u32,
            state: Mutex::new(AdmissionState {
                next_slot: now,
                next_promise: now,
                next_telling: now,
            }),
        }
    }

    /// Decides what to do with a connection attempt arriving now.
    pub fn admit(&self) -> Admit {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Admit {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Up to `burst` slots may lie in the past: that is the credit an idle period earns.
        let earliest = now.checked_sub(self.interval * self.burst).unwrap_or(now);
        let slot = state.next_slot.max(earliest);
        let wait = slot.saturating_duration_since(now);
        if wait <= MAX_HOLD {
            state.next_slot = slot + self.interval;
            return if wait.is_zero() {
                Admit::Now
            } else {
                Admit::Hold(wait)
            };
        }
        if state.next_telling > now {
            return Admit::Refuse;
        }
        state.next_telling = state.next_telling.max(earliest) + self.interval;
        let promise = state.next_promise.max(slot);
        state.next_promise = promise + self.interval;
        let after = promise.saturating_duration_since(now);
        if after > MAX_COME_BACK {
            // Never promise beyond the horizon; spread those over the horizon's second half.
            return Admit::ComeBack(MAX_COME_BACK.mul_f64(0.5 + 0.5 * rand::random::<f64>()));
        }
        Admit::ComeBack(after)
    }
}

/// How late the async runtime runs a timer, smoothed: the most direct sign that the control
/// plane is overloaded (CPU starved, or its socket backing up). Admission stops letting new
/// sessions in while it is high, so a fleet arriving faster than the machine can take it slows
/// down instead of collapsing into timeouts and reconnects.
#[derive(Debug, Default)]
pub struct LoadMonitor {
    lag_us: AtomicU64,
}

/// Runtime lag above which no new session is admitted.
pub const OVERLOAD_LAG: Duration = Duration::from_millis(20);

impl LoadMonitor {
    /// Starts measuring (every 50 ms) until `shutdown`.
    pub fn spawn(
        self: &Arc<Self>,
        metrics: Metrics,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let monitor = self.clone();
        tokio::spawn(async move {
            let period = Duration::from_millis(50);
            let mut smoothed = 0.0f64;
            loop {
                let started = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stopped(&mut shutdown) => return,
                }
                let lag = started.elapsed().saturating_sub(period).as_secs_f64() * 1e6;
                smoothed = 0.8 * smoothed + 0.2 * lag;
                monitor.lag_us.store(smoothed as u64, Ordering::Relaxed);
                metrics.runtime_lag_seconds.set(smoothed / 1e6);
            }
        })
    }

    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }

    pub fn overloaded(&self) -> bool {
        self.lag() > OVERLOAD_LAG
    }
}

/// A plain token bucket: `rate` per second, `burst` at once.
#[derive(Debug)]
pub struct TokenBucket {
    rate_per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate_per_second: f64, burst: f64) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate_per_second: rate_per_second.max(1e-3),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub fn try_acquire(&self) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens
            + now.saturating_duration_since(last).as_secs_f64() * self.rate_per_second)
            .min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions registry
// ---------------------------------------------------------------------------------------------

/// What a session task receives to send (or do) on its connection.
#[derive(Debug)]
pub enum Outgoing {
    Message(ServerMessage),
    /// Close the connection with this code.
    Close(ErrorCode, String),
}

/// Live facts about one session, readable without touching quinn.
#[derive(Debug, Clone, Default)]
pub struct LiveSession {
    pub session_id: u64,
    pub connected_ms: u64,
    pub last_seen_ms: u64,
    pub remote_address: String,
    pub agent_version: String,
    pub heartbeat: Option<Heartbeat>,
    /// The agent's clock minus ours, from the last heartbeat (its send time plus half the RTT
    /// against our receive time); positive when the agent runs ahead.
    pub clock_offset_ms: Option<i64>,
    /// The deployment's crypto profile, which this session's handshake succeeded under. quinn
    /// 0.11 does not expose the negotiated suite or group; the profile names them: under
    /// `shangmi` the provider has exactly one of each, and a Bagui `standard` agent offers
    /// exactly one of each (see [`CryptoProfile::tls_suite`]).
    pub crypto_profile: CryptoProfile,
}

/// Most messages queued to one session before it counts as not reading its stream.
const OUTGOING_QUEUE: usize = 1024;

/// One session's outgoing queue: bounded, and light when idle (an empty queue owns no
/// buffer, where a channel keeps a block of slots per session — at 18,000 sessions that
/// difference is tens of MiB).
#[derive(Default)]
struct OutgoingQueue {
    items: Mutex<VecDeque<Outgoing>>,
    ready: Notify,
    closed: AtomicBool,
}

enum QueueRefusal {
    Full,
    Closed,
}

impl OutgoingQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outgoing>> {
        self.items
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn push(&self, item: Outgoing) -> Result<(), QueueRefusal> {
        if self.closed.load(Ordering::Acquire) {
            return Err(QueueRefusal::Closed);
        }
        let mut items = self.lock();
        if items.len() >= OUTGOING_QUEUE {
            return Err(QueueRefusal::Full);
        }
        items.push_back(item);
        drop(items);
        self.ready.notify_one();
        Ok(())
    }

    /// Everything queued, waiting for at least one item; `None` once closed and empty.
    async fn next_batch(&self) -> Option<Vec<Outgoing>> {
        loop {
            {
                let mut items = self.lock();
                if !items.is_empty() {
                    let batch: Vec<Outgoing> = items.drain(..).collect();
                    if items.capacity() > 64 {
                        *items = VecDeque::new();
                    }
                    return Some(batch);
                }
                if self.closed.load(Ordering::Acquire) {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }
}

/// How to reach one session's connection: its bounded outgoing queue, and the connection
/// itself to close when the queue overflows (an agent that stops reading its stream must not
/// make the control plane buffer without bound).
#[derive(Clone)]
pub struct SessionHandle {
    pub session_id: u64,
    connection: quinn::Connection,
    outgoing: Arc<OutgoingQueue>,
    /// Longest silence tolerated before the session is dropped, in ms.
    silence_ms: Arc<AtomicU64>,
}

impl SessionHandle {
    /// Queues `item`; `false` if the session is gone or was closed for not reading.
    fn send(&self, item: Outgoing) -> bool {
        match self.outgoing.push(item) {
            Ok(()) => true,
            Err(QueueRefusal::Full) => {
                close(
                    &self.connection,
                    ErrorCode::Protocol,
                    "agent is not reading its session stream",
                );
                false
            }
            Err(QueueRefusal::Closed) => false,
        }
    }
}

struct SessionEntry {
    handle: SessionHandle,
    live: LiveSession,
}

/// The open sessions, by agent id: what "online" means.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, SessionEntry>>>,
    next_id: Arc<AtomicU64>,
    /// Heartbeats an agent may miss before its session is dropped.
    missed_heartbeats: u32,
    /// Sessions of one identity replacing each other from different hosts.
    clones: Arc<Mutex<CloneWatch>>,
}

/// Replacements within this window count towards a suspected clone.
const CLONE_WINDOW_MS: u64 = 10 * 60 * 1000;
/// This many replacements from at least two hosts within the window: a cloned identity.
const CLONE_REPLACEMENTS: usize = 3;

/// Watches for one agent identity used from two machines (a cloned VM or a copied state
/// directory): their sessions replace each other over and over. Bounded: only agents whose
/// session was replaced recently are remembered.
#[derive(Debug, Default)]
pub struct CloneWatch {
    replaced: HashMap<String, Vec<(u64, std::net::IpAddr)>>,
    /// Agents already reported, until their replacements stop for a window.
    reported: HashMap<String, u64>,
}

impl CloneWatch {
    /// A session of `agent` from `new` replaced one from `old` at `now`. Returns the hosts
    /// involved when this makes the identity a suspected clone (once per episode).
    pub fn replaced(
        &mut self,
        agent: &str,
        old: std::net::IpAddr,
        new: std::net::IpAddr,
        now: u64,
    ) -> Option<Vec<std::net::IpAddr>> {
        let since = now.saturating_sub(CLONE_WINDOW_MS);
        self.replaced.retain(|_, events| {
            events.retain(|(at, _)| *at >= since);
            !events.is_empty()
        });
        self.reported.retain(|_, at| *at >= since);
        if old == new {
            // A reconnect from the same host (NAT rebinding, a restart): not a clone.
            return None;
        }
        let events = self.replaced.entry(agent.to_owned()).or_default();
        events.push((now, old));
        events.push((now, new));
        let mut hosts: Vec<std::net::IpAddr> = events.iter().map(|(_, ip)| *ip).collect();
        hosts.sort();
        hosts.dedup();
        let replacements = events.len() / 2;
        if replacements >= CLONE_REPLACEMENTS && hosts.len() >= 2 {
            let first = !self.reported.contains_key(agent);
            self.reported.insert(agent.to_owned(), now);
            return first.then_some(hosts);
        }
        None
    }
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new(IngestConfig::default().missed_heartbeats)
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.len())
            .finish()
    }
}

/// Why a command could not be delivered.
#[derive(Debug, thiserror::Error)]
#[error("agent {0} is not connected")]
pub struct NotConnected(pub String);

impl Sessions {
    pub fn new(missed_heartbeats: u32) -> Sessions {
        Sessions {
            inner: Arc::default(),
            next_id: Arc::default(),
            missed_heartbeats: missed_heartbeats.max(1),
            clones: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every open session.
    pub fn snapshot(&self) -> HashMap<String, LiveSession> {
        self.lock()
            .iter()
            .map(|(id, entry)| (id.clone(), entry.live.clone()))
            .collect()
    }

    pub fn get(&self, agent_id: &str) -> Option<LiveSession> {
        self.lock().get(agent_id).map(|entry| entry.live.clone())
    }

    /// Closes an agent's session at once (revocation).
    pub fn disconnect(&self, agent_id: &str, code: ErrorCode, reason: &str) -> bool {
        match self.lock().remove(agent_id) {
            Some(entry) => {
                close(&entry.handle.connection, code, reason);
                true
            }
            None => false,
        }
    }

    /// Queues a message for an agent's session.
    pub fn send(&self, agent_id: &str, message: ServerMessage) -> Result<(), NotConnected> {
        let handle = self
            .lock()
            .get(agent_id)
            .map(|entry| entry.handle.clone())
            .ok_or_else(|| NotConnected(agent_id.to_owned()))?;
        if handle.send(Outgoing::Message(message)) {
            Ok(())
        } else {
            Err(NotConnected(agent_id.to_owned()))
        }
    }

    /// Tells a session the agent's heartbeat interval changed, so that its silence limit
    /// follows (three missed heartbeats plus a second).
    pub fn set_heartbeat_interval(&self, agent_id: &str, interval: Duration) {
        if let Some(entry) = self.lock().get(agent_id) {
            let limit = interval * self.missed_heartbeats + Duration::from_secs(1);
            entry
                .handle
                .silence_ms
                .store(limit.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Every open session (for shutdown).
    fn handles(&self) -> Vec<SessionHandle> {
        self.lock()
            .values()
            .map(|entry| entry.handle.clone())
            .collect()
    }

    /// Registers a session; if it replaced another of the same agent from another host often
    /// enough to suspect a cloned identity, returns the hosts.
    fn register(
        &self,
        agent_id: &str,
        handle: SessionHandle,
        live: LiveSession,
    ) -> Option<Vec<std::net::IpAddr>> {
        let new_address = live.remote_address.parse::<SocketAddr>().ok();
        let now = live.connected_ms;
        let previous = self
            .lock()
            .insert(agent_id.to_owned(), SessionEntry { handle, live });
        let previous = previous?;
        close(
            &previous.handle.connection,
            ErrorCode::Replaced,
            "a newer session of this agent replaced this one",
        );
        let old = previous.live.remote_address.parse::<SocketAddr>().ok()?;
        self.clones
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .replaced(agent_id, old.ip(), new_address?.ip(), now)
    }

    fn touch(&self, agent_id: &str, session_id: u64, now_ms: u64, heartbeat: Option<Heartbeat>) {
        if let Some(entry) = self.lock().get_mut(agent_id)
            && entry.live.session_id == session_id
        {
            entry.live.last_seen_ms = now_ms;
            if let Some(heartbeat) = heartbeat {
                let half_rtt_ms = (heartbeat.link.rtt_us / 2000) as i64;
                entry.live.clock_offset_ms =
                    Some(heartbeat.sent_ms as i64 + half_rtt_ms - now_ms as i64);
                entry.live.heartbeat = Some(heartbeat);
            }
        }
    }

    /// Removes the session if it is still this one; returns its last state.
    fn remove(&self, agent_id: &str, session_id: u64) -> Option<LiveSession> {
        let mut sessions = self.lock();
        match sessions.get(agent_id) {
            Some(entry) if entry.live.session_id == session_id => {
                sessions.remove(agent_id).map(|entry| entry.live)
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Group commit
// ---------------------------------------------------------------------------------------------

struct IngestItem {
    report: NewReport,
    session: SessionHandle,
    /// Bytes of the commit budget this report holds until it is committed.
    _budget: OwnedSemaphorePermit,
}

/// Reports queued for the writer thread may hold at most this many bytes in all, so a burst
/// of large reports slows the senders (QUIC flow control) instead of growing memory.
const COMMIT_BUDGET_BYTES: usize = 64 << 20;

/// The nice value the commit thread asks for. Every ack waits for it, and on a saturated
/// machine it otherwise queues for a core behind connection tasks and the projector. 50,000
/// simulated agents on 2 cores, metrics only, p99 ack per 5-second block once settled: 59–271
/// ms without (one run), 27–224 ms with (three runs, one 395 ms block). Lowering a nice value
/// needs CAP_SYS_NICE or an RLIMIT_NICE that allows it (the packaged unit sets
/// `LimitNICE=-10`); without either the thread keeps the process's.
pub const COMMIT_NICE: i32 = -10;

/// Sets the calling thread's nice value (Linux: `setpriority` on a thread id is per thread).
fn favour_this_thread(nice: i32) -> std::io::Result<()> {
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)?;
    Ok(())
}

/// Hands reports to the writer thread.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<IngestItem>,
    budget: Arc<Semaphore>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the writer thread. It stops when every `Committer` clone is dropped, after
    /// committing what was queued. After each commit it wakes the projector (see
    /// [`crate::inventory`]), which derives the ledger from what was stored.
    pub fn spawn(
        store: Store,
        metrics: Metrics,
        max_batch: usize,
        window: Duration,
        projector: crate::inventory::ProjectorWaker,
    ) -> (Committer, std::thread::JoinHandle<()>) {
        let (queue, mut receiver) = mpsc::channel::<IngestItem>(max_batch.max(1) * 4);
        let thread = std::thread::Builder::new()
            .name("bagui-commit".into())
            .spawn(move || {
                match favour_this_thread(COMMIT_NICE) {
                    Ok(()) => tracing::debug!(nice = COMMIT_NICE, "commit thread favoured"),
                    Err(error) => tracing::info!(
                        %error,
                        "the commit thread keeps the process's priority (nice {COMMIT_NICE} needs \
                         CAP_SYS_NICE or LimitNICE={COMMIT_NICE}); acks may wait longer on a busy machine"
                    ),
                }
                let mut batch = Vec::with_capacity(max_batch);
                while let Some(first) = receiver.blocking_recv() {
                    batch.push(first);
                    // Give reports arriving right behind the first a moment to join it: a
                    // fleet reporting every 15 s otherwise gets one fsync per report. The
                    // window costs each report at most a few ms of ack latency.
                    if !window.is_zero() {
                        std::thread::sleep(window);
                    }
                    while batch.len() < max_batch {
                        match receiver.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    commit(&store, &metrics, std::mem::take(&mut batch));
                    projector.wake();
                }
            })
            .expect("spawning the commit thread");
        (
            Committer {
                queue,
                budget: Arc::new(Semaphore::new(COMMIT_BUDGET_BYTES)),
            },
            thread,
        )
    }

    /// Queues a report, waiting while the commit budget is spent.
    async fn submit(&self, report: NewReport, session: SessionHandle) -> Result<(), String> {
        let cost = (report.report.body.len() + report.report.kind.len() + 64)
            .min(COMMIT_BUDGET_BYTES) as u32;
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| "the commit budget is closed".to_owned())?;
        self.queue
            .send(IngestItem {
                report,
                session,
                _budget: budget,
            })
            .await
            .map_err(|_| "the commit thread has stopped".to_owned())
    }
}

fn commit(store: &Store, metrics: &Metrics, batch: Vec<IngestItem>) {
    let started = Instant::now();
    let count = batch.len();
    let mut reports = Vec::with_capacity(count);
    let mut senders = Vec::with_capacity(count);
    for item in batch {
        senders.push((
            item.session,
            item.report.seq,
            item.report.report.late,
            item._budget,
        ));
        reports.push(item.report);
    }
    let result = store
        .insert_reports(&mut reports)
        .and_then(|fresh| store.flush().map(|()| fresh));
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.commit_batch_reports.observe(count as f64);
    match result {
        Ok(outcomes) => {
            // Per session: the seqs acknowledged, and those to send again renumbered.
            let mut acks: HashMap<u64, (SessionHandle, Vec<u64>, Vec<u64>)> = HashMap::new();
            let judged = senders.into_iter().zip(outcomes).zip(&reports);
            for (((session, seq, late, _budget), outcome), report) in judged {
                let entry = acks
                    .entry(session.session_id)
                    .or_insert_with(|| (session, Vec::new(), Vec::new()));
                match outcome {
                    Insert::New => {
                        if late {
                            metrics.reports_late.inc();
                        }
                        entry.1.push(seq);
                    }
                    Insert::Duplicate => {
                        metrics.reports_duplicate.inc();
                        entry.1.push(seq);
                    }
                    Insert::Reused => {
                        metrics.reports_renumbered.inc();
                        tracing::warn!(agent = %report.agent_id, seq, "another report is stored under this seq (agent state restored from a backup?); asking the agent to renumber it");
                        entry.2.push(seq);
                    }
                }
            }
            for (session, seqs, renumber) in acks.into_values() {
                // A closed session simply misses its ack; the agent resends and we de-duplicate.
                let mut ack = Ack::from_seqs(seqs);
                ack.renumber = renumber;
                session.send(Outgoing::Message(ack.into()));
            }
        }
        Err(error) => {
            metrics.commit_errors.inc();
            tracing::error!(%error, reports = count, "group commit failed; closing the affected sessions");
            for (session, ..) in senders {
                close(
                    &session.connection,
                    ErrorCode::Internal,
                    "the control plane could not store reports; reconnect later",
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// Work the ingest hands to the server, which does it through the audited command path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followup {
    /// The agent's asset record went stale: ask for a full snapshot.
    FullSnapshot(String),
    /// The agent opened a session and has pushed probes it has not confirmed: send them.
    PendingProbes(String),
}

/// Everything a connection handler needs.
#[derive(Clone)]
pub struct IngestContext {
    pub enroller: Arc<Enroller>,
    pub store: Store,
    pub audit: Audit,
    pub clock: Arc<dyn Clock>,
    pub sessions: Sessions,
    pub committer: Committer,
    pub admission: Arc<Admission>,
    /// Paces anonymous enrollment requests (each costs signature checks and store work).
    pub join_limiter: Arc<TokenBucket>,
    /// Runtime lag: no new sessions while the control plane is overloaded.
    pub load: Arc<LoadMonitor>,
    pub metrics: Metrics,
    pub config: IngestConfig,
    pub followups: mpsc::UnboundedSender<Followup>,
    /// Opens sealed report bodies (the control plane's SM2 key and a cache of data keys).
    pub unsealer: Arc<Unsealer>,
    /// Tells the dispatcher (incident engine) when agents come and go.
    pub link_events: Option<crate::dispatch::LinkEvents>,
}

// ---------------------------------------------------------------------------------------------
// Sealed reports
// ---------------------------------------------------------------------------------------------

/// Data keys kept unwrapped: enough for every agent of a large fleet to have two live keys
/// (18,000 agents); ~100 bytes each.
const KEY_CACHE_ENTRIES: usize = 65_536;

/// Opens sealed report bodies with the control plane's SM2 key, caching unwrapped data keys
/// by SM3 of the wrapped key (a key that did not unwrap is remembered too, so a sender of
/// garbage costs one SM2 decryption per distinct wrapped key, not per report).
pub struct Unsealer {
    opener: Opener,
    cache: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    /// Key id → the key (`None`: it did not unwrap) and when it was last used.
    keys: HashMap<[u8; 32], (Option<sealed::SecretKey>, u64)>,
    clock: u64,
}

impl KeyCache {
    fn get(&mut self, id: &[u8; 32]) -> Option<Option<sealed::SecretKey>> {
        self.clock += 1;
        let clock = self.clock;
        self.keys.get_mut(id).map(|(key, used)| {
            *used = clock;
            key.clone()
        })
    }

    fn insert(&mut self, id: [u8; 32], key: Option<sealed::SecretKey>) {
        if self.keys.len() >= KEY_CACHE_ENTRIES {
            // Least recently used quarter out, in one pass (amortised over many inserts).
            let mut used: Vec<u64> = self.keys.values().map(|(_, used)| *used).collect();
            let cut = used.len() / 4;
            let (_, threshold, _) = used.select_nth_unstable(cut);
            let threshold = *threshold;
            self.keys.retain(|_, (_, used)| *used > threshold);
        }
        self.clock += 1;
        self.keys.insert(id, (key, self.clock));
    }
}

impl std::fmt::Debug for Unsealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealer")
            .field("cached_keys", &self.cached_keys())
            .finish_non_exhaustive()
    }
}

impl Unsealer {
    pub fn new(secret: &sm2::SecretKey) -> Unsealer {
        Unsealer {
            opener: Opener::new(secret),
            cache: Mutex::new(KeyCache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Data keys held (unwrapped or known bad).
    pub fn cached_keys(&self) -> usize {
        self.cache().keys.len()
    }

    /// Opens a body sealed with `cipher`. The SM2 step (on a cache miss) runs on a blocking
    /// thread so the session's runtime thread is not held for it.
    pub async fn open(
        self: &Arc<Self>,
        cipher: &str,
        body: &[u8],
        context: &RecordContext<'_>,
    ) -> Result<Vec<u8>, SealError> {
        let envelope = Envelope::parse(cipher, body)?;
        let id = envelope.key_id();
        let cached = self.cache().get(&id);
        let key = match cached {
            Some(Some(key)) => key,
            Some(None) => return Err(SealError::Unwrap),
            None => {
                let unsealer = self.clone();
                let wrapped = envelope.wrapped_key.to_vec();
                let unwrapped = tokio::task::spawn_blocking(move || {
                    let result = unsealer.opener.unwrap_data_key(&wrapped);
                    unsealer.cache().insert(id, result.clone().ok());
                    result
                })
                .await
                .map_err(|_| SealError::Unwrap)?;
                unwrapped?
            }
        };
        envelope.open_with(&key, context)
    }

    /// Opens a body without the blocking-thread hop (tests, tools).
    pub fn open_now(
        &self,
        cipher: &str,
        body: &[u8],
        context: &RecordContext<'_>,
    ) -> Result<Vec<u8>, SealError> {
        let envelope = Envelope::parse(cipher, body)?;
        let id = envelope.key_id();
        let cached = self.cache().get(&id);
        let key = match cached {
            Some(Some(key)) => key,
            Some(None) => return Err(SealError::Unwrap),
            None => {
                let result = envelope.unwrap_key(&self.opener);
                self.cache().insert(id, result.clone().ok());
                result?
            }
        };
        envelope.open_with(&key, context)
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadFailure {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Message(#[from] bagui_protocol::messages::MessageError),
    #[error("stream: {0}")]
    Stream(#[from] quinn::ReadError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("no frame within {0:?}")]
    Timeout(Duration),
    #[error("stream ended")]
    Ended,
    #[error("{0}")]
    Unexpected(String),
}

impl ReadFailure {
    fn error_code(&self) -> ErrorCode {
        match self {
            ReadFailure::Frame(error) => error.error_code(),
            ReadFailure::Message(error) => error.error_code(),
            ReadFailure::Timeout(_) => ErrorCode::HeartbeatTimeout,
            ReadFailure::Stream(_) | ReadFailure::Connection(_) => ErrorCode::NoError,
            ReadFailure::Ended => ErrorCode::NoError,
            ReadFailure::Unexpected(_) => ErrorCode::Protocol,
        }
    }
}

/// Reads the next frame (the agent's reader: both ends frame streams the same way).
async fn read_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<Frame>, ReadFailure> {
    bagui_agent::wire::read_frame(recv, decoder)
        .await
        .map_err(|error| match error {
            ReadError::Frame(error) => ReadFailure::Frame(error),
            ReadError::Stream(error) => ReadFailure::Stream(error),
        })
}

async fn write_messages(
    send: &mut quinn::SendStream,
    messages: &[ServerMessage],
    max_frame_len: usize,
) -> Result<(), String> {
    let mut buffer = BytesMut::new();
    for message in messages {
        message
            .encode(max_frame_len, &mut buffer)
            .map_err(|error| format!("encoding {}: {error}", message.kind()))?;
    }
    send.write_all(&buffer)
        .await
        .map_err(|error| error.to_string())
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts connections until `shutdown` turns true, then says goodbye to every session.
pub async fn serve(
    endpoint: quinn::Endpoint,
    context: IngestContext,
    mut shutdown: watch::Receiver<bool>,
) {
    // Shared, not cloned into every connection's task: the context is ~900 bytes, and a
    // session task lives as long as its agent is connected.
    let context = Arc::new(context);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let context = context.clone();
                let decision = if context.load.overloaded() {
                    Admit::Refuse
                } else {
                    context.admission.admit()
                };
                match decision {
                    Admit::Now => {
                        tokio::spawn(handle_incoming(incoming, context, None));
                    }
                    Admit::Hold(wait) => {
                        context.metrics.admission_held.inc();
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            handle_incoming(incoming, context, None).await;
                        });
                    }
                    Admit::ComeBack(after) => {
                        context.metrics.admission_deferred.inc();
                        tokio::spawn(handle_incoming(incoming, context, Some(after)));
                    }
                    Admit::Refuse => {
                        context.metrics.admission_refused.inc();
                        // Dropped unanswered, not refused: the client retransmits its first
                        // packet (after ~1, 3, 7 s) and is classified afresh each time, all
                        // within one connect attempt. A CONNECTION_REFUSED would send it into
                        // its backoff instead, which after an outage is minutes long.
                        incoming.ignore();
                    }
                }
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    // Spread the fleet's return over time so the next start is not a storm.
    let sessions = context.sessions.handles();
    let spread_ms =
        ((sessions.len() as f64 / context.config.admission_rate.max(1.0)) * 1000.0) as u64;
    for session in &sessions {
        let after_ms = if spread_ms == 0 {
            0
        } else {
            rand::random_range(0..=spread_ms)
        };
        session.send(Outgoing::Message(
            ComeBackLater {
                after_ms,
                reason: "control plane shutting down".into(),
            }
            .into(),
        ));
        session.send(Outgoing::Close(
            ErrorCode::ShuttingDown,
            "control plane shutting down".into(),
        ));
    }
    // Give the goodbyes a moment to leave, then close whatever is left.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !context.sessions.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    endpoint.close(
        quinn::VarInt::from_u32(ErrorCode::ShuttingDown.code()),
        b"control plane shutting down",
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

/// Handles one admitted connection attempt; `come_back` set: tell a session to come back then.
async fn handle_incoming(
    incoming: quinn::Incoming,
    context: Arc<IngestContext>,
    come_back: Option<Duration>,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            context.metrics.handshake_failures.inc();
            if let Some(message) = profile_mismatch(&error, context.enroller.ca().profile()) {
                tracing::warn!(%remote, %error, "{message}");
            } else {
                tracing::debug!(%remote, %error, "QUIC handshake failed");
            }
            return;
        }
    };
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match alpn.as_deref() {
        // Boxed: joins are rare and their state is large; unboxed it would sit inside every
        // long-lived session task.
        Some(ALPN_JOIN) => Box::pin(handle_join(connection, context, remote)).await,
        // A task of its own, sized for the session alone: this task's state (which includes
        // the handshake's) is freed now instead of being carried for the session's lifetime.
        Some(ALPN_SESSION) => {
            tokio::spawn(handle_session(connection, context, remote, come_back));
        }
        _ => close(&connection, ErrorCode::Protocol, "unknown ALPN"),
    }
}

/// What a failed handshake says about crypto profiles: a TLS handshake_failure alert is what
/// rustls sends when the peer offered no suite or key-exchange group in common, which between
/// Bagui peers means the other profile.
pub fn profile_mismatch(error: &quinn::ConnectionError, ours: CryptoProfile) -> Option<String> {
    const HANDSHAKE_FAILURE: u8 = 40;
    match error {
        quinn::ConnectionError::TransportError(transport)
            if transport.code == quinn::TransportErrorCode::crypto(HANDSHAKE_FAILURE) =>
        {
            Some(format!(
                "a peer offered no TLS suite or key-exchange group of this control plane's {ours} \
                 crypto profile ({} / {}): an agent set up for the {} profile? Run its join \
                 again with the command `bagui-cp token create` prints",
                ours.tls_suite(),
                ours.kx_group(),
                ours.other()
            ))
        }
        _ => None,
    }
}

async fn handle_join(
    connection: quinn::Connection,
    context: Arc<IngestContext>,
    remote: SocketAddr,
) {
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        let (mut send, mut recv) = connection.accept_bi().await?;
        // Join requests are small; a tight frame limit keeps anonymous peers cheap.
        let mut decoder = FrameDecoder::new(64 * 1024);
        let frame = read_frame(&mut recv, &mut decoder).await?.ok_or(ReadFailure::Ended)?;
        let mut exporter = [0u8; EXPORTER_LEN];
        connection
            .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .map_err(|_| ReadFailure::Unexpected("TLS exporter unavailable".into()))?;
        let peer = remote.to_string();
        let enroller = context.enroller.clone();
        let answer: JoinServerMessage = match JoinClientMessage::decode(&frame)? {
            Decoded::Known(JoinClientMessage::JoinRequest(_) | JoinClientMessage::RenewRequest(_))
                if !context.join_limiter.try_acquire() =>
            {
                context.metrics.joins.with_label_values(&["rate_limited"]).inc();
                JoinRejected {
                    reason: JoinRefusal::RateLimited,
                    message: "too many enrollment requests; try again in a few seconds".into(),
                }
                .into()
            }
            Decoded::Known(JoinClientMessage::JoinRequest(request)) => {
                let deadline = Instant::now() + Duration::from_secs(10);
                let result = tokio::task::spawn_blocking(move || enroller.join(&request, &exporter, &peer, deadline))
                    .await
                    .map_err(|error| ReadFailure::Unexpected(error.to_string()))?;
                match result {
                    Ok(accepted) => {
                        context.metrics.joins.with_label_values(&["accepted"]).inc();
                        tracing::info!(agent = %accepted.agent_id, division = %accepted.division, %remote, "agent joined");
                        accepted.into()
                    }
                    Err(rejected) => {
                        context.metrics.joins.with_label_values(&[rejected.reason.as_str()]).inc();
                        tracing::warn!(reason = rejected.reason.as_str(), message = %rejected.message, %remote, "join refused");
                        rejected.into()
                    }
                }
            }
            Decoded::Known(JoinClientMessage::RenewRequest(request)) => {
                let result = tokio::task::spawn_blocking(move || enroller.renew_expired(&request, &exporter, &peer))
                    .await
                    .map_err(|error| ReadFailure::Unexpected(error.to_string()))?;
                match result {
                    Ok(accepted) => {
                        context.metrics.joins.with_label_values(&["renewed"]).inc();
                        tracing::info!(agent = %accepted.agent_id, %remote, "expired certificate renewed");
                        accepted.into()
                    }
                    Err(rejected) => {
                        context.metrics.joins.with_label_values(&[rejected.reason.as_str()]).inc();
                        tracing::warn!(reason = rejected.reason.as_str(), message = %rejected.message, %remote, "renewal refused");
                        rejected.into()
                    }
                }
            }
            Decoded::Unknown(kind) => Unsupported { kind }.into(),
        };
        let mut buffer = BytesMut::new();
        answer
            .encode(context.config.max_frame_len, &mut buffer)
            .map_err(|error| ReadFailure::Unexpected(error.to_string()))?;
        send.write_all(&buffer)
            .await
            .map_err(|error| ReadFailure::Unexpected(error.to_string()))?;
        let _ = send.finish();
        Ok::<(), ReadFailure>(())
    })
    .await;
    match outcome {
        Ok(Ok(())) => {
            // Let the agent read the answer and close; bounded, so a silent peer costs nothing.
            let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
            close(&connection, ErrorCode::NoError, "");
        }
        Ok(Err(error)) => {
            tracing::warn!(%remote, %error, "enrollment connection failed");
            close(&connection, error.error_code(), &error.to_string());
        }
        Err(_) => close(&connection, ErrorCode::Protocol, "enrollment timed out"),
    }
}

async fn handle_session(
    connection: quinn::Connection,
    context: Arc<IngestContext>,
    remote: SocketAddr,
    come_back: Option<Duration>,
) {
    let certificate = connection
        .peer_identity()
        .and_then(|identity| {
            identity
                .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().cloned());
    let Some(certificate) = certificate else {
        close(
            &connection,
            ErrorCode::Unauthenticated,
            "a client certificate is required",
        );
        return;
    };
    // For in-session renewal under shangmi: the new key signs over this connection's exporter.
    let mut exporter = [0u8; EXPORTER_LEN];
    if connection
        .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .is_err()
    {
        close(&connection, ErrorCode::Internal, "TLS exporter unavailable");
        return;
    }
    // Only the fingerprint is kept for the session's lifetime, not the certificate.
    let fingerprint = bagui_protocol::digest::sm3_tagged(&certificate);
    drop(certificate);
    let agent_id = match authenticate(&context, &fingerprint, remote) {
        Ok(agent_id) => agent_id,
        Err((code, reason)) => {
            close(&connection, code, reason);
            return;
        }
    };
    // The awaits before the session loop and after it are boxed: their state would otherwise
    // be part of the task's for the session's whole lifetime (18,000 tasks at province scale).
    let (mut send, mut recv) = match Box::pin(tokio::time::timeout(
        Duration::from_secs(15),
        connection.accept_bi(),
    ))
    .await
    {
        Ok(Ok(streams)) => streams,
        Ok(Err(_)) => return,
        Err(_) => {
            close(&connection, ErrorCode::Protocol, "no session stream opened");
            return;
        }
    };
    let mut decoder = FrameDecoder::new(context.config.max_frame_len);
    let hello = match Box::pin(tokio::time::timeout(
        Duration::from_secs(15),
        read_frame(&mut recv, &mut decoder),
    ))
    .await
    {
        Ok(Ok(Some(frame))) => match AgentMessage::decode(&frame) {
            Ok(Decoded::Known(AgentMessage::Hello(hello))) => hello,
            Ok(_) => {
                close(
                    &connection,
                    ErrorCode::Protocol,
                    "the first message must be hello",
                );
                return;
            }
            Err(error) => {
                close(&connection, error.error_code(), &error.to_string());
                return;
            }
        },
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            close(&connection, error.error_code(), &error.to_string());
            return;
        }
        Err(_) => {
            close(&connection, ErrorCode::Protocol, "no hello");
            return;
        }
    };
    if hello.agent_id != agent_id {
        tracing::warn!(%remote, certificate_agent = %agent_id, claimed = %hello.agent_id, "hello names another agent");
        close(
            &connection,
            ErrorCode::Unauthenticated,
            "hello names another agent than the certificate",
        );
        return;
    }
    if !bagui_protocol::protocol_version_supported(hello.protocol_version) {
        tracing::warn!(agent = %agent_id, %remote, version = hello.protocol_version, "hello with an unsupported protocol version");
        close(
            &connection,
            ErrorCode::UnsupportedVersion,
            &format!(
                "protocol version {} is not supported: this control plane speaks {} (one revision either side); upgrade the control plane first, then the agents",
                hello.protocol_version,
                bagui_protocol::PROTOCOL_VERSION
            ),
        );
        return;
    }
    if let Some(wait) = come_back {
        let message: ServerMessage = ComeBackLater {
            after_ms: wait.as_millis() as u64,
            reason: "admission paced".into(),
        }
        .into();
        let _ = Box::pin(write_messages(
            &mut send,
            &[message],
            context.config.max_frame_len,
        ))
        .await;
        let _ = send.finish();
        // Give the frame a moment to arrive before the close overtakes it.
        let _ = Box::pin(tokio::time::timeout(
            Duration::from_millis(500),
            connection.closed(),
        ))
        .await;
        close(&connection, ErrorCode::Busy, "come back later");
        return;
    }

    let store = context.store.clone();
    let max_seq_agent = agent_id.clone();
    let last_stored_seq = tokio::task::spawn_blocking(move || store.max_seq(&max_seq_agent))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let session_id = context.sessions.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let now = context.clock.now_ms();
    let silence_limit = context.config.heartbeat_interval * context.config.missed_heartbeats.max(1)
        + Duration::from_secs(1);
    let outgoing = Arc::new(OutgoingQueue::default());
    let handle = SessionHandle {
        session_id,
        connection: connection.clone(),
        outgoing: outgoing.clone(),
        silence_ms: Arc::new(AtomicU64::new(silence_limit.as_millis() as u64)),
    };
    // Welcome goes first, before anything another task may queue once the session is known.
    handle.send(Outgoing::Message(
        Welcome {
            agent_id: agent_id.clone(),
            server_time_ms: now,
            heartbeat_interval_ms: context.config.heartbeat_interval.as_millis() as u64,
            max_in_flight: context.config.max_in_flight,
            last_stored_seq,
            max_frame_len: context.config.max_frame_len as u32,
        }
        .into(),
    ));
    let suspected_clone = context.sessions.register(
        &agent_id,
        handle.clone(),
        LiveSession {
            session_id,
            connected_ms: now,
            last_seen_ms: now,
            remote_address: remote.to_string(),
            agent_version: hello.agent_version.clone(),
            heartbeat: None,
            clock_offset_ms: None,
            crypto_profile: context.enroller.ca().profile(),
        },
    );
    if context.store.has_pending_probes(&agent_id) {
        let _ = context
            .followups
            .send(Followup::PendingProbes(agent_id.clone()));
    }
    // A revocation between authentication and registration found no session to close; check
    // again now that the session is visible to revocation. (Revoke writes the store, then
    // disconnects; register inserts, then re-checks: one of the two always sees the other.)
    if let Err((code, reason)) = authenticate(&context, &fingerprint, remote) {
        context.sessions.remove(&agent_id, session_id);
        close(&connection, code, reason);
        return;
    }
    context.metrics.sessions.inc();
    context.metrics.sessions_opened.inc();
    if let Some(events) = &context.link_events {
        events.back(&agent_id, now);
    }
    if let Some(hosts) = suspected_clone {
        Box::pin(report_clone(&context, &agent_id, &hosts, now)).await;
    }
    tracing::info!(agent = %agent_id, %remote, version = %hello.agent_version, next_seq = hello.next_seq, "session open");

    // Writer: everything sent on the session stream goes through this one task. When it stops
    // (write failure, close requested) the connection closes with it: a session that cannot
    // deliver acks must not keep ingesting.
    let writer_connection = connection.clone();
    let max_frame_len = context.config.max_frame_len;
    let writer = tokio::spawn(async move {
        let mut outcome = (
            ErrorCode::Internal,
            "could not write to the session stream".to_owned(),
        );
        while let Some(batch) = outgoing.next_batch().await {
            let mut messages = Vec::new();
            let mut closing = None;
            for item in batch {
                match item {
                    Outgoing::Message(message) => messages.push(message),
                    Outgoing::Close(code, reason) => {
                        closing = Some((code, reason));
                        break;
                    }
                }
            }
            if write_messages(&mut send, &messages, max_frame_len)
                .await
                .is_err()
            {
                break;
            }
            if let Some(requested) = closing {
                let _ = send.finish();
                // Let the last frames reach the agent before the close frame overtakes them.
                let _ =
                    tokio::time::timeout(Duration::from_millis(300), writer_connection.closed())
                        .await;
                outcome = requested;
                break;
            }
        }
        close(&writer_connection, outcome.0, &outcome.1);
    });

    let outcome = session_loop(
        &context,
        &agent_id,
        &handle,
        &mut recv,
        &mut decoder,
        &exporter,
    )
    .await;
    let reason = match &outcome {
        Ok(()) => "finished".to_owned(),
        Err(error) => {
            let code = error.error_code();
            if code != ErrorCode::NoError {
                close(&connection, code, &error.to_string());
                tracing::warn!(agent = %agent_id, %remote, %error, "session closed");
            } else {
                tracing::info!(agent = %agent_id, %remote, %error, "session ended");
            }
            code.name().to_owned()
        }
    };
    context.metrics.sessions.dec();
    context
        .metrics
        .sessions_closed
        .with_label_values(&[reason.as_str()])
        .inc();
    handle.outgoing.close();
    drop(handle);
    writer.abort();
    if let Some(live) = context.sessions.remove(&agent_id, session_id) {
        // Only the current session's end is a loss: a session replaced by a newer one of the
        // same agent is not. (The server mutes the events before its own shutdown.)
        if let Some(events) = &context.link_events {
            events.lost(&agent_id, context.clock.now_ms());
        }
        Box::pin(persist_last_seen(&context, &agent_id, live)).await;
    }
}

/// One identity used from several hosts: flagged on the agent record, audited, and raised as a
/// security finding (an operator revokes the copy and re-joins the machine).
async fn report_clone(
    context: &IngestContext,
    agent_id: &str,
    hosts: &[std::net::IpAddr],
    now: u64,
) {
    let hosts_text = hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    tracing::warn!(agent = %agent_id, hosts = %hosts_text, "one agent identity is used from several hosts (cloned machine or copied state?)");
    let store = context.store.clone();
    let audit = context.audit.clone();
    let id = agent_id.to_owned();
    let detail = format!("sessions replacing each other from {hosts_text}");
    let _ = tokio::task::spawn_blocking(move || {
        let _ = store.update_agent(&id, |agent| agent.possible_clone = true);
        let _ = audit.record("control-plane", "agent.clone_suspected", &id, detail);
    })
    .await;
    if let Some(events) = &context.link_events {
        events.send(bagui_ops::incidents::Event::Finding(
            bagui_ops::incidents::Finding {
                fingerprint: format!("clone:{agent_id}"),
                subject: bagui_ops::incidents::Subject::Agent(agent_id.to_owned()),
                severity: bagui_ops::model::Severity::P2,
                category: bagui_ops::model::Category::Security,
                title: format!(
                    "agent identity {agent_id} is used from several hosts: {hosts_text}"
                ),
                firing: true,
                at: now,
            },
        ));
    }
}

/// Maps a client certificate to its agent's id, or to the close code and reason to refuse
/// with. From memory (the store's session index): session opens never wait on the store.
fn authenticate(
    context: &IngestContext,
    fingerprint: &str,
    remote: SocketAddr,
) -> Result<String, (ErrorCode, &'static str)> {
    match context.enroller.authenticate_fingerprint(fingerprint) {
        Ok(agent) => Ok(agent),
        Err(AuthError::Unknown) => {
            tracing::warn!(%remote, "session with a certificate not issued to a known agent");
            Err((
                ErrorCode::Unauthenticated,
                "certificate not issued to a known agent",
            ))
        }
        Err(AuthError::Revoked) => {
            tracing::warn!(%remote, "session attempt by a revoked agent or certificate");
            Err((ErrorCode::Revoked, "agent or certificate revoked"))
        }
        Err(AuthError::Unavailable) => {
            tracing::error!(%remote, "session with a certificate whose stored record (or its agent's) is unreadable");
            Err((
                ErrorCode::Internal,
                "the control plane cannot read this certificate's record; see its log",
            ))
        }
    }
}

async fn persist_last_seen(context: &IngestContext, agent_id: &str, live: LiveSession) {
    let store = context.store.clone();
    let agent_id = agent_id.to_owned();
    let _ = tokio::task::spawn_blocking(move || {
        store.update_agent(&agent_id, |agent| {
            agent.last_seen_ms = agent.last_seen_ms.max(live.last_seen_ms);
            if !live.agent_version.is_empty() {
                agent.agent_version = live.agent_version.clone();
            }
            if let Some(heartbeat) = &live.heartbeat {
                agent.outbox = heartbeat.outbox.clone();
                agent.link = heartbeat.link.clone();
            }
        })
    })
    .await;
}

/// Opens a sealed report; one that does not open comes back as it was (still sealed), counted.
async fn unseal(
    context: &IngestContext,
    agent_id: &str,
    mut report: bagui_protocol::Report,
) -> bagui_protocol::Report {
    if report.cipher.is_empty() {
        return report;
    }
    let opened = context
        .unsealer
        .open(
            &report.cipher,
            &report.body,
            &RecordContext {
                lane: report.lane,
                seq: report.sealing_seq(),
                created_ms: report.created_ms,
                kind: &report.kind,
            },
        )
        .await;
    match opened {
        Ok(plaintext) => {
            report.body = serde_bytes::ByteBuf::from(plaintext);
            report.cipher.clear();
        }
        Err(error) => {
            context.metrics.reports_undecryptable.inc();
            tracing::warn!(agent = %agent_id, seq = report.seq, kind = %report.kind, cipher = %report.cipher, %error, "sealed report does not open; stored as received");
        }
    }
    report
}

async fn session_loop(
    context: &IngestContext,
    agent_id: &str,
    session: &SessionHandle,
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
    exporter: &[u8; EXPORTER_LEN],
) -> Result<(), ReadFailure> {
    let session_id = session.session_id;
    loop {
        let silence_limit = Duration::from_millis(session.silence_ms.load(Ordering::Relaxed));
        let frame = match tokio::time::timeout(silence_limit, read_frame(recv, decoder)).await {
            Ok(result) => result?.ok_or(ReadFailure::Ended)?,
            Err(_) => return Err(ReadFailure::Timeout(silence_limit)),
        };
        let now = context.clock.now_ms();
        match AgentMessage::decode(&frame)? {
            Decoded::Known(AgentMessage::Report(report)) => {
                context.metrics.reports_received.inc();
                context.sessions.touch(agent_id, session_id, now, None);
                if report.seq == 0 {
                    return Err(ReadFailure::Unexpected(
                        "report sequence numbers start at 1".into(),
                    ));
                }
                let late = now.saturating_sub(report.created_ms)
                    > context.config.late_after.as_millis() as u64;
                let report = unseal(context, agent_id, report).await;
                let report = NewReport {
                    agent_id: agent_id.to_owned(),
                    seq: report.seq,
                    report: StoredReport {
                        lane: report.lane,
                        kind: report.kind,
                        created_ms: report.created_ms,
                        received_ms: now,
                        late,
                        arrival: 0,
                        body: report.body,
                        cipher: report.cipher,
                    },
                };
                context
                    .committer
                    .submit(report, session.clone())
                    .await
                    .map_err(ReadFailure::Unexpected)?;
            }
            Decoded::Known(AgentMessage::Heartbeat(heartbeat)) => {
                if let Some(events) = &context.link_events {
                    events.heartbeat(agent_id, &heartbeat.link, now);
                }
                context
                    .sessions
                    .touch(agent_id, session_id, now, Some(heartbeat));
            }
            Decoded::Known(AgentMessage::RenewCertificate(request)) => {
                context.sessions.touch(agent_id, session_id, now, None);
                let enroller = context.enroller.clone();
                let id = agent_id.to_owned();
                let exporter = *exporter;
                let result = tokio::task::spawn_blocking(move || {
                    let certificate =
                        CertRequest::of(&request.csr_der, request.sm2_tls_key.as_ref(), &exporter);
                    enroller.renew(&id, certificate)
                })
                .await
                .map_err(|error| ReadFailure::Unexpected(error.to_string()))?;
                let answer: ServerMessage = match result {
                    Ok(renewed) => {
                        tracing::info!(agent = %agent_id, "certificate renewed over the session");
                        renewed.into()
                    }
                    Err(error) => {
                        // Refused, not disconnected: the agent keeps its session and its
                        // current certificate, and tries again later.
                        tracing::warn!(agent = %agent_id, %error, "certificate renewal refused");
                        RenewalRefused {
                            message: error.to_string(),
                        }
                        .into()
                    }
                };
                session.send(Outgoing::Message(answer));
            }
            Decoded::Known(AgentMessage::CommandResult(result)) => {
                context.sessions.touch(agent_id, session_id, now, None);
                let audit = context.audit.clone();
                let store = context.store.clone();
                let actor = format!("agent:{agent_id}");
                let detail = format!(
                    "command={} ok={} message={}",
                    result.command_id, result.ok, result.message
                );
                let target = agent_id.to_owned();
                let _ = tokio::task::spawn_blocking(move || {
                    audit.record(&actor, "command.result", &target, detail)?;
                    if result.ok {
                        store.confirm_probes(&target, result.command_id)?;
                    }
                    store.flush()
                })
                .await;
            }
            Decoded::Known(AgentMessage::Unsupported(unsupported)) => {
                tracing::info!(agent = %agent_id, kind = %unsupported.kind, "agent does not support a message kind");
            }
            Decoded::Known(AgentMessage::Hello(_)) => {
                return Err(ReadFailure::Unexpected("hello sent twice".into()));
            }
            Decoded::Unknown(kind) => {
                tracing::debug!(agent = %agent_id, %kind, "unsupported message kind from agent");
                session.send(Outgoing::Message(Unsupported { kind }.into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn favouring_the_commit_thread_changes_that_thread_alone_or_nothing() {
        let nice_of = |tid| rustix::process::getpriority_process(Some(tid)).unwrap();
        let this = rustix::thread::gettid();
        let before = nice_of(this);
        let (favoured, result) = std::thread::spawn(move || {
            let tid = rustix::thread::gettid();
            let started_at = nice_of(tid);
            let result = favour_this_thread(COMMIT_NICE);
            ((started_at, nice_of(tid)), result)
        })
        .join()
        .unwrap();
        match result {
            Ok(()) => assert_eq!(favoured.1, COMMIT_NICE),
            Err(error) => {
                // Only a process without the privilege is refused, and then nothing changed.
                assert!(!rustix::process::geteuid().is_root(), "{error}");
                assert_eq!(favoured.1, favoured.0);
            }
        }
        assert_eq!(nice_of(this), before, "other threads keep their nice value");
    }

    #[test]
    fn sessions_replacing_each_other_from_two_hosts_are_a_suspected_clone_once() {
        let a: std::net::IpAddr = "10.45.3.7".parse().unwrap();
        let b: std::net::IpAddr = "10.45.3.8".parse().unwrap();
        let mut watch = CloneWatch::default();
        // Reconnects from the same host never count.
        for at in 0..10 {
            assert_eq!(watch.replaced("ag-1", a, a, at * 1000), None);
        }
        // Two hosts taking turns: the third replacement reports, once.
        assert_eq!(watch.replaced("ag-1", a, b, 10_000), None);
        assert_eq!(watch.replaced("ag-1", b, a, 11_000), None);
        assert_eq!(watch.replaced("ag-1", a, b, 12_000), Some(vec![a, b]));
        assert_eq!(
            watch.replaced("ag-1", b, a, 13_000),
            None,
            "one report per episode"
        );
        // Replacements spread wider than the window do not add up.
        let mut slow = CloneWatch::default();
        for turn in 0..6u64 {
            let (old, new) = if turn % 2 == 0 { (a, b) } else { (b, a) };
            assert_eq!(
                slow.replaced("ag-2", old, new, turn * CLONE_WINDOW_MS),
                None
            );
        }
        // Quiet for a window: forgotten, and a new episode reports again.
        let later = 13_000 + 2 * CLONE_WINDOW_MS;
        assert_eq!(watch.replaced("ag-1", a, b, later), None);
        assert_eq!(watch.replaced("ag-1", b, a, later + 1), None);
        assert_eq!(watch.replaced("ag-1", a, b, later + 2), Some(vec![a, b]));
        assert!(watch.replaced.len() <= 2);
    }

    #[test]
    fn the_unsealer_unwraps_each_data_key_once_and_never_panics_on_garbage() {
        use bagui_protocol::Lane;
        use bagui_protocol::sealed::{DataKey, Recipient};
        let secret = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate().unwrap();
        let unsealer = Unsealer::new(&secret);
        let mut key = DataKey::generate(&Recipient::new(secret.public_key())).unwrap();
        let context = |seq| RecordContext {
            lane: Lane::Metrics,
            seq,
            created_ms: 5,
            kind: "metrics",
        };
        for seq in 1..=20 {
            let body = key.seal(&context(seq), &seq.to_le_bytes()).unwrap();
            assert_eq!(
                unsealer
                    .open_now(sealed::SM4_CCM_SM2, &body, &context(seq))
                    .unwrap(),
                seq.to_le_bytes()
            );
        }
        assert_eq!(
            unsealer.cached_keys(),
            1,
            "one SM2 decryption for 20 reports"
        );
        // Sealed to another key: refused, and remembered as refused.
        let stranger = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate().unwrap();
        let mut other = DataKey::generate(&Recipient::new(stranger.public_key())).unwrap();
        let body = other.seal(&context(1), b"x").unwrap();
        for _ in 0..2 {
            assert_eq!(
                unsealer.open_now(sealed::SM4_CCM_SM2, &body, &context(1)),
                Err(SealError::Unwrap)
            );
        }
        assert_eq!(unsealer.cached_keys(), 2);
        // Garbage of every length, an unknown cipher, a moved body: errors, never a panic.
        let good = key.seal(&context(1), b"y").unwrap();
        for len in 0..good.len() {
            assert!(
                unsealer
                    .open_now(sealed::SM4_CCM_SM2, &good[..len], &context(1))
                    .is_err()
            );
        }
        assert!(unsealer.open_now("rot13", &good, &context(1)).is_err());
        assert_eq!(
            unsealer.open_now(sealed::SM4_CCM_SM2, &good, &context(2)),
            Err(SealError::Authentication)
        );
    }

    #[test]
    fn the_key_cache_stays_bounded_and_keeps_recently_used_keys() {
        let mut cache = KeyCache::default();
        let id = |n: u32| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            id
        };
        cache.insert(id(0), None);
        for n in 1..(KEY_CACHE_ENTRIES as u32 * 2) {
            cache.insert(id(n), None);
            // Key 0 is in use all along.
            if n % 1000 == 0 {
                assert!(cache.get(&id(0)).is_some(), "after {n}");
            }
            assert!(cache.keys.len() <= KEY_CACHE_ENTRIES);
        }
        assert!(cache.get(&id(0)).is_some());
        assert!(cache.get(&id(1)).is_none(), "the least recently used went");
    }

    #[test]
    fn admission_holds_within_the_window_then_tells_then_refuses() {
        // 100 per second: one slot every 10 ms; a burst of 10.
        let admission = Admission::new(100.0, 10.0);
        let start = Instant::now() + Duration::from_secs(60);
        // The burst's ten slots lie in the past, plus the present one.
        for _ in 0..11 {
            assert_eq!(admission.admit_at(start), Admit::Now);
        }
        // The next 400 slots fall within the 4 s hold window, 10 ms apart.
        let mut last = Duration::ZERO;
        for index in 0..400 {
            match admission.admit_at(start) {
                Admit::Hold(wait) => {
                    assert!(wait > last || index == 0, "slots increase");
                    assert!(wait <= MAX_HOLD);
                    last = wait;
                }
                other => panic!("attempt {index}: {other:?}"),
            }
        }
        assert!(last >= Duration::from_millis(3_900), "{last:?}");
        // Beyond the window: some are told when to come back (after the held ones), as many
        // as the rate and its burst allow; the rest are refused before any handshake.
        let mut told = Vec::new();
        loop {
            match admission.admit_at(start) {
                Admit::ComeBack(after) => told.push(after),
                Admit::Refuse => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(told.len(), 11, "{told:?}");
        assert!(told.iter().all(|after| *after > MAX_HOLD));
        assert!(
            told.windows(2).all(|pair| pair[1] > pair[0]),
            "promises are spread"
        );
        assert_eq!(admission.admit_at(start), Admit::Refuse);
        // As time passes, the hold window moves on: the next attempt 10 ms later is held.
        assert!(matches!(
            admission.admit_at(start + Duration::from_millis(10)),
            Admit::Hold(_)
        ));
        // After a quiet minute the burst is available again.
        assert_eq!(
            admission.admit_at(start + Duration::from_secs(120)),
            Admit::Now
        );
    }
}
