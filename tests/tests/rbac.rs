//! Users, roles and scope through the real API: a county operator sees and acts on its own
//! county's work orders and assets only; a viewer cannot act; the audit administrator reads the
//! audit log and nothing else, and logs in only with a TOTP code; repeated wrong passwords
//! lock the account.

use std::time::Duration;

use bagui_control_plane::client::ApiClient;
use bagui_control_plane::users::{CreateUser, IssuedToken};
use bagui_ops::access::{Role, Secret, TotpParams, TotpSecret, totp_code};
use bagui_tests::*;
use serde_json::{Value, json};

const COUNTY_A: &str = "450103"; // 青秀区
const COUNTY_B: &str = "450105"; // 江南区
const PASSWORD: &str = "Guangxi-Ops-2026!";

fn user(name: &str, role: Role, scope: &str) -> CreateUser {
    CreateUser {
        name: name.into(),
        roles: vec![role],
        scope: scope.into(),
        teams: Vec::new(),
        password: Some(Secret::new(PASSWORD)),
    }
}

async fn login(
    url: &str,
    name: &str,
    password: &str,
    totp: Option<String>,
) -> anyhow::Result<ApiClient> {
    let anonymous = ApiClient::new(url, "none", None)?;
    let issued: IssuedToken = anonymous
        .post(
            "/api/v1/login",
            &json!({ "name": name, "password": password, "totp": totp }),
        )
        .await?;
    ApiClient::new(url, issued.token.expose(), None)
}

fn refused_with(result: anyhow::Result<Value>, status: &str) {
    match result {
        Ok(value) => panic!("expected {status}, got {value}"),
        Err(error) => assert!(
            error.to_string().contains(status),
            "expected {status}: {error:#}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_county_user_sees_and_acts_on_its_own_county_only() {
    let deployment = Deployment::init().unwrap();
    let cp = deployment.start().await.unwrap();
    let url = cp.api_url.clone();

    // One work order in each county, from the generic intake.
    let intake = cp
        .admin
        .create_intake_token(
            "admin",
            &bagui_control_plane::admin_ops::CreateIntakeToken {
                name: "12345".into(),
            },
        )
        .unwrap();
    let sender = ApiClient::new(&url, &intake.token, None).unwrap();
    for (id, county) in [("a-1", COUNTY_A), ("b-1", COUNTY_B)] {
        let _: Value = sender
            .post(
                "/api/v1/intake/generic",
                &json!({"source": "12345", "id": id, "title": format!("hotline {id}"),
                        "severity": "major", "category": "application", "division": county}),
            )
            .await
            .unwrap();
    }
    let root = ApiClient::new(&url, &deployment.data_dir.admin_token().unwrap(), None).unwrap();
    let mut all: Vec<Value> = Vec::new();
    for _ in 0..100 {
        all = root.get("/api/v1/work-orders").await.unwrap();
        if all.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all.len(), 2, "{all:#?}");
    let id_in = |county: &str| {
        all.iter()
            .find(|order| order["division"] == county)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (order_a, order_b) = (id_in(COUNTY_A), id_in(COUNTY_B));

    // An agent in county B.
    let token = create_token(&cp, "450105001", "server", 1).unwrap();
    let state_dir = deployment.state_dir("b-agent");
    let agent_b = join(&deployment, &state_dir, &token.token, "b-agent")
        .await
        .unwrap()
        .agent_id;

    // Users belong to teams that exist.
    let mut stray = user("stray", Role::Operator, COUNTY_A);
    stray.teams = vec!["no-such-team".into()];
    let refused = cp.admin.create_user("admin", &stray).unwrap_err();
    assert!(
        refused.to_string().contains("no team no-such-team"),
        "{refused}"
    );
    let mut member = user("member", Role::Operator, COUNTY_A);
    member.teams = vec!["region-duty".into()];
    assert_eq!(
        cp.admin.create_user("admin", &member).unwrap().teams,
        vec!["region-duty".to_string()]
    );
    for request in [
        user("ops-a", Role::Operator, COUNTY_A),
        user("viewer-a", Role::Viewer, COUNTY_A),
        user("auditor", Role::AuditAdmin, "45"),
    ] {
        cp.admin.create_user("admin", &request).unwrap();
    }

    // The API describes itself, to anyone.
    let document: Value = ApiClient::new(&url, "none", None)
        .unwrap()
        .get("/api/v1/openapi.json")
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/api/v1/work-orders/{id}/actions"]["post"].is_object());

    // The county A operator.
    let ops_a = login(&url, "ops-a", PASSWORD, None).await.unwrap();
    let visible: Vec<Value> = ops_a.get("/api/v1/work-orders").await.unwrap();
    assert_eq!(visible.len(), 1, "{visible:#?}");
    assert_eq!(visible[0]["id"], order_a.as_str());
    refused_with(
        ops_a.get(&format!("/api/v1/work-orders/{order_b}")).await,
        "404",
    );
    refused_with(
        ops_a
            .post(
                &format!("/api/v1/work-orders/{order_b}/actions"),
                &json!({"command": "ack"}),
            )
            .await,
        "404",
    );
    refused_with(
        ops_a
            .get(&format!("/api/v1/work-orders?division={COUNTY_B}"))
            .await,
        "403",
    );
    let acked: Value = ops_a
        .post(
            &format!("/api/v1/work-orders/{order_a}/actions"),
            &json!({"command": "ack"}),
        )
        .await
        .unwrap();
    assert_eq!(acked["state"], "ACKED");
    assert_eq!(
        acked["transitions"].as_array().unwrap().last().unwrap()["actor"],
        "ops-a"
    );
    // Assets of county B's agent do not exist for them.
    refused_with(ops_a.get(&format!("/api/v1/agents/{agent_b}")).await, "404");
    refused_with(
        ops_a.get(&format!("/api/v1/agents/{agent_b}/assets")).await,
        "404",
    );
    let agents: Vec<Value> = ops_a.get("/api/v1/agents").await.unwrap();
    assert!(agents.iter().all(|agent| agent["id"] != agent_b.as_str()));
    // Nor is the audit log theirs, nor the admin-only routes.
    refused_with(ops_a.get("/api/v1/audit").await, "403");
    refused_with(ops_a.get("/api/v1/tokens").await, "403");
    // The root token still sees everything.
    let everything: Vec<Value> = root.get("/api/v1/agents").await.unwrap();
    assert!(
        everything
            .iter()
            .any(|agent| agent["id"] == agent_b.as_str())
    );

    // A viewer sees but cannot act.
    let viewer = login(&url, "viewer-a", PASSWORD, None).await.unwrap();
    let _: Value = viewer
        .get(&format!("/api/v1/work-orders/{order_a}"))
        .await
        .unwrap();
    refused_with(
        viewer
            .post(
                &format!("/api/v1/work-orders/{order_a}/actions"),
                &json!({"command": "start"}),
            )
            .await,
        "403",
    );

    // The audit administrator: no login without TOTP; with it, the audit log and nothing else.
    refused_with(
        login(&url, "auditor", PASSWORD, None)
            .await
            .map(|_| Value::Null),
        "401",
    );
    let enrolment = cp.admin.enroll_totp("admin", "auditor").unwrap();
    let secret = TotpSecret::from_base32(&enrolment.secret).unwrap();
    let code = totp_code(
        &secret,
        &TotpParams::BAGUI,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let auditor = login(&url, "auditor", PASSWORD, Some(code.clone()))
        .await
        .unwrap();
    let entries: Vec<Value> = auditor.get("/api/v1/audit").await.unwrap();
    assert!(entries.iter().any(|entry| entry["action"] == "wo.ack"));
    refused_with(auditor.get("/api/v1/work-orders").await, "403");
    refused_with(auditor.get("/api/v1/agents").await, "403");
    // The same code again is a replay.
    refused_with(
        login(&url, "auditor", PASSWORD, Some(code))
            .await
            .map(|_| Value::Null),
        "401",
    );

    // Five wrong passwords lock the account: the right one is refused afterwards.
    for _ in 0..5 {
        refused_with(
            login(&url, "viewer-a", "wrong-password", None)
                .await
                .map(|_| Value::Null),
            "401",
        );
    }
    refused_with(
        login(&url, "viewer-a", PASSWORD, None)
            .await
            .map(|_| Value::Null),
        "locked",
    );
    cp.shutdown().await.unwrap();
}
