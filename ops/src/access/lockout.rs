//! The failed-login lockout: after too many wrong passwords (or one-time codes) in a short
//! time the account refuses logins for a while, which turns online guessing from thousands of
//! tries an hour into twenty.
//!
//! [`LoginGuard`] is the state of one user, plain serde data that the control plane stores
//! with the user and passes in with the time; [`LockoutPolicy`] is configuration. The rules,
//! with the defaults:
//!
//! - A failure counts for [`LockoutPolicy::window_ms`] (15 min) after it happened: a failure at
//!   `t` counts at any `now < t + window`.
//! - The [`LockoutPolicy::max_failures`]-th (5th) counting failure locks the account for
//!   [`LockoutPolicy::lock_ms`] (15 min): [`LoginGuard::check`] refuses at any `now < until` and
//!   lets through from `until` on, with the count started afresh.
//! - Failures while locked do not extend the lock, so somebody else's guessing cannot keep a
//!   user out for longer than one lock at a time. The control plane calls `check` first and
//!   does not even verify the password of a locked account.
//! - A success forgets the failures. It does not lift a lock in force (a success recorded
//!   during a lock means `check` was skipped, and must not become a way in).
//!
//! The guard is per account; limiting by client address is the control plane's business.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::calendar::Date;
use crate::model::{CST_OFFSET, DAY, HOUR, MINUTE, Millis};

/// When to lock and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Failures within the window that lock the account; 0 is read as 1.
    pub max_failures: u32,
    /// How long a failure counts, in ms.
    pub window_ms: Millis,
    /// How long the account stays locked, in ms.
    pub lock_ms: Millis,
}

impl LockoutPolicy {
    pub const DEFAULT: LockoutPolicy = LockoutPolicy {
        max_failures: 5,
        window_ms: 15 * MINUTE,
        lock_ms: 15 * MINUTE,
    };

    fn threshold(&self) -> usize {
        usize::try_from(self.max_failures.max(1)).unwrap_or(usize::MAX)
    }
}

impl Default for LockoutPolicy {
    fn default() -> LockoutPolicy {
        LockoutPolicy::DEFAULT
    }
}

/// The account is locked until `until` (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the account is locked after repeated failed logins until {} CST", cst_text(*until))]
pub struct Locked {
    pub until: Millis,
}

/// `2026-11-26 08:15:00` for an instant, in CST.
fn cst_text(at: Millis) -> String {
    let date = Date::from_millis(at);
    let of_day = at.saturating_add(CST_OFFSET) % DAY;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        date.year(),
        date.month(),
        date.day(),
        of_day / HOUR,
        of_day % HOUR / MINUTE,
        of_day % MINUTE / 1000
    )
}

/// The failed-login state of one account (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginGuard {
    /// Instants of the failures that may still count, oldest first.
    #[serde(default)]
    failures: Vec<Millis>,
    /// End of the current or last lock.
    #[serde(default)]
    locked_until: Option<Millis>,
}

impl LoginGuard {
    pub fn new() -> LoginGuard {
        LoginGuard::default()
    }

    /// Whether a login may be tried at `now`.
    pub fn check(&self, now: Millis) -> Result<(), Locked> {
        match self.locked_until {
            Some(until) if now < until => Err(Locked { until }),
            _ => Ok(()),
        }
    }

    /// Records a failed login at `now`; returns the lock if the account is locked after it
    /// (by this failure or by one before).
    pub fn record_failure(&mut self, policy: &LockoutPolicy, now: Millis) -> Option<Locked> {
        if let Err(locked) = self.check(now) {
            return Some(locked);
        }
        self.forget_before(policy, now);
        self.failures.push(now);
        if self.failures.len() >= policy.threshold() {
            let until = now.saturating_add(policy.lock_ms);
            self.failures.clear();
            self.locked_until = Some(until);
            return Some(Locked { until });
        }
        None
    }

    /// Records a successful login at `now`: the failures are forgotten.
    pub fn record_success(&mut self, now: Millis) {
        self.failures.clear();
        if self.check(now).is_ok() {
            self.locked_until = None;
        }
    }

    /// Failures that count at `now`.
    pub fn recent_failures(&self, policy: &LockoutPolicy, now: Millis) -> usize {
        self.failures
            .iter()
            .filter(|&&at| counts(policy, at, now))
            .count()
    }

    fn forget_before(&mut self, policy: &LockoutPolicy, now: Millis) {
        self.failures.retain(|&at| counts(policy, at, now));
        // A stored state may hold more than the policy needs (the policy was lowered).
        let keep = policy.threshold().saturating_sub(1);
        if self.failures.len() > keep {
            self.failures.drain(..self.failures.len() - keep);
        }
        if self.check(now).is_ok() {
            self.locked_until = None;
        }
    }
}

/// Whether a failure at `at` still counts at `now` (one from the future, after the clock
/// stepped back, does).
fn counts(policy: &LockoutPolicy, at: Millis, now: Millis) -> bool {
    now < at.saturating_add(policy.window_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26 09:00:00 CST.
    const T0: Millis = 1_795_654_800_000;

    fn fail_times(guard: &mut LoginGuard, times: &[Millis]) -> Vec<Option<Locked>> {
        let policy = LockoutPolicy::DEFAULT;
        times
            .iter()
            .map(|&at| guard.record_failure(&policy, at))
            .collect()
    }

    #[test]
    fn five_failures_within_the_window_lock_for_fifteen_minutes() {
        let mut guard = LoginGuard::new();
        let last = T0 + 15 * MINUTE - 1;
        let results = fail_times(
            &mut guard,
            &[T0, T0 + 1, T0 + MINUTE, T0 + 10 * MINUTE, last],
        );
        assert_eq!(results[..4], [None, None, None, None]);
        let until = last + 15 * MINUTE;
        assert_eq!(results[4], Some(Locked { until }));
        assert_eq!(guard.check(last), Err(Locked { until }));
        assert_eq!(guard.check(until - 1), Err(Locked { until }));
        assert_eq!(guard.check(until), Ok(()));
        assert_eq!(
            Locked { until: T0 }.to_string(),
            "the account is locked after repeated failed logins until 2026-11-26 09:00:00 CST"
        );
    }

    #[test]
    fn a_failure_stops_counting_exactly_when_the_window_ends() {
        let mut guard = LoginGuard::new();
        let policy = LockoutPolicy::DEFAULT;
        // The fifth failure comes exactly 15 minutes after the first: the first no longer
        // counts, so there are four.
        let results = fail_times(
            &mut guard,
            &[
                T0,
                T0 + MINUTE,
                T0 + 2 * MINUTE,
                T0 + 3 * MINUTE,
                T0 + 15 * MINUTE,
            ],
        );
        assert!(results.iter().all(Option::is_none), "{results:?}");
        assert_eq!(guard.recent_failures(&policy, T0 + 15 * MINUTE), 4);
        assert_eq!(guard.check(T0 + 15 * MINUTE), Ok(()));
        // One more a millisecond later, while the second still counts: locked.
        let at = T0 + 15 * MINUTE + 1;
        assert_eq!(
            guard.record_failure(&policy, at),
            Some(Locked {
                until: at + 15 * MINUTE
            })
        );
    }

    #[test]
    fn success_forgets_the_failures() {
        let mut guard = LoginGuard::new();
        let policy = LockoutPolicy::DEFAULT;
        fail_times(&mut guard, &[T0, T0 + 1, T0 + 2, T0 + 3]);
        assert_eq!(guard.recent_failures(&policy, T0 + 4), 4);
        guard.record_success(T0 + 4);
        assert_eq!(guard.recent_failures(&policy, T0 + 4), 0);
        let results = fail_times(&mut guard, &[T0 + 5, T0 + 6, T0 + 7, T0 + 8]);
        assert!(results.iter().all(Option::is_none));
        assert!(guard.record_failure(&policy, T0 + 9).is_some());
    }

    #[test]
    fn failures_while_locked_do_not_extend_the_lock_and_success_does_not_lift_it() {
        let mut guard = LoginGuard::new();
        let policy = LockoutPolicy::DEFAULT;
        fail_times(&mut guard, &[T0, T0, T0, T0, T0]);
        let until = T0 + 15 * MINUTE;
        assert_eq!(
            guard.record_failure(&policy, until - 1),
            Some(Locked { until })
        );
        guard.record_success(until - 1);
        assert_eq!(guard.check(until - 1), Err(Locked { until }));
        // After the lock the count starts from zero: four failures do not lock again.
        let results = fail_times(&mut guard, &[until, until + 1, until + 2, until + 3]);
        assert!(results.iter().all(Option::is_none), "{results:?}");
        assert_eq!(guard.check(until + 3), Ok(()));
        assert!(guard.record_failure(&policy, until + 4).is_some());
    }

    #[test]
    fn the_policy_is_configurable() {
        let policy = LockoutPolicy {
            max_failures: 3,
            window_ms: MINUTE,
            lock_ms: HOUR,
        };
        let mut guard = LoginGuard::new();
        assert_eq!(guard.record_failure(&policy, T0), None);
        assert_eq!(guard.record_failure(&policy, T0 + MINUTE - 1), None);
        assert_eq!(
            guard.record_failure(&policy, T0 + MINUTE - 1),
            Some(Locked {
                until: T0 + MINUTE - 1 + HOUR
            })
        );
        let every_failure = LockoutPolicy {
            max_failures: 0,
            ..policy
        };
        assert!(
            LoginGuard::new()
                .record_failure(&every_failure, T0)
                .is_some()
        );
        let toml: LockoutPolicy =
            toml::from_str("max_failures = 10\nwindow_ms = 600000\nlock_ms = 1800000").unwrap();
        assert_eq!(toml.max_failures, 10);
        assert_eq!(toml.lock_ms, 30 * MINUTE);
    }

    #[test]
    fn the_state_round_trips_through_serde() {
        let mut guard = LoginGuard::new();
        fail_times(&mut guard, &[T0, T0 + 1]);
        let json = serde_json::to_string(&guard).unwrap();
        assert_eq!(
            json,
            format!("{{\"failures\":[{T0},{}],\"locked_until\":null}}", T0 + 1)
        );
        let mut restored: LoginGuard = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, guard);
        fail_times(&mut restored, &[T0 + 2, T0 + 3]);
        assert!(
            restored
                .record_failure(&LockoutPolicy::DEFAULT, T0 + 4)
                .is_some()
        );
        let empty: LoginGuard = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, LoginGuard::new());
        // A stored state longer than the policy (the policy was lowered) locks at once.
        let mut long: LoginGuard =
            serde_json::from_str(&format!("{{\"failures\":[{T0},{T0},{T0},{T0},{T0},{T0}]}}"))
                .unwrap();
        let lowered = LockoutPolicy {
            max_failures: 2,
            ..LockoutPolicy::DEFAULT
        };
        assert!(long.record_failure(&lowered, T0 + 1).is_some());
    }
}
