//! Scope: every user, team and token hangs on one node of the division tree and sees that
//! node's subtree (a county NOC sees its county, the region sees everything).
//!
//! # Division codes
//!
//! Codes have five levels of 2, 2, 2, 3 and 3 digits: `45` the region (广西), `4501` a city
//! (南宁市), `450103` a county (青秀区), `450103001` a township, `450103001005` a village. The
//! division file shipped with the control plane (`control-plane/data/guangxi-divisions.csv`)
//! writes every code at its own length like that; other sources (statistical tables, agent
//! configurations) pad every code to 12 digits (`450000000000`, `450100000000`).
//! [`canonical_division`] turns either form into the file's form by dropping trailing all-zero
//! levels, so the two compare equal and the control plane's tree answers for both.
//!
//! # The check
//!
//! [`in_scope`] asks the control plane's tree for parents ([`DivisionParents`]) and walks up
//! from the division, at most [`MAX_DEPTH`] steps so that a damaged tree with a cycle cannot
//! hang a request. Anything malformed or unknown is out of scope: the check fails closed.
//!
//! [`PrefixParents`] answers `parent` from the code alone (the code cut to the level above).
//! A test proves it gives the same parent as the shipped tree for each of its 18,091 codes, so
//! on the shipped tree it is the same check; a deployment that edits its tree should pass the
//! tree.

use thiserror::Error;

/// The longest walk [`in_scope`] makes (the tree has five levels; a cycle stops here).
pub const MAX_DEPTH: usize = 8;

/// The length of a code at each level, region to village.
const LEVEL_LENGTHS: [usize; 5] = [2, 4, 6, 9, 12];

/// Answers "which division is directly above `code`", from the control plane's tree.
pub trait DivisionParents {
    /// The parent of `code`, `None` for the root or an unknown code.
    fn parent(&self, code: &str) -> Option<String>;
}

/// Why a string is not a division code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DivisionCodeError {
    #[error("a division code cannot be empty")]
    Empty,
    #[error("division code `{0}` has characters other than the digits 0-9")]
    NotDigits(String),
    #[error("division code `{code}` has {length} digits; expected 2, 4, 6, 9 or 12")]
    Length { code: String, length: usize },
    #[error("division code `{0}` has an all-zero level above a non-zero one")]
    ZeroLevel(String),
}

/// The code as the division file writes it: `450100000000` → `4501`, `450103001000` →
/// `450103001`, `4501` → `4501`.
pub fn canonical_division(code: &str) -> Result<String, DivisionCodeError> {
    if code.is_empty() {
        return Err(DivisionCodeError::Empty);
    }
    if !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(DivisionCodeError::NotDigits(code.to_owned()));
    }
    let Some(level) = LEVEL_LENGTHS
        .iter()
        .position(|&length| length == code.len())
    else {
        return Err(DivisionCodeError::Length {
            code: code.to_owned(),
            length: code.len(),
        });
    };
    let mut end = level;
    // Drop trailing all-zero levels (padding), never the region's.
    while end > 0 && is_zero(&code[LEVEL_LENGTHS[end - 1]..LEVEL_LENGTHS[end]]) {
        end -= 1;
    }
    // What is left must have no zero level: `450100001` (a township under county 00) and `00`
    // name nothing.
    let mut start = 0;
    for &length in &LEVEL_LENGTHS[..=end] {
        if is_zero(&code[start..length]) {
            return Err(DivisionCodeError::ZeroLevel(code.to_owned()));
        }
        start = length;
    }
    Ok(code[..LEVEL_LENGTHS[end]].to_owned())
}

fn is_zero(digits: &str) -> bool {
    digits.bytes().all(|byte| byte == b'0')
}

/// Whether `division` is `scope` or lies below it in `tree`. Both codes may be written in the
/// file's form or padded to 12 digits; a malformed code, or a division the tree cannot lead up
/// to `scope` within [`MAX_DEPTH`] steps, is out of scope.
pub fn in_scope(scope: &str, division: &str, tree: &impl DivisionParents) -> bool {
    let (Ok(scope), Ok(mut current)) = (canonical_division(scope), canonical_division(division))
    else {
        return false;
    };
    if current == scope {
        return true;
    }
    for _ in 0..MAX_DEPTH {
        let Some(parent) = tree.parent(&current) else {
            return false;
        };
        let Ok(parent) = canonical_division(&parent) else {
            return false;
        };
        if parent == scope {
            return true;
        }
        current = parent;
    }
    false
}

/// Parents read from the codes themselves: a code cut to the level above (`450103001` →
/// `450103`). Equal to the shipped tree for every code in it (tested); see the module doc.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrefixParents;

impl DivisionParents for PrefixParents {
    fn parent(&self, code: &str) -> Option<String> {
        let code = canonical_division(code).ok()?;
        let level = LEVEL_LENGTHS
            .iter()
            .position(|&length| length == code.len())?;
        let parent_length = *LEVEL_LENGTHS.get(level.checked_sub(1)?)?;
        Some(code[..parent_length].to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The division file shipped in the repository (the same file as `shared/data`).
    const GUANGXI_CSV: &str = include_str!("../../../control-plane/data/guangxi-divisions.csv");

    /// The file's `code → parent` map, the way the control plane builds its tree.
    struct CsvTree(HashMap<String, Option<String>>);

    impl CsvTree {
        fn guangxi() -> CsvTree {
            let mut parents = HashMap::new();
            for line in GUANGXI_CSV.lines().skip(1) {
                let fields: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
                assert_eq!(fields.len(), 4, "{line}");
                let parent = (!fields[2].is_empty()).then(|| fields[2].to_owned());
                assert!(parents.insert(fields[0].to_owned(), parent).is_none());
            }
            CsvTree(parents)
        }
    }

    impl DivisionParents for CsvTree {
        fn parent(&self, code: &str) -> Option<String> {
            self.0.get(code).cloned().flatten()
        }
    }

    fn padded(code: &str) -> String {
        format!("{code:0<12}")
    }

    #[test]
    fn codes_are_canonicalised_to_the_files_form() {
        assert_eq!(canonical_division("450000000000").unwrap(), "45");
        assert_eq!(canonical_division("450100000000").unwrap(), "4501");
        assert_eq!(canonical_division("450103000000").unwrap(), "450103");
        assert_eq!(canonical_division("450103001000").unwrap(), "450103001");
        assert_eq!(canonical_division("450103001005").unwrap(), "450103001005");
        assert_eq!(canonical_division("4501").unwrap(), "4501");
        assert_eq!(canonical_division("450100").unwrap(), "4501");
        assert_eq!(canonical_division("45").unwrap(), "45");
    }

    #[test]
    fn malformed_codes_are_refused_with_the_reason() {
        assert_eq!(canonical_division(""), Err(DivisionCodeError::Empty));
        assert_eq!(
            canonical_division("45a1").unwrap_err().to_string(),
            "division code `45a1` has characters other than the digits 0-9"
        );
        assert_eq!(
            canonical_division("４５").unwrap_err(),
            DivisionCodeError::NotDigits("４５".to_owned())
        );
        assert_eq!(
            canonical_division("45010").unwrap_err().to_string(),
            "division code `45010` has 5 digits; expected 2, 4, 6, 9 or 12"
        );
        assert_eq!(
            canonical_division("000000000000"),
            Err(DivisionCodeError::ZeroLevel("000000000000".to_owned()))
        );
        assert_eq!(
            canonical_division("450100001000"),
            Err(DivisionCodeError::ZeroLevel("450100001000".to_owned()))
        );
        assert!(canonical_division(" 4501").is_err());
    }

    /// The proof that [`PrefixParents`] is the shipped tree: same parent for every code, in
    /// both spellings, and every code already canonical.
    #[test]
    fn prefix_parents_equal_the_shipped_tree_for_every_code() {
        let tree = CsvTree::guangxi();
        assert_eq!(tree.0.len(), 18_091);
        for (code, parent) in &tree.0 {
            assert_eq!(canonical_division(code).as_deref(), Ok(code.as_str()));
            assert_eq!(
                canonical_division(&padded(code)).as_deref(),
                Ok(code.as_str())
            );
            assert_eq!(&PrefixParents.parent(code), parent, "{code}");
            assert_eq!(&PrefixParents.parent(&padded(code)), parent, "{code}");
        }
    }

    #[test]
    fn subtrees_are_in_scope_and_nothing_else_is() {
        let tree = CsvTree::guangxi();
        for (scope, division, expected) in [
            ("45", "450103001005", true),
            ("450000000000", "450103001005", true),
            ("4501", "450103", true),
            ("450100000000", "450103000000", true),
            ("450103", "450103", true),
            ("450103", "450103001", true),
            ("450103001", "450103001005", true),
            ("450103001000", "450103001005", true),
            ("4502", "450103", false),
            ("450103", "4501", false),
            ("450103001005", "450103001", false),
            ("450105", "450103001005", false),
            // Malformed or unknown: out of scope, whoever asks.
            ("45", "", false),
            ("", "45", false),
            ("45", "4501x", false),
            ("45", "469001", false),
            ("4501", "450199", false),
        ] {
            assert_eq!(
                in_scope(scope, division, &tree),
                expected,
                "tree: {scope} ∋ {division}"
            );
        }
    }

    #[test]
    fn the_prefix_walk_and_the_tree_walk_agree_on_the_shipped_codes() {
        let tree = CsvTree::guangxi();
        let mut codes: Vec<&String> = tree.0.keys().collect();
        codes.sort();
        let scopes = [
            "45",
            "4501",
            "450103",
            "450103001",
            "4514",
            "451481",
            "451481103",
        ];
        let mut inside = 0;
        for division in codes.iter().step_by(7) {
            for scope in scopes {
                let by_tree = in_scope(scope, division, &tree);
                assert_eq!(
                    by_tree,
                    in_scope(scope, division, &PrefixParents),
                    "{scope} {division}"
                );
                assert_eq!(by_tree, division.starts_with(scope), "{scope} {division}");
                inside += usize::from(by_tree && scope != "45");
            }
        }
        assert!(
            inside > 100,
            "the sample reaches below the region: {inside}"
        );
    }

    #[test]
    fn an_edited_tree_is_followed_rather_than_the_codes() {
        // A deployment that moved county 450199 under city 4502: the tree decides.
        struct Moved;
        impl DivisionParents for Moved {
            fn parent(&self, code: &str) -> Option<String> {
                match code {
                    "450199001" => Some("450199".to_owned()),
                    "450199" => Some("4502".to_owned()),
                    "4502" => Some("45".to_owned()),
                    _ => None,
                }
            }
        }
        assert!(in_scope("4502", "450199001", &Moved));
        assert!(in_scope("450200000000", "450199001000", &Moved));
        assert!(!in_scope("4501", "450199001", &Moved));
        assert!(in_scope("4501", "450199001", &PrefixParents));
    }

    #[test]
    fn a_cyclic_tree_ends_the_walk() {
        struct Cycle;
        impl DivisionParents for Cycle {
            fn parent(&self, code: &str) -> Option<String> {
                Some(if code == "4501" { "4502" } else { "4501" }.to_owned())
            }
        }
        assert!(!in_scope("45", "4501", &Cycle));
        assert!(in_scope("4502", "4501", &Cycle));
        // A tree that answers garbage is out of scope too.
        struct Garbage;
        impl DivisionParents for Garbage {
            fn parent(&self, _code: &str) -> Option<String> {
                Some("not a code".to_owned())
            }
        }
        assert!(!in_scope("45", "4501", &Garbage));
    }

    #[test]
    fn the_walk_is_bounded_by_max_depth() {
        // A chain longer than MAX_DEPTH: 12-digit codes counting down, each the parent of the
        // one before; the scope is reached after exactly `steps` steps.
        struct Chain;
        impl DivisionParents for Chain {
            fn parent(&self, code: &str) -> Option<String> {
                let number: u64 = code.parse().ok()?;
                Some(format!("{:012}", number - 1))
            }
        }
        let start = 450103001100_u64;
        let within = format!("{:012}", start - MAX_DEPTH as u64);
        let beyond = format!("{:012}", start - MAX_DEPTH as u64 - 1);
        assert!(in_scope(&within, &start.to_string(), &Chain));
        assert!(!in_scope(&beyond, &start.to_string(), &Chain));
    }
}
