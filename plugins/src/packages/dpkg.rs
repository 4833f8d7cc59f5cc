//! The dpkg status database: `/var/lib/dpkg/status` plus the pending journal in
//! `/var/lib/dpkg/updates/`.
//!
//! The status file is a sequence of RFC822-like stanzas separated by blank lines; a line that
//! starts with a space or tab continues the previous field. dpkg writes each state change to a
//! numbered file in `updates/` first and folds the journal into `status` later, and
//! `dpkg-query` applies that journal when it reads the database — so do we, or a package
//! installed by an interrupted `dpkg` run would be missing.

use bagui_protocol::assets::Package;

/// One stanza's fields of interest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    pub package: String,
    pub status: String,
    pub version: String,
    pub architecture: String,
    pub multi_arch: String,
}

impl Stanza {
    /// Whether dpkg considers the package installed: the Status's third word (the package
    /// state) is exactly `installed`, i.e. the second letter of `${db:Status-Abbrev}` is `i`.
    ///
    /// The first word (the selection: install/hold/deinstall/purge) is a wish, not a state, so
    /// a held (`hi`) package is installed. `config-files` (`rc`), `half-installed`, `unpacked`,
    /// `half-configured`, `triggers-awaited` and `triggers-pending` are not: their files are
    /// missing or they are not configured, and `dpkg -l` does not show them as `ii` either.
    pub fn is_installed(&self) -> bool {
        self.status.split_whitespace().nth(2) == Some("installed")
    }

    /// The key under which a journal entry replaces a status entry: `Multi-Arch: same`
    /// packages exist once per architecture, every other package once per name.
    fn slot(&self) -> (String, Option<String>) {
        if self.multi_arch == "same" {
            (self.package.clone(), Some(self.architecture.clone()))
        } else {
            (self.package.clone(), None)
        }
    }

    fn into_package(self) -> Package {
        Package {
            name: self.package,
            version: self.version,
            arch: self.architecture,
            source: "dpkg".to_string(),
        }
    }
}

/// Splits a status file into stanzas, keeping only those that name a package.
///
/// Unknown fields and malformed lines are skipped: dpkg itself is the authority on the file's
/// validity, and one odd line must not hide every other package from the inventory.
pub fn parse_status(text: &str) -> Vec<Stanza> {
    let mut stanzas = Vec::new();
    let mut current = Stanza::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            push_stanza(&mut stanzas, std::mem::take(&mut current));
        } else if line.starts_with([' ', '\t']) {
            // Continuation of a multi-line field (Description, Conffiles, ...): none of the
            // fields we keep is multi-line, so it is skipped — but it must never be read as a
            // field of its own (a description line may well say "Package: x").
        } else if let Some((name, value)) = line.split_once(':') {
            set_field(&mut current, name.trim(), value.trim());
        }
    }
    push_stanza(&mut stanzas, current);
    stanzas
}

fn push_stanza(stanzas: &mut Vec<Stanza>, stanza: Stanza) {
    if !stanza.package.is_empty() {
        stanzas.push(stanza);
    }
}

/// Field names are case-insensitive in deb822.
fn set_field(stanza: &mut Stanza, name: &str, value: &str) {
    let slot = match name.to_ascii_lowercase().as_str() {
        "package" => &mut stanza.package,
        "status" => &mut stanza.status,
        "version" => &mut stanza.version,
        "architecture" => &mut stanza.architecture,
        "multi-arch" => &mut stanza.multi_arch,
        _ => return,
    };
    *slot = value.to_string();
}

/// Applies journal entries (in order) on top of the status file's stanzas: an entry replaces
/// the stanza in the same slot, or is added if there is none.
pub fn apply_updates(
    mut base: Vec<Stanza>,
    updates: impl IntoIterator<Item = Stanza>,
) -> Vec<Stanza> {
    for update in updates {
        let slot = update.slot();
        match base.iter_mut().find(|s| s.slot() == slot) {
            Some(existing) => *existing = update,
            None => base.push(update),
        }
    }
    base
}

/// The installed packages among the stanzas, in file order.
pub fn installed(stanzas: Vec<Stanza>) -> Vec<Package> {
    stanzas
        .into_iter()
        .filter(Stanza::is_installed)
        .map(Stanza::into_package)
        .collect()
}

/// Whether a file in `updates/` is a journal entry: dpkg names them with digits only
/// (`0000`, `0001`, ...); `tmp.i` and anything else are in-progress writes, not entries.
pub fn is_journal_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Multi-Arch: same
Architecture: amd64
Version: 2.36-9+deb12u10
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.
 .
 Package: fake-continuation-line
Homepage: https://www.gnu.org/software/libc/libc.html

Package: libc6
Status: install ok installed
Multi-Arch: same
Architecture: i386
Version: 2.36-9+deb12u10

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: broken
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0-1

Package: held
Status: hold ok installed
Architecture: all
Version: 1:3.0~rc1-2

package: lower-case-fields
status: install ok installed
architecture: amd64
version: 0.1

Package: halfconf
Status: install ok half-configured
Architecture: amd64
Version: 1

Package: unpacked
Status: install ok unpacked
Architecture: amd64
Version: 1

Package: gone
Status: purge ok not-installed
Architecture: amd64
";

    #[test]
    fn parses_stanzas_and_continuations() {
        let stanzas = parse_status(STATUS);
        let names: Vec<&str> = stanzas.iter().map(|s| s.package.as_str()).collect();
        assert_eq!(
            names,
            [
                "libc6",
                "libc6",
                "oldpkg",
                "broken",
                "held",
                "lower-case-fields",
                "halfconf",
                "unpacked",
                "gone"
            ]
        );
    }

    #[test]
    fn keeps_only_installed_state() {
        let packages = installed(parse_status(STATUS));
        let got: Vec<(&str, &str, &str)> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("libc6", "2.36-9+deb12u10", "amd64"),
                ("libc6", "2.36-9+deb12u10", "i386"),
                ("held", "1:3.0~rc1-2", "all"),
                ("lower-case-fields", "0.1", "amd64"),
            ]
        );
        assert!(packages.iter().all(|p| p.source == "dpkg"));
    }

    #[test]
    fn journal_replaces_by_slot() {
        let base = parse_status(STATUS);
        let updates = parse_status(
            "Package: oldpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.1-1\n\n\
             Package: libc6\nStatus: install ok half-configured\nMulti-Arch: same\nArchitecture: i386\nVersion: 2.36-10\n\n\
             Package: newpkg\nStatus: install ok installed\nArchitecture: arm64\nVersion: 5\n",
        );
        let packages = installed(apply_updates(base, updates));
        let got: Vec<(&str, &str)> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.arch.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("libc6", "amd64"),
                ("oldpkg", "amd64"),
                ("held", "all"),
                ("lower-case-fields", "amd64"),
                ("newpkg", "arm64"),
            ]
        );
        assert_eq!(packages[1].version, "1.1-1");
    }

    #[test]
    fn journal_names() {
        assert!(is_journal_name("0000"));
        assert!(is_journal_name("0123"));
        assert!(!is_journal_name("tmp.i"));
        assert!(!is_journal_name(""));
    }

    #[test]
    fn garbage_does_not_panic() {
        assert!(parse_status("").is_empty());
        assert!(parse_status("\n\n \n:\n:::\nPackage:\n").is_empty());
        assert_eq!(
            parse_status("Package: x\r\nStatus: a b installed\r\n").len(),
            1
        );
    }
}
