//! Enrollment, identity and revocation, end to end over real QUIC on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bagui_agent::join::Refused;
use bagui_agent::link::LinkExit;
use bagui_agent::status::LinkState;
use bagui_control_plane::admin::CreateToken;
use bagui_control_plane::clock::ManualClock;
use bagui_protocol::{ErrorCode, JoinRefusal};
use bagui_tests::*;

fn refusal(error: &anyhow::Error) -> Option<JoinRefusal> {
    error
        .downcast_ref::<Refused>()
        .map(|refused| refused.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_run_report_and_list_under_the_division_path() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    assert!(token.join_command.starts_with(&format!(
        "bagui-agent join --server {} --token {}.",
        deployment.server(),
        token.view.id
    )));
    assert!(token.join_command.ends_with(&deployment.ca_hash()));

    let state_dir = deployment.state_dir("village");
    let state = join(&deployment, &state_dir, &token.token, "a")
        .await
        .unwrap();
    assert_eq!(state.division, VILLAGE);
    assert_eq!(state.division_path, VILLAGE_PATH);
    assert!(state.agent_id.starts_with("ag-"));

    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    // The host-facts report goes out at start; wait for its acknowledgement.
    wait_until(
        Duration::from_secs(10),
        "the first report to be acknowledged",
        || agent.status().last_acked_seq >= 1,
    )
    .await
    .unwrap();
    let status = agent.status();
    assert_eq!(status.link, LinkState::Connected);
    // TLS13_AES_128_GCM_SHA256 / X25519 under standard, TLS_SM4_GCM_SM3 / curveSM2 under shangmi.
    let profile = deployment.crypto_profile();
    assert_eq!(status.tls_suite, profile.tls_suite());
    assert_eq!(status.kx_group, profile.kx_group());

    let agents = control_plane.admin.agents(None).unwrap();
    assert_eq!(agents.len(), 1);
    let listed = &agents[0];
    assert_eq!(listed.id, state.agent_id);
    assert!(listed.online);
    assert_eq!(listed.division_path, VILLAGE_PATH);
    assert_eq!(listed.role.as_str(), "terminal");
    assert!(listed.last_acked_seq >= 1);
    assert!(listed.last_seen.is_some());
    assert!(!listed.possible_clone);
    let reports = control_plane.admin.reports(&state.agent_id, 0, 10).unwrap();
    assert_eq!(reports[0].kind, "host_facts");
    // Filtering by an ancestor division finds it; by another city does not.
    assert_eq!(control_plane.admin.agents(Some("4501")).unwrap().len(), 1);
    assert!(control_plane.admin.agents(Some("4503")).unwrap().is_empty());

    agent.shutdown().await.unwrap();
    wait_until(Duration::from_secs(5), "the agent to show offline", || {
        !control_plane.admin.agents(None).unwrap()[0].online
    })
    .await
    .unwrap();
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_joins_store_nothing_and_say_why() {
    let deployment = Deployment::init().unwrap();
    let clock = ManualClock::new();
    let control_plane = deployment.start_with_clock(clock.clone()).await.unwrap();
    let admin = &control_plane.admin;
    let agents_before = || admin.agents(None).unwrap().len();

    // Unknown division: refused when the token is made…
    let error = admin
        .create_token(
            "admin",
            &CreateToken {
                division: "450199999999".into(),
                ..CreateToken::default()
            },
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("unknown division 450199999999"),
        "{error}"
    );
    // …and when an agent asks for one at join, or for one outside the token's subtree.
    let county = create_token(&control_plane, "450103", "server", 5).unwrap();
    let state_dir = deployment.state_dir("refused");
    for (division, expected) in [
        ("450103999999", JoinRefusal::UnknownDivision),
        ("450304001008", JoinRefusal::DivisionOutOfScope),
    ] {
        let error = join_with(
            deployment.server(),
            deployment.ca_hash(),
            &state_dir,
            &county.token,
            "x",
            Some(division.into()),
        )
        .await
        .unwrap_err();
        assert_eq!(refusal(&error), Some(expected), "{error:#}");
    }

    // Used up.
    let once = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    join(
        &deployment,
        &deployment.state_dir("first"),
        &once.token,
        "first",
    )
    .await
    .unwrap();
    let error = join(
        &deployment,
        &deployment.state_dir("second"),
        &once.token,
        "second",
    )
    .await
    .unwrap_err();
    assert_eq!(refusal(&error), Some(JoinRefusal::TokenUsedUp), "{error:#}");
    assert!(error.to_string().contains("used 1 of 1"), "{error}");

    // Revoked.
    let revoked = create_token(&control_plane, VILLAGE, "server", 3).unwrap();
    admin.revoke_token("admin", &revoked.view.id).unwrap();
    let error = join(&deployment, &state_dir, &revoked.token, "x")
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&error),
        Some(JoinRefusal::TokenRevoked),
        "{error:#}"
    );

    // Wrong secret and unknown id look the same.
    let (id, _) = county.token.split_once('.').unwrap();
    for token in [
        format!("{id}.0000000000000000"),
        "zzzzzz.0000000000000000".into(),
        "garbage".into(),
    ] {
        let error = join(&deployment, &state_dir, &token, "x")
            .await
            .unwrap_err();
        assert_eq!(
            refusal(&error),
            Some(JoinRefusal::InvalidToken),
            "{error:#}"
        );
    }

    // Expired: time moves past the token's TTL (1 h).
    let expiring = create_token(&control_plane, VILLAGE, "server", 3).unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    let error = join(&deployment, &state_dir, &expiring.token, "x")
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&error),
        Some(JoinRefusal::TokenExpired),
        "{error:#}"
    );
    assert!(error.to_string().contains("expired at"), "{error}");

    // None of these refusals created an agent or used a token.
    assert_eq!(agents_before(), 1);
    let tokens = admin.tokens().unwrap();
    for (token, expected_uses) in [(&county, 0), (&revoked, 0), (&expiring, 0), (&once, 1)] {
        let view = tokens.iter().find(|t| t.id == token.view.id).unwrap();
        assert_eq!(view.uses, expected_uses, "token {}", view.id);
    }
    assert!(
        !state_dir.is_joined(),
        "a refused join leaves no identity behind"
    );

    // Every refusal is on the audit record.
    let refused = admin
        .audit_entries(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|entry| entry.action == "agent.join.refused")
        .count();
    assert_eq!(refused, 8);
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_hash_makes_the_agent_refuse_the_server() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    let state_dir = deployment.state_dir("pinned");
    let wrong = format!("sm3:{}", "ab".repeat(32));
    let error = join_with(
        deployment.server(),
        wrong.clone(),
        &state_dir,
        &token.token,
        "x",
        None,
    )
    .await
    .unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("refusing the control plane"), "{message}");
    assert!(
        message.contains(&deployment.ca_hash()) && message.contains(&wrong),
        "{message}"
    );
    // The token was never presented, so it is still unused; no agent exists.
    assert_eq!(control_plane.admin.tokens().unwrap()[0].uses, 0);
    assert!(control_plane.admin.agents(None).unwrap().is_empty());
    // The control plane learns of the refusal from the agent's close, which may still be in
    // flight when the agent's side has returned.
    wait_until(
        Duration::from_secs(10),
        "the handshake failure counted",
        || {
            control_plane
                .metrics
                .render()
                .contains("bagui_quic_handshake_failures_total 1")
        },
    )
    .await
    .unwrap();
    // A malformed hash is refused before any connection.
    let error = join_with(
        deployment.server(),
        "sha256:00".into(),
        &state_dir,
        &token.token,
        "x",
        None,
    )
    .await
    .unwrap_err();
    assert!(format!("{error:#}").contains("--ca-hash"), "{error:#}");
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_keeps_the_agent_only_with_its_key_and_clones_are_flagged() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 5).unwrap();
    let original_dir = deployment.state_dir("original");
    let original = join(&deployment, &original_dir, &token.token, "host-1")
        .await
        .unwrap();

    // Same state directory: proves the SM2 key, keeps the id.
    let again = join(&deployment, &original_dir, &token.token, "host-1")
        .await
        .unwrap();
    assert_eq!(again.agent_id, original.agent_id);

    // A copy of the machine without the key (same machine-id and instance): a new agent,
    // flagged, and the original untouched.
    let clone_dir = deployment.state_dir("clone");
    let clone = join(&deployment, &clone_dir, &token.token, "host-1")
        .await
        .unwrap();
    assert_ne!(clone.agent_id, original.agent_id);
    assert!(clone.possible_clone);
    let listed = control_plane.admin.agent(&clone.agent_id).unwrap();
    assert!(listed.possible_clone);
    assert_eq!(listed.clone_of.as_deref(), Some(original.agent_id.as_str()));
    assert!(
        !control_plane
            .admin
            .agent(&original.agent_id)
            .unwrap()
            .possible_clone
    );

    // Another instance on the same host is not a clone.
    let sibling = join(
        &deployment,
        &deployment.state_dir("sibling"),
        &token.token,
        "host-2",
    )
    .await
    .unwrap();
    assert!(!sibling.possible_clone);

    // Claiming the original's id with another key is refused outright.
    std::fs::copy(
        original_dir.root().join("agent.json"),
        clone_dir.root().join("agent.json"),
    )
    .unwrap();
    let error = join(&deployment, &clone_dir, &token.token, "host-1")
        .await
        .unwrap_err();
    assert_eq!(
        error
            .downcast_ref::<bagui_agent::join::Refused>()
            .map(|r| r.reason),
        Some(JoinRefusal::BadIdentityProof),
        "{error:#}"
    );
    assert_eq!(control_plane.admin.agents(None).unwrap().len(), 3);
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_need_a_certificate_from_this_ca_and_the_api_needs_the_token() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let server = control_plane.quic_addr;
    let ca = deployment.data_dir.ca().unwrap().cert_der().clone();
    let endpoint = quic::endpoint();

    // No client certificate: the handshake completes (enrollment needs that) but the session
    // ALPN is closed at once as unauthenticated.
    let connection =
        quic::connect_without_certificate(&endpoint, server, &ca, bagui_protocol::ALPN_SESSION)
            .await
            .unwrap();
    assert_eq!(
        quic::close_code(&connection).await,
        Some(ErrorCode::Unauthenticated)
    );

    // A certificate from another deployment's CA: the TLS handshake itself fails.
    let other = Deployment::init().unwrap();
    let other_plane = other.start().await.unwrap();
    let token = create_token(&other_plane, VILLAGE, "server", 1).unwrap();
    let foreign = other.state_dir("foreign");
    join(&other, &foreign, &token.token, "x").await.unwrap();
    // Trust our CA for the server side, present the foreign client certificate.
    foreign.save_ca_certificate(&ca).unwrap();
    let result = quic::connect_as(&endpoint, server, &foreign).await;
    match result {
        Err(error) => assert!(
            format!("{error:#}").to_lowercase().contains("certificate"),
            "{error:#}"
        ),
        Ok(connection) => {
            // TLS 1.3 may report the client's certificate rejection only after the handshake.
            let error = tokio::time::timeout(Duration::from_secs(5), connection.closed())
                .await
                .unwrap();
            assert!(
                format!("{error}").to_lowercase().contains("certificate"),
                "{error}"
            );
        }
    }
    assert!(control_plane.sessions.is_empty());
    other_plane.shutdown().await.unwrap();

    // The API: no token, a wrong token, the right token.
    let url = &control_plane.api_url;
    let anonymous = bagui_control_plane::client::ApiClient::new(url, "", None).unwrap();
    assert_eq!(anonymous.status("/api/v1/agents").await.unwrap(), 401);
    assert_eq!(anonymous.status("/metrics").await.unwrap(), 401);
    assert_eq!(anonymous.status("/readyz").await.unwrap(), 200);
    let wrong = bagui_control_plane::client::ApiClient::new(url, "not-the-token", None).unwrap();
    assert_eq!(wrong.status("/api/v1/tokens").await.unwrap(), 401);
    let admin_token = deployment.data_dir.admin_token().unwrap();
    let admin = bagui_control_plane::client::ApiClient::new(url, &admin_token, None).unwrap();
    assert_eq!(admin.status("/api/v1/agents").await.unwrap(), 200);
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_online_agent_disconnects_it_within_a_second_for_good() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("revoked");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let mut agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    wait_until(Duration::from_secs(10), "the agent to connect", || {
        control_plane.sessions.get(&state.agent_id).is_some()
    })
    .await
    .unwrap();

    let started = Instant::now();
    control_plane
        .admin
        .revoke_agent("admin", &state.agent_id)
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(1), agent.wait())
        .await
        .expect("the agent is disconnected within 1 s");
    assert!(matches!(exit, LinkExit::Revoked(_)), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(agent.status().link, LinkState::Revoked);
    agent.shutdown().await.unwrap();

    // It cannot come back: a restarted agent is refused at once, and no session opens.
    let opened = control_plane.metrics.render();
    let mut again = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), again.wait())
        .await
        .unwrap();
    assert!(
        matches!(exit, LinkExit::Revoked(ref reason) if reason.contains("revoked")),
        "{exit:?}"
    );
    again.shutdown().await.unwrap();
    let line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("bagui_sessions_opened_total"))
            .map(str::to_owned)
    };
    assert_eq!(line(&opened), line(&control_plane.metrics.render()));
    let listed = control_plane.admin.agent(&state.agent_id).unwrap();
    assert!(listed.revoked && !listed.online);
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_over_the_session_and_after_expiry_by_proof() {
    let mut deployment = Deployment::init().unwrap();
    deployment.config.enroll.cert_lifetime = Duration::from_secs(6);
    deployment.config.enroll.backdate = Duration::from_secs(0);
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    let state_dir = deployment.state_dir("renewing");
    let joined = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();

    // Online: renewed over the session at two thirds of its life (4 s of 6 s).
    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    wait_until(Duration::from_secs(10), "a renewal", || {
        state_dir.agent_state().unwrap().certificate_issued_ms > joined.certificate_issued_ms
    })
    .await
    .unwrap();
    let renewed = state_dir.agent_state().unwrap();
    assert!(renewed.certificate_issued_ms >= joined.certificate_issued_ms + 3_500);
    assert_eq!(renewed.agent_id, joined.agent_id);
    agent.shutdown().await.unwrap();

    // Offline past expiry: renewed on the join ALPN by proving the SM2 key, then connected.
    tokio::time::sleep(Duration::from_millis(
        renewed
            .certificate_not_after_ms
            .saturating_sub(bagui_agent::join::now_ms())
            + 500,
    ))
    .await;
    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "a session after late renewal",
        || control_plane.sessions.get(&joined.agent_id).is_some(),
    )
    .await
    .unwrap();
    let actions: Vec<String> = control_plane
        .admin
        .audit_entries(0, 1000)
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    assert!(actions.iter().any(|a| a == "agent.renew"), "{actions:?}");
    assert!(
        actions.iter().any(|a| a == "agent.renew_expired"),
        "{actions:?}"
    );
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_allow_listed_audited_and_answered() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    let state_dir = deployment.state_dir("commanded");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    wait_until(Duration::from_secs(10), "the first report", || {
        agent.status().last_acked_seq >= 1
    })
    .await
    .unwrap();

    let request = |kind: &str| bagui_control_plane::admin::CommandRequest {
        kind: kind.into(),
        ..Default::default()
    };
    let error = control_plane
        .admin
        .send_command("admin", &state.agent_id, &request("exec"))
        .unwrap_err();
    assert!(error.to_string().contains("unknown command"), "{error}");
    let sent = control_plane
        .admin
        .send_command("admin", &state.agent_id, &request("send_full_snapshot"))
        .unwrap();
    // The snapshot arrives as a second host-facts report, and the result is audited.
    wait_until(Duration::from_secs(10), "the snapshot report", || {
        control_plane
            .admin
            .reports(&state.agent_id, 0, 10)
            .unwrap()
            .iter()
            .filter(|report| report.kind == "host_facts")
            .count()
            == 2
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(5), "the audited result", || {
        control_plane
            .admin
            .audit_entries(0, 1000)
            .unwrap()
            .iter()
            .any(|entry| {
                entry.action == "command.result"
                    && entry
                        .detail
                        .contains(&format!("command={} ok=true", sent.command_id))
            })
    })
    .await
    .unwrap();
    let sent_entry = control_plane
        .admin
        .audit_entries(0, 1000)
        .unwrap()
        .into_iter()
        .find(|entry| entry.seq == sent.command_id)
        .unwrap();
    assert_eq!(sent_entry.action, "command.send_full_snapshot");
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplinks_follow_gateways_and_admin_overrides() {
    let deployment = Deployment::init().unwrap();
    let control_plane = Arc::new(deployment.start().await.unwrap());
    let township_gateway = create_token(&control_plane, "450103001", "gateway", 1).unwrap();
    let village = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let county_gateway = create_token(&control_plane, "450103", "gateway", 1).unwrap();
    let gateway = join(
        &deployment,
        &deployment.state_dir("gw"),
        &township_gateway.token,
        "gw",
    )
    .await
    .unwrap();
    let terminal = join(&deployment, &deployment.state_dir("t"), &village.token, "t")
        .await
        .unwrap();
    let county = join(
        &deployment,
        &deployment.state_dir("c"),
        &county_gateway.token,
        "c",
    )
    .await
    .unwrap();
    let admin = &control_plane.admin;
    assert_eq!(
        admin.agent(&terminal.agent_id).unwrap().uplink.as_deref(),
        Some(gateway.agent_id.as_str())
    );
    assert_eq!(
        admin.agent(&gateway.agent_id).unwrap().uplink.as_deref(),
        Some(county.agent_id.as_str())
    );
    assert_eq!(admin.agent(&county.agent_id).unwrap().uplink, None);
    let overridden = admin
        .set_uplink("admin", &terminal.agent_id, Some(&county.agent_id))
        .unwrap();
    assert_eq!(overridden.uplink.as_deref(), Some(county.agent_id.as_str()));
    assert!(overridden.uplink_overridden);
    let error = admin
        .set_uplink("admin", &terminal.agent_id, Some(&terminal.agent_id))
        .unwrap_err();
    assert!(error.to_string().contains("own uplink"), "{error}");
    let error = admin
        .set_uplink("admin", &county.agent_id, Some(&terminal.agent_id))
        .unwrap_err();
    assert!(error.to_string().contains("not gateway"), "{error}");
    let cleared = admin.set_uplink("admin", &terminal.agent_id, None).unwrap();
    assert_eq!(cleared.uplink.as_deref(), Some(gateway.agent_id.as_str()));
    Arc::try_unwrap(control_plane)
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_https_with_a_ca_issued_certificate_when_asked() {
    let mut deployment = Deployment::init().unwrap();
    deployment.config.server.http_tls = bagui_control_plane::config::HttpTls::Always;
    let control_plane = deployment.start().await.unwrap();
    assert!(
        control_plane.api_url.starts_with("https://127.0.0.1:"),
        "{}",
        control_plane.api_url
    );
    let ca = deployment.data_dir.ca().unwrap().cert_der().clone();
    let token = deployment.data_dir.admin_token().unwrap();
    let client =
        bagui_control_plane::client::ApiClient::new(&control_plane.api_url, &token, Some(&ca))
            .unwrap();
    let agents: Vec<serde_json::Value> = client.get("/api/v1/agents").await.unwrap();
    assert!(agents.is_empty());
    // Plain HTTP to the HTTPS port gets no answer it can use.
    let plain = control_plane.api_url.replace("https://", "http://");
    let plain = bagui_control_plane::client::ApiClient::new(&plain, &token, None).unwrap();
    assert!(plain.status("/readyz").await.is_err());
    // Another CA is not trusted.
    let other = Deployment::init().unwrap();
    let other_ca = other.data_dir.ca().unwrap().cert_der().clone();
    let untrusting = bagui_control_plane::client::ApiClient::new(
        &control_plane.api_url,
        &token,
        Some(&other_ca),
    )
    .unwrap();
    let error = untrusting.status("/readyz").await.unwrap_err();
    assert!(format!("{error:#}").contains("TLS"), "{error:#}");
    control_plane.shutdown().await.unwrap();
}
