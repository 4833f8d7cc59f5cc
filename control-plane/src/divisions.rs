//! The five-level administrative division tree: region → city → county → township → village.
//!
//! Every agent, token, team and user hangs on a node of this tree, and scope checks ("a county
//! NOC sees its county") are subtree checks on it. The default tree is Guangxi's real one
//! (GB/T 2260 and statistical codes, 18,091 nodes), shipped in the binary and copied into the
//! data directory at `init` so that a deployment can edit its own.

use std::collections::HashMap;

/// The division tree shipped with Bagui.
pub const GUANGXI_CSV: &str = include_str!("../data/guangxi-divisions.csv");

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Division {
    pub code: String,
    pub name: String,
    pub parent: Option<String>,
    /// 1 region, 2 city, 3 county, 4 township, 5 village.
    pub level: u8,
}

/// Why a division file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DivisionsError {
    #[error("line {line}: expected `code,name,parent_code,level`, found {found:?}")]
    Malformed { line: usize, found: String },
    #[error("line {line}: level {level:?} is not 1..=5")]
    BadLevel { line: usize, level: String },
    #[error("line {line}: division {code} appears twice")]
    Duplicate { line: usize, code: String },
    #[error("division {code}: parent {parent} does not exist")]
    MissingParent { code: String, parent: String },
    #[error("division {code}: level {level} under parent level {parent_level}")]
    LevelMismatch {
        code: String,
        level: u8,
        parent_level: u8,
    },
    #[error("expected exactly one root division (level 1 without parent), found {0}")]
    Roots(usize),
}

/// The tree, indexed for lookups, paths and subtree checks.
#[derive(Debug, Clone)]
pub struct Divisions {
    nodes: HashMap<String, Division>,
    children: HashMap<String, Vec<String>>,
    root: String,
}

impl Divisions {
    /// Parses `code,name,parent_code,level` CSV (with header) and checks it is one tree.
    pub fn from_csv(text: &str) -> Result<Divisions, DivisionsError> {
        let mut nodes = HashMap::new();
        let mut order = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || (index == 0 && line.starts_with("code,")) {
                continue;
            }
            let fields: Vec<&str> = line.split(',').collect();
            let [code, name, parent, level] = fields[..] else {
                return Err(DivisionsError::Malformed {
                    line: line_number,
                    found: line.to_owned(),
                });
            };
            if code.is_empty() || name.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DivisionsError::Malformed {
                    line: line_number,
                    found: line.to_owned(),
                });
            }
            let level: u8 = match level.trim().parse() {
                Ok(level @ 1..=5) => level,
                _ => {
                    return Err(DivisionsError::BadLevel {
                        line: line_number,
                        level: level.to_owned(),
                    });
                }
            };
            let division = Division {
                code: code.to_owned(),
                name: name.to_owned(),
                parent: (!parent.is_empty()).then(|| parent.to_owned()),
                level,
            };
            if nodes.insert(code.to_owned(), division).is_some() {
                return Err(DivisionsError::Duplicate {
                    line: line_number,
                    code: code.to_owned(),
                });
            }
            order.push(code.to_owned());
        }
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        let mut roots = Vec::new();
        for code in &order {
            let node = &nodes[code];
            match &node.parent {
                None if node.level == 1 => roots.push(code.clone()),
                None => {
                    return Err(DivisionsError::MissingParent {
                        code: code.clone(),
                        parent: String::new(),
                    });
                }
                Some(parent) => {
                    let parent_node =
                        nodes
                            .get(parent)
                            .ok_or_else(|| DivisionsError::MissingParent {
                                code: code.clone(),
                                parent: parent.clone(),
                            })?;
                    if parent_node.level + 1 != node.level {
                        return Err(DivisionsError::LevelMismatch {
                            code: code.clone(),
                            level: node.level,
                            parent_level: parent_node.level,
                        });
                    }
                    children
                        .entry(parent.clone())
                        .or_default()
                        .push(code.clone());
                }
            }
        }
        if roots.len() != 1 {
            return Err(DivisionsError::Roots(roots.len()));
        }
        Ok(Divisions {
            nodes,
            children,
            root: roots.remove(0),
        })
    }

    /// Guangxi's tree as shipped.
    pub fn guangxi() -> Divisions {
        // The shipped file is checked by a test; failing here would be a build defect.
        Divisions::from_csv(GUANGXI_CSV).expect("shipped division tree is valid")
    }

    pub fn get(&self, code: &str) -> Option<&Division> {
        self.nodes.get(code)
    }

    pub fn root(&self) -> &Division {
        &self.nodes[&self.root]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn children(&self, code: &str) -> &[String] {
        self.children.get(code).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `code` and its ancestors, nearest first.
    pub fn ancestors<'a>(&'a self, code: &str) -> impl Iterator<Item = &'a Division> + 'a {
        let mut next = self.nodes.get(code);
        std::iter::from_fn(move || {
            let current = next?;
            next = current
                .parent
                .as_ref()
                .and_then(|parent| self.nodes.get(parent));
            Some(current)
        })
    }

    /// Chinese names from the region down to `code`, `/`-separated; empty for an unknown code.
    pub fn path_names(&self, code: &str) -> String {
        let mut names: Vec<&str> = self.ancestors(code).map(|d| d.name.as_str()).collect();
        names.reverse();
        names.join("/")
    }

    /// Whether `code` is `ancestor` or lies below it.
    pub fn is_within(&self, code: &str, ancestor: &str) -> bool {
        self.ancestors(code)
            .any(|division| division.code == ancestor)
    }

    /// Counts per level (index 0 = level 1).
    pub fn level_counts(&self) -> [usize; 5] {
        let mut counts = [0; 5];
        for node in self.nodes.values() {
            counts[usize::from(node.level - 1)] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tree_has_guangxi_shape() {
        let tree = Divisions::guangxi();
        assert_eq!(tree.len(), 18_091);
        assert_eq!(tree.level_counts(), [1, 14, 111, 1_284, 16_681]);
        assert_eq!(tree.root().name, "广西壮族自治区");
        assert_eq!(tree.children("45").len(), 14);
        assert_eq!(
            tree.path_names("450103001005"),
            "广西壮族自治区/南宁市/青秀区/新竹街道/新竹社区居委会"
        );
        assert!(tree.is_within("450103001005", "4501"));
        assert!(tree.is_within("4501", "4501"));
        assert!(!tree.is_within("4501", "450103001005"));
        assert!(!tree.is_within("450304001008", "4501"));
        assert!(!tree.is_within("999", "45"));
        assert_eq!(tree.path_names("999"), "");
    }

    #[test]
    fn malformed_files_are_refused_with_the_line() {
        let cases = [
            (
                "code,name,parent_code,level\n45,广西,,1\n4501,南宁\n",
                "line 3",
            ),
            ("45,广西,,1\n4501,南宁,45,7\n", "level"),
            ("45,广西,,1\n45,广西,,1\n", "twice"),
            ("45,广西,,1\n4501,南宁,46,2\n", "parent 46"),
            (
                "45,广西,,1\n450103,青秀区,45,3\n",
                "level 3 under parent level 1",
            ),
            ("45,广西,,1\n46,海南,,1\n", "exactly one root"),
            ("", "exactly one root"),
            ("4x,广西,,1\n", "line 1"),
        ];
        for (text, expected) in cases {
            let error = Divisions::from_csv(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
