//! Mutants: deliberately broken lockers, one per known failure class. The suite must catch
//! every one with a counterexample — that is how the harness proves it can fail
//! (`lockcheck selftest`).
//!
//! [`builtin`] are single-process lockers that wrap the correct
//! [`MemoryLocker`](lockcheck_impls::MemoryLocker) and break exactly one thing each.
//! Backend modules register mutants of real services (a Redis release by unconditional `DEL`,
//! …) in [`service_mutants`] behind their cargo features; [`all`] is both lists.

mod builtin;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis;

use lockcheck_model::spec::Property;

use crate::backend::Backend;

/// A flawed backend and the property it is expected to break.
pub struct Mutant {
    /// A short name, e.g. `release-without-ownership-check`.
    pub name: &'static str,
    /// The failure class from DESIGN.md it reproduces, in a sentence.
    pub failure_class: &'static str,
    /// The property a correct harness should report violated.
    pub expected_to_violate: Property,
    /// Other properties the flaw also breaks, one of which a run may show first (a semaphore
    /// admitting every waiter at once also grants them out of order): caught all the same.
    pub also_violates: &'static [Property],
    /// The flawed backend.
    pub backend: Box<dyn Backend>,
}

impl std::fmt::Debug for Mutant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutant")
            .field("name", &self.name)
            .field("failure_class", &self.failure_class)
            .field("expected_to_violate", &self.expected_to_violate)
            .finish_non_exhaustive()
    }
}

/// The built-in single-process mutants.
pub fn builtin() -> Vec<Mutant> {
    builtin::mutants()
}

/// Correct backends that behave unlike the reference lockers, which the suite must pass: a
/// checker is proven by a broken backend it catches *and* by a correct, unusual one it does not
/// flag. (name, backend).
pub fn unusual_but_correct() -> Vec<(&'static str, Box<dyn Backend>)> {
    vec![
        ("memory-sessions: leases freed when the client's session ends, and said so", builtin::session_bound_memory()),
        (
            "memory-lenient-keys: keys with whitespace and control characters accepted and locked",
            builtin::lenient_keys_memory(),
        ),
    ]
}

/// Mutants of real services, registered by backend modules behind their features. Each
/// backend adds one line here, e.g. `#[cfg(feature = "redis")] mutants.extend(redis::mutants());`.
pub fn service_mutants() -> Vec<Mutant> {
    #[allow(unused_mut)]
    let mut mutants: Vec<Mutant> = Vec::new();
    #[cfg(feature = "redis")]
    mutants.extend(redis::mutants());
    #[cfg(feature = "nats")]
    mutants.extend(nats::mutants());
    #[cfg(feature = "etcd")]
    mutants.extend(etcd::mutants());
    mutants
}

/// Every mutant: [`builtin`] then [`service_mutants`].
pub fn all() -> Vec<Mutant> {
    let mut mutants = builtin();
    mutants.extend(service_mutants());
    mutants
}

pub use lockcheck_report::documents::{Hunt, MutantOutcome};

/// Runs the suite's checks (those `config` selects) in order against `mutant` until one reports
/// a violation: the one loop behind `lockcheck selftest` and every "each mutant is caught" test.
pub async fn hunt(mutant: &Mutant, config: &crate::SuiteConfig) -> MutantOutcome {
    let mut hunt = MutantOutcome {
        mutant: mutant.name.to_owned(),
        failure_class: mutant.failure_class.to_owned(),
        expected: mutant.expected_to_violate,
        status: Hunt::Survived,
        caught_by: None,
        check: None,
        counterexample_operations: None,
        time_to_catch: std::time::Duration::ZERO,
        counterexample: None,
    };
    for check in crate::suite::selected(config) {
        let result = crate::run_check(mutant.backend.as_ref(), check, config).await;
        hunt.time_to_catch += result.elapsed;
        if let Some(why) = result.notes.iter().find(|note| note.starts_with("could not connect")) {
            hunt.status = Hunt::NotRun;
            hunt.check = Some(why.clone());
            return hunt;
        }
        if result.status() == crate::Status::Violated {
            let counterexample = result
                .counterexamples
                .iter()
                .find(|c| c.property == mutant.expected_to_violate)
                .or(result.counterexamples.iter().find(|c| mutant.also_violates.contains(&c.property)))
                .or(result.counterexamples.first())
                .cloned();
            hunt.caught_by = counterexample.as_ref().map(|c| c.property);
            let expected =
                |property| property == mutant.expected_to_violate || mutant.also_violates.contains(&property);
            hunt.status = match hunt.caught_by.is_some_and(expected) {
                true => Hunt::Caught,
                false => Hunt::CaughtOther,
            };
            hunt.check = Some(result.check.clone());
            hunt.counterexample_operations = counterexample.as_ref().map(lockcheck_history::Counterexample::len);
            hunt.counterexample = counterexample;
            return hunt;
        }
    }
    hunt
}

/// Hunts each of `mutants` and returns those not caught by the property they are expected to
/// break, each with what became of it; prints one line per mutant (for test logs).
pub async fn not_caught_as_expected(mutants: &[Mutant], config: &crate::SuiteConfig) -> Vec<MutantOutcome> {
    let mut missed = Vec::new();
    for mutant in mutants {
        let hunt = hunt(mutant, config).await;
        eprintln!(
            "{:<34} {} by {:?} in {:.1}s ({})",
            hunt.mutant,
            hunt.status,
            hunt.caught_by,
            hunt.time_to_catch.as_secs_f64(),
            hunt.check.as_deref().unwrap_or("-")
        );
        if let Some(counterexample) = &hunt.counterexample {
            eprintln!("{counterexample}");
        }
        if hunt.status != Hunt::Caught {
            missed.push(hunt);
        }
    }
    missed
}
