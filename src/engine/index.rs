//! The name index: event name → the event triggers that may be interested (Prefect's
//! `_triggers_by_expect` + `find_interested_triggers`). Literal names are one hash lookup, so
//! the cost of an event grows with the triggers it can match, not with all triggers installed.

use hashbrown::HashMap;

use super::matcher::Glob;

/// A trigger node somewhere in the engine: (definition slot, node id).
pub type NodeRef = (u32, u32);

/// Patterns → node refs.
#[derive(Clone, Debug, Default)]
pub struct NameIndex {
    exact: HashMap<String, Vec<NodeRef>>,
    globs: Vec<(Glob, NodeRef)>,
    every: Vec<NodeRef>,
}

impl NameIndex {
    /// Registers a node under its keys (`None`: every event name, Prefect's `*`).
    pub fn add(&mut self, node: NodeRef, keys: Option<&[Glob]>) {
        match keys {
            None => self.every.push(node),
            Some(keys) => {
                for key in keys {
                    if key.is_literal() {
                        let list = self.exact.entry(key.source().to_owned()).or_default();
                        if !list.contains(&node) {
                            list.push(node);
                        }
                    } else {
                        self.globs.push((key.clone(), node));
                    }
                }
            }
        }
    }

    /// Removes every node of a definition slot.
    pub fn remove_slot(&mut self, slot: u32) {
        self.exact.retain(|_, list| {
            list.retain(|n| n.0 != slot);
            !list.is_empty()
        });
        self.globs.retain(|(_, n)| n.0 != slot);
        self.every.retain(|n| n.0 != slot);
    }

    /// The nodes whose keys match `name`, sorted and without duplicates, into `out`.
    pub fn candidates(&self, name: &str, out: &mut Vec<NodeRef>) {
        out.clear();
        if let Some(list) = self.exact.get(name) {
            out.extend_from_slice(list);
        }
        out.extend(self.globs.iter().filter(|(g, _)| g.matches(name)).map(|(_, n)| *n));
        out.extend_from_slice(&self.every);
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_glob_and_catch_all_keys() {
        let mut idx = NameIndex::default();
        idx.add((0, 0), Some(&[Glob::new("order.created"), Glob::new("order.complete")]));
        idx.add((1, 0), Some(&[Glob::new("order.*")]));
        idx.add((2, 1), None);
        let mut out = Vec::new();
        idx.candidates("order.created", &mut out);
        assert_eq!(out, [(0, 0), (1, 0), (2, 1)]);
        idx.candidates("user.signup", &mut out);
        assert_eq!(out, [(2, 1)]);
        idx.remove_slot(1);
        idx.candidates("order.created", &mut out);
        assert_eq!(out, [(0, 0), (2, 1)]);
    }
}
