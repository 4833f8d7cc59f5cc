//! `/metrics` as Prometheus sees it: `promtool check metrics` accepts the exposition, and a real
//! Prometheus server (started here on loopback) scrapes it with the admin token and can query
//! fleet aggregates and per-agent series.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use bagui_control_plane::client::ApiClient;
use bagui_tests::*;

/// `GET` over plain HTTP/1.0 on loopback; the body.
fn http_get(host_port: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(host_port).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host_port}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}

fn tool(name: &str) -> std::path::PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let path = std::path::Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed: run ./test.sh (it installs Debian's prometheus package)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_and_a_real_prometheus_accept_the_exposition() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    let state_dir = deployment.state_dir("scraped");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let mut config = fast_agent_config();
    config.collectors.metrics_enabled = true;
    config.collectors.metrics_interval = Duration::from_millis(300);
    let agent = start_agent(&state_dir, config).await.unwrap();
    wait_until(Duration::from_secs(20), "health samples", || {
        control_plane
            .admin
            .health(&state.agent_id)
            .is_ok_and(|health| !health.samples.is_empty())
    })
    .await
    .unwrap();

    let admin_token = deployment.data_dir.admin_token().unwrap();
    let client = ApiClient::new(&control_plane.api_url, &admin_token, None).unwrap();
    let text = client.call_text("/metrics?agents=true").await.unwrap();
    assert!(text.contains("bagui_fleet_agents{division=\"45\""));
    assert!(text.contains(&format!("node_load1{{agent=\"{}\"", state.agent_id)));
    let without = client.call_text("/metrics").await.unwrap();
    assert!(
        !without.contains("node_load1{"),
        "per-agent series only on request"
    );

    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scraping the control plane every second with the admin token.
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, &admin_token).unwrap();
    let target = control_plane
        .api_url
        .trim_start_matches("http://")
        .to_owned();
    let config_file = work.path().join("prometheus.yml");
    std::fs::write(
        &config_file,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: bagui\n    metrics_path: /metrics\n    params:\n      agents: ['true']\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n",
            token_file.display()
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    });
    let mut prometheus = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(work.path().join("prometheus.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let query = |expr: &str| {
        http_get(&listen, &format!("/api/v1/query?query={expr}"))
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|value| value["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    };
    let scraped = wait_until(Duration::from_secs(60), "Prometheus to scrape", || {
        query("up%7Bjob%3D%22bagui%22%7D")
            .first()
            .is_some_and(|sample| sample["value"][1] == "1")
    })
    .await;
    let log = std::fs::read_to_string(work.path().join("prometheus.log")).unwrap_or_default();
    scraped.unwrap_or_else(|error| panic!("{error}\nprometheus log:\n{log}"));
    wait_until(Duration::from_secs(20), "fleet and agent series", || {
        let online = query("bagui_fleet_agents%7Blevel%3D%22region%22%2Cstate%3D%22online%22%7D");
        let load = query(&format!("node_load1%7Bagent%3D%22{}%22%7D", state.agent_id));
        online
            .first()
            .is_some_and(|sample| sample["value"][1] == "1")
            && !load.is_empty()
    })
    .await
    .unwrap();
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_its_own_metrics_on_loopback_only_when_asked() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    let state_dir = deployment.state_dir("self-metrics");
    join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let quiet = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    assert!(quiet.self_metrics_address().is_none(), "off by default");
    quiet.shutdown().await.unwrap();

    let mut config = fast_agent_config();
    config.self_metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let agent = start_agent(&state_dir, config).await.unwrap();
    let address = agent.self_metrics_address().unwrap().to_string();
    let mut text = String::new();
    wait_until(Duration::from_secs(10), "the link to show up", || {
        text = http_get(&address, "/metrics").unwrap_or_default();
        text.contains("bagui_agent_link_up 1")
    })
    .await
    .unwrap();
    assert!(text.contains("bagui_agent_outbox_dropped_total{lane=\"metrics\"} 0"));
    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        bagui_agent::config::AgentConfig::parse("[self_metrics]\nlisten = \"0.0.0.0:9469\"\n")
            .is_err(),
        "a non-loopback address is refused"
    );
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}
