//! The real binaries, as an operator runs them: init, run, token create, the printed join
//! one-liner, agent run and status, agent list in every format, clean shutdown on SIGTERM.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bagui_tests::*;

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(bagui_tests::binary(binary))
        .args(args)
        .env_remove("BAGUI_DATA_DIR")
        .env_remove("BAGUI_STATE_DIR")
        .env_remove("BAGUI_JOIN_TOKEN")
        .output()
        .unwrap()
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("process {} did not stop within 10 s of SIGTERM", child.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_session_with_the_real_binaries() {
    let temporary = tempfile::tempdir().unwrap();
    let data = temporary.path().join("cp");
    let data = data.to_str().unwrap();
    let port = free_udp_port();
    let advertise = format!("127.0.0.1:{port}");

    // init
    let init = stdout_of(&run(
        "bagui-cp",
        &[
            "--data-dir",
            data,
            "init",
            "--advertise",
            &advertise,
            "--san",
            "localhost",
        ],
    ));
    assert!(init.contains("sm3:"), "{init}");
    for file in [
        "ca.crt",
        "ca.key",
        "server.crt",
        "admin.token",
        "divisions.csv",
        "store",
    ] {
        assert!(Path::new(data).join(file).exists(), "{file}");
    }
    let again = run(
        "bagui-cp",
        &["--data-dir", data, "init", "--advertise", &advertise],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    // Verbs work on the store directly while nothing runs; errors are clear.
    let bad = run(
        "bagui-cp",
        &["--data-dir", data, "token", "create", "--division", "999"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown division 999"));
    let offline = stdout_of(&run(
        "bagui-cp",
        &[
            "--data-dir",
            data,
            "token",
            "create",
            "--division",
            "450103001",
            "--role",
            "gateway",
        ],
    ));
    assert!(offline.contains("bagui-agent join --server"), "{offline}");

    // run (a child process), then token create goes through its API.
    let deployment_config = temporary.path().join("cp.toml");
    std::fs::write(
        &deployment_config,
        format!("[server]\nquic_listen = \"{advertise}\"\nhttp_listen = \"127.0.0.1:0\"\n[session]\nheartbeat_interval = \"500ms\"\n"),
    )
    .unwrap();
    let mut control_plane = bagui_tests::KillOnDrop(
        Command::new(bagui_tests::binary("bagui-cp"))
            .args([
                "--data-dir",
                data,
                "run",
                "--config",
                deployment_config.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api_json = Path::new(data).join("run/api.json");
    wait_until(Duration::from_secs(20), "api.json", || api_json.exists())
        .await
        .unwrap();
    // The control plane turns transparent huge pages off for itself (RSS at province scale).
    let status = std::fs::read_to_string(format!("/proc/{}/status", control_plane.id())).unwrap();
    assert!(
        status
            .lines()
            .any(|line| line.split_whitespace().eq(["THP_enabled:", "0"])),
        "{status}"
    );
    let created = stdout_of(&run(
        "bagui-cp",
        &[
            "--data-dir",
            data,
            "token",
            "create",
            "--division",
            VILLAGE,
            "--role",
            "terminal",
            "--ttl",
            "10m",
        ],
    ));
    let join_line = created
        .lines()
        .find(|line| line.starts_with("bagui-agent join "))
        .expect("a join line")
        .to_owned();

    // The printed one-liner, with the token moved into a file to keep it out of `ps`.
    let words: Vec<&str> = join_line.split_whitespace().collect();
    let token_index = words.iter().position(|word| *word == "--token").unwrap();
    let token_file = temporary.path().join("token");
    std::fs::write(&token_file, words[token_index + 1]).unwrap();
    let state = temporary.path().join("agent");
    let mut join_args: Vec<&str> = vec!["--state-dir", state.to_str().unwrap()];
    join_args.extend(words[1..token_index].iter().copied());
    join_args.extend(["--token-file", token_file.to_str().unwrap()]);
    join_args.extend(words[token_index + 2..].iter().copied());
    let joined = stdout_of(&run("bagui-agent", &join_args));
    assert!(joined.contains(VILLAGE_PATH), "{joined}");

    let agent_config = temporary.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        "[link]\nbackoff_min = \"100ms\"\nbackoff_max = \"1s\"\n[status]\ninterval = \"200ms\"\n",
    )
    .unwrap();
    let mut agent = bagui_tests::KillOnDrop(
        Command::new(bagui_tests::binary("bagui-agent"))
            .args([
                "--state-dir",
                state.to_str().unwrap(),
                "run",
                "--config",
                agent_config.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(
        Duration::from_secs(20),
        "the agent to report connected and acknowledged",
        || {
            let status = run(
                "bagui-agent",
                &[
                    "--state-dir",
                    state.to_str().unwrap(),
                    "status",
                    "--output",
                    "json",
                ],
            );
            serde_json::from_slice::<serde_json::Value>(&status.stdout)
                .map(|status| {
                    status["link"] == "connected" && status["last_acked_seq"].as_u64() >= Some(1)
                })
                .unwrap_or(false)
        },
    )
    .await
    .unwrap();
    let status: serde_json::Value = serde_json::from_str(&stdout_of(&run(
        "bagui-agent",
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "status",
            "--output",
            "json",
        ],
    )))
    .unwrap();
    for field in [
        "agent_id",
        "link",
        "rtt_ms",
        "outbox_records",
        "outbox_bytes",
        "last_acked_seq",
        "tls_suite",
        "kx_group",
    ] {
        assert!(!status[field].is_null(), "status lacks {field}: {status}");
    }

    // agent list through the API, in every format.
    let listed: serde_json::Value = serde_json::from_str(&stdout_of(&run(
        "bagui-cp",
        &["--data-dir", data, "agent", "list", "--output", "json"],
    )))
    .unwrap();
    let first = &listed[0];
    for field in [
        "id",
        "hostname",
        "division",
        "division_path",
        "role",
        "online",
        "last_seen",
        "last_acked_seq",
        "agent_version",
        "possible_clone",
    ] {
        assert!(
            first.get(field).is_some(),
            "agent list lacks {field}: {first}"
        );
    }
    assert_eq!(first["id"], status["agent_id"]);
    assert_eq!(first["online"], true);
    assert_eq!(first["division_path"], VILLAGE_PATH);
    let csv = stdout_of(&run(
        "bagui-cp",
        &[
            "--data-dir",
            data,
            "agent",
            "list",
            "--output",
            "csv",
            "--division",
            "4501",
        ],
    ));
    assert!(csv.starts_with("id,hostname,role,online,"), "{csv}");
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let table = stdout_of(&run("bagui-cp", &["--data-dir", data, "agent", "list"]));
    assert!(
        table.contains(VILLAGE_PATH) && table.contains("true"),
        "{table}"
    );

    // The agent (default configuration) sent its inventory and baseline at start: `asset show`
    // and `posture show` through the API, JSON as documented.
    let agent_id = status["agent_id"].as_str().unwrap().to_owned();
    let mut asset = serde_json::Value::Null;
    for _ in 0..150 {
        let output = run(
            "bagui-cp",
            &[
                "--data-dir",
                data,
                "asset",
                "show",
                &agent_id,
                "--output",
                "json",
            ],
        );
        if output.status.success() {
            asset = serde_json::from_slice(&output.stdout).unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for field in [
        "os",
        "hardware",
        "packages",
        "listening",
        "users",
        "services",
    ] {
        assert!(
            asset.get(field).is_some(),
            "asset show lacks {field}: {asset}"
        );
    }
    let package = &asset["packages"][0];
    for field in ["name", "version", "arch"] {
        assert!(package[field].is_string(), "{package}");
    }
    if let Some(socket) = asset["listening"].as_array().and_then(|list| list.first()) {
        assert!(socket["port"].is_u64(), "port is a number: {socket}");
        for field in ["proto", "address", "process"] {
            assert!(socket[field].is_string(), "{socket}");
        }
    }
    let csv = stdout_of(&run(
        "bagui-cp",
        &[
            "--data-dir",
            data,
            "asset",
            "find",
            "--package",
            "dpkg",
            "--output",
            "csv",
        ],
    ));
    assert!(
        csv.starts_with("agent,hostname,online,os,package,version"),
        "{csv}"
    );
    assert!(csv.contains(&agent_id), "{csv}");
    let mut posture = None;
    for _ in 0..150 {
        let output = run(
            "bagui-cp",
            &[
                "--data-dir",
                data,
                "posture",
                "show",
                &agent_id,
                "--output",
                "json",
            ],
        );
        if output.status.success() {
            posture = Some(serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let posture = posture.expect("a baseline run within 15 s");
    assert!(
        posture["score"].is_u64() && posture["signed"] == true,
        "{posture}"
    );
    assert!(posture["results"].as_array().unwrap().len() >= 30);

    // Another control plane's API with a wrong token is refused with a clear message.
    let url =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&api_json).unwrap())
            .unwrap()["url"]
            .as_str()
            .unwrap()
            .to_owned();
    let refused = run(
        "bagui-cp",
        &["--api", &url, "--token", "wrong", "agent", "list"],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // SIGTERM: both stop cleanly; the control plane removes api.json.
    assert!(terminate(&mut agent).success());
    assert!(terminate(&mut control_plane).success());
    assert!(!api_json.exists());
    let status: serde_json::Value = serde_json::from_str(&stdout_of(&run(
        "bagui-agent",
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "status",
            "--output",
            "json",
        ],
    )))
    .unwrap();
    assert_eq!(status["link"], "down");
    // With nothing running, the audit chain verifies offline.
    let verified = stdout_of(&run("bagui-cp", &["--data-dir", data, "audit", "verify"]));
    assert!(verified.contains("intact"), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_a_control_plane_and_an_online_agent_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    let mut demo = bagui_tests::KillOnDrop(
        Command::new(bagui_tests::binary("bagui-cp"))
            .args(["demo", "--http-port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = demo.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut data_dir = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while data_dir.is_none() && std::time::Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200))
            && let Some(path) = line
                .trim()
                .strip_prefix("bagui-cp --data-dir ")
                .and_then(|rest| rest.strip_suffix(" agent list"))
        {
            data_dir = Some(path.to_owned());
        }
    }
    let data_dir = data_dir.expect("the demo printed where its data is");
    wait_until(
        Duration::from_secs(20),
        "the demo agent to be online",
        || {
            let listed = run(
                "bagui-cp",
                &["--data-dir", &data_dir, "agent", "list", "--output", "json"],
            );
            serde_json::from_slice::<serde_json::Value>(&listed.stdout)
                .map(|agents| {
                    agents[0]["online"] == true && agents[0]["division_path"] == VILLAGE_PATH
                })
                .unwrap_or(false)
        },
    )
    .await
    .unwrap();
    assert!(
        Command::new("kill")
            .arg("-INT")
            .arg(demo.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let status = demo.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let root = Path::new(&data_dir).parent().unwrap();
    assert!(
        !root.exists(),
        "the throw-away directory {} is removed",
        root.display()
    );
}
