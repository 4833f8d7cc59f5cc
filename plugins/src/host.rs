//! Host facts (who this machine is) and basic health metrics, read from `/proc`, `/sys` and
//! `/etc` so that tests can point them at a fixture tree.

use std::time::Duration;

use bagui_protocol::messages::payload::{self, HostFacts, Metrics, Sample};
use bagui_protocol::{Lane, MachineFacts, digest};

use crate::{CollectError, Collector, HostRoot, Output};

/// Reads the machine facts sent at join and in host-facts reports.
pub fn machine_facts(root: &HostRoot) -> MachineFacts {
    let os_release = root
        .read_optional("/etc/os-release")
        .or_else(|| root.read_optional("/usr/lib/os-release"))
        .unwrap_or_default();
    let field = |key: &str| os_release_field(&os_release, key).unwrap_or_default();
    let os_name = os_release_field(&os_release, "PRETTY_NAME")
        .or_else(|| os_release_field(&os_release, "NAME"))
        .unwrap_or_default();
    MachineFacts {
        machine_id: first_line(root, "/etc/machine-id")
            .or_else(|| first_line(root, "/var/lib/dbus/machine-id"))
            .unwrap_or_default(),
        hostname: first_line(root, "/proc/sys/kernel/hostname")
            .or_else(|| first_line(root, "/etc/hostname"))
            .unwrap_or_default(),
        os_id: field("ID"),
        os_name,
        os_version: field("VERSION_ID"),
        kernel: first_line(root, "/proc/sys/kernel/osrelease").unwrap_or_default(),
        arch: std::env::consts::ARCH.to_owned(),
        hardware_fingerprint: hardware_fingerprint(root),
    }
}

fn first_line(root: &HostRoot, path: &str) -> Option<String> {
    let text = root.read_optional(path)?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// A value from an os-release file, unquoted.
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, value) = line.trim().split_once('=')?;
        if name != key {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(value.to_owned())
    })
}

fn cpu_model(root: &HostRoot) -> (String, u32) {
    let cpuinfo = root.read_optional("/proc/cpuinfo").unwrap_or_default();
    let mut model = String::new();
    let mut cores = 0u32;
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => cores += 1,
            // x86 says "model name"; many aarch64 and loongarch kernels say "Model Name",
            // "CPU part" or nothing useful at all.
            "model name" | "Model Name" | "cpu model" | "Hardware" if model.is_empty() => {
                model = value.trim().to_owned()
            }
            _ => {}
        }
    }
    (model, cores)
}

fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `sm3:` over facts that survive a reinstall but differ between cloned VMs as little as
/// possible: CPU model, memory size, physical NIC MACs and (when readable) the DMI UUID.
fn hardware_fingerprint(root: &HostRoot) -> String {
    let (model, cores) = cpu_model(root);
    let memory = root
        .read_optional("/proc/meminfo")
        .and_then(|text| meminfo_kib(&text, "MemTotal"))
        .unwrap_or(0);
    let mut macs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.path("/sys/class/net")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only interfaces backed by a device; skips lo, bridges, veths and tunnels.
            if !entry.path().join("device").exists() {
                continue;
            }
            if let Some(mac) = first_line(root, &format!("/sys/class/net/{name}/address")) {
                macs.push(mac);
            }
        }
    }
    macs.sort();
    let dmi = first_line(root, "/sys/class/dmi/id/product_uuid").unwrap_or_default();
    let material = format!("{model}\n{cores}\n{memory}\n{}\n{dmi}", macs.join(","));
    digest::sm3_tagged(material.as_bytes())
}

fn boot_time_s(root: &HostRoot) -> u64 {
    root.read_optional("/proc/stat")
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Sends who this machine is: on start, then hourly.
#[derive(Debug)]
pub struct HostFactsCollector {
    root: HostRoot,
}

impl HostFactsCollector {
    pub fn new(root: HostRoot) -> HostFactsCollector {
        HostFactsCollector { root }
    }

    /// The current host facts.
    pub fn host_facts(&self) -> HostFacts {
        let (cpu_model, cpu_cores) = cpu_model(&self.root);
        let memory_bytes = self
            .root
            .read_optional("/proc/meminfo")
            .and_then(|text| meminfo_kib(&text, "MemTotal"))
            .unwrap_or(0)
            * 1024;
        HostFacts {
            facts: machine_facts(&self.root),
            cpu_model,
            cpu_cores,
            memory_bytes,
            boot_time_s: boot_time_s(&self.root),
        }
    }
}

impl Collector for HostFactsCollector {
    fn name(&self) -> &'static str {
        "host_facts"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn collect(&self, _now_ms: u64) -> Result<Vec<Output>, CollectError> {
        Ok(vec![Output {
            lane: Lane::Inventory,
            kind: payload::HOST_FACTS,
            body: payload::encode(&self.host_facts()),
        }])
    }
}

/// Load, memory and uptime: the smallest useful health sample.
#[derive(Debug)]
pub struct BasicMetricsCollector {
    root: HostRoot,
}

impl BasicMetricsCollector {
    pub fn new(root: HostRoot) -> BasicMetricsCollector {
        BasicMetricsCollector { root }
    }
}

fn sample(name: &str, value: f64) -> Sample {
    Sample {
        name: name.to_owned(),
        value,
        labels: Vec::new(),
    }
}

impl Collector for BasicMetricsCollector {
    fn name(&self) -> &'static str {
        "basic_metrics"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(15)
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn collect(&self, now_ms: u64) -> Result<Vec<Output>, CollectError> {
        let mut samples = Vec::new();
        let loadavg = self.root.read("/proc/loadavg")?;
        let mut fields = loadavg.split_whitespace();
        for name in ["node_load1", "node_load5", "node_load15"] {
            let value: f64 = fields
                .next()
                .and_then(|field| field.parse().ok())
                .ok_or_else(|| {
                    CollectError::Other(format!("malformed /proc/loadavg: {loadavg:?}"))
                })?;
            samples.push(sample(name, value));
        }
        let meminfo = self.root.read("/proc/meminfo")?;
        for (key, name) in [
            ("MemTotal", "node_memory_total_bytes"),
            ("MemAvailable", "node_memory_available_bytes"),
            ("SwapTotal", "node_swap_total_bytes"),
            ("SwapFree", "node_swap_free_bytes"),
        ] {
            if let Some(kib) = meminfo_kib(&meminfo, key) {
                samples.push(sample(name, (kib * 1024) as f64));
            }
        }
        if let Some(uptime) = self
            .root
            .read_optional("/proc/uptime")
            .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        {
            samples.push(sample("node_uptime_seconds", uptime));
        }
        Ok(vec![Output {
            lane: Lane::Metrics,
            kind: payload::METRICS,
            body: payload::encode(&Metrics {
                taken_ms: now_ms,
                samples,
            }),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile_dir::Dir {
        let dir = tempfile_dir::Dir::new();
        dir.write(
            "etc/os-release",
            "NAME=\"Kylin Linux Advanced Server\"\nVERSION_ID=\"V10\"\nID=kylin\nPRETTY_NAME=\"Kylin Linux Advanced Server V10 (Lance)\"\n",
        );
        dir.write("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        dir.write("proc/sys/kernel/hostname", "xinzhu-01\n");
        dir.write(
            "proc/sys/kernel/osrelease",
            "4.19.90-52.22.v2207.ky10.aarch64\n",
        );
        dir.write(
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Phytium FT-2000+/64\n\nprocessor\t: 1\nmodel name\t: Phytium FT-2000+/64\n",
        );
        dir.write(
            "proc/meminfo",
            "MemTotal:       16384000 kB\nMemAvailable:    8192000 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n",
        );
        dir.write("proc/loadavg", "0.52 0.58 0.59 1/456 12345\n");
        dir.write("proc/uptime", "12345.67 23456.78\n");
        dir.write("proc/stat", "cpu  1 2 3\nbtime 1795000000\n");
        dir.write("sys/class/net/eth0/address", "52:54:00:12:34:56\n");
        dir.write("sys/class/net/eth0/device/vendor", "0x1af4\n");
        dir.write("sys/class/net/lo/address", "00:00:00:00:00:00\n");
        dir
    }

    #[test]
    fn machine_facts_from_a_kylin_fixture() {
        let dir = fixture();
        let facts = machine_facts(&HostRoot::new(dir.path()));
        assert_eq!(facts.os_id, "kylin");
        assert_eq!(facts.os_name, "Kylin Linux Advanced Server V10 (Lance)");
        assert_eq!(facts.os_version, "V10");
        assert_eq!(facts.machine_id, "0123456789abcdef0123456789abcdef");
        assert_eq!(facts.hostname, "xinzhu-01");
        assert_eq!(facts.kernel, "4.19.90-52.22.v2207.ky10.aarch64");
        assert!(facts.hardware_fingerprint.starts_with("sm3:"));

        // The fingerprint follows physical NICs, not virtual ones.
        let before = facts.hardware_fingerprint;
        dir.write("sys/class/net/lo/address", "00:00:00:00:00:01\n");
        assert_eq!(
            machine_facts(&HostRoot::new(dir.path())).hardware_fingerprint,
            before
        );
        dir.write("sys/class/net/eth0/address", "52:54:00:12:34:57\n");
        assert_ne!(
            machine_facts(&HostRoot::new(dir.path())).hardware_fingerprint,
            before
        );
    }

    #[test]
    fn host_facts_and_metrics_from_fixture() {
        let dir = fixture();
        let root = HostRoot::new(dir.path());
        let facts = HostFactsCollector::new(root.clone()).host_facts();
        assert_eq!(facts.cpu_model, "Phytium FT-2000+/64");
        assert_eq!(facts.cpu_cores, 2);
        assert_eq!(facts.memory_bytes, 16_384_000 * 1024);
        assert_eq!(facts.boot_time_s, 1_795_000_000);

        let outputs = BasicMetricsCollector::new(root).collect(7).unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].lane, Lane::Metrics);
        let metrics: Metrics = payload::decode(&outputs[0].body).unwrap();
        assert_eq!(metrics.taken_ms, 7);
        let value = |name: &str| {
            metrics
                .samples
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.value)
        };
        assert_eq!(value("node_load1"), Some(0.52));
        assert_eq!(
            value("node_memory_available_bytes"),
            Some(8_192_000.0 * 1024.0)
        );
        assert_eq!(value("node_uptime_seconds"), Some(12345.67));
    }

    #[test]
    fn malformed_proc_files_are_errors_not_panics() {
        let dir = fixture();
        dir.write("proc/loadavg", "garbage\n");
        let error = BasicMetricsCollector::new(HostRoot::new(dir.path()))
            .collect(0)
            .unwrap_err();
        assert!(error.to_string().contains("loadavg"), "{error}");
        std::fs::remove_file(dir.path().join("proc/loadavg")).unwrap();
        let error = BasicMetricsCollector::new(HostRoot::new(dir.path()))
            .collect(0)
            .unwrap_err();
        assert!(matches!(error, CollectError::Read { .. }), "{error}");
    }

    #[test]
    fn missing_files_give_empty_facts() {
        let dir = tempfile_dir::Dir::new();
        let facts = machine_facts(&HostRoot::new(dir.path()));
        assert_eq!(facts.machine_id, "");
        assert_eq!(facts.os_id, "");
        assert!(facts.hardware_fingerprint.starts_with("sm3:"));
    }

    /// A throw-away directory for fixtures.
    mod tempfile_dir {
        pub struct Dir(tempfile::TempDir);
        impl Dir {
            pub fn new() -> Dir {
                Dir(tempfile::tempdir().unwrap())
            }
            pub fn path(&self) -> &std::path::Path {
                self.0.path()
            }
            pub fn write(&self, relative: &str, contents: &str) {
                let path = self.0.path().join(relative);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, contents).unwrap();
            }
        }
    }
}
