use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::*;

/// Thursday 2026-11-26 00:00 UTC (08:00 CST).
const THURSDAY: Millis = 1_795_651_200_000;
/// The control plane starts on Thursday at 10:00 CST.
const START: Millis = THURSDAY + 2 * crate::model::HOUR;
/// Well after the grace period.
const T0: Millis = START + 10 * crate::model::MINUTE;

const REGION: &str = "450000000000";
const CITY: &str = "450100000000";
const COUNTY: &str = "450103000000";
const TOWNSHIP: &str = "450103001000";

/// A topology held in maps; `agents_in` counts the subtree.
#[derive(Default)]
struct Map {
    uplinks: HashMap<String, String>,
    divisions: HashMap<String, String>,
    parents: HashMap<String, String>,
    roles: HashMap<String, AgentRole>,
}

impl Map {
    fn agent(&mut self, id: &str, division: &str, role: AgentRole, uplink: Option<&str>) {
        self.divisions.insert(id.into(), division.into());
        self.roles.insert(id.into(), role);
        if let Some(uplink) = uplink {
            self.uplinks.insert(id.into(), uplink.into());
        }
    }

    fn division_under(&mut self, child: &str, parent: &str) {
        self.parents.insert(child.into(), parent.into());
    }
}

impl Topology for Map {
    fn uplink(&self, agent: &str) -> Option<AgentId> {
        self.uplinks.get(agent).cloned()
    }

    fn division(&self, agent: &str) -> Option<DivisionCode> {
        self.divisions.get(agent).cloned()
    }

    fn parent_division(&self, division: &str) -> Option<DivisionCode> {
        self.parents.get(division).cloned()
    }

    fn agents_in(&self, division: &str) -> usize {
        self.divisions
            .values()
            .filter(|home| {
                let mut current = Some((*home).clone());
                while let Some(code) = current {
                    if code == division {
                        return true;
                    }
                    current = self.parents.get(&code).cloned();
                }
                false
            })
            .count()
    }

    fn role(&self, agent: &str) -> AgentRole {
        self.roles.get(agent).copied().unwrap_or(AgentRole::Server)
    }
}

fn village(n: usize) -> String {
    format!("v{n:02}")
}

/// Region → city → county → township with gateway `gw` and 30 villages (one terminal each,
/// uplink `gw`), plus 20 servers in the county seat that stay up.
fn storm_topology() -> Map {
    let mut map = Map::default();
    map.division_under(CITY, REGION);
    map.division_under(COUNTY, CITY);
    map.division_under(TOWNSHIP, COUNTY);
    map.agent("gw", TOWNSHIP, AgentRole::Gateway, None);
    for n in 1..=30 {
        let code = format!("450103001{n:03}");
        map.division_under(&code, TOWNSHIP);
        map.agent(&village(n), &code, AgentRole::Terminal, Some("gw"));
    }
    for n in 1..=20 {
        map.agent(&format!("seat{n:02}"), COUNTY, AgentRole::Server, None);
    }
    map
}

/// A seeded xorshift generator, for shuffled-but-reproducible event orders.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// An engine, its topology and everything it returned.
struct Sim {
    engine: IncidentEngine,
    map: Map,
    log: Vec<Action>,
    stored: Stored,
}

/// The engine as a caller persisting only [`Changes`] holds it, checked after every call:
/// a state change the engine forgot to mark would be lost across a restart.
#[derive(Default)]
struct Stored {
    header: Option<EngineHeader>,
    agents: BTreeMap<AgentId, AgentFacts>,
    incidents: BTreeMap<IncidentId, Incident>,
    history: BTreeMap<String, FingerprintHistory>,
}

impl Stored {
    fn apply(&mut self, changes: Changes) {
        self.header = Some(changes.header);
        for (agent, facts) in changes.agents {
            match facts {
                Some(facts) => self.agents.insert(agent, facts),
                None => self.agents.remove(&agent),
            };
        }
        for (id, incident) in changes.incidents {
            match incident {
                Some(incident) => self.incidents.insert(id, incident),
                None => self.incidents.remove(&id),
            };
        }
        for (key, history) in changes.history {
            match history {
                Some(history) => self.history.insert(key, history),
                None => self.history.remove(&key),
            };
        }
    }

    fn engine(&self) -> IncidentEngine {
        IncidentEngine::from_parts(
            self.header.clone().expect("a header was written"),
            self.agents.clone(),
            self.incidents.values().cloned(),
            self.history.clone(),
        )
        .unwrap()
    }
}

impl Sim {
    fn new(map: Map) -> Sim {
        Sim::with_rules(map, IncidentRules::default())
    }

    fn with_rules(map: Map, rules: IncidentRules) -> Sim {
        Sim {
            engine: IncidentEngine::new(rules, START).unwrap(),
            map,
            log: Vec::new(),
            stored: Stored::default(),
        }
    }

    fn event(&mut self, event: Event) -> Vec<Action> {
        let actions = self.engine.handle_event(event, &self.map).unwrap();
        self.persist();
        self.log.extend(actions.clone());
        actions
    }

    /// Writes the changes to the mirror and checks it rebuilds the same engine.
    fn persist(&mut self) {
        let changes = self.engine.take_changes();
        self.stored.apply(changes);
        assert!(!self.engine.has_changes());
        assert_eq!(self.stored.engine(), self.engine, "persisted parts differ");
    }

    fn lost(&mut self, agent: &str, at: Millis) -> Vec<Action> {
        self.event(Event::AgentLost {
            agent: agent.into(),
            at,
        })
    }

    fn back(&mut self, agent: &str, at: Millis) -> Vec<Action> {
        self.event(Event::AgentBack {
            agent: agent.into(),
            at,
        })
    }

    fn tick(&mut self, now: Millis) -> Vec<Action> {
        let actions = self.engine.tick(now, &self.map);
        self.persist();
        self.log.extend(actions.clone());
        actions
    }

    /// Ticks every `step` from `from` to `to` inclusive; returns what they decided.
    fn tick_through(&mut self, from: Millis, to: Millis, step: Millis) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut now = from;
        while now <= to {
            actions.extend(self.tick(now));
            now += step;
        }
        actions
    }

    fn id(&self, fingerprint: &str) -> IncidentId {
        self.engine.open_incident_for(fingerprint).unwrap().id
    }

    fn take_log(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.log)
    }
}

fn opened(actions: &[Action]) -> Vec<(IncidentId, String)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Open {
                incident,
                fingerprint,
                ..
            } => Some((*incident, fingerprint.clone())),
            _ => None,
        })
        .collect()
}

fn dispatched(actions: &[Action]) -> Vec<IncidentId> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Dispatch { incident } => Some(*incident),
            _ => None,
        })
        .collect()
}

fn links(actions: &[Action]) -> Vec<(IncidentId, IncidentId)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::LinkSymptom { symptom, cause } => Some((*symptom, *cause)),
            _ => None,
        })
        .collect()
}

fn promoted(actions: &[Action]) -> Vec<IncidentId> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Promote { symptom } => Some(*symptom),
            _ => None,
        })
        .collect()
}

fn resolved(actions: &[Action]) -> Vec<IncidentId> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Resolve { incident, .. } => Some(*incident),
            _ => None,
        })
        .collect()
}

fn sorted(mut ids: Vec<IncidentId>) -> Vec<IncidentId> {
    ids.sort_unstable();
    ids
}

/// All 31 agents of the storm topology lost at seeded times within 1 s of `T0`, delivered in
/// a seeded order with ticks in between; then ticks until well after every hold.
fn storm(sim: &mut Sim, rng: &mut Rng) {
    let mut agents: Vec<String> = (1..=30).map(village).collect();
    agents.push("gw".into());
    let mut events: Vec<(String, Millis)> = agents
        .into_iter()
        .map(|agent| {
            let at = T0 + rng.below(1000);
            (agent, at)
        })
        .collect();
    rng.shuffle(&mut events);
    let mut latest = T0;
    for (agent, at) in events {
        sim.lost(&agent, at);
        latest = latest.max(at);
        sim.tick(latest);
    }
    sim.tick_through(T0 + 1000, T0 + 13_000, 250);
}

#[test]
fn storm_behind_a_gateway_is_one_dispatched_cause_and_thirty_symptoms() {
    for seed in 1..=25u64 {
        let mut sim = Sim::new(storm_topology());
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        storm(&mut sim, &mut rng);
        let log = sim.take_log();

        assert_eq!(opened(&log).len(), 31, "seed {seed}");
        let gateway = sim.id("agent-lost:gw");
        assert_eq!(dispatched(&log), vec![gateway], "seed {seed}");
        let villages: BTreeSet<IncidentId> = (1..=30)
            .map(|n| sim.id(&format!("agent-lost:{}", village(n))))
            .collect();
        let linked: BTreeSet<IncidentId> = links(&log)
            .into_iter()
            .map(|(symptom, cause)| {
                assert_eq!(cause, gateway, "seed {seed}");
                symptom
            })
            .collect();
        assert_eq!(linked, villages, "seed {seed}");
        assert_eq!(
            links(&log).len(),
            30,
            "seed {seed}: each village linked once"
        );
        let cause = sim.engine.incident(gateway).unwrap();
        assert_eq!(cause.phase, Phase::Active);
        assert_eq!(cause.symptoms, villages);
        for id in &villages {
            let symptom = sim.engine.incident(*id).unwrap();
            assert_eq!(symptom.phase, Phase::Symptom { cause: gateway });
            assert!(!symptom.dispatched);
        }

        // The link comes back: the gateway and its villages reconnect within 1 s, any order.
        let t1 = T0 + 60_000;
        let mut agents: Vec<(String, Millis)> = (1..=30)
            .map(village)
            .chain(["gw".to_string()])
            .map(|agent| {
                let at = t1 + rng.below(1000);
                (agent, at)
            })
            .collect();
        rng.shuffle(&mut agents);
        let mut latest = t1;
        for (agent, at) in agents {
            sim.back(&agent, at);
            latest = latest.max(at);
            sim.tick(latest);
        }
        sim.tick_through(t1 + 1000, t1 + 30_000, 500);
        let log = sim.take_log();
        let mut all = villages.clone();
        all.insert(gateway);
        assert_eq!(
            resolved(&log).into_iter().collect::<BTreeSet<_>>(),
            all,
            "seed {seed}"
        );
        assert_eq!(resolved(&log).len(), 31, "seed {seed}: each resolved once");
        assert!(promoted(&log).is_empty(), "seed {seed}");
        assert!(dispatched(&log).is_empty(), "seed {seed}");
        assert_eq!(
            sim.engine.open_incidents().count(),
            0,
            "seed {seed}: none orphaned"
        );
        assert_eq!(sim.engine.poll_timeout(), None);
    }
}

#[test]
fn villages_still_down_when_the_gateway_returns_are_promoted_after_the_hold() {
    let mut sim = Sim::new(storm_topology());
    storm(&mut sim, &mut Rng(7));
    let gateway = sim.id("agent-lost:gw");
    let v29 = sim.id("agent-lost:v29");
    let v30 = sim.id("agent-lost:v30");
    sim.take_log();

    let t1 = T0 + 60_000;
    let actions = sim.back("gw", t1);
    assert_eq!(
        actions,
        vec![Action::Resolve {
            incident: gateway,
            reason: ResolveReason::Cleared,
            at: t1,
            dispatched: true,
        }]
    );
    for n in 1..=28 {
        sim.back(&village(n), t1 + 30 * n as Millis);
    }
    // The re-check waits for the hold: not a millisecond earlier.
    assert_eq!(sim.tick_through(t1, t1 + 9_999, 333), vec![]);
    let actions = sim.tick(t1 + 10_000);
    // Decided in id order; the ids follow the seeded arrival order of the storm.
    let (first, second) = (v29.min(v30), v29.max(v30));
    assert_eq!(
        actions,
        vec![
            Action::Promote { symptom: first },
            Action::Dispatch { incident: first },
            Action::Promote { symptom: second },
            Action::Dispatch { incident: second },
        ]
    );
    let log = sim.take_log();
    assert_eq!(resolved(&log).len(), 1 + 28);
    let open: Vec<IncidentId> = sim.engine.open_incidents().map(|i| i.id).collect();
    assert_eq!(open, vec![v29, v30]);
    assert!(
        sim.engine
            .open_incidents()
            .all(|incident| incident.phase == Phase::Active && incident.dispatched)
    );
}

#[test]
fn a_chain_of_down_gateways_has_one_cause_at_its_top() {
    let mut map = Map::default();
    map.division_under(TOWNSHIP, COUNTY);
    map.agent("county-gw", COUNTY, AgentRole::Gateway, None);
    map.agent("gw", TOWNSHIP, AgentRole::Gateway, Some("county-gw"));
    map.agent("v01", "450103001001", AgentRole::Terminal, Some("gw"));
    let mut sim = Sim::new(map);
    // Bottom first: the village, then the township gateway, then the county gateway.
    sim.lost("v01", T0);
    sim.lost("gw", T0 + 400);
    sim.lost("county-gw", T0 + 800);
    sim.tick_through(T0, T0 + 11_000, 100);
    let top = sim.id("agent-lost:county-gw");
    let middle = sim.id("agent-lost:gw");
    let bottom = sim.id("agent-lost:v01");
    let log = sim.take_log();
    assert_eq!(dispatched(&log), vec![top]);
    assert_eq!(links(&log), vec![(bottom, top), (middle, top)]);

    // The county gateway returns; the township gateway and the village stay down: the
    // township gateway is promoted and the village is re-linked under it.
    sim.back("county-gw", T0 + 60_000);
    sim.tick(T0 + 70_000);
    let log = sim.take_log();
    assert_eq!(resolved(&log), vec![top]);
    assert_eq!(promoted(&log), vec![middle]);
    assert_eq!(dispatched(&log), vec![middle]);
    assert_eq!(links(&log), vec![(bottom, middle)]);
    assert_eq!(
        sim.engine.incident(bottom).unwrap().phase,
        Phase::Symptom { cause: middle }
    );
}

#[test]
fn order_within_the_hold_does_not_matter_but_beyond_it_does() {
    // The village's loss arrives first; the gateway's 9.999 s later, inside the village's hold.
    let mut sim = Sim::new(storm_topology());
    sim.lost("v01", T0);
    sim.tick(T0 + 5_000);
    sim.lost("gw", T0 + 9_999);
    sim.tick(T0 + 10_000);
    let village_incident = sim.id("agent-lost:v01");
    let gateway = sim.id("agent-lost:gw");
    assert_eq!(links(&sim.log), vec![(village_incident, gateway)]);
    assert!(dispatched(&sim.log).is_empty());
    sim.tick(T0 + 19_999);
    assert_eq!(dispatched(&sim.log), vec![gateway]);

    // The gateway's loss comes 1 ms after the village's hold ended: the village was decided
    // alone, whenever the tick that decides it runs.
    let mut sim = Sim::new(storm_topology());
    sim.lost("v01", T0);
    sim.lost("gw", T0 + 10_001);
    sim.tick(T0 + 25_000);
    let village_incident = sim.id("agent-lost:v01");
    let gateway = sim.id("agent-lost:gw");
    assert_eq!(dispatched(&sim.log), vec![village_incident, gateway]);
    assert!(links(&sim.log).is_empty());
}

#[test]
fn hold_windows_are_exact_at_the_boundary() {
    let mut sim = Sim::new(storm_topology());
    sim.lost("seat01", T0);
    let agent_incident = sim.id("agent-lost:seat01");
    sim.event(Event::Finding(Finding {
        fingerprint: "disk-full-seat02".into(),
        subject: Subject::Agent("seat02".into()),
        severity: Severity::P2,
        category: Category::Host,
        title: "disk full".into(),
        firing: true,
        at: T0,
    }));
    let finding = sim.id("finding:disk-full-seat02");
    assert_eq!(sim.engine.poll_timeout(), Some(T0 + 2_000));
    assert_eq!(sim.tick(T0 + 1_999), vec![]);
    assert_eq!(
        sim.tick(T0 + 2_000),
        vec![Action::Dispatch { incident: finding }]
    );
    assert_eq!(sim.engine.poll_timeout(), Some(T0 + 10_000));
    assert_eq!(sim.tick(T0 + 9_999), vec![]);
    assert_eq!(
        sim.tick(T0 + 10_000),
        vec![Action::Dispatch {
            incident: agent_incident
        }]
    );
    assert_eq!(sim.engine.poll_timeout(), None);

    // Back inside the hold: resolved, never dispatched.
    sim.lost("seat03", T0 + 20_000);
    let brief = sim.id("agent-lost:seat03");
    assert_eq!(
        sim.back("seat03", T0 + 29_999),
        vec![Action::Resolve {
            incident: brief,
            reason: ResolveReason::Cleared,
            at: T0 + 29_999,
            dispatched: false,
        }]
    );
    assert_eq!(sim.tick(T0 + 40_000), vec![]);
}

#[test]
fn grace_period_after_start() {
    let mut sim = Sim::new(storm_topology());
    // seat01 never reconnects; seat02 reconnects and then drops; seat03 is slow but returns.
    assert_eq!(sim.lost("seat01", START + 30_000), vec![]);
    sim.back("seat02", START + 10_000);
    let actions = sim.lost("seat02", START + 40_000);
    assert_eq!(opened(&actions).len(), 1);
    assert_eq!(sim.lost("seat03", START + 30_000), vec![]);
    sim.back("seat03", START + 90_000);
    let seat02 = sim.id("agent-lost:seat02");
    assert_eq!(sim.engine.poll_timeout(), Some(START + 50_000));
    sim.tick_through(START + 30_000, START + 119_999, 1_000);
    assert_eq!(dispatched(&sim.log), vec![seat02]);
    assert_eq!(opened(&sim.log).len(), 1);
    assert_eq!(sim.engine.poll_timeout(), Some(START + 120_000));

    // Grace over, seat01 still down: it raises now, held from the end of the grace.
    let actions = sim.tick(START + 120_000);
    let seat01 = sim.id("agent-lost:seat01");
    assert_eq!(
        opened(&actions),
        vec![(seat01, "agent-lost:seat01".to_string())]
    );
    assert!(matches!(actions[0], Action::Open { at, .. } if at == START + 120_000));
    assert_eq!(sim.tick(START + 129_999), vec![]);
    assert_eq!(
        sim.tick(START + 130_000),
        vec![Action::Dispatch { incident: seat01 }]
    );
    assert!(sim.engine.open_incident_for("agent-lost:seat03").is_none());

    // A restart starts a new grace.
    sim.back("seat01", START + 200_000);
    sim.engine.restarted(START + 300_000);
    assert_eq!(sim.lost("seat01", START + 310_000), vec![]);
}

#[test]
fn agents_behind_an_uplink_silenced_by_grace_wait_for_it() {
    // The gateway has not reconnected since the start; the village has, and then drops.
    let mut sim = Sim::new(storm_topology());
    sim.back("v01", START + 5_000);
    assert_eq!(sim.lost("gw", START + 20_000), vec![]);
    sim.lost("v01", START + 30_000);
    let village_incident = sim.id("agent-lost:v01");
    sim.tick_through(START + 30_000, START + 119_999, 1_000);
    assert_eq!(
        sim.engine.incident(village_incident).unwrap().phase,
        Phase::Waiting
    );
    assert!(dispatched(&sim.log).is_empty());
    // The grace ends with the gateway still down: it raises, and the village joins it.
    sim.tick(START + 120_000);
    let gateway = sim.id("agent-lost:gw");
    assert_eq!(links(&sim.log), vec![(village_incident, gateway)]);
    sim.tick(START + 130_000);
    assert_eq!(dispatched(&sim.log), vec![gateway]);

    // Same start, but the gateway returns inside the grace: the village stands alone.
    let mut sim = Sim::new(storm_topology());
    sim.back("v01", START + 5_000);
    sim.lost("gw", START + 20_000);
    sim.lost("v01", START + 30_000);
    sim.tick(START + 40_000);
    sim.back("gw", START + 60_000);
    assert_eq!(
        sim.tick(START + 61_000),
        vec![Action::Dispatch { incident: 1 }]
    );
    assert!(links(&sim.log).is_empty());
}

#[test]
fn a_stale_back_report_does_not_end_a_later_loss() {
    let mut sim = Sim::new(storm_topology());
    sim.lost("seat01", T0);
    assert_eq!(sim.back("seat01", T0 - 1), vec![]);
    let id = sim.id("agent-lost:seat01");
    assert_eq!(
        sim.tick(T0 + 10_000),
        vec![Action::Dispatch { incident: id }]
    );
}

#[test]
fn terminals_switched_off_in_off_hours_raise_nothing() {
    let mut sim = Sim::new(storm_topology());
    let thursday_22h = THURSDAY + 14 * crate::model::HOUR;
    // A terminal (village 5, behind the gateway that stays up) and a server, both at 22:00.
    assert_eq!(sim.lost("v05", thursday_22h), vec![]);
    let actions = sim.lost("seat01", thursday_22h);
    assert_eq!(opened(&actions).len(), 1);
    sim.tick_through(thursday_22h, thursday_22h + crate::model::HOUR, 60_000);
    assert_eq!(opened(&sim.log).len(), 1);
    assert!(sim.engine.open_incident_for("agent-lost:v05").is_none());

    // Friday 08:30 CST it is switched on; at 10:00 it drops: working time, raised.
    let friday = THURSDAY + crate::model::DAY;
    sim.back("v05", friday + 30 * crate::model::MINUTE);
    let actions = sim.lost("v05", friday + 2 * crate::model::HOUR);
    assert_eq!(opened(&actions).len(), 1);
    sim.back("v05", friday + 3 * crate::model::HOUR);

    // Saturday 11:00 CST: a weekend, off-hours all day.
    let saturday_11h = THURSDAY + 2 * crate::model::DAY + 3 * crate::model::HOUR;
    assert_eq!(sim.lost("v05", saturday_11h), vec![]);
}

#[test]
fn off_hours_boundaries_in_cst() {
    let rules = IncidentRules::default();
    let friday = THURSDAY + crate::model::DAY; // Friday 08:00 CST
    assert!(rules.is_terminal_off_hours(friday - 1));
    assert!(!rules.is_terminal_off_hours(friday));
    // Friday 18:59:59.999 and 19:00 CST.
    assert!(!rules.is_terminal_off_hours(friday + 11 * crate::model::HOUR - 1));
    assert!(rules.is_terminal_off_hours(friday + 11 * crate::model::HOUR));
    // Saturday noon, Sunday noon, Monday 08:00 CST.
    assert!(rules.is_terminal_off_hours(friday + crate::model::DAY + 4 * crate::model::HOUR));
    assert!(rules.is_terminal_off_hours(friday + 2 * crate::model::DAY + 4 * crate::model::HOUR));
    assert!(!rules.is_terminal_off_hours(friday + 3 * crate::model::DAY));
    let mut daytime = IncidentRules {
        terminal_off_hours: Some(OffHours {
            enabled: true,
            start: "12:00".into(),
            end: "14:00".into(),
            weekends: false,
        }),
        ..IncidentRules::default()
    };
    // Saturday 12:00 and 14:00 CST (04:00 and 06:00 UTC).
    let saturday = THURSDAY + 2 * crate::model::DAY;
    assert!(daytime.is_terminal_off_hours(saturday + 4 * crate::model::HOUR));
    assert!(!daytime.is_terminal_off_hours(saturday + 6 * crate::model::HOUR));
    // Switched off in the file (`enabled = false`) is the same as none at all.
    if let Some(window) = daytime.terminal_off_hours.as_mut() {
        window.enabled = false;
    }
    assert!(!daytime.is_terminal_off_hours(saturday + 4 * crate::model::HOUR));
    daytime.terminal_off_hours = None;
    assert!(!daytime.is_terminal_off_hours(saturday + 4 * crate::model::HOUR));
}

/// City with county 450104 (townships 001 with a1..a5 and 002 with b1..b5, all connected
/// directly) and county 450105 with 20 servers.
fn mass_topology() -> Map {
    let mut map = Map::default();
    map.division_under(CITY, REGION);
    for county in ["450104000000", "450105000000"] {
        map.division_under(county, CITY);
    }
    map.division_under("450104001000", "450104000000");
    map.division_under("450104002000", "450104000000");
    for n in 1..=5 {
        map.agent(&format!("a{n}"), "450104001000", AgentRole::Server, None);
        map.agent(&format!("b{n}"), "450104002000", AgentRole::Server, None);
    }
    for n in 1..=20 {
        map.agent(&format!("c{n:02}"), "450105000000", AgentRole::Server, None);
    }
    map
}

#[test]
fn mass_outage_is_raised_once_for_the_topmost_division() {
    let mut sim = Sim::new(mass_topology());
    // 6 of the county's 10 agents drop within half a second (all five of township 001 too).
    for (i, agent) in ["a1", "a2", "a3", "a4", "a5", "b1"].iter().enumerate() {
        sim.lost(agent, T0 + 100 * i as Millis);
    }
    // Decided when the first hold ends, once the whole burst has arrived.
    assert_eq!(sim.tick(T0 + 1_000), vec![]);
    assert_eq!(sim.tick(T0 + 9_999), vec![]);
    let actions = sim.tick(T0 + 10_000);
    let outage = sim.id("mass-outage:450104000000");
    assert_eq!(
        opened(&actions),
        vec![(outage, "mass-outage:450104000000".to_string())]
    );
    let members: Vec<IncidentId> = ["a1", "a2", "a3", "a4", "a5", "b1"]
        .iter()
        .map(|agent| sim.id(&format!("agent-lost:{agent}")))
        .collect();
    assert_eq!(
        links(&actions),
        members.iter().map(|id| (*id, outage)).collect::<Vec<_>>()
    );

    // It stays down for five minutes and a seventh agent drops: nothing new is raised.
    sim.lost("b2", T0 + 60_000);
    sim.tick_through(T0 + 1_000, T0 + 5 * crate::model::MINUTE, 1_000);
    let log = sim.take_log();
    assert_eq!(dispatched(&log), vec![outage]);
    let b2 = sim.id("agent-lost:b2");
    assert_eq!(
        opened(&log)
            .iter()
            .filter(|(_, fingerprint)| fingerprint.starts_with("mass-outage"))
            .count(),
        1
    );
    assert!(links(&log).contains(&(b2, outage)));

    // Recovery: 5 of 10 still down (50 %) and 3 of 10 (30 %) keep it open; 2 of 10 clear it.
    let t1 = T0 + 10 * crate::model::MINUTE;
    sim.back("a1", t1);
    sim.back("a2", t1);
    sim.tick(t1 + 1);
    sim.back("a3", t1 + 2);
    sim.back("a4", t1 + 2);
    sim.tick(t1 + 3);
    assert!(sim.engine.incident(outage).is_some());
    sim.back("a5", t1 + 4);
    let actions = sim.tick(t1 + 5);
    assert_eq!(
        actions,
        vec![Action::Resolve {
            incident: outage,
            reason: ResolveReason::Cleared,
            at: t1 + 5,
            dispatched: true,
        }]
    );
    // b1 and b2 are still down: after the hold they stand on their own.
    let b1 = members[5];
    assert_eq!(sim.tick(t1 + 10_004), vec![]);
    assert_eq!(
        sim.tick(t1 + 10_005),
        vec![
            Action::Promote { symptom: b1 },
            Action::Dispatch { incident: b1 },
            Action::Promote { symptom: b2 },
            Action::Dispatch { incident: b2 },
        ]
    );
    let log = sim.take_log();
    assert_eq!(
        sorted(resolved(&log)),
        sorted(vec![
            members[0], members[1], members[2], members[3], members[4], outage
        ])
    );
}

#[test]
fn a_mass_outage_gathers_dispatched_incidents_and_smaller_outages_below_it() {
    let mut sim = Sim::new(mass_topology());
    // A slow burst, 15 s apart: the first four are decided (and dispatched) alone.
    for (i, agent) in ["a1", "a2", "a3", "a4", "a5", "b1"].iter().enumerate() {
        sim.lost(agent, T0 + 15_000 * i as Millis);
        sim.tick_through(
            T0 + 15_000 * i as Millis,
            T0 + 15_000 * i as Millis + 14_000,
            1_000,
        );
    }
    sim.tick_through(T0 + 90_000, T0 + 100_000, 1_000);
    // Ids: a1..a5 = 1..5, township outage = 6 (a5's hold end, 5 of 5 down), b1 = 7, county
    // outage = 8 (b1's hold end, 6 of 10 down).
    assert_eq!(
        opened(&sim.log)
            .into_iter()
            .filter(|(_, fingerprint)| fingerprint.starts_with("mass-outage:"))
            .collect::<Vec<_>>(),
        vec![
            (6, "mass-outage:450104001000".to_string()),
            (8, "mass-outage:450104000000".to_string()),
        ]
    );
    assert_eq!(
        links(&sim.log),
        vec![
            (1, 6),
            (2, 6),
            (3, 6),
            (4, 6),
            (5, 6),
            (6, 8),
            (1, 8),
            (2, 8),
            (3, 8),
            (4, 8),
            (5, 8),
            (7, 8),
        ]
    );
    assert_eq!(dispatched(&sim.log), vec![1, 2, 3, 4, 6, 8]);
    let county = sim.engine.incident(8).unwrap();
    assert_eq!(county.symptoms, (1..=7).collect::<BTreeSet<_>>());
    assert_eq!(
        sim.engine.incident(6).unwrap().phase,
        Phase::Symptom { cause: 8 }
    );
}

#[test]
fn below_the_minimum_count_there_is_no_mass_outage() {
    let mut sim = Sim::new(mass_topology());
    // Township 450104001 loses all 5 (100 % and 5 agents), but its county only 5 of 10 (50 %,
    // not more than 50 %): the township is the mass outage.
    for agent in ["a1", "a2", "a3", "a4", "a5"] {
        sim.lost(agent, T0);
    }
    sim.tick(T0 + 10_000);
    assert!(
        sim.engine
            .open_incident_for("mass-outage:450104000000")
            .is_none()
    );
    assert!(
        sim.engine
            .open_incident_for("mass-outage:450104001000")
            .is_some()
    );

    // With a minimum of 6 agents nothing is raised at all.
    let rules = IncidentRules {
        mass_outage_min_agents: 6,
        ..IncidentRules::default()
    };
    let mut sim = Sim::with_rules(mass_topology(), rules);
    for agent in ["a1", "a2", "a3", "a4", "a5"] {
        sim.lost(agent, T0);
    }
    sim.tick_through(T0, T0 + 20_000, 1_000);
    assert!(
        opened(&sim.log)
            .iter()
            .all(|(_, f)| f.starts_with("agent-lost:"))
    );
    assert_eq!(dispatched(&sim.log).len(), 5);
}

#[test]
fn a_flapping_agent_is_held_open_until_it_settles() {
    let mut sim = Sim::new(storm_topology());
    let cycle = 120_000;
    let mut incidents = Vec::new();
    // Five losses two minutes apart, each back after a minute: the fifth is the fourth re-fire.
    for i in 0..5 {
        let lost_at = T0 + i * cycle;
        let actions = sim.lost("seat01", lost_at);
        let id = sim.id("agent-lost:seat01");
        incidents.push(id);
        let expected_recurrence = if i == 0 {
            None
        } else {
            Some(incidents[i as usize - 1])
        };
        assert!(matches!(
            actions[0],
            Action::Open { recurrence_of, .. } if recurrence_of == expected_recurrence
        ));
        if i < 4 {
            assert_eq!(actions.len(), 1, "fire {i} is not flapping yet");
        } else {
            assert_eq!(actions[1], Action::Flapping { incident: id });
        }
        sim.tick(lost_at + 10_000);
        let back = sim.back("seat01", lost_at + 60_000);
        if i < 4 {
            assert_eq!(resolved(&back), vec![id]);
        } else {
            assert_eq!(back, vec![], "held open");
        }
    }
    assert_eq!(dispatched(&sim.log), incidents);
    let flapping = incidents[4];
    // It drops again: the same incident absorbs it, nothing new opens or dispatches.
    assert_eq!(sim.lost("seat01", T0 + 5 * cycle), vec![]);
    sim.tick(T0 + 5 * cycle + 10_000);
    assert_eq!(sim.back("seat01", T0 + 5 * cycle + 60_000), vec![]);
    let last_clear = T0 + 5 * cycle + 60_000;
    assert_eq!(
        sim.engine.poll_timeout(),
        Some(last_clear + 15 * crate::model::MINUTE)
    );
    assert_eq!(sim.tick(last_clear + 15 * crate::model::MINUTE - 1), vec![]);
    assert_eq!(
        sim.tick(last_clear + 15 * crate::model::MINUTE),
        vec![Action::Resolve {
            incident: flapping,
            reason: ResolveReason::FlapSettled,
            at: last_clear + 15 * crate::model::MINUTE,
            dispatched: true,
        }]
    );
    assert_eq!(dispatched(&sim.log).len(), 5);
    // Settled: the next loss is an ordinary incident again (a recurrence, not flapping).
    let later = last_clear + 16 * crate::model::MINUTE;
    let actions = sim.lost("seat01", later);
    assert_eq!(actions.len(), 1);
    assert!(matches!(
        actions[0],
        Action::Open { recurrence_of: Some(previous), .. } if previous == flapping
    ));
}

fn probe(fingerprint: &str, firing: bool, at: Millis, severity: Severity) -> Event {
    Event::Finding(Finding {
        fingerprint: fingerprint.into(),
        subject: Subject::Division(COUNTY.into()),
        severity,
        category: Category::Application,
        title: "12345 hotline unreachable".into(),
        firing,
        at,
    })
}

#[test]
fn findings_are_deduplicated_by_fingerprint() {
    let mut sim = Sim::new(storm_topology());
    let actions = sim.event(probe("hotline", true, T0, Severity::P1));
    let first = sim.id("finding:hotline");
    assert_eq!(
        actions,
        vec![Action::Open {
            incident: first,
            fingerprint: "finding:hotline".into(),
            kind: IncidentKind::Finding,
            severity: Severity::P1,
            category: Category::Application,
            subject: Subject::Division(COUNTY.into()),
            division: Some(COUNTY.into()),
            title: "12345 hotline unreachable".into(),
            at: T0,
            recurrence_of: None,
        }]
    );
    // The same alert again (Alertmanager repeats): the same incident, nothing to do.
    assert_eq!(
        sim.event(probe("hotline", true, T0 + 500, Severity::P1)),
        vec![]
    );
    assert_eq!(
        sim.tick(T0 + 2_000),
        vec![Action::Dispatch { incident: first }]
    );
    assert_eq!(
        resolved(&sim.event(probe("hotline", false, T0 + 60_000, Severity::P1))),
        vec![first]
    );
    // Firing again after the resolve: a new incident that names the old one.
    let actions = sim.event(probe("hotline", true, T0 + 120_000, Severity::P1));
    let second = sim.id("finding:hotline");
    assert_ne!(first, second);
    assert!(matches!(
        actions[0],
        Action::Open { recurrence_of: Some(previous), .. } if previous == first
    ));
    sim.event(probe("hotline", false, T0 + 180_000, Severity::P1));
    // More than 24 h later it is a fresh incident.
    let actions = sim.event(probe(
        "hotline",
        true,
        T0 + 180_001 + crate::model::DAY,
        Severity::P1,
    ));
    assert!(matches!(
        actions[0],
        Action::Open {
            recurrence_of: None,
            ..
        }
    ));
}

#[test]
fn info_findings_open_but_never_dispatch() {
    let mut sim = Sim::new(storm_topology());
    sim.event(probe("banner", true, T0, Severity::Info));
    let id = sim.id("finding:banner");
    assert_eq!(sim.tick(T0 + 60_000), vec![]);
    assert_eq!(sim.engine.incident(id).unwrap().phase, Phase::Active);
}

#[test]
fn findings_behind_a_down_gateway_are_symptoms_but_security_findings_are_not() {
    let mut sim = Sim::new(storm_topology());
    sim.lost("gw", T0);
    let finding = |fingerprint: &str, category| {
        Event::Finding(Finding {
            fingerprint: fingerprint.into(),
            subject: Subject::Agent("v07".into()),
            severity: Severity::P2,
            category,
            title: "probe".into(),
            firing: true,
            at: T0 + 1_000,
        })
    };
    sim.event(finding("ping-v07", Category::Network));
    sim.event(finding("ids-v07", Category::Security));
    sim.tick_through(T0, T0 + 11_000, 500);
    let gateway = sim.id("agent-lost:gw");
    let ping = sim.id("finding:ping-v07");
    let ids = sim.id("finding:ids-v07");
    assert_eq!(links(&sim.log), vec![(ping, gateway)]);
    assert_eq!(dispatched(&sim.log), vec![ids, gateway]);
}

#[test]
fn link_events_follow_the_agent_hold() {
    let mut sim = Sim::new(storm_topology());
    sim.event(Event::LinkDegraded {
        agent: "gw".into(),
        at: T0,
        detail: "loss 12%".into(),
    });
    let id = sim.id("link:gw");
    assert!(matches!(
        &sim.log[0],
        Action::Open { severity: Severity::P3, category: Category::Network, title, .. }
            if title == "link of agent gw degraded: loss 12%"
    ));
    assert_eq!(sim.tick(T0 + 9_999), vec![]);
    assert_eq!(
        sim.tick(T0 + 10_000),
        vec![Action::Dispatch { incident: id }]
    );
    let actions = sim.event(Event::LinkRecovered {
        agent: "gw".into(),
        at: T0 + 30_000,
        detail: String::new(),
    });
    assert_eq!(resolved(&actions), vec![id]);
}

#[test]
fn state_survives_serialisation_mid_storm() {
    let run = |persist_at: Option<usize>| {
        let mut sim = Sim::new(storm_topology());
        let mut rng = Rng(42);
        let mut events: Vec<(String, Millis)> = (1..=30)
            .map(village)
            .chain(["gw".to_string()])
            .map(|agent| {
                let at = T0 + rng.below(1000);
                (agent, at)
            })
            .collect();
        rng.shuffle(&mut events);
        for (i, (agent, at)) in events.into_iter().enumerate() {
            if Some(i) == persist_at {
                // A restart: the engine rebuilt from the parts persisted so far.
                sim.engine = sim.stored.engine();
            }
            sim.lost(&agent, at);
        }
        sim.tick_through(T0, T0 + 12_000, 500);
        sim.log
    };
    let straight = run(None);
    assert_eq!(dispatched(&straight).len(), 1);
    assert_eq!(run(Some(15)), straight);
}

#[test]
fn cyclic_uplinks_do_not_hang() {
    let mut map = Map::default();
    map.agent("x", COUNTY, AgentRole::Gateway, Some("y"));
    map.agent("y", COUNTY, AgentRole::Gateway, Some("x"));
    let mut sim = Sim::new(map);
    sim.lost("x", T0);
    sim.lost("y", T0);
    sim.tick(T0 + 10_000);
    let x = sim.id("agent-lost:x");
    let y = sim.id("agent-lost:y");
    // Walking x's uplinks comes back round to x itself (and y's to y): each is the top of
    // its own chain, so both stand alone.
    assert_eq!(dispatched(&sim.log), vec![x, y]);
    assert!(links(&sim.log).is_empty());
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let mut sim = Sim::new(storm_topology());
    let error = sim
        .engine
        .handle_event(probe("", true, T0, Severity::P1), &sim.map)
        .unwrap_err();
    assert_eq!(error, EventError::EmptyFingerprint);
    assert_eq!(error.to_string(), "finding has an empty fingerprint");
    let error = sim
        .engine
        .handle_event(
            Event::AgentLost {
                agent: String::new(),
                at: T0,
            },
            &sim.map,
        )
        .unwrap_err();
    assert_eq!(error, EventError::EmptyAgent);
    assert_eq!(sim.engine.open_incidents().count(), 0);
}

#[test]
fn rules_load_with_defaults_and_are_checked() {
    let rules: IncidentRules = serde_json::from_str("{}").unwrap();
    assert_eq!(rules, IncidentRules::default());
    let rules: IncidentRules =
        serde_json::from_str(r#"{"hold_agent_secs": 30, "terminal_off_hours": null}"#).unwrap();
    assert_eq!(rules.hold_agent_secs, 30);
    assert_eq!(rules.terminal_off_hours, None);
    assert_eq!(rules.hold_finding_secs, 2);
    assert!(serde_json::from_str::<IncidentRules>(r#"{"hold_secs": 3}"#).is_err());

    let bad = IncidentRules {
        mass_outage_percent: 101,
        ..IncidentRules::default()
    };
    assert_eq!(
        IncidentEngine::new(bad, START).unwrap_err(),
        RulesError::PercentOutOfRange(101)
    );
    let bad = IncidentRules {
        mass_outage_clear_percent: 60,
        ..IncidentRules::default()
    };
    assert_eq!(
        bad.validate().unwrap_err(),
        RulesError::ClearAboveRaise {
            clear: 60,
            raise: 50
        }
    );
    for time in ["24:00", "7:5", "x:00", "+7:00", ""] {
        let bad = IncidentRules {
            terminal_off_hours: Some(OffHours {
                start: time.into(),
                ..OffHours::default()
            }),
            ..IncidentRules::default()
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            RulesError::BadTime(time.into())
        );
    }
    let mut engine = IncidentEngine::new(IncidentRules::default(), START).unwrap();
    let bad = IncidentRules {
        mass_outage_min_agents: 0,
        ..IncidentRules::default()
    };
    assert_eq!(engine.set_rules(bad), Err(RulesError::ZeroMinAgents));
    assert_eq!(engine.rules(), &IncidentRules::default());
}
