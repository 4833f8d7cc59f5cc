//! Operator actions and views of 问题处置在线: work orders, teams, the notification outbox,
//! open incidents, intake tokens and external alert intake. Shared by the API and the CLI
//! like the rest of [`Admin`]; every change is audited.

use std::sync::Mutex;

use bagui_ops::incidents::{Event, Finding, Incident, Subject};
use bagui_ops::intake::{self, Deduper, DeduperConfig, ExternalAlert, Verdict};
use bagui_ops::workorder::Command;
use bagui_protocol::digest;
use serde::{Deserialize, Serialize};

use crate::admin::{Admin, AdminError};
use crate::dispatch::{
    DispatchError, Dispatcher, OrderDetail, OrderFilter, OrderRow, OutboxEntry, Team,
};
use crate::store::OpsBatch;

/// Key prefix of intake tokens in the ops tree: `itok/<sm3 of the token>`.
const INTAKE_TOKEN_PREFIX: &[u8] = b"itok/";

/// An intake token as stored (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeTokenRecord {
    pub id: String,
    pub name: String,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked_ms: Option<u64>,
}

/// A new intake token: the record and, once only, the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewIntakeToken {
    #[serde(flatten)]
    pub record: IntakeTokenRecord,
    pub token: String,
}

/// `POST /api/v1/intake-tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateIntakeToken {
    /// What sends with it (`alertmanager-prod`, `12345-hotline`).
    pub name: String,
}

/// What an intake request did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeReceipt {
    /// Alerts handed to the incident engine.
    pub accepted: usize,
    /// Repeats and stale copies ignored.
    pub duplicates: usize,
}

impl From<DispatchError> for AdminError {
    fn from(error: DispatchError) -> AdminError {
        match error {
            DispatchError::NoOrder(_) | DispatchError::NoTeam(_) => {
                AdminError::NotFound(error.to_string())
            }
            DispatchError::Refused(_) => AdminError::Conflict(error.to_string()),
            DispatchError::Store(error) => AdminError::from(error),
        }
    }
}

/// Remembers external alerts already seen (Alertmanager repeats groups, HA pairs send twice).
pub struct IntakeDeduper(Mutex<Deduper>);

impl Default for IntakeDeduper {
    fn default() -> IntakeDeduper {
        IntakeDeduper(Mutex::new(Deduper::new(DeduperConfig::default())))
    }
}

impl std::fmt::Debug for IntakeDeduper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeDeduper").finish_non_exhaustive()
    }
}

impl Admin {
    fn ops(&self) -> Result<&Dispatcher, AdminError> {
        self.dispatcher
            .as_ref()
            .ok_or_else(|| AdminError::Internal("work orders are not available here".into()))
    }

    pub fn work_orders(&self, filter: &OrderFilter) -> Result<Vec<OrderRow>, AdminError> {
        if let Some(code) = &filter.division
            && self.divisions().get(code).is_none()
        {
            return Err(AdminError::BadRequest(format!(
                "division {code} does not exist"
            )));
        }
        Ok(self.ops()?.orders(filter)?)
    }

    pub fn work_order(&self, id: &str) -> Result<OrderDetail, AdminError> {
        Ok(self.ops()?.order(id)?)
    }

    /// An operator's command on a work order (ack, start, resolve …), audited.
    pub fn work_order_command(
        &self,
        actor: &str,
        id: &str,
        command: Command,
    ) -> Result<OrderDetail, AdminError> {
        if matches!(
            command,
            Command::Suppress { .. }
                | Command::Promote
                | Command::SourceCleared
                | Command::Recur { .. }
        ) {
            return Err(AdminError::BadRequest(format!(
                "{:?} is decided by the incident engine, not by operators",
                command.name()
            )));
        }
        let name = format!("{:?}", command.name()).to_lowercase();
        let detail = serde_json::to_string(&command).unwrap_or_default();
        let order = self.ops()?.command(id, command, actor)?;
        self.audit()
            .record(actor, &format!("wo.{name}"), id, detail)?;
        Ok(order)
    }

    pub fn teams(&self) -> Result<Vec<Team>, AdminError> {
        Ok(self.ops()?.teams()?)
    }

    pub fn put_team(&self, actor: &str, team: Team) -> Result<Team, AdminError> {
        let team = self.ops()?.put_team(team).map_err(|error| match error {
            DispatchError::Refused(message) => AdminError::BadRequest(message),
            other => other.into(),
        })?;
        self.audit().record(
            actor,
            "team.put",
            &team.id,
            format!(
                "name={} division={} categories={:?} channels={}",
                team.name,
                team.division,
                team.categories,
                team.channels.len()
            ),
        )?;
        Ok(team)
    }

    pub fn remove_team(&self, actor: &str, id: &str) -> Result<Team, AdminError> {
        let team = self.ops()?.remove_team(id)?;
        self.audit().record(actor, "team.remove", id, "")?;
        Ok(team)
    }

    pub fn incident_rules(&self) -> Result<bagui_ops::incidents::IncidentRules, AdminError> {
        Ok(self.ops()?.rules())
    }

    /// Replaces the incident rules; audited with the whole new set.
    pub fn set_incident_rules(
        &self,
        actor: &str,
        rules: bagui_ops::incidents::IncidentRules,
    ) -> Result<bagui_ops::incidents::IncidentRules, AdminError> {
        let detail = serde_json::to_string(&rules).unwrap_or_default();
        let rules = self.ops()?.set_rules(rules).map_err(|error| match error {
            DispatchError::Refused(message) => AdminError::BadRequest(message),
            other => other.into(),
        })?;
        self.audit()
            .record(actor, "incident_rules.set", "incidents", detail)?;
        Ok(rules)
    }

    pub fn notifications(&self, limit: usize) -> Result<Vec<OutboxEntry>, AdminError> {
        Ok(self.ops()?.outbox(limit)?)
    }

    pub fn incidents(&self) -> Result<Vec<Incident>, AdminError> {
        Ok(self.ops()?.incidents())
    }

    pub fn create_intake_token(
        &self,
        actor: &str,
        request: &CreateIntakeToken,
    ) -> Result<NewIntakeToken, AdminError> {
        let name = request.name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(AdminError::BadRequest(
                "an intake token needs a name of 1–64 characters".into(),
            ));
        }
        let secret: [u8; 24] = rand::random();
        let token = format!(
            "bgi_{}",
            secret
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        );
        let record = IntakeTokenRecord {
            id: format!("it-{}", &token[4..12]),
            name: name.to_owned(),
            created_ms: self.now_ms(),
            revoked_ms: None,
        };
        let dispatcher = self.ops()?;
        let mut batch = OpsBatch::new();
        batch.put(&intake_token_key(&token), &record)?;
        dispatcher.store().ops_commit(batch)?;
        self.audit()
            .record(actor, "intake_token.create", &record.id, name)?;
        Ok(NewIntakeToken { record, token })
    }

    /// Whether `presented` is a live intake token; `None` if not.
    pub fn check_intake_token(
        &self,
        presented: &str,
    ) -> Result<Option<IntakeTokenRecord>, AdminError> {
        let record = self
            .ops()?
            .store()
            .ops_get::<IntakeTokenRecord>(&intake_token_key(presented))?;
        Ok(record.filter(|record| record.revoked_ms.is_none()))
    }

    /// `POST /api/v1/intake/alertmanager` and `/generic`: parse, de-duplicate, attach to an
    /// agent or division, and hand to the incident engine.
    pub fn intake(
        &self,
        deduper: &IntakeDeduper,
        alertmanager: bool,
        body: &[u8],
    ) -> Result<IntakeReceipt, AdminError> {
        let now = self.now_ms();
        let alerts = if alertmanager {
            let message = intake::parse_alertmanager(body)
                .map_err(|error| AdminError::BadRequest(error.to_string()))?;
            if message.truncated_alerts > 0 {
                tracing::warn!(
                    truncated = message.truncated_alerts,
                    group = %message.group_key,
                    "Alertmanager left alerts out of a notification (max_alerts)"
                );
            }
            message.alerts
        } else {
            intake::parse_generic(body, now)
                .map_err(|error| AdminError::BadRequest(error.to_string()))?
        };
        let events = self
            .link_events
            .as_ref()
            .ok_or_else(|| AdminError::Internal("the incident engine is not running".into()))?;
        let mut receipt = IntakeReceipt::default();
        let mut dedupe = deduper
            .0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for alert in alerts {
            match dedupe.handle_alert(&alert, now) {
                Verdict::New => {
                    events.send(Event::Finding(self.finding_of(&alert, now)?));
                    receipt.accepted += 1;
                }
                Verdict::Duplicate | Verdict::Stale => receipt.duplicates += 1,
            }
        }
        Ok(receipt)
    }

    fn finding_of(&self, alert: &ExternalAlert, now: u64) -> Result<Finding, AdminError> {
        let root = self.divisions().root().code.clone();
        let division_label = || {
            alert
                .labels
                .get("division")
                .and_then(|code| self.known_division(code.trim()))
        };
        let subject = match &alert.subject {
            intake::Subject::Agent(name) => match self.resolve_agent(name)? {
                Some(id) => Subject::Agent(id),
                None => Subject::Division(division_label().unwrap_or(root)),
            },
            intake::Subject::Division(code) => {
                Subject::Division(self.known_division(code).unwrap_or(root))
            }
            intake::Subject::Region => Subject::Division(root),
        };
        Ok(Finding {
            fingerprint: format!("{}:{}", alert.source, alert.dedupe_key),
            subject,
            severity: alert.severity,
            category: alert.category,
            title: alert.title.clone(),
            firing: alert.firing,
            at: if alert.firing {
                alert.starts_ms.min(now)
            } else {
                alert.ends_ms.unwrap_or(now).min(now)
            },
        })
    }

    /// `code` as the tree knows it: itself, or for a code padded to 12 digits with zeros
    /// (`450103000000`) the division it stands for (`450103`).
    fn known_division(&self, code: &str) -> Option<String> {
        if self.divisions().get(code).is_some() {
            return Some(code.to_owned());
        }
        if code.len() != 12 || !code.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        [9, 6, 4, 2]
            .into_iter()
            .filter(|&len| code[len..].bytes().all(|byte| byte == b'0'))
            .map(|len| &code[..len])
            .find(|prefix| self.divisions().get(prefix).is_some())
            .map(str::to_owned)
    }

    /// An agent id, or the hostname of exactly one enrolled agent.
    fn resolve_agent(&self, name: &str) -> Result<Option<String>, AdminError> {
        let store = self.ops()?.store();
        if store.agent(name)?.is_some() {
            return Ok(Some(name.to_owned()));
        }
        let mut matches = store
            .agents()?
            .into_iter()
            .filter(|agent| agent.revoked_ms.is_none() && agent.facts.hostname == name);
        match (matches.next(), matches.next()) {
            (Some(agent), None) => Ok(Some(agent.id)),
            _ => Ok(None),
        }
    }

    fn now_ms(&self) -> u64 {
        self.ops()
            .map(|dispatcher| dispatcher.clock().now_ms())
            .unwrap_or_default()
    }
}

fn intake_token_key(token: &str) -> Vec<u8> {
    let mut key = INTAKE_TOKEN_PREFIX.to_vec();
    key.extend_from_slice(digest::sm3_tagged(token.as_bytes()).as_bytes());
    key
}
