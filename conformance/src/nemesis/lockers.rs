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
    /// An acquire whose outcome is unknown is reported as not granted: a client that turns
    /// a time-out on the wire into a refusal. A request a frozen server still holds is
    /// granted when the server resumes, to a lease nobody knows of — the classic "timeout
    /// means no" bug.
    Guess,
    /// Every error but a wait running out is reported as unknown, even one that says nothing
    /// happened: pessimistic, never wrong.
    Pessimist,
}

struct Wrapped {
    inner: Arc<dyn Locker>,
    rewrite: Rewrite,
}

impl Wrapped {
    fn acquire_error(&self, error: LockError) -> LockError {
        match self.rewrite {
            Rewrite::Guess if error.is_indeterminate() => LockError::TimedOut { waited: Duration::ZERO },
            _ => self.other_error("acquire", error),
        }
    }

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
        match self.inner.try_acquire(request).await {
            Err(error) if matches!(self.rewrite, Rewrite::Guess) && error.is_indeterminate() => Ok(None),
            result => result.map_err(|error| self.other_error("try_acquire", error)),
        }
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        self.inner.acquire(request, wait).await.map_err(|error| self.acquire_error(error))
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

/// A mutant caught only under faults: the clients of `inner` report an acquire whose outcome
/// is unknown as not granted. With the server answering it is `inner`; with the server frozen,
/// a request that times out on the client is still granted on resume, and the history shows
/// the key refused to others while no recorded lease holds it.
pub struct GuessingBackend;

impl GuessingBackend {
    /// `inner` with the mutation.
    pub fn wrap<B: Backend + 'static>(inner: B) -> Box<dyn Backend> {
        Box::new(WrappingBackend { inner, rewrite: Rewrite::Guess, label: "mutant: timeout means not granted" })
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
