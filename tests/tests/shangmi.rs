//! The `shangmi` crypto profile end to end: an SM2 deployment (CA, server and agent
//! certificates), TLS_SM4_GCM_SM3 over curveSM2 on every session, a clear error when an agent
//! of the other profile tries to join, and OpenSSL's verdict on the certificates issued.
//!
//! The foundation's tests (enrollment, delivery, crash, network, identity) also run under this
//! profile: `BAGUI_TEST_CRYPTO_PROFILE=shangmi` (test.sh does a second run so).

use std::process::Command;
use std::time::Duration;

use bagui_agent::join::JoinOptions;
use bagui_plugins::HostRoot;
use bagui_protocol::CryptoProfile;
use bagui_tests::*;

fn join_options(
    deployment: &Deployment,
    name: &str,
    token: &str,
    profile: CryptoProfile,
) -> JoinOptions {
    JoinOptions {
        server: deployment.server(),
        token: token.into(),
        ca_hash: deployment.ca_hash(),
        state_dir: deployment.state_dir(name),
        instance_id: name.into(),
        division: None,
        host_root: HostRoot::default(),
        crypto_profile: profile,
    }
}

/// The PEM certificate in an agent's `identity.pem`.
fn agent_certificate_pem(state_dir: &bagui_agent::state::StateDir) -> String {
    let certificate = state_dir.tls_identity().unwrap().certificate;
    bagui_agent::state::pem_encode("CERTIFICATE", &certificate)
}

fn openssl_verify(ca: &std::path::Path, certificate: &std::path::Path) -> String {
    let output = Command::new("openssl")
        .args(["verify", "-vfyopt", "distid:1234567812345678", "-CAfile"])
        .arg(ca)
        .arg(certificate)
        .output()
        .unwrap_or_else(|error| {
            panic!("openssl is required by this test (apt-get install openssl): {error}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "openssl verify {} failed: {stdout}{}",
        certificate.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shangmi_deployment_joins_reports_renews_and_shows_its_suite() {
    let mut deployment = Deployment::init_with_profile(CryptoProfile::Shangmi).unwrap();
    assert_eq!(deployment.crypto_profile(), CryptoProfile::Shangmi);
    // Short-lived certificates, so the agent renews over its session within the test.
    deployment.config.enroll.cert_lifetime = Duration::from_secs(6);
    deployment.config.enroll.backdate = Duration::from_secs(0);
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    assert!(
        token
            .join_command
            .contains(" --crypto-profile shangmi --ca-hash "),
        "{}",
        token.join_command
    );
    assert!(token.join_command.ends_with(&deployment.ca_hash()));

    let options = join_options(&deployment, "sm", &token.token, CryptoProfile::Shangmi);
    let joined = bagui_agent::join::join(&options).await.unwrap();
    assert_eq!(joined.crypto_profile, CryptoProfile::Shangmi);
    assert_eq!(joined.division_path, VILLAGE_PATH);
    let certificate = options.state_dir.tls_identity().unwrap().certificate;
    assert!(bagui_smtls::cert::is_sm2_certificate(&certificate));

    let agent = start_agent(&options.state_dir, fast_agent_config())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the first report to be acknowledged",
        || agent.status().last_acked_seq >= 1,
    )
    .await
    .unwrap();
    let status = agent.status();
    assert_eq!(status.tls_suite, "TLS_SM4_GCM_SM3");
    assert_eq!(status.kx_group, "curveSM2");
    let listed = control_plane.admin.agents(None).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].online);
    assert_eq!(listed[0].tls_suite.as_deref(), Some("TLS_SM4_GCM_SM3"));
    assert_eq!(listed[0].kx_group.as_deref(), Some("curveSM2"));

    // In-session renewal at two thirds of the certificate's life: a new SM2 key, proved over
    // the session's exporter value.
    let before = options.state_dir.agent_state().unwrap();
    wait_until(Duration::from_secs(10), "the renewal", || {
        options
            .state_dir
            .agent_state()
            .is_ok_and(|state| state.certificate_issued_ms > before.certificate_issued_ms)
    })
    .await
    .unwrap();
    let renewed = options.state_dir.tls_identity().unwrap().certificate;
    assert_ne!(renewed, certificate);
    assert!(bagui_smtls::cert::is_sm2_certificate(&renewed));
    agent.shutdown().await.unwrap();

    // What the control plane issued verifies in OpenSSL under the certificate signer ID.
    let agent_pem = deployment.dir.path().join("agent.crt");
    std::fs::write(&agent_pem, agent_certificate_pem(&options.state_dir)).unwrap();
    let ca = deployment.data_dir.ca_cert_path();
    assert!(openssl_verify(&ca, &agent_pem).contains(": OK"));
    let server_pem = deployment.data_dir.root().join("server.crt");
    assert!(openssl_verify(&ca, &server_pem).contains(": OK"));
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_agent_is_told_the_control_plane_is_shangmi() {
    let deployment = Deployment::init_with_profile(CryptoProfile::Shangmi).unwrap();
    // The real binary, so the control plane's side of the story is in its log.
    let mut process = ControlPlaneProcess::start(&deployment, "cp.log")
        .await
        .unwrap();
    let output = Command::new(binary("bagui-cp"))
        .arg("--data-dir")
        .arg(deployment.data_dir.root())
        .args(["token", "create", "--division", VILLAGE])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let command = printed
        .lines()
        .find(|line| line.starts_with("bagui-agent join"))
        .unwrap_or_else(|| panic!("no join command in {printed}"));
    assert!(command.contains("--crypto-profile shangmi"), "{command}");
    let token = command
        .split_whitespace()
        .skip_while(|word| *word != "--token")
        .nth(1)
        .unwrap();

    let options = join_options(&deployment, "std", token, CryptoProfile::Standard);
    let error = format!("{:#}", bagui_agent::join::join(&options).await.unwrap_err());
    assert!(
        error.contains("uses the shangmi crypto profile; this agent was set up for standard"),
        "{error}"
    );
    assert!(!options.state_dir.is_joined());
    wait_until(
        Duration::from_secs(5),
        "the control plane's warning",
        || {
            process
                .log_text()
                .contains("this control plane's shangmi crypto profile")
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}: {}", process.log_text()));
    // The token was not spent: the same agent joins once told the right profile.
    let options = join_options(&deployment, "std", token, CryptoProfile::Shangmi);
    bagui_agent::join::join(&options).await.unwrap();
    process.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shangmi_agent_is_told_the_control_plane_is_standard() {
    let deployment = Deployment::init_with_profile(CryptoProfile::Standard).unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    assert!(!token.join_command.contains("--crypto-profile"));
    let options = join_options(&deployment, "sm", &token.token, CryptoProfile::Shangmi);
    let error = format!("{:#}", bagui_agent::join::join(&options).await.unwrap_err());
    assert!(
        error.contains("uses the standard crypto profile; this agent was set up for shangmi"),
        "{error}"
    );
    assert!(!options.state_dir.is_joined());
    control_plane.shutdown().await.unwrap();
}
