//! Security baseline (等保2.0 level 3 / CIS style): a declarative policy of checks, evaluated
//! against a [`HostRoot`], reported as a [`PostureReport`].
//!
//! The shipped policy is `plugins/policy/mlps-baseline.toml` ([`builtin_policy`]); a site may
//! load its own with [`load_policy`]. Checks are data, not code: each one names a condition
//! from a closed set of kinds ([`Condition`]), so a policy can be reviewed, pushed and audited
//! without running anything on the terminal, and matching is plain token comparison — no
//! scripts, no regular expressions.
//!
//! # Policy format
//!
//! ```toml
//! [policy]
//! name = "bagui-mlps-l3"
//! version = "2026.1"
//!
//! [[check]]
//! id = "BG-SSH-001"                         # unique
//! title = "SSH root login is disabled"
//! severity = "high"                         # low | medium | high | critical
//! rationale = "Administrators log in as themselves, then escalate: accountable."
//! remediation = "Set `PermitRootLogin no` in /etc/ssh/sshd_config."
//! mlps = "GB/T 22239-2019 8.1.4.2 b)"
//! applies_to = []                           # OsInfo.family values; empty = every host
//! [check.condition]
//! kind = "config"
//! files = ["/etc/ssh/sshd_config.d/*.conf", "/etc/ssh/sshd_config"]
//! key = "PermitRootLogin"
//! separator = "whitespace"                  # or "equals" (key = value, export KEY=value)
//! precedence = "first"                      # sshd: first value wins; default "last"
//! expect = { equals = "no" }
//! default = "prohibit-password"             # in force when no file sets the key
//! if_missing = "not_applicable"             # or "fail", when none of the files exists
//! ```
//!
//! Condition kinds (`kind = ...`, unknown fields are rejected):
//!
//! | kind | fields | passes when |
//! |---|---|---|
//! | `config` | `files`, `key`, `separator`, `precedence`, `expect`, `default`, `if_missing` | the value in force meets `expect` |
//! | `file_mode` | `path`, `max_mode` (octal string), `owner_uid` | no permission bit outside `max_mode` (and owner matches) |
//! | `file_content` | `path`, `expect`, `if_missing` | the file's first line meets `expect` |
//! | `sysctl` | `keys`, `expect`, `default` | every key meets `expect`: `/proc/sys` when the root has it, else `/usr/lib/sysctl.d`, `/run/sysctl.d`, `/etc/sysctl.d`, `/etc/sysctl.conf` (last wins), else `default` |
//! | `process_running` | `names` | some `/proc/*/comm` equals one of `names` |
//! | `port_not_listening` | `tcp`, `udp` (port lists) | none of them is listening |
//! | `package_absent` / `package_present` | `names` | none / at least one is installed (dpkg or rpm) |
//! | `accounts` | `rule`, `exempt` | `uid0_only_root`, `no_empty_passwords`, `unique_uids`, `unique_gids`, `unique_names`, `system_accounts_no_shell` |
//! | `pam_line` | `files`, `stack`, `modules`, `flags`, `args` | every existing file has a `stack` line for one of `modules` with all `flags` and `args` |
//! | `world_writable` | `dir` | nothing below `dir` is writable by others (symlinks skipped; sticky dirs allowed) |
//! | `sticky` | `dirs` | each existing dir is not world-writable or has the sticky bit |
//! | `line_absent` / `line_present` | `files`, `all_of`, (`if_missing`) | no line / some line contains every token, whitespace ignored |
//! | `any` / `all` | `of` (list of conditions) | one / every applicable part passes |
//!
//! `expect` is one of `{ equals = "no" }`, `{ one_of = [...] }`, `{ max = N }`, `{ min = N }`,
//! `{ between = [LOW, HIGH] }` (numbers: the value's leading integer), `{ excludes = [...] }`
//! (no comma/space separated token contains one of the substrings, ignoring case; for cipher
//! lists) and `{ masks_bits = "027" }` (an octal umask covering those bits). `files` entries
//! may use `*`/`?` in the last path component, expanded in byte order.
//!
//! **Applicability.** `applies_to` lists OS families (`inventory::os`); a root whose family
//! is `unknown` (no os-release) gets `not_applicable` for every family-specific check while
//! generic ones still run. Where one family spans two packaging worlds — Kylin and UOS are
//! rpm-based on servers and dpkg-based on desktops — a check lists both worlds' files (for
//! PAM: `common-auth` and `system-auth`) and only the files that exist are judged; a target
//! that does not exist at all is `not_applicable` unless the condition says `if_missing =
//! "fail"`. A file that exists but cannot be read (not run as root) is an `error`.
//!
//! # Score
//!
//! `score = floor(100 * passed_weight / applicable_weight)`, where each check weighs
//! critical 10, high 5, medium 2, low 1; applicable checks are those that passed, failed or
//! errored (an error counts as failed: an unverifiable control is not a met one); a report
//! with no applicable check scores 100.

mod conditions;
mod files;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use bagui_protocol::Lane;
use bagui_protocol::assets::{CheckVerdict, POSTURE_REPORT, PostureReport, PostureResult};
use bagui_protocol::messages::payload;

pub use conditions::Outcome;
pub use policy::{
    AccountRule, Check, Condition, ConfigCondition, Expect, IfMissing, PamArg, PamCondition,
    Policy, PolicyMeta, Precedence, Separator, Severity,
};

use crate::{CollectError, Collector, HostRoot, Output};

/// The shipped MLPS level-3 baseline.
pub const BUILTIN_POLICY: &str = include_str!("../../policy/mlps-baseline.toml");

/// Default run interval of [`PostureCollector`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid TOML for the schema: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("check {id:?}: {reason}")]
    Invalid { id: String, reason: String },
}

/// Parses and validates a policy: unique non-empty ids, well-formed modes, non-empty target
/// lists. A policy that loads evaluates without configuration errors.
pub fn load_policy(text: &str) -> Result<Policy, PolicyError> {
    let policy: Policy = toml::from_str(text)?;
    let mut ids = HashSet::new();
    for check in &policy.checks {
        let invalid = |reason: &str| PolicyError::Invalid {
            id: check.id.clone(),
            reason: reason.to_owned(),
        };
        if check.id.trim().is_empty() {
            return Err(invalid("empty id"));
        }
        if !ids.insert(check.id.as_str()) {
            return Err(invalid("duplicate id"));
        }
        validate_condition(&check.condition).map_err(|reason| invalid(&reason))?;
    }
    Ok(policy)
}

/// Structural checks serde cannot express.
fn validate_condition(condition: &Condition) -> Result<(), String> {
    let nonempty = |list: &[String], what: &str| {
        if list.is_empty() {
            Err(format!("{what} is empty"))
        } else {
            Ok(())
        }
    };
    let wildcard_dirs = |list: &[String]| {
        list.iter()
            .find(|p| {
                !p.starts_with('/')
                    || p.rsplit_once('/')
                        .is_some_and(|(d, _)| d.contains(['*', '?']))
            })
            .map_or(Ok(()), |p| {
                Err(format!(
                    "{p:?}: paths are absolute, wildcards only in the last component"
                ))
            })
    };
    match condition {
        Condition::Config(config) => {
            nonempty(&config.files, "files")?;
            wildcard_dirs(&config.files)
        }
        Condition::FileMode { path, .. } if !path.starts_with('/') => {
            Err(format!("{path:?} is not absolute"))
        }
        Condition::FileMode { max_mode, .. } => conditions::parse_octal(max_mode)
            .filter(|mode| *mode <= 0o7777)
            .map(|_| ())
            .ok_or_else(|| format!("max_mode {max_mode:?} is not an octal mode")),
        Condition::Sysctl { keys, .. } => {
            nonempty(keys, "keys")?;
            // Keys name files under /proc/sys: keep them there.
            match keys
                .iter()
                .find(|k| k.is_empty() || k.contains('/') || k.contains(".."))
            {
                Some(key) => Err(format!("sysctl key {key:?} is not dotted")),
                None => Ok(()),
            }
        }
        Condition::FileContent { path, .. } | Condition::WorldWritable { dir: path }
            if !path.starts_with('/') =>
        {
            Err(format!("{path:?} is not absolute"))
        }
        Condition::ProcessRunning { names }
        | Condition::PackageAbsent { names }
        | Condition::PackagePresent { names } => nonempty(names, "names"),
        Condition::PortNotListening { tcp, udp } if tcp.is_empty() && udp.is_empty() => {
            Err("no ports".into())
        }
        Condition::PamLine(pam) => {
            nonempty(&pam.files, "files")?;
            nonempty(&pam.modules, "modules")?;
            wildcard_dirs(&pam.files)
        }
        Condition::Sticky { dirs } => nonempty(dirs, "dirs"),
        Condition::LineAbsent { files, all_of } => {
            nonempty(files, "files")?;
            nonempty(all_of, "all_of")?;
            wildcard_dirs(files)
        }
        Condition::LinePresent { files, .. } => {
            nonempty(files, "files")?;
            wildcard_dirs(files)
        }
        Condition::Any { of } | Condition::All { of } => {
            if of.is_empty() {
                return Err("`of` is empty".into());
            }
            of.iter().try_for_each(validate_condition)
        }
        Condition::FileContent { .. }
        | Condition::PortNotListening { .. }
        | Condition::Accounts { .. }
        | Condition::WorldWritable { .. } => Ok(()),
    }
}

/// The shipped policy, parsed. Its validity is a unit test, so this cannot fail in a build
/// that passed its tests; should it ever, the agent reports an empty policy rather than dying.
pub fn builtin_policy() -> Policy {
    load_policy(BUILTIN_POLICY).unwrap_or_else(|error| {
        // This crate does not log; stderr reaches the journal under systemd.
        eprintln!("bagui-plugins: the built-in posture policy does not load: {error}");
        Policy {
            policy: PolicyMeta {
                name: "invalid-builtin".into(),
                version: "0".into(),
            },
            checks: Vec::new(),
        }
    })
}

/// Runs every check of `policy` against `root`. Never fails as a whole: a check that cannot
/// be evaluated is an `error` result with the reason as evidence, and the others still run.
pub fn evaluate(policy: &Policy, root: &HostRoot, now_ms: u64) -> PostureReport {
    let family = crate::inventory::os::os_info(root)
        .map(|info| info.family)
        .unwrap_or_else(|_| "unknown".to_owned());
    let results: Vec<PostureResult> = policy
        .checks
        .iter()
        .map(|check| evaluate_check(check, root, &family))
        .collect();
    PostureReport {
        taken_ms: now_ms,
        policy: format!("{} {}", policy.policy.name, policy.policy.version),
        score: score(&policy.checks, &results),
        results,
        // Signed by the agent, which holds the identity key.
        signature: Default::default(),
    }
}

fn evaluate_check(check: &Check, root: &HostRoot, family: &str) -> PostureResult {
    let outcome = if check.applies_to.is_empty() || check.applies_to.iter().any(|f| f == family) {
        conditions::evaluate(&check.condition, root)
    } else {
        Outcome {
            verdict: CheckVerdict::NotApplicable,
            evidence: vec![format!(
                "OS family {family} not in {}",
                check.applies_to.join(", ")
            )],
        }
    };
    PostureResult {
        id: check.id.clone(),
        title: check.title.clone(),
        severity: check.severity.as_str().to_owned(),
        result: outcome.verdict,
        evidence: outcome.evidence,
        remediation: check.remediation.clone(),
        mlps: check.mlps.clone(),
    }
}

/// The weighted score described in the module documentation.
pub fn score(checks: &[Check], results: &[PostureResult]) -> u32 {
    let mut applicable = 0u64;
    let mut passed = 0u64;
    for (check, result) in checks.iter().zip(results) {
        let weight = check.severity.weight();
        match result.result {
            CheckVerdict::Pass => {
                applicable += weight;
                passed += weight;
            }
            CheckVerdict::Fail | CheckVerdict::Error => applicable += weight,
            CheckVerdict::NotApplicable => {}
        }
    }
    if applicable == 0 {
        return 100;
    }
    u32::try_from(100 * passed / applicable).unwrap_or(100)
}

/// Whether any check of severity high or critical failed (the `check` command's exit 2).
pub fn has_serious_failure(report: &PostureReport) -> bool {
    report.results.iter().any(|r| {
        r.result == CheckVerdict::Fail && matches!(r.severity.as_str(), "high" | "critical")
    })
}

/// Runs the baseline on a schedule and sends a [`POSTURE_REPORT`] on the security lane — on
/// the first run, and afterwards only when some result (verdict or evidence) changed: an
/// unchanged posture every hour is noise on township uplinks.
pub struct PostureCollector {
    root: HostRoot,
    policy: Policy,
    interval: Duration,
    state: Mutex<SentState>,
}

/// Results last committed to the outbox, and those of the run waiting for commit.
#[derive(Default)]
struct SentState {
    sent: Option<Vec<PostureResult>>,
    pending: Option<Vec<PostureResult>>,
}

impl PostureCollector {
    /// `interval`: how often to evaluate ([`DEFAULT_INTERVAL`] is one hour).
    pub fn new(root: HostRoot, policy: Policy, interval: Duration) -> PostureCollector {
        PostureCollector {
            root,
            policy,
            interval,
            state: Mutex::new(SentState::default()),
        }
    }

    /// The built-in policy, run hourly.
    pub fn builtin(root: HostRoot) -> PostureCollector {
        PostureCollector::new(root, builtin_policy(), DEFAULT_INTERVAL)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SentState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Collector for PostureCollector {
    fn name(&self) -> &'static str {
        "posture"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn collect(&self, now_ms: u64) -> Result<Vec<Output>, CollectError> {
        let report = evaluate(&self.policy, &self.root, now_ms);
        let mut state = self.state();
        if state.sent.as_ref() == Some(&report.results) {
            state.pending = None;
            return Ok(Vec::new());
        }
        state.pending = Some(report.results.clone());
        Ok(vec![Output {
            lane: Lane::Security,
            kind: POSTURE_REPORT,
            body: payload::encode(&report),
        }])
    }

    /// The report is in the outbox: later runs compare against it.
    fn committed(&self) {
        let mut state = self.state();
        if let Some(pending) = state.pending.take() {
            state.sent = Some(pending);
        }
    }

    fn request_full(&self) {
        self.state().sent = None;
    }
}
