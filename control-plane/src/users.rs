//! Users, roles and sessions of the API (and the console): who is calling, what they may do
//! and where. The rules are `bagui_ops::access`; this module stores users and tokens and
//! carries out logins.
//!
//! - A user has roles (operator, security analyst, viewer, or one of the three MLPS
//!   administrators: system, security, audit — 三员分立, never combined) and a scope: one
//!   division subtree. Every query and action is limited to it.
//! - Login: password (Argon2id) with lockout after repeated failures, plus a TOTP code
//!   (RFC 6238) for every administrator role, who cannot log in before enrolling TOTP.
//!   A login returns an API token valid for [`SESSION_TTL_MS`]; `user token` issues
//!   longer-lived ones for scripts. Tokens are kept as SHA-256 digests.
//! - The deployment's admin token (`DATA_DIR/admin.token`) stays the root credential of the
//!   CLI on the control plane's own host: every permission, the whole tree.
//!
//! Keys in the store's ops tree: `user/<name>` → [`UserRecord`], `utok/<sha256 digest>` →
//! [`UserToken`].

use bagui_ops::access::{
    self, LockoutPolicy, LoginGuard, PasswordPolicy, Permission, Role, Secret, StoredToken,
    TotpGuard, TotpParams, TotpSecret,
};
use serde::{Deserialize, Serialize};

use crate::admin::{Admin, AdminError};
use crate::store::OpsBatch;

/// How long a login's token lives.
pub const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;

const USER_PREFIX: &[u8] = b"user/";
const TOKEN_PREFIX: &[u8] = b"utok/";

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub roles: Vec<Role>,
    /// Division code of the subtree the user sees.
    pub scope: String,
    /// Teams the user belongs to (their work orders, rosters).
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub password_phc: Option<String>,
    /// Base32 TOTP secret, once enrolled.
    #[serde(default)]
    pub totp_secret: Option<String>,
    #[serde(default)]
    pub totp_guard: TotpGuard,
    #[serde(default)]
    pub login_guard: LoginGuard,
    pub created_ms: u64,
    #[serde(default)]
    pub disabled: bool,
}

impl UserRecord {
    fn is_administrator(&self) -> bool {
        self.roles.iter().any(|role| {
            matches!(
                role,
                Role::SystemAdmin | Role::SecurityAdmin | Role::AuditAdmin
            )
        })
    }
}

/// A user as shown (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub roles: Vec<Role>,
    pub scope: String,
    pub scope_path: String,
    pub teams: Vec<String>,
    pub has_password: bool,
    pub totp_enrolled: bool,
    pub disabled: bool,
    pub locked_until: Option<u64>,
}

/// A stored API token of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserToken {
    pub user: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// `login`, or what a script token is for.
    pub purpose: String,
}

/// `POST /api/v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUser {
    pub name: String,
    pub roles: Vec<Role>,
    pub scope: String,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

/// `POST /api/v1/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub name: String,
    pub password: Secret,
    #[serde(default)]
    pub totp: Option<String>,
}

/// A new token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    pub user: String,
    pub token: Secret,
    pub expires_ms: u64,
}

/// TOTP enrolment: the secret and the URI for an authenticator app, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpEnrolment {
    pub user: String,
    pub secret: Secret,
    pub otpauth_uri: Secret,
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The deployment's admin token: everything, everywhere.
    Root,
    User {
        name: String,
        roles: Vec<Role>,
        scope: String,
    },
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Root => "admin",
            Caller::User { name, .. } => name,
        }
    }

    /// Whether the caller's roles grant `permission` (anywhere).
    pub fn may(&self, permission: Permission) -> bool {
        match self {
            Caller::Root => true,
            Caller::User { roles, .. } => roles.iter().any(|role| role.allows(permission)),
        }
    }

    /// The caller's scope; `None` for root.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Caller::Root => None,
            Caller::User { scope, .. } => Some(scope),
        }
    }
}

struct Tree<'a>(&'a crate::divisions::Divisions);

impl access::DivisionParents for Tree<'_> {
    fn parent(&self, code: &str) -> Option<String> {
        self.0.get(code)?.parent.clone()
    }
}

fn user_key(name: &str) -> Vec<u8> {
    let mut key = USER_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

fn token_key(stored: &StoredToken) -> Vec<u8> {
    let mut key = TOKEN_PREFIX.to_vec();
    key.extend_from_slice(stored.as_str().as_bytes());
    key
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

impl Admin {
    /// Whether `division` lies in `caller`'s scope (root sees everything).
    pub fn in_scope(&self, caller: &Caller, division: &str) -> bool {
        match caller.scope() {
            None => true,
            Some(scope) => access::in_scope(scope, division, &Tree(self.divisions())),
        }
    }

    fn ops_store(&self) -> Result<crate::store::Store, AdminError> {
        self.dispatcher
            .as_ref()
            .map(|dispatcher| dispatcher.store())
            .ok_or_else(|| AdminError::Internal("users are not available here".into()))
    }

    fn user_record(&self, name: &str) -> Result<Option<UserRecord>, AdminError> {
        Ok(self.ops_store()?.ops_get::<UserRecord>(&user_key(name))?)
    }

    fn save_user(&self, user: &UserRecord) -> Result<(), AdminError> {
        let mut batch = OpsBatch::new();
        batch.put(&user_key(&user.name), user)?;
        self.ops_store()?.ops_commit(batch)?;
        Ok(())
    }

    fn user_view(&self, user: &UserRecord) -> UserView {
        let now = self.clock_ms();
        UserView {
            name: user.name.clone(),
            roles: user.roles.clone(),
            scope: user.scope.clone(),
            scope_path: self.divisions().path_names(&user.scope),
            teams: user.teams.clone(),
            has_password: user.password_phc.is_some(),
            totp_enrolled: user.totp_secret.is_some(),
            disabled: user.disabled,
            locked_until: user.login_guard.check(now).err().map(|locked| locked.until),
        }
    }

    fn clock_ms(&self) -> u64 {
        self.dispatcher
            .as_ref()
            .map(|dispatcher| dispatcher.clock().now_ms())
            .unwrap_or_default()
    }

    pub fn users(&self) -> Result<Vec<UserView>, AdminError> {
        Ok(self
            .ops_store()?
            .ops_scan::<UserRecord>(USER_PREFIX, b"", usize::MAX)?
            .into_iter()
            .map(|(_, user)| self.user_view(&user))
            .collect())
    }

    pub fn create_user(&self, actor: &str, request: &CreateUser) -> Result<UserView, AdminError> {
        let bad = |message: String| Err(AdminError::BadRequest(message));
        if !valid_name(&request.name) {
            return bad(format!(
                "user name {:?} must be 1–64 characters of a-z, 0-9, '-', '_', '.', '@'",
                request.name
            ));
        }
        if request.roles.is_empty() {
            return bad("a user needs at least one role".into());
        }
        if let Err(error) = access::check_role_set(&request.roles) {
            return bad(error.to_string());
        }
        if self.divisions().get(&request.scope).is_none() {
            return bad(format!("scope {} is not a division", request.scope));
        }
        let known: Vec<String> = self.teams()?.into_iter().map(|team| team.id).collect();
        if let Some(unknown) = request.teams.iter().find(|team| !known.contains(team)) {
            return bad(format!("no team {unknown}"));
        }
        if self.user_record(&request.name)?.is_some() {
            return Err(AdminError::Conflict(format!(
                "user {} exists",
                request.name
            )));
        }
        let password_phc = match &request.password {
            Some(password) => Some(self.hash_checked(password, &request.name)?),
            None => None,
        };
        let user = UserRecord {
            name: request.name.clone(),
            roles: request.roles.clone(),
            scope: request.scope.clone(),
            teams: request.teams.clone(),
            password_phc,
            totp_secret: None,
            totp_guard: TotpGuard::default(),
            login_guard: LoginGuard::default(),
            created_ms: self.clock_ms(),
            disabled: false,
        };
        self.save_user(&user)?;
        self.audit().record(
            actor,
            "user.create",
            &user.name,
            format!(
                "roles={} scope={} teams={}",
                user.roles
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                user.scope,
                user.teams.join(",")
            ),
        )?;
        Ok(self.user_view(&user))
    }

    fn hash_checked(&self, password: &Secret, name: &str) -> Result<String, AdminError> {
        PasswordPolicy::default()
            .check(password, name)
            .map_err(|error| AdminError::BadRequest(error.to_string()))?;
        access::hash_password(password, &mut ring::rand::SystemRandom::new())
            .map_err(|error| AdminError::Internal(error.to_string()))
    }

    pub fn set_password(
        &self,
        actor: &str,
        name: &str,
        password: &Secret,
    ) -> Result<UserView, AdminError> {
        let mut user = self
            .user_record(name)?
            .ok_or_else(|| AdminError::NotFound(format!("no user {name}")))?;
        user.password_phc = Some(self.hash_checked(password, name)?);
        self.save_user(&user)?;
        self.audit().record(actor, "user.password", name, "")?;
        Ok(self.user_view(&user))
    }

    pub fn enroll_totp(&self, actor: &str, name: &str) -> Result<TotpEnrolment, AdminError> {
        let mut user = self
            .user_record(name)?
            .ok_or_else(|| AdminError::NotFound(format!("no user {name}")))?;
        let secret = TotpSecret::generate(&mut ring::rand::SystemRandom::new())
            .map_err(|error| AdminError::Internal(error.to_string()))?;
        let uri = access::otpauth_uri(name, &secret, &TotpParams::BAGUI)
            .map_err(|error| AdminError::BadRequest(error.to_string()))?;
        let base32 = secret.to_base32();
        user.totp_secret = Some(base32.expose().to_owned());
        user.totp_guard = TotpGuard::default();
        self.save_user(&user)?;
        self.audit().record(actor, "user.totp_enrol", name, "")?;
        Ok(TotpEnrolment {
            user: name.to_owned(),
            secret: base32,
            otpauth_uri: uri,
        })
    }

    pub fn remove_user(&self, actor: &str, name: &str) -> Result<UserView, AdminError> {
        let user = self
            .user_record(name)?
            .ok_or_else(|| AdminError::NotFound(format!("no user {name}")))?;
        let store = self.ops_store()?;
        let mut batch = OpsBatch::new();
        batch.delete(&user_key(name));
        for (key, token) in store.ops_scan::<UserToken>(TOKEN_PREFIX, b"", usize::MAX)? {
            if token.user == name {
                batch.delete(&key);
            }
        }
        store.ops_commit(batch)?;
        self.audit().record(actor, "user.remove", name, "")?;
        Ok(self.user_view(&user))
    }

    /// Issues a token for `name` (a script token, by an administrator of users).
    pub fn issue_user_token(
        &self,
        actor: &str,
        name: &str,
        purpose: &str,
        ttl_ms: u64,
    ) -> Result<IssuedToken, AdminError> {
        let user = self
            .user_record(name)?
            .ok_or_else(|| AdminError::NotFound(format!("no user {name}")))?;
        let issued = self.store_token(&user, purpose, ttl_ms)?;
        self.audit()
            .record(actor, "user.token", name, format!("purpose={purpose}"))?;
        Ok(issued)
    }

    fn store_token(
        &self,
        user: &UserRecord,
        purpose: &str,
        ttl_ms: u64,
    ) -> Result<IssuedToken, AdminError> {
        let (secret, stored) = access::new_api_token(&mut ring::rand::SystemRandom::new())
            .map_err(|error| AdminError::Internal(error.to_string()))?;
        let now = self.clock_ms();
        let record = UserToken {
            user: user.name.clone(),
            created_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
            purpose: purpose.to_owned(),
        };
        let mut batch = OpsBatch::new();
        batch.put(&token_key(&stored), &record)?;
        self.ops_store()?.ops_commit(batch)?;
        Ok(IssuedToken {
            user: user.name.clone(),
            token: secret,
            expires_ms: record.expires_ms,
        })
    }

    /// Password (and, for administrators, TOTP) login. Every outcome is audited; failures
    /// count towards the lockout and say nothing about which part was wrong.
    pub fn login(&self, request: &LoginRequest, remote: &str) -> Result<IssuedToken, AdminError> {
        let denied = || AdminError::Unauthorized("invalid credentials".into());
        let now = self.clock_ms();
        let Some(mut user) = self.user_record(&request.name)? else {
            self.audit().record(
                &request.name,
                "login.failed",
                &request.name,
                format!("from {remote}: unknown user"),
            )?;
            return Err(denied());
        };
        if let Err(locked) = user.login_guard.check(now) {
            self.audit().record(
                &user.name,
                "login.locked",
                &user.name,
                format!("from {remote}"),
            )?;
            return Err(AdminError::Unauthorized(format!(
                "account locked until {}",
                crate::clock::format_rfc3339(locked.until)
            )));
        }
        let password_ok = match &user.password_phc {
            Some(phc) => access::verify_password(phc, &request.password).unwrap_or(false),
            None => false,
        };
        let second_factor_ok = if user.is_administrator() {
            match (&user.totp_secret, &request.totp) {
                (Some(secret), Some(code)) => TotpSecret::from_base32(&Secret::new(secret.clone()))
                    .ok()
                    .is_some_and(|secret| {
                        user.totp_guard
                            .verify(&secret, &TotpParams::BAGUI, code, now)
                            .is_ok()
                    }),
                _ => false,
            }
        } else {
            true
        };
        if !password_ok || !second_factor_ok || user.disabled {
            let locked = user
                .login_guard
                .record_failure(&LockoutPolicy::default(), now);
            self.save_user(&user)?;
            self.audit().record(
                &user.name,
                "login.failed",
                &user.name,
                format!(
                    "from {remote}{}",
                    if locked.is_some() {
                        "; account locked"
                    } else {
                        ""
                    }
                ),
            )?;
            return Err(denied());
        }
        user.login_guard.record_success(now);
        self.save_user(&user)?;
        let issued = self.store_token(&user, "login", SESSION_TTL_MS)?;
        self.audit()
            .record(&user.name, "login", &user.name, format!("from {remote}"))?;
        Ok(issued)
    }

    /// The user a presented token belongs to, if it is live.
    pub fn caller_for_token(&self, presented: &str) -> Result<Option<Caller>, AdminError> {
        if !access::looks_like_token(presented) {
            return Ok(None);
        }
        let stored = StoredToken::of(presented);
        let store = self.ops_store()?;
        let Some(token) = store.ops_get::<UserToken>(&token_key(&stored))? else {
            return Ok(None);
        };
        if token.expires_ms <= self.clock_ms() {
            return Ok(None);
        }
        let Some(user) = self.user_record(&token.user)? else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        Ok(Some(Caller::User {
            name: user.name,
            roles: user.roles,
            scope: user.scope,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain() {
        assert!(valid_name("zhang.san@nn"));
        assert!(!valid_name(""));
        assert!(!valid_name("张三"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"a".repeat(65)));
    }
}
