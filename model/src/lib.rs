//! The locking spec and models of lock algorithms.
//!
//! - [`spec`]: the sequential reference object for leased locks and semaphores with logical
//!   time, the named properties P1–P10, and the [`Capabilities`](spec::Capabilities) a
//!   backend claims, which select the properties it is held to.
//! - [`systems`]: lock algorithms written as stateright actor systems, checked exhaustively
//!   (the `models` feature, on by default).
//! - [`outcome`]: what a model check found, as data a report reads without the checker.
#![deny(missing_docs)]

pub mod outcome;
pub mod spec;
#[cfg(feature = "models")]
pub mod systems;
