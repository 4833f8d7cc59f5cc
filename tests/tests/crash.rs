//! Crash safety: SIGKILLs of the control plane and of the agent at random moments under load
//! (a bounded number), and an agent outbox that fills up while the link is down.
//!
//! Three kills of each by default; `BAGUI_LONG_TESTS=1` makes it twenty of each.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bagui_control_plane::admin::ReportView;
use bagui_control_plane::client::ApiClient;
use bagui_protocol::Lane;
use bagui_protocol::messages::payload::{self, OutboxDrops};
use bagui_tests::relay::Relay;
use bagui_tests::*;

fn kills() -> usize {
    if std::env::var_os("BAGUI_LONG_TESTS").is_some_and(|value| value == "1") {
        20
    } else {
        3
    }
}

fn agent_log(state_dir: &bagui_agent::state::StateDir) -> std::path::PathBuf {
    state_dir.root().with_extension("log")
}

fn spawn_agent(state_dir: &bagui_agent::state::StateDir, config: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(agent_log(state_dir))
        .unwrap();
    Command::new(binary("bagui-agent"))
        .arg("--state-dir")
        .arg(state_dir.root())
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn status(state_dir: &bagui_agent::state::StateDir) -> serde_json::Value {
    std::fs::read_to_string(state_dir.status_path())
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkills_of_both_sides_lose_nothing_and_store_nothing_twice() {
    let deployment = Deployment::init().unwrap();
    let bootstrap = deployment.start().await.unwrap();
    let token = create_token(&bootstrap, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("crashing");
    let state = join(&deployment, &state_dir, &token.token, "crashing")
        .await
        .unwrap();
    bootstrap.shutdown().await.unwrap();

    // The agent produces a metrics report every 100 ms by itself.
    let config = deployment.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[link]\nbackoff_min = \"100ms\"\nbackoff_max = \"500ms\"\nidle_timeout = \"2s\"\nkeep_alive = \"300ms\"\n\
         [collectors]\nmetrics_interval = \"100ms\"\n[status]\ninterval = \"100ms\"\n",
    )
    .unwrap();
    let mut control_plane = ControlPlaneProcess::start(&deployment, "cp-0.log")
        .await
        .unwrap();
    let mut agent = spawn_agent(&state_dir, &config);
    let rounds = kills();
    for round in 0..rounds {
        // A random moment under load, then kill one side or the other (alternating).
        tokio::time::sleep(Duration::from_millis(rand::random_range(200..1200))).await;
        if round % 2 == 0 {
            control_plane.kill();
            control_plane =
                ControlPlaneProcess::start(&deployment, &format!("cp-{}.log", round + 1))
                    .await
                    .unwrap();
        } else {
            let _ = agent.kill();
            let _ = agent.wait();
            agent = spawn_agent(&state_dir, &config);
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(200..1200))).await;
        let _ = agent.kill();
        let _ = agent.wait();
        agent = spawn_agent(&state_dir, &config);
        control_plane.kill();
        control_plane = ControlPlaneProcess::start(&deployment, &format!("cp-{round}-b.log"))
            .await
            .unwrap();
    }
    // Stop producing (SIGTERM flushes and writes the final status), then let it drain.
    if let Err(error) = wait_until(Duration::from_secs(20), "the agent to reconnect", || {
        status(&state_dir)["link"] == "connected"
    })
    .await
    {
        panic!(
            "{error}\nagent log:\n{}\ncontrol plane log:\n{}",
            std::fs::read_to_string(agent_log(&state_dir)).unwrap_or_default(),
            control_plane.log_text()
        );
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status();
    let _ = agent.wait();
    let next_seq = status(&state_dir)["next_seq"].as_u64().unwrap();
    assert!(next_seq > 20, "the agent produced under load ({next_seq})");
    // Run once more without producing much, until everything buffered is acknowledged.
    let quiet = deployment.dir.path().join("quiet.toml");
    std::fs::write(&quiet, "[link]\nbackoff_min = \"100ms\"\nbackoff_max = \"500ms\"\n[collectors]\nmetrics_interval = \"1h\"\n[status]\ninterval = \"100ms\"\n").unwrap();
    // Its collectors report once at start, possibly after the outbox first looks empty: run it
    // until it stops with nothing left in the outbox (its final status is read from the
    // outbox itself), a bounded number of times.
    let mut final_next = 0;
    for attempt in 1..=5 {
        let mut agent = spawn_agent(&state_dir, &quiet);
        wait_until(Duration::from_secs(30), "the outbox to drain", || {
            let status = status(&state_dir);
            status["link"] == "connected" && status["outbox_records"] == 0
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(agent.id().to_string())
            .status();
        let _ = agent.wait();
        let last = status(&state_dir);
        final_next = last["next_seq"].as_u64().unwrap();
        if last["outbox_records"] == 0 {
            break;
        }
        assert!(attempt < 5, "the outbox never stayed empty: {last}");
    }

    let info = deployment.data_dir.api_info().unwrap();
    let client =
        ApiClient::new(&info.url, &deployment.data_dir.admin_token().unwrap(), None).unwrap();
    let reports: Vec<ReportView> = client
        .get(&format!(
            "/api/v1/agents/{}/reports?limit=100000",
            state.agent_id
        ))
        .await
        .unwrap();
    let seqs: Vec<u64> = reports.iter().map(|report| report.seq).collect();
    // Every sequence number the agent ever assigned is stored, exactly once.
    assert_eq!(
        seqs,
        (1..final_next).collect::<Vec<_>>(),
        "after {rounds} kills of each side"
    );
    drop(control_plane);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_metrics_keeps_security_findings_and_says_so() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("full");
    let state = join(&deployment, &state_dir, &token.token, "full")
        .await
        .unwrap();
    let relay = Relay::start(control_plane.quic_addr).await.unwrap();
    redirect(&state_dir, &relay.address.to_string()).unwrap();
    let mut config = fast_agent_config();
    config.outbox.max_size = 64 << 10;
    let agent = start_agent(&state_dir, config).await.unwrap();
    let outbox = agent.outbox().clone();
    wait_until(Duration::from_secs(10), "the first report", || {
        agent.status().last_acked_seq >= 1
    })
    .await
    .unwrap();

    relay.set_up(false);
    wait_until(Duration::from_secs(10), "the cut to be noticed", || {
        agent.status().link != bagui_agent::status::LinkState::Connected
    })
    .await
    .unwrap();
    // Far more than 64 KiB of metrics, with security findings in between.
    for index in 0..400u64 {
        outbox
            .push(Lane::Metrics, "metrics", index, &[0u8; 500])
            .unwrap();
        if index % 20 == 0 {
            outbox
                .push(Lane::Security, "finding", index, &[7u8; 200])
                .unwrap();
        }
    }
    let stats = outbox.stats();
    assert!(
        stats.bytes <= 64 << 10,
        "the outbox stays within its bound: {stats:?}"
    );
    assert!(stats.dropped.metrics > 250, "{stats:?}");
    assert_eq!(stats.dropped.security, 0, "findings are kept: {stats:?}");
    // The drop notice goes into the outbox too (the status task makes one every interval).
    tokio::time::sleep(Duration::from_millis(500)).await;

    relay.set_up(true);
    wait_until(Duration::from_secs(30), "the outbox to drain", || {
        outbox.stats().records == 0
    })
    .await
    .unwrap();
    let reports = control_plane
        .admin
        .reports(&state.agent_id, 0, 100_000)
        .unwrap();
    assert_eq!(
        reports.iter().filter(|r| r.kind == "finding").count(),
        20,
        "every finding arrived"
    );
    let notices: Vec<_> = reports
        .iter()
        .filter(|r| r.kind == payload::OUTBOX_DROPS)
        .collect();
    assert!(!notices.is_empty(), "the drops were reported");
    // The last notice's cumulative count matches the agent's own.
    let last = notices.last().unwrap();
    let bodies = control_plane
        .store
        .reports(&state.agent_id, last.seq - 1, 1)
        .unwrap();
    let notice: OutboxDrops = payload::decode(&bodies[0].1.body).unwrap();
    assert_eq!(notice.dropped_total.security, 0);
    assert!(notice.dropped_total.metrics > 250);
    assert!(notice.dropped_total.metrics <= outbox.stats().dropped.metrics);
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}
