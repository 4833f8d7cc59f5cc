//! The incident engine: turns what the control plane observes (agents lost and back, links
//! degraded, findings and external alerts) into incidents, and decides which of them become
//! work orders and which are only symptoms of another.
//!
//! It is sans IO in the manner of quinn-proto: the control plane feeds [`Event`]s with
//! [`IncidentEngine::handle_event`], calls [`IncidentEngine::tick`] with the current time after
//! each batch of events and whenever [`IncidentEngine::poll_timeout`] comes due, and carries out
//! the [`Action`]s returned. Who is behind whom comes from the caller through [`Topology`]. The
//! engine's state is plain serde data, so the control plane stores it (or replays its events)
//! across restarts.
//!
//! # Rules (all thresholds in [`IncidentRules`])
//!
//! * **De-duplication.** Each incident has a fingerprint: `agent-lost:<agent>`,
//!   `link:<agent>`, `mass-outage:<division>`, or `finding:<fingerprint>` for findings and
//!   external alerts. While an incident is open, a second report of its fingerprint is the same
//!   incident (the first report's severity, category and title stand). Once it has resolved, a
//!   new report opens a **new** incident with a new id; if the previous one resolved within
//!   `reopen_window_secs` (24 h) its `Open` carries `recurrence_of`, which is the work-order
//!   machine's signal to reopen the old work order rather than cut a new one.
//! * **Hold.** A new incident is announced at once (`Open`) but decided only when its hold ends
//!   (2 s for findings, 10 s for agent-lost and link events): then it becomes a symptom of a
//!   cause, or stands on its own and is dispatched if its severity dispatches. A source that
//!   clears inside the hold resolves the incident before anyone was paged. Because decisions
//!   are taken at the end of the hold, from the facts known then, the order in which the lost
//!   events of a gateway and of the villages behind it arrive within the hold does not matter.
//!   Facts are read as of the hold's end (an uplink that went down after it does not count), so
//!   the outcome does not depend on how often `tick` is called either.
//! * **Topology (Nagios parent/child).** An agent whose uplink agent is down is UNREACHABLE:
//!   its incident is linked (`LinkSymptom`) to the incident of the topmost agent of the chain
//!   of down uplinks — the one cause — and never dispatched on its own. Findings and link
//!   events on an agent that is itself down, or behind a down uplink, are symptoms the same
//!   way; security findings never are (an intrusion is not explained by a dead link). A cause
//!   is never itself a symptom: when a cause becomes a symptom of a larger cause, its symptoms
//!   move with it. When a cause resolves, each of its symptoms is held again for its hold
//!   window and then re-checked: resolved if its source has cleared by then (its own `Resolve`
//!   comes as soon as it clears), re-linked if another cause now explains it, else promoted
//!   (`Promote`, then `Dispatch`). No symptom is left without a cause or a decision.
//! * **Mass outage.** When strictly more than `mass_outage_percent` (50 %) of a division's
//!   agents, and at least `mass_outage_min_agents` (5), are down together, one mass-outage
//!   incident opens on the topmost such division and the agent-lost incidents of its down
//!   agents become its symptoms. Only agents that are down on their own count: UNREACHABLE
//!   agents are already explained by their uplink, agents silenced by policy (grace,
//!   off-hours) raised nothing, and former symptoms in their re-check hold are most likely
//!   reconnecting behind an uplink that has just returned. The check runs when the hold of a
//!   fresh agent-lost incident ends — like every other decision, once the whole burst has
//!   arrived — so a gateway's loss arriving after its villages' never makes the villages look
//!   like a mass outage of their own. While the incident is open the division is not raised again;
//!   it resolves when the share still down falls to `mass_outage_clear_percent` (25 %) or
//!   below — the gap between the two thresholds is the hysteresis that keeps a division
//!   hovering around 50 % from raising an incident a minute.
//! * **Grace after start.** For `grace_secs` (2 min) after the control plane starts, an agent
//!   that has not reconnected since the start raises no agent-lost incident: after a restart
//!   every agent reconnects at once and the slow ones are not faults. An agent that reconnected
//!   and then drops is treated normally. An agent still down when the grace ends raises its
//!   incident then (opened at the end of the grace): grace delays, it does not forgive.
//! * **Terminal off-hours.** A `terminal` lost inside `terminal_off_hours` (CST; default
//!   19:00–08:00 and weekends) raises nothing for that outage: switching a terminal off after
//!   work is an act, not a fault. Its next loss in working time is treated normally, and how
//!   long it stayed off shows in availability.
//! * **Silenced uplinks.** An agent behind a down uplink that raised nothing (grace or
//!   off-hours) waits: it is unreachable for a reason that is not a fault. It is decided again
//!   on every tick and linked, or dispatched, once the uplink raises its incident or returns.
//! * **Flap damping.** A new incident whose fingerprint resolved at most `flap_window_secs`
//!   (30 min) earlier is a re-fire. When the re-fires of a fingerprint inside the trailing
//!   window exceed `flap_max_refires` (3), the new incident is flapping (`Flapping`): it is
//!   dispatched once like any other but is then **held open** — its source clearing does not
//!   resolve it and firing again opens nothing new — until the source has stayed clear for
//!   `flap_quiet_secs` (15 min), when it resolves with [`ResolveReason::FlapSettled`] and the
//!   count starts afresh. This is the hysteresis: it takes more than three re-fires to enter
//!   the state and a quarter of an hour of quiet to leave it, so one noisy link yields one
//!   work order instead of one every few minutes.
//!
//! Resolved incidents are dropped from the state once their `Resolve` has been returned; only
//! the per-fingerprint history needed for flap damping and recurrence is kept, and it is
//! pruned once older than both windows, so the state stays bounded by what is open.

mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use self::rules::{IncidentRules, OffHours, RulesError};
use crate::model::{Category, DivisionCode, Millis, Severity};

/// An agent's id as the control plane knows it.
pub type AgentId = String;

/// An incident's id, from a counter in the engine state (never reused).
pub type IncidentId = u64;

/// Longest uplink chain or division ancestry the engine walks (guards against cycles in
/// misconfigured topologies).
const MAX_DEPTH: usize = 64;

/// What an agent is for, as far as incidents are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// A server in a gov-cloud or machine room.
    Server,
    /// The access device whose uplink carries its division's agents.
    Gateway,
    /// A township or village terminal; may be switched off after hours.
    Terminal,
}

/// Topology and inventory facts the engine asks about; the control plane implements it over
/// its stores. Answers must be stable for the duration of one call into the engine.
pub trait Topology {
    /// The agent through which `agent` reaches the control plane; `None`: directly.
    fn uplink(&self, agent: &str) -> Option<AgentId>;
    /// The division `agent` hangs on; `None` for an agent the inventory does not know.
    fn division(&self, agent: &str) -> Option<DivisionCode>;
    /// The parent of `division`; `None` for the region root or an unknown code.
    fn parent_division(&self, division: &str) -> Option<DivisionCode>;
    /// How many enrolled agents hang on `division` or any division below it.
    fn agents_in(&self, division: &str) -> usize;
    /// The agent's role; unknown agents are best answered `Server`.
    fn role(&self, agent: &str) -> AgentRole;
}

/// What an incident is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Agent(AgentId),
    Division(DivisionCode),
}

/// A finding, check result, security finding or external alert, in one shape (the intake
/// module maps Alertmanager and generic alerts to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable identity of the condition; reports with the same fingerprint are one incident.
    pub fingerprint: String,
    pub subject: Subject,
    pub severity: Severity,
    pub category: Category,
    pub title: String,
    /// `false`: the condition has cleared.
    pub firing: bool,
    pub at: Millis,
}

/// An observation fed to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The agent's session was lost (heartbeat timeout or connection closed).
    AgentLost {
        agent: AgentId,
        at: Millis,
    },
    /// The agent reconnected.
    AgentBack {
        agent: AgentId,
        at: Millis,
    },
    /// The agent's link is degraded (loss, RTT from QUIC stats); `detail` says how.
    LinkDegraded {
        agent: AgentId,
        at: Millis,
        detail: String,
    },
    /// The agent's link is healthy again.
    LinkRecovered {
        agent: AgentId,
        at: Millis,
        detail: String,
    },
    Finding(Finding),
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event has an empty agent id")]
    EmptyAgent,
    #[error("finding has an empty fingerprint")]
    EmptyFingerprint,
    #[error("finding {0:?} has an empty division code")]
    EmptyDivision(String),
}

/// Where an incident came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    AgentLost,
    Link,
    MassOutage,
    Finding,
}

/// Why an incident resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveReason {
    /// Its source cleared (agent back, link recovered, finding resolved, outage receded).
    Cleared,
    /// It was flapping and its source has stayed clear for the quiet period.
    FlapSettled,
}

/// What the control plane must do; returned in the order the engine decided them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new incident (DETECTED); not yet decided, so not yet a work order.
    Open {
        incident: IncidentId,
        fingerprint: String,
        kind: IncidentKind,
        severity: Severity,
        category: Category,
        subject: Subject,
        /// The subject's division, for routing; `None` for an agent the inventory lacks.
        division: Option<DivisionCode>,
        title: String,
        at: Millis,
        /// The previous incident of this fingerprint, if it resolved within the reopen
        /// window: reopen its work order instead of cutting a new one.
        recurrence_of: Option<IncidentId>,
    },
    /// The incident is its own cause and its severity dispatches: make it a work order.
    Dispatch { incident: IncidentId },
    /// The incident is explained by `cause`: suppress it under the cause's work order.
    LinkSymptom {
        symptom: IncidentId,
        cause: IncidentId,
    },
    /// A former symptom whose cause resolved while it did not: it now stands on its own
    /// (a `Dispatch` follows if it dispatches and was never dispatched).
    Promote { symptom: IncidentId },
    /// The incident is flapping and is held open until its source stays quiet.
    Flapping { incident: IncidentId },
    /// The incident is over; `dispatched` says whether it ever became a work order.
    Resolve {
        incident: IncidentId,
        reason: ResolveReason,
        at: Millis,
        dispatched: bool,
    },
}

/// Where an open incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for its hold to end before it is decided.
    Held { until: Millis },
    /// Behind an uplink that is down but raised nothing; decided again every tick.
    Waiting,
    /// Decided: it stands on its own.
    Active,
    /// Decided: a symptom of `cause` (which is never itself a symptom).
    Symptom { cause: IncidentId },
}

/// An open incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    pub fingerprint: String,
    pub kind: IncidentKind,
    pub subject: Subject,
    pub division: Option<DivisionCode>,
    pub severity: Severity,
    pub category: Category,
    pub title: String,
    pub opened_at: Millis,
    pub phase: Phase,
    /// Whether its source is firing now (a flapping incident stays open while clear).
    pub firing: bool,
    /// When its source last cleared, while it is held open as flapping.
    pub cleared_at: Option<Millis>,
    pub dispatched: bool,
    pub flapping: bool,
    /// It has been a symptom; deciding that it stands alone is a promotion.
    pub was_symptom: bool,
    pub symptoms: BTreeSet<IncidentId>,
    pub recurrence_of: Option<IncidentId>,
}

/// Why a down agent raised nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Silence {
    /// Lost during the start-up grace before reconnecting; raises at the grace's end.
    Grace,
    /// A terminal lost in off-hours; raises nothing for this outage.
    OffHours,
}

/// What the engine remembers of an agent (persisted per agent, see [`Changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFacts {
    offline_since: Option<Millis>,
    silence: Option<Silence>,
    seen_since_start: bool,
}

/// What the engine remembers of a fingerprint between its incidents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintHistory {
    last_incident: Option<IncidentId>,
    last_resolved_at: Option<Millis>,
    /// Times of the re-fires inside the flap window.
    refires: Vec<Millis>,
}

/// The shape of a new incident.
struct Spec {
    kind: IncidentKind,
    subject: Subject,
    division: Option<DivisionCode>,
    severity: Severity,
    category: Category,
    title: String,
}

/// How an incident is decided at the end of its hold.
enum Verdict {
    Symptom(IncidentId),
    Wait,
    Own,
}

/// The incident engine and its whole state. Serde persists it whole; a caller that stores it
/// after every step persists only what changed instead ([`IncidentEngine::take_changes`],
/// rebuilt by [`IncidentEngine::from_parts`]), so a step costs what it did, not the fleet size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentEngine {
    rules: IncidentRules,
    started_at: Millis,
    next_id: IncidentId,
    agents: BTreeMap<AgentId, AgentFacts>,
    incidents: BTreeMap<IncidentId, Incident>,
    open_by_fingerprint: BTreeMap<String, IncidentId>,
    history: BTreeMap<String, FingerprintHistory>,
    /// Keys changed since the last `take_changes`: bookkeeping, not state.
    #[serde(skip)]
    touched: Touched,
}

/// Keys changed since the last [`IncidentEngine::take_changes`].
#[derive(Debug, Clone, Default)]
struct Touched {
    header: bool,
    agents: BTreeSet<AgentId>,
    incidents: BTreeSet<IncidentId>,
    history: BTreeSet<String>,
    /// No agent or incident changed since mass outages were last evaluated (kept across
    /// `take_changes`): a tick with nothing new and no hold ending skips the walk over the
    /// fleet. Topology changes alone wait for the next change.
    settled: bool,
}

impl Touched {
    fn agent(&mut self, agent: &str) {
        self.settled = false;
        if !self.agents.contains(agent) {
            self.agents.insert(agent.to_owned());
        }
    }

    fn incident(&mut self, id: IncidentId) {
        self.settled = false;
        self.incidents.insert(id);
    }

    fn is_empty(&self) -> bool {
        !self.header
            && self.agents.is_empty()
            && self.incidents.is_empty()
            && self.history.is_empty()
    }
}

/// Equal whatever was touched: two engines are equal when their state is.
impl PartialEq for Touched {
    fn eq(&self, _: &Touched) -> bool {
        true
    }
}

impl Eq for Touched {}

/// The engine's scalar state: rules, start time and id counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineHeader {
    pub rules: IncidentRules,
    pub started_at: Millis,
    pub next_id: IncidentId,
}

/// The state that changed since the last [`IncidentEngine::take_changes`], key by key: `None`
/// means the key is gone. Written over the previous parts, it gives the engine's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// Always present (it is small).
    pub header: EngineHeader,
    pub agents: Vec<(AgentId, Option<AgentFacts>)>,
    pub incidents: Vec<(IncidentId, Option<Incident>)>,
    pub history: Vec<(String, Option<FingerprintHistory>)>,
}

fn agent_lost_key(agent: &str) -> String {
    format!("agent-lost:{agent}")
}

fn link_key(agent: &str) -> String {
    format!("link:{agent}")
}

fn mass_outage_key(division: &str) -> String {
    format!("mass-outage:{division}")
}

fn finding_key(fingerprint: &str) -> String {
    format!("finding:{fingerprint}")
}

impl IncidentEngine {
    /// A fresh engine for a control plane that started at `started_at`.
    pub fn new(rules: IncidentRules, started_at: Millis) -> Result<IncidentEngine, RulesError> {
        rules.validate()?;
        Ok(IncidentEngine {
            rules,
            started_at,
            next_id: 1,
            agents: BTreeMap::new(),
            incidents: BTreeMap::new(),
            open_by_fingerprint: BTreeMap::new(),
            history: BTreeMap::new(),
            touched: Touched {
                header: true,
                ..Touched::default()
            },
        })
    }

    /// Rebuilds an engine from its persisted parts (the last of each key's [`Changes`]).
    pub fn from_parts(
        header: EngineHeader,
        agents: impl IntoIterator<Item = (AgentId, AgentFacts)>,
        incidents: impl IntoIterator<Item = Incident>,
        history: impl IntoIterator<Item = (String, FingerprintHistory)>,
    ) -> Result<IncidentEngine, RulesError> {
        header.rules.validate()?;
        let incidents: BTreeMap<IncidentId, Incident> = incidents
            .into_iter()
            .map(|incident| (incident.id, incident))
            .collect();
        // Every incident held is open, and a fingerprint has at most one open incident.
        let open_by_fingerprint = incidents
            .values()
            .map(|incident| (incident.fingerprint.clone(), incident.id))
            .collect();
        Ok(IncidentEngine {
            rules: header.rules,
            started_at: header.started_at,
            next_id: header.next_id,
            agents: agents.into_iter().collect(),
            incidents,
            open_by_fingerprint,
            history: history.into_iter().collect(),
            touched: Touched::default(),
        })
    }

    /// Whether any state changed since the last [`IncidentEngine::take_changes`].
    pub fn has_changes(&self) -> bool {
        !self.touched.is_empty()
    }

    /// The state changed since the last call (or since `new`/`from_parts`), and forgets it.
    pub fn take_changes(&mut self) -> Changes {
        let settled = self.touched.settled;
        let touched = std::mem::replace(
            &mut self.touched,
            Touched {
                settled,
                ..Touched::default()
            },
        );
        Changes {
            header: self.header(),
            agents: touched
                .agents
                .into_iter()
                .map(|agent| {
                    let facts = self.agents.get(&agent).cloned();
                    (agent, facts)
                })
                .collect(),
            incidents: touched
                .incidents
                .into_iter()
                .map(|id| (id, self.incidents.get(&id).cloned()))
                .collect(),
            history: touched
                .history
                .into_iter()
                .map(|key| {
                    let history = self.history.get(&key).cloned();
                    (key, history)
                })
                .collect(),
        }
    }

    /// Counts the whole state as changed, so the next `take_changes` returns all of it.
    pub fn mark_all_changed(&mut self) {
        self.touched = Touched {
            header: true,
            agents: self.agents.keys().cloned().collect(),
            incidents: self.incidents.keys().copied().collect(),
            history: self.history.keys().cloned().collect(),
            settled: false,
        };
    }

    fn header(&self) -> EngineHeader {
        EngineHeader {
            rules: self.rules.clone(),
            started_at: self.started_at,
            next_id: self.next_id,
        }
    }

    /// Tells a restored engine that the control plane (re)started at `now`: the grace period
    /// starts again and no agent counts as reconnected yet.
    pub fn restarted(&mut self, now: Millis) {
        self.started_at = now;
        self.touched.header = true;
        for (agent, facts) in self.agents.iter_mut() {
            if facts.seen_since_start {
                facts.seen_since_start = false;
                self.touched.agent(agent);
            }
        }
    }

    /// Replaces the rules (from the file or the API); open incidents keep their decisions.
    pub fn set_rules(&mut self, rules: IncidentRules) -> Result<(), RulesError> {
        rules.validate()?;
        self.rules = rules;
        self.touched.header = true;
        self.touched.settled = false;
        Ok(())
    }

    pub fn rules(&self) -> &IncidentRules {
        &self.rules
    }

    /// An open incident.
    pub fn incident(&self, id: IncidentId) -> Option<&Incident> {
        self.incidents.get(&id)
    }

    /// All open incidents, by id.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    /// The open incident of a fingerprint as shown in `Action::Open` (`agent-lost:a1`, …).
    pub fn open_incident_for(&self, fingerprint: &str) -> Option<&Incident> {
        self.open_by_fingerprint
            .get(fingerprint)
            .and_then(|id| self.incidents.get(id))
    }

    /// When `tick` must next be called even if no event arrives; `None`: only after events.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let holds = self
            .incidents
            .values()
            .filter_map(|incident| match incident.phase {
                Phase::Held { until } => Some(until),
                _ => None,
            });
        let quiet = self.incidents.values().filter_map(|incident| {
            let cleared = incident.cleared_at.filter(|_| incident.flapping)?;
            Some(cleared.saturating_add(self.rules.flap_quiet()))
        });
        let grace = self
            .agents
            .values()
            .any(|facts| facts.silence == Some(Silence::Grace))
            .then(|| self.grace_end());
        holds.chain(quiet).chain(grace).min()
    }

    /// Feeds one observation. Returns `Open` and `Resolve` decided on arrival; everything that
    /// waits for a hold is decided by [`IncidentEngine::tick`].
    pub fn handle_event(
        &mut self,
        event: Event,
        topology: &impl Topology,
    ) -> Result<Vec<Action>, EventError> {
        let mut actions = Vec::new();
        match event {
            Event::AgentLost { agent, at } => {
                non_empty_agent(&agent)?;
                self.agent_lost(agent, at, topology, &mut actions);
            }
            Event::AgentBack { agent, at } => {
                non_empty_agent(&agent)?;
                let started_at = self.started_at;
                let facts = self.agents.entry(agent.clone()).or_default();
                self.touched.agent(&agent);
                if facts.offline_since.is_some_and(|since| at < since) {
                    return Ok(actions); // a stale report from before the loss
                }
                facts.offline_since = None;
                facts.silence = None;
                if at >= started_at {
                    facts.seen_since_start = true;
                }
                self.clear(&agent_lost_key(&agent), at, &mut actions);
            }
            Event::LinkDegraded { agent, at, detail } => {
                non_empty_agent(&agent)?;
                let spec = Spec {
                    kind: IncidentKind::Link,
                    division: topology.division(&agent),
                    severity: self.rules.link_degraded_severity,
                    category: Category::Network,
                    title: format!("link of agent {agent} degraded: {detail}"),
                    subject: Subject::Agent(agent.clone()),
                };
                let hold = self.rules.hold_agent();
                self.fire(link_key(&agent), spec, at, hold, &mut actions);
            }
            Event::LinkRecovered { agent, at, .. } => {
                non_empty_agent(&agent)?;
                self.clear(&link_key(&agent), at, &mut actions);
            }
            Event::Finding(finding) => {
                if finding.fingerprint.is_empty() {
                    return Err(EventError::EmptyFingerprint);
                }
                let division = match &finding.subject {
                    Subject::Agent(agent) => {
                        non_empty_agent(agent)?;
                        topology.division(agent)
                    }
                    Subject::Division(code) if code.is_empty() => {
                        return Err(EventError::EmptyDivision(finding.fingerprint));
                    }
                    Subject::Division(code) => Some(code.clone()),
                };
                let key = finding_key(&finding.fingerprint);
                if finding.firing {
                    let spec = Spec {
                        kind: IncidentKind::Finding,
                        subject: finding.subject,
                        division,
                        severity: finding.severity,
                        category: finding.category,
                        title: finding.title,
                    };
                    let hold = self.rules.hold_finding();
                    self.fire(key, spec, finding.at, hold, &mut actions);
                } else {
                    self.clear(&key, finding.at, &mut actions);
                }
            }
        }
        Ok(actions)
    }

    /// Advances the engine to `now`: ends the grace period, raises and clears mass outages,
    /// settles flapping incidents, and decides every incident whose hold has ended.
    pub fn tick(&mut self, now: Millis, topology: &impl Topology) -> Vec<Action> {
        let mut actions = Vec::new();
        self.end_grace(now, topology, &mut actions);
        // A mass outage is raised only when the hold of a fresh agent-lost incident ends, so
        // that it too is decided once every loss of the burst has arrived (see the module
        // docs); a raised one is checked for clearing on every tick.
        let agent_hold_ended = self.incidents.values().any(|incident| {
            incident.kind == IncidentKind::AgentLost
                && !incident.was_symptom
                && matches!(incident.phase, Phase::Held { until } if until <= now)
        });
        if agent_hold_ended || !self.touched.settled {
            // Settled before: whatever the evaluation itself changes is looked at again.
            self.touched.settled = true;
            self.evaluate_mass_outages(now, agent_hold_ended, topology, &mut actions);
        }
        self.settle_flapping(now, &mut actions);

        let mut due: Vec<(Millis, IncidentId)> = self
            .incidents
            .values()
            .filter_map(|incident| match incident.phase {
                Phase::Held { until } if until <= now => Some((until, incident.id)),
                _ => None,
            })
            .collect();
        due.sort_unstable();
        for (until, id) in due {
            // An earlier decision in this loop may have linked it already.
            let still_due = self
                .incidents
                .get(&id)
                .is_some_and(|incident| incident.phase == Phase::Held { until });
            if still_due {
                self.decide(id, until, topology, &mut actions);
            }
        }
        let waiting: Vec<IncidentId> = self
            .incidents
            .values()
            .filter(|incident| incident.phase == Phase::Waiting)
            .map(|incident| incident.id)
            .collect();
        for id in waiting {
            if self
                .incidents
                .get(&id)
                .is_some_and(|incident| incident.phase == Phase::Waiting)
            {
                self.decide(id, now, topology, &mut actions);
            }
        }
        self.prune_history(now);
        actions
    }

    fn grace_end(&self) -> Millis {
        self.started_at.saturating_add(self.rules.grace())
    }

    fn agent_lost(
        &mut self,
        agent: AgentId,
        at: Millis,
        topology: &impl Topology,
        actions: &mut Vec<Action>,
    ) {
        let grace_end = self.grace_end();
        let role = topology.role(&agent);
        let off_hours = role == AgentRole::Terminal && self.rules.is_terminal_off_hours(at);
        let facts = self.agents.entry(agent.clone()).or_default();
        if facts.offline_since.is_some() {
            return; // already down: a repeated report
        }
        facts.offline_since = Some(at);
        self.touched.agent(&agent);
        facts.silence = if !facts.seen_since_start && at < grace_end {
            Some(Silence::Grace)
        } else if off_hours {
            Some(Silence::OffHours)
        } else {
            None
        };
        if facts.silence.is_none() {
            self.raise_agent_lost(agent, at, role, topology, actions);
        }
    }

    fn raise_agent_lost(
        &mut self,
        agent: AgentId,
        at: Millis,
        role: AgentRole,
        topology: &impl Topology,
        actions: &mut Vec<Action>,
    ) {
        let (severity, category, what) = match role {
            AgentRole::Gateway => (
                self.rules.gateway_lost_severity,
                Category::Network,
                "gateway",
            ),
            AgentRole::Server => (self.rules.agent_lost_severity, Category::Host, "server"),
            AgentRole::Terminal => (self.rules.agent_lost_severity, Category::Host, "terminal"),
        };
        let spec = Spec {
            kind: IncidentKind::AgentLost,
            division: topology.division(&agent),
            severity,
            category,
            title: format!("{what} agent {agent} lost"),
            subject: Subject::Agent(agent.clone()),
        };
        let hold = self.rules.hold_agent();
        self.fire(agent_lost_key(&agent), spec, at, hold, actions);
    }

    /// A source fired: the open incident of `key` absorbs it, else a new incident opens.
    fn fire(
        &mut self,
        key: String,
        spec: Spec,
        at: Millis,
        hold: Millis,
        actions: &mut Vec<Action>,
    ) {
        if let Some(id) = self.open_by_fingerprint.get(&key) {
            if let Some(incident) = incident_mut(&mut self.incidents, &mut self.touched, *id) {
                incident.firing = true;
                incident.cleared_at = None;
            }
            return;
        }
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let flap_window = self.rules.flap_window();
        let reopen_window = self.rules.reopen_window();
        self.touched.history.insert(key.clone());
        let history = self.history.entry(key.clone()).or_default();
        let mut recurrence_of = None;
        if let (Some(previous), Some(resolved_at)) =
            (history.last_incident, history.last_resolved_at)
        {
            let since = at.saturating_sub(resolved_at);
            if since <= reopen_window {
                recurrence_of = Some(previous);
            }
            if since <= flap_window {
                history.refires.push(at);
            }
        }
        history
            .refires
            .retain(|&refire| at.saturating_sub(refire) <= flap_window);
        let flapping = history.refires.len() > self.rules.flap_max_refires as usize;
        history.last_incident = Some(id);
        actions.push(Action::Open {
            incident: id,
            fingerprint: key.clone(),
            kind: spec.kind,
            severity: spec.severity,
            category: spec.category,
            subject: spec.subject.clone(),
            division: spec.division.clone(),
            title: spec.title.clone(),
            at,
            recurrence_of,
        });
        if flapping {
            actions.push(Action::Flapping { incident: id });
        }
        self.touched.header = true;
        self.touched.incident(id);
        self.incidents.insert(
            id,
            Incident {
                id,
                fingerprint: key.clone(),
                kind: spec.kind,
                subject: spec.subject,
                division: spec.division,
                severity: spec.severity,
                category: spec.category,
                title: spec.title,
                opened_at: at,
                phase: Phase::Held {
                    until: at.saturating_add(hold),
                },
                firing: true,
                cleared_at: None,
                dispatched: false,
                flapping,
                was_symptom: false,
                symptoms: BTreeSet::new(),
                recurrence_of,
            },
        );
        self.open_by_fingerprint.insert(key, id);
    }

    /// A source cleared: its incident resolves, unless it is flapping and is held open.
    fn clear(&mut self, key: &str, at: Millis, actions: &mut Vec<Action>) {
        let Some(&id) = self.open_by_fingerprint.get(key) else {
            return;
        };
        let Some(incident) = incident_mut(&mut self.incidents, &mut self.touched, id) else {
            return;
        };
        incident.firing = false;
        if incident.flapping {
            incident.cleared_at = Some(at);
            return;
        }
        self.resolve(id, at, ResolveReason::Cleared, actions);
    }

    fn resolve(
        &mut self,
        id: IncidentId,
        at: Millis,
        reason: ResolveReason,
        actions: &mut Vec<Action>,
    ) {
        let Some(incident) = self.incidents.remove(&id) else {
            return;
        };
        self.touched.incident(id);
        if self.open_by_fingerprint.get(&incident.fingerprint) == Some(&id) {
            self.open_by_fingerprint.remove(&incident.fingerprint);
        }
        self.touched.history.insert(incident.fingerprint.clone());
        let history = self
            .history
            .entry(incident.fingerprint.clone())
            .or_default();
        history.last_resolved_at = Some(at);
        if reason == ResolveReason::FlapSettled {
            history.refires.clear();
        }
        if let Phase::Symptom { cause } = incident.phase
            && let Some(cause) = incident_mut(&mut self.incidents, &mut self.touched, cause)
        {
            cause.symptoms.remove(&id);
        }
        actions.push(Action::Resolve {
            incident: id,
            reason,
            at,
            dispatched: incident.dispatched,
        });
        // Every symptom is held again and re-checked when the hold ends.
        for symptom in incident.symptoms {
            let hold = self.hold_for(symptom);
            if let Some(symptom) = incident_mut(&mut self.incidents, &mut self.touched, symptom) {
                symptom.phase = Phase::Held {
                    until: at.saturating_add(hold),
                };
            }
        }
    }

    fn hold_for(&self, id: IncidentId) -> Millis {
        match self.incidents.get(&id).map(|incident| incident.kind) {
            Some(IncidentKind::Finding) => self.rules.hold_finding(),
            _ => self.rules.hold_agent(),
        }
    }

    /// Decides an incident whose hold ended at `at` (or a waiting one, at the tick's time).
    fn decide(
        &mut self,
        id: IncidentId,
        at: Millis,
        topology: &impl Topology,
        actions: &mut Vec<Action>,
    ) {
        match self.verdict(id, at, topology) {
            Verdict::Symptom(cause) => self.link(id, cause, actions),
            Verdict::Wait => {
                if let Some(incident) = incident_mut(&mut self.incidents, &mut self.touched, id) {
                    incident.phase = Phase::Waiting;
                }
            }
            Verdict::Own => self.stand_alone(id, actions),
        }
    }

    fn stand_alone(&mut self, id: IncidentId, actions: &mut Vec<Action>) {
        let Some(incident) = incident_mut(&mut self.incidents, &mut self.touched, id) else {
            return;
        };
        incident.phase = Phase::Active;
        if incident.was_symptom {
            incident.was_symptom = false;
            actions.push(Action::Promote { symptom: id });
        }
        if !incident.dispatched && incident.severity.dispatches() {
            incident.dispatched = true;
            actions.push(Action::Dispatch { incident: id });
        }
    }

    fn verdict(&self, id: IncidentId, at: Millis, topology: &impl Topology) -> Verdict {
        let Some(incident) = self.incidents.get(&id) else {
            return Verdict::Own;
        };
        match (&incident.kind, &incident.subject) {
            (IncidentKind::MassOutage, Subject::Division(division)) => {
                match self.mass_outage_above(division, topology) {
                    Some(cause) => Verdict::Symptom(cause),
                    None => Verdict::Own,
                }
            }
            (IncidentKind::AgentLost, Subject::Agent(agent)) => {
                match self.down_chain_top(topology.uplink(agent), at, topology) {
                    Some(top) => self.verdict_behind(&top, id),
                    None => match self.mass_outage_covering(agent, topology) {
                        Some(cause) => Verdict::Symptom(cause),
                        None => Verdict::Own,
                    },
                }
            }
            (IncidentKind::Link | IncidentKind::Finding, Subject::Agent(agent))
                if incident.category != Category::Security =>
            {
                match self.down_chain_top(Some(agent.clone()), at, topology) {
                    Some(top) => self.verdict_behind(&top, id),
                    None => match self.down_chain_top(topology.uplink(agent), at, topology) {
                        Some(top) => self.verdict_behind(&top, id),
                        None => Verdict::Own,
                    },
                }
            }
            _ => Verdict::Own,
        }
    }

    /// The verdict for an incident explained by the down agent `top`.
    fn verdict_behind(&self, top: &str, id: IncidentId) -> Verdict {
        match self.open_by_fingerprint.get(&agent_lost_key(top)) {
            Some(&cause) if self.top_cause(cause) != id => Verdict::Symptom(cause),
            Some(_) => Verdict::Own,
            None => Verdict::Wait,
        }
    }

    /// Walks the chain of down agents from `start` up through uplinks; returns the topmost
    /// agent that was down at `at` (`None` if `start` itself was up).
    fn down_chain_top(
        &self,
        start: Option<AgentId>,
        at: Millis,
        topology: &impl Topology,
    ) -> Option<AgentId> {
        let mut top = None;
        let mut current = start;
        let mut visited = BTreeSet::new();
        while let Some(agent) = current {
            if visited.len() >= MAX_DEPTH
                || !visited.insert(agent.clone())
                || !self.down_at(&agent, at)
            {
                break;
            }
            current = topology.uplink(&agent);
            top = Some(agent);
        }
        top
    }

    fn down_at(&self, agent: &str, at: Millis) -> bool {
        self.agents
            .get(agent)
            .and_then(|facts| facts.offline_since)
            .is_some_and(|since| since <= at)
    }

    /// The cause at the top of `id`'s chain of links.
    fn top_cause(&self, id: IncidentId) -> IncidentId {
        let mut current = id;
        for _ in 0..MAX_DEPTH {
            match self.incidents.get(&current).map(|incident| incident.phase) {
                Some(Phase::Symptom { cause }) => current = cause,
                _ => break,
            }
        }
        current
    }

    /// Links `id` under the top cause of `cause`; `id`'s own symptoms move with it.
    fn link(&mut self, id: IncidentId, cause: IncidentId, actions: &mut Vec<Action>) {
        let cause = self.top_cause(cause);
        if cause == id || !self.incidents.contains_key(&cause) {
            self.stand_alone(id, actions);
            return;
        }
        let Some(incident) = incident_mut(&mut self.incidents, &mut self.touched, id) else {
            return;
        };
        let previous = std::mem::replace(&mut incident.phase, Phase::Symptom { cause });
        incident.was_symptom = true;
        let moved = std::mem::take(&mut incident.symptoms);
        if let Phase::Symptom { cause: old } = previous
            && let Some(old) = incident_mut(&mut self.incidents, &mut self.touched, old)
        {
            old.symptoms.remove(&id);
        }
        // Already under this cause: nothing to announce.
        let unchanged = matches!(previous, Phase::Symptom { cause: old } if old == cause);
        if !unchanged {
            actions.push(Action::LinkSymptom { symptom: id, cause });
        }
        let mut linked = vec![id];
        for symptom in moved {
            if let Some(incident) = incident_mut(&mut self.incidents, &mut self.touched, symptom) {
                incident.phase = Phase::Symptom { cause };
                incident.was_symptom = true;
                linked.push(symptom);
                actions.push(Action::LinkSymptom { symptom, cause });
            }
        }
        if let Some(cause) = incident_mut(&mut self.incidents, &mut self.touched, cause) {
            cause.symptoms.extend(linked);
        }
    }

    /// Opens, at the end of the grace period, the incidents of agents still down that the
    /// grace silenced.
    fn end_grace(&mut self, now: Millis, topology: &impl Topology, actions: &mut Vec<Action>) {
        let grace_end = self.grace_end();
        if now < grace_end {
            return;
        }
        let silenced: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, facts)| facts.silence == Some(Silence::Grace))
            .map(|(agent, _)| agent.clone())
            .collect();
        for agent in silenced {
            if let Some(facts) = self.agents.get_mut(&agent) {
                facts.silence = None;
                self.touched.agent(&agent);
            }
            let role = topology.role(&agent);
            self.raise_agent_lost(agent, grace_end, role, topology, actions);
        }
    }

    /// Agents down on their own account: down, not silenced, not behind a down uplink, and
    /// not a former symptom still in its re-check hold (its uplink has just returned and it
    /// is probably reconnecting).
    fn down_on_their_own(&self, topology: &impl Topology) -> Vec<AgentId> {
        self.agents
            .iter()
            .filter(|(_, facts)| facts.offline_since.is_some() && facts.silence.is_none())
            .filter(|(agent, _)| {
                topology
                    .uplink(agent)
                    .is_none_or(|uplink| !self.is_down(&uplink))
            })
            .filter(|(agent, _)| {
                self.open_incident_for(&agent_lost_key(agent))
                    .is_none_or(|incident| {
                        !(incident.was_symptom && matches!(incident.phase, Phase::Held { .. }))
                    })
            })
            .map(|(agent, _)| agent.clone())
            .collect()
    }

    fn is_down(&self, agent: &str) -> bool {
        self.agents
            .get(agent)
            .is_some_and(|facts| facts.offline_since.is_some())
    }

    /// The division of `agent` and all its ancestors, nearest first.
    fn ancestry(division: Option<DivisionCode>, topology: &impl Topology) -> Vec<DivisionCode> {
        let mut chain: Vec<DivisionCode> = Vec::new();
        let mut current = division;
        while let Some(code) = current {
            if chain.len() >= MAX_DEPTH || chain.contains(&code) {
                break;
            }
            current = topology.parent_division(&code);
            chain.push(code);
        }
        chain
    }

    /// The open mass outage on `agent`'s division or one above it.
    fn mass_outage_covering(&self, agent: &str, topology: &impl Topology) -> Option<IncidentId> {
        Self::ancestry(topology.division(agent), topology)
            .iter()
            .find_map(|code| {
                self.open_by_fingerprint
                    .get(&mass_outage_key(code))
                    .copied()
            })
    }

    /// The open mass outage on a division strictly above `division`.
    fn mass_outage_above(&self, division: &str, topology: &impl Topology) -> Option<IncidentId> {
        Self::ancestry(topology.parent_division(division), topology)
            .iter()
            .find_map(|code| {
                self.open_by_fingerprint
                    .get(&mass_outage_key(code))
                    .copied()
            })
    }

    fn evaluate_mass_outages(
        &mut self,
        now: Millis,
        may_raise: bool,
        topology: &impl Topology,
        actions: &mut Vec<Action>,
    ) {
        let down = self.down_on_their_own(topology);
        let mut down_per_division: BTreeMap<DivisionCode, usize> = BTreeMap::new();
        // Which agents are down under each division matters only when one is raised.
        let mut agents_per_division: BTreeMap<DivisionCode, Vec<AgentId>> = BTreeMap::new();
        for agent in &down {
            for code in Self::ancestry(topology.division(agent), topology) {
                if may_raise {
                    agents_per_division
                        .entry(code.clone())
                        .or_default()
                        .push(agent.clone());
                }
                *down_per_division.entry(code).or_default() += 1;
            }
        }
        let share_above = |count: usize, code: &str, percent: u8| {
            let total = topology.agents_in(code) as u128;
            total > 0 && (count as u128) * 100 > total * u128::from(percent)
        };

        // Clear the open ones whose share has fallen to the clear threshold.
        let open: Vec<(DivisionCode, IncidentId)> = self
            .incidents
            .values()
            .filter(|incident| incident.kind == IncidentKind::MassOutage && incident.firing)
            .filter_map(|incident| match &incident.subject {
                Subject::Division(code) => Some((code.clone(), incident.id)),
                Subject::Agent(_) => None,
            })
            .collect();
        for (code, _) in open {
            let count = down_per_division.get(&code).copied().unwrap_or(0);
            if !share_above(count, &code, self.rules.mass_outage_clear_percent) {
                self.clear(&mass_outage_key(&code), now, actions);
            }
        }

        if !may_raise {
            return;
        }
        // Raise the topmost qualifying divisions not already covered.
        let qualifies = |code: &str| {
            let count = down_per_division.get(code).copied().unwrap_or(0);
            count >= self.rules.mass_outage_min_agents
                && share_above(count, code, self.rules.mass_outage_percent)
        };
        let mut raise: Vec<DivisionCode> = Vec::new();
        let mut absorb: Vec<String> = Vec::new();
        for code in down_per_division.keys() {
            if !qualifies(code) {
                continue;
            }
            let key = mass_outage_key(code);
            if let Some(incident) = self.open_incident_for(&key)
                && !incident.firing
            {
                // Held open as flapping and down again: firing again, nothing new.
                absorb.push(key);
                continue;
            }
            let ancestry = Self::ancestry(Some(code.clone()), topology);
            let covered = ancestry.iter().any(|ancestor| {
                self.open_by_fingerprint
                    .contains_key(&mass_outage_key(ancestor))
            });
            let higher_qualifies = ancestry.iter().skip(1).any(|ancestor| qualifies(ancestor));
            if !covered && !higher_qualifies {
                raise.push(code.clone());
            }
        }
        for key in absorb {
            if let Some(&id) = self.open_by_fingerprint.get(&key)
                && let Some(incident) = incident_mut(&mut self.incidents, &mut self.touched, id)
            {
                incident.firing = true;
                incident.cleared_at = None;
            }
        }
        for code in raise {
            let count = down_per_division.get(&code).copied().unwrap_or(0);
            let total = topology.agents_in(&code);
            let spec = Spec {
                kind: IncidentKind::MassOutage,
                subject: Subject::Division(code.clone()),
                division: Some(code.clone()),
                severity: self.rules.mass_outage_severity,
                category: Category::Network,
                title: format!("mass outage in {code}: {count} of {total} agents down"),
            };
            let key = mass_outage_key(&code);
            let hold = self.rules.hold_agent();
            self.fire(key.clone(), spec, now, hold, actions);
            let Some(&outage) = self.open_by_fingerprint.get(&key) else {
                continue;
            };
            // Mass outages below it, then the agents down in it, become its symptoms.
            let below: Vec<IncidentId> = self
                .incidents
                .values()
                .filter(|incident| {
                    incident.kind == IncidentKind::MassOutage && incident.id != outage
                })
                .filter(|incident| match &incident.subject {
                    Subject::Division(other) => {
                        Self::ancestry(topology.parent_division(other), topology).contains(&code)
                    }
                    Subject::Agent(_) => false,
                })
                .map(|incident| incident.id)
                .collect();
            for id in below {
                self.link(id, outage, actions);
            }
            let members: Vec<IncidentId> = agents_per_division
                .get(&code)
                .into_iter()
                .flatten()
                .filter_map(|agent| {
                    self.open_by_fingerprint
                        .get(&agent_lost_key(agent))
                        .copied()
                })
                .collect();
            for id in members {
                if self.top_cause(id) != outage {
                    self.link(id, outage, actions);
                }
            }
        }
    }

    fn settle_flapping(&mut self, now: Millis, actions: &mut Vec<Action>) {
        let quiet = self.rules.flap_quiet();
        let settled: Vec<(IncidentId, Millis)> = self
            .incidents
            .values()
            .filter(|incident| incident.flapping && !incident.firing)
            .filter_map(|incident| {
                let settles_at = incident.cleared_at?.saturating_add(quiet);
                (settles_at <= now).then_some((incident.id, settles_at))
            })
            .collect();
        for (id, at) in settled {
            self.resolve(id, at, ResolveReason::FlapSettled, actions);
        }
    }

    /// Forgets fingerprints with nothing open and nothing recent enough to matter.
    fn prune_history(&mut self, now: Millis) {
        let keep_for = self.rules.flap_window().max(self.rules.reopen_window());
        let open = &self.open_by_fingerprint;
        let touched = &mut self.touched.history;
        self.history.retain(|key, history| {
            let keep = open.contains_key(key)
                || history
                    .last_resolved_at
                    .is_some_and(|resolved| now.saturating_sub(resolved) <= keep_for);
            if !keep {
                touched.insert(key.clone());
            }
            keep
        });
    }
}

/// `incidents[id]` for changing, marked as touched.
fn incident_mut<'a>(
    incidents: &'a mut BTreeMap<IncidentId, Incident>,
    touched: &mut Touched,
    id: IncidentId,
) -> Option<&'a mut Incident> {
    let incident = incidents.get_mut(&id)?;
    touched.incident(id);
    Some(incident)
}

fn non_empty_agent(agent: &str) -> Result<(), EventError> {
    if agent.is_empty() {
        Err(EventError::EmptyAgent)
    } else {
        Ok(())
    }
}
