//! The sequential spec of a leased lock or semaphore on one key, with logical time.
//!
//! [`LockSpec`] is the reference object a history of lock operations is checked against. It
//! implements stateright's [`SequentialSpec`], so it plugs into stateright's
//! `LinearizabilityTester` as well as into lockcheck's own memoizing checker.
//!
//! # State
//!
//! Per key: the current holders (lease, fencing token, expiry), and the last fencing token
//! granted. Keys are independent, so a history is checked per key (linearizability is
//! compositional: Herlihy & Wing 1990) and the spec models one key.
//!
//! # Time
//!
//! Every operation carries the [`Window`] in which it took effect: from its invocation to its
//! return, in microseconds of one clock (the recorder's). The spec keeps the lower bound of
//! the current logical instant (`now`): a later operation in the linearization cannot take
//! effect before an earlier one did. A lease granted somewhere inside `[from, to]` with
//! lease duration `ttl` expires somewhere inside `[from + ttl, to + ttl]`.
//!
//! # Tolerance near lease boundaries
//!
//! Close to a lease's end, a backend may legitimately see the lease either as still held or
//! as expired: clocks drift, requests travel, timers fire late. Rather than guess, the spec
//! accepts **either outcome** when the operation's window comes within a tolerance of the
//! lease's expiry interval. The two sides differ: a lease seen ended *early* lets a second
//! holder in (a safety matter, and only clock skew and timer granularity excuse it), while a
//! lease seen held *late* only delays the next holder (expiry sweeps and timer slack excuse
//! it). So the spec has an `early` tolerance, small, and a `late` one. A holder is
//! - surely alive if `to + early < earliest expiry`,
//! - surely expired if `from > latest expiry + late`,
//! - ambiguous otherwise: an operation may treat it as held (and it stays a holder) or as
//!   expired (and it is dropped for good).
//!
//! # Leases bound to a session
//!
//! Where a backend binds leases to the client's session (a connection, a ZooKeeper or etcd
//! session), a [`LockOp::SessionEnded`] says the holder's session ended: from then on the
//! lease may end at any moment (the backend frees it when it notices), and at the latest at
//! its expiry.
//!
//! When a grant needs room and only ambiguous holders stand in the way, the spec expires the
//! ambiguous holders with the earliest latest-expiry first. That greedy choice keeps the spec
//! deterministic per (operation, return) pair, which a memoizing checker needs.
//!
//! # Fencing
//!
//! A grant's fencing token must be strictly greater than every earlier grant's on the key
//! (Kleppmann, "How to do distributed locking", 2016). Tokens need not be consecutive: a
//! backend with one counter for all keys is correct.
//!
//! # What the spec does not decide
//!
//! Liveness (no lost wake-up, bounded waits), FIFO order, cancel safety and crash safety are
//! properties of *when* things happen, not of which sequential order explains them; the
//! conformance harness checks them with dedicated checkers and scenarios. Every property has a
//! name in [`Property`]; which of them a backend is held to depends on what it claims
//! ([`Capabilities`]).

mod claims;
mod explain;
mod status;

use std::fmt;

#[cfg(feature = "models")]
use stateright::semantics::SequentialSpec;

pub use claims::Capabilities;
pub use explain::{Ended, Ending, Story};
pub use status::Status;

/// Microseconds on the recorder's clock.
pub type Micros = u64;

/// The interval in which an operation took effect: from its invocation to its return.
/// An operation that never returned (indeterminate) has `to == Micros::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// The invocation instant.
    pub from: Micros,
    /// The return instant.
    pub to: Micros,
}

impl Window {
    /// The window `[from, to]`.
    pub const fn new(from: Micros, to: Micros) -> Self {
        Window { from, to }
    }

    /// An instantaneous operation at `at` (handy in tests).
    pub const fn at(at: Micros) -> Self {
        Window { from: at, to: at }
    }
}

/// Names one grant in a history. Release, refresh and remaining-TTL refer to the grant they
/// act on; an acquire names the grant it would produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct LeaseId(pub u32);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}

/// An operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LockOp {
    /// Try-acquire or acquire with a wait bound: asks for one of `limit` slots for `ttl`.
    Acquire {
        /// The grant this acquire produces if it succeeds.
        lease: LeaseId,
        /// Lease duration.
        ttl: Micros,
        /// Permit limit (1 for a lock).
        limit: u32,
        /// When it took effect.
        at: Window,
    },
    /// Gives a lease back.
    Release {
        /// The lease.
        lease: LeaseId,
        /// When it took effect.
        at: Window,
    },
    /// Extends a lease to `ttl` from the moment it takes effect.
    Refresh {
        /// The lease.
        lease: LeaseId,
        /// The new lease duration.
        ttl: Micros,
        /// When it took effect.
        at: Window,
    },
    /// Asks how long a lease has left.
    Remaining {
        /// The lease.
        lease: LeaseId,
        /// When it took effect.
        at: Window,
    },
    /// An acquire that was cancelled: its request may have reached the locker and been granted
    /// (if there was room) at any moment after `at.from`, or never; never after its
    /// [`LockOp::Withdraw`]. A grant counts as made anywhere in `at` (its invocation to its
    /// clean-up deadline), so where in that window it is placed changes nothing.
    CancelledAcquire {
        /// The grant it may have produced.
        lease: LeaseId,
        /// Lease duration.
        ttl: Micros,
        /// Permit limit (1 for a lock).
        limit: u32,
        /// From its invocation to its clean-up deadline.
        at: Window,
    },
    /// The session of the lease's holder ended (the holder crashed, or its connection was
    /// cut): where leases are bound to sessions, the lease may end at any moment from `at.from`
    /// on, and at the latest when it expires. Only recorded for backends that claim it.
    SessionEnded {
        /// The lease whose session ended.
        lease: LeaseId,
        /// When the session ended.
        at: Window,
    },
    /// The clean-up of a cancelled acquire: if the acquire was granted after all (its request
    /// was in flight when the caller gave up), the lease is given back here, and from here on
    /// it can no longer be granted. The cancel-safety contract (P7) bounds `at`: the clean-up
    /// is over soon after the cancellation.
    Withdraw {
        /// The lease the cancelled acquire would have produced.
        lease: LeaseId,
        /// When it took effect.
        at: Window,
    },
}

impl LockOp {
    /// When the operation took effect.
    pub fn window(&self) -> Window {
        match self {
            LockOp::Acquire { at, .. }
            | LockOp::CancelledAcquire { at, .. }
            | LockOp::Release { at, .. }
            | LockOp::Refresh { at, .. }
            | LockOp::Remaining { at, .. }
            | LockOp::SessionEnded { at, .. }
            | LockOp::Withdraw { at, .. } => *at,
        }
    }

    /// The lease the operation produces or acts on.
    pub fn lease(&self) -> LeaseId {
        match self {
            LockOp::Acquire { lease, .. }
            | LockOp::CancelledAcquire { lease, .. }
            | LockOp::Release { lease, .. }
            | LockOp::Refresh { lease, .. }
            | LockOp::Remaining { lease, .. }
            | LockOp::SessionEnded { lease, .. }
            | LockOp::Withdraw { lease, .. } => *lease,
        }
    }
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LockRet {
    /// The acquire was granted, with this fencing token.
    Granted {
        /// The fencing token.
        fence: u64,
    },
    /// The acquire found no free slot (try-acquire's `None`, acquire's time-out).
    NotGranted,
    /// The release's answer: whether the lease was still held.
    Released(bool),
    /// The refresh's answer: whether the lease was still held.
    Refreshed(bool),
    /// The remaining time of the lease, `None` if it is no longer held.
    Remaining(Option<Micros>),
    /// A cancelled acquire's clean-up is done.
    Withdrawn,
    /// A session's end is noted.
    SessionEnded,
}

/// One holder of a slot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Holder {
    lease: LeaseId,
    /// Earliest and latest instant the lease can end, given when it was granted or refreshed.
    expires_between: (Micros, Micros),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    Alive,
    Ambiguous,
    Expired,
}

/// The sequential reference object for one key of a leased lock or semaphore.
///
/// ```
/// use lockcheck_model::spec::{LeaseId, LockOp, LockRet, LockSpec, Window};
/// use stateright::semantics::SequentialSpec;
///
/// let mut key = LockSpec::with_tolerance(1_000);
/// let acquire = |lease, at| LockOp::Acquire { lease: LeaseId(lease), ttl: 50_000, limit: 1, at: Window::at(at) };
/// assert!(key.is_valid_step(&acquire(1, 0), &LockRet::Granted { fence: 1 }));
/// // Held: a second acquire 10 ms later cannot be granted...
/// assert!(!key.clone().is_valid_step(&acquire(2, 10_000), &LockRet::Granted { fence: 2 }));
/// // ...but once the lease has surely expired it must be.
/// assert!(key.is_valid_step(&acquire(2, 60_000), &LockRet::Granted { fence: 2 }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockSpec {
    /// How late a lease may still be seen held (the late side).
    tolerance: Micros,
    /// How early a lease may be seen ended (the early side); at most `tolerance`.
    early_tolerance: Micros,
    now: Micros,
    last_fence: Option<u64>,
    holders: Vec<Holder>,
    /// Whether grants must carry strictly increasing fencing tokens (P3). A backend that does
    /// not claim fencing (random tokens) is checked for everything else.
    fencing_claimed: bool,
    /// Leases of cancelled acquires whose clean-up has happened: they can no longer be granted.
    withdrawn: Vec<LeaseId>,
}

impl Default for LockSpec {
    /// A free key with a tolerance of 2 ms.
    fn default() -> Self {
        LockSpec::with_tolerance(2_000)
    }
}

impl LockSpec {
    /// A free key; operations within `tolerance` µs of a lease boundary may see either outcome
    /// (on both sides; see [`LockSpec::with_early_tolerance`]).
    pub fn with_tolerance(tolerance: Micros) -> Self {
        LockSpec {
            tolerance,
            early_tolerance: tolerance,
            now: 0,
            last_fence: None,
            holders: Vec::new(),
            fencing_claimed: true,
            withdrawn: Vec::new(),
        }
    }

    /// The same spec, accepting a lease seen ended at most `early` µs before its earliest end
    /// (capped at the late tolerance). A backend that ends leases early by more than clock
    /// skew and timer granularity can excuse lets two holders in.
    pub fn with_early_tolerance(mut self, early: Micros) -> Self {
        self.early_tolerance = early.min(self.tolerance);
        self
    }

    /// The same spec with fencing (P3) checked or not: a backend that does not claim fencing
    /// may grant any tokens.
    pub fn with_fencing_claimed(mut self, claimed: bool) -> Self {
        self.fencing_claimed = claimed;
        self
    }

    fn fence_goes_backwards(&self, fence: u64) -> bool {
        self.fencing_claimed && self.last_fence.is_some_and(|last| fence <= last)
    }

    /// The tolerance near lease boundaries on the late side, in µs.
    pub fn tolerance(&self) -> Micros {
        self.tolerance
    }

    /// The tolerance near lease boundaries on the early side, in µs.
    pub fn early_tolerance(&self) -> Micros {
        self.early_tolerance
    }

    /// The last fencing token granted, if any.
    pub fn last_fence(&self) -> Option<u64> {
        self.last_fence
    }

    /// The leases currently counted as held (surely alive or ambiguous), in grant order.
    pub fn holders(&self) -> impl Iterator<Item = LeaseId> + '_ {
        self.holders.iter().map(|holder| holder.lease)
    }

    fn liveness(&self, holder: &Holder, from: Micros, to: Micros) -> Liveness {
        let (earliest, latest) = holder.expires_between;
        if to.saturating_add(self.early_tolerance) < earliest {
            Liveness::Alive
        } else if from > latest.saturating_add(self.tolerance) {
            Liveness::Expired
        } else {
            Liveness::Ambiguous
        }
    }

    /// Moves the logical clock to the operation's window and forgets surely expired holders.
    fn enter(&mut self, at: Window) -> (Micros, Micros) {
        let from = at.from.max(self.now);
        let to = at.to.max(from);
        self.now = from;
        let holders = std::mem::take(&mut self.holders);
        self.holders = holders.into_iter().filter(|h| self.liveness(h, from, to) != Liveness::Expired).collect();
        (from, to)
    }

    fn position(&self, lease: LeaseId) -> Option<usize> {
        self.holders.iter().position(|holder| holder.lease == lease)
    }

    /// Whether `op` can take effect next: not if it returned before an operation placed ahead
    /// of it took effect. (Real-time order keeps every window's end at or after the
    /// invocations before it; only a cancelled acquire's grant moves the clock past its own
    /// invocation.)
    fn fits_next(&self, op: &LockOp) -> bool {
        op.window().to >= self.now
    }

    /// The first instant in `[from, to]` at which fewer than `limit` holders are surely alive
    /// (a holder is, at instant `t`, while `t + early tolerance` is before its earliest expiry).
    fn first_room(&self, limit: u32, from: Micros, to: Micros) -> Option<Micros> {
        let mut earliest: Vec<Micros> = self.holders.iter().map(|holder| holder.expires_between.0).collect();
        earliest.sort_unstable_by(|a, b| b.cmp(a));
        let instant = match earliest.get(limit.max(1) as usize - 1) {
            // The limit-th latest to end must no longer be surely alive.
            Some(&ends) => from.max(ends.saturating_sub(self.early_tolerance)),
            None => from,
        };
        (instant <= to).then_some(instant)
    }

    /// "The lease is not held": true unless it is surely alive; drops it if it was ambiguous.
    fn lease_lost(&mut self, lease: LeaseId, from: Micros, to: Micros) -> bool {
        match self.position(lease) {
            None => true,
            Some(at) if self.liveness(&self.holders[at], from, to) == Liveness::Alive => false,
            Some(at) => {
                self.holders.remove(at);
                true
            }
        }
    }

    /// Grants `lease` one of `limit` slots with token `fence`, taking effect in `[from, to]`,
    /// if the spec allows it.
    fn grant(
        &mut self,
        lease: LeaseId,
        limit: u32,
        fence: u64,
        expires_between: (Micros, Micros),
        from: Micros,
        to: Micros,
    ) -> bool {
        if self.fence_goes_backwards(fence) || self.position(lease).is_some() {
            return false;
        }
        let limit = limit as usize;
        let alive = self.holders.iter().filter(|h| self.liveness(h, from, to) == Liveness::Alive).count();
        if alive >= limit {
            return false;
        }
        // Expire just enough ambiguous holders, those that end earliest first.
        let mut excess = (self.holders.len() + 1).saturating_sub(limit);
        while excess > 0 {
            let victim = (0..self.holders.len())
                .filter(|&i| self.liveness(&self.holders[i], from, to) == Liveness::Ambiguous)
                .min_by_key(|&i| self.holders[i].expires_between.1)
                .expect("fewer alive holders than the limit");
            self.holders.remove(victim);
            excess -= 1;
        }
        self.holders.push(Holder { lease, expires_between });
        // Unclaimed fencing: tokens mean nothing, and remembering the last one would only
        // tell apart states the checker's memo should treat as one.
        if self.fencing_claimed {
            self.last_fence = Some(fence);
        }
        true
    }

    /// Applies `op` with return `ret` if the spec allows it; `ret == None` means the return
    /// is unknown (an indeterminate operation) and the spec picks the outcome [`invoke`]
    /// would. On `false` the state may be partly updated: step a clone.
    ///
    /// [`invoke`]: SequentialSpec::invoke
    pub fn step(&mut self, op: &LockOp, ret: Option<&LockRet>) -> bool {
        let Some(ret) = ret else {
            self.step_unknown(op);
            return true;
        };
        if !self.fits_next(op) {
            return false;
        }
        let (from, to) = self.enter(op.window());
        match (op, ret) {
            // A cancelled acquire that was not granted changed nothing; after its clean-up it
            // cannot be granted.
            (LockOp::CancelledAcquire { .. }, LockRet::NotGranted) => true,
            // Granted at some instant of its long window (up to the clean-up deadline): judged
            // at the first instant there was room, which is where it takes effect — the clock
            // moves there, so nothing placed after it can take effect earlier. Judged over the
            // whole window instead, no lease shorter than the window would count as surely
            // alive, and the grant could evict a holder with seconds left.
            (LockOp::CancelledAcquire { lease, ttl, limit, at }, LockRet::Granted { fence }) => {
                let Some(instant) = self.first_room(*limit, from, to) else { return false };
                self.now = instant;
                let expires_between = (instant.saturating_add(*ttl), at.to.saturating_add(*ttl));
                !self.withdrawn.contains(lease) && self.grant(*lease, *limit, *fence, expires_between, instant, instant)
            }
            (LockOp::Withdraw { lease, .. }, LockRet::Withdrawn) => {
                match self.position(*lease) {
                    // Granted before its clean-up: given back now.
                    Some(at) => {
                        self.holders.remove(at);
                    }
                    // Not granted yet: it never will be. Kept sorted, so that states that
                    // withdrew the same leases in another order compare equal.
                    None => {
                        let at = self.withdrawn.binary_search(lease).unwrap_or_else(|at| at);
                        self.withdrawn.insert(at, *lease);
                    }
                }
                true
            }
            // From the session's end the lease may end whenever the backend notices.
            (LockOp::SessionEnded { lease, .. }, LockRet::SessionEnded) => {
                if let Some(at) = self.position(*lease) {
                    let holder = &mut self.holders[at];
                    holder.expires_between.0 = holder.expires_between.0.min(from);
                }
                true
            }
            (LockOp::Acquire { lease, ttl, limit, .. }, LockRet::Granted { fence }) => {
                let expires_between = (from.saturating_add(*ttl), to.saturating_add(*ttl));
                self.grant(*lease, *limit, *fence, expires_between, from, to)
            }
            (LockOp::Acquire { limit, .. }, LockRet::NotGranted) => self.holders.len() >= *limit as usize,
            (LockOp::Release { lease, .. }, LockRet::Released(true)) => match self.position(*lease) {
                Some(at) => {
                    self.holders.remove(at);
                    true
                }
                None => false,
            },
            (LockOp::Release { lease, .. }, LockRet::Released(false))
            | (LockOp::Refresh { lease, .. }, LockRet::Refreshed(false))
            | (LockOp::Remaining { lease, .. }, LockRet::Remaining(None)) => self.lease_lost(*lease, from, to),
            (LockOp::Refresh { lease, ttl, .. }, LockRet::Refreshed(true)) => match self.position(*lease) {
                Some(at) => {
                    self.holders[at].expires_between = (from.saturating_add(*ttl), to.saturating_add(*ttl));
                    true
                }
                None => false,
            },
            (LockOp::Remaining { lease, .. }, LockRet::Remaining(Some(left))) => match self.position(*lease) {
                // The answer says the lease ends at `t + left`, `t` in the window. Ending it
                // sooner than the lease can only makes the holder stop early (a client
                // estimating its grant instant from below does that): the late tolerance
                // excuses it. Ending it later is a promise the backend must keep: within the
                // late tolerance it may (a server rounding TTLs up to whole seconds holds
                // leases that long), so the lease is then surely alive until the promised end,
                // and a grant to another before it is a violation. Zero left promises nothing
                // (a server whose expiry sweep lags answers it for a lease just past its end).
                Some(at) => {
                    let (earliest, latest) = self.holders[at].expires_between;
                    let promised_end = from.saturating_add(*left);
                    let undersold = to.saturating_add(*left).saturating_add(self.tolerance) < earliest;
                    let beyond_any_end = *left > 0 && promised_end > latest.saturating_add(self.tolerance);
                    if undersold || beyond_any_end {
                        return false;
                    }
                    if *left > 0 {
                        self.holders[at].expires_between.0 = earliest.max(promised_end);
                    }
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// The outcome the spec picks when it must pick one (stateright's `invoke`).
    fn choose(&self, op: &LockOp) -> LockRet {
        let mut probe = self.clone();
        let (from, to) = probe.enter(op.window());
        match op {
            LockOp::CancelledAcquire { lease, .. } if probe.withdrawn.contains(lease) => LockRet::NotGranted,
            LockOp::CancelledAcquire { limit, .. } => match probe.first_room(*limit, from, to) {
                Some(_) => LockRet::Granted { fence: probe.last_fence.map_or(1, |last| last + 1) },
                None => LockRet::NotGranted,
            },
            LockOp::Withdraw { .. } => LockRet::Withdrawn,
            LockOp::SessionEnded { .. } => LockRet::SessionEnded,
            LockOp::Acquire { limit, .. } => {
                let alive = probe.holders.iter().filter(|h| probe.liveness(h, from, to) == Liveness::Alive).count();
                if alive < *limit as usize {
                    LockRet::Granted { fence: probe.last_fence.map_or(1, |last| last + 1) }
                } else {
                    LockRet::NotGranted
                }
            }
            LockOp::Release { lease, .. } => LockRet::Released(probe.position(*lease).is_some()),
            LockOp::Refresh { lease, .. } => LockRet::Refreshed(probe.position(*lease).is_some()),
            LockOp::Remaining { lease, .. } => LockRet::Remaining(
                probe.position(*lease).map(|at| probe.holders[at].expires_between.0.saturating_sub(from)),
            ),
        }
    }

    /// Applies `op` with the outcome the spec picks for it, and returns that outcome. An
    /// acquire of unknown outcome that finds no room did not take effect: it leaves the state
    /// as it was (not even the clock moves), so that the checker's search sees it as the
    /// no-op it is.
    fn step_unknown(&mut self, op: &LockOp) -> LockRet {
        let ret = self.choose(op);
        let no_op =
            matches!((op, &ret), (LockOp::Acquire { .. } | LockOp::CancelledAcquire { .. }, LockRet::NotGranted));
        // An operation that cannot take effect here (see `fits_next`) is left without effect,
        // which an operation of unknown outcome may always be: it is answered, not applied.
        if !no_op && self.fits_next(op) {
            let applied = self.step(op, Some(&ret));
            debug_assert!(applied, "the spec accepts its own choice");
        }
        ret
    }

    /// Which property a rejected step breaks, for reports (see [`LockSpec::explain`]). `None` if
    /// the step is allowed.
    pub fn violated_by(&self, op: &LockOp, ret: &LockRet) -> Option<Property> {
        if self.clone().step(op, Some(ret)) {
            return None;
        }
        Some(self.explain(op, ret).0)
    }
}

#[cfg(feature = "models")]
impl SequentialSpec for LockSpec {
    type Op = LockOp;
    type Ret = LockRet;

    /// The outcome the spec picks for an operation whose return is unknown, applied as
    /// [`LockSpec::step`] applies an unknown return (an acquire that finds no room is a no-op).
    fn invoke(&mut self, op: &LockOp) -> LockRet {
        self.step_unknown(op)
    }

    fn is_valid_step(&mut self, op: &LockOp, ret: &LockRet) -> bool {
        self.step(op, Some(ret))
    }
}

/// The properties lockcheck checks, P1–P10, each with a plain-English name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Property {
    /// P1: never more than `limit` unexpired grants per key.
    MutualExclusion,
    /// P2: release/refresh with a token that is not current changes nothing.
    Ownership,
    /// P3: fencing tokens strictly increase per key, in grant order.
    Fencing,
    /// P4: an expired lease frees its slot; no grant while an unexpired one blocks it.
    Expiry,
    /// P5: when a slot frees while someone waits, a waiter is granted promptly.
    NoLostWakeup,
    /// P6: acquire returns within its wait bound (plus a small slack).
    BoundedWait,
    /// P7: a cancelled acquire leaves no grant behind.
    CancelSafety,
    /// P8: waiters are granted in arrival order (only where claimed).
    Fifo,
    /// P9: a crashed holder's slot frees within its TTL (where server-side expiry is claimed).
    CrashSafety,
    /// P10: a resource that checks fencing tokens never accepts a stale writer.
    ResourceSafety,
}

/// Whether a property constrains what may happen or what must eventually happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PropertyKind {
    /// Nothing bad happens.
    Safety,
    /// Something good happens (in time).
    Liveness,
    /// Both: the expiry property frees slots (liveness) and forbids early grants (safety).
    SafetyAndLiveness,
    /// An ordering promise.
    Fairness,
    /// Safety of the protected resource, end to end.
    EndToEndSafety,
}

impl Property {
    /// All properties, P1 to P10.
    pub const ALL: [Property; 10] = [
        Property::MutualExclusion,
        Property::Ownership,
        Property::Fencing,
        Property::Expiry,
        Property::NoLostWakeup,
        Property::BoundedWait,
        Property::CancelSafety,
        Property::Fifo,
        Property::CrashSafety,
        Property::ResourceSafety,
    ];

    /// The number in DESIGN.md: 1 for P1.
    pub fn number(self) -> u8 {
        Property::ALL.iter().position(|p| *p == self).expect("listed") as u8 + 1
    }

    /// `P1`…`P10`.
    pub fn code(self) -> String {
        format!("P{}", self.number())
    }

    /// The identifier results are written with (its JSON name), e.g. `mutual-exclusion`.
    pub fn id(self) -> &'static str {
        match self {
            Property::MutualExclusion => "mutual-exclusion",
            Property::Ownership => "ownership",
            Property::Fencing => "fencing",
            Property::Expiry => "expiry",
            Property::NoLostWakeup => "no-lost-wakeup",
            Property::BoundedWait => "bounded-wait",
            Property::CancelSafety => "cancel-safety",
            Property::Fifo => "fifo",
            Property::CrashSafety => "crash-safety",
            Property::ResourceSafety => "resource-safety",
        }
    }

    /// The plain-English name, e.g. "mutual exclusion".
    pub fn name(self) -> &'static str {
        match self {
            Property::MutualExclusion => "mutual exclusion",
            Property::Ownership => "ownership",
            Property::Fencing => "fencing",
            Property::Expiry => "expiry",
            Property::NoLostWakeup => "no lost wake-up",
            Property::BoundedWait => "bounded waits",
            Property::CancelSafety => "cancel safety",
            Property::Fifo => "FIFO",
            Property::CrashSafety => "crash safety",
            Property::ResourceSafety => "resource safety",
        }
    }

    /// One sentence a lock user understands.
    pub fn description(self) -> &'static str {
        match self {
            Property::MutualExclusion => "never more than `limit` unexpired grants per key",
            Property::Ownership => "release/refresh with a token that is not current changes nothing",
            Property::Fencing => "fencing tokens strictly increase per key, in grant order",
            Property::Expiry => "an expired lease frees its slot; no grant while an unexpired one blocks it",
            Property::NoLostWakeup => "when a slot frees while someone waits, a waiter is granted promptly",
            Property::BoundedWait => "acquire returns within its wait bound (+ small slack)",
            Property::CancelSafety => "a cancelled acquire leaves no grant behind",
            Property::Fifo => "waiters are granted in arrival order (only where claimed)",
            Property::CrashSafety => {
                "a crashed holder's slot frees within its TTL (where server-side expiry is claimed)"
            }
            Property::ResourceSafety => {
                "a resource that checks fencing tokens never accepts a stale writer, even under pauses"
            }
        }
    }

    /// Safety, liveness or fairness.
    pub fn kind(self) -> PropertyKind {
        match self {
            Property::MutualExclusion | Property::Ownership | Property::Fencing | Property::CancelSafety => {
                PropertyKind::Safety
            }
            Property::Expiry => PropertyKind::SafetyAndLiveness,
            Property::NoLostWakeup | Property::BoundedWait | Property::CrashSafety => PropertyKind::Liveness,
            Property::Fifo => PropertyKind::Fairness,
            Property::ResourceSafety => PropertyKind::EndToEndSafety,
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Micros = 50_000;

    fn acquire(lease: u32, from: Micros, to: Micros) -> LockOp {
        LockOp::Acquire { lease: LeaseId(lease), ttl: TTL, limit: 1, at: Window::new(from, to) }
    }

    #[test]
    fn a_held_lock_refuses_a_second_grant_until_released() {
        let mut spec = LockSpec::with_tolerance(1_000);
        assert!(spec.step(&acquire(1, 0, 10), Some(&LockRet::Granted { fence: 1 })));
        assert!(!spec.clone().step(&acquire(2, 20, 30), Some(&LockRet::Granted { fence: 2 })));
        assert!(spec.step(&acquire(2, 20, 30), Some(&LockRet::NotGranted)));
        let release = LockOp::Release { lease: LeaseId(1), at: Window::new(40, 50) };
        assert!(spec.step(&release, Some(&LockRet::Released(true))));
        assert!(spec.step(&acquire(3, 60, 70), Some(&LockRet::Granted { fence: 5 })));
    }

    #[test]
    fn fencing_tokens_must_increase() {
        let mut spec = LockSpec::with_tolerance(0);
        assert!(spec.step(&acquire(1, 0, 1), Some(&LockRet::Granted { fence: 7 })));
        assert!(spec.step(&LockOp::Release { lease: LeaseId(1), at: Window::at(2) }, Some(&LockRet::Released(true))));
        let stale = LockRet::Granted { fence: 7 };
        assert_eq!(spec.violated_by(&acquire(2, 3, 4), &stale), Some(Property::Fencing));
    }

    #[test]
    fn a_cancelled_acquire_may_hold_until_its_clean_up_and_never_after() {
        let withdraw = LockOp::Withdraw { lease: LeaseId(1), at: Window::new(10, 20) };
        // Granted before the clean-up: the slot is taken until the withdrawal, then free.
        let cancelled = LockOp::CancelledAcquire { lease: LeaseId(1), ttl: TTL, limit: 1, at: Window::new(0, 20) };
        let mut spec = LockSpec::with_tolerance(0);
        assert!(spec.step(&cancelled, None));
        assert!(spec.clone().step(&acquire(2, 5, 6), Some(&LockRet::NotGranted)));
        assert!(spec.step(&withdraw, Some(&LockRet::Withdrawn)));
        assert!(spec.step(&acquire(2, 30, 31), Some(&LockRet::Granted { fence: 2 })));
        // Reaching the locker after the clean-up: no grant, however free the key.
        let mut spec = LockSpec::with_tolerance(0);
        assert!(spec.step(&withdraw, Some(&LockRet::Withdrawn)));
        assert!(!spec.clone().step(&cancelled, Some(&LockRet::Granted { fence: 1 })));
        assert!(spec.step(&cancelled, None));
        assert_eq!(spec.holders().count(), 0, "a late cancelled acquire leaves no grant behind");
    }

    #[test]
    fn a_cancelled_acquire_is_granted_where_there_is_room_and_nothing_earlier_follows_it() {
        // Lease 1 lives from 0 to 50 ms; the cancelled acquire's window runs to 1 s.
        let cancelled =
            LockOp::CancelledAcquire { lease: LeaseId(2), ttl: TTL, limit: 1, at: Window::new(5, 1_000_000) };
        let mut spec = LockSpec::with_tolerance(1_000);
        assert!(spec.step(&acquire(1, 0, 10), Some(&LockRet::Granted { fence: 1 })));
        let mut granted = spec.clone();
        assert!(granted.step(&cancelled, Some(&LockRet::Granted { fence: 2 })));
        assert_eq!(granted.holders().collect::<Vec<_>>(), vec![LeaseId(2)], "lease 1 had ended by then");
        // It took effect once lease 1 could have ended (49 ms): what returned before that
        // cannot come after it — lease 1 was surely alive at 20 ms.
        let release = LockOp::Release { lease: LeaseId(1), at: Window::new(20, 21) };
        assert!(!granted.clone().step(&release, Some(&LockRet::Released(false))));
        assert!(!granted.clone().step(&acquire(3, 20, 21), Some(&LockRet::NotGranted)));
        assert!(spec.step(&release, Some(&LockRet::Released(true))), "placed before it, lease 1 is released");
        // With no room anywhere in its window (lease 1 refreshed past it), no grant at all.
        let mut refreshed = LockSpec::with_tolerance(1_000);
        let long = LockOp::Acquire { lease: LeaseId(1), ttl: 10_000_000, limit: 1, at: Window::new(0, 10) };
        assert!(refreshed.step(&long, Some(&LockRet::Granted { fence: 1 })));
        assert!(!refreshed.clone().step(&cancelled, Some(&LockRet::Granted { fence: 2 })));
        assert_eq!(refreshed.violated_by(&cancelled, &LockRet::Granted { fence: 2 }), Some(Property::MutualExclusion));
    }

    #[test]
    fn unclaimed_fencing_accepts_any_token_but_not_a_double_grant() {
        let mut spec = LockSpec::with_tolerance(0).with_fencing_claimed(false);
        assert!(spec.step(&acquire(1, 0, 1), Some(&LockRet::Granted { fence: 7 })));
        assert!(spec.step(&LockOp::Release { lease: LeaseId(1), at: Window::at(2) }, Some(&LockRet::Released(true))));
        assert!(spec.step(&acquire(2, 3, 4), Some(&LockRet::Granted { fence: 3 })), "a smaller token is fine");
        assert!(!spec.clone().step(&acquire(3, 5, 6), Some(&LockRet::Granted { fence: 9 })), "still held by lease 2");
    }

    #[test]
    fn near_the_lease_boundary_either_outcome_is_accepted() {
        let mut spec = LockSpec::with_tolerance(1_000);
        assert!(spec.step(&acquire(1, 0, 0), Some(&LockRet::Granted { fence: 1 })));
        // 0.5 ms before expiry, within the 1 ms tolerance: both answers are fine.
        assert!(spec.clone().step(&acquire(2, TTL - 500, TTL - 500), Some(&LockRet::Granted { fence: 2 })));
        assert!(spec.clone().step(&acquire(2, TTL - 500, TTL - 500), Some(&LockRet::NotGranted)));
        // 2 ms before: surely held.
        assert!(!spec.clone().step(&acquire(2, TTL - 2_000, TTL - 2_000), Some(&LockRet::Granted { fence: 2 })));
        // 2 ms after: surely expired, so refusing is an expiry violation.
        let late = acquire(2, TTL + 2_000, TTL + 2_000);
        assert_eq!(spec.violated_by(&late, &LockRet::NotGranted), Some(Property::Expiry));
    }

    #[test]
    fn a_stranger_cannot_release_and_a_lost_lease_reports_loss() {
        let mut spec = LockSpec::with_tolerance(0);
        assert!(spec.step(&acquire(1, 0, 1), Some(&LockRet::Granted { fence: 1 })));
        let stranger = LockOp::Release { lease: LeaseId(9), at: Window::at(5) };
        assert_eq!(spec.violated_by(&stranger, &LockRet::Released(true)), Some(Property::Ownership));
        let late_refresh = LockOp::Refresh { lease: LeaseId(1), ttl: TTL, at: Window::at(TTL + 10) };
        assert!(!spec.clone().step(&late_refresh, Some(&LockRet::Refreshed(true))));
        assert!(spec.step(&late_refresh, Some(&LockRet::Refreshed(false))));
    }

    #[test]
    fn a_semaphore_admits_limit_holders() {
        let mut spec = LockSpec::with_tolerance(0);
        let take = |lease, at| LockOp::Acquire { lease: LeaseId(lease), ttl: TTL, limit: 2, at: Window::at(at) };
        assert!(spec.step(&take(1, 0), Some(&LockRet::Granted { fence: 1 })));
        assert!(spec.step(&take(2, 1), Some(&LockRet::Granted { fence: 2 })));
        assert!(!spec.clone().step(&take(3, 2), Some(&LockRet::Granted { fence: 3 })));
        assert!(spec.step(&take(3, 2), Some(&LockRet::NotGranted)));
    }

    #[test]
    fn a_remaining_ttl_may_undersell_a_lease_and_binds_it_to_what_it_promises() {
        // Granted in [0, 5]: the lease ends in [TTL, TTL + 5]. Tolerances: 1 early, 100 late.
        let granted = || {
            let mut spec = LockSpec::with_tolerance(100).with_early_tolerance(1);
            assert!(spec.step(&acquire(1, 0, 5), Some(&LockRet::Granted { fence: 1 })));
            spec
        };
        let remaining_at = |at: Micros| LockOp::Remaining { lease: LeaseId(1), at: Window::at(at) };
        let answered = |at: Micros, left: Micros| {
            let mut spec = granted();
            spec.step(&remaining_at(at), Some(&LockRet::Remaining(Some(left)))).then_some(spec)
        };
        let exact = TTL - 1_000;
        assert!(answered(1_000, exact).is_some() && answered(1_000, exact + 5).is_some());
        // Ending it sooner only makes the holder stop early: within the late tolerance, fine.
        assert!(answered(1_000, exact - 100).is_some() && answered(1_000, exact - 101).is_none());
        // Held later than asked (a TTL rounded up on the server): within the late tolerance,
        // fine; past any end the lease may have, refused.
        assert!(answered(1_000, exact + 105).is_some() && answered(1_000, exact + 106).is_none());
        // A promise binds: another client cannot be granted the lock before the promised end.
        let take = |at: Micros| LockOp::Acquire { lease: LeaseId(2), ttl: TTL, limit: 1, at: Window::at(at) };
        let promised = answered(1_000, exact + 80).expect("within the late tolerance");
        assert!(!promised.clone().step(&take(TTL + 50), Some(&LockRet::Granted { fence: 2 })));
        assert!(promised.clone().step(&take(TTL + 80), Some(&LockRet::Granted { fence: 2 })));
        // Without the promise, a grant in the late tolerance is allowed (the lease may have ended).
        assert!(granted().step(&take(TTL + 50), Some(&LockRet::Granted { fence: 2 })));
        // Zero left, asked past the lease's latest end (a lagging expiry sweep): no promise.
        let zero = answered(TTL + 50, 0).expect("zero left promises nothing");
        assert!(zero.clone().step(&take(TTL + 51), Some(&LockRet::Granted { fence: 2 })));
        assert!(answered(TTL + 50, 55).is_some() && answered(TTL + 50, 56).is_none());
    }

    #[cfg(feature = "models")]
    #[test]
    fn invoke_agrees_with_is_valid_step() {
        let mut spec = LockSpec::with_tolerance(100);
        let ops = [
            acquire(1, 0, 5),
            acquire(2, 10, 20),
            LockOp::Remaining { lease: LeaseId(1), at: Window::at(30) },
            LockOp::Refresh { lease: LeaseId(1), ttl: TTL, at: Window::at(40) },
            LockOp::Release { lease: LeaseId(1), at: Window::at(50) },
            acquire(3, 60, 70),
        ];
        for op in &ops {
            let mut before = spec.clone();
            let ret = spec.invoke(op);
            assert!(before.is_valid_step(op, &ret), "{op:?} -> {ret:?}");
        }
        assert_eq!(spec.holders().collect::<Vec<_>>(), vec![LeaseId(3)]);
    }

    #[test]
    fn properties_are_numbered_one_to_ten() {
        let codes: Vec<String> = Property::ALL.iter().map(|p| p.code()).collect();
        assert_eq!(codes.first().map(String::as_str), Some("P1"));
        assert_eq!(codes.last().map(String::as_str), Some("P10"));
        assert_eq!(Property::NoLostWakeup.to_string(), "P5 no lost wake-up");
    }

    #[test]
    fn property_ids_are_their_json_names() {
        for property in Property::ALL {
            assert_eq!(serde_json::to_string(&property).unwrap(), format!("\"{}\"", property.id()));
        }
    }
}
