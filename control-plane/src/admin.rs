//! Operator actions and views, shared by the HTTP API and the CLI.
//!
//! The API handlers and the CLI's local mode (no `run` holding the store) both call
//! [`Admin`]; the CLI's remote mode calls the API and gets the same view types back as JSON.
//! So there is one implementation of every action, and every one is audited here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bagui_protocol::{
    Reconnect, RenewCertificateNow, Role, SendFullSnapshot, ServerMessage, SetHeartbeatInterval,
    SetProbes, units,
};
use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::clock::{Clock, format_rfc3339};
use crate::divisions::Divisions;
use crate::enroll::{EnrollError, Enroller};
use crate::ingest::{LiveSession, Sessions};
use crate::inventory::{
    AssetView, ChangeView, CheckView, DivisionPostureRow, FailingRow, FindRow, FindingView,
    HealthView, PostureView, severity_rank,
};
use crate::probes::{ProbePolicy, ProbeRequest};
use crate::store::ProbeSet;
use crate::store::{AgentRecord, AuditEntry, Store, StoreError, TokenRecord};
use crate::topology;

/// An operator action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unauthorized(String),
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> AdminError {
        AdminError::Internal(error.to_string())
    }
}

impl From<EnrollError> for AdminError {
    fn from(error: EnrollError) -> AdminError {
        match error {
            EnrollError::UnknownDivision(_) | EnrollError::Invalid(_) => {
                AdminError::BadRequest(error.to_string())
            }
            EnrollError::UnknownToken(_) | EnrollError::UnknownAgent(_) => {
                AdminError::NotFound(error.to_string())
            }
            EnrollError::AgentRevoked(_) => AdminError::Conflict(error.to_string()),
            EnrollError::Store(_) | EnrollError::Pki(_) | EnrollError::Internal(_) => {
                AdminError::Internal(error.to_string())
            }
        }
    }
}

/// An agent as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    pub division: String,
    pub division_path: String,
    pub role: Role,
    /// True only while an authenticated session is open.
    pub online: bool,
    /// RFC 3339; `null` if never seen.
    pub last_seen: Option<String>,
    /// Highest report sequence number stored (and acknowledged).
    pub last_acked_seq: u64,
    pub agent_version: String,
    pub possible_clone: bool,
    pub clone_of: Option<String>,
    pub revoked: bool,
    /// Agent id of the uplink gateway; `null` when the agent talks to the control plane directly.
    pub uplink: Option<String>,
    pub uplink_overridden: bool,
    pub machine_id: String,
    pub instance_id: String,
    pub os: String,
    pub arch: String,
    pub remote_address: Option<String>,
    pub certificate_expires: String,
    pub joined: String,
    pub outbox_records: u64,
    pub outbox_dropped: u64,
    pub rtt_ms: Option<f64>,
    /// TLS cipher suite of the open session (`TLS_SM4_GCM_SM3` under shangmi); `null` offline.
    #[serde(default)]
    pub tls_suite: Option<String>,
    /// Key-exchange group of the open session (`curveSM2` under shangmi); `null` offline.
    #[serde(default)]
    pub kx_group: Option<String>,
}

/// A join token as operators see it (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub division: String,
    pub division_path: String,
    pub role: Role,
    pub created: String,
    pub expires: String,
    pub uses: u32,
    pub max_uses: u32,
    /// `valid`, `expired`, `used_up` or `revoked`.
    pub state: String,
    pub description: String,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    pub join_command: String,
    #[serde(flatten)]
    pub view: TokenView,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateToken {
    pub division: String,
    /// `24h`, `7d`, …
    pub ttl: String,
    pub uses: u32,
    pub role: String,
    pub description: String,
}

impl Default for CreateToken {
    fn default() -> CreateToken {
        CreateToken {
            division: String::new(),
            ttl: "24h".into(),
            uses: 1,
            role: "server".into(),
            description: String::new(),
        }
    }
}

/// `PUT /api/v1/agents/{id}/uplink`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetUplink {
    /// Gateway agent id, or `null` to return to the computed uplink.
    pub gateway: Option<String>,
}

/// `POST /api/v1/agents/{id}/commands`: one of the allow-listed kinds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandRequest {
    /// `send_full_snapshot`, `reconnect`, `renew_certificate` or `set_heartbeat_interval`.
    pub kind: String,
    /// For `reconnect`: `30s`, …
    pub after: Option<String>,
    /// For `set_heartbeat_interval`: `15s`, …
    pub interval: Option<String>,
}

/// The probes pushed to one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSetView {
    pub agent_id: String,
    /// The agent confirmed the current set.
    pub delivered: bool,
    pub probes: Vec<bagui_protocol::PushedProbe>,
}

/// What `asset changes` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChangesQuery {
    /// RFC 3339 time or a duration back from now (`24h`, `7d`).
    pub since: Option<String>,
    pub division: Option<String>,
    pub agent: Option<String>,
    pub section: Option<String>,
    pub limit: Option<usize>,
}

/// What `posture findings` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FindingsQuery {
    pub since: Option<String>,
    pub division: Option<String>,
    pub agent: Option<String>,
    /// At least this severity (`low`, `medium`, `high`, `critical`).
    pub severity: Option<String>,
    pub limit: Option<usize>,
}

/// What `asset find` asks for; every given criterion must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FindQuery {
    pub package: Option<String>,
    pub version_below: Option<String>,
    pub version_at_least: Option<String>,
    pub port: Option<u16>,
    pub os: Option<String>,
    pub division: Option<String>,
    pub online: Option<bool>,
}

/// Orders two versions the way the package's own manager does.
fn version_order(source: &str, version: &str, bound: &str) -> std::cmp::Ordering {
    use bagui_plugins::packages::version;
    match source {
        "rpm" => version::compare_rpm(version, bound),
        _ => version::compare_dpkg(version, bound),
    }
}

/// `--since`: an RFC 3339 time, or a duration back from `now_ms` (`90m`, `24h`, `7d`).
fn parse_since(text: &str, now_ms: u64) -> Result<u64, AdminError> {
    if let Ok(ms) = units::parse_rfc3339(text) {
        return Ok(ms);
    }
    let duration = units::parse_duration(text).map_err(|_| {
        AdminError::BadRequest(format!(
            "--since {text:?}: expected an RFC 3339 time or a duration such as 24h or 7d"
        ))
    })?;
    Ok(now_ms.saturating_sub(duration.as_millis() as u64))
}

/// A command that was audited and queued to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandSent {
    pub command_id: u64,
    pub agent_id: String,
    pub kind: String,
}

/// A stored report, without its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportView {
    pub seq: u64,
    pub lane: String,
    pub kind: String,
    pub created_ms: u64,
    pub received_ms: u64,
    pub late: bool,
    pub arrival: u64,
    pub size: usize,
}

/// `POST /api/v1/agents/issue`: identities issued in bulk from operator-held keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IssueRequest {
    pub agents: Vec<IssueAgent>,
}

/// One identity of an [`IssueRequest`]; binary fields are hex.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IssueAgent {
    pub division: String,
    /// `server`, `gateway` or `terminal`.
    pub role: String,
    pub instance_id: String,
    pub hostname: String,
    /// PKCS#10 request, DER, hex (`standard` deployments).
    pub csr: String,
    /// SEC1 SM2 public key, hex: the agent's identity key (both profiles).
    pub sm2_public_key: String,
    /// `shangmi` deployments, in place of `csr`: the SEC1 SM2 public key to certify for TLS,
    /// hex.
    pub tls_public_key: String,
    /// `shangmi`: that TLS key's SM2 signature (r‖s, hex; signer ID `1234567812345678`) over
    /// `proof::tls_key_transcript(tls_public_key, proof::bulk_issue_binding(CA fingerprint))`,
    /// the proof of possession a CSR's self-signature is under `standard`.
    pub tls_key_signature: String,
}

/// The answer to an [`IssueRequest`], in request order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IssueResponse {
    pub agents: Vec<IssuedAgent>,
}

/// One issued identity; binary fields are hex.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IssuedAgent {
    pub agent_id: String,
    pub division: String,
    pub division_path: String,
    pub certificate: String,
    pub certificate_issued_ms: u64,
    pub certificate_not_after_ms: u64,
    pub ca_certificate: String,
    pub control_plane_sm2_public_key: String,
    pub heartbeat_interval_ms: u64,
    pub max_in_flight: u32,
    pub max_frame_len: u32,
}

/// Largest batch one [`IssueRequest`] may carry.
pub const MAX_ISSUE_BATCH: usize = 1_000;

/// The operator interface.
pub struct Admin {
    store: Store,
    divisions: Arc<Divisions>,
    enroller: Arc<Enroller>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    /// `None` in the CLI's local mode: nothing is connected.
    sessions: Option<Sessions>,
    /// `HOST:PORT` agents join.
    advertise: String,
    /// What operators may push as probes.
    probe_policy: ProbePolicy,
    /// Work orders, teams, notifications (see `crate::admin_ops`).
    pub(crate) dispatcher: Option<crate::dispatch::Dispatcher>,
    /// Where external alerts enter the incident engine; `None` in the CLI's local mode.
    pub(crate) link_events: Option<crate::dispatch::LinkEvents>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

fn token_state(token: &TokenRecord, now: u64) -> &'static str {
    if token.revoked_ms.is_some() {
        "revoked"
    } else if now >= token.expires_ms {
        "expired"
    } else if token.uses >= token.max_uses {
        "used_up"
    } else {
        "valid"
    }
}

impl Admin {
    pub fn new(
        store: Store,
        divisions: Arc<Divisions>,
        enroller: Arc<Enroller>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        sessions: Option<Sessions>,
        advertise: String,
    ) -> Admin {
        Admin {
            store,
            divisions,
            enroller,
            audit,
            clock,
            sessions,
            advertise,
            probe_policy: ProbePolicy::default(),
            dispatcher: None,
            link_events: None,
        }
    }

    /// Connects the dispatcher (and, when running, the incident engine's event queue).
    pub fn with_dispatcher(
        mut self,
        dispatcher: crate::dispatch::Dispatcher,
        events: crate::dispatch::LinkEvents,
    ) -> Admin {
        self.dispatcher = Some(dispatcher);
        self.link_events = Some(events);
        self
    }

    /// Connects the dispatcher without an event queue (the CLI's local mode).
    pub fn with_local_dispatcher(mut self, dispatcher: crate::dispatch::Dispatcher) -> Admin {
        self.dispatcher = Some(dispatcher);
        self
    }

    pub(crate) fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Sets the pushed-probe policy (from the config of `run`).
    pub fn with_probe_policy(mut self, policy: ProbePolicy) -> Admin {
        self.probe_policy = policy;
        self
    }

    pub fn divisions(&self) -> &Divisions {
        &self.divisions
    }

    fn token_view(&self, token: &TokenRecord) -> TokenView {
        TokenView {
            id: token.id.clone(),
            division: token.division.clone(),
            division_path: self.divisions.path_names(&token.division),
            role: token.role,
            created: format_rfc3339(token.created_ms),
            expires: format_rfc3339(token.expires_ms),
            uses: token.uses,
            max_uses: token.max_uses,
            state: token_state(token, self.clock.now_ms()).to_owned(),
            description: token.description.clone(),
        }
    }

    /// `sm3:` of the deployment CA (what `--ca-hash` pins).
    pub fn ca_fingerprint(&self) -> String {
        self.enroller.ca().fingerprint()
    }

    /// The deployment's crypto profile (of its CA).
    pub fn crypto_profile(&self) -> bagui_protocol::CryptoProfile {
        self.enroller.ca().profile()
    }

    /// The one-line command an operator runs on the machine to enroll. Under `shangmi` it
    /// carries `--crypto-profile shangmi` (the CA it pins is an SM2 CA, so the pin covers the
    /// profile too); `standard` commands are as they always were.
    pub fn join_command(&self, token: &str) -> String {
        let profile = match self.crypto_profile() {
            bagui_protocol::CryptoProfile::Standard => String::new(),
            other => format!(" --crypto-profile {other}"),
        };
        format!(
            "bagui-agent join --server {} --token {token}{profile} --ca-hash {}",
            self.advertise,
            self.ca_fingerprint()
        )
    }

    pub fn create_token(
        &self,
        actor: &str,
        request: &CreateToken,
    ) -> Result<TokenCreated, AdminError> {
        let ttl = units::parse_duration(&request.ttl).map_err(AdminError::BadRequest)?;
        let role: Role = request.role.parse().map_err(AdminError::BadRequest)?;
        let created = self.enroller.create_token(
            actor,
            &request.division,
            role,
            ttl,
            request.uses,
            &request.description,
        )?;
        Ok(TokenCreated {
            join_command: self.join_command(&created.token),
            token: created.token,
            view: self.token_view(&created.record),
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenView>, AdminError> {
        let mut tokens = self.store.tokens()?;
        tokens.sort_by_key(|token| std::cmp::Reverse(token.created_ms));
        Ok(tokens.iter().map(|token| self.token_view(token)).collect())
    }

    pub fn revoke_token(&self, actor: &str, id: &str) -> Result<TokenView, AdminError> {
        let token = self.enroller.revoke_token(actor, id)?;
        Ok(self.token_view(&token))
    }

    fn agent_view(
        &self,
        agent: &AgentRecord,
        live: Option<&LiveSession>,
        uplink: Option<String>,
    ) -> Result<AgentView, AdminError> {
        let last_seen_ms = live
            .map(|l| l.last_seen_ms)
            .unwrap_or(0)
            .max(agent.last_seen_ms);
        let heartbeat = live.and_then(|l| l.heartbeat.as_ref());
        let outbox = heartbeat.map(|h| &h.outbox).unwrap_or(&agent.outbox);
        let link = heartbeat.map(|h| &h.link).unwrap_or(&agent.link);
        Ok(AgentView {
            id: agent.id.clone(),
            hostname: agent.facts.hostname.clone(),
            division: agent.division.clone(),
            division_path: self.divisions.path_names(&agent.division),
            role: agent.role,
            online: is_online(agent, live),
            last_seen: (last_seen_ms > 0).then(|| format_rfc3339(last_seen_ms)),
            last_acked_seq: self.store.max_seq(&agent.id)?,
            agent_version: live
                .map(|l| l.agent_version.clone())
                .filter(|version| !version.is_empty())
                .unwrap_or_else(|| agent.agent_version.clone()),
            possible_clone: agent.possible_clone,
            clone_of: agent.clone_of.clone(),
            revoked: agent.revoked_ms.is_some(),
            uplink,
            uplink_overridden: agent.uplink_override.is_some(),
            machine_id: agent.facts.machine_id.clone(),
            instance_id: agent.instance_id.clone(),
            os: agent.facts.os_name.clone(),
            arch: agent.facts.arch.clone(),
            remote_address: live.map(|l| l.remote_address.clone()),
            certificate_expires: format_rfc3339(agent.certificate_not_after_ms),
            joined: format_rfc3339(agent.joined_ms),
            outbox_records: outbox.records,
            outbox_dropped: outbox.dropped.total(),
            rtt_ms: (link.rtt_us > 0).then(|| link.rtt_us as f64 / 1000.0),
            tls_suite: live.map(|l| l.crypto_profile.tls_suite().to_owned()),
            kx_group: live.map(|l| l.crypto_profile.kx_group().to_owned()),
        })
    }

    /// Every agent, or those within a division's subtree, ordered by division then id.
    pub fn agents(&self, division: Option<&str>) -> Result<Vec<AgentView>, AdminError> {
        if let Some(code) = division
            && self.divisions.get(code).is_none()
        {
            return Err(AdminError::BadRequest(format!("unknown division {code}")));
        }
        let mut agents = self.store.agents()?;
        let uplinks = topology::uplinks(&agents, &self.divisions);
        agents.retain(|agent| {
            division.is_none_or(|code| self.divisions.is_within(&agent.division, code))
        });
        agents.sort_by(|a, b| (&a.division, &a.id).cmp(&(&b.division, &b.id)));
        let live = self
            .sessions
            .as_ref()
            .map(Sessions::snapshot)
            .unwrap_or_default();
        agents
            .iter()
            .map(|agent| {
                let uplink = uplinks.get(&agent.id).cloned().flatten();
                self.agent_view(agent, live.get(&agent.id), uplink)
            })
            .collect()
    }

    pub fn agent(&self, id: &str) -> Result<AgentView, AdminError> {
        let agents = self.store.agents()?;
        let agent = agents
            .iter()
            .find(|agent| agent.id == id)
            .ok_or_else(|| AdminError::NotFound(format!("unknown agent {id}")))?;
        let uplink = topology::uplinks(&agents, &self.divisions)
            .remove(id)
            .flatten();
        let live = self.sessions.as_ref().and_then(|sessions| sessions.get(id));
        self.agent_view(agent, live.as_ref(), uplink)
    }

    /// Revokes an agent: its certificates stop working and its session closes at once.
    pub fn revoke_agent(&self, actor: &str, id: &str) -> Result<AgentView, AdminError> {
        self.store
            .revoke_agent(id, self.clock.now_ms())?
            .ok_or_else(|| AdminError::NotFound(format!("unknown agent {id}")))?;
        let disconnected = self.sessions.as_ref().is_some_and(|sessions| {
            sessions.disconnect(id, bagui_protocol::ErrorCode::Revoked, "agent revoked")
        });
        self.audit.record(
            actor,
            "agent.revoke",
            id,
            format!("disconnected={disconnected}"),
        )?;
        self.store.flush()?;
        self.agent(id)
    }

    /// Sets (or with `None` clears) an agent's uplink override.
    pub fn set_uplink(
        &self,
        actor: &str,
        id: &str,
        gateway: Option<&str>,
    ) -> Result<AgentView, AdminError> {
        if let Some(gateway) = gateway {
            if gateway == id {
                return Err(AdminError::BadRequest(
                    "an agent cannot be its own uplink".into(),
                ));
            }
            let target = self.store.agent(gateway)?.ok_or_else(|| {
                AdminError::BadRequest(format!("unknown gateway agent {gateway}"))
            })?;
            if target.revoked_ms.is_some() {
                return Err(AdminError::BadRequest(format!(
                    "agent {gateway} is revoked"
                )));
            }
            if target.role != Role::Gateway {
                return Err(AdminError::BadRequest(format!(
                    "agent {gateway} has role {}, not gateway",
                    target.role
                )));
            }
        }
        self.store
            .update_agent(id, |agent| {
                agent.uplink_override = gateway.map(str::to_owned)
            })?
            .ok_or_else(|| AdminError::NotFound(format!("unknown agent {id}")))?;
        self.audit.record(
            actor,
            "agent.set_uplink",
            id,
            format!("gateway={}", gateway.unwrap_or("(computed)")),
        )?;
        self.store.flush()?;
        self.agent(id)
    }

    /// Stored reports of an agent after a sequence number.
    pub fn reports(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<ReportView>, AdminError> {
        if self.store.agent(id)?.is_none() {
            return Err(AdminError::NotFound(format!("unknown agent {id}")));
        }
        Ok(self
            .store
            .reports(id, after_seq, limit.min(10_000))?
            .into_iter()
            .map(|(seq, report)| ReportView {
                seq,
                lane: report.lane.as_str().to_owned(),
                kind: report.kind,
                created_ms: report.created_ms,
                received_ms: report.received_ms,
                late: report.late,
                arrival: report.arrival,
                size: report.body.len(),
            })
            .collect())
    }

    // --- assets (资产在线) and health ------------------------------------------------------

    /// The current asset record of an agent.
    pub fn asset(&self, id: &str) -> Result<AssetView, AdminError> {
        let agent = self.agent(id)?;
        let record = self.store.asset(id)?.ok_or_else(|| {
            AdminError::NotFound(format!("agent {id} has not sent an asset snapshot yet"))
        })?;
        Ok(AssetView::new(&agent, record))
    }

    /// Asset changes since `since_ms`, oldest first, optionally within a division subtree or
    /// of one agent.
    pub fn asset_changes(&self, query: &ChangesQuery) -> Result<Vec<ChangeView>, AdminError> {
        let agents: HashMap<String, AgentView> = self
            .agents(query.division.as_deref())?
            .into_iter()
            .map(|agent| (agent.id.clone(), agent))
            .collect();
        if let Some(id) = &query.agent
            && !agents.contains_key(id)
        {
            return Err(AdminError::NotFound(format!(
                "unknown agent {id} in that scope"
            )));
        }
        let since_ms = match &query.since {
            Some(text) => parse_since(text, self.clock.now_ms())?,
            None => 0,
        };
        let limit = query.limit.unwrap_or(1000).clamp(1, 100_000);
        let records = self.store.asset_changes(
            since_ms,
            |change| {
                agents.contains_key(&change.agent_id)
                    && query.agent.as_ref().is_none_or(|id| *id == change.agent_id)
                    && query
                        .section
                        .as_ref()
                        .is_none_or(|section| *section == change.change.section)
            },
            limit,
        )?;
        Ok(records
            .into_iter()
            .map(|record| {
                let agent = &agents[&record.agent_id];
                let (hostname, division) = (agent.hostname.clone(), agent.division.clone());
                ChangeView::new(record, &hostname, &division)
            })
            .collect())
    }

    /// Agents matching every given criterion: a package (optionally below / at least a
    /// version, in the package manager's own ordering), an open port, an OS, a division
    /// subtree, online state.
    pub fn asset_find(&self, query: &FindQuery) -> Result<Vec<FindRow>, AdminError> {
        if query.package.is_none()
            && (query.version_below.is_some() || query.version_at_least.is_some())
        {
            return Err(AdminError::BadRequest(
                "--version-below/--version-at-least need --package".into(),
            ));
        }
        let agents = self.agents(query.division.as_deref())?;
        let holders: Option<HashMap<String, Vec<bagui_protocol::assets::Package>>> =
            match &query.package {
                Some(name) => {
                    let mut map: HashMap<String, Vec<_>> = HashMap::new();
                    for holding in self.store.package_holders(name)? {
                        let keep = query.version_below.as_ref().is_none_or(|bound| {
                            version_order(&holding.source, &holding.version, bound).is_lt()
                        }) && query.version_at_least.as_ref().is_none_or(|bound| {
                            version_order(&holding.source, &holding.version, bound).is_ge()
                        });
                        if keep {
                            map.entry(holding.agent_id).or_default().push(
                                bagui_protocol::assets::Package {
                                    name: name.clone(),
                                    version: holding.version,
                                    arch: holding.arch,
                                    source: holding.source,
                                },
                            );
                        }
                    }
                    Some(map)
                }
                None => None,
            };
        let mut rows = Vec::new();
        for agent in agents {
            if query.online.is_some_and(|online| online != agent.online) {
                continue;
            }
            let packages = match &holders {
                Some(map) => match map.get(&agent.id) {
                    Some(packages) => packages.clone(),
                    None => continue,
                },
                None => Vec::new(),
            };
            let needs_record = query.port.is_some() || query.os.is_some();
            let record = if needs_record {
                match self.store.asset(&agent.id)? {
                    Some(record) => Some(record),
                    None => continue,
                }
            } else {
                None
            };
            let mut listening = Vec::new();
            if let (Some(port), Some(record)) = (query.port, &record) {
                listening = record
                    .snapshot
                    .listening
                    .iter()
                    .filter(|socket| socket.port == port)
                    .cloned()
                    .collect();
                if listening.is_empty() {
                    continue;
                }
            }
            if let (Some(os), Some(record)) = (&query.os, &record) {
                let info = &record.snapshot.os;
                let wanted = os.to_lowercase();
                if ![&info.id, &info.family, &info.name, &info.pretty_name]
                    .iter()
                    .any(|field| field.to_lowercase().contains(&wanted))
                {
                    continue;
                }
            }
            let os = match &record {
                Some(record) => record.snapshot.os.pretty_name.clone(),
                None => agent.os.clone(),
            };
            let row = |package| FindRow {
                agent_id: agent.id.clone(),
                hostname: agent.hostname.clone(),
                division: agent.division.clone(),
                division_path: agent.division_path.clone(),
                online: agent.online,
                os: os.clone(),
                package,
                listening: listening.clone(),
            };
            if packages.is_empty() {
                rows.push(row(None));
            } else {
                for package in packages {
                    rows.push(row(Some(package)));
                }
            }
        }
        Ok(rows)
    }

    /// The latest health samples and check results of an agent.
    pub fn health(&self, id: &str) -> Result<HealthView, AdminError> {
        let agent = self.agent(id)?;
        let metrics = self.store.health(id)?;
        let checks = self
            .store
            .checks(id)?
            .into_iter()
            .map(|(_, record)| CheckView::new(record))
            .collect();
        let live = self.sessions.as_ref().and_then(|sessions| sessions.get(id));
        Ok(HealthView {
            link: live.as_ref().and_then(|live| {
                live.heartbeat
                    .as_ref()
                    .map(|heartbeat| heartbeat.link.clone())
            }),
            clock_offset_ms: live.as_ref().and_then(|live| live.clock_offset_ms),
            agent_id: agent.id,
            online: agent.online,
            taken: metrics
                .as_ref()
                .map(|record| format_rfc3339(record.taken_ms)),
            samples: metrics.map(|record| record.samples).unwrap_or_default(),
            checks,
        })
    }

    /// One agent's series for `/metrics?agents=true`: up, link, clock offset, its latest
    /// samples, check states and posture score.
    fn agent_series(
        &self,
        out: &mut crate::exposition::Exposition,
        agent: &AgentRecord,
        live: Option<&LiveSession>,
        facts: &crate::store::AgentFacts,
    ) -> Result<(), AdminError> {
        let labels = [
            ("agent", agent.id.as_str()),
            ("division", agent.division.as_str()),
        ];
        if let Some(score) = facts.posture_score {
            out.add(
                "bagui_agent_posture_score",
                "gauge",
                "Baseline posture score of the agent's host (0-100)",
                &labels,
                f64::from(score),
            );
        }
        out.add(
            "bagui_agent_up",
            "gauge",
            "1 while the agent has an authenticated session",
            &labels,
            if is_online(agent, live) { 1.0 } else { 0.0 },
        );
        if let Some(live) = live {
            if let Some(heartbeat) = &live.heartbeat {
                let link = &heartbeat.link;
                for (name, help, value) in [
                    (
                        "bagui_agent_link_rtt_seconds",
                        "Smoothed RTT of the agent's QUIC connection",
                        link.rtt_us as f64 / 1e6,
                    ),
                    (
                        "bagui_agent_link_cwnd_bytes",
                        "Congestion window of the agent's QUIC connection",
                        link.cwnd_bytes as f64,
                    ),
                ] {
                    out.add(name, "gauge", help, &labels, value);
                }
                for (name, help, value) in [
                    (
                        "bagui_agent_link_sent_packets_total",
                        "Packets the agent sent on its QUIC connection",
                        link.sent_packets,
                    ),
                    (
                        "bagui_agent_link_lost_packets_total",
                        "Packets the agent's QUIC connection declared lost",
                        link.lost_packets,
                    ),
                    (
                        "bagui_agent_link_congestion_events_total",
                        "Congestion events on the agent's QUIC connection",
                        link.congestion_events,
                    ),
                ] {
                    out.add(name, "counter", help, &labels, value as f64);
                }
            }
            if let Some(offset) = live.clock_offset_ms {
                out.add(
                    "bagui_agent_clock_offset_seconds",
                    "gauge",
                    "The agent's clock minus the control plane's",
                    &labels,
                    offset as f64 / 1000.0,
                );
            }
        }
        if let Some(health) = self.store.health(&agent.id)? {
            for sample in &health.samples {
                let mut all: Vec<(&str, &str)> = labels.to_vec();
                all.extend(sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let counter = sample.name.ends_with("_total");
                out.add(
                    &crate::exposition::agent_metric_name(&sample.name, counter),
                    if counter { "counter" } else { "gauge" },
                    "Reported by the agent",
                    &all,
                    sample.value,
                );
            }
        }
        for (name, status) in &facts.checks {
            let mut all: Vec<(&str, &str)> = labels.to_vec();
            all.push(("check", name.as_str()));
            out.add(
                "bagui_agent_check_status",
                "gauge",
                "Latest check status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
                &all,
                f64::from(*status),
            );
        }
        Ok(())
    }

    /// Fleet aggregates (per city and county: agents online/offline, outbox backlog and drops,
    /// check states) and, when `per_agent`, every agent's latest samples and check states.
    pub fn fleet_exposition(&self, per_agent: bool) -> Result<String, AdminError> {
        use crate::exposition::Exposition;
        // Records and live sessions, not agent views: a scrape at 50,000 agents has no time
        // for uplinks, division paths and formatted dates it does not print.
        let mut agents = self.store.agents()?;
        if per_agent {
            agents.sort_by(|a, b| (&a.division, &a.id).cmp(&(&b.division, &b.id)));
        }
        let live_sessions = self
            .sessions
            .as_ref()
            .map(Sessions::snapshot)
            .unwrap_or_default();
        let mut out = Exposition::default();
        #[derive(Default)]
        struct Tally {
            online: u64,
            offline: u64,
            outbox_records: u64,
            outbox_dropped: u64,
            checks: [u64; 4],
            posture_hosts: u64,
            posture_sum: u64,
        }
        let no_facts = crate::store::AgentFacts::default();
        let mut tallies: BTreeMap<(u8, &str), Tally> = BTreeMap::new();
        // Each agent's facts, copied out under one lock for the per-agent series.
        let mut agent_facts_in_order = Vec::new();
        self.store.with_fleet_facts(|facts| {
            for agent in &agents {
                let live = live_sessions.get(&agent.id);
                let online = is_online(agent, live);
                let outbox = live
                    .and_then(|live| live.heartbeat.as_ref())
                    .map_or(&agent.outbox, |heartbeat| &heartbeat.outbox);
                let agent_facts = facts.get(&agent.id).unwrap_or(&no_facts);
                if per_agent {
                    agent_facts_in_order.push(agent_facts.clone());
                }
                let posture = agent_facts.posture_score;
                for division in self
                    .divisions
                    .ancestors(&agent.division)
                    .filter(|division| division.level <= 3)
                {
                    let tally = tallies
                        .entry((division.level, division.code.as_str()))
                        .or_default();
                    if online {
                        tally.online += 1;
                    } else {
                        tally.offline += 1;
                    }
                    tally.outbox_records += outbox.records;
                    tally.outbox_dropped += outbox.dropped.total();
                    for status in agent_facts.checks.values() {
                        tally.checks[usize::from((*status).min(3))] += 1;
                    }
                    if let Some(score) = posture {
                        tally.posture_hosts += 1;
                        tally.posture_sum += u64::from(score);
                    }
                }
            }
        })?;
        for (agent, facts) in agents.iter().zip(&agent_facts_in_order) {
            self.agent_series(&mut out, agent, live_sessions.get(&agent.id), facts)?;
        }
        for (&(level, code), tally) in &tallies {
            let name = self
                .divisions
                .get(code)
                .map(|d| d.name.clone())
                .unwrap_or_default();
            let level_name = match level {
                1 => "region",
                2 => "city",
                _ => "county",
            };
            let base = [
                ("division", code),
                ("division_name", name.as_str()),
                ("level", level_name),
            ];
            for (state, count) in [("online", tally.online), ("offline", tally.offline)] {
                let mut labels = base.to_vec();
                labels.push(("state", state));
                out.add(
                    "bagui_fleet_agents",
                    "gauge",
                    "Enrolled agents by division and session state",
                    &labels,
                    count as f64,
                );
            }
            out.add(
                "bagui_fleet_outbox_records",
                "gauge",
                "Reports buffered in agents' outboxes, as last reported",
                &base,
                tally.outbox_records as f64,
            );
            out.add("bagui_fleet_outbox_dropped", "gauge", "Reports agents' outboxes dropped under pressure since they were created, as last reported", &base, tally.outbox_dropped as f64);
            if tally.posture_hosts > 0 {
                out.add(
                    "bagui_fleet_posture_score",
                    "gauge",
                    "Mean baseline posture score of the hosts in the division (0-100)",
                    &base,
                    tally.posture_sum as f64 / tally.posture_hosts as f64,
                );
            }
            for (status, count) in tally.checks.iter().enumerate() {
                let mut labels = base.to_vec();
                labels.push(("state", bagui_protocol::assets::status_text(status as u8)));
                out.add(
                    "bagui_fleet_checks",
                    "gauge",
                    "Latest check results by division and state",
                    &labels,
                    *count as f64,
                );
            }
        }
        let mut text = String::new();
        out.render_into(&mut text);
        Ok(text)
    }

    // --- posture (等保 baseline, FIM, findings) ---------------------------------------------

    /// The latest baseline run of an agent.
    pub fn posture(&self, id: &str) -> Result<PostureView, AdminError> {
        let agent = self.agent(id)?;
        let record = self.store.posture(id)?.ok_or_else(|| {
            AdminError::NotFound(format!("agent {id} has not sent a baseline run yet"))
        })?;
        Ok(PostureView {
            agent_id: agent.id,
            hostname: agent.hostname,
            division: agent.division,
            division_path: agent.division_path,
            policy: record.report.policy,
            score: record.report.score,
            taken: format_rfc3339(record.report.taken_ms),
            received: format_rfc3339(record.received_ms),
            signed: record.signed,
            results: record.report.results,
        })
    }

    /// Failing checks of every agent in scope, at least `min_severity`, worst first.
    pub fn posture_failing(
        &self,
        division: Option<&str>,
        min_severity: Option<&str>,
    ) -> Result<Vec<FailingRow>, AdminError> {
        let floor = min_severity.map(severity_rank).unwrap_or(0);
        let mut rows = Vec::new();
        for agent in self.agents(division)? {
            let Some(record) = self.store.posture(&agent.id)? else {
                continue;
            };
            for result in record.report.results {
                if result.result == bagui_protocol::assets::CheckVerdict::Fail
                    && severity_rank(&result.severity) >= floor
                {
                    rows.push(FailingRow {
                        agent_id: agent.id.clone(),
                        hostname: agent.hostname.clone(),
                        division: agent.division.clone(),
                        division_path: agent.division_path.clone(),
                        id: result.id,
                        severity: result.severity,
                        title: result.title,
                        evidence: result.evidence,
                        remediation: result.remediation,
                    });
                }
            }
        }
        rows.sort_by(|a, b| {
            severity_rank(&b.severity)
                .cmp(&severity_rank(&a.severity))
                .then_with(|| a.id.cmp(&b.id))
                .then_with(|| a.agent_id.cmp(&b.agent_id))
        });
        Ok(rows)
    }

    /// Security findings in scope since `since` (RFC 3339 or a duration back).
    pub fn findings(&self, query: &FindingsQuery) -> Result<Vec<FindingView>, AdminError> {
        let agents: HashMap<String, AgentView> = self
            .agents(query.division.as_deref())?
            .into_iter()
            .map(|agent| (agent.id.clone(), agent))
            .collect();
        let since_ms = match &query.since {
            Some(text) => parse_since(text, self.clock.now_ms())?,
            None => 0,
        };
        let floor = query.severity.as_deref().map(severity_rank).unwrap_or(0);
        let records = self.store.findings(
            since_ms,
            |finding| {
                agents.contains_key(&finding.agent_id)
                    && query
                        .agent
                        .as_ref()
                        .is_none_or(|id| *id == finding.agent_id)
                    && severity_rank(&finding.severity) >= floor
            },
            query.limit.unwrap_or(1000).clamp(1, 100_000),
        )?;
        Ok(records
            .into_iter()
            .map(|record| {
                let agent = &agents[&record.agent_id];
                let (hostname, division) = (agent.hostname.clone(), agent.division.clone());
                FindingView::new(record, &hostname, &division)
            })
            .collect())
    }

    /// Posture score per child division of `division` (the region when `None`): the mean of
    /// the host scores below each.
    pub fn posture_divisions(
        &self,
        division: Option<&str>,
    ) -> Result<Vec<DivisionPostureRow>, AdminError> {
        let parent = division
            .map(str::to_owned)
            .unwrap_or_else(|| self.divisions.root().code.clone());
        if self.divisions.get(&parent).is_none() {
            return Err(AdminError::BadRequest(format!("unknown division {parent}")));
        }
        let children = self.divisions.children(&parent).to_vec();
        let mut rows: Vec<DivisionPostureRow> = children
            .iter()
            .map(|code| DivisionPostureRow {
                division: code.clone(),
                name: self
                    .divisions
                    .get(code)
                    .map(|d| d.name.clone())
                    .unwrap_or_default(),
                hosts: 0,
                score: None,
                min_score: None,
                failing_high: 0,
            })
            .collect();
        let mut sums = vec![0u64; rows.len()];
        for agent in self.agents(Some(&parent))? {
            let Some(record) = self.store.posture(&agent.id)? else {
                continue;
            };
            let Some(index) = children
                .iter()
                .position(|code| self.divisions.is_within(&agent.division, code))
            else {
                continue;
            };
            let row = &mut rows[index];
            row.hosts += 1;
            sums[index] += u64::from(record.report.score);
            row.min_score = Some(
                row.min_score
                    .map_or(record.report.score, |m| m.min(record.report.score)),
            );
            row.failing_high += record
                .report
                .results
                .iter()
                .filter(|r| {
                    r.result == bagui_protocol::assets::CheckVerdict::Fail
                        && severity_rank(&r.severity) >= 3
                })
                .count() as u64;
        }
        for (row, sum) in rows.iter_mut().zip(sums) {
            if row.hosts > 0 {
                row.score = Some(sum as f64 / row.hosts as f64);
            }
        }
        Ok(rows)
    }

    // --- pushed probes ----------------------------------------------------------------------

    /// The probes pushed to an agent.
    pub fn probes(&self, id: &str) -> Result<ProbeSetView, AdminError> {
        let agent = self.agent(id)?;
        let set = self.store.probe_set(id)?.unwrap_or_default();
        Ok(ProbeSetView {
            agent_id: agent.id,
            delivered: set.delivered || (set.probes.is_empty() && set.command_id == 0),
            probes: set.probes,
        })
    }

    /// Adds (or replaces, by name) one probe of an agent, within the policy; audited, then
    /// sent if the agent is connected (otherwise at its next session).
    pub fn push_probe(
        &self,
        actor: &str,
        id: &str,
        request: &ProbeRequest,
    ) -> Result<ProbeSetView, AdminError> {
        let agent = self
            .store
            .agent(id)?
            .ok_or_else(|| AdminError::NotFound(format!("unknown agent {id}")))?;
        if agent.revoked_ms.is_some() {
            return Err(AdminError::Conflict(format!("agent {id} is revoked")));
        }
        let probe = self
            .probe_policy
            .check(&self.divisions, &agent.division, request)
            .map_err(AdminError::BadRequest)?;
        let mut set = self.store.probe_set(id)?.unwrap_or_default();
        set.probes.retain(|existing| existing.name != probe.name);
        set.probes.push(probe.clone());
        if set.probes.len() > self.probe_policy.max_per_agent() {
            return Err(AdminError::BadRequest(format!(
                "agent {id} would have {} probes; at most {} ([probes] max_per_agent)",
                set.probes.len(),
                self.probe_policy.max_per_agent()
            )));
        }
        set.probes.sort_by(|a, b| a.name.cmp(&b.name));
        self.audit.record(
            actor,
            "probe.push",
            id,
            format!(
                "name={} kind={} target={} interval={}ms timeout={}ms",
                probe.name, probe.kind, probe.target, probe.interval_ms, probe.timeout_ms
            ),
        )?;
        set.delivered = false;
        self.store.put_probe_set(id, &set)?;
        self.store.flush()?;
        self.send_probes(id)?;
        self.probes(id)
    }

    /// Removes one probe of an agent; audited, then sent like a push.
    pub fn remove_probe(
        &self,
        actor: &str,
        id: &str,
        name: &str,
    ) -> Result<ProbeSetView, AdminError> {
        let mut set = self.store.probe_set(id)?.unwrap_or_default();
        let before = set.probes.len();
        set.probes.retain(|probe| probe.name != name);
        if set.probes.len() == before {
            return Err(AdminError::NotFound(format!(
                "agent {id} has no probe {name:?}"
            )));
        }
        self.audit
            .record(actor, "probe.remove", id, format!("name={name}"))?;
        set.delivered = false;
        self.store.put_probe_set(id, &set)?;
        self.store.flush()?;
        self.send_probes(id)?;
        self.probes(id)
    }

    /// Sends an agent its probe set if it is connected, as an audited `cmd.set_probes`.
    pub fn send_probes(&self, id: &str) -> Result<(), AdminError> {
        let Some(sessions) = &self.sessions else {
            return Ok(());
        };
        if sessions.get(id).is_none() {
            return Ok(());
        }
        let mut set: ProbeSet = self.store.probe_set(id)?.unwrap_or_default();
        let entry = self.audit.record(
            "control-plane",
            "command.set_probes",
            id,
            format!("probes={}", set.probes.len()),
        )?;
        set.command_id = entry.seq;
        set.delivered = false;
        self.store.put_probe_set(id, &set)?;
        self.store.flush()?;
        // Not connected any more: the set goes at the next session.
        let _ = sessions.send(
            id,
            SetProbes {
                command_id: entry.seq,
                probes: set.probes,
            }
            .into(),
        );
        Ok(())
    }

    /// Audits and sends one allow-listed command to a connected agent.
    pub fn send_command(
        &self,
        actor: &str,
        id: &str,
        request: &CommandRequest,
    ) -> Result<CommandSent, AdminError> {
        let sessions = self
            .sessions
            .as_ref()
            .ok_or_else(|| AdminError::Conflict("commands need a running control plane".into()))?;
        if self.store.agent(id)?.is_none() {
            return Err(AdminError::NotFound(format!("unknown agent {id}")));
        }
        if sessions.get(id).is_none() {
            return Err(AdminError::Conflict(format!("agent {id} is not connected")));
        }
        let duration = |value: &Option<String>, name: &str| -> Result<Duration, AdminError> {
            let text = value.as_deref().ok_or_else(|| {
                AdminError::BadRequest(format!("{} needs `{name}`", request.kind))
            })?;
            units::parse_duration(text).map_err(AdminError::BadRequest)
        };
        let detail;
        let mut new_heartbeat = None;
        let build: Box<dyn Fn(u64) -> ServerMessage> = match request.kind.as_str() {
            "send_full_snapshot" => {
                detail = String::new();
                Box::new(|command_id| SendFullSnapshot { command_id }.into())
            }
            "renew_certificate" => {
                detail = String::new();
                Box::new(|command_id| RenewCertificateNow { command_id }.into())
            }
            "reconnect" => {
                let after = duration(&request.after, "after")?;
                detail = format!("after={}ms", after.as_millis());
                Box::new(move |command_id| {
                    Reconnect {
                        command_id,
                        after_ms: after.as_millis() as u64,
                    }
                    .into()
                })
            }
            "set_heartbeat_interval" => {
                let interval = duration(&request.interval, "interval")?;
                if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&interval) {
                    return Err(AdminError::BadRequest(
                        "heartbeat interval must be 1s..10m".into(),
                    ));
                }
                detail = format!("interval={}ms", interval.as_millis());
                new_heartbeat = Some(interval);
                Box::new(move |command_id| {
                    SetHeartbeatInterval {
                        command_id,
                        interval_ms: interval.as_millis() as u64,
                    }
                    .into()
                })
            }
            other => {
                return Err(AdminError::BadRequest(format!(
                    "unknown command {other:?} (send_full_snapshot, reconnect, renew_certificate, set_heartbeat_interval)"
                )));
            }
        };
        // Audited before it is sent: a command that left the building is always on record.
        let entry = self
            .audit
            .record(actor, &format!("command.{}", request.kind), id, detail)?;
        self.store.flush()?;
        // The session's silence limit follows the new interval before the agent slows down.
        if let Some(interval) = new_heartbeat {
            sessions.set_heartbeat_interval(id, interval);
        }
        sessions
            .send(id, build(entry.seq))
            .map_err(|error| AdminError::Conflict(error.to_string()))?;
        Ok(CommandSent {
            command_id: entry.seq,
            agent_id: id.to_owned(),
            kind: request.kind.clone(),
        })
    }

    /// Issues identities in bulk (see [`Enroller::issue_bulk`]).
    pub fn issue_bulk(
        &self,
        actor: &str,
        request: &IssueRequest,
    ) -> Result<IssueResponse, AdminError> {
        use bagui_protocol::digest::{hex, unhex};
        if request.agents.len() > MAX_ISSUE_BATCH {
            return Err(AdminError::BadRequest(format!(
                "at most {MAX_ISSUE_BATCH} agents per request, got {}",
                request.agents.len()
            )));
        }
        let requests = request
            .agents
            .iter()
            .enumerate()
            .map(|(index, agent)| {
                let bad = |what: &str| {
                    AdminError::BadRequest(format!("agents[{index}].{what} is not hex"))
                };
                let tls_public_key =
                    unhex(&agent.tls_public_key).ok_or_else(|| bad("tls_public_key"))?;
                let tls_key_signature =
                    unhex(&agent.tls_key_signature).ok_or_else(|| bad("tls_key_signature"))?;
                let sm2_tls_key = (!tls_public_key.is_empty() || !tls_key_signature.is_empty())
                    .then(|| bagui_protocol::Sm2KeyRequest {
                        public_key: serde_bytes::ByteBuf::from(tls_public_key),
                        signature: serde_bytes::ByteBuf::from(tls_key_signature),
                    });
                Ok(crate::enroll::BulkRequest {
                    division: agent.division.clone(),
                    role: agent.role.parse().map_err(AdminError::BadRequest)?,
                    instance_id: agent.instance_id.clone(),
                    hostname: agent.hostname.clone(),
                    csr_der: unhex(&agent.csr).ok_or_else(|| bad("csr"))?,
                    sm2_public_key: unhex(&agent.sm2_public_key)
                        .ok_or_else(|| bad("sm2_public_key"))?,
                    sm2_tls_key,
                })
            })
            .collect::<Result<Vec<_>, AdminError>>()?;
        let issued = self.enroller.issue_bulk(actor, &requests)?;
        Ok(IssueResponse {
            agents: issued
                .into_iter()
                .map(|accepted| IssuedAgent {
                    agent_id: accepted.agent_id,
                    division: accepted.division,
                    division_path: accepted.division_path,
                    certificate: hex(&accepted.certificate_der),
                    certificate_issued_ms: accepted.certificate_issued_ms,
                    certificate_not_after_ms: accepted.certificate_not_after_ms,
                    ca_certificate: hex(&accepted.ca_certificate_der),
                    control_plane_sm2_public_key: hex(&accepted.control_plane_sm2_public_key),
                    heartbeat_interval_ms: accepted.params.heartbeat_interval_ms,
                    max_in_flight: accepted.params.max_in_flight,
                    max_frame_len: accepted.params.max_frame_len,
                })
                .collect(),
        })
    }

    pub fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, AdminError> {
        Ok(self.store.audit_entries(after, limit.min(10_000))?)
    }
}

// ---------------------------------------------------------------------------------------------
// The console's aggregates (`crate::console`, issue 8): a lean read of where every agent is and
// whether it is online, without the per-agent store look-ups of a full `AgentView`, so that a
// province of 20,000 agents is counted in well under a second.
// ---------------------------------------------------------------------------------------------

/// An agent is online while it has a session and is not revoked (a revoked agent's session is
/// being closed).
fn is_online(agent: &AgentRecord, live: Option<&LiveSession>) -> bool {
    live.is_some() && agent.revoked_ms.is_none()
}

/// Where an agent is and whether it is online.
#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    pub id: String,
    pub hostname: String,
    pub division: String,
    pub role: Role,
    /// As in [`AgentView::online`]: a session is open and the agent is not revoked.
    pub online: bool,
    /// Milliseconds since the epoch; 0 if never seen.
    pub last_seen_ms: u64,
    pub rtt_ms: Option<f64>,
    /// QUIC packets sent and declared lost, from the last heartbeat (the session's, or the
    /// stored one when offline).
    pub sent_packets: u64,
    pub lost_packets: u64,
    /// Milliseconds since the epoch.
    pub joined_ms: u64,
    pub revoked_ms: Option<u64>,
}

impl Admin {
    /// The stored baseline runs of `ids` (those that sent one), read by id only, for views
    /// that summarise many hosts.
    pub fn postures_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<(String, crate::store::PostureRecord)>, AdminError> {
        let mut records = Vec::new();
        for id in ids {
            if let Some(record) = self.store.posture(id)? {
                records.push((id.to_owned(), record));
            }
        }
        Ok(records)
    }

    /// Ids of the agents with an open session, read from memory only (the console's event
    /// stream compares this every second).
    pub fn online_ids(&self) -> std::collections::HashSet<String> {
        self.sessions
            .as_ref()
            .map(|sessions| sessions.snapshot().into_keys().collect())
            .unwrap_or_default()
    }

    /// Every agent, or those within a division's subtree, in no particular order.
    pub fn presence(&self, division: Option<&str>) -> Result<Vec<Presence>, AdminError> {
        if let Some(code) = division
            && self.divisions.get(code).is_none()
        {
            return Err(AdminError::BadRequest(format!("unknown division {code}")));
        }
        let live = self
            .sessions
            .as_ref()
            .map(Sessions::snapshot)
            .unwrap_or_default();
        Ok(self
            .store
            .agents()?
            .into_iter()
            .filter(|agent| {
                division.is_none_or(|code| self.divisions.is_within(&agent.division, code))
            })
            .map(|agent| {
                let session = live.get(&agent.id);
                let link = session
                    .and_then(|live| live.heartbeat.as_ref())
                    .map_or(&agent.link, |heartbeat| &heartbeat.link);
                Presence {
                    online: is_online(&agent, session),
                    last_seen_ms: session
                        .map_or(0, |live| live.last_seen_ms)
                        .max(agent.last_seen_ms),
                    rtt_ms: (link.rtt_us > 0).then(|| link.rtt_us as f64 / 1000.0),
                    sent_packets: link.sent_packets,
                    lost_packets: link.lost_packets,
                    joined_ms: agent.joined_ms,
                    revoked_ms: agent.revoked_ms,
                    hostname: agent.facts.hostname.clone(),
                    id: agent.id,
                    division: agent.division,
                    role: agent.role,
                }
            })
            .collect())
    }
}
