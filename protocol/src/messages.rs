//! Frames ↔ typed messages, and every message Bagui peers exchange.
//!
//! Version skew is handled in three places, all here:
//! - every struct is `#[serde(default)]`, so a field an older peer does not send is defaulted;
//! - serde ignores map keys it does not know, so a field a newer peer adds is skipped;
//! - a frame whose *kind* this build does not know decodes to [`Decoded::Unknown`], and the
//!   receiver answers with an [`Unsupported`] message instead of failing.
//!
//! Bodies are MessagePack maps with named fields (`rmp_serde::to_vec_named`), which is what
//! makes the first two rules work; positional encodings such as postcard or bincode cannot
//! skip or default a field.
//!
//! Three message sets exist, one per direction of each exchange:
//! [`JoinClientMessage`]/[`JoinServerMessage`] on ALPN `bagui-join/1`, and
//! [`AgentMessage`]/[`ServerMessage`] on ALPN `bagui/1`. Server commands are a closed set of
//! frame kinds in [`ServerMessage`] (`cmd.*`): there is no message that runs a program.

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec::{Frame, FrameError, encode_frame};

/// A message with a fixed frame kind.
pub trait Message: Serialize + DeserializeOwned {
    /// The frame kind this message travels under; never changes once released.
    const KIND: &'static str;
}

/// Why a frame could not become a message (or a message a frame).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("decoding {kind} message: {source}")]
    Decode {
        kind: &'static str,
        #[source]
        source: rmp_serde::decode::Error,
    },
    #[error("encoding {kind} message: {source}")]
    Encode {
        kind: &'static str,
        #[source]
        source: rmp_serde::encode::Error,
    },
}

impl MessageError {
    /// The QUIC application error code a receiver closes with after this error.
    pub fn error_code(&self) -> crate::ErrorCode {
        match self {
            MessageError::Frame(frame) => frame.error_code(),
            MessageError::Decode { .. } | MessageError::Encode { .. } => crate::ErrorCode::Protocol,
        }
    }
}

/// Result of decoding a frame against a message set.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T> {
    /// A message this build knows.
    Known(T),
    /// A well-formed frame of a kind this build does not know: answer [`Unsupported`].
    Unknown(String),
}

/// Encodes one message's body (MessagePack, named fields).
pub fn encode_body<M: Message>(message: &M) -> Result<Vec<u8>, MessageError> {
    rmp_serde::to_vec_named(message).map_err(|source| MessageError::Encode {
        kind: M::KIND,
        source,
    })
}

/// Decodes one message's body.
pub fn decode_body<M: Message>(body: &[u8]) -> Result<M, MessageError> {
    rmp_serde::from_slice(body).map_err(|source| MessageError::Decode {
        kind: M::KIND,
        source,
    })
}

/// Appends one message as a frame to `out`.
pub fn encode_message<M: Message>(
    message: &M,
    max_len: usize,
    out: &mut BytesMut,
) -> Result<(), MessageError> {
    let body = encode_body(message)?;
    encode_frame(M::KIND, &body, max_len, out)?;
    Ok(())
}

macro_rules! message_set {
    ($(#[$meta:meta])* pub enum $name:ident { $($variant:ident($ty:ty)),* $(,)? }) => {
        $(#[$meta])*
        // Messages are decoded, handled and dropped one at a time; boxing the large variants
        // would cost an allocation per frame for no memory saved.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name { $($variant($ty)),* }

        impl $name {
            /// Every frame kind in this set.
            pub const KINDS: &'static [&'static str] = &[$(<$ty as Message>::KIND),*];

            /// This message's frame kind.
            pub fn kind(&self) -> &'static str {
                match self { $($name::$variant(_) => <$ty as Message>::KIND),* }
            }

            /// Decodes a frame; a kind outside this set is [`Decoded::Unknown`], not an error.
            pub fn decode(frame: &Frame) -> Result<Decoded<$name>, MessageError> {
                $(
                    if frame.kind == <$ty as Message>::KIND {
                        return Ok(Decoded::Known($name::$variant(decode_body::<$ty>(&frame.body)?)));
                    }
                )*
                Ok(Decoded::Unknown(frame.kind.clone()))
            }

            /// Appends this message as a frame to `out`.
            pub fn encode(&self, max_len: usize, out: &mut BytesMut) -> Result<(), MessageError> {
                match self { $($name::$variant(message) => encode_message(message, max_len, out)),* }
            }
        }

        $(
            impl From<$ty> for $name {
                fn from(message: $ty) -> $name { $name::$variant(message) }
            }
        )*
    };
}

macro_rules! kinds {
    ($($ty:ty => $kind:literal),* $(,)?) => {
        $(impl Message for $ty { const KIND: &'static str = $kind; })*
    };
}

kinds! {
    JoinRequest => "join_request",
    RenewRequest => "renew_request",
    JoinAccepted => "join_accepted",
    JoinRejected => "join_rejected",
    Hello => "hello",
    Report => "report",
    Heartbeat => "heartbeat",
    RenewCertificate => "renew_certificate",
    CommandResult => "command_result",
    Unsupported => "unsupported",
    Welcome => "welcome",
    Ack => "ack",
    ComeBackLater => "come_back_later",
    CertificateRenewed => "certificate_renewed",
    RenewalRefused => "renewal_refused",
    SendFullSnapshot => "cmd.send_full_snapshot",
    Reconnect => "cmd.reconnect",
    RenewCertificateNow => "cmd.renew_certificate",
    SetHeartbeatInterval => "cmd.set_heartbeat_interval",
    SetProbes => "cmd.set_probes",
}

message_set! {
    /// What an agent sends on `bagui-join/1`.
    pub enum JoinClientMessage {
        JoinRequest(JoinRequest),
        RenewRequest(RenewRequest),
    }
}

message_set! {
    /// What the control plane answers on `bagui-join/1`.
    pub enum JoinServerMessage {
        JoinAccepted(JoinAccepted),
        JoinRejected(JoinRejected),
        Unsupported(Unsupported),
    }
}

message_set! {
    /// What an agent sends on its session stream (`bagui/1`).
    pub enum AgentMessage {
        Hello(Hello),
        Report(Report),
        Heartbeat(Heartbeat),
        RenewCertificate(RenewCertificate),
        CommandResult(CommandResult),
        Unsupported(Unsupported),
    }
}

message_set! {
    /// What the control plane sends on an agent's session stream (`bagui/1`).
    ///
    /// The `cmd.*` kinds are the complete, allow-listed set of server commands. Each carries a
    /// `command_id` that the control plane audits before sending and the agent echoes back in a
    /// [`CommandResult`].
    pub enum ServerMessage {
        Welcome(Welcome),
        Ack(Ack),
        ComeBackLater(ComeBackLater),
        CertificateRenewed(CertificateRenewed),
        RenewalRefused(RenewalRefused),
        Unsupported(Unsupported),
        SendFullSnapshot(SendFullSnapshot),
        Reconnect(Reconnect),
        RenewCertificateNow(RenewCertificateNow),
        SetHeartbeatInterval(SetHeartbeatInterval),
        SetProbes(SetProbes),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared value types
// ---------------------------------------------------------------------------------------------

/// What an agent is for; it decides topology and incident handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A server in a gov-cloud or machine room.
    #[default]
    Server,
    /// The access device or edge box whose uplink carries its division's agents.
    Gateway,
    /// A township or village terminal; may be switched off after hours.
    Terminal,
    /// A role introduced by a newer release.
    #[serde(other)]
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Gateway => "gateway",
            Role::Terminal => "terminal",
            Role::Unknown => "unknown",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "server" => Ok(Role::Server),
            "gateway" => Ok(Role::Gateway),
            "terminal" => Ok(Role::Terminal),
            other => Err(format!(
                "unknown role {other:?} (expected server, gateway or terminal)"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Delivery priority of a report; lower numbers go first and are dropped last.
///
/// On the wire a lane is its number; a number from a newer peer reads as [`Lane::Metrics`],
/// the lowest priority, so nothing unknown can jump the queue.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(from = "u8", into = "u8")]
pub enum Lane {
    /// Security findings.
    Security = 0,
    /// State changes (service down, disk full, outbox drops).
    State = 1,
    /// Inventory (assets and their changes).
    Inventory = 2,
    /// Metrics samples.
    #[default]
    Metrics = 3,
}

impl Lane {
    /// Every lane, highest priority first.
    pub const ALL: [Lane; 4] = [Lane::Security, Lane::State, Lane::Inventory, Lane::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Security => "security",
            Lane::State => "state",
            Lane::Inventory => "inventory",
            Lane::Metrics => "metrics",
        }
    }
}

impl From<u8> for Lane {
    fn from(value: u8) -> Lane {
        match value {
            0 => Lane::Security,
            1 => Lane::State,
            2 => Lane::Inventory,
            _ => Lane::Metrics,
        }
    }
}

impl From<Lane> for u8 {
    fn from(lane: Lane) -> u8 {
        lane as u8
    }
}

/// One count per lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LaneCounts {
    pub security: u64,
    pub state: u64,
    pub inventory: u64,
    pub metrics: u64,
}

impl LaneCounts {
    pub fn get(&self, lane: Lane) -> u64 {
        match lane {
            Lane::Security => self.security,
            Lane::State => self.state,
            Lane::Inventory => self.inventory,
            Lane::Metrics => self.metrics,
        }
    }

    pub fn get_mut(&mut self, lane: Lane) -> &mut u64 {
        match lane {
            Lane::Security => &mut self.security,
            Lane::State => &mut self.state,
            Lane::Inventory => &mut self.inventory,
            Lane::Metrics => &mut self.metrics,
        }
    }

    pub fn total(&self) -> u64 {
        self.security + self.state + self.inventory + self.metrics
    }
}

/// Facts an agent reports about its machine when it joins.
///
/// A `machine_id` is readable by anyone and shared by cloned VMs, so it identifies nothing on
/// its own; the control plane uses it only to flag possible clones.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MachineFacts {
    pub machine_id: String,
    pub hostname: String,
    /// `ID` from os-release (`kylin`, `uos`, `openEuler`, `debian`, …).
    pub os_id: String,
    /// `PRETTY_NAME` (or `NAME`) from os-release.
    pub os_name: String,
    pub os_version: String,
    pub kernel: String,
    pub arch: String,
    /// `sm3:` digest over stable hardware facts (CPU model, memory size, NIC MACs, DMI UUID).
    pub hardware_fingerprint: String,
}

/// The agent's outbox as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxStats {
    pub records: u64,
    pub bytes: u64,
    /// Records dropped under pressure since the outbox was created, per lane.
    pub dropped: LaneCounts,
}

/// The agent's view of its QUIC link, from the connection's own statistics.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkStats {
    pub rtt_us: u64,
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub congestion_events: u64,
    pub cwnd_bytes: u64,
}

/// Parameters of a deployment, handed to an agent when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeploymentParams {
    pub heartbeat_interval_ms: u64,
    /// Most reports an agent may have sent and not yet had acknowledged.
    pub max_in_flight: u32,
    pub max_frame_len: u32,
    /// Renew the certificate once this many thousandths of its life have passed.
    pub renew_at_permille: u32,
    /// How long after expiry an agent may still renew by proving its key.
    pub grace_period_s: u64,
}

impl Default for DeploymentParams {
    fn default() -> Self {
        DeploymentParams {
            heartbeat_interval_ms: 5_000,
            max_in_flight: 256,
            max_frame_len: crate::DEFAULT_MAX_FRAME_LEN as u32,
            renew_at_permille: 667,
            grace_period_s: 90 * 24 * 3600,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Enrollment: ALPN bagui-join/1
// ---------------------------------------------------------------------------------------------

/// Proof that the sender holds an agent's SM2 identity key (see [`crate::proof`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentityProof {
    pub agent_id: String,
    /// SM2 signature (r‖s, 64 bytes) over [`crate::proof::transcript`].
    pub signature: ByteBuf,
}

/// The TLS client key of a `shangmi` agent, sent instead of a PKCS#10 request (which cannot
/// carry SM2 keys in the tools Bagui uses): the public key, and the key's signature over
/// [`crate::proof::tls_key_transcript`], which binds it to this connection as a CSR's
/// self-signature binds a key to its request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Sm2KeyRequest {
    /// SEC1 uncompressed SM2 public key (65 bytes) to certify.
    pub public_key: ByteBuf,
    /// SM2 signature (r‖s, 64 bytes) by that key, signer ID [`crate::proof::SM2_DISTID`].
    pub signature: ByteBuf,
}

/// Enrollment request: token, certificate request, identity key and machine facts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinRequest {
    pub protocol_version: u32,
    pub agent_version: String,
    /// `id.secret`.
    pub token: String,
    /// Join a division inside the token's subtree instead of the token's own division.
    pub division: Option<String>,
    /// Distinguishes several agents on one host (containers, tests).
    pub instance_id: String,
    /// PKCS#10 request for the TLS client certificate.
    pub csr_der: ByteBuf,
    /// The agent's SM2 public key (SEC1 uncompressed), for signed reports and identity proofs.
    pub sm2_public_key: ByteBuf,
    pub facts: MachineFacts,
    /// Set on a re-join: proves the agent still holds its previous identity key.
    pub previous: Option<IdentityProof>,
    /// `shangmi` agents: the SM2 TLS key to certify, in place of `csr_der` (left empty).
    /// Absent (and not encoded) for `standard` agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sm2_tls_key: Option<Sm2KeyRequest>,
}

/// Renewal of an expired certificate within the grace period, by proving the identity key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RenewRequest {
    pub protocol_version: u32,
    pub agent_version: String,
    pub csr_der: ByteBuf,
    pub proof: IdentityProof,
    /// `shangmi` agents: the SM2 TLS key to certify, in place of `csr_der`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sm2_tls_key: Option<Sm2KeyRequest>,
}

/// Enrollment (or renewal) succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinAccepted {
    pub agent_id: String,
    pub division: String,
    /// Chinese names from the region down, `/`-separated.
    pub division_path: String,
    pub role: Role,
    pub certificate_der: ByteBuf,
    /// When the certificate was issued; its X.509 `notBefore` is backdated an hour before this
    /// for terminals with skewed clocks, so renewal timing counts from here.
    pub certificate_issued_ms: u64,
    pub certificate_not_after_ms: u64,
    pub ca_certificate_der: ByteBuf,
    /// The control plane's SM2 public key (SEC1 uncompressed), for data encrypted to it.
    pub control_plane_sm2_public_key: ByteBuf,
    pub params: DeploymentParams,
    /// The agent kept its previous identity (re-join with proof, or renewal).
    pub rejoined: bool,
    /// Another agent already joined from this machine-id without proving this agent's key.
    pub possible_clone: bool,
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinRefusal {
    /// Unknown token id or wrong secret (deliberately not told apart).
    InvalidToken,
    TokenExpired,
    TokenUsedUp,
    TokenRevoked,
    UnknownDivision,
    DivisionOutOfScope,
    BadCertificateRequest,
    BadIdentityProof,
    AgentRevoked,
    GracePeriodOver,
    UnsupportedVersion,
    RateLimited,
    #[default]
    Internal,
    /// A reason introduced by a newer release.
    #[serde(other)]
    Other,
}

impl JoinRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRefusal::InvalidToken => "invalid_token",
            JoinRefusal::TokenExpired => "token_expired",
            JoinRefusal::TokenUsedUp => "token_used_up",
            JoinRefusal::TokenRevoked => "token_revoked",
            JoinRefusal::UnknownDivision => "unknown_division",
            JoinRefusal::DivisionOutOfScope => "division_out_of_scope",
            JoinRefusal::BadCertificateRequest => "bad_certificate_request",
            JoinRefusal::BadIdentityProof => "bad_identity_proof",
            JoinRefusal::AgentRevoked => "agent_revoked",
            JoinRefusal::GracePeriodOver => "grace_period_over",
            JoinRefusal::UnsupportedVersion => "unsupported_version",
            JoinRefusal::RateLimited => "rate_limited",
            JoinRefusal::Internal => "internal",
            JoinRefusal::Other => "other",
        }
    }
}

/// Enrollment (or renewal) refused.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinRejected {
    pub reason: JoinRefusal,
    /// Human-readable explanation, safe to show to the operator running `join`.
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Session: ALPN bagui/1
// ---------------------------------------------------------------------------------------------

/// First message of a session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Hello {
    pub protocol_version: u32,
    pub agent_version: String,
    pub agent_id: String,
    /// The sequence number the agent will assign next.
    pub next_seq: u64,
    pub outbox: OutboxStats,
}

/// The control plane accepted the session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Welcome {
    pub agent_id: String,
    pub server_time_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_in_flight: u32,
    /// Highest sequence number durably stored for this agent (0 if none).
    pub last_stored_seq: u64,
    /// Largest frame the control plane accepts now (0: as in the join parameters).
    pub max_frame_len: u32,
}

/// One report from the agent's outbox.
///
/// `seq`, `lane`, `kind` and `created_ms` stay outside `body` so that the body can be
/// encrypted to the control plane without the agent or a relay needing to read it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// Per-agent sequence number, assigned when the report entered the outbox; starts at 1.
    pub seq: u64,
    pub lane: Lane,
    /// Payload kind (see [`crate::messages::payload`]).
    pub kind: String,
    /// When the agent produced it (agent clock, ms since the Unix epoch).
    pub created_ms: u64,
    pub body: ByteBuf,
    /// How `body` is sealed: `""` plaintext (outboxes written before sealing, older agents),
    /// [`crate::sealed::SM4_CCM_SM2`] sealed to the control plane's SM2 key. Left out of the
    /// encoding when empty, so plaintext reports encode as before.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cipher: String,
    /// The sequence number `body` was sealed under, when the report was renumbered since
    /// (the control plane said its first number was already taken, see [`Ack::renumber`]);
    /// 0: `seq` itself. Left out of the encoding when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub sealed_seq: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Report {
    /// The sequence number the body's seal is bound to.
    pub fn sealing_seq(&self) -> u64 {
        if self.sealed_seq == 0 {
            self.seq
        } else {
            self.sealed_seq
        }
    }
}

/// Inclusive range of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

/// Reports durably stored by the control plane; the agent may delete them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Ack {
    pub ranges: Vec<SeqRange>,
    /// Reports not stored because the control plane already holds a different report under
    /// their sequence number: the agent's numbering went back (its state directory was
    /// restored from a backup or a VM snapshot). The agent sends each again under a new
    /// number (keeping [`Report::sealed_seq`]). Left out of the encoding when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub renumber: Vec<u64>,
}

impl Ack {
    /// Builds an ack from sequence numbers in any order, merging adjacent ones into ranges.
    pub fn from_seqs(mut seqs: Vec<u64>) -> Ack {
        seqs.sort_unstable();
        seqs.dedup();
        let mut ranges: Vec<SeqRange> = Vec::new();
        for seq in seqs {
            match ranges.last_mut() {
                Some(range) if range.last + 1 == seq => range.last = seq,
                _ => ranges.push(SeqRange {
                    first: seq,
                    last: seq,
                }),
            }
        }
        Ack {
            ranges,
            renumber: Vec::new(),
        }
    }

    /// Every acknowledged sequence number, refusing absurd ranges from a hostile peer.
    pub fn seqs(&self, limit: usize) -> Option<Vec<u64>> {
        let mut out = Vec::new();
        for range in &self.ranges {
            if range.first > range.last {
                return None;
            }
            let span = (range.last - range.first).saturating_add(1);
            if span > (limit - out.len().min(limit)) as u64 {
                return None;
            }
            out.extend(range.first..=range.last);
        }
        Some(out)
    }
}

/// Periodic liveness and link report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Heartbeat {
    pub sent_ms: u64,
    pub outbox: OutboxStats,
    pub link: LinkStats,
}

/// Come back later: sent before the control plane closes a session with `Busy`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ComeBackLater {
    pub after_ms: u64,
    pub reason: String,
}

/// Certificate renewal over the authenticated session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RenewCertificate {
    pub csr_der: ByteBuf,
    /// `shangmi` agents: the SM2 TLS key to certify, in place of `csr_der`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sm2_tls_key: Option<Sm2KeyRequest>,
}

/// A renewed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CertificateRenewed {
    pub certificate_der: ByteBuf,
    pub issued_ms: u64,
    pub not_after_ms: u64,
}

/// The control plane refused an in-session renewal; the current certificate stays valid and
/// the agent tries again later.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RenewalRefused {
    pub message: String,
}

/// The receiver does not know a message kind it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Unsupported {
    pub kind: String,
}

/// Outcome of a server command.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandResult {
    pub command_id: u64,
    pub ok: bool,
    pub message: String,
}

/// Command: send a full asset snapshot rather than changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SendFullSnapshot {
    pub command_id: u64,
}

/// Command: close the session and reconnect after a delay.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Reconnect {
    pub command_id: u64,
    pub after_ms: u64,
}

/// Command: renew the client certificate now.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RenewCertificateNow {
    pub command_id: u64,
}

/// Command: change the heartbeat interval (bounded by the agent to 1 s … 10 min).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SetHeartbeatInterval {
    pub command_id: u64,
    pub interval_ms: u64,
}

/// Most probes the control plane may push to one agent; the agent refuses a larger set.
pub const MAX_PUSHED_PROBES: usize = 32;
/// Shortest interval of a pushed probe the agent accepts (a floor below any control plane's
/// own, stricter minimum).
pub const MIN_PUSHED_PROBE_INTERVAL_MS: u64 = 1_000;
/// Longest timeout of a pushed probe.
pub const MAX_PUSHED_PROBE_TIMEOUT_MS: u64 = 10_000;

/// One probe pushed by the control plane. The kinds are a closed set (`tcp`, `http`, `dns`,
/// `tls_expiry`): measurements, never commands to run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PushedProbe {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

/// Command: replace the whole set of pushed probes (an empty set removes them all). The
/// control plane checked every target against the agent's division's address ranges and
/// audited the change; the agent checks kinds, count and bounds again, keeps the set across
/// restarts and reports each result as a `check_result` named `pushed.NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SetProbes {
    pub command_id: u64,
    pub probes: Vec<PushedProbe>,
}

/// Report payloads: what goes inside [`Report::body`], by [`Report::kind`].
pub mod payload {
    use serde::{Deserialize, Serialize};

    /// `Report::kind` of [`HostFacts`].
    pub const HOST_FACTS: &str = "host_facts";
    /// `Report::kind` of [`Metrics`].
    pub const METRICS: &str = "metrics";
    /// `Report::kind` of [`OutboxDrops`].
    pub const OUTBOX_DROPS: &str = "outbox_drops";

    /// Basic facts about the host, sent on first contact and when they change.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(default)]
    pub struct HostFacts {
        pub facts: super::MachineFacts,
        pub cpu_model: String,
        pub cpu_cores: u32,
        pub memory_bytes: u64,
        pub boot_time_s: u64,
    }

    /// One metric sample.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Sample {
        pub name: String,
        pub value: f64,
        pub labels: Vec<(String, String)>,
    }

    /// A batch of samples taken at one time.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Metrics {
        pub taken_ms: u64,
        pub samples: Vec<Sample>,
    }

    /// The outbox dropped records under pressure (never silent).
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(default)]
    pub struct OutboxDrops {
        /// Dropped since the previous notice, per lane.
        pub dropped: super::LaneCounts,
        /// Dropped since the outbox was created, per lane.
        pub dropped_total: super::LaneCounts,
        pub limit_bytes: u64,
    }

    /// Encodes a payload body.
    pub fn encode<T: Serialize>(payload: &T) -> Vec<u8> {
        // Payloads are plain structs of strings and numbers: encoding them cannot fail.
        rmp_serde::to_vec_named(payload).unwrap_or_default()
    }

    /// Decodes a payload body.
    pub fn decode<T: serde::de::DeserializeOwned>(
        body: &[u8],
    ) -> Result<T, rmp_serde::decode::Error> {
        rmp_serde::from_slice(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameDecoder;

    #[test]
    fn sm2_tls_keys_are_optional_both_ways() {
        let key = Sm2KeyRequest {
            public_key: ByteBuf::from(vec![4; 65]),
            signature: ByteBuf::from(vec![1; 64]),
        };
        let shangmi = JoinRequest {
            token: "abcdef.0123456789abcdef".into(),
            sm2_tls_key: Some(key.clone()),
            ..JoinRequest::default()
        };
        let bytes = payload::encode(&shangmi);
        assert_eq!(payload::decode::<JoinRequest>(&bytes).unwrap(), shangmi);
        // A build without the field skips it (serde ignores unknown map keys)…
        #[derive(Debug, Deserialize)]
        #[serde(default)]
        #[derive(Default)]
        struct OldJoinRequest {
            token: String,
            csr_der: ByteBuf,
        }
        let old: OldJoinRequest = payload::decode(&bytes).unwrap();
        assert_eq!(old.token, shangmi.token);
        assert!(old.csr_der.is_empty());
        // …and a standard request does not carry it at all, so its bytes are what they were.
        let standard = JoinRequest {
            sm2_tls_key: None,
            ..shangmi.clone()
        };
        let encoded = payload::encode(&standard);
        assert!(!encoded.windows(11).any(|window| window == b"sm2_tls_key"));
        let renew = RenewCertificate {
            csr_der: ByteBuf::new(),
            sm2_tls_key: Some(key),
        };
        assert_eq!(
            payload::decode::<RenewCertificate>(&payload::encode(&renew)).unwrap(),
            renew
        );
    }

    fn round_trip_agent(message: AgentMessage) -> Decoded<AgentMessage> {
        let mut out = BytesMut::new();
        message
            .encode(crate::DEFAULT_MAX_FRAME_LEN, &mut out)
            .unwrap();
        let mut decoder = FrameDecoder::new(crate::DEFAULT_MAX_FRAME_LEN);
        decoder.extend(&out);
        let frame = decoder.next_frame().unwrap().unwrap();
        AgentMessage::decode(&frame).unwrap()
    }

    #[test]
    fn report_round_trips() {
        let report = Report {
            seq: 42,
            lane: Lane::Security,
            kind: payload::METRICS.into(),
            created_ms: 1_700_000_000_000,
            body: ByteBuf::from(vec![1, 2, 3]),
            cipher: String::new(),
            sealed_seq: 0,
        };
        assert_eq!(
            round_trip_agent(AgentMessage::Report(report.clone())),
            Decoded::Known(AgentMessage::Report(report.clone()))
        );
        assert_eq!(report.sealing_seq(), 42);
        let renumbered = Report {
            seq: 50,
            cipher: crate::sealed::SM4_CCM_SM2.into(),
            sealed_seq: 42,
            ..report
        };
        assert_eq!(renumbered.sealing_seq(), 42);
        assert_eq!(
            round_trip_agent(AgentMessage::Report(renumbered.clone())),
            Decoded::Known(AgentMessage::Report(renumbered))
        );
    }

    #[test]
    fn an_ack_names_the_seqs_to_renumber_and_leaves_them_out_when_there_are_none() {
        let mut plain = BytesMut::new();
        ServerMessage::from(Ack::from_seqs(vec![1, 2]))
            .encode(crate::DEFAULT_MAX_FRAME_LEN, &mut plain)
            .unwrap();
        assert!(!plain.windows(8).any(|window| window == b"renumber"));
        let mut ack = Ack::from_seqs(vec![1, 2]);
        ack.renumber = vec![3, 9];
        let mut out = BytesMut::new();
        ServerMessage::from(ack.clone())
            .encode(crate::DEFAULT_MAX_FRAME_LEN, &mut out)
            .unwrap();
        let mut decoder = FrameDecoder::new(crate::DEFAULT_MAX_FRAME_LEN);
        decoder.extend(&out);
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(
            ServerMessage::decode(&frame).unwrap(),
            Decoded::Known(ServerMessage::Ack(ack))
        );
    }

    #[test]
    fn unknown_kind_is_not_an_error() {
        let frame = Frame {
            kind: "report_v9".into(),
            body: bytes::Bytes::from_static(b"\x80"),
        };
        assert_eq!(
            AgentMessage::decode(&frame).unwrap(),
            Decoded::Unknown("report_v9".into())
        );
    }

    #[test]
    fn known_kind_with_bad_body_is_a_protocol_error() {
        let frame = Frame {
            kind: "report".into(),
            body: bytes::Bytes::from_static(b"\xc1\xc1"),
        };
        let error = AgentMessage::decode(&frame).unwrap_err();
        assert_eq!(error.error_code(), crate::ErrorCode::Protocol);
        assert!(error.to_string().contains("report"), "{error}");
    }

    #[test]
    fn unknown_lane_numbers_sort_last() {
        assert_eq!(Lane::from(9), Lane::Metrics);
        assert!(Lane::Security < Lane::State && Lane::Inventory < Lane::Metrics);
    }

    #[test]
    fn ack_ranges_merge_and_expand() {
        let ack = Ack::from_seqs(vec![5, 3, 4, 9, 10, 4, 1]);
        assert_eq!(
            ack.ranges,
            vec![
                SeqRange { first: 1, last: 1 },
                SeqRange { first: 3, last: 5 },
                SeqRange { first: 9, last: 10 }
            ]
        );
        assert_eq!(ack.seqs(100).unwrap(), vec![1, 3, 4, 5, 9, 10]);
        assert_eq!(ack.seqs(5), None, "more seqs than the limit");
        let hostile = Ack {
            ranges: vec![SeqRange {
                first: 0,
                last: u64::MAX,
            }],
            renumber: Vec::new(),
        };
        assert_eq!(hostile.seqs(1024), None);
        let inverted = Ack {
            ranges: vec![SeqRange { first: 5, last: 4 }],
            renumber: Vec::new(),
        };
        assert_eq!(inverted.seqs(1024), None);
    }

    #[test]
    fn message_kinds_are_unique_per_set() {
        for kinds in [
            AgentMessage::KINDS,
            ServerMessage::KINDS,
            JoinClientMessage::KINDS,
            JoinServerMessage::KINDS,
        ] {
            let mut seen = std::collections::HashSet::new();
            for kind in kinds {
                assert!(seen.insert(kind), "duplicate kind {kind}");
            }
        }
    }

    #[test]
    fn server_commands_are_a_closed_set() {
        let commands: Vec<_> = ServerMessage::KINDS
            .iter()
            .filter(|kind| kind.starts_with("cmd."))
            .collect();
        assert_eq!(
            commands,
            [
                &"cmd.send_full_snapshot",
                &"cmd.reconnect",
                &"cmd.renew_certificate",
                &"cmd.set_heartbeat_interval",
                &"cmd.set_probes"
            ]
        );
    }
}
