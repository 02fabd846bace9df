//! Fencing: tokens strictly increase in grant order, and a resource that checks them never
//! accepts a stale writer (Kleppmann, "How to do distributed locking", 2016; Chubby's
//! sequencers, Burrows 2006).
//!
//! Grant order is real-time order: if one grant returned before another was invoked, the
//! first must carry the smaller token. Concurrent grants (semaphores) may come in either
//! order.

use std::collections::BTreeMap;
use std::sync::Mutex;

use lockcheck_model::spec::{Micros, Property};

use super::{Counterexample, Verdict};
use crate::history::{History, Operation, Outcome};

/// P3 on a history: for every two grants of a key where one returned before the other was
/// invoked, the earlier has the smaller fencing token.
pub fn check_order(history: &History) -> Verdict {
    for (key, ops) in history.by_key() {
        let mut grants: Vec<(&Operation, u64, Micros)> = ops
            .iter()
            .filter_map(|op| match (&op.outcome, op.returned) {
                (Outcome::Granted { fence, .. }, Some(returned)) => Some((*op, *fence, returned)),
                _ => None,
            })
            .collect();
        // Sweep by invocation, keeping the largest token among grants that already returned.
        let mut by_return = grants.clone();
        by_return.sort_by_key(|(_, _, returned)| *returned);
        grants.sort_by_key(|(op, _, _)| op.invoked);
        let mut returned = by_return.iter().peekable();
        let mut largest: Option<(&Operation, u64)> = None;
        for (op, fence, _) in &grants {
            while let Some((earlier, earlier_fence, at)) = returned.peek() {
                if *at >= op.invoked {
                    break;
                }
                if largest.is_none_or(|(_, f)| *earlier_fence > f) {
                    largest = Some((earlier, *earlier_fence));
                }
                returned.next();
            }
            if let Some((earlier, earlier_fence)) = largest
                && *fence <= earlier_fence
            {
                return Verdict::invalid(Counterexample::new(
                    Property::Fencing,
                    format!(
                        "key {key}: a grant with fencing token {fence} came after a grant with token {earlier_fence}"
                    ),
                    vec![earlier.clone(), (*op).clone()],
                )
                .blaming(1));
            }
        }
    }
    Verdict::Valid
}

/// One write a [`FencedResource`] saw.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Write {
    /// The writer (client number).
    pub writer: u32,
    /// The key the writer held.
    pub key: String,
    /// The token it presented.
    pub fence: u64,
    /// Whether the resource accepted it.
    pub accepted: bool,
}

/// A storage service that protects itself with fencing tokens: it remembers the largest token
/// it accepted per key and refuses smaller ones. The suite's clients write to it while they
/// believe they hold a lock; a stale writer that gets through is a P10 violation.
#[derive(Default)]
pub struct FencedResource {
    state: Mutex<(BTreeMap<String, u64>, Vec<Write>)>,
}

impl FencedResource {
    /// An empty resource.
    pub fn new() -> Self {
        Self::default()
    }

    /// A write by `writer` holding `key` with token `fence`; `true` if accepted.
    pub fn write(&self, writer: u32, key: &str, fence: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (largest, writes) = &mut *state;
        let accepted = largest.get(key).is_none_or(|&seen| fence >= seen);
        if accepted {
            largest.insert(key.to_owned(), fence);
        }
        writes.push(Write { writer, key: key.to_owned(), fence, accepted });
        accepted
    }

    /// Every write so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).1.clone()
    }
}
