//! The fleet simulator and bulk issuance, small: every acknowledged report is stored, none
//! twice, and identities are issued once and reused.

use std::collections::BTreeSet;
use std::time::Duration;

use bagui_control_plane::admin::{IssueAgent, IssueRequest};
use bagui_protocol::CryptoProfile;
use bagui_protocol::digest::hex;
use bagui_tests::sim::{self, Fleet, FleetConfig, Target};
use bagui_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_reports_and_every_acknowledged_report_is_stored_once() {
    small_fleet(Deployment::init().unwrap(), 60).await;
}

/// The same on a `shangmi` deployment: identities issued in bulk from SM2 keys with their
/// proofs of possession, every session TLS_SM4_GCM_SM3 over curveSM2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_shangmi_fleet_reports_and_every_acknowledged_report_is_stored_once() {
    let deployment = Deployment::init_with_profile(CryptoProfile::Shangmi).unwrap();
    assert_eq!(deployment.crypto_profile(), CryptoProfile::Shangmi);
    small_fleet(deployment, 20).await;
}

async fn small_fleet(deployment: Deployment, count: usize) {
    assert_eq!(receive_threads(), 0);
    let control_plane = deployment.start().await.unwrap();
    // The QUIC receive loop has a thread of its own, so a busy runtime cannot starve it.
    assert_eq!(receive_threads(), 1);
    let target = Target::open(deployment.data_dir.root()).unwrap();
    let identities = sim::provision(&target.data_dir, &target.client, count)
        .await
        .unwrap();
    assert_eq!(identities.len(), count);
    // Cached: asking again issues nothing new.
    let again = sim::provision(&target.data_dir, &target.client, count)
        .await
        .unwrap();
    assert_eq!(
        identities.iter().map(|i| &i.agent_id).collect::<Vec<_>>(),
        again.iter().map(|i| &i.agent_id).collect::<Vec<_>>()
    );
    let agents = control_plane.admin.agents(None).unwrap();
    assert_eq!(agents.len(), count);
    // Spread over townships and villages, as the province case is.
    assert!(agents.iter().any(|a| a.role.as_str() == "gateway"));
    assert!(agents.iter().any(|a| a.role.as_str() == "terminal"));

    let fleet = Fleet::start(
        identities,
        target.ca.clone(),
        FleetConfig {
            server: target.server,
            interval: Duration::from_millis(200),
            sockets: 2,
            ramp: Duration::from_millis(500),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            samples_per_report: 5,
            packages_per_snapshot: 200,
        },
    )
    .unwrap();
    let stats = fleet.stats.clone();
    wait_until(
        Duration::from_secs(20),
        &format!("all {count} simulated agents to connect"),
        || stats.connected.load(std::sync::atomic::Ordering::Relaxed) == count,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let latencies = fleet.take_latencies();
    let ledgers = fleet.stop(Duration::from_secs(1)).await;
    assert_eq!(ledgers.len(), count);
    assert!(!latencies.is_empty());
    let mut acked_total = 0;
    for ledger in &ledgers {
        let stored: BTreeSet<u64> = control_plane
            .admin
            .reports(&ledger.agent_id, 0, 100_000)
            .unwrap()
            .into_iter()
            .map(|report| report.seq)
            .collect();
        let acked: BTreeSet<u64> = ledger.acked.iter().copied().collect();
        assert_eq!(
            acked.len(),
            ledger.acked.len(),
            "an ack counted twice for {}",
            ledger.agent_id
        );
        assert!(
            acked.is_subset(&stored),
            "{}: acknowledged but not stored",
            ledger.agent_id
        );
        assert!(
            stored.iter().all(|seq| *seq >= 1 && *seq < ledger.next_seq),
            "{}: stored something never sent",
            ledger.agent_id
        );
        acked_total += acked.len();
    }
    assert!(
        acked_total >= count * 5,
        "only {acked_total} reports acknowledged"
    );
    // Every simulated agent's first report is a full asset snapshot; its later package
    // upgrades are chained by digest, so none of them may leave a stale ledger record.
    for ledger in &ledgers {
        let asset = control_plane.admin.asset(&ledger.agent_id).unwrap();
        assert_eq!(asset.packages.len(), 200, "{}", ledger.agent_id);
        assert!(!asset.stale, "{}: asset record went stale", ledger.agent_id);
    }
    control_plane.shutdown().await.unwrap();
    // ... and it ends with the control plane.
    wait_until(Duration::from_secs(10), "the receive thread to end", || {
        receive_threads() == 0
    })
    .await
    .unwrap();
}

/// Threads of this process named like the control plane's QUIC receive thread.
fn receive_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim() == bagui_control_plane::receive_thread::THREAD_NAME)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_issuance_validates_every_entry_and_changes_nothing_on_refusal() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let target = Target::open(deployment.data_dir.root()).unwrap();
    let request = bagui_agent::identity::certificate_request("bulk").unwrap();
    let sm2 = bagui_agent::identity::generate_sm2_key().unwrap();
    let entry = |division: &str| IssueAgent {
        division: division.into(),
        role: "terminal".into(),
        instance_id: "bulk".into(),
        hostname: "bulk".into(),
        csr: bagui_protocol::digest::hex(&request.csr_der),
        sm2_public_key: bagui_protocol::digest::hex(&bagui_agent::identity::sm2_public_key(&sm2)),
        ..IssueAgent::default()
    };
    for (agents, expected) in [
        (
            vec![entry(VILLAGE), entry("450199999999")],
            "unknown division",
        ),
        (
            vec![IssueAgent {
                csr: "zz".into(),
                ..entry(VILLAGE)
            }],
            "not hex",
        ),
        (
            vec![IssueAgent {
                role: "satellite".into(),
                ..entry(VILLAGE)
            }],
            "unknown role",
        ),
        ((0..1001).map(|_| entry(VILLAGE)).collect(), "at most 1000"),
    ] {
        let error = target
            .client
            .post::<_, serde_json::Value>("/api/v1/agents/issue", &IssueRequest { agents })
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains(expected), "{error:#}");
    }
    // The first entry of the first batch was valid, but a batch is all or nothing.
    assert!(control_plane.admin.agents(None).unwrap().is_empty());
    let anonymous =
        bagui_control_plane::client::ApiClient::new(&control_plane.api_url, "", None).unwrap();
    let error = anonymous
        .post::<_, serde_json::Value>(
            "/api/v1/agents/issue",
            &IssueRequest {
                agents: vec![entry(VILLAGE)],
            },
        )
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("401"), "{error:#}");
    control_plane.shutdown().await.unwrap();
}

/// Under `shangmi` bulk issuance takes an SM2 TLS key with its proof of possession bound to
/// this deployment, and nothing else: a PKCS#10 request, a proof bound elsewhere (another
/// deployment, a join connection) or by another key is refused, and the batch changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shangmi_bulk_issuance_takes_only_proved_sm2_keys() {
    let deployment = Deployment::init_with_profile(CryptoProfile::Shangmi).unwrap();
    let control_plane = deployment.start().await.unwrap();
    let target = Target::open(deployment.data_dir.root()).unwrap();
    let binding =
        bagui_protocol::proof::bulk_issue_binding(&target.data_dir.ca_fingerprint().unwrap());
    let sm2 = bagui_agent::identity::generate_sm2_key().unwrap();
    let request =
        bagui_agent::identity::certificate_request_for(CryptoProfile::Shangmi, "bulk").unwrap();
    let entry = |tls_key: &bagui_protocol::Sm2KeyRequest| IssueAgent {
        division: VILLAGE.into(),
        role: "terminal".into(),
        instance_id: "bulk".into(),
        hostname: "bulk".into(),
        sm2_public_key: hex(&bagui_agent::identity::sm2_public_key(&sm2)),
        tls_public_key: hex(&tls_key.public_key),
        tls_key_signature: hex(&tls_key.signature),
        ..IssueAgent::default()
    };
    let proved = request.sm2_key_request(&binding).unwrap().unwrap();
    let elsewhere = request
        .sm2_key_request(&bagui_protocol::proof::bulk_issue_binding("sm3:00"))
        .unwrap()
        .unwrap();
    let other = bagui_agent::identity::certificate_request_for(CryptoProfile::Shangmi, "other")
        .unwrap()
        .sm2_key_request(&binding)
        .unwrap()
        .unwrap();
    let standard = bagui_agent::identity::certificate_request("bulk").unwrap();
    for (bad, expected) in [
        (
            IssueAgent {
                csr: hex(&standard.csr_der),
                tls_public_key: String::new(),
                tls_key_signature: String::new(),
                ..entry(&proved)
            },
            "uses the shangmi crypto profile",
        ),
        (entry(&elsewhere), "does not verify"),
        (
            IssueAgent {
                tls_key_signature: hex(&other.signature),
                ..entry(&proved)
            },
            "does not verify",
        ),
        (
            IssueAgent {
                tls_key_signature: "zz".into(),
                ..entry(&proved)
            },
            "not hex",
        ),
    ] {
        let error = target
            .client
            .post::<_, serde_json::Value>(
                "/api/v1/agents/issue",
                &IssueRequest {
                    agents: vec![entry(&proved), bad],
                },
            )
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains(expected), "{error:#}");
    }
    assert!(control_plane.admin.agents(None).unwrap().is_empty());
    let issued: bagui_control_plane::admin::IssueResponse = target
        .client
        .post(
            "/api/v1/agents/issue",
            &IssueRequest {
                agents: vec![entry(&proved)],
            },
        )
        .await
        .unwrap();
    let certificate = bagui_protocol::digest::unhex(&issued.agents[0].certificate).unwrap();
    assert!(bagui_smtls::cert::is_sm2_certificate(
        &rustls::pki_types::CertificateDer::from(certificate)
    ));
    assert_eq!(control_plane.admin.agents(None).unwrap().len(), 1);
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_arriving_at_once_is_paced_in_not_turned_into_a_storm() {
    let mut deployment = Deployment::init().unwrap();
    // Two sessions a second: twelve agents arriving together need about six seconds.
    deployment.config.admission.rate_per_second = 2.0;
    deployment.config.admission.burst = 1.0;
    let control_plane = deployment.start().await.unwrap();
    let target = Target::open(deployment.data_dir.root()).unwrap();
    let identities = sim::provision(&target.data_dir, &target.client, 12)
        .await
        .unwrap();
    let fleet = Fleet::start(
        identities,
        target.ca.clone(),
        FleetConfig {
            server: target.server,
            interval: Duration::from_secs(1),
            sockets: 1,
            ramp: Duration::ZERO,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            samples_per_report: 1,
            packages_per_snapshot: 0,
        },
    )
    .unwrap();
    let stats = fleet.stats.clone();
    let started = std::time::Instant::now();
    wait_until(Duration::from_secs(40), "all twelve to be admitted", || {
        stats.connected.load(std::sync::atomic::Ordering::Relaxed) == 12
    })
    .await
    .unwrap();
    // Not faster than the rate allows…
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let metrics = control_plane.metrics.render();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // …and mostly by holding attempts until their slot (one handshake each), the rest told
    // when to come back or dropped before any handshake (to be retransmitted).
    assert!(value("bagui_admission_held_total") >= 5.0, "{metrics}");
    assert!(
        value("bagui_admission_deferred_total") + value("bagui_admission_refused_total") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        value("bagui_sessions_opened_total"),
        12.0,
        "every admitted session stayed"
    );
    fleet.stop(Duration::from_millis(500)).await;
    control_plane.shutdown().await.unwrap();
}
