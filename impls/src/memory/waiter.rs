//! The slot through which a queued acquire receives its grant.
//!
//! The granter fills the slot while it holds the key table's lock; the waiter takes the grant
//! out (or cancels) also under that lock, so a grant and a cancellation can never both
//! happen — whichever comes second sees the first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::lease::Lease;
use crate::sync::{Arc, Mutex};

#[derive(Default)]
struct SlotState {
    grant: Option<Lease>,
    waker: Option<Waker>,
}

/// Shared between the waiter (who awaits it) and the key table (which fills it).
#[derive(Clone, Default)]
pub(crate) struct GrantSlot(Arc<Mutex<SlotState>>);

impl GrantSlot {
    /// Puts a grant in the slot and wakes the waiter.
    pub(crate) fn fill(&self, lease: Lease) {
        let waker = {
            let mut state = self.0.lock().unwrap();
            debug_assert!(state.grant.is_none(), "a waiter is granted at most once");
            state.grant = Some(lease);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes the grant out of the slot, if one arrived.
    pub(crate) fn take(&self) -> Option<Lease> {
        self.0.lock().unwrap().grant.take()
    }

    /// Resolves with the grant once the slot is filled.
    pub(crate) fn granted(&self) -> Granted<'_> {
        Granted(self)
    }
}

/// The future of [`GrantSlot::granted`].
pub(crate) struct Granted<'a>(&'a GrantSlot);

impl Future for Granted<'_> {
    type Output = Lease;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Lease> {
        let mut state = self.0.0.lock().unwrap();
        match state.grant.take() {
            Some(lease) => Poll::Ready(lease),
            None => {
                // Registered under the same lock `fill` takes: no wake-up can slip between
                // the check and the registration.
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
