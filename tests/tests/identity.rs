//! The agent's private keys encrypted at rest (`[identity] key_passphrase_file`), end to end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bagui_agent::config::AgentConfig;
use bagui_tests::*;

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// No file under `dir` holds a PEM private key or the SM2 key (raw or hex).
fn assert_no_plain_keys(dir: &Path, sm2_key: &[u8]) {
    let sm2_hex = bagui_protocol::digest::hex(sm2_key);
    for path in files(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(!text.contains("private key"), "{}", path.display());
        assert!(!text.contains(&sm2_hex), "{}", path.display());
        assert!(
            !bytes.windows(sm2_key.len()).any(|window| window == sm2_key),
            "{}",
            path.display()
        );
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn config_with_passphrase(path: &Path) -> AgentConfig {
    let mut config = fast_agent_config();
    config.identity.key_passphrase_file = Some(path.to_owned());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_keys_join_run_and_do_not_travel_without_the_passphrase() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 2).unwrap();
    let passphrase_file = deployment.dir.path().join("agent-key.pass");
    std::fs::write(&passphrase_file, "乡镇终端 key passphrase\n").unwrap();
    let config = config_with_passphrase(&passphrase_file);

    // Join with the passphrase: the keys are written encrypted, 0600.
    let state_dir = deployment
        .state_dir("encrypted")
        .with_key_passphrase_file(&passphrase_file)
        .unwrap();
    let state = join(&deployment, &state_dir, &token.token, "a")
        .await
        .unwrap();
    let root = state_dir.root().to_owned();
    let sm2_key = state_dir.sm2_key().unwrap().expect("an SM2 key").to_bytes();
    for name in ["identity.pem", "sm2.key"] {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        assert!(
            text.contains("\"format\": \"bagui-encrypted-key/1\""),
            "{name}: {text}"
        );
        assert!(text.contains("\"cipher\": \"sm4-ccm\""), "{name}");
        assert_eq!(mode(&root.join(name)), 0o600, "{name}");
    }
    assert_no_plain_keys(&root, &sm2_key);

    // Run with the passphrase from the config (the state dir itself carries none).
    let agent = start_agent(&deployment.state_dir("encrypted"), config.clone())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the first report to be acknowledged",
        || agent.status().last_acked_seq >= 1,
    )
    .await
    .unwrap();
    agent.shutdown().await.unwrap();
    assert_eq!(
        control_plane.admin.reports(&state.agent_id, 0, 10).unwrap()[0].kind,
        "host_facts"
    );
    assert_no_plain_keys(&root, &sm2_key);

    // A copy of the state directory without the passphrase cannot start, and says why.
    let copy = deployment.dir.path().join("copied-state");
    copy_dir(&root, &copy);
    let stolen = bagui_agent::state::StateDir::new(&copy);
    let error = start_agent(&stolen, fast_agent_config())
        .await
        .expect_err("no start without the passphrase");
    let message = format!("{error:#}");
    assert!(
        message.contains("the identity keys are encrypted: set [identity] key_passphrase_file"),
        "{message}"
    );
    // Nor with a wrong one.
    let wrong_file = deployment.dir.path().join("wrong.pass");
    std::fs::write(&wrong_file, "guessed\n").unwrap();
    let error = start_agent(&stolen, config_with_passphrase(&wrong_file))
        .await
        .expect_err("no start with a wrong passphrase");
    assert!(
        format!("{error:#}").contains("wrong passphrase"),
        "{error:#}"
    );

    // An agent joined without a passphrase gets its keys encrypted at the next start.
    let plain = deployment.state_dir("plain");
    join(&deployment, &plain, &token.token, "b").await.unwrap();
    assert!(
        std::fs::read_to_string(plain.root().join("identity.pem"))
            .unwrap()
            .contains("PRIVATE KEY")
    );
    let plain_sm2 = plain.sm2_key().unwrap().unwrap().to_bytes();
    let agent = start_agent(&plain, config.clone()).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "the migrated agent's first report to be acknowledged",
        || agent.status().last_acked_seq >= 1,
    )
    .await
    .unwrap();
    agent.shutdown().await.unwrap();
    assert_no_plain_keys(plain.root(), &plain_sm2);
    assert!(start_agent(&plain, fast_agent_config()).await.is_err());

    control_plane.shutdown().await.unwrap();
}
