//! Roles and permissions: one explicit table ([`Role::allows`]) that the control plane asks
//! before every action.
//!
//! MLPS 2.0 (等保 2.0, GB/T 22239-2019) asks for the separation of powers among administrators
//! (三员分立): the system administrator (系统管理员) runs the system, the security
//! administrator (安全管理员) grants accounts and roles, the audit administrator (审计管理员)
//! reads the audit log; none can do the others' work, so no single account can both act and
//! hide or grant itself the right to act. [`check_role_set`] keeps one account from holding two
//! of these roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A role given to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 运维人员: sees assets, posture and work orders and handles work orders; may connect an
    /// external monitoring system by creating an intake token.
    Operator,
    /// 安全分析员: sees and handles work orders (security incidents among them).
    SecurityAnalyst,
    /// 只读用户: sees, changes nothing.
    Viewer,
    /// 系统管理员: teams, channels, rules, maintenance windows, tokens and agents — not users,
    /// not roles, not the audit log, and does not handle work orders.
    SystemAdmin,
    /// 安全管理员: users and roles only.
    SecurityAdmin,
    /// 审计管理员: reads the audit log, nothing else.
    AuditAdmin,
}

/// Something a user may be allowed to do (always within the user's scope, see
/// [`crate::access::scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ViewAssets,
    ViewPosture,
    ViewWorkOrders,
    /// Acknowledge, start, resolve, verify, escalate, take over and reassign work orders.
    ActOnWorkOrders,
    ManageTeams,
    ManageUsers,
    ManageRoles,
    /// Create and revoke API and enrolment tokens, approve and retire agents.
    ManageTokensAndAgents,
    /// Notification channels, alert and dispatch rules, maintenance windows.
    ManageChannelsAndRules,
    ReadAuditLog,
    /// Create an intake token for an external alert source (Alertmanager, generic JSON).
    CreateIntakeTokens,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Operator,
        Role::SecurityAnalyst,
        Role::Viewer,
        Role::SystemAdmin,
        Role::SecurityAdmin,
        Role::AuditAdmin,
    ];

    /// Whether this role grants `permission`: the whole access matrix, one arm per role.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Operator => matches!(
                permission,
                ViewAssets | ViewPosture | ViewWorkOrders | ActOnWorkOrders | CreateIntakeTokens
            ),
            Role::SecurityAnalyst => matches!(
                permission,
                ViewAssets | ViewPosture | ViewWorkOrders | ActOnWorkOrders
            ),
            Role::Viewer => matches!(permission, ViewAssets | ViewPosture | ViewWorkOrders),
            Role::SystemAdmin => matches!(
                permission,
                ViewAssets
                    | ViewPosture
                    | ViewWorkOrders
                    | ManageTeams
                    | ManageTokensAndAgents
                    | ManageChannelsAndRules
                    | CreateIntakeTokens
            ),
            Role::SecurityAdmin => matches!(permission, ManageUsers | ManageRoles),
            Role::AuditAdmin => matches!(permission, ReadAuditLog),
        }
    }

    /// One of the three administrators of 三员分立.
    pub fn is_separated_admin(self) -> bool {
        matches!(
            self,
            Role::SystemAdmin | Role::SecurityAdmin | Role::AuditAdmin
        )
    }

    /// The name used in configuration, JSON and the API.
    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::SecurityAnalyst => "security_analyst",
            Role::Viewer => "viewer",
            Role::SystemAdmin => "system_admin",
            Role::SecurityAdmin => "security_admin",
            Role::AuditAdmin => "audit_admin",
        }
    }
}

impl Permission {
    pub const ALL: [Permission; 11] = [
        Permission::ViewAssets,
        Permission::ViewPosture,
        Permission::ViewWorkOrders,
        Permission::ActOnWorkOrders,
        Permission::ManageTeams,
        Permission::ManageUsers,
        Permission::ManageRoles,
        Permission::ManageTokensAndAgents,
        Permission::ManageChannelsAndRules,
        Permission::ReadAuditLog,
        Permission::CreateIntakeTokens,
    ];

    /// The name used in configuration, JSON and the API.
    pub fn name(self) -> &'static str {
        match self {
            Permission::ViewAssets => "view_assets",
            Permission::ViewPosture => "view_posture",
            Permission::ViewWorkOrders => "view_work_orders",
            Permission::ActOnWorkOrders => "act_on_work_orders",
            Permission::ManageTeams => "manage_teams",
            Permission::ManageUsers => "manage_users",
            Permission::ManageRoles => "manage_roles",
            Permission::ManageTokensAndAgents => "manage_tokens_and_agents",
            Permission::ManageChannelsAndRules => "manage_channels_and_rules",
            Permission::ReadAuditLog => "read_audit_log",
            Permission::CreateIntakeTokens => "create_intake_tokens",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A role or permission name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {kind} `{found}`; expected one of: {expected}")]
pub struct UnknownName {
    /// `role` or `permission`.
    pub kind: &'static str,
    pub found: String,
    pub expected: String,
}

impl FromStr for Role {
    type Err = UnknownName;

    /// The snake_case name, exactly (as serde reads it).
    fn from_str(text: &str) -> Result<Role, UnknownName> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == text)
            .ok_or_else(|| UnknownName {
                kind: "role",
                found: text.to_owned(),
                expected: Role::ALL.map(Role::name).join(", "),
            })
    }
}

impl FromStr for Permission {
    type Err = UnknownName;

    /// The snake_case name, exactly (as serde reads it).
    fn from_str(text: &str) -> Result<Permission, UnknownName> {
        Permission::ALL
            .into_iter()
            .find(|permission| permission.name() == text)
            .ok_or_else(|| UnknownName {
                kind: "permission",
                found: text.to_owned(),
                expected: Permission::ALL.map(Permission::name).join(", "),
            })
    }
}

/// Why a set of roles cannot be given to one account.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoleSetError {
    #[error("an account needs at least one role")]
    Empty,
    #[error(
        "{first} and {second} are separated administrator roles (三员分立) and cannot be held by one account"
    )]
    SeparatedAdmins { first: Role, second: Role },
    #[error("audit_admin must be the account's only role, found it with {other}")]
    AuditorWithOtherRole { other: Role },
}

/// Checks the roles of one account: at least one, at most one of the three separated
/// administrator roles, and the audit administrator alone (an auditor who also operates would
/// audit their own work). Duplicates are harmless.
pub fn check_role_set(roles: &[Role]) -> Result<(), RoleSetError> {
    if roles.is_empty() {
        return Err(RoleSetError::Empty);
    }
    let mut admin: Option<Role> = None;
    for &role in roles {
        if role.is_separated_admin() {
            match admin {
                Some(first) if first != role => {
                    return Err(RoleSetError::SeparatedAdmins {
                        first,
                        second: role,
                    });
                }
                _ => admin = Some(role),
            }
        }
    }
    if roles.contains(&Role::AuditAdmin)
        && let Some(&other) = roles.iter().find(|&&role| role != Role::AuditAdmin)
    {
        return Err(RoleSetError::AuditorWithOtherRole { other });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The access matrix written out independently of [`Role::allows`], as a table of
    /// (permission, operator, security analyst, viewer, system admin, security admin, audit
    /// admin); `1` = allowed.
    const EXPECTED: [(&str, [u8; 6]); 11] = [
        ("view_assets", [1, 1, 1, 1, 0, 0]),
        ("view_posture", [1, 1, 1, 1, 0, 0]),
        ("view_work_orders", [1, 1, 1, 1, 0, 0]),
        ("act_on_work_orders", [1, 1, 0, 0, 0, 0]),
        ("manage_teams", [0, 0, 0, 1, 0, 0]),
        ("manage_users", [0, 0, 0, 0, 1, 0]),
        ("manage_roles", [0, 0, 0, 0, 1, 0]),
        ("manage_tokens_and_agents", [0, 0, 0, 1, 0, 0]),
        ("manage_channels_and_rules", [0, 0, 0, 1, 0, 0]),
        ("read_audit_log", [0, 0, 0, 0, 0, 1]),
        ("create_intake_tokens", [1, 0, 0, 1, 0, 0]),
    ];
    const COLUMNS: [&str; 6] = [
        "operator",
        "security_analyst",
        "viewer",
        "system_admin",
        "security_admin",
        "audit_admin",
    ];

    #[test]
    fn the_whole_matrix_matches_the_expected_table() {
        assert_eq!(EXPECTED.len(), Permission::ALL.len());
        let mut checked = 0;
        for (permission_name, row) in EXPECTED {
            let permission: Permission = permission_name.parse().unwrap();
            for (column, role_name) in COLUMNS.iter().enumerate() {
                let role: Role = role_name.parse().unwrap();
                assert_eq!(
                    role.allows(permission),
                    row[column] == 1,
                    "{role_name} × {permission_name}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, Role::ALL.len() * Permission::ALL.len());
    }

    #[test]
    fn only_the_audit_admin_reads_the_audit_log_and_does_nothing_else() {
        for role in Role::ALL {
            assert_eq!(
                role.allows(Permission::ReadAuditLog),
                role == Role::AuditAdmin,
                "{role}"
            );
        }
        for permission in Permission::ALL {
            assert_eq!(
                Role::AuditAdmin.allows(permission),
                permission == Permission::ReadAuditLog,
                "{permission}"
            );
        }
    }

    #[test]
    fn the_three_administrators_do_not_overlap() {
        for permission in Permission::ALL {
            let holders = [Role::SystemAdmin, Role::SecurityAdmin, Role::AuditAdmin]
                .into_iter()
                .filter(|role| role.allows(permission))
                .count();
            assert!(
                holders <= 1,
                "{permission} held by {holders} administrators"
            );
        }
        assert!(!Role::SecurityAdmin.allows(Permission::ActOnWorkOrders));
        assert!(!Role::SystemAdmin.allows(Permission::ActOnWorkOrders));
        assert!(!Role::SystemAdmin.allows(Permission::ManageUsers));
        assert!(!Role::SystemAdmin.allows(Permission::ManageRoles));
        for permission in Permission::ALL {
            let expected = matches!(
                permission,
                Permission::ManageUsers | Permission::ManageRoles
            );
            assert_eq!(
                Role::SecurityAdmin.allows(permission),
                expected,
                "{permission}"
            );
        }
    }

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for role in Role::ALL {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.name()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
            assert_eq!(role.name().parse::<Role>().unwrap(), role);
        }
        for permission in Permission::ALL {
            let json = serde_json::to_string(&permission).unwrap();
            assert_eq!(json, format!("\"{}\"", permission.name()));
            assert_eq!(
                serde_json::from_str::<Permission>(&json).unwrap(),
                permission
            );
            assert_eq!(permission.name().parse::<Permission>().unwrap(), permission);
        }
        assert_eq!(
            serde_json::to_string(&Role::SecurityAnalyst).unwrap(),
            "\"security_analyst\""
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_choices() {
        let error = "admin".parse::<Role>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown role `admin`; expected one of: operator, security_analyst, viewer, \
             system_admin, security_admin, audit_admin"
        );
        assert!("Operator".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
        let error = "delete_everything".parse::<Permission>().unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("unknown permission `delete_everything`")
        );
        assert!(error.expected.contains("read_audit_log"));
    }

    #[test]
    fn one_account_holds_at_most_one_administrator_role() {
        assert_eq!(check_role_set(&[]), Err(RoleSetError::Empty));
        assert_eq!(
            check_role_set(&[Role::Operator, Role::SecurityAnalyst]),
            Ok(())
        );
        assert_eq!(check_role_set(&[Role::SystemAdmin, Role::Viewer]), Ok(()));
        assert_eq!(
            check_role_set(&[Role::SecurityAdmin, Role::SecurityAdmin]),
            Ok(())
        );
        assert_eq!(
            check_role_set(&[Role::SystemAdmin, Role::Operator, Role::SecurityAdmin]),
            Err(RoleSetError::SeparatedAdmins {
                first: Role::SystemAdmin,
                second: Role::SecurityAdmin
            })
        );
        assert_eq!(check_role_set(&[Role::AuditAdmin]), Ok(()));
        assert_eq!(
            check_role_set(&[Role::AuditAdmin, Role::Viewer]),
            Err(RoleSetError::AuditorWithOtherRole {
                other: Role::Viewer
            })
        );
    }
}
