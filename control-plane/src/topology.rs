//! Who is behind whom: every agent's uplink.
//!
//! By default an agent's uplink is the `gateway` agent of its nearest division — its own, then
//! each ancestor — that has one; a gateway's own uplink is searched from its parent division
//! up. With no gateway on the way, the agent talks to the control plane directly (`None`).
//! An admin may override this per agent. Incident suppression ("the villages behind a dead
//! township gateway are symptoms, not causes") and the network view build on this map, so it
//! must be deterministic: among several gateways of one division the earliest joined wins.

use std::collections::HashMap;

use bagui_protocol::Role;

use crate::divisions::Divisions;
use crate::store::AgentRecord;

/// The uplink of every agent (`None`: the control plane itself).
pub fn uplinks(agents: &[AgentRecord], divisions: &Divisions) -> HashMap<String, Option<String>> {
    let mut gateways: HashMap<&str, Vec<&AgentRecord>> = HashMap::new();
    for agent in agents {
        if agent.role == Role::Gateway && agent.revoked_ms.is_none() {
            gateways
                .entry(agent.division.as_str())
                .or_default()
                .push(agent);
        }
    }
    for list in gateways.values_mut() {
        list.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    }
    let known: HashMap<&str, &AgentRecord> = agents.iter().map(|a| (a.id.as_str(), a)).collect();
    agents
        .iter()
        .map(|agent| {
            let uplink = match &agent.uplink_override {
                Some(id) if known.contains_key(id.as_str()) => Some(id.clone()),
                _ => computed_uplink(agent, &gateways, divisions),
            };
            (agent.id.clone(), uplink)
        })
        .collect()
}

fn computed_uplink(
    agent: &AgentRecord,
    gateways: &HashMap<&str, Vec<&AgentRecord>>,
    divisions: &Divisions,
) -> Option<String> {
    let skip_own_division = agent.role == Role::Gateway;
    divisions
        .ancestors(&agent.division)
        .skip(usize::from(skip_own_division))
        .find_map(|division| {
            gateways
                .get(division.code.as_str())?
                .iter()
                .find(|gateway| gateway.id != agent.id)
                .map(|gateway| gateway.id.clone())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, division: &str, role: Role, created_ms: u64) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            division: division.into(),
            role,
            created_ms,
            ..Default::default()
        }
    }

    #[test]
    fn nearest_gateway_up_the_tree_with_overrides() {
        let divisions = Divisions::guangxi();
        let mut agents = vec![
            agent("village-term", "450103001005", Role::Terminal, 5),
            agent("township-gw", "450103001", Role::Gateway, 2),
            agent("township-gw-late", "450103001", Role::Gateway, 3),
            agent("county-gw", "450103", Role::Gateway, 1),
            agent("county-server", "450103", Role::Server, 1),
            agent("other-city", "450304001008", Role::Terminal, 1),
        ];
        let map = uplinks(&agents, &divisions);
        assert_eq!(map["village-term"].as_deref(), Some("township-gw"));
        assert_eq!(
            map["township-gw"].as_deref(),
            Some("county-gw"),
            "a gateway looks above its own division"
        );
        assert_eq!(map["county-server"].as_deref(), Some("county-gw"));
        assert_eq!(map["county-gw"], None);
        assert_eq!(map["other-city"], None);

        // A revoked gateway carries nobody; an override wins over the computed uplink.
        agents[1].revoked_ms = Some(9);
        agents[0].uplink_override = None;
        let map = uplinks(&agents, &divisions);
        assert_eq!(map["village-term"].as_deref(), Some("township-gw-late"));
        agents[0].uplink_override = Some("county-gw".into());
        assert_eq!(
            uplinks(&agents, &divisions)["village-term"].as_deref(),
            Some("county-gw")
        );
    }
}
