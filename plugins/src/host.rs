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

/// Health metrics, every 15 s, named as node_exporter names them so dashboards and alert rules
/// carry over:
///
/// - CPU: `node_cpu_seconds_total{mode}` (user, nice, system, idle, iowait, irq, softirq,
///   steal; summed over CPUs, from the `cpu` line of `/proc/stat` at `USER_HZ` = 100, which is
///   fixed by the kernel ABI on every architecture we run on), `node_cpu_count` (CPUs listed
///   in `/proc/stat`; node_exporter has no such sample, it counts the per-CPU series),
///   `node_context_switches_total`, `node_forks_total`, `node_boot_time_seconds`,
///   `node_procs_running`, `node_procs_blocked`;
/// - `node_processes_pids` (numeric directories of `/proc`);
/// - `node_load1`, `node_load5`, `node_load15`;
/// - memory: `node_memory_{MemTotal,MemAvailable,MemFree,Buffers,Cached,SwapTotal,SwapFree}_bytes`;
/// - filesystems (the inventory's filter: [`crate::inventory::hardware::classify`]):
///   `node_filesystem_{size,free,avail}_bytes`, `node_filesystem_files`,
///   `node_filesystem_files_free` labelled `device`, `fstype`, `mountpoint`;
///   `node_filesystem_device_error` = 1 when `statvfs` fails. Network filesystems are never
///   `statvfs`ed (a dead server would hang the collector) and get no samples;
/// - network, per `/proc/net/dev` interface (`device` label):
///   `node_network_{receive,transmit}_{bytes,packets,errs,drop}_total`;
/// - `node_filefd_allocated`, `node_filefd_maximum` (`/proc/sys/fs/file-nr`);
/// - `node_sockstat_sockets_used`, `node_sockstat_TCP_{inuse,tw,alloc}`,
///   `node_sockstat_UDP_inuse` (`/proc/net/sockstat`);
/// - `node_uptime_seconds` (`/proc/uptime`).
///
/// Not here: the clock. `node_timex_sync_status` and `node_timex_offset_seconds` need the
/// `adjtimex` syscall, which the agent does not make; the control plane computes each agent's
/// clock offset from report timestamps instead.
///
/// `/proc/loadavg` and `/proc/meminfo` are required (a run without them is an error); every
/// other source is optional and its samples are simply missing when it cannot be read.
#[derive(Debug)]
pub struct BasicMetricsCollector {
    root: HostRoot,
}

impl BasicMetricsCollector {
    pub fn new(root: HostRoot) -> BasicMetricsCollector {
        BasicMetricsCollector { root }
    }

    /// One round of samples.
    pub fn samples(&self) -> Result<Vec<Sample>, CollectError> {
        let mut samples = Vec::with_capacity(96);
        let loadavg = self.root.read("/proc/loadavg")?;
        push_loadavg(&loadavg, &mut samples)?;
        push_meminfo(&self.root.read("/proc/meminfo")?, &mut samples);
        if let Some(stat) = self.root.read_optional("/proc/stat") {
            push_stat(&stat, &mut samples);
        }
        if let Some(count) = count_processes(&self.root) {
            samples.push(sample("node_processes_pids", count as f64));
        }
        if let Ok(mounts) = crate::inventory::hardware::mounts(&self.root) {
            push_filesystems(&self.root, &mounts, &mut samples);
        }
        if let Some(dev) = self.root.read_optional("/proc/net/dev") {
            push_net_dev(&dev, &mut samples);
        }
        if let Some(file_nr) = self.root.read_optional("/proc/sys/fs/file-nr") {
            let mut fields = file_nr.split_whitespace().map(|f| f.parse::<f64>().ok());
            if let (Some(Some(allocated)), Some(_), Some(Some(maximum))) =
                (fields.next(), fields.next(), fields.next())
            {
                samples.push(sample("node_filefd_allocated", allocated));
                samples.push(sample("node_filefd_maximum", maximum));
            }
        }
        if let Some(sockstat) = self.root.read_optional("/proc/net/sockstat") {
            push_sockstat(&sockstat, &mut samples);
        }
        if let Some(uptime) = self
            .root
            .read_optional("/proc/uptime")
            .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        {
            samples.push(sample("node_uptime_seconds", uptime));
        }
        Ok(samples)
    }
}

fn sample(name: &str, value: f64) -> Sample {
    Sample {
        name: name.to_owned(),
        value,
        labels: Vec::new(),
    }
}

fn labelled(name: &str, value: f64, labels: &[(&str, &str)]) -> Sample {
    Sample {
        name: name.to_owned(),
        value,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn push_loadavg(loadavg: &str, samples: &mut Vec<Sample>) -> Result<(), CollectError> {
    let mut fields = loadavg.split_whitespace();
    for name in ["node_load1", "node_load5", "node_load15"] {
        let value: f64 = fields
            .next()
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| CollectError::Other(format!("malformed /proc/loadavg: {loadavg:?}")))?;
        samples.push(sample(name, value));
    }
    Ok(())
}

fn push_meminfo(meminfo: &str, samples: &mut Vec<Sample>) {
    for (key, name) in [
        ("MemTotal", "node_memory_MemTotal_bytes"),
        ("MemAvailable", "node_memory_MemAvailable_bytes"),
        ("MemFree", "node_memory_MemFree_bytes"),
        ("Buffers", "node_memory_Buffers_bytes"),
        ("Cached", "node_memory_Cached_bytes"),
        ("SwapTotal", "node_memory_SwapTotal_bytes"),
        ("SwapFree", "node_memory_SwapFree_bytes"),
    ] {
        if let Some(kib) = meminfo_kib(meminfo, key) {
            samples.push(sample(name, (kib * 1024) as f64));
        }
    }
}

/// `USER_HZ`: the unit of `/proc/stat` CPU times, 100 on every Linux architecture we run on.
const USER_HZ: f64 = 100.0;

fn push_stat(stat: &str, samples: &mut Vec<Sample>) {
    let mut cpus = 0u32;
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(key) = fields.next() else {
            continue;
        };
        match key {
            "cpu" => {
                const MODES: [&str; 8] = [
                    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
                ];
                for (mode, field) in MODES.iter().zip(fields) {
                    if let Ok(ticks) = field.parse::<u64>() {
                        samples.push(labelled(
                            "node_cpu_seconds_total",
                            ticks as f64 / USER_HZ,
                            &[("mode", mode)],
                        ));
                    }
                }
            }
            _ if key.starts_with("cpu") && key[3..].bytes().all(|b| b.is_ascii_digit()) => {
                cpus += 1
            }
            "ctxt" | "btime" | "processes" | "procs_running" | "procs_blocked" => {
                let name = match key {
                    "ctxt" => "node_context_switches_total",
                    "btime" => "node_boot_time_seconds",
                    "processes" => "node_forks_total",
                    "procs_running" => "node_procs_running",
                    _ => "node_procs_blocked",
                };
                if let Some(Ok(value)) = fields.next().map(str::parse::<f64>) {
                    samples.push(sample(name, value));
                }
            }
            _ => {}
        }
    }
    if cpus > 0 {
        samples.push(sample("node_cpu_count", cpus as f64));
    }
}

fn count_processes(root: &HostRoot) -> Option<usize> {
    let entries = std::fs::read_dir(root.path("/proc")).ok()?;
    Some(
        entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name();
                let bytes = name.as_encoded_bytes();
                !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit)
            })
            .count(),
    )
}

fn push_filesystems(
    root: &HostRoot,
    mounts: &[crate::inventory::hardware::Mount],
    samples: &mut Vec<Sample>,
) {
    use crate::inventory::hardware::{FsClass, fs_stats};
    for mount in mounts {
        if mount.class != FsClass::Local {
            continue;
        }
        let labels = [
            ("device", mount.device.as_str()),
            ("fstype", mount.fs_type.as_str()),
            ("mountpoint", mount.mount_point.as_str()),
        ];
        match fs_stats(root, &mount.mount_point) {
            Some(stats) => {
                for (name, value) in [
                    ("node_filesystem_size_bytes", stats.size_bytes),
                    ("node_filesystem_free_bytes", stats.free_bytes),
                    ("node_filesystem_avail_bytes", stats.avail_bytes),
                    ("node_filesystem_files", stats.files),
                    ("node_filesystem_files_free", stats.files_free),
                ] {
                    samples.push(labelled(name, value as f64, &labels));
                }
            }
            None => samples.push(labelled("node_filesystem_device_error", 1.0, &labels)),
        }
    }
}

fn push_net_dev(dev: &str, samples: &mut Vec<Sample>) {
    // face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop ...
    const COLUMNS: [(usize, &str); 8] = [
        (0, "node_network_receive_bytes_total"),
        (1, "node_network_receive_packets_total"),
        (2, "node_network_receive_errs_total"),
        (3, "node_network_receive_drop_total"),
        (8, "node_network_transmit_bytes_total"),
        (9, "node_network_transmit_packets_total"),
        (10, "node_network_transmit_errs_total"),
        (11, "node_network_transmit_drop_total"),
    ];
    for line in dev.lines() {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let values: Vec<u64> = counters
            .split_whitespace()
            .map_while(|v| v.parse().ok())
            .collect();
        if name.is_empty() || values.len() < 16 {
            continue;
        }
        for (column, metric) in COLUMNS {
            samples.push(labelled(metric, values[column] as f64, &[("device", name)]));
        }
    }
}

fn push_sockstat(sockstat: &str, samples: &mut Vec<Sample>) {
    for line in sockstat.lines() {
        let Some((protocol, rest)) = line.split_once(':') else {
            continue;
        };
        let wanted: &[(&str, &str)] = match protocol {
            "sockets" => &[("used", "node_sockstat_sockets_used")],
            "TCP" => &[
                ("inuse", "node_sockstat_TCP_inuse"),
                ("tw", "node_sockstat_TCP_tw"),
                ("alloc", "node_sockstat_TCP_alloc"),
            ],
            "UDP" => &[("inuse", "node_sockstat_UDP_inuse")],
            _ => continue,
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for pair in fields.chunks_exact(2) {
            if let Some((_, name)) = wanted.iter().find(|(key, _)| *key == pair[0])
                && let Ok(value) = pair[1].parse::<f64>()
            {
                samples.push(sample(name, value));
            }
        }
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
        let samples = self.samples()?;
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
            value("node_memory_MemAvailable_bytes"),
            Some(8_192_000.0 * 1024.0)
        );
        assert_eq!(value("node_uptime_seconds"), Some(12345.67));
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }

    #[test]
    fn health_metrics_from_fixture() {
        let dir = fixture();
        dir.write(
            "proc/stat",
            concat!(
                "cpu  911778 5 181167 1360481 7965 0 20620 348 0 0\n",
                "cpu0 442884 0 86514 700179 2614 0 8940 167 0 0\n",
                "cpu1 468893 5 94652 660301 5350 0 11679 181 0 0\n",
                "intr 20241372 0 0\n",
                "ctxt 67486128\n",
                "btime 1795698539\n",
                "processes 163586\n",
                "procs_running 3\n",
                "procs_blocked 1\n",
                "procs_running garbage\n",
            ),
        );
        dir.write(
            "proc/meminfo",
            concat!(
                "MemTotal:       16384000 kB\n",
                "MemFree:            1000 kB\n",
                "MemAvailable:    8192000 kB\n",
                "Buffers:              20 kB\n",
                "Cached:               30 kB\n",
                "SwapTotal:            40 kB\n",
                "SwapFree:             50 kB\n",
                "broken line\n",
            ),
        );
        dir.write(
            "proc/net/dev",
            concat!(
                "Inter-|   Receive                                                |  Transmit\n",
                " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
                "    lo: 5027 91 0 0 0 0 0 0 5027 91 0 0 0 0 0 0\n",
                "  eth0: 191878595   11604    2    3    0     0          0         0   710445    6825    4    5    0     0       0          0\n",
                "   bad: 1 2 3\n",
            ),
        );
        dir.write("proc/sys/fs/file-nr", "450\t0\t2466183\n");
        dir.write(
            "proc/net/sockstat",
            concat!(
                "sockets: used 13\n",
                "TCP: inuse 1 orphan 0 tw 2 alloc 3 mem 0\n",
                "UDP: inuse 4 mem 169\n",
                "UDPLITE: inuse 0\n",
            ),
        );
        dir.write("proc/1/comm", "init\n");
        dir.write("proc/42/comm", "x\n");
        dir.mkdir("data");
        dir.write(
            "proc/self/mounts",
            concat!(
                "/dev/sdb1 /data ext4 rw 0 0\n",
                "10.0.0.9:/x /mnt/nfs nfs4 rw 0 0\n",
                "tmpfs /run tmpfs rw 0 0\n",
                "/dev/sdc1 /gone xfs rw 0 0\n",
            ),
        );
        let samples = BasicMetricsCollector::new(HostRoot::new(dir.path()))
            .samples()
            .unwrap();
        let value =
            |name: &str, labels: &[(&str, &str)]| find(&samples, name, labels).map(|s| s.value);
        assert_eq!(
            value("node_cpu_seconds_total", &[("mode", "user")]),
            Some(9117.78)
        );
        assert_eq!(
            value("node_cpu_seconds_total", &[("mode", "nice")]),
            Some(0.05)
        );
        assert_eq!(
            value("node_cpu_seconds_total", &[("mode", "steal")]),
            Some(3.48)
        );
        assert_eq!(value("node_cpu_count", &[]), Some(2.0));
        assert_eq!(value("node_procs_running", &[]), Some(3.0));
        assert_eq!(value("node_procs_blocked", &[]), Some(1.0));
        assert_eq!(value("node_boot_time_seconds", &[]), Some(1_795_698_539.0));
        assert_eq!(
            value("node_context_switches_total", &[]),
            Some(67_486_128.0)
        );
        assert_eq!(value("node_processes_pids", &[]), Some(2.0));
        assert_eq!(value("node_memory_Buffers_bytes", &[]), Some(20.0 * 1024.0));
        assert_eq!(
            value("node_memory_SwapFree_bytes", &[]),
            Some(50.0 * 1024.0)
        );
        assert_eq!(
            value("node_network_receive_errs_total", &[("device", "eth0")]),
            Some(2.0)
        );
        assert_eq!(
            value("node_network_receive_drop_total", &[("device", "eth0")]),
            Some(3.0)
        );
        assert_eq!(
            value("node_network_transmit_bytes_total", &[("device", "eth0")]),
            Some(710_445.0)
        );
        assert_eq!(
            value("node_network_transmit_drop_total", &[("device", "eth0")]),
            Some(5.0)
        );
        assert_eq!(
            value("node_network_receive_bytes_total", &[("device", "bad")]),
            None
        );
        assert_eq!(value("node_filefd_allocated", &[]), Some(450.0));
        assert_eq!(value("node_filefd_maximum", &[]), Some(2_466_183.0));
        assert_eq!(value("node_sockstat_TCP_inuse", &[]), Some(1.0));
        assert_eq!(value("node_sockstat_TCP_tw", &[]), Some(2.0));
        assert_eq!(value("node_sockstat_UDP_inuse", &[]), Some(4.0));
        assert_eq!(value("node_sockstat_sockets_used", &[]), Some(13.0));
        let data = [
            ("mountpoint", "/data"),
            ("fstype", "ext4"),
            ("device", "/dev/sdb1"),
        ];
        assert!(value("node_filesystem_size_bytes", &data).unwrap() > 0.0);
        assert!(value("node_filesystem_files", &data).unwrap() > 0.0);
        // Never statvfs'ed, no samples; a missing mount point is a device error.
        assert!(
            samples
                .iter()
                .all(|s| !s.labels.iter().any(|(_, v)| v == "/mnt/nfs" || v == "/run"))
        );
        assert_eq!(
            value("node_filesystem_device_error", &[("mountpoint", "/gone")]),
            Some(1.0)
        );
    }

    #[test]
    fn health_metrics_on_this_host() {
        let samples = BasicMetricsCollector::new(HostRoot::default())
            .samples()
            .unwrap();
        for name in [
            "node_load1",
            "node_memory_MemTotal_bytes",
            "node_cpu_seconds_total",
            "node_cpu_count",
            "node_procs_running",
            "node_processes_pids",
            "node_boot_time_seconds",
            "node_network_receive_bytes_total",
            "node_filefd_allocated",
            "node_sockstat_TCP_inuse",
            "node_uptime_seconds",
        ] {
            assert!(find(&samples, name, &[]).is_some(), "{name} missing");
        }
        assert!(
            find(
                &samples,
                "node_filesystem_avail_bytes",
                &[("mountpoint", "/")]
            )
            .is_some()
        );
        // Modest: a few dozen samples, not thousands.
        assert!(samples.len() < 500, "{}", samples.len());
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
            pub fn mkdir(&self, relative: &str) {
                std::fs::create_dir_all(self.0.path().join(relative)).unwrap();
            }
        }
    }
}
