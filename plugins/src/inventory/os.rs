//! The operating system: os-release first, legacy release files to fill what it leaves out.

use bagui_protocol::assets::OsInfo;

use super::first_line;
use crate::{CollectError, HostRoot};

/// Recognises the operating system.
///
/// Reads `/etc/os-release` (or `/usr/lib/os-release`), then fills fields it left empty from
/// the legacy files, most specific first: `/etc/kylin-release`, `/etc/openEuler-release`,
/// `/etc/uos-release`, `/etc/centos-release`, `/etc/rocky-release`, `/etc/almalinux-release`,
/// `/etc/anolis-release`, `/etc/redhat-release` (all "NAME release VERSION (CODENAME)"), UOS's
/// `/etc/os-version`, `/etc/lsb-release` and `/etc/debian_version`. On UOS, whose os-release
/// says only `VERSION="20"`, the minor release from `/etc/os-version` (`1001`, `1050`, ...) is
/// appended to `version`, as it decides which updates apply.
///
/// Never fails: an unrecognisable system is family `unknown` with empty fields.
pub fn os_info(root: &HostRoot) -> Result<OsInfo, CollectError> {
    let mut info = OsInfo::default();
    if let Some(text) = root
        .read_optional("/etc/os-release")
        .or_else(|| root.read_optional("/usr/lib/os-release"))
    {
        let field = |key: &str| release_field(&text, key).unwrap_or_default();
        info.id = field("ID");
        info.name = field("NAME");
        info.version = field("VERSION");
        info.version_id = field("VERSION_ID");
        info.pretty_name = field("PRETTY_NAME");
        info.family = family(&info.id, &field("ID_LIKE")).to_owned();
    }
    fill_from_legacy(root, &mut info);
    if info.pretty_name.is_empty() && !info.name.is_empty() {
        info.pretty_name = if info.version.is_empty() {
            info.name.clone()
        } else {
            format!("{} {}", info.name, info.version)
        };
    }
    if info.family.is_empty() || info.family == "unknown" {
        info.family = family(&info.id, "").to_owned();
    }
    info.kernel = first_line(root, "/proc/sys/kernel/osrelease").unwrap_or_default();
    info.hostname = first_line(root, "/proc/sys/kernel/hostname")
        .or_else(|| first_line(root, "/etc/hostname"))
        .unwrap_or_default();
    // `kernel.arch` (Linux 6.1+) is what `uname -m` prints; older kernels lack it, and then the
    // agent's own architecture is the best guess (right unless a 32-bit agent runs on a 64-bit
    // kernel).
    info.arch = first_line(root, "/proc/sys/kernel/arch")
        .unwrap_or_else(|| uname_arch(std::env::consts::ARCH).to_owned());
    Ok(info)
}

/// `std::env::consts::ARCH` as `uname -m` spells it.
pub fn uname_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86" => "i686",
        "arm" => "armv7l",
        "powerpc" => "ppc",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "sparc64" => "sparc64",
        // x86_64, aarch64, loongarch64, riscv64, s390x, mips64 are spelled alike.
        other => other,
    }
}

/// The family of a distribution, from its `ID`, else from `ID_LIKE` (space-separated).
///
/// Kylin stays `kylin` whether it is the rpm-based server (V10 SP1-SP3) or the dpkg-based
/// desktop; UOS stays `uos` in both its deb (1001/1050a) and rpm (1050e) editions: which
/// package manager is present is the packages section's business, not the family's.
pub fn family(id: &str, id_like: &str) -> &'static str {
    fn of(id: &str) -> Option<&'static str> {
        let id = id.to_ascii_lowercase();
        Some(match id.as_str() {
            "kylin" | "neokylin" => "kylin",
            "uos" | "uniontech" => "uos",
            "openeuler" => "openeuler",
            "debian" | "ubuntu" | "deepin" | "linuxmint" | "raspbian" | "kali" | "pop" => "debian",
            "rhel" | "centos" | "rocky" | "almalinux" | "fedora" | "anolis" | "ol" | "amzn"
            | "alinux" | "tencentos" | "opencloudos" | "euleros" | "bclinux" => "rhel",
            "sles" | "sled" | "suse" | "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" => {
                "suse"
            }
            "alpine" => "alpine",
            "arch" | "manjaro" | "endeavouros" => "arch",
            _ => return None,
        })
    }
    of(id)
        .or_else(|| id_like.split_whitespace().find_map(of))
        .unwrap_or("unknown")
}

/// A value of a shell-style `KEY=value` file (os-release, lsb-release), unquoted and
/// unescaped. Later assignments win, as in the shell.
pub fn release_field(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let Some((name, value)) = line.trim().split_once('=') else {
            continue;
        };
        if name.trim() != key {
            continue;
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            unescape(inner)
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            unescape(value)
        };
        found = Some(value);
    }
    found
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `NAME release VERSION (CODENAME)` line, as in `/etc/redhat-release` and its kin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseLine {
    pub name: String,
    /// `7.9.2009`, `V10`, `22.03 LTS`.
    pub version: String,
    /// `Core`, `Lance`, `Blue Onyx`; empty when none.
    pub codename: String,
}

/// Parses a legacy release line; `None` when it has no ` release `.
pub fn parse_release_line(line: &str) -> Option<ReleaseLine> {
    let line = line.trim();
    let (name, rest) = line.split_once(" release ")?;
    let rest = rest.trim();
    let (version, codename) = match rest.find(" (") {
        Some(at) if rest.ends_with(')') => (&rest[..at], &rest[at + 2..rest.len() - 1]),
        _ => (rest, ""),
    };
    Some(ReleaseLine {
        name: name.trim().to_owned(),
        version: version.trim().to_owned(),
        codename: codename.trim().to_owned(),
    })
}

/// The os-release `ID` of a distribution named in a legacy release file.
fn id_from_release_name(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    [
        ("kylin", "kylin"),
        ("openeuler", "openEuler"),
        ("uniontech", "uos"),
        ("uos", "uos"),
        ("centos", "centos"),
        ("rocky", "rocky"),
        ("almalinux", "almalinux"),
        ("anolis", "anolis"),
        ("red hat", "rhel"),
        ("fedora", "fedora"),
        ("oracle", "ol"),
    ]
    .iter()
    .find(|(needle, _)| lower.contains(needle))
    .map(|(_, id)| *id)
    .unwrap_or("")
}

fn fill(field: &mut String, value: &str) {
    if field.is_empty() && !value.is_empty() {
        *field = value.to_owned();
    }
}

fn fill_from_legacy(root: &HostRoot, info: &mut OsInfo) {
    for path in [
        "/etc/kylin-release",
        "/etc/openEuler-release",
        "/etc/uos-release",
        "/etc/centos-release",
        "/etc/rocky-release",
        "/etc/almalinux-release",
        "/etc/anolis-release",
        "/etc/redhat-release",
    ] {
        let Some(line) = first_line(root, path) else {
            continue;
        };
        let Some(release) = parse_release_line(&line) else {
            continue;
        };
        fill(&mut info.id, id_from_release_name(&release.name));
        fill(&mut info.name, &release.name);
        let version = if release.codename.is_empty() {
            release.version.clone()
        } else {
            format!("{} ({})", release.version, release.codename)
        };
        fill(&mut info.version, &version);
        // VERSION_ID is the dotted number only: `V10`, `22.03`, `7.9.2009` -> as printed.
        let version_id = release.version.split_whitespace().next().unwrap_or("");
        fill(&mut info.version_id, version_id);
        fill(&mut info.pretty_name, &line);
    }

    // UOS: /etc/os-version is an ini file with the system name and minor release.
    if let Some(text) = root.read_optional("/etc/os-version") {
        let get = |key: &str| {
            text.lines().find_map(|line| {
                let (name, value) = line.split_once('=')?;
                (name.trim() == key).then(|| value.trim().to_owned())
            })
        };
        let system = get("SystemName").unwrap_or_default();
        let major = get("MajorVersion").unwrap_or_default();
        let minor = get("MinorVersion").unwrap_or_default();
        let edition = get("EditionName").unwrap_or_default();
        if system.contains("UnionTech") || system.contains("UOS") || info.id == "uos" {
            fill(&mut info.id, "uos");
            fill(&mut info.name, &system);
            fill(&mut info.version_id, &major);
            // 1001c, 1050e: the edition letter belongs to the release's name.
            let minor = if edition.len() == 1 && edition.chars().all(|c| c.is_ascii_lowercase()) {
                format!("{minor}{edition}")
            } else {
                minor
            };
            if !minor.is_empty() && !info.version.contains(&minor) {
                info.version = if info.version.is_empty() {
                    format!("{major} ({minor})")
                } else {
                    format!("{} ({minor})", info.version)
                };
            }
        }
    }

    if let Some(text) = root.read_optional("/etc/lsb-release") {
        let distrib_id = release_field(&text, "DISTRIB_ID").unwrap_or_default();
        if info.id.is_empty() {
            info.id = distrib_id.to_ascii_lowercase();
        }
        fill(&mut info.name, &distrib_id);
        fill(
            &mut info.version_id,
            &release_field(&text, "DISTRIB_RELEASE").unwrap_or_default(),
        );
        fill(
            &mut info.pretty_name,
            &release_field(&text, "DISTRIB_DESCRIPTION").unwrap_or_default(),
        );
    }

    // Debian writes `12.11`; Ubuntu and other derivatives write `bookworm/sid`, which only
    // says "some Debian": used only when nothing else named the system.
    if let Some(version) = first_line(root, "/etc/debian_version")
        && info.id.is_empty()
    {
        info.id = "debian".to_owned();
        info.name = "Debian GNU/Linux".to_owned();
        if version.starts_with(|c: char| c.is_ascii_digit()) {
            fill(&mut info.version, &version);
            fill(
                &mut info.version_id,
                version.split('.').next().unwrap_or_default(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testutil::{Dir, fixture};

    struct Expected {
        dir: &'static str,
        id: &'static str,
        family: &'static str,
        name: &'static str,
        version: &'static str,
        version_id: &'static str,
        pretty_name: &'static str,
    }

    #[test]
    fn recognises_the_fleets_distributions() {
        let table = [
            Expected {
                dir: "kylin-v10-sp1",
                id: "kylin",
                family: "kylin",
                name: "Kylin Linux Advanced Server",
                version: "V10 (Tercel)",
                version_id: "V10",
                pretty_name: "Kylin Linux Advanced Server V10 (Tercel)",
            },
            Expected {
                dir: "kylin-v10-sp3",
                id: "kylin",
                family: "kylin",
                name: "Kylin Linux Advanced Server",
                version: "V10 (Lance)",
                version_id: "V10",
                pretty_name: "Kylin Linux Advanced Server V10 (Lance)",
            },
            Expected {
                dir: "uos-server-20-1050e",
                id: "uos",
                family: "uos",
                name: "UnionTech OS Server 20",
                version: "20",
                version_id: "20",
                pretty_name: "UnionTech OS Server 20",
            },
            Expected {
                dir: "uos-server-20-1001c",
                id: "uos",
                family: "uos",
                name: "UnionTech OS Server 20",
                version: "20 (1001c)",
                version_id: "20",
                pretty_name: "UnionTech OS Server 20",
            },
            Expected {
                dir: "openeuler-22.03",
                id: "openEuler",
                family: "openeuler",
                name: "openEuler",
                version: "22.03 LTS",
                version_id: "22.03",
                pretty_name: "openEuler 22.03 LTS",
            },
            Expected {
                dir: "debian-12",
                id: "debian",
                family: "debian",
                name: "Debian GNU/Linux",
                version: "12 (bookworm)",
                version_id: "12",
                pretty_name: "Debian GNU/Linux 12 (bookworm)",
            },
            Expected {
                dir: "ubuntu-22.04",
                id: "ubuntu",
                family: "debian",
                name: "Ubuntu",
                version: "22.04.4 LTS (Jammy Jellyfish)",
                version_id: "22.04",
                pretty_name: "Ubuntu 22.04.4 LTS",
            },
            Expected {
                dir: "centos-7",
                id: "centos",
                family: "rhel",
                name: "CentOS Linux",
                version: "7 (Core)",
                version_id: "7",
                pretty_name: "CentOS Linux 7 (Core)",
            },
            Expected {
                dir: "rhel-9",
                id: "rhel",
                family: "rhel",
                name: "Red Hat Enterprise Linux",
                version: "9.4 (Plow)",
                version_id: "9.4",
                pretty_name: "Red Hat Enterprise Linux 9.4 (Plow)",
            },
            Expected {
                dir: "rocky-9",
                id: "rocky",
                family: "rhel",
                name: "Rocky Linux",
                version: "9.5 (Blue Onyx)",
                version_id: "9.5",
                pretty_name: "Rocky Linux 9.5 (Blue Onyx)",
            },
            // No os-release at all: the legacy file alone.
            Expected {
                dir: "centos-6-legacy",
                id: "centos",
                family: "rhel",
                name: "CentOS",
                version: "6.10 (Final)",
                version_id: "6.10",
                pretty_name: "CentOS release 6.10 (Final)",
            },
        ];
        for expected in table {
            let info = os_info(&fixture(&format!("os/{}", expected.dir))).unwrap();
            let what = expected.dir;
            assert_eq!(info.id, expected.id, "{what}");
            assert_eq!(info.family, expected.family, "{what}");
            assert_eq!(info.name, expected.name, "{what}");
            assert_eq!(info.version, expected.version, "{what}");
            assert_eq!(info.version_id, expected.version_id, "{what}");
            assert_eq!(info.pretty_name, expected.pretty_name, "{what}");
            assert!(!info.arch.is_empty(), "{what}");
        }
    }

    #[test]
    fn legacy_files_fill_gaps_and_kernel_hostname_arch() {
        let dir = Dir::new();
        dir.write(
            "etc/kylin-release",
            "Kylin Linux Advanced Server release V10 (Sword)\n",
        );
        dir.write(
            "proc/sys/kernel/osrelease",
            "4.19.90-24.4.v2101.ky10.aarch64\n",
        );
        dir.write("proc/sys/kernel/hostname", "xz-01\n");
        let info = os_info(&dir.root()).unwrap();
        assert_eq!(info.id, "kylin");
        assert_eq!(info.family, "kylin");
        assert_eq!(info.version, "V10 (Sword)");
        assert_eq!(info.version_id, "V10");
        assert_eq!(info.kernel, "4.19.90-24.4.v2101.ky10.aarch64");
        assert_eq!(info.hostname, "xz-01");
        assert_eq!(info.arch, uname_arch(std::env::consts::ARCH));

        dir.write("proc/sys/kernel/arch", "aarch64\n");
        assert_eq!(os_info(&dir.root()).unwrap().arch, "aarch64");
    }

    #[test]
    fn nothing_readable_is_unknown_not_an_error() {
        let dir = Dir::new();
        let info = os_info(&dir.root()).unwrap();
        assert_eq!(info.family, "unknown");
        assert_eq!(info.id, "");
    }

    #[test]
    fn malformed_release_files_are_tolerated() {
        let dir = Dir::new();
        dir.write(
            "etc/os-release",
            "garbage line\n=novalue\nID=\"unterminated\nNAME=Some\\ Thing\nID_LIKE=\"rhel fedora\"\n",
        );
        dir.write("etc/redhat-release", "no release word here\n");
        let info = os_info(&dir.root()).unwrap();
        assert_eq!(info.id, "\"unterminated");
        assert_eq!(info.name, "Some Thing");
        assert_eq!(info.family, "rhel");
    }

    #[test]
    fn families() {
        assert_eq!(family("deepin", ""), "debian");
        assert_eq!(family("anolis", "rhel centos fedora"), "rhel");
        assert_eq!(family("ol", ""), "rhel");
        assert_eq!(family("kylin", "debian"), "kylin");
        assert_eq!(family("something", "ubuntu debian"), "debian");
        assert_eq!(family("", ""), "unknown");
    }

    #[test]
    fn release_lines() {
        assert_eq!(
            parse_release_line("CentOS Linux release 7.9.2009 (Core)"),
            Some(ReleaseLine {
                name: "CentOS Linux".into(),
                version: "7.9.2009".into(),
                codename: "Core".into()
            })
        );
        assert_eq!(
            parse_release_line("openEuler release 22.03 LTS")
                .unwrap()
                .version,
            "22.03 LTS"
        );
        assert_eq!(parse_release_line("Debian"), None);
    }

    #[test]
    fn this_host() {
        let info = os_info(&HostRoot::default()).unwrap();
        assert!(!info.id.is_empty(), "{info:?}");
        assert_ne!(info.family, "unknown", "{info:?}");
        assert!(!info.kernel.is_empty());
        assert!(!info.arch.is_empty());
    }
}
