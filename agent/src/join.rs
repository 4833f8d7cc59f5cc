//! `bagui-agent join`: enrollment, and renewal of an expired certificate within the grace
//! period. Both run on the `bagui-join/1` ALPN: one request, one answer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bagui_plugins::HostRoot;
use bagui_plugins::host::machine_facts;
use bagui_protocol::proof::{EXPORTER_LABEL, EXPORTER_LEN, ProofPurpose};
use bagui_protocol::{
    CryptoProfile, Decoded, FrameDecoder, IdentityProof, JoinAccepted, JoinClientMessage,
    JoinRefusal, JoinRequest, JoinServerMessage, PROTOCOL_VERSION, RenewRequest, digest,
};
use bytes::BytesMut;
use rustls_pki_types::CertificateDer;
use serde_bytes::ByteBuf;

use crate::identity;
use crate::state::{AgentState, StateDir};
use crate::tls::{self, PinnedCaVerifier};
use crate::wire;

/// The agent's version, sent at join and in every hello.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `join` needs.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// `HOST:PORT` of the control plane.
    pub server: String,
    /// `id.secret`.
    pub token: String,
    /// `sm3:<hex>` of the CA certificate.
    pub ca_hash: String,
    pub state_dir: StateDir,
    pub instance_id: String,
    /// Join a division below the token's own.
    pub division: Option<String>,
    /// Where machine facts are read (`/` except in tests).
    pub host_root: HostRoot,
    /// The deployment's crypto profile (`--crypto-profile`, in the command `token create`
    /// prints).
    pub crypto_profile: CryptoProfile,
}

/// The TLS handshake failed with handshake_failure: no suite or group in common.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {server}: no cipher suite or key-exchange group in common ({error})")]
pub struct HandshakeFailure {
    pub server: String,
    pub error: quinn::ConnectionError,
}

/// The control plane refused.
#[derive(Debug, thiserror::Error)]
#[error("the control plane refused: {message} ({})", reason.as_str())]
pub struct Refused {
    pub reason: JoinRefusal,
    pub message: String,
}

/// Opens a join-ALPN connection, sends what `request` builds from the exporter value, and
/// returns the answer.
async fn exchange(
    server: &str,
    config: quinn::ClientConfig,
    request: impl FnOnce(&[u8]) -> Result<JoinClientMessage>,
) -> Result<JoinServerMessage> {
    let (address, server_name) = wire::resolve(server).await?;
    let endpoint = wire::client_endpoint(address)?;
    let connecting = endpoint
        .connect_with(config, address, &server_name)
        .with_context(|| format!("connecting to {server}"))?;
    let connection = match tokio::time::timeout(Duration::from_secs(15), connecting)
        .await
        .with_context(|| format!("no answer from {server} within 15 s"))?
    {
        Ok(connection) => connection,
        Err(error) if tls::is_handshake_failure(&error) => {
            endpoint.wait_idle().await;
            return Err(HandshakeFailure {
                server: server.to_owned(),
                error,
            }
            .into());
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!("TLS handshake with {server}")));
        }
    };
    let result = async {
        let mut exporter = [0u8; EXPORTER_LEN];
        connection
            .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .map_err(|_| anyhow::anyhow!("TLS exporter unavailable"))?;
        let message = request(&exporter)?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .context("opening the join stream")?;
        let mut buffer = BytesMut::new();
        message.encode(bagui_protocol::DEFAULT_MAX_FRAME_LEN, &mut buffer)?;
        send.write_all(&buffer)
            .await
            .context("sending the join request")?;
        let _ = send.finish();
        let mut decoder = FrameDecoder::new(bagui_protocol::DEFAULT_MAX_FRAME_LEN);
        let frame = tokio::time::timeout(
            Duration::from_secs(30),
            wire::read_frame(&mut recv, &mut decoder),
        )
        .await
        .context("no answer to the join request within 30 s")?
        .context("reading the join answer")?
        .context("the control plane closed the join stream without answering")?;
        match JoinServerMessage::decode(&frame)? {
            Decoded::Known(answer) => Ok(answer),
            Decoded::Unknown(kind) => bail!("unexpected answer {kind:?} to the join request"),
        }
    }
    .await;
    connection.close(0u32.into(), b"");
    endpoint.wait_idle().await;
    result
}

fn transport() -> quinn::TransportConfig {
    tls::client_transport(Duration::from_secs(30), Duration::from_secs(10))
}

fn verify_accepted(accepted: &JoinAccepted, pinned: &str) -> Result<()> {
    let presented = digest::sm3_tagged(&accepted.ca_certificate_der);
    if presented != pinned {
        bail!("the control plane returned a CA ({presented}) other than the pinned one ({pinned})");
    }
    if accepted.agent_id.is_empty() || accepted.certificate_der.is_empty() {
        bail!("the control plane's answer lacks an agent id or certificate");
    }
    Ok(())
}

/// What the agent stores after a successful join or renewal.
fn save(
    state_dir: &StateDir,
    server: &str,
    instance_id: &str,
    accepted: &JoinAccepted,
    key_pem: &str,
    sm2_key: &sm2::SecretKey,
    now_ms: u64,
) -> Result<AgentState> {
    let state = AgentState {
        agent_id: accepted.agent_id.clone(),
        server: server.to_owned(),
        division: accepted.division.clone(),
        division_path: accepted.division_path.clone(),
        role: accepted.role,
        instance_id: instance_id.to_owned(),
        params: accepted.params.clone(),
        certificate_issued_ms: accepted.certificate_issued_ms,
        certificate_not_after_ms: accepted.certificate_not_after_ms,
        ca_fingerprint: digest::sm3_tagged(&accepted.ca_certificate_der),
        control_plane_sm2_public_key: digest::hex(&accepted.control_plane_sm2_public_key),
        joined_ms: now_ms,
        possible_clone: accepted.possible_clone,
        crypto_profile: tls::profile_of(&CertificateDer::from(
            accepted.ca_certificate_der.as_ref(),
        )),
    };
    state_dir.save_sm2_key(sm2_key)?;
    state_dir.save_ca_certificate(&CertificateDer::from(accepted.ca_certificate_der.to_vec()))?;
    state_dir.save_tls_identity(
        key_pem,
        &CertificateDer::from(accepted.certificate_der.to_vec()),
    )?;
    // agent.json last: its presence means "joined", so it must not precede the keys.
    state_dir.save_agent_state(&state)?;
    Ok(state)
}

/// Joins the control plane. On a re-join (the state directory already holds an identity) the
/// agent proves possession of its SM2 key and keeps its agent id.
pub async fn join(options: &JoinOptions) -> Result<AgentState> {
    let pinned = digest::parse_sm3_tagged(&options.ca_hash)
        .map_err(|error| anyhow::anyhow!("--ca-hash: {error}"))?;
    options.state_dir.create()?;
    let previous = if options.state_dir.is_joined() {
        let state = options.state_dir.agent_state()?;
        options
            .state_dir
            .sm2_key()?
            .map(|key| (state.agent_id, key))
    } else {
        None
    };
    let sm2_key = match &previous {
        Some((_, key)) => key.clone(),
        None => options
            .state_dir
            .sm2_key()?
            .map_or_else(identity::generate_sm2_key, Ok)?,
    };
    let facts = machine_facts(&options.host_root);
    let profile = options.crypto_profile;
    let request = identity::certificate_request_for(
        profile,
        if facts.hostname.is_empty() {
            "bagui-agent"
        } else {
            &facts.hostname
        },
    )?;
    let verifier = Arc::new(PinnedCaVerifier::new(
        pinned.clone(),
        tls::provider_for(profile),
    ));
    let observed = verifier.observed.clone();
    let config = tls::join_config(profile, verifier, transport())?;
    let answer = exchange(&options.server, config, |exporter| {
        let previous = match &previous {
            Some((agent_id, key)) => Some(IdentityProof {
                agent_id: agent_id.clone(),
                signature: ByteBuf::from(identity::sign_proof(
                    key,
                    ProofPurpose::Rejoin,
                    agent_id,
                    exporter,
                )?),
            }),
            None => None,
        };
        Ok(JoinRequest {
            protocol_version: PROTOCOL_VERSION,
            agent_version: AGENT_VERSION.to_owned(),
            token: options.token.clone(),
            division: options.division.clone(),
            instance_id: options.instance_id.clone(),
            csr_der: ByteBuf::from(request.csr_der.clone()),
            sm2_public_key: ByteBuf::from(identity::sm2_public_key(&sm2_key)),
            facts: facts.clone(),
            previous,
            sm2_tls_key: request.sm2_key_request(exporter)?,
        }
        .into())
    })
    .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) if error.downcast_ref::<HandshakeFailure>().is_some() => {
            return Err(profile_mismatch(&options.server, &pinned, profile, error).await);
        }
        Err(error) => {
            let observed = observed.lock().ok().and_then(|observed| observed.clone());
            return Err(match observed {
                Some(found) if found != pinned => anyhow::anyhow!(
                    "refusing the control plane at {}: its CA is {found}, but --ca-hash pins {pinned}",
                    options.server
                ),
                _ => error,
            });
        }
    };
    let accepted = match answer {
        JoinServerMessage::JoinAccepted(accepted) => accepted,
        JoinServerMessage::JoinRejected(rejected) => {
            return Err(Refused {
                reason: rejected.reason,
                message: rejected.message,
            }
            .into());
        }
        JoinServerMessage::Unsupported(unsupported) => {
            bail!(
                "the control plane does not support {:?}; upgrade it",
                unsupported.kind
            )
        }
    };
    verify_accepted(&accepted, &pinned)?;
    // A different agent id means a different sequence space: reports buffered for the old
    // identity cannot be sent under the new one.
    if let Some((old_id, _)) = &previous
        && *old_id != accepted.agent_id
    {
        let outbox = options.state_dir.outbox_path();
        if outbox.exists() {
            std::fs::remove_dir_all(&outbox)
                .with_context(|| format!("clearing {}", outbox.display()))?;
        }
    }
    save(
        &options.state_dir,
        &options.server,
        &options.instance_id,
        &accepted,
        &request.key_pem,
        &sm2_key,
        now_ms(),
    )
}

/// Renews an expired certificate by proving the SM2 key (no token needed within the grace period).
pub async fn renew_expired(state_dir: &StateDir) -> Result<AgentState> {
    let state = state_dir.agent_state()?;
    let sm2_key = state_dir
        .sm2_key()?
        .context("no SM2 key in the state directory; join again with a token")?;
    let ca = state_dir.ca_certificate()?;
    let request = identity::certificate_request_for(tls::profile_of(&ca), &state.agent_id)?;
    let config = tls::renew_config(&ca, transport())?;
    let answer = exchange(&state.server, config, |exporter| {
        Ok(RenewRequest {
            protocol_version: PROTOCOL_VERSION,
            agent_version: AGENT_VERSION.to_owned(),
            csr_der: ByteBuf::from(request.csr_der.clone()),
            proof: IdentityProof {
                agent_id: state.agent_id.clone(),
                signature: ByteBuf::from(identity::sign_proof(
                    &sm2_key,
                    ProofPurpose::Renew,
                    &state.agent_id,
                    exporter,
                )?),
            },
            sm2_tls_key: request.sm2_key_request(exporter)?,
        }
        .into())
    })
    .await?;
    match answer {
        JoinServerMessage::JoinAccepted(accepted) => {
            verify_accepted(&accepted, &state.ca_fingerprint)?;
            if accepted.agent_id != state.agent_id {
                bail!(
                    "renewal answered for agent {} instead of {}",
                    accepted.agent_id,
                    state.agent_id
                );
            }
            save(
                state_dir,
                &state.server,
                &state.instance_id,
                &accepted,
                &request.key_pem,
                &sm2_key,
                state.joined_ms,
            )
        }
        JoinServerMessage::JoinRejected(rejected) => Err(Refused {
            reason: rejected.reason,
            message: rejected.message,
        }
        .into()),
        JoinServerMessage::Unsupported(unsupported) => {
            bail!(
                "the control plane does not support {:?}; upgrade it",
                unsupported.kind
            )
        }
    }
}

/// Explains a join whose handshake failed for want of a common suite or group. Only two
/// profiles exist, so the agent tries a handshake on the other one (nothing is sent on it; the
/// pinned CA is checked as for a join): if that succeeds the control plane certainly uses the
/// other profile, and the message says so.
async fn profile_mismatch(
    server: &str,
    pinned: &str,
    ours: CryptoProfile,
    error: anyhow::Error,
) -> anyhow::Error {
    let other = ours.other();
    let probe = async {
        let verifier = Arc::new(PinnedCaVerifier::new(
            pinned.to_owned(),
            tls::provider_for(other),
        ));
        let config = tls::join_config(other, verifier, transport())?;
        let (address, server_name) = wire::resolve(server).await?;
        let endpoint = wire::client_endpoint(address)?;
        let connecting = endpoint.connect_with(config, address, &server_name)?;
        let connected = tokio::time::timeout(Duration::from_secs(10), connecting).await;
        let confirmed = matches!(connected, Ok(Ok(_)));
        if let Ok(Ok(connection)) = connected {
            connection.close(0u32.into(), b"crypto profile probe");
        }
        endpoint.wait_idle().await;
        anyhow::Ok(confirmed)
    };
    match probe.await {
        Ok(true) => anyhow::anyhow!(
            "the control plane at {server} uses the {other} crypto profile; this agent was set \
             up for {ours}: run join with --crypto-profile {other}, as in the command \
             `bagui-cp token create` prints"
        ),
        _ => error.context(format!(
            "the control plane at {server} accepts none of the {ours} crypto profile's TLS \
             suites and key-exchange groups ({} / {}); it probably uses the {other} profile",
            ours.tls_suite(),
            ours.kx_group()
        )),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
