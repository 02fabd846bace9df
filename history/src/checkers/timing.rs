//! Checks of *when* things happened: bounded waits (P6) and FIFO order (P8).

use lockcheck_model::spec::{Micros, Property};

use super::{Counterexample, Verdict};
use crate::history::{Call, History, Operation, Outcome};

/// P6: every acquire that returned a grant or a time-out did so within its wait bound plus
/// `slack`, and no time-out came more than `slack` before the bound.
pub fn check_bounded_waits(history: &History, slack: Micros) -> Verdict {
    for op in &history.operations {
        let (Call::Acquire { wait, .. }, Some(returned)) = (&op.call, op.returned) else { continue };
        let took = returned.saturating_sub(op.invoked);
        let timed_out = matches!(op.outcome, Outcome::TimedOut | Outcome::TimedOutLocally);
        let late = (timed_out || matches!(op.outcome, Outcome::Granted { .. })) && took > wait + slack;
        let early = timed_out && took + slack < *wait;
        if late || early {
            let how = if late { "past" } else { "before" };
            return Verdict::invalid(
                Counterexample::new(
                    Property::BoundedWait,
                    format!(
                        "an acquire with a {:.1}ms wait bound returned after {:.1}ms, {how} its bound",
                        *wait as f64 / 1000.0,
                        took as f64 / 1000.0
                    ),
                    vec![op.clone()],
                )
                .blaming(0),
            );
        }
    }
    Verdict::Valid
}

/// P8: of two waiting acquires on a key, the one invoked more than `arrival_gap` earlier is
/// granted first (smaller fencing token), when both are granted.
pub fn check_fifo(history: &History, arrival_gap: Micros) -> Verdict {
    for (key, ops) in history.by_key() {
        let mut waiters: Vec<(&Operation, u64)> = ops
            .iter()
            .filter_map(|op| match (&op.call, &op.outcome) {
                (Call::Acquire { wait, .. }, Outcome::Granted { fence, .. }) if *wait > 0 => Some((*op, *fence)),
                _ => None,
            })
            .collect();
        waiters.sort_by_key(|(op, _)| op.invoked);
        // Sweep: the largest token among waiters that surely arrived before this one.
        let mut arrived = 0;
        let mut largest: Option<(&Operation, u64)> = None;
        for (op, fence) in &waiters {
            while arrived < waiters.len() && waiters[arrived].0.invoked + arrival_gap < op.invoked {
                let (earlier, earlier_fence) = waiters[arrived];
                if largest.is_none_or(|(_, f)| earlier_fence > f) {
                    largest = Some((earlier, earlier_fence));
                }
                arrived += 1;
            }
            if let Some((earlier, earlier_fence)) = largest
                && *fence < earlier_fence
            {
                return Verdict::invalid(Counterexample::new(
                    Property::Fifo,
                    format!(
                        "key {key}: client {} arrived later but was granted before client {} (fence {fence} < {earlier_fence})",
                        op.client, earlier.client
                    ),
                    vec![earlier.clone(), (*op).clone()],
                )
                .blaming(1));
            }
        }
    }
    Verdict::Valid
}
