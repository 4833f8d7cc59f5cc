//! Reads the whole asset snapshot: every inventory section, each on its own, so one section
//! that fails (an unreadable rpm database) is recorded in `errors` and never spoils the rest.
//!
//! The package list is the expensive part (parsing a few MB of dpkg status or rpm headers), and
//! it changes rarely, so it is re-read only when the package databases' size or modification
//! time changed since the last read. That keeps a run cheap enough to look for changes every
//! minute on a township terminal.

use std::sync::Mutex;
use std::time::SystemTime;

use bagui_protocol::assets::{AssetSnapshot, Package, SectionError};

use crate::{CollectError, HostRoot, inventory, packages};

/// Files whose change means the package list must be read again.
const PACKAGE_DATABASES: [&str; 7] = [
    "/var/lib/dpkg/status",
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite-wal",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite-wal",
    "/var/lib/rpm/Packages",
    "/var/lib/dpkg/updates",
];

type Stamp = Vec<Option<(u64, SystemTime)>>;

/// Reads snapshots of one host, remembering the package list between reads.
#[derive(Debug)]
pub struct AssetReader {
    root: HostRoot,
    packages: Mutex<Option<(Stamp, Vec<Package>)>>,
}

impl AssetReader {
    pub fn new(root: HostRoot) -> AssetReader {
        AssetReader {
            root,
            packages: Mutex::new(None),
        }
    }

    fn stamp(&self) -> Stamp {
        PACKAGE_DATABASES
            .iter()
            .map(|path| {
                let metadata = std::fs::metadata(self.root.path(path)).ok()?;
                Some((metadata.len(), metadata.modified().ok()?))
            })
            .collect()
    }

    fn packages(&self) -> Result<Vec<Package>, CollectError> {
        let stamp = self.stamp();
        let mut cache = self
            .packages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached, list)) = cache.as_ref()
            && *cached == stamp
        {
            return Ok(list.clone());
        }
        let list = packages::installed_packages(&self.root)?;
        *cache = Some((stamp, list.clone()));
        Ok(list)
    }

    /// Reads every section. The result is sealed (normalized, digest set).
    pub fn read(&self, now_ms: u64) -> AssetSnapshot {
        let mut snapshot = AssetSnapshot {
            taken_ms: now_ms,
            ..AssetSnapshot::default()
        };
        let mut errors = Vec::new();
        let mut section = |name: &str, result: Result<(), CollectError>| {
            if let Err(error) = result {
                errors.push(SectionError {
                    section: name.to_owned(),
                    message: error.to_string(),
                });
            }
        };
        let root = &self.root;
        section(
            "os",
            inventory::os::os_info(root).map(|value| snapshot.os = value),
        );
        section(
            "machine",
            inventory::hardware::machine(root).map(|value| snapshot.machine = value),
        );
        section(
            "disk",
            inventory::hardware::disks(root).map(|value| snapshot.disks = value),
        );
        section(
            "filesystem",
            inventory::hardware::filesystems(root).map(|value| snapshot.filesystems = value),
        );
        section(
            "nic",
            inventory::hardware::nics(root).map(|value| snapshot.nics = value),
        );
        section(
            "package",
            self.packages().map(|value| snapshot.packages = value),
        );
        section(
            "listening",
            inventory::ports::listening(root).map(|value| snapshot.listening = value),
        );
        section(
            "user",
            inventory::accounts::users(root).map(|value| snapshot.users = value),
        );
        section(
            "group",
            inventory::accounts::groups(root).map(|value| snapshot.groups = value),
        );
        section(
            "service",
            inventory::services::services(root).map(|value| snapshot.services = value),
        );
        snapshot.errors = errors;
        snapshot.seal();
        snapshot
    }
}
