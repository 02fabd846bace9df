//! The time scales the checkers judge a history with.

use std::time::Duration;

/// The time scales a history is judged with: how far a lease may be seen ended early or held
/// late, how soon a freed slot must reach a waiter, when a waiter counts as queued. A
/// conformance run drives its backend at the same scales (every duration a scenario uses
/// derives from these, so a slow backend scales the whole suite with one number) and keeps
/// them with a history ([`KeptHistory`](crate::KeptHistory)), so that it is judged again the
/// same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    /// The short lease that expiry scenarios wait out. Long leases are multiples of it.
    pub base_ttl: Duration,
    /// How far past a lease's end it may still be seen held (expiry sweeps, timer slack), and
    /// how far a holder's belief (`acquired_at + ttl`) may outlast the backend's own expiry
    /// (an estimated grant instant).
    pub tolerance: Duration,
    /// How far *before* its end a lease may be seen ended: only clock skew between the
    /// backend and this process, and the backend's timer granularity, excuse that, since a
    /// lease ended early lets a second holder in. `None`: the same as `tolerance`. The suite
    /// raises it to the jitter it measures on the backend ([`Timing::calibrated`]).
    #[serde(default)]
    pub early_tolerance: Option<Duration>,
    /// How soon a freed slot must reach a waiter, and how far past its wait bound an acquire
    /// may return.
    pub prompt: Duration,
    /// How long after a waiter's request was sent it counts as queued, for FIFO order.
    pub arrival_gap: Duration,
    /// How long after its cancellation a cancelled acquire may still hold a grant (one that
    /// raced the cancellation, or that a server hands to a waiter whose connection is gone).
    /// `None`: one clean-up request, `min(tolerance, prompt)`. A backend that keeps a gone
    /// waiter queued until its wait bound and then grants it a whole lease (the trait's
    /// weaker promise: "any such grant ends with its TTL") sets the bound it can keep.
    pub cancel_cleanup: Option<Duration>,
    /// The longest time the backend was out of service during the run (frozen, cut off,
    /// down), if a fault took it out: it could not end a lease or clean up a cancelled
    /// acquire's grant meanwhile, and may take its usual slack to catch up. The late side
    /// ([`Timing::late_tolerance`]) and the clean-up bound grow by it; the early side, and a
    /// holder's belief (the exclusion checker), which guard against two holders, do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<Duration>,
}

impl Timing {
    /// For lockers in this process: 80 ms leases, 20 ms tolerance (1 ms before a lease's
    /// end: one clock), 100 ms hand-off bound.
    /// Generous next to the microseconds a memory hand-off takes, because a shared 2-core
    /// CI machine running other builds can stall a thread for tens of milliseconds, and a
    /// correctness gate must not cry wolf.
    pub const fn in_process() -> Self {
        Timing {
            base_ttl: Duration::from_millis(80),
            tolerance: Duration::from_millis(20),
            early_tolerance: Some(Duration::from_millis(1)),
            prompt: Duration::from_millis(100),
            arrival_gap: Duration::from_millis(5),
            cancel_cleanup: None,
            outage: None,
        }
    }

    /// For a server on loopback or a local container: 300 ms leases, 50 ms tolerance (5 ms
    /// before a lease's end: millisecond timers), 250 ms hand-off bound, 30 ms for a request to
    /// be queued.
    pub const fn networked() -> Self {
        Timing {
            base_ttl: Duration::from_millis(300),
            tolerance: Duration::from_millis(50),
            early_tolerance: Some(Duration::from_millis(5)),
            prompt: Duration::from_millis(250),
            arrival_gap: Duration::from_millis(30),
            cancel_cleanup: None,
            outage: None,
        }
    }

    /// For backends whose leases are whole seconds (dflockd): 2 s leases, 1 s tolerance
    /// (20 ms before a lease's end).
    pub const fn whole_seconds() -> Self {
        Timing {
            base_ttl: Duration::from_secs(2),
            tolerance: Duration::from_millis(1_000),
            early_tolerance: Some(Duration::from_millis(20)),
            prompt: Duration::from_millis(500),
            arrival_gap: Duration::from_millis(50),
            cancel_cleanup: None,
            outage: None,
        }
    }

    /// How long after its cancellation a cancelled acquire may still hold a grant: the stated
    /// [`Timing::cancel_cleanup`], else one clean-up request (a release, a closed connection):
    /// as prompt as the tolerance, and never later than a hand-off.
    pub fn cancel_cleanup_bound(&self) -> Duration {
        self.cancel_cleanup.unwrap_or(self.tolerance.min(self.prompt)) + self.outage.unwrap_or_default()
    }

    /// How far past its end a lease may still be seen held: [`Timing::tolerance`], plus the
    /// [`Timing::outage`] during which the backend could not end it.
    pub fn late_tolerance(&self) -> Duration {
        self.tolerance + self.outage.unwrap_or_default()
    }

    /// How far before its end a lease may be seen ended ([`Timing::early_tolerance`]), never
    /// more than [`Timing::tolerance`].
    pub fn early_tolerance(&self) -> Duration {
        self.early_tolerance.unwrap_or(self.tolerance).min(self.tolerance)
    }

    /// These time scales with the early tolerance raised to cover `jitter`, the spread of
    /// the backend's round trips measured before a run: twice the jitter, so that a request
    /// delayed as much as the worst measured one is still judged fairly. The stated value
    /// stays a floor, the late tolerance a ceiling.
    pub fn calibrated(mut self, jitter: Duration) -> Self {
        self.early_tolerance = Some((jitter * 2).max(self.early_tolerance()).min(self.tolerance));
        self
    }

    /// A lease long enough that ending it 5 % early is more than twice the early tolerance,
    /// and at least [`Timing::base_ttl`]: what the lease-boundary check holds.
    pub fn boundary_ttl(&self) -> Duration {
        self.base_ttl.max(self.early_tolerance() * 40).max(Duration::from_millis(250))
    }

    /// Every duration multiplied by `factor` (e.g. 2.0 on a slow CI machine).
    pub fn scaled(self, factor: f64) -> Self {
        Timing {
            base_ttl: self.base_ttl.mul_f64(factor),
            tolerance: self.tolerance.mul_f64(factor),
            early_tolerance: self.early_tolerance.map(|d| d.mul_f64(factor)),
            prompt: self.prompt.mul_f64(factor),
            arrival_gap: self.arrival_gap.mul_f64(factor),
            cancel_cleanup: self.cancel_cleanup.map(|d| d.mul_f64(factor)),
            outage: self.outage,
        }
    }

    /// A lease that outlives any scenario step: 50 × `base_ttl`.
    pub fn long_ttl(&self) -> Duration {
        self.base_ttl * 50
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing::in_process()
    }
}
