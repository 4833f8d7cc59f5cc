//! Hostile and malformed input on the QUIC side: each bad stream is closed with a typed code,
//! and the control plane keeps serving the agents that behave.

use std::time::Duration;

use bagui_agent::status::LinkState;
use bagui_control_plane::server::ControlPlane;
use bagui_protocol::{
    AgentMessage, DEFAULT_MAX_FRAME_LEN, Decoded, ErrorCode, FrameDecoder, Hello, Report,
    ServerMessage,
};
use bagui_tests::*;
use bytes::BytesMut;

struct Fixture {
    deployment: Deployment,
    control_plane: ControlPlane,
    /// An enrolled identity used by the hostile client.
    hostile: bagui_agent::state::StateDir,
    hostile_id: String,
    /// A well-behaved agent that must keep working throughout.
    good: bagui_agent::Agent,
}

async fn fixture() -> Fixture {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 2).unwrap();
    let hostile = deployment.state_dir("hostile");
    let hostile_id = join(&deployment, &hostile, &token.token, "hostile")
        .await
        .unwrap()
        .agent_id;
    let good_dir = deployment.state_dir("good");
    join(&deployment, &good_dir, &token.token, "good")
        .await
        .unwrap();
    let good = start_agent(&good_dir, fast_agent_config()).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "the good agent's first report",
        || good.status().last_acked_seq >= 1,
    )
    .await
    .unwrap();
    Fixture {
        deployment,
        control_plane,
        hostile,
        hostile_id,
        good,
    }
}

fn frame(message: AgentMessage) -> BytesMut {
    let mut out = BytesMut::new();
    message.encode(DEFAULT_MAX_FRAME_LEN, &mut out).unwrap();
    out
}

fn hello(agent_id: &str) -> BytesMut {
    frame(
        Hello {
            protocol_version: 1,
            agent_id: agent_id.into(),
            next_seq: 1,
            ..Default::default()
        }
        .into(),
    )
}

/// Opens a session stream as the hostile identity, sends `bytes` (then finishes the stream if
/// asked), and returns the code the control plane closed the connection with.
async fn send_raw(fixture: &Fixture, bytes: &[u8], finish: bool) -> Option<ErrorCode> {
    let endpoint = quic::endpoint();
    let connection = quic::connect_as(&endpoint, fixture.control_plane.quic_addr, &fixture.hostile)
        .await
        .unwrap();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    if finish {
        let _ = send.finish();
    }
    quic::close_code(&connection).await
}

/// The good agent still gets reports acknowledged.
async fn good_agent_still_served(fixture: &Fixture) {
    let before = fixture.good.status().last_acked_seq;
    fixture
        .good
        .outbox()
        .push(bagui_protocol::Lane::Metrics, "test", 0, b"still here")
        .unwrap();
    wait_until(Duration::from_secs(10), "the good agent's next ack", || {
        fixture.good.status().last_acked_seq > before
    })
    .await
    .unwrap();
    assert_eq!(fixture.good.status().link, LinkState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_truncated_frames_close_only_that_connection() {
    let fixture = fixture().await;

    // Garbage where a frame should be.
    let code = send_raw(&fixture, b"\x00\x00\x00\x05\x00GET /", false).await;
    assert_eq!(code, Some(ErrorCode::Protocol));
    // A length prefix beyond the maximum (1 MiB): refused before buffering.
    let code = send_raw(&fixture, &(64u32 << 20).to_be_bytes(), false).await;
    assert_eq!(code, Some(ErrorCode::FrameTooLarge));
    // A known kind whose body is not MessagePack.
    let mut bad_body = BytesMut::new();
    bagui_protocol::codec::encode_frame(
        "hello",
        b"\xc1\xc1\xc1",
        DEFAULT_MAX_FRAME_LEN,
        &mut bad_body,
    )
    .unwrap();
    assert_eq!(
        send_raw(&fixture, &bad_body, false).await,
        Some(ErrorCode::Protocol)
    );
    // A frame cut short by the end of the stream.
    let whole = hello(&fixture.hostile_id);
    assert_eq!(
        send_raw(&fixture, &whole[..whole.len() - 4], true).await,
        Some(ErrorCode::Protocol)
    );
    // Hello naming someone else.
    assert_eq!(
        send_raw(&fixture, &hello("ag-0000000000000000"), false).await,
        Some(ErrorCode::Unauthenticated)
    );
    // Hello from a protocol revision too far apart, or without one: refused as such.
    for version in [0, bagui_protocol::PROTOCOL_VERSION + 2, u32::MAX] {
        let far = frame(
            Hello {
                protocol_version: version,
                agent_id: fixture.hostile_id.clone(),
                next_seq: 1,
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(
            send_raw(&fixture, &far, false).await,
            Some(ErrorCode::UnsupportedVersion),
            "protocol version {version}"
        );
    }
    // One revision ahead is still served (skew tolerance): the session stays up.
    let near = frame(
        Hello {
            protocol_version: bagui_protocol::PROTOCOL_VERSION + 1,
            agent_id: fixture.hostile_id.clone(),
            next_seq: 1,
            ..Default::default()
        }
        .into(),
    );
    {
        let endpoint = quic::endpoint();
        let connection =
            quic::connect_as(&endpoint, fixture.control_plane.quic_addr, &fixture.hostile)
                .await
                .unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(&near).await.unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut buffer = vec![0u8; 4096];
        let welcomed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let Ok(Some(read)) = recv.read(&mut buffer).await else {
                    return false;
                };
                decoder.extend(&buffer[..read]);
                if let Ok(Some(frame)) = decoder.next_frame() {
                    return matches!(
                        ServerMessage::decode(&frame),
                        Ok(Decoded::Known(ServerMessage::Welcome(_)))
                    );
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(welcomed, "a peer one revision ahead gets a welcome");
        connection.close(0u32.into(), b"done");
    }
    // A report before any hello.
    let report = frame(
        Report {
            seq: 1,
            ..Default::default()
        }
        .into(),
    );
    assert_eq!(
        send_raw(&fixture, &report, false).await,
        Some(ErrorCode::Protocol)
    );
    // After a valid hello: sequence number 0, then a second hello.
    let mut zero = hello(&fixture.hostile_id);
    zero.extend_from_slice(&frame(
        Report {
            seq: 0,
            ..Default::default()
        }
        .into(),
    ));
    assert_eq!(
        send_raw(&fixture, &zero, false).await,
        Some(ErrorCode::Protocol)
    );
    let mut twice = hello(&fixture.hostile_id);
    twice.extend_from_slice(&hello(&fixture.hostile_id));
    assert_eq!(
        send_raw(&fixture, &twice, false).await,
        Some(ErrorCode::Protocol)
    );

    good_agent_still_served(&fixture).await;
    // Nothing the hostile client sent was stored.
    assert!(
        fixture
            .control_plane
            .admin
            .reports(&fixture.hostile_id, 0, 10)
            .unwrap()
            .is_empty()
    );
    fixture.good.shutdown().await.unwrap();
    fixture.control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_are_answered_unsupported_and_the_session_goes_on() {
    let fixture = fixture().await;
    let endpoint = quic::endpoint();
    let connection = quic::connect_as(&endpoint, fixture.control_plane.quic_addr, &fixture.hostile)
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let mut bytes = hello(&fixture.hostile_id);
    bagui_protocol::codec::encode_frame("telemetry_v9", b"\x80", DEFAULT_MAX_FRAME_LEN, &mut bytes)
        .unwrap();
    bytes.extend_from_slice(&frame(
        Report {
            seq: 1,
            kind: "test".into(),
            ..Default::default()
        }
        .into(),
    ));
    send.write_all(&bytes).await.unwrap();

    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = tokio::time::timeout(
            Duration::from_secs(5),
            bagui_agent::wire::read_frame(&mut recv, &mut decoder),
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
        match ServerMessage::decode(&frame).unwrap() {
            Decoded::Known(ServerMessage::Welcome(_)) => seen.push("welcome".to_owned()),
            Decoded::Known(ServerMessage::Unsupported(unsupported)) => {
                seen.push(format!("unsupported:{}", unsupported.kind))
            }
            Decoded::Known(ServerMessage::Ack(ack)) => {
                seen.push(format!("ack:{:?}", ack.seqs(10).unwrap()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["welcome", "unsupported:telemetry_v9", "ack:[1]"]);
    assert_eq!(
        fixture
            .control_plane
            .admin
            .reports(&fixture.hostile_id, 0, 10)
            .unwrap()
            .len(),
        1
    );
    connection.close(0u32.into(), b"");
    fixture.good.shutdown().await.unwrap();
    fixture.control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_report_is_acknowledged_but_stored_once() {
    let fixture = fixture().await;
    for _ in 0..2 {
        let endpoint = quic::endpoint();
        let connection =
            quic::connect_as(&endpoint, fixture.control_plane.quic_addr, &fixture.hostile)
                .await
                .unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        let mut bytes = hello(&fixture.hostile_id);
        bytes.extend_from_slice(&frame(
            Report {
                seq: 7,
                kind: "test".into(),
                body: serde_bytes::ByteBuf::from(b"once".to_vec()),
                ..Default::default()
            }
            .into(),
        ));
        send.write_all(&bytes).await.unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        loop {
            let frame = bagui_agent::wire::read_frame(&mut recv, &mut decoder)
                .await
                .unwrap()
                .unwrap();
            if let Decoded::Known(ServerMessage::Ack(ack)) = ServerMessage::decode(&frame).unwrap()
            {
                assert_eq!(ack.seqs(10).unwrap(), [7]);
                break;
            }
        }
        connection.close(0u32.into(), b"");
    }
    let stored = fixture
        .control_plane
        .admin
        .reports(&fixture.hostile_id, 0, 10)
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        fixture
            .control_plane
            .metrics
            .render()
            .contains("bagui_reports_duplicate_total 1")
    );
    fixture.good.shutdown().await.unwrap();
    fixture.control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_join_alpn_is_closed_and_changes_nothing() {
    let fixture = fixture().await;
    let ca = fixture.deployment.data_dir.ca().unwrap().cert_der().clone();
    let endpoint = quic::endpoint();
    for bytes in [
        &b"\xff\xff\xff\xff"[..],
        &b"\x00\x00\x00\x10\x0cjoin_request\xc1\xc1\xc1"[..],
    ] {
        let connection = quic::connect_without_certificate(
            &endpoint,
            fixture.control_plane.quic_addr,
            &ca,
            bagui_protocol::ALPN_JOIN,
        )
        .await
        .unwrap();
        let (mut send, _recv) = connection.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        let code = quic::close_code(&connection).await;
        assert!(
            matches!(code, Some(ErrorCode::Protocol | ErrorCode::FrameTooLarge)),
            "{code:?}"
        );
    }
    assert_eq!(fixture.control_plane.admin.agents(None).unwrap().len(), 2);
    good_agent_still_served(&fixture).await;
    fixture.good.shutdown().await.unwrap();
    fixture.control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_streams_and_stream_floods_get_nowhere() {
    let fixture = fixture().await;
    let endpoint = quic::endpoint();
    let connection = quic::connect_as(&endpoint, fixture.control_plane.quic_addr, &fixture.hostile)
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&hello(&fixture.hostile_id)).await.unwrap();
    // A second stream is allowed by the transport (limit 2) but never read: writing into it
    // stops at its flow-control window instead of growing the control plane's memory.
    // (Waits stay under the session's 2.5 s silence limit, with a heartbeat in between.)
    let (mut flood, _) = connection.open_bi().await.unwrap();
    let blocked = tokio::time::timeout(
        Duration::from_millis(1200),
        flood.write_all(&vec![0u8; 4 << 20]),
    )
    .await;
    assert!(
        blocked.is_err(),
        "4 MiB into an unread stream must block on flow control"
    );
    send.write_all(&frame(bagui_protocol::Heartbeat::default().into()))
        .await
        .unwrap();
    // A third concurrent stream is not granted at all; thousands more get nowhere either.
    let third = tokio::time::timeout(Duration::from_millis(300), connection.open_bi()).await;
    assert!(third.is_err(), "the third stream must not be granted");
    let uni = tokio::time::timeout(Duration::from_millis(300), connection.open_uni()).await;
    assert!(uni.is_err(), "no unidirectional streams at all");
    assert!(
        connection.close_reason().is_none(),
        "the session itself is still open"
    );
    // The session itself still works, and so does everyone else.
    send.write_all(&frame(
        Report {
            seq: 1,
            kind: "test".into(),
            ..Default::default()
        }
        .into(),
    ))
    .await
    .unwrap();
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    loop {
        let frame = tokio::time::timeout(
            Duration::from_secs(5),
            bagui_agent::wire::read_frame(&mut recv, &mut decoder),
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
        if let Decoded::Known(ServerMessage::Ack(ack)) = ServerMessage::decode(&frame).unwrap() {
            assert_eq!(ack.seqs(10).unwrap(), [1]);
            break;
        }
    }
    good_agent_still_served(&fixture).await;
    connection.close(0u32.into(), b"");
    fixture.good.shutdown().await.unwrap();
    fixture.control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_certificate_is_refused_in_the_handshake() {
    let mut deployment = Deployment::init().unwrap();
    deployment.config.enroll.cert_lifetime = Duration::from_secs(1);
    deployment.config.enroll.backdate = Duration::ZERO;
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "server", 1).unwrap();
    let state_dir = deployment.state_dir("expired");
    join(&deployment, &state_dir, &token.token, "expired")
        .await
        .unwrap();
    // X.509 validity has whole seconds: wait until the expiry second has surely passed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let endpoint = quic::endpoint();
    match quic::connect_as(&endpoint, control_plane.quic_addr, &state_dir).await {
        Err(error) => assert!(format!("{error:#}").contains("certificate"), "{error:#}"),
        Ok(connection) => {
            let error = tokio::time::timeout(Duration::from_secs(5), connection.closed())
                .await
                .unwrap();
            assert!(
                format!("{error}").to_lowercase().contains("certificate"),
                "{error}"
            );
        }
    }
    assert!(control_plane.sessions.is_empty());
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_guessing_is_rate_limited_and_audited() {
    let mut deployment = Deployment::init().unwrap();
    deployment.config.enroll.join_rate_per_second = 1.0;
    deployment.config.enroll.join_burst = 5.0;
    let control_plane = deployment.start().await.unwrap();
    let mut rate_limited = 0;
    let mut invalid = 0;
    let started = std::time::Instant::now();
    for attempt in 0..40 {
        let guess = format!("{:06x}.{:016x}", attempt, rand::random::<u64>());
        let state_dir = deployment.state_dir(&format!("guess-{attempt}"));
        let error = join(&deployment, &state_dir, &guess, "guess")
            .await
            .unwrap_err();
        match error
            .downcast_ref::<bagui_agent::join::Refused>()
            .map(|refused| refused.reason)
        {
            Some(bagui_protocol::JoinRefusal::RateLimited) => rate_limited += 1,
            Some(bagui_protocol::JoinRefusal::InvalidToken) => invalid += 1,
            other => panic!("unexpected {other:?}: {error:#}"),
        }
    }
    // At most the burst plus one per elapsed second were checked; the rest were turned away
    // before any signature check.
    let allowed = 5 + started.elapsed().as_secs() as usize + 1;
    assert!(invalid >= 5, "the burst is served: {invalid}");
    assert!(
        invalid <= allowed,
        "{invalid} checked, at most {allowed} allowed"
    );
    assert_eq!(rate_limited + invalid, 40);
    let audited = control_plane
        .admin
        .audit_entries(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|entry| entry.action == "agent.join.refused")
        .count();
    assert_eq!(
        audited, invalid,
        "every checked guess is on the audit record"
    );
    assert!(control_plane.metrics.render().contains(&format!(
        "bagui_joins_total{{result=\"rate_limited\"}} {rate_limited}"
    )));
    assert!(control_plane.admin.agents(None).unwrap().is_empty());
    control_plane.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_used_from_two_hosts_is_flagged_audited_and_raised_once() {
    let fixture = fixture().await;
    // Two "machines" with the same identity, taking turns (127.0.0.1 and 127.0.0.2).
    let hosts = [
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap(),
        quinn::Endpoint::client("127.0.0.2:0".parse().unwrap()).unwrap(),
    ];
    let mut sessions = Vec::new();
    for turn in 0..5 {
        let endpoint = &hosts[turn % 2];
        let connection =
            quic::connect_as(endpoint, fixture.control_plane.quic_addr, &fixture.hostile)
                .await
                .unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(&hello(&fixture.hostile_id)).await.unwrap();
        // Wait for the welcome: the session is registered.
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut buffer = [0u8; 4096];
        let welcomed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let Some(read) = recv.read(&mut buffer).await.unwrap() else {
                    return false;
                };
                decoder.extend(&buffer[..read]);
                if let Some(frame) = decoder.next_frame().unwrap() {
                    return matches!(
                        ServerMessage::decode(&frame),
                        Ok(Decoded::Known(ServerMessage::Welcome(_)))
                    );
                }
            }
        })
        .await
        .unwrap();
        assert!(welcomed, "turn {turn}");
        sessions.push((connection, send, recv));
    }
    let agent = fixture
        .control_plane
        .admin
        .agent(&fixture.hostile_id)
        .unwrap();
    assert!(agent.possible_clone, "{agent:?}");
    let audit = fixture
        .control_plane
        .admin
        .audit_entries(0, 10_000)
        .unwrap();
    let reports: Vec<_> = audit
        .iter()
        .filter(|entry| entry.action == "agent.clone_suspected")
        .collect();
    assert_eq!(reports.len(), 1, "one report per episode");
    assert!(reports[0].detail.contains("127.0.0.1") && reports[0].detail.contains("127.0.0.2"));
    // The incident engine has it as an open security finding.
    wait_until(Duration::from_secs(5), "the clone incident", || {
        fixture
            .control_plane
            .admin
            .incidents()
            .unwrap()
            .iter()
            .any(|incident| incident.fingerprint == format!("finding:clone:{}", fixture.hostile_id))
    })
    .await
    .unwrap();
    good_agent_still_served(&fixture).await;
}
