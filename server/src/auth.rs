//! What stands between an unauthenticated client and the server: a cap on connections that
//! have not authenticated yet (a pass per connection, given back when it authenticates or
//! closes), and a delay before a wrong secret is answered that doubles with each failure
//! from the same address (forgotten after a quiet minute, not by a success from the same
//! address, which may be an attacker's neighbour behind the same NAT), so guessing is slow
//! and every guess holds one of the few pre-auth passes while it waits. A correct secret is
//! answered at once, whatever failed before it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::config::{EventSink, MAX_AUTH_FAILURE_DELAY, ServerEvent, worth_reporting};

/// Failures from an address older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

/// Addresses whose failures are remembered at once; beyond it the oldest are forgotten
/// (memory stays bounded whatever the number of addresses an attacker has).
const MAX_TRACKED_ADDRESSES: usize = 4096;

struct Failures {
    count: u32,
    last: Instant,
}

pub(crate) struct AuthGate {
    base_delay: Duration,
    max_unauthenticated: usize,
    unauthenticated: Arc<AtomicUsize>,
    refused: AtomicU64,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    events: EventSink,
}

/// A connection's place among those not yet authenticated.
pub(crate) struct PreAuthPass(Arc<AtomicUsize>);

impl Drop for PreAuthPass {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AuthGate {
    pub(crate) fn new(base_delay: Duration, max_unauthenticated: usize, events: EventSink) -> Self {
        AuthGate {
            base_delay,
            max_unauthenticated,
            unauthenticated: Arc::new(AtomicUsize::new(0)),
            refused: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
            events,
        }
    }

    /// A pass for a new connection, or `None` if all are taken (close it).
    pub(crate) fn admit(&self, peer: IpAddr) -> Option<PreAuthPass> {
        let taken = self
            .unauthenticated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_unauthenticated).then_some(n + 1))
            .is_ok();
        if taken {
            return Some(PreAuthPass(self.unauthenticated.clone()));
        }
        let refused = self.refused.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if worth_reporting(refused) {
            self.events.emit(ServerEvent::UnauthenticatedLimit { peer, limit: self.max_unauthenticated, refused });
        }
        None
    }

    pub(crate) fn unauthenticated(&self) -> usize {
        self.unauthenticated.load(Ordering::Acquire)
    }

    /// Records a wrong secret from `peer`; returns how long to wait before answering.
    pub(crate) fn failed(&self, peer: IpAddr) -> Duration {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&peer) {
            failures.retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                // Still full of recent failures: forget the older half.
                let mut lasts: Vec<Instant> = failures.values().map(|f| f.last).collect();
                let middle = lasts.len() / 2;
                let (_, median, _) = lasts.select_nth_unstable(middle);
                let median = *median;
                failures.retain(|_, f| f.last > median);
            }
        }
        let entry = failures.entry(peer).or_insert(Failures { count: 0, last: now });
        if now.duration_since(entry.last) >= FAILURE_MEMORY {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let count = entry.count;
        drop(failures);
        let delay = failure_delay(self.base_delay, count);
        if worth_reporting(u64::from(count)) {
            self.events.emit(ServerEvent::AuthFailed { peer, failures: count, delay });
        }
        delay
    }
}

/// `base` doubled for each earlier failure, at most [`MAX_AUTH_FAILURE_DELAY`].
pub(crate) fn failure_delay(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings).min(MAX_AUTH_FAILURE_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_per_failure_up_to_its_bound() {
        let base = Duration::from_millis(100);
        let delays: Vec<Duration> = (1..=8).map(|n| failure_delay(base, n)).collect();
        assert_eq!(delays[0], base);
        assert_eq!(delays[1], base * 2);
        assert_eq!(delays[3], base * 8);
        assert_eq!(delays[7], MAX_AUTH_FAILURE_DELAY);
        assert_eq!(failure_delay(Duration::from_secs(1), u32::MAX), MAX_AUTH_FAILURE_DELAY);
    }

    #[tokio::test]
    async fn failures_are_counted_per_address_and_passes_are_capped() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let events = events.clone();
            EventSink::new(move |e| events.lock().unwrap().push(e.clone()))
        };
        let gate = AuthGate::new(Duration::from_millis(10), 2, sink);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(gate.failed(a), Duration::from_millis(10));
        assert_eq!(gate.failed(a), Duration::from_millis(20));
        assert_eq!(gate.failed(b), Duration::from_millis(10), "another address starts afresh");
        assert_eq!(gate.failed(a), Duration::from_millis(40));
        assert_eq!(events.lock().unwrap().len(), 4, "each early failure is reported");
        // Passes: two, then refused, then free again once one is given back.
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert!(gate.admit(b).is_none());
        assert!(matches!(events.lock().unwrap().last(), Some(ServerEvent::UnauthenticatedLimit { limit: 2, .. })));
        drop(first);
        assert_eq!(gate.unauthenticated(), 1);
        assert!(gate.admit(b).is_some());
    }

    #[tokio::test]
    async fn the_failure_table_stays_bounded() {
        let gate = AuthGate::new(Duration::from_millis(1), 1, EventSink::new(|_| {}));
        for i in 0..(3 * MAX_TRACKED_ADDRESSES as u32) {
            gate.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(gate.failures.lock().unwrap().len() <= MAX_TRACKED_ADDRESSES);
    }
}
