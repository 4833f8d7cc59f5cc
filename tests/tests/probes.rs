//! Probes pushed by an operator: only the closed set of kinds, only targets inside the agent's
//! division's ranges, audited, delivered at once or at the agent's next session, kept by the
//! agent across restarts.

use std::time::Duration;

use bagui_control_plane::admin::AdminError;
use bagui_control_plane::probes::ProbeRequest;
use bagui_control_plane::server::ControlPlane;
use bagui_tests::*;

fn request(name: &str, kind: &str, target: &str) -> ProbeRequest {
    ProbeRequest {
        name: name.into(),
        kind: kind.into(),
        target: target.into(),
        interval: Some("1s".into()),
        timeout: Some("500ms".into()),
    }
}

async fn wait_for_result(control_plane: &ControlPlane, agent_id: &str, name: &str, after_ms: u64) {
    wait_until(Duration::from_secs(30), "a pushed probe result", || {
        control_plane
            .admin
            .health(agent_id)
            .unwrap()
            .checks
            .iter()
            .any(|check| {
                check.name == name && check.state == "OK" && check.result.started_ms >= after_ms
            })
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_probes_stay_inside_the_division_ranges_and_survive_restarts() {
    let mut deployment = Deployment::init().unwrap();
    deployment
        .config
        .probes
        .ranges
        .insert("4501".into(), vec!["127.0.0.0/8".into()]);
    deployment.config.probes.min_interval = Duration::from_secs(1);
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("probed");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();

    // Pushed while the agent is offline: kept, sent at its next session.
    let view = control_plane
        .admin
        .push_probe("ops", &state.agent_id, &request("gw", "tcp", &target))
        .unwrap();
    assert!(!view.delivered);
    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    wait_for_result(&control_plane, &state.agent_id, "pushed.gw", 0).await;
    wait_until(Duration::from_secs(10), "the agent to confirm", || {
        control_plane
            .admin
            .probes(&state.agent_id)
            .unwrap()
            .delivered
    })
    .await
    .unwrap();

    // Refused, and nothing changes: outside the ranges, not an address, not a probe kind,
    // too often.
    for (bad, why) in [
        (request("x", "tcp", "10.0.0.1:80"), "outside the ranges"),
        (
            request("x", "http", "http://192.168.1.1/"),
            "outside the ranges",
        ),
        (
            request("x", "tcp", "gateway.example:80"),
            "must be an IP address",
        ),
        (request("x", "exec", "/bin/sh"), "not one of"),
        (
            ProbeRequest {
                interval: Some("100ms".into()),
                ..request("x", "tcp", &target)
            },
            "below the minimum",
        ),
    ] {
        match control_plane.admin.push_probe("ops", &state.agent_id, &bad) {
            Err(AdminError::BadRequest(message)) => {
                assert!(message.contains(why), "{message}")
            }
            other => panic!("{bad:?} was not refused: {other:?}"),
        }
    }
    assert_eq!(
        control_plane
            .admin
            .probes(&state.agent_id)
            .unwrap()
            .probes
            .len(),
        1
    );
    let audit = control_plane.admin.audit_entries(0, 10_000).unwrap();
    assert_eq!(
        audit.iter().filter(|e| e.action == "probe.push").count(),
        1,
        "only the accepted push is on record"
    );
    assert!(audit.iter().any(|e| e.action == "command.set_probes"));

    // The agent keeps its probes across a restart (no new push needed).
    agent.shutdown().await.unwrap();
    let restarted_ms = bagui_agent::join::now_ms();
    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    wait_for_result(&control_plane, &state.agent_id, "pushed.gw", restarted_ms).await;

    // Removed: the agent gets the empty set and stops probing.
    control_plane
        .admin
        .remove_probe("ops", &state.agent_id, "gw")
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the agent to confirm the removal",
        || {
            control_plane
                .admin
                .probes(&state.agent_id)
                .unwrap()
                .delivered
        },
    )
    .await
    .unwrap();
    let probes_file = std::fs::read_to_string(state_dir.root().join("probes.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&probes_file)
            .unwrap()
            .len(),
        0
    );
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}
