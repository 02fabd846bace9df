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
//! PartialEq` ([`search`]), so it also checks register histories; [`check`] also says where a
//! history stops being linearizable ([`Violation`]), and [`check_partitioned`] checks
//! independent objects apart. An [`Entry`] is built [`completed`](Entry::completed) or
//! [`unknown`](Entry::unknown): an operation of unknown outcome has no return instant.
//! [`check_history`] is the lock front end: it partitions a [`History`] per key, checks each
//! key against [`LockSpec`], and shrinks a violation to a short counterexample that blames
//! one operation and names the property it breaks.
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
//! # Which operation is to blame
//!
//! A history with no linearization has no single wrong operation by itself; it is read by
//! return events, as it unfolded. The history *as known at `t`* holds every operation invoked
//! by `t`, with the outcomes of those that returned by `t`. The first return at which it stops
//! being linearizable belongs to the operation that cannot follow: everything before it is
//! explained ([`Violation`]). Replaying in invocation order instead (as this checker once
//! explained) blames correct operations: a refusal that a late-returning release had to
//! follow.
//!
//! # Shrinking
//!
//! Removing operations from a history can *create* violations (drop a release and the next
//! grant looks like a double grant; drop a holder and a refusal looks unjustified), so the
//! shrinker ([`shrink`]) keeps a removal only if the same operation still cannot follow, for
//! the same property. Then the spec says why ([`LockSpec::explain_with`]) and the
//! [`Reference::diagnose`] step names the cause the history can tell apart.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use lockcheck_model::spec::{
    Capabilities, Ended, Ending, LeaseId, LockOp, LockRet, LockSpec, Micros, Property, Story, Window,
};
use stateright::semantics::SequentialSpec;

use super::{Counterexample, Verdict};
use crate::Timing;
use crate::history::{Call, History, Operation, Outcome};

/// One operation for [`search`]: what was invoked and when, and, if its outcome is known,
/// what it returned and when.
///
/// An operation whose outcome is unknown (a time-out, a dropped connection, still running
/// when the history was taken) may take effect at any time after its invocation, or never.
/// It has no return instant: [`Entry::unknown`] takes none. A Jepsen history records an
/// `:info` completion for such an operation at some instant, but that instant bounds
/// nothing; passed on as a return it would make the checker demand the operation took effect
/// before it, and give wrong verdicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<Op, Ret> {
    op: Op,
    invoked: u64,
    /// What it returned and when; `None` if unknown.
    outcome: Option<(Ret, u64)>,
}

impl<Op, Ret> Entry<Op, Ret> {
    /// An operation invoked at `invoked` that returned `ret` at `returned` (a return before the
    /// invocation counts as at the invocation).
    pub fn completed(op: Op, ret: Ret, invoked: u64, returned: u64) -> Self {
        Entry { op, invoked, outcome: Some((ret, returned.max(invoked))) }
    }

    /// An operation invoked at `invoked` whose outcome is unknown: it may take effect at any
    /// time after its invocation, or never.
    pub fn unknown(op: Op, invoked: u64) -> Self {
        Entry { op, invoked, outcome: None }
    }

    /// The operation.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// Its invocation instant.
    pub fn invoked(&self) -> u64 {
        self.invoked
    }

    /// Its return value; `None` if unknown.
    pub fn ret(&self) -> Option<&Ret> {
        self.outcome.as_ref().map(|(ret, _)| ret)
    }

    /// Its return instant; `None` if its outcome is unknown.
    pub fn returned(&self) -> Option<u64> {
        self.outcome.as_ref().map(|(_, returned)| *returned)
    }

    /// Whether its outcome is unknown.
    pub fn is_unknown(&self) -> bool {
        self.outcome.is_none()
    }

    /// The same operation with its outcome unknown, as the history stood before it returned.
    pub fn forgetting_outcome(self) -> Self {
        Entry { outcome: None, ..self }
    }
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
    search_within(init, entries, Budget { deadline, steps: u64::MAX }, unknown_last).0
}

/// The order of [`search`]: operations of unknown outcome late.
fn unknown_last<S: SequentialSpec>(entry: &Entry<S::Op, S::Ret>, _: &S) -> Turn {
    if entry.is_unknown() { Turn::Late } else { Turn::Early }
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
    search_observed(init, entries, budget, turn, |_, _, _| {})
}

/// [`search_within`], calling `refused(i, state, linearized)` whenever entry `i`'s step is
/// refused in `state`, reached by linearizing the entries whose bits are set in `linearized`:
/// the states an operation that cannot follow was tried in, for explaining it.
fn search_observed<S>(
    init: &S,
    entries: &[Entry<S::Op, S::Ret>],
    budget: Budget,
    turn: impl Fn(&Entry<S::Op, S::Ret>, &S) -> Turn,
    mut refused: impl FnMut(usize, &S, &[u64]),
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
        events.push((entry.returned().unwrap_or(u64::MAX), 1, 2 + 2 * i));
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
            let ok = match &entry.outcome {
                Some((ret, _)) => {
                    let ok = stepped.is_valid_step(&entry.op, ret);
                    if !ok {
                        refused(i, &state, &linearized);
                    }
                    ok
                }
                // An operation of unknown outcome may never take effect; one whose step
                // changes nothing is left out rather than linearized: both explain the same
                // histories, and the search would otherwise count every such no-op as a
                // different configuration.
                None => {
                    stepped.invoke(&entry.op);
                    stepped != state
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
            if entries[entry_of(node)].is_unknown() {
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

/// The verdict of [`check`] on a history of any [`SequentialSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linearizability<Op, Ret> {
    /// A linearization exists.
    Linearizable,
    /// None exists: the longest linearizable prefix and the operation that cannot follow it
    /// (`None` if the budget ran out before they were located — still not linearizable).
    NotLinearizable(Option<Violation<Op, Ret>>),
    /// The budget ran out before the search decided.
    OutOfBudget,
}

impl<Op, Ret> Linearizability<Op, Ret> {
    /// Combines two verdicts: not linearizable > out of budget > linearizable (the first
    /// violation wins).
    pub fn and(self, other: Self) -> Self {
        match (self, other) {
            (violation @ Self::NotLinearizable(_), _) | (_, violation @ Self::NotLinearizable(_)) => violation,
            (Self::OutOfBudget, _) | (_, Self::OutOfBudget) => Self::OutOfBudget,
            _ => Self::Linearizable,
        }
    }

    /// The violation of a [`Linearizability::NotLinearizable`] verdict, if located.
    pub fn violation(&self) -> Option<&Violation<Op, Ret>> {
        match self {
            Self::NotLinearizable(violation) => violation.as_ref(),
            _ => None,
        }
    }
}

/// Where a history stops being linearizable, read by return events.
///
/// The history *as known at instant `t`* holds every operation invoked by `t`, with the
/// outcomes of those that returned by `t`; the others' outcomes are unknown (they may take
/// effect at any time, or never). Each return adds one outcome; the return at which the
/// history as known stops being linearizable belongs to the operation that cannot follow
/// what came before. Every operation before it is explained; it is where a reader should
/// look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation<Op, Ret> {
    /// The operation that cannot follow: its position in the entries checked.
    pub blamed: usize,
    /// Its return instant.
    pub returned: u64,
    /// The longest linearizable prefix: the history as known at the return before the blamed
    /// operation's (every operation invoked by then, with the outcomes known by then).
    pub prefix: Vec<Entry<Op, Ret>>,
}

/// Whether `entries` are linearizable against `init`, within `budget`; if not, where they
/// stop being so ([`Violation`]). Operations of unknown outcome are tried last, as in
/// [`search`].
///
/// ```
/// use std::time::{Duration, Instant};
/// use lockcheck_history::checkers::linearizability::{Budget, Entry, Linearizability, check};
/// use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
///
/// let entries = vec![
///     Entry::completed(RegisterOp::Write(1), RegisterRet::WriteOk, 0, 1),
///     Entry::unknown(RegisterOp::Write(2), 2),
///     Entry::completed(RegisterOp::Read, RegisterRet::ReadOk(2), 3, 4),
///     Entry::completed(RegisterOp::Read, RegisterRet::ReadOk(0), 5, 6),
/// ];
/// let budget = Budget { deadline: Instant::now() + Duration::from_secs(5), steps: u64::MAX };
/// let Linearizability::NotLinearizable(Some(violation)) = check(&Register(0), &entries, budget) else {
///     panic!("a read of 0 after the register held 2 is not linearizable");
/// };
/// assert_eq!(violation.blamed, 3);
/// assert_eq!(violation.prefix.len(), 3, "the write of 1, the write of 2 (unknown) and the read of 2");
/// ```
pub fn check<S>(init: &S, entries: &[Entry<S::Op, S::Ret>], budget: Budget) -> Linearizability<S::Op, S::Ret>
where
    S: SequentialSpec + Clone + Hash + PartialEq,
    S::Op: Clone,
    S::Ret: Clone,
{
    check_within(init, entries, budget, &unknown_last::<S>).0
}

/// [`check`] with the order `turn` (see [`search_within`]); also the steps it took.
fn check_within<S, T>(
    init: &S,
    entries: &[Entry<S::Op, S::Ret>],
    budget: Budget,
    turn: &T,
) -> (Linearizability<S::Op, S::Ret>, u64)
where
    S: SequentialSpec + Clone + Hash + PartialEq,
    S::Op: Clone,
    S::Ret: Clone,
    T: Fn(&Entry<S::Op, S::Ret>, &S) -> Turn,
{
    let (found, mut steps) = search_within(init, entries, budget, turn);
    match found {
        Search::Linearizable => (Linearizability::Linearizable, steps),
        Search::OutOfBudget => (Linearizability::OutOfBudget, steps),
        Search::NotLinearizable => {
            let violation = locate(init, entries, budget, turn, &mut steps);
            (Linearizability::NotLinearizable(violation), steps)
        }
    }
}

/// The positions of the entries with a known outcome, in the order their returns came: by
/// return instant, then invocation, then position.
fn return_order<Op, Ret>(entries: &[Entry<Op, Ret>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..entries.len()).filter(|&i| !entries[i].is_unknown()).collect();
    order.sort_by_key(|&i| (entries[i].returned(), entries[i].invoked, i));
    order
}

/// The history as known once the first `known` returns of `order` came: every entry invoked
/// by the last of them, with only their outcomes known. Also each kept entry's position in
/// `entries`.
fn known_when<Op: Clone, Ret: Clone>(
    entries: &[Entry<Op, Ret>],
    order: &[usize],
    known: usize,
) -> (Vec<Entry<Op, Ret>>, Vec<usize>) {
    let Some(&last) = known.checked_sub(1).and_then(|at| order.get(at)) else { return (Vec::new(), Vec::new()) };
    let at = entries[last].returned().expect("ordered entries returned");
    let mut is_known = vec![false; entries.len()];
    for &i in &order[..known] {
        is_known[i] = true;
    }
    let mut kept = Vec::new();
    let mut positions = Vec::new();
    for (i, entry) in entries.iter().enumerate().filter(|(_, entry)| entry.invoked <= at) {
        kept.push(if is_known[i] { entry.clone() } else { entry.clone().forgetting_outcome() });
        positions.push(i);
    }
    (kept, positions)
}

/// The [`Violation`] of entries known not to be linearizable: a binary search for the first
/// return at which the history as known stops being linearizable. Adding an outcome only
/// constrains, and an operation invoked later with its outcome unknown may be left out, so
/// the history as known is linearizable up to some return and not from it on. `None` if the
/// budget ran out first; `steps` counts the steps taken, and is counted against the budget.
///
/// # Cost
///
/// Finding a linearization takes the search a few steps per operation; proving there is none
/// may take it millions (every order of the operations of unknown outcome, such as cancelled
/// acquires, is tried). So a probe gets [`probe_steps`]: one that runs out is taken for "not
/// linearizable" and the search goes on below it, and the return it settles on is proven
/// with the whole budget at the end — if that history turns out linearizable after all, the
/// search resumes above it. One proof of "not linearizable" instead of one per halving.
fn locate<S, T>(
    init: &S,
    entries: &[Entry<S::Op, S::Ret>],
    budget: Budget,
    turn: &T,
    steps: &mut u64,
) -> Option<Violation<S::Op, S::Ret>>
where
    S: SequentialSpec + Clone + Hash + PartialEq,
    S::Op: Clone,
    S::Ret: Clone,
    T: Fn(&Entry<S::Op, S::Ret>, &S) -> Turn,
{
    let order = return_order(entries);
    let mut probe = |known: usize, cap: u64| {
        let (history, _) = known_when(entries, &order, known);
        let left = Budget { steps: budget.steps.saturating_sub(*steps).min(cap), ..budget };
        let (found, taken) = search_within(init, &history, left, turn);
        *steps += taken;
        found
    };
    // Linearizable as known after `low - 1` returns (none known); not linearizable after
    // `high` (all of them: those invoked after the last return have unknown outcomes and may
    // be left out). `proven`: whether `high` is proven, not only suspected.
    let (mut low, mut high, mut proven) = (1, order.len(), true);
    // The smallest `high` proven so far.
    let mut proven_high = order.len();
    loop {
        while low < high {
            let mid = (low + high) / 2;
            match probe(mid, probe_steps(entries.len())) {
                Search::Linearizable => low = mid + 1,
                Search::NotLinearizable => (high, proven, proven_high) = (mid, true, mid),
                Search::OutOfBudget => (high, proven) = (mid, false),
            }
        }
        if proven {
            break;
        }
        match probe(high, u64::MAX) {
            Search::NotLinearizable => break,
            Search::Linearizable => (low, high, proven) = (high + 1, proven_high, true),
            Search::OutOfBudget => return None,
        }
    }
    let blamed = *order.get(high.checked_sub(1)?)?;
    let (prefix, _) = known_when(entries, &order, high - 1);
    Some(Violation { blamed, returned: entries[blamed].returned().expect("ordered entries returned"), prefix })
}

/// How many steps a probe of a history of `entries` operations gets before it is taken for
/// "not linearizable" (see [`locate`]): far more than finding a linearization takes.
fn probe_steps(entries: usize) -> u64 {
    20_000 + 200 * entries as u64
}

/// The verdicts of [`check_partitioned`], one per partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partitioned<K, Op, Ret> {
    /// Each partition's verdict, by key. A violation's `blamed` is a position in all the
    /// entries checked; its `prefix` holds the partition's entries only.
    pub partitions: std::collections::BTreeMap<K, Linearizability<Op, Ret>>,
}

impl<K, Op, Ret> Partitioned<K, Op, Ret> {
    /// The verdict that decides the whole history, with its partition: the first partition
    /// with no linearization, else the first that ran out of budget; `None` when every
    /// partition is linearizable (not linearizable > out of budget > linearizable).
    pub fn worst(&self) -> Option<(&K, &Linearizability<Op, Ret>)> {
        let first = |wanted: fn(&Linearizability<Op, Ret>) -> bool| self.partitions.iter().find(|(_, v)| wanted(v));
        first(|verdict| matches!(verdict, Linearizability::NotLinearizable(_)))
            .or_else(|| first(|verdict| matches!(verdict, Linearizability::OutOfBudget)))
    }

    /// Whether every partition is linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.worst().is_none()
    }
}

/// [`check`] per partition: the entries with equal `key(op)` form an independent object,
/// checked from `init` on its own (linearizability is compositional: Herlihy & Wing 1990, so
/// the history is linearizable if and only if every partition is). All partitions share
/// `budget`; a partition that exhausts it is out of budget, and the others are still
/// checked (a violation elsewhere still decides).
pub fn check_partitioned<S, K>(
    init: &S,
    entries: &[Entry<S::Op, S::Ret>],
    key: impl Fn(&S::Op) -> K,
    budget: Budget,
) -> Partitioned<K, S::Op, S::Ret>
where
    S: SequentialSpec + Clone + Hash + PartialEq,
    S::Op: Clone,
    S::Ret: Clone,
    K: Ord,
{
    let mut members: std::collections::BTreeMap<K, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        members.entry(key(&entry.op)).or_default().push(i);
    }
    let mut used = 0;
    let mut partitions = std::collections::BTreeMap::new();
    for (key, positions) in members {
        let part: Vec<Entry<S::Op, S::Ret>> = positions.iter().map(|&i| entries[i].clone()).collect();
        let left = Budget { steps: budget.steps.saturating_sub(used), ..budget };
        let (mut verdict, steps) = check_within(init, &part, left, &unknown_last::<S>);
        used += steps;
        if let Linearizability::NotLinearizable(Some(violation)) = &mut verdict {
            violation.blamed = positions[violation.blamed];
        }
        partitions.insert(key, verdict);
    }
    Partitioned { partitions }
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
    /// Whether leases have no TTL ([`Capabilities::no_ttl`]): every lease is then judged as
    /// one that never expires.
    pub no_ttl: bool,
}

impl Reference {
    /// A free key with `tolerance` µs near lease boundaries, fencing claimed, and clean-up
    /// of cancelled acquires within the same tolerance.
    pub fn with_tolerance(tolerance: Micros) -> Self {
        Reference {
            initial: LockSpec::with_tolerance(tolerance),
            cancel_cleanup: tolerance,
            session_bound: false,
            no_ttl: false,
        }
    }

    /// What a backend with these time scales and claims is checked against.
    pub fn for_backend(scales: &Timing, capabilities: &Capabilities) -> Self {
        Reference {
            initial: LockSpec::with_tolerance(scales.late_tolerance().as_micros() as u64)
                .with_early_tolerance(scales.early_tolerance().as_micros() as u64)
                .with_fencing_claimed(capabilities.fencing),
            cancel_cleanup: scales.cancel_cleanup_bound().as_micros() as u64,
            session_bound: capabilities.session_bound,
            no_ttl: capabilities.no_ttl,
        }
    }

    /// The TTL a lease asked for `ttl` is judged with.
    fn ttl(&self, ttl: Micros) -> Micros {
        if self.no_ttl { NEVER } else { ttl }
    }

    /// The spec's entries of some operations of one key, and for each entry the position in
    /// `ops` of the operation it comes from (a cancelled acquire gives two).
    fn entries_of(&self, ops: &[Operation]) -> (Vec<Entry<LockOp, LockRet>>, Vec<usize>) {
        let mut entries = Vec::with_capacity(ops.len());
        let mut origins = Vec::with_capacity(ops.len());
        for (position, op) in ops.iter().enumerate() {
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
                    let acquire = LockOp::CancelledAcquire { lease: *lease, ttl: self.ttl(*ttl), limit: *limit, at };
                    entries.push(Entry::unknown(acquire, op.invoked));
                    let withdraw = LockOp::Withdraw { lease: *lease, at: Window::new(cancelled, cleaned_up) };
                    entries.push(Entry::completed(withdraw, LockRet::Withdrawn, cancelled, cleaned_up));
                    origins.extend([position, position]);
                }
                _ => {
                    let Some((mut spec_op, ret)) = op.to_spec() else { continue };
                    if let LockOp::Acquire { ttl, .. } | LockOp::Refresh { ttl, .. } = &mut spec_op {
                        *ttl = self.ttl(*ttl);
                    }
                    entries.push(match (ret, op.returned) {
                        (Some(ret), Some(returned)) => Entry::completed(spec_op, ret, op.invoked, returned),
                        _ => Entry::unknown(spec_op, op.invoked),
                    });
                    origins.push(position);
                }
            }
        }
        (entries, origins)
    }

    fn search(&self, ops: &[Operation], deadline: Instant) -> Search {
        self.search_within(ops, Budget { deadline, steps: u64::MAX }).0
    }

    /// The search over `ops` within `budget`, trying operations in the order of
    /// [`Reference::turn`]; and the steps it took.
    pub fn search_within(&self, ops: &[Operation], budget: Budget) -> (Search, u64) {
        search_within(&self.initial, &self.entries_of(ops).0, budget, Reference::turn)
    }

    /// When the search tries an operation on a key (see [`search_within`]): cancelled
    /// acquires and other operations of unknown outcome go late.
    ///
    /// A backend's clean-up bound can make a cancelled acquire concurrent with every
    /// operation for seconds (the Python dflockd suite states 13 s, longer than a workload
    /// case), and a correct backend's history is explained with almost none of them granted.
    /// Tried first, as they come in invocation order, each one the search grants holds the key
    /// until a withdrawal frees it again, and a key with twenty of them pending took 30 s to
    /// decide. Their withdrawals stay early: a withdrawal taken at once settles its acquire
    /// (not granted), and so keeps the number of pending ones small.
    pub fn turn(entry: &Entry<LockOp, LockRet>, _: &LockSpec) -> Turn {
        match entry.op() {
            LockOp::CancelledAcquire { .. } => Turn::Late,
            _ if entry.is_unknown() => Turn::Late,
            _ => Turn::Early,
        }
    }

    /// A counterexample from the operations of one key, known not to be linearizable: shrunk
    /// ([`shrink`]) around the operation that cannot follow, which it marks, and labelled
    /// with the property that operation breaks ([`LockSpec::explain_with`]).
    pub fn counterexample(&self, ops: Vec<Operation>, deadline: Instant) -> Counterexample {
        let (ops, blamed) = shrink(ops, self, deadline);
        let Some(blamed) = blamed else {
            let summary = format!(
                "no order of these {} operations explains them (the time ran out before the first that cannot follow was found)",
                ops.len()
            );
            return Counterexample::new(Property::MutualExclusion, summary, ops);
        };
        // Shrinking may use up the deadline; saying why gets a moment of its own.
        let explaining = deadline.max(Instant::now() + Duration::from_secs(1));
        let explained = self.explain(&ops, blamed, Budget { deadline: explaining, steps: u64::MAX });
        let (property, summary) = explained.unwrap_or_else(|| {
            let summary = format!(
                "no order of these {} operations explains operation {} ({}); the time ran out before the spec said why",
                ops.len(),
                blamed + 1,
                ops[blamed]
            );
            (Property::MutualExclusion, summary)
        });
        Counterexample::new(property, summary, ops).blaming(blamed)
    }

    /// The operation of `ops` (one key's) that cannot follow the ones before it, by return
    /// events ([`Violation`]): its position in `ops`. `None` if `ops` are linearizable, or the
    /// deadline passed first.
    pub fn blame(&self, ops: &[Operation], deadline: Instant) -> Option<usize> {
        let (entries, origins) = self.entries_of(ops);
        let budget = Budget { deadline, steps: u64::MAX };
        match check_within(&self.initial, &entries, budget, &Reference::turn).0 {
            Linearizability::NotLinearizable(Some(violation)) => Some(origins[violation.blamed]),
            _ => None,
        }
    }

    /// The entries of `ops` as known when `ops[blamed]` returned (see [`Violation`]), and the
    /// position of its entry among them; `None` if its outcome is unknown.
    fn known_at(&self, ops: &[Operation], blamed: usize) -> Option<(Vec<Entry<LockOp, LockRet>>, usize)> {
        let (entries, origins) = self.entries_of(ops);
        known_at(&entries, &origins, blamed)
    }

    /// Whether `ops[blamed]` is, provably within `budget`, the operation that cannot follow in
    /// `ops`: the history as known when it returned is not linearizable, and is with its
    /// outcome left unknown.
    fn blames(&self, ops: &[Operation], blamed: usize, budget: Budget) -> bool {
        let Some((mut known, at)) = self.known_at(ops, blamed) else { return false };
        let answer = known[at].clone();
        // Without its answer first: finding a linearization is quick, proving none is not.
        known[at] = answer.clone().forgetting_outcome();
        if search_within(&self.initial, &known, budget, Reference::turn).0 != Search::Linearizable {
            return false;
        }
        known[at] = answer;
        search_within(&self.initial, &known, budget, Reference::turn).0 == Search::NotLinearizable
    }

    /// Which property `ops[blamed]` (the operation that cannot follow) breaks, and why: the
    /// spec explains its answer ([`LockSpec::explain_with`]) in the states the search tried it
    /// in that follow the most known answers and assume the fewest unknown ones (a state
    /// where an operation of unknown outcome took effect explains with what the spec chose
    /// for it, not what happened); then the answer is diagnosed ([`Reference::diagnose`]).
    /// `None` if the search for those states ran out of `budget`.
    fn explain(&self, ops: &[Operation], blamed: usize, budget: Budget) -> Option<(Property, String)> {
        let fallback = || {
            let summary = format!(
                "no order of these {} operations explains operation {} ({})",
                ops.len(),
                blamed + 1,
                ops[blamed]
            );
            (Property::MutualExclusion, summary)
        };
        let Some((known, at)) = self.known_at(ops, blamed) else { return Some(fallback()) };
        let mut best: Vec<LockSpec> = Vec::new();
        let mut best_score = (0, std::cmp::Reverse(0));
        let (searched, _) =
            search_observed(&self.initial, &known, budget, Reference::turn, |entry, state, linearized| {
                if entry != at {
                    return;
                }
                let (mut answers, mut assumed) = (0, 0);
                for (word, bits) in linearized.iter().enumerate() {
                    let mut bits = *bits;
                    while bits != 0 {
                        let i = word * 64 + bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        if known[i].is_unknown() { assumed += 1 } else { answers += 1 }
                    }
                }
                let score = (answers, std::cmp::Reverse(assumed));
                if best.is_empty() || score > best_score {
                    best.clear();
                    best_score = score;
                }
                if score == best_score && best.len() < 16 && !best.contains(state) {
                    best.push(state.clone());
                }
            });
        if searched == Search::OutOfBudget {
            return None;
        }
        let entry = &known[at];
        let Some(ret) = entry.ret() else { return Some(fallback()) };
        let story = story_of(ops, blamed, self.cancel_cleanup);
        let Some((property, sentence)) = LockSpec::explain_among(&best, entry.op(), ret, &story) else {
            return Some(fallback());
        };
        Some((self.diagnose(ops, blamed, property, budget.deadline), sentence))
    }

    /// The property an answer the spec explained as `property` breaks, where the history can
    /// tell two causes apart.
    ///
    /// A refusal while the key had room, or an answer of "held" for a lease whose time was
    /// up, has more than one possible cause: the backend never expired a lease (P4), or a
    /// cancelled acquire's grant was never given back (P7). Each is tried as a hypothesis on
    /// the history as known when the blamed operation returned: the lease(s) that expired
    /// last before it (for an answer of "held", its own lease) never expiring, or the
    /// cancelled acquires whose clean-up was due granted at any moment of their wait and never
    /// given back. A cause is named when it alone makes the history explicable; when both or
    /// neither do, the spec's label stands.
    pub fn diagnose(&self, ops: &[Operation], blamed: usize, property: Property, deadline: Instant) -> Property {
        let op = &ops[blamed];
        let held = matches!(
            op.outcome,
            Outcome::Released { held: true }
                | Outcome::Refreshed { held: true, .. }
                | Outcome::Remaining { left: Some(_) }
        );
        let refusal = refused(op) && matches!(property, Property::Expiry | Property::NoLostWakeup);
        let held_for_nothing = held && property == Property::Ownership;
        if !(refusal || held_for_nothing) {
            return property;
        }
        let by = op.returned.unwrap_or(op.invoked);
        let story = story_of(ops, blamed, self.cancel_cleanup);
        let mut expired: Vec<&Ending> =
            story.endings.iter().filter(|ending| ending.how == Ended::Expired && ending.at <= by).collect();
        expired.sort_by_key(|ending| std::cmp::Reverse(ending.at));
        let lasting: BTreeSet<LeaseId> = match &op.call {
            Call::TryAcquire { limit, .. } | Call::Acquire { limit, .. } => {
                expired.iter().take(*limit as usize).map(|ending| ending.lease).collect()
            }
            call => expired.iter().map(|ending| ending.lease).filter(|lease| *lease == call.lease()).collect(),
        };
        let leaked: BTreeSet<usize> = if refusal {
            (0..ops.len())
                .filter(|&i| matches!(ops[i].outcome, Outcome::Cancelled | Outcome::TimedOutLocally))
                .filter(|&i| ops[i].call.is_acquire())
                .filter(|&i| ops[i].returned.is_some_and(|at| at.saturating_add(self.cancel_cleanup) <= op.invoked))
                .collect()
        } else {
            BTreeSet::new()
        };
        let (entries, origins) = self.entries_of(ops);
        let explains = |relaxed: Vec<(Entry<LockOp, LockRet>, usize)>| {
            let (entries, origins): (Vec<_>, Vec<_>) = relaxed.into_iter().unzip();
            // A hypothesis that explains makes the history linearizable, which the search
            // finds quickly; one it cannot settle within a probe's steps explains nothing.
            known_at(&entries, &origins, blamed).is_some_and(|(known, _)| {
                let budget = Budget { deadline, steps: probe_steps(known.len()) };
                search_within(&self.initial, &known, budget, Reference::turn).0 == Search::Linearizable
            })
        };
        let pairs = || entries.iter().cloned().zip(origins.iter().copied());
        // The leases never expire: grants and refreshes of a lease of years. What their
        // remaining-TTL calls answered counts only as "held" or "not held" (a refresh of as
        // long changes nothing then).
        let never_expiring = !lasting.is_empty()
            && explains(
                pairs()
                    .map(|(mut entry, origin)| {
                        if !lasting.contains(&entry.op.lease()) {
                            return (entry, origin);
                        }
                        let answer = entry.outcome.as_ref().map(|(ret, _)| ret);
                        match (&mut entry.op, answer) {
                            (LockOp::Acquire { ttl, .. }, Some(LockRet::Granted { .. }))
                            | (LockOp::Refresh { ttl, .. }, Some(LockRet::Refreshed(true))) => *ttl = NEVER,
                            (LockOp::Remaining { lease, at }, Some(LockRet::Remaining(left))) => {
                                let (lease, at, held) = (*lease, *at, left.is_some());
                                entry.op = LockOp::Refresh { lease, ttl: NEVER, at };
                                if let Some((ret, _)) = &mut entry.outcome {
                                    *ret = LockRet::Refreshed(held);
                                }
                            }
                            _ => {}
                        }
                        (entry, origin)
                    })
                    .collect(),
            );
        // The cancelled acquires may be granted until their wait ran out, and keep the grant
        // for its lease: an acquire of unknown outcome in that window, with no clean-up.
        let leaking = !leaked.is_empty()
            && explains(
                pairs()
                    .filter_map(|(entry, origin)| {
                        if !leaked.contains(&origin) {
                            return Some((entry, origin));
                        }
                        let LockOp::CancelledAcquire { lease, ttl, limit, at } = entry.op else { return None };
                        let wait = match ops[origin].call {
                            Call::Acquire { wait, .. } => wait,
                            _ => 0,
                        };
                        let until = at.from.saturating_add(wait).saturating_add(self.initial.tolerance());
                        let acquire = LockOp::Acquire { lease, ttl, limit, at: Window::new(at.from, until) };
                        Some((Entry::unknown(acquire, at.from), origin))
                    })
                    .collect(),
            );
        match (never_expiring, leaking) {
            (true, false) => Property::Expiry,
            (false, true) => Property::CancelSafety,
            _ => property,
        }
    }
}

/// A lease duration no history outlives: for the hypothesis that a lease never expired, and
/// for the leases of a lock without TTL (here and in the exclusion checker).
pub(super) const NEVER: Micros = 1 << 40;

/// The entries (with the operation each comes from, `origins`) as known when the operation
/// `blamed` returned, and the position of its entry among them; `None` if its outcome is
/// unknown.
fn known_at(
    entries: &[Entry<LockOp, LockRet>],
    origins: &[usize],
    blamed: usize,
) -> Option<(Vec<Entry<LockOp, LockRet>>, usize)> {
    let entry = (0..entries.len()).find(|&i| origins[i] == blamed && !entries[i].is_unknown())?;
    let order = return_order(entries);
    let rank = order.iter().position(|&i| i == entry)? + 1;
    let (known, positions) = known_when(entries, &order, rank);
    let at = positions.iter().position(|&i| i == entry)?;
    Some((known, at))
}

/// What `ops` show beyond the spec's state, for explaining `ops[blamed]`: who was granted each
/// lease, and how each ended (released, expired, or a cancelled acquire's clean-up due).
fn story_of(ops: &[Operation], blamed: usize, cancel_cleanup: Micros) -> Story {
    let mut holders = BTreeMap::new();
    let mut fences = BTreeMap::new();
    let mut granted = BTreeMap::new();
    let mut expires: BTreeMap<LeaseId, Micros> = BTreeMap::new();
    let mut released: BTreeMap<LeaseId, Micros> = BTreeMap::new();
    let mut endings = Vec::new();
    // What happened before it: not itself (a refresh answering "held" must not extend the
    // lease it is judged on), nor what came after it.
    let until = ops[blamed].returned.unwrap_or(Micros::MAX);
    for (position, op) in ops.iter().enumerate() {
        let lease = op.call.lease();
        let Some(returned) = op.returned else { continue };
        if position == blamed || op.invoked > until {
            continue;
        }
        // Surely over by then: the lease counts from some instant up to the return.
        let expiry = returned.saturating_add(op.lease_ttl().unwrap_or_default());
        match &op.outcome {
            Outcome::Granted { fence, .. } => {
                holders.insert(lease, op.client);
                fences.insert(lease, *fence);
                granted.insert(lease, returned);
                expires.insert(lease, expiry);
            }
            Outcome::Refreshed { held: true, .. } => {
                let until = expires.entry(lease).or_default();
                *until = (*until).max(expiry);
            }
            Outcome::Released { held: true } => {
                released.entry(lease).or_insert(returned);
            }
            Outcome::Cancelled | Outcome::TimedOutLocally if op.call.is_acquire() => {
                let at = returned.saturating_add(cancel_cleanup);
                endings.push(Ending { lease, at, how: Ended::CleanedUp });
            }
            _ => {}
        }
    }
    for (lease, expiry) in expires {
        endings.push(match released.get(&lease) {
            Some(&at) if at < expiry => Ending { lease, at, how: Ended::Released },
            _ => Ending { lease, at: expiry, how: Ended::Expired },
        });
    }
    Story {
        waited: matches!(ops[blamed].call, Call::Acquire { wait, .. } if wait > 0),
        holders,
        fences,
        granted,
        endings,
    }
}

/// The lease the explanation of a refusal at `ops[blamed]` names: the last to end before it
/// ("although no lease could still hold the key: L180 was released at …"). Shrinking keeps it:
/// a refusal of a key with no history is as wrong, but says less about which release or
/// expiry the backend missed.
fn context_of(ops: &[Operation], blamed: usize, cancel_cleanup: Micros) -> Option<LeaseId> {
    let op = &ops[blamed];
    if !refused(op) {
        return None;
    }
    let story = story_of(ops, blamed, cancel_cleanup);
    story
        .endings
        .iter()
        .filter(|ending| ending.at <= op.invoked)
        .max_by_key(|ending| ending.at)
        .map(|ending| ending.lease)
}

/// An acquire that returned "not granted" or timed out.
fn refused(op: &Operation) -> bool {
    op.call.is_acquire() && matches!(op.outcome, Outcome::NotGranted | Outcome::TimedOut)
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
                let shrinking = Instant::now() + budget.max(Duration::from_secs(1));
                return Verdict::invalid(reference.counterexample(ops, shrinking));
            }
        }
    }
    verdict
}

/// Shrinks a non-linearizable history of one key to a short one with the same anomaly.
/// Returns the operations, in invocation order, and the position among them of the
/// operation that cannot follow ([`Violation`]); `None` if the deadline passed before it
/// was found (the history then comes back whole).
///
/// The operation that cannot follow is found in the whole history first: by return events,
/// it is the first anomaly, and every operation before it is explained. Nothing invoked
/// after it returned bears on it. Then whole leases (an acquire with every call on its
/// lease), and then single operations, are removed in halving chunks — but a removal is kept
/// only if that same operation still cannot follow, everything before it still can, and it
/// still breaks the same property. Removing operations can *create* violations (drop a
/// release and the next grant looks like a double grant; drop an indeterminate acquire and a
/// refusal it explained looks unjustified), and a shrinker that only asked "still not
/// linearizable?" would blame the operation its removals made impossible — a correct one —
/// or keep the operation but change its story (a fencing token that went back after a
/// release becomes a double grant once the release is gone).
pub fn shrink(mut ops: Vec<Operation>, reference: &Reference, deadline: Instant) -> (Vec<Operation>, Option<usize>) {
    ops.sort_by_key(|op| op.invoked);
    let (entries, origins) = reference.entries_of(&ops);
    let mut steps = 0;
    let budget = Budget { deadline, steps: u64::MAX };
    let Some(violation) = locate(&reference.initial, &entries, budget, &Reference::turn, &mut steps) else {
        return (ops, None);
    };
    let blamed = origins[violation.blamed];
    // (is it the blamed operation, the operation)
    let mut kept: Vec<(bool, Operation)> = ops
        .into_iter()
        .enumerate()
        .filter(|(_, op)| op.invoked <= violation.returned)
        .map(|(position, op)| (position == blamed, op))
        .collect();
    let split = |candidate: &[(bool, Operation)]| {
        let ops: Vec<Operation> = candidate.iter().map(|(_, op)| op.clone()).collect();
        (ops, candidate.iter().position(|(blamed, _)| *blamed).expect("the blamed operation is kept"))
    };
    let result = |kept: Vec<(bool, Operation)>| {
        let blamed = kept.iter().position(|(blamed, _)| *blamed);
        (kept.into_iter().map(|(_, op)| op).collect(), blamed)
    };
    // The same operation cannot follow, for the same reason. (In the cut it does: `locate`
    // proved the history as known at its return not linearizable, and the one before
    // linearizable.) A candidate gets a probe's steps: a removal that cannot be settled
    // quickly is not made.
    let property = {
        let (ops, blamed) = split(&kept);
        let Some((property, _)) = reference.explain(&ops, blamed, Budget { deadline, steps: u64::MAX }) else {
            return result(kept);
        };
        property
    };
    let blames = |candidate: &[(bool, Operation)]| {
        let (ops, blamed) = split(candidate);
        let probe = Budget { deadline, steps: probe_steps(2 * ops.len()) };
        reference.blames(&ops, blamed, probe)
            && reference.explain(&ops, blamed, probe).is_some_and(|(explained, _)| explained == property)
    };
    let (blamed_lease, context) = {
        let ops: Vec<Operation> = kept.iter().map(|(_, op)| op.clone()).collect();
        let blamed = kept.iter().position(|(blamed, _)| *blamed).expect("kept");
        (ops[blamed].call.lease(), context_of(&ops, blamed, reference.cancel_cleanup))
    };
    // 1. Whole leases but the blamed operation's and the one its explanation names.
    let mut units: Vec<LeaseId> = kept
        .iter()
        .map(|(_, op)| op.call.lease())
        .filter(|lease| *lease != blamed_lease && Some(*lease) != context)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut chunk = units.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < units.len() {
            if Instant::now() >= deadline {
                return result(kept);
            }
            let removed: BTreeSet<LeaseId> = units[start..(start + chunk).min(units.len())].iter().copied().collect();
            let candidate: Vec<(bool, Operation)> =
                kept.iter().filter(|(_, op)| !removed.contains(&op.call.lease())).cloned().collect();
            if blames(&candidate) {
                kept = candidate;
                units.retain(|lease| !removed.contains(lease));
            } else {
                start += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    // 2. Single operations (a refresh, a remaining-TTL call), but the blamed one, the grant of
    //    its lease and the lease its explanation names.
    let mut at = 0;
    while at < kept.len() {
        if Instant::now() >= deadline {
            break;
        }
        let (is_blamed, op) = &kept[at];
        let named = Some(op.call.lease()) == context || (op.call.lease() == blamed_lease && op.call.is_acquire());
        if *is_blamed || named {
            at += 1;
            continue;
        }
        let mut candidate = kept.clone();
        candidate.remove(at);
        if blames(&candidate) {
            kept = candidate;
        } else {
            at += 1;
        }
    }
    result(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stateright::semantics::register::{Register, RegisterOp, RegisterRet};

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn budget() -> Budget {
        Budget { deadline: far(), steps: u64::MAX }
    }

    fn write(value: char, invoked: u64, returned: u64) -> Entry<RegisterOp<char>, RegisterRet<char>> {
        Entry::completed(RegisterOp::Write(value), RegisterRet::WriteOk, invoked, returned)
    }

    fn read(value: char, invoked: u64, returned: u64) -> Entry<RegisterOp<char>, RegisterRet<char>> {
        Entry::completed(RegisterOp::Read, RegisterRet::ReadOk(value), invoked, returned)
    }

    #[test]
    fn a_stale_register_read_is_not_linearizable() {
        let entries = vec![write('a', 0, 1), read('-', 2, 3)];
        assert_eq!(search(&Register('-'), &entries, far()), Search::NotLinearizable);
        let concurrent = vec![write('a', 0, 5), read('-', 2, 3)];
        assert_eq!(search(&Register('-'), &concurrent, far()), Search::Linearizable);
    }

    #[test]
    fn an_unreturned_write_may_or_may_not_have_happened() {
        let entries = |value| vec![Entry::unknown(RegisterOp::Write('a'), 0), read(value, 2, 3)];
        assert_eq!(search(&Register('-'), &entries('-'), far()), Search::Linearizable);
        assert_eq!(search(&Register('-'), &entries('a'), far()), Search::Linearizable);
        assert_eq!(search(&Register('-'), &entries('b'), far()), Search::NotLinearizable);
    }

    /// An unknown outcome carries no return instant, so it cannot be mistaken for one that
    /// must have taken effect by then: an `:info` write completed at 1 may still land after a
    /// read at 2–3.
    #[test]
    fn an_unknown_outcome_has_no_return_instant() {
        let unknown = Entry::<RegisterOp<char>, RegisterRet<char>>::unknown(RegisterOp::Write('a'), 0);
        assert_eq!((unknown.ret(), unknown.returned(), unknown.is_unknown()), (None, None, true));
        let entries = vec![unknown, read('-', 2, 3), read('a', 4, 5)];
        assert_eq!(search(&Register('-'), &entries, far()), Search::Linearizable);
        let forgotten = write('a', 0, 1).forgetting_outcome();
        assert_eq!(forgotten.returned(), None);
        // A return before the invocation counts as at the invocation.
        assert_eq!(write('a', 5, 3).returned(), Some(5));
    }

    /// The read of `-` returning at 9 is where the history stops being linearizable; the
    /// reads before it are explained (the one of `b` by the write of unknown outcome), and the
    /// prefix is the history as known at 7, with the write of `c` still running.
    #[test]
    fn a_violation_is_the_first_return_no_order_explains() {
        let entries = vec![
            write('a', 0, 1),
            Entry::unknown(RegisterOp::Write('b'), 2),
            read('b', 3, 4),
            write('c', 5, 20),
            read('b', 6, 7),
            read('-', 8, 9),
            read('c', 10, 11),
        ];
        let Linearizability::NotLinearizable(Some(violation)) = check(&Register('-'), &entries, budget()) else {
            panic!("not linearizable");
        };
        assert_eq!((violation.blamed, violation.returned), (5, 9));
        assert_eq!(violation.prefix.len(), 5, "{:?}", violation.prefix);
        assert!(violation.prefix[3].is_unknown(), "the write of c had not returned by 7");
        assert_eq!(search(&Register('-'), &violation.prefix, far()), Search::Linearizable);
        // A budget too small to decide says so.
        let tight = Budget { deadline: far(), steps: 2 };
        assert_eq!(check(&Register('-'), &entries, tight), Linearizability::OutOfBudget);
    }

    /// Proving a history not linearizable can take the search every subset of its operations of
    /// unknown outcome; finding a linearization takes a few steps. Here 14 writes never return
    /// and a read at once returns a value none wrote: each proof costs some 200,000 steps, and
    /// the 64 reads after it make a binary search of the returns meet six histories with no
    /// linearization. Probing with a few thousand steps each and proving only the return it
    /// settles on, the violation is located within three proofs' worth of steps.
    #[test]
    fn locating_a_violation_proves_it_once() {
        let mut entries: Vec<Entry<RegisterOp<char>, RegisterRet<char>>> =
            ('a'..='n').map(|value| Entry::unknown(RegisterOp::Write(value), 0)).collect();
        entries.push(read('z', 1, 2));
        for at in 0..64 {
            entries.push(read('a', 10 + 2 * at, 11 + 2 * at));
        }
        let (proof, one) = search_within(&Register('-'), &entries[..15], budget(), unknown_last);
        assert_eq!(proof, Search::NotLinearizable);
        assert!(one > 100_000, "the proof is expensive ({one} steps)");
        let three = Budget { deadline: far(), steps: 3 * one };
        let Linearizability::NotLinearizable(Some(violation)) = check(&Register('-'), &entries, three) else {
            panic!("not located within {} steps", 3 * one);
        };
        assert_eq!(violation.blamed, 14, "the read of z");
    }

    /// Two registers, each operation on one of them: a spec to partition.
    #[derive(Clone, Debug, Hash, PartialEq)]
    struct Registers([char; 2]);

    #[derive(Clone, Debug, PartialEq)]
    enum KeyedOp {
        Write(usize, char),
        Read(usize),
    }

    impl SequentialSpec for Registers {
        type Op = KeyedOp;
        type Ret = Option<char>;

        fn invoke(&mut self, op: &KeyedOp) -> Option<char> {
            match op {
                KeyedOp::Write(key, value) => {
                    self.0[*key] = *value;
                    None
                }
                KeyedOp::Read(key) => Some(self.0[*key]),
            }
        }
    }

    #[test]
    fn partitions_are_checked_apart_and_the_worst_decides() {
        let key = |op: &KeyedOp| match op {
            KeyedOp::Write(key, _) | KeyedOp::Read(key) => *key,
        };
        let entries = vec![
            Entry::completed(KeyedOp::Write(0, 'a'), None, 0, 1),
            Entry::completed(KeyedOp::Write(1, 'x'), None, 0, 1),
            // Register 1 reads its old value after the write returned: stale.
            Entry::completed(KeyedOp::Read(1), Some('-'), 2, 3),
            // Register 0 reads 'a' although register 1 has 'x': fine, they are independent.
            Entry::completed(KeyedOp::Read(0), Some('a'), 4, 5),
        ];
        let checked = check_partitioned(&Registers(['-', '-']), &entries, key, budget());
        assert_eq!(checked.partitions[&0], Linearizability::Linearizable);
        let (worst, verdict) = checked.worst().expect("register 1 is not linearizable");
        assert_eq!(*worst, 1);
        assert_eq!(verdict.violation().map(|violation| violation.blamed), Some(2), "a position in all the entries");
        assert!(!checked.is_linearizable());
        // Combined: not linearizable > out of budget > linearizable.
        let invalid = checked.partitions[&1].clone();
        let out = Linearizability::<KeyedOp, Option<char>>::OutOfBudget;
        assert_eq!(out.clone().and(invalid.clone()), invalid);
        assert_eq!(Linearizability::Linearizable.and(out.clone()), out);
        let fine = vec![Entry::completed(KeyedOp::Read(1), Some('-'), 0, 1)];
        assert!(check_partitioned(&Registers(['-', '-']), &fine, key, budget()).is_linearizable());
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

    fn try_acquire(lease: u32) -> Call {
        Call::TryAcquire { lease: LeaseId(lease), ttl: 1_000_000, limit: 1 }
    }

    fn granted(fence: u64) -> Outcome {
        Outcome::Granted { fence, acquired_at: 0, ttl: None }
    }

    /// A real server's history in small: after the only lease was released, a try_acquire was
    /// refused. The release of L1 was invoked before a correct refusal but must come after it
    /// (it returned late); replayed in invocation order, as the checker used to explain, that
    /// correct refusal was "impossible" and blamed.
    fn refused_after_every_lease_ended() -> Vec<Operation> {
        vec![
            op(0, try_acquire(1), 0, 1_000, granted(1)),
            op(0, Call::Release { lease: LeaseId(1) }, 100_000, 300_000, Outcome::Released { held: true }),
            op(1, try_acquire(2), 150_000, 160_000, Outcome::NotGranted),
            op(3, try_acquire(4), 200_000, 210_000, Outcome::NotGranted),
            op(2, try_acquire(3), 310_000, 320_000, Outcome::NotGranted),
        ]
    }

    #[test]
    fn the_refusal_no_order_explains_is_blamed_not_a_correct_one_before_it() {
        let history = History { operations: refused_after_every_lease_ended() };
        let verdict = check_history(&history, 0, Duration::from_secs(5));
        let counterexample = verdict.counterexample().expect("not linearizable");
        assert_eq!(counterexample.blamed_operation().map(|op| op.call.lease()), Some(LeaseId(3)), "{counterexample}");
        assert_eq!(counterexample.property, Property::Expiry);
        assert_eq!(
            counterexample.summary,
            "try_acquire refused between 310.0 ms and 320.0 ms although no lease could still hold the key \
             (L1 (client 0) was released at 300.0 ms)"
        );
        // The correct refusals go; the release the explanation names stays.
        let leases: Vec<LeaseId> = counterexample.history.operations.iter().map(|op| op.call.lease()).collect();
        assert_eq!(leases, [LeaseId(1), LeaseId(1), LeaseId(3)], "{counterexample}");
    }

    /// A double grant among unrelated traffic: the grant is blamed, and the counterexample is
    /// the holder and the intruder, whatever else happened around them.
    #[test]
    fn a_double_grant_is_blamed_and_shrunk_to_the_two_grants() {
        let mut ops = vec![
            op(0, try_acquire(1), 0, 1_000, granted(1)),
            op(1, try_acquire(2), 2_000, 3_000, Outcome::NotGranted),
            op(
                0,
                Call::Refresh { lease: LeaseId(1), ttl: 1_000_000 },
                4_000,
                5_000,
                Outcome::Refreshed { held: true, ttl: None },
            ),
            op(2, try_acquire(3), 6_000, 7_000, granted(2)),
            op(0, Call::Release { lease: LeaseId(1) }, 8_000, 9_000, Outcome::Released { held: true }),
            op(1, try_acquire(4), 10_000, 11_000, Outcome::NotGranted),
        ];
        // An acquire still running when the history was taken, invoked before the intruder.
        ops.push(Operation {
            client: 3,
            key: "k".into(),
            call: try_acquire(5),
            invoked: 5_500,
            returned: None,
            outcome: Outcome::Pending,
        });
        let counterexample = check_history(&History { operations: ops }, 0, Duration::from_secs(5))
            .counterexample()
            .cloned()
            .expect("a double grant");
        assert_eq!(counterexample.property, Property::MutualExclusion, "{counterexample}");
        assert_eq!(counterexample.len(), 2, "{counterexample}");
        assert_eq!(counterexample.blamed, Some(1));
        assert_eq!(
            counterexample.summary,
            "try_acquire granted between 6.0 ms and 7.0 ms while L1 (client 0) held the key until at least 1000.0 ms"
        );
    }

    /// A fencing token that goes back after a release stays a fencing violation: shrinking
    /// must not drop the release and make it look like a double grant.
    #[test]
    fn a_token_going_back_after_a_release_keeps_the_release() {
        let ops = vec![
            op(0, try_acquire(1), 0, 1_000, granted(7)),
            op(0, Call::Release { lease: LeaseId(1) }, 2_000, 3_000, Outcome::Released { held: true }),
            op(1, try_acquire(2), 4_000, 5_000, granted(3)),
        ];
        let counterexample = check_history(&History { operations: ops }, 0, Duration::from_secs(5))
            .counterexample()
            .cloned()
            .expect("a token going back");
        assert_eq!(counterexample.property, Property::Fencing, "{counterexample}");
        assert_eq!((counterexample.len(), counterexample.blamed), (3, Some(2)), "{counterexample}");
        assert_eq!(
            counterexample.summary,
            "fencing token 3 granted between 4.0 ms and 5.0 ms after L1 (client 0)'s token 7"
        );
    }

    /// A lock without TTL (`no_ttl`): a lease 1 s long by the TTL asked is still held at 5 s,
    /// so a refusal then is right and a grant to another, unreleased, is a double grant; with
    /// a TTL, the other way round. Both checkers that judge exclusion agree.
    #[test]
    fn a_lock_without_ttl_holds_its_lease_until_released() {
        let history = |second: Outcome| History {
            operations: vec![
                op(0, try_acquire(1), 0, 1_000, granted(1)),
                op(1, try_acquire(2), 5_000_000, 5_001_000, second),
            ],
        };
        let scales = crate::Timing::networked();
        let judged = |history: &History, capabilities: &Capabilities| {
            crate::checkers::check_all(history, &scales, capabilities, Duration::from_secs(5))
                .into_iter()
                .filter(|(_, verdict)| !verdict.is_valid())
                .map(|(property, _)| property)
                .collect::<Vec<_>>()
        };
        let without_ttl = Capabilities::none().with_no_ttl(true);
        let with_ttl = Capabilities::none();
        assert_eq!(judged(&history(Outcome::NotGranted), &without_ttl), vec![]);
        let double = judged(&history(granted(2)), &without_ttl);
        assert_eq!(double, vec![Property::MutualExclusion, Property::MutualExclusion], "both checkers");
        assert_eq!(judged(&history(granted(2)), &with_ttl), vec![]);
        assert!(!judged(&history(Outcome::NotGranted), &with_ttl).is_empty(), "a lease past its TTL refused another");
    }

    fn labelled(reference: &Reference, ops: Vec<Operation>) -> Counterexample {
        check_history_against(&History { operations: ops }, reference, Duration::from_secs(5))
            .counterexample()
            .cloned()
            .expect("not linearizable")
    }

    /// A refusal, or a "held" answer for a lease whose time was up, is pinned on the cause
    /// that alone explains it: a lease that never expired (P4), a cancelled acquire's grant
    /// never given back (P7); else the spec's label stands (P5 for a waiter, P2 for an answer
    /// of "held" another grant contradicts).
    #[test]
    fn a_refusal_or_a_held_answer_is_pinned_on_the_cause_that_alone_explains_it() {
        let reference = Reference {
            initial: LockSpec::with_tolerance(0),
            cancel_cleanup: 5_000,
            session_bound: false,
            no_ttl: false,
        };
        let short = |lease| Call::TryAcquire { lease: LeaseId(lease), ttl: 50_000, limit: 1 };
        let waiting = |lease| Call::Acquire { lease: LeaseId(lease), ttl: 50_000, limit: 1, wait: 10_000 };
        // A waiter times out after the only lease expired: the expiry never happened.
        let expiry = labelled(
            &reference,
            vec![op(0, short(1), 0, 100, granted(1)), op(1, waiting(2), 100_000, 110_000, Outcome::TimedOut)],
        );
        assert_eq!(expiry.property, Property::Expiry, "{expiry}");
        // The same waiter after a release: its wake-up was lost.
        let wakeup = labelled(
            &reference,
            vec![
                op(0, short(1), 0, 100, granted(1)),
                op(0, Call::Release { lease: LeaseId(1) }, 1_000, 1_100, Outcome::Released { held: true }),
                op(1, waiting(2), 2_000, 12_000, Outcome::TimedOut),
            ],
        );
        assert_eq!(wakeup.property, Property::NoLostWakeup, "{wakeup}");
        // A refusal only a cancelled acquire's grant explains, its clean-up long due.
        let leaked = labelled(
            &reference,
            vec![
                op(0, waiting(1), 0, 10_000, Outcome::Cancelled),
                op(1, short(2), 20_000, 20_100, Outcome::NotGranted),
            ],
        );
        assert_eq!(leaked.property, Property::CancelSafety, "{leaked}");
        assert_eq!(leaked.len(), 2, "the cancelled acquire stays: {leaked}");
        // A refresh answers "held" for a lease whose time was up: it never expired.
        let refreshed = labelled(
            &reference,
            vec![
                op(0, short(1), 0, 100, granted(1)),
                op(
                    0,
                    Call::Refresh { lease: LeaseId(1), ttl: 50_000 },
                    100_000,
                    100_100,
                    Outcome::Refreshed { held: true, ttl: None },
                ),
            ],
        );
        assert_eq!(refreshed.property, Property::Expiry, "{refreshed}");
        // So does a remaining-TTL call, whatever time it says is left.
        let remaining = labelled(
            &reference,
            vec![
                op(0, short(1), 0, 100, granted(1)),
                op(0, Call::RemainingTtl { lease: LeaseId(1) }, 100_000, 100_100, Outcome::Remaining { left: Some(0) }),
            ],
        );
        assert_eq!(remaining.property, Property::Expiry, "{remaining}");
        // ...unless the key went to someone else meanwhile: then the release freed a lease that
        // was not its own.
        let released = labelled(
            &reference,
            vec![
                op(0, short(1), 0, 100, granted(1)),
                op(1, short(2), 60_000, 60_100, granted(2)),
                op(0, Call::Release { lease: LeaseId(1) }, 70_000, 70_100, Outcome::Released { held: true }),
            ],
        );
        assert_eq!(released.property, Property::Ownership, "{released}");
        assert_eq!(released.len(), 3, "the other grant stays: {released}");
    }

    #[test]
    fn a_cancelled_acquire_may_hold_until_its_clean_up_is_due_and_not_after() {
        let reference = Reference {
            initial: LockSpec::with_tolerance(0),
            cancel_cleanup: 5_000,
            session_bound: false,
            no_ttl: false,
        };
        let budget = Duration::from_secs(5);
        // Refused while the clean-up may still be under way: the grant raced the cancellation.
        let during = check_history_against(&refused_after_a_cancellation(12_000), &reference, budget);
        assert!(during.is_valid(), "{during:?}");
        // Refused after the clean-up was due: the cancelled acquire left a grant behind.
        let after = check_history_against(&refused_after_a_cancellation(20_000), &reference, budget);
        assert!(after.counterexample().is_some(), "a leaked grant must be reported: {after:?}");
    }
}
