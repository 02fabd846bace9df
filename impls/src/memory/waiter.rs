//! The slot through which a queued acquire receives its grant.
//!
//! The granter fills the slot while it holds the key table's lock; a cancelled waiter empties
//! it under that lock too ([`super::table::Table::withdraw`]), so a grant and a cancellation
//! cannot both take effect: whichever comes second sees the first. The slot's own mutex makes
//! "check for a grant, else register the waker" atomic against `fill`, which is what rules out
//! a lost wake-up.
//!
//! The slot also records when the waiter's timer is armed, and carries a *re-arm* signal: the
//! table nudges the head of a key's queue when its timer would fire after the key's earliest
//! lease end (see the table's module doc), so it re-arms instead of sleeping past it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use crate::Lease;
use crate::sync::{Arc, Mutex};

#[derive(Default)]
struct SlotState {
    grant: Option<Lease>,
    armed_at: Option<Instant>,
    rearm: bool,
    waker: Option<Waker>,
}

/// Shared between the waiter (who awaits it) and the key table (which fills it).
#[derive(Clone, Default)]
pub(crate) struct GrantSlot(Arc<Mutex<SlotState>>);

/// What woke a waiter.
pub(crate) enum SlotEvent {
    /// Its grant arrived.
    Granted(Lease),
    /// Its key's earliest deadline (or its place at the head of the queue) changed: re-read
    /// it.
    Rearm,
}

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

    /// Records that the waiter's timer fires at `at`. Called under the table lock.
    pub(crate) fn arm(&self, at: Instant) {
        self.0.lock().unwrap().armed_at = Some(at);
    }

    /// Asks the waiter to re-arm if its timer fires after `end`. Called under the table lock.
    pub(crate) fn nudge_if_armed_after(&self, end: Instant) {
        let waker = {
            let mut state = self.0.lock().unwrap();
            if state.armed_at.is_some_and(|armed_at| armed_at <= end) {
                return;
            }
            state.rearm = true;
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

    /// Resolves with the grant, or with [`SlotEvent::Rearm`] after a nudge. A grant wins
    /// over a pending nudge.
    pub(crate) fn next_event(&self) -> NextEvent<'_> {
        NextEvent(self)
    }
}

/// The future of [`GrantSlot::next_event`].
pub(crate) struct NextEvent<'a>(&'a GrantSlot);

impl Future for NextEvent<'_> {
    type Output = SlotEvent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SlotEvent> {
        let mut state = self.0.0.lock().unwrap();
        if let Some(lease) = state.grant.take() {
            state.rearm = false;
            return Poll::Ready(SlotEvent::Granted(lease));
        }
        if std::mem::take(&mut state.rearm) {
            return Poll::Ready(SlotEvent::Rearm);
        }
        // Registered under the same lock `fill` and `nudge` take: no wake-up can slip between
        // the check and the registration.
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
