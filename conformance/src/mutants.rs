//! Mutants: deliberately broken lockers, one per known failure class. The suite must catch
//! every one with a counterexample — that is how the harness proves it can fail
//! (`lockcheck selftest`).
//!
//! [`builtin`] are single-process lockers that wrap the correct
//! [`MemoryLocker`](lockcheck_impls::MemoryLocker) and break exactly one thing each.
//! Backend modules register mutants of real services (a Redis release by unconditional `DEL`,
//! …) in [`service_mutants`] behind their cargo features; [`all`] is both lists.

mod builtin;
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
    vec![("memory-sessions: leases freed when the client's session ends, and said so", builtin::session_bound_memory())]
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
    mutants
}

/// Every mutant: [`builtin`] then [`service_mutants`].
pub fn all() -> Vec<Mutant> {
    let mut mutants = builtin();
    mutants.extend(service_mutants());
    mutants
}
