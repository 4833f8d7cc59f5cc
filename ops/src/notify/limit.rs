//! Per-channel rate limits that digest instead of dropping.
//!
//! The rule: a channel sends at most `max_per_window` messages in any sliding `window`
//! (default 20 a minute, the robots' limit). A notification offered while the window is full
//! is held; so is every notification offered while others are held, so that order is kept and
//! nothing overtakes the pile. When the window has room again, [`ChannelLimiter::drain`] sends
//! what was held as **one** message: the notification itself if only one was held, otherwise a
//! [`Digest`] with the counts by severity, the first `digest_titles` items (most severe first,
//! in arrival order within a severity) and how many more there were. A digest costs one slot,
//! so a storm of any size costs a channel one message per window beyond the limit, and the
//! people on duty still get every count and the link to the console.
//!
//! Why sliding and not fixed windows: the robots count the last sixty seconds, so twenty
//! messages at 12:00:59 and twenty more at 12:01:00 would be forty within a second of each
//! other for them, and DingTalk then mutes the robot for ten minutes.
//!
//! Everything is a pure state machine over injected time: [`Limiter::next_drain_at`] tells the
//! caller when to call [`Limiter::drain`] next, in the manner of quinn-proto's `poll_timeout`.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Digest, DigestItem, Notification, NotificationKind, OnDutyPerson, SeverityCounts};
use crate::model::{MINUTE, Millis};

/// How many people a digest @-mentions at most (the union of everyone on duty for the held
/// notifications, in order of first appearance).
pub const DIGEST_MAX_MENTIONS: usize = 20;

/// A channel's limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Messages allowed in any sliding window; 0 is treated as 1 (a channel that may never
    /// send would hold everything forever).
    pub max_per_window: u32,
    /// The window length.
    pub window: Millis,
    /// How many held notifications a digest lists by title.
    pub digest_titles: usize,
    /// The console page a digest links to (the work-order list).
    pub digest_link: Option<String>,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            max_per_window: 20,
            window: MINUTE,
            digest_titles: 10,
            digest_link: None,
        }
    }
}

/// What to do with an offered notification now.
// A decision is matched as soon as it is returned and never stored in bulk, so boxing the
// notification would only add an allocation per send.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send it now (it has been counted against the window).
    Send(Notification),
    /// Held; it will come out of a later [`ChannelLimiter::drain`], alone or in a digest.
    Queue,
}

/// One message to send on one channel, from [`Limiter::drain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub channel: String,
    pub notification: Notification,
}

/// The limiter of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelLimiter {
    config: LimitConfig,
    /// When each message of the current window was sent, oldest first.
    sent: VecDeque<Millis>,
    /// Held notifications in arrival order.
    held: Vec<Notification>,
}

impl ChannelLimiter {
    pub fn new(config: LimitConfig) -> ChannelLimiter {
        ChannelLimiter {
            config,
            sent: VecDeque::new(),
            held: Vec::new(),
        }
    }

    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    /// How many notifications are held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn capacity(&self) -> usize {
        usize::try_from(self.config.max_per_window.max(1)).unwrap_or(usize::MAX)
    }

    /// Forgets sends that have left the window at `now`.
    fn expire(&mut self, now: Millis) {
        while let Some(&oldest) = self.sent.front() {
            if oldest.saturating_add(self.config.window) <= now {
                self.sent.pop_front();
            } else {
                break;
            }
        }
    }

    fn has_room(&mut self, now: Millis) -> bool {
        self.expire(now);
        self.sent.len() < self.capacity()
    }

    fn record_send(&mut self, now: Millis) {
        // Time never runs backwards in the window: a clock step back is treated as "now is the
        // latest send", which keeps the queue ordered and only delays the window's end.
        let at = self.sent.back().map_or(now, |&last| last.max(now));
        self.sent.push_back(at);
    }

    /// Offers a notification at `now`: send it, or hold it.
    pub fn offer(&mut self, notification: Notification, now: Millis) -> Decision {
        if self.held.is_empty() && self.has_room(now) {
            self.record_send(now);
            Decision::Send(notification)
        } else {
            self.held.push(notification);
            Decision::Queue
        }
    }

    /// At `now`, what was held as one message if the window has room: the held notification
    /// itself if there was one, a digest if there were more, nothing if nothing was held or the
    /// window is still full.
    pub fn drain(&mut self, now: Millis) -> Option<Notification> {
        if self.held.is_empty() || !self.has_room(now) {
            return None;
        }
        self.record_send(now);
        let held = std::mem::take(&mut self.held);
        if held.len() == 1 {
            return held.into_iter().next();
        }
        Some(digest_of(held, &self.config))
    }

    /// When [`ChannelLimiter::drain`] will next have something to send: `None` when nothing is
    /// held; otherwise the moment the oldest send in the window leaves it (or `now` if the
    /// window has room already).
    pub fn next_drain_at(&self, now: Millis) -> Option<Millis> {
        if self.held.is_empty() {
            return None;
        }
        let in_window: Vec<Millis> = self
            .sent
            .iter()
            .copied()
            .filter(|&at| at.saturating_add(self.config.window) > now)
            .collect();
        if in_window.len() < self.capacity() {
            return Some(now);
        }
        // The window is full: room appears when enough of the oldest sends have expired to
        // bring the count below capacity.
        let must_expire = in_window.len() + 1 - self.capacity();
        in_window
            .get(must_expire - 1)
            .map(|&at| at.saturating_add(self.config.window))
    }
}

/// Builds the digest of `held` (at least two notifications).
fn digest_of(held: Vec<Notification>, config: &LimitConfig) -> Notification {
    let total = u32::try_from(held.len()).unwrap_or(u32::MAX);
    let mut by_severity = SeverityCounts::default();
    let mut mentions: Vec<OnDutyPerson> = Vec::new();
    for notification in &held {
        by_severity.add(notification.severity);
        for person in &notification.on_duty {
            if mentions.len() < DIGEST_MAX_MENTIONS && !mentions.contains(person) {
                mentions.push(person.clone());
            }
        }
    }
    let severity = held
        .iter()
        .map(|notification| notification.severity)
        .min()
        .unwrap_or(crate::model::Severity::P3);
    let common = |field: fn(&Notification) -> &String| {
        let first = held.first().map(field)?;
        held.iter()
            .all(|notification| field(notification) == first)
            .then(|| first.clone())
    };
    let team = common(|notification| &notification.team).unwrap_or_default();
    let division_path = common(|notification| &notification.division_path).unwrap_or_default();
    // Most severe first; the sort is stable, so arrival order holds within a severity.
    let mut ordered: Vec<&Notification> = held.iter().collect();
    ordered.sort_by_key(|notification| notification.severity);
    let items: Vec<DigestItem> = ordered
        .iter()
        .take(config.digest_titles)
        .map(|notification| DigestItem {
            kind: notification.kind,
            severity: notification.severity,
            work_order_id: notification.work_order_id.clone(),
            title: notification.title.clone(),
        })
        .collect();
    let listed = u32::try_from(items.len()).unwrap_or(u32::MAX);
    Notification {
        kind: NotificationKind::Digest,
        work_order_id: String::new(),
        severity,
        title: format!("限流期间 {total} 条通知合并发送"),
        division_path,
        team,
        on_duty: mentions,
        sla_due: None,
        console_url: config.digest_link.clone(),
        detail: None,
        digest: Some(Digest {
            total,
            by_severity,
            items,
            more: total.saturating_sub(listed),
        }),
    }
}

/// The limiters of all channels, keyed by channel name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limiter {
    default: LimitConfig,
    configured: BTreeMap<String, LimitConfig>,
    channels: BTreeMap<String, ChannelLimiter>,
}

impl Limiter {
    /// A limiter that applies `default` to every channel not configured otherwise.
    pub fn new(default: LimitConfig) -> Limiter {
        Limiter {
            default,
            configured: BTreeMap::new(),
            channels: BTreeMap::new(),
        }
    }

    /// Sets `channel`'s own limit (e-mail relays may allow more than the robots). Takes effect
    /// for sends from now on; what the channel holds stays held.
    pub fn configure(&mut self, channel: &str, config: LimitConfig) {
        if let Some(limiter) = self.channels.get_mut(channel) {
            limiter.config = config.clone();
        }
        self.configured.insert(channel.to_owned(), config);
    }

    fn channel(&mut self, channel: &str) -> &mut ChannelLimiter {
        let config = self
            .configured
            .get(channel)
            .unwrap_or(&self.default)
            .clone();
        self.channels
            .entry(channel.to_owned())
            .or_insert_with(|| ChannelLimiter::new(config))
    }

    /// Offers `notification` for `channel` at `now`.
    pub fn offer(&mut self, channel: &str, notification: Notification, now: Millis) -> Decision {
        self.channel(channel).offer(notification, now)
    }

    /// Everything that may go out at `now`: at most one message per channel.
    pub fn drain(&mut self, now: Millis) -> Vec<Outgoing> {
        self.channels
            .iter_mut()
            .filter_map(|(channel, limiter)| {
                limiter.drain(now).map(|notification| Outgoing {
                    channel: channel.clone(),
                    notification,
                })
            })
            .collect()
    }

    /// The earliest moment any channel will have something to drain.
    pub fn next_drain_at(&self, now: Millis) -> Option<Millis> {
        self.channels
            .values()
            .filter_map(|limiter| limiter.next_drain_at(now))
            .min()
    }

    /// How many notifications `channel` holds.
    pub fn held(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, ChannelLimiter::held)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::text;
    use super::*;
    use crate::model::Severity;

    const SECOND: Millis = 1000;
    const T0: Millis = NOW;

    fn numbered(index: usize, severity: Severity) -> Notification {
        let mut notification = dispatched();
        notification.work_order_id = format!("WO-{index}");
        notification.title = format!("故障 {index}");
        notification.severity = severity;
        notification
    }

    #[test]
    fn twenty_five_in_a_minute_are_twenty_sends_and_one_digest_of_five() {
        let mut limiter = ChannelLimiter::new(LimitConfig {
            digest_link: Some("https://ops.example.gov.cn/wo".into()),
            ..LimitConfig::default()
        });
        // One every two seconds: t0 … t0+48 s. The last five are P3, P1, P3, P2, P3.
        let late_severities = [
            Severity::P3,
            Severity::P1,
            Severity::P3,
            Severity::P2,
            Severity::P3,
        ];
        let mut sent = Vec::new();
        for index in 0..25 {
            let severity = if index < 20 {
                Severity::P2
            } else {
                late_severities[index - 20]
            };
            let at = T0 + 2 * SECOND * index as Millis;
            match limiter.offer(numbered(index, severity), at) {
                Decision::Send(notification) => sent.push(notification.work_order_id),
                Decision::Queue => {}
            }
        }
        assert_eq!(sent.len(), 20);
        assert_eq!(sent.first().unwrap(), "WO-0");
        assert_eq!(sent.last().unwrap(), "WO-19");
        assert_eq!(limiter.held(), 5);
        // The first send (t0) leaves the sliding window at t0+60 s, not before.
        assert_eq!(
            limiter.next_drain_at(T0 + 48 * SECOND),
            Some(T0 + 60 * SECOND)
        );
        assert_eq!(limiter.drain(T0 + 59 * SECOND), None);
        let digest = limiter
            .drain(T0 + 60 * SECOND)
            .expect("a digest once the window allows");
        assert_eq!(limiter.held(), 0);
        assert_eq!(limiter.drain(T0 + 120 * SECOND), None);
        assert_eq!(limiter.next_drain_at(T0 + 120 * SECOND), None);

        assert_eq!(digest.kind, NotificationKind::Digest);
        assert_eq!(digest.severity, Severity::P1);
        assert_eq!(digest.team, "兴宁区网络组");
        assert_eq!(
            digest.console_url.as_deref(),
            Some("https://ops.example.gov.cn/wo")
        );
        let summary = digest.digest.as_ref().unwrap();
        assert_eq!(summary.total, 5);
        assert_eq!(
            summary.by_severity,
            SeverityCounts {
                p1: 1,
                p2: 1,
                p3: 3,
                info: 0
            }
        );
        let listed: Vec<&str> = summary
            .items
            .iter()
            .map(|item| item.work_order_id.as_str())
            .collect();
        assert_eq!(listed, ["WO-21", "WO-23", "WO-20", "WO-22", "WO-24"]);
        assert_eq!(summary.more, 0);
        // Both people on duty, once each, although all five named them.
        assert_eq!(digest.on_duty.len(), 2);
        assert_eq!(
            text::plain(&digest),
            "【汇总】限流期间 5 条通知合并发送\n\
             区划：广西壮族自治区/南宁市/兴宁区\n\
             班组：兴宁区网络组\n\
             值班：张三（13800001111）、李四\n\
             P1 1 条，P2 1 条，P3 3 条\n\
             1. 【P1 派单】故障 21（WO-21）\n\
             2. 【P2 派单】故障 23（WO-23）\n\
             3. 【P3 派单】故障 20（WO-20）\n\
             4. 【P3 派单】故障 22（WO-22）\n\
             5. 【P3 派单】故障 24（WO-24）\n\
             详情：https://ops.example.gov.cn/wo"
        );
    }

    #[test]
    fn a_digest_lists_the_first_titles_and_counts_the_rest() {
        let mut limiter = ChannelLimiter::new(LimitConfig {
            max_per_window: 1,
            digest_titles: 2,
            ..LimitConfig::default()
        });
        assert!(matches!(
            limiter.offer(numbered(0, Severity::P3), T0),
            Decision::Send(_)
        ));
        for index in 1..=6 {
            assert_eq!(
                limiter.offer(numbered(index, Severity::P3), T0 + SECOND),
                Decision::Queue
            );
        }
        let digest = limiter.drain(T0 + MINUTE).unwrap();
        let summary = digest.digest.as_ref().unwrap();
        assert_eq!(
            (summary.total, summary.items.len(), summary.more),
            (6, 2, 4)
        );
        assert!(
            text::plain(&digest)
                .ends_with("2. 【P3 派单】故障 2（WO-2）\n还有 4 条，请到控制台查看")
        );
    }

    #[test]
    fn held_notifications_keep_their_place_and_one_alone_goes_out_as_itself() {
        let mut limiter = ChannelLimiter::new(LimitConfig {
            max_per_window: 2,
            ..LimitConfig::default()
        });
        assert!(matches!(
            limiter.offer(numbered(0, Severity::P2), T0),
            Decision::Send(_)
        ));
        assert!(matches!(
            limiter.offer(numbered(1, Severity::P2), T0),
            Decision::Send(_)
        ));
        assert_eq!(
            limiter.offer(numbered(2, Severity::P1), T0 + SECOND),
            Decision::Queue
        );
        // The window has room again, but something is held: a newcomer must not overtake it.
        assert_eq!(limiter.next_drain_at(T0 + MINUTE), Some(T0 + MINUTE));
        assert_eq!(
            limiter.offer(numbered(3, Severity::P3), T0 + MINUTE),
            Decision::Queue
        );
        let digest = limiter.drain(T0 + MINUTE).unwrap();
        assert_eq!(digest.digest.unwrap().total, 2);
        // One slot left in this window: a lone held notification goes out unchanged.
        assert!(matches!(
            limiter.offer(numbered(4, Severity::P3), T0 + MINUTE),
            Decision::Send(_)
        ));
        assert_eq!(
            limiter.offer(numbered(5, Severity::P3), T0 + MINUTE),
            Decision::Queue
        );
        assert_eq!(limiter.next_drain_at(T0 + MINUTE), Some(T0 + 2 * MINUTE));
        assert_eq!(
            limiter.drain(T0 + 2 * MINUTE),
            Some(numbered(5, Severity::P3))
        );
    }

    #[test]
    fn a_zero_limit_still_sends_one_per_window() {
        let mut limiter = ChannelLimiter::new(LimitConfig {
            max_per_window: 0,
            ..LimitConfig::default()
        });
        assert!(matches!(
            limiter.offer(numbered(0, Severity::P1), T0),
            Decision::Send(_)
        ));
        assert_eq!(
            limiter.offer(numbered(1, Severity::P1), T0),
            Decision::Queue
        );
        assert_eq!(limiter.drain(T0 + MINUTE), Some(numbered(1, Severity::P1)));
    }

    #[test]
    fn a_clock_step_back_does_not_reopen_the_window() {
        let mut limiter = ChannelLimiter::new(LimitConfig {
            max_per_window: 1,
            ..LimitConfig::default()
        });
        assert!(matches!(
            limiter.offer(numbered(0, Severity::P1), T0),
            Decision::Send(_)
        ));
        assert_eq!(
            limiter.offer(numbered(1, Severity::P1), T0 - MINUTE),
            Decision::Queue
        );
        assert_eq!(limiter.drain(T0 - MINUTE), None);
        assert_eq!(limiter.drain(T0 + MINUTE), Some(numbered(1, Severity::P1)));
    }

    #[test]
    fn channels_are_limited_separately_and_drain_one_message_each() {
        let mut limiter = Limiter::new(LimitConfig {
            max_per_window: 1,
            ..LimitConfig::default()
        });
        limiter.configure(
            "mail",
            LimitConfig {
                max_per_window: 3,
                ..LimitConfig::default()
            },
        );
        for index in 0..3 {
            let wecom = limiter.offer("wecom-xn", numbered(index, Severity::P2), T0);
            assert_eq!(matches!(wecom, Decision::Send(_)), index == 0);
            let mail = limiter.offer("mail", numbered(index, Severity::P2), T0);
            assert!(matches!(mail, Decision::Send(_)));
        }
        assert_eq!(
            limiter.offer("mail", numbered(3, Severity::P2), T0),
            Decision::Queue
        );
        assert_eq!(limiter.held("wecom-xn"), 2);
        assert_eq!(limiter.held("mail"), 1);
        assert_eq!(limiter.next_drain_at(T0), Some(T0 + MINUTE));
        assert!(limiter.drain(T0 + MINUTE - 1).is_empty());
        let out = limiter.drain(T0 + MINUTE);
        let channels: Vec<&str> = out.iter().map(|o| o.channel.as_str()).collect();
        assert_eq!(channels, ["mail", "wecom-xn"]);
        assert_eq!(out[0].notification, numbered(3, Severity::P2));
        assert_eq!(out[1].notification.kind, NotificationKind::Digest);
        assert_eq!(limiter.next_drain_at(T0 + MINUTE), None);
    }

    #[test]
    fn limiter_state_survives_serialisation() {
        let mut limiter = Limiter::new(LimitConfig {
            max_per_window: 1,
            ..LimitConfig::default()
        });
        limiter.offer("wecom", numbered(0, Severity::P1), T0);
        limiter.offer("wecom", numbered(1, Severity::P1), T0);
        let json = serde_json::to_string(&limiter).unwrap();
        let mut restored: Limiter = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, limiter);
        assert_eq!(restored.drain(T0 + MINUTE - 1), vec![]);
        assert_eq!(restored.drain(T0 + MINUTE).len(), 1);
    }
}
