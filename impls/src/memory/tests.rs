//! Checks of the in-memory locker's internals: unit tests of the [`Table`](super::table::Table)
//! with injected time, and the loom and shuttle explorations of its wake-up, hand-off,
//! cancellation and expiry races.
//!
//! The loom and shuttle checks drive the table directly with injected instants (neither
//! checker has a clock) and await grants with their own executors. Each one has a twin that
//! runs a deliberately wrong ordering and is expected to fail (`#[should_panic]`), which is
//! how we know the check can catch the bug it is about.
//!
//! Run them with:
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=$CARGO_TARGET_DIR-loom \
//!   cargo test -p lockcheck-impls --release --lib loom_
//! RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=$CARGO_TARGET_DIR-shuttle \
//!   cargo test -p lockcheck-impls --release --lib shuttle_
//! ```

#[cfg(any(loom, shuttle))]
mod support;

#[cfg(not(any(loom, shuttle)))]
mod table;

#[cfg(loom)]
mod loom_cancel;
#[cfg(loom)]
mod loom_expiry;
#[cfg(loom)]
mod loom_wakeup;

#[cfg(all(shuttle, not(loom)))]
mod shuttle_semaphore;
