//! Operator views and actions of 管理在线 and 服务在线: work-order KPIs per division and
//! period, maintenance windows, and the service catalog with its monthly figures. Shared by the
//! API (`crate::api_service`) and the CLI (`crate::cli_service`) like the rest of [`Admin`];
//! every change is audited.
//!
//! `bagui-ops` computes ([`bagui_ops::kpi`], [`bagui_ops::maintenance`],
//! [`bagui_ops::services`]); this module reads what they need from the store.
//!
//! Keys of the `ops` tree added here (see `crate::dispatch` for the others):
//!
//! | key          | value                                                         |
//! |--------------|---------------------------------------------------------------|
//! | `mw/<id>`    | [`MaintenanceWindow`] not yet expired                         |
//! | `mwx/<id>`   | [`MaintenanceWindow`] expired (moved when listing) or ended early by `remove`; kept for the figures of past periods |
//! | `svc/<id>`   | [`Service`]                                                   |
//!
//! # Agent up time
//!
//! [`bagui_ops::services`] counts a service down while one of its agents is outside its up
//! intervals. The control plane keeps no history of agent sessions (only the live sessions and
//! each agent's last contact), so the service figures treat every agent of a service as up for
//! the whole period and rest on the probe history alone; every report says so in its `notes`.
//! A service should therefore name at least one probe: one with agents only always shows 100 %.

use std::collections::HashMap;

use bagui_ops::kpi::{self, Kpi, KpiSummary};
use bagui_ops::maintenance::{self, DivisionOf, MaintenanceWindow, Target};
use bagui_ops::model::{DivisionCode, Millis};
use bagui_ops::services::{
    self, AgentUptime, ProbeResult, Service, ServiceFigures, ServiceSummary, Timeline,
};
use bagui_ops::workorder::Transition;
use bagui_protocol::units;
use serde::{Deserialize, Serialize};

use crate::admin::{Admin, AdminError};
use crate::clock::format_rfc3339;
use crate::divisions::Divisions;
use crate::store::{OpsBatch, Store};

/// The transition log of work orders (written by `crate::dispatch`).
const TRANSITION_PREFIX: &[u8] = b"tr/";
/// Maintenance windows in force or still to come.
const MAINTENANCE_PREFIX: &[u8] = b"mw/";
/// Expired maintenance windows, kept for the figures of past periods.
const EXPIRED_MAINTENANCE_PREFIX: &[u8] = b"mwx/";
/// The service catalog.
const SERVICE_PREFIX: &[u8] = b"svc/";
/// What the agent prefixes the check name of a pushed probe with (`bagui_agent::probes`).
const PUSHED_PROBE_PREFIX: &str = "pushed.";

fn key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

// ---------------------------------------------------------------------------------------------
// Views and requests
// ---------------------------------------------------------------------------------------------

/// One row of a KPI table: a team or a division.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiRow {
    /// Team id or division code.
    pub id: String,
    /// Team id again, or the division's name.
    pub name: String,
    /// Means and shares.
    pub kpi: KpiSummary,
    /// The sums and counts behind them (resolved and reopened orders, SLA judged and met …).
    pub counters: Kpi,
}

impl KpiRow {
    fn new(id: String, name: String, counters: Kpi) -> KpiRow {
        KpiRow {
            id,
            name,
            kpi: counters.summary(),
            counters,
        }
    }
}

/// `bagui-cp kpi` / `GET /api/v1/kpi`: the KPIs of the work orders of a division's subtree for
/// a CST calendar month, in total, per team and per division directly below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiView {
    pub division: String,
    pub division_path: String,
    /// `YYYY-MM`.
    pub period: String,
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, exclusive.
    pub to: String,
    pub total: KpiRow,
    /// Teams that acknowledged, resolved or held orders of the subtree in the period.
    pub teams: Vec<KpiRow>,
    /// Every division directly below, its orders rolled up from its own subtree.
    pub divisions: Vec<KpiRow>,
}

/// `bagui-cp maintenance add` / `POST /api/v1/maintenance`: exactly one of `agent` and
/// `division`; the start (`from`, RFC 3339 or `now`, default now) and either `until`
/// (RFC 3339) or `duration` (`2h`, `30m`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CreateMaintenance {
    pub agent: Option<String>,
    pub division: Option<String>,
    pub from: Option<String>,
    pub until: Option<String>,
    pub duration: Option<String>,
    pub reason: String,
}

/// A maintenance window as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceView {
    pub id: String,
    /// `agent` or `division`.
    pub target_kind: String,
    pub target: String,
    pub start_ms: Millis,
    pub end_ms: Millis,
    /// RFC 3339.
    pub start: String,
    /// RFC 3339; the window does not cover this instant.
    pub end: String,
    /// In force now.
    pub active: bool,
    pub reason: String,
    pub created_by: String,
}

impl MaintenanceView {
    fn new(window: &MaintenanceWindow, now: Millis) -> MaintenanceView {
        let (target_kind, target) = match &window.target {
            Target::Agent(agent) => ("agent", agent.clone()),
            Target::Division(code) => ("division", code.clone()),
        };
        MaintenanceView {
            id: window.id.clone(),
            target_kind: target_kind.into(),
            target,
            start_ms: window.start,
            end_ms: window.end,
            start: format_rfc3339(window.start),
            end: format_rfc3339(window.end),
            active: window.is_active_at(now),
            reason: window.reason.clone(),
            created_by: window.created_by.clone(),
        }
    }
}

/// One probe of a service report: which stored check it was read from and how many results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportProbe {
    /// `AGENT:PROBE` as the service names it.
    pub probe: String,
    /// The check name the results are stored under (`PROBE` or `pushed.PROBE`).
    pub check: String,
    /// Results within the period.
    pub results: u64,
}

/// `bagui-cp service report` / `GET /api/v1/services/{id}/report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub service: Service,
    /// `YYYY-MM`.
    pub period: String,
    pub from: String,
    pub to: String,
    pub summary: ServiceSummary,
    pub figures: ServiceFigures,
    pub probes: Vec<ReportProbe>,
    /// What the figures rest on and what they leave out.
    pub notes: Vec<String>,
}

/// `GET /api/v1/agents/{id}/availability`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentAvailabilityView {
    pub agent: String,
    pub division: String,
    pub period: String,
    /// Connected time over (period − maintenance), percent; `None` when the whole period is
    /// maintenance.
    pub availability_percent: Option<f64>,
    /// Sessions overlapping the period.
    pub sessions: usize,
    /// `false`: no session of this agent was ever recorded (so it counts as down).
    pub recorded: bool,
}

/// What the figures of every report rest on.
pub const AGENTS_ASSUMED_UP: &str = "no session of these agents was ever recorded, so they \
     count as up for the whole period and only the probe results decide";

// ---------------------------------------------------------------------------------------------
// The division tree as bagui-ops wants it
// ---------------------------------------------------------------------------------------------

struct Tree<'a> {
    divisions: &'a Divisions,
    agents: HashMap<String, DivisionCode>,
}

impl DivisionOf for Tree<'_> {
    fn division(&self, agent: &str) -> Option<DivisionCode> {
        self.agents.get(agent).cloned()
    }

    fn parent(&self, code: &str) -> Option<DivisionCode> {
        self.divisions.get(code)?.parent.clone()
    }
}

fn bad(message: impl Into<String>) -> AdminError {
    AdminError::BadRequest(message.into())
}

impl Admin {
    /// The store and clock of the ops tree (the dispatcher's).
    fn service_store(&self) -> Result<Store, AdminError> {
        self.dispatcher
            .as_ref()
            .map(|dispatcher| dispatcher.store())
            .ok_or_else(|| AdminError::Internal("the ops store is not available here".into()))
    }

    fn service_now(&self) -> Result<Millis, AdminError> {
        self.dispatcher
            .as_ref()
            .map(|dispatcher| dispatcher.clock().now_ms())
            .ok_or_else(|| AdminError::Internal("the ops store is not available here".into()))
    }

    fn known_division_code(&self, code: &str) -> Result<(), AdminError> {
        match self.divisions().get(code) {
            Some(_) => Ok(()),
            None => Err(bad(format!("division {code:?} does not exist"))),
        }
    }

    // -----------------------------------------------------------------------------------------
    // KPIs (管理在线)
    // -----------------------------------------------------------------------------------------

    /// The KPIs of the work orders in `division`'s subtree for the CST month `period`
    /// (`2026-11`), from the stored transition logs.
    pub fn kpi(&self, division: &str, period: &str) -> Result<KpiView, AdminError> {
        let division = division.trim();
        self.known_division_code(division)?;
        let month = services::parse_month_cst(period).map_err(|error| bad(error.to_string()))?;
        let divisions = self.divisions();
        let log: Vec<Transition> = self
            .service_store()?
            .ops_scan::<Transition>(TRANSITION_PREFIX, b"", usize::MAX)?
            .into_iter()
            .map(|(_, transition)| transition)
            .filter(|transition| divisions.is_within(&transition.division, division))
            .collect();
        let total = KpiRow::new(
            division.to_owned(),
            divisions
                .get(division)
                .map(|node| node.name.clone())
                .unwrap_or_default(),
            kpi::kpi_total(&log, month),
        );
        let teams = kpi::kpi_by_team(&log, month)
            .into_iter()
            .map(|(team, kpi)| KpiRow::new(team.clone(), team, kpi))
            .collect();
        let parent = |code: &str| divisions.get(code)?.parent.clone();
        let mut by_division = kpi::kpi_by_division(&log, month, &parent);
        let children = divisions
            .children(division)
            .iter()
            .map(|code| {
                KpiRow::new(
                    code.clone(),
                    divisions
                        .get(code)
                        .map(|node| node.name.clone())
                        .unwrap_or_default(),
                    by_division.remove(code).unwrap_or_default(),
                )
            })
            .collect();
        Ok(KpiView {
            division: division.to_owned(),
            division_path: divisions.path_names(division),
            period: period.trim().to_owned(),
            from: format_rfc3339(month.from()),
            to: format_rfc3339(month.to()),
            total,
            teams,
            divisions: children,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Maintenance windows
    // -----------------------------------------------------------------------------------------

    /// Maintenance windows in force or to come, by start. Expired ones are moved out of the
    /// list first (kept under `mwx/` for the service figures of past periods).
    pub fn maintenance_list(&self) -> Result<Vec<MaintenanceView>, AdminError> {
        let store = self.service_store()?;
        let now = self.service_now()?;
        let mut windows: Vec<MaintenanceWindow> = store
            .ops_scan::<MaintenanceWindow>(MAINTENANCE_PREFIX, b"", usize::MAX)?
            .into_iter()
            .map(|(_, window)| window)
            .collect();
        let expired = maintenance::prune_expired(&mut windows, now);
        if !expired.is_empty() {
            let mut batch = OpsBatch::new();
            for window in &expired {
                batch.delete(&key(MAINTENANCE_PREFIX, &window.id));
                batch.put(&key(EXPIRED_MAINTENANCE_PREFIX, &window.id), window)?;
            }
            store.ops_commit(batch)?;
        }
        windows.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
        Ok(windows
            .iter()
            .map(|window| MaintenanceView::new(window, now))
            .collect())
    }

    /// Creates a maintenance window (validated by [`MaintenanceWindow::validate`]), audited.
    pub fn maintenance_create(
        &self,
        actor: &str,
        request: &CreateMaintenance,
    ) -> Result<MaintenanceView, AdminError> {
        let store = self.service_store()?;
        let now = self.service_now()?;
        let target = match (&request.agent, &request.division) {
            (Some(agent), None) => {
                let agent = agent.trim();
                if store.agent(agent)?.is_none() {
                    return Err(bad(format!("agent {agent:?} is not enrolled")));
                }
                Target::Agent(agent.to_owned())
            }
            (None, Some(code)) => {
                let code = code.trim();
                self.known_division_code(code)?;
                Target::Division(code.to_owned())
            }
            _ => {
                return Err(bad(
                    "a maintenance window needs exactly one of agent and division",
                ));
            }
        };
        let start = match request.from.as_deref().map(str::trim) {
            None | Some("now") => now,
            Some(text) => units::parse_rfc3339(text).map_err(|_| {
                bad(format!(
                    "from {text:?}: expected an RFC 3339 time (2026-11-20T22:00:00+08:00) or now"
                ))
            })?,
        };
        let end = match (&request.until, &request.duration) {
            (Some(text), None) => units::parse_rfc3339(text.trim()).map_err(|_| {
                bad(format!(
                    "until {text:?}: expected an RFC 3339 time (2026-11-21T02:00:00+08:00)"
                ))
            })?,
            (None, Some(text)) => {
                let duration = units::parse_duration(text.trim()).map_err(|_| {
                    bad(format!(
                        "for {text:?}: expected a duration such as 2h or 30m"
                    ))
                })?;
                let ms = Millis::try_from(duration.as_millis())
                    .map_err(|_| bad(format!("for {text:?}: too long")))?;
                start.saturating_add(ms)
            }
            _ => {
                return Err(bad(
                    "a maintenance window needs exactly one of until and duration (--for)",
                ));
            }
        };
        if end <= now {
            return Err(bad(format!(
                "the window would end at {}, which has passed",
                format_rfc3339(end)
            )));
        }
        let mut id = format!("mw-{:08x}", rand::random::<u32>());
        while store
            .ops_get::<MaintenanceWindow>(&key(MAINTENANCE_PREFIX, &id))?
            .is_some()
        {
            id = format!("mw-{:08x}", rand::random::<u32>());
        }
        let window = MaintenanceWindow {
            id,
            target,
            start,
            end,
            reason: request.reason.trim().to_owned(),
            created_by: actor.to_owned(),
        };
        window.validate().map_err(|error| bad(error.to_string()))?;
        let mut batch = OpsBatch::new();
        batch.put(&key(MAINTENANCE_PREFIX, &window.id), &window)?;
        store.ops_commit(batch)?;
        let view = MaintenanceView::new(&window, now);
        self.audit().record(
            actor,
            "maintenance.create",
            &window.id,
            format!(
                "{}={} from={} until={} reason={}",
                view.target_kind, view.target, view.start, view.end, window.reason
            ),
        )?;
        Ok(view)
    }

    /// Ends a maintenance window now, audited. One that has not started is deleted; one in
    /// force is cut at now and kept with the expired ones, so the time it did cover stays
    /// maintenance in the service figures.
    pub fn maintenance_remove(&self, actor: &str, id: &str) -> Result<MaintenanceView, AdminError> {
        let store = self.service_store()?;
        let now = self.service_now()?;
        let mut window = store
            .ops_get::<MaintenanceWindow>(&key(MAINTENANCE_PREFIX, id))?
            .ok_or_else(|| AdminError::NotFound(format!("no maintenance window {id}")))?;
        let mut batch = OpsBatch::new();
        batch.delete(&key(MAINTENANCE_PREFIX, id));
        if window.start < now {
            window.end = window.end.min(now);
            batch.put(&key(EXPIRED_MAINTENANCE_PREFIX, id), &window)?;
        }
        store.ops_commit(batch)?;
        self.audit().record(
            actor,
            "maintenance.remove",
            id,
            format!("ended {}", format_rfc3339(now)),
        )?;
        Ok(MaintenanceView::new(&window, now))
    }

    /// Every stored window, expired ones included (the figures of past periods need them).
    fn all_maintenance(&self, store: &Store) -> Result<Vec<MaintenanceWindow>, AdminError> {
        let mut windows = Vec::new();
        for prefix in [MAINTENANCE_PREFIX, EXPIRED_MAINTENANCE_PREFIX] {
            windows.extend(
                store
                    .ops_scan::<MaintenanceWindow>(prefix, b"", usize::MAX)?
                    .into_iter()
                    .map(|(_, window)| window),
            );
        }
        Ok(windows)
    }

    // -----------------------------------------------------------------------------------------
    // Services (服务在线)
    // -----------------------------------------------------------------------------------------

    pub fn services(&self) -> Result<Vec<Service>, AdminError> {
        Ok(self
            .service_store()?
            .ops_scan::<Service>(SERVICE_PREFIX, b"", usize::MAX)?
            .into_iter()
            .map(|(_, service)| service)
            .collect())
    }

    pub fn service(&self, id: &str) -> Result<Service, AdminError> {
        self.service_store()?
            .ops_get::<Service>(&key(SERVICE_PREFIX, id))?
            .ok_or_else(|| AdminError::NotFound(format!("no service {id}")))
    }

    /// Creates or replaces a service, audited. Its probes are `AGENT:PROBE` (the probe named
    /// PROBE run by agent AGENT); a bare `PROBE` stands for that probe on each of the service's
    /// agents. The division, the owning team and every agent must exist.
    pub fn service_put(&self, actor: &str, mut service: Service) -> Result<Service, AdminError> {
        let store = self.service_store()?;
        service.id = service.id.trim().to_owned();
        service.agents = service
            .agents
            .iter()
            .map(|agent| agent.trim().to_owned())
            .collect();
        let mut probes = Vec::new();
        for probe in &service.probes {
            let probe = probe.trim();
            match probe.split_once(':') {
                Some((agent, name)) if !agent.is_empty() && !name.is_empty() => {
                    probes.push(format!("{}:{}", agent.trim(), name.trim()));
                }
                Some(_) => {
                    return Err(bad(format!(
                        "probe {probe:?}: expected AGENT:PROBE or a bare PROBE name"
                    )));
                }
                None if service.agents.is_empty() => {
                    return Err(bad(format!(
                        "probe {probe:?}: the service has no agents, so name the agent that \
                         runs it as AGENT:{probe}"
                    )));
                }
                None => probes.extend(
                    service
                        .agents
                        .iter()
                        .map(|agent| format!("{agent}:{probe}")),
                ),
            }
        }
        service.probes = probes;
        service.validate().map_err(|error| bad(error.to_string()))?;
        if service.id.len() > 64
            || !service
                .id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
        {
            return Err(bad(format!(
                "service id {:?}: use at most 64 letters, digits, '-', '_' or '.'",
                service.id
            )));
        }
        self.known_division_code(&service.division)?;
        let teams = self
            .dispatcher
            .as_ref()
            .ok_or_else(|| AdminError::Internal("teams are not available here".into()))?
            .teams()?;
        if !teams.iter().any(|team| team.id == service.owner_team) {
            return Err(bad(format!(
                "team {:?} does not exist (see `bagui-cp team list`)",
                service.owner_team
            )));
        }
        let runners = service
            .probes
            .iter()
            .filter_map(|probe| probe.split_once(':').map(|(agent, _)| agent));
        for agent in service.agents.iter().map(String::as_str).chain(runners) {
            if store.agent(agent)?.is_none() {
                return Err(bad(format!("agent {agent:?} is not enrolled")));
            }
        }
        let mut batch = OpsBatch::new();
        batch.put(&key(SERVICE_PREFIX, &service.id), &service)?;
        store.ops_commit(batch)?;
        self.audit().record(
            actor,
            "service.put",
            &service.id,
            format!(
                "name={} team={} division={} agents={:?} probes={:?} latency_objective_ms={}",
                service.name,
                service.owner_team,
                service.division,
                service.agents,
                service.probes,
                service.latency_objective_ms
            ),
        )?;
        Ok(service)
    }

    pub fn service_remove(&self, actor: &str, id: &str) -> Result<Service, AdminError> {
        let service = self.service(id)?;
        let mut batch = OpsBatch::new();
        batch.delete(&key(SERVICE_PREFIX, id));
        self.service_store()?.ops_commit(batch)?;
        self.audit().record(actor, "service.remove", id, "")?;
        Ok(service)
    }

    /// An agent's availability for the CST month `period`: time connected over the period
    /// less the maintenance windows covering it (from the dispatcher's session history).
    pub fn agent_availability(
        &self,
        agent: &str,
        period: &str,
    ) -> Result<AgentAvailabilityView, AdminError> {
        let month = services::parse_month_cst(period).map_err(|error| bad(error.to_string()))?;
        let store = self.service_store()?;
        let record = store
            .agent(agent)?
            .ok_or_else(|| AdminError::NotFound(format!("no agent {agent}")))?;
        let (from, to) = (month.from(), month.to());
        let recorded = match &self.dispatcher {
            Some(dispatcher) => dispatcher.up_intervals(agent, from, to)?,
            None => None,
        };
        let intervals = recorded.clone().unwrap_or_default();
        let windows = self.all_maintenance(&store)?;
        let tree = Tree {
            divisions: self.divisions(),
            agents: [(record.id.clone(), record.division.clone())].into(),
        };
        let availability = services::agent_availability(agent, &intervals, &windows, &tree, month)
            .map_err(|error| AdminError::Internal(error.to_string()))?;
        Ok(AgentAvailabilityView {
            agent: agent.to_owned(),
            division: record.division,
            period: period.trim().to_owned(),
            availability_percent: availability,
            sessions: intervals.len(),
            recorded: recorded.is_some(),
        })
    }

    /// What a service's figures rest on over [from, to): its probe results (with the last one
    /// before `from`), its agents' connected intervals, the maintenance windows and the tree.
    fn service_timeline(
        &self,
        store: &Store,
        service: &Service,
        from: Millis,
        to: Millis,
    ) -> Result<ServiceInputs<'_>, AdminError> {
        let mut results = Vec::new();
        let mut probes = Vec::new();
        for reference in &service.probes {
            let Some((agent, name)) = reference.split_once(':') else {
                continue;
            };
            // A pushed probe reports as `pushed.NAME`; a probe from the agent's own
            // configuration under its own name.
            let mut check = name.to_owned();
            let mut rows = store.probe_results(agent, &check, from, to)?;
            if rows.is_empty() && !name.starts_with(PUSHED_PROBE_PREFIX) {
                check = format!("{PUSHED_PROBE_PREFIX}{name}");
                rows = store.probe_results(agent, &check, from, to)?;
            }
            probes.push(ReportProbe {
                probe: reference.clone(),
                check,
                results: rows.iter().filter(|(at, _)| *at >= from).count() as u64,
            });
            results.extend(rows.into_iter().map(|(at, record)| ProbeResult {
                probe: reference.clone(),
                at,
                ok: record.ok,
                latency_ms: record.latency_ms,
            }));
        }
        // Agents are up while connected (the dispatcher's session history); an agent the
        // control plane never recorded a session of counts as up, and the notes say so.
        let mut assumed_up = Vec::new();
        let mut agent_up: AgentUptime = AgentUptime::new();
        for agent in &service.agents {
            let recorded = match &self.dispatcher {
                Some(dispatcher) => dispatcher.up_intervals(agent, from, to)?,
                None => None,
            };
            let intervals = recorded.unwrap_or_else(|| {
                assumed_up.push(agent.clone());
                vec![(from.saturating_sub(1), to)]
            });
            agent_up.insert(agent.clone(), intervals);
        }
        let timeline = Timeline::new(&results, &agent_up)
            .map_err(|error| AdminError::Internal(error.to_string()))?;
        let windows = self.all_maintenance(store)?;
        let tree = Tree {
            divisions: self.divisions(),
            agents: store
                .agents()?
                .into_iter()
                .map(|agent| (agent.id, agent.division))
                .collect(),
        };
        Ok(ServiceInputs {
            timeline,
            probes,
            assumed_up,
            windows,
            tree,
        })
    }

    /// Availability, failures, MTBF, MTTR and the provision rate of a service for the CST
    /// month `period`, from the stored probe history and maintenance windows.
    pub fn service_report(&self, id: &str, period: &str) -> Result<ServiceReport, AdminError> {
        let month = services::parse_month_cst(period).map_err(|error| bad(error.to_string()))?;
        let service = self.service(id)?;
        let store = self.service_store()?;
        let (from, to) = (month.from(), month.to());
        let inputs = self.service_timeline(&store, &service, from, to)?;
        let figures = services::service_figures(
            &service,
            &inputs.timeline,
            &inputs.windows,
            &inputs.tree,
            month,
        );
        let mut notes = Vec::new();
        if !inputs.assumed_up.is_empty() {
            notes.push(format!(
                "{AGENTS_ASSUMED_UP}: {}",
                inputs.assumed_up.join(", ")
            ));
        }
        for probe in inputs.probes.iter().filter(|probe| probe.results == 0) {
            notes.push(format!(
                "probe {}: no result in the period; it counts as up (or as it last reported \
                 before the period)",
                probe.probe
            ));
        }
        Ok(ServiceReport {
            summary: figures.summary(),
            figures,
            period: period.trim().to_owned(),
            from: format_rfc3339(from),
            to: format_rfc3339(to),
            service,
            probes: inputs.probes,
            notes,
        })
    }

    /// The service's state now: UP, DOWN (a probe's latest result failed or an agent is
    /// disconnected), MAINTENANCE, or UNKNOWN (nothing heard yet).
    pub fn service_status(&self, id: &str) -> Result<ServiceStatusView, AdminError> {
        let service = self.service(id)?;
        let store = self.service_store()?;
        let now = self.dispatcher.as_ref().map_or(0, |d| d.clock().now_ms());
        // A month back, so that an agent lost a while ago is known as down, not as unheard of.
        let from = now.saturating_sub(31 * 24 * 3600 * 1000);
        let inputs = self.service_timeline(&store, &service, from, now.saturating_add(1))?;
        let status = services::status_at(
            &service,
            &inputs.timeline,
            &inputs.windows,
            &inputs.tree,
            now,
        );
        Ok(ServiceStatusView {
            service: service.id,
            status,
            at: format_rfc3339(now),
        })
    }
}

/// What [`Admin::service_timeline`] gathers.
struct ServiceInputs<'a> {
    timeline: Timeline,
    probes: Vec<ReportProbe>,
    assumed_up: Vec<String>,
    windows: Vec<MaintenanceWindow>,
    tree: Tree<'a>,
}

/// `GET /api/v1/services/{id}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatusView {
    pub service: String,
    pub status: services::ServiceStatus,
    pub at: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bagui_ops::incidents::{Event, Finding, IncidentRules, Subject};
    use bagui_ops::model::{Category, DAY, HOUR, MINUTE, Severity};
    use bagui_ops::workorder::Command;
    use bagui_protocol::assets::{self, CheckResult, PerfDatum};
    use bagui_protocol::messages::payload;
    use bagui_protocol::{Lane, Role};

    use super::*;
    use crate::audit::Audit;
    use crate::clock::{Clock, ManualClock};
    use crate::dispatch::{DispatchConfig, Dispatcher, OrderFilter, Team};
    use crate::enroll::{EnrollConfig, Enroller};
    use crate::store::{AgentRecord, NewReport, StoredReport};

    const COUNTY: &str = "450103";
    /// 新竹街道, a township of the county.
    const T1: &str = "450103001";
    /// 中山街道, another one.
    const T2: &str = "450103002";
    /// 兴宁区, a sibling county (outside 450103's subtree).
    const OTHER_COUNTY: &str = "450102";
    /// 2026-11-01 00:00 CST: the start of the month `2026-11`.
    const NOV: Millis = 1_793_462_400_000;
    /// 2026-11-02 09:00 CST.
    const T0: Millis = NOV + DAY + 9 * HOUR;
    /// 2026-12-01 00:00 CST.
    const DEC: Millis = NOV + 30 * DAY;
    /// The incident engine holds a finding this long before it decides (the default).
    const HOLD: Millis = 2_000;

    /// A store, a dispatcher and an [`Admin`] on a manual clock (also used by
    /// `crate::api_service`'s tests).
    pub(crate) struct Fixture {
        _dir: tempfile::TempDir,
        pub(crate) clock: Arc<ManualClock>,
        pub(crate) store: Store,
        pub(crate) dispatcher: Dispatcher,
        pub(crate) admin: Admin,
    }

    impl Fixture {
        pub(crate) fn new(start: Millis) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::create(&dir.path().join("store")).unwrap();
            let clock = ManualClock::starting_at(start);
            let divisions = Arc::new(Divisions::guangxi());
            let audit = Audit::new(store.clone(), clock.clone()).unwrap();
            let (ca, _) = crate::pki::CertificateAuthority::generate("test CA", start).unwrap();
            let enroller = Arc::new(Enroller::new(
                store.clone(),
                Arc::new(ca),
                divisions.clone(),
                clock.clone(),
                audit.clone(),
                EnrollConfig::default(),
                Vec::new(),
            ));
            let dispatcher = Dispatcher::open(
                store.clone(),
                divisions.clone(),
                DispatchConfig {
                    rules: IncidentRules {
                        terminal_off_hours: None,
                        ..IncidentRules::default()
                    },
                    ..DispatchConfig::default()
                },
                clock.clone(),
                false,
            )
            .unwrap();
            let admin = Admin::new(
                store.clone(),
                divisions,
                enroller,
                audit,
                clock.clone(),
                None,
                "127.0.0.1:7443".into(),
            )
            .with_local_dispatcher(dispatcher.clone());
            Fixture {
                _dir: dir,
                clock,
                store,
                dispatcher,
                admin,
            }
        }

        fn now(&self) -> Millis {
            self.clock.now_ms()
        }

        pub(crate) fn agent(&self, id: &str, division: &str) {
            self.store
                .put_agent(&AgentRecord {
                    id: id.into(),
                    division: division.into(),
                    role: Role::Server,
                    created_ms: self.now(),
                    ..AgentRecord::default()
                })
                .unwrap();
        }

        pub(crate) fn team(&self, id: &str, division: &str) {
            self.dispatcher
                .put_team(Team {
                    id: id.into(),
                    name: format!("{id} team"),
                    division: division.into(),
                    categories: Vec::new(),
                    channels: Vec::new(),
                    on_duty: Vec::new(),
                    roster: None,
                    created_ms: 0,
                })
                .unwrap();
        }

        /// Moves the clock to `at` and lets the dispatcher run its engine and timers.
        fn advance_to(&self, at: Millis) {
            assert!(at >= self.now(), "the script goes back in time");
            self.clock.advance(Duration::from_millis(at - self.now()));
            self.dispatcher.feed(Vec::new()).unwrap();
            self.dispatcher.fire_due().unwrap();
        }

        /// A finding on `agent` whose work order is detected and dispatched at `at` (the
        /// finding fires one hold earlier); returns the order's id.
        fn order_at(&self, at: Millis, title: &str, agent: &str, severity: Severity) -> String {
            self.advance_to(at - HOLD);
            self.dispatcher
                .feed(vec![Event::Finding(Finding {
                    fingerprint: title.into(),
                    subject: Subject::Agent(agent.into()),
                    severity,
                    category: Category::Host,
                    title: title.into(),
                    firing: true,
                    at: at - HOLD,
                })])
                .unwrap();
            self.advance_to(at);
            let orders = self
                .dispatcher
                .orders(&OrderFilter {
                    all: true,
                    ..OrderFilter::default()
                })
                .unwrap();
            let order = orders
                .iter()
                .find(|order| order.title == title)
                .unwrap_or_else(|| panic!("no order for {title}: {orders:#?}"));
            assert_eq!(order.created_at, at, "{order:#?}");
            assert_eq!(order.state, "DISPATCHED", "{order:#?}");
            order.id.clone()
        }

        fn run(&self, at: Millis, id: &str, command: Command) {
            self.advance_to(at);
            self.dispatcher.command(id, command, "operator").unwrap();
        }

        fn resolve(&self, at: Millis, id: &str) {
            self.run(
                at,
                id,
                Command::Resolve {
                    feedback: "fixed".into(),
                },
            );
        }
    }

    fn assert_percent(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a percentage");
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    fn row<'a>(rows: &'a [KpiRow], id: &str) -> &'a KpiRow {
        rows.iter()
            .find(|row| row.id == id)
            .unwrap_or_else(|| panic!("no row {id} in {rows:#?}"))
    }

    /// November 2026 in county 450103, through the real dispatcher (P2: ack 30 min, resolve
    /// 24 h; P1: ack 15 min, resolve 4 h, wall clock):
    ///
    /// | order | team | sev | detected (= dispatched) | ack       | first resolve | notes |
    /// |-------|------|-----|-------------------------|-----------|---------------|-------|
    /// | A     | xz1  | P2  | T0                      | +10 min   | +2 h          | |
    /// | B     | xz2  | P1  | T0 + 1 d                | +20 min   | +1 h          | ack deadline missed at +15 min: escalated to the county team |
    /// | C     | xz1  | P2  | T0 + 2 d                | +5 min    | +30 min       | recurs at +3 h (reopened), resolved again at +4 h |
    /// | D     | xz2  | P2  | 11-30 23:50 CST         | 00:10 CST on 12-01 | —    | acknowledged in December |
    /// | E     | region-duty | P2 | T0 + 3 d (county 450102) | +1 min | +2 min | outside the subtree |
    ///
    /// County 450103, 2026-11:
    /// - opened 4 (A B C D);
    /// - MTTA (10 + 20 + 5) / 3 min = 11 min 40 s = 700 000 ms (D's ack is December's);
    /// - MTTR (2 h + 1 h + 30 min) / 3 = 70 min = 4 200 000 ms (from detection; C's second
    ///   resolution does not count);
    /// - handling (110 + 40 + 25) / 3 min = 58 min 20 s = 3 500 000 ms;
    /// - SLA: judged A B C, met A and C (B missed its ack) = 2/3 = 66.67 %;
    /// - escalations 1 (B, charged to xz2, its owner then);
    /// - reopened 1 of 3 resolved (C) = 33.33 %.
    ///
    /// Per team: xz1 = A C (opened 2, MTTA 7.5 min, MTTR 75 min, SLA 100 %, reopen 50 %);
    /// xz2 = B D (opened 2, MTTA 20 min, MTTR 60 min, SLA 0 %, 1 escalation). The township
    /// rows equal their team's; the other nine townships are zero. Region (45): E adds one
    /// opening, an MTTA of 1 min and an MTTR of 2 min.
    #[test]
    fn a_scripted_month_of_work_orders_gives_the_hand_computed_kpis() {
        let f = Fixture::new(T0 - HOUR);
        f.agent("a1", T1);
        f.agent("a2", T2);
        f.agent("a3", OTHER_COUNTY);
        f.team("xz1", T1);
        f.team("xz2", T2);
        f.team("county", COUNTY);
        let now = f.now();
        f.dispatcher
            .feed(
                ["a1", "a2", "a3"]
                    .into_iter()
                    .map(|agent| Event::AgentBack {
                        agent: agent.into(),
                        at: now,
                    })
                    .collect(),
            )
            .unwrap();

        let a = f.order_at(T0, "A", "a1", Severity::P2);
        f.run(T0 + 10 * MINUTE, &a, Command::Ack);
        f.run(T0 + 10 * MINUTE, &a, Command::Start);
        f.resolve(T0 + 2 * HOUR, &a);

        let t1 = T0 + DAY;
        let b = f.order_at(t1, "B", "a2", Severity::P1);
        f.advance_to(t1 + 15 * MINUTE);
        let detail = f.dispatcher.order(&b).unwrap();
        assert_eq!(detail.row.supervisors, vec!["county".to_string()]);
        f.run(t1 + 20 * MINUTE, &b, Command::Ack);
        f.resolve(t1 + HOUR, &b);

        let t2 = T0 + 2 * DAY;
        let c = f.order_at(t2, "C", "a1", Severity::P2);
        f.run(t2 + 5 * MINUTE, &c, Command::Ack);
        f.resolve(t2 + 30 * MINUTE, &c);
        f.run(t2 + 3 * HOUR, &c, Command::Recur { at: t2 + 3 * HOUR });
        assert_eq!(f.dispatcher.order(&c).unwrap().row.state, "IN_PROGRESS");
        f.resolve(t2 + 4 * HOUR, &c);

        let t3 = T0 + 3 * DAY;
        let e = f.order_at(t3, "E", "a3", Severity::P2);
        f.run(t3 + MINUTE, &e, Command::Ack);
        f.resolve(t3 + 2 * MINUTE, &e);

        let d = f.order_at(DEC - 10 * MINUTE, "D", "a2", Severity::P2);
        f.run(DEC + 10 * MINUTE, &d, Command::Ack);

        let view = f.admin.kpi(COUNTY, "2026-11").unwrap();
        assert_eq!(view.division_path, "广西壮族自治区/南宁市/青秀区");
        assert_eq!(
            (view.from.as_str(), view.to.as_str()),
            ("2026-10-31T16:00:00Z", "2026-11-30T16:00:00Z")
        );
        let total = &view.total.kpi;
        assert_eq!(total.opened, 4);
        assert_eq!(total.mtta_ms, Some(700_000));
        assert_eq!(total.mttr_ms, Some(4_200_000));
        assert_eq!(total.handling_time_ms, Some(3_500_000));
        assert_percent(total.sla_compliance_percent, 200.0 / 3.0);
        assert_eq!(total.escalations, 1);
        assert_percent(total.reopen_rate_percent, 100.0 / 3.0);
        let counters = &view.total.counters;
        assert_eq!((counters.resolved, counters.reopened), (3, 1));
        assert_eq!((counters.sla_judged, counters.sla_met), (3, 2));

        let teams: Vec<&str> = view.teams.iter().map(|row| row.id.as_str()).collect();
        assert_eq!(teams, ["xz1", "xz2"]);
        let xz1 = &row(&view.teams, "xz1").kpi;
        assert_eq!(xz1.opened, 2);
        assert_eq!(xz1.mtta_ms, Some(450_000));
        assert_eq!(xz1.mttr_ms, Some(4_500_000));
        assert_percent(xz1.sla_compliance_percent, 100.0);
        assert_eq!(xz1.escalations, 0);
        assert_percent(xz1.reopen_rate_percent, 50.0);
        let xz2 = &row(&view.teams, "xz2").kpi;
        assert_eq!(xz2.opened, 2);
        assert_eq!(xz2.mtta_ms, Some(1_200_000));
        assert_eq!(xz2.mttr_ms, Some(3_600_000));
        assert_percent(xz2.sla_compliance_percent, 0.0);
        assert_eq!(xz2.escalations, 1);
        assert_percent(xz2.reopen_rate_percent, 0.0);

        assert_eq!(
            view.divisions.len(),
            f.admin.divisions().children(COUNTY).len()
        );
        assert_eq!(row(&view.divisions, T1).kpi, *xz1);
        assert_eq!(row(&view.divisions, T1).name, "新竹街道");
        assert_eq!(row(&view.divisions, T2).kpi, *xz2);
        let quiet = view
            .divisions
            .iter()
            .filter(|row| row.id != T1 && row.id != T2);
        for row in quiet {
            assert_eq!(row.counters, Kpi::default(), "{row:?}");
        }

        // The region sees E as well; December sees D's acknowledgement only.
        let region = f.admin.kpi("45", "2026-11").unwrap();
        assert_eq!(region.total.kpi.opened, 5);
        assert_eq!(region.total.kpi.mtta_ms, Some((700_000 * 3 + MINUTE) / 4));
        assert_eq!(
            region.total.kpi.mttr_ms,
            Some((4_200_000 * 3 + 2 * MINUTE) / 4)
        );
        let december = f.admin.kpi(COUNTY, "2026-12").unwrap();
        assert_eq!(december.total.kpi.opened, 0);
        assert_eq!(december.total.kpi.mtta_ms, Some(20 * MINUTE));
    }

    #[test]
    fn kpi_refuses_unknown_divisions_and_malformed_periods() {
        let f = Fixture::new(T0);
        for (division, period, expected) in [
            ("9999", "2026-11", "division \"9999\" does not exist"),
            (COUNTY, "2026-13", "2026-13"),
            (COUNTY, "November", "not a month of the form YYYY-MM"),
            (COUNTY, "", "not a month"),
        ] {
            match f.admin.kpi(division, period) {
                Err(AdminError::BadRequest(message)) => {
                    assert!(message.contains(expected), "{message}")
                }
                other => panic!("{division} {period}: {other:?}"),
            }
        }
    }

    fn bad_request<T: std::fmt::Debug>(result: Result<T, AdminError>) -> String {
        match result {
            Err(AdminError::BadRequest(message)) => message,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn maintenance_windows_are_validated_audited_and_pruned_when_they_expire() {
        let f = Fixture::new(T0);
        f.agent("a1", T1);
        let window = f
            .admin
            .maintenance_create(
                "ops-lead",
                &CreateMaintenance {
                    agent: Some("a1".into()),
                    duration: Some("2h".into()),
                    reason: "kernel upgrade".into(),
                    ..CreateMaintenance::default()
                },
            )
            .unwrap();
        assert_eq!(
            (window.start_ms, window.end_ms, window.active),
            (T0, T0 + 2 * HOUR, true)
        );
        assert_eq!(
            (window.target_kind.as_str(), window.target.as_str()),
            ("agent", "a1")
        );
        assert_eq!(window.created_by, "ops-lead");
        let division = f
            .admin
            .maintenance_create(
                "ops-lead",
                &CreateMaintenance {
                    division: Some(T1.into()),
                    from: Some("2026-11-03T01:00:00+08:00".into()),
                    until: Some("2026-11-03T05:00:00+08:00".into()),
                    reason: "fibre works".into(),
                    ..CreateMaintenance::default()
                },
            )
            .unwrap();
        assert_eq!(division.start, "2026-11-02T17:00:00Z");
        assert!(!division.active);
        let listed: Vec<String> = f
            .admin
            .maintenance_list()
            .unwrap()
            .into_iter()
            .map(|window| window.id)
            .collect();
        assert_eq!(listed, [window.id.clone(), division.id.clone()]);
        let audit = f.admin.audit_entries(0, 100).unwrap();
        assert!(
            audit
                .iter()
                .any(|entry| entry.action == "maintenance.create" && entry.actor == "ops-lead"),
            "{audit:#?}"
        );

        // Bad input is refused with a reason, and nothing is stored.
        let base = CreateMaintenance {
            agent: Some("a1".into()),
            duration: Some("1h".into()),
            reason: "x".into(),
            ..CreateMaintenance::default()
        };
        for (request, expected) in [
            (
                CreateMaintenance {
                    division: Some(T1.into()),
                    ..base.clone()
                },
                "exactly one of agent and division",
            ),
            (
                CreateMaintenance {
                    agent: Some("nobody".into()),
                    ..base.clone()
                },
                "not enrolled",
            ),
            (
                CreateMaintenance {
                    agent: None,
                    division: Some("4599".into()),
                    ..base.clone()
                },
                "does not exist",
            ),
            (
                CreateMaintenance {
                    reason: " ".into(),
                    ..base.clone()
                },
                "the reason is empty",
            ),
            (
                CreateMaintenance {
                    duration: Some("31d".into()),
                    ..base.clone()
                },
                "longer than",
            ),
            (
                CreateMaintenance {
                    duration: Some("soon".into()),
                    ..base.clone()
                },
                "expected a duration",
            ),
            (
                CreateMaintenance {
                    until: Some("2026-11-02T10:00:00+08:00".into()),
                    ..base.clone()
                },
                "exactly one of until and duration",
            ),
            (
                CreateMaintenance {
                    from: Some("yesterday".into()),
                    ..base.clone()
                },
                "expected an RFC 3339 time",
            ),
            (
                CreateMaintenance {
                    from: Some("2026-11-01T00:00:00+08:00".into()),
                    ..base.clone()
                },
                "which has passed",
            ),
        ] {
            let message = bad_request(f.admin.maintenance_create("ops-lead", &request));
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
        assert_eq!(f.admin.maintenance_list().unwrap().len(), 2);

        // At T0 + 17 h (2026-11-03 02:00 CST) the agent window has expired: it leaves the
        // list (and is kept for the figures); the division window is in force.
        f.clock.advance(Duration::from_millis(17 * HOUR));
        let listed = f.admin.maintenance_list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, division.id);
        assert!(listed[0].active);
        assert_eq!(f.admin.all_maintenance(&f.store).unwrap().len(), 2);

        // Removing a window in force ends it now: the hour it covered stays maintenance.
        let removed = f
            .admin
            .maintenance_remove("ops-lead", &division.id)
            .unwrap();
        assert_eq!(removed.reason, "fibre works");
        assert_eq!((removed.end_ms, removed.active), (T0 + 17 * HOUR, false));
        assert!(f.admin.maintenance_list().unwrap().is_empty());
        let kept = f.admin.all_maintenance(&f.store).unwrap();
        assert!(
            kept.iter()
                .any(|window| window.id == division.id && window.end == T0 + 17 * HOUR),
            "{kept:?}"
        );
        // One that has not started is simply deleted.
        let later = f
            .admin
            .maintenance_create(
                "ops-lead",
                &CreateMaintenance {
                    from: Some("2026-11-10T01:00:00+08:00".into()),
                    ..base.clone()
                },
            )
            .unwrap();
        f.admin.maintenance_remove("ops-lead", &later.id).unwrap();
        assert_eq!(f.admin.all_maintenance(&f.store).unwrap().len(), 2);
        assert!(matches!(
            f.admin.maintenance_remove("ops-lead", &division.id),
            Err(AdminError::NotFound(_))
        ));
    }

    /// A probe result report of agent `a1` as the agent sends it: check `pushed.web`,
    /// convention `probe`, latency in perfdata `time` (seconds).
    fn probe_report(seq: u64, at: Millis, ok: bool, latency_ms: u64) -> NewReport {
        let result = CheckResult {
            name: "pushed.web".into(),
            convention: "probe".into(),
            status: if ok { 0 } else { 2 },
            output: String::new(),
            long_output: String::new(),
            perfdata: vec![PerfDatum {
                label: "time".into(),
                value: Some(latency_ms as f64 / 1000.0),
                uom: "s".into(),
                ..PerfDatum::default()
            }],
            started_ms: at,
            duration_ms: latency_ms,
            error: None,
        };
        NewReport {
            agent_id: "a1".into(),
            seq,
            report: StoredReport {
                lane: Lane::Inventory,
                kind: assets::CHECK_RESULT.into(),
                body: serde_bytes::ByteBuf::from(payload::encode(&result)),
                ..StoredReport::default()
            },
        }
    }

    /// The portal's probe in November 2026 (objective 500 ms), with a maintenance window on
    /// its township from T0 + 10 h to T0 + 12 h (M = 2 h = 7 200 000 ms):
    ///
    /// | time               | result         | |
    /// |--------------------|----------------|-|
    /// | 10-31 23:00 CST    | fail           | before the period: the outage is under way at its start |
    /// | 11-01 00:30 CST    | ok, 50 ms      | carried-in outage: 30 min down, not a new failure |
    /// | T0                 | fail           | failure 1 |
    /// | T0 + 1 h           | ok, 200 ms     | 1 h down |
    /// | T0 + 2 h           | ok, 800 ms     | slow: up, not provided |
    /// | T0 + 3 h           | ok, 100 ms     | |
    /// | T0 + 11 h          | fail           | in maintenance: neither down time nor a check |
    /// | T0 + 11 h 30 min   | ok, 100 ms     | in maintenance |
    ///
    /// P = 30 d = 2 592 000 000 ms; D = 30 min + 1 h = 5 400 000; U = P − M − D =
    /// 2 579 400 000; availability = U / (P − M) = 2 579 400 000 / 2 584 800 000 =
    /// 99.7910863509…%; failures 1, MTBF = U, MTTR = D; checks 5 (outside maintenance),
    /// provided 3 (50, 200, 100 ms) = 60 %.
    /// An agent-only service: a1 connects an hour before November, is lost for 2 h on
    /// 11-10 and is back until the report in December. D = 2 h = 7 200 000 ms, failures 1,
    /// U = 30 d − 2 h = 2 584 800 000; availability = U / 30 d = 99.7222…%.
    #[test]
    fn a_service_report_counts_the_agents_recorded_sessions() {
        let f = Fixture::new(NOV - 2 * HOUR);
        f.agent("a1", T1);
        f.team("xz1", T1);
        f.admin
            .service_put(
                "ops-lead",
                Service {
                    id: "terminal".into(),
                    name: "村务终端".into(),
                    owner_team: "xz1".into(),
                    division: T1.into(),
                    agents: vec!["a1".into()],
                    probes: Vec::new(),
                    latency_objective_ms: 500,
                },
            )
            .unwrap();
        let feed = |event: Event| f.dispatcher.feed(vec![event]).unwrap();
        f.advance_to(NOV - HOUR);
        feed(Event::AgentBack {
            agent: "a1".into(),
            at: NOV - HOUR,
        });
        f.advance_to(NOV + 9 * DAY);
        feed(Event::AgentLost {
            agent: "a1".into(),
            at: NOV + 9 * DAY,
        });
        f.advance_to(NOV + 9 * DAY + 2 * HOUR);
        feed(Event::AgentBack {
            agent: "a1".into(),
            at: NOV + 9 * DAY + 2 * HOUR,
        });
        f.advance_to(DEC + HOUR);
        let report = f.admin.service_report("terminal", "2026-11").unwrap();
        assert_eq!(report.figures.down_ms, 2 * HOUR);
        assert_eq!(report.figures.failures, 1);
        assert_eq!(report.figures.up_ms, 30 * DAY - 2 * HOUR);
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        assert_eq!(
            f.dispatcher
                .up_intervals("a1", NOV, DEC)
                .unwrap()
                .unwrap()
                .len(),
            2
        );
        // Now: up while connected, down once it is lost.
        let status = f.admin.service_status("terminal").unwrap();
        assert_eq!(status.status, services::ServiceStatus::Up);
        f.dispatcher
            .feed(vec![Event::AgentLost {
                agent: "a1".into(),
                at: DEC + HOUR,
            }])
            .unwrap();
        f.advance_to(DEC + HOUR + 1);
        assert_eq!(
            f.admin.service_status("terminal").unwrap().status,
            services::ServiceStatus::Down
        );
        let availability = f.admin.agent_availability("a1", "2026-11").unwrap();
        assert_eq!(availability.sessions, 2);
        let percent = availability.availability_percent.unwrap();
        let expected = (30.0 * 24.0 - 2.0) * 100.0 / (30.0 * 24.0);
        assert!((percent - expected).abs() < 1e-9, "{percent} vs {expected}");
        assert!(matches!(
            f.admin.agent_availability("nobody", "2026-11"),
            Err(AdminError::NotFound(_))
        ));
        assert!(matches!(
            f.admin.agent_availability("a1", "2026-13"),
            Err(AdminError::BadRequest(_))
        ));
    }

    #[test]
    fn a_service_report_comes_from_the_projected_probe_history_and_maintenance() {
        let f = Fixture::new(NOV - 2 * HOUR);
        f.agent("a1", T1);
        f.team("xz1", T1);
        f.admin
            .maintenance_create(
                "ops-lead",
                &CreateMaintenance {
                    division: Some(T1.into()),
                    from: Some("2026-11-02T19:00:00+08:00".into()),
                    until: Some("2026-11-02T21:00:00+08:00".into()),
                    reason: "power works".into(),
                    ..CreateMaintenance::default()
                },
            )
            .unwrap();
        let service = f
            .admin
            .service_put(
                "ops-lead",
                Service {
                    id: "gov-portal".into(),
                    name: "政务服务门户".into(),
                    owner_team: "xz1".into(),
                    division: T1.into(),
                    agents: vec!["a1".into()],
                    probes: vec!["web".into()],
                    latency_objective_ms: 500,
                },
            )
            .unwrap();
        assert_eq!(service.probes, ["a1:web"]);
        assert_eq!(f.admin.services().unwrap(), std::slice::from_ref(&service));

        let script = [
            (NOV - HOUR, false, 900),
            (NOV + 30 * MINUTE, true, 50),
            (T0, false, 5_000),
            (T0 + HOUR, true, 200),
            (T0 + 2 * HOUR, true, 800),
            (T0 + 3 * HOUR, true, 100),
            (T0 + 11 * HOUR, false, 5_000),
            (T0 + 11 * HOUR + 30 * MINUTE, true, 100),
            // December: outside the period.
            (DEC + HOUR, false, 5_000),
        ];
        let mut reports: Vec<NewReport> = script
            .iter()
            .enumerate()
            .map(|(index, &(at, ok, latency))| probe_report(index as u64 + 1, at, ok, latency))
            .collect();
        f.store.insert_reports(&mut reports).unwrap();
        assert_eq!(
            crate::inventory::project_pending(&f.store, 100)
                .unwrap()
                .taken,
            script.len()
        );
        // The projector may project a report again after a crash: the history is unchanged.
        let again: Vec<&NewReport> = reports.iter().collect();
        let outcome = crate::inventory::project(&f.store, &again);
        f.store.finish_projection(outcome.projection, &[]).unwrap();
        let stored = f.store.probe_results("a1", "pushed.web", NOV, DEC).unwrap();
        assert_eq!(
            stored.len(),
            8,
            "one before the period, seven in it: {stored:?}"
        );
        assert_eq!(stored[0].0, NOV - HOUR);
        assert_eq!(
            stored[1].1,
            crate::store::ProbeResultRecord {
                ok: true,
                latency_ms: Some(50)
            }
        );

        let report = f.admin.service_report("gov-portal", "2026-11").unwrap();
        let figures = &report.figures;
        assert_eq!(figures.maintenance_ms, 2 * HOUR);
        assert_eq!(figures.down_ms, 5_400_000);
        assert_eq!(figures.up_ms, 2_579_400_000);
        assert_eq!(figures.failures, 1);
        assert_eq!((figures.checks, figures.provided_checks), (5, 3));
        assert_percent(
            report.summary.availability_percent,
            2_579_400_000.0 * 100.0 / 2_584_800_000.0,
        );
        assert_eq!(report.summary.mtbf_ms, Some(2_579_400_000));
        assert_eq!(report.summary.mttr_ms, Some(5_400_000));
        assert_percent(report.summary.provision_rate_percent, 60.0);
        assert_eq!(
            report.probes,
            [ReportProbe {
                probe: "a1:web".into(),
                check: "pushed.web".into(),
                results: 7,
            }]
        );
        assert_eq!(report.notes, [format!("{AGENTS_ASSUMED_UP}: a1")]);

        // A month without results says so, and counts the probe as it last reported (up).
        let january = f.admin.service_report("gov-portal", "2027-01").unwrap();
        assert_eq!(
            january.figures.down_ms,
            31 * DAY,
            "December's failure holds"
        );
        assert_eq!(january.notes.len(), 2, "{:?}", january.notes);

        f.admin.service_remove("ops-lead", "gov-portal").unwrap();
        assert!(matches!(
            f.admin.service_report("gov-portal", "2026-11"),
            Err(AdminError::NotFound(_))
        ));
    }

    #[test]
    fn a_service_is_refused_with_the_reason() {
        let f = Fixture::new(T0);
        f.agent("a1", T1);
        f.team("xz1", T1);
        let portal = Service {
            id: "gov-portal".into(),
            name: "portal".into(),
            owner_team: "xz1".into(),
            division: T1.into(),
            agents: vec!["a1".into()],
            probes: vec!["a1:web".into()],
            latency_objective_ms: 500,
        };
        for (service, expected) in [
            (
                Service {
                    owner_team: "nobody".into(),
                    ..portal.clone()
                },
                "team \"nobody\" does not exist",
            ),
            (
                Service {
                    division: "4599".into(),
                    ..portal.clone()
                },
                "division \"4599\" does not exist",
            ),
            (
                Service {
                    agents: vec!["ghost".into()],
                    probes: Vec::new(),
                    ..portal.clone()
                },
                "agent \"ghost\" is not enrolled",
            ),
            (
                Service {
                    probes: vec!["ghost:web".into()],
                    ..portal.clone()
                },
                "agent \"ghost\" is not enrolled",
            ),
            (
                Service {
                    agents: Vec::new(),
                    probes: vec!["web".into()],
                    ..portal.clone()
                },
                "AGENT:web",
            ),
            (
                Service {
                    probes: vec![":web".into()],
                    ..portal.clone()
                },
                "expected AGENT:PROBE",
            ),
            (
                Service {
                    latency_objective_ms: 0,
                    ..portal.clone()
                },
                "latency_objective_ms is 0",
            ),
            (
                Service {
                    id: "a/b".into(),
                    ..portal.clone()
                },
                "service id",
            ),
            (
                Service {
                    probes: vec!["web".into(), "a1:web".into()],
                    ..portal.clone()
                },
                "listed twice",
            ),
        ] {
            let message = bad_request(f.admin.service_put("ops-lead", service));
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
        assert!(f.admin.services().unwrap().is_empty());
        let message = bad_request(f.admin.service_report("gov-portal", "2026/11"));
        assert!(message.contains("YYYY-MM"), "{message}");
    }

    #[test]
    fn only_probe_checks_enter_the_history_with_their_latency_in_ms() {
        let probe = |status: u8, value: Option<f64>, uom: &str, error: Option<&str>| CheckResult {
            name: "pushed.web".into(),
            convention: "probe".into(),
            status,
            perfdata: vec![PerfDatum {
                label: "time".into(),
                value,
                uom: uom.into(),
                ..PerfDatum::default()
            }],
            started_ms: 42,
            error: error.map(str::to_owned),
            ..CheckResult::default()
        };
        let row = |result: CheckResult| crate::inventory::probe_result(&result);
        let record =
            |ok, latency_ms| Some((42, crate::store::ProbeResultRecord { ok, latency_ms }));
        assert_eq!(
            row(probe(0, Some(0.25), "s", None)),
            record(true, Some(250))
        );
        assert_eq!(
            row(probe(0, Some(12.4), "ms", None)),
            record(true, Some(12))
        );
        assert_eq!(
            row(probe(0, Some(1500.0), "us", None)),
            record(true, Some(2))
        );
        assert_eq!(
            row(probe(1, Some(0.25), "s", None)),
            record(false, Some(250))
        );
        assert_eq!(row(probe(0, None, "s", None)), record(true, None));
        assert_eq!(row(probe(0, Some(-1.0), "s", None)), record(true, None));
        assert_eq!(
            row(probe(0, Some(0.1), "s", Some("timed out"))),
            record(false, Some(100))
        );
        let nagios = CheckResult {
            convention: "nagios".into(),
            ..probe(0, Some(0.1), "s", None)
        };
        assert_eq!(row(nagios), None);
    }
}
