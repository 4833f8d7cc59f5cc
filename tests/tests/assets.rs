//! Assets online (资产在线), end to end: the real inventory of this machine reaches the ledger,
//! and changes on the host arrive as events with old and new values.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use bagui_control_plane::admin::{ChangesQuery, FindQuery};
use bagui_control_plane::inventory::{AssetView, ChangeView};
use bagui_control_plane::server::ControlPlane;
use bagui_plugins::HostRoot;
use bagui_tests::*;

fn assets_config(interval: Duration) -> bagui_agent::config::AgentConfig {
    let mut config = fast_agent_config();
    config.collectors.assets_enabled = true;
    config.collectors.assets_interval = interval;
    config
}

async fn wait_for_asset(control_plane: &ControlPlane, agent_id: &str) -> AssetView {
    let mut view = None;
    wait_until(Duration::from_secs(60), "the first asset snapshot", || {
        view = control_plane.admin.asset(agent_id).ok();
        view.is_some()
    })
    .await
    .unwrap();
    view.unwrap()
}

async fn wait_for_change(
    control_plane: &ControlPlane,
    agent_id: &str,
    what: &str,
    matches: impl Fn(&ChangeView) -> bool,
) -> ChangeView {
    let query = ChangesQuery {
        agent: Some(agent_id.into()),
        ..ChangesQuery::default()
    };
    let mut found = None;
    wait_until(Duration::from_secs(30), what, || {
        found = control_plane
            .admin
            .asset_changes(&query)
            .unwrap()
            .into_iter()
            .find(|change| matches(change));
        found.is_some()
    })
    .await
    .unwrap();
    found.unwrap()
}

fn command_output(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program} must be installed for this test: {error}"));
    assert!(output.status.success(), "{program} {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_machine_reaches_the_ledger_and_a_new_listener_arrives_as_an_event() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    let state_dir = deployment.state_dir("real-host");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let agent = start_agent(&state_dir, assets_config(Duration::from_millis(500)))
        .await
        .unwrap();
    let view = wait_for_asset(&control_plane, &state.agent_id).await;

    // Packages: exactly the `ii` lines of dpkg-query.
    let status = command_output("dpkg-query", &["-W", "-f", "${db:Status-Abbrev}\n"]);
    let installed = status.lines().filter(|line| line.starts_with("ii")).count();
    let dpkg: Vec<_> = view
        .packages
        .iter()
        .filter(|p| p.source == "dpkg")
        .collect();
    assert_eq!(
        dpkg.len(),
        installed,
        "packages in the ledger vs dpkg-query ii lines"
    );
    assert!(view.packages.iter().any(|p| p.name == "dpkg"));

    // OS, CPU, memory, NICs: what the files on this machine say.
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
    let id = bagui_plugins::host::os_release_field(&os_release, "ID").unwrap();
    assert_eq!(view.os.id, id);
    assert_eq!(view.os.family, "debian");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let threads = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(view.hardware.machine.cpu_threads as usize, threads);
    if let Some(model) = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
    }) {
        assert_eq!(view.hardware.machine.cpu_model, model);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(view.hardware.machine.memory_bytes, total_kib * 1024);
    let nics: BTreeSet<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lo")
        .collect();
    let seen: BTreeSet<String> = view.hardware.nics.iter().map(|n| n.name.clone()).collect();
    assert_eq!(seen, nics);
    assert!(!view.users.is_empty() && view.users.iter().any(|u| u.name == "root"));

    // A socket opened now arrives as an `added` event naming this process; closing it as
    // `removed` with the old value.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let key = format!("tcp/127.0.0.1:{port}");
    let added = wait_for_change(&control_plane, &state.agent_id, "the listener event", |c| {
        c.section == "listening" && c.key == key && c.op == "added"
    })
    .await;
    let new = added.new.unwrap();
    assert_eq!(new["port"], serde_json::json!(port));
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(new["process"], serde_json::json!(comm.trim()));
    drop(listener);
    let removed = wait_for_change(&control_plane, &state.agent_id, "the close event", |c| {
        c.section == "listening" && c.key == key && c.op == "removed"
    })
    .await;
    assert!(removed.old.is_some() && removed.new.is_none());

    // Find by port.
    let rows = control_plane
        .admin
        .asset_find(&FindQuery {
            port: Some(view.listening.first().map(|l| l.port).unwrap_or(0)),
            ..FindQuery::default()
        })
        .unwrap();
    if !view.listening.is_empty() {
        assert_eq!(rows.len(), 1);
    }
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_and_user_changes_arrive_with_old_and_new_values_and_versions_order_like_dpkg() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    let state_dir = deployment.state_dir("fixture-host");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let host = tempfile::tempdir().unwrap();
    let root = host.path();
    write_fixture(
        root,
        "etc/os-release",
        "NAME=\"Kylin Linux Advanced Server\"\nVERSION=\"V10 (Lance)\"\nID=\"kylin\"\nVERSION_ID=\"V10\"\nPRETTY_NAME=\"Kylin Linux Advanced Server V10 (Lance)\"\n",
    );
    write_fixture(root, "etc/passwd", PASSWD);
    write_fixture(root, "etc/group", "root:x:0:\n");
    write_fixture(
        root,
        "var/lib/dpkg/status",
        &(dpkg_stanza("openssh-server", "1:9.2p1-2+deb12u3") + &dpkg_stanza("curl", "7.88.1-10")),
    );
    let agent = start_agent_with_root(
        &state_dir,
        assets_config(Duration::from_millis(300)),
        HostRoot::new(root),
    )
    .await
    .unwrap();
    let view = wait_for_asset(&control_plane, &state.agent_id).await;
    assert_eq!(view.os.family, "kylin");
    assert_eq!(view.packages.len(), 2);

    // Upgrade openssh, remove curl, install nginx, add a user.
    write_fixture(
        root,
        "var/lib/dpkg/status",
        &(dpkg_stanza("openssh-server", "1:9.6p1-1") + &dpkg_stanza("nginx", "1.22.1-9")),
    );
    write_fixture(
        root,
        "etc/passwd",
        &format!("{PASSWD}ops:x:1000:1000:ops:/home/ops:/bin/bash\n"),
    );
    let upgraded = wait_for_change(&control_plane, &state.agent_id, "the upgrade", |c| {
        c.section == "package" && c.key == "openssh-server:amd64" && c.op == "changed"
    })
    .await;
    assert_eq!(upgraded.old.unwrap()["version"], "1:9.2p1-2+deb12u3");
    assert_eq!(upgraded.new.unwrap()["version"], "1:9.6p1-1");
    wait_for_change(&control_plane, &state.agent_id, "the removal", |c| {
        c.section == "package" && c.key == "curl:amd64" && c.op == "removed"
    })
    .await;
    wait_for_change(&control_plane, &state.agent_id, "the install", |c| {
        c.section == "package" && c.key == "nginx:amd64" && c.op == "added"
    })
    .await;
    let user = wait_for_change(&control_plane, &state.agent_id, "the new user", |c| {
        c.section == "user" && c.key == "ops" && c.op == "added"
    })
    .await;
    assert_eq!(user.new.unwrap()["uid"], 1000);

    // The ledger now holds the new state, and finds versions in dpkg order (epoch first).
    let find = |below: &str| {
        control_plane
            .admin
            .asset_find(&FindQuery {
                package: Some("openssh-server".into()),
                version_below: Some(below.into()),
                ..FindQuery::default()
            })
            .unwrap()
    };
    wait_until(
        Duration::from_secs(10),
        "the ledger to apply the upgrade",
        || find("1:9.7").len() == 1,
    )
    .await
    .unwrap();
    assert_eq!(find("1:9.6p1-1").len(), 0, "equal is not below");
    assert_eq!(
        find("9.9").len(),
        0,
        "epoch 1 sorts above any epoch-0 version"
    );
    assert_eq!(
        find("1:9.6p1-1~").len(),
        0,
        "~ sorts before the empty string"
    );
    assert_eq!(find("1:9.6p1-1+b1").len(), 1);
    let current = control_plane.admin.asset(&state.agent_id).unwrap();
    let names: BTreeSet<&str> = current.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["nginx", "openssh-server"]));
    assert!(!current.stale);

    // A restarted agent sends changes against its saved baseline, not a new full snapshot.
    agent.shutdown().await.unwrap();
    let full_before = control_plane
        .admin
        .asset(&state.agent_id)
        .unwrap()
        .full_snapshot;
    write_fixture(root, "etc/passwd", PASSWD);
    let agent = start_agent_with_root(
        &state_dir,
        assets_config(Duration::from_millis(300)),
        HostRoot::new(root),
    )
    .await
    .unwrap();
    wait_for_change(&control_plane, &state.agent_id, "the user removal", |c| {
        c.section == "user" && c.key == "ops" && c.op == "removed"
    })
    .await;
    let after = control_plane.admin.asset(&state.agent_id).unwrap();
    assert_eq!(
        after.full_snapshot, full_before,
        "no full snapshot after a restart"
    );
    assert!(!after.stale);
    agent.shutdown().await.unwrap();
    control_plane.shutdown().await.unwrap();
}
