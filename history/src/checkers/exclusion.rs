//! Real-time exclusion: at no instant do more than `limit` clients *believe* they hold a key.
//!
//! A holder believes it holds a lease from the moment its acquire returns until the first of:
//! it invokes release (or learns of the loss), or its lease ends by its own clock
//! (`acquired_at + ttl`, pushed out by successful refreshes). Each belief is shortened by the
//! tolerance, so a hand-off exactly at a lease boundary is not a violation. This is the
//! property a lock user actually relies on, checked without the spec.
//!
//! A holder that crashed ([`Call::SessionEnded`] with `crashed`) believes nothing from then
//! on. A holder whose session was cut under it still believes; where leases are bound to
//! sessions the backend may rightly have freed its lease, so an overlap it takes part in is
//! a violation the backend's claims *predict* (fencing is the remedy), reported as such.

use std::collections::{BTreeMap, HashMap};

use lockcheck_model::spec::{Capabilities, LeaseId, Micros, Property};

use super::linearizability::NEVER;
use super::{Counterexample, Verdict};
use crate::history::{Call, History, Operation, Outcome};

/// One lease's believed-held interval.
#[derive(Clone, Debug)]
struct Belief {
    lease: LeaseId,
    limit: u32,
    from: Micros,
    until: Micros,
    /// When the holder's session was cut under it, if it was.
    cut: Option<Micros>,
}

fn beliefs(ops: &[&Operation], tolerance: Micros, no_ttl: bool) -> Vec<Belief> {
    let lease_ttl = |op: &Operation| if no_ttl { NEVER } else { op.lease_ttl().unwrap_or_default() };
    let mut by_lease: HashMap<LeaseId, Vec<&Operation>> = HashMap::new();
    for op in ops {
        by_lease.entry(op.call.lease()).or_default().push(op);
    }
    let mut beliefs = Vec::new();
    for op in ops {
        let (Call::TryAcquire { lease, limit, .. } | Call::Acquire { lease, limit, .. }) = &op.call else {
            continue;
        };
        let (Outcome::Granted { acquired_at, .. }, Some(from)) = (&op.outcome, op.returned) else { continue };
        let mut until = acquired_at.saturating_add(lease_ttl(op));
        let mut cut = None;
        for later in by_lease.get(lease).into_iter().flatten().filter(|later| !later.call.is_acquire()) {
            if later.invoked >= until {
                break;
            }
            match (&later.call, &later.outcome) {
                (Call::Refresh { .. }, Outcome::Refreshed { held: true, .. }) => {
                    until = later.invoked.saturating_add(lease_ttl(later));
                }
                (Call::RemainingTtl { .. }, Outcome::Remaining { left: Some(_) })
                | (Call::Refresh { .. }, Outcome::Indeterminate { .. } | Outcome::Pending) => {}
                (Call::SessionEnded { crashed: false, .. }, _) => cut = cut.or(Some(later.invoked)),
                _ => {
                    // Release, or the holder learnt the lease was lost.
                    until = later.invoked;
                    break;
                }
            }
        }
        let until = until.saturating_sub(tolerance);
        if until > from {
            beliefs.push(Belief { lease: *lease, limit: *limit, from, until, cut });
        }
    }
    beliefs
}

/// Checks every key of `history`: never more than `limit` overlapping beliefs.
pub fn check(history: &History, tolerance: Micros) -> Verdict {
    check_claims(history, tolerance, &Capabilities::none())
}

/// [`check`] for a backend with these claims: where leases are bound to sessions
/// (`session_bound`), an overlap with a holder whose session was cut under it is a predicted
/// violation; where leases have no TTL (`no_ttl`), a holder believes it holds until it
/// releases.
pub fn check_claims(history: &History, tolerance: Micros, capabilities: &Capabilities) -> Verdict {
    let session_bound = capabilities.session_bound;
    for (key, ops) in history.by_key() {
        let beliefs = beliefs(&ops, tolerance, capabilities.no_ttl);
        // Sweep: ends sort before starts at the same instant (a hand-off is not an overlap).
        let mut events: Vec<(Micros, u8, usize)> = Vec::new();
        for (i, belief) in beliefs.iter().enumerate() {
            events.push((belief.from, 1, i));
            events.push((belief.until, 0, i));
        }
        events.sort_unstable();
        let mut holding: BTreeMap<usize, ()> = BTreeMap::new();
        for (at, kind, i) in events {
            if kind == 0 {
                holding.remove(&i);
                continue;
            }
            holding.insert(i, ());
            let limit = beliefs[i].limit as usize;
            if holding.len() > limit {
                let overlapping: Vec<LeaseId> = holding.keys().map(|&j| beliefs[j].lease).collect();
                let shown: Vec<Operation> = ops
                    .iter()
                    .filter(|op| overlapping.contains(&op.call.lease()) && op.invoked <= at)
                    .map(|op| (*op).clone())
                    .collect();
                let names: Vec<String> = overlapping.iter().map(ToString::to_string).collect();
                // The grant that made one holder too many.
                let blamed = shown.iter().position(|op| op.call.is_acquire() && op.call.lease() == beliefs[i].lease);
                let cut =
                    holding.keys().find_map(|&j| beliefs[j].cut.filter(|&cut| cut <= at).map(|_| beliefs[j].lease));
                let predicted = match cut {
                    Some(lease) if session_bound => Some(format!(
                        "leases are bound to sessions: {lease}'s session was cut while its holder lived, so the backend freed it while the holder still believed it held the key; only fencing tokens protect a resource from such a holder"
                    )),
                    _ => None,
                };
                let counterexample = Counterexample {
                    predicted,
                    ..Counterexample::new(
                        Property::MutualExclusion,
                        format!(
                            "key {key} (limit {limit}): {} clients believed they held it at {:.1}ms ({})",
                            holding.len(),
                            at as f64 / 1000.0,
                            names.join(", ")
                        ),
                        shown,
                    )
                };
                return Verdict::invalid(match blamed {
                    Some(blamed) => counterexample.blaming(blamed),
                    None => counterexample,
                });
            }
        }
    }
    Verdict::Valid
}
