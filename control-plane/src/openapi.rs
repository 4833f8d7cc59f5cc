//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`.
//!
//! One table, [`OPERATIONS`], lists every operation with what it needs; the document is built
//! from it. A test holds the table to the router in both directions (every route is
//! documented, every documented operation is routed), so the two cannot drift apart.

use serde_json::{Map, Value, json};

/// What an operation needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Nothing (login, the document itself).
    None,
    /// The deployment's admin token or a user token whose roles grant this permission
    /// (see `api::route_permission`; the user's division scope applies).
    Permission(&'static str),
    /// The admin token only.
    AdminToken,
    /// An intake token.
    IntakeToken,
}

/// One operation: method, path (axum syntax, `{id}`), tag, summary, what it needs.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
}

const fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    auth: Auth,
) -> Operation {
    Operation {
        method,
        path,
        tag,
        summary,
        auth,
    }
}

use Auth::{AdminToken, IntakeToken, Permission as P};

/// Every operation of the API.
pub const OPERATIONS: &[Operation] = &[
    op(
        "get",
        "/api/v1/openapi.json",
        "meta",
        "This document",
        Auth::None,
    ),
    op(
        "post",
        "/api/v1/login",
        "users",
        "Log in with password (and TOTP for administrators); returns a token",
        Auth::None,
    ),
    op(
        "get",
        "/api/v1/agents",
        "agents",
        "Enrolled agents (filter: division)",
        P("view_assets"),
    ),
    op(
        "post",
        "/api/v1/agents/issue",
        "agents",
        "Bulk identity issuance for many agents",
        P("manage_tokens_and_agents"),
    ),
    op(
        "get",
        "/api/v1/agents/{id}",
        "agents",
        "One agent, its session and link",
        P("view_assets"),
    ),
    op(
        "post",
        "/api/v1/agents/{id}/revoke",
        "agents",
        "Revoke an agent's identity and close its session",
        P("manage_tokens_and_agents"),
    ),
    op(
        "put",
        "/api/v1/agents/{id}/uplink",
        "agents",
        "Set or clear the agent's uplink gateway",
        P("manage_tokens_and_agents"),
    ),
    op(
        "get",
        "/api/v1/agents/{id}/reports",
        "agents",
        "Stored reports of an agent (after, limit)",
        P("view_assets"),
    ),
    op(
        "post",
        "/api/v1/agents/{id}/commands",
        "agents",
        "Send an audited command to an agent",
        P("manage_tokens_and_agents"),
    ),
    op(
        "get",
        "/api/v1/agents/{id}/assets",
        "assets",
        "The agent's asset record (资产在线)",
        P("view_assets"),
    ),
    op(
        "get",
        "/api/v1/agents/{id}/probes",
        "probes",
        "Probes pushed to the agent",
        P("view_assets"),
    ),
    op(
        "post",
        "/api/v1/agents/{id}/probes",
        "probes",
        "Push a probe (within the division's ranges)",
        P("manage_tokens_and_agents"),
    ),
    op(
        "delete",
        "/api/v1/agents/{id}/probes/{name}",
        "probes",
        "Remove a pushed probe",
        P("manage_tokens_and_agents"),
    ),
    op(
        "get",
        "/api/v1/agents/{id}/health",
        "health",
        "Latest health samples and check results",
        P("view_assets"),
    ),
    op(
        "get",
        "/api/v1/agents/{id}/posture",
        "posture",
        "Latest 等保 2.0 baseline run of the agent",
        P("view_posture"),
    ),
    op(
        "get",
        "/api/v1/posture/failing",
        "posture",
        "Failing baseline checks (division, severity)",
        P("view_posture"),
    ),
    op(
        "get",
        "/api/v1/posture/findings",
        "posture",
        "Security findings (division, agent, kind)",
        P("view_posture"),
    ),
    op(
        "get",
        "/api/v1/posture/divisions",
        "posture",
        "Posture scores rolled up by division",
        P("view_posture"),
    ),
    op(
        "get",
        "/api/v1/assets/changes",
        "assets",
        "Asset change history (division, agent, since)",
        P("view_assets"),
    ),
    op(
        "get",
        "/api/v1/assets/find",
        "assets",
        "Find assets by package, port, OS (division)",
        P("view_assets"),
    ),
    op(
        "get",
        "/api/v1/tokens",
        "tokens",
        "Join tokens (never their secrets)",
        P("manage_tokens_and_agents"),
    ),
    op(
        "post",
        "/api/v1/tokens",
        "tokens",
        "Create a join token; returns the join command",
        P("manage_tokens_and_agents"),
    ),
    op(
        "delete",
        "/api/v1/tokens/{id}",
        "tokens",
        "Revoke a join token",
        P("manage_tokens_and_agents"),
    ),
    op(
        "get",
        "/api/v1/audit",
        "audit",
        "The SM3-chained audit log (after, limit)",
        P("read_audit_log"),
    ),
    op(
        "get",
        "/api/v1/work-orders",
        "work-orders",
        "Work orders (division, state, team, all)",
        P("view_work_orders"),
    ),
    op(
        "get",
        "/api/v1/work-orders/{id}",
        "work-orders",
        "One work order with its transition log",
        P("view_work_orders"),
    ),
    op(
        "post",
        "/api/v1/work-orders/{id}/actions",
        "work-orders",
        "Act on a work order: {\"command\": \"ack\"|\"start\"|\"resolve\" (feedback)|\"verify\" (accepted)|\"close\"|\"return\" (reason)|\"escalate\"|\"take_over\"|\"reassign\" (team)}",
        P("act_on_work_orders"),
    ),
    op(
        "get",
        "/api/v1/teams",
        "teams",
        "Teams, their divisions, categories and channels",
        P("view_work_orders"),
    ),
    op(
        "post",
        "/api/v1/teams",
        "teams",
        "Create or replace a team",
        P("manage_teams"),
    ),
    op(
        "delete",
        "/api/v1/teams/{id}",
        "teams",
        "Remove a team",
        P("manage_teams"),
    ),
    op(
        "get",
        "/api/v1/notifications",
        "notifications",
        "The notification outbox: pending and failed",
        P("manage_channels_and_rules"),
    ),
    op(
        "get",
        "/api/v1/incidents",
        "incidents",
        "Open incidents as the engine holds them",
        P("view_work_orders"),
    ),
    op(
        "post",
        "/api/v1/intake-tokens",
        "intake",
        "Create an intake token (shown once)",
        P("create_intake_tokens"),
    ),
    op(
        "post",
        "/api/v1/intake/alertmanager",
        "intake",
        "Alertmanager webhook v4 intake",
        IntakeToken,
    ),
    op(
        "post",
        "/api/v1/intake/generic",
        "intake",
        "Generic JSON alert intake (e.g. the 12345 hotline)",
        IntakeToken,
    ),
    op(
        "get",
        "/api/v1/kpi",
        "kpi",
        "Work-order KPIs of a division subtree for a CST month (division, period=YYYY-MM)",
        P("view_work_orders"),
    ),
    op(
        "get",
        "/api/v1/maintenance",
        "maintenance",
        "Maintenance windows in force or to come",
        P("view_work_orders"),
    ),
    op(
        "post",
        "/api/v1/maintenance",
        "maintenance",
        "Create a maintenance window on an agent or a division subtree",
        P("manage_channels_and_rules"),
    ),
    op(
        "delete",
        "/api/v1/maintenance/{id}",
        "maintenance",
        "End (if in force) or delete a maintenance window",
        P("manage_channels_and_rules"),
    ),
    op(
        "get",
        "/api/v1/services",
        "services",
        "The service catalog (服务在线)",
        P("view_work_orders"),
    ),
    op(
        "post",
        "/api/v1/services",
        "services",
        "Create or replace a service",
        P("manage_channels_and_rules"),
    ),
    op(
        "get",
        "/api/v1/services/{id}",
        "services",
        "One service",
        P("view_work_orders"),
    ),
    op(
        "delete",
        "/api/v1/services/{id}",
        "services",
        "Remove a service",
        P("manage_channels_and_rules"),
    ),
    op(
        "get",
        "/api/v1/services/{id}/report",
        "services",
        "Availability, failures, MTBF, MTTR and provision rate for a month (period)",
        P("view_work_orders"),
    ),
    op(
        "get",
        "/api/v1/incident-rules",
        "incidents",
        "The incident rules in force (holds, grace, flap damping, mass outage, off-hours, severities)",
        P("manage_channels_and_rules"),
    ),
    op(
        "put",
        "/api/v1/incident-rules",
        "incidents",
        "Replace the incident rules; persisted, they win over the file's [incidents]",
        P("manage_channels_and_rules"),
    ),
    op(
        "get",
        "/api/v1/agents/{id}/availability",
        "agents",
        "The agent's availability for a CST month (period): connected time less maintenance",
        P("view_assets"),
    ),
    op(
        "get",
        "/api/v1/services/{id}/status",
        "services",
        "The service's state now: UP, DOWN, MAINTENANCE or UNKNOWN",
        P("view_work_orders"),
    ),
    op(
        "get",
        "/api/v1/users",
        "users",
        "Users, roles and scopes",
        P("manage_users"),
    ),
    op(
        "post",
        "/api/v1/users",
        "users",
        "Create a user",
        P("manage_users"),
    ),
    op(
        "delete",
        "/api/v1/users/{name}",
        "users",
        "Remove a user and their tokens",
        P("manage_users"),
    ),
    op(
        "post",
        "/api/v1/users/{name}/password",
        "users",
        "Set a user's password",
        P("manage_users"),
    ),
    op(
        "post",
        "/api/v1/users/{name}/totp",
        "users",
        "Enrol TOTP; returns the otpauth URI once",
        P("manage_users"),
    ),
    op(
        "post",
        "/api/v1/users/{name}/tokens",
        "users",
        "Issue a script token for a user",
        P("manage_users"),
    ),
    // The console's aggregates and live events (crate::console).
    op(
        "get",
        "/api/v1/overview",
        "console",
        "One-screen overview of a division subtree: agents online/offline by level and by child \
         division, open work orders by severity and state, escalations (division)",
        P("view_assets"),
    ),
    op(
        "get",
        "/api/v1/network",
        "console",
        "One level of the network tree: the children of a division with online/total, worst \
         state and canvas positions, and the agents attached to it (division)",
        P("view_assets"),
    ),
    op(
        "get",
        "/api/v1/events",
        "console",
        "Server-Sent Events: agents going online/offline and work orders changing state, within \
         the caller's scope (text/event-stream)",
        P("view_assets"),
    ),
];

/// Operations outside `/api/v1` (probes of liveness and the Prometheus exposition).
pub const OTHER_ROUTES: &[(&str, &str)] = &[
    ("get", "/readyz"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    // The console's static files (crate::console).
    ("get", "/"),
    ("get", "/console/{*file}"),
];

/// Builds the document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let parameters: Vec<Value> = operation
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        let (security, description) = match operation.auth {
            Auth::None => (json!([]), "No authentication.".to_owned()),
            Auth::Permission(permission) => (
                json!([{"bearer": []}]),
                format!(
                    "Admin token, or a user token whose roles grant `{permission}`; limited to \
                     the user's division scope (outside it: 404 for one resource, 403 for a \
                     division filter)."
                ),
            ),
            AdminToken => (json!([{"bearer": []}]), "Admin token only.".to_owned()),
            IntakeToken => (json!([{"bearer": []}]), "An intake token.".to_owned()),
        };
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({"description": "OK", "content": {"application/json": {}}}),
        );
        for (code, text) in [
            ("400", "Bad request"),
            ("401", "Not authenticated"),
            ("403", "Not allowed"),
            ("404", "Not found (or outside the caller's scope)"),
            ("409", "Conflict with the current state"),
        ] {
            responses.insert(
                code.into(),
                json!({"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            );
        }
        let mut entry = json!({
            "tags": [operation.tag],
            "summary": operation.summary,
            "description": description,
            "operationId": operation_id(operation),
            "security": security,
            "parameters": parameters,
            "responses": responses,
        });
        if matches!(operation.method, "post" | "put") {
            entry["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        paths
            .entry(operation.path.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects")
            .insert(operation.method.to_owned(), entry);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Bagui control plane API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "八桂 fleet operations: agents, assets, posture, work orders, teams, \
                            intake, users. JSON; errors are {\"error\": \"…\"}.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}},
        },
    })
}

fn operation_id(operation: &Operation) -> String {
    let mut id = operation.method.to_owned();
    for segment in operation.path.trim_start_matches("/api/v1/").split('/') {
        let word = segment.trim_matches(|c| c == '{' || c == '}');
        id.push('_');
        id.push_str(&word.replace(['-', '.'], "_"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// (method, path) of every route the router declares, read from the router's source.
    fn routed() -> BTreeSet<(String, String)> {
        let source = [
            include_str!("api.rs"),
            include_str!("api_service.rs"),
            include_str!("console.rs"),
        ]
        .concat();
        let mut routes = BTreeSet::new();
        for chunk in source.split(".route(").skip(1) {
            let Some(path) = chunk.split('"').nth(1) else {
                continue;
            };
            // The handler expression runs to the route's closing parenthesis.
            let handlers = &chunk[..chunk.find(")\n").unwrap_or(chunk.len())];
            for method in ["get", "post", "put", "delete"] {
                if handlers.contains(&format!("{method}("))
                    || handlers.contains(&format!(".{method}("))
                    || handlers.contains(&format!("routing::{method}("))
                {
                    routes.insert((method.to_owned(), path.to_owned()));
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_is_documented_and_every_operation_routed() {
        let routed = routed();
        assert!(
            routed.len() > 30,
            "the router source was not read: {routed:?}"
        );
        let documented: BTreeSet<(String, String)> = OPERATIONS
            .iter()
            .map(|op| (op.method.to_owned(), op.path.to_owned()))
            .chain(
                OTHER_ROUTES
                    .iter()
                    .map(|(method, path)| ((*method).to_owned(), (*path).to_owned())),
            )
            .collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes without documentation: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn the_documented_permission_is_the_one_the_api_enforces() {
        for operation in OPERATIONS {
            let Auth::Permission(name) = operation.auth else {
                continue;
            };
            let method: axum::http::Method = operation.method.to_uppercase().parse().unwrap();
            let path = operation.path.replace("{id}", "x").replace("{name}", "y");
            let enforced = crate::api::route_permission(&method, &path)
                .map(|permission| permission.to_string());
            assert_eq!(
                enforced.as_deref(),
                Some(name),
                "{} {}",
                operation.method,
                operation.path
            );
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_unique_operation_ids() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let mut ids = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                for segment in path.split('/') {
                    if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
                    {
                        assert!(
                            declared.contains(&name),
                            "{method} {path}: {name} undeclared"
                        );
                    }
                }
            }
        }
        assert_eq!(ids.len(), OPERATIONS.len());
    }
}
