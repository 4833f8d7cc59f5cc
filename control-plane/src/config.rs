//! `control-plane.toml`: every tunable of `bagui-cp run`, with the defaults a province-scale
//! deployment wants. Command-line flags override the file.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use bagui_protocol::{DeploymentParams, units};
use serde::Deserialize;

use crate::dispatch::DispatchConfig;
use crate::enroll::EnrollConfig;
use crate::ingest::IngestConfig;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneConfig {
    pub server: ServerSection,
    pub enroll: EnrollSection,
    pub session: SessionSection,
    pub admission: AdmissionSection,
    pub store: StoreSection,
    pub log: LogSection,
    pub probes: ProbesSection,
    pub audit: AuditSection,
    /// Incident rules: holds, grace, flap damping, mass outage, off-hours, severities.
    pub incidents: bagui_ops::incidents::IncidentRules,
    /// SLA terms per severity (`[sla.p1]` …: `ack`, `handle`, `clock = "wall"|"working"`).
    pub sla: bagui_ops::calendar::SlaPolicyConfig,
    pub notify: NotifySection,
    /// When an agent's link counts as degraded (from the QUIC statistics of its heartbeats).
    pub links: crate::dispatch::LinkThresholds,
    /// Health thresholds with a duration (`[[thresholds]]`); none given: the defaults (disk
    /// nearly full, load above 2 per CPU, file descriptors nearly exhausted).
    pub thresholds: crate::thresholds::Thresholds,
}

/// `[notify]`: how notifications go out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySection {
    /// Base URL of the console, for the link at the end of every message.
    pub console_url: Option<String>,
    pub retry: bagui_ops::notify::RetryPolicy,
    /// Per-channel rate limit; what exceeds it goes out later as one digest.
    pub limit: bagui_ops::notify::LimitConfig,
}

/// `[audit]`: SM2 checkpoints of the audit log and its remote syslog copy.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// A signed checkpoint after this many entries.
    pub checkpoint_every: u64,
    /// A signed checkpoint at least this often while entries are being added.
    #[serde(with = "units::duration")]
    pub checkpoint_interval: Duration,
    /// Remote syslog collector, `udp://HOST:PORT` or `tcp://HOST:PORT` (RFC 5424; TCP with
    /// octet counting). None: no export.
    pub syslog: Option<String>,
    /// Longest wait between retries while the collector is unreachable.
    #[serde(with = "units::duration")]
    pub syslog_retry_max: Duration,
}

impl Default for AuditSection {
    fn default() -> AuditSection {
        let defaults = crate::audit::AuditConfig::default();
        AuditSection {
            checkpoint_every: defaults.checkpoint_every,
            checkpoint_interval: defaults.checkpoint_interval,
            syslog: None,
            syslog_retry_max: Duration::from_secs(60),
        }
    }
}

/// What operators may push to agents as probes (see `crate::probes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbesSection {
    /// Division code → address ranges its agents (and those below it) may probe, e.g.
    /// `"4501" = ["10.45.0.0/16"]`. Without a range, only DNS probes can be pushed.
    pub ranges: std::collections::BTreeMap<String, Vec<String>>,
    pub max_per_agent: usize,
    #[serde(with = "units::duration")]
    pub min_interval: Duration,
}

impl Default for ProbesSection {
    fn default() -> ProbesSection {
        ProbesSection {
            ranges: Default::default(),
            max_per_agent: 16,
            min_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Page cache of the embedded store. Ingest mostly writes, so a small cache serves it.
    #[serde(with = "units::size")]
    pub cache: u64,
}

impl Default for StoreSection {
    fn default() -> StoreSection {
        StoreSection { cache: 16 << 20 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// UDP address for QUIC (agents).
    pub quic_listen: SocketAddr,
    /// TCP address for the HTTP API; plain HTTP only on loopback, HTTPS anywhere else.
    pub http_listen: SocketAddr,
    /// `auto`: HTTPS everywhere except loopback; `always`: HTTPS on loopback too.
    pub http_tls: HttpTls,
    /// Kernel receive/send buffer of the QUIC socket; mass connects overflow the default.
    #[serde(with = "units::size")]
    pub udp_buffer: u64,
}

/// When the API speaks HTTPS. There is deliberately no "never": off loopback it always does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpTls {
    #[default]
    Auto,
    Always,
}

impl Default for ServerSection {
    fn default() -> ServerSection {
        ServerSection {
            quic_listen: "0.0.0.0:7443".parse().expect("valid default"),
            http_listen: "127.0.0.1:8080".parse().expect("valid default"),
            http_tls: HttpTls::Auto,
            udp_buffer: 8 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrollSection {
    #[serde(with = "units::duration")]
    pub cert_lifetime: Duration,
    #[serde(with = "units::duration")]
    pub grace_period: Duration,
    #[serde(with = "units::duration")]
    pub backdate: Duration,
    /// Enrollment requests (joins and late renewals) served per second, all peers together;
    /// the rest are refused `rate_limited` before any signature is checked.
    pub join_rate_per_second: f64,
    pub join_burst: f64,
}

impl Default for EnrollSection {
    fn default() -> EnrollSection {
        let defaults = EnrollConfig::default();
        EnrollSection {
            cert_lifetime: defaults.cert_lifetime,
            grace_period: defaults.grace_period,
            backdate: defaults.backdate,
            join_rate_per_second: 100.0,
            join_burst: 500.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSection {
    #[serde(with = "units::duration")]
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: u32,
    pub max_in_flight: u32,
    #[serde(with = "units::size")]
    pub max_frame: u64,
    #[serde(with = "units::duration")]
    pub late_after: Duration,
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,
    /// A group commit waits this long for more reports after the first, so that a fleet
    /// reporting at random moments shares fsyncs; it adds at most this much ack latency.
    #[serde(with = "units::duration")]
    pub commit_window: Duration,
}

impl Default for SessionSection {
    fn default() -> SessionSection {
        let defaults = IngestConfig::default();
        SessionSection {
            heartbeat_interval: defaults.heartbeat_interval,
            missed_heartbeats: defaults.missed_heartbeats,
            max_in_flight: defaults.max_in_flight,
            max_frame: defaults.max_frame_len as u64,
            late_after: defaults.late_after,
            idle_timeout: Duration::from_secs(60),
            commit_window: defaults.commit_window,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionSection {
    pub rate_per_second: f64,
    pub burst: f64,
}

impl Default for AdmissionSection {
    fn default() -> AdmissionSection {
        let defaults = IngestConfig::default();
        AdmissionSection {
            rate_per_second: defaults.admission_rate,
            burst: defaults.admission_burst,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> LogSection {
        LogSection {
            level: "info".into(),
        }
    }
}

impl ControlPlaneConfig {
    /// Parses a config file's text.
    pub fn parse(text: &str) -> Result<ControlPlaneConfig> {
        let config: ControlPlaneConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads a config file.
    pub fn load(path: &Path) -> Result<ControlPlaneConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        ControlPlaneConfig::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.session.max_frame >= 4096
                && self.session.max_frame <= bagui_protocol::HARD_MAX_FRAME_LEN as u64,
            "session.max_frame must be between 4KiB and 16MiB"
        );
        anyhow::ensure!(
            self.session.heartbeat_interval >= Duration::from_millis(100),
            "session.heartbeat_interval must be at least 100ms"
        );
        anyhow::ensure!(
            self.session.max_in_flight >= 1,
            "session.max_in_flight must be at least 1"
        );
        anyhow::ensure!(
            self.admission.rate_per_second > 0.0,
            "admission.rate_per_second must be positive"
        );
        anyhow::ensure!(
            self.enroll.cert_lifetime >= Duration::from_secs(1),
            "enroll.cert_lifetime must be at least 1s"
        );
        self.probe_policy()?;
        anyhow::ensure!(
            self.audit.checkpoint_every >= 1,
            "audit.checkpoint_every must be at least 1"
        );
        anyhow::ensure!(
            self.audit.checkpoint_interval >= Duration::from_secs(1),
            "audit.checkpoint_interval must be at least 1s"
        );
        if let Some(url) = &self.audit.syslog {
            self.syslog_config(url).context("audit.syslog")?;
        }
        Ok(())
    }

    /// The syslog exporter's settings for `url`.
    pub fn syslog_config(&self, url: &str) -> Result<crate::syslog::ExportConfig> {
        let mut config = crate::syslog::ExportConfig::new(crate::syslog::Target::parse(url)?);
        config.backoff_max = self.audit.syslog_retry_max.max(config.backoff_min);
        Ok(config)
    }

    pub fn audit_config(&self) -> crate::audit::AuditConfig {
        crate::audit::AuditConfig {
            checkpoint_every: self.audit.checkpoint_every,
            checkpoint_interval: self.audit.checkpoint_interval,
        }
    }

    /// The dispatcher's settings; refuses inconsistent incident rules.
    pub fn dispatch_config(&self) -> Result<DispatchConfig> {
        self.incidents
            .validate()
            .map_err(|error| anyhow::anyhow!("[incidents]: {error}"))?;
        Ok(DispatchConfig {
            rules: self.incidents.clone(),
            sla: bagui_ops::calendar::SlaPolicy::new(
                self.sla,
                bagui_ops::calendar::WorkingCalendar::china(),
            ),
            console_url: self.notify.console_url.clone(),
        })
    }

    /// The pushed-probe policy; refuses a malformed range.
    pub fn probe_policy(&self) -> Result<crate::probes::ProbePolicy> {
        let mut ranges = std::collections::BTreeMap::new();
        for (division, texts) in &self.probes.ranges {
            let parsed = texts
                .iter()
                .map(|text| text.parse::<crate::probes::Cidr>())
                .collect::<Result<Vec<_>, String>>()
                .map_err(|error| anyhow::anyhow!("probes.ranges.{division}: {error}"))?;
            ranges.insert(division.clone(), parsed);
        }
        anyhow::ensure!(
            self.probes.min_interval >= Duration::from_secs(1),
            "probes.min_interval must be at least 1s"
        );
        Ok(crate::probes::ProbePolicy {
            ranges,
            max_per_agent: self.probes.max_per_agent,
            min_interval: self.probes.min_interval,
        })
    }

    pub fn enroll_config(&self) -> EnrollConfig {
        EnrollConfig {
            cert_lifetime: self.enroll.cert_lifetime,
            grace_period: self.enroll.grace_period,
            backdate: self.enroll.backdate,
            params: DeploymentParams {
                heartbeat_interval_ms: self.session.heartbeat_interval.as_millis() as u64,
                max_in_flight: self.session.max_in_flight,
                max_frame_len: self.session.max_frame as u32,
                renew_at_permille: 667,
                grace_period_s: self.enroll.grace_period.as_secs(),
            },
        }
    }

    pub fn ingest_config(&self) -> IngestConfig {
        IngestConfig {
            max_frame_len: self.session.max_frame as usize,
            heartbeat_interval: self.session.heartbeat_interval,
            missed_heartbeats: self.session.missed_heartbeats,
            max_in_flight: self.session.max_in_flight,
            late_after: self.session.late_after,
            admission_rate: self.admission.rate_per_second,
            admission_burst: self.admission.burst,
            commit_window: self.session.commit_window,
            ..IngestConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config = ControlPlaneConfig::parse("").unwrap();
        assert_eq!(config.server.quic_listen.port(), 7443);
        assert_eq!(
            config.enroll.cert_lifetime,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(config.session.heartbeat_interval, Duration::from_secs(5));
    }

    #[test]
    fn bad_files_are_refused_clearly() {
        for (text, expected) in [
            ("[server]\nquic_listen = \"nowhere\"\n", "quic_listen"),
            (
                "[session]\nheartbeat_interval = \"5 fortnights\"\n",
                "duration",
            ),
            ("[session]\nmax_frame = \"1KiB\"\n", "max_frame"),
            ("[sesion]\n", "sesion"),
            ("[admission]\nrate_per_second = 0\n", "rate_per_second"),
            (
                "[audit]\nsyslog = \"http://127.0.0.1:514\"\n",
                "audit.syslog",
            ),
            ("[audit]\ncheckpoint_every = 0\n", "checkpoint_every"),
        ] {
            let error = format!("{:#}", ControlPlaneConfig::parse(text).unwrap_err());
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
