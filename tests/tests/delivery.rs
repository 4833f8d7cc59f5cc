//! Delivery guarantees: nothing acknowledged is lost, nothing is stored twice, and the outbox
//! drains in order after a cut link or a killed control plane.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bagui_agent::status::LinkState;
use bagui_control_plane::admin::ReportView;
use bagui_control_plane::client::ApiClient;
use bagui_protocol::Lane;
use bagui_tests::relay::Relay;
use bagui_tests::*;

fn assert_contiguous(reports: &[ReportView], expected: u64) {
    let seqs: Vec<u64> = reports.iter().map(|report| report.seq).collect();
    let wanted: Vec<u64> = (1..=expected).collect();
    assert_eq!(
        seqs, wanted,
        "stored sequence numbers must be exactly 1..={expected}, no gaps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_buffers_and_then_drains_in_order_without_gaps_or_duplicates() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("behind-relay");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let relay = Relay::start(control_plane.quic_addr).await.unwrap();
    redirect(&state_dir, &relay.address.to_string()).unwrap();

    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    let outbox = agent.outbox().clone();
    // seq 1 is the host-facts report the agent sends at start; the rest are ours, all in one
    // lane so that arrival order must follow sequence order.
    wait_until(Duration::from_secs(10), "the host-facts report", || {
        agent.status().last_acked_seq >= 1
    })
    .await
    .unwrap();
    let mut pushed = 1;
    for index in 0..50u64 {
        outbox
            .push(Lane::Inventory, "test", index, &index.to_be_bytes())
            .unwrap();
        pushed += 1;
    }
    wait_until(
        Duration::from_secs(10),
        "the first batch to be acknowledged",
        || agent.status().last_acked_seq >= pushed,
    )
    .await
    .unwrap();

    relay.set_up(false);
    wait_until(
        Duration::from_secs(10),
        "the agent to notice the cut",
        || agent.status().link != LinkState::Connected,
    )
    .await
    .unwrap();
    for index in 0..300u64 {
        outbox
            .push(Lane::Inventory, "test", index, &index.to_be_bytes())
            .unwrap();
        pushed += 1;
    }
    // The control plane marks the agent offline after three missed heartbeats (0.5 s each).
    wait_until(
        Duration::from_secs(10),
        "the control plane to mark the agent offline",
        || !control_plane.admin.agent(&state.agent_id).unwrap().online,
    )
    .await
    .unwrap();
    // Reports keep accumulating durably while the link is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(outbox.stats().records, 300);
    assert!(relay.dropped() > 0, "the relay really dropped traffic");
    assert_eq!(
        control_plane
            .admin
            .reports(&state.agent_id, 0, 10_000)
            .unwrap()
            .len() as u64,
        51
    );

    relay.set_up(true);
    wait_until(Duration::from_secs(20), "the outbox to drain", || {
        outbox.stats().records == 0
    })
    .await
    .unwrap();
    let reports = control_plane
        .admin
        .reports(&state.agent_id, 0, 10_000)
        .unwrap();
    assert_contiguous(&reports, pushed);
    for pair in reports.windows(2) {
        assert!(
            pair[0].arrival < pair[1].arrival,
            "seq {} arrived after seq {}",
            pair[0].seq,
            pair[1].seq
        );
    }
    assert!(reports[51..].iter().all(|report| report.kind == "test"));
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_control_plane_loses_nothing_acknowledged_and_stores_nothing_twice() {
    let deployment = Deployment::init().unwrap();
    // Enroll with a throw-away in-process control plane, then hand the data dir to a process.
    let bootstrap = deployment.start().await.unwrap();
    let token = create_token(&bootstrap, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("streaming");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    bootstrap.shutdown().await.unwrap();

    let mut process = ControlPlaneProcess::start(&deployment, "cp-1.log")
        .await
        .unwrap();
    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    let outbox = agent.outbox().clone();
    wait_until(Duration::from_secs(10), "the agent to connect", || {
        agent.status().link == LinkState::Connected
    })
    .await
    .unwrap();

    // Stream reports continuously, across the kill and the restart.
    let streaming = Arc::new(AtomicBool::new(true));
    let producer = {
        let outbox = outbox.clone();
        let streaming = streaming.clone();
        tokio::spawn(async move {
            let mut pushed = 0u64;
            while streaming.load(Ordering::SeqCst) && pushed < 5_000 {
                outbox
                    .push(Lane::Metrics, "test", pushed, &[7u8; 200])
                    .unwrap();
                pushed += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            pushed
        })
    };
    wait_until(
        Duration::from_secs(10),
        "some reports to be acknowledged",
        || agent.status().last_acked_seq >= 200,
    )
    .await
    .unwrap();
    let acked_before_kill = agent.status().last_acked_seq;
    process.kill();
    let killed_log = process.log_text();
    wait_until(Duration::from_secs(10), "the agent to notice", || {
        agent.status().link != LinkState::Connected
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let process = ControlPlaneProcess::start(&deployment, "cp-2.log")
        .await
        .unwrap();
    let reconnect = wait_until(
        Duration::from_secs(15),
        "the agent to come back by itself",
        || agent.status().link == LinkState::Connected,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    streaming.store(false, Ordering::SeqCst);
    let produced = producer.await.unwrap();
    wait_until(Duration::from_secs(30), "the outbox to drain", || {
        outbox.stats().records == 0
    })
    .await
    .unwrap();

    let info = deployment.data_dir.api_info().unwrap();
    let client =
        ApiClient::new(&info.url, &deployment.data_dir.admin_token().unwrap(), None).unwrap();
    let reports: Vec<ReportView> = client
        .get(&format!(
            "/api/v1/agents/{}/reports?limit=10000",
            state.agent_id
        ))
        .await
        .unwrap();
    // 1 host-facts report plus everything produced: each exactly once, none missing.
    assert_contiguous(&reports, produced + 1);
    assert!(acked_before_kill <= produced + 1);
    let metrics = client.call_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("bagui_reports_received_total"),
        "{metrics}"
    );
    assert!(reconnect < Duration::from_secs(15), "{killed_log}");
    agent.shutdown().await.unwrap();
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restored_from_a_backup_renumbers_what_it_made_since_and_loses_nothing() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("restored");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let acked_all = |agent: &bagui_agent::Agent| {
        let outbox = agent.outbox().clone();
        let status = agent.status();
        status.link == LinkState::Connected
            && outbox.stats().records == 0
            && status.last_acked_seq + 1 >= outbox.next_seq()
    };
    // One life of the agent: start, push `count` security reports of `kind`, wait until all
    // it holds is acknowledged, stop.
    let live = async |kind: &str, count: u64| {
        let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
        for index in 0..count {
            agent
                .outbox()
                .push(Lane::Security, kind, index, &[1; 32])
                .unwrap();
        }
        let what = format!("the {kind} reports acknowledged");
        wait_until(Duration::from_secs(20), &what, || acked_all(&agent))
            .await
            .unwrap();
        agent
    };
    // First life: host facts and two reports; then a backup. Second life: more reports,
    // under the numbers that follow.
    live("before", 2).await.shutdown().await.unwrap();
    let backup = deployment.dir.path().join("backup");
    copy_dir(state_dir.root(), &backup);
    live("later", 5).await.shutdown().await.unwrap();
    let highest = control_plane.store.max_seq(&state.agent_id).unwrap();

    // The machine goes back to the backup and produces while the link is still down: its
    // records take numbers the control plane already holds for the second life's reports.
    std::fs::remove_dir_all(state_dir.root()).unwrap();
    copy_dir(&backup, state_dir.root());
    let relay = Relay::start(control_plane.quic_addr).await.unwrap();
    redirect(&state_dir, &relay.address.to_string()).unwrap();
    relay.set_up(false);
    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    for index in 0..3u64 {
        let pushed = agent
            .outbox()
            .push(Lane::Security, "after", index, &[3; 32])
            .unwrap();
        assert!(pushed.seq.unwrap() <= highest, "numbers went back");
    }
    relay.set_up(true);
    wait_until(
        Duration::from_secs(20),
        "the restored agent to drain",
        || acked_all(&agent),
    )
    .await
    .unwrap();

    let reports = control_plane
        .admin
        .reports(&state.agent_id, 0, 1_000)
        .unwrap();
    let kinds = |kind: &str| reports.iter().filter(|report| report.kind == kind).count();
    assert_eq!(
        (kinds("before"), kinds("later"), kinds("after")),
        (2, 5, 3),
        "every report of every life stored once: {reports:#?}"
    );
    // The restored life's reports (its host facts and the three) went again, renumbered.
    let renumbered = control_plane.metrics.reports_renumbered.get();
    assert_eq!(renumbered, 4, "{reports:#?}");
    assert_eq!(agent.status().reports_renumbered, renumbered);
    assert!(
        reports
            .iter()
            .filter(|report| report.kind == "after")
            .all(|report| report.seq > highest)
    );
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}
