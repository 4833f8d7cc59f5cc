//! The vocabulary shared by the operations modules.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = u64;

/// One minute, hour and day in [`Millis`].
pub const MINUTE: Millis = 60_000;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;

/// China Standard Time's offset from UTC (no daylight saving).
pub const CST_OFFSET: Millis = 8 * HOUR;

/// A division code of the five-level tree (`450000000000` region … `450103001005` village).
pub type DivisionCode = String;

/// Work-order priority. P1 = critical, P2 = high/major, P3 = warning/minor; `Info` opens no
/// work order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    P1,
    P2,
    P3,
    Info,
}

impl Severity {
    /// Maps the severity words of agents and external alerts (Alertmanager's `severity`
    /// label, our findings) to a priority; unknown words are P3.
    pub fn from_label(label: &str) -> Severity {
        match label.trim().to_ascii_lowercase().as_str() {
            "critical" | "disaster" | "emergency" | "fatal" | "p1" => Severity::P1,
            "high" | "major" | "error" | "p2" => Severity::P2,
            "info" | "informational" | "information" | "none" | "ok" => Severity::Info,
            _ => Severity::P3,
        }
    }

    /// Whether an incident of this severity becomes a work order.
    pub fn dispatches(self) -> bool {
        self != Severity::Info
    }
}

/// What kind of team handles an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Host,
    Network,
    Security,
    Application,
}

impl Category {
    /// Maps a `category` label; unknown or missing is `Host`.
    pub fn from_label(label: &str) -> Category {
        match label.trim().to_ascii_lowercase().as_str() {
            "network" | "net" | "link" => Category::Network,
            "security" | "sec" => Category::Security,
            "application" | "app" | "service" => Category::Application,
            _ => Category::Host,
        }
    }
}

/// States of a work order (DESIGN §6). Escalation is an attribute, not a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkOrderState {
    Detected,
    Dispatched,
    Acked,
    InProgress,
    Resolved,
    Verified,
    Closed,
    Suppressed,
    Returned,
    Reopened,
    AutoResolved,
}

/// The two SLA clocks of a work order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadlineKind {
    /// Acknowledge by.
    Ack,
    /// Resolve by.
    Handle,
}

/// Computes SLA deadlines: `calendar` implements it from the SLA policy and the working
/// calendar; the work-order machine only asks.
pub trait SlaClock {
    /// When a clock of `kind` started at `from` for a work order of `severity` runs out.
    fn due(&self, severity: Severity, kind: DeadlineKind, from: Millis) -> Millis;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_words_map_to_priorities() {
        assert_eq!(Severity::from_label("Critical"), Severity::P1);
        assert_eq!(Severity::from_label("major"), Severity::P2);
        assert_eq!(Severity::from_label("warning"), Severity::P3);
        assert_eq!(Severity::from_label("whatever"), Severity::P3);
        assert_eq!(Severity::from_label("info"), Severity::Info);
        assert!(!Severity::Info.dispatches());
        assert!(Severity::P3.dispatches());
    }

    #[test]
    fn states_serialize_as_upper_case_names() {
        let json = serde_json::to_string(&WorkOrderState::AutoResolved).unwrap();
        assert_eq!(json, "\"AUTO_RESOLVED\"");
        assert_eq!(
            serde_json::to_string(&Category::Network).unwrap(),
            "\"network\""
        );
    }
}
