//! `agent.toml`: the agent's tunables. Everything has a default; the file is optional.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use bagui_protocol::units;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub link: LinkSection,
    pub outbox: OutboxSection,
    pub collectors: CollectorsSection,
    pub status: StatusSection,
    pub self_metrics: SelfMetricsSection,
    pub posture: PostureSection,
    pub fim: FimSection,
    pub log: LogSection,
    pub identity: IdentitySection,
    /// External check plugins (Nagios, JSON-lines) and built-in probes: `[[checks]]`.
    pub checks: Vec<bagui_plugins::checks::CheckConfig>,
}

/// Reconnection and QUIC timers.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkSection {
    /// First reconnect delay bound (full jitter: a random delay up to this).
    #[serde(with = "units::duration")]
    pub backoff_min: Duration,
    /// Largest reconnect delay bound.
    #[serde(with = "units::duration")]
    pub backoff_max: Duration,
    #[serde(with = "units::duration")]
    pub connect_timeout: Duration,
    /// The link is declared down after this long without any packet from the control plane.
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,
    #[serde(with = "units::duration")]
    pub keep_alive: Duration,
}

impl Default for LinkSection {
    fn default() -> LinkSection {
        LinkSection {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSection {
    /// Most bytes buffered while the link is down.
    #[serde(with = "units::size")]
    pub max_size: u64,
}

impl Default for OutboxSection {
    fn default() -> OutboxSection {
        OutboxSection { max_size: 64 << 20 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorsSection {
    #[serde(with = "units::duration")]
    pub host_facts_interval: Duration,
    /// Whether to send the basic host metrics (CPU, memory, disks, network) at all — off
    /// where another collector already scrapes the box.
    pub metrics_enabled: bool,
    #[serde(with = "units::duration")]
    pub metrics_interval: Duration,
    /// Whether to send the asset inventory at all.
    pub assets_enabled: bool,
    /// How often the asset inventory is read and diffed (changes are sent as events).
    #[serde(with = "units::duration")]
    pub assets_interval: Duration,
}

impl Default for CollectorsSection {
    fn default() -> CollectorsSection {
        CollectorsSection {
            host_facts_interval: Duration::from_secs(3600),
            metrics_enabled: true,
            metrics_interval: Duration::from_secs(15),
            assets_enabled: true,
            assets_interval: Duration::from_secs(300),
        }
    }
}

/// The security baseline (等保2.0 / CIS-style checks).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostureSection {
    pub enabled: bool,
    /// How often the whole baseline runs (a protected file changing runs it at once).
    #[serde(with = "units::duration")]
    pub interval: Duration,
    /// A policy file replacing the built-in one.
    pub policy: Option<std::path::PathBuf>,
}

impl Default for PostureSection {
    fn default() -> PostureSection {
        PostureSection {
            enabled: true,
            interval: Duration::from_secs(3600),
            policy: None,
        }
    }
}

/// File integrity monitoring (SM3 digests; inotify, periodic re-scan as the safety net).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FimSection {
    pub enabled: bool,
    /// Watched in addition to the defaults (`/etc/passwd`, `/etc/shadow`, `/etc/ssh/`, ...).
    pub paths: Vec<String>,
    #[serde(with = "units::duration")]
    pub rescan_interval: Duration,
}

impl Default for FimSection {
    fn default() -> FimSection {
        FimSection {
            enabled: true,
            paths: Vec::new(),
            rescan_interval: Duration::from_secs(12 * 3600),
        }
    }
}

/// The agent's own metrics on a local port (off unless `listen` is set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfMetricsSection {
    /// Loopback address to serve `GET /metrics` on, e.g. `127.0.0.1:9469`.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusSection {
    /// How often `status.json` is refreshed.
    #[serde(with = "units::duration")]
    pub interval: Duration,
}

impl Default for StatusSection {
    fn default() -> StatusSection {
        StatusSection {
            interval: Duration::from_secs(5),
        }
    }
}

/// The agent's private keys (`identity.pem`, `sm2.key` in the state directory).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySection {
    /// A file whose first line is the passphrase the keys are encrypted under (SM4-CCM,
    /// PBKDF2-HMAC-SM3); unset keeps them in plaintext (0600). `BAGUI_AGENT_KEY_PASSPHRASE_FILE`
    /// (or `--key-passphrase-file`) overrides it.
    pub key_passphrase_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    pub level: String,
}

impl Default for LogSection {
    fn default() -> LogSection {
        LogSection {
            level: "info".into(),
        }
    }
}

impl AgentConfig {
    pub fn parse(text: &str) -> Result<AgentConfig> {
        let config: AgentConfig = toml::from_str(text)?;
        anyhow::ensure!(
            config.link.backoff_min > Duration::ZERO
                && config.link.backoff_min <= config.link.backoff_max,
            "link.backoff_min must be positive and at most link.backoff_max"
        );
        anyhow::ensure!(
            config.outbox.max_size >= 64 << 10,
            "outbox.max_size must be at least 64KiB"
        );
        anyhow::ensure!(
            config.collectors.metrics_interval >= Duration::from_millis(100),
            "collectors.metrics_interval must be at least 100ms"
        );
        anyhow::ensure!(
            config.collectors.assets_interval >= Duration::from_millis(100),
            "collectors.assets_interval must be at least 100ms"
        );
        bagui_plugins::checks::validate(&config.checks).context("in [[checks]]")?;
        anyhow::ensure!(
            config.posture.interval >= Duration::from_secs(1),
            "posture.interval must be at least 1s"
        );
        anyhow::ensure!(
            config.fim.rescan_interval >= Duration::from_secs(1),
            "fim.rescan_interval must be at least 1s"
        );
        for path in &config.fim.paths {
            anyhow::ensure!(
                path.starts_with('/'),
                "fim.paths: {path:?} is not an absolute path"
            );
        }
        if let Some(path) = &config.identity.key_passphrase_file {
            anyhow::ensure!(
                path.is_absolute(),
                "identity.key_passphrase_file: {} is not an absolute path",
                path.display()
            );
        }
        if let Some(address) = config.self_metrics.listen {
            anyhow::ensure!(
                address.ip().is_loopback(),
                "self_metrics.listen must be a loopback address (the endpoint has no authentication)"
            );
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        AgentConfig::parse(&text).with_context(|| format!("in {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let config = AgentConfig::parse("").unwrap();
        assert_eq!(config.outbox.max_size, 64 << 20);
        assert_eq!(config.link.backoff_max, Duration::from_secs(300));
        assert_eq!(config.identity.key_passphrase_file, None);
        let config =
            AgentConfig::parse("[identity]\nkey_passphrase_file = \"/etc/bagui/agent-key.pass\"\n")
                .unwrap();
        assert_eq!(
            config.identity.key_passphrase_file.as_deref(),
            Some(Path::new("/etc/bagui/agent-key.pass"))
        );
        for (text, expected) in [
            ("[link]\nbackoff_min = \"10m\"\n", "backoff_min"),
            ("[outbox]\nmax_size = \"1KiB\"\n", "max_size"),
            ("[outbox]\nmax_size = \"lots\"\n", "size"),
            ("[linkk]\n", "linkk"),
            (
                "[identity]\nkey_passphrase_file = \"agent-key.pass\"\n",
                "absolute",
            ),
            ("[identity]\npassphrase = \"x\"\n", "passphrase"),
        ] {
            let error = format!("{:#}", AgentConfig::parse(text).unwrap_err());
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
