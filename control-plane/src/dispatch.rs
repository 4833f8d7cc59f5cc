//! 问题处置在线 in the control plane: feeds what ingest observes into the incident engine
//! (`bagui_ops::incidents`), turns its decisions into work orders (`bagui_ops::workorder`),
//! routes them to teams up the division tree, fires SLA deadlines and queues notifications.
//!
//! `bagui-ops` decides; this module stores, schedules and carries out. Every step — a batch of
//! events, a fired deadline, an operator's command — is one atomic write to the store's `ops`
//! tree (engine state, orders, log lines, deadline rows and outbox entries together), flushed
//! before anything is sent, so a restart loses no timer and fires none twice.
//!
//! Keys of the `ops` tree:
//!
//! | key                                   | value                                    |
//! |---------------------------------------|------------------------------------------|
//! | `eng/h`                               | [`EngineHeader`] of the incident engine  |
//! | `eng/a/<agent>`                       | its [`AgentFacts`] of one agent          |
//! | `eng/i/<incident be>`                 | one open [`Incident`]                    |
//! | `eng/f/<fingerprint>`                 | one [`FingerprintHistory`]               |
//! | `next-order`                          | next work-order number (`u64`)           |
//! | `wo/<id>`                             | [`WorkOrder`]                            |
//! | `tr/<id>\0<seq be>`                   | [`Transition`] (append-only)             |
//! | `dl/<due be><id>\0<kind>`             | [`Deadline`]                             |
//! | `inc/<incident be>`                   | [`IncidentLink`]                         |
//! | `team/<id>`                           | [`Team`]                                 |
//! | `nq/<id be>`                          | [`OutboxEntry`] (see `crate::notifier`)  |
//! | `mhold/<id>`                          | incident of an order held by maintenance |
//! | `up/<agent>\0<start be>`              | [`UpInterval`]: session history          |

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bagui_ops::calendar::SlaPolicy;
use bagui_ops::incidents::{
    Action, AgentFacts, AgentId, AgentRole, Changes, EngineHeader, Event, FingerprintHistory,
    Incident, IncidentEngine, IncidentId, IncidentRules, Subject, Topology,
};
use bagui_ops::model::{Category, DeadlineKind, Millis, Severity, WorkOrderState};
use bagui_ops::notify::{ChannelConfig, Notification, NotificationKind, OnDutyPerson};
use bagui_ops::workorder::{
    Command, Deadline, FireOutcome, NewWorkOrder, Outcome, SYSTEM_ACTOR, TeamId, Transition,
    WorkOrder, state_name,
};
use bagui_protocol::Role;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::divisions::Divisions;
use crate::store::{OpsBatch, Store, StoreError};

/// Id of the region-level on-duty team `init` creates (自治区运维值班): orders with no owning
/// team below land here.
pub const REGION_DUTY_TEAM: &str = "region-duty";

/// How often the topology facts are re-read from the agent records at most.
const TOPOLOGY_TTL_MS: Millis = 30_000;

/// How soon they are re-read once agents that joined since were added without their uplinks
/// (well inside the shortest hold, so decisions see the uplinks).
const PARTIAL_TOPOLOGY_TTL_MS: Millis = 2_000;

/// Longest sleep of the dispatcher thread between looks at its timers.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// How long the dispatcher gathers events after the first before taking a step (decisions
/// wait for holds of seconds anyway), and the most events one step takes.
const GATHER: Duration = Duration::from_millis(100);
const MAX_STEP_EVENTS: usize = 8192;

/// Under a stream of events the dispatcher gathers for `IDLE_SHARE` times as long as its last
/// step took (up to `MAX_GATHER`): it then uses at most a tenth of a core, and ingest — which
/// shares the cores and must drain the UDP socket — keeps the rest. A step over a
/// province-sized engine costs about the same for one event as for thousands, and decisions
/// wait for holds of 10 s anyway.
const IDLE_SHARE: u32 = 9;
const MAX_GATHER: Duration = Duration::from_secs(5);

/// A step slower than this is logged.
const SLOW_STEP: Duration = Duration::from_secs(1);

/// Why an ops operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no work order {0}")]
    NoOrder(String),
    #[error("no team {0}")]
    NoTeam(String),
    #[error("{0}")]
    Refused(String),
}

/// A team: hangs on a division node, handles some categories (none listed: all), is told
/// through its channels, and names who is on duty for @-mentions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    pub division: String,
    #[serde(default)]
    pub categories: Vec<Category>,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// Always on duty (mentioned in every message), besides the roster's shift.
    #[serde(default)]
    pub on_duty: Vec<OnDutyPerson>,
    /// The duty roster (值班表): whoever is on shift when a message is queued is @-mentioned.
    #[serde(default)]
    pub roster: Option<bagui_ops::access::Roster>,
    #[serde(default)]
    pub created_ms: Millis,
}

impl Team {
    /// Who to @-mention at `now`: the roster's shift, then the always-on-duty list.
    pub fn on_duty_at(&self, now: Millis) -> Vec<OnDutyPerson> {
        let mut people = self
            .roster
            .as_ref()
            .map(|roster| bagui_ops::access::on_duty_persons(roster, now))
            .unwrap_or_default();
        for person in &self.on_duty {
            if !people.iter().any(|known| known.name == person.name) {
                people.push(person.clone());
            }
        }
        people
    }
}

impl Team {
    fn handles(&self, category: Category) -> bool {
        self.categories.is_empty() || self.categories.contains(&category)
    }
}

/// Which work order an incident belongs to, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentLink {
    pub order_id: String,
    /// The incident that opened the order (a recurrence maps a new incident to an old order).
    pub origin: IncidentId,
}

/// A notification waiting to be sent on one channel of one team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: u64,
    pub team: TeamId,
    /// Index of the channel in the team's list when queued; the channel is copied so a later
    /// edit of the team does not re-route a queued message.
    pub channel_index: usize,
    pub channel: ChannelConfig,
    pub notification: Notification,
    pub attempts: u32,
    pub next_attempt_ms: Millis,
    pub created_ms: Millis,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Set when the far side refused it for good or the retries ran out: kept, shown, never
    /// sent again.
    #[serde(default)]
    pub failed: bool,
}

impl OutboxEntry {
    /// The rate-limit key: one limiter per team channel.
    pub fn channel_key(&self) -> String {
        format!("{}#{}", self.team, self.channel_index)
    }
}

/// A work order as `wo list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    pub id: String,
    pub state: String,
    pub severity: Severity,
    pub category: Category,
    pub team: Option<String>,
    pub division: String,
    pub division_path: String,
    pub title: String,
    pub created_at: Millis,
    pub escalation_level: u32,
    pub suppressed_by: Option<String>,
    pub supervisors: Vec<String>,
    pub ack_due_ms: Option<Millis>,
    pub handle_due_ms: Option<Millis>,
}

/// One work order with its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub row: OrderRow,
    pub order: WorkOrder,
    pub transitions: Vec<Transition>,
}

/// Filters of `wo list`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OrderFilter {
    /// Only orders of this division or below.
    #[serde(default)]
    pub division: Option<String>,
    /// Upper-case state name.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    /// Include closed, verified and auto-resolved orders (default: open ones only).
    #[serde(default)]
    pub all: bool,
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// The whole engine in one value, as written before the engine was stored key by key; read
/// once and rewritten as rows.
const LEGACY_ENGINE_KEY: &[u8] = b"engine";
const ENGINE_HEADER_KEY: &[u8] = b"eng/h";
const ENGINE_AGENT_PREFIX: &[u8] = b"eng/a/";
const ENGINE_INCIDENT_PREFIX: &[u8] = b"eng/i/";
const ENGINE_HISTORY_PREFIX: &[u8] = b"eng/f/";
/// Incident rules set through the API; they win over the file's `[incidents]`.
const RULES_KEY: &[u8] = b"rules";
const NEXT_ORDER_KEY: &[u8] = b"next-order";
const NEXT_OUTBOX_KEY: &[u8] = b"next-outbox";
const ORDER_PREFIX: &[u8] = b"wo/";
const TRANSITION_PREFIX: &[u8] = b"tr/";
const DEADLINE_PREFIX: &[u8] = b"dl/";
const INCIDENT_PREFIX: &[u8] = b"inc/";
const TEAM_PREFIX: &[u8] = b"team/";
pub(crate) const OUTBOX_PREFIX: &[u8] = b"nq/";
/// Maintenance windows (written by `admin_service`).
const MAINTENANCE_PREFIX: &[u8] = b"mw/";
/// `mhold/<order id>` → incident id: an order not dispatched because a maintenance window
/// covered its subject; dispatched when the window ends if its incident is still open.
const MAINTENANCE_HOLD_PREFIX: &[u8] = b"mhold/";
/// `up/<agent>\0<start be>` → [`UpInterval`]: the agent's sessions, for availability.
const UP_PREFIX: &[u8] = b"up/";

/// One stretch of an agent being connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpInterval {
    pub start: Millis,
    /// `None` while connected.
    pub end: Option<Millis>,
}

fn up_prefix(agent: &str) -> Vec<u8> {
    let mut key = key(UP_PREFIX, agent.as_bytes());
    key.push(0);
    key
}

fn up_key(agent: &str, start: Millis) -> Vec<u8> {
    let mut key = up_prefix(agent);
    key.extend_from_slice(&start.to_be_bytes());
    key
}

fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(rest);
    key
}

fn order_key(id: &str) -> Vec<u8> {
    key(ORDER_PREFIX, id.as_bytes())
}

fn transition_key(id: &str, seq: u64) -> Vec<u8> {
    let mut key = key(TRANSITION_PREFIX, id.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn deadline_key(deadline: &Deadline) -> Vec<u8> {
    let mut key = key(DEADLINE_PREFIX, &deadline.due_ms.to_be_bytes());
    key.extend_from_slice(deadline.order_id.as_bytes());
    key.push(0);
    key.push(match deadline.kind {
        DeadlineKind::Ack => b'a',
        DeadlineKind::Handle => b'h',
    });
    key
}

fn incident_key(incident: IncidentId) -> Vec<u8> {
    key(INCIDENT_PREFIX, &incident.to_be_bytes())
}

/// Writes the engine's changed state into `batch`, one row per key.
fn put_engine_changes(batch: &mut OpsBatch, changes: Changes) -> Result<(), StoreError> {
    batch.put(ENGINE_HEADER_KEY, &changes.header)?;
    for (agent, facts) in changes.agents {
        let row = key(ENGINE_AGENT_PREFIX, agent.as_bytes());
        match facts {
            Some(facts) => batch.put(&row, &facts)?,
            None => batch.delete(&row),
        }
    }
    for (id, incident) in changes.incidents {
        let row = key(ENGINE_INCIDENT_PREFIX, &id.to_be_bytes());
        match incident {
            Some(incident) => batch.put(&row, &incident)?,
            None => batch.delete(&row),
        }
    }
    for (fingerprint, history) in changes.history {
        let row = key(ENGINE_HISTORY_PREFIX, fingerprint.as_bytes());
        match history {
            Some(history) => batch.put(&row, &history)?,
            None => batch.delete(&row),
        }
    }
    Ok(())
}

/// The engine as stored: its rows, or the single value of older versions (with everything
/// marked changed, so the next write stores it as rows). `None`: never stored.
fn load_engine(store: &Store) -> Result<Option<IncidentEngine>, DispatchError> {
    let refused =
        |error: bagui_ops::incidents::RulesError| DispatchError::Refused(error.to_string());
    if let Some(header) = store.ops_get::<EngineHeader>(ENGINE_HEADER_KEY)? {
        let agents: Vec<(Vec<u8>, AgentFacts)> =
            store.ops_scan(ENGINE_AGENT_PREFIX, b"", usize::MAX)?;
        let incidents: Vec<(Vec<u8>, Incident)> =
            store.ops_scan(ENGINE_INCIDENT_PREFIX, b"", usize::MAX)?;
        let history: Vec<(Vec<u8>, FingerprintHistory)> =
            store.ops_scan(ENGINE_HISTORY_PREFIX, b"", usize::MAX)?;
        let name =
            |row: &[u8], prefix: &[u8]| String::from_utf8_lossy(&row[prefix.len()..]).into_owned();
        let engine = IncidentEngine::from_parts(
            header,
            agents
                .into_iter()
                .map(|(row, facts)| (name(&row, ENGINE_AGENT_PREFIX), facts)),
            incidents.into_iter().map(|(_, incident)| incident),
            history
                .into_iter()
                .map(|(row, history)| (name(&row, ENGINE_HISTORY_PREFIX), history)),
        )
        .map_err(refused)?;
        return Ok(Some(engine));
    }
    match store.ops_get::<IncidentEngine>(LEGACY_ENGINE_KEY)? {
        Some(mut engine) => {
            // Everything counts as changed: the next write stores it as rows.
            engine.mark_all_changed();
            Ok(Some(engine))
        }
        None => Ok(None),
    }
}

fn team_key(id: &str) -> Vec<u8> {
    key(TEAM_PREFIX, id.as_bytes())
}

pub(crate) fn outbox_key(id: u64) -> Vec<u8> {
    key(OUTBOX_PREFIX, &id.to_be_bytes())
}

// ---------------------------------------------------------------------------------------------
// Topology facts for the engine
// ---------------------------------------------------------------------------------------------

/// What the engine asks about agents, read from the agent records.
struct Facts {
    uplinks: HashMap<String, Option<String>>,
    divisions_of: HashMap<String, (String, Role)>,
    /// Enrolled (not revoked) agents per division, counted into every ancestor.
    counts: HashMap<String, usize>,
    tree: Arc<Divisions>,
    read_ms: Millis,
    /// Agents added one by one since the read, without their uplinks: read again soon.
    partial: bool,
}

impl Facts {
    fn read(store: &Store, tree: Arc<Divisions>, now: Millis) -> Result<Facts, StoreError> {
        let agents: Vec<_> = store
            .agents()?
            .into_iter()
            .filter(|agent| agent.revoked_ms.is_none())
            .collect();
        let uplinks = crate::topology::uplinks(&agents, &tree);
        let mut counts = HashMap::new();
        for agent in &agents {
            for division in tree.ancestors(&agent.division) {
                *counts.entry(division.code.clone()).or_insert(0) += 1;
            }
        }
        let divisions_of = agents
            .into_iter()
            .map(|agent| (agent.id, (agent.division, agent.role)))
            .collect();
        Ok(Facts {
            uplinks,
            divisions_of,
            counts,
            tree,
            read_ms: now,
            partial: false,
        })
    }

    /// Adds an agent that joined since the read (its uplink comes with the next full read).
    fn add(&mut self, agent: crate::store::AgentRecord) {
        if agent.revoked_ms.is_some() || self.divisions_of.contains_key(&agent.id) {
            return;
        }
        for division in self.tree.ancestors(&agent.division) {
            *self.counts.entry(division.code.clone()).or_insert(0) += 1;
        }
        self.uplinks.insert(agent.id.clone(), None);
        self.divisions_of
            .insert(agent.id, (agent.division, agent.role));
        self.partial = true;
    }

    fn stale(&self, now: Millis) -> bool {
        let age = now.saturating_sub(self.read_ms);
        age >= TOPOLOGY_TTL_MS || (self.partial && age >= PARTIAL_TOPOLOGY_TTL_MS)
    }
}

impl bagui_ops::maintenance::DivisionOf for Facts {
    fn division(&self, agent: &str) -> Option<String> {
        Topology::division(self, agent)
    }

    fn parent(&self, code: &str) -> Option<String> {
        self.parent_division(code)
    }
}

impl Topology for Facts {
    fn uplink(&self, agent: &str) -> Option<AgentId> {
        self.uplinks.get(agent).cloned().flatten()
    }

    fn division(&self, agent: &str) -> Option<String> {
        self.divisions_of
            .get(agent)
            .map(|(division, _)| division.clone())
    }

    fn parent_division(&self, division: &str) -> Option<String> {
        self.tree.get(division).and_then(|node| node.parent.clone())
    }

    fn agents_in(&self, division: &str) -> usize {
        self.counts.get(division).copied().unwrap_or(0)
    }

    fn role(&self, agent: &str) -> AgentRole {
        match self.divisions_of.get(agent).map(|(_, role)| *role) {
            Some(Role::Gateway) => AgentRole::Gateway,
            Some(Role::Terminal) => AgentRole::Terminal,
            _ => AgentRole::Server,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The dispatcher
// ---------------------------------------------------------------------------------------------

/// Settings of the dispatcher (`[incidents]`, `[sla]`, `[notify]` of `control-plane.toml`).
#[derive(Debug, Clone, Default)]
pub struct DispatchConfig {
    pub rules: IncidentRules,
    pub sla: SlaPolicy,
    /// Base URL of the console, for links in notifications.
    pub console_url: Option<String>,
}

struct Core {
    store: Store,
    divisions: Arc<Divisions>,
    engine: IncidentEngine,
    config: DispatchConfig,
    facts: Option<Facts>,
    /// The latest session-history row of each agent seen since the start, as stored: a
    /// reconnect storm must not cost a store scan per session event.
    latest_sessions: HashMap<String, Option<(Vec<u8>, UpInterval)>>,
}

/// The dispatcher: shared by the API (commands, views) and its own thread (events, timers).
#[derive(Clone)]
pub struct Dispatcher {
    core: Arc<Mutex<Core>>,
    /// The same store as the core's, reachable without its lock: async tasks (the notifier)
    /// must never wait on a step of the dispatcher thread, which can take a while under a
    /// reconnect storm, since that blocks a runtime worker and with it every session on it.
    store: Store,
    clock: Arc<dyn Clock>,
    /// Wakes the notifier after an outbox entry was queued.
    notifier: Arc<tokio::sync::Notify>,
    /// Tells the thread to end.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Loads the engine state (or starts a fresh one) and makes sure the region on-duty team
    /// exists. `running`: the control plane is starting, so agents get the start-up grace.
    pub fn open(
        store: Store,
        divisions: Arc<Divisions>,
        config: DispatchConfig,
        clock: Arc<dyn Clock>,
        running: bool,
    ) -> Result<Dispatcher, DispatchError> {
        let now = clock.now_ms();
        let mut config = config;
        if let Some(rules) = store.ops_get::<IncidentRules>(RULES_KEY)? {
            tracing::info!("incident rules set through the API override [incidents] of the file");
            config.rules = rules;
        }
        let mut engine = match load_engine(&store)? {
            Some(mut engine) => {
                engine
                    .set_rules(config.rules.clone())
                    .map_err(|error| DispatchError::Refused(error.to_string()))?;
                if running {
                    engine.restarted(now);
                }
                engine
            }
            None => IncidentEngine::new(config.rules.clone(), now)
                .map_err(|error| DispatchError::Refused(error.to_string()))?,
        };
        let mut batch = OpsBatch::new();
        if store
            .ops_get::<Team>(&team_key(REGION_DUTY_TEAM))?
            .is_none()
        {
            let team = region_duty_team(&divisions, now);
            batch.put(&team_key(&team.id), &team)?;
        }
        // What the store holds is the engine from here on (the restart, rows of an older
        // single value), so a failed step can go back to it.
        if engine.has_changes() {
            put_engine_changes(&mut batch, engine.take_changes())?;
            batch.delete(LEGACY_ENGINE_KEY);
        }
        store.ops_commit(batch)?;
        let dispatcher = Dispatcher {
            core: Arc::new(Mutex::new(Core {
                store: store.clone(),
                divisions: divisions.clone(),
                engine,
                config,
                facts: None,
                latest_sessions: HashMap::new(),
            })),
            store,
            clock,
            notifier: Arc::new(tokio::sync::Notify::new()),
            stop: Arc::default(),
        };
        Ok(dispatcher)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// What the notifier waits on.
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.notifier.clone()
    }

    /// Feeds events (possibly none) and advances the engine to now, carrying out its actions.
    pub fn feed(&self, events: Vec<Event>) -> Result<(), DispatchError> {
        let now = self.clock.now_ms();
        let queued = self.lock().feed(events, now)?;
        if queued {
            self.notifier.notify_one();
        }
        Ok(())
    }

    /// Fires every deadline row due by now, each in its own atomic step.
    pub fn fire_due(&self) -> Result<usize, DispatchError> {
        let now = self.clock.now_ms();
        let (fired, queued) = self.lock().fire_due(now)?;
        if queued {
            self.notifier.notify_one();
        }
        Ok(fired)
    }

    /// When the thread must look again at the latest.
    fn next_wakeup(&self) -> Result<Option<Millis>, DispatchError> {
        let core = self.lock();
        let deadline = core
            .store
            .ops_scan::<Deadline>(DEADLINE_PREFIX, b"", 1)?
            .first()
            .map(|(_, deadline)| deadline.due_ms);
        Ok(match (core.engine.poll_timeout(), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// An operator's command on a work order.
    pub fn command(
        &self,
        order_id: &str,
        command: Command,
        actor: &str,
    ) -> Result<OrderDetail, DispatchError> {
        let now = self.clock.now_ms();
        let detail = self.lock().command(order_id, command, actor, now)?;
        self.notifier.notify_one();
        Ok(detail)
    }

    pub fn orders(&self, filter: &OrderFilter) -> Result<Vec<OrderRow>, DispatchError> {
        self.lock().orders(filter)
    }

    pub fn order(&self, id: &str) -> Result<OrderDetail, DispatchError> {
        self.lock().order_detail(id)
    }

    pub fn teams(&self) -> Result<Vec<Team>, DispatchError> {
        Ok(self.lock().teams()?)
    }

    /// Creates or replaces a team.
    pub fn put_team(&self, mut team: Team) -> Result<Team, DispatchError> {
        let core = self.lock();
        validate_team(&team, &core.divisions)?;
        if team.created_ms == 0 {
            team.created_ms = self.clock.now_ms();
        }
        let mut batch = OpsBatch::new();
        batch.put(&team_key(&team.id), &team)?;
        core.store.ops_commit(batch)?;
        Ok(team)
    }

    pub fn remove_team(&self, id: &str) -> Result<Team, DispatchError> {
        if id == REGION_DUTY_TEAM {
            return Err(DispatchError::Refused(format!(
                "team {REGION_DUTY_TEAM} is where unrouted work orders land; it cannot be removed"
            )));
        }
        let core = self.lock();
        let team = core
            .store
            .ops_get::<Team>(&team_key(id))?
            .ok_or_else(|| DispatchError::NoTeam(id.to_owned()))?;
        let mut batch = OpsBatch::new();
        batch.delete(&team_key(id));
        core.store.ops_commit(batch)?;
        Ok(team)
    }

    /// The agent's connected intervals overlapping [from, to) (an open one ends now), or
    /// `None` if the control plane has never recorded a session of it.
    pub fn up_intervals(
        &self,
        agent: &str,
        from: Millis,
        to: Millis,
    ) -> Result<Option<Vec<(Millis, Millis)>>, DispatchError> {
        let now = self.clock.now_ms();
        let core = self.lock();
        let rows = core
            .store
            .ops_scan::<UpInterval>(&up_prefix(agent), b"", usize::MAX)?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .map(|(_, interval)| {
                    (
                        interval.start,
                        interval.end.unwrap_or(now.saturating_add(1)),
                    )
                })
                .filter(|(start, end)| *end > from && *start < to && end > start)
                .collect(),
        ))
    }

    /// The incident rules in force.
    pub fn rules(&self) -> IncidentRules {
        self.lock().engine.rules().clone()
    }

    /// Replaces the incident rules (validated), persisted so they survive restarts.
    pub fn set_rules(&self, rules: IncidentRules) -> Result<IncidentRules, DispatchError> {
        let mut core = self.lock();
        core.engine
            .set_rules(rules.clone())
            .map_err(|error| DispatchError::Refused(error.to_string()))?;
        core.config.rules = rules.clone();
        let mut batch = OpsBatch::new();
        batch.put(RULES_KEY, &rules)?;
        put_engine_changes(&mut batch, core.engine.take_changes())?;
        core.store.ops_commit(batch)?;
        Ok(rules)
    }

    /// Outbox entries, oldest first (pending and failed).
    pub fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, DispatchError> {
        let core = self.lock();
        Ok(core
            .store
            .ops_scan::<OutboxEntry>(OUTBOX_PREFIX, b"", limit)?
            .into_iter()
            .map(|(_, entry)| entry)
            .collect())
    }

    /// Open incidents as the engine holds them.
    pub fn incidents(&self) -> Vec<bagui_ops::incidents::Incident> {
        self.lock().engine.open_incidents().cloned().collect()
    }

    pub(crate) fn store(&self) -> Store {
        self.store.clone()
    }

    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Starts the thread that feeds `events` and fires deadlines; it ends when every sender of
    /// `events` is dropped.
    pub fn spawn(self, events: Receiver<Event>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("bagui-dispatch".into())
            .spawn(move || self.run(events))
            .expect("spawning the dispatch thread")
    }

    /// Ends the thread within a second (after its current step).
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn run(self, events: Receiver<Event>) {
        let mut last_step = Duration::ZERO;
        while !self.stop.load(std::sync::atomic::Ordering::SeqCst) {
            let wait = match self.next_wakeup() {
                Ok(Some(at)) => Duration::from_millis(at.saturating_sub(self.clock.now_ms())),
                Ok(None) => MAX_SLEEP,
                Err(error) => {
                    tracing::error!(%error, "dispatch: reading timers");
                    MAX_SLEEP
                }
            }
            .min(MAX_SLEEP);
            let mut batch = Vec::new();
            match events.recv_timeout(wait) {
                Ok(event) => batch.push(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Gather what follows within GATHER into the same step: under a reconnect storm
            // events stream in, and each step is one fsync and one engine tick over the fleet.
            let gather = GATHER.max(last_step * IDLE_SHARE).min(MAX_GATHER);
            let gather_until = std::time::Instant::now() + gather;
            while !batch.is_empty() && batch.len() < MAX_STEP_EVENTS {
                let left = gather_until.saturating_duration_since(std::time::Instant::now());
                match events.recv_timeout(left) {
                    Ok(event) => batch.push(event),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let started = std::time::Instant::now();
            let count = batch.len();
            if let Err(error) = self.feed(batch) {
                tracing::error!(%error, "dispatch: feeding events");
            }
            if let Err(error) = self.fire_due() {
                tracing::error!(%error, "dispatch: firing deadlines");
            }
            last_step = started.elapsed();
            if last_step >= SLOW_STEP {
                tracing::warn!(
                    events = count,
                    step_ms = last_step.as_millis() as u64,
                    "dispatch: slow step"
                );
            }
        }
    }
}

/// When a link counts as degraded (`[links]` of `control-plane.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkThresholds {
    /// Smoothed RTT above this is degraded.
    #[serde(with = "bagui_protocol::units::duration")]
    pub rtt: Duration,
    /// Packet loss between two heartbeats above this share (percent) is degraded.
    pub loss_percent: f64,
    /// Consecutive heartbeats over (or back under) a threshold before the state changes: the
    /// hysteresis that keeps one slow heartbeat from paging anyone.
    pub heartbeats: u32,
    /// Fewer packets than this between two heartbeats say nothing about loss.
    pub min_packets: u64,
}

impl Default for LinkThresholds {
    fn default() -> LinkThresholds {
        LinkThresholds {
            rtt: Duration::from_millis(400),
            loss_percent: 5.0,
            heartbeats: 3,
            min_packets: 20,
        }
    }
}

/// Per-agent link state between heartbeats.
#[derive(Debug, Default)]
struct LinkState {
    sent: u64,
    lost: u64,
    degraded: bool,
    /// Consecutive heartbeats disagreeing with `degraded`.
    streak: u32,
}

/// Where ingest reports sessions coming and going and their links' quality.
#[derive(Clone, Debug)]
pub struct LinkEvents {
    sender: Sender<Event>,
    /// Set before the control plane's own shutdown: sessions it closes are not losses.
    muted: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<Mutex<HashMap<String, LinkState>>>,
    thresholds: Arc<LinkThresholds>,
}

impl LinkEvents {
    pub fn new(sender: Sender<Event>) -> LinkEvents {
        LinkEvents::with_thresholds(sender, LinkThresholds::default())
    }

    pub fn with_thresholds(sender: Sender<Event>, thresholds: LinkThresholds) -> LinkEvents {
        LinkEvents {
            sender,
            muted: Arc::default(),
            links: Arc::default(),
            thresholds: Arc::new(thresholds),
        }
    }

    pub fn mute(&self) {
        self.muted.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the control plane is shutting down (the console's event streams end then, so
    /// that they do not hold the API's graceful shutdown).
    pub fn is_muted(&self) -> bool {
        self.muted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<String, LinkState>> {
        self.links
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn lost(&self, agent: &str, at: Millis) {
        // A degraded link ends with its session; the agent-lost incident takes over.
        if self
            .links()
            .remove(agent)
            .is_some_and(|state| state.degraded)
        {
            self.send(Event::LinkRecovered {
                agent: agent.to_owned(),
                at,
                detail: "session ended".into(),
            });
        }
        self.send(Event::AgentLost {
            agent: agent.to_owned(),
            at,
        });
    }

    pub fn back(&self, agent: &str, at: Millis) {
        self.send(Event::AgentBack {
            agent: agent.to_owned(),
            at,
        });
    }

    /// The QUIC statistics an agent's heartbeat carries (cumulative for its connection):
    /// RTT and the loss since the previous heartbeat, with hysteresis.
    pub fn heartbeat(&self, agent: &str, link: &bagui_protocol::LinkStats, at: Millis) {
        let thresholds = &self.thresholds;
        let event = {
            let mut links = self.links();
            let state = links.entry(agent.to_owned()).or_default();
            // A new connection restarts the counters.
            if link.sent_packets < state.sent || link.lost_packets < state.lost {
                state.sent = 0;
                state.lost = 0;
            }
            let sent = link.sent_packets - state.sent;
            let lost = link.lost_packets - state.lost;
            state.sent = link.sent_packets;
            state.lost = link.lost_packets;
            let loss = (sent >= thresholds.min_packets)
                .then(|| lost as f64 * 100.0 / sent as f64)
                .filter(|loss| *loss > thresholds.loss_percent);
            let slow = link.rtt_us > thresholds.rtt.as_micros() as u64;
            let bad = slow || loss.is_some();
            if bad == state.degraded {
                state.streak = 0;
                None
            } else {
                state.streak += 1;
                if state.streak < thresholds.heartbeats.max(1) {
                    None
                } else {
                    state.streak = 0;
                    state.degraded = bad;
                    let mut detail = format!("rtt {} ms", link.rtt_us / 1000);
                    if let Some(loss) = loss {
                        detail.push_str(&format!(", loss {loss:.1} %"));
                    }
                    Some(if bad {
                        Event::LinkDegraded {
                            agent: agent.to_owned(),
                            at,
                            detail,
                        }
                    } else {
                        Event::LinkRecovered {
                            agent: agent.to_owned(),
                            at,
                            detail,
                        }
                    })
                }
            }
        };
        if let Some(event) = event {
            self.send(event);
        }
    }

    pub fn send(&self, event: Event) {
        if !self.muted.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.sender.send(event);
        }
    }
}

fn region_duty_team(divisions: &Divisions, now: Millis) -> Team {
    Team {
        id: REGION_DUTY_TEAM.into(),
        name: "自治区运维值班".into(),
        division: divisions.root().code.clone(),
        categories: Vec::new(),
        channels: Vec::new(),
        on_duty: Vec::new(),
        roster: None,
        created_ms: now,
    }
}

fn validate_team(team: &Team, divisions: &Divisions) -> Result<(), DispatchError> {
    let refuse = |message: String| Err(DispatchError::Refused(message));
    if team.id.trim().is_empty()
        || team.id.len() > 64
        || !team
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return refuse(format!(
            "team id {:?} must be 1–64 characters of a-z, 0-9, '-', '_' or '.'",
            team.id
        ));
    }
    if team.name.trim().is_empty() {
        return refuse("a team needs a name".into());
    }
    if divisions.get(&team.division).is_none() {
        return refuse(format!("division {} does not exist", team.division));
    }
    for channel in &team.channels {
        if let Err(error) = channel.validate() {
            return refuse(error.to_string());
        }
    }
    if let Some(roster) = &team.roster
        && let Err(error) = roster.validate()
    {
        return refuse(format!("roster: {error}"));
    }
    Ok(())
}

/// Buffers the writes of one step.
struct Step {
    batch: OpsBatch,
    /// Orders changed in this step, written at the end.
    orders: BTreeMap<String, WorkOrder>,
    /// Incident links made in this step (also in the batch).
    links: HashMap<IncidentId, IncidentLink>,
    queued: bool,
    next_outbox: Option<u64>,
    /// The next work-order number once this step has cut one.
    next_order: Option<u64>,
    /// Latest session rows written by this step, for `Core::latest_sessions` once committed.
    sessions: HashMap<String, Option<(Vec<u8>, UpInterval)>>,
}

impl Step {
    fn new() -> Step {
        Step {
            batch: OpsBatch::new(),
            orders: BTreeMap::new(),
            links: HashMap::new(),
            queued: false,
            next_outbox: None,
            next_order: None,
            sessions: HashMap::new(),
        }
    }
}

impl Core {
    fn facts(&mut self, now: Millis) -> Result<&Facts, StoreError> {
        let stale = self.facts.as_ref().is_none_or(|facts| facts.stale(now));
        if stale {
            self.facts = Some(Facts::read(&self.store, self.divisions.clone(), now)?);
        }
        Ok(self.facts.as_ref().expect("just read"))
    }

    fn feed(&mut self, events: Vec<Event>, now: Millis) -> Result<bool, DispatchError> {
        self.facts(now)?;
        // Agents the facts do not know yet (joined since they were read) are read one by one:
        // a wave of enrollments must not re-read the whole fleet at every step.
        for event in &events {
            if let Event::AgentLost { agent, .. } | Event::AgentBack { agent, .. } = event {
                let known = self
                    .facts
                    .as_ref()
                    .is_some_and(|facts| facts.divisions_of.contains_key(agent));
                if !known
                    && let Some(record) = self.store.agent(agent)?
                    && let Some(facts) = self.facts.as_mut()
                {
                    facts.add(record);
                }
            }
        }
        let facts = self.facts.take().expect("just read");
        let mut step = Step::new();
        let sessions = self.record_sessions(&mut step, &events);
        if let Err(error) = sessions {
            self.facts = Some(facts);
            return Err(error);
        }
        let mut actions = Vec::new();
        for event in events {
            match self.engine.handle_event(event, &facts) {
                Ok(mut more) => actions.append(&mut more),
                Err(error) => tracing::info!(%error, "incident event refused"),
            }
        }
        actions.extend(self.engine.tick(now, &facts));
        self.facts = Some(facts);
        if actions.is_empty() && !self.engine.has_changes() {
            return self.finish(step);
        }
        let result = (|| {
            for action in actions {
                self.carry_out(&mut step, action, now)?;
            }
            put_engine_changes(&mut step.batch, self.engine.take_changes())?;
            self.finish(step)
        })();
        if result.is_err() {
            // Nothing was written: the engine goes back to what the store holds.
            match load_engine(&self.store) {
                Ok(Some(engine)) => self.engine = engine,
                Ok(None) | Err(_) => {
                    tracing::error!(
                        "dispatch: the incident engine could not be re-read after a failed step"
                    );
                }
            }
        }
        result
    }

    /// Session history: a session opening starts an interval (closing one left open, as after
    /// a control-plane crash: the agent is counted up through the time the control plane could
    /// not see it), a session ending closes it.
    fn record_sessions(&mut self, step: &mut Step, events: &[Event]) -> Result<(), DispatchError> {
        let open = &mut step.sessions;
        for event in events {
            let (agent, at, back) = match event {
                Event::AgentBack { agent, at } => (agent.as_str(), *at, true),
                Event::AgentLost { agent, at } => (agent.as_str(), *at, false),
                _ => continue,
            };
            let latest = match open.get(agent) {
                Some(latest) => latest.clone(),
                None => match self.latest_sessions.get(agent) {
                    Some(latest) => latest.clone(),
                    None => {
                        let latest = self.store.ops_scan_last::<UpInterval>(&up_prefix(agent))?;
                        self.latest_sessions
                            .insert(agent.to_owned(), latest.clone());
                        latest
                    }
                },
            };
            if let Some((row, mut interval)) = latest.filter(|(_, interval)| interval.end.is_none())
            {
                interval.end = Some(at.max(interval.start));
                step.batch.put(&row, &interval)?;
                open.insert(agent.to_owned(), Some((row, interval)));
            }
            if back {
                let interval = UpInterval {
                    start: at,
                    end: None,
                };
                let row = up_key(agent, at);
                step.batch.put(&row, &interval)?;
                open.insert(agent.to_owned(), Some((row, interval)));
            }
        }
        Ok(())
    }

    fn finish(&mut self, mut step: Step) -> Result<bool, DispatchError> {
        for order in step.orders.values() {
            step.batch.put(&order_key(&order.id), order)?;
        }
        if let Some(next) = step.next_outbox {
            step.batch.put(NEXT_OUTBOX_KEY, &next)?;
        }
        if let Some(next) = step.next_order {
            step.batch.put(NEXT_ORDER_KEY, &next)?;
        }
        let queued = step.queued;
        self.store.ops_commit(step.batch)?;
        self.latest_sessions.extend(step.sessions);
        Ok(queued)
    }

    fn load_order(&self, step: &Step, id: &str) -> Result<Option<WorkOrder>, DispatchError> {
        if let Some(order) = step.orders.get(id) {
            return Ok(Some(order.clone()));
        }
        Ok(self.store.ops_get::<WorkOrder>(&order_key(id))?)
    }

    fn link_of(
        &self,
        step: &Step,
        incident: IncidentId,
    ) -> Result<Option<IncidentLink>, DispatchError> {
        if let Some(link) = step.links.get(&incident) {
            return Ok(Some(link.clone()));
        }
        Ok(self
            .store
            .ops_get::<IncidentLink>(&incident_key(incident))?)
    }

    fn put_link(
        step: &mut Step,
        incident: IncidentId,
        link: IncidentLink,
    ) -> Result<(), DispatchError> {
        step.batch.put(&incident_key(incident), &link)?;
        step.links.insert(incident, link);
        Ok(())
    }

    /// Carries out one engine action. An action the work-order machine refuses (a symptom
    /// linked again to a larger cause while already suppressed, say) is logged and skipped:
    /// one refused transition must never roll back the whole step and wedge the dispatcher in
    /// a loop of retrying it. Store errors still fail the step.
    fn carry_out(
        &mut self,
        step: &mut Step,
        action: Action,
        now: Millis,
    ) -> Result<(), DispatchError> {
        let what = format!("{action:?}");
        match self.carry_out_strict(step, action, now) {
            Err(DispatchError::Refused(reason)) => {
                tracing::warn!(action = %what, %reason, "engine action not applied to its work order");
                Ok(())
            }
            other => other,
        }
    }

    fn carry_out_strict(
        &mut self,
        step: &mut Step,
        action: Action,
        now: Millis,
    ) -> Result<(), DispatchError> {
        match action {
            // Orders are cut when the engine decides (dispatch or symptom), not on detection:
            // an incident that clears inside its hold never shows up as a work order.
            Action::Open { .. } => Ok(()),
            Action::Dispatch { incident } => self.dispatch(step, incident, now),
            Action::LinkSymptom { symptom, cause } => {
                let cause_order = match self.ensure_order(step, cause, now)? {
                    Some(order) => order,
                    None => return Ok(()),
                };
                let Some(symptom_order) = self.ensure_order(step, symptom, now)? else {
                    return Ok(());
                };
                self.apply(
                    step,
                    &symptom_order,
                    Command::Suppress { cause: cause_order },
                    SYSTEM_ACTOR,
                    now,
                )
            }
            Action::Promote { symptom } => match self.link_of(step, symptom)? {
                Some(link) => self.apply(step, &link.order_id, Command::Promote, SYSTEM_ACTOR, now),
                None => Ok(()),
            },
            Action::Flapping { incident } => {
                tracing::info!(incident, "incident is flapping; held open until quiet");
                Ok(())
            }
            Action::Resolve { incident, .. } => match self.link_of(step, incident)? {
                Some(link) => {
                    let order = self.load_order(step, &link.order_id)?;
                    match order.map(|order| order.state) {
                        Some(
                            WorkOrderState::Detected
                            | WorkOrderState::Dispatched
                            | WorkOrderState::Suppressed
                            | WorkOrderState::Returned
                            | WorkOrderState::Acked
                            | WorkOrderState::InProgress
                            | WorkOrderState::Resolved,
                        ) => self.apply(
                            step,
                            &link.order_id,
                            Command::SourceCleared,
                            SYSTEM_ACTOR,
                            now,
                        ),
                        _ => Ok(()),
                    }
                }
                None => Ok(()),
            },
        }
    }

    /// The order of `incident`, opened in DETECTED if it has none (or reopened, for a
    /// recurrence). `None` for incidents that open no order (info severity, or gone).
    fn ensure_order(
        &mut self,
        step: &mut Step,
        incident: IncidentId,
        now: Millis,
    ) -> Result<Option<String>, DispatchError> {
        if let Some(link) = self.link_of(step, incident)? {
            return Ok(Some(link.order_id));
        }
        let Some(open) = self.engine.incident(incident).cloned() else {
            return Ok(None);
        };
        if !open.severity.dispatches() {
            return Ok(None);
        }
        // A recurrence within the reopen window reopens the previous incident's order.
        if let Some(previous) = open.recurrence_of
            && let Some(link) = self.link_of(step, previous)?
            && let Some(mut order) = self.load_order(step, &link.order_id)?
        {
            let policy = self.config.sla.clone();
            if let Ok(outcome) = order.apply(
                Command::Recur { at: open.opened_at },
                SYSTEM_ACTOR,
                now,
                &policy,
            ) && outcome.recurrence == Some(bagui_ops::workorder::Recurrence::Reopened)
            {
                let id = order.id.clone();
                Core::put_link(
                    step,
                    incident,
                    IncidentLink {
                        order_id: id.clone(),
                        origin: link.origin,
                    },
                )?;
                self.record(step, order, outcome, NotificationKind::Reopened, now)?;
                return Ok(Some(id));
            }
        }
        let number: u64 = match step.next_order {
            Some(number) => number,
            None => self.store.ops_get(NEXT_ORDER_KEY)?.unwrap_or(1),
        };
        step.next_order = Some(number + 1);
        let id = format!("WO-{number:06}");
        let division = open
            .division
            .clone()
            .or_else(|| match &open.subject {
                Subject::Division(code) => Some(code.clone()),
                Subject::Agent(_) => None,
            })
            .filter(|code| self.divisions.get(code).is_some())
            .unwrap_or_else(|| self.divisions.root().code.clone());
        let (order, transition) = WorkOrder::open(
            NewWorkOrder {
                id: id.clone(),
                incident_id: incident.to_string(),
                title: open.title.clone(),
                severity: open.severity,
                category: open.category,
                division,
            },
            SYSTEM_ACTOR,
            now,
        )
        .map_err(|error| DispatchError::Refused(error.to_string()))?;
        step.batch
            .put(&transition_key(&id, transition.seq), &transition)?;
        Core::put_link(
            step,
            incident,
            IncidentLink {
                order_id: id.clone(),
                origin: incident,
            },
        )?;
        step.orders.insert(id.clone(), order);
        Ok(Some(id))
    }

    fn dispatch(
        &mut self,
        step: &mut Step,
        incident: IncidentId,
        now: Millis,
    ) -> Result<(), DispatchError> {
        let Some(order_id) = self.ensure_order(step, incident, now)? else {
            return Ok(());
        };
        let Some(order) = self.load_order(step, &order_id)? else {
            return Ok(());
        };
        if order.state != WorkOrderState::Detected && order.state != WorkOrderState::Returned {
            // A reopened order already went back to its team.
            return Ok(());
        }
        if self.under_maintenance(incident, now)? {
            tracing::info!(order = %order_id, "not dispatched: its subject is in a maintenance window");
            step.batch.put(
                &key(MAINTENANCE_HOLD_PREFIX, order_id.as_bytes()),
                &incident,
            )?;
            return Ok(());
        }
        step.batch
            .delete(&key(MAINTENANCE_HOLD_PREFIX, order_id.as_bytes()));
        let team = self
            .route(&order.division, order.category, &[])?
            .unwrap_or_else(|| REGION_DUTY_TEAM.to_owned());
        self.apply(
            step,
            &order_id,
            Command::Dispatch { team },
            SYSTEM_ACTOR,
            now,
        )
    }

    /// Whether a maintenance window in force at `now` covers the incident's subject.
    fn under_maintenance(
        &mut self,
        incident: IncidentId,
        now: Millis,
    ) -> Result<bool, DispatchError> {
        let Some(subject) = self
            .engine
            .incident(incident)
            .map(|open| open.subject.clone())
        else {
            return Ok(false);
        };
        let windows: Vec<bagui_ops::maintenance::MaintenanceWindow> = self
            .store
            .ops_scan(MAINTENANCE_PREFIX, b"", usize::MAX)?
            .into_iter()
            .map(|(_, window)| window)
            .collect();
        if windows.is_empty() {
            return Ok(false);
        }
        let facts = self.facts(now)?;
        let subject = match &subject {
            Subject::Agent(agent) => bagui_ops::maintenance::Subject::Agent(agent),
            Subject::Division(code) => bagui_ops::maintenance::Subject::Division(code),
        };
        Ok(bagui_ops::maintenance::active_at(&windows, facts, subject, now).is_some())
    }

    /// Orders held by a maintenance window that has ended: dispatched now if their incident
    /// is still open, released otherwise.
    fn release_maintenance_holds(&mut self, now: Millis) -> Result<bool, DispatchError> {
        let held = self
            .store
            .ops_scan::<IncidentId>(MAINTENANCE_HOLD_PREFIX, b"", 1024)?;
        if held.is_empty() {
            return Ok(false);
        }
        let mut step = Step::new();
        for (row, incident) in held {
            if self.engine.incident(incident).is_none() {
                step.batch.delete(&row);
                continue;
            }
            if !self.under_maintenance(incident, now)? {
                self.dispatch(&mut step, incident, now)?;
            }
        }
        self.finish(step)
    }

    /// The team for `category` at `division` or the nearest ancestor that has one, skipping
    /// `exclude`.
    fn route(
        &self,
        division: &str,
        category: Category,
        exclude: &[&str],
    ) -> Result<Option<TeamId>, DispatchError> {
        let teams = self.teams()?;
        for node in self.divisions.ancestors(division) {
            let found = teams.iter().find(|team| {
                team.division == node.code
                    && team.handles(category)
                    && !exclude.contains(&team.id.as_str())
            });
            if let Some(team) = found {
                return Ok(Some(team.id.clone()));
            }
        }
        Ok(None)
    }

    /// The team one level above the order's current top (owner or last supervisor).
    fn next_level_team(&self, order: &WorkOrder) -> Result<Option<TeamId>, DispatchError> {
        let top = order
            .supervisors
            .last()
            .map(|supervisor| supervisor.team.clone())
            .or_else(|| order.team.clone());
        let base = match top {
            Some(team) => match self.store.ops_get::<Team>(&team_key(&team))? {
                Some(team) => team.division,
                None => order.division.clone(),
            },
            None => order.division.clone(),
        };
        let Some(parent) = self
            .divisions
            .get(&base)
            .and_then(|node| node.parent.clone())
        else {
            return Ok(None);
        };
        let mut involved: Vec<&str> = order
            .supervisors
            .iter()
            .map(|supervisor| supervisor.team.as_str())
            .collect();
        if let Some(team) = &order.team {
            involved.push(team);
        }
        self.route(&parent, order.category, &involved)
    }

    fn apply(
        &mut self,
        step: &mut Step,
        order_id: &str,
        command: Command,
        actor: &str,
        now: Millis,
    ) -> Result<(), DispatchError> {
        let mut order = self
            .load_order(step, order_id)?
            .ok_or_else(|| DispatchError::NoOrder(order_id.to_owned()))?;
        let kind = match &command {
            Command::Dispatch { .. } | Command::Reassign { .. } | Command::TakeOver { .. } => {
                NotificationKind::Dispatched
            }
            Command::Escalate { .. } => NotificationKind::Escalated,
            Command::Ack => NotificationKind::Acked,
            Command::Resolve { .. } => NotificationKind::Resolved,
            Command::Recur { .. } => NotificationKind::Reopened,
            _ => NotificationKind::AutoResolved,
        };
        let policy = self.config.sla.clone();
        let outcome = order
            .apply(command, actor, now, &policy)
            .map_err(|error| DispatchError::Refused(error.to_string()))?;
        self.record(step, order, outcome, kind, now)
    }

    /// Writes what an accepted command produced: log lines, timer rows, notifications.
    fn record(
        &mut self,
        step: &mut Step,
        order: WorkOrder,
        outcome: Outcome,
        kind: NotificationKind,
        now: Millis,
    ) -> Result<(), DispatchError> {
        for transition in &outcome.transitions {
            step.batch
                .put(&transition_key(&order.id, transition.seq), transition)?;
        }
        for deadline in &outcome.cancel {
            step.batch.delete(&deadline_key(deadline));
        }
        for deadline in &outcome.schedule {
            step.batch.put(&deadline_key(deadline), deadline)?;
        }
        let detail = outcome
            .transitions
            .last()
            .map(|transition| transition.detail.clone())
            .filter(|detail| !detail.is_empty());
        for team in &outcome.notify {
            self.queue(step, team, &order, kind, detail.clone(), now)?;
        }
        step.orders.insert(order.id.clone(), order);
        Ok(())
    }

    fn queue(
        &mut self,
        step: &mut Step,
        team_id: &str,
        order: &WorkOrder,
        kind: NotificationKind,
        detail: Option<String>,
        now: Millis,
    ) -> Result<(), DispatchError> {
        let Some(team) = self.store.ops_get::<Team>(&team_key(team_id))? else {
            tracing::warn!(team = team_id, order = %order.id, "notification for an unknown team");
            return Ok(());
        };
        if team.channels.is_empty() {
            return Ok(());
        }
        let sla_due = match kind {
            NotificationKind::Dispatched | NotificationKind::Escalated => order.ack_due_ms,
            _ => order.handle_due_ms,
        };
        let notification = Notification {
            kind,
            work_order_id: order.id.clone(),
            severity: order.severity,
            title: order.title.clone(),
            division_path: self.divisions.path_names(&order.division),
            team: team.name.clone(),
            on_duty: team.on_duty_at(now),
            sla_due,
            console_url: self
                .config
                .console_url
                .as_ref()
                .map(|base| format!("{}/#/orders/{}", base.trim_end_matches('/'), order.id)),
            detail,
            digest: None,
        };
        for (index, channel) in team.channels.iter().enumerate() {
            let id = match step.next_outbox {
                Some(id) => id,
                None => self.store.ops_get::<u64>(NEXT_OUTBOX_KEY)?.unwrap_or(1),
            };
            step.next_outbox = Some(id + 1);
            let entry = OutboxEntry {
                id,
                team: team.id.clone(),
                channel_index: index,
                channel: channel.clone(),
                notification: notification.clone(),
                attempts: 0,
                next_attempt_ms: now,
                created_ms: now,
                last_error: None,
                failed: false,
            };
            step.batch.put(&outbox_key(id), &entry)?;
            step.queued = true;
        }
        Ok(())
    }

    fn fire_due(&mut self, now: Millis) -> Result<(usize, bool), DispatchError> {
        let mut fired = 0;
        let mut queued = self.release_maintenance_holds(now)?;
        loop {
            let rows = self.store.ops_scan::<Deadline>(DEADLINE_PREFIX, b"", 1)?;
            let Some((row_key, deadline)) = rows.into_iter().next() else {
                break;
            };
            if deadline.due_ms > now {
                break;
            }
            let mut step = Step::new();
            step.batch.delete(&row_key);
            if let Some(mut order) = self.load_order(&step, &deadline.order_id)? {
                let next = self.next_level_team(&order)?;
                let policy = self.config.sla.clone();
                match order.fire(&deadline, now, next, &policy) {
                    Ok(FireOutcome::Stale) => {}
                    Ok(FireOutcome::Escalated {
                        notify,
                        transition,
                        schedule,
                        ..
                    }) => {
                        let outcome = Outcome {
                            transitions: vec![transition],
                            schedule: vec![schedule],
                            notify,
                            ..Outcome::default()
                        };
                        self.record(&mut step, order, outcome, NotificationKind::Escalated, now)?;
                    }
                    Ok(FireOutcome::MissedAtTop { notify, transition }) => {
                        let outcome = Outcome {
                            transitions: vec![transition],
                            notify,
                            ..Outcome::default()
                        };
                        self.record(&mut step, order, outcome, NotificationKind::Escalated, now)?;
                    }
                    Err(error) => tracing::warn!(%error, "deadline row not fired"),
                }
            }
            queued |= self.finish(step)?;
            fired += 1;
        }
        Ok((fired, queued))
    }

    fn command(
        &mut self,
        order_id: &str,
        command: Command,
        actor: &str,
        now: Millis,
    ) -> Result<OrderDetail, DispatchError> {
        let mut step = Step::new();
        if let Command::Dispatch { team }
        | Command::Escalate { team }
        | Command::TakeOver { team }
        | Command::Reassign { team } = &command
            && self.store.ops_get::<Team>(&team_key(team))?.is_none()
        {
            return Err(DispatchError::NoTeam(team.clone()));
        }
        self.apply(&mut step, order_id, command, actor, now)?;
        self.finish(step)?;
        self.order_detail(order_id)
    }

    fn teams(&self) -> Result<Vec<Team>, StoreError> {
        Ok(self
            .store
            .ops_scan::<Team>(TEAM_PREFIX, b"", usize::MAX)?
            .into_iter()
            .map(|(_, team)| team)
            .collect())
    }

    fn row(&self, order: &WorkOrder) -> OrderRow {
        OrderRow {
            id: order.id.clone(),
            state: state_name(order.state).to_owned(),
            severity: order.severity,
            category: order.category,
            team: order.team.clone(),
            division: order.division.clone(),
            division_path: self.divisions.path_names(&order.division),
            title: order.title.clone(),
            created_at: order.created_ms,
            escalation_level: order.escalation_level,
            suppressed_by: order.suppressed_by.clone(),
            supervisors: order
                .supervisors
                .iter()
                .map(|supervisor| supervisor.team.clone())
                .collect(),
            ack_due_ms: order.ack_due_ms,
            handle_due_ms: order.handle_due_ms,
        }
    }

    fn orders(&self, filter: &OrderFilter) -> Result<Vec<OrderRow>, DispatchError> {
        if let Some(state) = &filter.state
            && !ALL_STATES
                .iter()
                .any(|known| state_name(*known) == state.as_str())
        {
            return Err(DispatchError::Refused(format!(
                "unknown state {state:?}; one of {}",
                ALL_STATES
                    .iter()
                    .map(|state| state_name(*state))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let orders = self
            .store
            .ops_scan::<WorkOrder>(ORDER_PREFIX, b"", usize::MAX)?;
        Ok(orders
            .into_iter()
            .map(|(_, order)| order)
            .filter(|order| {
                let finished = matches!(
                    order.state,
                    WorkOrderState::Closed
                        | WorkOrderState::Verified
                        | WorkOrderState::AutoResolved
                );
                (filter.all || !finished || filter.state.is_some())
                    && filter
                        .state
                        .as_ref()
                        .is_none_or(|state| state_name(order.state) == state)
                    && filter
                        .team
                        .as_ref()
                        .is_none_or(|team| order.team.as_ref() == Some(team))
                    && filter
                        .division
                        .as_ref()
                        .is_none_or(|code| self.divisions.is_within(&order.division, code))
            })
            .map(|order| self.row(&order))
            .collect())
    }

    fn order_detail(&self, id: &str) -> Result<OrderDetail, DispatchError> {
        let order = self
            .store
            .ops_get::<WorkOrder>(&order_key(id))?
            .ok_or_else(|| DispatchError::NoOrder(id.to_owned()))?;
        let mut prefix = key(TRANSITION_PREFIX, id.as_bytes());
        prefix.push(0);
        let transitions = self
            .store
            .ops_scan::<Transition>(&prefix, b"", usize::MAX)?
            .into_iter()
            .map(|(_, transition)| transition)
            .collect();
        Ok(OrderDetail {
            row: self.row(&order),
            order,
            transitions,
        })
    }
}

const ALL_STATES: [WorkOrderState; 11] = [
    WorkOrderState::Detected,
    WorkOrderState::Dispatched,
    WorkOrderState::Acked,
    WorkOrderState::InProgress,
    WorkOrderState::Resolved,
    WorkOrderState::Verified,
    WorkOrderState::Closed,
    WorkOrderState::Suppressed,
    WorkOrderState::Returned,
    WorkOrderState::Reopened,
    WorkOrderState::AutoResolved,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::AgentRecord;

    const TOWNSHIP: &str = "450103001";
    const COUNTY: &str = "450103";
    const CITY: &str = "4501";

    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        clock: Arc<ManualClock>,
        divisions: Arc<Divisions>,
        dispatcher: Option<Dispatcher>,
    }

    fn rules() -> IncidentRules {
        IncidentRules {
            terminal_off_hours: None,
            ..IncidentRules::default()
        }
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store");
            Store::create(&path).unwrap();
            let mut fixture = Fixture {
                _dir: dir,
                path,
                clock: ManualClock::new(),
                divisions: Arc::new(Divisions::guangxi()),
                dispatcher: None,
            };
            fixture.open();
            fixture
        }

        /// (Re)opens the dispatcher on the same store, as a control-plane start does.
        fn open(&mut self) {
            self.dispatcher = None;
            let store = Store::open_waiting(
                &self.path,
                crate::store::DEFAULT_CACHE_BYTES,
                Duration::from_secs(5),
            )
            .unwrap();
            self.dispatcher = Some(
                Dispatcher::open(
                    store,
                    self.divisions.clone(),
                    DispatchConfig {
                        rules: rules(),
                        ..DispatchConfig::default()
                    },
                    self.clock.clone(),
                    true,
                )
                .unwrap(),
            );
        }

        fn d(&self) -> &Dispatcher {
            self.dispatcher.as_ref().unwrap()
        }

        fn agent(&self, id: &str, division: &str, role: Role) {
            let store = self.d().store();
            store
                .put_agent(&AgentRecord {
                    id: id.into(),
                    division: division.into(),
                    role,
                    created_ms: self.clock.now_ms(),
                    ..AgentRecord::default()
                })
                .unwrap();
            self.d().lock().facts = None;
        }

        fn team(&self, id: &str, division: &str, categories: Vec<Category>) {
            self.d()
                .put_team(Team {
                    id: id.into(),
                    name: format!("{id} team"),
                    division: division.into(),
                    categories,
                    channels: vec![ChannelConfig::Webhook {
                        url: "http://127.0.0.1:9/hook".into(),
                        bearer_token: None,
                    }],
                    on_duty: Vec::new(),
                    roster: None,
                    created_ms: 0,
                })
                .unwrap();
        }

        fn advance(&self, by: Duration) {
            self.clock.advance(by);
            self.d().feed(Vec::new()).unwrap();
            self.d().fire_due().unwrap();
        }

        fn now(&self) -> Millis {
            self.clock.now_ms()
        }

        /// Feeds one session event of `agent`.
        fn session(&self, agent: &str, at: Millis, back: bool) {
            let agent = agent.to_owned();
            let event = if back {
                Event::AgentBack { agent, at }
            } else {
                Event::AgentLost { agent, at }
            };
            self.d().feed(vec![event]).unwrap();
        }

        fn orders(&self) -> Vec<OrderRow> {
            self.d()
                .orders(&OrderFilter {
                    all: true,
                    ..OrderFilter::default()
                })
                .unwrap()
        }

        fn queued_for(&self, team: &str) -> usize {
            self.d()
                .outbox(usize::MAX)
                .unwrap()
                .iter()
                .filter(|entry| entry.team == team)
                .count()
        }
    }

    /// `count` village codes under the township, cycling through its villages (12 of them).
    fn villages(divisions: &Divisions, count: usize) -> Vec<String> {
        divisions
            .children(TOWNSHIP)
            .iter()
            .cycle()
            .take(count)
            .cloned()
            .collect()
    }

    #[test]
    fn a_township_storm_is_one_dispatched_order_with_suppressed_symptoms() {
        let fixture = Fixture::new();
        fixture.team("xz-net", TOWNSHIP, vec![Category::Network, Category::Host]);
        fixture.agent("gw", TOWNSHIP, Role::Gateway);
        let villages = villages(&fixture.divisions, 30);
        for (index, village) in villages.iter().enumerate() {
            fixture.agent(&format!("v{index}"), village, Role::Terminal);
        }
        let now = fixture.now();
        let mut back = vec![Event::AgentBack {
            agent: "gw".into(),
            at: now,
        }];
        back.extend((0..30).map(|index| Event::AgentBack {
            agent: format!("v{index}"),
            at: now,
        }));
        fixture.d().feed(back).unwrap();
        fixture.advance(Duration::from_secs(5));

        // The uplink dies: the gateway and its 30 villages are lost together, villages first.
        let at = fixture.now();
        let mut lost: Vec<Event> = (0..30)
            .map(|index| Event::AgentLost {
                agent: format!("v{index}"),
                at,
            })
            .collect();
        lost.push(Event::AgentLost {
            agent: "gw".into(),
            at,
        });
        fixture.d().feed(lost).unwrap();
        assert!(
            fixture.orders().is_empty(),
            "nothing is cut during the hold"
        );
        fixture.advance(Duration::from_secs(11));

        let orders = fixture.orders();
        let dispatched: Vec<_> = orders.iter().filter(|o| o.state == "DISPATCHED").collect();
        let suppressed: Vec<_> = orders.iter().filter(|o| o.state == "SUPPRESSED").collect();
        assert_eq!(dispatched.len(), 1, "{orders:#?}");
        assert_eq!(suppressed.len(), 30);
        let cause = dispatched[0];
        assert_eq!(cause.team.as_deref(), Some("xz-net"));
        assert_eq!(cause.severity, Severity::P1);
        assert!(
            suppressed
                .iter()
                .all(|order| order.suppressed_by.as_deref() == Some(cause.id.as_str())),
            "{suppressed:#?} {cause:#?}"
        );
        assert_eq!(
            fixture.queued_for("xz-net"),
            1,
            "one message for the one order"
        );

        // The link returns: everything resolves, nothing is left behind.
        let at = fixture.now();
        let mut back: Vec<Event> = vec![Event::AgentBack {
            agent: "gw".into(),
            at,
        }];
        back.extend((0..30).map(|index| Event::AgentBack {
            agent: format!("v{index}"),
            at,
        }));
        fixture.d().feed(back).unwrap();
        fixture.advance(Duration::from_secs(11));
        let orders = fixture.orders();
        assert_eq!(orders.len(), 31);
        assert!(
            orders.iter().all(|order| order.state == "AUTO_RESOLVED"),
            "{orders:#?}"
        );
        assert!(fixture.d().incidents().is_empty());
    }

    #[test]
    fn an_agent_that_joined_after_the_facts_were_read_is_routed_by_its_division() {
        let fixture = Fixture::new();
        fixture.team("xz", TOWNSHIP, Vec::new());
        fixture.agent("gw", TOWNSHIP, Role::Gateway);
        let now = fixture.now();
        fixture.session("gw", now, true);
        assert!(fixture.d().lock().facts.is_some(), "the facts were read");
        // A server joins while the facts are fresh; nothing tells the dispatcher to re-read.
        fixture
            .d()
            .store()
            .put_agent(&AgentRecord {
                id: "late".into(),
                division: TOWNSHIP.into(),
                role: Role::Server,
                created_ms: now,
                ..AgentRecord::default()
            })
            .unwrap();
        fixture.session("late", now + 1, true);
        fixture.session("late", now + 2, false);
        fixture.advance(Duration::from_secs(11));
        let orders = fixture.orders();
        assert_eq!(orders.len(), 1, "{orders:#?}");
        assert_eq!(orders[0].team.as_deref(), Some("xz"), "{orders:#?}");
        assert_eq!(orders[0].division, TOWNSHIP);
    }

    #[test]
    fn an_engine_stored_whole_by_an_older_version_is_rewritten_as_rows_and_keeps_its_incidents() {
        let mut fixture = Fixture::new();
        fixture.team("xz", TOWNSHIP, Vec::new());
        fixture.agent("gw", TOWNSHIP, Role::Gateway);
        let now = fixture.now();
        fixture.session("gw", now, true);
        fixture.session("gw", now + 1, false);
        let engine = fixture.d().lock().engine.clone();
        assert_eq!(engine.open_incidents().count(), 1, "held, not yet decided");

        // Rewind the store to the older layout: the engine as one value, no rows.
        let store = fixture.d().store();
        let mut batch = OpsBatch::new();
        batch.put(LEGACY_ENGINE_KEY, &engine).unwrap();
        for prefix in [
            ENGINE_AGENT_PREFIX,
            ENGINE_INCIDENT_PREFIX,
            ENGINE_HISTORY_PREFIX,
        ] {
            for (row, _) in store
                .ops_scan::<serde::de::IgnoredAny>(prefix, b"", usize::MAX)
                .unwrap()
            {
                batch.delete(&row);
            }
        }
        batch.delete(ENGINE_HEADER_KEY);
        store.ops_commit(batch).unwrap();
        drop(store);

        fixture.open();
        let store = fixture.d().store();
        assert!(
            store
                .ops_get::<serde::de::IgnoredAny>(LEGACY_ENGINE_KEY)
                .unwrap()
                .is_none()
        );
        let rows = store
            .ops_scan::<Incident>(ENGINE_INCIDENT_PREFIX, b"", usize::MAX)
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.fingerprint, "agent-lost:gw");
        drop(store);
        // The held incident is decided after the restart as it would have been without it.
        fixture.advance(Duration::from_secs(11));
        let orders = fixture.orders();
        assert_eq!(orders.len(), 1, "{orders:#?}");
        assert_eq!(orders[0].state, "DISPATCHED");
        // And the rows alone carry it across one more restart.
        fixture.open();
        assert_eq!(fixture.d().incidents().len(), 1);
    }

    #[test]
    fn an_unacknowledged_p1_escalates_level_by_level_across_a_restart() {
        let mut fixture = Fixture::new();
        fixture.team("xz", TOWNSHIP, Vec::new());
        fixture.team("county", COUNTY, Vec::new());
        fixture.team("city", CITY, Vec::new());
        fixture.agent("gw", TOWNSHIP, Role::Gateway);
        let now = fixture.now();
        fixture
            .d()
            .feed(vec![Event::AgentBack {
                agent: "gw".into(),
                at: now,
            }])
            .unwrap();
        let at = fixture.now();
        fixture
            .d()
            .feed(vec![Event::AgentLost {
                agent: "gw".into(),
                at,
            }])
            .unwrap();
        fixture.advance(Duration::from_secs(11));
        let order = fixture.orders().pop().expect("one order");
        assert_eq!(order.state, "DISPATCHED");
        assert_eq!(order.team.as_deref(), Some("xz"));
        assert_eq!(fixture.queued_for("xz"), 1);

        fixture.advance(Duration::from_secs(14 * 60));
        assert_eq!(fixture.orders()[0].escalation_level, 0, "not yet");
        fixture.advance(Duration::from_secs(60));
        let order = &fixture.orders()[0];
        assert_eq!(order.escalation_level, 1);
        assert_eq!(order.supervisors, vec!["county".to_string()]);
        assert_eq!(fixture.queued_for("county"), 1);
        assert_eq!(
            fixture.queued_for("xz"),
            2,
            "the owner hears of the escalation"
        );

        // The control plane restarts between the two deadlines.
        fixture.advance(Duration::from_secs(5 * 60));
        fixture.open();
        fixture.advance(Duration::from_secs(10 * 60));
        let order = &fixture.orders()[0];
        assert_eq!(order.escalation_level, 2);
        assert_eq!(
            order.supervisors,
            vec!["county".to_string(), "city".to_string()]
        );
        assert_eq!(fixture.queued_for("city"), 1);
        // Fired exactly once: more time and another restart change nothing.
        fixture.open();
        fixture.advance(Duration::from_secs(60));
        let detail = fixture.d().order(&order.id).unwrap();
        let escalations = detail
            .transitions
            .iter()
            .filter(|t| t.escalated_to.is_some())
            .count();
        assert_eq!(escalations, 2);
        assert_eq!(fixture.queued_for("city"), 1);

        // Acknowledging stops the ack clock; the log records who did it.
        let detail = fixture
            .d()
            .command(&order.id, Command::Ack, "operator-1")
            .unwrap();
        assert_eq!(detail.row.state, "ACKED");
        assert_eq!(detail.transitions.last().unwrap().actor, "operator-1");
    }

    #[test]
    fn a_maintenance_window_holds_dispatch_until_it_ends() {
        let fixture = Fixture::new();
        fixture.team("xz", TOWNSHIP, Vec::new());
        fixture.agent("gw", TOWNSHIP, Role::Gateway);
        let now = fixture.now();
        let window = bagui_ops::maintenance::MaintenanceWindow {
            id: "mw-1".into(),
            target: bagui_ops::maintenance::Target::Division(COUNTY.into()),
            start: now,
            end: now + 60_000,
            reason: "fibre works".into(),
            created_by: "op".into(),
        };
        let mut batch = OpsBatch::new();
        batch
            .put(&key(MAINTENANCE_PREFIX, window.id.as_bytes()), &window)
            .unwrap();
        fixture.d().store().ops_commit(batch).unwrap();
        fixture
            .d()
            .feed(vec![
                Event::AgentBack {
                    agent: "gw".into(),
                    at: now,
                },
                Event::AgentLost {
                    agent: "gw".into(),
                    at: now,
                },
            ])
            .unwrap();
        fixture.advance(Duration::from_secs(11));
        let orders = fixture.orders();
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0].state, "DETECTED", "held by the window");
        assert_eq!(fixture.queued_for("xz"), 0, "nobody is paged");
        // Still down when the window ends: dispatched then, once.
        fixture.advance(Duration::from_secs(50));
        let orders = fixture.orders();
        assert_eq!(orders[0].state, "DISPATCHED");
        assert_eq!(fixture.queued_for("xz"), 1);
        fixture.advance(Duration::from_secs(5));
        assert_eq!(fixture.queued_for("xz"), 1);
    }

    #[test]
    fn a_link_degrades_and_recovers_with_hysteresis() {
        let (sender, receiver) = std::sync::mpsc::channel();
        let events = LinkEvents::new(sender);
        let stats = |rtt_ms: u64, sent: u64, lost: u64| bagui_protocol::LinkStats {
            rtt_us: rtt_ms * 1000,
            sent_packets: sent,
            lost_packets: lost,
            ..Default::default()
        };
        let kinds = |receiver: &std::sync::mpsc::Receiver<Event>| -> Vec<String> {
            receiver
                .try_iter()
                .map(|event| match event {
                    Event::LinkDegraded { detail, .. } => format!("degraded {detail}"),
                    Event::LinkRecovered { detail, .. } => format!("recovered {detail}"),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        // Two slow heartbeats are not enough; the third is.
        events.heartbeat("a", &stats(50, 100, 0), 1);
        events.heartbeat("a", &stats(900, 200, 0), 2);
        events.heartbeat("a", &stats(900, 300, 0), 3);
        assert!(kinds(&receiver).is_empty());
        events.heartbeat("a", &stats(900, 400, 0), 4);
        assert_eq!(kinds(&receiver), vec!["degraded rtt 900 ms"]);
        // Fast again but losing 10 % of packets: still degraded; then clean for three beats.
        for (index, lost) in [10, 20, 30].into_iter().enumerate() {
            events.heartbeat("a", &stats(50, 500 + 100 * index as u64, lost), 5);
        }
        assert!(kinds(&receiver).is_empty());
        for index in 0..3 {
            events.heartbeat("a", &stats(50, 800 + 100 * index, 30), 6);
        }
        assert_eq!(kinds(&receiver), vec!["recovered rtt 50 ms"]);
        // A few packets say nothing about loss; a new connection restarts the counters.
        for _ in 0..4 {
            events.heartbeat("b", &stats(50, 5, 3), 7);
        }
        events.heartbeat("a", &stats(50, 10, 0), 8);
        assert!(kinds(&receiver).is_empty());
        // Degraded when the session ends: recovered, then lost. (Counters count from the
        // connection's start, so the first heartbeat is an interval too.)
        for sent in [100, 200] {
            events.heartbeat("c", &stats(50, sent, sent / 5), 9);
        }
        assert!(kinds(&receiver).is_empty());
        events.heartbeat("c", &stats(50, 300, 60), 10);
        assert_eq!(kinds(&receiver), vec!["degraded rtt 50 ms, loss 20.0 %"]);
        events.lost("c", 11);
        let after: Vec<String> = kinds(&receiver);
        assert_eq!(after[0], "recovered session ended");
        assert!(after[1].starts_with("AgentLost"));
    }

    #[test]
    fn the_roster_shift_on_duty_is_mentioned() {
        let fixture = Fixture::new();
        let roster: bagui_ops::access::Roster = serde_json::from_value(serde_json::json!({
            "shifts": [{"name": "全天", "days": "every_day", "start": "00:00", "end": "00:00",
                        "members": [{"name": "李四", "phone": "13900002222"}]}]
        }))
        .unwrap();
        fixture
            .d()
            .put_team(Team {
                id: "xz".into(),
                name: "新竹".into(),
                division: TOWNSHIP.into(),
                categories: Vec::new(),
                channels: vec![ChannelConfig::Webhook {
                    url: "http://127.0.0.1:9/hook".into(),
                    bearer_token: None,
                }],
                on_duty: vec![OnDutyPerson::named("值班长")],
                roster: Some(roster),
                created_ms: 0,
            })
            .unwrap();
        fixture.agent("gw", TOWNSHIP, Role::Gateway);
        let now = fixture.now();
        fixture
            .d()
            .feed(vec![
                Event::AgentBack {
                    agent: "gw".into(),
                    at: now,
                },
                Event::AgentLost {
                    agent: "gw".into(),
                    at: now,
                },
            ])
            .unwrap();
        fixture.advance(Duration::from_secs(11));
        let outbox = fixture.d().outbox(10).unwrap();
        assert_eq!(outbox.len(), 1);
        let mentioned: Vec<(String, Option<String>)> = outbox[0]
            .notification
            .on_duty
            .iter()
            .map(|person| (person.name.clone(), person.phone.clone()))
            .collect();
        assert_eq!(
            mentioned,
            vec![
                ("李四".to_string(), Some("13900002222".to_string())),
                ("值班长".to_string(), None)
            ]
        );
        // A roster that does not validate is refused.
        let mut bad = fixture.d().teams().unwrap()[1].clone();
        bad.roster = Some(
            serde_json::from_value(
                serde_json::json!({"shifts": [{"name": "", "days": "every_day",
                "start": "08:00", "end": "18:00", "members": []}]}),
            )
            .unwrap(),
        );
        assert!(matches!(
            fixture.d().put_team(bad),
            Err(DispatchError::Refused(_))
        ));
    }

    #[test]
    fn rules_set_through_the_api_are_validated_and_survive_a_restart() {
        let mut fixture = Fixture::new();
        let mut rules = fixture.d().rules();
        rules.hold_agent_secs = 30;
        fixture.d().set_rules(rules).unwrap();
        let mut bad = fixture.d().rules();
        bad.mass_outage_percent = 150;
        assert!(matches!(
            fixture.d().set_rules(bad),
            Err(DispatchError::Refused(_))
        ));
        assert_eq!(fixture.d().rules().mass_outage_percent, 50);
        fixture.open();
        assert_eq!(
            fixture.d().rules().hold_agent_secs,
            30,
            "the stored rules win"
        );
        // And they act: a gateway lost is still held after 11 s, decided after 31.
        fixture.team("xz", TOWNSHIP, Vec::new());
        fixture.agent("gw", TOWNSHIP, Role::Gateway);
        let now = fixture.now();
        fixture
            .d()
            .feed(vec![
                Event::AgentBack {
                    agent: "gw".into(),
                    at: now,
                },
                Event::AgentLost {
                    agent: "gw".into(),
                    at: now,
                },
            ])
            .unwrap();
        fixture.advance(Duration::from_secs(11));
        assert!(fixture.orders().is_empty());
        fixture.advance(Duration::from_secs(20));
        assert_eq!(fixture.orders().len(), 1);
    }

    #[test]
    fn a_refused_engine_action_does_not_wedge_the_dispatcher() {
        let fixture = Fixture::new();
        fixture.team("xz", TOWNSHIP, Vec::new());
        fixture.agent("gw", TOWNSHIP, Role::Gateway);
        fixture.agent("v0", "450103001005", Role::Server);
        let now = fixture.now();
        let events = |lost: bool| -> Vec<Event> {
            ["gw", "v0"]
                .into_iter()
                .map(|agent| {
                    if lost {
                        Event::AgentLost {
                            agent: agent.into(),
                            at: now,
                        }
                    } else {
                        Event::AgentBack {
                            agent: agent.into(),
                            at: now,
                        }
                    }
                })
                .collect()
        };
        fixture.d().feed(events(false)).unwrap();
        fixture.d().feed(events(true)).unwrap();
        fixture.advance(Duration::from_secs(11));
        let symptom = fixture
            .orders()
            .into_iter()
            .find(|order| order.state == "SUPPRESSED")
            .expect("the village is a symptom");
        let cause_id = fixture
            .orders()
            .into_iter()
            .find(|order| order.state == "DISPATCHED")
            .unwrap()
            .id;
        // The engine links the symptom again (as when its cause becomes a symptom of a mass
        // outage): the machine refuses Suppress in SUPPRESSED, the step still commits.
        let (symptom_incident, cause_incident) = {
            let core = fixture.d().lock();
            let detail = core.order_detail(&symptom.id).unwrap();
            let cause = core.order_detail(&cause_id).unwrap();
            (
                detail.order.incident_id.parse::<IncidentId>().unwrap(),
                cause.order.incident_id.parse::<IncidentId>().unwrap(),
            )
        };
        {
            let mut core = fixture.d().lock();
            let mut step = Step::new();
            core.carry_out(
                &mut step,
                Action::LinkSymptom {
                    symptom: symptom_incident,
                    cause: cause_incident,
                },
                now,
            )
            .unwrap();
            core.finish(step).unwrap();
        }
        // And the dispatcher goes on: the link returns, both resolve.
        fixture.d().feed(events(false)).unwrap();
        fixture.advance(Duration::from_secs(11));
        assert!(
            fixture
                .orders()
                .iter()
                .all(|order| order.state == "AUTO_RESOLVED"),
            "{:#?}",
            fixture.orders()
        );
    }

    #[test]
    fn routing_walks_up_the_tree_to_the_region_duty_team() {
        let fixture = Fixture::new();
        fixture.team("county-sec", COUNTY, vec![Category::Security]);
        fixture.agent("srv", "450103001005", Role::Server);
        let now = fixture.now();
        fixture
            .d()
            .feed(vec![Event::AgentBack {
                agent: "srv".into(),
                at: now,
            }])
            .unwrap();
        let finding = |fingerprint: &str, category| {
            Event::Finding(bagui_ops::incidents::Finding {
                fingerprint: fingerprint.into(),
                subject: Subject::Agent("srv".into()),
                severity: Severity::P2,
                category,
                title: fingerprint.into(),
                firing: true,
                at: now,
            })
        };
        fixture
            .d()
            .feed(vec![
                finding("sec", Category::Security),
                finding("disk", Category::Host),
            ])
            .unwrap();
        fixture.advance(Duration::from_secs(3));
        let orders = fixture.orders();
        let team_of = |title: &str| {
            orders
                .iter()
                .find(|order| order.title == title)
                .and_then(|order| order.team.clone())
        };
        assert_eq!(team_of("sec").as_deref(), Some("county-sec"));
        assert_eq!(team_of("disk").as_deref(), Some(REGION_DUTY_TEAM));
    }

    #[test]
    fn refused_commands_change_nothing() {
        let fixture = Fixture::new();
        fixture.team("xz", TOWNSHIP, Vec::new());
        fixture.agent("gw", TOWNSHIP, Role::Gateway);
        let now = fixture.now();
        fixture
            .d()
            .feed(vec![
                Event::AgentBack {
                    agent: "gw".into(),
                    at: now,
                },
                Event::AgentLost {
                    agent: "gw".into(),
                    at: now,
                },
            ])
            .unwrap();
        fixture.advance(Duration::from_secs(11));
        let id = fixture.orders()[0].id.clone();
        let before = fixture.d().order(&id).unwrap();
        let blank = fixture.d().command(
            &id,
            Command::Resolve {
                feedback: " ".into(),
            },
            "op",
        );
        assert!(matches!(blank, Err(DispatchError::Refused(_))), "{blank:?}");
        let unknown_team = fixture.d().command(
            &id,
            Command::Reassign {
                team: "nobody".into(),
            },
            "op",
        );
        assert!(matches!(unknown_team, Err(DispatchError::NoTeam(_))));
        assert!(matches!(
            fixture.d().command("WO-999999", Command::Ack, "op"),
            Err(DispatchError::NoOrder(_))
        ));
        assert_eq!(fixture.d().order(&id).unwrap(), before);
    }
}
