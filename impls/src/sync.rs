//! The synchronization primitives of the in-memory locker, swapped for loom's or shuttle's
//! under `cfg(loom)` / `cfg(shuttle)` so their checkers can explore every interleaving
//! (tokio's pattern).

#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};

#[cfg(all(shuttle, not(loom)))]
pub(crate) use shuttle::sync::{Arc, Mutex};

#[cfg(not(any(loom, shuttle)))]
pub(crate) use std::sync::{Arc, Mutex};
