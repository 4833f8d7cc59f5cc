//! The link to the control plane: connect with mutual TLS, drain the outbox, heartbeat, renew
//! the certificate, obey commands, and reconnect with exponential backoff and full jitter —
//! or when the control plane says to come back.
//!
//! Only this module (with `join` and `wire`) knows quinn. Delivery: records are flushed to disk
//! before they are sent, at most `max_in_flight` are unacknowledged at a time, and a record
//! leaves the outbox only when the control plane acknowledges it (after its durable commit).
//! After a reconnect everything unacknowledged is sent again; the control plane de-duplicates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bagui_protocol::units::format_rfc3339;
use bagui_protocol::{
    AgentMessage, CommandResult, Decoded, ErrorCode, FrameDecoder, Heartbeat, Hello, JoinRefusal,
    LinkStats, PROTOCOL_VERSION, RenewCertificate, Report, ServerMessage, Unsupported,
};
use bytes::BytesMut;
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, watch};

use crate::config::LinkSection;
use crate::identity::{self, CertificateRequest};
use crate::join::{self, AGENT_VERSION, Refused, now_ms};
use crate::outbox::{Cursors, Outbox};
use crate::state::{AgentState, StateDir};
use crate::status::{LinkState, StatusBoard};
use crate::tls;
use crate::wire::{self, ReadError};

/// Why the link stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkExit {
    /// The agent is shutting down.
    Shutdown,
    /// The control plane revoked this agent (or no longer accepts its certificate).
    Revoked(String),
    /// The identity can no longer be renewed; an operator must run `join` again.
    RejoinRequired(String),
}

enum Outcome {
    Shutdown,
    Permanent(LinkExit),
    /// Come back after this long (admission control, a reconnect command, a restart).
    ComeBack(Duration),
    /// The control plane does not accept this certificate (restored from an older backup, or
    /// expired by its clock): renew by proving the SM2 key before giving up.
    Unrecognized(String),
    Failed {
        error: String,
        /// The session had been healthy for a while: start the backoff afresh.
        healthy: bool,
    },
}

/// A session counts as healthy — and resets the reconnect backoff — only after this long, so
/// a control plane that accepts and then keeps failing sessions is not hammered once a second.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// TLS alerts with which a peer rejects our certificate (RFC 8446 §6.2), as QUIC crypto errors.
const CERTIFICATE_ALERTS: [u8; 4] = [42, 44, 45, 46];

fn failed(error: impl std::fmt::Display, healthy: bool) -> Outcome {
    Outcome::Failed {
        error: error.to_string(),
        healthy,
    }
}

/// Full jitter: a random delay up to `min(max, base * 2^attempt)`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let bound = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    bound.mul_f64(rand::random::<f64>())
}

/// Maps a close by the control plane to what the link does next.
fn outcome_of_close(
    error: &quinn::ConnectionError,
    come_back: Option<Duration>,
    healthy: bool,
) -> Outcome {
    if let quinn::ConnectionError::ConnectionClosed(close) = error {
        let code = u64::from(close.error_code);
        if (0x100..0x200).contains(&code) && CERTIFICATE_ALERTS.contains(&((code - 0x100) as u8)) {
            return Outcome::Unrecognized(format!(
                "the control plane rejected our certificate: {error}"
            ));
        }
    }
    match wire::close_code(error) {
        Some((ErrorCode::Revoked, reason)) => Outcome::Permanent(LinkExit::Revoked(format!(
            "{}: {reason}",
            ErrorCode::Revoked
        ))),
        Some((ErrorCode::Unauthenticated, reason)) => {
            Outcome::Unrecognized(format!("{}: {reason}", ErrorCode::Unauthenticated))
        }
        Some((ErrorCode::Busy | ErrorCode::ShuttingDown, _)) if come_back.is_some() => {
            Outcome::ComeBack(come_back.unwrap_or_default())
        }
        Some((code, reason)) => failed(
            format!("closed by the control plane: {code}: {reason}"),
            healthy,
        ),
        None => failed(error, healthy),
    }
}

/// The link task.
pub struct Link {
    pub state_dir: StateDir,
    pub config: LinkSection,
    pub outbox: Arc<Outbox>,
    pub status: StatusBoard,
    pub snapshots: mpsc::Sender<()>,
    /// Probes pushed by the control plane (`cmd.set_probes`).
    pub probes: Arc<crate::probes::PushedProbes>,
    pub shutdown: watch::Receiver<bool>,
    /// Renew by proof of key before the next connection (see [`Outcome::Unrecognized`]).
    pub force_renewal: bool,
}

impl Link {
    /// Runs until shutdown or a permanent refusal.
    pub async fn run(mut self) -> LinkExit {
        let mut attempt = 0u32;
        let mut endpoint: Option<quinn::Endpoint> = None;
        loop {
            if *self.shutdown.borrow() {
                return LinkExit::Shutdown;
            }
            let outcome = self.attempt(&mut endpoint).await;
            let delay = match outcome {
                Outcome::Shutdown => return LinkExit::Shutdown,
                Outcome::Permanent(exit) => {
                    let message = match &exit {
                        LinkExit::Revoked(reason) | LinkExit::RejoinRequired(reason) => {
                            reason.clone()
                        }
                        LinkExit::Shutdown => String::new(),
                    };
                    tracing::error!(%message, "the control plane refuses this agent; not reconnecting");
                    self.status.update(|s| {
                        s.link = LinkState::Revoked;
                        s.last_error = Some(message);
                        s.connected_since = None;
                    });
                    return exit;
                }
                Outcome::ComeBack(after) => {
                    attempt = 0;
                    // Obeyed up to our own ceiling; plus a little jitter of our own, so agents
                    // told the same time do not collide.
                    after.min(self.config.backoff_max)
                        + Duration::from_millis(100).mul_f64(rand::random::<f64>())
                }
                Outcome::Unrecognized(reason) if !self.force_renewal => {
                    tracing::warn!(%reason, "renewing the certificate by proof of key before retrying");
                    self.force_renewal = true;
                    backoff(attempt, self.config.backoff_min, self.config.backoff_max)
                }
                Outcome::Unrecognized(reason) => {
                    // Even a fresh certificate is refused: nothing more the agent can do alone.
                    let message =
                        format!("the control plane does not recognise this agent: {reason}");
                    tracing::error!(%message, "not reconnecting");
                    self.status.update(|s| {
                        s.link = LinkState::Revoked;
                        s.last_error = Some(message.clone());
                        s.connected_since = None;
                    });
                    return LinkExit::RejoinRequired(message);
                }
                Outcome::Failed { error, healthy } => {
                    if healthy {
                        attempt = 0;
                    }
                    let delay = backoff(attempt, self.config.backoff_min, self.config.backoff_max);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(%error, retry_in = ?delay, "link down");
                    self.status.update(|s| s.last_error = Some(error));
                    delay
                }
            };
            self.status.update(|s| {
                s.link = LinkState::Down;
                s.connected_since = None;
                s.rtt_ms = None;
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = crate::stopped(&mut self.shutdown) => return LinkExit::Shutdown,
            }
        }
    }

    async fn attempt(&mut self, endpoint: &mut Option<quinn::Endpoint>) -> Outcome {
        let mut state = match self.state_dir.agent_state() {
            Ok(state) => state,
            Err(error) => {
                return Outcome::Permanent(LinkExit::RejoinRequired(format!("{error:#}")));
            }
        };
        if self.force_renewal || now_ms() >= state.certificate_not_after_ms {
            tracing::info!(agent = %state.agent_id, "renewing the certificate by proof of key");
            match join::renew_expired(&self.state_dir).await {
                Ok(renewed) => state = renewed,
                Err(error) => {
                    if let Some(refused) = error.downcast_ref::<Refused>()
                        && matches!(
                            refused.reason,
                            JoinRefusal::GracePeriodOver
                                | JoinRefusal::AgentRevoked
                                | JoinRefusal::BadIdentityProof
                        )
                    {
                        return Outcome::Permanent(LinkExit::RejoinRequired(refused.to_string()));
                    }
                    return failed(
                        format!("renewing the expired certificate: {error:#}"),
                        false,
                    );
                }
            }
        }
        let identity = match self.state_dir.tls_identity() {
            Ok(identity) => identity,
            Err(error) => {
                return Outcome::Permanent(LinkExit::RejoinRequired(format!("{error:#}")));
            }
        };
        let ca = match self.state_dir.ca_certificate() {
            Ok(ca) => ca,
            Err(error) => {
                return Outcome::Permanent(LinkExit::RejoinRequired(format!("{error:#}")));
            }
        };
        self.status.update(|s| {
            s.agent_id = state.agent_id.clone();
            s.server = state.server.clone();
            s.division = state.division.clone();
            s.division_path = state.division_path.clone();
            s.role = state.role.to_string();
            s.link = LinkState::Connecting;
            // The profile's only suite and group: what any successful handshake negotiated.
            let profile = tls::profile_of(&ca);
            s.tls_suite = profile.tls_suite().into();
            s.kx_group = profile.kx_group().into();
            s.certificate_expires = format_rfc3339(state.certificate_not_after_ms);
        });
        let (address, server_name) = match wire::resolve(&state.server).await {
            Ok(resolved) => resolved,
            Err(error) => return failed(format!("{error:#}"), false),
        };
        if endpoint
            .as_ref()
            .is_none_or(|e| e.local_addr().map(|a| a.is_ipv6()).ok() != Some(address.is_ipv6()))
        {
            match wire::client_endpoint(address) {
                Ok(new) => *endpoint = Some(new),
                Err(error) => return failed(format!("{error:#}"), false),
            }
        }
        let Some(endpoint) = endpoint.as_ref() else {
            return failed("no endpoint", false);
        };
        let config = match tls::session_config(
            &ca,
            identity.certificate,
            identity.key,
            tls::client_transport(self.config.idle_timeout, self.config.keep_alive),
        ) {
            Ok(config) => config,
            Err(error) => {
                return Outcome::Permanent(LinkExit::RejoinRequired(format!("{error:#}")));
            }
        };
        let connecting = match endpoint.connect_with(config, address, &server_name) {
            Ok(connecting) => connecting,
            Err(error) => return failed(error, false),
        };
        let connection = tokio::select! {
            result = tokio::time::timeout(self.config.connect_timeout, connecting) => match result {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) if tls::is_handshake_failure(&error) => {
                    let profile = tls::profile_of(&ca);
                    return failed(format!(
                        "the control plane at {} accepts none of this agent's {profile} crypto \
                         profile's TLS suites and key-exchange groups ({} / {}); it probably uses \
                         the {} profile: join again with the command `bagui-cp token create` \
                         prints ({error})",
                        state.server, profile.tls_suite(), profile.kx_group(), profile.other()
                    ), false);
                }
                Ok(Err(error)) => return outcome_of_close(&error, None, false),
                Err(_) => return failed(format!("no answer from {} within {:?}", state.server, self.config.connect_timeout), false),
            },
            _ = crate::stopped(&mut self.shutdown) => return Outcome::Shutdown,
        };
        let outcome = Session::new(self, &connection, state).run().await;
        if let Outcome::Shutdown = outcome {
            connection.close(
                quinn::VarInt::from_u32(ErrorCode::NoError.code()),
                b"agent stopping",
            );
        }
        outcome
    }
}

/// One connected session.
struct Session<'a> {
    link: &'a mut Link,
    connection: &'a quinn::Connection,
    state: AgentState,
    in_flight: HashMap<u64, bagui_protocol::Lane>,
    cursors: Cursors,
    window: usize,
    max_frame_len: usize,
    pending_renewal: Option<CertificateRequest>,
    /// No renewal request before this (after a refusal).
    renewal_not_before: Option<Instant>,
    come_back: Option<Duration>,
    /// When the welcome arrived.
    opened_at: Option<Instant>,
}

impl<'a> Session<'a> {
    fn new(
        link: &'a mut Link,
        connection: &'a quinn::Connection,
        state: AgentState,
    ) -> Session<'a> {
        let max_frame_len = (state.params.max_frame_len as usize).max(4096);
        Session {
            link,
            connection,
            window: state.params.max_in_flight.max(1) as usize,
            max_frame_len,
            state,
            in_flight: HashMap::new(),
            cursors: Cursors::default(),
            pending_renewal: None,
            renewal_not_before: None,
            come_back: None,
            opened_at: None,
        }
    }

    fn healthy(&self) -> bool {
        self.opened_at
            .is_some_and(|opened| opened.elapsed() >= HEALTHY_SESSION)
    }

    /// A write failed: if the connection was closed by the control plane, say why.
    fn write_failed(&self, what: &str, error: String) -> Outcome {
        match self.connection.close_reason() {
            Some(reason) => outcome_of_close(&reason, self.come_back, self.healthy()),
            None => failed(format!("{what}: {error}"), self.healthy()),
        }
    }

    fn lost(&self, error: ReadError) -> Outcome {
        match error {
            ReadError::Stream(quinn::ReadError::ConnectionLost(lost)) => {
                outcome_of_close(&lost, self.come_back, self.healthy())
            }
            other => failed(other, self.healthy()),
        }
    }

    async fn closed(&self) -> Outcome {
        // The stream ended: the close reason follows (or has arrived) on the connection.
        let error = tokio::time::timeout(Duration::from_secs(2), self.connection.closed())
            .await
            .unwrap_or(quinn::ConnectionError::TimedOut);
        outcome_of_close(&error, self.come_back, self.healthy())
    }

    async fn send(
        &self,
        send: &mut quinn::SendStream,
        messages: Vec<AgentMessage>,
    ) -> Result<(), String> {
        let mut buffer = BytesMut::new();
        for message in messages {
            message
                .encode(self.max_frame_len, &mut buffer)
                .map_err(|error| format!("encoding {}: {error}", message.kind()))?;
        }
        wire::write_frames(send, &buffer)
            .await
            .map_err(|error| error.to_string())
    }

    fn renewal_due(&self) -> bool {
        if self
            .renewal_not_before
            .is_some_and(|not_before| Instant::now() < not_before)
        {
            return false;
        }
        let issued = self.state.certificate_issued_ms;
        let lifetime = self.state.certificate_not_after_ms.saturating_sub(issued);
        let due = issued
            + lifetime * u64::from(self.state.params.renew_at_permille.clamp(100, 1000)) / 1000;
        now_ms() >= due
    }

    fn link_stats(&self) -> LinkStats {
        let stats = self.connection.stats();
        LinkStats {
            rtt_us: stats.path.rtt.as_micros() as u64,
            sent_packets: stats.path.sent_packets,
            lost_packets: stats.path.lost_packets,
            congestion_events: stats.path.congestion_events,
            cwnd_bytes: stats.path.cwnd,
        }
    }

    fn refresh_status(&self) {
        let outbox = self.link.outbox.stats();
        let rtt = self.connection.rtt().as_secs_f64() * 1000.0;
        let next_seq = self.link.outbox.next_seq();
        self.link.status.update(|s| {
            s.rtt_ms = Some(rtt);
            s.outbox_records = outbox.records;
            s.outbox_bytes = outbox.bytes;
            s.outbox_dropped = outbox.dropped;
            s.next_seq = next_seq;
        });
    }

    async fn run(mut self) -> Outcome {
        let (mut send, mut recv) =
            match tokio::time::timeout(Duration::from_secs(10), self.connection.open_bi()).await {
                Ok(Ok(streams)) => streams,
                Ok(Err(error)) => return outcome_of_close(&error, None, false),
                Err(_) => return failed("could not open the session stream", false),
            };
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: AGENT_VERSION.into(),
            agent_id: self.state.agent_id.clone(),
            next_seq: self.link.outbox.next_seq(),
            outbox: self.link.outbox.stats(),
        };
        if let Err(error) = self.send(&mut send, vec![hello.into()]).await {
            return failed(format!("sending hello: {error}"), false);
        }
        let mut decoder = FrameDecoder::new(self.max_frame_len);
        let first = tokio::select! {
            first = tokio::time::timeout(Duration::from_secs(15), wire::read_frame(&mut recv, &mut decoder)) => first,
            _ = crate::stopped(&mut self.link.shutdown) => return Outcome::Shutdown,
        };
        let welcome = match first {
            Ok(Ok(Some(frame))) => match ServerMessage::decode(&frame) {
                Ok(Decoded::Known(ServerMessage::Welcome(welcome))) => welcome,
                Ok(Decoded::Known(ServerMessage::ComeBackLater(later))) => {
                    tracing::info!(after_ms = later.after_ms, reason = %later.reason, "control plane asks to come back later");
                    return Outcome::ComeBack(Duration::from_millis(later.after_ms));
                }
                Ok(other) => return failed(format!("expected welcome, got {other:?}"), false),
                Err(error) => return failed(error, false),
            },
            Ok(Ok(None)) => return self.closed().await,
            Ok(Err(error)) => return self.lost(error),
            Err(_) => return failed("no welcome within 15 s", false),
        };
        if let Err(error) = self
            .link
            .outbox
            .ensure_next_seq_above(welcome.last_stored_seq)
        {
            return failed(error, false);
        }
        if welcome.max_in_flight > 0 {
            self.window = welcome.max_in_flight as usize;
        }
        if welcome.max_frame_len > 0 {
            self.max_frame_len = (welcome.max_frame_len as usize).max(4096);
        }
        self.opened_at = Some(Instant::now());
        let connected_at = now_ms();
        self.link.status.update(|s| {
            s.link = LinkState::Connected;
            s.connected_since = Some(format_rfc3339(connected_at));
            s.last_error = None;
            s.last_acked_seq = s.last_acked_seq.max(welcome.last_stored_seq);
        });
        self.refresh_status();
        tracing::info!(agent = %self.state.agent_id, server = %self.state.server, "session open");

        let heartbeat_every =
            Duration::from_millis(welcome.heartbeat_interval_ms.clamp(100, 600_000));
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let lifetime = Duration::from_millis(
            self.state
                .certificate_not_after_ms
                .saturating_sub(self.state.certificate_issued_ms),
        );
        let mut renewal_check = tokio::time::interval(
            (lifetime / 20).clamp(Duration::from_millis(200), Duration::from_secs(60)),
        );
        renewal_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The status board's view of the link (RTT, counters); the file is read by people.
        let mut status_tick = tokio::time::interval(Duration::from_secs(5));
        let mut shutdown = self.link.shutdown.clone();
        let outbox = self.link.outbox.clone();

        loop {
            if self.in_flight.len() < self.window {
                let room = self.window - self.in_flight.len();
                let batch = match self.link.outbox.next_batch(&mut self.cursors, room) {
                    Ok(batch) => batch,
                    Err(error) => {
                        return failed(format!("reading the outbox: {error}"), self.healthy());
                    }
                };
                if !batch.is_empty() {
                    // Written before sent: the records are on disk before they leave.
                    if let Err(error) = self.link.outbox.flush().await {
                        return failed(format!("flushing the outbox: {error}"), self.healthy());
                    }
                    let mut buffer = BytesMut::new();
                    for pending in batch {
                        let message: AgentMessage = Report {
                            seq: pending.seq,
                            lane: pending.lane,
                            kind: pending.record.kind,
                            created_ms: pending.record.created_ms,
                            body: pending.record.body,
                            cipher: pending.record.cipher,
                            sealed_seq: pending.record.sealed_seq,
                        }
                        .into();
                        match message.encode(self.max_frame_len, &mut buffer) {
                            Ok(()) => {
                                self.in_flight.insert(pending.seq, pending.lane);
                            }
                            Err(error) => {
                                // Larger than the control plane accepts: it can never be
                                // delivered, so it must not block everything behind it.
                                tracing::warn!(seq = pending.seq, %error, "record cannot be sent; dropped");
                                if let Err(error) =
                                    self.link.outbox.discard(pending.lane, pending.seq)
                                {
                                    return failed(
                                        format!("dropping record {}: {error}", pending.seq),
                                        self.healthy(),
                                    );
                                }
                            }
                        }
                    }
                    if !buffer.is_empty()
                        && let Err(error) = wire::write_frames(&mut send, &buffer).await
                    {
                        return self.write_failed("sending reports", error.to_string());
                    }
                }
            }
            let room = self.in_flight.len() < self.window;
            tokio::select! {
                biased;
                _ = crate::stopped(&mut shutdown) => return Outcome::Shutdown,
                frame = wire::read_frame(&mut recv, &mut decoder) => {
                    let frame = match frame {
                        Ok(Some(frame)) => frame,
                        Ok(None) => return self.closed().await,
                        Err(error) => return self.lost(error),
                    };
                    let message = match ServerMessage::decode(&frame) {
                        Ok(message) => message,
                        Err(error) => {
                            self.connection.close(quinn::VarInt::from_u32(error.error_code().code()), error.to_string().as_bytes());
                            return failed(format!("bad frame from the control plane: {error}"), self.healthy());
                        }
                    };
                    if let Some(outcome) = self.handle(message, &mut send, &mut heartbeat).await {
                        return outcome;
                    }
                }
                _ = outbox.pushed(), if room => {}
                _ = heartbeat.tick() => {
                    let beat = Heartbeat {
                        sent_ms: now_ms(),
                        outbox: self.link.outbox.stats(),
                        link: self.link_stats(),
                    };
                    if let Err(error) = self.send(&mut send, vec![beat.into()]).await {
                        return self.write_failed("sending heartbeat", error);
                    }
                }
                _ = renewal_check.tick() => {
                    if self.pending_renewal.is_none() && self.renewal_due()
                        && let Err(error) = self.start_renewal(&mut send).await
                    {
                        return self.write_failed("requesting renewal", error);
                    }
                }
                _ = status_tick.tick() => self.refresh_status(),
            }
        }
    }

    async fn start_renewal(&mut self, send: &mut quinn::SendStream) -> Result<(), String> {
        let profile = self
            .link
            .state_dir
            .ca_certificate()
            .map(|ca| tls::profile_of(&ca))
            .map_err(|error| format!("{error:#}"))?;
        let request = identity::certificate_request_for(profile, &self.state.agent_id)
            .map_err(|error| format!("{error:#}"))?;
        let mut exporter = [0u8; bagui_protocol::proof::EXPORTER_LEN];
        if profile == bagui_protocol::CryptoProfile::Shangmi {
            self.connection
                .export_keying_material(&mut exporter, bagui_protocol::proof::EXPORTER_LABEL, b"")
                .map_err(|_| "TLS exporter unavailable".to_owned())?;
        }
        let message = RenewCertificate {
            csr_der: ByteBuf::from(request.csr_der.clone()),
            sm2_tls_key: request
                .sm2_key_request(&exporter)
                .map_err(|error| format!("{error:#}"))?,
        };
        self.pending_renewal = Some(request);
        tracing::info!(agent = %self.state.agent_id, "renewing the certificate");
        self.send(send, vec![message.into()]).await
    }

    async fn command_done(
        &self,
        send: &mut quinn::SendStream,
        command_id: u64,
        message: &str,
    ) -> Result<(), String> {
        self.command_result(send, command_id, true, message).await
    }

    async fn command_result(
        &self,
        send: &mut quinn::SendStream,
        command_id: u64,
        ok: bool,
        message: &str,
    ) -> Result<(), String> {
        let result = CommandResult {
            command_id,
            ok,
            message: message.into(),
        };
        self.send(send, vec![result.into()]).await
    }

    /// Handles one message; `Some` ends the session.
    async fn handle(
        &mut self,
        message: Decoded<ServerMessage>,
        send: &mut quinn::SendStream,
        heartbeat: &mut tokio::time::Interval,
    ) -> Option<Outcome> {
        let established = self.healthy();
        let result: Result<(), String> = match message {
            Decoded::Known(ServerMessage::Ack(ack)) => {
                let limit = self.window * 4 + 64;
                let Some(seqs) = ack.seqs(limit).filter(|_| ack.renumber.len() <= limit) else {
                    self.connection.close(
                        quinn::VarInt::from_u32(ErrorCode::Protocol.code()),
                        b"malformed ack",
                    );
                    return Some(failed("malformed ack from the control plane", established));
                };
                // The control plane holds other reports under these numbers: this agent's
                // numbering went back (a restored state directory). Each goes again, renumbered.
                let mut renumbered = 0;
                for &seq in &ack.renumber {
                    if let Some(lane) = self.in_flight.remove(&seq) {
                        match self.link.outbox.renumber(lane, seq) {
                            Ok(Some(new_seq)) => {
                                renumbered += 1;
                                tracing::warn!(
                                    seq,
                                    new_seq,
                                    ?lane,
                                    "the control plane holds another report under this number (state restored from a backup?); sending it again renumbered"
                                );
                            }
                            Ok(None) => {}
                            Err(error) => {
                                return Some(failed(
                                    format!("renumbering record {seq}: {error}"),
                                    established,
                                ));
                            }
                        }
                    }
                }
                let mut acked = 0;
                let mut highest = 0;
                for seq in seqs {
                    if let Some(lane) = self.in_flight.remove(&seq) {
                        if let Err(error) = self.link.outbox.remove(lane, seq) {
                            return Some(failed(
                                format!("deleting acknowledged record {seq}: {error}"),
                                established,
                            ));
                        }
                        acked += 1;
                        highest = highest.max(seq);
                    }
                }
                self.link.status.update(|s| {
                    s.reports_acked += acked;
                    s.reports_renumbered += renumbered;
                    s.last_acked_seq = s.last_acked_seq.max(highest);
                });
                Ok(())
            }
            Decoded::Known(ServerMessage::CertificateRenewed(renewed)) => {
                match self.pending_renewal.take() {
                    Some(request) => self.save_renewal(&request, renewed),
                    None => Err("unrequested certificate from the control plane".into()),
                }
            }
            Decoded::Known(ServerMessage::RenewalRefused(refused)) => {
                self.renewal_refused(&refused.message);
                Ok(())
            }
            Decoded::Known(ServerMessage::ComeBackLater(later)) => {
                self.come_back = Some(Duration::from_millis(later.after_ms));
                Ok(())
            }
            Decoded::Known(ServerMessage::SendFullSnapshot(command)) => {
                let _ = self.link.snapshots.try_send(());
                self.command_done(send, command.command_id, "full snapshot queued")
                    .await
            }
            Decoded::Known(ServerMessage::Reconnect(command)) => {
                let _ = self
                    .command_done(send, command.command_id, "reconnecting")
                    .await;
                let _ = send.finish();
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.connection.close(
                    quinn::VarInt::from_u32(ErrorCode::NoError.code()),
                    b"reconnect requested",
                );
                return Some(Outcome::ComeBack(Duration::from_millis(command.after_ms)));
            }
            Decoded::Known(ServerMessage::RenewCertificateNow(command)) => {
                let started = if self.pending_renewal.is_none() {
                    self.start_renewal(send).await
                } else {
                    Ok(())
                };
                match started {
                    Ok(()) => {
                        self.command_done(send, command.command_id, "renewal requested")
                            .await
                    }
                    Err(error) => Err(error),
                }
            }
            Decoded::Known(ServerMessage::SetHeartbeatInterval(command)) => {
                let interval = Duration::from_millis(command.interval_ms)
                    .clamp(Duration::from_secs(1), Duration::from_secs(600));
                *heartbeat = tokio::time::interval(interval);
                heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                heartbeat.tick().await;
                self.command_done(
                    send,
                    command.command_id,
                    &format!("heartbeat every {}ms", interval.as_millis()),
                )
                .await
            }
            Decoded::Known(ServerMessage::SetProbes(command)) => {
                let (ok, message) = match self.link.probes.replace(&command.probes) {
                    Ok(message) => (true, message),
                    Err(error) => {
                        tracing::warn!(%error, "pushed probes refused");
                        (false, error)
                    }
                };
                self.command_result(send, command.command_id, ok, &message)
                    .await
            }
            Decoded::Known(ServerMessage::Unsupported(unsupported))
                if unsupported.kind == "renew_certificate" =>
            {
                self.renewal_refused("the control plane does not renew over the session");
                Ok(())
            }
            Decoded::Known(ServerMessage::Unsupported(unsupported)) => {
                tracing::info!(kind = %unsupported.kind, "the control plane does not support a message kind");
                Ok(())
            }
            Decoded::Known(ServerMessage::Welcome(_)) => Ok(()),
            Decoded::Unknown(kind) => {
                tracing::debug!(%kind, "unsupported message kind from the control plane");
                self.send(send, vec![Unsupported { kind }.into()]).await
            }
        };
        result.err().map(|error| failed(error, established))
    }

    /// The current certificate stays; try again after a twentieth of its life (1 min … 1 h).
    fn renewal_refused(&mut self, message: &str) {
        self.pending_renewal = None;
        let lifetime = Duration::from_millis(
            self.state
                .certificate_not_after_ms
                .saturating_sub(self.state.certificate_issued_ms),
        );
        let wait = (lifetime / 20).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        tracing::warn!(%message, retry_in = ?wait, "certificate renewal refused");
        self.renewal_not_before = Some(Instant::now() + wait);
    }

    fn save_renewal(
        &mut self,
        request: &CertificateRequest,
        renewed: bagui_protocol::CertificateRenewed,
    ) -> Result<(), String> {
        let certificate = rustls_pki_types::CertificateDer::from(renewed.certificate_der.to_vec());
        self.link
            .state_dir
            .save_tls_identity(&request.key_pem, &certificate)
            .map_err(|error| format!("{error:#}"))?;
        self.state.certificate_issued_ms = renewed.issued_ms;
        self.state.certificate_not_after_ms = renewed.not_after_ms;
        self.link
            .state_dir
            .save_agent_state(&self.state)
            .map_err(|error| format!("{error:#}"))?;
        let expires = format_rfc3339(renewed.not_after_ms);
        tracing::info!(agent = %self.state.agent_id, %expires, "certificate renewed");
        self.link.status.update(|s| s.certificate_expires = expires);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..40 {
            let bound = base.saturating_mul(1 << attempt.min(20)).min(max);
            for _ in 0..50 {
                assert!(backoff(attempt, base, max) <= bound);
            }
        }
        let late: Duration = (0..200).map(|_| backoff(10, base, max)).sum();
        let early: Duration = (0..200).map(|_| backoff(0, base, max)).sum();
        assert!(late > early * 5, "{late:?} vs {early:?}");
    }
}
