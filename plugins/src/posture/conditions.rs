//! Evaluating one condition against a host root.
//!
//! Each kind returns an [`Outcome`]: a verdict plus evidence lines (`path:line: value`). A file
//! that exists but cannot be read is an `error` (usually: not run as root), never a silent
//! pass; a target that does not exist at all is `not_applicable` unless the condition says the
//! protection is required.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use bagui_protocol::assets::CheckVerdict;

use super::files::{self, Found};
use super::policy::{AccountRule, Condition, ConfigCondition, Expect, IfMissing, PamCondition};
use crate::HostRoot;
use crate::inventory::accounts::{parse_group, parse_passwd};

/// At most this many evidence lines per check; the rest are summarised.
const MAX_EVIDENCE: usize = 20;
/// A world-writable scan stops after this many entries, so a huge tree cannot blow the
/// collector's deadline.
const MAX_WALK_ENTRIES: usize = 200_000;
/// Shells that do not allow an interactive login.
const NOLOGIN_SHELLS: [&str; 2] = ["nologin", "false"];

/// Verdict and evidence of one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: CheckVerdict,
    pub evidence: Vec<String>,
}

impl Outcome {
    fn new(verdict: CheckVerdict, evidence: Vec<String>) -> Outcome {
        let mut evidence = evidence;
        if evidence.len() > MAX_EVIDENCE {
            let more = evidence.len() - MAX_EVIDENCE;
            evidence.truncate(MAX_EVIDENCE);
            evidence.push(format!("... and {more} more"));
        }
        Outcome { verdict, evidence }
    }
    fn pass(evidence: Vec<String>) -> Outcome {
        Outcome::new(CheckVerdict::Pass, evidence)
    }
    fn fail(evidence: Vec<String>) -> Outcome {
        Outcome::new(CheckVerdict::Fail, evidence)
    }
    fn na(why: impl Into<String>) -> Outcome {
        Outcome::new(CheckVerdict::NotApplicable, vec![why.into()])
    }
    pub fn error(why: impl Into<String>) -> Outcome {
        Outcome::new(CheckVerdict::Error, vec![why.into()])
    }
    fn of(ok: bool, evidence: Vec<String>) -> Outcome {
        if ok {
            Outcome::pass(evidence)
        } else {
            Outcome::fail(evidence)
        }
    }
    fn missing(if_missing: IfMissing, why: String) -> Outcome {
        match if_missing {
            IfMissing::NotApplicable => Outcome::na(why),
            IfMissing::Fail => Outcome::fail(vec![why]),
        }
    }
}

/// Evaluates `condition` under `root`.
pub fn evaluate(condition: &Condition, root: &HostRoot) -> Outcome {
    match condition {
        Condition::Config(config) => config_setting(config, root),
        Condition::FileMode {
            path,
            max_mode,
            owner_uid,
        } => file_mode(root, path, max_mode, *owner_uid),
        Condition::FileContent {
            path,
            expect,
            if_missing,
        } => file_content(root, path, expect, *if_missing),
        Condition::Sysctl {
            keys,
            expect,
            default,
        } => sysctl(root, keys, expect, default.as_deref()),
        Condition::ProcessRunning { names } => process_running(root, names),
        Condition::PortNotListening { tcp, udp } => port_not_listening(root, tcp, udp),
        Condition::PackageAbsent { names } => packages(root, names, false),
        Condition::PackagePresent { names } => packages(root, names, true),
        Condition::Accounts { rule, exempt } => accounts(root, *rule, exempt),
        Condition::PamLine(pam) => pam_line(root, pam),
        Condition::WorldWritable { dir } => world_writable(root, dir),
        Condition::Sticky { dirs } => sticky(root, dirs),
        Condition::LineAbsent { files, all_of } => line_absent(root, files, all_of),
        Condition::LinePresent {
            files,
            all_of,
            if_missing,
        } => line_present(root, files, all_of, *if_missing),
        Condition::Any { of } => any(root, of),
        Condition::All { of } => all(root, of),
    }
}

impl Expect {
    /// Whether `value` meets the expectation. A number expected but not found fails.
    pub fn holds(&self, value: &str) -> bool {
        let value = value.trim();
        match self {
            Expect::Equals(want) => value.eq_ignore_ascii_case(want),
            Expect::OneOf(wants) => wants.iter().any(|want| value.eq_ignore_ascii_case(want)),
            Expect::Max(max) => files::leading_int(value).is_some_and(|n| n <= *max),
            Expect::Min(min) => files::leading_int(value).is_some_and(|n| n >= *min),
            Expect::Between(low, high) => {
                files::leading_int(value).is_some_and(|n| (*low..=*high).contains(&n))
            }
            Expect::Excludes(bad) => {
                !value
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .any(|token| {
                        let token = token.to_ascii_lowercase();
                        bad.iter().any(|b| token.contains(&b.to_ascii_lowercase()))
                    })
            }
            Expect::MasksBits(bits) => match (parse_octal(value), parse_octal(bits)) {
                (Some(mask), Some(bits)) => mask & bits == bits,
                _ => false,
            },
        }
    }

    /// The expectation in words, for evidence.
    pub fn describe(&self) -> String {
        match self {
            Expect::Equals(want) => format!("expected {want}"),
            Expect::OneOf(wants) => format!("expected one of {}", wants.join(", ")),
            Expect::Max(max) => format!("expected <= {max}"),
            Expect::Min(min) => format!("expected >= {min}"),
            Expect::Between(low, high) => format!("expected {low}..={high}"),
            Expect::Excludes(bad) => format!("expected none of {}", bad.join(", ")),
            Expect::MasksBits(bits) => format!("expected a umask covering {bits}"),
        }
    }
}

/// Parses an octal mode or umask (`"0640"`, `"027"`).
pub fn parse_octal(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim(), 8).ok()
}

/// Reads every found file; an unreadable one is an error outcome.
fn read_all(found: &[Found]) -> Result<Vec<(String, String)>, Outcome> {
    found
        .iter()
        .map(|file| match std::fs::read(&file.full) {
            Ok(bytes) => Ok((
                file.host.clone(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )),
            Err(error) => Err(Outcome::error(format!("{}: {error}", file.host))),
        })
        .collect()
}

fn config_setting(config: &ConfigCondition, root: &HostRoot) -> Outcome {
    let found = files::expand(root, &config.files);
    if found.is_empty() {
        return Outcome::missing(
            config.if_missing,
            format!("none of {} exists", config.files.join(", ")),
        );
    }
    let texts = match read_all(&found) {
        Ok(texts) => texts,
        Err(outcome) => return outcome,
    };
    let want = config.expect.describe();
    match files::find_setting(&texts, &config.key, config.separator, config.precedence) {
        Some(setting) => Outcome::of(
            config.expect.holds(&setting.value),
            vec![format!("{} ({want})", setting.evidence(&config.key))],
        ),
        None => match &config.default {
            Some(default) => Outcome::of(
                config.expect.holds(default),
                vec![format!(
                    "{} not set in {}; default {default} ({want})",
                    config.key,
                    config.files.join(", ")
                )],
            ),
            None => Outcome::fail(vec![format!(
                "{} not set in {} ({want})",
                config.key,
                config.files.join(", ")
            )]),
        },
    }
}

fn file_mode(root: &HostRoot, path: &str, max_mode: &str, owner_uid: Option<u32>) -> Outcome {
    let Some(max) = parse_octal(max_mode) else {
        return Outcome::error(format!("bad max_mode {max_mode:?}"));
    };
    let metadata = match std::fs::metadata(root.path(path)) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Outcome::na(format!("{path} does not exist"));
        }
        Err(error) => return Outcome::error(format!("{path}: {error}")),
    };
    let mode = metadata.permissions().mode() & 0o7777;
    let mut ok = mode & !max == 0;
    let mut evidence = format!("{path}: mode {mode:04o} (max {max:04o})");
    if let Some(uid) = owner_uid {
        ok &= metadata.uid() == uid;
        evidence.push_str(&format!(", owner uid {} (want {uid})", metadata.uid()));
    }
    Outcome::of(ok, vec![evidence])
}

fn first_line(root: &HostRoot, path: &str) -> Result<Option<String>, Outcome> {
    match std::fs::read(root.path(path)) {
        Ok(bytes) => Ok(Some(
            String::from_utf8_lossy(&bytes)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Outcome::error(format!("{path}: {error}"))),
    }
}

fn file_content(root: &HostRoot, path: &str, expect: &Expect, if_missing: IfMissing) -> Outcome {
    match first_line(root, path) {
        Ok(Some(value)) => Outcome::of(
            expect.holds(&value),
            vec![format!("{path}:1: {value} ({})", expect.describe())],
        ),
        Ok(None) => Outcome::missing(if_missing, format!("{path} does not exist")),
        Err(outcome) => outcome,
    }
}

/// Sysctl config files, lowest precedence first, so the last setting found wins (sysctl
/// `--system` applies `/etc/sysctl.conf` last).
const SYSCTL_FILES: [&str; 4] = [
    "/usr/lib/sysctl.d/*.conf",
    "/run/sysctl.d/*.conf",
    "/etc/sysctl.d/*.conf",
    "/etc/sysctl.conf",
];

fn sysctl(root: &HostRoot, keys: &[String], expect: &Expect, default: Option<&str>) -> Outcome {
    let live = root.path("/proc/sys").is_dir();
    // Failing keys first: the table shows only the first evidence line.
    let mut failing = Vec::new();
    let mut evidence = Vec::new();
    let mut applicable = false;
    for key in keys {
        let seen = if live {
            sysctl_live(root, key)
        } else {
            sysctl_configured(root, key, default)
        };
        match seen {
            Ok(Some((source, value))) => {
                applicable = true;
                let line = format!("{source}: {key} = {value} ({})", expect.describe());
                if expect.holds(&value) {
                    evidence.push(line);
                } else {
                    failing.push(line);
                }
            }
            Ok(None) => evidence.push(format!("{key}: not present")),
            Err(outcome) => return outcome,
        }
    }
    if !applicable {
        return Outcome::new(CheckVerdict::NotApplicable, evidence);
    }
    let ok = failing.is_empty();
    failing.extend(evidence);
    Outcome::of(ok, failing)
}

/// The running kernel's value from `/proc/sys`; `None` when the kernel lacks the key.
fn sysctl_live(root: &HostRoot, key: &str) -> Result<Option<(String, String)>, Outcome> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    Ok(first_line(root, &path)?.map(|value| (path, value)))
}

/// The value the sysctl config files set at boot, or the kernel default when none does
/// (for a root without `/proc`: an image or a mounted disk). Without a default an unset key is
/// reported as `not set`, which fails.
fn sysctl_configured(
    root: &HostRoot,
    key: &str,
    default: Option<&str>,
) -> Result<Option<(String, String)>, Outcome> {
    let patterns: Vec<String> = SYSCTL_FILES.iter().map(|p| (*p).to_owned()).collect();
    let texts = read_all(&files::expand(root, &patterns))?;
    let wanted = key.replace('/', ".");
    let mut found = None;
    for (host, text) in &texts {
        for (line, content) in files::content_lines(text) {
            let content = content.trim_start_matches('-');
            if let Some((name, value)) = content.split_once('=')
                && name.trim().replace('/', ".") == wanted
            {
                found = Some((format!("{host}:{line}"), value.trim().to_owned()));
            }
        }
    }
    Ok(Some(found.unwrap_or_else(|| match default {
        Some(default) => ("not set; kernel default".to_owned(), default.to_owned()),
        None => ("not set in sysctl config".to_owned(), String::new()),
    })))
}

/// `(pid, comm)` of every process under the root's `/proc`; `None` without a process table.
fn processes(root: &HostRoot) -> Option<Vec<(String, String)>> {
    let entries = std::fs::read_dir(root.path("/proc")).ok()?;
    let mut processes: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(root.path(&format!("/proc/{pid}/comm"))).ok()?;
            Some((pid, comm.trim().to_owned()))
        })
        .collect();
    if processes.is_empty() {
        return None;
    }
    processes.sort();
    Some(processes)
}

fn process_running(root: &HostRoot, names: &[String]) -> Outcome {
    let Some(processes) = processes(root) else {
        return Outcome::na("no process table under /proc (offline root)");
    };
    let running: Vec<String> = processes
        .iter()
        .filter(|(_, comm)| names.iter().any(|name| name == comm))
        .map(|(pid, comm)| format!("/proc/{pid}/comm: {comm}"))
        .collect();
    if running.is_empty() {
        Outcome::fail(vec![format!("none of {} is running", names.join(", "))])
    } else {
        Outcome::pass(running)
    }
}

fn port_not_listening(root: &HostRoot, tcp: &[u16], udp: &[u16]) -> Outcome {
    let listening = match crate::inventory::ports::listening(root) {
        Ok(listening) => listening,
        Err(error) => return Outcome::na(format!("no socket tables: {error}")),
    };
    let bad: Vec<String> = listening
        .iter()
        .filter(|l| match l.proto.as_str() {
            "tcp" => tcp.contains(&l.port),
            "udp" => udp.contains(&l.port),
            _ => false,
        })
        .map(|l| {
            let owner = if l.process.is_empty() {
                String::new()
            } else {
                format!(" ({} pid {})", l.process, l.pid)
            };
            format!("{} {}:{} listening{owner}", l.proto, l.address, l.port)
        })
        .collect();
    if bad.is_empty() {
        Outcome::pass(vec![format!("not listening: tcp {:?} udp {:?}", tcp, udp)])
    } else {
        Outcome::fail(bad)
    }
}

/// Package databases: with none of them the root has no package list to judge.
const PACKAGE_DATABASES: [&str; 4] = [
    "/var/lib/dpkg/status",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/Packages",
];

fn packages(root: &HostRoot, names: &[String], want_present: bool) -> Outcome {
    if !PACKAGE_DATABASES.iter().any(|db| root.path(db).exists()) {
        return Outcome::na("no dpkg or rpm database");
    }
    let installed = match crate::packages::installed_packages(root) {
        Ok(installed) => installed,
        Err(error) => return Outcome::error(format!("reading packages: {error}")),
    };
    let found: Vec<String> = installed
        .iter()
        .filter(|package| names.contains(&package.name))
        .map(|package| format!("{}: {} {}", package.source, package.name, package.version))
        .collect();
    match (want_present, found.is_empty()) {
        (true, false) | (false, true) => Outcome::pass(if found.is_empty() {
            vec![format!("none of {} installed", names.join(", "))]
        } else {
            found
        }),
        (true, true) => Outcome::fail(vec![format!("none of {} installed", names.join(", "))]),
        (false, false) => Outcome::fail(found),
    }
}

fn read_optional_db(root: &HostRoot, path: &str) -> Result<Option<String>, Outcome> {
    match std::fs::read(root.path(path)) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Outcome::error(format!("{path}: {error}"))),
    }
}

fn accounts(root: &HostRoot, rule: AccountRule, exempt: &[String]) -> Outcome {
    match accounts_inner(root, rule, exempt) {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

fn accounts_inner(
    root: &HostRoot,
    rule: AccountRule,
    exempt: &[String],
) -> Result<Outcome, Outcome> {
    let skip = |name: &str| exempt.iter().any(|e| e == name);
    let Some(passwd) = read_optional_db(root, "/etc/passwd")? else {
        return Ok(Outcome::na("/etc/passwd does not exist"));
    };
    let users = parse_passwd(&passwd);
    let bad: Vec<String> = match rule {
        AccountRule::Uid0OnlyRoot => users
            .iter()
            .filter(|u| u.uid == 0 && u.name != "root" && !skip(&u.name))
            .map(|u| format!("/etc/passwd: {} has uid 0", u.name))
            .collect(),
        AccountRule::NoEmptyPasswords => {
            let Some(shadow) = read_optional_db(root, "/etc/shadow")? else {
                return Ok(Outcome::na("/etc/shadow does not exist"));
            };
            empty_passwords(&shadow, &skip)
        }
        AccountRule::UniqueUids => duplicates(
            "/etc/passwd",
            "uid",
            users
                .iter()
                .filter(|u| !skip(&u.name))
                .map(|u| (u.uid.to_string(), u.name.clone())),
        ),
        AccountRule::UniqueGids => {
            let Some(group) = read_optional_db(root, "/etc/group")? else {
                return Ok(Outcome::na("/etc/group does not exist"));
            };
            duplicates(
                "/etc/group",
                "gid",
                parse_group(&group)
                    .into_iter()
                    .filter(|g| !skip(&g.name))
                    .map(|g| (g.gid.to_string(), g.name)),
            )
        }
        AccountRule::UniqueNames => {
            let group = read_optional_db(root, "/etc/group")?.unwrap_or_default();
            let mut bad = duplicates(
                "/etc/passwd",
                "name",
                users.iter().map(|u| (u.name.clone(), u.uid.to_string())),
            );
            bad.extend(duplicates(
                "/etc/group",
                "name",
                parse_group(&group)
                    .into_iter()
                    .map(|g| (g.name, g.gid.to_string())),
            ));
            bad
        }
        AccountRule::SystemAccountsNoShell => {
            let uid_min = uid_min(root);
            users
                .iter()
                .filter(|u| u.uid < uid_min && u.name != "root" && !skip(&u.name))
                .filter(|u| {
                    let shell = u.shell.rsplit('/').next().unwrap_or(&u.shell);
                    !NOLOGIN_SHELLS.contains(&shell)
                })
                .map(|u| {
                    format!(
                        "/etc/passwd: {} (uid {} < UID_MIN {uid_min}) has shell {:?}",
                        u.name, u.uid, u.shell
                    )
                })
                .collect()
        }
    };
    Ok(if bad.is_empty() {
        Outcome::pass(vec![format!("{} accounts checked", users.len())])
    } else {
        Outcome::fail(bad)
    })
}

fn empty_passwords(shadow: &str, skip: &dyn Fn(&str) -> bool) -> Vec<String> {
    files::content_lines(shadow)
        .filter_map(|(line, content)| {
            let mut fields = content.split(':');
            let name = fields.next()?;
            let hash = fields.next()?;
            (hash.is_empty() && !skip(name))
                .then(|| format!("/etc/shadow:{line}: {name} has an empty password"))
        })
        .collect()
}

/// `(key, who)` pairs sharing a key.
fn duplicates(
    file: &str,
    what: &str,
    items: impl Iterator<Item = (String, String)>,
) -> Vec<String> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, who) in items {
        by_key.entry(key).or_default().push(who);
    }
    by_key
        .into_iter()
        .filter(|(_, who)| who.len() > 1)
        .map(|(key, who)| format!("{file}: {what} {key} shared by {}", who.join(", ")))
        .collect()
}

/// `UID_MIN` from login.defs (1000 when unset, the default of shadow-utils).
fn uid_min(root: &HostRoot) -> u32 {
    let text = root.read_optional("/etc/login.defs").unwrap_or_default();
    let texts = [("/etc/login.defs".to_owned(), text)];
    files::find_setting(
        &texts,
        "UID_MIN",
        super::policy::Separator::Whitespace,
        super::policy::Precedence::Last,
    )
    .and_then(|s| s.value.parse().ok())
    .unwrap_or(1000)
}

fn pam_line(root: &HostRoot, pam: &PamCondition) -> Outcome {
    let found = files::expand(root, &pam.files);
    if found.is_empty() {
        return Outcome::na(format!("none of {} exists", pam.files.join(", ")));
    }
    let texts = match read_all(&found) {
        Ok(texts) => texts,
        Err(outcome) => return outcome,
    };
    let (good, bad): (Vec<_>, Vec<_>) = texts
        .iter()
        .map(|(host, text)| pam_file(host, text, pam))
        .partition(|(file_ok, _)| *file_ok);
    let ok = bad.is_empty();
    // Failing files first: the table shows only the first evidence line.
    let evidence = bad
        .into_iter()
        .chain(good)
        .flat_map(|(_, lines)| lines)
        .collect();
    Outcome::of(ok, evidence)
}

/// Whether one stack file satisfies the condition: some matching line carries every required
/// flag and argument, and no matching line carries an argument that breaks its expectation.
fn pam_file(host: &str, text: &str, pam: &PamCondition) -> (bool, Vec<String>) {
    let entries: Vec<_> = files::parse_pam(text)
        .into_iter()
        .filter(|e| e.stack == pam.stack && pam.modules.contains(&e.module))
        .collect();
    if entries.is_empty() {
        return (
            false,
            vec![format!(
                "{host}: no {} line for {}",
                pam.stack,
                pam.modules.join(" or ")
            )],
        );
    }
    // Violations and a missing line lead the evidence: the table shows only the first line.
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    let mut satisfied = false;
    for entry in &entries {
        let mut complete = pam.flags.iter().all(|flag| entry.has_flag(flag));
        for arg in &pam.args {
            match entry.arg(&arg.name) {
                Some(value) if !arg.expect.holds(value) => problems.push(format!(
                    "{host}:{}: {}={value} ({})",
                    entry.line,
                    arg.name,
                    arg.expect.describe()
                )),
                Some(_) => {}
                None => complete &= arg.optional,
            }
        }
        satisfied |= complete;
        seen.push(format!("{host}:{}: {}", entry.line, entry.text));
    }
    if !satisfied {
        let required: Vec<&str> = pam
            .flags
            .iter()
            .map(String::as_str)
            .chain(
                pam.args
                    .iter()
                    .filter(|a| !a.optional)
                    .map(|a| a.name.as_str()),
            )
            .collect();
        problems.push(format!(
            "{host}: no {} line carries {}",
            pam.modules.join(" or "),
            required.join(" ")
        ));
    }
    let ok = problems.is_empty();
    problems.extend(seen);
    (ok, problems)
}

fn world_writable(root: &HostRoot, dir: &str) -> Outcome {
    let base = root.path(dir);
    if !base.is_dir() {
        return Outcome::na(format!("{dir} does not exist"));
    }
    let mut found = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![(base.clone(), dir.trim_end_matches('/').to_owned())];
    while let Some((full, host)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&full) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                found.push(format!("scan stopped after {MAX_WALK_ENTRIES} entries"));
                return Outcome::fail(found);
            }
            let host_path = format!("{host}/{}", entry.file_name().to_string_lossy());
            let Ok(metadata) = entry.path().symlink_metadata() else {
                continue;
            };
            if metadata.file_type().is_symlink() {
                continue;
            }
            let mode = metadata.permissions().mode() & 0o7777;
            if mode & 0o002 != 0 && !(metadata.is_dir() && mode & 0o1000 != 0) {
                found.push(format!("{host_path}: mode {mode:04o}"));
            }
            if metadata.is_dir() {
                stack.push((entry.path(), host_path));
            }
        }
    }
    if found.is_empty() {
        Outcome::pass(vec![format!(
            "{dir}: no world-writable entries among {seen}"
        )])
    } else {
        found.sort();
        Outcome::fail(found)
    }
}

fn sticky(root: &HostRoot, dirs: &[String]) -> Outcome {
    let mut evidence = Vec::new();
    let mut ok = true;
    let mut applicable = false;
    for dir in dirs {
        let Ok(metadata) = std::fs::metadata(root.path(dir)) else {
            continue;
        };
        applicable = true;
        let mode = metadata.permissions().mode() & 0o7777;
        let good = mode & 0o002 == 0 || mode & 0o1000 != 0;
        ok &= good;
        evidence.push(format!("{dir}: mode {mode:04o}"));
    }
    if !applicable {
        return Outcome::na(format!("none of {} exists", dirs.join(", ")));
    }
    Outcome::of(ok, evidence)
}

/// Content lines of the found files that contain every token (whitespace ignored).
fn matching_lines(texts: &[(String, String)], all_of: &[String]) -> Vec<String> {
    let tokens: Vec<String> = all_of.iter().map(|t| files::squash(t)).collect();
    texts
        .iter()
        .flat_map(|(host, text)| {
            files::content_lines(text)
                .filter(|(_, content)| {
                    let squashed = files::squash(content);
                    tokens.iter().all(|t| squashed.contains(t.as_str()))
                })
                .map(move |(line, content)| format!("{host}:{line}: {content}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn line_absent(root: &HostRoot, patterns: &[String], all_of: &[String]) -> Outcome {
    let found = files::expand(root, patterns);
    if found.is_empty() {
        return Outcome::na(format!("none of {} exists", patterns.join(", ")));
    }
    let texts = match read_all(&found) {
        Ok(texts) => texts,
        Err(outcome) => return outcome,
    };
    let lines = matching_lines(&texts, all_of);
    if lines.is_empty() {
        let names: Vec<&str> = found.iter().map(|f| f.host.as_str()).collect();
        Outcome::pass(vec![format!(
            "no line with {} in {}",
            all_of.join(" "),
            names.join(", ")
        )])
    } else {
        Outcome::fail(lines)
    }
}

fn line_present(
    root: &HostRoot,
    patterns: &[String],
    all_of: &[String],
    if_missing: IfMissing,
) -> Outcome {
    let found = files::expand(root, patterns);
    if found.is_empty() {
        return Outcome::missing(
            if_missing,
            format!("none of {} exists", patterns.join(", ")),
        );
    }
    let texts = match read_all(&found) {
        Ok(texts) => texts,
        Err(outcome) => return outcome,
    };
    let lines = matching_lines(&texts, all_of);
    if lines.is_empty() {
        let names: Vec<&str> = found.iter().map(|f| f.host.as_str()).collect();
        Outcome::fail(vec![format!(
            "no line with {} in {}",
            if all_of.is_empty() {
                "content".to_owned()
            } else {
                all_of.join(" ")
            },
            names.join(", ")
        )])
    } else {
        Outcome::pass(lines)
    }
}

/// Passes when any part passes; not applicable when every part is; else an error if any part
/// errored (it might have passed), else fails.
fn any(root: &HostRoot, of: &[Condition]) -> Outcome {
    let outcomes: Vec<Outcome> = of.iter().map(|c| evaluate(c, root)).collect();
    let verdict = if outcomes.iter().any(|o| o.verdict == CheckVerdict::Pass) {
        CheckVerdict::Pass
    } else if outcomes
        .iter()
        .all(|o| o.verdict == CheckVerdict::NotApplicable)
    {
        CheckVerdict::NotApplicable
    } else if outcomes.iter().any(|o| o.verdict == CheckVerdict::Error) {
        CheckVerdict::Error
    } else {
        CheckVerdict::Fail
    };
    combine(verdict, outcomes)
}

/// Fails when any applicable part fails; an error when a part errored and none failed; not
/// applicable when every part is; else passes.
fn all(root: &HostRoot, of: &[Condition]) -> Outcome {
    let outcomes: Vec<Outcome> = of.iter().map(|c| evaluate(c, root)).collect();
    let verdict = if outcomes.iter().any(|o| o.verdict == CheckVerdict::Fail) {
        CheckVerdict::Fail
    } else if outcomes.iter().any(|o| o.verdict == CheckVerdict::Error) {
        CheckVerdict::Error
    } else if outcomes
        .iter()
        .all(|o| o.verdict == CheckVerdict::NotApplicable)
    {
        CheckVerdict::NotApplicable
    } else {
        CheckVerdict::Pass
    };
    combine(verdict, outcomes)
}

/// Evidence of the parts that decided the verdict first, then the rest.
fn combine(verdict: CheckVerdict, outcomes: Vec<Outcome>) -> Outcome {
    let (deciding, rest): (Vec<Outcome>, Vec<Outcome>) =
        outcomes.into_iter().partition(|o| o.verdict == verdict);
    let evidence = deciding
        .into_iter()
        .chain(rest)
        .flat_map(|o| o.evidence)
        .collect();
    Outcome::new(verdict, evidence)
}
