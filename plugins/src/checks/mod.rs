//! Checks: external plugins (Nagios and JSON-lines conventions) and built-in probes.
//!
//! Each `[[checks]]` entry of the agent config becomes one [`CheckCollector`], scheduled like
//! any other collector:
//!
//! ```toml
//! [[checks]]
//! name = "load"
//! command = ["/usr/lib/nagios/plugins/check_load", "-w", "5,4,3", "-c", "10,8,6"]
//! interval = "60s"          # default 60s
//! timeout = "10s"           # default 10s (at most half the interval); must be < interval
//! convention = "nagios"     # or "jsonl"; default "nagios"
//!
//! [[checks]]
//! name = "queues"
//! command = ["check_queues", "--all"]   # bare name: looked up in exec::SAFE_PATH
//! convention = "jsonl"
//!
//! [[checks]]
//! name = "web"
//! probe = "http"                        # "tcp" | "http" | "dns" | "tls_expiry"
//! target = "http://127.0.0.1:8080/healthz"
//! expect_status = [200]                 # http only; default 2xx/3xx OK, 4xx WARNING
//!
//! [[checks]]
//! name = "api-cert"
//! probe = "tls_expiry"
//! target = "api.internal:443"
//! warn_days = 30                        # tls_expiry only; defaults 30 and 7
//! crit_days = 7
//! ```
//!
//! Commands run without a shell ([`exec`]); their output is read per [`nagios`] or [`jsonl`].
//! Every run produces one or more [`CheckResult`]s, sent as `check_result` payloads: on the
//! `state` lane when a result's status differs from the previous run's (or on the first run),
//! on the `metrics` lane otherwise, so a status change is never stuck behind metrics.

pub mod exec;
pub mod jsonl;
pub mod nagios;
pub mod probes;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bagui_protocol::Lane;
use bagui_protocol::assets::{CHECK_RESULT, CheckResult};
use bagui_protocol::messages::payload;
use serde::Deserialize;

use crate::{CollectError, Collector, Output};
use exec::{Ending, ExecOutput, ExecSpec};
use probes::{ProbeKind, ProbeSpec};

/// Interval when none is configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Timeout when none is configured (also capped at half the interval).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest interval accepted: checks are not a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Time beyond a check's own timeout for killing, reaping and collecting output, before the
/// scheduler's deadline abandons the run. `exec::run` needs about 1 s of it at worst.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);
/// Prefix of a check collector's name, keeping check names apart from built-in collectors.
pub const COLLECTOR_PREFIX: &str = "check.";

/// How a command's output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// Exit status 0–3, `TEXT|PERFDATA` ([`nagios`]).
    #[default]
    Nagios,
    /// One JSON result object per line ([`jsonl`]).
    Jsonl,
}

/// One `[[checks]]` entry as written. [`CheckConfig::validate`] turns it into a [`CheckSpec`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub name: String,
    /// Program and arguments (no shell). Exclusive with `probe`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A built-in probe. Exclusive with `command`; needs `target`.
    #[serde(default)]
    pub probe: Option<ProbeKind>,
    #[serde(default)]
    pub target: Option<String>,
    /// `60s`, `5m`, ... (`bagui_protocol::units::parse_duration`).
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    /// Commands only.
    #[serde(default)]
    pub convention: Option<Convention>,
    /// `http` probe only.
    #[serde(default)]
    pub expect_status: Option<Vec<u16>>,
    /// `tls_expiry` probe only.
    #[serde(default)]
    pub warn_days: Option<u32>,
    #[serde(default)]
    pub crit_days: Option<u32>,
}

/// What a check runs.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Command {
        argv: Vec<String>,
        convention: Convention,
    },
    Probe(ProbeSpec),
}

/// A validated check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why the `[[checks]]` config was refused. Every message names the check.
#[derive(Debug, thiserror::Error)]
pub enum CheckConfigError {
    #[error("a check has an empty name")]
    EmptyName,
    #[error("check {0:?}: name may only use A-Z a-z 0-9 _ . : - (at most 64 characters)")]
    BadName(String),
    #[error("check {0:?} is configured twice")]
    Duplicate(String),
    #[error("check {0:?}: set either command or probe, not both")]
    CommandAndProbe(String),
    #[error("check {0:?}: set command or probe")]
    NoCommandOrProbe(String),
    #[error("check {name:?}: {source}")]
    Command {
        name: String,
        #[source]
        source: exec::ExecError,
    },
    #[error("check {name:?}: {field} {message}")]
    BadDuration {
        name: String,
        field: &'static str,
        message: String,
    },
    #[error("check {name:?}: interval {interval:?} is below the minimum of 1s")]
    IntervalTooShort { name: String, interval: Duration },
    #[error("check {name:?}: timeout {timeout:?} must be shorter than interval {interval:?}")]
    TimeoutNotBelowInterval {
        name: String,
        timeout: Duration,
        interval: Duration,
    },
    #[error("check {name:?}: timeout must be more than zero")]
    ZeroTimeout { name: String },
    #[error("check {0:?}: probe needs a target")]
    NoTarget(String),
    #[error("check {name:?}: {option} is only for {only}")]
    MisplacedOption {
        name: String,
        option: &'static str,
        only: &'static str,
    },
    #[error("check {name:?}: {source}")]
    Target {
        name: String,
        #[source]
        source: probes::ProbeError,
    },
    #[error("check {0:?}: crit_days must not be above warn_days")]
    ThresholdOrder(String),
}

impl CheckConfig {
    /// Validates one entry on its own (names are checked for duplicates by [`validate`]).
    pub fn validate(&self) -> Result<CheckSpec, CheckConfigError> {
        let name = self.name.clone();
        validate_name(&name)?;
        let (interval, timeout) = self.durations()?;
        let kind = match (&self.command, self.probe) {
            (Some(_), Some(_)) => return Err(CheckConfigError::CommandAndProbe(name)),
            (None, None) => return Err(CheckConfigError::NoCommandOrProbe(name)),
            (Some(argv), None) => self.command_kind(argv)?,
            (None, Some(kind)) => CheckKind::Probe(self.probe_spec(kind, timeout)?),
        };
        Ok(CheckSpec {
            name,
            kind,
            interval,
            timeout,
        })
    }

    fn durations(&self) -> Result<(Duration, Duration), CheckConfigError> {
        let name = || self.name.clone();
        let parse = |field: &'static str, text: &Option<String>| {
            text.as_deref()
                .map(bagui_protocol::units::parse_duration)
                .transpose()
                .map_err(|message| CheckConfigError::BadDuration {
                    name: name(),
                    field,
                    message,
                })
        };
        let interval = parse("interval", &self.interval)?.unwrap_or(DEFAULT_INTERVAL);
        if interval < MIN_INTERVAL {
            return Err(CheckConfigError::IntervalTooShort {
                name: name(),
                interval,
            });
        }
        let timeout = parse("timeout", &self.timeout)?.unwrap_or(DEFAULT_TIMEOUT.min(interval / 2));
        if timeout.is_zero() {
            return Err(CheckConfigError::ZeroTimeout { name: name() });
        }
        if timeout >= interval {
            return Err(CheckConfigError::TimeoutNotBelowInterval {
                name: name(),
                timeout,
                interval,
            });
        }
        Ok((interval, timeout))
    }

    fn command_kind(&self, argv: &[String]) -> Result<CheckKind, CheckConfigError> {
        let name = || self.name.clone();
        let program = argv.first().map(String::as_str).unwrap_or("");
        exec::check_program_name(program).map_err(|source| CheckConfigError::Command {
            name: name(),
            source,
        })?;
        self.refuse_probe_options(None)?;
        if self.target.is_some() {
            return Err(self.misplaced("target", "probes"));
        }
        Ok(CheckKind::Command {
            argv: argv.to_vec(),
            convention: self.convention.unwrap_or_default(),
        })
    }

    fn probe_spec(
        &self,
        kind: ProbeKind,
        timeout: Duration,
    ) -> Result<ProbeSpec, CheckConfigError> {
        let target = self
            .target
            .clone()
            .ok_or_else(|| CheckConfigError::NoTarget(self.name.clone()))?;
        probes::validate_target(kind, &target).map_err(|source| CheckConfigError::Target {
            name: self.name.clone(),
            source,
        })?;
        if self.convention.is_some() {
            return Err(self.misplaced("convention", "commands"));
        }
        self.refuse_probe_options(Some(kind))?;
        let warn_days = self.warn_days.unwrap_or(probes::DEFAULT_WARN_DAYS);
        let crit_days = self.crit_days.unwrap_or(probes::DEFAULT_CRIT_DAYS);
        if crit_days > warn_days {
            return Err(CheckConfigError::ThresholdOrder(self.name.clone()));
        }
        Ok(ProbeSpec {
            kind,
            target,
            timeout,
            expect_status: self.expect_status.clone().unwrap_or_default(),
            warn_days,
            crit_days,
        })
    }

    /// Probe-specific options set where they mean nothing are mistakes, not no-ops.
    fn refuse_probe_options(&self, kind: Option<ProbeKind>) -> Result<(), CheckConfigError> {
        if self.expect_status.is_some() && kind != Some(ProbeKind::Http) {
            return Err(self.misplaced("expect_status", "probe = \"http\""));
        }
        if self.warn_days.is_some() && kind != Some(ProbeKind::TlsExpiry) {
            return Err(self.misplaced("warn_days", "probe = \"tls_expiry\""));
        }
        if self.crit_days.is_some() && kind != Some(ProbeKind::TlsExpiry) {
            return Err(self.misplaced("crit_days", "probe = \"tls_expiry\""));
        }
        Ok(())
    }

    fn misplaced(&self, option: &'static str, only: &'static str) -> CheckConfigError {
        CheckConfigError::MisplacedOption {
            name: self.name.clone(),
            option,
            only,
        }
    }
}

/// Names end up in collector names, result names and logs: keep them plain.
fn validate_name(name: &str) -> Result<(), CheckConfigError> {
    if name.is_empty() {
        return Err(CheckConfigError::EmptyName);
    }
    let plain = name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if plain {
        Ok(())
    } else {
        Err(CheckConfigError::BadName(name.to_owned()))
    }
}

/// Validates every entry and that names are unique.
pub fn validate(configs: &[CheckConfig]) -> Result<Vec<CheckSpec>, CheckConfigError> {
    let mut seen = HashSet::new();
    configs
        .iter()
        .map(|config| {
            let spec = config.validate()?;
            if !seen.insert(spec.name.clone()) {
                return Err(CheckConfigError::Duplicate(spec.name));
            }
            Ok(spec)
        })
        .collect()
}

/// One collector per configured check.
pub fn collectors(configs: &[CheckConfig]) -> Result<Vec<Box<dyn Collector>>, CheckConfigError> {
    Ok(validate(configs)?
        .into_iter()
        .map(|spec| Box::new(CheckCollector::new(spec)) as Box<dyn Collector>)
        .collect())
}

/// Runs a check once, with `started_ms`/`duration_ms` filled in.
pub fn run_check(spec: &CheckSpec, now_ms: u64) -> Vec<CheckResult> {
    match &spec.kind {
        CheckKind::Probe(probe) => vec![probes::run(&spec.name, probe, now_ms)],
        CheckKind::Command { argv, convention } => {
            run_command(&spec.name, argv, *convention, spec.timeout, now_ms)
        }
    }
}

/// Runs an external program and reads its output per `convention`.
pub fn run_command(
    name: &str,
    argv: &[String],
    convention: Convention,
    timeout: Duration,
    now_ms: u64,
) -> Vec<CheckResult> {
    let started = Instant::now();
    let exec_spec = ExecSpec {
        argv: argv.to_vec(),
        timeout,
        output_cap: exec::DEFAULT_OUTPUT_CAP,
    };
    let mut results = match (exec::run(&exec_spec), convention) {
        (Err(error), _) => vec![could_not_run(name, convention, error.to_string())],
        (Ok(output), _) if output.ending == Ending::TimedOut => {
            let mut result =
                could_not_run(name, convention, format!("timed out after {timeout:?}"));
            result.long_output = output.stdout.text().trim_end().to_owned();
            vec![result]
        }
        (Ok(output), Convention::Nagios) => vec![nagios_result(name, &output)],
        (Ok(output), Convention::Jsonl) => jsonl_results(name, &output),
    };
    let duration_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    for result in &mut results {
        result.started_ms = now_ms;
        result.duration_ms = duration_ms;
    }
    results
}

fn convention_name(convention: Convention) -> &'static str {
    match convention {
        Convention::Nagios => "nagios",
        Convention::Jsonl => jsonl::CONVENTION,
    }
}

/// UNKNOWN: the program did not start or did not finish.
fn could_not_run(name: &str, convention: Convention, error: String) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        convention: convention_name(convention).into(),
        status: nagios::UNKNOWN,
        output: format!("UNKNOWN: {error}"),
        error: Some(error),
        ..CheckResult::default()
    }
}

/// A Nagios plugin's exit and output as one result.
fn nagios_result(name: &str, output: &ExecOutput) -> CheckResult {
    let Ending::Exited(exit) = output.ending else {
        return could_not_run(name, Convention::Nagios, "timed out".into());
    };
    let (status, exit_error) = nagios::status_from_exit(exit);
    let parsed = nagios::parse_output(&output.stdout.text());
    let mut errors: Vec<String> = exit_error.into_iter().collect();
    errors.extend(stdout_problem(&output.stdout));
    errors.extend(parsed.notes);
    let mut text = parsed.output;
    if text.is_empty() {
        text = "(no output on stdout)".into();
        let stderr = output.stderr.text();
        if let Some(line) = stderr.lines().find(|line| !line.trim().is_empty()) {
            errors.push(format!("stderr: {}", line.trim()));
        }
    }
    CheckResult {
        name: name.to_owned(),
        convention: "nagios".into(),
        status,
        output: text,
        long_output: parsed.long_output,
        perfdata: parsed.perfdata,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        ..CheckResult::default()
    }
}

/// A JSON-lines program's results; exit problems are reported only when no line says more.
fn jsonl_results(name: &str, output: &ExecOutput) -> Vec<CheckResult> {
    let mut results = jsonl::parse(name, &output.stdout.text());
    if let Some(problem) = stdout_problem(&output.stdout) {
        results.push(jsonl::unknown(
            name,
            format!("{problem}; later results lost"),
        ));
    }
    let only_no_lines = results.len() == 1
        && results[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("no result"));
    if only_no_lines && let Ending::Exited(exit) = output.ending {
        let mut error = results[0].error.take().unwrap_or_default();
        if let (_, Some(exit_error)) = nagios::status_from_exit(exit) {
            error.push_str(&format!("; {exit_error}"));
        } else if let Some(code) = exit.code() {
            error.push_str(&format!("; exit status {code}"));
        }
        let stderr = output.stderr.text();
        if let Some(line) = stderr.lines().find(|line| !line.trim().is_empty()) {
            error.push_str(&format!("; stderr: {}", line.trim()));
        }
        results[0].output = format!("UNKNOWN: {error}");
        results[0].error = Some(error);
    }
    results
}

/// Why stdout may be incomplete.
fn stdout_problem(stdout: &exec::Captured) -> Option<String> {
    if stdout.truncated {
        Some(format!("stdout truncated at {} bytes", stdout.bytes.len()))
    } else if stdout.left_open {
        Some("stdout held open by a background process after the program exited".into())
    } else {
        None
    }
}

/// One configured check as a scheduled collector.
#[derive(Debug)]
pub struct CheckCollector {
    spec: CheckSpec,
    /// `check.NAME`, leaked once: collectors live as long as the config that made them.
    collector_name: &'static str,
    /// Status of each result name in the previous run, to pick the lane.
    last_status: Mutex<HashMap<String, u8>>,
}

impl CheckCollector {
    pub fn new(spec: CheckSpec) -> CheckCollector {
        let collector_name: &'static str =
            Box::leak(format!("{COLLECTOR_PREFIX}{}", spec.name).into_boxed_str());
        CheckCollector {
            spec,
            collector_name,
            last_status: Mutex::new(HashMap::new()),
        }
    }

    pub fn spec(&self) -> &CheckSpec {
        &self.spec
    }

    /// `State` for results whose status changed since the previous run (or that are new),
    /// `Metrics` for the rest. Remembers only this run's names, so the map stays bounded.
    fn lanes(&self, results: &[CheckResult]) -> Vec<Lane> {
        let mut last = self
            .last_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let lanes = results
            .iter()
            .map(|result| match last.get(&result.name) {
                Some(&previous) if previous == result.status => Lane::Metrics,
                _ => Lane::State,
            })
            .collect();
        *last = results
            .iter()
            .map(|result| (result.name.clone(), result.status))
            .collect();
        lanes
    }
}

impl Collector for CheckCollector {
    fn name(&self) -> &'static str {
        self.collector_name
    }

    fn interval(&self) -> Duration {
        self.spec.interval
    }

    /// The check's own timeout plus room to kill and reap, never beyond the interval.
    fn deadline(&self) -> Duration {
        (self.spec.timeout + DEADLINE_MARGIN).min(self.spec.interval)
    }

    fn collect(&self, now_ms: u64) -> Result<Vec<Output>, CollectError> {
        let results = run_check(&self.spec, now_ms);
        let lanes = self.lanes(&results);
        Ok(results
            .iter()
            .zip(lanes)
            .map(|(result, lane)| Output {
                lane,
                kind: CHECK_RESULT,
                body: payload::encode(result),
            })
            .collect())
    }
}
