//! The resource clients write to inside their critical section: the storage a lock is
//! supposed to protect.
//!
//! Each critical section writes twice (a first and a last write), so interleaved critical
//! sections show up as interleaved writes. With [`Fencing::Checked`] the resource does what
//! Kleppmann (2016, "How to do distributed locking") asks of storage: it remembers the
//! highest fencing token it has seen and rejects writes that carry a lower one.

use std::collections::BTreeSet;
use std::fmt;

use super::actor::{Fence, Fencing, Token};

/// A write of one critical section.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Write {
    /// Whose critical section.
    pub token: Token,
    /// The fencing token the writer holds, if the lock gives one.
    pub fence: Option<Fence>,
    /// The last write of the critical section.
    pub last: bool,
}

impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = if self.last { "last" } else { "first" };
        match self.fence {
            Some(fence) => write!(f, "Write({which} of {:?}, fence {fence})", self.token),
            None => write!(f, "Write({which} of {:?})", self.token),
        }
    }
}

/// What the resource has seen.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceState {
    /// The critical section whose writes are being accepted.
    pub current: Option<Token>,
    /// Critical sections that ended (last write seen) or were superseded by another's write.
    pub closed: BTreeSet<Token>,
    /// The highest fencing token accepted.
    pub max_fence: Option<Fence>,
    /// Writes rejected for a stale fencing token.
    pub rejected: u8,
    /// Ghost: the first critical section whose write was accepted after another critical
    /// section's write came between it and the same section's earlier write. (Who came
    /// between is in the trace; recording it here would have to pick one of several
    /// clients by index, which symmetry reduction does not allow.)
    pub interleaved: Option<Token>,
}

impl fmt::Debug for ResourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Resource {{ current: {:?}, max_fence: {:?}, rejected: {}",
            self.current, self.max_fence, self.rejected
        )?;
        if let Some(token) = self.interleaved {
            write!(f, ", INTERLEAVED: {token:?} wrote after another critical section's write")?;
        }
        f.write_str(" }")
    }
}

impl ResourceState {
    /// Applies a write, accepting or rejecting it.
    pub fn write(&mut self, write: Write, fencing: Fencing) {
        if fencing == Fencing::Checked
            && let (Some(max), Some(fence)) = (self.max_fence, write.fence)
            && fence < max
        {
            self.rejected += 1;
            return;
        }
        if let Some(fence) = write.fence {
            self.max_fence = Some(self.max_fence.map_or(fence, |max| max.max(fence)));
        }
        if self.closed.contains(&write.token) && self.interleaved.is_none() {
            self.interleaved = Some(write.token);
        }
        match self.current {
            Some(current) if current == write.token => {}
            Some(current) => {
                self.closed.insert(current);
            }
            None => {}
        }
        if write.last {
            self.current = None;
            self.closed.insert(write.token);
        } else {
            self.current = Some(write.token);
        }
    }
}
