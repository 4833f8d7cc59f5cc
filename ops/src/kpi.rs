//! Work-order KPIs (管理在线) computed from the transition log alone: MTTA, MTTR, handling
//! time, SLA compliance, escalations and reopen rate, per team, per division rolled up the tree,
//! and per period.
//!
//! Only the log is read because the log is the record: an order's current row changes, the log
//! only grows, and every [`Transition`] carries what a KPI needs (owner, division, severity,
//! the SLA targets in force, the missed deadline, the added supervisor). The same log always
//! gives the same numbers, whatever order its lines come in.
//!
//! # Definitions
//!
//! Each metric is a set of samples; a sample belongs to the period [`Period`] `[from, to)` in
//! which the event that completes it happened, and to the team that owned the order right
//! after that event (the team that acknowledged, resolved, or held the order when it escalated).
//! Counting by the completing event means a finished period's figures do not change when orders
//! opened in it are resolved later.
//!
//! - **Opened**: orders detected (the `detect` transition) in the period; per team, the team the
//!   order was first dispatched to.
//! - **MTTA** (mean time to acknowledge): first transition into `ACKED` (an acknowledgement, or a
//!   take-over that counts as one) minus the last transition into `DISPATCHED` before it — the
//!   time the acknowledging team had the order, so a team is not charged for time the order
//!   spent with a team that returned it. Sampled at the acknowledgement.
//! - **MTTR** (mean time to resolve): first transition into `RESOLVED` minus detection. It starts
//!   at detection, not dispatch, because the hold-down and routing time is part of the outage the
//!   user saw. It ends at the first human resolution: the time to restore service; a resolution
//!   that did not hold shows up in the reopen rate, and verification latency is not repair time.
//!   Sampled at the first resolution.
//! - **Handling time**: first resolution minus first acknowledgement (the team's own working
//!   time). Sampled at the first resolution.
//! - **SLA compliance**: the share of orders that met their SLA among the orders judged in the
//!   period. An order is judged once, at its first human resolution, or at its automatic
//!   resolution if it never had one and had been dispatched: an order its team ignored until the
//!   source recovered by itself is still charged for the acknowledgement it missed. It met its
//!   SLA when, up to that moment, no deadline miss was logged (`missed`), its first
//!   acknowledgement came no later than the acknowledgement target carried on that transition,
//!   and its resolution no later than the handling target carried on it. Comparing with the
//!   targets, not only counting logged misses, keeps the figure right when a timer fires late
//!   (after a restart) and finds the order already acknowledged.
//! - **Escalations**: transitions that added a supervisor (a missed deadline or a manual
//!   escalation), charged to the owner at the time (no team while the order is returned).
//! - **Reopen rate**: among the orders first resolved in the period, the share that were reopened
//!   (a transition into `REOPENED`) after that resolution, at any time the log shows. It is the
//!   one figure that can still change after the period ends — by construction, mostly within the
//!   24 h reopen window.
//!
//! Orders that were ever `SUPPRESSED` are left out of MTTA, MTTR, handling time and SLA
//! compliance: their clocks were the cause order's, whose own figures carry the outage; counting
//! the symptoms too would weigh one fault thirty times. Automatically resolved orders give no
//! MTTA, MTTR or handling sample (nobody acknowledged or resolved them) and are not resolutions
//! for the reopen rate; they count for SLA compliance as said above. Means are rounded down to
//! the millisecond.
//!
//! Per division, an order counts for its own division and every ancestor the caller's `parent`
//! function names, so a city's figures include its counties' (the region sees every county).
//! A cycle in `parent` ends the walk instead of looping.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{CST_OFFSET, DAY, DivisionCode, Millis, WorkOrderState};
use crate::workorder::{CommandName, TeamId, Transition};

/// A half-open time range `[from, to)`; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    from: Millis,
    to: Millis,
}

/// Why a period could not be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("period [{from}, {to}) is empty: it must start before it ends")]
    Empty { from: Millis, to: Millis },
    #[error("month {year}-{month:02} is not a month from 1970 on")]
    InvalidMonth { year: i32, month: u32 },
}

impl Period {
    pub fn new(from: Millis, to: Millis) -> Result<Period, PeriodError> {
        if from >= to {
            return Err(PeriodError::Empty { from, to });
        }
        Ok(Period { from, to })
    }

    /// A calendar month in China Standard Time (the month `bagui-cp kpi --period 2026-11`
    /// means): from the 1st 00:00 CST to the 1st of the next month 00:00 CST.
    pub fn month_cst(year: i32, month: u32) -> Result<Period, PeriodError> {
        let invalid = PeriodError::InvalidMonth { year, month };
        if !(1..=12).contains(&month) {
            return Err(invalid);
        }
        let (next_year, next_month) = if month == 12 {
            (year.checked_add(1).ok_or(invalid.clone())?, 1)
        } else {
            (year, month + 1)
        };
        let start = cst_midnight(year, month).ok_or(invalid.clone())?;
        let end = cst_midnight(next_year, next_month).ok_or(invalid)?;
        Period::new(start, end)
    }

    pub fn from(&self) -> Millis {
        self.from
    }

    pub fn to(&self) -> Millis {
        self.to
    }

    pub fn contains(&self, at: Millis) -> bool {
        self.from <= at && at < self.to
    }
}

/// The first of a month, 00:00 CST, in Unix milliseconds; `None` before the epoch.
fn cst_midnight(year: i32, month: u32) -> Option<Millis> {
    let days = crate::calendar::days_from_civil(i64::from(year), i64::from(month), 1);
    let utc_ms = i128::from(days) * i128::from(DAY) - i128::from(CST_OFFSET);
    Millis::try_from(utc_ms).ok()
}

/// The KPI counters of one team, division or the whole log for one period. Kept as sums and
/// counts so that they add up across teams and divisions; the means and shares are methods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kpi {
    pub opened: u64,
    pub ack_samples: u64,
    pub ack_total_ms: Millis,
    pub repair_samples: u64,
    pub repair_total_ms: Millis,
    pub handling_samples: u64,
    pub handling_total_ms: Millis,
    pub sla_judged: u64,
    pub sla_met: u64,
    pub escalations: u64,
    pub resolved: u64,
    pub reopened: u64,
}

/// The figures shown for a [`Kpi`]: `None` where there were no samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiSummary {
    pub opened: u64,
    pub mtta_ms: Option<Millis>,
    pub mttr_ms: Option<Millis>,
    pub handling_time_ms: Option<Millis>,
    pub sla_compliance_percent: Option<f64>,
    pub escalations: u64,
    pub reopen_rate_percent: Option<f64>,
}

fn mean(total: Millis, samples: u64) -> Option<Millis> {
    total.checked_div(samples)
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    if whole == 0 {
        return None;
    }
    // u64 → f64 loses precision only above 2^53 orders.
    Some(part as f64 * 100.0 / whole as f64)
}

impl Kpi {
    pub fn mtta_ms(&self) -> Option<Millis> {
        mean(self.ack_total_ms, self.ack_samples)
    }

    pub fn mttr_ms(&self) -> Option<Millis> {
        mean(self.repair_total_ms, self.repair_samples)
    }

    pub fn handling_time_ms(&self) -> Option<Millis> {
        mean(self.handling_total_ms, self.handling_samples)
    }

    pub fn sla_compliance_percent(&self) -> Option<f64> {
        percent(self.sla_met, self.sla_judged)
    }

    pub fn reopen_rate_percent(&self) -> Option<f64> {
        percent(self.reopened, self.resolved)
    }

    pub fn summary(&self) -> KpiSummary {
        KpiSummary {
            opened: self.opened,
            mtta_ms: self.mtta_ms(),
            mttr_ms: self.mttr_ms(),
            handling_time_ms: self.handling_time_ms(),
            sla_compliance_percent: self.sla_compliance_percent(),
            escalations: self.escalations,
            reopen_rate_percent: self.reopen_rate_percent(),
        }
    }

    fn add(&mut self, sample: &Sample) {
        match sample.kind {
            SampleKind::Opened => self.opened += 1,
            SampleKind::Ack { ms } => {
                self.ack_samples += 1;
                self.ack_total_ms = self.ack_total_ms.saturating_add(ms);
            }
            SampleKind::Resolution {
                repair_ms,
                handling_ms,
                reopened,
            } => {
                self.resolved += 1;
                self.reopened += u64::from(reopened);
                if let Some(ms) = repair_ms {
                    self.repair_samples += 1;
                    self.repair_total_ms = self.repair_total_ms.saturating_add(ms);
                }
                if let Some(ms) = handling_ms {
                    self.handling_samples += 1;
                    self.handling_total_ms = self.handling_total_ms.saturating_add(ms);
                }
            }
            SampleKind::Sla { met } => {
                self.sla_judged += 1;
                self.sla_met += u64::from(met);
            }
            SampleKind::Escalation => self.escalations += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleKind {
    Opened,
    Ack {
        ms: Millis,
    },
    Resolution {
        repair_ms: Option<Millis>,
        handling_ms: Option<Millis>,
        reopened: bool,
    },
    Sla {
        met: bool,
    },
    Escalation,
}

/// One contribution of one order to the KPIs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sample {
    at: Millis,
    team: Option<TeamId>,
    division: DivisionCode,
    kind: SampleKind,
}

/// The log grouped by order, each order's lines in sequence order, duplicates (the same seq
/// twice, e.g. a replayed append) dropped.
fn by_order(log: &[Transition]) -> BTreeMap<&str, Vec<&Transition>> {
    let mut orders: BTreeMap<&str, Vec<&Transition>> = BTreeMap::new();
    for transition in log {
        orders
            .entry(transition.order_id.as_str())
            .or_default()
            .push(transition);
    }
    for lines in orders.values_mut() {
        lines.sort_by_key(|t| t.seq);
        lines.dedup_by_key(|t| t.seq);
    }
    orders
}

/// Every sample one order contributes, whatever the period.
fn order_samples(lines: &[&Transition]) -> Vec<Sample> {
    let mut samples = Vec::new();
    let Some(first) = lines.first() else {
        return samples;
    };
    let division = first.division.clone();
    let sample = |at: Millis, team: &Option<TeamId>, kind: SampleKind| Sample {
        at,
        team: team.clone(),
        division: division.clone(),
        kind,
    };
    let ever_suppressed = lines.iter().any(|t| t.to == WorkOrderState::Suppressed);
    let detected = lines.iter().find(|t| t.command == CommandName::Detect);
    let first_dispatch = lines.iter().find(|t| t.to == WorkOrderState::Dispatched);

    if let Some(detected) = detected {
        let team = first_dispatch.and_then(|t| t.team.clone());
        samples.push(sample(detected.at, &team, SampleKind::Opened));
    }

    let first_ack_index = lines
        .iter()
        .position(|t| t.to == WorkOrderState::Acked && t.from != WorkOrderState::Acked);
    if let (Some(index), false) = (first_ack_index, ever_suppressed) {
        let ack = lines[index];
        // Escalation notes (DISPATCHED → DISPATCHED) are not a hand-over; a reassignment is.
        let received = lines[..index].iter().rev().find(|t| {
            t.to == WorkOrderState::Dispatched
                && matches!(
                    t.command,
                    CommandName::Dispatch | CommandName::Reassign | CommandName::Reopen
                )
        });
        if let Some(received) = received {
            let ms = ack.at.saturating_sub(received.at);
            samples.push(sample(ack.at, &ack.team, SampleKind::Ack { ms }));
        }
    }

    let first_resolve_index = lines
        .iter()
        .position(|t| t.to == WorkOrderState::Resolved && t.command == CommandName::Resolve);
    if let Some(index) = first_resolve_index {
        let resolve = lines[index];
        let reopened = lines[index..]
            .iter()
            .any(|t| t.to == WorkOrderState::Reopened);
        let (repair_ms, handling_ms) = if ever_suppressed {
            (None, None)
        } else {
            let repair = detected.map(|d| resolve.at.saturating_sub(d.at));
            let handling = first_ack_index
                .filter(|&ack| ack < index)
                .map(|ack| resolve.at.saturating_sub(lines[ack].at));
            (repair, handling)
        };
        samples.push(sample(
            resolve.at,
            &resolve.team,
            SampleKind::Resolution {
                repair_ms,
                handling_ms,
                reopened,
            },
        ));
    }

    // The SLA is judged at the first human resolution, or else at the automatic resolution of
    // an order that had been dispatched.
    let judged_index = first_resolve_index.or_else(|| {
        let auto = lines
            .iter()
            .position(|t| t.to == WorkOrderState::AutoResolved)?;
        lines[..auto]
            .iter()
            .any(|t| t.to == WorkOrderState::Dispatched)
            .then_some(auto)
    });
    if let (Some(index), false) = (judged_index, ever_suppressed) {
        let judged = lines[index];
        let missed = lines[..=index].iter().any(|t| t.missed.is_some());
        let late_ack = first_ack_index
            .filter(|&ack| ack <= index)
            .map(|ack| lines[ack])
            .is_some_and(|ack| ack.ack_due_ms.is_some_and(|due| ack.at > due));
        let late_resolve = judged.to == WorkOrderState::Resolved
            && judged.handle_due_ms.is_some_and(|due| judged.at > due);
        let met = !(missed || late_ack || late_resolve);
        samples.push(sample(judged.at, &judged.team, SampleKind::Sla { met }));
    }

    for transition in lines.iter().filter(|t| t.escalated_to.is_some()) {
        samples.push(sample(
            transition.at,
            &transition.team,
            SampleKind::Escalation,
        ));
    }
    samples
}

/// The samples of the whole log that fall in `period`.
fn samples_in(log: &[Transition], period: Period) -> Vec<Sample> {
    by_order(log)
        .values()
        .flat_map(|lines| order_samples(lines))
        .filter(|sample| period.contains(sample.at))
        .collect()
}

/// The KPIs of the whole log for `period`.
pub fn kpi_total(log: &[Transition], period: Period) -> Kpi {
    let mut kpi = Kpi::default();
    for sample in samples_in(log, period) {
        kpi.add(&sample);
    }
    kpi
}

/// The KPIs per team for `period`; samples of orders without an owner (a symptom suppressed
/// before dispatch) belong to no team.
pub fn kpi_by_team(log: &[Transition], period: Period) -> BTreeMap<TeamId, Kpi> {
    let mut teams: BTreeMap<TeamId, Kpi> = BTreeMap::new();
    for sample in samples_in(log, period) {
        if let Some(team) = &sample.team {
            teams.entry(team.clone()).or_default().add(&sample);
        }
    }
    teams
}

/// The KPIs per division for `period`, each order counted for its division and every
/// ancestor that `parent` names (`None` at the root).
pub fn kpi_by_division(
    log: &[Transition],
    period: Period,
    parent: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<DivisionCode, Kpi> {
    let mut divisions: BTreeMap<DivisionCode, Kpi> = BTreeMap::new();
    // The ancestor chain is the same for every sample of a division: walk it once.
    let mut chains: BTreeMap<DivisionCode, Vec<DivisionCode>> = BTreeMap::new();
    for sample in samples_in(log, period) {
        let chain = chains
            .entry(sample.division.clone())
            .or_insert_with(|| ancestry(&sample.division, parent));
        for division in chain.iter() {
            divisions.entry(division.clone()).or_default().add(&sample);
        }
    }
    divisions
}

/// `division` and its ancestors, stopping at the root or at the first code seen twice.
pub(crate) fn ancestry(
    division: &str,
    parent: &dyn Fn(&str) -> Option<String>,
) -> Vec<DivisionCode> {
    let mut chain = vec![division.to_string()];
    let mut seen: BTreeSet<DivisionCode> = chain.iter().cloned().collect();
    let mut current = division.to_string();
    while let Some(up) = parent(&current) {
        if !seen.insert(up.clone()) {
            break;
        }
        chain.push(up.clone());
        current = up;
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Category, DeadlineKind, HOUR, MINUTE, Severity, SlaClock};
    use crate::workorder::{Command, FireOutcome, NewWorkOrder, SYSTEM_ACTOR, WorkOrder};

    struct FakeSla;

    impl SlaClock for FakeSla {
        fn due(&self, severity: Severity, kind: DeadlineKind, from: Millis) -> Millis {
            from + match (severity, kind) {
                (Severity::P1, DeadlineKind::Ack) => 15 * MINUTE,
                (Severity::P1, DeadlineKind::Handle) => 4 * HOUR,
                (Severity::P2, DeadlineKind::Ack) => 30 * MINUTE,
                (Severity::P2, DeadlineKind::Handle) => 24 * HOUR,
                (_, DeadlineKind::Ack) => 4 * HOUR,
                (_, DeadlineKind::Handle) => 3 * DAY,
            }
        }
    }

    /// 2026-11-01 00:00 CST = 2026-10-31 16:00 UTC.
    const NOV: Millis = 1_793_462_400_000;
    const REGION: &str = "450000000000";
    const CITY: &str = "450100000000";
    const COUNTY_A: &str = "450103000000";
    const COUNTY_B: &str = "450105000000";

    fn parent(code: &str) -> Option<String> {
        match code {
            COUNTY_A | COUNTY_B => Some(CITY.to_string()),
            CITY => Some(REGION.to_string()),
            _ => None,
        }
    }

    /// Drives real work orders through the machine and keeps the log they produce.
    #[derive(Default)]
    struct Script {
        orders: BTreeMap<String, WorkOrder>,
        log: Vec<Transition>,
    }

    impl Script {
        fn open(&mut self, id: &str, severity: Severity, division: &str, at: Millis) {
            let (order, transition) = WorkOrder::open(
                NewWorkOrder {
                    id: id.to_string(),
                    incident_id: format!("inc-{id}"),
                    title: id.to_string(),
                    severity,
                    category: Category::Network,
                    division: division.to_string(),
                },
                SYSTEM_ACTOR,
                at,
            )
            .unwrap();
            self.orders.insert(id.to_string(), order);
            self.log.push(transition);
        }

        fn run(&mut self, id: &str, command: Command, at: Millis) {
            let order = self.orders.get_mut(id).unwrap();
            let outcome = order.apply(command, "operator", at, &FakeSla).unwrap();
            self.log.extend(outcome.transitions);
        }

        fn dispatch(&mut self, id: &str, team: &str, at: Millis) {
            self.run(id, Command::Dispatch { team: team.into() }, at);
        }

        fn resolve(&mut self, id: &str, at: Millis) {
            self.run(
                id,
                Command::Resolve {
                    feedback: "fixed".into(),
                },
                at,
            );
        }

        fn fire_ack(&mut self, id: &str, at: Millis, next: &str) {
            let order = self.orders.get_mut(id).unwrap();
            let row = order.pending_ack.clone().unwrap();
            let fired = order.fire(&row, at, Some(next.into()), &FakeSla).unwrap();
            let FireOutcome::Escalated { transition, .. } = fired else {
                panic!("expected an escalation, got {fired:?}");
            };
            self.log.push(transition);
        }
    }

    /// A scripted November; the expected figures are worked out by hand in the comments.
    fn november() -> Script {
        let mut s = Script::default();
        let d = |days: u64| NOV + days * DAY;

        // wo-1, county A, P1: MTTA 5 min, MTTR 61 min, handling 55 min, SLA met.
        s.open("wo-1", Severity::P1, COUNTY_A, d(1));
        s.dispatch("wo-1", "a-net", d(1) + MINUTE);
        s.run("wo-1", Command::Ack, d(1) + 6 * MINUTE);
        s.run("wo-1", Command::Start, d(1) + 10 * MINUTE);
        s.resolve("wo-1", d(1) + 61 * MINUTE);
        s.run("wo-1", Command::Verify { accepted: true }, d(1) + 2 * HOUR);
        s.run("wo-1", Command::Close, d(1) + 3 * HOUR);

        // wo-2, county A, P2: ack deadline (30 min) missed and escalated to the city, acked at
        // 40 min (MTTA 40), resolved at 2 h (MTTR 120, handling 80), SLA missed; recurs 3 h
        // later and is reopened.
        s.open("wo-2", Severity::P2, COUNTY_A, d(2));
        s.dispatch("wo-2", "a-net", d(2));
        s.fire_ack("wo-2", d(2) + 30 * MINUTE, "city-net");
        s.run("wo-2", Command::Ack, d(2) + 40 * MINUTE);
        s.resolve("wo-2", d(2) + 2 * HOUR);
        s.run(
            "wo-2",
            Command::Recur {
                at: d(2) + 5 * HOUR,
            },
            d(2) + 5 * HOUR,
        );
        s.resolve("wo-2", d(2) + 6 * HOUR);

        // wo-3, county B, P1: MTTA 10, MTTR 180, handling 168, SLA met (due 3d+2m+4h).
        s.open("wo-3", Severity::P1, COUNTY_B, d(3));
        s.dispatch("wo-3", "b-net", d(3) + 2 * MINUTE);
        s.run("wo-3", Command::Ack, d(3) + 12 * MINUTE);
        s.resolve("wo-3", d(3) + 3 * HOUR);

        // wo-4, county B, P3: a suppressed symptom, auto-resolved: opened, nothing else.
        s.open("wo-4", Severity::P3, COUNTY_B, d(4));
        s.run(
            "wo-4",
            Command::Suppress {
                cause: "wo-3".into(),
            },
            d(4),
        );
        s.run("wo-4", Command::SourceCleared, d(4) + HOUR);

        // wo-5, county A, P1: auto-resolved after 5 min, before anyone acted: SLA judged, met.
        s.open("wo-5", Severity::P1, COUNTY_A, d(5));
        s.dispatch("wo-5", "a-net", d(5));
        s.run("wo-5", Command::SourceCleared, d(5) + 5 * MINUTE);

        // wo-6, county B, P2: opened and acknowledged in October, resolved on 1 November at
        // 01:00 CST: MTTR 180, handling 170, SLA met; no MTTA sample in November.
        s.open("wo-6", Severity::P2, COUNTY_B, NOV - 2 * HOUR);
        s.dispatch("wo-6", "b-net", NOV - 2 * HOUR);
        s.run("wo-6", Command::Ack, NOV - 110 * MINUTE);
        s.resolve("wo-6", NOV + HOUR);

        // wo-7, county A, P1: escalated at 15 min, acked at 20 (MTTA 20), resolved exactly at
        // the end of November, which belongs to December.
        s.open("wo-7", Severity::P1, COUNTY_A, d(20));
        s.dispatch("wo-7", "a-net", d(20));
        s.fire_ack("wo-7", d(20) + 15 * MINUTE, "city-net");
        s.run("wo-7", Command::Ack, d(20) + 20 * MINUTE);
        s.resolve("wo-7", d(30));

        // wo-8, county B, P1: first dispatched to the host team, which returns it; re-dispatched
        // to b-net at 6 min, acked at 16 (MTTA 10 for b-net), resolved at 60 (MTTR 60,
        // handling 44), SLA met (ack due 21 min after the re-dispatch).
        s.open("wo-8", Severity::P1, COUNTY_B, d(10));
        s.dispatch("wo-8", "b-host", d(10));
        s.run(
            "wo-8",
            Command::Return {
                reason: "network fault".into(),
            },
            d(10) + 5 * MINUTE,
        );
        s.dispatch("wo-8", "b-net", d(10) + 6 * MINUTE);
        s.run("wo-8", Command::Ack, d(10) + 16 * MINUTE);
        s.resolve("wo-8", d(10) + HOUR);
        s
    }

    fn month() -> Period {
        Period::month_cst(2026, 11).unwrap()
    }

    fn assert_percent(actual: Option<f64>, expected: f64) {
        let actual = actual.unwrap();
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn a_scripted_month_matches_the_hand_computed_totals() {
        let log = november().log;
        let total = kpi_total(&log, month());
        assert_eq!(
            total,
            Kpi {
                // wo-1, 2, 3, 4, 5, 7, 8
                opened: 7,
                // wo-1 5 + wo-2 40 + wo-3 10 + wo-7 20 + wo-8 10 = 85 min
                ack_samples: 5,
                ack_total_ms: 85 * MINUTE,
                // wo-1 61 + wo-2 120 + wo-3 180 + wo-6 180 + wo-8 60 = 601 min
                repair_samples: 5,
                repair_total_ms: 601 * MINUTE,
                // 55 + 80 + 168 + 170 + 44 = 517 min
                handling_samples: 5,
                handling_total_ms: 517 * MINUTE,
                // wo-1, 3, 5, 6, 8 met; wo-2 missed
                sla_judged: 6,
                sla_met: 5,
                // wo-2 and wo-7
                escalations: 2,
                resolved: 5,
                reopened: 1,
            }
        );
        let summary = total.summary();
        assert_eq!(summary.mtta_ms, Some(17 * MINUTE));
        assert_eq!(summary.mttr_ms, Some(7_212_000)); // 120.2 min
        assert_eq!(summary.handling_time_ms, Some(6_204_000)); // 103.4 min
        assert_percent(summary.sla_compliance_percent, 500.0 / 6.0);
        assert_percent(summary.reopen_rate_percent, 20.0);
    }

    #[test]
    fn a_scripted_month_per_team() {
        let log = november().log;
        let teams = kpi_by_team(&log, month());
        assert_eq!(
            teams.keys().collect::<Vec<_>>(),
            vec!["a-net", "b-host", "b-net"]
        );

        let a = &teams["a-net"];
        assert_eq!(a.opened, 4);
        // (5 + 40 + 20) / 3 min = 21 min 40 s
        assert_eq!(a.mtta_ms(), Some(21 * MINUTE + 40_000));
        // (61 + 120) / 2 = 90.5 min; (55 + 80) / 2 = 67.5 min
        assert_eq!(a.mttr_ms(), Some(90 * MINUTE + 30_000));
        assert_eq!(a.handling_time_ms(), Some(67 * MINUTE + 30_000));
        // wo-1 and wo-5 met, wo-2 missed
        assert_eq!((a.sla_met, a.sla_judged), (2, 3));
        assert_eq!(a.escalations, 2);
        assert_percent(a.reopen_rate_percent(), 50.0);

        let b = &teams["b-net"];
        assert_eq!(b.opened, 1);
        assert_eq!(b.mtta_ms(), Some(10 * MINUTE));
        // (180 + 180 + 60) / 3 = 140 min; (168 + 170 + 44) / 3 = 127 min 20 s
        assert_eq!(b.mttr_ms(), Some(140 * MINUTE));
        assert_eq!(b.handling_time_ms(), Some(127 * MINUTE + 20_000));
        assert_percent(b.sla_compliance_percent(), 100.0);
        assert_eq!(b.escalations, 0);
        assert_percent(b.reopen_rate_percent(), 0.0);

        // The team that returned wo-8 was only its first owner.
        let host = &teams["b-host"];
        assert_eq!(
            *host,
            Kpi {
                opened: 1,
                ..Kpi::default()
            }
        );
        // The supervisor an escalation added is not charged with it.
        assert!(!teams.contains_key("city-net"));
    }

    #[test]
    fn a_scripted_month_rolled_up_the_division_tree() {
        let log = november().log;
        let divisions = kpi_by_division(&log, month(), &parent);
        assert_eq!(
            divisions.keys().collect::<Vec<_>>(),
            vec![REGION, CITY, COUNTY_A, COUNTY_B]
        );
        let total = kpi_total(&log, month());
        assert_eq!(divisions[REGION], total);
        assert_eq!(divisions[CITY], total);
        let teams = kpi_by_team(&log, month());
        // County A's orders are all a-net's.
        assert_eq!(divisions[COUNTY_A], teams["a-net"]);
        // County B: b-net's figures plus the suppressed wo-4 and the returned wo-8 opened.
        let b = &divisions[COUNTY_B];
        assert_eq!(b.opened, 3);
        assert_eq!(b.mtta_ms(), Some(10 * MINUTE));
        assert_eq!(b.mttr_ms(), Some(140 * MINUTE));
        assert_eq!((b.sla_met, b.sla_judged), (3, 3));
        assert_eq!((b.reopened, b.resolved), (0, 3));
    }

    #[test]
    fn figures_do_not_depend_on_the_order_or_replay_of_log_lines() {
        let log = november().log;
        let mut shuffled: Vec<Transition> = log.iter().rev().cloned().collect();
        // A replayed append duplicates some lines.
        shuffled.extend(log.iter().take(5).cloned());
        assert_eq!(kpi_total(&shuffled, month()), kpi_total(&log, month()));
        let json = serde_json::to_string(&log).unwrap();
        let stored: Vec<Transition> = serde_json::from_str(&json).unwrap();
        assert_eq!(kpi_by_team(&stored, month()), kpi_by_team(&log, month()));
    }

    #[test]
    fn the_periods_before_and_after_get_the_rest() {
        let log = november().log;
        let october = kpi_total(&log, Period::month_cst(2026, 10).unwrap());
        // wo-6 was opened and acknowledged (10 min after dispatch) in October.
        assert_eq!(october.opened, 1);
        assert_eq!(october.mtta_ms(), Some(10 * MINUTE));
        assert_eq!(october.resolved, 0);
        let december = kpi_total(&log, Period::month_cst(2026, 12).unwrap());
        // wo-7 resolved at 00:00 CST on 1 December: MTTR 10 days, handling 10 days - 20 min,
        // SLA missed (escalated, acked late, resolved after 4 h).
        assert_eq!(december.resolved, 1);
        assert_eq!(december.mttr_ms(), Some(10 * DAY));
        assert_eq!(december.handling_time_ms(), Some(10 * DAY - 20 * MINUTE));
        assert_eq!((december.sla_met, december.sla_judged), (0, 1));
        assert_eq!(december.opened, 0);
    }

    #[test]
    fn a_late_ack_misses_the_sla_even_when_no_timer_fired() {
        // The control plane was down at the deadline; the ack came before the timer ran.
        let mut s = Script::default();
        s.open("wo-1", Severity::P1, COUNTY_A, NOV);
        s.dispatch("wo-1", "a-net", NOV);
        s.run("wo-1", Command::Ack, NOV + 16 * MINUTE);
        s.resolve("wo-1", NOV + HOUR);
        let kpi = kpi_total(&s.log, month());
        assert_eq!((kpi.sla_met, kpi.sla_judged), (0, 1));
        assert_eq!(kpi.escalations, 0);

        // And a resolution after the handling target.
        let mut s = Script::default();
        s.open("wo-1", Severity::P1, COUNTY_A, NOV);
        s.dispatch("wo-1", "a-net", NOV);
        s.run("wo-1", Command::Ack, NOV + MINUTE);
        s.resolve("wo-1", NOV + 4 * HOUR + 1);
        let kpi = kpi_total(&s.log, month());
        assert_eq!((kpi.sla_met, kpi.sla_judged), (0, 1));
        // Exactly on the targets is in time.
        let mut s = Script::default();
        s.open("wo-1", Severity::P1, COUNTY_A, NOV);
        s.dispatch("wo-1", "a-net", NOV);
        s.run("wo-1", Command::Ack, NOV + 15 * MINUTE);
        s.resolve("wo-1", NOV + 4 * HOUR);
        let kpi = kpi_total(&s.log, month());
        assert_eq!((kpi.sla_met, kpi.sla_judged), (1, 1));
    }

    #[test]
    fn an_ignored_order_that_recovered_by_itself_is_charged_the_missed_ack() {
        let mut s = Script::default();
        s.open("wo-1", Severity::P1, COUNTY_A, NOV);
        s.dispatch("wo-1", "a-net", NOV);
        s.fire_ack("wo-1", NOV + 15 * MINUTE, "city-net");
        s.run("wo-1", Command::SourceCleared, NOV + HOUR);
        let kpi = kpi_total(&s.log, month());
        assert_eq!((kpi.sla_met, kpi.sla_judged), (0, 1));
        assert_eq!(kpi.ack_samples + kpi.repair_samples + kpi.resolved, 0);
        assert_eq!(kpi.escalations, 1);
        assert_eq!(kpi.summary().mtta_ms, None);
        assert_eq!(kpi.summary().reopen_rate_percent, None);
    }

    #[test]
    fn promoted_symptoms_are_left_out_of_the_time_figures() {
        let mut s = Script::default();
        s.open("wo-1", Severity::P2, COUNTY_B, NOV);
        s.run(
            "wo-1",
            Command::Suppress {
                cause: "wo-0".into(),
            },
            NOV,
        );
        s.run("wo-1", Command::Promote, NOV + HOUR);
        s.dispatch("wo-1", "b-net", NOV + HOUR);
        s.run("wo-1", Command::Ack, NOV + HOUR + MINUTE);
        s.resolve("wo-1", NOV + 2 * HOUR);
        let kpi = kpi_total(&s.log, month());
        assert_eq!(kpi.opened, 1);
        assert_eq!(
            (kpi.ack_samples, kpi.repair_samples, kpi.handling_samples),
            (0, 0, 0)
        );
        assert_eq!(kpi.sla_judged, 0);
        assert_eq!((kpi.resolved, kpi.reopened), (1, 0));
    }

    #[test]
    fn a_take_over_counts_as_the_acknowledgement() {
        let mut s = Script::default();
        s.open("wo-1", Severity::P1, COUNTY_A, NOV);
        s.dispatch("wo-1", "a-net", NOV);
        s.fire_ack("wo-1", NOV + 15 * MINUTE, "city-net");
        s.run(
            "wo-1",
            Command::TakeOver {
                team: "city-net".into(),
            },
            NOV + 18 * MINUTE,
        );
        s.resolve("wo-1", NOV + HOUR);
        let teams = kpi_by_team(&s.log, month());
        let city = &teams["city-net"];
        assert_eq!(city.mtta_ms(), Some(18 * MINUTE));
        assert_eq!(city.handling_time_ms(), Some(42 * MINUTE));
        assert_eq!((city.sla_met, city.sla_judged), (0, 1));
        assert_eq!(teams["a-net"].escalations, 1);
    }

    #[test]
    fn months_are_cst_calendar_months() {
        let november = Period::month_cst(2026, 11).unwrap();
        assert_eq!(november.from(), NOV);
        assert_eq!(november.to(), NOV + 30 * DAY);
        let december = Period::month_cst(2026, 12).unwrap();
        assert_eq!(december.from(), NOV + 30 * DAY);
        assert_eq!(december.to(), NOV + 61 * DAY);
        let leap = Period::month_cst(2028, 2).unwrap();
        assert_eq!(leap.to() - leap.from(), 29 * DAY);
        let plain = Period::month_cst(2027, 2).unwrap();
        assert_eq!(plain.to() - plain.from(), 28 * DAY);
        // 1970-01-01 00:00 CST is before the epoch.
        assert_eq!(
            Period::month_cst(1970, 1).unwrap_err(),
            PeriodError::InvalidMonth {
                year: 1970,
                month: 1
            }
        );
        assert_eq!(
            Period::month_cst(1970, 2).unwrap().from(),
            31 * DAY - CST_OFFSET
        );
        assert!(Period::month_cst(2026, 13).is_err());
        assert!(Period::month_cst(2026, 0).is_err());
        assert!(Period::month_cst(i32::MAX, 12).is_err());
        assert_eq!(
            Period::new(5, 5).unwrap_err(),
            PeriodError::Empty { from: 5, to: 5 }
        );
        assert!(november.contains(NOV));
        assert!(!november.contains(NOV + 30 * DAY));
    }

    #[test]
    fn a_cycle_in_the_division_tree_ends_the_walk() {
        let mut s = Script::default();
        s.open("wo-1", Severity::P1, "x", NOV);
        let cyclic = |code: &str| match code {
            "x" => Some("y".to_string()),
            "y" => Some("x".to_string()),
            _ => None,
        };
        let divisions = kpi_by_division(&s.log, month(), &cyclic);
        assert_eq!(divisions.len(), 2);
        assert_eq!(divisions["x"].opened, 1);
        assert_eq!(divisions["y"].opened, 1);
    }
}
