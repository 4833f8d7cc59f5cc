//! Installed packages: the dpkg status file and the rpm database (sqlite and Berkeley DB).
//!
//! Everything is read from the package managers' own files, never by running `dpkg-query` or
//! `rpm`: the agent must not depend on those tools working (a half-upgraded rpm, a missing
//! librpm on a minimal image) and must not take their locks. The readers are strict about
//! format — an unreadable database is an error for this round, not a silently short list.

pub mod bdb;
pub mod dpkg;
pub mod rpm;
pub mod sqlite;
pub mod version;

use std::path::{Path, PathBuf};

use bagui_protocol::assets::Package;

use crate::{CollectError, HostRoot};

/// The dpkg status database.
const DPKG_STATUS: &str = "/var/lib/dpkg/status";
/// dpkg's journal of changes not yet folded into the status file.
const DPKG_UPDATES: &str = "/var/lib/dpkg/updates";
/// rpm's sqlite databases, newest layout first: `/usr/lib/sysimage/rpm` (Fedora 36+, RHEL 9,
/// openEuler 22.03+; `/var/lib/rpm` is often a symlink to it) and `/var/lib/rpm` (rpm 4.16+
/// elsewhere).
const RPM_SQLITE: [&str; 2] = [
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
];
/// rpm's Berkeley DB database (rpm < 4.16: CentOS 7/8, Kylin V10, UOS server).
const RPM_BDB: &str = "/var/lib/rpm/Packages";

/// Every installed package the host's package databases know.
///
/// dpkg is read when its status file exists; rpm from the first sqlite database found, else
/// the Berkeley DB one. A host may have both (rpm installed on Debian, usually with an empty
/// database): both lists are returned, told apart by `source`.
pub fn installed_packages(root: &HostRoot) -> Result<Vec<Package>, CollectError> {
    let mut packages = Vec::new();
    if root.path(DPKG_STATUS).exists() {
        packages.extend(dpkg_packages(root)?);
    }
    if let Some(path) = RPM_SQLITE.iter().map(|p| root.path(p)).find(|p| p.exists()) {
        packages.extend(rpm_sqlite_packages(&path)?);
    } else if root.path(RPM_BDB).exists() {
        packages.extend(rpm_bdb_packages(&root.path(RPM_BDB))?);
    }
    Ok(packages)
}

/// Whether `version` is strictly below `bound` in the ordering of the package manager named
/// by `source` (`dpkg` or `rpm`; anything else orders as rpm, the more common family among
/// the hosts we manage that is not dpkg).
pub fn version_below(source: &str, version: &str, bound: &str) -> bool {
    let order = match source {
        "dpkg" => version::compare_dpkg(version, bound),
        _ => version::compare_rpm(version, bound),
    };
    order == std::cmp::Ordering::Less
}

/// Installed packages from the dpkg status file with its pending journal applied.
fn dpkg_packages(root: &HostRoot) -> Result<Vec<Package>, CollectError> {
    let status = dpkg::parse_status(&root.read(DPKG_STATUS)?);
    let mut updates = Vec::new();
    for path in journal_files(&root.path(DPKG_UPDATES))? {
        let text = std::fs::read_to_string(&path).map_err(|source| read_error(&path, source))?;
        updates.extend(dpkg::parse_status(&text));
    }
    Ok(dpkg::installed(dpkg::apply_updates(status, updates)))
}

/// The journal entries in `dir`, in the order dpkg wrote them (their names are zero-padded
/// sequence numbers); none when the directory does not exist.
fn journal_files(dir: &Path) -> Result<Vec<PathBuf>, CollectError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(read_error(dir, source)),
    };
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| read_error(dir, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| dpkg::is_journal_name(n)) else {
            continue;
        };
        files.push((name.parse().unwrap_or(u64::MAX), entry.path()));
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// Installed packages from an rpm sqlite database (and its WAL).
fn rpm_sqlite_packages(path: &Path) -> Result<Vec<Package>, CollectError> {
    let fail = |e: sqlite::SqliteError| CollectError::Other(format!("{}: {e}", path.display()));
    let db = sqlite::Database::open(path).map_err(fail)?;
    let Some(root) = db.table_root("Packages").map_err(fail)? else {
        return Err(CollectError::Other(format!(
            "{}: no Packages table",
            path.display()
        )));
    };
    let mut packages = Vec::new();
    db.for_each_row(root, |hnum, values| {
        // rpm's schema: (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL).
        let Some(sqlite::Value::Blob(blob)) = values.get(1) else {
            return Err(sqlite::SqliteError::Corrupt(format!(
                "Packages row {hnum}: no header blob"
            )));
        };
        let package = rpm::package_from_header(blob)
            .map_err(|e| sqlite::SqliteError::Corrupt(format!("Packages row {hnum}: {e}")))?;
        packages.push(package);
        Ok(())
    })
    .map_err(fail)?;
    Ok(packages)
}

/// Installed packages from an rpm Berkeley DB `Packages` file.
fn rpm_bdb_packages(path: &Path) -> Result<Vec<Package>, CollectError> {
    let bytes = std::fs::read(path).map_err(|source| read_error(path, source))?;
    let fail = |e: String| CollectError::Other(format!("{}: {e}", path.display()));
    let values = bdb::read_hash_values(&bytes).map_err(|e| fail(e.to_string()))?;
    values
        .iter()
        // Besides one value per package, rpm keeps a 4-byte "next instance number" record
        // under key 0 in the same database; it is no header.
        .filter(|blob| blob.len() != 4)
        .map(|blob| rpm::package_from_header(blob).map_err(|e| fail(e.to_string())))
        .collect()
}

fn read_error(path: &Path, source: std::io::Error) -> CollectError {
    CollectError::Read {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;
