//! The words: one function per channel, all from the same parts, Chinese first.
//!
//! A notification is read on a phone, often at night, so the first line says everything that
//! decides whether to get up (`【P1 派单】兴宁区政务外网上联中断`) and each following line is
//! one fact with a short label: work order, division path, team, who is on duty, the deadline
//! in Beijing time, and the console link last. Lines without a value are left out rather than
//! shown empty.

use super::encode::{beijing_minute, truncate_utf8};
use super::{Notification, NotificationKind, OnDutyPerson};
use crate::model::Severity;

/// How a severity is written in text.
pub fn severity_label(severity: Severity) -> &'static str {
    match severity {
        Severity::P1 => "P1",
        Severity::P2 => "P2",
        Severity::P3 => "P3",
        Severity::Info => "提示",
    }
}

/// The first line: `【P1 派单】兴宁区政务外网上联中断`, or for a digest
/// `【汇总】限流期间 5 条通知合并发送`.
pub fn headline(notification: &Notification) -> String {
    match (notification.kind, &notification.digest) {
        (NotificationKind::Digest, Some(digest)) => {
            format!("【汇总】限流期间 {} 条通知合并发送", digest.total)
        }
        (NotificationKind::Digest, None) => format!("【汇总】{}", notification.title),
        (kind, _) => format!(
            "【{} {}】{}",
            severity_label(notification.severity),
            kind.label(),
            notification.title
        ),
    }
}

/// `张三（13800001111）、李四`.
fn on_duty_text(people: &[OnDutyPerson]) -> String {
    people
        .iter()
        .map(|person| match &person.phone {
            Some(phone) => format!("{}（{}）", person.name, phone),
            None => person.name.clone(),
        })
        .collect::<Vec<_>>()
        .join("、")
}

/// The labelled facts after the headline, in display order, without the console link.
pub fn facts(notification: &Notification) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    let mut push = |label, value: String| {
        if !value.is_empty() {
            facts.push((label, value));
        }
    };
    push("工单", notification.work_order_id.clone());
    push("区划", notification.division_path.clone());
    push("班组", notification.team.clone());
    push("值班", on_duty_text(&notification.on_duty));
    if let Some(due) = notification.sla_due {
        push("时限", format!("{}（北京时间）", beijing_minute(due)));
    }
    if let Some(detail) = &notification.detail {
        push("说明", detail.clone());
    }
    facts
}

/// The digest's own lines: counts by severity, the listed items, and how many more.
pub fn digest_lines(notification: &Notification) -> Vec<String> {
    let Some(digest) = &notification.digest else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    let counts: Vec<String> = digest
        .by_severity
        .non_zero()
        .into_iter()
        .map(|(severity, count)| format!("{} {} 条", severity_label(severity), count))
        .collect();
    if !counts.is_empty() {
        lines.push(counts.join("，"));
    }
    for (index, item) in digest.items.iter().enumerate() {
        let id = if item.work_order_id.is_empty() {
            String::new()
        } else {
            format!("（{}）", item.work_order_id)
        };
        lines.push(format!(
            "{}. 【{} {}】{}{}",
            index + 1,
            severity_label(item.severity),
            item.kind.label(),
            item.title,
            id
        ));
    }
    if digest.more > 0 {
        lines.push(format!("还有 {} 条，请到控制台查看", digest.more));
    }
    lines
}

/// Plain text shared by the text channels: headline, `标签：值` lines, digest lines, link.
pub fn plain(notification: &Notification) -> String {
    let mut lines = vec![headline(notification)];
    lines.extend(
        facts(notification)
            .into_iter()
            .map(|(label, value)| format!("{label}：{value}")),
    );
    lines.extend(digest_lines(notification));
    if let Some(url) = &notification.console_url {
        lines.push(format!("详情：{url}"));
    }
    lines.join("\n")
}

/// WeCom text: the plain text; mentions travel in `mentioned_list`/`mentioned_mobile_list`
/// and WeCom shows them itself.
pub fn wecom_text(notification: &Notification) -> String {
    plain(notification)
}

/// A message body and its trailing line of mentions, kept apart so that cutting a long body
/// to a channel's limit never cuts the mentions that make phones ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub body: String,
    pub mentions: Option<String>,
}

impl Text {
    /// Body and mentions on separate lines.
    pub fn joined(&self) -> String {
        match &self.mentions {
            Some(mentions) => format!("{}\n{mentions}", self.body),
            None => self.body.clone(),
        }
    }

    /// The joined text within `max_bytes`: the body is cut (on a character boundary, with
    /// [`super::TRUNCATION_MARKER`]) before the mentions are.
    pub fn fit(&self, max_bytes: usize) -> String {
        let joined = self.joined();
        if joined.len() <= max_bytes {
            return joined;
        }
        match &self.mentions {
            Some(mentions) if mentions.len() < max_bytes => {
                let body = truncate_utf8(&self.body, max_bytes - mentions.len() - 1);
                format!("{body}\n{mentions}")
            }
            _ => truncate_utf8(&joined, max_bytes),
        }
    }
}

/// WeCom markdown: bold headline coloured by severity, quoted facts, a link, and `<@userid>`
/// for everyone on duty with a WeCom id (markdown messages have no mobile-number mentions).
pub fn wecom_markdown(notification: &Notification) -> Text {
    let colour = match notification.severity {
        Severity::P1 | Severity::P2 => "warning",
        Severity::P3 => "info",
        Severity::Info => "comment",
    };
    let mut lines = vec![format!(
        "**<font color=\"{colour}\">{}</font>**",
        headline(notification)
    )];
    lines.extend(
        facts(notification)
            .into_iter()
            .map(|(label, value)| format!("> {label}：{value}")),
    );
    lines.extend(digest_lines(notification));
    if let Some(url) = &notification.console_url {
        lines.push(format!("[查看详情]({url})"));
    }
    let mentions: Vec<String> = notification
        .on_duty
        .iter()
        .filter_map(|person| person.wecom_user_id.as_ref())
        .map(|id| format!("<@{id}>"))
        .collect();
    Text {
        body: lines.join("\n"),
        mentions: (!mentions.is_empty()).then(|| mentions.join(" ")),
    }
}

/// `@13800001111 @13900002222`: DingTalk highlights a mention only where the number appears
/// in the text.
fn dingtalk_mentions(notification: &Notification) -> Option<String> {
    let phones: Vec<String> = notification
        .on_duty
        .iter()
        .filter_map(|person| person.phone.as_ref())
        .map(|phone| format!("@{phone}"))
        .collect();
    (!phones.is_empty()).then(|| phones.join(" "))
}

/// DingTalk text: the plain text and a final line of `@mobile` mentions.
pub fn dingtalk_text(notification: &Notification) -> Text {
    Text {
        body: plain(notification),
        mentions: dingtalk_mentions(notification),
    }
}

/// DingTalk markdown: `(title, text)`; the title is what the phone's notification shows.
/// Paragraphs are separated by blank lines because DingTalk's markdown joins single newlines
/// (the mentions follow a single newline after an empty line, which [`Text::joined`] gives by
/// ending the body with one).
pub fn dingtalk_markdown(notification: &Notification) -> (String, Text) {
    let title = headline(notification);
    let mut blocks = vec![format!("### {title}")];
    blocks.extend(
        facts(notification)
            .into_iter()
            .map(|(label, value)| format!("- {label}：{value}")),
    );
    blocks.extend(digest_lines(notification));
    if let Some(url) = &notification.console_url {
        blocks.push(format!("[查看详情]({url})"));
    }
    let mentions = dingtalk_mentions(notification);
    let mut body = blocks.join("\n\n");
    if mentions.is_some() {
        body.push('\n');
    }
    (title, Text { body, mentions })
}

/// Feishu text: the plain text and a final line of `<at user_id="…">name</at>` for everyone on
/// duty with a Feishu id (the others are named in the 值班 line).
pub fn feishu_text(notification: &Notification) -> Text {
    let mentions: Vec<String> = notification
        .on_duty
        .iter()
        .filter_map(|person| {
            person
                .feishu_user_id
                .as_ref()
                .map(|id| format!("<at user_id=\"{id}\">{}</at>", person.name))
        })
        .collect();
    Text {
        body: plain(notification),
        mentions: (!mentions.is_empty()).then(|| mentions.join(" ")),
    }
}

/// E-mail subject: the headline.
pub fn email_subject(notification: &Notification) -> String {
    headline(notification)
}

/// E-mail body: the plain text and a footer saying where it came from.
pub fn email_body(notification: &Notification) -> String {
    format!(
        "{}\n\n——\n八桂运维平台自动发送，请勿直接回复。\n",
        plain(notification)
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{Digest, DigestItem, SeverityCounts};
    use super::*;

    #[test]
    fn plain_text_reads_top_down() {
        assert_eq!(
            plain(&dispatched()),
            "【P1 派单】兴宁区政务外网上联中断\n\
             工单：WO-20251126-0001\n\
             区划：广西壮族自治区/南宁市/兴宁区\n\
             班组：兴宁区网络组\n\
             值班：张三（13800001111）、李四\n\
             时限：2025-11-26 10:32（北京时间）\n\
             详情：https://ops.example.gov.cn/wo/WO-20251126-0001"
        );
    }

    #[test]
    fn empty_facts_are_left_out() {
        let mut notification = dispatched();
        notification.kind = NotificationKind::AutoResolved;
        notification.severity = Severity::P3;
        notification.on_duty.clear();
        notification.sla_due = None;
        notification.console_url = None;
        notification.team.clear();
        notification.detail = Some("源告警已恢复".into());
        assert_eq!(
            plain(&notification),
            "【P3 自动恢复】兴宁区政务外网上联中断\n\
             工单：WO-20251126-0001\n\
             区划：广西壮族自治区/南宁市/兴宁区\n\
             说明：源告警已恢复"
        );
    }

    #[test]
    fn channel_variants_carry_their_mentions() {
        let notification = dispatched();
        assert!(
            dingtalk_text(&notification)
                .joined()
                .ends_with("详情：https://ops.example.gov.cn/wo/WO-20251126-0001\n@13800001111")
        );
        assert!(
            feishu_text(&notification)
                .joined()
                .ends_with("\n<at user_id=\"ou_zs\">张三</at>")
        );
        let markdown = wecom_markdown(&notification).joined();
        assert!(markdown.starts_with(
            "**<font color=\"warning\">【P1 派单】兴宁区政务外网上联中断</font>**\n> 工单："
        ));
        assert!(
            markdown.ends_with(
                "[查看详情](https://ops.example.gov.cn/wo/WO-20251126-0001)\n<@zhangsan>"
            )
        );
        let (title, text) = dingtalk_markdown(&notification);
        let text = text.joined();
        assert_eq!(title, "【P1 派单】兴宁区政务外网上联中断");
        assert!(
            text.starts_with(
                "### 【P1 派单】兴宁区政务外网上联中断\n\n- 工单：WO-20251126-0001\n\n"
            )
        );
        assert!(text.ends_with("\n\n@13800001111"));
    }

    #[test]
    fn fitting_cuts_the_body_and_keeps_the_mentions() {
        let text = Text {
            body: "兴宁区".repeat(20),
            mentions: Some("@13800001111".into()),
        };
        // 60 bytes allowed: 12 for the mentions, 1 for the newline, 47 for the body, of which
        // the marker takes 33 and 14 leave four whole characters (12 bytes).
        let fitted = text.fit(60);
        assert_eq!(
            fitted,
            format!("兴宁区兴{}\n@13800001111", super::super::TRUNCATION_MARKER)
        );
        assert!(fitted.len() <= 60);
        assert_eq!(text.fit(1000), text.joined());
        let no_mentions = Text {
            body: "abc".into(),
            mentions: None,
        };
        assert_eq!(no_mentions.fit(2), "ab");
    }

    #[test]
    fn digest_text_lists_counts_items_and_the_rest() {
        let notification = Notification {
            kind: NotificationKind::Digest,
            work_order_id: String::new(),
            severity: Severity::P1,
            title: String::new(),
            division_path: String::new(),
            team: "兴宁区网络组".into(),
            on_duty: vec![],
            sla_due: None,
            console_url: Some("https://ops.example.gov.cn/wo".into()),
            detail: None,
            digest: Some(Digest {
                total: 7,
                by_severity: SeverityCounts {
                    p1: 1,
                    p2: 0,
                    p3: 6,
                    info: 0,
                },
                items: vec![
                    DigestItem {
                        kind: NotificationKind::Escalated,
                        severity: Severity::P1,
                        work_order_id: "WO-9".into(),
                        title: "核心交换机宕机".into(),
                    },
                    DigestItem {
                        kind: NotificationKind::Dispatched,
                        severity: Severity::P3,
                        work_order_id: "WO-3".into(),
                        title: "磁盘使用率 91%".into(),
                    },
                ],
                more: 5,
            }),
        };
        assert_eq!(
            plain(&notification),
            "【汇总】限流期间 7 条通知合并发送\n\
             班组：兴宁区网络组\n\
             P1 1 条，P3 6 条\n\
             1. 【P1 督办】核心交换机宕机（WO-9）\n\
             2. 【P3 派单】磁盘使用率 91%（WO-3）\n\
             还有 5 条，请到控制台查看\n\
             详情：https://ops.example.gov.cn/wo"
        );
    }
}
