//! Hardware: the machine (CPU, memory, DMI, virtualization), disks, filesystems and NICs.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use bagui_protocol::assets::{Disk, Filesystem, Machine, Nic};

use super::{first_line, is_host_root, run_command};
use crate::{CollectError, HostRoot};

// ---------------------------------------------------------------------------------------------
// Machine

/// What `/proc/cpuinfo` says about the CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    pub model: String,
    pub threads: u32,
    /// Distinct (`physical id`, `core id`) pairs; 0 when cpuinfo has no topology (ARM).
    pub cores: u32,
    /// Distinct `physical id`s; 0 when cpuinfo has no topology.
    pub sockets: u32,
    /// The `hypervisor` flag was seen (x86 guests).
    pub hypervisor: bool,
    /// A `flags` line was seen, so the absence of `hypervisor` means something.
    pub has_flags: bool,
}

/// Parses `/proc/cpuinfo` (x86, aarch64, loongarch64, mips64 layouts).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut packages = std::collections::BTreeSet::new();
    let mut cores = std::collections::BTreeSet::new();
    let mut physical: Option<String> = None;
    let (mut implementer, mut part) = (String::new(), String::new());
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "processor" => {
                info.threads += 1;
                physical = None;
            }
            // x86 "model name"; loongarch "Model Name"; mips "cpu model".
            "model name" | "Model Name" | "cpu model" if info.model.is_empty() => {
                info.model = value.to_owned()
            }
            "physical id" => {
                packages.insert(value.to_owned());
                physical = Some(value.to_owned());
            }
            "core id" => {
                cores.insert((physical.clone().unwrap_or_default(), value.to_owned()));
            }
            "flags" => {
                info.has_flags = true;
                info.hypervisor |= value.split_whitespace().any(|flag| flag == "hypervisor");
            }
            "CPU implementer" if implementer.is_empty() => implementer = value.to_owned(),
            "CPU part" if part.is_empty() => part = value.to_owned(),
            _ => {}
        }
    }
    if info.model.is_empty() && !implementer.is_empty() {
        info.model = arm_cpu_name(&implementer, &part);
    }
    info.sockets = packages.len() as u32;
    info.cores = cores.len() as u32;
    info
}

/// A name for an ARM CPU from its MIDR implementer and part (as lscpu names them).
pub fn arm_cpu_name(implementer: &str, part: &str) -> String {
    let number = |text: &str| u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok();
    let (Some(implementer), part) = (number(implementer), number(part)) else {
        return "unknown".to_owned();
    };
    let name = match (implementer, part) {
        (0x48, Some(0xd01)) => "HiSilicon Kunpeng 920",
        (0x48, Some(0xd02)) => "HiSilicon Kunpeng 930",
        (0x48, _) => "HiSilicon",
        (0x70, Some(0x660)) => "Phytium FTC660",
        (0x70, Some(0x661)) => "Phytium FTC661",
        (0x70, Some(0x662)) => "Phytium FTC662",
        (0x70, Some(0x663)) => "Phytium FTC663",
        (0x70, Some(0x664)) => "Phytium FTC664",
        (0x70, Some(0x862)) => "Phytium FTC862",
        (0x70, _) => "Phytium",
        (0x41, Some(0xd03)) => "ARM Cortex-A53",
        (0x41, Some(0xd07)) => "ARM Cortex-A57",
        (0x41, Some(0xd08)) => "ARM Cortex-A72",
        (0x41, Some(0xd0b)) => "ARM Cortex-A76",
        (0x41, Some(0xd0c)) => "ARM Neoverse-N1",
        (0x41, Some(0xd40)) => "ARM Neoverse-V1",
        (0x41, Some(0xd49)) => "ARM Neoverse-N2",
        (0x41, _) => "ARM",
        (0xc0, _) => "Ampere",
        _ => "unknown",
    };
    name.to_owned()
}

fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// DMI strings that vendors leave as placeholders instead of a value.
fn dmi_value(root: &HostRoot, name: &str) -> String {
    let value = first_line(root, &format!("/sys/class/dmi/id/{name}")).unwrap_or_default();
    const PLACEHOLDERS: [&str; 8] = [
        "to be filled by o.e.m.",
        "not specified",
        "not applicable",
        "default string",
        "system serial number",
        "system product name",
        "none",
        "0123456789",
    ];
    if PLACEHOLDERS.contains(&value.to_ascii_lowercase().as_str()) {
        String::new()
    } else {
        value
    }
}

/// The machine: CPU from `/proc/cpuinfo` (sockets and cores from its topology, else from
/// `/sys/devices/system/cpu/cpu*/topology`, else one socket with a core per thread), memory and
/// swap from `/proc/meminfo`, vendor, product and serial from DMI (the serial is root-only:
/// empty otherwise), and a virtualization guess.
pub fn machine(root: &HostRoot) -> Result<Machine, CollectError> {
    let cpuinfo = root.read("/proc/cpuinfo")?;
    let cpu = parse_cpuinfo(&cpuinfo);
    let meminfo = root.read("/proc/meminfo")?;
    let (mut sockets, mut cores) = (cpu.sockets, cpu.cores);
    if sockets == 0 || cores == 0 {
        let (sys_sockets, sys_cores) = sysfs_topology(root);
        sockets = if sys_sockets > 0 { sys_sockets } else { 1 };
        cores = if sys_cores > 0 {
            sys_cores
        } else {
            cpu.threads
        };
    }
    let vendor = dmi_value(root, "sys_vendor");
    let product = dmi_value(root, "product_name");
    let virtualization = virtualization(root, &cpu, &vendor, &product);
    Ok(Machine {
        cpu_model: if cpu.model.is_empty() {
            "unknown".to_owned()
        } else {
            cpu.model
        },
        cpu_threads: cpu.threads,
        cpu_cores: cores,
        cpu_sockets: sockets,
        memory_bytes: meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0),
        swap_bytes: meminfo_bytes(&meminfo, "SwapTotal").unwrap_or(0),
        vendor,
        product,
        serial: dmi_value(root, "product_serial"),
        virtualization,
    })
}

/// (sockets, cores) from sysfs CPU topology; zeros when unavailable.
fn sysfs_topology(root: &HostRoot) -> (u32, u32) {
    let Ok(entries) = std::fs::read_dir(root.path("/sys/devices/system/cpu")) else {
        return (0, 0);
    };
    let mut packages = std::collections::BTreeSet::new();
    let mut cores = std::collections::BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(index) = name.strip_prefix("cpu") else {
            continue;
        };
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let read = |file: &str| {
            first_line(
                root,
                &format!("/sys/devices/system/cpu/{name}/topology/{file}"),
            )
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v >= 0)
        };
        let (Some(package), Some(core)) = (read("physical_package_id"), read("core_id")) else {
            continue;
        };
        packages.insert(package);
        cores.insert((package, core));
    }
    (packages.len() as u32, cores.len() as u32)
}

/// `none` on bare metal; `docker`, `podman`, `lxc`, `container` (some other container),
/// `kvm`, `qemu`, `vmware`, `microsoft`, `xen`, `oracle` (VirtualBox), `amazon`, `vm` (a
/// hypervisor we cannot name); empty when nothing tells.
///
/// Containers first (as `systemd-detect-virt` does): `/run/systemd/container`, `/.dockerenv`,
/// `/run/.containerenv`, then the container runtimes' paths in `/proc/1/cgroup`. Then DMI
/// vendor and product, `/sys/hypervisor/type`, then the x86 `hypervisor` CPU flag.
pub fn virtualization(root: &HostRoot, cpu: &CpuInfo, vendor: &str, product: &str) -> String {
    if let Some(kind) = first_line(root, "/run/systemd/container") {
        return kind;
    }
    if root.path("/.dockerenv").exists() {
        return "docker".to_owned();
    }
    if root.path("/run/.containerenv").exists() {
        return "podman".to_owned();
    }
    if let Some(cgroup) = root.read_optional("/proc/1/cgroup") {
        for (needle, kind) in [
            ("/docker", "docker"),
            ("/libpod", "podman"),
            ("/lxc/", "lxc"),
            ("/kubepods", "container"),
            ("/containerd", "container"),
        ] {
            if cgroup.contains(needle) {
                return kind.to_owned();
            }
        }
    }
    let dmi = format!("{vendor} {product}").to_ascii_lowercase();
    for (needle, kind) in [
        ("kvm", "kvm"),
        ("openstack", "kvm"),
        ("qemu", "qemu"),
        ("bochs", "bochs"),
        ("vmware", "vmware"),
        ("virtualbox", "oracle"),
        ("innotek", "oracle"),
        ("xen", "xen"),
        ("amazon ec2", "amazon"),
        ("parallels", "parallels"),
        ("microsoft corporation virtual machine", "microsoft"),
        ("alibaba cloud", "kvm"),
    ] {
        if dmi.contains(needle) {
            return kind.to_owned();
        }
    }
    if let Some(kind) = first_line(root, "/sys/hypervisor/type") {
        return kind;
    }
    if cpu.hypervisor {
        return "vm".to_owned();
    }
    if cpu.has_flags || !vendor.is_empty() {
        return "none".to_owned();
    }
    String::new()
}

// ---------------------------------------------------------------------------------------------
// Disks

/// Block devices from `/sys/block`.
///
/// Left out: virtual devices (whose sysfs node resolves under `/sys/devices/virtual/`, and by
/// name `loop*`, `ram*`, `zram*`, `dm-*`, `md*`, `nbd*`): device-mapper (LVM, LUKS, multipath)
/// and md RAID volumes sit on physical disks that are already listed, and loop/zram/nbd are not
/// hardware. Kept: sd, vd, xvd, hd, nvme, mmcblk, sr (optical drives, size 0 when empty).
/// Hidden NVMe multipath paths (`hidden` = 1) are left out too.
pub fn disks(root: &HostRoot) -> Result<Vec<Disk>, CollectError> {
    let dir = root.path("/sys/block");
    let entries =
        std::fs::read_dir(&dir).map_err(|source| CollectError::Read { path: dir, source })?;
    let mut disks = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "zram", "dm-", "md", "nbd"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            continue;
        }
        if std::fs::canonicalize(entry.path())
            .is_ok_and(|target| target.to_string_lossy().contains("/devices/virtual/"))
        {
            continue;
        }
        let base = format!("/sys/block/{name}");
        let read = |file: &str| first_line(root, &format!("{base}/{file}")).unwrap_or_default();
        if read("hidden") == "1" {
            continue;
        }
        let sectors: u64 = read("size").parse().unwrap_or(0);
        let mut serial = read("device/serial");
        if serial.is_empty() {
            serial = read("serial"); // virtio-blk
        }
        if serial.is_empty() {
            serial = vpd_serial(root, &format!("{base}/device/vpd_pg80"));
        }
        let mut model = read("device/model");
        if model.is_empty() {
            model = read("device/name"); // mmc
        }
        disks.push(Disk {
            name,
            // The kernel counts 512-byte sectors here whatever the logical block size.
            size_bytes: sectors * 512,
            model,
            serial,
            rotational: read("queue/rotational") == "1",
            removable: read("removable") == "1",
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

/// The unit serial number from a SCSI VPD page 0x80 (4 header bytes, then ASCII).
fn vpd_serial(root: &HostRoot, path: &str) -> String {
    let Ok(bytes) = std::fs::read(root.path(path)) else {
        return String::new();
    };
    if bytes.len() <= 4 {
        return String::new();
    }
    let length = (bytes[3] as usize).min(bytes.len() - 4);
    String::from_utf8_lossy(&bytes[4..4 + length])
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Filesystems

/// How a mounted filesystem is treated by the inventory and the health metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsClass {
    /// Pseudo and memory filesystems (proc, sysfs, cgroup, tmpfs, ...): left out.
    Virtual,
    /// Network filesystems: listed, but never `statvfs`ed (a dead server hangs it forever).
    Network,
    /// Everything else: listed and measured.
    Local,
}

/// Classifies a filesystem type from `/proc/self/mounts`.
///
/// `tmpfs`/`devtmpfs`/`ramfs` are memory, not storage: out. `squashfs` is read-only images
/// (snaps, live media), always 100 % full: out. `overlay` is kept only as a container's root
/// (`/`): elsewhere it is a container runtime's per-container mount (`/var/lib/docker/...`),
/// which comes and goes with containers. `fuse.*` is out (desktop gvfs, portals, lxcfs),
/// except the network ones (sshfs, s3fs, glusterfs, ceph, rclone); `fuseblk` (ntfs-3g, exfat)
/// is a local disk.
pub fn classify(fs_type: &str, mount_point: &str) -> FsClass {
    const VIRTUAL: [&str; 31] = [
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "tmpfs",
        "ramfs",
        "cgroup",
        "cgroup2",
        "securityfs",
        "pstore",
        "debugfs",
        "tracefs",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "bpf",
        "autofs",
        "binfmt_misc",
        "rpc_pipefs",
        "nsfs",
        "efivarfs",
        "selinuxfs",
        "squashfs",
        "nfsd",
        "rootfs",
        "sockfs",
        "pipefs",
        "cpuset",
        "devfs",
        "none",
    ];
    const NETWORK: [&str; 19] = [
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "lustre",
        "davfs",
        "ncpfs",
        "gfs2",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.glusterfs",
        "fuse.ceph-fuse",
        "fuse.rclone",
        "fuse.juicefs",
    ];
    if NETWORK.contains(&fs_type) {
        FsClass::Network
    } else if VIRTUAL.contains(&fs_type)
        || fs_type.starts_with("fuse.")
        || fs_type == "fuse"
        || (fs_type == "overlay" && mount_point != "/")
    {
        FsClass::Virtual
    } else {
        FsClass::Local
    }
}

/// One line of `/proc/self/mounts`, kept by [`mounts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub class: FsClass,
}

/// Decodes the octal escapes (`\040` for a space) of a mounts field.
fn unescape_mount(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The real (non-virtual) filesystems in a mounts table, de-duplicated.
///
/// A mount point mounted over keeps only its last (visible) mount. Bind mounts (the same
/// device and type, and for btrfs the same `subvol=`) keep only the first mount in table
/// order, which is the original: a bind needs its source mounted first. In a Docker container
/// that leaves one of the bind-mounted `/etc/hosts`-style files for the host's disk.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut by_point: Vec<(Mount, String)> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(device), Some(point), Some(fs_type), options) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mount_point = unescape_mount(point);
        if !mount_point.starts_with('/') {
            continue;
        }
        let class = classify(fs_type, &mount_point);
        if class == FsClass::Virtual {
            // Still hides whatever was mounted there before.
            by_point.retain(|(m, _)| m.mount_point != mount_point);
            continue;
        }
        let subvol = options
            .unwrap_or("")
            .split(',')
            .find(|o| o.starts_with("subvol="))
            .unwrap_or("")
            .to_owned();
        by_point.retain(|(m, _)| m.mount_point != mount_point);
        by_point.push((
            Mount {
                device: unescape_mount(device),
                mount_point,
                fs_type: fs_type.to_owned(),
                class,
            },
            subvol,
        ));
    }
    let mut seen = std::collections::HashSet::new();
    by_point
        .into_iter()
        .filter(|(m, subvol)| {
            // Network and overlay devices are names, not disks: `server:/export` mounted twice
            // is two views only if the paths differ, which the device string already says.
            seen.insert((m.device.clone(), m.fs_type.clone(), subvol.clone()))
        })
        .map(|(m, _)| m)
        .collect()
}

/// The real filesystems mounted on the host (see [`parse_mounts`]).
pub fn mounts(root: &HostRoot) -> Result<Vec<Mount>, CollectError> {
    let text = root
        .read("/proc/self/mounts")
        .or_else(|_| root.read("/proc/mounts"))?;
    Ok(parse_mounts(&text))
}

/// Sizes from `statvfs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    pub size_bytes: u64,
    pub free_bytes: u64,
    /// Free to unprivileged users.
    pub avail_bytes: u64,
    pub files: u64,
    pub files_free: u64,
}

/// `statvfs` of a mount point under `root`. Never call this on a network filesystem.
pub fn fs_stats(root: &HostRoot, mount_point: &str) -> Option<FsStats> {
    let stat = rustix::fs::statvfs(root.path(mount_point)).ok()?;
    let unit = if stat.f_frsize > 0 {
        stat.f_frsize
    } else {
        stat.f_bsize
    };
    Some(FsStats {
        size_bytes: stat.f_blocks.saturating_mul(unit),
        free_bytes: stat.f_bfree.saturating_mul(unit),
        avail_bytes: stat.f_bavail.saturating_mul(unit),
        files: stat.f_files,
        files_free: stat.f_ffree,
    })
}

/// Mounted filesystems from `/proc/self/mounts`, filtered by [`classify`] and de-duplicated by
/// [`parse_mounts`], with size and inode count from `statvfs` — except network filesystems,
/// which are listed with size 0 and never `statvfs`ed. A filesystem whose `statvfs` fails
/// (permissions, a stale mount) is listed with size 0 too.
pub fn filesystems(root: &HostRoot) -> Result<Vec<Filesystem>, CollectError> {
    Ok(mounts(root)?
        .into_iter()
        .map(|mount| {
            let stats = if mount.class == FsClass::Local {
                fs_stats(root, &mount.mount_point).unwrap_or_default()
            } else {
                FsStats::default()
            };
            Filesystem {
                mount_point: mount.mount_point,
                device: mount.device,
                fs_type: mount.fs_type,
                size_bytes: stats.size_bytes,
                inodes: stats.files,
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// NICs

/// Network interfaces from `/sys/class/net` (without `lo`): MAC, MTU, speed (0 when the
/// driver cannot say, as for a link that is down or a virtual device), operstate, and
/// addresses.
///
/// IPv6 addresses come from `/proc/net/if_inet6`, which names the interface. IPv4 has no such
/// file: the local addresses are the `/32 host LOCAL` leaves of `/proc/net/fib_trie`, and each
/// is given the interface and prefix length of the longest on-link (no gateway) route in
/// `/proc/net/route` that contains it — the subnet route the kernel adds with the address.
/// Addresses that match no such route (a `/32`, `noprefixroute`, a point-to-point peer) or
/// match the same subnet on two interfaces cannot be placed that way; then, on the real host,
/// `ip -o -4 addr show` (iproute2, 5 s timeout) is asked for the IPv4 addresses instead, and
/// without it those addresses are left out. Loopback (127/8) addresses are skipped.
pub fn nics(root: &HostRoot) -> Result<Vec<Nic>, CollectError> {
    let dir = root.path("/sys/class/net");
    let entries =
        std::fs::read_dir(&dir).map_err(|source| CollectError::Read { path: dir, source })?;
    let mut addresses: HashMap<String, Vec<String>> = HashMap::new();
    let ipv4 = ipv4_addresses(root);
    for (interface, address) in ipv4 {
        addresses.entry(interface).or_default().push(address);
    }
    if let Some(text) = root.read_optional("/proc/net/if_inet6") {
        for (interface, address) in parse_if_inet6(&text) {
            addresses.entry(interface).or_default().push(address);
        }
    }
    let mut nics = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let read = |file: &str| first_line(root, &format!("/sys/class/net/{name}/{file}"));
        let mut addrs = addresses.remove(&name).unwrap_or_default();
        addrs.sort();
        addrs.dedup();
        nics.push(Nic {
            mac: read("address").unwrap_or_default(),
            addresses: addrs,
            mtu: read("mtu").and_then(|v| v.parse().ok()).unwrap_or(0),
            // `speed` is -1 or EINVAL when unknown.
            speed_mbps: read("speed")
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(0) as u64,
            state: read("operstate").unwrap_or_else(|| "unknown".to_owned()),
            name,
        });
    }
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nics)
}

/// `(interface, "address/prefix")` from `/proc/net/if_inet6`; malformed lines skipped.
pub fn parse_if_inet6(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [hex, _index, prefix, _scope, _flags, name] = fields[..] else {
            continue;
        };
        let (Ok(bits), Ok(prefix)) = (
            u128::from_str_radix(hex, 16),
            u8::from_str_radix(prefix, 16),
        ) else {
            continue;
        };
        if hex.len() != 32 {
            continue;
        }
        out.push((
            name.to_owned(),
            format!("{}/{prefix}", Ipv6Addr::from(bits)),
        ));
    }
    out
}

/// Local IPv4 addresses (the `/32 host LOCAL` leaves) of `/proc/net/fib_trie`, in order,
/// without duplicates (the file repeats them for the main and local tables).
pub fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(address) = trimmed.strip_prefix("|-- ") {
            leaf = address.trim().parse().ok();
        } else if trimmed.starts_with("+-- ") || !trimmed.starts_with('/') {
            leaf = None;
        } else if let Some(address) = leaf {
            let mut words = trimmed.split_whitespace();
            let (Some("/32"), Some(_scope), Some("LOCAL")) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if !out.contains(&address) {
                out.push(address);
            }
        }
    }
    out
}

/// An on-link route of `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRoute {
    pub interface: String,
    pub destination: Ipv4Addr,
    pub prefix: u8,
}

/// The routes without a gateway (flag `RTF_GATEWAY` 0x2 clear) of `/proc/net/route`: the
/// subnets each interface is directly on. Malformed lines are skipped.
pub fn parse_link_routes(text: &str) -> Vec<LinkRoute> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let hex = |field: &str| u32::from_str_radix(field, 16).ok();
        let (Some(destination), Some(flags), Some(mask)) =
            (hex(fields[1]), hex(fields[3]), hex(fields[7]))
        else {
            continue;
        };
        // RTF_UP set, RTF_GATEWAY clear, and not the default route.
        if flags & 0x1 == 0 || flags & 0x2 != 0 {
            continue;
        }
        // The kernel prints the network-order words as native integers.
        let mask = u32::from_be_bytes(mask.to_ne_bytes());
        if mask == 0 || mask.leading_ones() + mask.trailing_zeros() != 32 {
            continue;
        }
        out.push(LinkRoute {
            interface: fields[0].to_owned(),
            destination: Ipv4Addr::from(destination.to_ne_bytes()),
            prefix: mask.leading_ones() as u8,
        });
    }
    out
}

/// Places local addresses on interfaces by the longest on-link route containing them. Returns
/// the placed `(interface, "a.b.c.d/prefix")` and whether any non-loopback address could not be
/// placed unambiguously.
pub fn place_ipv4(local: &[Ipv4Addr], routes: &[LinkRoute]) -> (Vec<(String, String)>, bool) {
    let mut placed = Vec::new();
    let mut unplaced = false;
    for address in local {
        if address.is_loopback() {
            continue;
        }
        let bits = u32::from(*address);
        let contains = |route: &&LinkRoute| {
            let mask = if route.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - route.prefix as u32)
            };
            bits & mask == u32::from(route.destination) & mask
        };
        let Some(best) = routes.iter().filter(contains).map(|r| r.prefix).max() else {
            unplaced = true;
            continue;
        };
        let mut candidates: Vec<&str> = routes
            .iter()
            .filter(contains)
            .filter(|r| r.prefix == best)
            .map(|r| r.interface.as_str())
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        if let [interface] = candidates[..] {
            placed.push((interface.to_owned(), format!("{address}/{best}")));
        } else {
            unplaced = true;
        }
    }
    (placed, unplaced)
}

/// `(interface, "a.b.c.d/prefix")` from `ip -o -4 addr show`; malformed lines skipped.
/// Labels (`eth0:1`) are folded into their interface.
pub fn parse_ip_addr(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = fields.iter().position(|f| *f == "inet") else {
            continue;
        };
        let (Some(name), Some(address)) = (fields.get(1), fields.get(at + 1)) else {
            continue;
        };
        let name = name.trim_end_matches(':');
        let name = name.split('@').next().unwrap_or(name);
        if address.contains('/')
            && address
                .split('/')
                .next()
                .is_some_and(|a| a.parse::<Ipv4Addr>().is_ok())
        {
            out.push((name.to_owned(), (*address).to_owned()));
        }
    }
    out
}

fn ipv4_addresses(root: &HostRoot) -> Vec<(String, String)> {
    let local = root
        .read_optional("/proc/net/fib_trie")
        .map(|text| parse_fib_trie_local(&text))
        .unwrap_or_default();
    let routes = root
        .read_optional("/proc/net/route")
        .map(|text| parse_link_routes(&text))
        .unwrap_or_default();
    let (placed, unplaced) = place_ipv4(&local, &routes);
    if unplaced
        && is_host_root(root)
        && let Ok(text) = run_command("ip", &["-o", "-4", "addr", "show"], Duration::from_secs(5))
    {
        return parse_ip_addr(&text)
            .into_iter()
            .filter(|(name, _)| name != "lo")
            .collect();
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testutil::{Dir, fixture};

    #[test]
    fn x86_cpuinfo_topology() {
        let info = parse_cpuinfo(include_str!(
            "../../tests/fixtures/inventory/hardware/cpuinfo-x86-2s"
        ));
        assert_eq!(info.model, "Intel(R) Xeon(R) Silver 4210R CPU @ 2.40GHz");
        assert_eq!(info.threads, 8);
        assert_eq!(info.sockets, 2);
        assert_eq!(info.cores, 4);
        assert!(info.has_flags);
        assert!(!info.hypervisor);
    }

    #[test]
    fn aarch64_cpuinfo_names_kunpeng_and_phytium() {
        let info = parse_cpuinfo(include_str!(
            "../../tests/fixtures/inventory/hardware/cpuinfo-kunpeng920"
        ));
        assert_eq!(info.model, "HiSilicon Kunpeng 920");
        assert_eq!(info.threads, 4);
        assert_eq!((info.sockets, info.cores), (0, 0));
        assert!(!info.has_flags);
        assert_eq!(arm_cpu_name("0x70", "0x662"), "Phytium FTC662");
        assert_eq!(arm_cpu_name("0x70", "0x999"), "Phytium");
        assert_eq!(arm_cpu_name("0x99", "0x1"), "unknown");
        assert_eq!(arm_cpu_name("zz", "0x1"), "unknown");
    }

    #[test]
    fn machine_from_a_kunpeng_fixture() {
        let root = fixture("hardware/kunpeng");
        let machine = machine(&root).unwrap();
        assert_eq!(machine.cpu_model, "HiSilicon Kunpeng 920");
        assert_eq!(machine.cpu_threads, 4);
        // No topology in cpuinfo: sysfs says 1 package, 4 cores.
        assert_eq!((machine.cpu_sockets, machine.cpu_cores), (1, 4));
        assert_eq!(machine.memory_bytes, 32_505_856 * 1024);
        assert_eq!(machine.swap_bytes, 4_194_300 * 1024);
        assert_eq!(machine.vendor, "Huawei");
        assert_eq!(machine.product, "TaiShan 200 (Model 2280)");
        assert_eq!(machine.serial, "2102312XYZ10L1000123");
        assert_eq!(machine.virtualization, "none");
    }

    #[test]
    fn virtualization_guesses() {
        let dir = Dir::new();
        dir.write(
            "proc/cpuinfo",
            "processor\t: 0\nflags\t\t: fpu sse2 hypervisor\n",
        );
        dir.write("proc/meminfo", "MemTotal: 1024 kB\n");
        assert_eq!(machine(&dir.root()).unwrap().virtualization, "vm");
        dir.write("sys/class/dmi/id/sys_vendor", "QEMU\n");
        dir.write(
            "sys/class/dmi/id/product_name",
            "Standard PC (i440FX + PIIX, 1996)\n",
        );
        dir.write(
            "sys/class/dmi/id/product_serial",
            "To be filled by O.E.M.\n",
        );
        let m = machine(&dir.root()).unwrap();
        assert_eq!(m.virtualization, "qemu");
        assert_eq!(m.serial, "");
        assert_eq!(m.cpu_model, "unknown");
        assert_eq!((m.cpu_sockets, m.cpu_cores), (1, 1));
        dir.write("sys/class/dmi/id/sys_vendor", "VMware, Inc.\n");
        assert_eq!(machine(&dir.root()).unwrap().virtualization, "vmware");
        dir.write("proc/1/cgroup", "0::/system.slice/docker-abc.scope\n");
        assert_eq!(machine(&dir.root()).unwrap().virtualization, "docker");
        dir.write("run/.containerenv", "");
        assert_eq!(machine(&dir.root()).unwrap().virtualization, "podman");
        dir.write("run/systemd/container", "lxc\n");
        assert_eq!(machine(&dir.root()).unwrap().virtualization, "lxc");

        let empty = Dir::new();
        empty.write("proc/cpuinfo", "processor : 0\n");
        empty.write("proc/meminfo", "");
        assert_eq!(machine(&empty.root()).unwrap().virtualization, "");
        assert!(machine(&Dir::new().root()).is_err());
    }

    #[test]
    fn disks_skip_virtual_devices() {
        let dir = Dir::new();
        for (name, size, rotational, removable) in [
            ("sda", "1953525168", "1", "0"),
            ("nvme0n1", "1000215216", "0", "0"),
            ("sr0", "0", "1", "1"),
            ("loop0", "100", "0", "0"),
            ("zram0", "100", "0", "0"),
            ("dm-0", "100", "0", "0"),
            ("md127", "100", "0", "0"),
            ("ram0", "100", "0", "0"),
        ] {
            dir.write(&format!("sys/block/{name}/size"), &format!("{size}\n"));
            dir.write(&format!("sys/block/{name}/queue/rotational"), rotational);
            dir.write(&format!("sys/block/{name}/removable"), removable);
        }
        dir.write("sys/block/sda/device/model", "ST1000DM010-2EP1\n");
        // SCSI VPD page 0x80: header, then the serial padded with spaces.
        let mut vpd = vec![0u8, 0x80, 0, 12];
        vpd.extend_from_slice(b"  ZN1ABCDE  ");
        std::fs::write(dir.path().join("sys/block/sda/device/vpd_pg80"), vpd).unwrap();
        dir.write(
            "sys/block/nvme0n1/device/model",
            "Samsung SSD 980 PRO 1TB                 \n",
        );
        dir.write("sys/block/nvme0n1/device/serial", "S5GXNX0T123456\n");
        dir.write("sys/block/nvme1n1/hidden", "1\n");
        let disks = disks(&dir.root()).unwrap();
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "sda", "sr0"]);
        assert_eq!(disks[0].model, "Samsung SSD 980 PRO 1TB");
        assert_eq!(disks[0].serial, "S5GXNX0T123456");
        assert!(!disks[0].rotational);
        assert_eq!(disks[1].size_bytes, 1_953_525_168 * 512);
        assert_eq!(disks[1].serial, "ZN1ABCDE");
        assert!(disks[1].rotational);
        assert!(disks[2].removable);
        assert!(super::disks(&Dir::new().root()).is_err());
    }

    #[test]
    fn this_hosts_disks_and_machine() {
        let root = HostRoot::default();
        let disks = disks(&root).unwrap();
        for disk in &disks {
            assert!(!disk.name.starts_with("loop") && !disk.name.starts_with("zram"));
        }
        let m = machine(&root).unwrap();
        assert!(
            m.cpu_threads >= 1 && m.cpu_cores >= 1 && m.cpu_sockets >= 1,
            "{m:?}"
        );
        assert!(m.memory_bytes > 0);
    }

    #[test]
    fn mounts_filter_and_deduplicate() {
        let mounts = parse_mounts(include_str!(
            "../../tests/fixtures/inventory/hardware/mounts"
        ));
        let got: Vec<(&str, &str, FsClass)> = mounts
            .iter()
            .map(|m| (m.mount_point.as_str(), m.fs_type.as_str(), m.class))
            .collect();
        assert_eq!(
            got,
            [
                ("/", "ext4", FsClass::Local),
                ("/boot", "xfs", FsClass::Local),
                ("/boot/efi", "vfat", FsClass::Local),
                ("/home", "btrfs", FsClass::Local),
                ("/data/my disk", "xfs", FsClass::Local),
                ("/mnt/share", "nfs4", FsClass::Network),
                ("/mnt/win", "cifs", FsClass::Network),
                ("/mnt/remote", "fuse.sshfs", FsClass::Network),
                ("/media/usb", "fuseblk", FsClass::Local),
            ]
        );
        // Malformed lines are skipped, not fatal.
        assert!(parse_mounts("one-field\n\n/dev/sda1\n").is_empty());
        assert_eq!(classify("overlay", "/"), FsClass::Local);
        assert_eq!(
            classify("overlay", "/var/lib/docker/overlay2/x/merged"),
            FsClass::Virtual
        );
    }

    #[test]
    fn filesystems_never_statvfs_network_mounts() {
        let dir = Dir::new();
        dir.mkdir("data");
        dir.mkdir("mnt/nfs");
        dir.write(
            "proc/self/mounts",
            "/dev/sdb1 /data ext4 rw 0 0\n\
             10.0.0.9:/export /mnt/nfs nfs4 rw 0 0\n\
             tmpfs /run tmpfs rw 0 0\n",
        );
        let filesystems = filesystems(&dir.root()).unwrap();
        assert_eq!(filesystems.len(), 2);
        // /data is a directory in the fixture tree: statvfs measures the filesystem it is on.
        assert!(filesystems[0].size_bytes > 0);
        assert_eq!(filesystems[1].device, "10.0.0.9:/export");
        assert_eq!(filesystems[1].size_bytes, 0);
        assert_eq!(filesystems[1].inodes, 0);
    }

    #[test]
    fn this_hosts_filesystems_match_df() {
        let filesystems = filesystems(&HostRoot::default()).unwrap();
        let root = filesystems
            .iter()
            .find(|f| f.mount_point == "/")
            .expect("/ is listed");
        assert!(root.size_bytes > 0 && root.inodes > 0, "{root:?}");
        for fs in &filesystems {
            assert!(
                !["proc", "sysfs", "tmpfs", "cgroup", "cgroup2", "devpts"]
                    .contains(&fs.fs_type.as_str()),
                "{fs:?}"
            );
        }
        // df reports the same size for / (in 1K blocks).
        let out = std::process::Command::new("df")
            .args(["-P", "-k", "/"])
            .output()
            .expect("df (coreutils) is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        let blocks: u64 = text
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(blocks, root.size_bytes / 1024);
    }

    #[test]
    fn ipv4_from_fib_trie_and_routes() {
        let root = fixture("hardware/net");
        let local = parse_fib_trie_local(&root.read("/proc/net/fib_trie").unwrap());
        let local: Vec<String> = local.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            local,
            [
                "10.20.30.40",
                "10.20.30.41",
                "127.0.0.1",
                "192.168.122.1",
                "172.16.5.5"
            ]
        );
        let routes = parse_link_routes(&root.read("/proc/net/route").unwrap());
        assert_eq!(
            routes[0],
            LinkRoute {
                interface: "eth0".into(),
                destination: "10.20.30.0".parse().unwrap(),
                prefix: 24
            }
        );
        let (placed, unplaced) = place_ipv4(
            &local.iter().map(|a| a.parse().unwrap()).collect::<Vec<_>>(),
            &routes,
        );
        assert_eq!(
            placed,
            [
                ("eth0".to_owned(), "10.20.30.40/24".to_owned()),
                ("eth0".to_owned(), "10.20.30.41/24".to_owned()),
                ("virbr0".to_owned(), "192.168.122.1/24".to_owned()),
            ]
        );
        // 172.16.5.5/32 has no subnet route.
        assert!(unplaced);

        let nics = nics(&root).unwrap();
        let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["eth0", "virbr0"]);
        assert_eq!(nics[0].mac, "52:54:00:ab:cd:ef");
        assert_eq!(nics[0].mtu, 1500);
        assert_eq!(nics[0].speed_mbps, 1000);
        assert_eq!(nics[0].state, "up");
        assert_eq!(
            nics[0].addresses,
            [
                "10.20.30.40/24",
                "10.20.30.41/24",
                "fd00::2/64",
                "fe80::5054:ff:feab:cdef/64"
            ]
        );
        assert_eq!(nics[1].speed_mbps, 0);
        assert_eq!(nics[1].state, "down");
    }

    #[test]
    fn malformed_net_files_are_skipped() {
        assert!(parse_if_inet6("zz 01 40 00 80 eth0\nshort line\n").is_empty());
        assert!(parse_link_routes("Iface\tDestination\neth0 XYZ\n").is_empty());
        assert!(parse_fib_trie_local("garbage\n|-- notanaddress\n   /32 host LOCAL\n").is_empty());
        assert_eq!(
            parse_ip_addr(
                "2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\ valid_lft forever\nrubbish\n"
            ),
            [("eth0".to_owned(), "10.0.0.5/24".to_owned())]
        );
    }

    /// The fib_trie method against `ip -o addr` on this machine.
    #[test]
    fn this_hosts_nics_match_ip_addr() {
        let out = std::process::Command::new("ip")
            .args(["-o", "addr", "show"])
            .output()
            .expect("`ip` is missing: install iproute2 to run this test");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut expected: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields[1].trim_end_matches(':').split('@').next().unwrap();
            let Some(at) = fields.iter().position(|f| *f == "inet" || *f == "inet6") else {
                continue;
            };
            if name != "lo" {
                expected.push((name.to_owned(), fields[at + 1].to_owned()));
            }
        }
        expected.sort();
        let root = HostRoot::default();
        // The /proc method alone, without the `ip` fallback.
        let local = parse_fib_trie_local(&root.read("/proc/net/fib_trie").unwrap());
        let routes = parse_link_routes(&root.read("/proc/net/route").unwrap());
        let (placed, unplaced) = place_ipv4(&local, &routes);
        assert!(
            !unplaced,
            "every address placed by the routes on this machine"
        );
        let mut got = placed;
        got.extend(
            parse_if_inet6(&root.read("/proc/net/if_inet6").unwrap())
                .into_iter()
                .filter(|(n, _)| n != "lo"),
        );
        got.sort();
        assert_eq!(got, expected);
        // And the section as a whole.
        let mut from_nics: Vec<(String, String)> = nics(&root)
            .unwrap()
            .into_iter()
            .flat_map(|nic| {
                nic.addresses
                    .into_iter()
                    .map(move |a| (nic.name.clone(), a))
            })
            .collect();
        from_nics.sort();
        assert_eq!(from_nics, expected);
    }
}
