//! Maintenance windows (维护窗口) and silences: planned time during which an agent, or every
//! agent of a division's subtree, is expected to misbehave, so that its alarms are held and
//! its outage is not charged to availability.
//!
//! A window covers the half-open span `[start, end)`: it is active from `start` and expires at
//! `end`. It targets one agent, or one division and with it every division below it and every
//! agent in those divisions. Which division an agent sits in and which division is above
//! another are the caller's to say, through [`DivisionOf`]; a cycle in the tree ends the walk
//! up instead of looping, as in [`crate::kpi`].
//!
//! Windows that overlap are counted once: [`covered`] merges the spans of every window that
//! covers the subject before measuring them. A window that fails [`MaintenanceWindow::validate`]
//! (say, one that ends before it starts) still does no harm here: it covers nothing.

use serde::{Deserialize, Serialize};

use crate::kpi::ancestry;
use crate::model::{DAY, DivisionCode, Millis};
use crate::spans::{self, Span};

/// The longest a maintenance window may last. Longer "maintenance" is a decommission or a
/// forgotten silence, and would hide a real outage for a month.
pub const MAX_WINDOW_LENGTH: Millis = 30 * DAY;

/// What a maintenance window silences.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// One agent, by id.
    Agent(String),
    /// Every agent of a division and of the divisions below it.
    Division(DivisionCode),
}

/// A maintenance window: `target` is silenced during `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub id: String,
    pub target: Target,
    pub start: Millis,
    /// When the window expires; the window does not cover this instant.
    pub end: Millis,
    pub reason: String,
    pub created_by: String,
}

/// Why a maintenance window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("the maintenance window has no id")]
    MissingId,
    #[error("maintenance window {id}: the target names no agent or division")]
    MissingTarget { id: String },
    #[error("maintenance window {id}: it ends ({end}) at or before it starts ({start})")]
    EndNotAfterStart {
        id: String,
        start: Millis,
        end: Millis,
    },
    #[error(
        "maintenance window {id}: it lasts {length_ms} ms, longer than the {max} ms (30 days) \
         a window may last",
        max = MAX_WINDOW_LENGTH
    )]
    TooLong { id: String, length_ms: Millis },
    #[error("maintenance window {id}: the reason is empty; say why the alarms are silenced")]
    MissingReason { id: String },
    #[error("maintenance window {id}: created_by is empty; say who silenced the alarms")]
    MissingCreator { id: String },
}

impl MaintenanceWindow {
    /// Checks the window before it is stored: an id, a named target, an end after the start,
    /// at most [`MAX_WINDOW_LENGTH`], a reason and a creator.
    pub fn validate(&self) -> Result<(), WindowError> {
        if self.id.trim().is_empty() {
            return Err(WindowError::MissingId);
        }
        let id = self.id.clone();
        let target_name = match &self.target {
            Target::Agent(name) | Target::Division(name) => name,
        };
        if target_name.trim().is_empty() {
            return Err(WindowError::MissingTarget { id });
        }
        if self.end <= self.start {
            return Err(WindowError::EndNotAfterStart {
                id,
                start: self.start,
                end: self.end,
            });
        }
        let length_ms = self.end - self.start;
        if length_ms > MAX_WINDOW_LENGTH {
            return Err(WindowError::TooLong { id, length_ms });
        }
        if self.reason.trim().is_empty() {
            return Err(WindowError::MissingReason { id });
        }
        if self.created_by.trim().is_empty() {
            return Err(WindowError::MissingCreator { id });
        }
        Ok(())
    }

    /// Whether the window is in force at `at` (from `start`, up to but not including `end`).
    pub fn is_active_at(&self, at: Millis) -> bool {
        self.start <= at && at < self.end
    }

    /// Whether the window silences `subject`: an agent window its agent only; a division
    /// window that division, every division below it and every agent in those.
    pub fn covers(&self, divisions: &dyn DivisionOf, subject: Subject<'_>) -> bool {
        match (&self.target, subject) {
            (Target::Agent(target), Subject::Agent(agent)) => target == agent,
            (Target::Agent(_), Subject::Division(_)) => false,
            (Target::Division(target), Subject::Division(code)) => {
                is_within(divisions, code, target)
            }
            (Target::Division(target), Subject::Agent(agent)) => divisions
                .division(agent)
                .is_some_and(|code| is_within(divisions, &code, target)),
        }
    }
}

/// `code` is `ancestor` or lies below it.
fn is_within(divisions: &dyn DivisionOf, code: &str, ancestor: &str) -> bool {
    ancestry(code, &|code: &str| divisions.parent(code))
        .iter()
        .any(|up| up == ancestor)
}

/// The division tree as the caller knows it (the control plane's division table and agent
/// inventory).
pub trait DivisionOf {
    /// The division an agent belongs to; `None` for an agent the caller does not know, which
    /// only agent windows can then cover.
    fn division(&self, agent: &str) -> Option<DivisionCode>;
    /// The division directly above `code`; `None` at the root.
    fn parent(&self, code: &str) -> Option<DivisionCode>;
}

/// What a window may cover: an agent, or a division (a service is judged by its division).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Agent(&'a str),
    Division(&'a str),
}

/// The window that silences `subject` at `at`, if any. When several do, the one that ends last
/// (the one that keeps the subject silent longest, which is what an operator wants to see),
/// and among those the smallest id, so that the answer does not depend on the slice order.
pub fn active_at<'w>(
    windows: &'w [MaintenanceWindow],
    divisions: &dyn DivisionOf,
    subject: Subject<'_>,
    at: Millis,
) -> Option<&'w MaintenanceWindow> {
    windows
        .iter()
        .filter(|window| window.is_active_at(at) && window.covers(divisions, subject))
        .min_by(|a, b| b.end.cmp(&a.end).then_with(|| a.id.cmp(&b.id)))
}

/// Removes the windows that have expired by `now` (`end <= now`) and returns them, in their
/// original order, so that the caller can delete them from the store and log who had set them.
pub fn prune_expired(windows: &mut Vec<MaintenanceWindow>, now: Millis) -> Vec<MaintenanceWindow> {
    let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(windows)
        .into_iter()
        .partition(|window| window.end <= now);
    *windows = kept;
    expired
}

/// The time of `[from, to)` during which some window covers `subject`, as sorted, disjoint
/// spans (overlapping windows merged).
pub fn coverage(
    windows: &[MaintenanceWindow],
    divisions: &dyn DivisionOf,
    subject: Subject<'_>,
    from: Millis,
    to: Millis,
) -> Vec<(Millis, Millis)> {
    let covering: Vec<Span> = windows
        .iter()
        .filter(|window| window.covers(divisions, subject))
        .map(|window| (window.start, window.end))
        .collect();
    spans::clip(covering, from, to)
}

/// How much of `[from, to)` some window covering `subject` covers; time covered by several
/// windows counts once. Zero when `to <= from`.
pub fn covered(
    windows: &[MaintenanceWindow],
    divisions: &dyn DivisionOf,
    subject: Subject<'_>,
    from: Millis,
    to: Millis,
) -> Millis {
    spans::length(&coverage(windows, divisions, subject, from, to))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{HOUR, MINUTE};

    /// Region 45 → city 4501 → counties 450102 and 450103; city 4502 beside it.
    pub(crate) struct Tree {
        pub(crate) agents: BTreeMap<&'static str, &'static str>,
        pub(crate) parents: BTreeMap<&'static str, &'static str>,
    }

    impl Tree {
        pub(crate) fn guangxi() -> Tree {
            Tree {
                agents: BTreeMap::from([
                    ("a-nanning-1", "450102"),
                    ("a-nanning-2", "450103"),
                    ("a-liuzhou-1", "4502"),
                ]),
                parents: BTreeMap::from([
                    ("450102", "4501"),
                    ("450103", "4501"),
                    ("4501", "45"),
                    ("4502", "45"),
                ]),
            }
        }
    }

    impl DivisionOf for Tree {
        fn division(&self, agent: &str) -> Option<DivisionCode> {
            self.agents.get(agent).map(|code| code.to_string())
        }

        fn parent(&self, code: &str) -> Option<DivisionCode> {
            self.parents.get(code).map(|code| code.to_string())
        }
    }

    pub(crate) fn window(
        id: &str,
        target: Target,
        start: Millis,
        end: Millis,
    ) -> MaintenanceWindow {
        MaintenanceWindow {
            id: id.into(),
            target,
            start,
            end,
            reason: "kernel upgrade".into(),
            created_by: "ops-lihua".into(),
        }
    }

    fn agent(id: &str) -> Target {
        Target::Agent(id.into())
    }

    fn division(code: &str) -> Target {
        Target::Division(code.into())
    }

    const T0: Millis = 1_795_000_000_000;

    #[test]
    fn validation_names_what_is_wrong() {
        let good = window("w-1", agent("a-1"), T0, T0 + HOUR);
        assert_eq!(good.validate(), Ok(()));
        // Exactly 30 days is allowed; one millisecond more is not.
        assert_eq!(
            window("w-1", agent("a-1"), T0, T0 + 30 * DAY).validate(),
            Ok(())
        );
        let too_long = window("w-1", agent("a-1"), T0, T0 + 30 * DAY + 1).validate();
        assert_eq!(
            too_long,
            Err(WindowError::TooLong {
                id: "w-1".into(),
                length_ms: 30 * DAY + 1
            })
        );
        assert!(too_long.unwrap_err().to_string().contains("30 days"));
        assert_eq!(
            window("w-1", agent("a-1"), T0, T0).validate(),
            Err(WindowError::EndNotAfterStart {
                id: "w-1".into(),
                start: T0,
                end: T0
            })
        );
        assert_eq!(
            window("w-1", agent("a-1"), T0, T0 - 1).validate(),
            Err(WindowError::EndNotAfterStart {
                id: "w-1".into(),
                start: T0,
                end: T0 - 1
            })
        );
        let mut no_reason = good.clone();
        no_reason.reason = "  ".into();
        assert_eq!(
            no_reason.validate(),
            Err(WindowError::MissingReason { id: "w-1".into() })
        );
        let mut no_creator = good.clone();
        no_creator.created_by = String::new();
        assert_eq!(
            no_creator.validate(),
            Err(WindowError::MissingCreator { id: "w-1".into() })
        );
        assert_eq!(
            window("", agent("a-1"), T0, T0 + 1).validate(),
            Err(WindowError::MissingId)
        );
        assert_eq!(
            window("w-1", division(""), T0, T0 + 1).validate(),
            Err(WindowError::MissingTarget { id: "w-1".into() })
        );
    }

    #[test]
    fn windows_read_from_json() {
        let json = r#"{"id":"w-7","target":{"division":"4501"},"start":1,"end":2,
                       "reason":"机房断电检修","created_by":"ops-lihua"}"#;
        let window: MaintenanceWindow = serde_json::from_str(json).unwrap();
        assert_eq!(window.target, division("4501"));
        assert_eq!(window.reason, "机房断电检修");
        let typo = r#"{"id":"w-7","target":{"agent":"a"},"start":1,"ends":2,
                       "reason":"r","created_by":"c"}"#;
        assert!(serde_json::from_str::<MaintenanceWindow>(typo).is_err());
    }

    #[test]
    fn a_division_window_covers_its_subtree_only() {
        let tree = Tree::guangxi();
        let city = window("w-city", division("4501"), T0, T0 + HOUR);
        assert!(city.covers(&tree, Subject::Agent("a-nanning-1")));
        assert!(city.covers(&tree, Subject::Agent("a-nanning-2")));
        assert!(city.covers(&tree, Subject::Division("450103")));
        assert!(city.covers(&tree, Subject::Division("4501")));
        assert!(!city.covers(&tree, Subject::Agent("a-liuzhou-1")));
        assert!(!city.covers(&tree, Subject::Division("45")));
        assert!(!city.covers(&tree, Subject::Agent("unknown-agent")));
        let region = window("w-region", division("45"), T0, T0 + HOUR);
        assert!(region.covers(&tree, Subject::Agent("a-liuzhou-1")));
        let one = window("w-one", agent("a-nanning-1"), T0, T0 + HOUR);
        assert!(one.covers(&tree, Subject::Agent("a-nanning-1")));
        assert!(!one.covers(&tree, Subject::Agent("a-nanning-2")));
        // An agent window never silences a whole division.
        assert!(!one.covers(&tree, Subject::Division("450102")));
    }

    #[test]
    fn a_cycle_in_the_tree_ends_the_walk() {
        let mut tree = Tree::guangxi();
        tree.parents.insert("45", "450102");
        let other = window("w", division("4502"), T0, T0 + HOUR);
        assert!(!other.covers(&tree, Subject::Agent("a-nanning-1")));
        let city = window("w", division("4501"), T0, T0 + HOUR);
        assert!(city.covers(&tree, Subject::Agent("a-nanning-1")));
    }

    #[test]
    fn the_active_window_is_the_one_that_lasts_longest() {
        let tree = Tree::guangxi();
        let windows = vec![
            window("w-b", agent("a-nanning-1"), T0, T0 + 2 * HOUR),
            window("w-a", division("4501"), T0 + HOUR, T0 + 3 * HOUR),
            window("w-c", division("4502"), T0, T0 + 5 * HOUR),
        ];
        let subject = Subject::Agent("a-nanning-1");
        assert_eq!(active_at(&windows, &tree, subject, T0 - 1), None);
        assert_eq!(active_at(&windows, &tree, subject, T0).unwrap().id, "w-b");
        // Both cover; w-a ends later.
        assert_eq!(
            active_at(&windows, &tree, subject, T0 + HOUR).unwrap().id,
            "w-a"
        );
        // w-a's end is not covered.
        assert_eq!(active_at(&windows, &tree, subject, T0 + 3 * HOUR), None);
        // Same end: the smaller id, whatever the order in the slice.
        let tied = vec![
            window("w-2", agent("a-nanning-1"), T0, T0 + HOUR),
            window("w-1", division("45"), T0, T0 + HOUR),
        ];
        assert_eq!(active_at(&tied, &tree, subject, T0).unwrap().id, "w-1");
    }

    #[test]
    fn expired_windows_are_pruned_and_returned() {
        let mut windows = vec![
            window("w-1", agent("a"), T0, T0 + HOUR),
            window("w-2", agent("a"), T0, T0 + 3 * HOUR),
            window("w-3", agent("a"), T0, T0 + 2 * HOUR),
        ];
        let expired = prune_expired(&mut windows, T0 + 2 * HOUR);
        let ids =
            |list: &[MaintenanceWindow]| list.iter().map(|w| w.id.clone()).collect::<Vec<_>>();
        // w-3 expires at exactly now: it no longer covers now, so it goes.
        assert_eq!(ids(&expired), ["w-1", "w-3"]);
        assert_eq!(ids(&windows), ["w-2"]);
        assert!(prune_expired(&mut windows, T0).is_empty());
    }

    #[test]
    fn overlapping_windows_count_once() {
        let tree = Tree::guangxi();
        let windows = vec![
            // [0, 20 min) on the agent and [10, 30 min) on its county: 30 min, not 40.
            window("w-1", agent("a-nanning-1"), T0, T0 + 20 * MINUTE),
            window(
                "w-2",
                division("450102"),
                T0 + 10 * MINUTE,
                T0 + 30 * MINUTE,
            ),
            // [40, 45 min) inside [35, 50 min): 15 min, not 20.
            window("w-3", division("45"), T0 + 35 * MINUTE, T0 + 50 * MINUTE),
            window(
                "w-4",
                agent("a-nanning-1"),
                T0 + 40 * MINUTE,
                T0 + 45 * MINUTE,
            ),
            // Another agent's window does not count.
            window("w-5", agent("a-nanning-2"), T0 + 50 * MINUTE, T0 + HOUR),
        ];
        let subject = Subject::Agent("a-nanning-1");
        assert_eq!(
            covered(&windows, &tree, subject, T0, T0 + HOUR),
            45 * MINUTE
        );
        assert_eq!(
            coverage(&windows, &tree, subject, T0, T0 + HOUR),
            vec![(T0, T0 + 30 * MINUTE), (T0 + 35 * MINUTE, T0 + 50 * MINUTE)]
        );
    }

    #[test]
    fn windows_partly_outside_the_period_count_only_inside() {
        let tree = Tree::guangxi();
        let windows = vec![
            // Starts 10 min before the period: 5 min inside.
            window("w-1", division("4501"), T0 - 10 * MINUTE, T0 + 5 * MINUTE),
            // Ends 10 min after the period: 10 min inside.
            window("w-2", division("4501"), T0 + 50 * MINUTE, T0 + 70 * MINUTE),
            // Entirely before: nothing.
            window("w-3", division("4501"), T0 - 2 * HOUR, T0 - HOUR),
        ];
        let county = Subject::Division("450103");
        assert_eq!(covered(&windows, &tree, county, T0, T0 + HOUR), 15 * MINUTE);
        // A window that spans the whole period covers all of it.
        let all = vec![window("w", division("45"), T0 - DAY, T0 + DAY)];
        assert_eq!(covered(&all, &tree, county, T0, T0 + HOUR), HOUR);
        // An empty or reversed period covers nothing; so does a reversed window.
        assert_eq!(covered(&all, &tree, county, T0, T0), 0);
        assert_eq!(covered(&all, &tree, county, T0 + 1, T0), 0);
        let reversed = vec![window("w", division("45"), T0 + HOUR, T0)];
        assert_eq!(covered(&reversed, &tree, county, T0, T0 + HOUR), 0);
    }
}
