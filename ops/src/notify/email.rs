//! E-mail: an RFC 5322 message and its SMTP envelope, not the SMTP conversation.
//!
//! Chinese needs no SMTPUTF8 support from the relay: the subject (and a Chinese sender name)
//! are RFC 2047 encoded words, and the body is `text/plain; charset=utf-8` in base64, so every
//! byte on the wire is 7-bit ASCII in lines of at most 78 characters. Addresses are plain
//! ASCII `local@domain`; anything that could smuggle a header or an SMTP command (whitespace,
//! control characters, `<>`, `,`, `;`, quotes) is refused when the channel is configured.

use super::encode::{base64_lines, rfc2047, rfc5322_date, truncate_utf8};
use super::{Notification, NotifyError, text};
use crate::model::Millis;

/// A rendered e-mail: where to hand it and what to hand over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMessage {
    pub relay_host: String,
    pub relay_port: u16,
    /// `MAIL FROM`.
    pub envelope_from: String,
    /// One `RCPT TO` each.
    pub envelope_to: Vec<String>,
    /// The message for `DATA`: headers, an empty line, the base64 body; CRLF line ends, not
    /// yet dot-stuffed (no line of it starts with a dot anyway) and without the final `.`.
    pub data: Vec<u8>,
}

/// Subjects longer than this many bytes are cut (one line on a phone says enough).
pub const SUBJECT_LIMIT: usize = 200;

pub(super) struct EmailChannel<'a> {
    pub smtp_host: &'a str,
    pub smtp_port: u16,
    pub from: &'a str,
    pub from_name: Option<&'a str>,
    pub to: &'a [String],
}

pub(super) fn check(
    smtp_host: &str,
    smtp_port: u16,
    from: &str,
    to: &[String],
) -> Result<(), NotifyError> {
    let invalid = |reason| NotifyError::InvalidEmailChannel { reason };
    if smtp_host.is_empty() {
        return Err(invalid("smtp_host is empty"));
    }
    if !smtp_host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        return Err(invalid("smtp_host is not a host name or address"));
    }
    if smtp_port == 0 {
        return Err(invalid("smtp_port is 0"));
    }
    if to.is_empty() {
        return Err(invalid("the recipient list (to) is empty"));
    }
    check_address(from)?;
    for address in to {
        check_address(address)?;
    }
    Ok(())
}

fn check_address(address: &str) -> Result<(), NotifyError> {
    let invalid = |reason| NotifyError::InvalidAddress {
        address: address.to_owned(),
        reason,
    };
    let forbidden = |c: char| {
        !c.is_ascii()
            || c.is_ascii_control()
            || c.is_ascii_whitespace()
            || "<>()[],;:\"\\".contains(c)
    };
    if address.chars().any(forbidden) {
        return Err(invalid(
            "only ASCII without spaces, control characters or <>()[],;:\"\\ is accepted",
        ));
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err(invalid("it has no @"));
    };
    if local.is_empty() || domain.is_empty() {
        return Err(invalid("the part before or after @ is empty"));
    }
    if domain.contains('@') {
        return Err(invalid("it has more than one @"));
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err(invalid("the domain is malformed"));
    }
    Ok(())
}

/// `"Ops Team"` or an encoded word, followed by `<address>`.
fn mailbox(name: Option<&str>, address: &str) -> String {
    match name {
        Some(name) if !name.is_ascii() => format!("{} <{address}>", rfc2047(name)),
        Some(name) => {
            let escaped: String = name
                .chars()
                .filter(|c| !c.is_control())
                .flat_map(|c| match c {
                    '"' | '\\' => vec!['\\', c],
                    _ => vec![c],
                })
                .collect();
            format!("\"{escaped}\" <{address}>")
        }
        None => address.to_owned(),
    }
}

/// `To: a@x, b@y` folded so that no line passes 78 characters where it can be avoided.
fn address_list_header(name: &str, addresses: &[String]) -> String {
    let mut header = format!("{name}: ");
    let mut line_len = header.len();
    for (index, address) in addresses.iter().enumerate() {
        let piece = if index + 1 < addresses.len() {
            format!("{address},")
        } else {
            address.clone()
        };
        if index > 0 {
            if line_len + 1 + piece.len() > 78 {
                header.push_str("\r\n ");
                line_len = 1;
            } else {
                header.push(' ');
                line_len += 1;
            }
        }
        header.push_str(&piece);
        line_len += piece.len();
    }
    header
}

/// The work-order id as the left part of a Message-ID (letters, digits and `-` only).
fn id_part(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

pub(super) fn render(
    channel: EmailChannel<'_>,
    notification: &Notification,
    now: Millis,
) -> EmailMessage {
    let domain = channel
        .from
        .rsplit_once('@')
        .map_or("localhost", |(_, domain)| domain);
    let work_order = if notification.work_order_id.is_empty() {
        "digest".to_owned()
    } else {
        id_part(&notification.work_order_id)
    };
    let kind = serde_json::to_value(notification.kind)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "notification".to_owned());
    let subject = truncate_utf8(&text::email_subject(notification), SUBJECT_LIMIT);
    let body = text::email_body(notification).replace('\n', "\r\n");
    let headers = [
        format!("Date: {}", rfc5322_date(now)),
        format!("From: {}", mailbox(channel.from_name, channel.from)),
        address_list_header("To", channel.to),
        format!("Subject: {}", rfc2047(&subject)),
        format!("Message-ID: <bagui.{now}.{kind}.{work_order}@{domain}>"),
        "MIME-Version: 1.0".to_owned(),
        "Content-Type: text/plain; charset=utf-8".to_owned(),
        "Content-Transfer-Encoding: base64".to_owned(),
    ];
    let mut data = headers.join("\r\n");
    data.push_str("\r\n\r\n");
    data.push_str(&base64_lines(body.as_bytes()));
    EmailMessage {
        relay_host: channel.smtp_host.to_owned(),
        relay_port: channel.smtp_port,
        envelope_from: channel.from.to_owned(),
        envelope_to: channel.to.to_vec(),
        data: data.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode::base64;
    use super::super::fixtures::*;
    use super::super::{ChannelConfig, Request};
    use super::*;
    use ::base64::Engine as _;

    fn email_channel() -> ChannelConfig {
        ChannelConfig::Email {
            smtp_host: "127.0.0.1".into(),
            smtp_port: 2525,
            from: "ops@nn.gx.gov.cn".into(),
            from_name: Some("八桂运维".into()),
            to: vec!["noc@xn.gx.gov.cn".into(), "duty@xn.gx.gov.cn".into()],
        }
    }

    fn rendered(channel: &ChannelConfig, notification: &Notification) -> EmailMessage {
        match channel.render(notification, NOW).unwrap() {
            Request::Email(message) => message,
            Request::Http(_) => panic!("expected an e-mail"),
        }
    }

    #[test]
    fn email_headers_are_exact_with_an_rfc_2047_subject() {
        let message = rendered(&email_channel(), &dispatched());
        assert_eq!(message.relay_host, "127.0.0.1");
        assert_eq!(message.relay_port, 2525);
        assert_eq!(message.envelope_from, "ops@nn.gx.gov.cn");
        assert_eq!(
            message.envelope_to,
            ["noc@xn.gx.gov.cn", "duty@xn.gx.gov.cn"]
        );
        let data = String::from_utf8(message.data).unwrap();
        let (head, body) = data.split_once("\r\n\r\n").unwrap();
        // The subject "【P1 派单】兴宁区政务外网上联中断" is 48 bytes: 39 in the first word
        // (13 characters), 9 in the second:
        // `printf '【P1 派单】兴宁区政务外网上' | base64` and `printf '联中断' | base64`.
        assert_eq!(
            head,
            "Date: Wed, 26 Nov 2025 10:17:36 +0800\r\n\
             From: =?UTF-8?B?5YWr5qGC6L+Q57u0?= <ops@nn.gx.gov.cn>\r\n\
             To: noc@xn.gx.gov.cn, duty@xn.gx.gov.cn\r\n\
             Subject: =?UTF-8?B?44CQUDEg5rS+5Y2V44CR5YW05a6B5Yy65pS/5Yqh5aSW572R5LiK?=\r\n \
             =?UTF-8?B?6IGU5Lit5pat?=\r\n\
             Message-ID: <bagui.1764123456789.dispatched.WO-20251126-0001@nn.gx.gov.cn>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: base64"
        );
        assert!(data.is_ascii());
        assert!(data.split("\r\n").all(|line| line.len() <= 76));
        let decoded = ::base64::engine::general_purpose::STANDARD
            .decode(body.replace("\r\n", ""))
            .unwrap();
        let text = String::from_utf8(decoded).unwrap();
        assert!(
            text.starts_with("【P1 派单】兴宁区政务外网上联中断\r\n工单：WO-20251126-0001\r\n")
        );
        assert!(text.ends_with("\r\n\r\n——\r\n八桂运维平台自动发送，请勿直接回复。\r\n"));
        assert_eq!(base64("八桂运维".as_bytes()), "5YWr5qGC6L+Q57u0");
    }

    #[test]
    fn ascii_sender_names_are_quoted_and_long_recipient_lists_fold() {
        assert_eq!(
            mailbox(Some("Ops \"NOC\""), "a@b.cn"),
            "\"Ops \\\"NOC\\\"\" <a@b.cn>"
        );
        let to: Vec<String> = (0..5)
            .map(|i| format!("county-noc-{i}@example.gov.cn"))
            .collect();
        let header = address_list_header("To", &to);
        assert_eq!(
            header,
            "To: county-noc-0@example.gov.cn, county-noc-1@example.gov.cn,\r\n \
             county-noc-2@example.gov.cn, county-noc-3@example.gov.cn,\r\n \
             county-noc-4@example.gov.cn"
        );
    }

    #[test]
    fn addresses_that_could_inject_are_refused() {
        for bad in [
            "a@b.cn\r\nBcc: x@y",
            "a b@c.cn",
            "<a@b.cn>",
            "a@b.cn,c@d.cn",
            "no-at.cn",
            "@b.cn",
            "a@",
            "a@b@c",
            "a@.cn",
            "张三@b.cn",
        ] {
            assert!(check_address(bad).is_err(), "{bad:?} accepted");
        }
        check_address("noc-1.duty+p1@xn.gx.gov.cn").unwrap();
        check_address("root@localhost").unwrap();
    }

    #[test]
    fn digest_mail_gets_a_message_id_without_a_work_order() {
        let mut notification = dispatched();
        notification.kind = super::super::NotificationKind::Digest;
        notification.work_order_id.clear();
        let data = String::from_utf8(rendered(&email_channel(), &notification).data).unwrap();
        assert!(
            data.contains("\r\nMessage-ID: <bagui.1764123456789.digest.digest@nn.gx.gov.cn>\r\n")
        );
    }
}
