//! Fixture and live-host tests of [`super::installed_packages`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/packages")
        .join(name)
}

/// `(name, version, arch, source)` tuples, for compact assertions.
fn tuples(packages: &[Package]) -> Vec<(&str, &str, &str, &str)> {
    packages
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.version.as_str(),
                p.arch.as_str(),
                p.source.as_str(),
            )
        })
        .collect()
}

#[test]
fn dpkg_fixture_with_tricky_stanzas_and_journal() {
    let packages = installed_packages(&HostRoot::new(fixture("dpkg"))).unwrap();
    assert_eq!(
        tuples(&packages),
        [
            ("libc6", "2.36-9+deb12u10", "amd64", "dpkg"),
            ("libc6", "2.36-9+deb12u10", "i386", "dpkg"),
            ("openssh-server", "1:9.2p1-2+deb12u5", "amd64", "dpkg"),
            ("held-pkg", "1.0~rc1-1", "all", "dpkg"),
            // Upgraded by updates/0000, added by updates/0001; updates/tmp.i is ignored.
            ("to-be-upgraded", "1.1-1", "amd64", "dpkg"),
            ("journal-only", "0.5-2", "arm64", "dpkg"),
        ]
    );
}

#[test]
fn rpm_sqlite_fixture_made_by_rpm() {
    let packages = installed_packages(&HostRoot::new(fixture("rpm-sqlite"))).unwrap();
    assert_eq!(
        tuples(&packages),
        [
            ("bagui-tilde", "1.0~rc1-0.1", "noarch", "rpm"),
            ("bagui-hello", "1.2.3-1", "noarch", "rpm"),
            ("bagui-epoch", "3:2.0-5.fc40", "noarch", "rpm"),
        ]
    );
}

/// rpm committed `bagui-wal` to the WAL only; it must be listed all the same.
#[test]
fn rpm_sqlite_fixture_with_uncheckpointed_wal() {
    let root = fixture("rpm-sqlite-wal");
    let packages = installed_packages(&HostRoot::new(&root)).unwrap();
    assert_eq!(
        tuples(&packages),
        [
            ("bagui-tilde", "1.0~rc1-0.1", "noarch", "rpm"),
            ("bagui-hello", "1.2.3-1", "noarch", "rpm"),
            ("bagui-epoch", "3:2.0-5.fc40", "noarch", "rpm"),
            ("bagui-wal", "0.9-1", "noarch", "rpm"),
        ]
    );
    // The main file alone predates that commit.
    let main = std::fs::read(root.join("usr/lib/sysimage/rpm/rpmdb.sqlite")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("var/lib/rpm/rpmdb.sqlite");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, main).unwrap();
    assert_eq!(
        installed_packages(&HostRoot::new(dir.path()))
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn dpkg_and_rpm_on_one_host() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &str| {
        let to = dir.path().join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    copy(&fixture("dpkg/var/lib/dpkg/status"), "var/lib/dpkg/status");
    copy(
        &fixture("rpm-sqlite/var/lib/rpm/rpmdb.sqlite"),
        "var/lib/rpm/rpmdb.sqlite",
    );
    let packages = installed_packages(&HostRoot::new(dir.path())).unwrap();
    let sources: BTreeSet<&str> = packages.iter().map(|p| p.source.as_str()).collect();
    assert_eq!(sources, BTreeSet::from(["dpkg", "rpm"]));
    assert_eq!(packages.len(), 5 + 3);
}

#[test]
fn empty_root_has_no_packages() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        installed_packages(&HostRoot::new(dir.path()))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn damaged_rpm_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("var/lib/rpm/rpmdb.sqlite");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(fixture("rpm-sqlite/var/lib/rpm/rpmdb.sqlite")).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&db, &bytes).unwrap();
    assert!(installed_packages(&HostRoot::new(dir.path())).is_err());
    std::fs::write(&db, b"garbage").unwrap();
    assert!(installed_packages(&HostRoot::new(dir.path())).is_err());
}

#[test]
fn version_below_dispatches_by_source() {
    assert!(version_below("dpkg", "1.0~rc1-1", "1.0-1"));
    assert!(!version_below("dpkg", "1:0.1", "2.0"));
    assert!(version_below("dpkg", "2.36-9+deb12u9", "2.36-9+deb12u10"));
    assert!(!version_below("dpkg", "1.0", "1.0"));
    assert!(version_below("rpm", "1.0~rc1-1", "1.0-1"));
    assert!(version_below("rpm", "3.0.7-25.el9", "3.0.7-27.el9"));
    assert!(!version_below("rpm", "1:1.0-1", "2.0-1"));
    // A bound without a release covers every release of that version.
    assert!(!version_below("rpm", "3.0.7-1.el9", "3.0.7"));
    assert!(version_below("rpm", "1.0-1", "1.0^git1-1"));
}

/// On a Debian/Ubuntu host, the inventory is exactly what `dpkg-query` calls installed: the
/// second letter of `${db:Status-Abbrev}` is `i` (`ii`, and `hi` for held packages).
#[test]
fn live_host_matches_dpkg_query() {
    assert!(
        Path::new("/var/lib/dpkg/status").exists(),
        "this test compares with dpkg-query and needs a Debian-family host"
    );
    let output = Command::new("dpkg-query")
        .args([
            "-W",
            "-f",
            "${db:Status-Abbrev}|${Package}|${Version}|${Architecture}\n",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut want = BTreeSet::new();
    let mut ii = 0;
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('|').collect();
        if fields[0].starts_with("ii") {
            ii += 1;
        }
        if fields[0].as_bytes().get(1) == Some(&b'i') {
            want.insert((
                fields[1].to_string(),
                fields[2].to_string(),
                fields[3].to_string(),
            ));
        }
    }
    let packages = installed_packages(&HostRoot::default()).unwrap();
    let dpkg: Vec<&Package> = packages.iter().filter(|p| p.source == "dpkg").collect();
    let got: BTreeSet<(String, String, String)> = dpkg
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
        .collect();
    assert_eq!(got.len(), dpkg.len(), "duplicate packages");
    assert_eq!(got, want);
    let held = stdout.lines().filter(|l| l.starts_with("hi")).count();
    assert_eq!(dpkg.len(), ii + held);
}

/// CentOS 7 / Kylin V10 layout: the Berkeley DB `Packages` file built (with `db_load`) from
/// the same rpm headers as the sqlite fixture, plus rpm's key-0 instance counter.
#[test]
fn rpm_berkeley_db_packages_file() {
    let dir = tempfile::tempdir().unwrap();
    let packages_file = dir.path().join("var/lib/rpm/Packages");
    std::fs::create_dir_all(packages_file.parent().unwrap()).unwrap();
    std::fs::copy(fixture("bdb/rpm_packages_4096.db"), &packages_file).unwrap();
    let packages = installed_packages(&HostRoot::new(dir.path())).unwrap();
    let got: BTreeSet<(&str, &str, &str, &str)> = tuples(&packages).into_iter().collect();
    assert_eq!(
        got,
        BTreeSet::from([
            ("bagui-epoch", "3:2.0-5.fc40", "noarch", "rpm"),
            ("bagui-hello", "1.2.3-1", "noarch", "rpm"),
            ("bagui-tilde", "1.0~rc1-0.1", "noarch", "rpm"),
            ("bagui-wal", "0.9-1", "noarch", "rpm"),
        ])
    );
    assert_eq!(packages.len(), 4);
}
