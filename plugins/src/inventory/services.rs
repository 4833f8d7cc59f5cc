//! systemd services: from `systemctl` when systemd runs, else from the unit files on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bagui_protocol::assets::Service;

use super::{is_host_root, run_command};
use crate::{CollectError, HostRoot};

/// How long each `systemctl` call may take before it is killed.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(10);

/// Unit directories, highest precedence first (as systemd searches them).
const UNIT_DIRS: [&str; 5] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Service units.
///
/// With systemd running (`/run/systemd/system` exists) on the real host, asks `systemctl`
/// (`list-units --type=service --all` for the active and sub states, `list-unit-files
/// --type=service` for the enablement), each under a 10 s timeout; a failing or hanging
/// `systemctl` fails the section rather than guessing, so the previous list is kept.
///
/// Without systemd (a container, an init-less chroot, a fixture tree) the unit files are read
/// instead: see [`services_from_unit_files`].
pub fn services(root: &HostRoot) -> Result<Vec<Service>, CollectError> {
    if is_host_root(root) && root.path("/run/systemd/system").is_dir() {
        let units = run_command(
            "systemctl",
            &[
                "list-units",
                "--type=service",
                "--all",
                "--no-legend",
                "--no-pager",
                "--plain",
            ],
            SYSTEMCTL_TIMEOUT,
        )?;
        let files = run_command(
            "systemctl",
            &[
                "list-unit-files",
                "--type=service",
                "--no-legend",
                "--no-pager",
            ],
            SYSTEMCTL_TIMEOUT,
        )?;
        Ok(merge_systemctl(&units, &files))
    } else {
        Ok(services_from_unit_files(root))
    }
}

/// One line of `systemctl list-units`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitLine {
    pub name: String,
    pub load: String,
    pub active: String,
    pub sub: String,
}

/// Parses `systemctl list-units --plain --no-legend`: `UNIT LOAD ACTIVE SUB DESCRIPTION...`,
/// with a leading `●` on failed units in some versions. Other lines are skipped.
pub fn parse_list_units(text: &str) -> Vec<UnitLine> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line
                .split_whitespace()
                .skip_while(|f| *f == "●" || *f == "*" || *f == "○");
            let (Some(name), Some(load), Some(active), Some(sub)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return None;
            };
            name.ends_with(".service").then(|| UnitLine {
                name: name.to_owned(),
                load: load.to_owned(),
                active: active.to_owned(),
                sub: sub.to_owned(),
            })
        })
        .collect()
}

/// Parses `systemctl list-unit-files --no-legend`: `UNIT STATE [PRESET]`.
pub fn parse_list_unit_files(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (Some(name), Some(state)) = (fields.next(), fields.next()) else {
                return None;
            };
            name.ends_with(".service")
                .then(|| (name.to_owned(), state.to_owned()))
        })
        .collect()
}

/// `foo@bar.service` -> `foo@.service`.
fn template_of(name: &str) -> Option<String> {
    let (prefix, rest) = name.split_once('@')?;
    let suffix = rest.rsplit_once('.')?.1;
    (!rest.starts_with('.')).then(|| format!("{prefix}@.{suffix}"))
}

/// Loaded units with their states, plus unit files not loaded (`inactive`/`dead`). Units
/// referenced but not installed (`not-found`) are left out. An instance without its own unit
/// file takes its template's enablement.
pub fn merge_systemctl(units: &str, files: &str) -> Vec<Service> {
    let files = parse_list_unit_files(files);
    let mut out: BTreeMap<String, Service> = BTreeMap::new();
    for unit in parse_list_units(units) {
        if unit.load == "not-found" {
            continue;
        }
        let enabled = files
            .get(&unit.name)
            .or_else(|| template_of(&unit.name).and_then(|t| files.get(&t)))
            .cloned()
            .unwrap_or_else(|| {
                if unit.load == "masked" {
                    "masked".to_owned()
                } else {
                    "unknown".to_owned()
                }
            });
        out.insert(
            unit.name.clone(),
            Service {
                name: unit.name,
                active: unit.active,
                sub: unit.sub,
                enabled,
            },
        );
    }
    for (name, state) in files {
        out.entry(name.clone()).or_insert(Service {
            name,
            active: "inactive".to_owned(),
            sub: "dead".to_owned(),
            enabled: state,
        });
    }
    out.into_values().collect()
}

/// Follows a symlink chain under `root` (absolute targets are host paths, so they are mapped
/// into the root), at most 8 hops. Returns the final path, or `None` for `/dev/null`.
fn resolve(root: &HostRoot, mut path: PathBuf) -> Option<PathBuf> {
    for _ in 0..8 {
        let Ok(target) = std::fs::read_link(&path) else {
            return Some(path);
        };
        if target == Path::new("/dev/null") {
            return None;
        }
        path = if target.is_absolute() {
            root.path(&target.to_string_lossy())
        } else {
            path.parent().unwrap_or(Path::new("/")).join(target)
        };
    }
    Some(path)
}

/// Whether a unit file has an `[Install]` section that says something (`WantedBy=`,
/// `RequiredBy=`, `Alias=`, `Also=`, `UpheldBy=`).
pub fn has_install_section(text: &str) -> bool {
    let mut in_install = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
        } else if in_install
            && let Some((key, value)) = line.split_once('=')
            && matches!(
                key.trim(),
                "WantedBy" | "RequiredBy" | "Alias" | "Also" | "UpheldBy"
            )
            && !value.trim().is_empty()
        {
            return true;
        }
    }
    false
}

/// Services from the unit files on disk, for a system without a running systemd.
///
/// Unit files are `*.service` in `/etc/systemd/system`, `/run/systemd/system`,
/// `/usr/local/lib/systemd/system`, `/usr/lib/systemd/system` and `/lib/systemd/system`, the
/// first directory holding a name winning (as in systemd). Enablement, as `systemctl
/// list-unit-files` would say it:
/// - `masked`: the unit file is a symlink to `/dev/null`;
/// - `alias`: a symlink to a unit of another name (and that unit counts as enabled when the
///   alias is in `/etc/systemd/system`, which is where `systemctl enable` puts aliases);
/// - `enabled`: a link in a `*.wants/` or `*.requires/` directory of `/etc/systemd/system`
///   names it — for a template (`foo@.service`), any of its instances; the enabled instances
///   (`getty@tty1.service`) are listed as services too;
/// - `disabled`: it has an `[Install]` section but nothing links it;
/// - `static`: it has no `[Install]` section.
///
/// Active and sub state cannot be known without systemd: both are `unknown`.
pub fn services_from_unit_files(root: &HostRoot) -> Vec<Service> {
    // Links in /etc/systemd/system/*.wants and *.requires.
    let mut wanted = BTreeSet::new();
    let etc = root.path("/etc/systemd/system");
    if let Ok(entries) = std::fs::read_dir(&etc) {
        for entry in entries.flatten() {
            let dir = entry.file_name().to_string_lossy().into_owned();
            if !(dir.ends_with(".wants") || dir.ends_with(".requires")) {
                continue;
            }
            let Ok(links) = std::fs::read_dir(entry.path()) else {
                continue;
            };
            for link in links.flatten() {
                let name = link.file_name().to_string_lossy().into_owned();
                if name.ends_with(".service") {
                    wanted.insert(name);
                }
            }
        }
    }

    // The unit files, first directory wins.
    let mut units: BTreeMap<String, Service> = BTreeMap::new();
    let mut aliased_in_etc = BTreeSet::new();
    for dir in UNIT_DIRS {
        let Ok(entries) = std::fs::read_dir(root.path(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".service") || units.contains_key(&name) {
                continue;
            }
            let path = entry.path();
            let is_link =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            let enabled = match resolve(root, path.clone()) {
                None => "masked".to_owned(),
                Some(target) => {
                    let target_name = target
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if is_link && target_name != name && target_name.ends_with(".service") {
                        if dir == "/etc/systemd/system" {
                            aliased_in_etc.insert(target_name);
                        }
                        "alias".to_owned()
                    } else if wanted.contains(&name)
                        || (name.ends_with("@.service")
                            && wanted
                                .iter()
                                .any(|w| template_of(w).as_deref() == Some(name.as_str())))
                    {
                        "enabled".to_owned()
                    } else {
                        match std::fs::read_to_string(&target) {
                            Ok(text) if has_install_section(&text) => "disabled".to_owned(),
                            Ok(_) => "static".to_owned(),
                            // A dangling link or unreadable file: say so rather than guess.
                            Err(_) => "bad".to_owned(),
                        }
                    }
                }
            };
            units.insert(
                name.clone(),
                Service {
                    name,
                    active: "unknown".to_owned(),
                    sub: "unknown".to_owned(),
                    enabled,
                },
            );
        }
    }
    for name in aliased_in_etc {
        if let Some(unit) = units.get_mut(&name)
            && unit.enabled == "disabled"
        {
            unit.enabled = "enabled".to_owned();
        }
    }
    // Enabled instances of templates that exist.
    for name in wanted {
        if !units.contains_key(&name)
            && template_of(&name)
                .is_some_and(|t| units.get(&t).is_some_and(|u| u.enabled != "masked"))
        {
            units.insert(
                name.clone(),
                Service {
                    name,
                    active: "unknown".to_owned(),
                    sub: "unknown".to_owned(),
                    enabled: "enabled".to_owned(),
                },
            );
        }
    }
    units.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testutil::fixture;

    #[test]
    fn unit_files_without_systemd() {
        let services = services(&fixture("services")).unwrap();
        let got: Vec<(&str, &str, &str)> = services
            .iter()
            .map(|s| (s.name.as_str(), s.enabled.as_str(), s.active.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("autovt@.service", "alias", "unknown"),
                ("custom-app.service", "disabled", "unknown"),
                ("dbus-org.example.Foo.service", "alias", "unknown"),
                ("foo.service", "enabled", "unknown"),
                ("getty@.service", "enabled", "unknown"),
                ("getty@tty1.service", "enabled", "unknown"),
                ("nginx.service", "enabled", "unknown"),
                ("rpcbind.service", "masked", "unknown"),
                ("sshd.service", "enabled", "unknown"),
                ("systemd-journald.service", "static", "unknown"),
                ("worker@.service", "static", "unknown"),
            ]
        );
        assert!(services.iter().all(|s| s.sub == "unknown"));
    }

    #[test]
    fn systemctl_output_is_merged() {
        let units = include_str!("../../tests/fixtures/inventory/services-systemctl/list-units");
        let files =
            include_str!("../../tests/fixtures/inventory/services-systemctl/list-unit-files");
        let services = merge_systemctl(units, files);
        let find = |name: &str| services.iter().find(|s| s.name == name).cloned();
        let ssh = find("ssh.service").unwrap();
        assert_eq!(
            (ssh.active.as_str(), ssh.sub.as_str(), ssh.enabled.as_str()),
            ("active", "running", "enabled")
        );
        let failed = find("mariadb.service").unwrap();
        assert_eq!(
            (failed.active.as_str(), failed.sub.as_str()),
            ("failed", "failed")
        );
        // An instance takes its template's state.
        assert_eq!(find("getty@tty1.service").unwrap().enabled, "enabled");
        // Not loaded, but installed.
        let rescue = find("rescue.service").unwrap();
        assert_eq!(
            (rescue.active.as_str(), rescue.enabled.as_str()),
            ("inactive", "static")
        );
        assert_eq!(find("rpcbind.service").unwrap().enabled, "masked");
        // Referenced but not installed: left out. Garbage lines: skipped.
        assert!(find("auditd.service").is_none());
        assert!(services.iter().all(|s| s.name.ends_with(".service")));
    }

    #[test]
    fn install_sections_and_templates() {
        assert!(has_install_section(
            "[Unit]\nDescription=x\n[Install]\nWantedBy=multi-user.target\n"
        ));
        assert!(!has_install_section("[Unit]\nWantedBy=x\n[Install]\n"));
        assert!(!has_install_section("[Service]\nExecStart=/bin/true\n"));
        assert_eq!(
            template_of("getty@tty1.service").as_deref(),
            Some("getty@.service")
        );
        assert_eq!(template_of("getty@.service"), None);
        assert_eq!(template_of("sshd.service"), None);
    }

    /// This container: is systemd PID 1? Either way the section gives a sensible list.
    #[test]
    fn this_host() {
        let services = services(&HostRoot::default()).unwrap();
        if HostRoot::default().path("/run/systemd/system").is_dir() {
            assert!(services.iter().any(|s| s.active == "active"));
        } else if HostRoot::default().path("/lib/systemd/system").is_dir() {
            assert!(!services.is_empty());
            assert!(services.iter().all(|s| s.active == "unknown"));
            assert!(services.iter().all(|s| s.enabled != "bad"), "{services:?}");
        }
    }
    /// The unit-file reading agrees with systemd's own offline reading
    /// (`systemctl --root=/ list-unit-files`, which works without a running systemd), apart
    /// from the enabled template instances we add.
    #[test]
    fn unit_files_agree_with_systemctl_offline() {
        let root = HostRoot::default();
        if root.path("/run/systemd/system").is_dir() {
            return; // systemd runs: services() asks systemctl itself.
        }
        let Ok(out) = std::process::Command::new("systemctl")
            .args([
                "--root=/",
                "list-unit-files",
                "--type=service",
                "--no-legend",
                "--no-pager",
            ])
            .output()
        else {
            eprintln!("systemctl not installed: nothing to compare with");
            return;
        };
        let expected: BTreeMap<String, String> =
            parse_list_unit_files(&String::from_utf8_lossy(&out.stdout));
        let got: BTreeMap<String, String> = services_from_unit_files(&root)
            .into_iter()
            .filter(|s| !s.name.contains('@') || s.name.contains("@."))
            .map(|s| (s.name, s.enabled))
            .collect();
        assert_eq!(got, expected);
    }
}
