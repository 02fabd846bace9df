//! What a locker remembers to save round trips: the revisions of the leases it granted, its
//! last release of each key, and the keys it found held a moment ago.

use std::collections::HashMap;

use tokio::time::Instant;

use super::{CONTENDED_FOR, Inner, Known, REMEMBERED_LEASES};
use crate::OwnerToken;

impl Inner {
    pub(super) fn revisions(&self) -> std::sync::MutexGuard<'_, HashMap<(String, OwnerToken), Known>> {
        // Only plain inserts and removes happen under this lock: poisoning cannot leave it
        // inconsistent.
        self.revisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn remember(&self, key: &str, owner: OwnerToken, revision: u64, expires_at: Instant) {
        let mut revisions = self.revisions();
        if revisions.len() >= REMEMBERED_LEASES {
            let now = Instant::now();
            revisions.retain(|_, known| known.expires_at > now);
        }
        revisions.insert((key.to_owned(), owner), Known { revision, expires_at });
    }

    pub(super) fn forget(&self, key: &str, owner: OwnerToken) {
        self.revisions().remove(&(key.to_owned(), owner));
    }

    pub(super) fn known_revision(&self, key: &str, owner: OwnerToken) -> Option<u64> {
        self.revisions().get(&(key.to_owned(), owner)).map(|known| known.revision)
    }

    pub(super) fn released(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.released.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn found_held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.found_held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this locker found the key held within [`CONTENDED_FOR`].
    pub(super) fn is_contended(&self, encoded_key: &str) -> bool {
        self.found_held().get(encoded_key).is_some_and(|at| at.elapsed() < CONTENDED_FOR)
    }

    pub(super) fn note_found_held(&self, encoded_key: &str) {
        let mut found_held = self.found_held();
        if found_held.len() >= REMEMBERED_LEASES {
            found_held.retain(|_, at| at.elapsed() < CONTENDED_FOR);
        }
        found_held.insert(encoded_key.to_owned(), Instant::now());
    }

    pub(super) fn note_release(&self, encoded_key: &str, revision: u64) {
        let mut released = self.released();
        if released.len() >= REMEMBERED_LEASES {
            released.clear();
        }
        released.insert(encoded_key.to_owned(), revision);
    }
}
