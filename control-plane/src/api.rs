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
        };
        ApiError(status, error.to_string())
    }
}

/// The authenticated caller (the admin token's holder, for now).
pub struct Operator(pub(crate) String);

impl FromRequestParts<ApiState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Operator, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(token) if digest::sm3_tagged(token.as_bytes()) == state.admin_token_digest => {
                Ok(Operator("admin".into()))
            }
            Some(_) => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "invalid credentials".into(),
            )),
            None => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "authentication required: send `Authorization: Bearer <admin token>`".into(),
            )),
        }
    }
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
        .route("/api/v1/intake-tokens", post(create_intake_token))
        .route("/api/v1/intake/alertmanager", post(intake_alertmanager))
        .route("/api/v1/intake/generic", post(intake_generic))
        .merge(crate::api_service::routes())
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
    Operator(actor): Operator,
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
    Operator(actor): Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.revoke_agent(&actor, &id)).await
}

async fn set_uplink(
    State(state): State<ApiState>,
    Operator(actor): Operator,
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
    Operator(actor): Operator,
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
    Operator(actor): Operator,
    Path(id): Path<String>,
    Json(body): Json<crate::probes::ProbeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.push_probe(&actor, &id, &body)).await
}

async fn remove_probe(
    State(state): State<ApiState>,
    Operator(actor): Operator,
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
    Operator(actor): Operator,
    Json(body): Json<CreateToken>,
) -> Result<impl IntoResponse, ApiError> {
    let created = blocking(move || state.admin.create_token(&actor, &body)).await?;
    Ok((StatusCode::CREATED, created))
}

async fn revoke_token(
    State(state): State<ApiState>,
    Operator(actor): Operator,
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
    Operator(actor): Operator,
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
    Operator(actor): Operator,
    Json(team): Json<crate::dispatch::Team>,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.put_team(&actor, team)).await
}

async fn remove_team(
    State(state): State<ApiState>,
    Operator(actor): Operator,
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
    _: Operator,
) -> Result<impl IntoResponse, ApiError> {
    blocking(move || state.admin.incidents()).await
}

async fn create_intake_token(
    State(state): State<ApiState>,
    Operator(actor): Operator,
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
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|token| token.trim().to_owned());
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
