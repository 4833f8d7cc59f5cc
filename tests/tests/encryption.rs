//! Reports sealed at rest (ShangMi): what the agent buffers is on disk only as SM4-CCM
//! ciphertext under data keys wrapped with SM2 to the control plane; the agent cannot read it
//! back; the control plane opens it and stores (and projects) the plaintext. A report that
//! does not open is kept as received, counted, and the session goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bagui_agent::outbox::{Cursors, Outbox};
use bagui_agent::status::LinkState;
use bagui_protocol::Lane;
use bagui_protocol::messages::payload::{self, Metrics, Sample};
use bagui_protocol::sealed::{self, Opener, Recipient, RecordContext, SealError};
use bagui_tests::relay::Relay;
use bagui_tests::*;

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

fn containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|file| {
            std::fs::read(file)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|window| window == needle)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_report_is_ciphertext_on_disk_unreadable_by_the_agent_and_arrives_intact() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("sealed");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();
    let relay = Relay::start(control_plane.quic_addr).await.unwrap();
    redirect(&state_dir, &relay.address.to_string()).unwrap();
    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    let outbox = agent.outbox().clone();
    assert!(outbox.encrypts(), "a joined agent seals its outbox");
    wait_until(Duration::from_secs(10), "the host-facts report", || {
        agent.status().last_acked_seq >= 1
    })
    .await
    .unwrap();

    relay.set_up(false);
    wait_until(
        Duration::from_secs(10),
        "the agent to notice the cut",
        || agent.status().link != LinkState::Connected,
    )
    .await
    .unwrap();
    let marker = "bagui_marker_7f3a_xinzhu_township_temperature";
    let now = bagui_agent::join::now_ms();
    let body = payload::encode(&Metrics {
        taken_ms: now,
        samples: vec![Sample {
            name: marker.into(),
            value: 42.5,
            labels: vec![("village".into(), "新竹社区".into())],
        }],
    });
    let seq = outbox
        .push(Lane::Metrics, payload::METRICS, now, &body)
        .unwrap()
        .seq
        .unwrap();

    // The grep test: not in the outbox, not anywhere in the agent's state directory.
    assert!(
        !files_under(&state_dir.outbox_path()).is_empty(),
        "the outbox has files to search"
    );
    assert_eq!(
        containing(state_dir.root(), marker.as_bytes()),
        Vec::<PathBuf>::new(),
        "files holding the report in clear"
    );

    // What the agent can read back is the sealed body, and its own SM2 key does not open it
    // (the data key exists only in the memory of the process that sealed it).
    let pending = outbox
        .next_batch(&mut Cursors::default(), usize::MAX)
        .unwrap()
        .into_iter()
        .find(|pending| pending.seq == seq)
        .expect("the buffered report");
    assert_eq!(pending.record.cipher, sealed::SM4_CCM_SM2);
    assert_eq!(pending.record.body.len(), body.len() + sealed::OVERHEAD);
    assert!(
        !pending
            .record
            .body
            .windows(marker.len())
            .any(|window| window == marker.as_bytes())
    );
    let context = RecordContext {
        lane: Lane::Metrics,
        seq,
        created_ms: now,
        kind: payload::METRICS,
    };
    let agent_key = state_dir.sm2_key().unwrap().expect("the agent's SM2 key");
    assert_eq!(
        Opener::new(&agent_key).open(&pending.record.cipher, &pending.record.body, &context),
        Err(SealError::Unwrap)
    );

    // Reconnected, the control plane stores the plaintext and projects it.
    relay.set_up(true);
    wait_until(
        Duration::from_secs(15),
        "the sealed report to be acknowledged",
        || agent.status().last_acked_seq >= seq,
    )
    .await
    .unwrap();
    let stored = control_plane
        .store
        .reports(&state.agent_id, seq - 1, 1)
        .unwrap();
    let [(stored_seq, report)] = stored.as_slice() else {
        panic!("expected the one report, got {stored:?}");
    };
    assert_eq!(*stored_seq, seq);
    assert_eq!(report.cipher, "", "stored opened");
    assert_eq!(report.body.as_slice(), body.as_slice(), "intact");
    assert_eq!((report.kind.as_str(), report.created_ms), ("metrics", now));
    wait_until(Duration::from_secs(10), "the sample in health", || {
        control_plane
            .admin
            .health(&state.agent_id)
            .is_ok_and(|health| health.samples.iter().any(|sample| sample.name == marker))
    })
    .await
    .unwrap();
    assert_eq!(control_plane.metrics.reports_undecryptable.get(), 0);
    // Every report of this agent arrived sealed and was opened (the host facts too).
    for (_, report) in control_plane
        .store
        .reports(&state.agent_id, 0, 100)
        .unwrap()
    {
        assert_eq!(report.cipher, "");
    }
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_does_not_open_is_kept_as_received_and_counted_and_the_session_goes_on() {
    let deployment = Deployment::init().unwrap();
    let control_plane = deployment.start().await.unwrap();
    let token = create_token(&control_plane, VILLAGE, "terminal", 1).unwrap();
    let state_dir = deployment.state_dir("wrong-key");
    let state = join(&deployment, &state_dir, &token.token, "x")
        .await
        .unwrap();

    // Records in the outbox before the agent starts: one in clear (as written by an agent
    // from before sealing), one sealed to a key that is not the control plane's.
    let stranger = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate().unwrap();
    {
        let outbox = Outbox::open(&state_dir.outbox_path(), 1 << 20).unwrap();
        outbox
            .push(Lane::State, "test", 1, b"plaintext from before")
            .unwrap();
        let outbox = outbox.with_encryption(Recipient::new(stranger.public_key()));
        outbox
            .push(Lane::State, "test", 2, b"sealed to a stranger")
            .unwrap();
    }
    let agent = start_agent(&state_dir, fast_agent_config()).await.unwrap();
    wait_until(Duration::from_secs(10), "the undecryptable report", || {
        control_plane.metrics.reports_undecryptable.get() >= 1
    })
    .await
    .unwrap();
    // The session goes on: a report pushed now arrives, opened.
    let seq = agent
        .outbox()
        .push(Lane::State, "test", 3, b"after")
        .unwrap()
        .seq
        .unwrap();
    wait_until(Duration::from_secs(10), "the later report", || {
        agent.status().last_acked_seq >= seq
    })
    .await
    .unwrap();
    let stored = control_plane
        .store
        .reports(&state.agent_id, 0, 100)
        .unwrap();
    let by_seq = |seq: u64| {
        stored
            .iter()
            .find(|(stored_seq, _)| *stored_seq == seq)
            .map(|(_, report)| report.clone())
            .unwrap_or_else(|| panic!("report {seq} stored"))
    };
    let plain = by_seq(1);
    assert_eq!(
        (plain.cipher.as_str(), plain.body.as_slice()),
        ("", &b"plaintext from before"[..])
    );
    let kept = by_seq(2);
    assert_eq!(kept.cipher, sealed::SM4_CCM_SM2, "stored as received");
    assert_eq!(
        kept.body.len(),
        b"sealed to a stranger".len() + sealed::OVERHEAD
    );
    assert_eq!(
        Opener::new(&stranger).open(
            &kept.cipher,
            &kept.body,
            &RecordContext {
                lane: Lane::State,
                seq: 2,
                created_ms: 2,
                kind: "test"
            }
        ),
        Ok(b"sealed to a stranger".to_vec()),
        "byte for byte"
    );
    let after = by_seq(seq);
    assert_eq!(
        (after.cipher.as_str(), after.body.as_slice()),
        ("", &b"after"[..])
    );
    assert_eq!(control_plane.metrics.reports_undecryptable.get(), 1);
    assert!(
        control_plane.admin.agent(&state.agent_id).unwrap().online,
        "still connected"
    );
    agent.shutdown().await.unwrap();
}
