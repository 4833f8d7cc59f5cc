//! Reading and parsing the files checks look at: wildcard expansion, `key value` settings and
//! PAM lines. Plain token matching only, so a check means what it says (the SCA false
//! positives of brittle regexes are what we avoid).

use std::path::PathBuf;

use super::policy::{Precedence, Separator};
use crate::HostRoot;

/// One existing file named by a policy pattern: the host path (for evidence) and the path
/// under the root (for reading).
#[derive(Debug, Clone)]
pub struct Found {
    pub host: String,
    pub full: PathBuf,
}

/// Expands `patterns` in order, each to the existing regular files it names. Only the last
/// path component may hold wildcards (`*`, `?`); their matches are taken in byte order, as
/// sshd's `Include`, sysctl and run-parts do.
pub fn expand(root: &HostRoot, patterns: &[String]) -> Vec<Found> {
    let mut found = Vec::new();
    for pattern in patterns {
        let (dir, name) = match pattern.rsplit_once('/') {
            Some((dir, name)) => (if dir.is_empty() { "/" } else { dir }, name),
            None => ("/", pattern.as_str()),
        };
        if !name.contains(['*', '?']) {
            let full = root.path(pattern);
            if full.is_file() {
                found.push(Found {
                    host: pattern.clone(),
                    full,
                });
            }
            continue;
        }
        let Ok(entries) = std::fs::read_dir(root.path(dir)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|entry| wildcard_match(name, entry))
            .collect();
        names.sort();
        for entry in names {
            let host = format!("{}/{entry}", dir.trim_end_matches('/'));
            let full = root.path(&host);
            if full.is_file() {
                found.push(Found { host, full });
            }
        }
    }
    found
}

/// Shell-style `*` / `?` match of a whole file name.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    fn go(pattern: &[char], name: &[char]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some(('*', rest)) => (0..=name.len()).any(|skip| go(rest, &name[skip..])),
            Some(('?', rest)) => !name.is_empty() && go(rest, &name[1..]),
            Some((c, rest)) => name.first() == Some(c) && go(rest, &name[1..]),
        }
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    go(&pattern, &name)
}

/// A setting found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub host: String,
    pub line: usize,
    pub value: String,
}

impl Setting {
    pub fn evidence(&self, key: &str) -> String {
        format!("{}:{}: {key} {}", self.host, self.line, self.value)
    }
}

/// Lines that are neither blank nor `#` comments, with their 1-based numbers.
pub fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(index, line)| {
        let line = line.trim();
        (!line.is_empty() && !line.starts_with('#')).then_some((index + 1, line))
    })
}

/// Splits one content line into key and value.
///
/// `Whitespace`: `Key value` (also `Key=value`, which sshd accepts). `Equals`: `key = value`,
/// where the key is the last word before `=` so `export TMOUT=600` and `readonly TMOUT=600`
/// set `TMOUT`; the value loses surrounding quotes, a trailing ` # comment` and anything after
/// a `;` (`TMOUT=600; export TMOUT`).
pub fn split_setting(line: &str, separator: Separator) -> Option<(&str, &str)> {
    match separator {
        Separator::Whitespace => {
            let end = line.find(|c: char| c.is_whitespace() || c == '=')?;
            let (key, rest) = line.split_at(end);
            let value = rest.trim_start().strip_prefix('=').unwrap_or(rest);
            Some((key, value.trim()))
        }
        Separator::Equals => {
            let (left, value) = line.split_once('=')?;
            let key = left.split_whitespace().last()?;
            let value = value.split(" #").next().unwrap_or(value);
            let value = value.split(';').next().unwrap_or(value).trim();
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            Some((key, value))
        }
    }
}

/// The setting of `key` in force across `texts` (host path, contents), in file order.
///
/// With `Whitespace` separators a `Match` line ends the global part of its file (sshd's
/// conditional blocks do not apply to every connection).
pub fn find_setting(
    texts: &[(String, String)],
    key: &str,
    separator: Separator,
    precedence: Precedence,
) -> Option<Setting> {
    let mut found = None;
    for (host, text) in texts {
        for (line, content) in content_lines(text) {
            let Some((name, value)) = split_setting(content, separator) else {
                continue;
            };
            if separator == Separator::Whitespace && name.eq_ignore_ascii_case("match") {
                break;
            }
            if !name.eq_ignore_ascii_case(key) {
                continue;
            }
            let setting = Setting {
                host: host.clone(),
                line,
                value: value.to_owned(),
            };
            if precedence == Precedence::First {
                return Some(setting);
            }
            found = Some(setting);
        }
    }
    found
}

/// One PAM configuration line: `type control module args...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamEntry {
    pub line: usize,
    /// `auth`, `account`, `password` or `session` (a leading `-` dropped).
    pub stack: String,
    pub control: String,
    /// Basename of the module path.
    pub module: String,
    pub args: Vec<String>,
    pub text: String,
}

impl PamEntry {
    /// The value of a `name=value` argument.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .find_map(|arg| arg.strip_prefix(name)?.strip_prefix('='))
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.args.iter().any(|arg| arg == flag)
    }
}

/// Parses a PAM stack file. `@include` lines and malformed lines are skipped; a bracketed
/// control (`[success=1 default=ignore]`) is one field.
pub fn parse_pam(text: &str) -> Vec<PamEntry> {
    content_lines(text)
        .filter_map(|(line, content)| parse_pam_line(line, content))
        .collect()
}

fn parse_pam_line(line: usize, content: &str) -> Option<PamEntry> {
    let (stack, rest) = content.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (control, rest) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        (&rest[..=end], &rest[end + 1..])
    } else {
        rest.split_once(char::is_whitespace).unwrap_or((rest, ""))
    };
    let mut words = rest.split_whitespace();
    let module = words.next()?;
    Some(PamEntry {
        line,
        stack: stack.trim_start_matches('-').to_ascii_lowercase(),
        control: control.to_owned(),
        module: module.rsplit('/').next().unwrap_or(module).to_owned(),
        args: words.map(str::to_owned).collect(),
        text: content.to_owned(),
    })
}

/// `text` without any whitespace, for token matching that ignores spacing
/// (`NOPASSWD: ALL` and `NOPASSWD:ALL` are the same rule).
pub fn squash(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The leading integer of a value (`600`, `600; export`, `-1`), if any.
pub fn leading_int(value: &str) -> Option<i64> {
    let value = value.trim();
    let digits_end = value
        .char_indices()
        .find(|&(index, c)| !(c.is_ascii_digit() || (index == 0 && (c == '-' || c == '+'))))
        .map_or(value.len(), |(index, _)| index);
    value[..digits_end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.conf", "50-cloud.conf"));
        assert!(!wildcard_match("*.conf", "50-cloud.conf.bak"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
    }

    #[test]
    fn settings_split() {
        assert_eq!(
            split_setting("PermitRootLogin   no", Separator::Whitespace),
            Some(("PermitRootLogin", "no"))
        );
        assert_eq!(
            split_setting("MaxAuthTries=3", Separator::Whitespace),
            Some(("MaxAuthTries", "3"))
        );
        assert_eq!(
            split_setting("readonly TMOUT=600; export TMOUT", Separator::Equals),
            Some(("TMOUT", "600"))
        );
        assert_eq!(
            split_setting("SELINUX=\"enforcing\" # set", Separator::Equals),
            Some(("SELINUX", "enforcing"))
        );
    }

    #[test]
    fn first_and_last_precedence_and_match_blocks() {
        let texts = vec![
            (
                "/a".to_owned(),
                "X 1\nX 2\nMatch User bob\nY 9\n".to_owned(),
            ),
            ("/b".to_owned(), "# X 7\nX 3\n".to_owned()),
        ];
        let first = find_setting(&texts, "x", Separator::Whitespace, Precedence::First).unwrap();
        assert_eq!(
            (first.host.as_str(), first.line, first.value.as_str()),
            ("/a", 1, "1")
        );
        let last = find_setting(&texts, "X", Separator::Whitespace, Precedence::Last).unwrap();
        assert_eq!(
            (last.host.as_str(), last.line, last.value.as_str()),
            ("/b", 2, "3")
        );
        assert!(find_setting(&texts, "Y", Separator::Whitespace, Precedence::Last).is_none());
    }

    #[test]
    fn pam_lines() {
        let entries = parse_pam(
            "#auth required pam_wheel.so\n\
             auth [default=die] /usr/lib64/security/pam_faillock.so authfail deny=5\n\
             -password sufficient pam_unix.so sha512\n@include common-auth\n",
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].module, "pam_faillock.so");
        assert_eq!(entries[0].control, "[default=die]");
        assert_eq!(entries[0].arg("deny"), Some("5"));
        assert!(entries[0].has_flag("authfail"));
        assert_eq!(entries[1].stack, "password");
    }

    #[test]
    fn integers() {
        assert_eq!(leading_int("600"), Some(600));
        assert_eq!(leading_int(" -1 "), Some(-1));
        assert_eq!(leading_int("90days"), Some(90));
        assert_eq!(leading_int("abc"), None);
    }
}
