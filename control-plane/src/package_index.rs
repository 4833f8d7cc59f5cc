//! Which agent has which package installed, in memory: the index behind `asset find --package`.
//!
//! The asset records hold every agent's package list; this index answers "who has openssl,
//! and which version" without decoding them all. It is built from the asset records when
//! first needed (or by the projector at start) and kept current by the projector, so it is
//! never stored and cannot drift from the ledger across restarts.
//!
//! Size: a province of 18,000 agents with 500 packages each is 9 million installs. Names and
//! (version, arch, source) triples are interned, so an install is two `u32`s (8 bytes), and
//! agents with the same package list (one OS image) share one list: a fleet built from a
//! handful of images costs a few lists, a fully diverged one ~72 MB. Interned strings are
//! never freed; they are bounded by the distinct names and versions ever seen.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bagui_protocol::assets::Package;

/// One install: (name id, variant id), sorted by name.
type Entry = (u32, u32);

#[derive(Default)]
struct Interner {
    ids: HashMap<Arc<str>, u32>,
    values: Vec<Arc<str>>,
}

impl Interner {
    fn intern(&mut self, value: &str) -> u32 {
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        let value: Arc<str> = Arc::from(value);
        self.values.push(value.clone());
        self.ids.insert(value, id);
        id
    }

    fn get(&self, value: &str) -> Option<u32> {
        self.ids.get(value).copied()
    }

    fn value(&self, id: u32) -> &str {
        self.values.get(id as usize).map_or("", |value| value)
    }
}

/// A package as the index returns it for one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub agent_id: String,
    pub arch: String,
    pub version: String,
    pub source: String,
}

/// The in-memory package index (see the module docs).
#[derive(Default)]
pub struct PackageIndex {
    names: Interner,
    /// `version \0 arch \0 source`.
    variants: Interner,
    agents: HashMap<Arc<str>, Arc<[Entry]>>,
    /// Every distinct package list, shared by the agents that have it.
    lists: HashSet<Arc<[Entry]>>,
}

impl std::fmt::Debug for PackageIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageIndex")
            .field("agents", &self.agents.len())
            .field("lists", &self.lists.len())
            .finish_non_exhaustive()
    }
}

impl PackageIndex {
    /// Replaces what the index knows of `agent_id` with `packages` (idempotent).
    pub fn set(&mut self, agent_id: &str, packages: &[Package]) {
        let mut entries: Vec<Entry> = packages
            .iter()
            .map(|package| {
                let variant = format!("{}\0{}\0{}", package.version, package.arch, package.source);
                (
                    self.names.intern(&package.name),
                    self.variants.intern(&variant),
                )
            })
            .collect();
        entries.sort_unstable();
        entries.dedup();
        let list: Arc<[Entry]> = match self.lists.get(&entries[..]) {
            Some(shared) => shared.clone(),
            None => {
                let list: Arc<[Entry]> = Arc::from(entries);
                self.lists.insert(list.clone());
                list
            }
        };
        let previous = match self.agents.get_mut(agent_id) {
            Some(slot) => Some(std::mem::replace(slot, list)),
            None => {
                self.agents.insert(Arc::from(agent_id), list);
                None
            }
        };
        if let Some(previous) = previous {
            self.release(previous);
        }
    }

    /// Forgets an agent.
    pub fn remove(&mut self, agent_id: &str) {
        if let Some(previous) = self.agents.remove(agent_id) {
            self.release(previous);
        }
    }

    /// Drops a list nobody but the set of lists holds any more.
    fn release(&mut self, list: Arc<[Entry]>) {
        // Two references: the set's and `list` itself.
        if Arc::strong_count(&list) == 2 {
            self.lists.remove(&list);
        }
    }

    /// Every agent that has package `name`, once per installed arch.
    pub fn holders(&self, name: &str) -> Vec<Holding> {
        let Some(name_id) = self.names.get(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (agent, list) in &self.agents {
            let start = list.partition_point(|(id, _)| *id < name_id);
            for (_, variant) in list[start..].iter().take_while(|(id, _)| *id == name_id) {
                let mut parts = self.variants.value(*variant).split('\0');
                let version = parts.next().unwrap_or_default().to_owned();
                let arch = parts.next().unwrap_or_default().to_owned();
                let source = parts.next().unwrap_or_default().to_owned();
                out.push(Holding {
                    agent_id: agent.to_string(),
                    arch,
                    version,
                    source,
                });
            }
        }
        out.sort_by(|a, b| (&a.agent_id, &a.arch).cmp(&(&b.agent_id, &b.arch)));
        out
    }

    /// Agents indexed.
    pub fn agents(&self) -> usize {
        self.agents.len()
    }

    /// Distinct package lists held.
    pub fn lists(&self) -> usize {
        self.lists.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, version: &str, arch: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            source: "dpkg".into(),
        }
    }

    #[test]
    fn holders_lists_every_agent_and_arch_with_its_version() {
        let mut index = PackageIndex::default();
        index.set(
            "a1",
            &[
                package("openssl", "3.0.11-1", "amd64"),
                package("bash", "5.2-2", "amd64"),
            ],
        );
        index.set(
            "a2",
            &[
                package("openssl", "3.0.13-1", "amd64"),
                package("openssl", "3.0.13-1", "i386"),
            ],
        );
        index.set("a3", &[package("bash", "5.2-2", "amd64")]);
        let holders = index.holders("openssl");
        let seen: Vec<(&str, &str, &str)> = holders
            .iter()
            .map(|h| (h.agent_id.as_str(), h.arch.as_str(), h.version.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a1", "amd64", "3.0.11-1"),
                ("a2", "amd64", "3.0.13-1"),
                ("a2", "i386", "3.0.13-1"),
            ]
        );
        assert_eq!(holders[0].source, "dpkg");
        assert!(index.holders("zsh").is_empty());
    }

    #[test]
    fn set_replaces_and_identical_lists_are_shared_then_released() {
        let mut index = PackageIndex::default();
        let image = [
            package("bash", "5.2-2", "amd64"),
            package("vim", "9.0", "amd64"),
        ];
        for agent in ["a1", "a2", "a3"] {
            index.set(agent, &image);
        }
        assert_eq!((index.agents(), index.lists()), (3, 1));
        index.set("a2", &[package("bash", "5.2-3", "amd64")]);
        assert_eq!(index.lists(), 2);
        let bash: Vec<String> = index
            .holders("bash")
            .into_iter()
            .map(|h| format!("{}={}", h.agent_id, h.version))
            .collect();
        assert_eq!(bash, ["a1=5.2-2", "a2=5.2-3", "a3=5.2-2"]);
        assert_eq!(index.holders("vim").len(), 2);
        // Setting the same list again changes nothing.
        index.set("a2", &[package("bash", "5.2-3", "amd64")]);
        assert_eq!(index.lists(), 2);
        index.remove("a2");
        assert_eq!((index.agents(), index.lists()), (2, 1));
        index.remove("a1");
        index.remove("a3");
        assert_eq!((index.agents(), index.lists()), (0, 0));
        assert!(index.holders("bash").is_empty());
    }
}
