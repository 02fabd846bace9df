//! The locking spec and models of lock algorithms.
//!
//! - [`spec`]: the sequential reference object for leased locks and semaphores with logical
//!   time, and the named properties P1–P10.
//! - [`systems`]: lock algorithms written as stateright actor systems, checked exhaustively.
#![deny(missing_docs)]

pub mod spec;
pub mod systems;
