//! The policy file: checks and the closed set of condition kinds, parsed with serde.
//!
//! Every struct denies unknown fields, so a typo in a shipped or pushed policy (`exepct`) is a
//! load error rather than a check that silently tests nothing.

use serde::Deserialize;

/// A parsed, validated baseline policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub policy: PolicyMeta,
    #[serde(rename = "check", default)]
    pub checks: Vec<Check>,
}

/// Name and version, reported as `NAME VERSION` in [`bagui_protocol::assets::PostureReport`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMeta {
    pub name: String,
    pub version: String,
}

/// One baseline check.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub rationale: String,
    pub remediation: String,
    /// GB/T 22239-2019 clause, e.g. `8.1.4.2 a)`.
    pub mlps: String,
    /// OS families (`OsInfo.family`) the check applies to; empty means every host.
    #[serde(default)]
    pub applies_to: Vec<String>,
    pub condition: Condition,
}

/// How much a failed check matters; also its weight in the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Weight in the score: critical 10, high 5, medium 2, low 1.
    pub fn weight(self) -> u64 {
        match self {
            Severity::Low => 1,
            Severity::Medium => 2,
            Severity::High => 5,
            Severity::Critical => 10,
        }
    }
}

/// What a check tests. A closed set: no scripting, no regular expressions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// A `KEY VALUE` / `KEY=VALUE` setting in one or more config files.
    Config(ConfigCondition),
    /// Permission bits (and optionally owner) of one file.
    FileMode {
        path: String,
        /// Octal string, e.g. `"0640"`: no permission bit outside it may be set.
        max_mode: String,
        #[serde(default)]
        owner_uid: Option<u32>,
    },
    /// The first line of one file (`/sys/...`, `/proc/...`), trimmed.
    FileContent {
        path: String,
        expect: Expect,
        #[serde(default)]
        if_missing: IfMissing,
    },
    /// Kernel parameters: `/proc/sys` when the root has it, else the sysctl config files.
    Sysctl {
        keys: Vec<String>,
        expect: Expect,
        /// Kernel default, used when evaluating config files that do not set the key.
        #[serde(default)]
        default: Option<String>,
    },
    /// At least one of `names` is running (`/proc/*/comm`).
    ProcessRunning { names: Vec<String> },
    /// None of the ports is listening (`/proc/net/{tcp,udp}{,6}`).
    PortNotListening {
        #[serde(default)]
        tcp: Vec<u16>,
        #[serde(default)]
        udp: Vec<u16>,
    },
    /// None of the packages is installed (dpkg or rpm database).
    PackageAbsent { names: Vec<String> },
    /// At least one of the packages is installed.
    PackagePresent { names: Vec<String> },
    /// A rule over `/etc/passwd`, `/etc/group` and `/etc/shadow`.
    Accounts {
        rule: AccountRule,
        /// Account names the rule does not apply to.
        #[serde(default)]
        exempt: Vec<String>,
    },
    /// A PAM module line in every existing file of `files`.
    PamLine(PamCondition),
    /// No file under `dir` (recursively, symlinks not followed) is writable by others.
    WorldWritable { dir: String },
    /// Each existing directory in `dirs` is not world-writable or has the sticky bit.
    Sticky { dirs: Vec<String> },
    /// No non-comment line of `files` contains all of `all_of` (whitespace ignored).
    LineAbsent {
        files: Vec<String>,
        all_of: Vec<String>,
    },
    /// Some non-comment line of `files` contains all of `all_of` (whitespace ignored; an
    /// empty list matches any non-comment line).
    LinePresent {
        files: Vec<String>,
        #[serde(default)]
        all_of: Vec<String>,
        #[serde(default)]
        if_missing: IfMissing,
    },
    /// Passes when any sub-condition passes.
    Any { of: Vec<Condition> },
    /// Passes when every applicable sub-condition passes.
    All { of: Vec<Condition> },
}

/// `config` condition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigCondition {
    /// Paths in order; the last component may hold `*`/`?` wildcards (expanded sorted).
    pub files: Vec<String>,
    /// Matched case-insensitively (sshd keywords are; login.defs and pwquality keys are
    /// conventionally one case anyway).
    pub key: String,
    #[serde(default)]
    pub separator: Separator,
    #[serde(default)]
    pub precedence: Precedence,
    pub expect: Expect,
    /// Value in force when no file sets the key (the program's built-in default).
    #[serde(default)]
    pub default: Option<String>,
    /// What it means when none of the files exists.
    #[serde(default)]
    pub if_missing: IfMissing,
}

/// How a config line separates key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Separator {
    /// `Key value` (sshd_config, login.defs, limits-style files).
    #[default]
    Whitespace,
    /// `key = value` / `export KEY=value` (pwquality.conf, shell profiles, selinux config).
    Equals,
}

/// Which of several settings of one key is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precedence {
    /// sshd: the first value found wins.
    First,
    /// Most other programs (and the shell): the last assignment wins.
    #[default]
    Last,
}

/// What a missing target file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfMissing {
    /// The software is not installed: nothing to check.
    #[default]
    NotApplicable,
    /// The protection is required, so its absence fails.
    Fail,
}

/// An expectation on one value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Expect {
    /// Equal, ignoring ASCII case.
    Equals(String),
    /// Equal to one of these, ignoring ASCII case.
    OneOf(Vec<String>),
    /// Leading integer ≤ this.
    Max(i64),
    /// Leading integer ≥ this.
    Min(i64),
    /// Leading integer within `[low, high]`.
    Between(i64, i64),
    /// No comma/space separated token contains any of these substrings (ignoring case).
    Excludes(Vec<String>),
    /// Octal umask that masks at least these bits (`"027"`).
    MasksBits(String),
}

/// `pam_line` condition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PamCondition {
    /// Stack files: every one that exists must hold a matching line; none existing is
    /// not applicable. Listing both families' files (`common-auth` and `system-auth`) lets one
    /// check serve dpkg- and rpm-based Kylin/UOS alike.
    pub files: Vec<String>,
    /// Management group: `auth`, `account`, `password` or `session`.
    pub stack: String,
    /// Module basenames, any of which satisfies the check (`pam_faillock.so`).
    pub modules: Vec<String>,
    /// Bare arguments that must be on the line (`use_uid`).
    #[serde(default)]
    pub flags: Vec<String>,
    /// `name=value` arguments with expectations.
    #[serde(default)]
    pub args: Vec<PamArg>,
}

/// An expectation on a `name=value` PAM argument.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PamArg {
    pub name: String,
    pub expect: Expect,
    /// Whether the argument may be absent (then a config file or the module default decides,
    /// which another condition checks). Present, it must always meet `expect`, because
    /// arguments on the PAM line override the module's config file.
    #[serde(default)]
    pub optional: bool,
}

/// Rules over the account databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountRule {
    /// No account other than root has UID 0.
    Uid0OnlyRoot,
    /// No account in `/etc/shadow` has an empty password field.
    NoEmptyPasswords,
    /// No two accounts share a UID.
    UniqueUids,
    /// No two groups share a GID.
    UniqueGids,
    /// No two accounts (or two groups) share a name.
    UniqueNames,
    /// Accounts below `UID_MIN` (login.defs, default 1000), root excepted, have a
    /// non-login shell.
    SystemAccountsNoShell,
}
