//! What a reply means, and when to try again.
//!
//! The robots answer HTTP 200 for most failures and put the verdict in the body: WeCom and
//! DingTalk as `{"errcode":…,"errmsg":…}`, Feishu as `{"code":…,"msg":…}`. So a reply is
//! classified from status and body together ([`classify_http_reply`]):
//!
//! - **delivered**: 2xx and, for a robot, code 0;
//! - **retryable**: no answer (timeout, network), 5xx, 429, and the robots' rate-limit and
//!   busy codes (below);
//! - **permanent**: any other 4xx, any other robot code (bad key, bad signature, keyword
//!   missing, malformed message), and a 2xx robot reply without a readable code: the message
//!   may have been shown, and sending it again could show it twice.
//!
//! Robot codes treated as retryable. Each is a rate limit or a "busy, try later":
//!
//! | channel | code | meaning | source |
//! |---|---|---|---|
//! | WeCom | 45009 | `api freq out of limit` | WeChat/WeCom global code list (third-party copies) |
//! | WeCom | -1 | system busy, retry later | WeCom global code list (third-party copy) |
//! | DingTalk | 130101 | `send too fast, exceed 20 times per minute` | a reported robot reply (ccfos/nightingale#369) |
//! | DingTalk | 90030 | `webhook over limit` | a reported robot reply (third-party Q&A) |
//! | DingTalk | 410100 | `send too fast` | **unverified**: recalled, not found in any source checked |
//! | DingTalk | -1 | system busy | by analogy with WeCom; **unverified** |
//! | Feishu | 11232 | frequency limit of the message service | third-party client code (openclaw) |
//!
//! Treating an unknown rate-limit code as permanent would lose the message, treating a
//! permanent code as retryable costs a few bounded retries, so doubtful codes lean retryable.
//!
//! The policy ([`RetryPolicy::next_attempt`]) is exponential backoff with a cap and a maximum
//! number of attempts; a rate-limited reply waits at least `rate_limited_delay` (or the
//! server's `Retry-After`, if longer), because the robots count a whole minute and DingTalk
//! mutes an over-eager robot for ten. No jitter is added here, to keep the policy a pure
//! function; one control plane sends to a few dozen robots, not thousands of clients to one
//! server. When the policy says `None`, the caller records the notification as failed and
//! shows it: that is the end of retrying, not of the notification.

use serde::{Deserialize, Serialize};

use super::ChannelKind;
use crate::model::{MINUTE, Millis};

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FailureKind {
    /// No reply in time.
    Timeout,
    /// Connection refused or reset, name resolution failed, TLS failed to complete.
    Network,
    /// An HTTP status that says nothing more specific (5xx: retried; 4xx: not).
    Status { code: u16 },
    /// HTTP 429 or a robot's rate-limit code.
    RateLimited { retry_after: Option<Millis> },
    /// A robot or relay says it is busy; try later.
    Busy,
    /// The far side refused this message for good (bad key, signature, content …).
    Rejected,
    /// A 2xx reply a robot should have filled with a code, but without one.
    UnreadableReply,
}

impl FailureKind {
    /// Whether another attempt can help at all.
    pub fn is_retryable(self) -> bool {
        match self {
            FailureKind::Timeout
            | FailureKind::Network
            | FailureKind::RateLimited { .. }
            | FailureKind::Busy => true,
            FailureKind::Status { code } => code >= 500 || code == 429,
            FailureKind::Rejected | FailureKind::UnreadableReply => false,
        }
    }
}

/// A failed attempt: its kind, and a message for the outbox record and the console
/// (`errcode 93000: invalid webhook url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct SendFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// Backoff for retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt; doubled after each further one.
    pub base_delay: Millis,
    /// No delay is longer than this (except a longer `Retry-After`).
    pub max_delay: Millis,
    /// Attempts in total, the first included; after this many, no more.
    pub max_attempts: u32,
    /// The least wait after a rate-limited reply.
    pub rate_limited_delay: Millis,
}

impl Default for RetryPolicy {
    /// 10 s, 20 s, 40 s … capped at 10 min, 10 attempts in all: about 40 minutes of trying,
    /// longer than DingTalk's ten-minute mute and most robot outages.
    fn default() -> Self {
        RetryPolicy {
            base_delay: 10_000,
            max_delay: 10 * MINUTE,
            max_attempts: 10,
            rate_limited_delay: MINUTE,
        }
    }
}

impl RetryPolicy {
    /// After `attempts` attempts (1 after the first), the last of which failed with `last`:
    /// how long to wait before the next one, or `None` if there is to be no next one.
    pub fn next_attempt(&self, attempts: u32, last: &FailureKind) -> Option<Millis> {
        if !last.is_retryable() || attempts >= self.max_attempts {
            return None;
        }
        let doublings = attempts.saturating_sub(1);
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        let backoff = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let rate_limited_for = match last {
            FailureKind::RateLimited { retry_after } => Some(retry_after.unwrap_or(0)),
            FailureKind::Status { code: 429 } => Some(0),
            _ => None,
        };
        Some(match rate_limited_for {
            Some(retry_after) => backoff.max(self.rate_limited_delay).max(retry_after),
            None => backoff,
        })
    }
}

/// Rate-limit codes of each robot (see the module table).
fn robot_rate_limit_code(channel: ChannelKind, code: i64) -> bool {
    match channel {
        ChannelKind::Wecom => code == 45009,
        ChannelKind::Dingtalk => matches!(code, 130_101 | 90_030 | 410_100),
        ChannelKind::Feishu => code == 11232,
        ChannelKind::Webhook | ChannelKind::Email => false,
    }
}

/// "Busy, retry later" codes of each robot.
fn robot_busy_code(channel: ChannelKind, code: i64) -> bool {
    match channel {
        ChannelKind::Wecom | ChannelKind::Dingtalk => code == -1,
        ChannelKind::Feishu | ChannelKind::Webhook | ChannelKind::Email => false,
    }
}

/// The robot's `(code, message)` from a reply body, if it has one.
fn robot_code(channel: ChannelKind, body: &[u8]) -> Option<(i64, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let (code_field, message_field) = match channel {
        ChannelKind::Wecom | ChannelKind::Dingtalk => ("errcode", "errmsg"),
        ChannelKind::Feishu => ("code", "msg"),
        ChannelKind::Webhook | ChannelKind::Email => return None,
    };
    let code = value.get(code_field)?.as_i64()?;
    let message = value
        .get(message_field)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_owned();
    Some((code, message))
}

/// Classifies an HTTP reply of `channel` (status, `Retry-After` in milliseconds if the reply
/// had one, body): `Ok(())` when delivered.
pub fn classify_http_reply(
    channel: ChannelKind,
    status: u16,
    retry_after: Option<Millis>,
    body: &[u8],
) -> Result<(), SendFailure> {
    let failure = |kind, message: String| Err(SendFailure { kind, message });
    if status == 429 {
        return failure(
            FailureKind::RateLimited { retry_after },
            format!("{channel} replied HTTP 429 Too Many Requests"),
        );
    }
    let success = (200..300).contains(&status);
    let is_robot = matches!(
        channel,
        ChannelKind::Wecom | ChannelKind::Dingtalk | ChannelKind::Feishu
    );
    if is_robot {
        match robot_code(channel, body) {
            Some((0, _)) if success => return Ok(()),
            Some((code, message)) if code != 0 => {
                let text = format!("{channel} replied code {code}: {message}");
                let kind = if robot_rate_limit_code(channel, code) {
                    FailureKind::RateLimited { retry_after }
                } else if robot_busy_code(channel, code) {
                    FailureKind::Busy
                } else if status >= 500 {
                    FailureKind::Status { code: status }
                } else {
                    FailureKind::Rejected
                };
                return failure(kind, text);
            }
            // Code 0 with a failing status, or no code: the status decides.
            _ => {}
        }
        if success {
            return failure(
                FailureKind::UnreadableReply,
                format!("{channel} replied HTTP {status} without a result code"),
            );
        }
    } else if success {
        return Ok(());
    }
    failure(
        FailureKind::Status { code: status },
        format!("{channel} replied HTTP {status}"),
    )
}

/// Classifies the SMTP relay's reply to the end of `DATA` (or the first failing command):
/// 2xx delivered, 4xx transient (busy), 5xx and anything else permanent.
pub fn classify_smtp_reply(code: u16, text: &str) -> Result<(), SendFailure> {
    let kind = match code {
        200..=299 => return Ok(()),
        400..=499 => FailureKind::Busy,
        _ => FailureKind::Rejected,
    };
    Err(SendFailure {
        kind,
        message: format!("smtp relay replied {code} {}", text.trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(channel: ChannelKind, status: u16, body: &str) -> Result<(), FailureKind> {
        classify_http_reply(channel, status, None, body.as_bytes()).map_err(|failure| failure.kind)
    }

    #[test]
    fn wecom_replies() {
        assert_eq!(
            kind(ChannelKind::Wecom, 200, r#"{"errcode":0,"errmsg":"ok"}"#),
            Ok(())
        );
        assert_eq!(
            kind(
                ChannelKind::Wecom,
                200,
                r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
            ),
            Err(FailureKind::RateLimited { retry_after: None })
        );
        assert_eq!(
            kind(
                ChannelKind::Wecom,
                200,
                r#"{"errcode":-1,"errmsg":"system busy"}"#
            ),
            Err(FailureKind::Busy)
        );
        let failure = classify_http_reply(
            ChannelKind::Wecom,
            200,
            None,
            br#"{"errcode":93000,"errmsg":"invalid webhook url"}"#,
        )
        .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Rejected);
        assert_eq!(
            failure.to_string(),
            "wecom replied code 93000: invalid webhook url"
        );
    }

    #[test]
    fn dingtalk_replies() {
        assert_eq!(
            kind(ChannelKind::Dingtalk, 200, r#"{"errcode":0,"errmsg":"ok"}"#),
            Ok(())
        );
        for code in [130101, 90030] {
            assert_eq!(
                kind(
                    ChannelKind::Dingtalk,
                    200,
                    &format!(r#"{{"errcode":{code},"errmsg":"x"}}"#)
                ),
                Err(FailureKind::RateLimited { retry_after: None })
            );
        }
        // Keyword/sign mismatch and a bad token are configuration errors.
        assert_eq!(
            kind(
                ChannelKind::Dingtalk,
                200,
                r#"{"errcode":310000,"errmsg":"sign not match"}"#
            ),
            Err(FailureKind::Rejected)
        );
        assert_eq!(
            kind(
                ChannelKind::Dingtalk,
                200,
                r#"{"errcode":300001,"errmsg":"token is not exist"}"#
            ),
            Err(FailureKind::Rejected)
        );
    }

    #[test]
    fn feishu_replies_use_code_and_msg() {
        assert_eq!(
            kind(
                ChannelKind::Feishu,
                200,
                r#"{"StatusCode":0,"StatusMessage":"success","code":0,"msg":"success"}"#
            ),
            Ok(())
        );
        assert_eq!(
            kind(
                ChannelKind::Feishu,
                200,
                r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#
            ),
            Err(FailureKind::Rejected)
        );
        assert_eq!(
            kind(
                ChannelKind::Feishu,
                400,
                r#"{"code":9499,"msg":"Bad Request"}"#
            ),
            Err(FailureKind::Rejected)
        );
        // Feishu reports its frequency limit with HTTP 400 and code 11232.
        assert_eq!(
            kind(
                ChannelKind::Feishu,
                400,
                r#"{"code":11232,"msg":"frequency limited"}"#
            ),
            Err(FailureKind::RateLimited { retry_after: None })
        );
        // An errcode field means nothing to Feishu: no readable code.
        assert_eq!(
            kind(ChannelKind::Feishu, 200, r#"{"errcode":0}"#),
            Err(FailureKind::UnreadableReply)
        );
    }

    #[test]
    fn statuses_decide_when_there_is_no_code() {
        assert_eq!(kind(ChannelKind::Webhook, 204, ""), Ok(()));
        assert_eq!(
            kind(ChannelKind::Webhook, 200, "<html>whatever</html>"),
            Ok(())
        );
        assert_eq!(
            kind(ChannelKind::Webhook, 503, ""),
            Err(FailureKind::Status { code: 503 })
        );
        assert_eq!(
            kind(ChannelKind::Webhook, 404, ""),
            Err(FailureKind::Status { code: 404 })
        );
        assert_eq!(
            classify_http_reply(ChannelKind::Webhook, 429, Some(30_000), b"")
                .unwrap_err()
                .kind,
            FailureKind::RateLimited {
                retry_after: Some(30_000)
            }
        );
        assert_eq!(
            kind(ChannelKind::Wecom, 502, "<html>Bad Gateway</html>"),
            Err(FailureKind::Status { code: 502 })
        );
        assert_eq!(
            kind(ChannelKind::Wecom, 200, "<html>proxy</html>"),
            Err(FailureKind::UnreadableReply)
        );
        // Code 0 under a failing status is not a success.
        assert_eq!(
            kind(ChannelKind::Dingtalk, 500, r#"{"errcode":0}"#),
            Err(FailureKind::Status { code: 500 })
        );
    }

    #[test]
    fn smtp_replies() {
        assert_eq!(classify_smtp_reply(250, "2.0.0 Ok: queued"), Ok(()));
        let busy = classify_smtp_reply(451, "4.7.1 try later\r\n").unwrap_err();
        assert_eq!(busy.kind, FailureKind::Busy);
        assert_eq!(busy.message, "smtp relay replied 451 4.7.1 try later");
        assert_eq!(
            classify_smtp_reply(550, "no such user").unwrap_err().kind,
            FailureKind::Rejected
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops_after_max_attempts() {
        let policy = RetryPolicy::default();
        let delays: Vec<Option<Millis>> = (1..=10)
            .map(|attempts| policy.next_attempt(attempts, &FailureKind::Timeout))
            .collect();
        assert_eq!(
            delays,
            [
                Some(10_000),
                Some(20_000),
                Some(40_000),
                Some(80_000),
                Some(160_000),
                Some(320_000),
                Some(600_000),
                Some(600_000),
                Some(600_000),
                None
            ]
        );
        assert_eq!(
            policy.next_attempt(3, &FailureKind::Status { code: 503 }),
            Some(40_000)
        );
        assert_eq!(policy.next_attempt(0, &FailureKind::Network), Some(10_000));
        // Far past any shift width: no overflow, no panic.
        let generous = RetryPolicy {
            max_attempts: u32::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(
            generous.next_attempt(200, &FailureKind::Busy),
            Some(600_000)
        );
    }

    #[test]
    fn client_errors_are_not_retried_except_429() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.next_attempt(1, &FailureKind::Status { code: 400 }),
            None
        );
        assert_eq!(
            policy.next_attempt(1, &FailureKind::Status { code: 404 }),
            None
        );
        assert_eq!(policy.next_attempt(1, &FailureKind::Rejected), None);
        assert_eq!(policy.next_attempt(1, &FailureKind::UnreadableReply), None);
        assert_eq!(
            policy.next_attempt(1, &FailureKind::Status { code: 429 }),
            Some(60_000)
        );
    }

    #[test]
    fn rate_limits_wait_at_least_a_minute_or_retry_after() {
        let policy = RetryPolicy::default();
        let limited = FailureKind::RateLimited { retry_after: None };
        assert_eq!(policy.next_attempt(1, &limited), Some(60_000));
        assert_eq!(policy.next_attempt(4, &limited), Some(80_000));
        let told = FailureKind::RateLimited {
            retry_after: Some(15 * MINUTE),
        };
        assert_eq!(policy.next_attempt(1, &told), Some(15 * MINUTE));
        assert_eq!(policy.next_attempt(10, &told), None);
    }
}
