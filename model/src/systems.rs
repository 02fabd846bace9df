//! Lock algorithms as stateright actor systems, checked exhaustively.
//!
//! Each algorithm is a set of server actors plus a client protocol ([`Algorithm`]), one
//! file each. The framework around it supplies clients that run an acquire → work →
//! release cycle, a resource they write to in their critical section (with or without
//! fencing-token checks), the faults (client crash, server restart without persistence,
//! pauses past the lease) and the properties in [`properties`]. Timers fire at any moment:
//! that is how message delays, slow clocks and arbitrary TTLs show up. The one timing
//! assumption — without pauses, a live holder stops acting before the server's TTL ends
//! its lease — is a boundary on the runs, lifted by [`Faults::pauses`].
//!
//! [`SYSTEMS`] lists every system with its expected verdicts; [`System::check`] runs one.
//!
//! ```
//! use lockcheck_model::systems::{self, CheckOptions, Options};
//!
//! let system = systems::find("redis-single").expect("registered");
//! let outcome = system.check(&Options { clients: 2, keys: 1 }, &CheckOptions::default(), &mut |_| {});
//! assert!(outcome.complete);
//! assert!(outcome.violated().is_empty(), "{outcome:#?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Adding an algorithm: write `systems/<name>.rs` with a type implementing [`Algorithm`],
//! and add a [`System`] entry to [`SYSTEMS`] that builds it.

mod actor;
mod check;
mod lease_table;
pub mod properties;
pub mod redis_single;
mod resource;

pub use actor::{
    Algorithm, ClientState, Event, Faults, Fence, Fencing, Key, LockActor, Me, NodeState, Outbox, Phase, Role, Setup,
    Timer, Token, Wire,
};
pub use check::{CheckOptions, Outcome, Progress, PropertyOutcome, Verdict, check, explore};
pub use lease_table::{Lease, LeaseTable, ReleaseCheck, Slot};
pub use properties::{Claims, LockModel, LockState, build};
pub use resource::{ResourceState, Write};


use properties::{CRASH_LIVENESS, OWNERSHIP};
use redis_single::SingleServer;

/// The knobs a user turns: how many clients and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Client actors.
    pub clients: usize,
    /// Keys (client `i` locks key `i % keys`).
    pub keys: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { clients: 2, keys: 1 }
    }
}

/// A registered lock system.
pub struct System {
    /// Short name, used on the command line.
    pub name: &'static str,
    /// One line: what it is.
    pub summary: &'static str,
    /// The algorithm and its source, in a paragraph.
    pub doc: &'static str,
    /// Whether the algorithm is expected to satisfy every property it is checked against.
    pub correct: bool,
    /// The properties a check with 2 clients and 1 key is expected to find violated.
    pub expected: &'static [&'static str],
    run: fn(&'static str, &Options, &CheckOptions, &mut dyn FnMut(Progress)) -> Outcome,
    serve: fn(&Options, &str),
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System").field("name", &self.name).field("correct", &self.correct).finish_non_exhaustive()
    }
}

impl System {
    /// Checks the system exhaustively in the given configuration.
    pub fn check(&self, options: &Options, check: &CheckOptions, progress: &mut dyn FnMut(Progress)) -> Outcome {
        (self.run)(self.name, options, check, progress)
    }

    /// Serves stateright's Explorer for the system on `address`; never returns.
    pub fn explore(&self, options: &Options, address: &str) -> ! {
        (self.serve)(options, address);
        unreachable!("the explorer serves forever")
    }

    /// Whether an outcome matches what is expected of this system: a correct system
    /// violates nothing; a flawed one shows every expected violation.
    pub fn as_expected(&self, outcome: &Outcome) -> bool {
        let violated = outcome.violated();
        if self.correct { violated.is_empty() } else { self.expected.iter().all(|e| violated.contains(e)) }
    }
}

/// Defines a registry entry from a builder `fn(&Options) -> LockModel<_>`.
macro_rules! system {
    ($name:literal, $summary:literal, $doc:expr, correct: $correct:expr, expected: $expected:expr, $build:expr) => {
        System {
            name: $name,
            summary: $summary,
            doc: $doc,
            correct: $correct,
            expected: $expected,
            run: |name, options, check_options, progress| check(name, $build(options), check_options, progress),
            serve: |options, address| explore($build(options), address),
        }
    };
}

fn setup(options: &Options, servers: usize, faults: Faults, resource: Option<Fencing>) -> Setup {
    Setup { servers, clients: options.clients, keys: options.keys.max(1), cycles: 1, faults, resource }
}

const CLIENT_CRASH: Faults = Faults { client_crash: true, server_restart: false, pauses: false };

fn single_server(options: &Options, release: redis_single::Release, server_ttl: bool) -> LockModel<SingleServer> {
    build(
        SingleServer { release, server_ttl },
        setup(options, 1, CLIENT_CRASH, Some(Fencing::Checked)),
        Claims { fencing: true, fifo: false },
    )
}

const REDIS_SINGLE_DOC: &str = "One Redis server: SET key token NX PX ttl to acquire, a keyspace notification \
    subscribed before the failed try to wake waiters, and a token-checked release (a Lua script that deletes the \
    key only if it still holds the caller's token). The fencing token is an INCR counter. Source: the Redis \
    documentation's single-instance lock pattern. Checked with a holder that may crash and a fenced resource.";

const REDIS_DEL_DOC: &str = "The same single-server lease lock, but released with a plain DEL key. A holder whose \
    release is delayed past its lease's expiry deletes the next holder's lock: a release by a non-owner, which \
    with a third client becomes a double grant. Source: the common naive Redis lock; the reason the Redis \
    documentation insists on a token-checked release.";

const HOLDER_TIMER_DOC: &str = "A lock server without server-side expiry: the lease's TTL is a timer in the \
    holder's own process, which releases when it fires. A holder that crashes never releases, so its waiters wait \
    forever. Source: the original Go in-memory locker and FluxaORM's locker, whose expiry lives in the client.";

/// Every registered system.
pub const SYSTEMS: &[System] = &[
    system!("redis-single", "SET NX PX + token-checked release (correct)", REDIS_SINGLE_DOC, correct: true, expected: &[],
        |o: &Options| single_server(o, redis_single::Release::TokenChecked, true)),
    system!("redis-del", "SET NX PX + unconditional DEL release (flawed: non-owner release)", REDIS_DEL_DOC,
        correct: false, expected: &[OWNERSHIP],
        |o: &Options| single_server(o, redis_single::Release::Unconditional, true)),
    system!("holder-timer", "expiry only in the holder's process (flawed: crashed holder keeps the lock)",
        HOLDER_TIMER_DOC, correct: false, expected: &[CRASH_LIVENESS],
        |o: &Options| single_server(o, redis_single::Release::TokenChecked, false)),
];

/// The registered system called `name`.
pub fn find(name: &str) -> Option<&'static System> {
    SYSTEMS.iter().find(|s| s.name == name)
}
