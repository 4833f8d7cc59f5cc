//! Enrollment: join tokens, joins, re-joins and certificate renewal (DESIGN §4).
//!
//! The flow is kubeadm's: an operator creates a token bound to a division and a role; the
//! agent presents it with a certificate request, its SM2 identity key and its machine facts;
//! the control plane answers with a client certificate naming a fresh agent id. Nothing here
//! touches the network: [`Enroller`] takes decoded requests plus the connection's TLS exporter
//! value and returns decoded answers, and every refusal leaves the store as it was.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bagui_protocol::digest;
use bagui_protocol::proof::{self, ProofPurpose};
use bagui_protocol::{
    CertificateRenewed, CryptoProfile, DeploymentParams, IdentityProof, JoinAccepted, JoinRefusal,
    JoinRejected, JoinRequest, RenewRequest, Role, Sm2KeyRequest,
};
use serde_bytes::ByteBuf;
use sm2::dsa::signature::Verifier;

use crate::audit::Audit;
use crate::clock::{Clock, format_rfc3339};
use crate::divisions::Divisions;
use crate::pki::{CertificateAuthority, ClientKey, PkiError};
use crate::store::{
    AgentRecord, CertRecord, CommitRefusal, Enrollment, Standing, Store, StoreError, TokenRecord,
};

/// How certificates are issued.
#[derive(Debug, Clone)]
pub struct EnrollConfig {
    /// Client certificate lifetime (30 days by default).
    pub cert_lifetime: Duration,
    /// How long after expiry an agent may still renew by proving its key (90 days).
    pub grace_period: Duration,
    /// `notBefore` is set this long before issue, for terminals with skewed clocks (1 hour).
    pub backdate: Duration,
    pub params: DeploymentParams,
}

impl Default for EnrollConfig {
    fn default() -> EnrollConfig {
        EnrollConfig {
            cert_lifetime: Duration::from_secs(30 * 86_400),
            grace_period: Duration::from_secs(90 * 86_400),
            backdate: Duration::from_secs(3_600),
            params: DeploymentParams::default(),
        }
    }
}

/// An operator-side enrollment operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("unknown division {0}")]
    UnknownDivision(String),
    #[error("unknown token {0}")]
    UnknownToken(String),
    #[error("unknown agent {0}")]
    UnknownAgent(String),
    #[error("agent {0} is revoked")]
    AgentRevoked(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
}

/// One identity to issue in bulk (see [`Enroller::issue_bulk`]).
#[derive(Debug, Clone)]
pub struct BulkRequest {
    pub division: String,
    pub role: Role,
    pub instance_id: String,
    pub hostname: String,
    /// `standard`: the PKCS#10 request for the TLS key.
    pub csr_der: Vec<u8>,
    /// The agent's SM2 identity key (both profiles).
    pub sm2_public_key: Vec<u8>,
    /// `shangmi`: the SM2 TLS key with its proof of possession, signed over
    /// [`proof::bulk_issue_binding`] of this deployment's CA in place of a connection's
    /// exporter value.
    pub sm2_tls_key: Option<Sm2KeyRequest>,
}

/// The key an agent asks to have certified, as it arrived.
#[derive(Debug, Clone, Copy)]
pub enum CertRequest<'a> {
    /// `standard`: a PKCS#10 request.
    Csr(&'a [u8]),
    /// `shangmi`: an SM2 public key with its signature over the connection's exporter value.
    Sm2 {
        key: &'a Sm2KeyRequest,
        exporter: &'a [u8],
    },
}

impl<'a> CertRequest<'a> {
    /// The request a message carries: its SM2 key when present, else its CSR.
    pub fn of(
        csr_der: &'a [u8],
        sm2_tls_key: Option<&'a Sm2KeyRequest>,
        exporter: &'a [u8],
    ) -> CertRequest<'a> {
        match sm2_tls_key {
            Some(key) => CertRequest::Sm2 { key, exporter },
            None => CertRequest::Csr(csr_der),
        }
    }
}

/// A certificate just issued, not yet committed.
struct Issued {
    cert: Vec<u8>,
    fingerprint: String,
    record: CertRecord,
}

impl Issued {
    /// Records this certificate as the agent's current one.
    fn apply(&self, agent: &mut AgentRecord) {
        agent.certificate_fingerprint = self.fingerprint.clone();
        agent.certificate_issued_ms = self.record.issued_ms;
        agent.certificate_not_after_ms = self.record.not_after_ms;
    }
}

/// A newly created token: its record and the `id.secret` string, shown once.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub record: TokenRecord,
    pub token: String,
}

/// Why a session could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The certificate was not issued by this control plane (or not to a known agent).
    Unknown,
    /// The certificate or its agent is revoked.
    Revoked,
    /// The stored record of the certificate or its agent is unreadable; nothing is known
    /// about the agent.
    Unavailable,
}

fn refuse(reason: JoinRefusal, message: impl Into<String>) -> JoinRejected {
    JoinRejected {
        reason,
        message: message.into(),
    }
}

fn random_chars(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new agent id: `ag-` and 16 hex digits (64 random bits).
pub fn new_agent_id() -> String {
    format!("ag-{:016x}", rand::random::<u64>())
}

/// The enrollment authority.
pub struct Enroller {
    store: Store,
    ca: Arc<CertificateAuthority>,
    divisions: Arc<Divisions>,
    clock: Arc<dyn Clock>,
    audit: Audit,
    config: EnrollConfig,
    control_plane_sm2_public_key: Vec<u8>,
    /// Serialises joins, so a token's use count and machine-id checks cannot race.
    join_lock: Mutex<()>,
}

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroller")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Enroller {
    pub fn new(
        store: Store,
        ca: Arc<CertificateAuthority>,
        divisions: Arc<Divisions>,
        clock: Arc<dyn Clock>,
        audit: Audit,
        config: EnrollConfig,
        control_plane_sm2_public_key: Vec<u8>,
    ) -> Enroller {
        Enroller {
            store,
            ca,
            divisions,
            clock,
            audit,
            config,
            control_plane_sm2_public_key,
            join_lock: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &EnrollConfig {
        &self.config
    }

    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    // --- tokens ---------------------------------------------------------------------------

    /// Creates a join token bound to a division and a role.
    pub fn create_token(
        &self,
        actor: &str,
        division: &str,
        role: Role,
        ttl: Duration,
        max_uses: u32,
        description: &str,
    ) -> Result<NewToken, EnrollError> {
        if self.divisions.get(division).is_none() {
            return Err(EnrollError::UnknownDivision(division.to_owned()));
        }
        if role == Role::Unknown {
            return Err(EnrollError::Invalid("unknown role".into()));
        }
        if max_uses == 0 {
            return Err(EnrollError::Invalid(
                "a token needs at least one use".into(),
            ));
        }
        if ttl.is_zero() {
            return Err(EnrollError::Invalid("a token needs a positive TTL".into()));
        }
        let now = self.clock.now_ms();
        let mut id = random_chars(6);
        while self.store.token(&id)?.is_some() {
            id = random_chars(6);
        }
        let secret = random_chars(16);
        let record = TokenRecord {
            id: id.clone(),
            secret_digest: digest::sm3_tagged(secret.as_bytes()),
            division: division.to_owned(),
            role,
            created_ms: now,
            expires_ms: now.saturating_add(ttl.as_millis() as u64),
            max_uses,
            uses: 0,
            revoked_ms: None,
            description: description.to_owned(),
        };
        self.store.put_token(&record)?;
        self.audit.record(
            actor,
            "token.create",
            &id,
            format!(
                "division={division} role={role} uses={max_uses} expires={}",
                format_rfc3339(record.expires_ms)
            ),
        )?;
        self.store.flush()?;
        Ok(NewToken {
            token: format!("{id}.{secret}"),
            record,
        })
    }

    /// Revokes a token; later joins with it are refused (joins re-check it when they commit).
    pub fn revoke_token(&self, actor: &str, id: &str) -> Result<TokenRecord, EnrollError> {
        let now = self.clock.now_ms();
        let mut newly = false;
        let token = self
            .store
            .update_token(id, |token| {
                newly = token.revoked_ms.is_none();
                token.revoked_ms.get_or_insert(now);
            })?
            .ok_or_else(|| EnrollError::UnknownToken(id.to_owned()))?;
        if newly {
            self.audit.record(actor, "token.revoke", id, "")?;
            self.store.flush()?;
        }
        Ok(token)
    }

    // --- joins ----------------------------------------------------------------------------

    /// Checks a token string against the store; the matching record on success.
    fn check_token(&self, token: &str, now: u64) -> Result<TokenRecord, JoinRejected> {
        let invalid = || refuse(JoinRefusal::InvalidToken, "the join token is not valid");
        let (id, secret) = token.split_once('.').ok_or_else(invalid)?;
        let record = self
            .store
            .token(id)
            .map_err(|error| internal(&error))?
            .ok_or_else(invalid)?;
        // Compare digests, so the comparison time says nothing about the secret.
        if digest::sm3_tagged(secret.as_bytes()) != record.secret_digest {
            return Err(invalid());
        }
        if record.revoked_ms.is_some() {
            return Err(refuse(
                JoinRefusal::TokenRevoked,
                format!("join token {id} has been revoked"),
            ));
        }
        if now >= record.expires_ms {
            return Err(refuse(
                JoinRefusal::TokenExpired,
                format!(
                    "join token {id} expired at {}",
                    format_rfc3339(record.expires_ms)
                ),
            ));
        }
        if record.uses >= record.max_uses {
            return Err(refuse(
                JoinRefusal::TokenUsedUp,
                format!(
                    "join token {id} has been used {} of {} times",
                    record.uses, record.max_uses
                ),
            ));
        }
        Ok(record)
    }

    fn verify_proof(
        &self,
        purpose: ProofPurpose,
        proof: &IdentityProof,
        exporter: &[u8],
    ) -> Result<AgentRecord, JoinRejected> {
        let bad = || {
            refuse(
                JoinRefusal::BadIdentityProof,
                format!(
                    "could not prove possession of agent {}'s key",
                    proof.agent_id
                ),
            )
        };
        let agent = self
            .store
            .agent(&proof.agent_id)
            .map_err(|error| internal(&error))?
            .ok_or_else(bad)?;
        let key = sm2::dsa::VerifyingKey::from_sec1_bytes(proof::SM2_DISTID, &agent.sm2_public_key)
            .map_err(|_| bad())?;
        let signature = sm2::dsa::Signature::from_slice(&proof.signature).map_err(|_| bad())?;
        let message = proof::transcript(purpose, &proof.agent_id, exporter);
        key.verify(&message, &signature).map_err(|_| bad())?;
        Ok(agent)
    }

    /// Issues a client certificate for `agent_id` from its request: a CSR under `standard`; an
    /// SM2 key whose signature over the connection's exporter value verifies under `shangmi`.
    fn issue(
        &self,
        agent_id: &str,
        request: CertRequest<'_>,
        now: u64,
    ) -> Result<Issued, JoinRejected> {
        let not_after = now.saturating_add(self.config.cert_lifetime.as_millis() as u64);
        let not_before = now.saturating_sub(self.config.backdate.as_millis() as u64);
        let bad_request = |message: String| {
            refuse(
                JoinRefusal::BadCertificateRequest,
                format!("certificate request refused: {message}"),
            )
        };
        let public;
        let key = match request {
            CertRequest::Csr(csr) => ClientKey::Csr(csr),
            CertRequest::Sm2 { key, exporter } => {
                public = match crate::pki::verify_sm2_key_request(key, exporter) {
                    Ok(public) => public,
                    Err(PkiError::BadRequest(message)) => return Err(bad_request(message)),
                    Err(error) => return Err(internal(&error)),
                };
                ClientKey::Sm2(&public)
            }
        };
        let cert = match self
            .ca
            .issue_client_key(key, agent_id, not_before, not_after)
        {
            Ok(cert) => cert.to_vec(),
            Err(PkiError::BadRequest(message) | PkiError::WrongProfile(message)) => {
                return Err(bad_request(message));
            }
            Err(error) => return Err(internal(&error)),
        };
        Ok(Issued {
            fingerprint: digest::sm3_tagged(&cert),
            record: CertRecord {
                agent_id: agent_id.to_owned(),
                issued_ms: now,
                not_after_ms: not_after,
                revoked: false,
            },
            cert,
        })
    }

    /// Commits an enrollment; maps what the stored state refused to a join refusal.
    fn commit(&self, enrollment: &Enrollment<'_>) -> Result<AgentRecord, JoinRejected> {
        match self
            .store
            .commit_enrollment(enrollment)
            .and_then(|result| self.store.flush().map(|()| result))
        {
            Ok(Ok(agent)) => Ok(agent),
            Ok(Err(refusal)) => Err(match refusal {
                CommitRefusal::AgentRevoked => refuse(
                    JoinRefusal::AgentRevoked,
                    format!("agent {} has been revoked", enrollment.agent_id),
                ),
                CommitRefusal::AgentMissing => refuse(
                    JoinRefusal::BadIdentityProof,
                    format!("agent {} does not exist", enrollment.agent_id),
                ),
                CommitRefusal::TokenMissing => {
                    refuse(JoinRefusal::InvalidToken, "the join token is not valid")
                }
                CommitRefusal::TokenRevoked => {
                    refuse(JoinRefusal::TokenRevoked, "the join token has been revoked")
                }
                CommitRefusal::TokenExpired => {
                    refuse(JoinRefusal::TokenExpired, "the join token has expired")
                }
                CommitRefusal::TokenUsedUp => {
                    refuse(JoinRefusal::TokenUsedUp, "the join token has been used up")
                }
            }),
            Err(error) => Err(internal(&error)),
        }
    }

    /// Appends the outcome of an enrollment request to the audit log. An accepted request
    /// has already been committed (and flushed), so a failure to record it is logged and does
    /// not turn it into a refusal; refusals are not flushed one by one, so that a flood of bad
    /// requests cannot force a flood of fsyncs (the store's periodic flush covers them).
    fn audited<T>(
        &self,
        result: Result<T, JoinRejected>,
        entry: (&str, &str, &str, String),
    ) -> Result<T, JoinRejected> {
        let (actor, action, target, detail) = entry;
        let recorded = self.audit.record(actor, action, target, detail);
        let recorded = match (&result, recorded) {
            (Ok(_), Ok(_)) => self.store.flush(),
            (_, recorded) => recorded.map(|_| ()),
        };
        if let Err(error) = recorded {
            tracing::error!(%error, action, target, "could not append to the audit log");
        }
        result
    }

    fn accepted(&self, agent: &AgentRecord, cert: Vec<u8>, rejoined: bool) -> JoinAccepted {
        JoinAccepted {
            agent_id: agent.id.clone(),
            division: agent.division.clone(),
            division_path: self.divisions.path_names(&agent.division),
            role: agent.role,
            certificate_der: ByteBuf::from(cert),
            certificate_issued_ms: agent.certificate_issued_ms,
            certificate_not_after_ms: agent.certificate_not_after_ms,
            ca_certificate_der: ByteBuf::from(self.ca.cert_der().to_vec()),
            control_plane_sm2_public_key: ByteBuf::from(self.control_plane_sm2_public_key.clone()),
            params: self.config.params.clone(),
            rejoined,
            possible_clone: agent.possible_clone,
        }
    }

    /// Handles a join. `exporter` is the connection's TLS exporter value for
    /// [`proof::EXPORTER_LABEL`]; `peer` names the remote address for the audit log. A join
    /// still waiting for its turn at `deadline` (the agent has given up) is refused rather than
    /// committed, so a timed-out agent never leaves an orphan identity behind.
    pub fn join(
        &self,
        request: &JoinRequest,
        exporter: &[u8],
        peer: &str,
        deadline: Instant,
    ) -> Result<JoinAccepted, JoinRejected> {
        let _guard = self
            .join_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let result = if Instant::now() > deadline {
            Err(refuse(
                JoinRefusal::RateLimited,
                "the control plane is busy; try again later",
            ))
        } else {
            self.join_locked(request, exporter)
        };
        let token_id = request
            .token
            .split_once('.')
            .map(|(id, _)| id)
            .unwrap_or("");
        let entry = match &result {
            Ok(accepted) => (
                format!("agent:{}", accepted.agent_id),
                "agent.join",
                accepted.agent_id.clone(),
                format!(
                    "token={token_id} division={} role={} host={} peer={peer} rejoined={} possible_clone={}",
                    accepted.division,
                    accepted.role,
                    request.facts.hostname,
                    accepted.rejoined,
                    accepted.possible_clone
                ),
            ),
            Err(rejected) => (
                "anonymous".to_owned(),
                "agent.join.refused",
                token_id.to_owned(),
                format!(
                    "reason={} host={} peer={peer}",
                    rejected.reason.as_str(),
                    request.facts.hostname
                ),
            ),
        };
        self.audited(result, (&entry.0, entry.1, &entry.2, entry.3))
    }

    fn join_locked(
        &self,
        request: &JoinRequest,
        exporter: &[u8],
    ) -> Result<JoinAccepted, JoinRejected> {
        let now = self.clock.now_ms();
        let token = self.check_token(&request.token, now)?;
        let division = request
            .division
            .clone()
            .unwrap_or_else(|| token.division.clone());
        if self.divisions.get(&division).is_none() {
            return Err(refuse(
                JoinRefusal::UnknownDivision,
                format!("division {division} does not exist in this deployment's division tree"),
            ));
        }
        if !self.divisions.is_within(&division, &token.division) {
            return Err(refuse(
                JoinRefusal::DivisionOutOfScope,
                format!(
                    "division {division} is outside the token's division {} ({})",
                    token.division,
                    self.divisions.path_names(&token.division)
                ),
            ));
        }
        if sm2::PublicKey::from_sec1_bytes(&request.sm2_public_key).is_err() {
            return Err(refuse(
                JoinRefusal::BadCertificateRequest,
                "the SM2 public key is not a valid SEC1 point",
            ));
        }

        // A re-join keeps the agent only with proof of its key; otherwise it is a new agent,
        // flagged when its machine instance enrolled before without that proof.
        let (agent_id, template) = match &request.previous {
            Some(proof) => {
                let agent = self.verify_proof(ProofPurpose::Rejoin, proof, exporter)?;
                if agent.revoked_ms.is_some() {
                    return Err(refuse(
                        JoinRefusal::AgentRevoked,
                        format!("agent {} has been revoked; join as a new agent", agent.id),
                    ));
                }
                (agent.id, None)
            }
            None => {
                let clone_of = if request.facts.machine_id.is_empty() {
                    None
                } else {
                    self.store
                        .agent_for_machine(&request.facts.machine_id, &request.instance_id)
                        .map_err(|error| internal(&error))?
                        .filter(|existing| existing.revoked_ms.is_none())
                        .map(|existing| existing.id)
                };
                let mut id = new_agent_id();
                while self
                    .store
                    .agent(&id)
                    .map_err(|error| internal(&error))?
                    .is_some()
                {
                    id = new_agent_id();
                }
                let template = AgentRecord {
                    id: id.clone(),
                    created_ms: now,
                    possible_clone: clone_of.is_some(),
                    clone_of,
                    ..AgentRecord::default()
                };
                (id, Some(template))
            }
        };
        let issued = self.issue(
            &agent_id,
            CertRequest::of(&request.csr_der, request.sm2_tls_key.as_ref(), exporter),
            now,
        )?;
        let change = |agent: &mut AgentRecord| {
            issued.apply(agent);
            agent.division = division.clone();
            agent.role = token.role;
            agent.instance_id = request.instance_id.clone();
            agent.facts = request.facts.clone();
            agent.sm2_public_key = request.sm2_public_key.clone();
            agent.joined_ms = now;
            agent.token_id = token.id.clone();
            agent.agent_version = request.agent_version.clone();
        };
        let agent = self.commit(&Enrollment {
            agent_id: &agent_id,
            new_agent: template.as_ref(),
            change: &change,
            cert: &issued.record,
            token: Some((&token.id, now)),
        })?;
        Ok(self.accepted(&agent, issued.cert, template.is_none()))
    }

    /// Renews an expired certificate within the grace period, by proof of the identity key.
    pub fn renew_expired(
        &self,
        request: &RenewRequest,
        exporter: &[u8],
        peer: &str,
    ) -> Result<JoinAccepted, JoinRejected> {
        let _guard = self
            .join_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let result = (|| {
            let now = self.clock.now_ms();
            let agent = self.verify_proof(ProofPurpose::Renew, &request.proof, exporter)?;
            if agent.revoked_ms.is_some() {
                return Err(refuse(
                    JoinRefusal::AgentRevoked,
                    format!("agent {} has been revoked", agent.id),
                ));
            }
            let grace_end = agent
                .certificate_not_after_ms
                .saturating_add(self.config.grace_period.as_millis() as u64);
            if now > grace_end {
                return Err(refuse(
                    JoinRefusal::GracePeriodOver,
                    format!(
                        "agent {}'s certificate expired at {} and the grace period ended at {}; join again with a token",
                        agent.id,
                        format_rfc3339(agent.certificate_not_after_ms),
                        format_rfc3339(grace_end)
                    ),
                ));
            }
            let issued = self.issue(
                &agent.id,
                CertRequest::of(&request.csr_der, request.sm2_tls_key.as_ref(), exporter),
                now,
            )?;
            let change = |agent: &mut AgentRecord| {
                issued.apply(agent);
                agent.agent_version = request.agent_version.clone();
            };
            let agent = self.commit(&Enrollment {
                agent_id: &agent.id,
                new_agent: None,
                change: &change,
                cert: &issued.record,
                token: None,
            })?;
            let cert = issued.cert;
            Ok(self.accepted(&agent, cert, true))
        })();
        let entry = match &result {
            Ok(accepted) => (
                format!("agent:{}", accepted.agent_id),
                "agent.renew_expired",
                format!("peer={peer}"),
            ),
            Err(rejected) => (
                "anonymous".to_owned(),
                "agent.renew_expired.refused",
                format!("reason={} peer={peer}", rejected.reason.as_str()),
            ),
        };
        self.audited(
            result,
            (&entry.0, entry.1, &request.proof.agent_id, entry.2),
        )
    }

    /// Renews the certificate of an authenticated agent (over its session). At most one
    /// renewal per tenth of a certificate's life (and at least one a minute is allowed), so a
    /// misbehaving agent cannot mint certificates in a loop.
    pub fn renew(
        &self,
        agent_id: &str,
        request: CertRequest<'_>,
    ) -> Result<CertificateRenewed, EnrollError> {
        let _guard = self
            .join_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = self.clock.now_ms();
        let agent = self
            .store
            .agent(agent_id)?
            .ok_or_else(|| EnrollError::UnknownAgent(agent_id.to_owned()))?;
        if agent.revoked_ms.is_some() {
            return Err(EnrollError::AgentRevoked(agent_id.to_owned()));
        }
        let spacing = (self.config.cert_lifetime / 10).min(std::time::Duration::from_secs(60));
        if now
            < agent
                .certificate_issued_ms
                .saturating_add(spacing.as_millis() as u64)
        {
            return Err(EnrollError::Invalid(format!(
                "certificate renewed less than {}s ago",
                spacing.as_secs_f32()
            )));
        }
        let issued =
            self.issue(agent_id, request, now)
                .map_err(|rejected| match rejected.reason {
                    JoinRefusal::BadCertificateRequest => EnrollError::Invalid(rejected.message),
                    _ => EnrollError::Internal(rejected.message),
                })?;
        let change = |agent: &mut AgentRecord| issued.apply(agent);
        self.commit(&Enrollment {
            agent_id,
            new_agent: None,
            change: &change,
            cert: &issued.record,
            token: None,
        })
        .map_err(|rejected| match rejected.reason {
            JoinRefusal::AgentRevoked => EnrollError::AgentRevoked(agent_id.to_owned()),
            _ => EnrollError::Internal(rejected.message),
        })?;
        if let Err(error) =
            self.audit
                .record(&format!("agent:{agent_id}"), "agent.renew", agent_id, "")
        {
            tracing::error!(%error, "could not append to the audit log");
        }
        Ok(CertificateRenewed {
            certificate_der: ByteBuf::from(issued.cert),
            issued_ms: now,
            not_after_ms: issued.record.not_after_ms,
        })
    }

    /// Issues identities in bulk for agents provisioned by an operator (imaging terminals
    /// before shipping, the load simulator): the same checks, certificate issuance and
    /// transactional commit as a join, authorised by the operator instead of a token, with one
    /// flush and one audit entry for the whole batch.
    pub fn issue_bulk(
        &self,
        actor: &str,
        requests: &[BulkRequest],
    ) -> Result<Vec<JoinAccepted>, EnrollError> {
        let _guard = self
            .join_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = self.clock.now_ms();
        let binding = proof::bulk_issue_binding(&self.ca.fingerprint());
        // Everything is checked and every certificate issued before anything is committed,
        // so a batch with one bad entry changes nothing.
        let mut prepared = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            if self.divisions.get(&request.division).is_none() {
                return Err(EnrollError::UnknownDivision(request.division.clone()));
            }
            if request.role == Role::Unknown {
                return Err(EnrollError::Invalid(format!("entry {index}: unknown role")));
            }
            if sm2::PublicKey::from_sec1_bytes(&request.sm2_public_key).is_err() {
                return Err(EnrollError::Invalid(format!(
                    "entry {index}: the SM2 public key is not a valid SEC1 point"
                )));
            }
            let mut id = new_agent_id();
            while self.store.agent(&id)?.is_some() {
                id = new_agent_id();
            }
            let cert_request = match (&request.sm2_tls_key, self.ca.profile()) {
                (Some(key), _) => CertRequest::Sm2 {
                    key,
                    exporter: &binding,
                },
                (None, CryptoProfile::Shangmi) => {
                    return Err(EnrollError::Invalid(format!(
                        "entry {index}: this control plane uses the shangmi crypto profile: send \
                         tls_public_key and tls_key_signature (an SM2 key and its proof of \
                         possession) instead of a PKCS#10 request"
                    )));
                }
                (None, CryptoProfile::Standard) => CertRequest::Csr(&request.csr_der),
            };
            let certificate = self.issue(&id, cert_request, now).map_err(|rejected| {
                EnrollError::Invalid(format!("entry {index}: {}", rejected.message))
            })?;
            prepared.push((id, request, certificate));
        }
        let mut issued = Vec::with_capacity(prepared.len());
        for (id, request, certificate) in prepared {
            let template = AgentRecord {
                id: id.clone(),
                created_ms: now,
                ..AgentRecord::default()
            };
            let change = |agent: &mut AgentRecord| {
                certificate.apply(agent);
                agent.division = request.division.clone();
                agent.role = request.role;
                agent.instance_id = request.instance_id.clone();
                agent.facts.hostname = request.hostname.clone();
                agent.sm2_public_key = ByteBuf::from(request.sm2_public_key.clone());
                agent.joined_ms = now;
                agent.token_id = format!("bulk:{actor}");
            };
            let agent = match self.store.commit_enrollment(&Enrollment {
                agent_id: &id,
                new_agent: Some(&template),
                change: &change,
                cert: &certificate.record,
                token: None,
            })? {
                Ok(agent) => agent,
                Err(refusal) => return Err(EnrollError::Internal(format!("{refusal:?}"))),
            };
            issued.push(self.accepted(&agent, certificate.cert, false));
        }
        self.audit.record(
            actor,
            "agent.issue_bulk",
            &format!("{} agents", issued.len()),
            issued
                .first()
                .map(|first| format!("first={}", first.agent_id))
                .unwrap_or_default(),
        )?;
        self.store.flush()?;
        Ok(issued)
    }

    /// Maps a presented client certificate to its agent's id.
    pub fn authenticate(&self, cert_der: &[u8]) -> Result<String, AuthError> {
        self.authenticate_fingerprint(&digest::sm3_tagged(cert_der))
    }

    /// Maps a client certificate's `sm3:` fingerprint to its agent's id. Answered from the
    /// store's in-memory session index: never waits on the store.
    pub fn authenticate_fingerprint(&self, fingerprint: &str) -> Result<String, AuthError> {
        match self.store.certificate_standing(fingerprint) {
            Standing::Agent(agent_id) => Ok(agent_id),
            Standing::Unknown => Err(AuthError::Unknown),
            Standing::Revoked => Err(AuthError::Revoked),
            Standing::Unreadable => Err(AuthError::Unavailable),
        }
    }
}

fn internal(error: &dyn std::fmt::Display) -> JoinRejected {
    tracing::error!(%error, "enrollment failed inside the control plane");
    refuse(
        JoinRefusal::Internal,
        "the control plane could not complete the request; try again later",
    )
}
