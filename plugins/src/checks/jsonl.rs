//! The JSON-lines convention, for check programs written for Bagui rather than for Nagios.
//!
//! The program prints one JSON object per line on stdout; each line is one result:
//!
//! ```json
//! {"status":0,"output":"3 queues healthy","perfdata":[{"label":"depth","value":12,"uom":"c","warn":"100","crit":"1000","min":0}]}
//! {"name":"orders","status":1,"output":"orders queue slow","long_output":"oldest message 95 s"}
//! ```
//!
//! - `status` (required): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Any other number gives
//!   UNKNOWN with an error.
//! - `output`: one line of text (more lines move to the front of `long_output`).
//! - `long_output`: optional further text.
//! - `name`: optional; the result is reported as `CHECK/NAME` instead of `CHECK`, so one program
//!   can report several related results (one per queue, per disk, ...). `[A-Za-z0-9_.:-]`,
//!   at most 64 characters.
//! - `perfdata`: optional list of `{"label", "value", "uom", "warn", "crit", "min", "max"}`,
//!   the same meaning as a Nagios datum. `value` `null` (or missing) means undetermined;
//!   `warn`/`crit` are Nagios ranges as strings (`"10:"`, `"@10:20"`) or plain numbers. A bad
//!   datum is skipped and noted in the result's `error`.
//! - Fields this version does not know are ignored, so programs can add some without breaking
//!   older agents.
//!
//! Blank lines are skipped. A line that is not such an object becomes an UNKNOWN result (named
//! after the check) whose error says which line and why. No result lines at all is one UNKNOWN
//! result. The program's exit status is not used: the lines carry the status.

use bagui_protocol::assets::{CheckResult, PerfDatum};
use serde::Deserialize;

use super::nagios::{UNKNOWN, is_valid_range};

/// The `convention` of results produced here.
pub const CONVENTION: &str = "jsonl";

/// Results kept from one run; more lines are dropped with an error.
pub const MAX_RESULTS: usize = 100;

#[derive(Debug, Deserialize)]
struct Line {
    status: u8,
    #[serde(default)]
    output: String,
    #[serde(default)]
    long_output: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    perfdata: Vec<JsonDatum>,
}

#[derive(Debug, Deserialize)]
struct JsonDatum {
    label: String,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    uom: String,
    #[serde(default)]
    warn: Option<Threshold>,
    #[serde(default)]
    crit: Option<Threshold>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
}

/// A threshold as a range string or a bare number (`10` is the range `10`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Threshold {
    Number(f64),
    Text(String),
}

/// Why a line or a datum was not used.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("line {line}: not a result object: {source}")]
    Syntax {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line}: bad name {name:?} (use [A-Za-z0-9_.:-], at most 64 characters)")]
    BadName { line: usize, name: String },
    #[error("line {line}: status {status} is not a Nagios status (0-3)")]
    BadStatus { line: usize, status: u8 },
    #[error("perfdata {label:?}: {reason}")]
    BadDatum { label: String, reason: String },
}

/// Parses a program's stdout into results named after `check_name`. Fills `name`,
/// `convention`, `status`, `output`, `long_output`, `perfdata` and `error`; timing is the
/// caller's.
pub fn parse(check_name: &str, stdout: &str) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let mut dropped = 0usize;
    for (index, line) in stdout.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if results.len() == MAX_RESULTS {
            dropped += 1;
            continue;
        }
        results.push(parse_line(check_name, index + 1, line));
    }
    if dropped > 0 {
        results.push(unknown(
            check_name,
            format!("more than {MAX_RESULTS} result lines; {dropped} dropped"),
        ));
    }
    if results.is_empty() {
        results.push(unknown(check_name, "no result lines on stdout".into()));
    }
    results
}

/// One line as a result; a malformed line is an UNKNOWN result saying why.
fn parse_line(check_name: &str, line_number: usize, line: &str) -> CheckResult {
    let parsed: Line = match serde_json::from_str(line) {
        Ok(parsed) => parsed,
        Err(source) => {
            let error = JsonlError::Syntax {
                line: line_number,
                source,
            };
            return unknown(check_name, error.to_string());
        }
    };
    let name = match &parsed.name {
        None => check_name.to_owned(),
        Some(suffix) if is_valid_suffix(suffix) => format!("{check_name}/{suffix}"),
        Some(suffix) => {
            let error = JsonlError::BadName {
                line: line_number,
                name: suffix.clone(),
            };
            return unknown(check_name, error.to_string());
        }
    };
    let mut errors = Vec::new();
    let status = if parsed.status <= 3 {
        parsed.status
    } else {
        let error = JsonlError::BadStatus {
            line: line_number,
            status: parsed.status,
        };
        errors.push(error.to_string());
        UNKNOWN
    };
    let (output, long_output) = split_output(&parsed.output, &parsed.long_output);
    let mut perfdata = Vec::new();
    for datum in parsed.perfdata {
        match convert_datum(datum) {
            Ok(datum) => perfdata.push(datum),
            Err(error) => errors.push(format!("perfdata skipped: {error}")),
        }
    }
    CheckResult {
        name,
        convention: CONVENTION.into(),
        status,
        output,
        long_output,
        perfdata,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        ..CheckResult::default()
    }
}

/// Name suffixes end up in result names and logs: keep them plain.
fn is_valid_suffix(suffix: &str) -> bool {
    !suffix.is_empty()
        && suffix.len() <= 64
        && suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

/// `output` keeps its first line; the others go before `long_output`.
fn split_output(output: &str, long_output: &str) -> (String, String) {
    let (first, rest) = output.split_once('\n').unwrap_or((output, ""));
    let long = [rest.trim_end(), long_output.trim_end()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    (first.trim().to_owned(), long)
}

fn convert_datum(datum: JsonDatum) -> Result<PerfDatum, JsonlError> {
    let bad = |reason: String| JsonlError::BadDatum {
        label: datum.label.clone(),
        reason,
    };
    if datum.label.is_empty() {
        return Err(bad("empty label".into()));
    }
    let warn =
        threshold(datum.warn.as_ref()).map_err(|range| bad(format!("bad warn {range:?}")))?;
    let crit =
        threshold(datum.crit.as_ref()).map_err(|range| bad(format!("bad crit {range:?}")))?;
    Ok(PerfDatum {
        label: datum.label,
        value: datum.value,
        uom: datum.uom,
        warn,
        crit,
        min: datum.min,
        max: datum.max,
    })
}

/// A threshold as a validated range string; the offending text on error.
fn threshold(threshold: Option<&Threshold>) -> Result<Option<String>, String> {
    let text = match threshold {
        None => return Ok(None),
        Some(Threshold::Number(number)) => number.to_string(),
        Some(Threshold::Text(text)) if text.is_empty() => return Ok(None),
        Some(Threshold::Text(text)) => text.clone(),
    };
    if is_valid_range(&text) {
        Ok(Some(text))
    } else {
        Err(text)
    }
}

/// An UNKNOWN result for the check itself.
pub fn unknown(check_name: &str, error: String) -> CheckResult {
    CheckResult {
        name: check_name.to_owned(),
        convention: CONVENTION.into(),
        status: UNKNOWN,
        output: format!("UNKNOWN: {error}"),
        error: Some(error),
        ..CheckResult::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_and_fixture() {
        let results = parse(
            "queues",
            include_str!("../../tests/fixtures/checks/jsonl_mixed.jsonl"),
        );
        let summary: Vec<(&str, u8, bool)> = results
            .iter()
            .map(|r| (r.name.as_str(), r.status, r.error.is_some()))
            .collect();
        assert_eq!(
            summary,
            [
                ("queues", 0, false),
                ("queues/orders", 1, false),
                ("queues/mail", 2, true),
                ("queues", 3, true),
                ("queues", 3, true),
                ("queues/bad", 3, true),
            ]
        );
        let first = &results[0];
        assert_eq!(first.convention, CONVENTION);
        assert_eq!(first.output, "3 queues healthy");
        assert_eq!(
            first.perfdata,
            [PerfDatum {
                label: "depth".into(),
                value: Some(12.0),
                uom: "c".into(),
                warn: Some("100".into()),
                crit: Some("1000".into()),
                min: Some(0.0),
                max: None,
            }]
        );
        assert_eq!(results[1].long_output, "oldest message 95 s");
        // A bad datum is skipped, the good one kept, the reason recorded.
        assert_eq!(results[2].perfdata.len(), 1);
        assert!(results[2].error.as_deref().unwrap().contains("bad warn"));
        assert!(results[3].error.as_deref().unwrap().contains("line 4"));
        assert!(results[4].error.as_deref().unwrap().contains("bad name"));
        assert!(results[5].error.as_deref().unwrap().contains("status 7"));
    }

    #[test]
    fn no_lines_is_unknown() {
        for text in ["", "\n  \n"] {
            let results = parse("c", text);
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].status, UNKNOWN);
            assert!(results[0].error.as_deref().unwrap().contains("no result"));
        }
    }

    #[test]
    fn multi_line_output_moves_to_long_output_and_numbers_are_ranges() {
        let results = parse(
            "c",
            r#"{"status":0,"output":"one\ntwo","long_output":"three","perfdata":[{"label":"x","value":null,"warn":5,"crit":"@1:2","extra":1}]}"#,
        );
        assert_eq!(results[0].output, "one");
        assert_eq!(results[0].long_output, "two\nthree");
        assert_eq!(results[0].perfdata[0].value, None);
        assert_eq!(results[0].perfdata[0].warn.as_deref(), Some("5"));
        assert_eq!(results[0].perfdata[0].crit.as_deref(), Some("@1:2"));
        assert_eq!(results[0].error, None);
    }

    #[test]
    fn too_many_lines_are_dropped_with_an_error() {
        let text = "{\"status\":0}\n".repeat(MAX_RESULTS + 5);
        let results = parse("c", &text);
        assert_eq!(results.len(), MAX_RESULTS + 1);
        assert!(
            results[MAX_RESULTS]
                .error
                .as_deref()
                .unwrap()
                .contains("5 dropped")
        );
    }
}
