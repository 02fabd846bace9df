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

    /// A URL by which a process of its own reaches the same service (`redis://…`): how the
    /// nemesis starts a client as a driver process it can pause or kill. `None` (the default)
    /// for a backend that lives in this process only, such as the memory locker.
    fn url(&self) -> Option<String> {
        None
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
            fn url(&self) -> Option<String> {
                (**self).url()
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

/// A backend together with the servers it runs on: they live as long as the backend and stop
/// when it is dropped, so a test that builds one owns its servers (a fixture per test, as
/// redis-rs's test contexts do) and nothing leaks from one test into the next.
pub struct Served<B> {
    backend: B,
    // Declared after `backend`, so clients' backend is dropped before the servers stop.
    _servers: Box<dyn std::any::Any + Send + Sync>,
}

impl<B: Backend> Served<B> {
    /// `backend` running on `servers` (a `Service`, a `Vec` of them, a cluster — anything whose
    /// `Drop` stops them).
    pub fn new(backend: B, servers: impl std::any::Any + Send + Sync) -> Self {
        Served { backend, _servers: Box::new(servers) }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
}

#[async_trait]
impl<B: Backend> Backend for Served<B> {
    fn name(&self) -> String {
        self.backend.name()
    }
    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        self.backend.connect().await
    }
    fn timing(&self) -> Timing {
        self.backend.timing()
    }
    async fn cut_sessions(&self) -> bool {
        self.backend.cut_sessions().await
    }
    fn url(&self) -> Option<String> {
        self.backend.url()
    }
}

/// What a [`conformance_suite!`](crate::conformance_suite) test may be given: a backend, or
/// `Option<backend>` where `None` means its servers could not be started and the run allows
/// skipping (`LOCKCHECK_SERVICES=skip`; the service layer has printed why).
pub trait MaybeBackend {
    /// The backend.
    type Backend: Backend;
    /// The backend, or `None` to skip.
    fn into_backend(self) -> Option<Self::Backend>;
}

impl<B: Backend> MaybeBackend for B {
    type Backend = B;
    fn into_backend(self) -> Option<B> {
        Some(self)
    }
}

impl<B: Backend> MaybeBackend for Option<B> {
    type Backend = B;
    fn into_backend(self) -> Option<B> {
        self
    }
}
