//! The incident rules as an operator configures them (file or API): hold windows, flap
//! damping, the start-up grace period, terminal off-hours, mass-outage thresholds and the
//! severities of the control plane's own detections. Every field has a default, so an empty
//! table is a complete configuration.

use serde::{Deserialize, Serialize};

use crate::model::{CST_OFFSET, DAY, MINUTE, Millis, Severity};

/// The configurable rules of the incident engine. Durations are whole seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentRules {
    /// How long a finding (agent finding or external alert) is held before it is dispatched.
    pub hold_finding_secs: u64,
    /// How long an agent-lost or link incident is held before it is dispatched: long enough
    /// for the lost events of a gateway and of everything behind it to have all arrived.
    pub hold_agent_secs: u64,
    /// After the control plane starts, an agent that has not reconnected since raises no
    /// agent-lost incident for this long.
    pub grace_secs: u64,
    /// Flap damping: a re-fire counts if it comes within this long of the previous resolve of
    /// the same fingerprint, and re-fires are counted over this trailing window.
    pub flap_window_secs: u64,
    /// Flap damping: more re-fires than this inside the window make the incident flapping.
    pub flap_max_refires: u32,
    /// Flap damping: a flapping incident resolves only once its source has stayed clear this
    /// long.
    pub flap_quiet_secs: u64,
    /// A new incident of a fingerprint whose previous incident resolved within this long
    /// carries `recurrence_of`, the work-order machine's signal to reopen.
    pub reopen_window_secs: u64,
    /// A mass outage is raised when strictly more than this share (percent) of a division's
    /// agents are down together …
    pub mass_outage_percent: u8,
    /// … and at least this many of them.
    pub mass_outage_min_agents: usize,
    /// A raised mass outage resolves once the share of its division's agents still down is at
    /// or below this (percent); the gap to `mass_outage_percent` is the hysteresis.
    pub mass_outage_clear_percent: u8,
    /// When `terminal` agents may be switched off (CST); `None`: never.
    pub terminal_off_hours: Option<OffHours>,
    /// Severity of an agent-lost incident of a server or terminal.
    pub agent_lost_severity: Severity,
    /// Severity of an agent-lost incident of a gateway (it carries its division's uplink).
    pub gateway_lost_severity: Severity,
    /// Severity of a degraded link.
    pub link_degraded_severity: Severity,
    /// Severity of a mass outage.
    pub mass_outage_severity: Severity,
}

impl Default for IncidentRules {
    fn default() -> Self {
        IncidentRules {
            hold_finding_secs: 2,
            hold_agent_secs: 10,
            grace_secs: 120,
            flap_window_secs: 30 * 60,
            flap_max_refires: 3,
            flap_quiet_secs: 15 * 60,
            reopen_window_secs: 24 * 60 * 60,
            mass_outage_percent: 50,
            mass_outage_min_agents: 5,
            mass_outage_clear_percent: 25,
            terminal_off_hours: Some(OffHours::default()),
            agent_lost_severity: Severity::P2,
            gateway_lost_severity: Severity::P1,
            link_degraded_severity: Severity::P3,
            mass_outage_severity: Severity::P1,
        }
    }
}

/// The daily window (CST, `"HH:MM"`) in which terminals may be off; a window whose start is
/// after its end wraps midnight. With `weekends`, all of Saturday and Sunday is off-hours too.
/// Public holidays and make-up workdays (调休) are the calendar module's business and are not
/// consulted here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OffHours {
    /// `false`: terminals are never off (what a file can say where TOML has no "none").
    pub enabled: bool,
    pub start: String,
    pub end: String,
    pub weekends: bool,
}

impl Default for OffHours {
    fn default() -> Self {
        OffHours {
            enabled: true,
            start: "19:00".into(),
            end: "08:00".into(),
            weekends: true,
        }
    }
}

/// Why a set of rules was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("mass_outage_percent must be at most 100, got {0}")]
    PercentOutOfRange(u8),
    #[error("mass_outage_clear_percent ({clear}) must not exceed mass_outage_percent ({raise})")]
    ClearAboveRaise { clear: u8, raise: u8 },
    #[error("mass_outage_min_agents must be at least 1")]
    ZeroMinAgents,
    #[error("off-hours time {0:?} is not HH:MM (00:00 to 23:59)")]
    BadTime(String),
    #[error("off-hours window starts and ends at the same time ({0})")]
    EmptyWindow(String),
}

impl IncidentRules {
    /// Checks the rules; the engine accepts only rules that pass.
    pub fn validate(&self) -> Result<(), RulesError> {
        if self.mass_outage_percent > 100 {
            return Err(RulesError::PercentOutOfRange(self.mass_outage_percent));
        }
        if self.mass_outage_clear_percent > self.mass_outage_percent {
            return Err(RulesError::ClearAboveRaise {
                clear: self.mass_outage_clear_percent,
                raise: self.mass_outage_percent,
            });
        }
        if self.mass_outage_min_agents == 0 {
            return Err(RulesError::ZeroMinAgents);
        }
        if let Some(window) = &self.terminal_off_hours {
            let start = parse_minute_of_day(&window.start)
                .ok_or_else(|| RulesError::BadTime(window.start.clone()))?;
            let end = parse_minute_of_day(&window.end)
                .ok_or_else(|| RulesError::BadTime(window.end.clone()))?;
            if start == end {
                return Err(RulesError::EmptyWindow(window.start.clone()));
            }
        }
        Ok(())
    }

    pub(crate) fn hold_finding(&self) -> Millis {
        self.hold_finding_secs.saturating_mul(1000)
    }

    pub(crate) fn hold_agent(&self) -> Millis {
        self.hold_agent_secs.saturating_mul(1000)
    }

    pub(crate) fn grace(&self) -> Millis {
        self.grace_secs.saturating_mul(1000)
    }

    pub(crate) fn flap_window(&self) -> Millis {
        self.flap_window_secs.saturating_mul(1000)
    }

    pub(crate) fn flap_quiet(&self) -> Millis {
        self.flap_quiet_secs.saturating_mul(1000)
    }

    pub(crate) fn reopen_window(&self) -> Millis {
        self.reopen_window_secs.saturating_mul(1000)
    }

    /// Whether `at` falls inside the terminals' off-hours.
    pub fn is_terminal_off_hours(&self, at: Millis) -> bool {
        let Some(window) = self.terminal_off_hours.as_ref().filter(|w| w.enabled) else {
            return false;
        };
        let local = at.saturating_add(CST_OFFSET);
        // 1970-01-01 was a Thursday: with Monday = 0 the weekday is (days + 3) mod 7.
        let weekday = (local / DAY + 3) % 7;
        if window.weekends && weekday >= 5 {
            return true;
        }
        let (Some(start), Some(end)) = (
            parse_minute_of_day(&window.start),
            parse_minute_of_day(&window.end),
        ) else {
            return false;
        };
        let minute = (local % DAY) / MINUTE;
        if start < end {
            start <= minute && minute < end
        } else {
            minute >= start || minute < end
        }
    }
}

/// `"HH:MM"` → minutes since midnight.
fn parse_minute_of_day(text: &str) -> Option<u64> {
    let (hours, minutes) = text.trim().split_once(':')?;
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if hours.is_empty()
        || hours.len() > 2
        || minutes.len() != 2
        || !digits(hours)
        || !digits(minutes)
    {
        return None;
    }
    let hours: u64 = hours.parse().ok()?;
    let minutes: u64 = minutes.parse().ok()?;
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}
