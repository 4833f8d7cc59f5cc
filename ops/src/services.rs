//! 服务在线: the service catalog and its three figures — availability, reliability (failures,
//! MTBF, MTTR) and the service-provision rate — per service and period, from a timeline of
//! probe results and agent up intervals, with maintenance time left out.
//!
//! A [`Service`] is watched through its probes (synthetic checks: an HTTP request, a TCP
//! connect) and its agents (the hosts it runs on, up while they send heartbeats). The caller
//! builds one [`Timeline`] from the probe results and the agents' up intervals and asks for the
//! [`ServiceFigures`] of each service for a [`Period`] `[from, to)` (see [`parse_month_cst`] for
//! a calendar month), or for its [`ServiceStatus`] at an instant.
//!
//! # Definitions
//!
//! **State at an instant `t`.** The service is *in maintenance* at `t` when a maintenance window
//! covers its division (a window on that division or one above it), or when every one of its
//! agents is covered at `t` (by any windows: the agent's own, or its division's). A window on
//! some of its agents only does not make the service's time maintenance. Outside maintenance,
//! the service is *DOWN* at `t` when the latest result at or before `t` of any of its probes
//! failed (`ok == false`), or when any of its agents is not inside one of its up intervals;
//! it is *UP* otherwise. Before a probe's first result its state is unknown and counts as up,
//! so pass each probe's last result before `from` too, or an outage in progress at `from` is
//! missed. An agent without any up interval is down throughout: it has never sent a heartbeat.
//! A slow answer (`ok`, latency over the objective) is up; it only lowers the provision rate.
//!
//! With `P` the period's length, `M` the maintenance time in it, `U` the up time and `D` the
//! down time outside maintenance (`U + D = P − M`):
//!
//! - **Availability** = `U / (P − M)`, as a percentage; `None` when the whole period is
//!   maintenance.
//! - **Failures** = the moments in the period, outside maintenance, at which the service
//!   becomes DOWN: from UP, or from maintenance when a window ends with the service down (the
//!   unplanned outage users see starts there). An outage already under way when the period
//!   starts is not counted again (its down time is). **MTBF** = `U / failures` and
//!   **MTTR** = `D / failures`, rounded down to the millisecond; `None` without failures.
//! - **Service-provision rate** = the share of probe checks made in the period outside
//!   maintenance that were answered successfully: `ok` and a latency at or under the service's
//!   `latency_objective_ms`. A check that reports no latency cannot show it met the objective
//!   and is not provided. `None` when there were no checks.
//!
//! Probe results may come in any order: [`Timeline::new`] sorts them (results reach the control
//! plane from several agents and retries, so arrival order means nothing). Results of one probe
//! with the same timestamp are one check: an agent's outbox delivers at least once, so a copy
//! must not count twice; when the copies differ, the worst one counts (a failure over a
//! success, then the higher latency), so that a conflicting pair never hides a failure.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::kpi::{Period, PeriodError};
use crate::maintenance::{self, DivisionOf, MaintenanceWindow, Subject};
use crate::model::{DivisionCode, Millis};
use crate::spans::{self, Span};

/// A service of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub owner_team: String,
    /// The division that runs the service; its maintenance windows are the service's.
    pub division: DivisionCode,
    /// The agents (hosts) the service needs: any of them down is the service down.
    #[serde(default)]
    pub agents: Vec<String>,
    /// The probes that check the service from outside: any failing is the service down.
    #[serde(default)]
    pub probes: Vec<String>,
    /// The slowest answer that still counts as service provided.
    pub latency_objective_ms: u64,
}

/// Why a service (or a catalog) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("a service has no id")]
    MissingId,
    #[error("service {id}: `{field}` is empty")]
    MissingField { id: String, field: &'static str },
    #[error("service {id}: no agents and no probes, so nothing tells whether it is up")]
    NothingWatched { id: String },
    #[error("service {id}: an entry of `{list}` is empty")]
    EmptyEntry { id: String, list: &'static str },
    #[error("service {id}: `{name}` is listed twice in `{list}`")]
    DuplicateEntry {
        id: String,
        list: &'static str,
        name: String,
    },
    #[error("service {id}: latency_objective_ms is 0; give the slowest acceptable answer in ms")]
    ZeroLatencyObjective { id: String },
    #[error("service id {id} is used twice in the catalog")]
    DuplicateService { id: String },
}

impl Service {
    /// Checks a service before it is stored: an id, a name, an owner team and a division, at
    /// least one agent or probe, no empty or repeated entries, and a latency objective above 0.
    pub fn validate(&self) -> Result<(), ServiceError> {
        if self.id.trim().is_empty() {
            return Err(ServiceError::MissingId);
        }
        let id = || self.id.clone();
        for (field, value) in [
            ("name", &self.name),
            ("owner_team", &self.owner_team),
            ("division", &self.division),
        ] {
            if value.trim().is_empty() {
                return Err(ServiceError::MissingField { id: id(), field });
            }
        }
        if self.agents.is_empty() && self.probes.is_empty() {
            return Err(ServiceError::NothingWatched { id: id() });
        }
        for (list, names) in [("agents", &self.agents), ("probes", &self.probes)] {
            let mut seen = BTreeSet::new();
            for name in names {
                if name.trim().is_empty() {
                    return Err(ServiceError::EmptyEntry { id: id(), list });
                }
                if !seen.insert(name.as_str()) {
                    return Err(ServiceError::DuplicateEntry {
                        id: id(),
                        list,
                        name: name.clone(),
                    });
                }
            }
        }
        if self.latency_objective_ms == 0 {
            return Err(ServiceError::ZeroLatencyObjective { id: id() });
        }
        Ok(())
    }
}

/// Validates every service of a catalog and that no id is used twice; the first problem found
/// is returned.
pub fn validate_catalog(services: &[Service]) -> Result<(), ServiceError> {
    let mut ids = BTreeSet::new();
    for service in services {
        service.validate()?;
        if !ids.insert(service.id.as_str()) {
            return Err(ServiceError::DuplicateService {
                id: service.id.clone(),
            });
        }
    }
    Ok(())
}

/// Each agent's up intervals `[start, end)` from its heartbeats, by agent id.
pub type AgentUptime = BTreeMap<String, Vec<(Millis, Millis)>>;

/// One result of a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: String,
    pub at: Millis,
    pub ok: bool,
    pub latency_ms: Option<u64>,
}

/// One check of a probe, after sorting and de-duplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Check {
    at: Millis,
    ok: bool,
    latency_ms: Option<u64>,
}

impl Check {
    fn provided(&self, objective_ms: u64) -> bool {
        self.ok
            && self
                .latency_ms
                .is_some_and(|latency| latency <= objective_ms)
    }
}

/// Why a timeline could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    #[error("agent {agent}: up interval [{start}, {end}) ends before it starts")]
    ReversedUpInterval {
        agent: String,
        start: Millis,
        end: Millis,
    },
}

/// The probe results and agent up intervals the figures are computed from, sorted and merged
/// once for the whole catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Per probe, one check per timestamp, in time order.
    probes: BTreeMap<String, Vec<Check>>,
    /// Per agent, its up intervals, merged.
    agents: BTreeMap<String, Vec<Span>>,
}

impl Timeline {
    /// Builds the timeline from probe results in any order (results of one probe at one
    /// timestamp become one check, the worst of them) and each agent's up intervals
    /// `[start, end)` from heartbeats (overlaps merged; an empty interval is ignored, one that
    /// ends before it starts is refused).
    pub fn new(results: &[ProbeResult], agent_up: &AgentUptime) -> Result<Timeline, TimelineError> {
        let mut probes: BTreeMap<String, Vec<Check>> = BTreeMap::new();
        for result in results {
            probes.entry(result.probe.clone()).or_default().push(Check {
                at: result.at,
                ok: result.ok,
                latency_ms: result.latency_ms,
            });
        }
        for checks in probes.values_mut() {
            // Worst first within a timestamp: failed before ok, then the slowest (no latency
            // counts as the slowest), so that `dedup_by_key` keeps the worst copy.
            checks.sort_unstable_by_key(|check| {
                (
                    check.at,
                    check.ok,
                    Reverse(check.latency_ms.unwrap_or(u64::MAX)),
                )
            });
            checks.dedup_by_key(|check| check.at);
        }
        let mut agents = BTreeMap::new();
        for (agent, intervals) in agent_up {
            agents.insert(agent.clone(), up_spans(agent, intervals)?);
        }
        Ok(Timeline { probes, agents })
    }
}

impl Timeline {
    /// A probe's checks in time order; none for a probe that never reported.
    fn probe_checks(&self, probe: &str) -> &[Check] {
        self.probes.get(probe).map_or(&[], Vec::as_slice)
    }

    /// An agent's up intervals, merged; none for an agent that never sent a heartbeat.
    fn agent_up(&self, agent: &str) -> &[Span] {
        self.agents.get(agent).map_or(&[], Vec::as_slice)
    }
}

fn up_spans(agent: &str, intervals: &[(Millis, Millis)]) -> Result<Vec<Span>, TimelineError> {
    if let Some(&(start, end)) = intervals.iter().find(|(start, end)| end < start) {
        return Err(TimelineError::ReversedUpInterval {
            agent: agent.to_string(),
            start,
            end,
        });
    }
    Ok(spans::normalise(intervals.to_vec()))
}

/// The state of a service at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    Up,
    Down,
    Maintenance,
    /// Nothing has been heard of the service yet: no probe result and no agent heartbeat at or
    /// before the instant. (Availability has no unknown: such time counts as the definitions
    /// say.)
    Unknown,
}

/// The counters behind a service's figures for one period; the figures are methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFigures {
    pub service: String,
    pub period: Period,
    /// Time of the period in maintenance (`M`).
    pub maintenance_ms: Millis,
    /// Up time outside maintenance (`U`).
    pub up_ms: Millis,
    /// Down time outside maintenance (`D`).
    pub down_ms: Millis,
    pub failures: u64,
    /// Probe checks in the period outside maintenance.
    pub checks: u64,
    /// Of those, the ones answered `ok` within the latency objective.
    pub provided_checks: u64,
}

/// The figures shown for a service and period; `None` where there is nothing to divide by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub service: String,
    pub availability_percent: Option<f64>,
    pub failures: u64,
    pub mtbf_ms: Option<Millis>,
    pub mttr_ms: Option<Millis>,
    pub provision_rate_percent: Option<f64>,
    pub maintenance_ms: Millis,
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    if whole == 0 {
        return None;
    }
    // u64 → f64 is exact below 2^53 ms (285,000 years).
    Some(part as f64 * 100.0 / whole as f64)
}

impl ServiceFigures {
    /// `U / (P − M)` in percent; `None` when the whole period was maintenance.
    pub fn availability_percent(&self) -> Option<f64> {
        percent(self.up_ms, self.up_ms + self.down_ms)
    }

    /// Mean time between failures, `U / failures`; `None` without failures.
    pub fn mtbf_ms(&self) -> Option<Millis> {
        self.up_ms.checked_div(self.failures)
    }

    /// Mean time to repair, `D / failures`; `None` without failures.
    pub fn mttr_ms(&self) -> Option<Millis> {
        self.down_ms.checked_div(self.failures)
    }

    /// Provided checks over checks, in percent; `None` without checks.
    pub fn provision_rate_percent(&self) -> Option<f64> {
        percent(self.provided_checks, self.checks)
    }

    pub fn summary(&self) -> ServiceSummary {
        ServiceSummary {
            service: self.service.clone(),
            availability_percent: self.availability_percent(),
            failures: self.failures,
            mtbf_ms: self.mtbf_ms(),
            mttr_ms: self.mttr_ms(),
            provision_rate_percent: self.provision_rate_percent(),
            maintenance_ms: self.maintenance_ms,
        }
    }
}

/// The service's maintenance time within `[from, to)`: its division covered, or every one of
/// its agents covered.
fn maintenance_spans(
    service: &Service,
    windows: &[MaintenanceWindow],
    divisions: &dyn DivisionOf,
    from: Millis,
    to: Millis,
) -> Vec<Span> {
    let division = Subject::Division(&service.division);
    let mut spans = maintenance::coverage(windows, divisions, division, from, to);
    if !service.agents.is_empty() {
        let mut every_agent = spans::clip([(from, to)], from, to);
        for agent in &service.agents {
            let covered =
                maintenance::coverage(windows, divisions, Subject::Agent(agent), from, to);
            every_agent = spans::intersect(&every_agent, &covered);
        }
        spans.extend(every_agent);
    }
    spans::normalise(spans)
}

/// The time within `[from, to)` at which the service is DOWN, maintenance not considered.
fn down_spans(service: &Service, timeline: &Timeline, from: Millis, to: Millis) -> Vec<Span> {
    let mut down = Vec::new();
    for probe in &service.probes {
        let checks = timeline.probe_checks(probe);
        // Only the last result at or before `from` and those up to `to` matter; the timeline
        // may hold months of them.
        let first = checks
            .partition_point(|check| check.at <= from)
            .saturating_sub(1);
        let end = checks.partition_point(|check| check.at < to);
        for index in first..end {
            let check = checks[index];
            if !check.ok {
                // A failure holds until the probe's next result.
                let until = checks.get(index + 1).map_or(to, |next| next.at);
                down.push((check.at, until));
            }
        }
    }
    for agent in &service.agents {
        down.extend(spans::complement(timeline.agent_up(agent), from, to));
    }
    spans::clip(down, from, to)
}

/// The availability, reliability and provision figures of `service` for `period` (see the
/// module documentation for the definitions).
pub fn service_figures(
    service: &Service,
    timeline: &Timeline,
    windows: &[MaintenanceWindow],
    divisions: &dyn DivisionOf,
    period: Period,
) -> ServiceFigures {
    let (from, to) = (period.from(), period.to());
    // One millisecond before the period tells whether an outage was already under way.
    let before = from.checked_sub(1);
    let start = before.unwrap_or(from);
    let maintenance = maintenance_spans(service, windows, divisions, start, to);
    let down = down_spans(service, timeline, start, to);

    let counted = spans::subtract(&spans::clip([(from, to)], from, to), &maintenance);
    let counted_ms = spans::length(&counted);
    let down_outside = spans::intersect(&counted, &down);
    let down_ms = spans::length(&down_outside);

    let carried_in = before.is_some_and(|instant| {
        spans::contains(&down, instant) && !spans::contains(&maintenance, instant)
    });
    let failures = down_outside
        .iter()
        .filter(|&&(begin, _)| !(begin == from && carried_in))
        .count() as u64;

    let mut checks = 0;
    let mut provided_checks = 0;
    for probe in &service.probes {
        let results = timeline.probe_checks(probe);
        let in_period = results.partition_point(|check| check.at < from)
            ..results.partition_point(|check| check.at < to);
        for check in &results[in_period] {
            if !spans::contains(&maintenance, check.at) {
                checks += 1;
                provided_checks += u64::from(check.provided(service.latency_objective_ms));
            }
        }
    }

    ServiceFigures {
        service: service.id.clone(),
        period,
        maintenance_ms: (to - from) - counted_ms,
        up_ms: counted_ms - down_ms,
        down_ms,
        failures,
        checks,
        provided_checks,
    }
}

/// The state of `service` at `at`: MAINTENANCE before anything else, UNKNOWN when nothing has
/// been heard of it yet, then DOWN or UP as in the definitions.
pub fn status_at(
    service: &Service,
    timeline: &Timeline,
    windows: &[MaintenanceWindow],
    divisions: &dyn DivisionOf,
    at: Millis,
) -> ServiceStatus {
    let next = at.saturating_add(1);
    if spans::contains(
        &maintenance_spans(service, windows, divisions, at, next),
        at,
    ) {
        return ServiceStatus::Maintenance;
    }
    let probe_heard = service.probes.iter().any(|probe| {
        timeline
            .probe_checks(probe)
            .first()
            .is_some_and(|first| first.at <= at)
    });
    let agent_heard = service.agents.iter().any(|agent| {
        timeline
            .agent_up(agent)
            .first()
            .is_some_and(|&(start, _)| start <= at)
    });
    if !probe_heard && !agent_heard {
        return ServiceStatus::Unknown;
    }
    if spans::contains(&down_spans(service, timeline, at, next), at) {
        ServiceStatus::Down
    } else {
        ServiceStatus::Up
    }
}

/// The availability of one agent over `period` in percent: the time inside its up intervals
/// (from heartbeats) over the period's time outside the maintenance windows covering the agent.
/// `None` when the whole period is maintenance; an error for an interval that ends before it
/// starts.
pub fn agent_availability(
    agent: &str,
    up_intervals: &[(Millis, Millis)],
    windows: &[MaintenanceWindow],
    divisions: &dyn DivisionOf,
    period: Period,
) -> Result<Option<f64>, TimelineError> {
    let (from, to) = (period.from(), period.to());
    let up = up_spans(agent, up_intervals)?;
    let maintenance = maintenance::coverage(windows, divisions, Subject::Agent(agent), from, to);
    let counted = spans::subtract(&spans::clip([(from, to)], from, to), &maintenance);
    let up_ms = spans::length(&spans::intersect(&counted, &up));
    Ok(percent(up_ms, spans::length(&counted)))
}

/// Why a month could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonthError {
    #[error("`{0}` is not a month of the form YYYY-MM")]
    Format(String),
    #[error(transparent)]
    Period(#[from] PeriodError),
}

/// The calendar month `YYYY-MM` in China Standard Time, as a [`Period`] in UTC milliseconds:
/// `"2026-11"` is [2026-11-01 00:00 CST, 2026-12-01 00:00 CST).
pub fn parse_month_cst(text: &str) -> Result<Period, MonthError> {
    let format = || MonthError::Format(text.to_string());
    let (year, month) = text.trim().split_once('-').ok_or_else(format)?;
    let digits = |part: &str, width: usize| {
        part.len() == width && part.bytes().all(|byte| byte.is_ascii_digit())
    };
    if !digits(year, 4) || !digits(month, 2) {
        return Err(format());
    }
    let year: i32 = year.parse().map_err(|_| format())?;
    let month: u32 = month.parse().map_err(|_| format())?;
    Ok(Period::month_cst(year, month)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::Target;
    use crate::maintenance::tests::{Tree, window};
    use crate::model::{DAY, HOUR, MINUTE};

    /// 2026-11-02 09:00 CST.
    const T: Millis = 1_793_581_200_000;

    fn m(minutes: u64) -> Millis {
        T + minutes * MINUTE
    }

    fn hour() -> Period {
        Period::new(T, T + HOUR).unwrap()
    }

    /// The Nanning government portal, run by city 4501 on one host in each of two counties.
    fn portal() -> Service {
        Service {
            id: "gov-portal".into(),
            name: "南宁市政务服务门户".into(),
            owner_team: "nanning-app".into(),
            division: "4501".into(),
            agents: vec!["a-nanning-1".into(), "a-nanning-2".into()],
            probes: vec!["http-portal".into(), "dns-portal".into(), "tcp-db".into()],
            latency_objective_ms: 500,
        }
    }

    fn result(probe: &str, at: Millis, ok: bool, latency_ms: Option<u64>) -> ProbeResult {
        ProbeResult {
            probe: probe.into(),
            at,
            ok,
            latency_ms,
        }
    }

    fn ok(probe: &str, at: Millis, latency_ms: u64) -> ProbeResult {
        result(probe, at, true, Some(latency_ms))
    }

    fn failed(probe: &str, at: Millis) -> ProbeResult {
        result(probe, at, false, None)
    }

    /// The scripted hour [T, T+60 min):
    /// - `http-portal` every 5 minutes from T−5 to T+55: fails at 10 (down [10, 15)), answers
    ///   slowly (900 ms) at 25, fails at 40 and 45 (down [40, 50)), otherwise ok in 120 ms;
    /// - `dns-portal` ok in 10 ms at 0 and ok without a latency at 20;
    /// - `tcp-db` never reports (unknown, counted as up);
    /// - `a-nanning-1` up throughout; `a-nanning-2` down [30, 33);
    /// - maintenance on city 4501 during [45, 55), overlapping the second outage; a window on
    ///   `a-nanning-1` alone during [0, 5), which is not service maintenance.
    fn script() -> (Vec<ProbeResult>, AgentUptime) {
        let mut results = vec![ok("http-portal", T - 5 * MINUTE, 120)];
        for minute in (0..60).step_by(5) {
            results.push(match minute {
                10 | 40 | 45 => failed("http-portal", m(minute)),
                25 => ok("http-portal", m(minute), 900),
                _ => ok("http-portal", m(minute), 120),
            });
        }
        results.push(ok("dns-portal", m(0), 10));
        results.push(result("dns-portal", m(20), true, None));
        let up = BTreeMap::from([
            ("a-nanning-1".to_string(), vec![(T - HOUR, T + 2 * HOUR)]),
            (
                "a-nanning-2".to_string(),
                vec![(T - HOUR, m(30)), (m(33), T + 2 * HOUR)],
            ),
        ]);
        (results, up)
    }

    fn script_windows() -> Vec<MaintenanceWindow> {
        vec![
            window("w-city", Target::Division("4501".into()), m(45), m(55)),
            window("w-host", Target::Agent("a-nanning-1".into()), m(0), m(5)),
            // Liuzhou's window is none of this service's business.
            window("w-liuzhou", Target::Division("4502".into()), m(0), m(60)),
        ]
    }

    fn figures_of(
        service: &Service,
        results: &[ProbeResult],
        up: &AgentUptime,
        windows: &[MaintenanceWindow],
        period: Period,
    ) -> ServiceFigures {
        let timeline = Timeline::new(results, up).unwrap();
        service_figures(service, &timeline, windows, &Tree::guangxi(), period)
    }

    fn assert_percent(actual: Option<f64>, expected: f64) {
        let actual = actual.unwrap();
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn the_scripted_hour_matches_the_hand_computed_figures() {
        let (results, up) = script();
        let figures = figures_of(&portal(), &results, &up, &script_windows(), hour());
        // P = 60 min; M = [45, 55) = 10 min (w-host covers one agent of two: not counted).
        assert_eq!(figures.maintenance_ms, 10 * MINUTE);
        // DOWN = http [10, 15) ∪ agent-2 [30, 33) ∪ http [40, 50); minus M: [40, 45) remains.
        // D = 5 + 3 + 5 = 13 min.
        assert_eq!(figures.down_ms, 13 * MINUTE);
        // U = P − M − D = 60 − 10 − 13 = 37 min (the slow answer at 25 is up).
        assert_eq!(figures.up_ms, 37 * MINUTE);
        // Availability = 37 / 50 = 74 %.
        assert_percent(figures.availability_percent(), 74.0);
        // UP→DOWN at 10, 30 and 40 (at 55 the maintenance ends with the service up).
        assert_eq!(figures.failures, 3);
        // MTBF = 37 min / 3 = 740,000 ms; MTTR = 13 min / 3 = 260,000 ms.
        assert_eq!(figures.mtbf_ms(), Some(740_000));
        assert_eq!(figures.mttr_ms(), Some(260_000));
        // Checks: http at 0..55 = 12, minus 45 and 50 (maintenance) = 10, plus dns 0 and 20
        // = 12 (T−5 is before the period). Provided: http 10 − failed 10, 40 − slow 25 = 7;
        // dns 0 = 1 (dns 20 has no latency): 8 of 12 = 66.67 %.
        assert_eq!((figures.provided_checks, figures.checks), (8, 12));
        assert_percent(figures.provision_rate_percent(), 800.0 / 12.0);
        let summary = figures.summary();
        assert_eq!(summary.failures, 3);
        assert_eq!(summary.mttr_ms, Some(260_000));
        assert_percent(summary.availability_percent, 74.0);
    }

    #[test]
    fn the_status_follows_the_script() {
        let (results, up) = script();
        let timeline = Timeline::new(&results, &up).unwrap();
        let tree = Tree::guangxi();
        let windows = script_windows();
        let status = |at| status_at(&portal(), &timeline, &windows, &tree, at);
        assert_eq!(status(m(0)), ServiceStatus::Up);
        // The failure at 10 holds until the next result at 15.
        assert_eq!(status(m(10)), ServiceStatus::Down);
        assert_eq!(status(m(15) - 1), ServiceStatus::Down);
        assert_eq!(status(m(15)), ServiceStatus::Up);
        // Slow but ok is up.
        assert_eq!(status(m(26)), ServiceStatus::Up);
        // a-nanning-2 down.
        assert_eq!(status(m(31)), ServiceStatus::Down);
        assert_eq!(status(m(44)), ServiceStatus::Down);
        // Down, but in maintenance: maintenance wins.
        assert_eq!(status(m(47)), ServiceStatus::Maintenance);
        assert_eq!(status(m(55)), ServiceStatus::Up);
        // Before anything was heard: a-nanning-1 has been up since T−1 h, so only a service
        // watched by silent probes alone is unknown.
        assert_eq!(status(T - 2 * HOUR), ServiceStatus::Unknown);
        let silent = Service {
            agents: vec![],
            probes: vec!["tcp-db".into()],
            ..portal()
        };
        assert_eq!(
            status_at(&silent, &timeline, &windows, &tree, m(30)),
            ServiceStatus::Unknown
        );
    }

    #[test]
    fn results_in_any_order_give_the_same_figures() {
        let (results, up) = script();
        let mut reversed = results.clone();
        reversed.reverse();
        let mut interleaved = results.clone();
        interleaved.rotate_left(5);
        let ordered = figures_of(&portal(), &results, &up, &script_windows(), hour());
        for shuffled in [reversed, interleaved] {
            assert_eq!(
                figures_of(&portal(), &shuffled, &up, &script_windows(), hour()),
                ordered
            );
        }
        // Up intervals in any order, overlapping, or split, too.
        let messy = BTreeMap::from([
            (
                "a-nanning-1".to_string(),
                vec![(T, T + 2 * HOUR), (T - HOUR, T + HOUR)],
            ),
            (
                "a-nanning-2".to_string(),
                vec![(m(33), T + 2 * HOUR), (m(10), m(30)), (T - HOUR, m(20))],
            ),
        ]);
        assert_eq!(
            figures_of(&portal(), &results, &messy, &script_windows(), hour()),
            ordered
        );
    }

    #[test]
    fn a_repeated_result_counts_once_and_a_conflicting_one_as_a_failure() {
        let service = Service {
            agents: vec![],
            probes: vec!["http-portal".into()],
            ..portal()
        };
        let up = BTreeMap::new();
        // The result at 0 delivered twice: one check, provided.
        let twice = vec![
            ok("http-portal", m(0), 100),
            ok("http-portal", m(0), 100),
            ok("http-portal", m(30), 100),
        ];
        let figures = figures_of(&service, &twice, &up, &[], hour());
        assert_eq!((figures.provided_checks, figures.checks), (2, 2));
        assert_eq!(figures.down_ms, 0);
        // At 30 one copy failed and one did not: the failure counts. Down [30, 60) = 30 min,
        // one failure; checks 2, provided 1.
        let conflicting = vec![
            ok("http-portal", m(0), 100),
            ok("http-portal", m(30), 100),
            failed("http-portal", m(30)),
        ];
        let figures = figures_of(&service, &conflicting, &up, &[], hour());
        assert_eq!(figures.down_ms, 30 * MINUTE);
        assert_eq!(figures.failures, 1);
        assert_eq!((figures.provided_checks, figures.checks), (1, 2));
        // Two ok copies with different latencies: the slower one counts (700 > 500).
        let slow_copy = vec![ok("http-portal", m(0), 100), ok("http-portal", m(0), 700)];
        let figures = figures_of(&service, &slow_copy, &up, &[], hour());
        assert_eq!((figures.provided_checks, figures.checks), (0, 1));
        assert_eq!(figures.down_ms, 0);
    }

    #[test]
    fn a_period_entirely_in_maintenance_has_no_figures() {
        let (results, up) = script();
        let windows = vec![window(
            "w-region",
            Target::Division("45".into()),
            T - DAY,
            T + DAY,
        )];
        let figures = figures_of(&portal(), &results, &up, &windows, hour());
        assert_eq!(figures.maintenance_ms, HOUR);
        assert_eq!(
            (figures.up_ms, figures.down_ms, figures.failures),
            (0, 0, 0)
        );
        assert_eq!(figures.availability_percent(), None);
        assert_eq!(figures.mtbf_ms(), None);
        assert_eq!(figures.mttr_ms(), None);
        assert_eq!(figures.checks, 0);
        assert_eq!(figures.provision_rate_percent(), None);
        // And the summary serialises without NaN (JSON has none).
        let json = serde_json::to_string(&figures.summary()).unwrap();
        assert!(json.contains("\"availability_percent\":null"), "{json}");
    }

    #[test]
    fn an_empty_period_cannot_be_formed() {
        assert_eq!(
            Period::new(T, T).unwrap_err(),
            PeriodError::Empty { from: T, to: T }
        );
    }

    #[test]
    fn every_agent_in_maintenance_is_service_maintenance() {
        // a-nanning-1 covered [0, 20) by its own window, a-nanning-2 [10, 30) by its county's:
        // both covered during [10, 20) = 10 min.
        let windows = vec![
            window("w-1", Target::Agent("a-nanning-1".into()), m(0), m(20)),
            window("w-2", Target::Division("450103".into()), m(10), m(30)),
        ];
        let (results, up) = script();
        let figures = figures_of(&portal(), &results, &up, &windows, hour());
        assert_eq!(figures.maintenance_ms, 10 * MINUTE);
        // The outage [10, 15) is now maintenance; left: [30, 33) and [40, 50) = 13 min, two
        // failures; U = 60 − 10 − 13 = 37 min.
        assert_eq!(figures.down_ms, 13 * MINUTE);
        assert_eq!(figures.failures, 2);
        assert_eq!(figures.up_ms, 37 * MINUTE);
    }

    #[test]
    fn an_outage_under_way_at_the_start_is_not_a_new_failure() {
        let service = Service {
            agents: vec![],
            probes: vec!["http-portal".into()],
            ..portal()
        };
        let up = BTreeMap::new();
        // Failed at T−10, back at 5: down [0, 5) in the period, no failure in it.
        let results = vec![
            failed("http-portal", T - 10 * MINUTE),
            ok("http-portal", m(5), 100),
        ];
        let figures = figures_of(&service, &results, &up, &[], hour());
        assert_eq!(figures.down_ms, 5 * MINUTE);
        assert_eq!(figures.failures, 0);
        assert_eq!(figures.mttr_ms(), None);
        // Without the result before the period, the start is unknown: up.
        let figures = figures_of(&service, &results[1..], &up, &[], hour());
        assert_eq!(figures.down_ms, 0);
        // A failure at exactly T, after an ok before: a failure of this period.
        let results = vec![
            ok("http-portal", T - 10 * MINUTE, 100),
            failed("http-portal", T),
            ok("http-portal", m(5), 100),
        ];
        let figures = figures_of(&service, &results, &up, &[], hour());
        assert_eq!((figures.down_ms, figures.failures), (5 * MINUTE, 1));
    }

    #[test]
    fn only_the_last_result_before_the_period_carries_in() {
        let service = Service {
            agents: vec![],
            probes: vec!["http-portal".into()],
            ..portal()
        };
        let up = AgentUptime::new();
        // A day of history: failures long ago, ok at T−1 h, failed at T−1 min (the last one
        // before the period), ok at 2, and results after the period that must not count.
        let mut results: Vec<ProbeResult> = (1..24)
            .map(|hours| failed("http-portal", T - DAY + hours * MINUTE))
            .collect();
        results.push(ok("http-portal", T - HOUR, 100));
        results.push(failed("http-portal", T - MINUTE));
        results.push(ok("http-portal", m(2), 100));
        results.push(failed("http-portal", m(60)));
        results.push(failed("http-portal", m(90)));
        let figures = figures_of(&service, &results, &up, &[], hour());
        // Down [0, 2) only, carried in: no failure; one check (at 2), provided.
        assert_eq!((figures.down_ms, figures.failures), (2 * MINUTE, 0));
        assert_eq!((figures.provided_checks, figures.checks), (1, 1));
        // The failure at exactly the end belongs to the next hour.
        let next = Period::new(m(60), m(120)).unwrap();
        let figures = figures_of(&service, &results, &up, &[], next);
        assert_eq!((figures.down_ms, figures.failures), (HOUR, 1));
        assert_eq!((figures.provided_checks, figures.checks), (0, 2));
    }

    #[test]
    fn an_outage_left_by_a_maintenance_window_is_a_failure() {
        let service = Service {
            agents: vec![],
            probes: vec!["http-portal".into()],
            ..portal()
        };
        let up = BTreeMap::new();
        // Maintenance [0, 10); the probe fails at 5 and is ok again at 20: the outage users see
        // is [10, 20) = 10 min, one failure (MAINTENANCE→DOWN at 10).
        let windows = vec![window("w", Target::Division("4501".into()), m(0), m(10))];
        let results = vec![
            ok("http-portal", m(0), 100),
            failed("http-portal", m(5)),
            ok("http-portal", m(20), 100),
        ];
        let figures = figures_of(&service, &results, &up, &windows, hour());
        assert_eq!(figures.down_ms, 10 * MINUTE);
        assert_eq!(figures.failures, 1);
        // U = 60 − 10 − 10 = 40 min; availability 40/50 = 80 %.
        assert_percent(figures.availability_percent(), 80.0);
        // Checks outside maintenance: only 20 (0 and 5 are inside it).
        assert_eq!((figures.provided_checks, figures.checks), (1, 1));
        // The same when the period starts as the window ends (down at T−1, but in maintenance).
        let later = Period::new(m(10), m(60)).unwrap();
        let figures = figures_of(&service, &results, &up, &windows, later);
        assert_eq!((figures.down_ms, figures.failures), (10 * MINUTE, 1));
    }

    #[test]
    fn an_agent_without_heartbeats_is_down() {
        let service = Service {
            probes: vec![],
            agents: vec!["a-nanning-1".into()],
            ..portal()
        };
        let figures = figures_of(&service, &[], &BTreeMap::new(), &[], hour());
        // Down throughout, and not a failure of this period (it was down before).
        assert_percent(figures.availability_percent(), 0.0);
        assert_eq!((figures.down_ms, figures.failures), (HOUR, 0));
        assert_eq!(figures.provision_rate_percent(), None);
    }

    #[test]
    fn a_reversed_up_interval_is_refused() {
        let up = BTreeMap::from([("a-nanning-1".to_string(), vec![(m(10), m(5))])]);
        assert_eq!(
            Timeline::new(&[], &up).unwrap_err(),
            TimelineError::ReversedUpInterval {
                agent: "a-nanning-1".into(),
                start: m(10),
                end: m(5)
            }
        );
        assert!(agent_availability("a", &[(m(10), m(5))], &[], &Tree::guangxi(), hour()).is_err());
    }

    #[test]
    fn agent_availability_leaves_maintenance_out() {
        let tree = Tree::guangxi();
        // Up [−10, 20) and [25, 50), overlapping copy [0, 5); maintenance [40, 55) on the
        // agent's county. Counted = 60 − 15 = 45 min; up inside it = [0, 20) + [25, 40) =
        // 35 min; 35 / 45 = 77.78 %.
        let up = [(T - 10 * MINUTE, m(20)), (m(25), m(50)), (m(0), m(5))];
        let windows = vec![window("w", Target::Division("450102".into()), m(40), m(55))];
        assert_percent(
            agent_availability("a-nanning-1", &up, &windows, &tree, hour()).unwrap(),
            3500.0 / 45.0,
        );
        // Another county's agent is not covered: [0, 20) + [25, 50) = 45 of 60 min = 75 %.
        assert_percent(
            agent_availability("a-nanning-2", &up, &windows, &tree, hour()).unwrap(),
            75.0,
        );
        // Entirely in maintenance: no figure.
        let all = vec![window(
            "w",
            Target::Agent("a-nanning-1".into()),
            T,
            T + HOUR,
        )];
        assert_eq!(
            agent_availability("a-nanning-1", &up, &all, &tree, hour()).unwrap(),
            None
        );
        // No heartbeat at all: 0 %.
        assert_percent(
            agent_availability("a-nanning-1", &[], &[], &tree, hour()).unwrap(),
            0.0,
        );
    }

    #[test]
    fn services_are_validated() {
        assert_eq!(portal().validate(), Ok(()));
        let check = |service: Service| service.validate().unwrap_err();
        assert_eq!(
            check(Service {
                id: " ".into(),
                ..portal()
            }),
            ServiceError::MissingId
        );
        assert_eq!(
            check(Service {
                owner_team: String::new(),
                ..portal()
            }),
            ServiceError::MissingField {
                id: "gov-portal".into(),
                field: "owner_team"
            }
        );
        assert_eq!(
            check(Service {
                agents: vec![],
                probes: vec![],
                ..portal()
            }),
            ServiceError::NothingWatched {
                id: "gov-portal".into()
            }
        );
        assert_eq!(
            check(Service {
                probes: vec!["p".into(), "".into()],
                ..portal()
            }),
            ServiceError::EmptyEntry {
                id: "gov-portal".into(),
                list: "probes"
            }
        );
        let duplicate = check(Service {
            agents: vec!["a".into(), "a".into()],
            ..portal()
        });
        assert_eq!(
            duplicate.to_string(),
            "service gov-portal: `a` is listed twice in `agents`"
        );
        assert_eq!(
            check(Service {
                latency_objective_ms: 0,
                ..portal()
            }),
            ServiceError::ZeroLatencyObjective {
                id: "gov-portal".into()
            }
        );
        assert_eq!(
            validate_catalog(&[portal(), portal()]).unwrap_err(),
            ServiceError::DuplicateService {
                id: "gov-portal".into()
            }
        );
        assert_eq!(validate_catalog(&[portal()]), Ok(()));
    }

    #[test]
    fn services_read_from_json() {
        let json = r#"{"id":"s","name":"n","owner_team":"t","division":"4501",
                       "probes":["p"],"latency_objective_ms":300}"#;
        let service: Service = serde_json::from_str(json).unwrap();
        assert!(service.agents.is_empty());
        assert_eq!(service.validate(), Ok(()));
        let typo = r#"{"id":"s","name":"n","owner_team":"t","division":"4501",
                       "probes":["p"],"latency_objective":300}"#;
        assert!(serde_json::from_str::<Service>(typo).is_err());
    }

    #[test]
    fn months_are_read_as_cst_calendar_months() {
        let november = parse_month_cst("2026-11").unwrap();
        // 2026-11-01 00:00 CST = 2026-10-31 16:00 UTC.
        assert_eq!(november.from(), 1_793_462_400_000);
        assert_eq!(november.to(), 1_793_462_400_000 + 30 * DAY);
        assert_eq!(november, Period::month_cst(2026, 11).unwrap());
        assert_eq!(
            parse_month_cst(" 2026-12 ").unwrap().to() - parse_month_cst("2026-12").unwrap().from(),
            31 * DAY
        );
        for bad in [
            "2026-1",
            "2026/11",
            "26-11",
            "2026-11-01",
            "",
            "２０２６-11",
            "+026-11",
        ] {
            assert_eq!(
                parse_month_cst(bad).unwrap_err(),
                MonthError::Format(bad.into()),
                "{bad}"
            );
        }
        assert_eq!(
            parse_month_cst("2026-13").unwrap_err(),
            MonthError::Period(PeriodError::InvalidMonth {
                year: 2026,
                month: 13
            })
        );
        assert!(parse_month_cst("2026-00").is_err());
        // 1970-01 starts before the epoch in UTC.
        assert!(matches!(
            parse_month_cst("1970-01"),
            Err(MonthError::Period(_))
        ));
        assert_eq!(
            parse_month_cst("2026-1").unwrap_err().to_string(),
            "`2026-1` is not a month of the form YYYY-MM"
        );
    }
}
