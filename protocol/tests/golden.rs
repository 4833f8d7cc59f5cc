//! Golden encoded samples of every message, checked in under `tests/golden/`.
//!
//! A sample that stops decoding, or whose encoding changes, breaks interoperability with
//! agents already in the field (one release older or newer must keep working). When a change
//! is deliberate — a new optional field — regenerate with `BAGUI_BLESS=1 cargo test -p
//! bagui-protocol --test golden` and review the diff: old files must still decode.

use std::path::PathBuf;

use bagui_protocol::messages::payload;
use bagui_protocol::*;
use bytes::BytesMut;
use serde::Serialize;
use serde_bytes::ByteBuf;

fn facts() -> MachineFacts {
    MachineFacts {
        machine_id: "3f1c9a0d6b2e4f8899aabbccddeeff00".into(),
        hostname: "xinzhu-cun-01".into(),
        os_id: "kylin".into(),
        os_name: "Kylin Linux Advanced Server V10 (Lance)".into(),
        os_version: "V10".into(),
        kernel: "4.19.90-52.22.v2207.ky10.aarch64".into(),
        arch: "aarch64".into(),
        hardware_fingerprint:
            "sm3:66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0".into(),
    }
}

fn outbox() -> OutboxStats {
    OutboxStats {
        records: 12,
        bytes: 4096,
        dropped: LaneCounts {
            security: 0,
            state: 0,
            inventory: 1,
            metrics: 7,
        },
    }
}

/// One sample of every message kind, in every set.
fn samples() -> Vec<(&'static str, &'static str, BytesMut)> {
    let mut out = Vec::new();
    let mut add = |set: &'static str, kind: &'static str, encode: &dyn Fn(&mut BytesMut)| {
        let mut bytes = BytesMut::new();
        encode(&mut bytes);
        out.push((set, kind, bytes));
    };
    let max = DEFAULT_MAX_FRAME_LEN;
    let join_request = JoinRequest {
        protocol_version: 1,
        agent_version: "0.1.0".into(),
        token: "abcdef.0123456789abcdef".into(),
        division: Some("450103001005".into()),
        instance_id: "".into(),
        csr_der: ByteBuf::from(vec![0x30, 0x82, 0x01, 0x0a]),
        sm2_public_key: ByteBuf::from(vec![0x04; 65]),
        facts: facts(),
        previous: Some(IdentityProof {
            agent_id: "ag-0011223344556677".into(),
            signature: ByteBuf::from(vec![0xab; 64]),
        }),
        sm2_tls_key: None,
    };
    let accepted = JoinAccepted {
        agent_id: "ag-0011223344556677".into(),
        division: "450103001005".into(),
        division_path: "广西壮族自治区/南宁市/青秀区/新竹街道/新竹社区居委会".into(),
        role: Role::Terminal,
        certificate_der: ByteBuf::from(vec![0x30, 0x82, 0x02, 0x00]),
        certificate_issued_ms: 1_795_000_000_000,
        certificate_not_after_ms: 1_797_592_000_000,
        ca_certificate_der: ByteBuf::from(vec![0x30, 0x82, 0x01, 0xf0]),
        control_plane_sm2_public_key: ByteBuf::from(vec![0x04; 65]),
        params: DeploymentParams::default(),
        rejoined: true,
        possible_clone: false,
    };
    let join_messages: Vec<JoinClientMessage> = vec![
        join_request.into(),
        RenewRequest {
            protocol_version: 1,
            agent_version: "0.1.0".into(),
            csr_der: ByteBuf::from(vec![0x30, 0x81]),
            proof: IdentityProof {
                agent_id: "ag-0011223344556677".into(),
                signature: ByteBuf::from(vec![0xcd; 64]),
            },
            sm2_tls_key: None,
        }
        .into(),
    ];
    for message in join_messages {
        let kind = message.kind();
        add("join_client", kind, &|out| {
            message.encode(max, out).unwrap()
        });
    }
    let join_answers: Vec<JoinServerMessage> = vec![
        accepted.into(),
        JoinRejected {
            reason: JoinRefusal::TokenExpired,
            message: "join token abcdef expired at 2026-11-25T10:00:00Z".into(),
        }
        .into(),
        Unsupported {
            kind: "join_request_v2".into(),
        }
        .into(),
    ];
    for message in join_answers {
        let kind = message.kind();
        add("join_server", kind, &|out| {
            message.encode(max, out).unwrap()
        });
    }
    let host_facts = payload::HostFacts {
        facts: facts(),
        cpu_model: "Phytium FT-2000+/64".into(),
        cpu_cores: 64,
        memory_bytes: 128 << 30,
        boot_time_s: 1_795_000_000,
    };
    let agent_messages: Vec<AgentMessage> = vec![
        Hello {
            protocol_version: 1,
            agent_version: "0.1.0".into(),
            agent_id: "ag-0011223344556677".into(),
            next_seq: 1001,
            outbox: outbox(),
        }
        .into(),
        Report {
            seq: 1000,
            lane: Lane::Inventory,
            kind: payload::HOST_FACTS.into(),
            created_ms: 1_795_000_123_456,
            body: ByteBuf::from(payload::encode(&host_facts)),
            cipher: String::new(),
            sealed_seq: 0,
        }
        .into(),
        Heartbeat {
            sent_ms: 1_795_000_123_999,
            outbox: outbox(),
            link: LinkStats {
                rtt_us: 23_500,
                sent_packets: 1200,
                lost_packets: 3,
                congestion_events: 1,
                cwnd_bytes: 14_720,
            },
        }
        .into(),
        RenewCertificate {
            csr_der: ByteBuf::from(vec![0x30, 0x82, 0x01, 0x0b]),
            sm2_tls_key: None,
        }
        .into(),
        CommandResult {
            command_id: 7,
            ok: true,
            message: "snapshot queued".into(),
        }
        .into(),
        Unsupported {
            kind: "cmd.future_thing".into(),
        }
        .into(),
    ];
    for message in agent_messages {
        let kind = message.kind();
        add("agent", kind, &|out| message.encode(max, out).unwrap());
    }
    let server_messages: Vec<ServerMessage> = vec![
        Welcome {
            agent_id: "ag-0011223344556677".into(),
            server_time_ms: 1_795_000_124_000,
            heartbeat_interval_ms: 5000,
            max_in_flight: 256,
            last_stored_seq: 999,
            max_frame_len: 1 << 20,
        }
        .into(),
        Ack::from_seqs(vec![998, 999, 1000, 1003]).into(),
        ComeBackLater {
            after_ms: 12_500,
            reason: "admission paced after restart".into(),
        }
        .into(),
        CertificateRenewed {
            certificate_der: ByteBuf::from(vec![0x30, 0x82, 0x02, 0x01]),
            issued_ms: 1_796_000_000_000,
            not_after_ms: 1_798_592_000_000,
        }
        .into(),
        RenewalRefused {
            message: "certificate renewed less than 60s ago".into(),
        }
        .into(),
        Unsupported {
            kind: "telemetry_v3".into(),
        }
        .into(),
        SendFullSnapshot { command_id: 7 }.into(),
        Reconnect {
            command_id: 8,
            after_ms: 30_000,
        }
        .into(),
        RenewCertificateNow { command_id: 9 }.into(),
        SetHeartbeatInterval {
            command_id: 10,
            interval_ms: 15_000,
        }
        .into(),
        SetProbes {
            command_id: 11,
            probes: vec![PushedProbe {
                name: "county-gateway".into(),
                kind: "tcp".into(),
                target: "10.45.1.1:443".into(),
                interval_ms: 60_000,
                timeout_ms: 5_000,
            }],
        }
        .into(),
    ];
    for message in server_messages {
        let kind = message.kind();
        add("server", kind, &|out| message.encode(max, out).unwrap());
    }
    out
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 && index % 32 == 0 {
            out.push('\n');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out.push('\n');
    out
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    digest::unhex(&digits).expect("golden files are hex")
}

fn file_name(set: &str, kind: &str) -> String {
    format!("{set}.{kind}.hex")
}

fn decode_in_set(set: &str, bytes: &[u8]) -> String {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    decoder.extend(bytes);
    let frame = decoder.next_frame().unwrap().expect("a whole frame");
    decoder.finish().unwrap();
    let decoded = match set {
        "join_client" => format!("{:?}", JoinClientMessage::decode(&frame).unwrap()),
        "join_server" => format!("{:?}", JoinServerMessage::decode(&frame).unwrap()),
        "agent" => format!("{:?}", AgentMessage::decode(&frame).unwrap()),
        _ => format!("{:?}", ServerMessage::decode(&frame).unwrap()),
    };
    assert!(
        decoded.starts_with("Known("),
        "{set} sample did not decode as known: {decoded}"
    );
    decoded
}

#[test]
fn every_kind_has_a_sample() {
    let samples = samples();
    let expected: usize = JoinClientMessage::KINDS.len()
        + JoinServerMessage::KINDS.len()
        + AgentMessage::KINDS.len()
        + ServerMessage::KINDS.len();
    assert_eq!(samples.len(), expected);
    for (set, kind, _) in &samples {
        let kinds = match *set {
            "join_client" => JoinClientMessage::KINDS,
            "join_server" => JoinServerMessage::KINDS,
            "agent" => AgentMessage::KINDS,
            _ => ServerMessage::KINDS,
        };
        assert!(kinds.contains(kind), "{kind} sample in the wrong set");
    }
}

#[test]
fn golden_samples_match_and_decode() {
    let bless = std::env::var_os("BAGUI_BLESS").is_some();
    let dir = golden_dir();
    for (set, kind, bytes) in samples() {
        let path = dir.join(file_name(set, kind));
        if bless {
            std::fs::write(&path, hex(&bytes)).unwrap();
        }
        let stored = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("missing golden sample {}: {error}", path.display()));
        let stored = unhex(&stored);
        // Old samples must keep decoding, whatever the current encoding looks like.
        let from_file = decode_in_set(set, &stored);
        let from_code = decode_in_set(set, &bytes);
        assert_eq!(
            from_file, from_code,
            "{set}.{kind}: stored sample decodes differently"
        );
        assert_eq!(
            &stored[..],
            &bytes[..],
            "{set}.{kind}: encoding changed; if deliberate, rerun with BAGUI_BLESS=1"
        );
    }
}

/// A hello as a hypothetical older agent sends it: fewer fields.
#[derive(Serialize)]
struct OlderHello {
    protocol_version: u32,
    agent_id: String,
}

/// A hello as a hypothetical newer agent sends it: an extra field and an unknown nested key.
#[derive(Serialize)]
struct NewerHello {
    protocol_version: u32,
    agent_version: String,
    agent_id: String,
    next_seq: u64,
    outbox: NewerOutbox,
    capabilities: Vec<String>,
}

#[derive(Serialize)]
struct NewerOutbox {
    records: u64,
    bytes: u64,
    encrypted: bool,
}

fn frame_of<T: Serialize>(kind: &str, body: &T) -> Frame {
    Frame {
        kind: kind.into(),
        body: rmp_serde::to_vec_named(body).unwrap().into(),
    }
}

#[test]
fn missing_fields_are_defaulted() {
    let frame = frame_of(
        "hello",
        &OlderHello {
            protocol_version: 0,
            agent_id: "ag-1".into(),
        },
    );
    let Decoded::Known(AgentMessage::Hello(hello)) = AgentMessage::decode(&frame).unwrap() else {
        panic!("not a hello");
    };
    assert_eq!(hello.agent_id, "ag-1");
    assert_eq!(hello.next_seq, 0);
    assert_eq!(hello.outbox, OutboxStats::default());
}

#[test]
fn unknown_fields_are_ignored() {
    let frame = frame_of(
        "hello",
        &NewerHello {
            protocol_version: 2,
            agent_version: "0.2.0".into(),
            agent_id: "ag-2".into(),
            next_seq: 17,
            outbox: NewerOutbox {
                records: 3,
                bytes: 300,
                encrypted: true,
            },
            capabilities: vec!["sm4-outbox".into()],
        },
    );
    let Decoded::Known(AgentMessage::Hello(hello)) = AgentMessage::decode(&frame).unwrap() else {
        panic!("not a hello");
    };
    assert_eq!(hello.protocol_version, 2);
    assert_eq!(hello.next_seq, 17);
    assert_eq!(hello.outbox.records, 3);
    assert_eq!(hello.outbox.bytes, 300);
}

#[test]
fn unknown_enum_values_fall_back() {
    #[derive(Serialize)]
    struct NewerRejection {
        reason: &'static str,
        message: &'static str,
    }
    let frame = frame_of(
        "join_rejected",
        &NewerRejection {
            reason: "quota_exceeded",
            message: "division quota reached",
        },
    );
    let Decoded::Known(JoinServerMessage::JoinRejected(rejected)) =
        JoinServerMessage::decode(&frame).unwrap()
    else {
        panic!("not a rejection");
    };
    assert_eq!(rejected.reason, JoinRefusal::Other);
    assert_eq!(rejected.message, "division quota reached");

    #[derive(Serialize)]
    struct NewerAccept {
        role: &'static str,
    }
    let frame = frame_of("join_accepted", &NewerAccept { role: "satellite" });
    let Decoded::Known(JoinServerMessage::JoinAccepted(accepted)) =
        JoinServerMessage::decode(&frame).unwrap()
    else {
        panic!("not an acceptance");
    };
    assert_eq!(accepted.role, Role::Unknown);
}

#[test]
fn unknown_kinds_are_reported_not_failed() {
    let frame = frame_of("cmd.reboot", &Unsupported::default());
    assert_eq!(
        ServerMessage::decode(&frame).unwrap(),
        Decoded::Unknown("cmd.reboot".into())
    );
    // A message of the other direction is unknown to this set as well.
    let frame = frame_of("welcome", &Welcome::default());
    assert_eq!(
        AgentMessage::decode(&frame).unwrap(),
        Decoded::Unknown("welcome".into())
    );
}

#[test]
fn payloads_tolerate_skew_too() {
    #[derive(Serialize)]
    struct NewerSample {
        name: &'static str,
        value: f64,
        unit: &'static str,
    }
    #[derive(Serialize)]
    struct NewerMetrics {
        taken_ms: u64,
        samples: Vec<NewerSample>,
    }
    let body = rmp_serde::to_vec_named(&NewerMetrics {
        taken_ms: 5,
        samples: vec![NewerSample {
            name: "load1",
            value: 0.5,
            unit: "",
        }],
    })
    .unwrap();
    let metrics: payload::Metrics = payload::decode(&body).unwrap();
    assert_eq!(metrics.samples[0].name, "load1");
    assert!(metrics.samples[0].labels.is_empty());
}
