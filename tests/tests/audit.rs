//! The audit log as an auditor and an MLPS assessor see it: SM2-signed checkpoints checked
//! by `bagui-cp audit verify` (with the deployment's key or one the auditor holds), a single
//! flipped byte named by entry, RFC 5424 export to a remote syslog collector over UDP and TCP
//! that survives a collector outage, and a passphrase-protected CA key.
//!
//! Every socket here is on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bagui_control_plane::admin::CreateToken;
use bagui_control_plane::client::ApiClient;
use bagui_control_plane::store::Store;
use bagui_tests::*;
use tokio::io::AsyncReadExt;

fn bagui_cp(data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary("bagui-cp"));
    command
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("BAGUI_DATA_DIR")
        .env_remove("BAGUI_API")
        .env_remove("BAGUI_CA_PASSPHRASE")
        .env_remove("BAGUI_CA_PASSPHRASE_FILE")
        .stdin(Stdio::null());
    command
}

fn output(data: &Path, args: &[&str]) -> Output {
    bagui_cp(data, args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("bagui-cp did not stop within 15 s of SIGTERM");
}

/// Writes a config for `run` on loopback with `extra` appended.
fn write_config(deployment: &Deployment, extra: &str) -> PathBuf {
    let path = deployment.dir.path().join("control-plane.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nquic_listen = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:0\"\n\n{extra}",
            deployment.quic_port
        ),
    )
    .unwrap();
    path
}

/// Starts `bagui-cp run` and waits for its API.
async fn start_process(deployment: &Deployment, config: &Path, env: &[(&str, &str)]) -> KillOnDrop {
    let _ = std::fs::remove_file(deployment.data_dir.api_info_path());
    let log = deployment.dir.path().join("cp.log");
    let mut command = bagui_cp(
        deployment.data_dir.root(),
        &["run", "--config", config.to_str().unwrap()],
    );
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let running = KillOnDrop(child);
    let info = deployment.data_dir.api_info_path();
    wait_until(Duration::from_secs(20), "api.json", || info.exists())
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{error}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    running
}

fn api(deployment: &Deployment) -> ApiClient {
    let info = deployment.data_dir.api_info().unwrap();
    ApiClient::new(&info.url, &deployment.data_dir.admin_token().unwrap(), None).unwrap()
}

fn token_request(index: usize) -> CreateToken {
    CreateToken {
        division: VILLAGE.into(),
        ttl: "1h".into(),
        uses: 1,
        role: "terminal".into(),
        description: format!("audit test {index}"),
    }
}

/// Another deployment's audit signing key (PEM).
fn other_key_pem(path: &Path) {
    let other = Deployment::init().unwrap();
    std::fs::copy(other.data_dir.audit_signing_pub_path(), path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_verify_and_any_tampering_is_named() {
    let deployment = Deployment::init().unwrap();
    let data = deployment.data_dir.root().to_owned();
    let public = std::fs::read_to_string(deployment.data_dir.audit_signing_pub_path()).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");

    // Ten audited actions with a checkpoint every four entries, then a clean stop, which
    // checkpoints the rest.
    let config = write_config(&deployment, "[audit]\ncheckpoint_every = 4\n");
    let mut running = start_process(&deployment, &config, &[]).await;
    let client = api(&deployment);
    for index in 0..10 {
        let _: serde_json::Value = client
            .post("/api/v1/tokens", &token_request(index))
            .await
            .unwrap();
    }
    assert!(terminate(&mut running.0).success());

    let verified = output(&data, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", text(&verified));
    let stdout = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(
        stdout.contains(
            "13 entries, 3 signed checkpoints (the last covers entry 12), 0 entries after it"
        ),
        "{stdout}"
    );

    // The auditor's own copy of the key, as hex: verifies. Another key: the first checkpoint
    // (entry 5) fails, by name.
    let hex_key = deployment.dir.path().join("audit-key.hex");
    std::fs::write(
        &hex_key,
        bagui_protocol::digest::hex(&deployment.data_dir.sm2_public_key().unwrap()),
    )
    .unwrap();
    let with_hex = output(
        &data,
        &["audit", "verify", "--pubkey", hex_key.to_str().unwrap()],
    );
    assert!(with_hex.status.success(), "{}", text(&with_hex));
    let other = deployment.dir.path().join("other.pub");
    other_key_pem(&other);
    let wrong_key = output(
        &data,
        &["audit", "verify", "--pubkey", other.to_str().unwrap()],
    );
    assert!(!wrong_key.status.success(), "{}", text(&wrong_key));
    assert!(
        String::from_utf8_lossy(&wrong_key.stderr).contains("audit entry 5: signature"),
        "{}",
        text(&wrong_key)
    );

    // Flip single bytes in stored entries: a plain entry's middle, a checkpoint's last byte,
    // the first byte (the MessagePack map marker: undecodable) of another.
    let store_path = deployment.data_dir.store_path();
    for (seq, position) in [(6u64, None), (10, Some(usize::MAX)), (3, Some(0))] {
        let original = {
            let store = Store::open(&store_path).unwrap();
            let (_, original) = store.audit_raw(seq - 1, 1).unwrap().remove(0);
            let mut flipped = original.clone();
            let index = match position {
                None => flipped.len() / 2,
                Some(usize::MAX) => flipped.len() - 1,
                Some(index) => index,
            };
            flipped[index] ^= 0x01;
            store.rewrite_audit_raw(seq, &flipped).unwrap();
            original
        };
        let tampered = output(&data, &["audit", "verify"]);
        assert!(!tampered.status.success(), "{}", text(&tampered));
        let stderr = String::from_utf8_lossy(&tampered.stderr).into_owned();
        assert!(
            stderr.contains(&format!("audit entry {seq}:")),
            "flip in entry {seq}: {}",
            text(&tampered)
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        if position == Some(0) {
            assert!(stderr.contains("decode"), "{stderr}");
        }
        Store::open(&store_path)
            .unwrap()
            .rewrite_audit_raw(seq, &original)
            .unwrap();
    }
    let restored = output(&data, &["audit", "verify"]);
    assert!(restored.status.success(), "{}", text(&restored));

    // `audit list` shows the checkpoints.
    let listed = output(&data, &["audit", "list"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("audit.checkpoint"),
        "{}",
        text(&listed)
    );
}

/// An RFC 5424 message's header fields.
#[derive(Debug)]
struct Syslog {
    pri: u32,
    version: u32,
    timestamp: String,
    app_name: String,
    procid: String,
    msgid: String,
    seq: u64,
    hash: String,
}

/// Parses one RFC 5424 message (as far as these tests need).
fn parse_5424(message: &[u8]) -> Syslog {
    let text = std::str::from_utf8(message).expect("UTF-8 message");
    let rest = text.strip_prefix('<').expect("PRI starts with <");
    let (pri, rest) = rest.split_once('>').expect("PRI ends with >");
    let mut fields = rest.splitn(7, ' ');
    let version = fields.next().unwrap().parse().unwrap();
    let timestamp = fields.next().unwrap().to_owned();
    let hostname = fields.next().unwrap();
    assert!(!hostname.is_empty() && hostname.chars().all(|c| c.is_ascii_graphic()));
    let app_name = fields.next().unwrap().to_owned();
    let procid = fields.next().unwrap().to_owned();
    let msgid = fields.next().unwrap().to_owned();
    let structured = fields.next().unwrap();
    assert!(
        structured.starts_with("[bagui@32473 seq=\""),
        "structured data: {structured}"
    );
    let param = |name: &str| -> String {
        let start = structured
            .find(&format!(" {name}=\""))
            .unwrap_or_else(|| panic!("no {name} in {structured}"))
            + name.len()
            + 3;
        let end = start + structured[start..].find('"').unwrap();
        structured[start..end].to_owned()
    };
    assert!(!param("actor").is_empty());
    Syslog {
        pri: pri.parse().unwrap(),
        version,
        timestamp,
        app_name,
        procid,
        msgid,
        seq: param("seq").parse().unwrap(),
        hash: param("hash"),
    }
}

fn check_header(message: &Syslog) {
    assert_eq!(message.pri, 109, "{message:?}");
    assert_eq!(message.version, 1, "{message:?}");
    assert_eq!(message.app_name, "bagui-cp", "{message:?}");
    assert!(message.procid.parse::<u32>().is_ok(), "{message:?}");
    assert!(
        message.timestamp.len() == 24
            && message.timestamp.ends_with('Z')
            && message.timestamp.as_bytes()[10] == b'T',
        "{message:?}"
    );
    assert_eq!(message.hash.len(), 64, "{message:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_reach_a_udp_syslog_collector() {
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut deployment = Deployment::init().unwrap();
    deployment.config.audit.syslog = Some(format!("udp://{}", collector.local_addr().unwrap()));
    let control_plane = deployment.start().await.unwrap();
    for _ in 0..3 {
        create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    }
    let mut seen = Vec::new();
    let mut buffer = vec![0u8; 65_536];
    while seen.len() < 3 {
        let length = tokio::time::timeout(Duration::from_secs(10), collector.recv(&mut buffer))
            .await
            .expect("a syslog datagram within 10 s")
            .unwrap();
        let message = parse_5424(&buffer[..length]);
        check_header(&message);
        assert_eq!(message.msgid, "token.create", "{message:?}");
        seen.push(message.seq);
    }
    assert_eq!(seen, [1, 2, 3]);
    wait_until(Duration::from_secs(5), "the cursor to reach 3", || {
        control_plane.store.audit_export_cursor().unwrap() == 3
    })
    .await
    .unwrap();
    control_plane.shutdown().await.unwrap();
}

/// Reads octet-counted (RFC 6587) messages from a TCP connection until `until` holds.
async fn read_framed(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
    messages: &mut Vec<Syslog>,
    until: impl Fn(&[Syslog]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !until(messages) {
        // Complete frames first.
        while let Some(space) = buffer.iter().position(|&b| b == b' ') {
            let length: usize = std::str::from_utf8(&buffer[..space])
                .unwrap()
                .parse()
                .expect("octet count");
            if buffer.len() < space + 1 + length {
                break;
            }
            let message = parse_5424(&buffer[space + 1..space + 1 + length]);
            check_header(&message);
            messages.push(message);
            buffer.drain(..space + 1 + length);
        }
        if until(messages) {
            return;
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("syslog messages within 20 s")
            .unwrap();
        assert!(read > 0, "the exporter closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_collector_outage_loses_nothing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut deployment = Deployment::init().unwrap();
    deployment.config.audit.syslog = Some(format!("tcp://{address}"));
    deployment.config.audit.syslog_retry_max = Duration::from_millis(500);
    let control_plane = deployment.start().await.unwrap();
    for _ in 0..3 {
        create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    }
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buffer = Vec::new();
    let mut messages = Vec::new();
    read_framed(&mut stream, &mut buffer, &mut messages, |seen| {
        seen.iter().any(|m| m.seq == 3)
    })
    .await;
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    // The collector goes away; entries keep being made.
    drop(stream);
    drop(listener);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..4 {
        create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Nothing after 3 counts as delivered (3 itself may not: the collector hung up right after
    // reading it, which the exporter may notice before recording it).
    assert!(control_plane.store.audit_export_cursor().unwrap() <= 3);

    // It comes back on the same address: everything missed arrives (perhaps twice).
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buffer = Vec::new();
    let mut messages = Vec::new();
    read_framed(&mut stream, &mut buffer, &mut messages, |seen| {
        (4..=7).all(|seq| seen.iter().any(|m| m.seq == seq))
    })
    .await;
    assert!(messages.iter().all(|m| m.msgid == "token.create"));
    wait_until(Duration::from_secs(5), "the cursor to reach 7", || {
        control_plane.store.audit_export_cursor().unwrap() == 7
    })
    .await
    .unwrap();
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_ca_key_needs_its_passphrase() {
    let temporary = tempfile::tempdir().unwrap();
    let data = temporary.path().join("cp");
    let passphrase_file = temporary.path().join("passphrase");
    std::fs::write(&passphrase_file, "广西 correct horse\n").unwrap();
    let port = free_udp_port();
    let advertise = format!("127.0.0.1:{port}");
    let init = output(
        &data,
        &[
            "init",
            "--advertise",
            &advertise,
            "--protect-ca-key",
            "--ca-passphrase-file",
            passphrase_file.to_str().unwrap(),
        ],
    );
    assert!(init.status.success(), "{}", text(&init));
    let stdout = String::from_utf8_lossy(&init.stdout).into_owned();
    assert!(
        stdout.contains("encrypted") && stdout.contains("audit-signing.pub"),
        "{stdout}"
    );
    let key = std::fs::read_to_string(data.join("ca.key")).unwrap();
    assert!(
        !key.contains("PRIVATE KEY") && !key.contains("-----BEGIN"),
        "{key}"
    );
    assert!(
        key.contains("pbkdf2-hmac-sm3") && key.contains("sm4-ccm"),
        "{key}"
    );

    let deployment = Deployment {
        data_dir: bagui_control_plane::datadir::DataDir::new(&data),
        dir: temporary,
        quic_port: port,
        config: fast_control_plane_config(port),
    };
    let config = write_config(&deployment, "");

    // No passphrase (and no terminal): refused, clearly.
    let refused = output(&data, &["run", "--config", config.to_str().unwrap()]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("passphrase-protected"),
        "{}",
        text(&refused)
    );
    // A wrong one: refused, clearly.
    let wrong = bagui_cp(&data, &["run", "--config", config.to_str().unwrap()])
        .env("BAGUI_CA_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "{}", text(&wrong));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"),
        "{}",
        text(&wrong)
    );

    // The right one, by environment: runs; by file: token commands sign nothing but load
    // the CA, and work too.
    let mut running = start_process(
        &deployment,
        &config,
        &[("BAGUI_CA_PASSPHRASE", "广西 correct horse")],
    )
    .await;
    assert!(terminate(&mut running.0).success());
    let token = output(
        &data,
        &[
            "--ca-passphrase-file",
            passphrase_file.to_str().unwrap(),
            "token",
            "create",
            "--division",
            VILLAGE,
        ],
    );
    assert!(token.status.success(), "{}", text(&token));
    // The audit log needs no CA at all.
    let verified = output(&data, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", text(&verified));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_the_export_where_it_stopped() {
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let deployment = Deployment::init().unwrap();
    let config = write_config(
        &deployment,
        &format!(
            "[audit]\nsyslog = \"udp://{}\"\n",
            collector.local_addr().unwrap()
        ),
    );
    let mut buffer = vec![0u8; 65_536];
    let mut receive = async || {
        let length = tokio::time::timeout(Duration::from_secs(10), collector.recv(&mut buffer))
            .await
            .expect("a syslog datagram within 10 s")
            .unwrap();
        let message = parse_5424(&buffer[..length]);
        check_header(&message);
        message
    };

    let mut running = start_process(&deployment, &config, &[]).await;
    let client = api(&deployment);
    for index in 0..2 {
        let _: serde_json::Value = client
            .post("/api/v1/tokens", &token_request(index))
            .await
            .unwrap();
    }
    assert_eq!(receive().await.seq, 1);
    assert_eq!(receive().await.seq, 2);
    // A clean stop appends a signed checkpoint (entry 3) that is exported after the restart.
    assert!(terminate(&mut running.0).success());

    let _running = start_process(&deployment, &config, &[]).await;
    let checkpoint = receive().await;
    assert_eq!(
        (checkpoint.seq, checkpoint.msgid.as_str()),
        (3, "audit.checkpoint")
    );
    let client = api(&deployment);
    let _: serde_json::Value = client
        .post("/api/v1/tokens", &token_request(9))
        .await
        .unwrap();
    let next = receive().await;
    assert_eq!((next.seq, next.msgid.as_str()), (4, "token.create"));
}
