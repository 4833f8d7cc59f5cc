//! Health thresholds with a duration: the agents' samples (node_exporter names) compared with
//! `[[thresholds]]` rules; a rule that stays breached for its `for` duration raises a finding
//! in the incident engine, and clears it when the samples are back on the good side.
//!
//! A rule's `expr` is one metric (`node_load5`) or the ratio of two
//! (`node_filesystem_avail_bytes / node_filesystem_size_bytes`): samples are paired on equal
//! label sets, or every sample is divided by the denominator's single unlabelled one
//! (`node_load5 / node_cpu_count`). `labels` narrows the samples (`{ mountpoint = "/" }`). The
//! worst matching sample decides; one incident per agent and rule.
//!
//! State lives in memory: after a control-plane restart a breach must last `for` again before
//! it raises (an incident still open in the engine is simply confirmed then).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bagui_ops::incidents::{Event, Finding, Subject};
use bagui_ops::model::{Category, Millis, Severity};
use bagui_protocol::messages::payload::Sample;
use serde::Deserialize;

/// Which side of `value` is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Comparison {
    #[serde(rename = ">")]
    Above,
    #[serde(rename = "<")]
    Below,
}

/// One `[[thresholds]]` rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    /// Shown as the incident title (with the agent and the worst value).
    pub name: String,
    pub expr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub op: Comparison,
    pub value: f64,
    #[serde(rename = "for", with = "bagui_protocol::units::duration")]
    pub duration: Duration,
    /// `critical` (P1), `high`/`major` (P2), `warning` (P3).
    #[serde(default = "default_severity")]
    pub severity: String,
    #[serde(default = "default_category")]
    pub category: String,
}

fn default_severity() -> String {
    "warning".into()
}

fn default_category() -> String {
    "host".into()
}

/// The rules a deployment gets without `[[thresholds]]` in its file.
pub fn default_rules() -> Vec<ThresholdRule> {
    let rule = |name: &str, expr: &str, op, value, minutes: u64, severity: &str| ThresholdRule {
        name: name.into(),
        expr: expr.into(),
        labels: BTreeMap::new(),
        op,
        value,
        duration: Duration::from_secs(minutes * 60),
        severity: severity.into(),
        category: "host".into(),
    };
    vec![
        rule(
            "磁盘空间不足 (filesystem < 10 % free)",
            "node_filesystem_avail_bytes / node_filesystem_size_bytes",
            Comparison::Below,
            0.10,
            5,
            "high",
        ),
        rule(
            "系统负载过高 (load5 > 2 per CPU)",
            "node_load5 / node_cpu_count",
            Comparison::Above,
            2.0,
            10,
            "warning",
        ),
        rule(
            "文件句柄将满 (> 90 % of file descriptors)",
            "node_filefd_allocated / node_filefd_maximum",
            Comparison::Above,
            0.9,
            5,
            "high",
        ),
    ]
}

/// The `[[thresholds]]` of `control-plane.toml`; without any, [`default_rules`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Thresholds(pub Vec<ThresholdRule>);

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds(default_rules())
    }
}

/// Why a rule was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("threshold {0:?}: expr must be `metric` or `metric / metric`")]
    Expr(String),
    #[error("threshold {0:?}: the name is empty")]
    Name(String),
    #[error("threshold {0:?}: value must be a finite number")]
    Value(String),
}

/// Checks every rule.
pub fn validate(rules: &[ThresholdRule]) -> Result<(), RuleError> {
    for rule in rules {
        if rule.name.trim().is_empty() {
            return Err(RuleError::Name(rule.expr.clone()));
        }
        if parse_expr(&rule.expr).is_none() {
            return Err(RuleError::Expr(rule.name.clone()));
        }
        if !rule.value.is_finite() {
            return Err(RuleError::Value(rule.name.clone()));
        }
    }
    Ok(())
}

fn parse_expr(expr: &str) -> Option<(&str, Option<&str>)> {
    let valid = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    match expr.split_once('/') {
        Some((a, b)) => {
            let (a, b) = (a.trim(), b.trim());
            (valid(a) && valid(b)).then_some((a, Some(b)))
        }
        None => valid(expr.trim()).then_some((expr.trim(), None)),
    }
}

#[derive(Debug, Default)]
struct Breach {
    since: Option<Millis>,
    firing: bool,
}

/// The rules and what each agent's samples did lately.
#[derive(Debug, Default)]
pub struct ThresholdWatch {
    rules: Vec<ThresholdRule>,
    state: HashMap<(String, usize), Breach>,
}

impl ThresholdWatch {
    pub fn new(rules: Vec<ThresholdRule>) -> ThresholdWatch {
        ThresholdWatch {
            rules,
            state: HashMap::new(),
        }
    }

    /// One agent's samples taken at `taken_ms`; returns the findings to raise or clear.
    pub fn observe(&mut self, agent: &str, taken_ms: Millis, samples: &[Sample]) -> Vec<Event> {
        let mut events = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let Some(values) = evaluate(rule, samples) else {
                continue; // The agent does not report this metric.
            };
            let worst = values.into_iter().reduce(|a, b| match rule.op {
                Comparison::Above => a.max(b),
                Comparison::Below => a.min(b),
            });
            let Some(worst) = worst else {
                continue;
            };
            let breached = match rule.op {
                Comparison::Above => worst > rule.value,
                Comparison::Below => worst < rule.value,
            };
            let state = self.state.entry((agent.to_owned(), index)).or_default();
            let finding = |firing: bool| {
                Event::Finding(Finding {
                    fingerprint: format!("threshold:{agent}:{}", rule.name),
                    subject: Subject::Agent(agent.to_owned()),
                    severity: Severity::from_label(&rule.severity),
                    category: Category::from_label(&rule.category),
                    title: format!("{} on agent {agent}: {}", rule.name, format_value(worst)),
                    firing,
                    at: taken_ms,
                })
            };
            if breached {
                let since = *state.since.get_or_insert(taken_ms);
                if !state.firing
                    && taken_ms.saturating_sub(since) >= rule.duration.as_millis() as Millis
                {
                    state.firing = true;
                    events.push(finding(true));
                }
            } else {
                state.since = None;
                if state.firing {
                    state.firing = false;
                    events.push(finding(false));
                }
            }
        }
        events
    }

    /// Forgets an agent (revoked, or its state is no longer wanted).
    pub fn forget(&mut self, agent: &str) {
        self.state.retain(|(known, _), _| known != agent);
    }
}

fn format_value(value: f64) -> String {
    if value.abs() < 10.0 {
        format!("{value:.3}")
    } else {
        format!("{value:.0}")
    }
}

fn matches(rule: &ThresholdRule, sample: &Sample) -> bool {
    rule.labels.iter().all(|(name, value)| {
        sample
            .labels
            .iter()
            .any(|(key, found)| key == name && found == value)
    })
}

/// The rule's value for every matching label set; `None` when the metric is absent.
fn evaluate(rule: &ThresholdRule, samples: &[Sample]) -> Option<Vec<f64>> {
    let (numerator, denominator) = parse_expr(&rule.expr)?;
    let tops: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.name == numerator && matches(rule, sample))
        .collect();
    if tops.is_empty() {
        return None;
    }
    let Some(denominator) = denominator else {
        return Some(tops.iter().map(|sample| sample.value).collect());
    };
    let bottoms: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.name == denominator)
        .collect();
    let single = match bottoms.as_slice() {
        [only] if only.labels.is_empty() => Some(only.value),
        _ => None,
    };
    let values: Vec<f64> = tops
        .iter()
        .filter_map(|top| {
            let divisor = single.or_else(|| {
                bottoms
                    .iter()
                    .find(|bottom| same_labels(&bottom.labels, &top.labels))
                    .map(|bottom| bottom.value)
            })?;
            (divisor != 0.0).then(|| top.value / divisor)
        })
        .filter(|value| value.is_finite())
        .collect();
    (!values.is_empty()).then_some(values)
}

fn same_labels(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len() && a.iter().all(|pair| b.contains(pair))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, value: f64, labels: &[(&str, &str)]) -> Sample {
        Sample {
            name: name.into(),
            value,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn disk(root_free: f64, data_free: f64) -> Vec<Sample> {
        vec![
            sample(
                "node_filesystem_avail_bytes",
                root_free,
                &[("mountpoint", "/")],
            ),
            sample("node_filesystem_size_bytes", 100.0, &[("mountpoint", "/")]),
            sample(
                "node_filesystem_avail_bytes",
                data_free,
                &[("mountpoint", "/data")],
            ),
            sample(
                "node_filesystem_size_bytes",
                100.0,
                &[("mountpoint", "/data")],
            ),
            sample("node_load5", 9.0, &[]),
            sample("node_cpu_count", 4.0, &[]),
        ]
    }

    fn firing(events: &[Event]) -> Vec<(bool, String)> {
        events
            .iter()
            .map(|event| match event {
                Event::Finding(finding) => (finding.firing, finding.title.clone()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_breach_raises_only_after_its_duration_and_clears_when_it_ends() {
        let mut watch = ThresholdWatch::new(default_rules());
        const MIN: Millis = 60_000;
        // /data at 5 % free from t=0; load5 / CPU = 2.25 from t=0.
        assert!(watch.observe("a", 0, &disk(50.0, 5.0)).is_empty());
        assert!(watch.observe("a", 4 * MIN, &disk(50.0, 5.0)).is_empty());
        let raised = firing(&watch.observe("a", 5 * MIN, &disk(50.0, 5.0)));
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert!(raised[0].0);
        assert!(raised[0].1.contains("磁盘空间不足") && raised[0].1.contains("0.050"));
        // Still breached: nothing new. Load crosses its 10 minutes.
        let more = firing(&watch.observe("a", 10 * MIN, &disk(50.0, 4.0)));
        assert_eq!(more.len(), 1);
        assert!(more[0].1.contains("系统负载过高"), "{more:?}");
        // Space freed: cleared, once.
        let mut freed = disk(50.0, 50.0);
        freed[4].value = 1.0;
        let cleared = firing(&watch.observe("a", 11 * MIN, &freed));
        assert_eq!(cleared.iter().filter(|(f, _)| !f).count(), 2, "{cleared:?}");
        assert!(watch.observe("a", 12 * MIN, &freed).is_empty());
        // A breach that ends before its duration never raises.
        assert!(watch.observe("a", 13 * MIN, &disk(50.0, 1.0)).is_empty());
        assert!(watch.observe("a", 14 * MIN, &freed).is_empty());
        assert!(watch.observe("a", 30 * MIN, &disk(50.0, 1.0)).is_empty());
    }

    #[test]
    fn labels_narrow_and_missing_metrics_say_nothing() {
        let rule = ThresholdRule {
            labels: [("mountpoint".to_owned(), "/".to_owned())].into(),
            duration: Duration::ZERO,
            ..default_rules().remove(0)
        };
        let mut watch = ThresholdWatch::new(vec![rule]);
        // /data is nearly full but the rule watches / only.
        assert!(watch.observe("a", 0, &disk(50.0, 1.0)).is_empty());
        assert_eq!(firing(&watch.observe("a", 1, &disk(2.0, 50.0))).len(), 1);
        assert!(
            watch
                .observe("b", 0, &[sample("node_load1", 1.0, &[])])
                .is_empty()
        );
        // A zero denominator is no value, not infinity.
        let zero = vec![
            sample("node_filesystem_avail_bytes", 0.0, &[("mountpoint", "/")]),
            sample("node_filesystem_size_bytes", 0.0, &[("mountpoint", "/")]),
        ];
        assert!(watch.observe("c", 0, &zero).is_empty());
    }

    #[test]
    fn rules_are_validated() {
        assert!(validate(&default_rules()).is_ok());
        let bad = |expr: &str| ThresholdRule {
            expr: expr.into(),
            ..default_rules().remove(0)
        };
        for expr in ["", "a / ", "a b", "a / b / c", "rate(a[5m])"] {
            assert!(validate(&[bad(expr)]).is_err(), "{expr}");
        }
        let text = r#"
            name = "温度过高"
            expr = "node_hwmon_temp_celsius"
            op = ">"
            value = 85.0
            for = "2m"
            severity = "critical"
        "#;
        let rule: ThresholdRule = toml::from_str(text).unwrap();
        assert_eq!(rule.op, Comparison::Above);
        assert_eq!(rule.duration, Duration::from_secs(120));
        assert!(toml::from_str::<ThresholdRule>(&text.replace("\">\"", "\">=\"")).is_err());
    }
}
