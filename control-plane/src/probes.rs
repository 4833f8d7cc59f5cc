//! Pushed probes: what an operator may ask an agent to measure.
//!
//! 18,000 agents must never become a scanner. So a pushed probe is one of a closed set of
//! kinds (`tcp`, `http`, `dns`, `tls_expiry`), its target must be an address inside the ranges
//! configured for the agent's division or one of its ancestors (`[probes.ranges]` in
//! `control-plane.toml`; a DNS probe names a host to resolve, through the agent's own
//! resolver), at most `max_per_agent` per agent, no more often than `min_interval`, and every
//! change is made by an authenticated operator and audited before it is sent.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use bagui_protocol::{MAX_PUSHED_PROBE_TIMEOUT_MS, MAX_PUSHED_PROBES, PushedProbe, units};
use serde::{Deserialize, Serialize};

use crate::divisions::Divisions;

/// An address range, `10.45.0.0/16` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not an address range such as 10.45.0.0/16");
        let (address, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        fn masked(bits: u128, total: u32, prefix: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (total - u32::from(prefix))
            }
        }
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                masked(u32::from(network).into(), 32, self.prefix)
                    == masked(u32::from(address).into(), 32, self.prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                masked(u128::from(network), 128, self.prefix)
                    == masked(u128::from(address), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What pushes are allowed (from `[probes]` of the config).
#[derive(Debug, Clone, Default)]
pub struct ProbePolicy {
    /// Division code → ranges its agents (and those below it) may probe.
    pub ranges: BTreeMap<String, Vec<Cidr>>,
    pub max_per_agent: usize,
    pub min_interval: Duration,
}

/// A push as an operator asks for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeRequest {
    pub name: String,
    /// `tcp`, `http`, `dns` or `tls_expiry`.
    pub kind: String,
    pub target: String,
    /// `60s`, `5m` (default 60s).
    pub interval: Option<String>,
    /// Default 5s; at most 10s and less than the interval.
    pub timeout: Option<String>,
}

/// The host part of a target, for the range check.
fn target_host(kind: &str, target: &str) -> Result<String, String> {
    let host_port = |text: &str| -> Result<String, String> {
        if let Some(rest) = text.strip_prefix('[') {
            let (host, _) = rest
                .split_once(']')
                .ok_or_else(|| format!("target {target:?}: unclosed ["))?;
            return Ok(host.to_owned());
        }
        Ok(match text.rsplit_once(':') {
            Some((host, _)) => host.to_owned(),
            None => text.to_owned(),
        })
    };
    match kind {
        "tcp" | "tls_expiry" => host_port(target),
        "http" => {
            let rest = target
                .strip_prefix("http://")
                .or_else(|| target.strip_prefix("https://"))
                .ok_or_else(|| format!("target {target:?}: expected http:// or https://"))?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            host_port(authority)
        }
        "dns" => Ok(target.to_owned()),
        other => Err(format!(
            "kind {other:?} is not one of tcp, http, dns, tls_expiry"
        )),
    }
}

impl ProbePolicy {
    /// The ranges that apply to an agent in `division`: its own and its ancestors'.
    pub fn ranges_for<'a>(&'a self, divisions: &'a Divisions, division: &str) -> Vec<&'a Cidr> {
        divisions
            .ancestors(division)
            .filter_map(|node| self.ranges.get(&node.code))
            .flatten()
            .collect()
    }

    /// Checks one request for an agent in `division`; the probe to push.
    pub fn check(
        &self,
        divisions: &Divisions,
        division: &str,
        request: &ProbeRequest,
    ) -> Result<PushedProbe, String> {
        let name = request.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "probe name {name:?}: 1-64 letters, digits, '-', '_' or '.'"
            ));
        }
        let interval = match &request.interval {
            Some(text) => units::parse_duration(text)?,
            None => Duration::from_secs(60),
        };
        let timeout = match &request.timeout {
            Some(text) => units::parse_duration(text)?,
            None => Duration::from_secs(5),
        };
        if interval < self.min_interval {
            return Err(format!(
                "interval {}s is below the minimum of {}s ([probes] min_interval)",
                interval.as_secs_f64(),
                self.min_interval.as_secs_f64()
            ));
        }
        if timeout.is_zero()
            || timeout.as_millis() as u64 > MAX_PUSHED_PROBE_TIMEOUT_MS
            || timeout >= interval
        {
            return Err(format!(
                "timeout must be above 0, at most {MAX_PUSHED_PROBE_TIMEOUT_MS} ms and below the interval"
            ));
        }
        let host = target_host(&request.kind, request.target.trim())?;
        if request.kind == "dns" {
            if host.parse::<IpAddr>().is_ok()
                || host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(format!("dns target {host:?}: expected a host name"));
            }
        } else {
            let address: IpAddr = host.parse().map_err(|_| {
                format!(
                    "target {:?}: the host must be an IP address, so it can be checked against the division's ranges",
                    request.target
                )
            })?;
            let ranges = self.ranges_for(divisions, division);
            if ranges.is_empty() {
                return Err(format!(
                    "no address ranges are configured for division {division} or above it ([probes.ranges] in control-plane.toml)"
                ));
            }
            if !ranges.iter().any(|range| range.contains(address)) {
                return Err(format!(
                    "{address} is outside the ranges of division {division} ({})",
                    ranges
                        .iter()
                        .map(|range| range.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(PushedProbe {
            name: name.to_owned(),
            kind: request.kind.clone(),
            target: request.target.trim().to_owned(),
            interval_ms: interval.as_millis() as u64,
            timeout_ms: timeout.as_millis() as u64,
        })
    }

    /// Most probes per agent (never above what agents accept).
    pub fn max_per_agent(&self) -> usize {
        self.max_per_agent.min(MAX_PUSHED_PROBES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ProbePolicy {
        ProbePolicy {
            ranges: BTreeMap::from([
                ("4501".into(), vec!["10.45.1.0/24".parse().unwrap()]),
                ("45".into(), vec!["fd45::/16".parse().unwrap()]),
            ]),
            max_per_agent: 8,
            min_interval: Duration::from_secs(30),
        }
    }

    fn request(kind: &str, target: &str) -> ProbeRequest {
        ProbeRequest {
            name: "gw".into(),
            kind: kind.into(),
            target: target.into(),
            ..ProbeRequest::default()
        }
    }

    #[test]
    fn ranges_contain_what_they_should() {
        let range: Cidr = "10.45.1.0/24".parse().unwrap();
        assert!(range.contains("10.45.1.200".parse().unwrap()));
        assert!(!range.contains("10.45.2.1".parse().unwrap()));
        assert!(!range.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.45.1.0", "10.45.1.0/33", "x/8", "fd00::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_must_lie_in_the_division_ranges() {
        let divisions = Divisions::guangxi();
        let policy = policy();
        let nanning_village = "450103001005";
        let liuzhou_county = "450202";
        assert!(
            policy
                .check(
                    &divisions,
                    nanning_village,
                    &request("tcp", "10.45.1.1:443")
                )
                .is_ok()
        );
        assert!(
            policy
                .check(
                    &divisions,
                    nanning_village,
                    &request("http", "https://[fd45::1]:8443/health")
                )
                .is_ok()
        );
        assert!(
            policy
                .check(
                    &divisions,
                    nanning_village,
                    &request("dns", "www.gxzf.gov.cn")
                )
                .is_ok()
        );
        for (division, bad) in [
            (liuzhou_county, request("tcp", "10.45.1.1:443")),
            (nanning_village, request("tcp", "10.45.2.1:443")),
            (nanning_village, request("tcp", "gateway.local:443")),
            (nanning_village, request("http", "http://8.8.8.8/")),
            (nanning_village, request("exec", "/bin/sh")),
            (nanning_village, request("dns", "10.45.1.1")),
            (
                nanning_village,
                ProbeRequest {
                    interval: Some("1s".into()),
                    ..request("tcp", "10.45.1.1:443")
                },
            ),
            (
                nanning_village,
                ProbeRequest {
                    name: "a b".into(),
                    ..request("tcp", "10.45.1.1:443")
                },
            ),
        ] {
            assert!(policy.check(&divisions, division, &bad).is_err(), "{bad:?}");
        }
    }
}
