//! A lease table: the server side most lock servers share.
//!
//! Per key, at most one holder with its owner token and fencing token; a fencing counter
//! that only grows (until a restart without persistence wipes it); the clients waiting
//! for a wake-up; and ghost records for the properties (which leases ran out, whether a
//! non-owner ever removed a lease).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use stateright::actor::Id;

use super::actor::{Fence, Key, Token};
use super::symmetry::{Rename, Renaming, rename_keyed};

/// A granted lease as the server records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lease {
    /// The owner token.
    pub token: Token,
    /// The fencing token (a per-key counter, like Redis `INCR` or a stream revision).
    pub fence: Fence,
}

/// One key's slot.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    /// The current lease.
    pub holder: Option<Lease>,
    /// The last fencing token handed out.
    pub last_fence: Fence,
    /// Clients to wake when the slot frees (a subscription / watch).
    pub watchers: BTreeSet<Id>,
}

/// How a release names what it removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReleaseCheck {
    /// Only if the owner token matches (compare-and-delete).
    Token(Token),
    /// Only if the fencing token / revision matches (revision-checked delete).
    Fence(Fence),
    /// Unconditionally (`DEL key`), on behalf of this token.
    Unconditional(Token),
}

/// The lease table of one server.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseTable {
    /// Per-key slots.
    pub slots: BTreeMap<Key, Slot>,
    /// Ghost: leases this server ended because their TTL ran out.
    pub expired: BTreeSet<Token>,
    /// Ghost: a release removed a lease that was not the releaser's.
    pub foreign_release: Option<(Token, Token)>,
}

impl fmt::Debug for LeaseTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, slot) in &self.slots {
            let holder = slot.holder.map(|l| format!("{:?} fence {}", l.token, l.fence));
            map.entry(
                &format_args!("key{key}"),
                &format_args!(
                    "{} (last fence {}, watchers {:?})",
                    holder.as_deref().unwrap_or("free"),
                    slot.last_fence,
                    slot.watchers.iter().map(|id| usize::from(*id)).collect::<Vec<_>>()
                ),
            );
        }
        map.finish()?;
        if !self.expired.is_empty() {
            write!(f, " expired {:?}", self.expired)?;
        }
        if let Some((owner, by)) = self.foreign_release {
            write!(f, " FOREIGN RELEASE of {owner:?} by {by:?}")?;
        }
        Ok(())
    }
}

impl LeaseTable {
    /// The slot of a key.
    pub fn slot(&mut self, key: Key) -> &mut Slot {
        self.slots.entry(key).or_default()
    }

    /// The current holder of a key.
    pub fn holder(&self, key: Key) -> Option<Lease> {
        self.slots.get(&key).and_then(|s| s.holder)
    }

    /// `SET key token NX`: grants if free, returning the new lease.
    pub fn try_acquire(&mut self, key: Key, token: Token) -> Option<Lease> {
        let slot = self.slot(key);
        match slot.holder {
            Some(lease) if lease.token == token => Some(lease),
            Some(_) => None,
            None => {
                slot.last_fence += 1;
                let lease = Lease { token, fence: slot.last_fence };
                slot.holder = Some(lease);
                // The ghost speaks of the token's latest lease only.
                self.expired.remove(&token);
                Some(lease)
            }
        }
    }

    /// Removes the lease if `check` allows it; returns the removed lease.
    pub fn release(&mut self, key: Key, check: ReleaseCheck) -> Option<Lease> {
        let holder = self.holder(key)?;
        let allowed = match check {
            ReleaseCheck::Token(token) => holder.token == token,
            ReleaseCheck::Fence(fence) => holder.fence == fence,
            ReleaseCheck::Unconditional(by) => {
                if holder.token != by && self.foreign_release.is_none() {
                    self.foreign_release = Some((holder.token, by));
                }
                true
            }
        };
        if !allowed {
            return None;
        }
        self.slot(key).holder = None;
        Some(holder)
    }

    /// The TTL of `token`'s lease ran out: removes it if it is still current.
    pub fn expire(&mut self, key: Key, token: Token) -> Option<Lease> {
        let holder = self.holder(key).filter(|l| l.token == token)?;
        self.slot(key).holder = None;
        self.expired.insert(token);
        Some(holder)
    }

    /// The fencing write-back (`RAISE_FENCE` of the impls' Redlock): if `token` still holds
    /// `key` here, raises the key's counter to at least `fence`. Returns whether it held.
    pub fn raise_fence(&mut self, key: Key, token: Token, fence: Fence) -> bool {
        if self.holder(key).is_none_or(|l| l.token != token) {
            return false;
        }
        let slot = self.slot(key);
        slot.last_fence = slot.last_fence.max(fence);
        true
    }

    /// Subscribes `who` to wake-ups of `key`.
    pub fn watch(&mut self, key: Key, who: Id) {
        self.slot(key).watchers.insert(who);
    }

    /// Unsubscribes `who`.
    pub fn unwatch(&mut self, key: Key, who: Id) {
        self.slot(key).watchers.remove(&who);
    }

    /// The subscribers of `key` (they stay subscribed).
    pub fn watchers(&self, key: Key) -> Vec<Id> {
        self.slots.get(&key).map(|s| s.watchers.iter().copied().collect()).unwrap_or_default()
    }
}

impl Rename for Lease {
    fn rename(&self, r: &Renaming) -> Self {
        Lease { token: r.token(self.token), fence: self.fence }
    }
}

impl Rename for Slot {
    fn rename(&self, r: &Renaming) -> Self {
        Slot { holder: self.holder.map(|l| l.rename(r)), last_fence: self.last_fence, watchers: r.ids(&self.watchers) }
    }
}

impl Rename for LeaseTable {
    fn rename(&self, r: &Renaming) -> Self {
        LeaseTable {
            slots: rename_keyed(&self.slots, r),
            expired: r.tokens(&self.expired),
            foreign_release: self.foreign_release.map(|(owner, by)| (r.token(owner), r.token(by))),
        }
    }
}
