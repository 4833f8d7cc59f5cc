//! The HTTP routes of 管理在线 and 服务在线 (see `crate::admin_service`), merged into the API's
//! router by `crate::api::router`:
//!
//! - `GET /api/v1/kpi?division=C&period=2026-11`
//! - `GET /api/v1/maintenance`, `POST /api/v1/maintenance`, `DELETE /api/v1/maintenance/{id}`
//! - `GET /api/v1/services`, `POST /api/v1/services` (create or replace),
//!   `GET /api/v1/services/{id}`, `DELETE /api/v1/services/{id}`,
//!   `GET /api/v1/services/{id}/report?period=2026-11`
//!
//! Every handler is thin: authenticate, read the input, call [`Admin`] off the async workers.
//! Bodies are read as bytes and parsed here so that malformed input is a 400 with the parser's
//! message, like every other refusal.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::admin::AdminError;
use crate::api::{ApiError, ApiState, Operator, run_admin as run};

/// The routes of this module, for `Router::merge`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/kpi", get(kpi))
        .route(
            "/api/v1/maintenance",
            get(list_maintenance).post(create_maintenance),
        )
        .route("/api/v1/maintenance/{id}", delete(remove_maintenance))
        .route("/api/v1/services", get(list_services).post(put_service))
        .route(
            "/api/v1/services/{id}",
            get(show_service).delete(remove_service),
        )
        .route("/api/v1/services/{id}/report", get(service_report))
        .route("/api/v1/services/{id}/status", get(service_status))
        .route("/api/v1/agents/{id}/availability", get(agent_availability))
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        ApiError::from(AdminError::BadRequest(format!(
            "the request body is not valid: {error}"
        )))
    })
}

fn required(value: Option<String>, name: &str) -> Result<String, ApiError> {
    value
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| {
            ApiError::from(AdminError::BadRequest(format!(
                "the query parameter `{name}` is required"
            )))
        })
}

#[derive(Deserialize)]
struct KpiQuery {
    division: Option<String>,
    /// `YYYY-MM` (CST calendar month).
    period: Option<String>,
}

async fn kpi(
    State(state): State<ApiState>,
    _: Operator,
    Query(query): Query<KpiQuery>,
) -> Result<Json<crate::admin_service::KpiView>, ApiError> {
    let division = required(query.division, "division")?;
    let period = required(query.period, "period")?;
    run(state, move |admin| admin.kpi(&division, &period)).await
}

async fn list_maintenance(
    State(state): State<ApiState>,
    _: Operator,
) -> Result<Json<Vec<crate::admin_service::MaintenanceView>>, ApiError> {
    run(state, |admin| admin.maintenance_list()).await
}

async fn create_maintenance(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    bytes: Bytes,
) -> Result<Json<crate::admin_service::MaintenanceView>, ApiError> {
    let request: crate::admin_service::CreateMaintenance = body(&bytes)?;
    run(state, move |admin| {
        admin.maintenance_create(&actor, &request)
    })
    .await
}

async fn remove_maintenance(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(id): Path<String>,
) -> Result<Json<crate::admin_service::MaintenanceView>, ApiError> {
    run(state, move |admin| admin.maintenance_remove(&actor, &id)).await
}

async fn list_services(
    State(state): State<ApiState>,
    _: Operator,
) -> Result<Json<Vec<bagui_ops::services::Service>>, ApiError> {
    run(state, |admin| admin.services()).await
}

async fn put_service(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    bytes: Bytes,
) -> Result<Json<bagui_ops::services::Service>, ApiError> {
    let service: bagui_ops::services::Service = body(&bytes)?;
    run(state, move |admin| admin.service_put(&actor, service)).await
}

async fn show_service(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<Json<bagui_ops::services::Service>, ApiError> {
    run(state, move |admin| admin.service(&id)).await
}

async fn remove_service(
    State(state): State<ApiState>,
    Operator(actor, _): Operator,
    Path(id): Path<String>,
) -> Result<Json<bagui_ops::services::Service>, ApiError> {
    run(state, move |admin| admin.service_remove(&actor, &id)).await
}

#[derive(Deserialize)]
struct ReportQuery {
    period: Option<String>,
}

async fn service_report(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Json<crate::admin_service::ServiceReport>, ApiError> {
    let period = required(query.period, "period")?;
    run(state, move |admin| admin.service_report(&id, &period)).await
}

async fn service_status(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<Json<crate::admin_service::ServiceStatusView>, ApiError> {
    run(state, move |admin| admin.service_status(&id)).await
}

async fn agent_availability(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Json<crate::admin_service::AgentAvailabilityView>, ApiError> {
    let period = required(query.period, "period")?;
    run(state, move |admin| admin.agent_availability(&id, &period)).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::admin_service::tests::Fixture;

    const TOKEN: &str = "test-admin-token";

    /// Serves the API of `fixture` on a loopback port; returns its address.
    async fn serve(fixture: Fixture) -> std::net::SocketAddr {
        let state = crate::api::ApiState {
            admin: Arc::new(fixture.admin),
            metrics: crate::metrics::Metrics::new(),
            admin_token_digest: bagui_protocol::digest::sm3_tagged(TOKEN.as_bytes()),
            ready: Arc::new(AtomicBool::new(true)),
            intake_dedupe: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, crate::api::router(state))
                .await
                .unwrap();
        });
        address
    }

    /// One HTTP/1.1 request; the status code and the body.
    async fn request(
        address: std::net::SocketAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let authorization = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\n{authorization}Content-Type: \
             application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let (_, payload) = response.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(payload).unwrap_or_default())
    }

    #[tokio::test]
    async fn the_routes_answer_and_refuse_bad_input_with_400_and_a_message() {
        // 2026-11-02 09:00 CST.
        let fixture = Fixture::new(1_793_581_200_000);
        fixture.agent("a1", "450103001");
        fixture.team("xz1", "450103001");
        let address = serve(fixture).await;
        let token = Some(TOKEN);

        let (status, _) = request(address, "GET", "/api/v1/kpi", None, "").await;
        assert_eq!(status, 401);
        let (status, body) =
            request(address, "GET", "/api/v1/kpi?division=450103", token, "").await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "the query parameter `period` is required");
        let (status, body) = request(
            address,
            "GET",
            "/api/v1/kpi?division=450103&period=2026-1",
            token,
            "",
        )
        .await;
        assert_eq!(status, 400);
        assert!(
            body["error"].as_str().unwrap().contains("YYYY-MM"),
            "{body}"
        );
        let (status, body) = request(
            address,
            "GET",
            "/api/v1/kpi?division=450103&period=2026-11",
            token,
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"]["kpi"]["opened"], 0);

        let (status, body) = request(address, "POST", "/api/v1/maintenance", token, "{").await;
        assert_eq!(status, 400);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("the request body is not valid"),
            "{body}"
        );
        let (status, body) = request(
            address,
            "POST",
            "/api/v1/maintenance",
            token,
            r#"{"agent":"a1","duration":"2h","reason":""}"#,
        )
        .await;
        assert_eq!(status, 400);
        assert!(
            body["error"].as_str().unwrap().contains("reason is empty"),
            "{body}"
        );
        let (status, window) = request(
            address,
            "POST",
            "/api/v1/maintenance",
            token,
            r#"{"division":"450103001","duration":"2h","reason":"fibre works"}"#,
        )
        .await;
        assert_eq!(status, 200, "{window}");
        let (_, listed) = request(address, "GET", "/api/v1/maintenance", token, "").await;
        assert_eq!(listed[0]["id"], window["id"]);
        let path = format!("/api/v1/maintenance/{}", window["id"].as_str().unwrap());
        let (status, _) = request(address, "DELETE", &path, token, "").await;
        assert_eq!(status, 200);
        let (status, _) = request(address, "DELETE", &path, token, "").await;
        assert_eq!(status, 404);

        let service = r#"{"id":"portal","name":"门户","owner_team":"xz1",
            "division":"450103001","agents":["a1"],"probes":["web"],"latency_objective_ms":500}"#;
        let (status, body) = request(address, "POST", "/api/v1/services", token, service).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["probes"][0], "a1:web");
        let unknown_field = service.replace("\"name\"", "\"nmae\"");
        let (status, _) = request(address, "POST", "/api/v1/services", token, &unknown_field).await;
        assert_eq!(status, 400);
        let (status, body) = request(
            address,
            "GET",
            "/api/v1/services/portal/report?period=2026-11",
            token,
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["figures"]["checks"], 0);
        let (status, _) =
            request(address, "GET", "/api/v1/services/portal/report", token, "").await;
        assert_eq!(status, 400);
        let (status, _) = request(address, "GET", "/api/v1/services/nope", token, "").await;
        assert_eq!(status, 404);
        let (status, _) = request(address, "DELETE", "/api/v1/services/portal", token, "").await;
        assert_eq!(status, 200);
    }
}
