//! External intake: turns the bodies that other alerting systems post to
//! `POST /api/v1/intake/alertmanager` and `POST /api/v1/intake/generic` into
//! [`ExternalAlert`]s, and remembers which ones were seen already ([`Deduper`]).
//!
//! This module only decodes, validates and maps; the HTTP route (authentication by intake token,
//! reading the body, the status code) and resolving an agent label to an agent belong to the
//! control plane.
//!
//! # Alertmanager webhook, version 4
//!
//! The format is Alertmanager's `notify/webhook/webhook.go` `Message`: the template data of
//! `template/template.go` (`Data`: `receiver`, `status`, `alerts`, `notification_reason`,
//! `groupLabels`, `commonLabels`, `commonAnnotations`, `externalURL`; `Alert`: `status`,
//! `labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL`, `fingerprint`) plus
//! `version` (always `"4"`), `groupKey` and `truncatedAlerts`. Checked against
//! prometheus/alertmanager's source (webhook.go at 01b7141f, template.go at d26de093) and
//! `shared/reference/incident-routing-and-channels.md` §2: `fingerprint` exists since v0.19,
//! `truncatedAlerts` since v0.21, `notification_reason` since v0.32, `routeLabels` since v0.34.
//! Times are Go `time.Time` values, so RFC 3339 with up to nine fraction digits, and an unset
//! `endsAt` is Go's zero time `0001-01-01T00:00:00Z`. Every field this module does not use is
//! ignored and every optional one may be missing, so newer and older Alertmanagers both fit.
//!
//! # Generic JSON
//!
//! For systems without an Alertmanager of their own, such as the 12345 government hotline. The
//! body is one event object or an array of at most [`MAX_ALERTS`] of them:
//!
//! ```json
//! {"source": "12345", "id": "GX20261126-0042", "status": "firing",
//!  "title": "市民反映政务服务网无法登录", "description": "…",
//!  "severity": "major", "category": "application",
//!  "agent": "web-01", "division": "450103000000",
//!  "time": "2026-11-26T10:00:00+08:00", "resolved_time": null,
//!  "labels": {"ticket_kind": "complaint"}}
//! ```
//!
//! Required: `source` (1–64 of `A-Z a-z 0-9 . _ -`), `id` (the sender's own identifier, at most
//! 256 bytes) and `title`. `status` is `firing` (the default) or `resolved`. `time` is when the
//! problem began, the same in the firing and the resolved event (as Alertmanager's `startsAt`);
//! `resolved_time` is when it ended; either defaults to the time the body was received. The
//! rest is optional and maps as the Alertmanager labels of the same names do. `source` + `id`
//! is the de-duplication key, so a sender that reopens a problem must give it a new `id`.
//!
//! # Mapping (both formats)
//!
//! - **Subject**: label `agent` (an agent id or a hostname, resolved by the caller) → the
//!   agent; else label `division` → that division, which must have the shape of a division code ([`is_division_code`]); else the
//!   region root. A present `division` is validated even when `agent` wins, because the caller
//!   falls back to it when the agent is unknown.
//! - **Severity** from label `severity` ([`Severity::from_label`]; missing is P3), **category**
//!   from label `category` ([`Category::from_label`]; missing is host).
//! - **Title**: annotation `summary`, else label `alertname`, else `alert <fingerprint>`;
//!   **description**: annotation `description`, else empty.
//! - A label whose value is empty (after trimming) counts as absent, as in Prometheus.
//!
//! # Rejection
//!
//! A body is accepted whole or rejected whole with an [`IntakeError`] that names the field:
//! not JSON, wrong shape, a version other than `"4"`, more than [`MAX_ALERTS`] alerts, a label
//! set over its limits, a time that is not RFC 3339, an unknown status, a malformed division
//! code. The senders are programs, so a bad body is a configuration error that must show (the
//! route answers 400; Alertmanager drops a 4xx and logs it) rather than be half-applied.
//!
//! The limits bound what one body can cost: at most [`MAX_BODY_BYTES`] are decoded (the route
//! should stop reading there too), so decoding holds at most a small multiple of that; the
//! alert count is checked in a first pass that stores nothing, before any alert is built.
//!
//! # De-duplication
//!
//! Alertmanager re-sends every alert of a group each `repeat_interval` (4 h by default) and an
//! HA pair sends the same notification twice; the key of one occurrence of an alert is
//! (`groupKey`, `fingerprint`, `startsAt` to the millisecond), as the reference says — a
//! re-fire has a new `startsAt`, so it is a new occurrence. The firing and the resolved
//! notification of one occurrence share the key; the [`Deduper`] remembers which of the two it
//! saw and answers [`Verdict::New`] for the first firing and for the first resolved one,
//! [`Verdict::Duplicate`] for repeats, and [`Verdict::Stale`] for a firing notification that
//! arrives after the resolved one (a late copy from an HA peer). See [`DeduperConfig`] for its
//! expiry and memory bound.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::model::{Category, DivisionCode, HOUR, Millis, Severity};

/// [`ExternalAlert::source`] of alerts from the Alertmanager webhook.
pub const ALERTMANAGER_SOURCE: &str = "alertmanager";
/// The only Alertmanager webhook version understood.
pub const ALERTMANAGER_VERSION: &str = "4";
/// The largest body decoded. 1,000 alerts of ordinary size are well under 1 MiB.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The most alerts (or generic events) in one body.
pub const MAX_ALERTS: usize = 1_000;
/// The most entries in one label or annotation set.
pub const MAX_LABELS: usize = 128;
/// The longest label or annotation name, in bytes.
pub const MAX_LABEL_NAME_BYTES: usize = 256;
/// The longest label or annotation value, in bytes (a `description` can be a paragraph).
pub const MAX_LABEL_VALUE_BYTES: usize = 16 * 1024;
/// The most bytes of names and values in one label or annotation set.
pub const MAX_LABEL_SET_BYTES: usize = 64 * 1024;
/// The longest Alertmanager `groupKey` (route path plus group labels), in bytes.
pub const MAX_GROUP_KEY_BYTES: usize = 4 * 1024;
/// The longest fingerprint, generic `id` or `agent` value, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// The longest generic `source`, in bytes.
pub const MAX_SOURCE_BYTES: usize = 64;
/// The longest time string accepted; RFC 3339 with nine fraction digits is 35.
pub const MAX_TIME_BYTES: usize = 64;

/// Labels and annotations: names to values, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// What an external alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    /// The `agent` label as given: an agent id or a hostname, for the caller to resolve.
    Agent(String),
    /// The `division` label: a division code ([`is_division_code`]).
    Division(DivisionCode),
    /// Neither label: the region root.
    Region,
}

/// One alert from an external system, mapped to our vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalAlert {
    /// `alertmanager`, or the generic body's `source`.
    pub source: String,
    /// Identifies one occurrence of the alert across repeats, firing and resolved.
    pub dedupe_key: String,
    /// Alertmanager's fingerprint of the label set (computed as Alertmanager does when an old
    /// sender leaves it out), or the generic `id`.
    pub fingerprint: String,
    /// Firing, or resolved.
    pub firing: bool,
    /// When the problem began.
    pub starts_ms: Millis,
    /// When it ended, if set. For a firing Alertmanager alert this can be a time in the future
    /// (Prometheus's expiry estimate), not a resolution: read [`firing`](Self::firing).
    pub ends_ms: Option<Millis>,
    pub subject: Subject,
    pub severity: Severity,
    pub category: Category,
    pub title: String,
    pub description: String,
    /// The alert's labels as received (for the generic format, its `labels`).
    pub labels: Labels,
}

/// One Alertmanager notification, decoded and mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertmanagerIntake {
    pub receiver: String,
    pub group_key: String,
    /// `first notification`, `repeat interval elapsed`, …; empty before Alertmanager v0.32.
    pub notification_reason: String,
    /// Alerts Alertmanager left out because of its `max_alerts`; worth a warning, since their
    /// bodies are lost.
    pub truncated_alerts: u64,
    pub alerts: Vec<ExternalAlert>,
}

/// The Alertmanager webhook body as sent (see the module docs). Unknown fields are ignored;
/// every field may be missing, and what is required is checked by [`parse_alertmanager`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AlertmanagerMessage {
    pub version: Option<String>,
    #[serde(rename = "groupKey")]
    pub group_key: Option<String>,
    #[serde(rename = "truncatedAlerts")]
    pub truncated_alerts: Option<u64>,
    pub status: Option<String>,
    pub receiver: Option<String>,
    #[serde(rename = "groupLabels")]
    pub group_labels: Option<Labels>,
    #[serde(rename = "commonLabels")]
    pub common_labels: Option<Labels>,
    #[serde(rename = "commonAnnotations")]
    pub common_annotations: Option<Labels>,
    #[serde(rename = "externalURL")]
    pub external_url: Option<String>,
    pub notification_reason: Option<String>,
    #[serde(rename = "routeLabels")]
    pub route_labels: Option<Labels>,
    pub alerts: Option<Vec<AlertmanagerAlert>>,
}

/// One element of [`AlertmanagerMessage::alerts`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AlertmanagerAlert {
    pub status: Option<String>,
    pub labels: Option<Labels>,
    pub annotations: Option<Labels>,
    #[serde(rename = "startsAt")]
    pub starts_at: Option<String>,
    #[serde(rename = "endsAt")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: Option<String>,
    pub fingerprint: Option<String>,
}

/// One event of the generic format (see the module docs). Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GenericEvent {
    pub source: Option<String>,
    pub id: Option<String>,
    pub status: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub severity: Option<String>,
    pub category: Option<String>,
    pub agent: Option<String>,
    pub division: Option<String>,
    pub time: Option<String>,
    pub resolved_time: Option<String>,
    pub labels: Option<Labels>,
}

/// Why a body was rejected. Messages name the field (`alerts[1].startsAt`) so that the sender's
/// operator can find the mistake from the 400 answer alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("body is {size} bytes, more than the limit of {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("body is not JSON: {detail}")]
    NotJson { detail: String },
    #[error("body is JSON but not {expected}: {detail}")]
    WrongShape {
        expected: &'static str,
        detail: String,
    },
    #[error("alertmanager webhook version {found} is not supported (expected \"4\")")]
    UnsupportedVersion {
        /// The version as quoted JSON text, or `missing`.
        found: String,
    },
    #[error("{count} alerts in one body, more than the limit of {limit}")]
    TooManyAlerts { count: usize, limit: usize },
    #[error("{field}: {reason}")]
    LabelSetTooLarge { field: String, reason: String },
    #[error("{field} is missing")]
    Missing { field: String },
    #[error("{field}: {value:?} is not an RFC 3339 time: {reason}")]
    BadTime {
        field: String,
        value: String,
        reason: TimeError,
    },
    #[error("{field}: {value:?} is not a status (expected \"firing\" or \"resolved\")")]
    BadStatus { field: String, value: String },
    #[error("{field}: {value:?} is not a division code (expected 2, 4, 6, 9 or 12 digits)")]
    BadDivision { field: String, value: String },
    #[error("{field}: {reason}")]
    BadValue { field: String, reason: String },
}

/// Why a string is not an RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("longer than 64 bytes")]
    TooLong,
    #[error("expected YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM")]
    Syntax,
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    #[error("before 1970-01-01T00:00:00Z")]
    BeforeEpoch,
}

/// Decodes and maps an Alertmanager webhook v4 body.
pub fn parse_alertmanager(body: &[u8]) -> Result<AlertmanagerIntake, IntakeError> {
    const EXPECTED: &str = "an Alertmanager webhook message";
    check_body_size(body)?;
    // Counted first without storing anything, so that a body of a million `{}` never becomes
    // a million alert structs.
    if let Ok(AlertCount {
        alerts: Some(SeqLen(count)),
    }) = serde_json::from_slice::<AlertCount>(body)
        && count > MAX_ALERTS
    {
        return Err(too_many(count));
    }
    let message: AlertmanagerMessage =
        serde_json::from_slice(body).map_err(|error| json_error(error, EXPECTED))?;
    map_alertmanager(&message)
}

/// Validates and maps a decoded Alertmanager message (what [`parse_alertmanager`] does after
/// decoding).
pub fn map_alertmanager(message: &AlertmanagerMessage) -> Result<AlertmanagerIntake, IntakeError> {
    match message.version.as_deref() {
        Some(ALERTMANAGER_VERSION) => {}
        Some(other) => {
            return Err(IntakeError::UnsupportedVersion {
                found: format!("{:?}", preview(other)),
            });
        }
        None => {
            return Err(IntakeError::UnsupportedVersion {
                found: "missing".to_owned(),
            });
        }
    }
    let group_key = message
        .group_key
        .clone()
        .ok_or_else(|| missing("groupKey"))?;
    check_length("groupKey", &group_key, MAX_GROUP_KEY_BYTES)?;
    if let Some(status) = &message.status {
        parse_status("status", status)?;
    }
    for (field, labels) in [
        ("groupLabels", &message.group_labels),
        ("commonLabels", &message.common_labels),
        ("commonAnnotations", &message.common_annotations),
        ("routeLabels", &message.route_labels),
    ] {
        if let Some(labels) = labels {
            check_label_set(field, labels)?;
        }
    }
    let receiver = message.receiver.clone().unwrap_or_default();
    check_length("receiver", &receiver, MAX_LABEL_VALUE_BYTES)?;
    let notification_reason = message.notification_reason.clone().unwrap_or_default();
    check_length(
        "notification_reason",
        &notification_reason,
        MAX_LABEL_VALUE_BYTES,
    )?;
    let wire_alerts = message.alerts.as_deref().unwrap_or_default();
    if wire_alerts.len() > MAX_ALERTS {
        return Err(too_many(wire_alerts.len()));
    }
    let alerts = wire_alerts
        .iter()
        .enumerate()
        .map(|(index, alert)| map_alertmanager_alert(&group_key, index, alert))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AlertmanagerIntake {
        receiver,
        group_key,
        notification_reason,
        truncated_alerts: message.truncated_alerts.unwrap_or(0),
        alerts,
    })
}

fn map_alertmanager_alert(
    group_key: &str,
    index: usize,
    alert: &AlertmanagerAlert,
) -> Result<ExternalAlert, IntakeError> {
    let field = |name: &str| format!("alerts[{index}].{name}");
    let status = alert
        .status
        .as_deref()
        .ok_or_else(|| missing(&field("status")))?;
    let firing = parse_status(&field("status"), status)?;
    let labels = alert.labels.clone().unwrap_or_default();
    check_label_set(&field("labels"), &labels)?;
    let empty = Labels::new();
    let annotations = alert.annotations.as_ref().unwrap_or(&empty);
    check_label_set(&field("annotations"), annotations)?;
    let starts_at = alert
        .starts_at
        .as_deref()
        .ok_or_else(|| missing(&field("startsAt")))?;
    let starts_ms =
        parse_time(&field("startsAt"), starts_at)?.ok_or_else(|| IntakeError::BadValue {
            field: field("startsAt"),
            reason: "the zero time: an alert must have a start".to_owned(),
        })?;
    let ends_ms = match alert.ends_at.as_deref() {
        Some(text) if !text.trim().is_empty() => parse_time(&field("endsAt"), text)?,
        _ => None,
    };
    if let Some(url) = &alert.generator_url {
        check_length(&field("generatorURL"), url, MAX_LABEL_VALUE_BYTES)?;
    }
    let fingerprint = match alert.fingerprint.as_deref().map(str::trim) {
        Some(given) if !given.is_empty() => {
            check_length(&field("fingerprint"), given, MAX_ID_BYTES)?;
            given.to_owned()
        }
        _ => label_set_fingerprint(&labels),
    };
    let subject = subject_of(
        label(&labels, "agent"),
        label(&labels, "division"),
        &field("labels.agent"),
        &field("labels.division"),
    )?;
    let title = label(annotations, "summary")
        .or_else(|| label(&labels, "alertname"))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("alert {fingerprint}"));
    let description = label(annotations, "description")
        .unwrap_or_default()
        .to_owned();
    Ok(ExternalAlert {
        source: ALERTMANAGER_SOURCE.to_owned(),
        dedupe_key: key_of(
            ALERTMANAGER_SOURCE,
            &[group_key, &fingerprint, &starts_ms.to_string()],
        ),
        fingerprint,
        firing,
        starts_ms,
        ends_ms,
        subject,
        severity: label(&labels, "severity").map_or(Severity::P3, Severity::from_label),
        category: Category::from_label(label(&labels, "category").unwrap_or_default()),
        title,
        description,
        labels,
    })
}

/// Decodes and maps a generic JSON body (one event or an array of events). `received_ms` is
/// when the body arrived: the default for a missing `time` or `resolved_time`.
pub fn parse_generic(body: &[u8], received_ms: Millis) -> Result<Vec<ExternalAlert>, IntakeError> {
    const EXPECTED: &str = "a generic intake event or an array of events";
    check_body_size(body)?;
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'[') {
        if let Ok(SeqLen(count)) = serde_json::from_slice::<SeqLen>(body)
            && count > MAX_ALERTS
        {
            return Err(too_many(count));
        }
        let values: Vec<serde_json::Value> =
            serde_json::from_slice(body).map_err(|error| json_error(error, EXPECTED))?;
        if values.len() > MAX_ALERTS {
            return Err(too_many(values.len()));
        }
        values
            .into_iter()
            .enumerate()
            .map(|(index, value)| {
                let event: GenericEvent =
                    serde_json::from_value(value).map_err(|error| IntakeError::WrongShape {
                        expected: "a generic intake event",
                        detail: format!("[{index}]: {error}"),
                    })?;
                map_generic(&event, &format!("[{index}]."), received_ms)
            })
            .collect()
    } else {
        let event: GenericEvent =
            serde_json::from_slice(body).map_err(|error| json_error(error, EXPECTED))?;
        Ok(vec![map_generic(&event, "", received_ms)?])
    }
}

/// Validates and maps one generic event; `prefix` goes before field names in errors.
pub fn map_generic(
    event: &GenericEvent,
    prefix: &str,
    received_ms: Millis,
) -> Result<ExternalAlert, IntakeError> {
    let field = |name: &str| format!("{prefix}{name}");
    let source = present(event.source.as_deref()).ok_or_else(|| missing(&field("source")))?;
    let source_ok = source.len() <= MAX_SOURCE_BYTES
        && source
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if !source_ok {
        return Err(IntakeError::BadValue {
            field: field("source"),
            reason: format!(
                "{:?} is not 1 to {MAX_SOURCE_BYTES} of A-Z a-z 0-9 . _ -",
                preview(source)
            ),
        });
    }
    let id = present(event.id.as_deref()).ok_or_else(|| missing(&field("id")))?;
    check_length(&field("id"), id, MAX_ID_BYTES)?;
    if id.chars().any(char::is_control) {
        return Err(IntakeError::BadValue {
            field: field("id"),
            reason: "contains a control character".to_owned(),
        });
    }
    let firing = match event.status.as_deref() {
        Some(status) => parse_status(&field("status"), status)?,
        None => true,
    };
    let title = present(event.title.as_deref()).ok_or_else(|| missing(&field("title")))?;
    check_length(&field("title"), title, MAX_LABEL_VALUE_BYTES)?;
    let description = event.description.as_deref().unwrap_or_default().trim();
    check_length(&field("description"), description, MAX_LABEL_VALUE_BYTES)?;
    for (name, value) in [
        ("severity", &event.severity),
        ("category", &event.category),
        ("agent", &event.agent),
        ("division", &event.division),
    ] {
        if let Some(value) = value {
            check_length(&field(name), value, MAX_LABEL_VALUE_BYTES)?;
        }
    }
    let labels = event.labels.clone().unwrap_or_default();
    check_label_set(&field("labels"), &labels)?;
    let optional_time = |name: &str, value: &Option<String>| -> Result<Millis, IntakeError> {
        match present(value.as_deref()) {
            Some(text) => parse_time(&field(name), text)?.ok_or_else(|| IntakeError::BadValue {
                field: field(name),
                reason: "the zero time; leave the field out instead".to_owned(),
            }),
            None => Ok(received_ms),
        }
    };
    let starts_ms = optional_time("time", &event.time)?;
    let ends_ms = if firing {
        None
    } else {
        Some(optional_time("resolved_time", &event.resolved_time)?)
    };
    let subject = subject_of(
        present(event.agent.as_deref()),
        present(event.division.as_deref()),
        &field("agent"),
        &field("division"),
    )?;
    Ok(ExternalAlert {
        source: source.to_owned(),
        dedupe_key: key_of("generic", &[source, id]),
        fingerprint: id.to_owned(),
        firing,
        starts_ms,
        ends_ms,
        subject,
        severity: present(event.severity.as_deref()).map_or(Severity::P3, Severity::from_label),
        category: Category::from_label(present(event.category.as_deref()).unwrap_or_default()),
        title: title.to_owned(),
        description: description.to_owned(),
        labels,
    })
}

/// Parses an RFC 3339 time (`2026-11-26T10:00:00.123+08:00`, `…Z`) to [`Millis`], truncating
/// fractions below the millisecond. Go's zero time (`0001-01-01T00:00:00Z`, Alertmanager's
/// "not set") is `Ok(None)`; any other time before 1970 is an error. `t` and `z` may be lower
/// case and a space may separate date and time, as RFC 3339 §5.6 allows; a leap second
/// (`:60`) counts as the first second of the next minute, as POSIX time does.
pub fn parse_rfc3339(text: &str) -> Result<Option<Millis>, TimeError> {
    // Go's zero time, 0001-01-01T00:00:00Z, in milliseconds from the Unix epoch.
    const GO_ZERO_TIME_MS: i64 = -62_135_596_800_000;
    if text.len() > MAX_TIME_BYTES {
        return Err(TimeError::TooLong);
    }
    let mut cursor = Cursor {
        bytes: text.as_bytes(),
        position: 0,
    };
    let year = cursor.number(4)?;
    cursor.expect(b"-")?;
    let month = cursor.number(2)?;
    cursor.expect(b"-")?;
    let day = cursor.number(2)?;
    cursor.expect(b"Tt ")?;
    let hour = cursor.number(2)?;
    cursor.expect(b":")?;
    let minute = cursor.number(2)?;
    cursor.expect(b":")?;
    let second = cursor.number(2)?;
    let mut fraction_ms = 0;
    if cursor.peek() == Some(b'.') {
        cursor.position += 1;
        let mut digits = 0;
        while let Some(digit) = cursor.peek().filter(u8::is_ascii_digit) {
            if digits < 3 {
                fraction_ms = fraction_ms * 10 + i64::from(digit - b'0');
            }
            digits += 1;
            cursor.position += 1;
        }
        if digits == 0 {
            return Err(TimeError::Syntax);
        }
        for _ in digits..3 {
            fraction_ms *= 10;
        }
    }
    let offset_minutes = match cursor.take() {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hours = cursor.number(2)?;
            cursor.expect(b":")?;
            let minutes = cursor.number(2)?;
            if hours > 23 || minutes > 59 {
                return Err(TimeError::OutOfRange("offset"));
            }
            let offset = hours * 60 + minutes;
            if sign == b'-' { -offset } else { offset }
        }
        _ => return Err(TimeError::Syntax),
    };
    if cursor.position != text.len() {
        return Err(TimeError::Syntax);
    }
    if !(1..=12).contains(&month) {
        return Err(TimeError::OutOfRange("month"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(TimeError::OutOfRange("day"));
    }
    if hour > 23 {
        return Err(TimeError::OutOfRange("hour"));
    }
    if minute > 59 {
        return Err(TimeError::OutOfRange("minute"));
    }
    if second > 60 {
        return Err(TimeError::OutOfRange("second"));
    }
    let days = crate::calendar::days_from_civil(year, month, day);
    let local_seconds = ((days * 24 + hour) * 60 + minute) * 60 + second;
    let utc_ms = (local_seconds - offset_minutes * 60) * 1000 + fraction_ms;
    if utc_ms == GO_ZERO_TIME_MS {
        return Ok(None);
    }
    Millis::try_from(utc_ms)
        .map(Some)
        .map_err(|_| TimeError::BeforeEpoch)
}

/// The fingerprint Alertmanager gives a label set (prometheus/common `model.LabelSet`
/// `Fingerprint`): FNV-1a 64 over each name and value in name order, each followed by the
/// byte 0xff, as 16 lower-case hex digits. Used when an old sender leaves `fingerprint` out,
/// so that its alerts de-duplicate as a newer Alertmanager's would.
pub fn label_set_fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    // BTreeMap<String, _> iterates in byte order of the names, as Go's sort.Strings does.
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{hash:016x}")
}

/// Whether `text` has the shape of a division code: the 2, 4, 6, 9 or 12 ASCII digits of
/// the five levels (`45`, `4501`, `450103`, `450103001`, `450103001005`), or a code padded to
/// 12 digits with zeros (`450103000000`) as many government systems write them; the control
/// plane maps a padded code to its level.
pub fn is_division_code(text: &str) -> bool {
    matches!(text.len(), 2 | 4 | 6 | 9 | 12) && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Settings of a [`Deduper`].
///
/// An entry lives `ttl` after the alert was *last* seen, so an alert that keeps firing stays
/// known as long as its sender repeats it more often than `ttl`. The default, 12 h, is three of
/// Alertmanager's default 4 h `repeat_interval`: two lost repeats in a row are still
/// recognised. With a longer `repeat_interval` raise `ttl` above it.
///
/// Memory is bounded twice: past `capacity` keys, or past `max_key_bytes` bytes of keys, the
/// least recently seen key is forgotten (the newest one is always kept). An entry costs its
/// key (typically 100–300 bytes) plus about 100 bytes of bookkeeping, so the defaults hold at
/// most about 16 MiB of keys + 5 MB. A forgotten alert passes again as [`Verdict::New`], so
/// the incident engine must still treat an alert for an open incident as a repeat; the
/// deduper only keeps the common case cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeduperConfig {
    /// The most keys remembered (at least 1).
    pub capacity: usize,
    /// The most bytes of keys remembered.
    pub max_key_bytes: usize,
    /// How long a key is remembered after it was last seen.
    pub ttl: Millis,
}

impl Default for DeduperConfig {
    fn default() -> Self {
        DeduperConfig {
            capacity: 50_000,
            max_key_bytes: 16 * 1024 * 1024,
            ttl: 12 * HOUR,
        }
    }
}

/// What the [`Deduper`] says about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// First firing or first resolved notification of this occurrence: act on it.
    New,
    /// The same notification again (a repeat or an HA copy): ignore it.
    Duplicate,
    /// A firing notification after the resolved one was seen: ignore it.
    Stale,
}

/// Remembers which alert occurrences were seen, and whether firing or resolved. Bounded in
/// memory and time (see [`DeduperConfig`]); sans IO, time comes in as `now`.
#[derive(Debug, Clone)]
pub struct Deduper {
    config: DeduperConfig,
    entries: HashMap<Arc<str>, DedupeEntry>,
    /// Keys by the sequence number of their last sighting: the first is the least recent.
    recency: BTreeMap<u64, Arc<str>>,
    /// The sum of the lengths of the keys in `entries`.
    key_bytes: usize,
    next_sequence: u64,
}

#[derive(Debug, Clone, Copy)]
struct DedupeEntry {
    resolved: bool,
    last_seen: Millis,
    sequence: u64,
}

impl Deduper {
    pub fn new(config: DeduperConfig) -> Deduper {
        Deduper {
            config: DeduperConfig {
                capacity: config.capacity.max(1),
                ..config
            },
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            key_bytes: 0,
            next_sequence: 0,
        }
    }

    /// Records an alert seen at `now` and says whether it is new.
    pub fn handle_alert(&mut self, alert: &ExternalAlert, now: Millis) -> Verdict {
        self.handle(&alert.dedupe_key, alert.firing, now)
    }

    /// Records a firing or resolved notification of the occurrence `dedupe_key` seen at `now`.
    pub fn handle(&mut self, dedupe_key: &str, firing: bool, now: Millis) -> Verdict {
        self.expire(now);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let ttl = self.config.ttl;
        let known = self
            .entries
            .get_key_value(dedupe_key)
            .filter(|(_, entry)| !expired(entry, ttl, now))
            .map(|(key, entry)| (Arc::clone(key), *entry));
        let (verdict, key, resolved) = match known {
            None => {
                // Gone or expired: forget any expired entry before it is replaced.
                if let Some(sequence) = self.entries.get(dedupe_key).map(|entry| entry.sequence) {
                    self.forget(sequence);
                }
                let key: Arc<str> = Arc::from(dedupe_key);
                self.key_bytes += key.len();
                (Verdict::New, key, !firing)
            }
            Some((key, entry)) => {
                self.recency.remove(&entry.sequence);
                let (verdict, resolved) = match (firing, entry.resolved) {
                    (true, false) | (false, true) => (Verdict::Duplicate, entry.resolved),
                    (true, true) => (Verdict::Stale, true),
                    (false, false) => (Verdict::New, true),
                };
                (verdict, key, resolved)
            }
        };
        self.entries.insert(
            Arc::clone(&key),
            DedupeEntry {
                resolved,
                last_seen: now,
                sequence,
            },
        );
        self.recency.insert(sequence, key);
        while self.entries.len() > self.config.capacity
            || (self.key_bytes > self.config.max_key_bytes && self.entries.len() > 1)
        {
            let Some((&oldest, _)) = self.recency.first_key_value() else {
                break;
            };
            self.forget(oldest);
        }
        verdict
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many bytes of keys are remembered.
    pub fn key_bytes(&self) -> usize {
        self.key_bytes
    }

    /// Forgets the keys last seen `ttl` or longer before `now`, least recent first. If `now`
    /// went backwards an older key may outlive a newer one for a while; it is still treated as
    /// expired when looked up.
    fn expire(&mut self, now: Millis) {
        while let Some((&sequence, key)) = self.recency.first_key_value() {
            match self.entries.get(key) {
                Some(entry) if !expired(entry, self.config.ttl, now) => break,
                _ => self.forget(sequence),
            }
        }
    }

    /// Removes the key last seen at `sequence`.
    fn forget(&mut self, sequence: u64) {
        if let Some(key) = self.recency.remove(&sequence) {
            self.entries.remove(&key);
            self.key_bytes -= key.len();
        }
    }
}

fn expired(entry: &DedupeEntry, ttl: Millis, now: Millis) -> bool {
    entry.last_seen.saturating_add(ttl) <= now
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A JSON array's length, counted without storing its elements.
struct SeqLen(usize);

impl<'de> Deserialize<'de> for SeqLen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = SeqLen;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<SeqLen, A::Error> {
                let mut count = 0;
                while sequence.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(SeqLen(count))
            }
        }
        deserializer.deserialize_seq(Count)
    }
}

/// The first pass over an Alertmanager body: only the number of alerts.
#[derive(Deserialize)]
struct AlertCount {
    alerts: Option<SeqLen>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn take(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.position += 1;
        Some(byte)
    }

    /// Exactly `digits` ASCII digits as a number.
    fn number(&mut self, digits: usize) -> Result<i64, TimeError> {
        let mut value = 0;
        for _ in 0..digits {
            match self.take() {
                Some(byte) if byte.is_ascii_digit() => value = value * 10 + i64::from(byte - b'0'),
                _ => return Err(TimeError::Syntax),
            }
        }
        Ok(value)
    }

    /// One byte out of `allowed`.
    fn expect(&mut self, allowed: &[u8]) -> Result<(), TimeError> {
        match self.take() {
            Some(byte) if allowed.contains(&byte) => Ok(()),
            _ => Err(TimeError::Syntax),
        }
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn check_body_size(body: &[u8]) -> Result<(), IntakeError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(IntakeError::BodyTooLarge {
            size: body.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(())
}

fn json_error(error: serde_json::Error, expected: &'static str) -> IntakeError {
    match error.classify() {
        serde_json::error::Category::Data => IntakeError::WrongShape {
            expected,
            detail: error.to_string(),
        },
        _ => IntakeError::NotJson {
            detail: error.to_string(),
        },
    }
}

fn too_many(count: usize) -> IntakeError {
    IntakeError::TooManyAlerts {
        count,
        limit: MAX_ALERTS,
    }
}

fn missing(field: &str) -> IntakeError {
    IntakeError::Missing {
        field: field.to_owned(),
    }
}

/// `firing` → true, `resolved` → false, in any case.
fn parse_status(field: &str, status: &str) -> Result<bool, IntakeError> {
    match status.trim().to_ascii_lowercase().as_str() {
        "firing" => Ok(true),
        "resolved" => Ok(false),
        _ => Err(IntakeError::BadStatus {
            field: field.to_owned(),
            value: preview(status).to_owned(),
        }),
    }
}

fn parse_time(field: &str, text: &str) -> Result<Option<Millis>, IntakeError> {
    parse_rfc3339(text.trim()).map_err(|reason| IntakeError::BadTime {
        field: field.to_owned(),
        value: preview(text).to_owned(),
        reason,
    })
}

fn check_length(field: &str, value: &str, limit: usize) -> Result<(), IntakeError> {
    if value.len() > limit {
        return Err(IntakeError::BadValue {
            field: field.to_owned(),
            reason: format!("{} bytes, more than the limit of {limit}", value.len()),
        });
    }
    Ok(())
}

fn check_label_set(field: &str, labels: &Labels) -> Result<(), IntakeError> {
    let too_large = |reason: String| IntakeError::LabelSetTooLarge {
        field: field.to_owned(),
        reason,
    };
    if labels.len() > MAX_LABELS {
        return Err(too_large(format!(
            "{} entries, more than the limit of {MAX_LABELS}",
            labels.len()
        )));
    }
    let mut total = 0;
    for (name, value) in labels {
        if name.len() > MAX_LABEL_NAME_BYTES {
            return Err(too_large(format!(
                "name {:?} is {} bytes, more than the limit of {MAX_LABEL_NAME_BYTES}",
                preview(name),
                name.len()
            )));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(too_large(format!(
                "value of {:?} is {} bytes, more than the limit of {MAX_LABEL_VALUE_BYTES}",
                preview(name),
                value.len()
            )));
        }
        total += name.len() + value.len();
    }
    if total > MAX_LABEL_SET_BYTES {
        return Err(too_large(format!(
            "{total} bytes of names and values, more than the limit of {MAX_LABEL_SET_BYTES}"
        )));
    }
    Ok(())
}

/// A label's value, trimmed; empty counts as absent.
fn label<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    present(labels.get(name).map(String::as_str))
}

/// A value trimmed; empty counts as absent.
fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|value| !value.is_empty())
}

fn subject_of(
    agent: Option<&str>,
    division: Option<&str>,
    agent_field: &str,
    division_field: &str,
) -> Result<Subject, IntakeError> {
    if let Some(division) = division
        && !is_division_code(division)
    {
        return Err(IntakeError::BadDivision {
            field: division_field.to_owned(),
            value: preview(division).to_owned(),
        });
    }
    if let Some(agent) = agent {
        check_length(agent_field, agent, MAX_ID_BYTES)?;
        return Ok(Subject::Agent(agent.to_owned()));
    }
    Ok(division.map_or(Subject::Region, |code| Subject::Division(code.to_owned())))
}

/// A de-duplication key from parts that may contain any character: each part is written with
/// its length in front, so that no two different part lists give the same key.
fn key_of(kind: &str, parts: &[&str]) -> String {
    let mut key = kind.to_owned();
    for part in parts {
        key.push(' ');
        key.push_str(&part.len().to_string());
        key.push(':');
        key.push_str(part);
    }
    key
}

/// At most the first 64 characters of a value, for error messages.
fn preview(value: &str) -> &str {
    match value.char_indices().nth(64) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Alertmanager posts when a group of two alerts first fires: one about a county
    /// gateway agent, one about a village division (shape as sent by v0.34; values invented).
    const FIRING: &str = r#"{
      "receiver": "bagui",
      "status": "firing",
      "alerts": [
        {
          "status": "firing",
          "labels": {
            "alertname": "GatewayDown", "agent": "qingxiu-gw01", "division": "450103000000",
            "env": "gx-prod", "instance": "10.45.1.1:9100", "job": "node",
            "severity": "critical", "category": "network"
          },
          "annotations": {
            "summary": "青秀区出口网关失联",
            "description": "10.45.1.1 has not answered for 2 minutes."
          },
          "startsAt": "2026-11-26T02:00:05.123456789Z",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "http://prometheus.ops.gx:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
          "fingerprint": "5a3f1c2b7d9e0f11"
        },
        {
          "status": "firing",
          "labels": {
            "alertname": "DiskAlmostFull", "division": "450103001005", "env": "gx-prod",
            "instance": "10.45.9.7:9100", "job": "node", "severity": "warning"
          },
          "annotations": {"description": "/var is 97% full"},
          "startsAt": "2026-11-26T10:01:00+08:00",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "http://prometheus.ops.gx:9090/graph?g0.expr=disk",
          "fingerprint": "0f1e2d3c4b5a6978"
        }
      ],
      "groupLabels": {"env": "gx-prod"},
      "commonLabels": {"env": "gx-prod", "job": "node"},
      "commonAnnotations": {},
      "externalURL": "http://alertmanager.ops.gx:9093",
      "version": "4",
      "groupKey": "{}/{severity=~\"critical|warning\"}:{env=\"gx-prod\"}",
      "truncatedAlerts": 0,
      "notification_reason": "first notification",
      "routeLabels": {"severity": "critical|warning"}
    }"#;

    const GROUP_KEY: &str = r#"{}/{severity=~"critical|warning"}:{env="gx-prod"}"#;

    /// The follow-up when both are resolved.
    fn resolved() -> String {
        FIRING
            .replace("\"status\": \"firing\"", "\"status\": \"resolved\"")
            .replace(
                "\"endsAt\": \"0001-01-01T00:00:00Z\"",
                "\"endsAt\": \"2026-11-26T02:30:05.5Z\"",
            )
            .replace("first notification", "all alerts resolved")
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    /// An Alertmanager body with one alert built from `alert` (a JSON object's text).
    fn one_alert(alert: &str) -> String {
        format!(r#"{{"version":"4","groupKey":"k","status":"firing","alerts":[{alert}]}}"#)
    }

    fn error_of(body: &str) -> IntakeError {
        parse_alertmanager(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn firing_payload_maps_each_alert_to_its_subject() {
        let intake = parse_alertmanager(FIRING.as_bytes()).unwrap();
        assert_eq!(intake.receiver, "bagui");
        assert_eq!(intake.group_key, GROUP_KEY);
        assert_eq!(intake.notification_reason, "first notification");
        assert_eq!(intake.truncated_alerts, 0);
        assert_eq!(intake.alerts.len(), 2);
        assert_eq!(
            intake.alerts[0],
            ExternalAlert {
                source: "alertmanager".to_owned(),
                dedupe_key: format!(
                    "alertmanager 49:{GROUP_KEY} 16:5a3f1c2b7d9e0f11 13:1795658405123"
                ),
                fingerprint: "5a3f1c2b7d9e0f11".to_owned(),
                firing: true,
                // 2026-11-26T02:00:05.123456789Z, below the millisecond cut off.
                starts_ms: 1_795_658_405_123,
                ends_ms: None,
                // The agent label wins over the division label.
                subject: Subject::Agent("qingxiu-gw01".to_owned()),
                severity: Severity::P1,
                category: Category::Network,
                title: "青秀区出口网关失联".to_owned(),
                description: "10.45.1.1 has not answered for 2 minutes.".to_owned(),
                labels: labels(&[
                    ("agent", "qingxiu-gw01"),
                    ("alertname", "GatewayDown"),
                    ("category", "network"),
                    ("division", "450103000000"),
                    ("env", "gx-prod"),
                    ("instance", "10.45.1.1:9100"),
                    ("job", "node"),
                    ("severity", "critical"),
                ]),
            }
        );
        let village = &intake.alerts[1];
        assert_eq!(
            village.subject,
            Subject::Division("450103001005".to_owned())
        );
        // 10:01 in UTC+8 is 02:01 UTC.
        assert_eq!(village.starts_ms, 1_795_658_460_000);
        assert_eq!(village.severity, Severity::P3);
        // No category label: host.
        assert_eq!(village.category, Category::Host);
        // No summary annotation: the alert name.
        assert_eq!(village.title, "DiskAlmostFull");
        assert_eq!(village.description, "/var is 97% full");
        assert_eq!(
            village.dedupe_key,
            format!("alertmanager 49:{GROUP_KEY} 16:0f1e2d3c4b5a6978 13:1795658460000")
        );
    }

    #[test]
    fn resolved_follow_up_keeps_the_key_and_sets_the_end() {
        let firing = parse_alertmanager(FIRING.as_bytes()).unwrap();
        let resolved = parse_alertmanager(resolved().as_bytes()).unwrap();
        assert_eq!(resolved.notification_reason, "all alerts resolved");
        for (before, after) in firing.alerts.iter().zip(&resolved.alerts) {
            assert!(before.firing);
            assert!(!after.firing);
            assert_eq!(after.dedupe_key, before.dedupe_key);
            assert_eq!(after.starts_ms, before.starts_ms);
            assert_eq!(after.ends_ms, Some(1_795_660_205_500));
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let with_extras = FIRING
            .replace(
                "\"receiver\": \"bagui\",",
                "\"receiver\": \"bagui\", \"futureField\": {\"nested\": [1, 2, {\"x\": null}]},",
            )
            .replace(
                "\"fingerprint\": \"5a3f1c2b7d9e0f11\"",
                "\"fingerprint\": \"5a3f1c2b7d9e0f11\", \"silencedBy\": [], \"state\": 7",
            );
        assert_ne!(with_extras, FIRING);
        assert_eq!(
            parse_alertmanager(with_extras.as_bytes()).unwrap(),
            parse_alertmanager(FIRING.as_bytes()).unwrap()
        );
    }

    #[test]
    fn missing_optional_fields_are_tolerated() {
        // What an Alertmanager before v0.19 sends at most: no fingerprint, no truncatedAlerts,
        // no notification_reason, no endsAt; labels and annotations may even be null.
        let body = r#"{"version":"4","groupKey":"{}:{}","alerts":[
            {"status":"firing","labels":{"alertname":"X"},"startsAt":"2026-11-26T09:00:00Z"},
            {"status":"resolved","labels":null,"annotations":null,
             "startsAt":"2026-11-26T09:00:00Z","endsAt":""}]}"#;
        let intake = parse_alertmanager(body.as_bytes()).unwrap();
        assert_eq!(intake.receiver, "");
        assert_eq!(intake.notification_reason, "");
        assert_eq!(intake.truncated_alerts, 0);
        let first = &intake.alerts[0];
        assert_eq!(first.fingerprint, "d2aeefc389ca7746");
        assert_eq!(first.title, "X");
        assert_eq!(first.description, "");
        assert_eq!(first.subject, Subject::Region);
        assert_eq!(first.severity, Severity::P3);
        assert_eq!(first.category, Category::Host);
        assert_eq!(first.starts_ms, 1_795_683_600_000);
        assert_eq!(first.ends_ms, None);
        let second = &intake.alerts[1];
        // The fingerprint of no labels, and a title made from it.
        assert_eq!(second.fingerprint, "cbf29ce484222325");
        assert_eq!(second.title, "alert cbf29ce484222325");
        assert!(!second.firing);
        assert_eq!(second.ends_ms, None);
        // No alerts at all is an empty intake.
        let empty = parse_alertmanager(br#"{"version":"4","groupKey":""}"#).unwrap();
        assert!(empty.alerts.is_empty());
    }

    #[test]
    fn fingerprint_is_computed_as_alertmanager_does() {
        // prometheus/common model/signature_test.go.
        assert_eq!(label_set_fingerprint(&Labels::new()), "cbf29ce484222325");
        assert_eq!(
            label_set_fingerprint(&labels(&[
                ("name", "garland, briggs"),
                ("fear", "love is not enough")
            ])),
            "507a62d79ee76c9a"
        );
    }

    #[test]
    fn rejections_name_the_problem() {
        let cases: Vec<(String, &str)> = vec![
            (
                FIRING.replace("\"version\": \"4\"", "\"version\": \"3\""),
                "alertmanager webhook version \"3\" is not supported (expected \"4\")",
            ),
            (
                FIRING.replace("\"version\": \"4\",", ""),
                "alertmanager webhook version missing is not supported (expected \"4\")",
            ),
            (
                FIRING.replace("\"groupKey\"", "\"groupKeyX\""),
                "groupKey is missing",
            ),
            (
                FIRING.replacen("\"status\": \"firing\"", "\"status\": \"pending\"", 1),
                "status: \"pending\" is not a status (expected \"firing\" or \"resolved\")",
            ),
            (
                one_alert(r#"{"status":"active","startsAt":"2026-11-26T09:00:00Z"}"#),
                "alerts[0].status: \"active\" is not a status (expected \"firing\" or \"resolved\")",
            ),
            (
                one_alert(r#"{"startsAt":"2026-11-26T09:00:00Z"}"#),
                "alerts[0].status is missing",
            ),
            (
                one_alert(r#"{"status":"firing"}"#),
                "alerts[0].startsAt is missing",
            ),
            (
                one_alert(r#"{"status":"firing","startsAt":"2026-11-26 10:00"}"#),
                "alerts[0].startsAt: \"2026-11-26 10:00\" is not an RFC 3339 time: \
                 expected YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM",
            ),
            (
                one_alert(r#"{"status":"firing","startsAt":"0001-01-01T00:00:00Z"}"#),
                "alerts[0].startsAt: the zero time: an alert must have a start",
            ),
            (
                one_alert(
                    r#"{"status":"resolved","startsAt":"2026-11-26T09:00:00Z","endsAt":"1969-12-31T23:59:59Z"}"#,
                ),
                "alerts[0].endsAt: \"1969-12-31T23:59:59Z\" is not an RFC 3339 time: \
                 before 1970-01-01T00:00:00Z",
            ),
            (
                FIRING.replace("450103001005", "45010"),
                "alerts[1].labels.division: \"45010\" is not a division code \
                 (expected 2, 4, 6, 9 or 12 digits)",
            ),
            (
                // Validated even though the agent label decides the subject.
                FIRING.replace("450103000000", "45010300000A"),
                "alerts[0].labels.division: \"45010300000A\" is not a division code \
                 (expected 2, 4, 6, 9 or 12 digits)",
            ),
        ];
        for (body, message) in cases {
            assert_eq!(error_of(&body).to_string(), message);
        }
    }

    #[test]
    fn bodies_that_are_not_json_or_of_the_wrong_shape_are_told_apart() {
        for body in ["not json", "{\"version\":\"4\"", "", "\u{feff}{}"] {
            let error = error_of(body);
            assert!(
                matches!(error, IntakeError::NotJson { .. }),
                "{body:?}: {error}"
            );
            assert!(error.to_string().starts_with("body is not JSON: "));
        }
        let error = parse_alertmanager(b"{\"version\":\"4\",\"alerts\":\xff}").unwrap_err();
        assert!(matches!(error, IntakeError::NotJson { .. }), "{error}");
        for body in [
            "42",
            "[]",
            r#"{"version":4,"groupKey":"k"}"#,
            r#"{"version":"4","groupKey":"k","alerts":{}}"#,
            r#"{"version":"4","groupKey":"k","alerts":[{"labels":{"a":1}}]}"#,
            r#"{"version":"4","groupKey":"k","truncatedAlerts":-1}"#,
        ] {
            let error = error_of(body);
            assert!(
                matches!(error, IntakeError::WrongShape { .. }),
                "{body:?}: {error}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("body is JSON but not an Alertmanager webhook message: "),
                "{error}"
            );
        }
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            parse_alertmanager(&huge).unwrap_err().to_string(),
            format!(
                "body is {} bytes, more than the limit of 4194304",
                MAX_BODY_BYTES + 1
            )
        );
    }

    #[test]
    fn alert_count_is_bounded() {
        let alert = r#"{"status":"firing","labels":{},"startsAt":"2026-11-26T09:00:00Z"}"#;
        let body = |count: usize| {
            let alerts = vec![alert; count].join(",");
            format!(r#"{{"version":"4","groupKey":"k","alerts":[{alerts}]}}"#)
        };
        assert_eq!(
            parse_alertmanager(body(MAX_ALERTS).as_bytes())
                .unwrap()
                .alerts
                .len(),
            1000
        );
        assert_eq!(
            error_of(&body(MAX_ALERTS + 1)),
            IntakeError::TooManyAlerts {
                count: 1001,
                limit: 1000
            }
        );
        assert_eq!(
            error_of(&body(MAX_ALERTS + 1)).to_string(),
            "1001 alerts in one body, more than the limit of 1000"
        );
        // Counted before anything is built: a body of empty objects is refused as too many
        // rather than decoded.
        let empties = format!(
            r#"{{"version":"4","groupKey":"k","alerts":[{}]}}"#,
            vec!["{}"; 200_000].join(",")
        );
        assert_eq!(
            error_of(&empties).to_string(),
            "200000 alerts in one body, more than the limit of 1000"
        );
    }

    #[test]
    fn oversized_label_sets_are_refused() {
        let many: Vec<String> = (0..=MAX_LABELS)
            .map(|n| format!("\"l{n}\":\"v\""))
            .collect();
        let body = one_alert(&format!(
            r#"{{"status":"firing","startsAt":"2026-11-26T09:00:00Z","labels":{{{}}}}}"#,
            many.join(",")
        ));
        assert_eq!(
            error_of(&body).to_string(),
            "alerts[0].labels: 129 entries, more than the limit of 128"
        );

        let long_value = "x".repeat(MAX_LABEL_VALUE_BYTES + 1);
        let body = one_alert(&format!(
            r#"{{"status":"firing","startsAt":"2026-11-26T09:00:00Z","annotations":{{"description":"{long_value}"}}}}"#
        ));
        assert_eq!(
            error_of(&body).to_string(),
            "alerts[0].annotations: value of \"description\" is 16385 bytes, more than the limit of 16384"
        );

        let long_name = "n".repeat(MAX_LABEL_NAME_BYTES + 1);
        let body = FIRING.replace(
            "\"groupLabels\": {",
            &format!("\"groupLabels\": {{\"{long_name}\": \"v\","),
        );
        assert_eq!(
            error_of(&body).to_string(),
            format!(
                "groupLabels: name {:?} is 257 bytes, more than the limit of 256",
                "n".repeat(64)
            )
        );

        // Five values of 15,000 bytes: each allowed, together too much.
        let value = "y".repeat(15_000);
        let pairs: Vec<String> = (0..5).map(|n| format!("\"a{n}\":\"{value}\"")).collect();
        let body = one_alert(&format!(
            r#"{{"status":"firing","startsAt":"2026-11-26T09:00:00Z","annotations":{{{}}}}}"#,
            pairs.join(",")
        ));
        assert_eq!(
            error_of(&body).to_string(),
            "alerts[0].annotations: 75010 bytes of names and values, more than the limit of 65536"
        );

        let body = FIRING.replace(
            "\"5a3f1c2b7d9e0f11\"",
            &format!("\"{}\"", "f".repeat(MAX_ID_BYTES + 1)),
        );
        assert_eq!(
            error_of(&body).to_string(),
            "alerts[0].fingerprint: 257 bytes, more than the limit of 256"
        );
    }

    #[test]
    fn severity_category_and_subject_labels_map_to_ours() {
        let map = |labels_json: &str| {
            let body = one_alert(&format!(
                r#"{{"status":"firing","startsAt":"2026-11-26T09:00:00Z","labels":{labels_json}}}"#
            ));
            parse_alertmanager(body.as_bytes())
                .unwrap()
                .alerts
                .remove(0)
        };
        for (severity, expected) in [
            ("critical", Severity::P1),
            ("Critical", Severity::P1),
            ("major", Severity::P2),
            ("high", Severity::P2),
            ("warning", Severity::P3),
            ("minor", Severity::P3),
            ("info", Severity::Info),
            ("", Severity::P3),
        ] {
            let alert = map(&format!(r#"{{"severity":"{severity}"}}"#));
            assert_eq!(alert.severity, expected, "{severity}");
        }
        assert_eq!(map("{}").severity, Severity::P3);
        for (category, expected) in [
            ("network", Category::Network),
            ("security", Category::Security),
            ("application", Category::Application),
            ("host", Category::Host),
            ("database", Category::Host),
        ] {
            let alert = map(&format!(r#"{{"category":"{category}"}}"#));
            assert_eq!(alert.category, expected, "{category}");
        }
        // An empty label is an absent one: the division decides.
        assert_eq!(
            map(r#"{"agent":" ","division":"450103001005"}"#).subject,
            Subject::Division("450103001005".to_owned())
        );
        assert_eq!(
            map(r#"{"agent":" nn-host-7 "}"#).subject,
            Subject::Agent("nn-host-7".to_owned())
        );
        assert_eq!(map(r#"{"division":""}"#).subject, Subject::Region);
        assert_eq!(map(r#"{"instance":"x"}"#).subject, Subject::Region);
    }

    #[test]
    fn rfc3339_edge_cases() {
        let ok = |text: &str| parse_rfc3339(text).unwrap();
        assert_eq!(ok("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(ok("1970-01-01T08:00:00+08:00"), Some(0));
        assert_eq!(ok("1970-01-01T00:00:00.5Z"), Some(500));
        assert_eq!(ok("1970-01-01T00:00:00.05Z"), Some(50));
        assert_eq!(ok("1970-01-01T00:00:01.999999999Z"), Some(1_999));
        assert_eq!(ok("1970-01-01t00:00:01.000000000000000001z"), Some(1_000));
        assert_eq!(ok("2026-11-26 10:01:00+08:00"), Some(1_795_658_460_000));
        assert_eq!(ok("2026-11-25T20:31:00-05:30"), Some(1_795_658_460_000));
        assert_eq!(ok("2026-11-26T02:01:00-00:00"), Some(1_795_658_460_000));
        assert_eq!(ok("2024-02-29T12:00:00Z"), Some(1_709_208_000_000));
        assert_eq!(ok("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(ok("9999-12-31T23:59:59.999Z"), Some(253_402_300_799_999));
        // A leap second is the first second of the next minute.
        assert_eq!(ok("2016-12-31T23:59:60Z"), Some(1_483_228_800_000));
        // Go's zero time, however written, is "not set".
        assert_eq!(ok("0001-01-01T00:00:00Z"), None);
        assert_eq!(ok("0001-01-01T00:00:00.000Z"), None);
        assert_eq!(ok("0001-01-01T08:00:00+08:00"), None);

        let err = |text: &str| parse_rfc3339(text).unwrap_err();
        assert_eq!(err("1969-12-31T23:59:59Z"), TimeError::BeforeEpoch);
        assert_eq!(err("0001-01-01T00:00:01Z"), TimeError::BeforeEpoch);
        assert_eq!(err("1970-01-01T00:00:00+00:01"), TimeError::BeforeEpoch);
        assert_eq!(err("2026-02-29T00:00:00Z"), TimeError::OutOfRange("day"));
        assert_eq!(err("1900-02-29T00:00:00Z"), TimeError::OutOfRange("day"));
        assert_eq!(err("2026-04-31T00:00:00Z"), TimeError::OutOfRange("day"));
        assert_eq!(err("2026-11-00T00:00:00Z"), TimeError::OutOfRange("day"));
        assert_eq!(err("2026-13-01T00:00:00Z"), TimeError::OutOfRange("month"));
        assert_eq!(err("2026-00-01T00:00:00Z"), TimeError::OutOfRange("month"));
        assert_eq!(err("2026-11-26T24:00:00Z"), TimeError::OutOfRange("hour"));
        assert_eq!(err("2026-11-26T23:60:00Z"), TimeError::OutOfRange("minute"));
        assert_eq!(err("2026-11-26T23:59:61Z"), TimeError::OutOfRange("second"));
        assert_eq!(
            err("2026-11-26T10:00:00+24:00"),
            TimeError::OutOfRange("offset")
        );
        assert_eq!(
            err("2026-11-26T10:00:00+08:60"),
            TimeError::OutOfRange("offset")
        );
        for text in [
            "",
            "2026-11-26",
            "2026-11-26T10:00:00",
            "2026-11-26T10:00Z",
            "2026-11-26T10:00:00.Z",
            "2026-11-26T10:00:00+0800",
            "2026-11-26T10:00:00+08",
            "2026-11-26T10:00:00Z ",
            " 2026-11-26T10:00:00Z",
            "2026-11-26T10:00:00ZZ",
            "26-11-26T10:00:00Z",
            "+2026-11-26T10:00:00Z",
            "2026/11/26T10:00:00Z",
            "２026-11-26T10:00:00Z",
            "1764151200",
        ] {
            assert_eq!(err(text), TimeError::Syntax, "{text:?}");
        }
        let long = format!("2026-11-26T10:00:00.{}Z", "1".repeat(44));
        assert_eq!(long.len(), 65);
        assert_eq!(err(&long), TimeError::TooLong);
        assert_eq!(
            ok(&format!("2026-11-26T10:00:00.{}Z", "1".repeat(43))),
            Some(1_795_687_200_111)
        );
    }

    #[test]
    fn deduper_passes_first_firing_and_first_resolved_only() {
        let firing = parse_alertmanager(FIRING.as_bytes()).unwrap().alerts;
        let resolved = parse_alertmanager(resolved().as_bytes()).unwrap().alerts;
        let mut deduper = Deduper::new(DeduperConfig::default());
        let start = 1_795_658_470_000;
        assert_eq!(deduper.handle_alert(&firing[0], start), Verdict::New);
        assert_eq!(deduper.handle_alert(&firing[1], start), Verdict::New);
        // The repeat after repeat_interval, and an HA peer's copy.
        assert_eq!(
            deduper.handle_alert(&firing[0], start + 4 * HOUR),
            Verdict::Duplicate
        );
        assert_eq!(
            deduper.handle_alert(&firing[0], start + 4 * HOUR + 10),
            Verdict::Duplicate
        );
        assert_eq!(
            deduper.handle_alert(&resolved[0], start + 5 * HOUR),
            Verdict::New
        );
        assert_eq!(
            deduper.handle_alert(&resolved[0], start + 5 * HOUR),
            Verdict::Duplicate
        );
        // A late firing copy after the resolution.
        assert_eq!(
            deduper.handle_alert(&firing[0], start + 5 * HOUR + 1),
            Verdict::Stale
        );
        // A resolution never preceded by its firing notification still passes once.
        assert_eq!(deduper.handle("never seen", false, start), Verdict::New);
        assert_eq!(
            deduper.handle("never seen", false, start),
            Verdict::Duplicate
        );
        assert_eq!(deduper.len(), 3);

        // A re-fire has a new startsAt, hence a new key.
        let refire = FIRING.replace("2026-11-26T02:00:05.123456789Z", "2026-11-26T06:00:00Z");
        let refired = parse_alertmanager(refire.as_bytes()).unwrap().alerts;
        assert_ne!(refired[0].dedupe_key, firing[0].dedupe_key);
        assert_eq!(
            deduper.handle_alert(&refired[0], start + 6 * HOUR),
            Verdict::New
        );
    }

    #[test]
    fn deduper_forgets_after_the_ttl_since_last_seen() {
        let mut deduper = Deduper::new(DeduperConfig {
            capacity: 100,
            ttl: 12 * HOUR,
            ..DeduperConfig::default()
        });
        assert_eq!(deduper.handle("a", true, 0), Verdict::New);
        assert_eq!(deduper.handle("b", true, 0), Verdict::New);
        // Repeats every 4 h keep "a" alive well past 12 h after it was first seen.
        for repeat in 1..=6 {
            assert_eq!(
                deduper.handle("a", true, repeat * 4 * HOUR),
                Verdict::Duplicate
            );
        }
        // "b" was last seen at 0 and is forgotten at 12 h: at 24 h it is new again.
        assert_eq!(deduper.len(), 1);
        assert_eq!(deduper.handle("b", true, 24 * HOUR), Verdict::New);
        // Exactly ttl after the last sighting counts as forgotten; one ms before does not.
        assert_eq!(deduper.handle("a", true, 36 * HOUR - 1), Verdict::Duplicate);
        assert_eq!(deduper.handle("a", true, 48 * HOUR - 1), Verdict::New);
        // A clock that goes backwards forgets nothing early.
        assert_eq!(deduper.handle("c", true, 50 * HOUR), Verdict::New);
        assert_eq!(deduper.handle("c", true, 40 * HOUR), Verdict::Duplicate);
    }

    #[test]
    fn deduper_is_bounded_and_forgets_the_least_recently_seen() {
        let mut deduper = Deduper::new(DeduperConfig {
            capacity: 3,
            max_key_bytes: 1000,
            ttl: DAY_FOR_TESTS,
        });
        for (now, key) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(deduper.handle(key, true, now as Millis), Verdict::New);
        }
        // Seeing "a" again makes "b" the least recent; "d" pushes it out.
        assert_eq!(deduper.handle("a", true, 10), Verdict::Duplicate);
        assert_eq!(deduper.handle("d", true, 11), Verdict::New);
        assert_eq!(deduper.len(), 3);
        assert_eq!(deduper.handle("a", true, 12), Verdict::Duplicate);
        assert_eq!(deduper.handle("c", true, 13), Verdict::Duplicate);
        assert_eq!(deduper.handle("d", true, 14), Verdict::Duplicate);
        assert_eq!(deduper.handle("b", true, 15), Verdict::New);
        assert_eq!(deduper.len(), 3);
        // Capacity 0 is taken as 1.
        let mut tiny = Deduper::new(DeduperConfig {
            capacity: 0,
            max_key_bytes: 1000,
            ttl: DAY_FOR_TESTS,
        });
        assert_eq!(tiny.handle("x", true, 0), Verdict::New);
        assert_eq!(tiny.handle("x", true, 1), Verdict::Duplicate);
        assert_eq!(tiny.len(), 1);
    }

    #[test]
    fn deduper_keeps_within_its_byte_budget() {
        let mut deduper = Deduper::new(DeduperConfig {
            capacity: 100,
            max_key_bytes: 10,
            ttl: DAY_FOR_TESTS,
        });
        assert_eq!(deduper.handle("aaaa", true, 0), Verdict::New);
        assert_eq!(deduper.handle("bbbb", true, 1), Verdict::New);
        assert_eq!(deduper.key_bytes(), 8);
        // 12 bytes would be over 10: the least recent key goes.
        assert_eq!(deduper.handle("cccc", true, 2), Verdict::New);
        assert_eq!((deduper.len(), deduper.key_bytes()), (2, 8));
        assert_eq!(deduper.handle("aaaa", true, 3), Verdict::New);
        // A key larger than the budget on its own is kept while it is the newest.
        assert_eq!(deduper.handle("0123456789ab", true, 4), Verdict::New);
        assert_eq!((deduper.len(), deduper.key_bytes()), (1, 12));
        assert_eq!(deduper.handle("0123456789ab", false, 5), Verdict::New);
        assert_eq!(deduper.handle("0123456789ab", false, 6), Verdict::Duplicate);
        // An expired key is replaced, not counted twice.
        assert_eq!(
            deduper.handle("0123456789ab", true, 6 + DAY_FOR_TESTS),
            Verdict::New
        );
        assert_eq!((deduper.len(), deduper.key_bytes()), (1, 12));
    }

    const DAY_FOR_TESTS: Millis = 24 * HOUR;

    const RECEIVED: Millis = 1_795_707_000_000;

    #[test]
    fn generic_event_maps_like_alertmanager_labels() {
        let body = r#"{"source":"12345","id":"GX20261126-0042","status":"firing",
            "title":" 市民反映政务服务网无法登录 ","description":"多名市民来电",
            "severity":"major","category":"application","division":"450103000000",
            "time":"2026-11-26T10:00:00+08:00","labels":{"ticket_kind":"complaint"},
            "unknown":{"ignored":true}}"#;
        let alerts = parse_generic(body.as_bytes(), RECEIVED).unwrap();
        assert_eq!(
            alerts,
            vec![ExternalAlert {
                source: "12345".to_owned(),
                dedupe_key: "generic 5:12345 15:GX20261126-0042".to_owned(),
                fingerprint: "GX20261126-0042".to_owned(),
                firing: true,
                starts_ms: 1_795_658_400_000,
                ends_ms: None,
                subject: Subject::Division("450103000000".to_owned()),
                severity: Severity::P2,
                category: Category::Application,
                title: "市民反映政务服务网无法登录".to_owned(),
                description: "多名市民来电".to_owned(),
                labels: labels(&[("ticket_kind", "complaint")]),
            }]
        );
        // The resolution: same key, an end; without resolved_time the end is the receipt.
        let resolved = body.replace("\"status\":\"firing\"", "\"status\":\"resolved\"");
        let alert = parse_generic(resolved.as_bytes(), RECEIVED)
            .unwrap()
            .remove(0);
        assert!(!alert.firing);
        assert_eq!(alert.dedupe_key, alerts[0].dedupe_key);
        assert_eq!(alert.ends_ms, Some(RECEIVED));
        let with_end = resolved.replace(
            "\"time\"",
            "\"resolved_time\":\"2026-11-26T10:30:00+08:00\",\"time\"",
        );
        let alert = parse_generic(with_end.as_bytes(), RECEIVED)
            .unwrap()
            .remove(0);
        assert_eq!(alert.ends_ms, Some(1_795_660_200_000));

        // The least a sender must give.
        let minimal = parse_generic(br#"{"source":"12345","id":"7","title":"t"}"#, RECEIVED)
            .unwrap()
            .remove(0);
        assert!(minimal.firing);
        assert_eq!(minimal.starts_ms, RECEIVED);
        assert_eq!(minimal.subject, Subject::Region);
        assert_eq!(minimal.severity, Severity::P3);
        assert_eq!(minimal.category, Category::Host);
        assert_eq!(minimal.description, "");
        assert!(minimal.labels.is_empty());
        let agent = parse_generic(
            br#"{"source":"zabbix","id":"7","title":"t","agent":"web-01","severity":"disaster"}"#,
            RECEIVED,
        )
        .unwrap()
        .remove(0);
        assert_eq!(agent.subject, Subject::Agent("web-01".to_owned()));
        assert_eq!(agent.severity, Severity::P1);
    }

    #[test]
    fn generic_arrays_and_rejections() {
        let body = br#"[{"source":"12345","id":"1","title":"a"},
                        {"source":"12345","id":"2","title":"b","status":"RESOLVED"}]"#;
        let alerts = parse_generic(body, RECEIVED).unwrap();
        assert_eq!(alerts.len(), 2);
        assert!(alerts[0].firing);
        assert!(!alerts[1].firing);
        assert_ne!(alerts[0].dedupe_key, alerts[1].dedupe_key);
        assert!(parse_generic(b" [ ] ", RECEIVED).unwrap().is_empty());

        let error = |body: &str| {
            parse_generic(body.as_bytes(), RECEIVED)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(error(r#"{"id":"1","title":"a"}"#), "source is missing");
        assert_eq!(
            error(r#"{"source":"  ","id":"1","title":"a"}"#),
            "source is missing"
        );
        assert_eq!(
            error(r#"{"source":"12345 hotline","id":"1","title":"a"}"#),
            "source: \"12345 hotline\" is not 1 to 64 of A-Z a-z 0-9 . _ -"
        );
        assert_eq!(error(r#"{"source":"s","title":"a"}"#), "id is missing");
        assert_eq!(
            error(r#"{"source":"s","id":"a\nb","title":"a"}"#),
            "id: contains a control character"
        );
        assert_eq!(error(r#"{"source":"s","id":"1"}"#), "title is missing");
        assert_eq!(
            error(r#"{"source":"s","id":"1","title":"a","status":"open"}"#),
            "status: \"open\" is not a status (expected \"firing\" or \"resolved\")"
        );
        assert_eq!(
            error(r#"{"source":"s","id":"1","title":"a","division":"45010300000"}"#),
            "division: \"45010300000\" is not a division code (expected 2, 4, 6, 9 or 12 digits)"
        );
        assert_eq!(
            error(r#"{"source":"s","id":"1","title":"a","time":"yesterday"}"#),
            "time: \"yesterday\" is not an RFC 3339 time: \
             expected YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM"
        );
        assert_eq!(
            error(r#"{"source":"s","id":"1","title":"a","time":"0001-01-01T00:00:00Z"}"#),
            "time: the zero time; leave the field out instead"
        );
        assert_eq!(
            error(r#"[{"source":"s","id":"1","title":"a"},{"source":"s","title":"b"}]"#),
            "[1].id is missing"
        );
        assert_eq!(
            error(r#"[{"source":"s","id":"1","title":"a"},7]"#),
            "body is JSON but not a generic intake event: \
             [1]: invalid type: integer `7`, expected struct GenericEvent"
        );
        assert!(
            error("42")
                .starts_with("body is JSON but not a generic intake event or an array of events: "),
            "{}",
            error("42")
        );
        assert!(error("{").starts_with("body is not JSON: "));
        let many = format!("[{}]", vec!["{}"; MAX_ALERTS + 1].join(","));
        assert_eq!(
            error(&many),
            "1001 alerts in one body, more than the limit of 1000"
        );
        let long_id = format!(r#"{{"source":"s","id":"{}","title":"a"}}"#, "i".repeat(257));
        assert_eq!(error(&long_id), "id: 257 bytes, more than the limit of 256");
    }

    #[test]
    fn keys_of_different_parts_never_collide() {
        // Without the lengths both would be "x a b c".
        assert_ne!(key_of("x", &["a b", "c"]), key_of("x", &["a", "b c"]));
        assert_eq!(key_of("x", &["a b", "c"]), "x 3:a b 1:c");
    }

    /// A small deterministic generator (SplitMix64) for the property tests.
    struct Random(u64);

    impl Random {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next_u64() % bound.max(1) as u64) as usize
        }
    }

    /// What every accepted body must satisfy, whatever it was.
    fn check_invariants(alerts: &[ExternalAlert]) {
        assert!(alerts.len() <= MAX_ALERTS);
        for alert in alerts {
            assert!(!alert.dedupe_key.is_empty());
            assert!(!alert.title.is_empty());
            assert!(!alert.fingerprint.is_empty());
            if let Subject::Division(code) = &alert.subject {
                assert!(is_division_code(code), "{code:?}");
            }
            if let Subject::Agent(agent) = &alert.subject {
                assert!(!agent.is_empty() && agent.len() <= MAX_ID_BYTES);
            }
        }
    }

    fn feed(body: &[u8]) {
        match parse_alertmanager(body) {
            Ok(intake) => check_invariants(&intake.alerts),
            Err(error) => assert!(!error.to_string().is_empty()),
        }
        match parse_generic(body, RECEIVED) {
            Ok(alerts) => check_invariants(&alerts),
            Err(error) => assert!(!error.to_string().is_empty()),
        }
        if let Ok(text) = std::str::from_utf8(body) {
            let _ = parse_rfc3339(text);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut random = Random(0x6261_6775_6920_6f70);
        for _ in 0..3_000 {
            let length = random.below(200);
            let bytes: Vec<u8> = (0..length).map(|_| random.next_u64() as u8).collect();
            feed(&bytes);
        }
    }

    #[test]
    fn mutated_payloads_never_panic() {
        const SIGNIFICANT: &[u8] = b"{}[]\":,0123456789.-+eEZT tfnul\\\xff\x00";
        let seeds = [
            FIRING.to_owned(),
            resolved(),
            r#"{"source":"12345","id":"GX-1","title":"t","time":"2026-11-26T10:00:00+08:00","division":"450103000000"}"#.to_owned(),
        ];
        let mut random = Random(20_261_126);
        let mut accepted = 0;
        for round in 0..3_000 {
            let mut bytes = seeds[round % seeds.len()].clone().into_bytes();
            for _ in 0..=random.below(4) {
                let at = random.below(bytes.len());
                match random.below(5) {
                    0 => bytes[at] = SIGNIFICANT[random.below(SIGNIFICANT.len())],
                    1 => {
                        let end = (at + random.below(16)).min(bytes.len());
                        bytes.drain(at..end);
                    }
                    2 => bytes.insert(at, SIGNIFICANT[random.below(SIGNIFICANT.len())]),
                    3 => {
                        let end = (at + random.below(40)).min(bytes.len());
                        let copy = bytes[at..end].to_vec();
                        bytes.splice(at..at, copy);
                    }
                    _ => bytes[at] = random.next_u64() as u8,
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if parse_alertmanager(&bytes).is_ok() || parse_generic(&bytes, RECEIVED).is_ok() {
                accepted += 1;
            }
            feed(&bytes);
        }
        // The mutations must leave some bodies valid, or the test only exercises the JSON
        // syntax checker.
        assert!(accepted > 100, "{accepted}");
    }

    #[test]
    fn mutated_json_values_never_panic() {
        fn replacement(random: &mut Random) -> serde_json::Value {
            use serde_json::json;
            match random.below(10) {
                0 => json!(null),
                1 => json!(-1),
                2 => json!(1e300),
                3 => json!("0001-01-01T00:00:00Z"),
                4 => json!("x".repeat(random.below(20_000))),
                5 => json!([[[]]]),
                6 => json!({"agent": "", "division": "000000000000"}),
                7 => json!("resolved"),
                8 => json!(true),
                _ => json!(""),
            }
        }
        /// Replaces one node, picked at random along one path from the root.
        fn mutate(value: &mut serde_json::Value, random: &mut Random) {
            let descend = random.below(4) != 0;
            match value {
                serde_json::Value::Object(map) if descend && !map.is_empty() => {
                    let index = random.below(map.len());
                    if let Some(child) = map.values_mut().nth(index) {
                        mutate(child, random);
                    }
                }
                serde_json::Value::Array(items) if descend && !items.is_empty() => {
                    let index = random.below(items.len());
                    mutate(&mut items[index], random);
                }
                _ => *value = replacement(random),
            }
        }
        let seeds: Vec<serde_json::Value> = [FIRING.to_owned(), resolved()]
            .iter()
            .map(|text| serde_json::from_str(text).unwrap())
            .collect();
        let mut random = Random(7);
        for round in 0..2_000 {
            let mut value = seeds[round % seeds.len()].clone();
            for _ in 0..=random.below(3) {
                mutate(&mut value, &mut random);
            }
            let body = serde_json::to_vec(&value).unwrap();
            feed(&body);
            if let Some(alerts) = value.get("alerts").and_then(|alerts| alerts.as_array()) {
                let events = serde_json::to_vec(alerts).unwrap();
                feed(&events);
            }
        }
    }
}
