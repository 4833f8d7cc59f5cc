//! The HTTP API (`/api/v1/…`), `/readyz`, `/healthz` and `/metrics`.
//!
//! Only this module (and `client`) knows HTTP. Every `/api/v1` route and `/metrics` needs the
//! admin token as `Authorization: Bearer …` from the first release; `run` serves plain HTTP
//! only on loopback and HTTPS with a CA-issued certificate on any other address.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bagui_protocol::digest;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::admin::{
    Admin, AdminError, ChangesQuery, CommandRequest, CreateToken, FindQuery, IssueRequest,
    SetUplink,
};
use crate::metrics::Metrics;
use crate::users::Caller;
use bagui_ops::access::Permission;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    pub admin: Arc<Admin>,
    pub metrics: Metrics,
    /// SM3 of the admin token; requests are compared by digest, not by the secret itself.
    pub admin_token_digest: String,
    pub ready: Arc<AtomicBool>,
    /// External alerts already seen (repeats, HA copies).
    pub intake_dedupe: Arc<crate::admin_ops::IntakeDeduper>,
}

/// An error as the API reports it: a status and `{"error": "…"}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

#[derive(Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> ApiError {
        let status = match error {
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        };
        ApiError(status, error.to_string())
    }
}

/// The authenticated caller: its name (for the audit log) and who it is. Extracting it also
/// enforces the access rules of [`route_permission`] and the caller's division scope, in one
/// place for every route.
pub struct Operator(pub String, pub Caller);

impl FromRequestParts<ApiState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Operator, ApiError> {
        let presented = bearer(parts);
        let Some(token) = presented else {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "authentication required: send `Authorization: Bearer <token>`".into(),
            ));
        };
        let caller = if digest::sm3_tagged(token.as_bytes()) == state.admin_token_digest {
            Caller::Root
        } else {
            let admin = state.admin.clone();
            match blocking_value(move || admin.caller_for_token(&token)).await? {
                Some(caller) => caller,
                None => {
                    return Err(ApiError(
                        StatusCode::UNAUTHORIZED,
                        "invalid credentials".into(),
                    ));
                }
            }
        };
        if let Caller::User { scope, .. } = &caller {
            let permission =
                route_permission(&parts.method, parts.uri.path()).ok_or_else(|| {
                    ApiError(
                        StatusCode::FORBIDDEN,
                        "this route is for the deployment's admin token only".into(),
                    )
                })?;
            if !caller.may(permission) {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    format!("none of your roles grants {permission}"),
                ));
            }
            enforce_scope(parts, state, &caller, scope.clone()).await?;
        }
        Ok(Operator(caller.name().to_owned(), caller))
    }
}

/// The `Authorization: Bearer` token of a request, trimmed.
fn bearer(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned())
}

/// The permission a route needs; `None`: the admin token only.
pub(crate) fn route_permission(method: &axum::http::Method, path: &str) -> Option<Permission> {
    use axum::http::Method;
    let rest = path.strip_prefix("/api/v1/").unwrap_or(path);
    let parts: Vec<&str> = rest.split('/').collect();
    let read = method == Method::GET;
    Some(match (parts.as_slice(), read) {
        (["agents"], true) | (["agents", _], true) => Permission::ViewAssets,
        (["agents", _, "posture"], true) | (["posture", ..], true) => Permission::ViewPosture,
        (
            [
                "agents",
                _,
                "reports" | "assets" | "health" | "probes" | "availability",
            ],
            true,
        ) => Permission::ViewAssets,
        (["agents", ..], false) => Permission::ManageTokensAndAgents,
        (["assets", ..], true) => Permission::ViewAssets,
        (["tokens", ..], _) => Permission::ManageTokensAndAgents,
        (["audit"], true) => Permission::ReadAuditLog,
        (["work-orders", ..], true) | (["teams"], true) | (["incidents"], true) => {
            Permission::ViewWorkOrders
        }
        (["kpi"], true) | (["services", ..], true) | (["maintenance"], true) => {
            Permission::ViewWorkOrders
        }
        (["work-orders", _, "actions"], false) => Permission::ActOnWorkOrders,
        (["teams", ..], false) => Permission::ManageTeams,
        (["notifications"], true) | (["incident-rules"], _) => Permission::ManageChannelsAndRules,
        (["services" | "maintenance", ..], false) => Permission::ManageChannelsAndRules,
        (["intake-tokens"], false) => Permission::CreateIntakeTokens,
        (["users", ..], _) => Permission::ManageUsers,
        // The console's aggregates (crate::console); work orders inside them need their own
        // permission, checked by the handlers.
        (["overview" | "network" | "events"], true) => Permission::ViewAssets,
        _ if path == "/metrics" => Permission::ViewAssets,
        _ => return None,
    })
}

/// Limits a user's request to their scope: a resource named in the path (an agent, a work
/// order) outside it is answered 404, as if it did not exist; a list is limited to the scope
/// (a `division` filter outside it is refused, none given means the whole scope).
async fn enforce_scope(
    parts: &mut Parts,
    state: &ApiState,
    caller: &Caller,
    scope: String,
) -> Result<(), ApiError> {
    let path = parts.uri.path().to_owned();
    let rest = path.strip_prefix("/api/v1/").unwrap_or(&path);
    let segments: Vec<&str> = rest.split('/').collect();
    let admin = state.admin.clone();
    let subject = match segments.as_slice() {
        ["agents", id, ..] if *id != "issue" => Some(("agent", (*id).to_owned())),
        ["work-orders", id, ..] => Some(("work order", (*id).to_owned())),
        _ => None,
    };
    if let Some((kind, id)) = subject {
        let lookup = id.clone();
        let division = blocking_value(move || match kind {
            "agent" => admin.agent(&lookup).map(|agent| agent.division),
            _ => admin.work_order(&lookup).map(|order| order.row.division),
        })
        .await?;
        if !state.admin.in_scope(caller, &division) {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("no {kind} {id}")));
        }
        return Ok(());
    }
    // Lists: every query with a `division` filter gets the scope as its default.
    let query = parts.uri.query().unwrap_or("").to_owned();
    let mut pairs: Vec<(String, String)> = form_pairs(&query);
    match pairs.iter().find(|(key, _)| key == "division") {
        Some((_, division)) => {
            if !state.admin.in_scope(caller, division) {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    format!("division {division} is outside your scope {scope}"),
                ));
            }
        }
        None => pairs.push(("division".into(), scope)),
    }
    if let Some((_, agent)) = pairs.iter().find(|(key, _)| key == "agent") {
        let admin = state.admin.clone();
        let lookup = agent.clone();
        let division = blocking_value(move || admin.agent(&lookup).map(|agent| agent.division))
            .await
            .ok();
        if !division.is_some_and(|division| state.admin.in_scope(caller, &division)) {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("no agent {agent}")));
        }
    }
    let encoded: String = pairs
        .iter()
        .map(|(key, value)| format!("{}={}", encode_component(key), encode_component(value)))
        .collect::<Vec<_>>()
        .join("&");
    let uri = format!("{path}?{encoded}");
    parts.uri = uri
        .parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "malformed query".into()))?;
    Ok(())
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(key), decode_component(value))
        })
        .collect()
}

fn decode_component(text: &str) -> String {
    let hex = |byte: u8| (byte as char).to_digit(16).map(|digit| digit as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                match (hex(bytes[index + 1]), hex(bytes[index + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        index += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode_component(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Runs `operation` on the state's admin off the async workers (for handlers in other
/// modules: `api_service`, `console`).
pub(crate) async fn run_admin<T: Send + 'static>(
    state: ApiState,
    operation: impl FnOnce(&Admin) -> Result<T, AdminError> + Send + 'static,
) -> Result<Json<T>, ApiError> {
    blocking(move || operation(&state.admin)).await
}

/// Runs an admin operation off the async workers (the store flushes to disk).
async fn blocking<T: Send + 'static>(
    operation: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<Json<T>, ApiError> {
    blocking_value(operation).await.map(Json)
}

async fn blocking_value<T: Send + 'static>(
    operation: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(operation)
        .await
        .map_err(|error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?
        .map_err(ApiError::from)
}

#[derive(Deserialize)]
struct AgentFilter {
    division: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/agents/issue", post(issue_agents))
        .route("/api/v1/agents/{id}", get(show_agent))
        .route("/api/v1/agents/{id}/revoke", post(revoke_agent))
        .route("/api/v1/agents/{id}/uplink", put(set_uplink))
        .route("/api/v1/agents/{id}/reports", get(agent_reports))
        .route("/api/v1/agents/{id}/commands", post(send_command))
        .route("/api/v1/agents/{id}/assets", get(show_assets))
        .route(
            "/api/v1/agents/{id}/probes",
            get(list_probes).post(push_probe),
        )
        .route(
            "/api/v1/agents/{id}/probes/{name}",
            axum::routing::delete(remove_probe),
        )
        .route("/api/v1/agents/{id}/health", get(show_health))
        .route("/api/v1/agents/{id}/posture", get(show_posture))
        .route("/api/v1/posture/failing", get(posture_failing))
        .route("/api/v1/posture/findings", get(posture_findings))
        .route("/api/v1/posture/divisions", get(posture_divisions))
        .route("/api/v1/assets/changes", get(asset_changes))
        .route("/api/v1/assets/find", get(asset_find))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/work-orders", get(list_orders))
        .route("/api/v1/work-orders/{id}", get(show_order))
        .route("/api/v1/work-orders/{id}/actions", post(order_action))
        .route("/api/v1/teams", get(list_teams).post(put_team))
        .route("/api/v1/teams/{id}", axum::routing::delete(remove_team))
        .route("/api/v1/notifications", get(list_notifications))
        .route("/api/v1/incidents", get(list_incidents))
        .route(
            "/api/v1/incident-rules",
            get(show_incident_rules).put(set_incident_rules),
        )
        .route("/api/v1/intake-tokens", post(create_intake_token))
        .route("/api/v1/intake/alertmanager", post(intake_alertmanager))
        .route("/api/v1/intake/generic", post(intake_generic))
        .route("/api/v1/login", post(login))
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}", axum::routing::delete(remove_user))
        .route("/api/v1/users/{name}/password", post(set_password))
        .route("/api/v1/users/{name}/totp", post(enroll_totp))
        .route("/api/v1/users/{name}/tokens", post(issue_user_token))
        .merge(crate::api_service::routes())
        .merge(crate::console::routes())
        .with_state(state)
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

#[derive(Deserialize)]
struct MetricsQuery {
    /// Also every agent's latest samples (large: ~50 series an agent).
    #[serde(default)]
    agents: bool,
}

async fn metrics(
    State(state): State<ApiState>,
    _: Operator,
    Query(query): Query<MetricsQuery>,
) -> Result<Response, ApiError> {
    let mut text = state.metrics.render();
    let admin = state.admin.clone();
    let fleet = blocking_value(move || admin.fleet_exposition(query.agents)).await?;
    text.push_str(&fleet);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn list_agents(
    State(state): State<ApiState>,
    _: Operator,
    Query(filter): Query<AgentFilter>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.agents(filter.division.as_deref())).await
}

async fn issue_agents(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Json(body): Json<IssueRequest>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.issue_bulk(&actor, &body)).await
}

async fn show_agent(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.agent(&id)).await
}

async fn revoke_agent(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.revoke_agent(&actor, &id)).await
}

async fn set_uplink(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(id): Path<String>,
    Json(body): Json<SetUplink>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.set_uplink(&actor, &id, body.gateway.as_deref())).await
}

async fn agent_reports(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.reports(&id, page.after, page.limit)).await
}

async fn send_command(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(id): Path<String>,
    Json(body): Json<CommandRequest>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.send_command(&actor, &id, &body)).await
}

async fn show_assets(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.asset(&id)).await
}

async fn show_posture(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.posture(&id)).await
}

#[derive(Deserialize)]
struct FailingQuery {
    division: Option<String>,
    severity: Option<String>,
}

async fn posture_failing(
    State(state): State<ApiState>,
    _: Operator,
    Query(query): Query<FailingQuery>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || {
        state
            .admin
            .posture_failing(query.division.as_deref(), query.severity.as_deref())
    })
    .await
}

async fn posture_findings(
    State(state): State<ApiState>,
    _: Operator,
    Query(query): Query<crate::admin::FindingsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.findings(&query)).await
}

async fn posture_divisions(
    State(state): State<ApiState>,
    _: Operator,
    Query(filter): Query<AgentFilter>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.posture_divisions(filter.division.as_deref())).await
}

async fn list_probes(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.probes(&id)).await
}

async fn push_probe(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(id): Path<String>,
    Json(body): Json<crate::probes::ProbeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.push_probe(&actor, &id, &body)).await
}

async fn remove_probe(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path((id, name)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.remove_probe(&actor, &id, &name)).await
}

async fn show_health(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.health(&id)).await
}

async fn asset_changes(
    State(state): State<ApiState>,
    _: Operator,
    Query(query): Query<ChangesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.asset_changes(&query)).await
}

async fn asset_find(
    State(state): State<ApiState>,
    _: Operator,
    Query(query): Query<FindQuery>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.asset_find(&query)).await
}

async fn list_tokens(
    State(state): State<ApiState>,
    _: Operator,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.tokens()).await
}

async fn create_token(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Json(body): Json<CreateToken>,
) -> Result<impl IntoResponse, ApiError> {
    let created = blocking(move || state.admin.create_token(&actor, &body)).await?;
    Ok((StatusCode::CREATED, created))
}

async fn revoke_token(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.revoke_token(&actor, &id)).await
}

async fn audit(
    State(state): State<ApiState>,
    _: Operator,
    Query(page): Query<Page>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.audit_entries(page.after, page.limit)).await
}

/// A TCP listener that completes TLS handshakes in their own tasks, so one slow client cannot
/// hold up the others, and hands finished connections to axum.
pub struct TlsListener {
    local_addr: std::net::SocketAddr,
    ready: mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        config: rustls::ServerConfig,
    ) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (sender, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting an API connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let handshakes = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = handshakes.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "API TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                    }
                });
                if sender.is_closed() {
                    break;
                }
            }
        });
        Ok(TlsListener { local_addr, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

// ---------------------------------------------------------------------------------------------
// Work orders, teams, notifications, intake
// ---------------------------------------------------------------------------------------------

async fn list_orders(
    State(state): State<ApiState>,
    _: Operator,
    Query(filter): Query<crate::dispatch::OrderFilter>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.work_orders(&filter)).await
}

async fn show_order(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.work_order(&id)).await
}

async fn order_action(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(id): Path<String>,
    Json(command): Json<bagui_ops::workorder::Command>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.work_order_command(&actor, &id, command)).await
}

async fn list_teams(
    State(state): State<ApiState>,
    _: Operator,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.teams()).await
}

async fn put_team(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Json(team): Json<crate::dispatch::Team>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.put_team(&actor, team)).await
}

async fn remove_team(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.remove_team(&actor, &id)).await
}

async fn list_notifications(
    State(state): State<ApiState>,
    _: Operator,
    Query(page): Query<Page>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.notifications(page.limit)).await
}

async fn list_incidents(
    State(state): State<ApiState>,
    Operator(_, caller): Operator,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || {
        let incidents = state.admin.incidents()?;
        Ok(incidents
            .into_iter()
            .filter(|incident| {
                caller.scope().is_none()
                    || incident
                        .division
                        .as_deref()
                        .is_some_and(|division| state.admin.in_scope(&caller, division))
            })
            .collect::<Vec<_>>())
    })
    .await
}

async fn show_incident_rules(
    State(state): State<ApiState>,
    _: Operator,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.incident_rules()).await
}

async fn set_incident_rules(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Json(rules): Json<bagui_ops::incidents::IncidentRules>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.set_incident_rules(&actor, rules)).await
}

async fn create_intake_token(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Json(request): Json<crate::admin_ops::CreateIntakeToken>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.create_intake_token(&actor, &request)).await
}

/// A sender holding an intake token (`Authorization: Bearer …`); it may post alerts, nothing
/// else.
pub struct IntakeCaller;

impl FromRequestParts<ApiState> for IntakeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<IntakeCaller, ApiError> {
        let presented = bearer(parts);
        let Some(token) = presented else {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "authentication required: send `Authorization: Bearer <intake token>`".into(),
            ));
        };
        let admin = state.admin.clone();
        match blocking_value(move || admin.check_intake_token(&token)).await? {
            Some(_) => Ok(IntakeCaller),
            None => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "invalid intake token".into(),
            )),
        }
    }
}

async fn intake_alertmanager(
    State(state): State<ApiState>,
    _: IntakeCaller,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let dedupe = state.intake_dedupe.clone();
    blocking(move || state.admin.intake(&dedupe, true, &body)).await
}

async fn intake_generic(
    State(state): State<ApiState>,
    _: IntakeCaller,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let dedupe = state.intake_dedupe.clone();
    blocking(move || state.admin.intake(&dedupe, false, &body)).await
}

// ---------------------------------------------------------------------------------------------
// Users and logins
// ---------------------------------------------------------------------------------------------

async fn login(
    State(state): State<ApiState>,
    Json(request): Json<crate::users::LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.login(&request, "api")).await
}

async fn list_users(
    State(state): State<ApiState>,
    _: Operator,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.users()).await
}

async fn create_user(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Json(request): Json<crate::users::CreateUser>,
) -> Result<impl IntoResponse, ApiError> {
    let created = blocking(move || state.admin.create_user(&actor, &request)).await?;
    Ok((StatusCode::CREATED, created))
}

async fn remove_user(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.remove_user(&actor, &name)).await
}

#[derive(Deserialize)]
struct PasswordBody {
    password: bagui_ops::access::Secret,
}

async fn set_password(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(name): Path<String>,
    Json(body): Json<PasswordBody>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.set_password(&actor, &name, &body.password)).await
}

async fn enroll_totp(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.enroll_totp(&actor, &name)).await
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default = "default_purpose")]
    purpose: String,
    /// Lifetime, e.g. `30d` (default 90 days).
    #[serde(default)]
    ttl: Option<String>,
}

fn default_purpose() -> String {
    "script".into()
}

async fn issue_user_token(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(name): Path<String>,
    Json(body): Json<TokenBody>,
) -> Result<impl IntoResponse, ApiError> {
    let ttl = match &body.ttl {
        Some(text) => bagui_protocol::units::parse_duration(text)
            .map_err(|error| ApiError(StatusCode::BAD_REQUEST, format!("ttl: {error}")))?,
        None => Duration::from_secs(90 * 86_400),
    };
    blocking(move || {
        state
            .admin
            .issue_user_token(&actor, &name, &body.purpose, ttl.as_millis() as u64)
    })
    .await
}
