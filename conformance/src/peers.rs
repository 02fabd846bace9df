//! Ports of the lockers lockcheck started from (the Go originals), faithful to their
//! algorithms: the peers the benchmarks race ours against, and, with one flaw switched on at a
//! time, the service mutants.

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis;
