//! The conformance suite against the in-memory reference locker: one test per check.

use lockcheck_conformance::{SharedLocker, conformance_suite};

conformance_suite!(memory, SharedLocker::memory());
