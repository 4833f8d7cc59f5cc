//! Real Nagios plugins (Debian's monitoring-plugins) and a built-in probe, run by the agent on
//! a schedule: OK, WARNING, CRITICAL and UNKNOWN outcomes and their perfdata arrive parsed at
//! the control plane.

use std::time::Duration;

use bagui_control_plane::inventory::CheckView;
use bagui_plugins::checks::CheckConfig;
use bagui_plugins::checks::probes::ProbeKind;
use bagui_tests::*;

const PLUGINS: &str = "/usr/lib/nagios/plugins";

fn plugin(name: &str) -> String {
    let path = format!("{PLUGINS}/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install monitoring-plugins-basic (./test.sh does)"
    );
    path
}

fn command_check(name: &str, argv: &[&str]) -> CheckConfig {
    CheckConfig {
        name: name.into(),
        command: Some(argv.iter().map(|arg| arg.to_string()).collect()),
        interval: Some("1s".into()),
        timeout: Some("500ms".into()),
        ..CheckConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nagios_outcomes_and_perfdata_arrive_parsed_at_the_control_plane() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    let state_dir = deployment.state_dir("checked");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let load = plugin("check_load");
    let dummy = plugin("check_dummy");
    let tcp = plugin("check_tcp");
    let mut config = fast_agent_config();
    config.checks = vec![
        command_check(
            "load",
            &[&load, "-w", "1000,1000,1000", "-c", "2000,2000,2000"],
        ),
        command_check("warn", &[&dummy, "1", "disk filling"]),
        command_check("crit", &[&dummy, "2", "service down"]),
        command_check("unknown", &[&dummy, "3", "cannot tell"]),
        command_check("tcp", &[&tcp, "-H", "127.0.0.1", "-p", &port]),
        CheckConfig {
            name: "probe".into(),
            probe: Some(ProbeKind::Tcp),
            target: Some(format!("127.0.0.1:{port}")),
            interval: Some("1s".into()),
            timeout: Some("500ms".into()),
            ..CheckConfig::default()
        },
    ];
    let agent = start_agent(&state_dir, config).await.unwrap();
    let mut checks: Vec<CheckView> = Vec::new();
    wait_until(Duration::from_secs(30), "all six checks", || {
        checks = control_plane
            .admin
            .health(&state.agent_id)
            .map(|health| health.checks)
            .unwrap_or_default();
        checks.len() == 6
    })
    .await
    .unwrap();
    let check = |name: &str| checks.iter().find(|c| c.name == name).unwrap().clone();

    let load = check("load");
    assert_eq!((load.state.as_str(), load.result.status), ("OK", 0));
    assert_eq!(load.result.convention, "nagios");
    let load1 = load
        .result
        .perfdata
        .iter()
        .find(|p| p.label == "load1")
        .expect("check_load reports load1");
    assert!(load1.value.is_some_and(|v| v >= 0.0));
    assert_eq!(load1.warn.as_deref(), Some("1000.000"));
    assert_eq!(load1.crit.as_deref(), Some("2000.000"));
    assert_eq!(load1.min, Some(0.0));

    assert_eq!(check("warn").state, "WARNING");
    assert!(check("warn").result.output.contains("disk filling"));
    assert_eq!(check("crit").state, "CRITICAL");
    assert_eq!(check("unknown").state, "UNKNOWN");

    let tcp = check("tcp");
    assert_eq!(tcp.state, "OK", "{:?}", tcp.result);
    let time = tcp
        .result
        .perfdata
        .iter()
        .find(|p| p.label == "time")
        .unwrap();
    assert_eq!(time.uom, "s");
    assert!(time.value.is_some_and(|v| v >= 0.0));

    let probe = check("probe");
    assert_eq!(probe.state, "OK", "{:?}", probe.result);
    assert_eq!(probe.result.convention, "probe");
    assert_eq!(
        region_checks(&control_plane),
        [3, 1, 1, 1],
        "OK, WARNING, CRITICAL, UNKNOWN"
    );

    // A state change is seen: the listener goes away, the TCP checks turn CRITICAL.
    drop(listener);
    wait_until(Duration::from_secs(20), "the TCP checks to fail", || {
        let health = control_plane.admin.health(&state.agent_id).unwrap();
        ["tcp", "probe"].iter().all(|name| {
            health
                .checks
                .iter()
                .any(|c| c.name == *name && c.result.status == 2)
        })
    })
    .await
    .unwrap();
    // `/metrics` counts the new states (its facts follow the projection, no rescan).
    wait_until(
        Duration::from_secs(10),
        "the fleet gauges to follow",
        || region_checks(&control_plane) == [1, 1, 3, 1],
    )
    .await
    .unwrap();
    let exposition = control_plane.admin.fleet_exposition(true).unwrap();
    let tcp_status = format!(
        "bagui_agent_check_status{{agent=\"{}\",division=\"{VILLAGE}\",check=\"tcp\"}} 2",
        state.agent_id
    );
    assert!(
        exposition.contains(&tcp_status),
        "{tcp_status} in:\n{exposition}"
    );
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}

/// The region's `bagui_fleet_checks` gauges from `/metrics`: OK, WARNING, CRITICAL, UNKNOWN.
fn region_checks(control_plane: &bagui_control_plane::server::ControlPlane) -> [u64; 4] {
    let exposition = control_plane.admin.fleet_exposition(false).unwrap();
    ["OK", "WARNING", "CRITICAL", "UNKNOWN"].map(|state| {
        exposition
            .lines()
            .find(|line| {
                line.starts_with("bagui_fleet_checks{division=\"45\",")
                    && line.contains(&format!("state=\"{state}\""))
            })
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no region {state} gauge in:\n{exposition}"))
    })
}
