//! 问题处置在线 end to end, with real processes: a `bagui-cp run`, a township `gateway` agent
//! and a village `terminal` agent behind it (both `bagui-agent run`, joined with real tokens),
//! one in-process UDP relay standing for the township's uplink, a local receiver speaking the
//! WeCom group robot's reply format, and the CLI (`team put`, `wo list`, `intake-token`).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::routing::post;
use bagui_agent::state::StateDir;
use bagui_tests::relay::Relay;
use bagui_tests::*;

const TOWNSHIP: &str = "450103001";

/// What the receiver got: (query string `key`, JSON body).
type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// A WeCom group robot stand-in on loopback: answers `{"errcode":0,"errmsg":"ok"}` like
/// `qyapi.weixin.qq.com/cgi-bin/webhook/send` and keeps every body.
async fn wecom_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/cgi-bin/webhook/send",
            post(
                |State(received): State<Received>,
                 Query(query): Query<std::collections::HashMap<String, String>>,
                 body: axum::body::Bytes| async move {
                    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    received
                        .lock()
                        .unwrap()
                        .push((query.get("key").cloned().unwrap_or_default(), value));
                    axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (
        format!("http://{address}/cgi-bin/webhook/send?key=township-robot"),
        received,
    )
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

fn spawn_agent(state_dir: &StateDir, config: &std::path::Path) -> Child {
    let log = std::fs::File::create(state_dir.root().with_extension("log")).unwrap();
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

struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn orders(deployment: &Deployment) -> Vec<serde_json::Value> {
    cp(deployment, &["wo", "list", "--all", "--output", "json"])
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_township_uplink_is_one_work_order_and_one_wecom_message() {
    let deployment = Deployment::init().unwrap();
    // Terminals are never "off" here, whatever the time of day the test runs at.
    let mut control_plane = ControlPlaneProcess::start_with(
        &deployment,
        "cp.log",
        "[incidents.terminal_off_hours]\nenabled = false\n",
    )
    .await
    .unwrap();
    let (robot_url, received) = wecom_receiver().await;
    cp(
        &deployment,
        &[
            "team",
            "put",
            "--id",
            "xinzhu-net",
            "--name",
            "新竹街道网络组",
            "--division",
            TOWNSHIP,
            "--categories",
            "network,host",
            "--wecom",
            &robot_url,
            "--on-duty",
            "张三:13800001111",
        ],
    )
    .unwrap();

    // Two agents joined with real tokens, then pointed at the relay (the township uplink).
    let mut state_dirs = Vec::new();
    for (name, division, role) in [
        ("gateway", TOWNSHIP, "gateway"),
        ("village", VILLAGE, "terminal"),
    ] {
        let created: serde_json::Value = serde_json::from_str(
            &cp(
                &deployment,
                &[
                    "token",
                    "create",
                    "--division",
                    division,
                    "--role",
                    role,
                    "--output",
                    "json",
                ],
            )
            .unwrap(),
        )
        .unwrap();
        let token = created["token"].as_str().unwrap().to_owned();
        let state_dir = deployment.state_dir(name);
        join(&deployment, &state_dir, &token, name).await.unwrap();
        state_dirs.push(state_dir);
    }
    let upstream = deployment.server().parse().unwrap();
    let relay = Relay::start(upstream).await.unwrap();
    for state_dir in &state_dirs {
        redirect(state_dir, &relay.address.to_string()).unwrap();
    }
    let config = deployment.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[link]\nbackoff_min = \"100ms\"\nbackoff_max = \"800ms\"\nidle_timeout = \"2s\"\nkeep_alive = \"300ms\"\n\
         [collectors]\nassets_enabled = false\n[posture]\nenabled = false\n[fim]\nenabled = false\n\
         [status]\ninterval = \"200ms\"\n",
    )
    .unwrap();
    let _agents = Agents(
        state_dirs
            .iter()
            .map(|state_dir| spawn_agent(state_dir, &config))
            .collect(),
    );
    let agents: Vec<serde_json::Value> =
        serde_json::from_str(&cp(&deployment, &["agent", "list", "--output", "json"]).unwrap())
            .unwrap();
    let ids: Vec<String> = agents
        .iter()
        .map(|agent| agent["id"].as_str().unwrap().to_owned())
        .collect();
    wait_until(Duration::from_secs(20), "both agents online", || {
        let text = cp(&deployment, &["agent", "list", "--output", "json"]).unwrap_or_default();
        let list: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
        list.iter().filter(|agent| agent["online"] == true).count() == 2
    })
    .await
    .with_context(|| control_plane.log_text())
    .unwrap();
    assert!(
        orders(&deployment).is_empty(),
        "no work order while all is well"
    );

    // Cut the uplink: within 30 s, one dispatched order with the village's suppressed under it.
    relay.set_up(false);
    let took = wait_until(Duration::from_secs(30), "one dispatched work order", || {
        let list = orders(&deployment);
        list.iter()
            .filter(|order| order["state"] == "DISPATCHED")
            .count()
            == 1
            && list
                .iter()
                .filter(|order| order["state"] == "SUPPRESSED")
                .count()
                == 1
    })
    .await
    .with_context(|| format!("{:#?}\n{}", orders(&deployment), control_plane.log_text()))
    .unwrap();
    eprintln!("dispatched {took:?} after the cut");
    let list = orders(&deployment);
    assert_eq!(list.len(), 2, "{list:#?}");
    let cause = list.iter().find(|o| o["state"] == "DISPATCHED").unwrap();
    let symptom = list.iter().find(|o| o["state"] == "SUPPRESSED").unwrap();
    for field in [
        "id",
        "state",
        "severity",
        "category",
        "team",
        "division",
        "title",
        "created_at",
        "escalation_level",
        "suppressed_by",
    ] {
        assert!(cause.get(field).is_some(), "wo list JSON lacks {field}");
    }
    assert_eq!(cause["team"], "xinzhu-net");
    assert_eq!(cause["division"], TOWNSHIP);
    assert_eq!(cause["severity"], "P1");
    assert_eq!(symptom["suppressed_by"], cause["id"]);
    assert_eq!(symptom["division"], VILLAGE);
    assert!(
        ids.iter()
            .any(|id| cause["title"].as_str().unwrap().contains(id.as_str()))
    );

    wait_until(Duration::from_secs(10), "the WeCom message", || {
        !received.lock().unwrap().is_empty()
    })
    .await
    .with_context(|| control_plane.log_text())
    .unwrap();

    // Restore: both end AUTO_RESOLVED.
    relay.set_up(true);
    wait_until(Duration::from_secs(30), "both orders auto-resolved", || {
        let list = orders(&deployment);
        list.len() == 2 && list.iter().all(|order| order["state"] == "AUTO_RESOLVED")
    })
    .await
    .with_context(|| format!("{:#?}\n{}", orders(&deployment), control_plane.log_text()))
    .unwrap();

    // Exactly one message, in the robot's text format, @-mentioning who is on duty.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let messages = received.lock().unwrap().clone();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let (key, body) = &messages[0];
    assert_eq!(key, "township-robot");
    assert_eq!(body["msgtype"], "text");
    let content = body["text"]["content"].as_str().unwrap();
    assert!(content.contains("派单"), "{content}");
    assert!(content.contains(cause["id"].as_str().unwrap()), "{content}");
    assert!(content.contains("新竹街道"), "{content}");
    assert_eq!(
        body["text"]["mentioned_mobile_list"],
        serde_json::json!(["13800001111"])
    );
    control_plane.kill();
}
