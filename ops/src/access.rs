//! Who may do what, where, and how they prove who they are: the access rules of the console and
//! the API, without IO, so the control plane only stores what these functions return and asks
//! them before it acts.
//!
//! - [`roles`]: roles and permissions as one explicit table, with the MLPS 2.0 (等保 2.0)
//!   separation of powers (三员分立) between the system, security and audit administrators.
//!   [`authorize`] is the one question per request: may these roles, scoped here, do this to
//!   that division?
//! - [`scope`]: every user sees one subtree of the division tree; [`in_scope`] walks up the
//!   control plane's tree.
//! - [`password`]: Argon2id hashes in PHC strings and the password policy.
//! - [`lockout`]: the per-user failed-login counter that locks an account for a while.
//! - [`totp`]: RFC 6238 one-time passwords (the second factor), RFC 4648 base32 secrets.
//! - [`tokens`]: API tokens, kept as SHA-256 digests and compared in constant time.
//! - [`roster`]: the duty roster (值班表): who is on duty now, to be @-mentioned.
//!
//! Randomness is injected like time: functions that need it take a [`RandomSource`], which
//! `ring::rand::SystemRandom` implements for the control plane and a fixed sequence
//! implements in tests. Secrets travel in [`Secret`], whose `Debug` prints `***`, so a secret
//! cannot reach a log line through `{:?}` of the struct that carries it.

pub mod lockout;
pub mod password;
pub mod roles;
pub mod roster;
pub mod scope;
pub mod tokens;
pub mod totp;

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use lockout::{Locked, LockoutPolicy, LoginGuard};
pub use password::{
    PasswordError, PasswordHashing, PasswordPolicy, PasswordPolicyError, check_password_policy,
    hash_password, hash_password_with, needs_rehash, verify_password,
};
pub use roles::{Permission, Role, RoleSetError, UnknownName, check_role_set};
pub use roster::{
    Member, Roster, RosterError, Shift, ShiftDays, TimeOfDay, on_duty, on_duty_persons,
};
pub use scope::{DivisionCodeError, DivisionParents, PrefixParents, canonical_division, in_scope};
pub use tokens::{
    API_TOKEN_PREFIX, StoredToken, StoredTokenError, looks_like_token, new_api_token, token_matches,
};
pub use totp::{
    Base32Error, TotpError, TotpGuard, TotpParams, TotpSecret, base32_decode, base32_encode,
    otpauth_uri, totp_code,
};

/// Why a request was refused by [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccessDenied {
    #[error("none of the user's roles grants {0}")]
    Permission(Permission),
    #[error("division {division} is outside the user's scope {scope}")]
    OutOfScope { scope: String, division: String },
}

/// Whether a user with `roles` and `scope` may do `permission` to something of `division`
/// (for actions on the whole system, such as reading the audit log, the control plane passes
/// the tree's root). The permission is checked first, so a refusal for lack of a role does not
/// tell whether the division exists.
pub fn authorize(
    roles: &[Role],
    scope: &str,
    permission: Permission,
    division: &str,
    tree: &impl DivisionParents,
) -> Result<(), AccessDenied> {
    if !roles.iter().any(|role| role.allows(permission)) {
        return Err(AccessDenied::Permission(permission));
    }
    if !in_scope(scope, division, tree) {
        return Err(AccessDenied::OutOfScope {
            scope: scope.to_owned(),
            division: division.to_owned(),
        });
    }
    Ok(())
}

/// A source of cryptographically secure random bytes.
///
/// The control plane passes `ring::rand::SystemRandom`; tests pass a fixed sequence, so salts,
/// TOTP secrets and API tokens are reproducible there.
pub trait RandomSource {
    /// Fills `destination` entirely with random bytes.
    fn fill(&mut self, destination: &mut [u8]) -> Result<(), RandomError>;
}

impl RandomSource for ring::rand::SystemRandom {
    fn fill(&mut self, destination: &mut [u8]) -> Result<(), RandomError> {
        ring::rand::SecureRandom::fill(self, destination).map_err(|_| RandomError)
    }
}

/// The random source failed (the operating system's generator is unavailable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the random number generator failed")]
pub struct RandomError;

/// A secret (password, TOTP secret, API token): `Debug` prints `***` and there is no
/// `Display`, so only [`Secret::expose`] — greppable — hands out the value.
///
/// It serialises as the plain value, for the one place that must (the response that shows a
/// new API token once); a struct holding it must not be logged as JSON.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

/// Whether `a == b`, in time that depends on the lengths only (lengths are public here: codes
/// of a fixed number of digits, digests of a fixed size). ring's `constant_time` is deprecated
/// with no promise about side channels, so this is the plain XOR-OR fold, with the accumulator
/// passed through `black_box` so the optimiser has no reason to stop at the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    difference == 0
}

/// A deterministic [`RandomSource`] for the tests of the submodules: bytes `seed, seed+1, …`
/// (wrapping), or a failure on every call.
#[cfg(test)]
pub(crate) struct CountingRandom {
    pub(crate) next: u8,
    pub(crate) fail: bool,
}

#[cfg(test)]
impl CountingRandom {
    pub(crate) fn new(seed: u8) -> CountingRandom {
        CountingRandom {
            next: seed,
            fail: false,
        }
    }
}

#[cfg(test)]
impl RandomSource for CountingRandom {
    fn fill(&mut self, destination: &mut [u8]) -> Result<(), RandomError> {
        if self.fail {
            return Err(RandomError);
        }
        for byte in destination {
            *byte = self.next;
            self.next = self.next.wrapping_add(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_debug_print() {
        let secret = Secret::new("hunter2-correct-horse");
        assert_eq!(format!("{secret:?}"), "***");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Login {
            user: String,
            password: Secret,
        }
        let login = Login {
            user: "lihua".to_owned(),
            password: secret.clone(),
        };
        let printed = format!("{login:?} {login:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("lihua"));
        assert_eq!(secret.expose(), "hunter2-correct-horse");
    }

    #[test]
    fn authorize_asks_the_roles_then_the_scope() {
        let county_operator = [Role::Operator];
        let tree = PrefixParents;
        assert_eq!(
            authorize(
                &county_operator,
                "450103",
                Permission::ActOnWorkOrders,
                "450103001005",
                &tree
            ),
            Ok(())
        );
        assert_eq!(
            authorize(
                &county_operator,
                "450103",
                Permission::ActOnWorkOrders,
                "450105001",
                &tree
            ),
            Err(AccessDenied::OutOfScope {
                scope: "450103".to_owned(),
                division: "450105001".to_owned()
            })
        );
        assert_eq!(
            authorize(
                &county_operator,
                "450103",
                Permission::ManageUsers,
                "450103",
                &tree
            ),
            Err(AccessDenied::Permission(Permission::ManageUsers))
        );
        // Any one role suffices.
        assert_eq!(
            authorize(
                &[Role::Viewer, Role::SecurityAdmin],
                "45",
                Permission::ManageUsers,
                "4501",
                &tree
            ),
            Ok(())
        );
        assert_eq!(
            authorize(&[], "45", Permission::ViewAssets, "45", &tree),
            Err(AccessDenied::Permission(Permission::ViewAssets))
        );
        assert_eq!(
            authorize(
                &[Role::AuditAdmin],
                "450000000000",
                Permission::ReadAuditLog,
                "45",
                &tree
            ),
            Ok(())
        );
        assert_eq!(
            AccessDenied::Permission(Permission::ReadAuditLog).to_string(),
            "none of the user's roles grants read_audit_log"
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"287082", b"287082"));
        assert!(!constant_time_eq(b"287082", b"287083"));
        assert!(!constant_time_eq(b"187082", b"287082"));
        assert!(!constant_time_eq(b"28708", b"287082"));
        assert!(!constant_time_eq(b"287082", b""));
    }

    #[test]
    fn system_random_fills_and_differs() {
        let mut random = ring::rand::SystemRandom::new();
        let mut first = [0u8; 32];
        let mut second = [0u8; 32];
        RandomSource::fill(&mut random, &mut first).unwrap();
        RandomSource::fill(&mut random, &mut second).unwrap();
        assert_ne!(first, second);
    }
}
