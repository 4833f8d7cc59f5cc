//! Notifications, without IO: what a work-order event says, to which channel, in exactly which
//! bytes, how fast, and what to do when the far side says no.
//!
//! The work-order machine hands over a [`Notification`] (a dispatch, an escalation 督办, an
//! acknowledgement, a resolution, a reopening). This module decides four things and nothing
//! else; the durable outbox, the HTTP client and the SMTP client live in the control plane and
//! only carry out what is returned here.
//!
//! 1. **Exact requests** ([`ChannelConfig::render`]). Each channel gets the request its far end
//!    documents: a generic JSON webhook (schema [`webhook::WEBHOOK_SCHEMA_VERSION`]), the WeCom
//!    group robot (text or markdown, on-duty people in `mentioned_list` /
//!    `mentioned_mobile_list`), the DingTalk robot (signed in the query string, `timestamp` in
//!    milliseconds), the Feishu bot (signed in the body, `timestamp` in seconds, the HMAC roles
//!    reversed) and e-mail (an RFC 5322 message with an RFC 2047 subject, handed to an SMTP
//!    relay). Rendering takes `now` because both signatures carry a timestamp the robots check
//!    against their clock (DingTalk within an hour): the outbox renders at send time, never at
//!    enqueue time, so a message retried an hour later is signed afresh.
//! 2. **One text per channel** ([`text`]). Chinese first, short lines that read on a phone:
//!    `【P1 派单】…` then the work order, division path, team, who is on duty, the SLA deadline
//!    in Beijing time and the console link. Every channel's wording is in one function there.
//!    The robots' size limits are enforced by cutting on a UTF-8 character boundary and saying
//!    so ([`TRUNCATION_MARKER`]), never by letting the robot reject the message.
//! 3. **Rate limits that digest, never drop** ([`limit`]). The robots accept about 20 messages
//!    a minute and DingTalk mutes a robot for ten minutes when that is exceeded, so sending
//!    more only loses messages. What arrives while a channel's window is full is held, and
//!    when the window allows, everything held goes out as *one* digest (counts by severity,
//!    the first titles, P1 first, "还有 M 条").
//! 4. **Retries** ([`retry`]). Replies are classified (the robots answer HTTP 200 with an error
//!    code in the body) into delivered, retryable (timeouts, 5xx, 429 and the robots'
//!    rate-limit codes) and permanent (other 4xx, bad keys, bad signatures), and a pure policy
//!    says how long to wait before the next attempt, or that there is none. A permanent failure
//!    is returned to the caller to be recorded and shown; nothing here drops a message in
//!    silence.

mod email;
pub(crate) mod encode;
pub mod limit;
pub mod retry;
mod robots;
pub mod text;
pub mod webhook;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Millis, Severity};

pub use email::EmailMessage;
pub use encode::TRUNCATION_MARKER;
pub use limit::{ChannelLimiter, Decision, LimitConfig, Limiter, Outgoing};
pub use retry::{FailureKind, RetryPolicy, SendFailure, classify_http_reply, classify_smtp_reply};
pub use robots::{dingtalk_sign, feishu_sign};

/// What happened to a work order that people must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The work order was dispatched to a team (派单).
    Dispatched,
    /// A deadline was missed and the next level up was added as supervisor (督办).
    Escalated,
    /// Somebody acknowledged it (接单).
    Acked,
    /// The handler resolved it with feedback.
    Resolved,
    /// The source cleared before anyone acted.
    AutoResolved,
    /// The fault came back within the reopen window.
    Reopened,
    /// Several notifications held back by a rate limit, sent as one ([`Digest`]).
    Digest,
}

impl NotificationKind {
    /// The Chinese word shown in the headline (`【P1 派单】`).
    pub fn label(self) -> &'static str {
        match self {
            NotificationKind::Dispatched => "派单",
            NotificationKind::Escalated => "督办",
            NotificationKind::Acked => "已接单",
            NotificationKind::Resolved => "已处理",
            NotificationKind::AutoResolved => "自动恢复",
            NotificationKind::Reopened => "重新打开",
            NotificationKind::Digest => "汇总",
        }
    }
}

/// Somebody on duty (值班) to @-mention, taken from the team's duty roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDutyPerson {
    pub name: String,
    /// Mobile number, used by WeCom's `mentioned_mobile_list` and DingTalk's `atMobiles`.
    #[serde(default)]
    pub phone: Option<String>,
    /// WeCom user id (`mentioned_list`, `<@userid>` in markdown).
    #[serde(default)]
    pub wecom_user_id: Option<String>,
    /// DingTalk user id (`atUserIds`).
    #[serde(default)]
    pub dingtalk_user_id: Option<String>,
    /// Feishu open_id or user_id (`<at user_id="…">`).
    #[serde(default)]
    pub feishu_user_id: Option<String>,
}

impl OnDutyPerson {
    /// A person known by name only (no mention possible beyond the name in the text).
    pub fn named(name: impl Into<String>) -> OnDutyPerson {
        OnDutyPerson {
            name: name.into(),
            phone: None,
            wecom_user_id: None,
            dingtalk_user_id: None,
            feishu_user_id: None,
        }
    }
}

/// What the work-order machine asks to say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub kind: NotificationKind,
    /// Work-order id as shown to people; empty for a digest.
    pub work_order_id: String,
    pub severity: Severity,
    pub title: String,
    /// Division path text, e.g. `广西壮族自治区/南宁市/兴宁区`.
    pub division_path: String,
    /// The owning (or, for an escalation, supervising) team.
    pub team: String,
    /// Who to @-mention, from the duty roster.
    #[serde(default)]
    pub on_duty: Vec<OnDutyPerson>,
    /// The SLA deadline that matters for this event (ack-by for a dispatch, resolve-by after an
    /// acknowledgement); `None` when none applies.
    #[serde(default)]
    pub sla_due: Option<Millis>,
    /// A link to the work order in the console.
    #[serde(default)]
    pub console_url: Option<String>,
    /// One more line of free text (who escalated to whom, the resolution feedback …).
    #[serde(default)]
    pub detail: Option<String>,
    /// Set only on [`NotificationKind::Digest`].
    #[serde(default)]
    pub digest: Option<Digest>,
}

/// Counts of held notifications by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    pub p1: u32,
    pub p2: u32,
    pub p3: u32,
    pub info: u32,
}

impl SeverityCounts {
    pub fn add(&mut self, severity: Severity) {
        let slot = match severity {
            Severity::P1 => &mut self.p1,
            Severity::P2 => &mut self.p2,
            Severity::P3 => &mut self.p3,
            Severity::Info => &mut self.info,
        };
        *slot = slot.saturating_add(1);
    }

    /// `(severity, count)` for every severity with a non-zero count, P1 first.
    pub fn non_zero(&self) -> Vec<(Severity, u32)> {
        [
            (Severity::P1, self.p1),
            (Severity::P2, self.p2),
            (Severity::P3, self.p3),
            (Severity::Info, self.info),
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .collect()
    }
}

/// One line of a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestItem {
    pub kind: NotificationKind,
    pub severity: Severity,
    pub work_order_id: String,
    pub title: String,
}

/// What a digest says: how many were held, by severity, the first few, and how many more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub total: u32,
    pub by_severity: SeverityCounts,
    /// The first items, most severe first and in arrival order within a severity.
    pub items: Vec<DigestItem>,
    /// How many held notifications are not listed in `items`.
    pub more: u32,
}

/// The channel kinds, for errors, reply classification and configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Webhook,
    Wecom,
    Dingtalk,
    Feishu,
    Email,
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Wecom => "wecom",
            ChannelKind::Dingtalk => "dingtalk",
            ChannelKind::Feishu => "feishu",
            ChannelKind::Email => "email",
        })
    }
}

/// Message type for the robots that offer both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    /// Plain text: WeCom can @-mention by mobile number only in this type.
    #[default]
    Text,
    Markdown,
}

fn default_smtp_port() -> u16 {
    25
}

/// A configured notification channel, as read from the channel settings.
///
/// `Debug` hides secrets: the query string of robot URLs (the WeCom `key`, the DingTalk
/// `access_token`), signing secrets and the bearer token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// Generic JSON webhook; body schema in [`webhook`].
    Webhook {
        url: String,
        #[serde(default)]
        bearer_token: Option<String>,
    },
    /// WeCom (企业微信) group robot: `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`.
    Wecom {
        url: String,
        #[serde(default)]
        format: MessageFormat,
    },
    /// DingTalk (钉钉) custom robot: `https://oapi.dingtalk.com/robot/send?access_token=…`, signed
    /// when `secret` (`SEC…`) is set.
    Dingtalk {
        url: String,
        #[serde(default)]
        secret: Option<String>,
        #[serde(default)]
        format: MessageFormat,
    },
    /// Feishu (飞书) custom bot: `https://open.feishu.cn/open-apis/bot/v2/hook/…`, signed when
    /// `secret` is set.
    Feishu {
        url: String,
        #[serde(default)]
        secret: Option<String>,
    },
    /// E-mail through an SMTP relay.
    Email {
        smtp_host: String,
        #[serde(default = "default_smtp_port")]
        smtp_port: u16,
        /// Envelope and header sender address (`ops@example.gov.cn`).
        from: String,
        /// Display name for the From header (`八桂运维`).
        #[serde(default)]
        from_name: Option<String>,
        to: Vec<String>,
    },
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<hidden>");
        match self {
            ChannelConfig::Webhook { url, bearer_token } => f
                .debug_struct("Webhook")
                .field("url", &encode::redact_url(url))
                .field("bearer_token", &hidden(bearer_token))
                .finish(),
            ChannelConfig::Wecom { url, format } => f
                .debug_struct("Wecom")
                .field("url", &encode::redact_url(url))
                .field("format", format)
                .finish(),
            ChannelConfig::Dingtalk {
                url,
                secret,
                format,
            } => f
                .debug_struct("Dingtalk")
                .field("url", &encode::redact_url(url))
                .field("secret", &hidden(secret))
                .field("format", format)
                .finish(),
            ChannelConfig::Feishu { url, secret } => f
                .debug_struct("Feishu")
                .field("url", &encode::redact_url(url))
                .field("secret", &hidden(secret))
                .finish(),
            ChannelConfig::Email {
                smtp_host,
                smtp_port,
                from,
                from_name,
                to,
            } => f
                .debug_struct("Email")
                .field("smtp_host", smtp_host)
                .field("smtp_port", smtp_port)
                .field("from", from)
                .field("from_name", from_name)
                .field("to", to)
                .finish(),
        }
    }
}

/// The HTTP method of a rendered request (every channel here posts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Post,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
        }
    }
}

/// An HTTP request, exactly as it must be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: HttpMethod,
    /// Full URL including any query parameters added here (DingTalk's `timestamp` and `sign`).
    pub url: String,
    /// Headers in order; `Host` and `Content-Length` are the HTTP client's business.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What one channel must send for one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Http(HttpRequest),
    Email(EmailMessage),
}

/// Why a notification cannot be rendered for a channel: the channel's configuration is
/// unusable, or the message cannot be brought within the channel's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("{channel} channel url {url:?} is not usable: {reason}")]
    InvalidUrl {
        channel: ChannelKind,
        /// The URL with its query string hidden.
        url: String,
        reason: &'static str,
    },
    #[error("{channel} channel secret is not usable: {reason}")]
    InvalidSecret {
        channel: ChannelKind,
        reason: &'static str,
    },
    #[error("webhook bearer token is not usable: {reason}")]
    InvalidBearerToken { reason: &'static str },
    #[error("e-mail address {address:?} is not valid: {reason}")]
    InvalidAddress {
        address: String,
        reason: &'static str,
    },
    #[error("e-mail channel is not usable: {reason}")]
    InvalidEmailChannel { reason: &'static str },
    #[error("encoding the {channel} request body as JSON: {message}")]
    Json {
        channel: ChannelKind,
        message: String,
    },
    #[error("{channel} request body cannot be brought under {limit} bytes")]
    TooLarge { channel: ChannelKind, limit: usize },
}

impl ChannelConfig {
    /// Which kind of channel this is.
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelConfig::Webhook { .. } => ChannelKind::Webhook,
            ChannelConfig::Wecom { .. } => ChannelKind::Wecom,
            ChannelConfig::Dingtalk { .. } => ChannelKind::Dingtalk,
            ChannelConfig::Feishu { .. } => ChannelKind::Feishu,
            ChannelConfig::Email { .. } => ChannelKind::Email,
        }
    }

    /// Checks the configuration without rendering anything (for the settings page and for
    /// loading configuration files).
    pub fn validate(&self) -> Result<(), NotifyError> {
        match self {
            ChannelConfig::Webhook { url, bearer_token } => {
                encode::check_url(ChannelKind::Webhook, url, None)?;
                if let Some(token) = bearer_token {
                    robots::check_bearer_token(token)?;
                }
                Ok(())
            }
            ChannelConfig::Wecom { url, .. } => {
                encode::check_url(ChannelKind::Wecom, url, Some("key"))
            }
            ChannelConfig::Dingtalk { url, secret, .. } => {
                encode::check_url(ChannelKind::Dingtalk, url, Some("access_token"))?;
                // A configured URL copied with an old signature would be sent with two.
                if ["timestamp", "sign"]
                    .iter()
                    .any(|name| encode::query_value(url, name).is_some())
                {
                    return Err(NotifyError::InvalidUrl {
                        channel: ChannelKind::Dingtalk,
                        url: encode::redact_url(url),
                        reason: "timestamp and sign are added when sending; remove them",
                    });
                }
                if let Some(secret) = secret {
                    robots::check_dingtalk_secret(secret)?;
                }
                Ok(())
            }
            ChannelConfig::Feishu { url, secret } => {
                encode::check_url(ChannelKind::Feishu, url, None)?;
                if let Some(secret) = secret {
                    robots::check_feishu_secret(secret)?;
                }
                Ok(())
            }
            ChannelConfig::Email {
                smtp_host,
                smtp_port,
                from,
                to,
                ..
            } => email::check(smtp_host, *smtp_port, from, to),
        }
    }

    /// Renders the exact request this channel must send for `notification` at `now` (the
    /// signed robots put `now` into their signature, so render at send time).
    pub fn render(&self, notification: &Notification, now: Millis) -> Result<Request, NotifyError> {
        self.validate()?;
        match self {
            ChannelConfig::Webhook { url, bearer_token } => {
                webhook::render(url, bearer_token.as_deref(), notification, now).map(Request::Http)
            }
            ChannelConfig::Wecom { url, format } => {
                robots::wecom(url, *format, notification).map(Request::Http)
            }
            ChannelConfig::Dingtalk {
                url,
                secret,
                format,
            } => robots::dingtalk(url, secret.as_deref(), *format, notification, now)
                .map(Request::Http),
            ChannelConfig::Feishu { url, secret } => {
                robots::feishu(url, secret.as_deref(), notification, now).map(Request::Http)
            }
            ChannelConfig::Email {
                smtp_host,
                smtp_port,
                from,
                from_name,
                to,
            } => Ok(Request::Email(email::render(
                email::EmailChannel {
                    smtp_host,
                    smtp_port: *smtp_port,
                    from,
                    from_name: from_name.as_deref(),
                    to,
                },
                notification,
                now,
            ))),
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// 2025-11-26 10:17:36.789 Beijing time.
    pub const NOW: Millis = 1_764_123_456_789;

    pub fn zhang_san() -> OnDutyPerson {
        OnDutyPerson {
            name: "张三".into(),
            phone: Some("13800001111".into()),
            wecom_user_id: Some("zhangsan".into()),
            dingtalk_user_id: Some("ding_zs".into()),
            feishu_user_id: Some("ou_zs".into()),
        }
    }

    pub fn dispatched() -> Notification {
        Notification {
            kind: NotificationKind::Dispatched,
            work_order_id: "WO-20251126-0001".into(),
            severity: Severity::P1,
            title: "兴宁区政务外网上联中断".into(),
            division_path: "广西壮族自治区/南宁市/兴宁区".into(),
            team: "兴宁区网络组".into(),
            on_duty: vec![zhang_san(), OnDutyPerson::named("李四")],
            // 10:32:36 Beijing time, fifteen minutes after NOW.
            sla_due: Some(NOW + 15 * crate::model::MINUTE),
            console_url: Some("https://ops.example.gov.cn/wo/WO-20251126-0001".into()),
            detail: None,
            digest: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn channel_configs_load_from_json_and_hide_secrets_in_debug() {
        let json = r#"[
            {"type":"webhook","url":"https://hooks.example/notify","bearer_token":"t0k"},
            {"type":"wecom","url":"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc","format":"markdown"},
            {"type":"dingtalk","url":"https://oapi.dingtalk.com/robot/send?access_token=tok","secret":"SECxyz"},
            {"type":"feishu","url":"https://open.feishu.cn/open-apis/bot/v2/hook/h1","secret":"s"},
            {"type":"email","smtp_host":"relay.example","from":"ops@example.gov.cn","to":["a@example.gov.cn"]}
        ]"#;
        let channels: Vec<ChannelConfig> = serde_json::from_str(json).unwrap();
        let kinds: Vec<ChannelKind> = channels.iter().map(ChannelConfig::kind).collect();
        assert_eq!(
            kinds,
            [
                ChannelKind::Webhook,
                ChannelKind::Wecom,
                ChannelKind::Dingtalk,
                ChannelKind::Feishu,
                ChannelKind::Email
            ]
        );
        for channel in &channels {
            channel.validate().unwrap();
        }
        assert_eq!(
            channels[4],
            ChannelConfig::Email {
                smtp_host: "relay.example".into(),
                smtp_port: 25,
                from: "ops@example.gov.cn".into(),
                from_name: None,
                to: vec!["a@example.gov.cn".into()],
            }
        );
        let debug = format!("{channels:?}");
        for secret in ["t0k", "key=abc", "access_token=tok", "SECxyz", "\"s\""] {
            assert!(!debug.contains(secret), "{secret} leaked into {debug}");
        }
        assert!(debug.contains("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?<hidden>"));
    }

    #[test]
    fn unknown_channel_fields_are_rejected() {
        let json = r#"{"type":"wecom","url":"https://x/send?key=k","secrt":"typo"}"#;
        assert!(serde_json::from_str::<ChannelConfig>(json).is_err());
    }

    #[test]
    fn unusable_configurations_are_typed_errors() {
        let no_key = ChannelConfig::Wecom {
            url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send".into(),
            format: MessageFormat::Text,
        };
        assert_eq!(
            no_key.render(&dispatched(), NOW),
            Err(NotifyError::InvalidUrl {
                channel: ChannelKind::Wecom,
                url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send".into(),
                reason: "the query parameter key is missing or empty",
            })
        );
        let bad_secret = ChannelConfig::Dingtalk {
            url: "https://oapi.dingtalk.com/robot/send?access_token=t".into(),
            secret: Some("abc".into()),
            format: MessageFormat::Text,
        };
        assert!(matches!(
            bad_secret.validate(),
            Err(NotifyError::InvalidSecret {
                channel: ChannelKind::Dingtalk,
                ..
            })
        ));
        let presigned = ChannelConfig::Dingtalk {
            url: "https://oapi.dingtalk.com/robot/send?access_token=t&timestamp=1&sign=x".into(),
            secret: Some("SECabc".into()),
            format: MessageFormat::Text,
        };
        assert_eq!(
            presigned.validate(),
            Err(NotifyError::InvalidUrl {
                channel: ChannelKind::Dingtalk,
                url: "https://oapi.dingtalk.com/robot/send?<hidden>".into(),
                reason: "timestamp and sign are added when sending; remove them",
            })
        );
        let ftp = ChannelConfig::Feishu {
            url: "ftp://open.feishu.cn/hook".into(),
            secret: None,
        };
        assert!(matches!(
            ftp.validate(),
            Err(NotifyError::InvalidUrl { .. })
        ));
        let injected = ChannelConfig::Webhook {
            url: "https://hooks.example/x".into(),
            bearer_token: Some("abc\r\nX-Evil: 1".into()),
        };
        assert!(matches!(
            injected.validate(),
            Err(NotifyError::InvalidBearerToken { .. })
        ));
        let nobody = ChannelConfig::Email {
            smtp_host: "relay".into(),
            smtp_port: 25,
            from: "ops@example.gov.cn".into(),
            from_name: None,
            to: vec![],
        };
        assert!(matches!(
            nobody.validate(),
            Err(NotifyError::InvalidEmailChannel { .. })
        ));
    }

    #[test]
    fn notifications_round_trip_through_json() {
        let notification = dispatched();
        let json = serde_json::to_string(&notification).unwrap();
        assert!(json.contains("\"kind\":\"dispatched\""));
        let back: Notification = serde_json::from_str(&json).unwrap();
        assert_eq!(back, notification);
    }
}
