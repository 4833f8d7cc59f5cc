//! Prometheus text exposition of fleet aggregates and, on request, per-agent series.
//!
//! The control plane's own metrics come from the `prometheus` registry ([`crate::metrics`]);
//! fleet figures are computed at scrape time from the store, so they need no registry of
//! their own and never go stale. Per-agent series are opt-in (`GET /metrics?agents=true`):
//! 18,000 agents × ~50 series is ~100 MB a scrape.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Metric families collected before rendering, so each gets one `# HELP`/`# TYPE` header
/// and its samples together, as the format requires.
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<String, Family>,
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: &'static str,
    /// Rendered label set → value; a repeated label set keeps the last value.
    samples: BTreeMap<String, f64>,
}

/// Makes `name` a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn metric_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// An agent's sample name as the control plane re-exports it: valid, snake_case, and without
/// the suffixes Prometheus reserves for other types (`_count`, `_sum`, `_bucket` on a gauge;
/// `_total` only on counters), so that `promtool check metrics` passes whatever an agent of any
/// version sends. `node_memory_MemAvailable_bytes` becomes `node_memory_mem_available_bytes`.
pub fn agent_metric_name(name: &str, counter: bool) -> String {
    let valid = metric_name(name);
    let mut snake = String::with_capacity(valid.len() + 8);
    let mut previous: Option<char> = None;
    for c in valid.chars() {
        if c.is_ascii_uppercase() {
            if previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit()) {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
        previous = Some(c);
    }
    for reserved in ["_count", "_sum", "_bucket"] {
        if let Some(stem) = snake.strip_suffix(reserved) {
            snake = format!("{stem}{reserved}_value");
        }
    }
    if !counter && let Some(stem) = snake.strip_suffix("_total") {
        snake = format!("{stem}_total_value");
    }
    snake
}

/// Makes `name` a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`).
pub fn label_name(name: &str) -> String {
    let mut out = metric_name(name).replace(':', "_");
    while out.starts_with("__") {
        out.remove(0);
    }
    out
}

fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

impl Exposition {
    /// Adds one sample. `kind` is `gauge` or `counter`; the first call for a name sets the
    /// family's help and type.
    pub fn add(
        &mut self,
        name: &str,
        kind: &'static str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let family = self
            .families
            .entry(metric_name(name))
            .or_insert_with(|| Family {
                help: help.to_owned(),
                kind,
                samples: BTreeMap::new(),
            });
        let mut seen = std::collections::HashSet::new();
        let rendered: Vec<String> = labels
            .iter()
            .map(|(name, value)| (label_name(name), *value))
            .filter(|(name, _)| seen.insert(name.clone()))
            .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
            .collect();
        family.samples.insert(rendered.join(","), value);
    }

    /// Appends the text format to `out`.
    pub fn render_into(&self, out: &mut String) {
        for (name, family) in &self.families {
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, value) in &family.samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {}", format_value(*value));
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", format_value(*value));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_grouped_escaped_and_named_validly() {
        let mut exposition = Exposition::default();
        exposition.add(
            "bagui_agents",
            "gauge",
            "Agents",
            &[("division", "南宁市\"x\"")],
            3.0,
        );
        exposition.add(
            "9bad-name",
            "gauge",
            "Bad",
            &[("__bad", "v"), ("ok", "a\nb")],
            1.0,
        );
        exposition.add(
            "bagui_agents",
            "gauge",
            "Agents",
            &[("division", "柳州市")],
            2.0,
        );
        let mut text = String::new();
        exposition.render_into(&mut text);
        assert_eq!(text.matches("# TYPE bagui_agents gauge").count(), 1);
        assert!(text.contains("bagui_agents{division=\"南宁市\\\"x\\\"\"} 3"));
        assert!(
            text.contains("_9bad_name{_bad=\"v\",ok=\"a\\nb\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn agent_names_are_made_lint_clean() {
        assert_eq!(
            agent_metric_name("node_memory_MemAvailable_bytes", false),
            "node_memory_mem_available_bytes"
        );
        assert_eq!(
            agent_metric_name("node_cpu_count", false),
            "node_cpu_count_value"
        );
        assert_eq!(
            agent_metric_name("node_cpu_seconds_total", true),
            "node_cpu_seconds_total"
        );
        assert_eq!(agent_metric_name("node_load1", false), "node_load1");
    }
}
