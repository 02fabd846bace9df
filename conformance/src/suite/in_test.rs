//! What a [`conformance_suite!`](crate::conformance_suite) test runs: one check, on a runtime
//! of its own, against a backend built inside that runtime.

use super::{Status, SuiteConfig, check_info, run_check};
use crate::backend::{Backend, MaybeBackend};

/// Runs check `name` against the backend that `backend` builds, on a fresh multi-threaded
/// runtime, and panics with the report unless the check passed, is not claimed, or found only
/// what the backend's own claims predict. A `None` backend (servers that could not be started,
/// where the run allows skipping) returns at once.
///
/// `backend` is called with the runtime entered, so a constructor may do what a tokio
/// program's constructors do: spawn a task, bind a `tokio::net::TcpListener`, or
/// `Handle::current().block_on` its own async set-up. The backend is dropped in the same
/// context, before the runtime shuts down, so a `Drop` that spawns its clean-up works too.
#[doc(hidden)]
pub fn run_check_in_test<M: MaybeBackend>(backend: impl FnOnce() -> M, name: &str, config: SuiteConfig) {
    let check = check_info(name).unwrap_or_else(|| panic!("no conformance check named {name}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance test");
    let entered = runtime.enter();
    let Some(backend) = backend().into_backend() else {
        eprintln!("lockcheck: {name} skipped: no backend (LOCKCHECK_SERVICES=skip)");
        return;
    };
    eprintln!(
        "lockcheck: {name} on {} with seed {} (LOCKCHECK_SEED={} to replay)",
        backend.name(),
        config.seed,
        config.seed
    );
    let result = runtime.block_on(run_check(&backend, check, &config));
    let backend_name = backend.name();
    drop(backend);
    drop(entered);
    match result.status() {
        Status::Passed => {}
        Status::NotClaimed => eprintln!("lockcheck: {name} not claimed by {backend_name}: skipped, not passed"),
        Status::NotChecked => {
            eprintln!(
                "lockcheck: {name} on {backend_name}: claimed, but this backend cannot be put through it: not checked"
            )
        }
        Status::Predicted => {
            eprintln!("lockcheck: {name} on {backend_name}: a violation its claims predict");
            for note in &result.notes {
                eprintln!("note: {note}");
            }
        }
        status => {
            let mut message = format!("{name} on {backend_name}: {status} (seed {})\n", config.seed);
            for note in &result.notes {
                message.push_str(&format!("note: {note}\n"));
            }
            for counterexample in &result.counterexamples {
                message.push_str(&format!("{counterexample}\n"));
            }
            panic!("{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use lockcheck_impls::{LockError, Locker};

    use super::run_check_in_test;
    use crate::{Backend, SharedLocker, SuiteConfig};

    /// Needs a runtime at both ends of its life: set up asynchronously, cleans up in a task.
    struct NeedsRuntime(SharedLocker);

    impl NeedsRuntime {
        fn start() -> Self {
            tokio::runtime::Handle::current().block_on(tokio::time::sleep(Duration::from_millis(1)));
            NeedsRuntime(SharedLocker::memory())
        }
    }

    impl Drop for NeedsRuntime {
        fn drop(&mut self) {
            tokio::spawn(async {});
        }
    }

    #[async_trait]
    impl Backend for NeedsRuntime {
        fn name(&self) -> String {
            self.0.name()
        }
        async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
            self.0.connect().await
        }
    }

    #[test]
    fn the_backend_is_built_and_dropped_inside_the_runtime() {
        run_check_in_test(NeedsRuntime::start, "double_try_acquire_fails", SuiteConfig::with_seed(1));
    }
}
