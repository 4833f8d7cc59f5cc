//! Probes pushed by the control plane (`cmd.set_probes`): a closed set of measurement kinds
//! (`tcp`, `http`, `dns`, `tls_expiry`) with bounded count, interval and timeout — never a
//! command to run. The control plane checks every target against the agent's division's
//! address ranges and audits the push; the agent checks the kinds and bounds again, keeps the
//! set in its state directory across restarts, and runs the due probes (looked for every 5 s).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bagui_plugins::checks::{CheckConfig, CheckSpec, run_check};
use bagui_plugins::{CollectError, Collector, Output};
use bagui_protocol::assets::CHECK_RESULT;
use bagui_protocol::messages::payload;
use bagui_protocol::{
    Lane, MAX_PUSHED_PROBE_TIMEOUT_MS, MAX_PUSHED_PROBES, MIN_PUSHED_PROBE_INTERVAL_MS, PushedProbe,
};

use crate::state::write_atomic;

/// Results are named `pushed.NAME`, apart from the configured checks.
pub const RESULT_PREFIX: &str = "pushed.";

struct Entry {
    spec: CheckSpec,
    due: Instant,
    last_status: Option<u8>,
}

/// The pushed probes of this agent, run as one collector.
pub struct PushedProbes {
    path: PathBuf,
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for PushedProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushedProbes")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Checks a pushed set against the agent's own limits and turns it into check specs.
pub fn validate(probes: &[PushedProbe]) -> Result<Vec<CheckSpec>, String> {
    if probes.len() > MAX_PUSHED_PROBES {
        return Err(format!(
            "{} probes pushed; at most {MAX_PUSHED_PROBES}",
            probes.len()
        ));
    }
    let mut names = std::collections::HashSet::new();
    probes
        .iter()
        .map(|probe| {
            if !names.insert(probe.name.as_str()) {
                return Err(format!("probe {:?} pushed twice", probe.name));
            }
            if !matches!(probe.kind.as_str(), "tcp" | "http" | "dns" | "tls_expiry") {
                return Err(format!(
                    "probe {:?}: kind {:?} is not one of tcp, http, dns, tls_expiry",
                    probe.name, probe.kind
                ));
            }
            if probe.interval_ms < MIN_PUSHED_PROBE_INTERVAL_MS
                || probe.timeout_ms == 0
                || probe.timeout_ms > MAX_PUSHED_PROBE_TIMEOUT_MS
                || probe.timeout_ms >= probe.interval_ms
            {
                return Err(format!(
                    "probe {:?}: interval {} ms / timeout {} ms out of bounds",
                    probe.name, probe.interval_ms, probe.timeout_ms
                ));
            }
            let config: CheckConfig = serde_json::from_value(serde_json::json!({
                "name": format!("{RESULT_PREFIX}{}", probe.name),
                "probe": probe.kind,
                "target": probe.target,
                "interval": format!("{}ms", probe.interval_ms),
                "timeout": format!("{}ms", probe.timeout_ms),
            }))
            .map_err(|error| format!("probe {:?}: {error}", probe.name))?;
            config
                .validate()
                .map_err(|error| format!("probe {:?}: {error}", probe.name))
        })
        .collect()
}

impl PushedProbes {
    /// Loads the set saved in `path` (none if missing; a damaged file is logged and ignored:
    /// the control plane pushes the set again).
    pub fn load(path: PathBuf) -> PushedProbes {
        let saved: Vec<PushedProbe> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "pushed probes unreadable; ignored");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let entries = match validate(&saved) {
            Ok(specs) => specs.into_iter().map(entry).collect(),
            Err(error) => {
                tracing::warn!(%error, "saved pushed probes refused; ignored");
                Vec::new()
            }
        };
        PushedProbes {
            path,
            entries: Mutex::new(entries),
        }
    }

    /// Replaces the set (validated, then saved, then applied). Returns what to tell the
    /// control plane.
    pub fn replace(&self, probes: &[PushedProbe]) -> Result<String, String> {
        let specs = validate(probes)?;
        let bytes = serde_json::to_vec_pretty(probes).map_err(|error| error.to_string())?;
        write_atomic(&self.path, &bytes, 0o600)
            .map_err(|error| format!("saving the probes: {error:#}"))?;
        let mut entries = lock(&self.entries);
        let previous: HashMap<String, Option<u8>> = entries
            .iter()
            .map(|entry| (entry.spec.name.clone(), entry.last_status))
            .collect();
        *entries = specs
            .into_iter()
            .map(|spec| {
                let last = previous.get(&spec.name).copied().flatten();
                Entry {
                    last_status: last,
                    ..entry(spec)
                }
            })
            .collect();
        Ok(format!("{} probes set", entries.len()))
    }

    pub fn names(&self) -> Vec<String> {
        lock(&self.entries)
            .iter()
            .map(|entry| entry.spec.name.clone())
            .collect()
    }
}

fn entry(spec: CheckSpec) -> Entry {
    // Spread first runs over the interval so a push to a county does not fire at once.
    let offset = spec.interval.mul_f64(rand::random::<f64>());
    Entry {
        spec,
        due: Instant::now() + offset.min(Duration::from_secs(5)),
        last_status: None,
    }
}

impl Collector for PushedProbes {
    fn name(&self) -> &'static str {
        "pushed_probes"
    }

    /// Due probes are looked for this often (pushed intervals are tens of seconds); an agent
    /// without pushed probes pays one cheap wake-up per tick.
    fn interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn deadline(&self) -> Duration {
        // Due probes run one after another, each within its own (≤ 10 s) timeout.
        Duration::from_millis(MAX_PUSHED_PROBE_TIMEOUT_MS * MAX_PUSHED_PROBES as u64)
    }

    fn is_due(&self) -> bool {
        let now = Instant::now();
        lock(&self.entries).iter().any(|entry| entry.due <= now)
    }

    fn collect(&self, now_ms: u64) -> Result<Vec<Output>, CollectError> {
        let due: Vec<CheckSpec> = {
            let mut entries = lock(&self.entries);
            let now = Instant::now();
            entries
                .iter_mut()
                .filter(|entry| entry.due <= now)
                .map(|entry| {
                    entry.due = now + entry.spec.interval;
                    entry.spec.clone()
                })
                .collect()
        };
        let mut outputs = Vec::new();
        for spec in due {
            for result in run_check(&spec, now_ms) {
                let changed = {
                    let mut entries = lock(&self.entries);
                    match entries
                        .iter_mut()
                        .find(|entry| entry.spec.name == spec.name)
                    {
                        Some(entry) => {
                            let changed = entry.last_status != Some(result.status);
                            entry.last_status = Some(result.status);
                            changed
                        }
                        // Removed by a push while it ran: report it all the same.
                        None => true,
                    }
                };
                outputs.push(Output {
                    lane: if changed { Lane::State } else { Lane::Metrics },
                    kind: CHECK_RESULT,
                    body: payload::encode(&result),
                });
            }
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(name: &str, kind: &str, target: &str) -> PushedProbe {
        PushedProbe {
            name: name.into(),
            kind: kind.into(),
            target: target.into(),
            interval_ms: 60_000,
            timeout_ms: 5_000,
        }
    }

    #[test]
    fn only_the_closed_set_within_bounds_is_accepted() {
        assert!(validate(&[probe("gw", "tcp", "10.45.1.1:443")]).is_ok());
        for bad in [
            vec![probe("x", "exec", "/bin/sh")],
            vec![
                probe("x", "tcp", "10.45.1.1:443"),
                probe("x", "dns", "a.gov.cn"),
            ],
            vec![PushedProbe {
                interval_ms: 10,
                ..probe("x", "tcp", "10.45.1.1:443")
            }],
            vec![PushedProbe {
                timeout_ms: 60_000,
                ..probe("x", "tcp", "10.45.1.1:443")
            }],
            vec![probe("x", "tcp", "not an address")],
            (0..=MAX_PUSHED_PROBES)
                .map(|i| probe(&format!("p{i}"), "dns", "a.gov.cn"))
                .collect(),
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_set_survives_a_restart_and_a_refused_push_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probes.json");
        let probes = PushedProbes::load(path.clone());
        probes
            .replace(&[probe("gw", "tcp", "127.0.0.1:9")])
            .unwrap();
        assert!(probes.replace(&[probe("x", "exec", "/bin/sh")]).is_err());
        assert_eq!(probes.names(), ["pushed.gw"]);
        let reloaded = PushedProbes::load(path);
        assert_eq!(reloaded.names(), ["pushed.gw"]);
    }
}
