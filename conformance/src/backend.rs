//! What the suite runs against: a [`Backend`] hands out fresh clients of one lock service.
//!
//! Each simulated client of a scenario or workload gets its own [`Backend::connect`], so
//! concurrent clients really are separate connections (the failure classes the suite hunts —
//! lost wake-ups, double grants across nodes — live between connections). A single-process
//! locker is a backend through [`SharedLocker`], whose clients all share one locker.

use std::sync::Arc;

use async_trait::async_trait;
use lockcheck_history::Timing;
use lockcheck_impls::{LockError, Locker, MemoryLocker};

/// A lock service the suite can open clients to.
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use lockcheck_conformance::{Backend, Timing};
/// use lockcheck_impls::{LockError, Locker, MemoryLocker};
///
/// /// One fresh locker per client would be wrong for memory (they would not share state);
/// /// a networked backend opens a connection here instead.
/// struct Shared(Arc<MemoryLocker>);
///
/// #[async_trait]
/// impl Backend for Shared {
///     fn name(&self) -> String {
///         "memory".into()
///     }
///     async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
///         Ok(self.0.clone())
///     }
///     fn timing(&self) -> Timing {
///         Timing::in_process()
///     }
/// }
/// ```
#[async_trait]
pub trait Backend: Send + Sync {
    /// A short name for reports, e.g. `memory` or `redis://127.0.0.1:6379`.
    fn name(&self) -> String;

    /// A fresh client (a new connection where the backend has connections). Capabilities are
    /// read from the client's [`Locker::capabilities`].
    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError>;

    /// The time scales this backend needs: leases long enough for its granularity (dflockd
    /// leases are whole seconds), hand-off bounds that include its round trips.
    fn timing(&self) -> Timing {
        Timing::in_process()
    }

    /// Cuts every open client session as a network fault would: the clients' connections
    /// break and nobody tells the holders. `false` where this backend cannot (the default);
    /// checks that need it then report their claim as "not checked".
    async fn cut_sessions(&self) -> bool {
        false
    }
}

macro_rules! forward_backend {
    ($($ptr:ty),*) => {$(
        #[async_trait]
        impl<B: Backend + ?Sized> Backend for $ptr {
            fn name(&self) -> String {
                (**self).name()
            }
            async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
                (**self).connect().await
            }
            fn timing(&self) -> Timing {
                (**self).timing()
            }
            async fn cut_sessions(&self) -> bool {
                (**self).cut_sessions().await
            }
        }
    )*};
}

forward_backend!(Arc<B>, Box<B>);

/// A backend whose clients all share one locker: the memory locker, or any single-process
/// locker (the built-in mutants).
#[derive(Clone)]
pub struct SharedLocker {
    name: String,
    locker: Arc<dyn Locker>,
    timing: Timing,
}

impl SharedLocker {
    /// Every client is `locker`; reports use `locker.describe()` as the name.
    pub fn new(locker: Arc<dyn Locker>) -> Self {
        SharedLocker { name: locker.describe(), locker, timing: Timing::in_process() }
    }

    /// A fresh [`MemoryLocker`].
    pub fn memory() -> Self {
        SharedLocker::new(Arc::new(MemoryLocker::new()))
    }

    /// The same backend reported under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same backend with other time scales.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }
}

#[async_trait]
impl Backend for SharedLocker {
    fn name(&self) -> String {
        self.name.clone()
    }
    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        Ok(self.locker.clone())
    }
    fn timing(&self) -> Timing {
        self.timing
    }
}
