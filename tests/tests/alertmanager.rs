//! Alertmanager intake end to end, with real processes only: a `bagui-cp run`, a real
//! Prometheus evaluating an alerting rule, and a real Alertmanager posting its webhook (v4) to
//! `POST /api/v1/intake/alertmanager` with an intake token made by `bagui-cp intake-token
//! create`. The firing alert becomes one DISPATCHED work order for the county's team;
//! Alertmanager's repeats of the group add nothing; the rule stopping to fire (rule file
//! rewritten, Prometheus reloaded) resolves it and the order ends AUTO_RESOLVED.
//!
//! Prometheus and Alertmanager are Debian packages that `./test.sh` installs
//! (`prometheus`, `prometheus-alertmanager`); if either is missing this test fails, it does
//! not skip. Everything listens on 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::routing::post;
use bagui_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 青秀区, Nanning.
const COUNTY: &str = "450103";
const TEAM: &str = "qingxiu-net";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const PROMETHEUS: &str = "/usr/bin/prometheus";
const ALERT_NAME: &str = "QingxiuUplinkDown";
const SUMMARY: &str = "青秀区出口链路中断 (QingxiuUplinkDown)";

/// A TCP port that was free a moment ago on 127.0.0.1.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("binding a TCP socket on loopback")
}

/// A program the test needs from a Debian package; a missing one fails the test.
fn required(path: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{} is missing: install the Debian package `{package}` (./test.sh does: \
         apt-get install --no-install-recommends {package})",
        path.display()
    );
    path
}

/// A child process (Prometheus, Alertmanager) with its output in a log file; SIGKILLed when
/// dropped.
struct Peer {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Peer {
    fn start(name: &'static str, program: &Path, args: &[String], dir: &Path) -> Result<Peer> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Peer { name, child, log })
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- {} log ---\n{text}", self.name)
    }

    /// Waits (bounded) until `GET /-/ready` answers 200; fails early if the process exits.
    async fn wait_ready(&mut self, address: &str) -> Result<Duration> {
        let start = Instant::now();
        for _ in 0..150 {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited ({status})\n{}", self.name, self.log_text());
            }
            if let Ok((200, _)) = http(address, "GET", "/-/ready", &[], "").await {
                return Ok(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("{} not ready after 15 s\n{}", self.name, self.log_text())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request to `address` (`127.0.0.1:PORT`) on a fresh connection, bounded to
/// 5 s; returns the status and the body.
async fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("HTTP request timed out")??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("HTTP response without a blank line")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad HTTP status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// `bagui-cp ARGS` against the deployment; stdout on success.
fn cp(deployment: &Deployment, args: &[&str]) -> Result<String> {
    let output = Command::new(binary("bagui-cp"))
        .arg("--data-dir")
        .arg(deployment.data_dir.root())
        .args(args)
        .output()
        .context("running bagui-cp")?;
    anyhow::ensure!(
        output.status.success(),
        "bagui-cp {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn orders(deployment: &Deployment) -> Vec<serde_json::Value> {
    cp(deployment, &["wo", "list", "--all", "--output", "json"])
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Polls `condition` every 200 ms, at most `timeout`; the time it took.
async fn poll(timeout: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    let attempts = (timeout.as_millis() / 200).max(1);
    for _ in 0..attempts {
        if condition() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    condition().then(|| start.elapsed())
}

/// Alertmanager's webhook notifications so far: (attempted, failed), from its `/metrics`;
/// zeros if it does not answer.
async fn webhook_posts(am_address: &str) -> (f64, f64) {
    let Ok((200, metrics)) = http(am_address, "GET", "/metrics", &[], "").await else {
        return (0.0, 0.0);
    };
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .filter(|line| line.contains("integration=\"webhook\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (
        counter("alertmanager_notifications_total"),
        counter("alertmanager_notifications_failed_total"),
    )
}

/// A receiver for the team's generic webhook channel: keeps every body.
async fn team_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| async move {
            kept.lock().unwrap().push(body);
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}/hook"), received)
}

/// A hand-built Alertmanager webhook v4 body: the resolve of one alert of the county.
fn resolved_v4_body() -> String {
    let labels = serde_json::json!({
        "alertname": "HandBuilt", "severity": "critical", "category": "network",
        "division": COUNTY
    });
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HandBuilt\"}",
        "truncatedAlerts": 0,
        "status": "resolved",
        "receiver": "bagui",
        "groupLabels": {"alertname": "HandBuilt"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "hand-built"},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": "resolved",
            "labels": labels,
            "annotations": {"summary": "hand-built"},
            "startsAt": "2026-11-26T10:00:00Z",
            "endsAt": "2026-11-26T10:05:00Z",
            "generatorURL": "",
            "fingerprint": "0123456789abcdef"
        }]
    })
    .to_string()
}

fn rule_file(expr: &str) -> String {
    format!(
        "groups:\n\
         \x20 - name: bagui-acceptance\n\
         \x20   interval: 1s\n\
         \x20   rules:\n\
         \x20     - alert: {ALERT_NAME}\n\
         \x20       expr: {expr}\n\
         \x20       labels:\n\
         \x20         severity: critical\n\
         \x20         category: network\n\
         \x20         division: \"{COUNTY}\"\n\
         \x20       annotations:\n\
         \x20         summary: \"{SUMMARY}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_posts_a_work_order_and_its_resolve_closes_it() {
    let alertmanager = required(ALERTMANAGER, "prometheus-alertmanager");
    let prometheus = required(PROMETHEUS, "prometheus");

    let deployment = Deployment::init().unwrap();
    let dir = deployment.dir.path().to_owned();
    let mut control_plane = ControlPlaneProcess::start_with(
        &deployment,
        "cp.log",
        "[incidents]\nhold_finding_secs = 2\n",
    )
    .await
    .unwrap();
    let api_url = deployment.data_dir.api_info().unwrap().url;
    let api = api_url
        .strip_prefix("http://")
        .expect("the API is plain HTTP on loopback")
        .to_owned();

    // The county's team, and an intake token (the bare token is the last line).
    let (hook_url, hooks) = team_receiver().await;
    cp(
        &deployment,
        &[
            "team",
            "put",
            "--id",
            TEAM,
            "--name",
            "青秀区网络组",
            "--division",
            COUNTY,
            "--categories",
            "network,host",
            "--webhook",
            &hook_url,
        ],
    )
    .unwrap();
    let created = cp(
        &deployment,
        &["intake-token", "create", "--name", "alertmanager"],
    )
    .unwrap();
    let token = created.lines().last().unwrap().trim().to_owned();
    assert!(token.starts_with("bgi_"), "{created}");

    // The route refuses a wrong or missing token (the operators' admin token is not an
    // intake token either), and takes the very same body with the right one (a resolve of an
    // occurrence never seen: nothing to open). The intake token opens nothing else.
    let intake = "/api/v1/intake/alertmanager";
    let json = ("Content-Type", "application/json");
    let body = resolved_v4_body();
    let wrong = format!("Bearer bgi_{}", "0".repeat(48));
    let admin = format!("Bearer {}", deployment.data_dir.admin_token().unwrap());
    for headers in [
        vec![json, ("Authorization", wrong.as_str())],
        vec![json, ("Authorization", admin.as_str())],
        vec![json, ("Authorization", "Bearer ")],
        vec![json],
    ] {
        let (status, answer) = http(&api, "POST", intake, &headers, &body).await.unwrap();
        assert_eq!(status, 401, "{headers:?}: {answer}");
    }
    let bearer = format!("Bearer {token}");
    let (status, answer) = http(
        &api,
        "GET",
        "/api/v1/work-orders",
        &[("Authorization", &bearer)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "the intake token read work orders: {answer}");
    let (status, answer) = http(
        &api,
        "POST",
        intake,
        &[json, ("Authorization", &bearer)],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let receipt: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(receipt["accepted"], 1, "{answer}");

    // A real Alertmanager: no clustering, its storage in the temporary directory, the webhook
    // to the control plane with the intake token (0.25 syntax: http_config.authorization).
    // repeat_interval is short so that Alertmanager really repeats the group during the test.
    let am_address = format!("127.0.0.1:{}", free_tcp_port());
    let am_config = dir.join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n\
             \x20 receiver: bagui\n\
             \x20 group_by: [alertname]\n\
             \x20 group_wait: 1s\n\
             \x20 group_interval: 1s\n\
             \x20 repeat_interval: 2s\n\
             receivers:\n\
             \x20 - name: bagui\n\
             \x20   webhook_configs:\n\
             \x20     - url: {api_url}{intake}\n\
             \x20       send_resolved: true\n\
             \x20       http_config:\n\
             \x20         authorization:\n\
             \x20           type: Bearer\n\
             \x20           credentials: {token}\n"
        ),
    )
    .unwrap();
    let mut am = Peer::start(
        "alertmanager",
        &alertmanager,
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", dir.join("alertmanager-data").display()),
            format!("--web.listen-address={am_address}"),
            "--cluster.listen-address=".into(),
            "--log.level=debug".into(),
        ],
        &dir,
    )
    .unwrap();
    am.wait_ready(&am_address).await.unwrap();

    // A real Prometheus evaluating `vector(1)` every second and sending to that Alertmanager.
    let prom_address = format!("127.0.0.1:{}", free_tcp_port());
    let rules = dir.join("rules.yml");
    std::fs::write(&rules, rule_file("vector(1)")).unwrap();
    let prom_config = dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n\
             \x20 evaluation_interval: 1s\n\
             rule_files:\n\
             \x20 - {}\n\
             alerting:\n\
             \x20 alertmanagers:\n\
             \x20   - static_configs:\n\
             \x20       - targets: ['{am_address}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut prom = Peer::start(
        "prometheus",
        &prometheus,
        &[
            format!("--config.file={}", prom_config.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            format!("--web.listen-address={prom_address}"),
            "--web.enable-lifecycle".into(),
            "--rules.alert.resend-delay=1s".into(),
        ],
        &dir,
    )
    .unwrap();
    let prom_ready = prom.wait_ready(&prom_address).await.unwrap();
    let logs = |control_plane: &ControlPlaneProcess, am: &Peer, prom: &Peer| {
        format!(
            "{:#?}\n--- bagui-cp log ---\n{}\n{}\n{}",
            orders(&deployment),
            control_plane.log_text(),
            am.log_text(),
            prom.log_text()
        )
    };

    // Within 30 s: exactly one order, DISPATCHED to the county's team.
    // (Alertmanager's first webhook post lies between the last time its counter read 0 and
    // the first time it read 1 or the order was seen.)
    let mut quiet_until = Duration::ZERO;
    let mut first_post = None;
    let mut dispatched = None;
    for _ in 0..150 {
        let read_at = started.elapsed();
        if first_post.is_none() {
            if webhook_posts(&am_address).await.0 >= 1.0 {
                first_post = Some(read_at);
            } else {
                quiet_until = read_at;
            }
        }
        if orders(&deployment)
            .iter()
            .any(|order| order["state"] == "DISPATCHED")
        {
            dispatched = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some(dispatched) = dispatched else {
        panic!(
            "no DISPATCHED order within 30 s\n{}",
            logs(&control_plane, &am, &prom)
        );
    };
    eprintln!(
        "since Prometheus started: ready after {prom_ready:?}; Alertmanager's first webhook post \
         after {quiet_until:?} and before {:?}; DISPATCHED seen after {dispatched:?}",
        first_post.unwrap_or(dispatched)
    );
    let list = orders(&deployment);
    assert_eq!(list.len(), 1, "{list:#?}");
    let order = &list[0];
    assert_eq!(order["state"], "DISPATCHED");
    assert_eq!(order["team"], TEAM);
    assert_eq!(order["severity"], "P1");
    assert_eq!(order["category"], "network");
    assert_eq!(order["division"], COUNTY);
    assert_eq!(order["title"], SUMMARY);
    let id = order["id"].as_str().unwrap().to_owned();

    // The team's webhook hears of it.
    let notified = poll(Duration::from_secs(10), || {
        hooks.lock().unwrap().iter().any(|body| {
            let body: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            body["kind"] == "dispatched" && body["work_order_id"] == id.as_str()
        })
    })
    .await;
    assert!(
        notified.is_some(),
        "the team's webhook got no `dispatched` message for {id}: {:#?}\n{}",
        hooks.lock().unwrap(),
        logs(&control_plane, &am, &prom)
    );

    // Alertmanager repeats the group (repeat_interval 2 s): at least two more webhook posts,
    // none failed, and still exactly the one order.
    let mut sent = 0.0;
    let mut failed = 0.0;
    let mut repeated = false;
    for _ in 0..100 {
        (sent, failed) = webhook_posts(&am_address).await;
        if sent >= 3.0 {
            repeated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        repeated,
        "Alertmanager did not repeat the group: {sent} webhook notifications\n{}",
        logs(&control_plane, &am, &prom)
    );
    assert_eq!(failed, 0.0, "{}", logs(&control_plane, &am, &prom));
    let list = orders(&deployment);
    assert_eq!(list.len(), 1, "{sent} notifications made {list:#?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["state"], "DISPATCHED");
    eprintln!("{sent} webhook notifications from Alertmanager, one order");

    // The rule stops firing: Prometheus sends the resolve, Alertmanager posts it, the order
    // ends AUTO_RESOLVED within 30 s.
    std::fs::write(&rules, rule_file("vector(1) == 2")).unwrap();
    let reload_at = Instant::now();
    let (status, answer) = http(&prom_address, "POST", "/-/reload", &[], "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let resolved = poll(Duration::from_secs(30), || {
        orders(&deployment)
            .iter()
            .any(|order| order["state"] == "AUTO_RESOLVED")
    })
    .await;
    assert!(
        resolved.is_some(),
        "the order was not AUTO_RESOLVED within 30 s of the reload\n{}",
        logs(&control_plane, &am, &prom)
    );
    eprintln!("AUTO_RESOLVED {:?} after the reload", reload_at.elapsed());
    let list = orders(&deployment);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["state"], "AUTO_RESOLVED");

    let kinds: Vec<String> = hooks
        .lock()
        .unwrap()
        .iter()
        .map(|body| {
            let body: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            format!("{}", body["kind"])
        })
        .collect();
    eprintln!("the team's webhook got {kinds:?}");
    drop(prom);
    drop(am);
    control_plane.kill();
}
