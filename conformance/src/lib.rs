//! The lockcheck conformance harness: tells anyone whether a lock backend is correct.
//!
//! - [`history`]: a recorder that wraps any [`Locker`] and records
//!   every operation with its invoke/return instants and outcome (ok, failed, indeterminate).
//! - [`checkers`]: linearizability against the spec (memoizing Wing–Gong–Lowe, per key, with a
//!   budget), real-time exclusion, fencing, bounded waits, FIFO. Each says Valid, Invalid with
//!   a minimal counterexample, or Unknown — never a silent pass.
//!
//!   The history format and the checkers are the `lockcheck-history` crate's, re-exported
//!   here: a user who only judges histories depends on that crate alone, without tokio.
//! - [`suite`]: the checks, written once: scenarios (every behaviour the original Go lockers
//!   tested and more), a sequential model-based test with the spec as reference, and seeded
//!   concurrent random workloads. Capability-aware: unclaimed properties are reported as
//!   "not claimed".
//! - [`mutants`]: deliberately broken lockers the suite must catch.
//! - `peers` (with `redis` or `nats`): ports of the Go lockers lockcheck started from — the
//!   peers the benchmarks race, and the raw material of the service mutants.
//! - `faults` and `nemesis` (with `services`): scripted fault stories, and faults injected on
//!   a seeded schedule during the random workload with the whole history judged.
//! - [`backends`]: backend URLs (`memory`, `redis://…`, …) to [`Backend`]s, and each real
//!   backend as the suite sees it (behind its feature).
//! - `driver` (with `services`): the driver protocol that brings a locker in another process
//!   (any language) to the suite through `exec:` URLs, and a driver for every URL lockcheck knows.
//! - [`guide`]: writing a backend of your own, and every rule the checks rely on.
//!
//! # Plugging in a backend
//!
//! The [`guide`] walks a backend author from nothing to a passing suite and lists what the
//! checks assume of a backend, each rule with its reason. The lock API a backend implements
//! ([`Locker`], [`Lease`], [`LeaseRequest`], [`LockError`], [`Capabilities`]) is re-exported
//! here, so one import path serves.
//!
//! In short: implement [`Backend`] (or wrap a single-process locker in [`SharedLocker`]),
//! then either run the whole suite and read the report ([`run_suite_observed`] reports each
//! check as it goes):
//!
//! ```
//! use lockcheck_conformance::{run_suite, SharedLocker, SuiteConfig, Status};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
//! let backend = SharedLocker::memory();
//! let config = SuiteConfig::with_seed(7).only(["double_try_acquire_fails", "fencing_increases"]);
//! let report = run_suite(&backend, &config).await;
//! println!("{report}");
//! assert_eq!(report.status(), Status::Passed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! or generate one `#[test]` per check in your own crate's `tests/`, the way ripgrep's
//! `rgtest!` does — each test panics with the counterexample when its check fails, and a
//! check your backend does not claim prints "not claimed". Each test builds the backend
//! inside its own tokio runtime, so a constructor may spawn tasks:
//!
//! ```
//! use lockcheck_conformance::{conformance_suite, SharedLocker, SuiteConfig};
//!
//! conformance_suite!(memory, SharedLocker::memory());
//!
//! // With your own configuration (seed, cases, time scales):
//! conformance_suite!(memory_quick, SharedLocker::memory(), SuiteConfig::default().cases(1));
//! # fn main() {}
//! ```
//!
//! # Environment
//!
//! Every variable the suite reads:
//!
//! | variable | meaning |
//! |---|---|
//! | `LOCKCHECK_SEED` | the seed of every randomized check (default: random, printed). |
//! | `LOCKCHECK_HISTORY_DIR` | a directory where a random workload that fails keeps its history (`random_workload-<seed>.json`), for `lockcheck check --recheck`. |
//!
//! The servers the suites run against are `lockcheck-support`'s fixtures, which document their
//! own variables.
#![deny(missing_docs)]

mod backend;
pub mod backends;
pub mod guide;
pub mod history;
pub mod mutants;
#[cfg(any(feature = "redis", feature = "nats"))]
pub mod peers;
pub mod suite;

#[cfg(feature = "services")]
pub mod driver;
#[cfg(feature = "services")]
pub mod faults;
#[cfg(feature = "services")]
pub mod nemesis;

pub use backend::{Backend, MaybeBackend, Served, SharedLocker};
pub use history::{History, Recorder, RecordingLocker};
pub use lockcheck_history::{Counterexample, Timing, Verdict, checkers};
pub use lockcheck_model::spec::Property;
pub use suite::{
    CHECKS, CheckInfo, CheckResult, Claim, Status, SuiteConfig, SuiteReport, run_check, run_suite, run_suite_observed,
};
// The lock API a backend implements, so that a backend author imports from one crate.
pub use lockcheck_impls::{Capabilities, FencingToken, Lease, LeaseRequest, LockError, Locker, OwnerToken};

/// Expands to a module `$name` with one `#[test]` per check of the suite, run against
/// `$backend`. An optional third argument is the [`SuiteConfig`].
///
/// `$backend` is an expression evaluated afresh in every test, inside that test's tokio
/// runtime (multi-threaded, time and I/O enabled): a constructor may `tokio::spawn`, bind a
/// tokio socket, or run async set-up with `tokio::runtime::Handle::current().block_on(…)`.
/// It must not `.await` (it is not in an async block). The backend is dropped inside the
/// runtime too, before it shuts down. See the [guide](crate::guide) for a worked example.
/// It may also be an `Option` of a backend ([`MaybeBackend`]): a [`Served`] backend whose
/// servers a test starts for itself is `None` when they cannot be started and the run allows
/// skipping, and the test then prints that it skipped.
///
/// A test fails on a violated property *and* on an unknown verdict (a backend error, a
/// checker out of budget); a check whose capability the backend does not claim passes and
/// prints "not claimed", as does a violation the backend's own claims predict (printed with
/// its remedy) and a claim the backend cannot be put to the test of ("not checked").
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $backend:expr) => {
        $crate::conformance_suite!($name, $backend, $crate::SuiteConfig::default());
    };
    ($name:ident, $backend:expr, $config:expr) => {
        $crate::conformance_suite!(@tests $name, $backend, $config,
            double_try_acquire_fails release_by_non_holder_is_noop acquire_waits_then_wins
            ttl_expiry_frees_lock lease_lasts_its_ttl acquire_honours_wait_bound
            wait_bound_under_contention no_lost_wakeup next_holder_survives_old_ttl refresh_extends
            refresh_after_loss_reports_loss remaining_ttl_counts_down racing_try_acquires
            fencing_increases cancelled_acquire_leaves_nothing fifo_hand_off hand_off_is_pushed
            semaphore_admits_limit semaphore_waiters crashed_holder_frees_within_ttl
            session_cut_under_holder stale_holder_fenced_off bad_input_changes_nothing sequential_model
            random_workload);
    };
    (@tests $name:ident, $backend:expr, $config:expr, $($check:ident)*) => {
        #[cfg(test)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $check() {
                    // A closure, so the backend is built inside the test's runtime.
                    $crate::suite::run_check_in_test(|| $backend, stringify!($check), $config);
                }
            )*
        }
    };
}
