//! Arbitrary bytes as the package managers' databases the agent reads from the host's disk:
//! a dpkg status file, an rpm header blob, an rpm sqlite database (with or without its WAL)
//! and an rpm Berkeley DB hash file. A corrupt or hostile database is an error for the
//! round, never a panic, a hang or an unbounded allocation.
#![no_main]

use std::cmp::Ordering;

use bagui_plugins::packages::{bdb, dpkg, rpm, sqlite, version, version_below};
use libfuzzer_sys::fuzz_target;

/// Rows read from one sqlite table before the traversal is stopped.
const MAX_ROWS: usize = 10_000;
/// Values of a Berkeley DB file fed on to the header reader.
const MAX_BDB_VALUES: usize = 10_000;
/// Version pairs compared per input (the comparisons are quadratic in the stanza count).
const MAX_VERSIONS: usize = 16;

/// The first three bytes of the WAL magic (`0x377f0682`/`0x377f0683`, big-endian on disk).
const WAL_MAGIC_PREFIX: [u8; 3] = [0x37, 0x7f, 0x06];

fuzz_target!(|data: &[u8]| {
    dpkg_status(data);
    let _ = rpm::package_from_header(data);
    sqlite_db(data.to_vec(), None);
    // A WAL after the main file: split at the last WAL magic, so the fuzzer can grow both.
    if let Some(at) = data
        .windows(4)
        .rposition(|w| w[..3] == WAL_MAGIC_PREFIX && (w[3] == 0x82 || w[3] == 0x83))
        .filter(|&at| at > 0)
    {
        sqlite_db(data[..at].to_vec(), Some(data[at..].to_vec()));
    }
    berkeley_db(data);
});

fn dpkg_status(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let stanzas = dpkg::parse_status(&text);
    for stanza in &stanzas {
        assert!(!stanza.package.is_empty());
    }
    // The second half as the journal on top of the first, as the agent reads `updates/`.
    let (base, journal) = text.split_at(text.floor_char_boundary(text.len() / 2));
    let merged = dpkg::apply_updates(dpkg::parse_status(base), dpkg::parse_status(journal));
    let installed = dpkg::installed(merged);
    let versions: Vec<&str> = installed
        .iter()
        .map(|p| p.version.as_str())
        .chain(stanzas.iter().map(|s| s.version.as_str()))
        .take(MAX_VERSIONS)
        .collect();
    compare_versions(&versions);
    let _ = dpkg::installed(stanzas);
}

/// Both orderings must be antisymmetric and reflexive on whatever the databases hold: the
/// vulnerability matcher relies on them to decide "below the fixed version".
fn compare_versions(versions: &[&str]) {
    for a in versions {
        assert_eq!(version::compare_dpkg(a, a), Ordering::Equal, "dpkg {a:?}");
        assert_eq!(version::compare_rpm(a, a), Ordering::Equal, "rpm {a:?}");
        for b in versions {
            assert_eq!(
                version::compare_dpkg(a, b),
                version::compare_dpkg(b, a).reverse(),
                "dpkg {a:?} {b:?}"
            );
            assert_eq!(
                version::compare_rpm(a, b),
                version::compare_rpm(b, a).reverse(),
                "rpm {a:?} {b:?}"
            );
            let _ = version::rpmvercmp(a, b);
            let _ = version_below("dpkg", a, b);
            let _ = version_below("rpm", a, b);
        }
    }
}

fn sqlite_db(main: Vec<u8>, wal: Option<Vec<u8>>) {
    let Ok(db) = sqlite::Database::from_bytes(main, wal) else {
        return;
    };
    let Ok(Some(root)) = db.table_root("Packages") else {
        return;
    };
    let mut rows = 0usize;
    let mut versions = Vec::new();
    let _ = db.for_each_row(root, |_rowid, values| {
        rows += 1;
        if rows > MAX_ROWS {
            return Err(sqlite::SqliteError::Corrupt("fuzz: row limit".into()));
        }
        for value in values {
            match value {
                sqlite::Value::Blob(blob) => {
                    if let Ok(package) = rpm::package_from_header(blob)
                        && versions.len() < MAX_VERSIONS
                    {
                        versions.push(package.version);
                    }
                }
                sqlite::Value::Text(text) => {
                    let _ = db.text(text);
                }
                _ => {}
            }
        }
        Ok(())
    });
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    compare_versions(&versions);
}

fn berkeley_db(data: &[u8]) {
    let Ok(values) = bdb::read_hash_values(data) else {
        return;
    };
    for value in values.iter().take(MAX_BDB_VALUES) {
        let _ = rpm::package_from_header(value);
    }
}
