//! Compound and sequence triggers: Prefect's `evaluate_composite_trigger` over the stored
//! latest firing of each child.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::time::Timestamp;

use super::compile::CompositeNode;

/// A firing travelling up a trigger tree (Prefect's `Firing`, reduced to what is needed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildFiring {
    /// Processing time at which it fired (`Firing.triggered`); `within` is measured on it.
    pub triggered: Timestamp,
    /// The reported instant (see `Firing::at`).
    pub at: Timestamp,
    /// The event it carries.
    pub event: Option<Uuid>,
    /// Every event behind it.
    pub events: Vec<Uuid>,
}

/// The stored latest firing of each child of one composite trigger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChildFirings(pub Vec<Option<ChildFiring>>);

/// A child at position `child` fired: returns the parent's firing when it is now complete.
pub fn receive(
    node: &CompositeNode,
    state: &mut ChildFirings,
    child: usize,
    firing: ChildFiring,
) -> Option<ChildFiring> {
    if node.required <= 1 {
        // `require: any`, `require: 1` and one-child sequences fire on every child firing,
        // storing nothing.
        return Some(firing);
    }
    if state.0.len() != node.children.len() {
        state.0.resize(node.children.len(), None);
    }
    if let Some(within) = node.within {
        // Prefect deletes `child_fired_at < triggered - within`: the boundary is inclusive.
        let horizon = firing.triggered.minus(within);
        for slot in state.0.iter_mut() {
            if slot.as_ref().is_some_and(|f| f.triggered < horizon) {
                *slot = None;
            }
        }
    }
    let (triggered, at, event) = (firing.triggered, firing.at, firing.event);
    state.0[child] = Some(firing);
    let stored: Vec<&ChildFiring> = state.0.iter().flatten().collect();
    let ready = if node.sequence {
        // Every child stored, and sorted by `triggered` they are in child order; firings at
        // the same instant count in declaration order.
        stored.len() == node.children.len() && stored.windows(2).all(|w| w[0].triggered <= w[1].triggered)
    } else {
        stored.len() >= node.required
    };
    if !ready {
        return None;
    }
    let mut events = Vec::new();
    for f in stored {
        for e in &f.events {
            if !events.contains(e) {
                events.push(*e);
            }
        }
    }
    state.0.iter_mut().for_each(|s| *s = None);
    Some(ChildFiring { triggered, at, event, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::Span;

    fn node(sequence: bool, required: usize, within: Option<i64>) -> CompositeNode {
        CompositeNode { children: vec![1, 2, 3], sequence, required, within: within.map(Span::seconds) }
    }

    fn at(s: i64) -> ChildFiring {
        let t = Timestamp::from_micros(s * 1_000_000);
        ChildFiring {
            triggered: t,
            at: t,
            event: Some(Uuid::from_u128(s as u128)),
            events: vec![Uuid::from_u128(s as u128)],
        }
    }

    #[test]
    fn compound_counts_distinct_children_and_clears_after_firing() {
        let n = node(false, 2, None);
        let mut s = ChildFirings::default();
        assert_eq!(receive(&n, &mut s, 0, at(0)), None);
        assert_eq!(receive(&n, &mut s, 0, at(1)), None, "a re-firing child replaces its firing");
        let fired = receive(&n, &mut s, 2, at(2)).unwrap();
        assert_eq!(fired.at, at(2).at);
        assert_eq!(fired.events.len(), 2);
        assert!(s.0.iter().all(Option::is_none));
    }

    #[test]
    fn within_is_inclusive_and_measured_on_processing_time() {
        let n = node(false, 2, Some(10));
        let mut s = ChildFirings::default();
        receive(&n, &mut s, 0, at(0));
        assert!(receive(&n, &mut s, 1, at(10)).is_some());
        receive(&n, &mut s, 0, at(20));
        assert!(receive(&n, &mut s, 1, at(31)).is_none());
    }

    #[test]
    fn sequence_needs_order() {
        let n = node(true, 3, None);
        let mut s = ChildFirings::default();
        receive(&n, &mut s, 1, at(0));
        receive(&n, &mut s, 0, at(1));
        assert!(receive(&n, &mut s, 2, at(2)).is_none(), "b, a, c does not fire");
        assert!(receive(&n, &mut s, 1, at(3)).is_none());
        assert!(receive(&n, &mut s, 2, at(4)).is_some(), "a later b and then c make it fire");
    }
}
