//! The Nagios plugin convention: exit status 0–3 and `TEXT|PERFDATA` output.
//!
//! Per the Monitoring Plugins development guidelines, the first line is `TEXT|PERFDATA`; the
//! following lines are long text, except that long text may itself contain one `|`, after
//! which the rest of that line and every later line are more performance data:
//!
//! ```text
//! DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968
//! / 15272 MB (77%);
//! /var/log 819 MB (84%); | /boot=68MB;88;93;0;98
//! /home=69357MB;253404;253409;0;253414
//! ```
//!
//! A datum is `'label'=value[UOM];[warn];[crit];[min];[max]`. Plugins in the wild get this
//! wrong often enough that one bad datum must not lose the others: a malformed datum is
//! skipped and described in a note, and nothing here panics on any input (see the
//! `nagios_output` fuzz target).

use std::process::ExitStatus;

use bagui_protocol::assets::PerfDatum;

/// Exit status of a plugin that could not say anything better.
pub const UNKNOWN: u8 = 3;

/// Units the guidelines define. Others are kept as printed, they are just not known here.
pub const KNOWN_UOMS: [&str; 10] = ["s", "ms", "us", "%", "B", "KB", "MB", "GB", "TB", "c"];

/// Plugin output split per the convention.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedOutput {
    /// First line before `|`, trimmed.
    pub output: String,
    /// Later lines that are not performance data, joined with `\n`.
    pub long_output: String,
    pub perfdata: Vec<PerfDatum>,
    /// One line per skipped datum, saying why.
    pub notes: Vec<String>,
}

/// Why one performance datum was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PerfError {
    #[error("{0:?}: no '=' between label and value")]
    NoEquals(String),
    #[error("{0:?}: empty label")]
    EmptyLabel(String),
    #[error("{0:?}: unterminated quoted label")]
    UnterminatedQuote(String),
    #[error("{token:?}: bad value {value:?}")]
    BadValue { token: String, value: String },
    #[error("{token:?}: bad {field} threshold {range:?} (not a Nagios range)")]
    BadRange {
        token: String,
        field: &'static str,
        range: String,
    },
    #[error("{token:?}: bad {field} {value:?}")]
    BadLimit {
        token: String,
        field: &'static str,
        value: String,
    },
    #[error("{0:?}: more than 5 ';'-separated fields")]
    TooManyFields(String),
}

/// Splits plugin stdout into output, long output and performance data.
pub fn parse_output(text: &str) -> ParsedOutput {
    let mut parsed = ParsedOutput::default();
    let mut perf_text = String::new();
    let mut lines = text.lines();
    if let Some(first) = lines.next() {
        let (output, perf) = split_pipe(first);
        parsed.output = output.trim().to_owned();
        push_perf_text(&mut perf_text, perf);
    }
    let mut long = Vec::new();
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            push_perf_text(&mut perf_text, Some(line));
            continue;
        }
        let (text, perf) = split_pipe(line);
        long.push(text.trim_end());
        if perf.is_some() {
            push_perf_text(&mut perf_text, perf);
            in_perf = true;
        }
    }
    while long.last().is_some_and(|line| line.is_empty()) {
        long.pop();
    }
    parsed.long_output = long.join("\n");
    parse_perfdata(&perf_text, &mut parsed.perfdata, &mut parsed.notes);
    parsed
}

/// Text before and after the first `|`.
fn split_pipe(line: &str) -> (&str, Option<&str>) {
    match line.split_once('|') {
        Some((text, perf)) => (text, Some(perf)),
        None => (line, None),
    }
}

fn push_perf_text(perf_text: &mut String, perf: Option<&str>) {
    if let Some(perf) = perf {
        perf_text.push_str(perf);
        perf_text.push(' ');
    }
}

/// Notes kept per output; a plugin printing prose after `|` would otherwise make thousands.
pub const MAX_NOTES: usize = 10;

/// Parses space-separated data, appending good ones to `out` and a note per bad one (at most
/// [`MAX_NOTES`], then one saying how many more were skipped).
pub fn parse_perfdata(text: &str, out: &mut Vec<PerfDatum>, notes: &mut Vec<String>) {
    let mut more = 0usize;
    for token in tokens(text) {
        match token.and_then(|(label, rest)| parse_datum(label, rest)) {
            Ok(datum) => out.push(datum),
            Err(_) if notes.len() >= MAX_NOTES => more += 1,
            Err(error) => notes.push(format!("perfdata skipped: {error}")),
        }
    }
    if more > 0 {
        notes.push(format!("perfdata: {more} more malformed data skipped"));
    }
}

/// A datum split into its label (unquoted) and what follows the `=`.
type Token = Result<(String, String), PerfError>;

/// Splits perfdata into tokens. Whitespace separates tokens except inside a quoted label,
/// where `''` stands for one `'`.
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return out;
        };
        let label = if first == '\'' {
            chars.next();
            match quoted_label(&mut chars) {
                Some(label) => label,
                None => {
                    let rest: String = chars.collect();
                    out.push(Err(PerfError::UnterminatedQuote(format!("'{rest}"))));
                    return out;
                }
            }
        } else {
            take_until(&mut chars, |c| c == '=' || c.is_whitespace())
        };
        if chars.next_if_eq(&'=').is_none() {
            let rest = take_until(&mut chars, char::is_whitespace);
            out.push(Err(PerfError::NoEquals(format!("{label}{rest}"))));
            continue;
        }
        let rest = take_until(&mut chars, char::is_whitespace);
        out.push(Ok((label, rest)));
    }
}

/// The rest of a quoted label after its opening quote, `None` when the closing quote is missing.
fn quoted_label(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let mut label = String::new();
    loop {
        match chars.next()? {
            '\'' if chars.next_if_eq(&'\'').is_some() => label.push('\''),
            '\'' => return Some(label),
            c => label.push(c),
        }
    }
}

fn take_until(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    stop: impl Fn(char) -> bool,
) -> String {
    let mut taken = String::new();
    while let Some(c) = chars.next_if(|&c| !stop(c)) {
        taken.push(c);
    }
    taken
}

/// Parses `value[UOM];[warn];[crit];[min];[max]` for `label`.
pub fn parse_datum(label: String, rest: String) -> Result<PerfDatum, PerfError> {
    let token = || format!("{label}={rest}");
    if label.is_empty() {
        return Err(PerfError::EmptyLabel(token()));
    }
    let fields: Vec<&str> = rest.split(';').collect();
    if fields.iter().skip(5).any(|field| !field.is_empty()) {
        return Err(PerfError::TooManyFields(token()));
    }
    let field = |index: usize| fields.get(index).copied().unwrap_or("");
    let (value, uom) = parse_value(field(0)).ok_or_else(|| PerfError::BadValue {
        token: token(),
        value: field(0).to_owned(),
    })?;
    let range = |index: usize, name: &'static str| -> Result<Option<String>, PerfError> {
        let text = field(index);
        if text.is_empty() {
            Ok(None)
        } else if is_valid_range(text) {
            Ok(Some(text.to_owned()))
        } else {
            Err(PerfError::BadRange {
                token: token(),
                field: name,
                range: text.to_owned(),
            })
        }
    };
    let limit = |index: usize, name: &'static str| -> Result<Option<f64>, PerfError> {
        let text = field(index);
        if text.is_empty() {
            return Ok(None);
        }
        parse_number(text)
            .map(Some)
            .ok_or_else(|| PerfError::BadLimit {
                token: token(),
                field: name,
                value: text.to_owned(),
            })
    };
    Ok(PerfDatum {
        warn: range(1, "warn")?,
        crit: range(2, "crit")?,
        min: limit(3, "min")?,
        max: limit(4, "max")?,
        label,
        value,
        uom,
    })
}

/// `value[UOM]`: a number followed by an optional unit, or `U` for "undetermined".
fn parse_value(text: &str) -> Option<(Option<f64>, String)> {
    if text == "U" {
        return Some((None, String::new()));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, uom) = text.split_at(split);
    let value = parse_number(number)?;
    // A unit with digits is a malformed number (`1e3`, `1,5`) rather than a unit.
    if uom
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c.is_ascii_digit())
    {
        return None;
    }
    Some((Some(value), uom.to_owned()))
}

/// A finite decimal number (`[-+]digits[.digits]`): no exponents, `inf` or `nan`, which
/// plugins do not print and `f64::from_str` would otherwise accept.
fn parse_number(text: &str) -> Option<f64> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let well_formed = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit());
    if !well_formed {
        return None;
    }
    text.parse::<f64>().ok().filter(|value| value.is_finite())
}

/// Whether `text` is a Nagios threshold range: `10`, `10:`, `~:10`, `10:20`, `@10:20`
/// (and `:10`, which the Monitoring Plugins library reads as `0:10`).
pub fn is_valid_range(text: &str) -> bool {
    let text = text.strip_prefix('@').unwrap_or(text);
    let Some((start, end)) = text.split_once(':') else {
        return parse_number(text).is_some();
    };
    let start = match start {
        "~" => None,
        "" => Some(0.0),
        number => match parse_number(number) {
            Some(value) => Some(value),
            None => return false,
        },
    };
    if end.is_empty() {
        // `10:` and `~:` (everything, never alerts) are ranges; a lone `:` says nothing.
        return !text.starts_with(':');
    }
    match (start, parse_number(end)) {
        (_, None) => false,
        (Some(start), Some(end)) => start <= end,
        (None, Some(_)) => true,
    }
}

/// Maps a plugin's exit to a Nagios status: 0–3 as they are, anything else (another code, or
/// killed by a signal) is UNKNOWN with the reason.
pub fn status_from_exit(status: ExitStatus) -> (u8, Option<String>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code @ 0..=3), _) => (code as u8, None),
        (Some(code), _) => (
            UNKNOWN,
            Some(format!("exit status {code} is not a Nagios status (0-3)")),
        ),
        (None, Some(signal)) => (UNKNOWN, Some(format!("killed by signal {signal}"))),
        (None, None) => (UNKNOWN, Some(format!("ended without status: {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedOutput {
        parse_output(text)
    }

    fn datum(label: &str, value: Option<f64>, uom: &str) -> PerfDatum {
        PerfDatum {
            label: label.into(),
            value,
            uom: uom.into(),
            ..PerfDatum::default()
        }
    }

    #[test]
    fn first_line_text_and_perfdata() {
        let parsed = parse(
            "LOAD OK - total load average: 1.10, 0.89, 1.39|load1=1.100;1000.000;2000.000;0; \
             load5=0.890;1000.000;2000.000;0; load15=1.390;1000.000;2000.000;0; \n",
        );
        assert_eq!(
            parsed.output,
            "LOAD OK - total load average: 1.10, 0.89, 1.39"
        );
        assert_eq!(parsed.long_output, "");
        assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
        assert_eq!(parsed.perfdata.len(), 3);
        assert_eq!(
            parsed.perfdata[0],
            PerfDatum {
                label: "load1".into(),
                value: Some(1.1),
                uom: String::new(),
                warn: Some("1000.000".into()),
                crit: Some("2000.000".into()),
                min: Some(0.0),
                max: None,
            }
        );
    }

    #[test]
    fn long_output_and_perfdata_continued_on_later_lines() {
        let parsed = parse(include_str!(
            "../../tests/fixtures/checks/nagios_multiline.txt"
        ));
        assert_eq!(parsed.output, "DISK OK - free space: / 3326 MB (56%);");
        assert_eq!(
            parsed.long_output,
            "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%);"
        );
        let labels: Vec<&str> = parsed.perfdata.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["/", "/boot", "/home", "/var/log"]);
        assert_eq!(parsed.perfdata[3].uom, "MB");
        assert_eq!(parsed.perfdata[3].max, Some(980.0));
        assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
    }

    #[test]
    fn quoted_labels_with_spaces_and_escaped_quotes() {
        let parsed = parse("OK | 'free space'=10GB;; 'it''s'=1c 'a=b'=2");
        assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
        assert_eq!(
            parsed.perfdata,
            [
                datum("free space", Some(10.0), "GB"),
                datum("it's", Some(1.0), "c"),
                datum("a=b", Some(2.0), ""),
            ]
        );
    }

    #[test]
    fn undetermined_value_and_unknown_uom_and_trailing_empty_fields() {
        let parsed = parse("OK | a=U;;;; b=5req/s;;;; c=-1.5;;;-10;10 d=3%;;;;;;");
        assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
        assert_eq!(parsed.perfdata[0], datum("a", None, ""));
        assert_eq!(parsed.perfdata[1], datum("b", Some(5.0), "req/s"));
        assert_eq!(parsed.perfdata[2].value, Some(-1.5));
        assert_eq!(parsed.perfdata[2].min, Some(-10.0));
        assert_eq!(parsed.perfdata[2].max, Some(10.0));
        assert_eq!(parsed.perfdata[3], datum("d", Some(3.0), "%"));
        assert!(KNOWN_UOMS.contains(&parsed.perfdata[3].uom.as_str()));
    }

    #[test]
    fn ranges_in_all_forms_are_kept_as_written() {
        let parsed = parse("OK | a=1;10;~:10 b=1;10:;@10:20 c=1;:5;-5:-1");
        assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
        let ranges: Vec<(Option<&str>, Option<&str>)> = parsed
            .perfdata
            .iter()
            .map(|d| (d.warn.as_deref(), d.crit.as_deref()))
            .collect();
        assert_eq!(
            ranges,
            [
                (Some("10"), Some("~:10")),
                (Some("10:"), Some("@10:20")),
                (Some(":5"), Some("-5:-1")),
            ]
        );
    }

    #[test]
    fn range_validation() {
        for good in [
            "10", "10:", "~:10", "10:20", "@10:20", "@~:0", "0.5:1.5", "-3", ":7",
        ] {
            assert!(is_valid_range(good), "{good}");
        }
        for bad in [
            "", "@", "x", "20:10", "10:20:30", "~", "@:", "1e3", "inf", "1..2", ":",
        ] {
            assert!(!is_valid_range(bad), "{bad}");
        }
    }

    #[test]
    fn malformed_data_are_skipped_with_notes_and_the_rest_kept() {
        let parsed = parse(
            "WARN | good=1 novalue noequals= =5 bad=abc w=1;x c=1;;20:10 m=1;;;zero \
             many=1;;;;;7 exp=1e3 'open=3",
        );
        assert_eq!(parsed.perfdata, [datum("good", Some(1.0), "")]);
        assert_eq!(parsed.notes.len(), 10, "{:#?}", parsed.notes);
        assert!(parsed.notes[0].contains("novalue"));
        assert!(parsed.notes.last().unwrap().contains("unterminated"));
    }

    #[test]
    fn notes_are_bounded() {
        let parsed = parse(&format!("OK | {}", "junk ".repeat(1000)));
        assert_eq!(parsed.notes.len(), MAX_NOTES + 1);
        assert!(parsed.notes[MAX_NOTES].contains("990 more"));
    }

    #[test]
    fn empty_and_odd_input_does_not_panic() {
        for text in [
            "",
            "\n\n",
            "|",
            "||||",
            "a|b|c\n|\n|",
            "'",
            "x='",
            "é=1µs",
            "\u{0}=\u{0}",
        ] {
            let parsed = parse(text);
            assert!(!parsed.output.contains('\n'));
        }
        assert_eq!(parse("é=1µs").perfdata.len(), 0);
        assert_eq!(parse("x | é=1µs").perfdata, [datum("é", Some(1.0), "µs")]);
    }

    #[test]
    fn exit_status_mapping() {
        use std::os::unix::process::ExitStatusExt;
        for code in 0..=3u8 {
            let status = ExitStatus::from_raw(i32::from(code) << 8);
            assert_eq!(status_from_exit(status), (code, None));
        }
        let (status, error) = status_from_exit(ExitStatus::from_raw(4 << 8));
        assert_eq!(status, UNKNOWN);
        assert!(error.unwrap().contains("exit status 4"));
        let (status, error) = status_from_exit(ExitStatus::from_raw(9));
        assert_eq!(status, UNKNOWN);
        assert!(error.unwrap().contains("signal 9"));
    }
}
