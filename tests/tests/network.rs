//! Bad networks, through the in-process relay: heavy loss and delay, and a county cut off for
//! a while. Every report arrives, in order per agent, stored once.
//!
//! The partition lasts 5 s by default; `BAGUI_LONG_TESTS=1` makes it the full 10 minutes.

use std::time::Duration;

use anyhow::Context;
use bagui_control_plane::admin::ReportView;
use bagui_protocol::Lane;
use bagui_tests::relay::{Impairment, Relay};
use bagui_tests::*;

fn long_tests() -> bool {
    std::env::var_os("BAGUI_LONG_TESTS").is_some_and(|value| value == "1")
}

fn assert_in_order_once(reports: &[ReportView], expected: u64) {
    let seqs: Vec<u64> = reports.iter().map(|report| report.seq).collect();
    assert_eq!(
        seqs,
        (1..=expected).collect::<Vec<_>>(),
        "stored exactly 1..={expected}, once each"
    );
    for pair in reports.windows(2) {
        assert!(
            pair[0].arrival < pair[1].arrival,
            "seq {} arrived before seq {}",
            pair[1].seq,
            pair[0].seq
        );
    }
}

/// An agent tolerant of a slow, lossy path (idle timeout well above the RTT).
fn lossy_link_agent_config() -> bagui_agent::config::AgentConfig {
    let mut config = fast_agent_config();
    config.link.idle_timeout = Duration::from_secs(20);
    config.link.keep_alive = Duration::from_secs(2);
    config.link.connect_timeout = Duration::from_secs(30);
    config.link.backoff_min = Duration::from_millis(200);
    config.link.backoff_max = Duration::from_secs(2);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_loss_and_300_ms_delay_still_deliver_everything_in_order_once() {
    let mut deployment = Deployment::init().unwrap();
    // The control plane's idea of a dead session must allow for the slow path too.
    deployment.config.session.heartbeat_interval = Duration::from_secs(2);
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("lossy");
    let state = join(&deployment, &state_dir, &token.token, "lossy")
        .await
        .unwrap();
    let relay = Relay::start_with(
        control_plane.quic_addr,
        Impairment {
            loss: 0.30,
            delay: Duration::from_millis(300),
            jitter: Duration::from_millis(50),
            duplicate: 0.05,
            reorder: 0.05,
        },
    )
    .await
    .unwrap();
    redirect(&state_dir, &relay.address.to_string()).unwrap();
    let agent = start_agent(&state_dir, lossy_link_agent_config())
        .await
        .unwrap();
    let outbox = agent.outbox().clone();
    for index in 0..150u64 {
        outbox
            .push(Lane::Inventory, "test", index, &index.to_be_bytes())
            .unwrap();
    }
    wait_until(
        Duration::from_secs(180),
        "the outbox to drain over the lossy link",
        || outbox.stats().records == 0,
    )
    .await
    .unwrap();
    let reports = control_plane
        .admin
        .reports(&state.agent_id, 0, 10_000)
        .unwrap();
    // seq 1 is the host facts (also inventory), then our 150.
    assert_in_order_once(&reports, 151);
    // (Hundreds of datagrams crossed the relay: with 30 % loss, zero drops would mean the
    // impairment was not applied at all.)
    let stats = relay.stats();
    assert!(
        stats.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the relay really lost datagrams"
    );
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_county_buffers_and_drains_after_healing() {
    let partition = if long_tests() {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(5)
    };
    let mut deployment = Deployment::init().unwrap();
    // Terminals switched off after hours raise nothing; this test runs at any hour.
    deployment.config.incidents.terminal_off_hours = None;
    let control_plane = deployment.start().await.unwrap();
    // Five agents of 青秀区 behind one relay (the county's uplink); five of 兴宁区, the same
    // city, direct (so the city as a whole stays at half up), and one in another city direct.
    let county = create_token(&control_plane, "450103", "terminal", 5).unwrap();
    let neighbours = create_token(&control_plane, "450102", "terminal", 5).unwrap();
    let elsewhere = create_token(&control_plane, "450304001008", "terminal", 1).unwrap();
    let relay = Relay::start(control_plane.quic_addr).await.unwrap();
    let mut neighbour_agents = Vec::new();
    for name in ["n1", "n2", "n3", "n4", "n5"] {
        let state_dir = deployment.state_dir(name);
        join(&deployment, &state_dir, &neighbours.token, name)
            .await
            .unwrap();
        neighbour_agents.push(start_agent(&state_dir, fast_agent_config()).await.unwrap());
    }
    let mut cut_off = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        let state_dir = deployment.state_dir(name);
        let state = join(&deployment, &state_dir, &county.token, name)
            .await
            .unwrap();
        redirect(&state_dir, &relay.address.to_string()).unwrap();
        let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
        cut_off.push((state.agent_id, agent));
    }
    let other_dir = deployment.state_dir("other");
    let other_state = join(&deployment, &other_dir, &elsewhere.token, "other")
        .await
        .unwrap();
    let other = start_agent(&other_dir, fast_agent_config()).await.unwrap();
    for (_, agent) in &cut_off {
        wait_until(
            Duration::from_secs(10),
            "the county's agents to connect",
            || agent.status().last_acked_seq >= 1,
        )
        .await
        .unwrap();
    }

    relay.set_up(false);
    for (id, _) in &cut_off {
        wait_until(
            Duration::from_secs(15),
            "the county's agents to show offline",
            || !control_plane.admin.agent(id).unwrap().online,
        )
        .await
        .unwrap();
    }
    // During the partition the county keeps producing; the rest of the province is unaffected.
    let produce_until = tokio::time::Instant::now() + partition;
    let mut produced = 0u64;
    while tokio::time::Instant::now() < produce_until {
        for (_, agent) in &cut_off {
            agent
                .outbox()
                .push(Lane::Metrics, "test", produced, &[1u8; 100])
                .unwrap();
        }
        other
            .outbox()
            .push(Lane::Metrics, "test", produced, &[2u8; 100])
            .unwrap();
        produced += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, agent) in &cut_off {
        assert_eq!(
            agent.outbox().stats().records,
            produced,
            "the outbox holds everything"
        );
        assert_eq!(agent.outbox().stats().dropped.total(), 0);
    }
    wait_until(
        Duration::from_secs(10),
        "the other city's reports to be acknowledged",
        || other.outbox().stats().records == 0,
    )
    .await
    .unwrap();
    assert!(
        control_plane
            .admin
            .agent(&other_state.agent_id)
            .unwrap()
            .online
    );

    // One mass-outage work order for the county, its five agents suppressed under it.
    let orders = |all: bool| {
        control_plane
            .admin
            .work_orders(&bagui_control_plane::dispatch::OrderFilter {
                all,
                ..Default::default()
            })
            .unwrap()
    };
    // (The mass outage holds like any new incident before it is dispatched.)
    wait_until(
        Duration::from_secs(40),
        "the mass-outage work order",
        || {
            let open = orders(false);
            open.iter()
                .filter(|order| order.state == "SUPPRESSED")
                .count()
                == 5
                && open.iter().any(|order| order.state == "DISPATCHED")
        },
    )
    .await
    .unwrap();
    let open = orders(false);
    let causes: Vec<_> = open.iter().filter(|o| o.state == "DISPATCHED").collect();
    assert_eq!(causes.len(), 1, "{open:#?}");
    assert!(
        causes[0].title.starts_with("mass outage in 450103:"),
        "{open:#?}"
    );
    assert_eq!(causes[0].division, "450103");
    assert_eq!(open.len(), 6, "one cause and five symptoms: {open:#?}");

    relay.set_up(true);
    for (id, agent) in &cut_off {
        wait_until(
            Duration::from_secs(60),
            "the county's outboxes to drain",
            || agent.outbox().stats().records == 0,
        )
        .await
        .unwrap();
        let reports = control_plane.admin.reports(id, 0, 100_000).unwrap();
        // Everything pushed during the partition, plus what the agent's own collectors made
        // (its first metrics, and whatever else they emitted in the meantime): no gaps.
        let pushed = reports
            .iter()
            .filter(|report| report.kind == "test")
            .count() as u64;
        assert_eq!(pushed, produced);
        assert!(
            reports.len() as u64 > produced,
            "the agent's own reports too"
        );
        let seqs: Vec<u64> = reports.iter().map(|report| report.seq).collect();
        assert_eq!(
            seqs,
            (1..=reports.len() as u64).collect::<Vec<_>>(),
            "no gaps"
        );
        assert!(control_plane.admin.agent(id).unwrap().online);
    }
    wait_until(
        Duration::from_secs(30),
        "every work order auto-resolved",
        || {
            let all = orders(true);
            all.len() == 6 && all.iter().all(|order| order.state == "AUTO_RESOLVED")
        },
    )
    .await
    .with_context(|| format!("{:#?}", orders(true)))
    .unwrap();
    for (_, agent) in cut_off {
        agent.shutdown().await.unwrap();
    }
    for agent in neighbour_agents {
        agent.shutdown().await.unwrap();
    }
    other.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}
