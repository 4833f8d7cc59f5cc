//! The three group robots: WeCom, DingTalk and Feishu. Each builds its documented JSON body
//! from the channel's text (see [`super::text`]), keeps within the robot's size limit, and
//! signs where the robot asks for it.

use serde::Serialize;

use super::encode::{append_query, base64, hmac_sha256, percent_encode, truncate_utf8};
use super::text;
use super::{ChannelKind, HttpMethod, HttpRequest, MessageFormat, Notification, NotifyError};
use crate::model::Millis;

/// WeCom's limit on `text.content`, in bytes of UTF-8.
pub const WECOM_TEXT_LIMIT: usize = 2048;
/// WeCom's limit on `markdown.content`, in bytes of UTF-8.
pub const WECOM_MARKDOWN_LIMIT: usize = 4096;
/// A guard on DingTalk message text. DingTalk's documents quoted in our reference give no
/// figure; 20,000 bytes is an unverified conservative bound, far above any single notification
/// and above a digest of the default ten titles.
pub const DINGTALK_TEXT_LIMIT: usize = 20_000;
/// Feishu's limit on the whole request body ("≤20 KB").
pub const FEISHU_BODY_LIMIT: usize = 20 * 1024;

const JSON_UTF8: &str = "application/json; charset=utf-8";

fn json_request(
    channel: ChannelKind,
    url: String,
    body: &impl Serialize,
) -> Result<HttpRequest, NotifyError> {
    let body = serde_json::to_vec(body).map_err(|error| NotifyError::Json {
        channel,
        message: error.to_string(),
    })?;
    Ok(HttpRequest {
        method: HttpMethod::Post,
        url,
        headers: vec![("Content-Type".into(), JSON_UTF8.into())],
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// WeCom

#[derive(Serialize)]
#[serde(tag = "msgtype", rename_all = "lowercase")]
enum WecomBody<'a> {
    Text { text: WecomText<'a> },
    Markdown { markdown: WecomMarkdown },
}

#[derive(Serialize)]
struct WecomText<'a> {
    content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mentioned_list: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mentioned_mobile_list: Vec<&'a str>,
}

#[derive(Serialize)]
struct WecomMarkdown {
    content: String,
}

/// `POST <url>` with `{"msgtype":"text","text":{"content":…,"mentioned_list":[…],
/// "mentioned_mobile_list":[…]}}` or `{"msgtype":"markdown","markdown":{"content":…}}`.
/// WeCom has no signature: the `key` in the URL is the secret.
pub(super) fn wecom(
    url: &str,
    format: MessageFormat,
    notification: &Notification,
) -> Result<HttpRequest, NotifyError> {
    let body = match format {
        MessageFormat::Text => WecomBody::Text {
            text: WecomText {
                content: truncate_utf8(&text::wecom_text(notification), WECOM_TEXT_LIMIT),
                mentioned_list: notification
                    .on_duty
                    .iter()
                    .filter_map(|person| person.wecom_user_id.as_deref())
                    .collect(),
                mentioned_mobile_list: notification
                    .on_duty
                    .iter()
                    .filter_map(|person| person.phone.as_deref())
                    .collect(),
            },
        },
        MessageFormat::Markdown => WecomBody::Markdown {
            markdown: WecomMarkdown {
                content: text::wecom_markdown(notification).fit(WECOM_MARKDOWN_LIMIT),
            },
        },
    };
    json_request(ChannelKind::Wecom, url.to_owned(), &body)
}

// ---------------------------------------------------------------------------------------------
// DingTalk

#[derive(Serialize)]
#[serde(tag = "msgtype", rename_all = "lowercase")]
enum DingtalkBody<'a> {
    Text {
        text: DingtalkText,
        at: DingtalkAt<'a>,
    },
    Markdown {
        markdown: DingtalkMarkdown,
        at: DingtalkAt<'a>,
    },
}

#[derive(Serialize)]
struct DingtalkText {
    content: String,
}

#[derive(Serialize)]
struct DingtalkMarkdown {
    title: String,
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DingtalkAt<'a> {
    at_mobiles: Vec<&'a str>,
    at_user_ids: Vec<&'a str>,
    is_at_all: bool,
}

/// DingTalk's signature: base64(HMAC-SHA256(key = secret, message = timestamp + "\n" +
/// secret)), `timestamp` in epoch milliseconds. Not yet URL-encoded.
pub fn dingtalk_sign(secret: &str, timestamp_ms: Millis) -> String {
    let message = format!("{timestamp_ms}\n{secret}");
    base64(&hmac_sha256(secret.as_bytes(), message.as_bytes()))
}

pub(super) fn check_dingtalk_secret(secret: &str) -> Result<(), NotifyError> {
    let invalid = |reason| NotifyError::InvalidSecret {
        channel: ChannelKind::Dingtalk,
        reason,
    };
    if !secret.starts_with("SEC") || secret.len() <= 3 {
        return Err(invalid("a DingTalk signing secret starts with \"SEC\""));
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains whitespace or control characters"));
    }
    Ok(())
}

/// `POST <url>&timestamp=<ms>&sign=<urlencoded signature>` (signature only with a secret) and a
/// text or markdown body with `at.atMobiles`/`at.atUserIds` for the people on duty.
pub(super) fn dingtalk(
    url: &str,
    secret: Option<&str>,
    format: MessageFormat,
    notification: &Notification,
    now: Millis,
) -> Result<HttpRequest, NotifyError> {
    let at = DingtalkAt {
        at_mobiles: notification
            .on_duty
            .iter()
            .filter_map(|person| person.phone.as_deref())
            .collect(),
        at_user_ids: notification
            .on_duty
            .iter()
            .filter_map(|person| person.dingtalk_user_id.as_deref())
            .collect(),
        is_at_all: false,
    };
    let body = match format {
        MessageFormat::Text => DingtalkBody::Text {
            text: DingtalkText {
                content: text::dingtalk_text(notification).fit(DINGTALK_TEXT_LIMIT),
            },
            at,
        },
        MessageFormat::Markdown => {
            let (title, text) = text::dingtalk_markdown(notification);
            DingtalkBody::Markdown {
                markdown: DingtalkMarkdown {
                    title,
                    text: text.fit(DINGTALK_TEXT_LIMIT),
                },
                at,
            }
        }
    };
    let url = match secret {
        Some(secret) => {
            let timestamp = now.to_string();
            let sign = percent_encode(&dingtalk_sign(secret, now));
            append_query(url, &[("timestamp", &timestamp), ("sign", &sign)])
        }
        None => url.to_owned(),
    };
    json_request(ChannelKind::Dingtalk, url, &body)
}

// ---------------------------------------------------------------------------------------------
// Feishu

#[derive(Serialize)]
struct FeishuBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sign: Option<&'a str>,
    msg_type: &'static str,
    content: FeishuContent<'a>,
}

#[derive(Serialize)]
struct FeishuContent<'a> {
    text: &'a str,
}

/// Feishu's signature, the reverse of DingTalk's: base64(HMAC-SHA256(key = timestamp + "\n" +
/// secret, message = empty)), `timestamp` in epoch **seconds**.
pub fn feishu_sign(secret: &str, timestamp_s: u64) -> String {
    let key = format!("{timestamp_s}\n{secret}");
    base64(&hmac_sha256(key.as_bytes(), b""))
}

pub(super) fn check_feishu_secret(secret: &str) -> Result<(), NotifyError> {
    if secret.is_empty() {
        return Err(NotifyError::InvalidSecret {
            channel: ChannelKind::Feishu,
            reason: "it is empty",
        });
    }
    Ok(())
}

/// `POST <url>` with `{"timestamp":"<s>","sign":"…","msg_type":"text","content":{"text":…}}`
/// (timestamp and sign only with a secret), the whole body within 20 KB.
pub(super) fn feishu(
    url: &str,
    secret: Option<&str>,
    notification: &Notification,
    now: Millis,
) -> Result<HttpRequest, NotifyError> {
    let timestamp_s = now / 1000;
    let timestamp = timestamp_s.to_string();
    let sign = secret.map(|secret| feishu_sign(secret, timestamp_s));
    let text = text::feishu_text(notification);
    let render = |text_limit: usize| {
        let fitted = text.fit(text_limit);
        let body = FeishuBody {
            timestamp: sign.as_ref().map(|_| timestamp.as_str()),
            sign: sign.as_deref(),
            msg_type: "text",
            content: FeishuContent { text: &fitted },
        };
        json_request(ChannelKind::Feishu, url.to_owned(), &body)
    };
    let fits = |request: &HttpRequest| request.body.len() <= FEISHU_BODY_LIMIT;
    let whole = render(usize::MAX)?;
    if fits(&whole) {
        return Ok(whole);
    }
    // The limit is on the body, and JSON escaping makes the body longer than the text by an
    // amount that depends on the text, so search for the longest cut that fits: the body
    // grows with the text limit, and a notification this long is rare enough that a dozen
    // renderings cost nothing.
    let mut best = render(0)?;
    if !fits(&best) {
        return Err(NotifyError::TooLarge {
            channel: ChannelKind::Feishu,
            limit: FEISHU_BODY_LIMIT,
        });
    }
    let (mut fitting, mut too_long) = (0, text.joined().len());
    while too_long - fitting > 1 {
        let middle = fitting + (too_long - fitting) / 2;
        let request = render(middle)?;
        if fits(&request) {
            fitting = middle;
            best = request;
        } else {
            too_long = middle;
        }
    }
    Ok(best)
}

pub(super) fn check_bearer_token(token: &str) -> Result<(), NotifyError> {
    if token.is_empty() {
        return Err(NotifyError::InvalidBearerToken {
            reason: "it is empty",
        });
    }
    // RFC 6750 b64token characters, which also keeps CR/LF out of the header.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if !token.chars().all(allowed) {
        return Err(NotifyError::InvalidBearerToken {
            reason: "only letters, digits and -._~+/= are allowed",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{ChannelConfig, OnDutyPerson, Request, TRUNCATION_MARKER};
    use super::*;

    const DING_SECRET: &str = "SECtest0123456789abcdef";
    const DING_TS: Millis = 1_764_123_456_789;

    fn http(channel: &ChannelConfig, notification: &Notification, now: Millis) -> HttpRequest {
        match channel.render(notification, now).unwrap() {
            Request::Http(request) => request,
            Request::Email(_) => panic!("expected an HTTP request"),
        }
    }

    fn body_json(request: &HttpRequest) -> serde_json::Value {
        serde_json::from_slice(&request.body).unwrap()
    }

    #[test]
    fn dingtalk_signature_matches_openssl() {
        // printf '1764123456789\nSECtest0123456789abcdef' \
        //   | openssl dgst -sha256 -hmac 'SECtest0123456789abcdef' -binary | base64
        assert_eq!(
            dingtalk_sign(DING_SECRET, DING_TS),
            "Ktv0iEQopUgQZ3LYbFX+rKn9M7bbqb702au5qSNJMYM="
        );
    }

    #[test]
    fn feishu_signature_matches_openssl_with_key_and_message_reversed() {
        // printf '' | openssl dgst -sha256 \
        //   -hmac "$(printf '1764123456\nfs-secret-demo')" -binary | base64
        assert_eq!(
            feishu_sign("fs-secret-demo", 1_764_123_456),
            "hjOKUX/DQT/jM17t4WmAqERusjzJ6+tXQnWM4jME0uM="
        );
    }

    #[test]
    fn dingtalk_request_is_signed_in_the_query_string() {
        let channel = ChannelConfig::Dingtalk {
            url: "https://oapi.dingtalk.com/robot/send?access_token=tok123".into(),
            secret: Some(DING_SECRET.into()),
            format: MessageFormat::Text,
        };
        let request = http(&channel, &dispatched(), DING_TS);
        assert_eq!(request.method, HttpMethod::Post);
        assert_eq!(
            request.url,
            "https://oapi.dingtalk.com/robot/send?access_token=tok123\
             &timestamp=1764123456789\
             &sign=Ktv0iEQopUgQZ3LYbFX%2BrKn9M7bbqb702au5qSNJMYM%3D"
        );
        assert_eq!(
            request.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        let expected = format!(
            "{{\"msgtype\":\"text\",\"text\":{{\"content\":\"{}\"}},\
             \"at\":{{\"atMobiles\":[\"13800001111\"],\"atUserIds\":[\"ding_zs\"],\"isAtAll\":false}}}}",
            "【P1 派单】兴宁区政务外网上联中断\\n\
             工单：WO-20251126-0001\\n\
             区划：广西壮族自治区/南宁市/兴宁区\\n\
             班组：兴宁区网络组\\n\
             值班：张三（13800001111）、李四\\n\
             时限：2025-11-26 10:32（北京时间）\\n\
             详情：https://ops.example.gov.cn/wo/WO-20251126-0001\\n\
             @13800001111"
        );
        assert_eq!(String::from_utf8(request.body).unwrap(), expected);
    }

    #[test]
    fn dingtalk_without_secret_is_unsigned_and_markdown_has_a_title() {
        let channel = ChannelConfig::Dingtalk {
            url: "https://oapi.dingtalk.com/robot/send?access_token=tok123".into(),
            secret: None,
            format: MessageFormat::Markdown,
        };
        let request = http(&channel, &dispatched(), DING_TS);
        assert_eq!(
            request.url,
            "https://oapi.dingtalk.com/robot/send?access_token=tok123"
        );
        let body = body_json(&request);
        assert_eq!(body["msgtype"], "markdown");
        assert_eq!(
            body["markdown"]["title"],
            "【P1 派单】兴宁区政务外网上联中断"
        );
        assert!(body["markdown"]["text"].as_str().unwrap().ends_with(
            "[查看详情](https://ops.example.gov.cn/wo/WO-20251126-0001)\n\n@13800001111"
        ));
        assert_eq!(body["at"]["atMobiles"][0], "13800001111");
    }

    #[test]
    fn wecom_text_body_is_exact() {
        let channel = ChannelConfig::Wecom {
            url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6".into(),
            format: MessageFormat::Text,
        };
        let request = http(&channel, &dispatched(), NOW);
        assert_eq!(
            request.url,
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6"
        );
        let expected = "{\"msgtype\":\"text\",\"text\":{\"content\":\"\
            【P1 派单】兴宁区政务外网上联中断\\n\
            工单：WO-20251126-0001\\n\
            区划：广西壮族自治区/南宁市/兴宁区\\n\
            班组：兴宁区网络组\\n\
            值班：张三（13800001111）、李四\\n\
            时限：2025-11-26 10:32（北京时间）\\n\
            详情：https://ops.example.gov.cn/wo/WO-20251126-0001\",\
            \"mentioned_list\":[\"zhangsan\"],\
            \"mentioned_mobile_list\":[\"13800001111\"]}}";
        assert_eq!(String::from_utf8(request.body).unwrap(), expected);
    }

    #[test]
    fn wecom_text_without_anyone_to_mention_has_no_mention_lists() {
        let channel = ChannelConfig::Wecom {
            url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k".into(),
            format: MessageFormat::Text,
        };
        let mut notification = dispatched();
        notification.on_duty = vec![OnDutyPerson::named("李四")];
        let body = body_json(&http(&channel, &notification, NOW));
        assert_eq!(
            body["text"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["content"]
        );
    }

    #[test]
    fn wecom_content_is_cut_at_a_character_boundary_within_its_limit() {
        let channel = ChannelConfig::Wecom {
            url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k".into(),
            format: MessageFormat::Text,
        };
        let mut notification = dispatched();
        // 1000 three-byte characters: far over 2048 bytes.
        notification.detail = Some("障".repeat(1000));
        let body = body_json(&http(&channel, &notification, NOW));
        let content = body["text"]["content"].as_str().unwrap();
        assert!(content.len() <= WECOM_TEXT_LIMIT);
        assert!(content.ends_with(&format!("障{TRUNCATION_MARKER}")));
        // Everything up to and including "\n说明：" is 249 bytes (headline 48, 工单 26,
        // 区划 51, 班组 28, 值班 42, 时限 44, then 10). 2048 - 33 (marker) = 2015 bytes of
        // budget leave 1766 bytes for 障: 588 whole characters (1764 bytes).
        assert_eq!(content.matches('障').count(), 588);
        assert_eq!(content.len(), 249 + 588 * 3 + TRUNCATION_MARKER.len());

        let markdown = ChannelConfig::Wecom {
            url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k".into(),
            format: MessageFormat::Markdown,
        };
        notification.detail = Some("障".repeat(3000));
        let body = body_json(&http(&markdown, &notification, NOW));
        let content = body["markdown"]["content"].as_str().unwrap();
        assert!(content.len() <= WECOM_MARKDOWN_LIMIT);
        assert!(content.ends_with(&format!("障{TRUNCATION_MARKER}\n<@zhangsan>")));
    }

    #[test]
    fn feishu_body_carries_seconds_and_signature() {
        let channel = ChannelConfig::Feishu {
            url: "https://open.feishu.cn/open-apis/bot/v2/hook/abc".into(),
            secret: Some("fs-secret-demo".into()),
        };
        let mut notification = dispatched();
        notification.on_duty = vec![zhang_san()];
        notification.console_url = None;
        notification.sla_due = None;
        let request = http(&channel, &notification, 1_764_123_456_789);
        assert_eq!(
            request.url,
            "https://open.feishu.cn/open-apis/bot/v2/hook/abc"
        );
        let expected = "{\"timestamp\":\"1764123456\",\
            \"sign\":\"hjOKUX/DQT/jM17t4WmAqERusjzJ6+tXQnWM4jME0uM=\",\
            \"msg_type\":\"text\",\"content\":{\"text\":\"\
            【P1 派单】兴宁区政务外网上联中断\\n\
            工单：WO-20251126-0001\\n\
            区划：广西壮族自治区/南宁市/兴宁区\\n\
            班组：兴宁区网络组\\n\
            值班：张三（13800001111）\\n\
            <at user_id=\\\"ou_zs\\\">张三</at>\"}}";
        assert_eq!(String::from_utf8(request.body).unwrap(), expected);

        let unsigned = ChannelConfig::Feishu {
            url: "https://open.feishu.cn/open-apis/bot/v2/hook/abc".into(),
            secret: None,
        };
        let body = body_json(&http(&unsigned, &notification, NOW));
        assert!(body.get("timestamp").is_none() && body.get("sign").is_none());
    }

    #[test]
    fn feishu_body_is_kept_within_20_kb_even_when_escaping_inflates_it() {
        let channel = ChannelConfig::Feishu {
            url: "https://open.feishu.cn/open-apis/bot/v2/hook/abc".into(),
            secret: Some("s".into()),
        };
        let mut notification = dispatched();
        // Quotes double in JSON; newlines become two characters.
        notification.detail = Some("\"\n".repeat(15_000));
        let request = http(&channel, &notification, NOW);
        assert!(request.body.len() <= FEISHU_BODY_LIMIT);
        assert!(request.body.len() > FEISHU_BODY_LIMIT - 100);
        let body = body_json(&request);
        let text = body["content"]["text"].as_str().unwrap();
        assert!(text.ends_with(&format!(
            "{TRUNCATION_MARKER}\n<at user_id=\"ou_zs\">张三</at>"
        )));
    }
}
