//! dflockd: a Rust client for the dflockd lock-server protocol (the reference server that
//! speaks it is the `lockcheck-server` crate).
//!
//! dflockd is a line protocol over TCP (or TLS): FIFO queues per key, server-side leases in
//! whole seconds, semaphores, and two-phase acquisition (`enqueue`, then `wait`). Real
//! servers exist in Python (`dflockd` 0.5 on PyPI) and Go; [`protocol`] documents the wire
//! format as observed on them.
//!
//! The client has three layers, like the Go client:
//! - [`Connection`]: one TCP/TLS connection, one request in flight;
//! - [`commands`]: one function per protocol command;
//! - [`Lock`] and [`Semaphore`]: own a connection, renew in the background, signal loss,
//!   two-phase `enqueue`/`wait`, idempotent release, sharding across servers.
//!
//! [`DflockdLocker`] implements the lockcheck [`crate::Locker`] API on top, so the
//! conformance suite runs against any dflockd server.
//!
//! # Whole seconds
//! Leases and wait bounds are whole seconds on the wire. The client rounds a TTL *up* to
//! whole seconds and reports the TTL the server granted in the [`crate::Lease`] (so a
//! 200 ms request holds for 1 s, and the lease says so). Wait bounds are also rounded up on
//! the wire, and a sub-second bound is enforced locally by closing the connection, which
//! cancels the wait on the server (and releases a grant that raced it).
//!
//! # Fencing
//! The newest servers (and lockcheck's reference server) put a fencing counter in the first 16 hex digits of
//! each token; the Python 0.5 server's tokens are random. [`DflockdLocker`] finds out which
//! with `ping` (only the newest servers have it) and claims fencing only then.

pub mod commands;
mod connection;
mod error;
mod lock;
mod locker;
pub mod protocol;
mod shard;
mod tls;

pub use connection::{ConnectOptions, Connection, MAX_REPLY_BYTES};
pub use error::DflockdError;
pub use lock::{Lock, LockOptions, RenewErrorCallback, Semaphore};
pub use locker::{DflockdLocker, DflockdLockerConfig, ServerKind};
pub use shard::{ShardFn, crc32_shard};
pub use tls::{ClientTls, ServerTls, TlsConfigError};
