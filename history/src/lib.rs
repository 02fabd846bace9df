//! Histories of lock operations, and the checkers that judge them.
//!
//! A [`History`] is what clients of a lock service did: each [`Operation`] is a [`Call`] (an
//! acquire, a release, a refresh…) with the instants it was invoked and returned, on one
//! clock, and its [`Outcome`]: ok, failed (it definitely did not happen), cancelled, or
//! indeterminate (a timeout or a dropped connection: it may or may not have happened).
//! Histories read and write JSON ([`History::to_json`], [`KeptHistory`] with the time scales
//! and claims they were judged with), so a history recorded anywhere can be judged here.
//!
//! The [`checkers`] read a history and say [`Verdict::Valid`], [`Verdict::Invalid`] with a
//! shrunk [`Counterexample`] that blames one operation and draws the timeline, or
//! [`Verdict::Unknown`] when they cannot decide — never a silent pass:
//!
//! - [`checkers::linearizability`]: the history against the locking spec
//!   ([`lockcheck_model::spec::LockSpec`]), per key, with a memoizing Wing–Gong–Lowe search
//!   (as Porcupine and Knossos do). Its search is generic over any stateright
//!   `SequentialSpec`, so it checks other objects' histories too.
//! - [`checkers::exclusion`], [`checkers::fencing`], [`checkers::timing`]: real-time mutual
//!   exclusion, fencing order, bounded waits and FIFO order.
//!
//! [`check_all`] runs every checker that applies to a backend's [`Capabilities`] with the
//! tolerances of its [`Timing`]. Nothing here needs an async runtime or the lock API.
//!
//! ```
//! use std::time::Duration;
//!
//! use lockcheck_history::{Call, Capabilities, History, LeaseId, Operation, Outcome, Property, Timing, check_all};
//!
//! // Two clients take the same lock with one-second leases (times in µs); the second is
//! // granted while the first one's lease still runs.
//! let granted = |client: u32, lease: u32, at: u64| Operation {
//!     client,
//!     key: "reports/daily".into(),
//!     call: Call::TryAcquire { lease: LeaseId(lease), ttl: 1_000_000, limit: 1 },
//!     invoked: at,
//!     returned: Some(at + 100),
//!     outcome: Outcome::Granted { fence: u64::from(lease), acquired_at: at + 50, ttl: None },
//! };
//! let history = History { operations: vec![granted(0, 1, 0), granted(1, 2, 500_000)] };
//! history.validate()?;
//!
//! let verdicts = check_all(&history, &Timing::in_process(), &Capabilities::all_in_process(), Duration::from_secs(1));
//! let (property, verdict) = verdicts.iter().find(|(_, verdict)| verdict.is_invalid()).ok_or("a double grant is caught")?;
//! assert_eq!(*property, Property::MutualExclusion);
//! println!("{}", verdict.counterexample().ok_or("an invalid verdict has a counterexample")?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod checkers;
mod history;
mod scales;

pub use checkers::{Counterexample, Verdict, check_all};
pub use history::{Call, History, ImpossibleHistory, KeptHistory, Operation, Outcome};
// The spec's types that appear in histories and verdicts, so that one import path serves.
pub use lockcheck_model::spec::{Capabilities, LeaseId, Micros, Property, Status};
pub use scales::Timing;
