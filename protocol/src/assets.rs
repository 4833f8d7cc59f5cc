//! Asset payloads (资产在线): the full snapshot of what a machine is and runs, the changes
//! between two snapshots as events, and the results of health checks.
//!
//! The agent keeps its last snapshot, diffs each new one against it with [`diff`] and sends
//! only the changes; the control plane keeps the current snapshot per agent and applies them
//! with [`apply`]. Both sides use this one implementation, so they cannot disagree about what a
//! key or a change is. Each change carries the digest of the snapshot it applies to
//! ([`AssetChanges::base_digest`]); a control plane whose stored digest differs asks for a full
//! snapshot instead of guessing.
//!
//! Items inside a change are encoded on their own (MessagePack, named fields), so a peer that
//! does not know a section keeps the change as bytes and skips it, and a peer that does not
//! know a field of a known section ignores it: the same version-skew rules as every message.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// `Report::kind` of [`AssetSnapshot`].
pub const ASSET_SNAPSHOT: &str = "asset_snapshot";
/// `Report::kind` of [`AssetChanges`].
pub const ASSET_CHANGES: &str = "asset_changes";
/// `Report::kind` of [`CheckResult`].
pub const CHECK_RESULT: &str = "check_result";

/// Operating system, recognised from files on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OsInfo {
    /// `ID` of os-release (`kylin`, `uos`, `openEuler`, `debian`, `centos`, ...).
    pub id: String,
    /// Family the distribution belongs to: `debian`, `rhel`, `kylin`, `uos`, `openeuler`,
    /// `suse`, `alpine`, `arch`, or `unknown`.
    pub family: String,
    pub name: String,
    pub version: String,
    pub version_id: String,
    pub pretty_name: String,
    pub kernel: String,
    pub arch: String,
    pub hostname: String,
}

/// CPU, memory and the machine itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpu_threads: u32,
    /// Physical cores (all sockets).
    pub cpu_cores: u32,
    pub cpu_sockets: u32,
    pub memory_bytes: u64,
    pub swap_bytes: u64,
    /// DMI vendor and product (`/sys/class/dmi/id`), empty when unknown.
    pub vendor: String,
    pub product: String,
    pub serial: String,
    /// `none` on bare metal, the hypervisor or container kind otherwise, empty when unknown.
    pub virtualization: String,
}

/// A block device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub model: String,
    pub serial: String,
    pub rotational: bool,
    pub removable: bool,
}

/// A mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Filesystem {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub size_bytes: u64,
    pub inodes: u64,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    /// Addresses with prefix length, e.g. `10.1.2.3/24`, `fe80::1/64`.
    pub addresses: Vec<String>,
    pub mtu: u32,
    /// Link speed in Mbit/s, 0 when unknown.
    pub speed_mbps: u64,
    /// `up`, `down`, `unknown`, ... (operstate).
    pub state: String,
}

/// An installed package.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Package {
    pub name: String,
    /// Full version as the package manager orders it: `[epoch:]version[-release]`.
    pub version: String,
    pub arch: String,
    /// `dpkg` or `rpm`.
    pub source: String,
}

/// A listening socket and the process that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Listening {
    /// `tcp` or `udp` (IPv4 and IPv6 alike; the address tells them apart).
    pub proto: String,
    pub address: String,
    pub port: u16,
    /// Process name (`comm`), empty when it cannot be seen.
    pub process: String,
    pub pid: u32,
}

/// A local user account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// A local group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// A systemd service unit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    pub name: String,
    /// `active`, `inactive`, `failed`, ... (`unknown` without a running systemd).
    pub active: String,
    /// `running`, `dead`, `exited`, ...
    pub sub: String,
    /// `enabled`, `disabled`, `static`, `masked`, ...
    pub enabled: String,
}

/// A section of the snapshot that could not be collected this time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SectionError {
    pub section: String,
    pub message: String,
}

/// Everything the agent knows about its machine at one time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AssetSnapshot {
    pub taken_ms: u64,
    /// [`AssetSnapshot::compute_digest`] of this snapshot, set by the agent.
    pub digest: String,
    pub os: OsInfo,
    pub machine: Machine,
    pub disks: Vec<Disk>,
    pub filesystems: Vec<Filesystem>,
    pub nics: Vec<Nic>,
    pub packages: Vec<Package>,
    pub listening: Vec<Listening>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub services: Vec<Service>,
    /// Sections that failed; a failed section keeps its previous items instead of reporting
    /// them all removed.
    pub errors: Vec<SectionError>,
}

/// What happened to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    #[default]
    Added,
    Removed,
    Changed,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Added => "added",
            ChangeOp::Removed => "removed",
            ChangeOp::Changed => "changed",
        }
    }
}

/// One item added, removed or changed. `old`/`new` are the encoded items of the section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AssetChange {
    /// [`Section::NAME`]: `os`, `machine`, `disk`, `filesystem`, `nic`, `package`,
    /// `listening`, `user`, `group`, `service`.
    pub section: String,
    /// The item's key within its section ([`Section::key`]).
    pub key: String,
    pub op: ChangeOp,
    pub old: Option<ByteBuf>,
    pub new: Option<ByteBuf>,
}

/// The changes between the snapshot with `base_digest` and the one with `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AssetChanges {
    pub taken_ms: u64,
    pub base_digest: String,
    pub digest: String,
    pub changes: Vec<AssetChange>,
}

/// One Nagios-convention performance datum: `'label'=value[UOM];[warn];[crit];[min];[max]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PerfDatum {
    pub label: String,
    /// `None` when the plugin printed `U` (value undetermined).
    pub value: Option<f64>,
    /// Unit of measure as printed: `s`, `ms`, `us`, `%`, `B`, `KB`, `MB`, `TB`, `c`, or empty.
    pub uom: String,
    /// Warning and critical thresholds in Nagios range syntax (`10`, `10:`, `~:10`, `@10:20`).
    pub warn: Option<String>,
    pub crit: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The result of one run of a check: an external plugin or a built-in probe.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckResult {
    /// The check's configured name.
    pub name: String,
    /// `nagios`, `jsonl` or `probe`.
    pub convention: String,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the Nagios exit codes).
    pub status: u8,
    /// First line of output before `|`.
    pub output: String,
    /// Further lines of output (bounded).
    pub long_output: String,
    pub perfdata: Vec<PerfDatum>,
    pub started_ms: u64,
    pub duration_ms: u64,
    /// Why the check could not run or was cut short (timeout, output too large, not found).
    pub error: Option<String>,
}

impl CheckResult {
    pub fn status_text(&self) -> &'static str {
        status_text(self.status)
    }
}

/// `OK`, `WARNING`, `CRITICAL` or `UNKNOWN` for a Nagios status code.
pub fn status_text(status: u8) -> &'static str {
    match status {
        0 => "OK",
        1 => "WARNING",
        2 => "CRITICAL",
        _ => "UNKNOWN",
    }
}

/// `Report::kind` of [`PostureReport`].
pub const POSTURE_REPORT: &str = "posture_report";
/// `Report::kind` of [`FimEvents`].
pub const FIM_EVENTS: &str = "fim_events";

/// Outcome of one baseline check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckVerdict {
    Pass,
    Fail,
    #[default]
    NotApplicable,
    /// The check could not be evaluated (unreadable file, bad policy entry).
    Error,
}

/// One baseline (等保2.0 / CIS-style) check result with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PostureResult {
    pub id: String,
    pub title: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    pub result: CheckVerdict,
    /// What was seen: `file:line: value`, a process, a port, a package.
    pub evidence: Vec<String>,
    pub remediation: String,
    /// MLPS 2.0 clause reference, e.g. `GB/T 22239-2019 8.1.4.1 a)`.
    pub mlps: String,
}

/// A full baseline run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PostureReport {
    pub taken_ms: u64,
    /// Policy name and version the checks came from.
    pub policy: String,
    /// 0..=100, see the posture module for the formula.
    pub score: u32,
    pub results: Vec<PostureResult>,
    /// SM2 signature (raw r‖s) by the agent's identity key over
    /// [`crate::proof::posture_transcript`]; empty when unsigned.
    pub signature: ByteBuf,
}

/// One change to a watched file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FimEvent {
    pub path: String,
    /// `created`, `modified`, `deleted`, `metadata` (mode/owner only).
    pub change: String,
    /// SM3 hex digests; empty for a missing file.
    pub old_sm3: String,
    pub new_sm3: String,
    pub old_size: u64,
    pub new_size: u64,
    pub old_mode: u32,
    pub new_mode: u32,
    pub old_owner: String,
    pub new_owner: String,
    pub time_ms: u64,
}

/// File-integrity events found in one pass (inotify or periodic scan).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FimEvents {
    pub events: Vec<FimEvent>,
}

/// A kind of item in the snapshot.
pub trait Section: Clone + PartialEq + Serialize + DeserializeOwned {
    const NAME: &'static str;
    /// Unique within the section.
    fn key(&self) -> String;
    /// Whether two items with the same key are the same for change tracking (default: equal).
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

macro_rules! section {
    ($type:ty, $name:literal, |$item:ident| $key:expr) => {
        impl Section for $type {
            const NAME: &'static str = $name;
            fn key(&self) -> String {
                let $item = self;
                $key
            }
        }
    };
}

section!(OsInfo, "os", |_os| "os".to_string());
section!(Machine, "machine", |_m| "machine".to_string());
section!(Disk, "disk", |d| d.name.clone());
section!(Filesystem, "filesystem", |f| f.mount_point.clone());
section!(Nic, "nic", |n| n.name.clone());
section!(Package, "package", |p| if p.arch.is_empty() {
    p.name.clone()
} else {
    format!("{}:{}", p.name, p.arch)
});
/// A listening socket keeps its identity across restarts of its process: a new pid alone is
/// not a change worth an event (the process name is).
impl Section for Listening {
    const NAME: &'static str = "listening";
    fn key(&self) -> String {
        let address = if self.address.contains(':') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        };
        format!("{}/{}:{}", self.proto, address, self.port)
    }
    fn same(&self, other: &Listening) -> bool {
        self.proto == other.proto
            && self.address == other.address
            && self.port == other.port
            && self.process == other.process
    }
}

section!(User, "user", |u| u.name.clone());
section!(Group, "group", |g| g.name.clone());
section!(Service, "service", |s| s.name.clone());

/// Every section name, in the order changes are listed.
pub const SECTIONS: [&str; 10] = [
    "os",
    "machine",
    "disk",
    "filesystem",
    "nic",
    "package",
    "listening",
    "user",
    "group",
    "service",
];

fn encode_item<T: Serialize>(item: &T) -> ByteBuf {
    ByteBuf::from(crate::messages::payload::encode(item))
}

/// Decodes one item of a change.
pub fn decode_item<T: Section>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

fn diff_list<T: Section>(old: &[T], new: &[T], out: &mut Vec<AssetChange>) {
    use std::collections::BTreeMap;
    let old: BTreeMap<String, &T> = old.iter().map(|item| (item.key(), item)).collect();
    let new: BTreeMap<String, &T> = new.iter().map(|item| (item.key(), item)).collect();
    for (key, before) in &old {
        match new.get(key) {
            None => out.push(AssetChange {
                section: T::NAME.into(),
                key: key.clone(),
                op: ChangeOp::Removed,
                old: Some(encode_item(*before)),
                new: None,
            }),
            Some(after) if !after.same(before) => out.push(AssetChange {
                section: T::NAME.into(),
                key: key.clone(),
                op: ChangeOp::Changed,
                old: Some(encode_item(*before)),
                new: Some(encode_item(*after)),
            }),
            Some(_) => {}
        }
    }
    for (key, after) in &new {
        if !old.contains_key(key) {
            out.push(AssetChange {
                section: T::NAME.into(),
                key: key.clone(),
                op: ChangeOp::Added,
                old: None,
                new: Some(encode_item(*after)),
            });
        }
    }
}

/// Why a change could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("change to {section}/{key}: {message}")]
    Bad {
        section: String,
        key: String,
        message: String,
    },
}

fn apply_list<T: Section>(items: &mut Vec<T>, change: &AssetChange) -> Result<(), ApplyError> {
    let bad = |message: String| ApplyError::Bad {
        section: change.section.clone(),
        key: change.key.clone(),
        message,
    };
    items.retain(|item| item.key() != change.key);
    if change.op != ChangeOp::Removed {
        let bytes = change
            .new
            .as_ref()
            .ok_or_else(|| bad("no new value".into()))?;
        let item: T = decode_item(bytes).map_err(|error| bad(error.to_string()))?;
        if item.key() != change.key {
            return Err(bad(format!("item has key {:?}", item.key())));
        }
        items.push(item);
        // Keys are built strings: once per item, not twice per comparison.
        items.sort_by_cached_key(Section::key);
    }
    Ok(())
}

fn apply_single<T: Section + Default>(
    item: &mut T,
    change: &AssetChange,
) -> Result<(), ApplyError> {
    let mut list = vec![std::mem::take(item)];
    apply_list(&mut list, change)?;
    *item = list.pop().unwrap_or_default();
    Ok(())
}

impl AssetSnapshot {
    /// Sorts every list by key, so equal snapshots encode (and digest) equally.
    pub fn normalize(&mut self) {
        fn sort<T: Section>(items: &mut [T]) {
            // Keys are built strings: computing them twice per comparison was a tenth of the
            // control plane's time projecting first snapshots (500 packages each). Stable,
            // and an already sorted list (what agents send) costs one key per item.
            items.sort_by_cached_key(Section::key);
        }
        sort(&mut self.disks);
        sort(&mut self.filesystems);
        sort(&mut self.nics);
        sort(&mut self.packages);
        sort(&mut self.listening);
        sort(&mut self.users);
        sort(&mut self.groups);
        sort(&mut self.services);
        for nic in &mut self.nics {
            nic.addresses.sort();
        }
        for group in &mut self.groups {
            group.members.sort();
        }
    }

    /// SM3 (hex) over the encoded content, leaving out `taken_ms`, `digest` and `errors`.
    pub fn compute_digest(&self) -> String {
        let mut content = self.clone();
        content.normalize();
        content.taken_ms = 0;
        content.digest.clear();
        content.errors.clear();
        for socket in &mut content.listening {
            socket.pid = 0;
        }
        crate::digest::hex(&crate::digest::sm3(&crate::messages::payload::encode(
            &content,
        )))
    }

    /// Normalizes and sets `digest`.
    pub fn seal(&mut self) {
        self.normalize();
        self.digest = self.compute_digest();
    }

    /// Whether a section failed in this snapshot (its items are then not trusted).
    pub fn section_failed(&self, section: &str) -> bool {
        self.errors.iter().any(|error| error.section == section)
    }

    /// Applies changes in order. On error the snapshot is left as it was before the call.
    pub fn apply(&mut self, changes: &[AssetChange]) -> Result<(), ApplyError> {
        let mut next = self.clone();
        for change in changes {
            match change.section.as_str() {
                "os" => apply_single(&mut next.os, change)?,
                "machine" => apply_single(&mut next.machine, change)?,
                "disk" => apply_list(&mut next.disks, change)?,
                "filesystem" => apply_list(&mut next.filesystems, change)?,
                "nic" => apply_list(&mut next.nics, change)?,
                "package" => apply_list(&mut next.packages, change)?,
                "listening" => apply_list(&mut next.listening, change)?,
                "user" => apply_list(&mut next.users, change)?,
                "group" => apply_list(&mut next.groups, change)?,
                "service" => apply_list(&mut next.services, change)?,
                // A section from a newer agent: nothing of ours to update.
                _ => {}
            }
        }
        *self = next;
        Ok(())
    }
}

/// The changes that turn `old` into `new`. A section that failed in `new` is left out, so a
/// failed read never looks like every item removed.
pub fn diff(old: &AssetSnapshot, new: &AssetSnapshot) -> Vec<AssetChange> {
    let mut out = Vec::new();
    let keep = |section: &str| !new.section_failed(section);
    if keep("os") {
        diff_list(
            std::slice::from_ref(&old.os),
            std::slice::from_ref(&new.os),
            &mut out,
        );
    }
    if keep("machine") {
        diff_list(
            std::slice::from_ref(&old.machine),
            std::slice::from_ref(&new.machine),
            &mut out,
        );
    }
    if keep("disk") {
        diff_list(&old.disks, &new.disks, &mut out);
    }
    if keep("filesystem") {
        diff_list(&old.filesystems, &new.filesystems, &mut out);
    }
    if keep("nic") {
        diff_list(&old.nics, &new.nics, &mut out);
    }
    if keep("package") {
        diff_list(&old.packages, &new.packages, &mut out);
    }
    if keep("listening") {
        diff_list(&old.listening, &new.listening, &mut out);
    }
    if keep("user") {
        diff_list(&old.users, &new.users, &mut out);
    }
    if keep("group") {
        diff_list(&old.groups, &new.groups, &mut out);
    }
    if keep("service") {
        diff_list(&old.services, &new.services, &mut out);
    }
    out
}

/// Carries the items of sections that failed in `new` over from `old`, so the stored snapshot
/// keeps the last known good state of every section.
pub fn carry_failed_sections(old: &AssetSnapshot, new: &mut AssetSnapshot) {
    if new.section_failed("os") {
        new.os = old.os.clone();
    }
    if new.section_failed("machine") {
        new.machine = old.machine.clone();
    }
    if new.section_failed("disk") {
        new.disks = old.disks.clone();
    }
    if new.section_failed("filesystem") {
        new.filesystems = old.filesystems.clone();
    }
    if new.section_failed("nic") {
        new.nics = old.nics.clone();
    }
    if new.section_failed("package") {
        new.packages = old.packages.clone();
    }
    if new.section_failed("listening") {
        new.listening = old.listening.clone();
    }
    if new.section_failed("user") {
        new.users = old.users.clone();
    }
    if new.section_failed("group") {
        new.groups = old.groups.clone();
    }
    if new.section_failed("service") {
        new.services = old.services.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            source: "dpkg".into(),
        }
    }

    fn snapshot() -> AssetSnapshot {
        let mut snapshot = AssetSnapshot {
            os: OsInfo {
                id: "debian".into(),
                family: "debian".into(),
                ..OsInfo::default()
            },
            packages: vec![
                package("openssh-server", "1:9.2p1-2"),
                package("curl", "7.88"),
            ],
            listening: vec![Listening {
                proto: "tcp".into(),
                address: "0.0.0.0".into(),
                port: 22,
                process: "sshd".into(),
                pid: 10,
            }],
            users: vec![User {
                name: "root".into(),
                ..User::default()
            }],
            ..AssetSnapshot::default()
        };
        snapshot.seal();
        snapshot
    }

    #[test]
    fn diff_then_apply_reproduces_the_new_snapshot() {
        let old = snapshot();
        let mut new = old.clone();
        for package in &mut new.packages {
            if package.name == "openssh-server" {
                package.version = "1:9.6p1-1".into();
            }
        }
        new.packages.retain(|p| p.name != "curl");
        new.packages.push(package("nginx", "1.22"));
        new.listening.push(Listening {
            proto: "tcp".into(),
            address: "::".into(),
            port: 443,
            process: "nginx".into(),
            pid: 20,
        });
        new.users.push(User {
            name: "ops".into(),
            uid: 1000,
            ..User::default()
        });
        new.seal();
        let changes = diff(&old, &new);
        let ops: Vec<(String, String, ChangeOp)> = changes
            .iter()
            .map(|c| (c.section.clone(), c.key.clone(), c.op))
            .collect();
        assert!(ops.contains(&("package".into(), "curl:amd64".into(), ChangeOp::Removed)));
        assert!(ops.contains(&("package".into(), "nginx:amd64".into(), ChangeOp::Added)));
        assert!(ops.contains(&(
            "package".into(),
            "openssh-server:amd64".into(),
            ChangeOp::Changed
        )));
        assert!(ops.contains(&("listening".into(), "tcp/[::]:443".into(), ChangeOp::Added)));
        assert!(ops.contains(&("user".into(), "ops".into(), ChangeOp::Added)));
        assert_eq!(changes.len(), 5);
        let changed = changes.iter().find(|c| c.op == ChangeOp::Changed).unwrap();
        let before: Package = decode_item(changed.old.as_ref().unwrap()).unwrap();
        let after: Package = decode_item(changed.new.as_ref().unwrap()).unwrap();
        assert_eq!(before.version, "1:9.2p1-2");
        assert_eq!(after.version, "1:9.6p1-1");

        let mut applied = old.clone();
        applied.apply(&changes).unwrap();
        assert_eq!(applied.compute_digest(), new.digest);
        assert_ne!(old.digest, new.digest);
    }

    #[test]
    fn equal_content_has_equal_digest_in_any_order() {
        let a = snapshot();
        let mut b = a.clone();
        b.packages.reverse();
        b.taken_ms = 99;
        assert_eq!(a.digest, b.compute_digest());
        assert!(diff(&a, &b).is_empty());
    }

    #[test]
    fn a_failed_section_is_not_reported_as_removed() {
        let old = snapshot();
        let mut new = old.clone();
        new.packages.clear();
        new.errors.push(SectionError {
            section: "package".into(),
            message: "dpkg status unreadable".into(),
        });
        assert!(diff(&old, &new).is_empty());
        carry_failed_sections(&old, &mut new);
        assert_eq!(new.packages, old.packages);
    }

    #[test]
    fn a_bad_change_leaves_the_snapshot_untouched() {
        let mut target = snapshot();
        let before = target.clone();
        let changes = vec![
            AssetChange {
                section: "user".into(),
                key: "root".into(),
                op: ChangeOp::Removed,
                old: None,
                new: None,
            },
            AssetChange {
                section: "package".into(),
                key: "x".into(),
                op: ChangeOp::Added,
                old: None,
                new: Some(ByteBuf::from(vec![0xc1])),
            },
        ];
        assert!(target.apply(&changes).is_err());
        assert_eq!(target, before);
        // Unknown sections (from a newer agent) are skipped, not errors.
        let unknown = AssetChange {
            section: "gpu".into(),
            key: "0".into(),
            ..AssetChange::default()
        };
        target.apply(&[unknown]).unwrap();
        assert_eq!(target, before);
    }
}
