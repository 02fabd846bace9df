//! A held lock as a value: optional auto-renew and a lost-lock signal.
//!
//! A lease can end without its holder's consent (expiry, a server restart, a partition).
//! [`LockGuard::lost`] resolves when that happens — when a renewal is refused, or when the
//! holder's own clock passes the lease's end without a successful renewal — so work done
//! under the lock can be abandoned instead of carried on unprotected.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use crate::error::LockError;
use crate::lease::Lease;
use crate::locker::Locker;
use crate::request::LeaseRequest;

/// When and how a guard renews its lease in the background.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoRenew {
    /// Renew once this fraction of the lease has passed (0 < fraction < 1). Default ½.
    pub at_fraction: f64,
    /// Renew up to this fraction of the lease *earlier*, at random, so that many holders
    /// do not renew in lockstep. Jitter is early-only: it never delays a renewal. Default 0.1.
    pub early_jitter: f64,
}

impl Default for AutoRenew {
    fn default() -> Self {
        AutoRenew { at_fraction: 0.5, early_jitter: 0.1 }
    }
}

/// Why a guard's lease was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The backend said the lease is no longer held (expired, or taken over).
    NotHeld,
    /// The holder's clock passed the lease's end without a successful renewal.
    Expired,
    /// Renewal failed with an error until the lease ran out.
    RenewFailed(String),
}

struct Shared {
    lease: Mutex<Lease>,
    lost: watch::Sender<Option<LostReason>>,
}

impl Shared {
    fn lease(&self) -> Lease {
        self.lease.lock().expect("guard lease mutex poisoned").clone()
    }

    fn mark_lost(&self, reason: LostReason) {
        self.lost.send_if_modified(|lost| {
            if lost.is_none() {
                *lost = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

/// A held lease that is released when dropped (best effort, in the background) or by
/// [`LockGuard::release`] (reporting whether it was still held).
pub struct LockGuard<L: Locker + ?Sized + 'static = dyn Locker> {
    locker: Arc<L>,
    shared: Arc<Shared>,
    renewer: Option<JoinHandle<()>>,
    released: bool,
}

impl<L: Locker + ?Sized + 'static> LockGuard<L> {
    /// Acquires `request` within `wait` and wraps the lease, renewing it in the background
    /// if `auto_renew` is given.
    pub async fn acquire(
        locker: Arc<L>,
        request: &LeaseRequest,
        wait: Duration,
        auto_renew: Option<AutoRenew>,
    ) -> Result<Self, LockError> {
        let lease = locker.acquire(request, wait).await?;
        Ok(Self::hold(locker, lease, auto_renew))
    }

    /// Wraps a lease already granted by `locker`.
    pub fn hold(locker: Arc<L>, lease: Lease, auto_renew: Option<AutoRenew>) -> Self {
        let (lost, _) = watch::channel(None);
        let shared = Arc::new(Shared { lease: Mutex::new(lease), lost });
        let renewer = auto_renew.map(|policy| tokio::spawn(renew_loop(locker.clone(), shared.clone(), policy)));
        LockGuard { locker, shared, renewer, released: false }
    }

    /// The current lease (its TTL and start move with each renewal).
    pub fn lease(&self) -> Lease {
        self.shared.lease()
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.borrow().is_some() || Instant::now() >= self.shared.lease().expires_at()
    }

    /// Resolves when the lease is lost: a renewal was refused, or the holder's clock passed
    /// the lease's end without a renewal. Cancel-safe; may be awaited repeatedly.
    pub async fn lost(&self) -> LostReason {
        let mut lost = self.shared.lost.subscribe();
        loop {
            if let Some(reason) = lost.borrow_and_update().clone() {
                return reason;
            }
            let deadline = self.shared.lease().expires_at();
            tokio::select! {
                changed = lost.changed() => {
                    if changed.is_err() {
                        // The sender lives in `shared`, which we hold: unreachable, but a
                        // lost signal is the safe answer.
                        return LostReason::Expired;
                    }
                }
                () = sleep_until(deadline) => {
                    if self.shared.lease().expires_at() <= Instant::now() {
                        self.shared.mark_lost(LostReason::Expired);
                    }
                }
            }
        }
    }

    /// Stops renewing and releases the lease. `Ok(true)` if it was still held.
    pub async fn release(mut self) -> Result<bool, LockError> {
        self.stop_renewing();
        self.released = true;
        let lease = self.shared.lease();
        self.locker.release(&lease).await
    }

    fn stop_renewing(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

impl<L: Locker + ?Sized + 'static> Drop for LockGuard<L> {
    fn drop(&mut self) {
        self.stop_renewing();
        if self.released {
            return;
        }
        // Best effort: a guard dropped outside a runtime leaves its lease to expire.
        let (locker, lease) = (self.locker.clone(), self.shared.lease());
        crate::cleanup::spawn(async move {
            let _ = locker.release(&lease).await;
        });
    }
}

async fn renew_loop<L: Locker + ?Sized>(locker: Arc<L>, shared: Arc<Shared>, policy: AutoRenew) {
    // `f64::clamp` passes NaN through (and panics on a NaN bound), which would kill this
    // task silently and let the lease expire: nonsense falls back to the defaults.
    let default = AutoRenew::default();
    let at_fraction = if policy.at_fraction.is_finite() { policy.at_fraction } else { default.at_fraction };
    let at_fraction = at_fraction.clamp(0.05, 0.95);
    let early_jitter = if policy.early_jitter.is_finite() { policy.early_jitter } else { default.early_jitter };
    let early_jitter = early_jitter.clamp(0.0, at_fraction - 0.01);
    let mut retry_at = None;
    loop {
        let lease = shared.lease();
        let attempt_at = retry_at.take().unwrap_or_else(|| {
            let jitter = rand::random::<f64>() * early_jitter;
            lease.acquired_at() + lease.ttl().mul_f64(at_fraction - jitter)
        });
        sleep_until(attempt_at).await;
        match locker.refresh(&lease, lease.ttl()).await {
            // Backends count the renewed TTL from when the request was sent.
            Ok(Some(renewed)) => *shared.lease.lock().expect("guard lease mutex poisoned") = renewed,
            Ok(None) => return shared.mark_lost(LostReason::NotHeld),
            Err(error) => {
                let now = Instant::now();
                if now >= lease.expires_at() {
                    return shared.mark_lost(LostReason::RenewFailed(error.to_string()));
                }
                // Try again while the lease lasts: after a quarter of what is left.
                let left = lease.expires_at() - now;
                retry_at = Some(now + (left / 4).max(Duration::from_millis(1)));
            }
        }
    }
}
