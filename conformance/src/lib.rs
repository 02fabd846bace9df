//! The lockcheck conformance harness.
#![deny(missing_docs)]
