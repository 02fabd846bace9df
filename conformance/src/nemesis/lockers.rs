//! Lockers that prove the nemesis both ways: one broken only under faults, which it must
//! catch, and one correct but unusual under faults, which it must pass.
//!
//! Both wrap a correct locker and touch only its errors, so without a fault — where the
//! wrapped locker answers every request — they behave exactly like it, and the plain random
//! workload cannot tell them apart from it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_history::Timing;
use lockcheck_impls::{Capabilities, Lease, LeaseRequest, LockError, Locker, Queued};

use crate::backend::Backend;

/// How a wrapper rewrites an error of the wrapped locker.
#[derive(Clone, Copy)]
enum Rewrite {
    /// An acquire that gave up on a server that did not answer (its outcome unknown, or its
    /// wait run out while the request was on the wire) is sent again with the whole wait
    /// bound, up to three times: a client whose retry after a time-out starts a fresh budget,
    /// so the caller waits several bounds while a server is frozen.
    Retry,
    /// Every error but a wait running out is reported as unknown, even one that says nothing
    /// happened: pessimistic, never wrong.
    Pessimist,
}

struct Wrapped {
    inner: Arc<dyn Locker>,
    rewrite: Rewrite,
}

impl Wrapped {
    fn other_error(&self, operation: &'static str, error: LockError) -> LockError {
        match self.rewrite {
            Rewrite::Pessimist if !error.is_timeout() && !error.is_invalid_input() => {
                LockError::indeterminate(operation, error.to_string())
            }
            _ => error,
        }
    }
}

#[async_trait]
impl Locker for Wrapped {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        self.inner.try_acquire(request).await.map_err(|error| self.other_error("try_acquire", error))
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let mut tries = 1;
        loop {
            match self.inner.acquire(request, wait).await {
                Err(error) if matches!(self.rewrite, Rewrite::Retry) && tries < 3 && unanswered(&error) => tries += 1,
                result => return result.map_err(|error| self.other_error("acquire", error)),
            }
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await.map_err(|error| self.other_error("release", error))
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.inner.refresh(lease, ttl).await.map_err(|error| self.other_error("refresh", error))
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        self.inner.remaining_ttl(lease).await.map_err(|error| self.other_error("remaining_ttl", error))
    }

    fn queued(&self) -> Option<Queued> {
        self.inner.queued()
    }
}

/// The server did not answer in time: the outcome is unknown, or the wait ran out while the
/// request was on the wire. (A wait that ran out with the server answering "held" is neither.)
fn unanswered(error: &LockError) -> bool {
    error.is_indeterminate() || matches!(error, LockError::TimedOutLocally { .. })
}

struct WrappingBackend<B> {
    inner: B,
    rewrite: Rewrite,
    label: &'static str,
}

#[async_trait]
impl<B: Backend> Backend for WrappingBackend<B> {
    fn name(&self) -> String {
        format!("{} ({})", self.inner.name(), self.label)
    }

    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        let inner = self.inner.connect().await?;
        Ok(Arc::new(Wrapped { inner, rewrite: self.rewrite }))
    }

    fn timing(&self) -> Timing {
        self.inner.timing()
    }
}

/// A mutant caught only under faults: the clients of `inner` send an acquire that the server
/// did not answer again, with the whole wait bound each time. With the server answering it is
/// `inner`; with the server frozen, the caller waits past its bound (P6).
pub struct GuessingBackend;

impl GuessingBackend {
    /// `inner` with the mutation.
    pub fn wrap<B: Backend + 'static>(inner: B) -> Box<dyn Backend> {
        Box::new(WrappingBackend {
            inner,
            rewrite: Rewrite::Retry,
            label: "mutant: retries a time-out with a fresh bound",
        })
    }
}

/// A correct but unusual backend: the clients of `inner` report every failure as unknown
/// (except a wait running out), even where the outcome is certain. Nothing it says is false;
/// the checkers must weigh both outcomes of every such operation and still pass it.
pub struct PessimistBackend;

impl PessimistBackend {
    /// `inner`, pessimistic.
    pub fn wrap<B: Backend + 'static>(inner: B) -> Box<dyn Backend> {
        Box::new(WrappingBackend { inner, rewrite: Rewrite::Pessimist, label: "every failure reported unknown" })
    }
}
