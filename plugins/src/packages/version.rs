//! Version ordering as the package managers themselves define it.
//!
//! Vulnerability rules say "affected below 1:2.3-4"; deciding that with a string comparison is
//! wrong in both directions (`10 < 9`, `1.0~rc1 > 1.0`), so these are faithful ports of dpkg's
//! `verrevcmp` (lib/dpkg/version.c) and rpm's `rpmvercmp` (rpmio/rpmvercmp.c, rpm >= 4.15 with
//! the `^` post-release separator) plus the epoch/release handling around them.

use std::cmp::Ordering;

/// Compares two Debian versions `[epoch:]upstream[-revision]` as `dpkg --compare-versions`.
///
/// The epoch is the digits before the first `:` (missing = 0); the revision is what follows the
/// last `-` (missing = empty, which compares equal to `0`). A malformed epoch (not all digits)
/// is treated as part of the upstream version rather than rejected: an inventory must still
/// order whatever it found.
pub fn compare_dpkg(a: &str, b: &str) -> Ordering {
    let a = DebVersion::parse(a);
    let b = DebVersion::parse(b);
    a.epoch
        .cmp(&b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision))
}

/// Compares two rpm EVRs `[epoch:]version[-release]` as rpm compares a dependency range.
///
/// Epochs compare numerically (missing = 0), then versions with [`rpmvercmp`]; releases are
/// compared only when both sides have one, so a bound without a release (`1.2`) matches every
/// release of that version — rpm's own rule for `Requires: foo >= 1.2` (`rpmdsCompareEVR`).
pub fn compare_rpm(a: &str, b: &str) -> Ordering {
    let a = RpmEvr::parse(a);
    let b = RpmEvr::parse(b);
    let by_epoch = a.epoch.cmp(&b.epoch);
    if by_epoch != Ordering::Equal {
        return by_epoch;
    }
    let by_version = rpmvercmp(a.version, b.version);
    if by_version != Ordering::Equal {
        return by_version;
    }
    match (a.release, b.release) {
        (Some(ra), Some(rb)) if !ra.is_empty() && !rb.is_empty() => rpmvercmp(ra, rb),
        _ => Ordering::Equal,
    }
}

/// A Debian version split into its three parts.
struct DebVersion<'a> {
    epoch: u64,
    upstream: &'a str,
    revision: &'a str,
}

impl<'a> DebVersion<'a> {
    fn parse(version: &'a str) -> DebVersion<'a> {
        let version = version.trim();
        let (epoch, rest) = split_epoch(version);
        let (upstream, revision) = match rest.rfind('-') {
            Some(dash) => (&rest[..dash], &rest[dash + 1..]),
            None => (rest, ""),
        };
        DebVersion {
            epoch,
            upstream,
            revision,
        }
    }
}

/// An rpm EVR split into its three parts; the release is `None` when there is no `-`.
struct RpmEvr<'a> {
    epoch: u64,
    version: &'a str,
    release: Option<&'a str>,
}

impl<'a> RpmEvr<'a> {
    fn parse(evr: &'a str) -> RpmEvr<'a> {
        let evr = evr.trim();
        let (epoch, rest) = split_epoch(evr);
        let (version, release) = match rest.rfind('-') {
            Some(dash) => (&rest[..dash], Some(&rest[dash + 1..])),
            None => (rest, None),
        };
        RpmEvr {
            epoch,
            version,
            release,
        }
    }
}

/// Splits `N:rest` into `(N, rest)`; anything that is not an all-digit epoch yields `(0, s)`.
/// An epoch too large for u64 saturates, which still orders it above every real epoch.
fn split_epoch(s: &str) -> (u64, &str) {
    match s.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|c| c.is_ascii_digit()) => {
            (epoch.parse().unwrap_or(u64::MAX), rest)
        }
        Some(("", rest)) => (0, rest),
        _ => (0, s),
    }
}

/// dpkg's character weight: `~` below end-of-string, letters next, other symbols above.
fn dpkg_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit runs (by [`dpkg_order`]) and digit runs
/// (numerically, with no length limit).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let is_digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !is_digit(a, i)) || (j < b.len() && !is_digit(b, j)) {
            let ac = dpkg_order(a.get(i).copied());
            let bc = dpkg_order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while is_digit(a, i) && is_digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if is_digit(a, i) {
            return Ordering::Greater;
        }
        if is_digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// rpm's `rpmvercmp` on one version or release string.
///
/// Separators (anything not alphanumeric, `~` or `^`) only split segments; `~` sorts before
/// everything including the end of the string, `^` after the end but before anything else;
/// numeric segments beat alphabetic ones and compare by value, alphabetic ones by bytes.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let is_sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while i < a.len() && is_sep(a[i]) {
            i += 1;
        }
        while j < b.len() && is_sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(first), Some(_)) = (ca, cb) else {
            break;
        };
        let numeric = first.is_ascii_digit();
        let class = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let seg_a = take_while(&a[i..], class);
        let seg_b = take_while(&b[j..], class);
        i += seg_a.len();
        j += seg_b.len();
        if seg_b.is_empty() {
            // Different segment types: numeric is newer than alphabetic.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if numeric {
            let (na, nb) = (strip_zeros(seg_a), strip_zeros(seg_b));
            na.len().cmp(&nb.len()).then_with(|| na.cmp(nb))
        } else {
            seg_a.cmp(seg_b)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

fn take_while(s: &[u8], pred: impl Fn(&u8) -> bool) -> &[u8] {
    let end = s.iter().position(|c| !pred(c)).unwrap_or(s.len());
    &s[..end]
}

fn strip_zeros(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| c != b'0').unwrap_or(s.len());
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    /// Pairs from dpkg's `t-version.c` and Debian policy examples, with the expected order.
    const DPKG_CASES: &[(&str, &str, Ordering)] = &[
        ("0", "0", Equal),
        ("0", "00", Equal),
        ("1.0~rc1", "1.0", Less),
        ("1.0~rc1", "1.0~rc2", Less),
        ("1.0~~", "1.0~", Less),
        ("1.0~", "1.0", Less),
        ("1.0~~a", "1.0~", Less),
        ("1.0", "1.0+1", Less),
        ("1.0", "1.0a", Less),
        ("1.0a", "1.0+", Less),
        ("1.0a", "1.0.", Less),
        ("1:0.1", "2.0", Greater),
        ("0:1.0", "1.0", Equal),
        ("1.0-1", "1.0-2", Less),
        ("1.0-1", "1.0-1.1", Less),
        ("1.0", "1.0-0", Equal),
        ("1.0-1", "1.0", Greater),
        ("2.0", "10.0", Less),
        ("10", "9", Greater),
        ("1.2.3", "1.2.3", Equal),
        ("1.2.3", "1.2.4", Less),
        ("1.0", "1.0.0", Less),
        ("a", "b", Less),
        ("a", "A", Greater),
        ("1.001", "1.1", Equal),
        ("1.0-0ubuntu1", "1.0-0ubuntu2", Less),
        ("2.30-1+deb12u1", "2.30-1", Greater),
        ("1:2.30", "1:2.30+b1", Less),
        ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
        ("3.0.11-1~deb12u2", "3.0.11-1", Less),
        ("1.2-3-4", "1.2-3-5", Less),
        ("1.2-3-4", "1.2-3", Greater),
        ("0.9.8+git20231103", "0.9.8", Greater),
        ("4.19+dfsg", "4.19-1", Greater),
        ("99999999999999999999", "100000000000000000000", Less),
        ("1.0", "1.0", Equal),
        ("", "", Equal),
        ("2:1", "1:9", Greater),
    ];

    /// Pairs from rpm's `rpmvercmp.at` test suite plus EVR cases.
    const RPM_CASES: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.0", Equal),
        ("1.0", "2.0", Less),
        ("2.0", "1.0", Greater),
        ("2.0.1", "2.0.1", Equal),
        ("2.0", "2.0.1", Less),
        ("2.0.1", "2.0", Greater),
        ("2.0.1a", "2.0.1a", Equal),
        ("2.0.1a", "2.0.1", Greater),
        ("2.0.1", "2.0.1a", Less),
        ("5.5p1", "5.5p1", Equal),
        ("5.5p1", "5.5p2", Less),
        ("5.5p2", "5.5p1", Greater),
        ("5.5p10", "5.5p10", Equal),
        ("5.5p1", "5.5p10", Less),
        ("5.5p10", "5.5p1", Greater),
        ("10xyz", "10.1xyz", Less),
        ("10.1xyz", "10xyz", Greater),
        ("xyz10", "xyz10", Equal),
        ("xyz10", "xyz10.1", Less),
        ("xyz10.1", "xyz10", Greater),
        ("xyz.4", "xyz.4", Equal),
        ("xyz.4", "8", Less),
        ("8", "xyz.4", Greater),
        ("xyz.4", "2", Less),
        ("2", "xyz.4", Greater),
        ("5.5p2", "5.6p1", Less),
        ("5.6p1", "5.5p2", Greater),
        ("5.6p1", "6.5p1", Less),
        ("6.5p1", "5.6p1", Greater),
        ("6.0.rc1", "6.0", Greater),
        ("6.0", "6.0.rc1", Less),
        ("10b2", "10a1", Greater),
        ("10a2", "10b2", Less),
        ("1.0aa", "1.0aa", Equal),
        ("1.0a", "1.0aa", Less),
        ("1.0aa", "1.0a", Greater),
        ("10.0001", "10.0001", Equal),
        ("10.0001", "10.1", Equal),
        ("10.1", "10.0001", Equal),
        ("10.0001", "10.0039", Less),
        ("10.0039", "10.0001", Greater),
        ("4.999.9", "5.0", Less),
        ("5.0", "4.999.9", Greater),
        ("20101121", "20101121", Equal),
        ("20101121", "20101122", Less),
        ("20101122", "20101121", Greater),
        ("2_0", "2_0", Equal),
        ("2.0", "2_0", Equal),
        ("2_0", "2.0", Equal),
        ("a", "a", Equal),
        ("a+", "a+", Equal),
        ("a+", "a_", Equal),
        ("a_", "a+", Equal),
        ("+a", "+a", Equal),
        ("+a", "_a", Equal),
        ("_a", "+a", Equal),
        ("+_", "+_", Equal),
        ("_+", "+_", Equal),
        ("_+", "_+", Equal),
        ("+", "_", Equal),
        ("_", "+", Equal),
        ("1.0~rc1", "1.0~rc1", Equal),
        ("1.0~rc1", "1.0", Less),
        ("1.0", "1.0~rc1", Greater),
        ("1.0~rc1", "1.0~rc2", Less),
        ("1.0~rc2", "1.0~rc1", Greater),
        ("1.0~rc1~git123", "1.0~rc1~git123", Equal),
        ("1.0~rc1~git123", "1.0~rc1", Less),
        ("1.0~rc1", "1.0~rc1~git123", Greater),
        ("1.0^", "1.0^", Equal),
        ("1.0^", "1.0", Greater),
        ("1.0", "1.0^", Less),
        ("1.0^git1", "1.0^git1", Equal),
        ("1.0^git1", "1.0", Greater),
        ("1.0", "1.0^git1", Less),
        ("1.0^git1", "1.0^git2", Less),
        ("1.0^git2", "1.0^git1", Greater),
        ("1.0^git1", "1.01", Less),
        ("1.01", "1.0^git1", Greater),
        ("1.0^20160101", "1.0^20160101", Equal),
        ("1.0^20160101", "1.0.1", Less),
        ("1.0.1", "1.0^20160101", Greater),
        ("1.0^20160101^git1", "1.0^20160101^git1", Equal),
        ("1.0^20160102", "1.0^20160101^git1", Greater),
        ("1.0^20160101^git1", "1.0^20160102", Less),
        ("1.0~rc1^git1", "1.0~rc1^git1", Equal),
        ("1.0~rc1^git1", "1.0~rc1", Greater),
        ("1.0~rc1", "1.0~rc1^git1", Less),
        ("1.0^git1~pre", "1.0^git1~pre", Equal),
        ("1.0^git1", "1.0^git1~pre", Greater),
        ("1.0^git1~pre", "1.0^git1", Less),
        ("1.0", "1.0.0", Less),
        ("10", "9", Greater),
        // EVR handling around rpmvercmp.
        ("1:1.0-1", "2.0-1", Greater),
        ("0:1.0-1", "1.0-1", Equal),
        ("1.0-1.el9", "1.0-2.el9", Less),
        ("1.0-10.el9", "1.0-9.el9", Greater),
        ("3.0.7-27.el9", "3.0.7", Equal),
        ("2.34-100.oe2203", "2.34-99.oe2203", Greater),
        ("1.0-1", "1.0.1-1", Less),
    ];

    #[test]
    fn dpkg_known_cases() {
        for &(a, b, want) in DPKG_CASES {
            assert_eq!(compare_dpkg(a, b), want, "{a} vs {b}");
            assert_eq!(compare_dpkg(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn rpm_known_cases() {
        for &(a, b, want) in RPM_CASES {
            assert_eq!(compare_rpm(a, b), want, "{a} vs {b}");
            assert_eq!(compare_rpm(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// Asks the real `dpkg --compare-versions` about every pair (fails where dpkg is absent).
    #[test]
    fn dpkg_agrees_with_real_dpkg() {
        assert!(
            std::process::Command::new("dpkg")
                .arg("--version")
                .output()
                .is_ok(),
            "dpkg is needed to check the ordering against the real thing"
        );
        let mut pairs: Vec<(&str, &str)> = DPKG_CASES
            .iter()
            // dpkg warns about (but still orders) versions not starting with a digit.
            .filter(|(a, b, _)| starts_with_digit(a) && starts_with_digit(b))
            .map(|&(a, b, _)| (a, b))
            .collect();
        let extra = [
            "1.0",
            "1.0~",
            "1.0~~",
            "1.0+",
            "1.0a",
            "1.0.",
            "1.0-0",
            "1:1.0",
            "1.0-1~bpo1",
            "1.0-1+b1",
            "1.0.0",
            "1.0~beta",
            "1.0~alpha",
            "1.00",
            "1.0z",
            "1.0Z",
            "1.0-a",
            "1.0-~",
            "2:0",
            "10.0",
            "9.9",
        ];
        for a in extra {
            for b in extra {
                pairs.push((a, b));
            }
        }
        for (a, b) in pairs {
            let real = real_dpkg_order(a, b);
            assert_eq!(compare_dpkg(a, b), real, "{a} vs {b}");
        }
    }

    fn starts_with_digit(version: &str) -> bool {
        version.bytes().next().is_some_and(|c| c.is_ascii_digit())
    }

    fn real_dpkg_order(a: &str, b: &str) -> Ordering {
        let dpkg = |op: &str| {
            std::process::Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .status()
                .unwrap()
                .success()
        };
        if dpkg("lt") {
            Less
        } else if dpkg("eq") {
            Equal
        } else {
            assert!(dpkg("gt"), "{a} vs {b}: dpkg says neither lt, eq nor gt");
            Greater
        }
    }

    #[test]
    fn epoch_parsing_is_forgiving() {
        assert_eq!(compare_dpkg("x:1.0", "x:1.0"), Equal);
        assert_eq!(compare_dpkg(":1.0", "1.0"), Equal);
        assert_eq!(compare_rpm("99999999999999999999999:1", "5:1"), Greater);
    }
}
