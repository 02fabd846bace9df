//! Linearizability against a sequential spec: a memoizing Wing–Gong–Lowe search.
//!
//! Wing & Gong (1993) search for a linearization by repeatedly picking an operation that may
//! go next (its call precedes every pending return) and stepping the spec. Lowe (2017) added
//! the memo that makes it practical: a configuration is the set of linearized operations plus
//! the spec state, and a configuration seen before need not be explored again (Porcupine and
//! Knossos do the same). stateright's own `LinearizabilityTester` has no memo and explodes
//! past a few dozen operations on non-linearizable histories; lockcheck keeps it as the
//! differential oracle in tests.
//!
//! The search is generic over any stateright [`SequentialSpec`] whose state is `Clone + Hash +
//! PartialEq` ([`search`]), so it also checks register histories. [`check_history`] is the lock
//! front end: it partitions a [`History`] per key, checks each key against
//! [`LockSpec`], and shrinks a violation to a short counterexample.
//!
//! Operations with an unknown outcome (indeterminate, or still running when the history was
//! taken) may take effect at any point after their invocation, or never. A cancelled acquire
//! may have been granted, but must have been given back by its clean-up ([`Reference`]).
//!
//! # Order, and what it does not fix
//!
//! The search tries operations with a known outcome before cancelled acquires and other
//! open-ended ones ([`search_within`], [`Reference::turn`]). That order decides a correct
//! backend's history in a few thousand steps even when a long clean-up bound (the Python
//! dflockd suite's 13 s) makes twenty cancelled acquires concurrent with everything. It does
//! not shorten the proof that *no* order exists: a history with such a window that is not
//! linearizable may still exhaust the budget, and is then reported Unknown, never Valid.
//!
//! # Shrinking
//!
//! Removing operations from a history can *create* violations (drop a release and the next
//! grant looks like a double grant; drop a holder and a refusal looks unjustified), so the
//! shrinker only removes what cannot: it cuts the history at an invocation (operations still
//! running at the cut become unknown, which only adds freedom); it removes refused acquires
//! (one constraint fewer); and once no refusal is left, it removes whole leases — an acquire
//! with every release, refresh and remaining-TTL call on its lease (fewer holders only add
//! room, and no other call depends on a lease but its own). What is left is still invalid by
//! itself.

use std::collections::{BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use lockcheck_model::spec::{LeaseId, LockOp, LockRet, LockSpec, Micros, Property, Window};
use stateright::semantics::SequentialSpec;

use lockcheck_impls::Capabilities;

use super::{Counterexample, Verdict};
use crate::backend::Timing;
use crate::history::{Call, History, Operation, Outcome};

/// One operation for [`search`]: what was invoked, what it returned (`None`: unknown), and
/// when (`returned == None`: never returned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<Op, Ret> {
    /// The operation.
    pub op: Op,
    /// Its return value; `None` if unknown.
    pub ret: Option<Ret>,
    /// Invocation instant.
    pub invoked: u64,
    /// Return instant; `None` if it never returned.
    pub returned: Option<u64>,
}

/// The answer of [`search`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Search {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
    /// The deadline passed before the search finished.
    OutOfBudget,
}

/// A configuration of the search: which operations are linearized, and the spec state.
struct Config<S> {
    linearized: Box<[u64]>,
    state: S,
}

impl<S: Hash> Hash for Config<S> {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        self.linearized.hash(hasher);
        self.state.hash(hasher);
    }
}

impl<S: PartialEq> PartialEq for Config<S> {
    fn eq(&self, other: &Self) -> bool {
        self.linearized == other.linearized && self.state == other.state
    }
}

// Spec states are compared structurally; equality is reflexive for every spec lockcheck uses
// (stateright's `Register` only derives `PartialEq`).
impl<S: PartialEq> Eq for Config<S> {}

const NIL: usize = usize::MAX;

/// Whether `entries` can be linearized against `init`. Memoizing Wing–Gong–Lowe search;
/// gives up with [`Search::OutOfBudget`] at `deadline`. Operations whose outcome is unknown
/// and that never returned are tried last ([`Turn::Late`]).
pub fn search<S>(init: &S, entries: &[Entry<S::Op, S::Ret>], deadline: Instant) -> Search
where
    S: SequentialSpec + Clone + Hash + PartialEq,
{
    let turn = |entry: &Entry<S::Op, S::Ret>, _: &S| {
        if entry.ret.is_none() && entry.returned.is_none() { Turn::Late } else { Turn::Early }
    };
    search_within(init, entries, Budget { deadline, steps: u64::MAX }, turn).0
}

/// How long [`search_within`] may run: until `deadline`, and for at most `steps` steps (a
/// step tries one operation in one configuration, or backtracks once). A step bound gives the
/// same answer on a loaded machine as on an idle one.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Wall-clock limit.
    pub deadline: Instant,
    /// Step limit.
    pub steps: u64,
}

/// When [`search_within`] tries an operation in a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Among the first.
    Early,
    /// Only once no [`Turn::Early`] operation leads on.
    Late,
}

/// [`search`] within `budget`, trying each operation in the [`Turn`] that `turn` gives it in
/// the current state; also returns the steps it took.
///
/// # Order of exploration
///
/// In each configuration the search tries the early operations first, and only when none
/// of them leads on, the late ones. Both kinds are tried before the search backtracks, so
/// the answer does not depend on the order; the time to reach it does. An operation of
/// unknown outcome that never returned (an indeterminate acquire, a cancelled one that may
/// have been granted) may always be left out, and histories from correct backends are
/// explained by leaving most of them out: tried first, every one of them that could take
/// effect multiplies the configurations the search wades through before it reaches the
/// explanation.
pub fn search_within<S>(
    init: &S,
    entries: &[Entry<S::Op, S::Ret>],
    budget: Budget,
    turn: impl Fn(&Entry<S::Op, S::Ret>, &S) -> Turn,
) -> (Search, u64)
where
    S: SequentialSpec + Clone + Hash + PartialEq,
{
    let n = entries.len();
    if n == 0 {
        return (Search::Linearizable, 0);
    }
    // Node 0 is the head; node 1 + 2i is the call of entry i, node 2 + 2i its return.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, entry) in entries.iter().enumerate() {
        events.push((entry.invoked, 0, 1 + 2 * i));
        // Calls sort before returns at the same instant: equal instants count as concurrent.
        events.push((entry.returned.unwrap_or(u64::MAX), 1, 2 + 2 * i));
    }
    events.sort_unstable();
    let mut prev = vec![NIL; 2 * n + 1];
    let mut next = vec![NIL; 2 * n + 1];
    let mut last = 0;
    for &(_, _, node) in &events {
        next[last] = node;
        prev[node] = last;
        last = node;
    }
    let is_call = |node: usize| node % 2 == 1;
    let entry_of = |node: usize| (node - 1) / 2;
    let return_of = |call: usize| call + 1;

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words].into_boxed_slice();
    let mut seen: HashSet<Config<S>> = HashSet::new();
    // What to restore on backtracking: the call lifted, the state before it, and the pass it
    // was tried in.
    let mut stack: Vec<(usize, S, bool)> = Vec::new();
    let mut state = init.clone();
    let mut node = next[0];
    // false: the first pass, trying the early operations; true: the second, the late ones.
    let mut second_pass = false;
    let mut steps: u64 = 0;
    loop {
        steps += 1;
        if steps > budget.steps || (steps.is_multiple_of(1024) && Instant::now() >= budget.deadline) {
            return (Search::OutOfBudget, steps);
        }
        if node == NIL {
            return (Search::Linearizable, steps);
        }
        if is_call(node) {
            let i = entry_of(node);
            let entry = &entries[i];
            if (turn(entry, &state) == Turn::Late) != second_pass {
                node = next[node];
                continue;
            }
            let mut stepped = state.clone();
            let ok = match &entry.ret {
                Some(ret) => stepped.is_valid_step(&entry.op, ret),
                // An operation of unknown outcome that may never take effect, and whose step
                // changes nothing, is left out rather than linearized: both explain the same
                // histories, and the search would otherwise count every such no-op as a
                // different configuration.
                None => {
                    stepped.invoke(&entry.op);
                    entry.returned.is_some() || stepped != state
                }
            };
            if ok {
                linearized[i / 64] |= 1 << (i % 64);
                let config = Config { linearized: linearized.clone(), state: stepped };
                if !seen.contains(&config) {
                    let Config { state: stepped, .. } = config;
                    seen.insert(Config { linearized: linearized.clone(), state: stepped.clone() });
                    stack.push((node, std::mem::replace(&mut state, stepped), second_pass));
                    // Lift the call and its return out of the list.
                    for lifted in [node, return_of(node)] {
                        next[prev[lifted]] = next[lifted];
                        if next[lifted] != NIL {
                            prev[next[lifted]] = prev[lifted];
                        }
                    }
                    node = next[0];
                    second_pass = false;
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            node = next[node];
        } else {
            // A return whose call is not linearized. If it never returned, every operation
            // that did return is linearized: done (the rest may simply not take effect).
            if entries[entry_of(node)].returned.is_none() {
                return (Search::Linearizable, steps);
            }
            // The candidates of the second pass lie before this return too.
            if !second_pass {
                second_pass = true;
                node = next[0];
                continue;
            }
            let Some((call, earlier, pass)) = stack.pop() else { return (Search::NotLinearizable, steps) };
            state = earlier;
            second_pass = pass;
            let i = entry_of(call);
            linearized[i / 64] &= !(1 << (i % 64));
            for unlifted in [return_of(call), call] {
                next[prev[unlifted]] = unlifted;
                if next[unlifted] != NIL {
                    prev[next[unlifted]] = unlifted;
                }
            }
            node = next[call];
        }
    }
}

/// What the operations on one key are checked against: the spec of a free key, and how long
/// a cancelled acquire's clean-up may take.
///
/// A cancelled acquire is not simply "nothing happened": over a network its request may be
/// in flight when the caller gives up, be granted, and be given back by the clean-up the
/// cancel-safety contract promises (a background release, a closed connection). So it
/// becomes two spec operations: an acquire with an open outcome that may take effect at any
/// moment after its invocation, or never, and a [`LockOp::Withdraw`] that must take effect
/// within `cancel_cleanup` of the cancellation and after which the lease is neither held
/// nor grantable — so a grant left behind after that is a violation.
#[derive(Clone, Debug)]
pub struct Reference {
    /// The spec of a free key (its tolerance, whether fencing is claimed).
    pub initial: LockSpec,
    /// How long after the cancellation a cancelled acquire's grant may still hold, in µs.
    pub cancel_cleanup: Micros,
    /// Whether leases are bound to sessions: only then does a session's end
    /// ([`Call::SessionEnded`]) let the backend free a lease before its expiry.
    pub session_bound: bool,
}

impl Reference {
    /// A free key with `tolerance` µs near lease boundaries, fencing claimed, and clean-up
    /// of cancelled acquires within the same tolerance.
    pub fn with_tolerance(tolerance: Micros) -> Self {
        Reference { initial: LockSpec::with_tolerance(tolerance), cancel_cleanup: tolerance, session_bound: false }
    }

    /// What a backend with these time scales and claims is checked against.
    pub fn for_backend(scales: &Timing, capabilities: &Capabilities) -> Self {
        Reference {
            initial: LockSpec::with_tolerance(scales.tolerance.as_micros() as u64)
                .with_early_tolerance(scales.early_tolerance().as_micros() as u64)
                .with_fencing_claimed(capabilities.fencing),
            cancel_cleanup: scales.cancel_cleanup_bound().as_micros() as u64,
            session_bound: capabilities.session_bound,
        }
    }

    /// The spec's entries of some operations of one key.
    fn entries_of(&self, ops: &[Operation]) -> Vec<Entry<LockOp, LockRet>> {
        let mut entries = Vec::with_capacity(ops.len());
        for op in ops {
            match (&op.call, &op.outcome, op.returned) {
                // A session's end matters only where leases are bound to sessions.
                (Call::SessionEnded { .. }, _, _) if !self.session_bound => {}
                // Given up locally with the request still at the backend: a cancellation.
                (
                    Call::TryAcquire { lease, ttl, limit } | Call::Acquire { lease, ttl, limit, .. },
                    Outcome::Cancelled | Outcome::TimedOutLocally,
                    Some(cancelled),
                ) => {
                    // The withdrawal must take effect by the time the clean-up is due; the
                    // acquire may take effect any time before it, or never (after it, the
                    // spec refuses it the grant).
                    let cleaned_up = cancelled.saturating_add(self.cancel_cleanup);
                    let at = Window::new(op.invoked, cleaned_up);
                    let acquire = LockOp::CancelledAcquire { lease: *lease, ttl: *ttl, limit: *limit, at };
                    entries.push(Entry { op: acquire, ret: None, invoked: op.invoked, returned: None });
                    let withdraw = LockOp::Withdraw { lease: *lease, at: Window::new(cancelled, cleaned_up) };
                    entries.push(Entry {
                        op: withdraw,
                        ret: Some(LockRet::Withdrawn),
                        invoked: cancelled,
                        returned: Some(cleaned_up),
                    });
                }
                _ => {
                    let Some((spec_op, ret)) = op.to_spec() else { continue };
                    let returned = if ret.is_some() { op.returned } else { None };
                    entries.push(Entry { op: spec_op, ret, invoked: op.invoked, returned });
                }
            }
        }
        entries
    }

    fn search(&self, ops: &[Operation], deadline: Instant) -> Search {
        self.search_within(ops, Budget { deadline, steps: u64::MAX }).0
    }

    /// The search over `ops` within `budget`, trying operations in the order of
    /// [`Reference::turn`]; and the steps it took.
    pub fn search_within(&self, ops: &[Operation], budget: Budget) -> (Search, u64) {
        search_within(&self.initial, &self.entries_of(ops), budget, Reference::turn)
    }

    /// When the search tries an operation on a key (see [`search_within`]): cancelled
    /// acquires and other operations of unknown outcome that never returned go late.
    ///
    /// A backend's clean-up bound can make a cancelled acquire concurrent with every
    /// operation for seconds (the Python dflockd suite states 13 s, longer than a workload
    /// case), and a correct backend's history is explained with almost none of them granted.
    /// Tried first, as they come in invocation order, each one the search grants holds the key
    /// until a withdrawal frees it again, and a key with twenty of them pending took 30 s to
    /// decide. Their withdrawals stay early: a withdrawal taken at once settles its acquire
    /// (not granted), and so keeps the number of pending ones small.
    pub fn turn(entry: &Entry<LockOp, LockRet>, _: &LockSpec) -> Turn {
        match entry.op {
            LockOp::CancelledAcquire { .. } => Turn::Late,
            _ if entry.ret.is_none() && entry.returned.is_none() => Turn::Late,
            _ => Turn::Early,
        }
    }
}

/// Checks every key of `history` against [`LockSpec`] with `tolerance` µs near lease
/// boundaries; `budget` bounds the whole check including shrinking.
pub fn check_history(history: &History, tolerance: Micros, budget: Duration) -> Verdict {
    check_history_against(history, &Reference::with_tolerance(tolerance), budget)
}

/// [`check_history`] against `reference` (the spec of a free key, how long a cancelled
/// acquire's clean-up may take).
pub fn check_history_against(history: &History, reference: &Reference, budget: Duration) -> Verdict {
    let deadline = Instant::now() + budget;
    let mut verdict = Verdict::Valid;
    for (key, ops) in history.by_key() {
        let ops: Vec<Operation> = ops.into_iter().cloned().collect();
        match reference.search(&ops, deadline) {
            Search::Linearizable => {}
            Search::OutOfBudget => {
                verdict = verdict.and(Verdict::unknown(format!(
                    "the linearizability search for key {key} ({} operations) ran out of its {budget:?} budget",
                    ops.len()
                )))
            }
            Search::NotLinearizable => {
                // Shrinking gets its own budget: a counterexample is worth waiting a little for.
                let minimal = shrink(ops, reference, Instant::now() + budget.max(Duration::from_secs(1)));
                let (property, summary) = explain(&minimal, reference);
                return Verdict::invalid(Counterexample::new(property, summary, minimal));
            }
        }
    }
    verdict
}

/// Shrinks a non-linearizable history of one key, keeping it non-linearizable (see the
/// module docs for why these removals are sound).
pub fn shrink(mut ops: Vec<Operation>, reference: &Reference, deadline: Instant) -> Vec<Operation> {
    let invalid = |ops: &[Operation]| reference.search(ops, deadline) == Search::NotLinearizable;
    // 1. The shortest invalid prefix by invocation order.
    ops.sort_by_key(|op| op.invoked);
    let (mut low, mut high) = (1, ops.len());
    while low < high {
        let mid = (low + high) / 2;
        if invalid(&prefix(&ops, mid)) {
            high = mid;
        } else {
            low = mid + 1;
        }
        if Instant::now() >= deadline {
            return ops;
        }
    }
    let mut ops = prefix(&ops, high);
    // 2. Refused acquires only ever constrain: drop them all if the rest stays invalid.
    let granted_only: Vec<Operation> = ops.iter().filter(|op| !refused(op)).cloned().collect();
    if granted_only.len() < ops.len() && invalid(&granted_only) {
        ops = granted_only;
    }
    // 3. Remove units in halving chunks while the rest stays invalid. A unit is a whole lease
    //    (its acquire and every call on it) when no refusal is left that its holding might
    //    have justified; otherwise only refused acquires are units.
    let whole_leases = !ops.iter().any(refused);
    let unit = |op: &Operation| -> Option<LeaseId> { (whole_leases || refused(op)).then(|| op.call.lease()) };
    let mut units: Vec<LeaseId> = ops.iter().filter_map(unit).collect::<BTreeSet<_>>().into_iter().collect();
    let mut chunk = units.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < units.len() {
            if Instant::now() >= deadline {
                return ops;
            }
            let removed: BTreeSet<LeaseId> = units[start..(start + chunk).min(units.len())].iter().copied().collect();
            let candidate: Vec<Operation> =
                ops.iter().filter(|op| unit(op).is_none_or(|lease| !removed.contains(&lease))).cloned().collect();
            if !candidate.is_empty() && invalid(&candidate) {
                ops = candidate;
                units.retain(|lease| !removed.contains(lease));
            } else {
                start += chunk;
            }
        }
        if chunk == 1 {
            return ops;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// An acquire that returned "not granted" or timed out.
fn refused(op: &Operation) -> bool {
    op.call.is_acquire() && matches!(op.outcome, Outcome::NotGranted | Outcome::TimedOut)
}

/// The first `n` operations; those still running at the `n`-th invocation lose their
/// outcome (it did not matter yet).
fn prefix(ops: &[Operation], n: usize) -> Vec<Operation> {
    let cut = ops[n - 1].invoked;
    ops[..n]
        .iter()
        .map(|op| {
            let mut op = op.clone();
            if op.returned.is_none_or(|returned| returned > cut) && !matches!(op.outcome, Outcome::Failed { .. }) {
                op.outcome = Outcome::Indeterminate {
                    error: "outcome left open: it returned after the last invocation shown".into(),
                };
            }
            op
        })
        .collect()
}

/// Which property a minimal non-linearizable history breaks, and a sentence saying how:
/// replayed in invocation order (which respects real time), the first step the spec refuses.
fn explain(ops: &[Operation], reference: &Reference) -> (Property, String) {
    let mut spec = reference.initial.clone();
    for (number, op) in ops.iter().enumerate() {
        for entry in reference.entries_of(std::slice::from_ref(op)) {
            if let Some(ret) = &entry.ret
                && let Some(property) = spec.violated_by(&entry.op, ret)
            {
                let summary = format!(
                    "no order of these {} operations explains them; replayed in invocation order, operation {} ({}) is impossible",
                    ops.len(),
                    number + 1,
                    property.name()
                );
                return (property, summary);
            }
            spec.step(&entry.op, entry.ret.as_ref());
        }
    }
    (Property::MutualExclusion, format!("no order of these {} operations explains them", ops.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stateright::semantics::register::{Register, RegisterOp, RegisterRet};

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn a_stale_register_read_is_not_linearizable() {
        let entries = vec![
            Entry { op: RegisterOp::Write(1), ret: Some(RegisterRet::WriteOk), invoked: 0, returned: Some(1) },
            Entry { op: RegisterOp::Read, ret: Some(RegisterRet::ReadOk(0)), invoked: 2, returned: Some(3) },
        ];
        assert_eq!(search(&Register(0), &entries, far()), Search::NotLinearizable);
        let concurrent = vec![
            Entry { op: RegisterOp::Write(1), ret: Some(RegisterRet::WriteOk), invoked: 0, returned: Some(5) },
            Entry { op: RegisterOp::Read, ret: Some(RegisterRet::ReadOk(0)), invoked: 2, returned: Some(3) },
        ];
        assert_eq!(search(&Register(0), &concurrent, far()), Search::Linearizable);
    }

    #[test]
    fn an_unreturned_write_may_or_may_not_have_happened() {
        let entries = |read| {
            vec![
                Entry { op: RegisterOp::Write(1), ret: None, invoked: 0, returned: None },
                Entry { op: RegisterOp::Read, ret: Some(RegisterRet::ReadOk(read)), invoked: 2, returned: Some(3) },
            ]
        };
        assert_eq!(search(&Register(0), &entries(0), far()), Search::Linearizable);
        assert_eq!(search(&Register(0), &entries(1), far()), Search::Linearizable);
        assert_eq!(search(&Register(0), &entries(2), far()), Search::NotLinearizable);
    }

    fn op(client: u32, call: Call, invoked: Micros, returned: Micros, outcome: Outcome) -> Operation {
        Operation { client, key: "k".into(), call, invoked, returned: Some(returned), outcome }
    }

    /// Client 0's acquire is cancelled at 10 ms; client 1 tries at `tried` and is refused.
    fn refused_after_a_cancellation(tried: Micros) -> History {
        let acquire = Call::Acquire { lease: LeaseId(1), ttl: 1_000_000, limit: 1, wait: 50_000 };
        let try_acquire = Call::TryAcquire { lease: LeaseId(2), ttl: 1_000_000, limit: 1 };
        History {
            operations: vec![
                op(0, acquire, 0, 10_000, Outcome::Cancelled),
                op(1, try_acquire, tried, tried + 500, Outcome::NotGranted),
            ],
        }
    }

    #[test]
    fn a_cancelled_acquire_may_hold_until_its_clean_up_is_due_and_not_after() {
        let reference = Reference { initial: LockSpec::with_tolerance(0), cancel_cleanup: 5_000, session_bound: false };
        let budget = Duration::from_secs(5);
        // Refused while the clean-up may still be under way: the grant raced the cancellation.
        let during = check_history_against(&refused_after_a_cancellation(12_000), &reference, budget);
        assert!(during.is_valid(), "{during:?}");
        // Refused after the clean-up was due: the cancelled acquire left a grant behind.
        let after = check_history_against(&refused_after_a_cancellation(20_000), &reference, budget);
        assert!(after.counterexample().is_some(), "a leaked grant must be reported: {after:?}");
    }
}
