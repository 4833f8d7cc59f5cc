//! The generic JSON webhook, for systems that want the facts rather than a chat message.
//!
//! `POST <url>` with `Content-Type: application/json; charset=utf-8` and, when configured,
//! `Authorization: Bearer <token>`. The body is one JSON object; receivers must ignore fields
//! they do not know, and a change that is not only an added field raises `version`.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `version` | string | schema version, `"1"` |
//! | `sent_at` | integer | when this request was rendered, epoch milliseconds |
//! | `kind` | string | `dispatched`, `escalated`, `acked`, `resolved`, `auto_resolved`, `reopened`, `digest` |
//! | `work_order_id` | string | empty for a digest |
//! | `severity` | string | `P1`, `P2`, `P3`, `Info` (for a digest: the highest held) |
//! | `title` | string | |
//! | `division_path` | string | `广西壮族自治区/南宁市/兴宁区` |
//! | `team` | string | |
//! | `on_duty` | array | `{name, phone, wecom_user_id, dingtalk_user_id, feishu_user_id}`, absent ids `null` |
//! | `sla_due` | integer or null | deadline, epoch milliseconds |
//! | `console_url` | string or null | |
//! | `detail` | string or null | |
//! | `digest` | object or null | `{total, by_severity: {p1, p2, p3, info}, items: [{kind, severity, work_order_id, title}], more}` |
//! | `text` | string | the same Chinese text a chat channel shows |

use serde::Serialize;

use super::{
    ChannelKind, Digest, HttpMethod, HttpRequest, Notification, NotificationKind, NotifyError,
    OnDutyPerson, text,
};
use crate::model::{Millis, Severity};

/// The `version` field of the body.
pub const WEBHOOK_SCHEMA_VERSION: &str = "1";

#[derive(Serialize)]
struct WebhookBody<'a> {
    version: &'static str,
    sent_at: Millis,
    kind: NotificationKind,
    work_order_id: &'a str,
    severity: Severity,
    title: &'a str,
    division_path: &'a str,
    team: &'a str,
    on_duty: &'a [OnDutyPerson],
    sla_due: Option<Millis>,
    console_url: Option<&'a str>,
    detail: Option<&'a str>,
    digest: Option<&'a Digest>,
    text: String,
}

pub(super) fn render(
    url: &str,
    bearer_token: Option<&str>,
    notification: &Notification,
    now: Millis,
) -> Result<HttpRequest, NotifyError> {
    let body = WebhookBody {
        version: WEBHOOK_SCHEMA_VERSION,
        sent_at: now,
        kind: notification.kind,
        work_order_id: &notification.work_order_id,
        severity: notification.severity,
        title: &notification.title,
        division_path: &notification.division_path,
        team: &notification.team,
        on_duty: &notification.on_duty,
        sla_due: notification.sla_due,
        console_url: notification.console_url.as_deref(),
        detail: notification.detail.as_deref(),
        digest: notification.digest.as_ref(),
        text: text::plain(notification),
    };
    let body = serde_json::to_vec(&body).map_err(|error| NotifyError::Json {
        channel: ChannelKind::Webhook,
        message: error.to_string(),
    })?;
    let mut headers = vec![(
        "Content-Type".to_owned(),
        "application/json; charset=utf-8".to_owned(),
    )];
    if let Some(token) = bearer_token {
        headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
    }
    Ok(HttpRequest {
        method: HttpMethod::Post,
        url: url.to_owned(),
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{ChannelConfig, Request};

    #[test]
    fn webhook_body_follows_the_documented_schema() {
        let channel = ChannelConfig::Webhook {
            url: "https://hooks.example/bagui".into(),
            bearer_token: Some("abc.DEF-123".into()),
        };
        let mut notification = dispatched();
        notification.on_duty.truncate(1);
        let Request::Http(request) = channel.render(&notification, NOW).unwrap() else {
            panic!("expected an HTTP request");
        };
        assert_eq!(request.url, "https://hooks.example/bagui");
        assert_eq!(request.header("Authorization"), Some("Bearer abc.DEF-123"));
        let expected = "{\"version\":\"1\",\"sent_at\":1764123456789,\"kind\":\"dispatched\",\
            \"work_order_id\":\"WO-20251126-0001\",\"severity\":\"P1\",\
            \"title\":\"兴宁区政务外网上联中断\",\
            \"division_path\":\"广西壮族自治区/南宁市/兴宁区\",\"team\":\"兴宁区网络组\",\
            \"on_duty\":[{\"name\":\"张三\",\"phone\":\"13800001111\",\
            \"wecom_user_id\":\"zhangsan\",\"dingtalk_user_id\":\"ding_zs\",\
            \"feishu_user_id\":\"ou_zs\"}],\
            \"sla_due\":1764124356789,\
            \"console_url\":\"https://ops.example.gov.cn/wo/WO-20251126-0001\",\
            \"detail\":null,\"digest\":null,\
            \"text\":\"【P1 派单】兴宁区政务外网上联中断\\n工单：WO-20251126-0001\\n\
            区划：广西壮族自治区/南宁市/兴宁区\\n班组：兴宁区网络组\\n\
            值班：张三（13800001111）\\n时限：2025-11-26 10:32（北京时间）\\n\
            详情：https://ops.example.gov.cn/wo/WO-20251126-0001\"}";
        assert_eq!(String::from_utf8(request.body).unwrap(), expected);
    }

    #[test]
    fn webhook_without_token_sends_no_authorization() {
        let channel = ChannelConfig::Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            bearer_token: None,
        };
        let Request::Http(request) = channel.render(&dispatched(), NOW).unwrap() else {
            panic!("expected an HTTP request");
        };
        assert_eq!(request.header("authorization"), None);
        assert_eq!(request.headers.len(), 1);
    }
}
