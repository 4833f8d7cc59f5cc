//! Security posture end to end: the baseline and file integrity monitoring run on an agent
//! whose host is a fixture tree; a protected file changed to permit root login over SSH is a
//! failed check and a file-change finding at the control plane within 5 s, and the first scan
//! raised nothing.

use std::time::{Duration, Instant};

use bagui_control_plane::admin::FindingsQuery;
use bagui_plugins::HostRoot;
use bagui_tests::*;

const SSHD_SAFE: &str = "Protocol 2\nPermitRootLogin no\nPermitEmptyPasswords no\nMaxAuthTries 3\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permitting_root_login_is_a_failed_check_and_a_file_finding_within_five_seconds() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("guarded");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let host = tempfile::tempdir().unwrap();
    let root = host.path();
    write_fixture(
        root,
        "etc/os-release",
        "NAME=\"openEuler\"\nVERSION=\"22.03 (LTS-SP3)\"\nID=\"openEuler\"\nVERSION_ID=\"22.03\"\nPRETTY_NAME=\"openEuler 22.03 (LTS-SP3)\"\n",
    );
    write_fixture(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
    write_fixture(root, "etc/group", "root:x:0:\n");
    write_fixture(root, "etc/ssh/sshd_config", SSHD_SAFE);

    let mut config = fast_agent_config();
    config.posture.enabled = true;
    config.fim.enabled = true;
    let agent = start_agent_with_root(&state_dir, config, HostRoot::new(root))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the first baseline run", || {
        control_plane.admin.posture(&state.agent_id).is_ok()
    })
    .await
    .unwrap();
    let first = control_plane.admin.posture(&state.agent_id).unwrap();
    assert!(
        first.signed,
        "posture reports carry the agent's SM2 signature"
    );
    let ssh_root = first
        .results
        .iter()
        .find(|result| result.id == "BG-SSH-001")
        .expect("the PermitRootLogin check");
    assert_eq!(
        serde_json::to_value(ssh_root.result).unwrap(),
        "pass",
        "{ssh_root:?}"
    );
    // Give the first FIM scan time to run: it builds the baseline and reports nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let findings = |kind: &str| {
        control_plane
            .admin
            .findings(&FindingsQuery {
                agent: Some(state.agent_id.clone()),
                ..FindingsQuery::default()
            })
            .unwrap()
            .into_iter()
            .filter(|finding| finding.kind == kind)
            .collect::<Vec<_>>()
    };
    assert!(
        findings("file_changed").is_empty(),
        "the first scan is silent"
    );

    let changed = Instant::now();
    write_fixture(
        root,
        "etc/ssh/sshd_config",
        &SSHD_SAFE.replace("PermitRootLogin no", "PermitRootLogin yes"),
    );
    wait_until(
        Duration::from_secs(5),
        "the failed check and the FIM finding",
        || {
            let failing = control_plane
                .admin
                .posture_failing(None, Some("high"))
                .unwrap()
                .iter()
                .any(|row| row.agent_id == state.agent_id && row.id == "BG-SSH-001");
            failing && !findings("file_changed").is_empty()
        },
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "{error}; findings: {:?}",
            control_plane.admin.findings(&FindingsQuery::default())
        )
    });
    let elapsed = changed.elapsed();
    let file = &findings("file_changed")[0];
    assert_eq!(file.subject, "/etc/ssh/sshd_config");
    assert!(
        file.evidence.iter().any(|line| line.starts_with("sm3 ")),
        "{file:?}"
    );
    let check = findings("check_failed");
    assert!(
        check.iter().any(|finding| finding.subject == "BG-SSH-001"),
        "a newly failing high check is a finding: {check:?}"
    );
    let failing = control_plane
        .admin
        .posture_failing(None, None)
        .unwrap()
        .into_iter()
        .find(|row| row.id == "BG-SSH-001")
        .unwrap();
    assert!(
        failing
            .evidence
            .iter()
            .any(|line| line.contains("sshd_config") && line.contains("yes")),
        "{failing:?}"
    );
    let divisions = control_plane.admin.posture_divisions(None).unwrap();
    let nanning = divisions.iter().find(|row| row.division == "4501").unwrap();
    assert_eq!(nanning.hosts, 1);
    assert!(nanning.score.unwrap() < 100.0);
    eprintln!("changed file to failed check and finding at the control plane: {elapsed:?}");
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}
