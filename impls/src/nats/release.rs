//! Giving a lease back or extending it: revision-checked purges and rewrites, the offer of a
//! contended lease to a waiter, and the clean-up of grants nobody will use.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use tokio::time::Instant;

use super::Inner;
use super::entry::{encode_key, entry_value, is_held_by, parse_entry, server_ttl, was_taken_over};
use super::stream::Published;
use super::wakeups::{self, Offered};
use crate::LockError;
use crate::cleanup;
use crate::validate_ttl;
use crate::{Lease, OwnerToken};

/// Whether `lease` ran out by its own clock. The server may keep its entry up to a second
/// longer (TTLs round up to whole seconds, and the server's expiry timer runs late), but the
/// lease the caller was given ended at its TTL: release and refresh then report it gone —
/// reporting "held" there is an ownership violation by the lease's own terms (seen in the
/// cluster suite: a refresh to 1.1 s, rounded to 2 s on the server, released 1.01 s late).
pub(super) fn lease_ended(lease: &Lease) -> bool {
    Instant::now() >= lease.expires_at()
}

impl Inner {
    /// The revision of `lease`'s entry if it is still this holder's.
    pub(super) async fn held_revision(
        &self,
        operation: &'static str,
        lease: &Lease,
    ) -> Result<Option<kv::Entry>, LockError> {
        let entry = self.entry(operation, &encode_key(lease.key())).await?;
        Ok(entry.filter(|entry| is_held_by(entry, lease)))
    }

    /// Writes the key's purge marker if its last revision is still `expected`. Without the
    /// `Nats-Rollup` header a KV purge carries: the bucket keeps one message per key, so the
    /// marker replaces the lease anyway, and a rollup makes the server run a subject purge
    /// besides: with it a release took 2.7× the NATS round trip to be acknowledged, without it
    /// 1.9–2.1× (`cargo run --release -p lockcheck-bench --example nats_hand_off_split`).
    pub(super) async fn purge(&self, encoded_key: &str, expected: u64) -> Result<Published, LockError> {
        let mut headers = HeaderMap::new();
        headers.insert("KV-Operation", "PURGE");
        headers
            .insert(async_nats::header::NATS_MESSAGE_TTL, server_ttl(self.marker_ttl).as_secs().to_string().as_str());
        let published = self.publish_expecting("release", encoded_key, expected, headers, String::new()).await?;
        if let Published::Stored(revision) = published {
            self.note_release(encoded_key, revision);
        }
        Ok(published)
    }

    /// Rewrites `lease`'s entry with a fresh TTL if its last revision is still `revision`.
    pub(super) async fn rewrite(
        &self,
        lease: &Lease,
        ttl: Duration,
        revision: u64,
    ) -> Result<Option<Lease>, LockError> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_TTL, server_ttl(ttl).as_secs().to_string().as_str());
        let sent_at = Instant::now();
        let encoded = encode_key(lease.key());
        let value = entry_value(lease.owner(), ttl, None);
        Ok(match self.publish_expecting("refresh", &encoded, revision, headers, value).await? {
            Published::Stored(new_revision) => {
                self.remember(lease.key(), lease.owner(), new_revision, sent_at + server_ttl(ttl));
                Some(lease.refreshed(ttl, sent_at))
            }
            Published::Conflict { .. } => None,
        })
    }

    /// Frees the entry an ended lease may have left on the server (see [`lease_ended`]), so
    /// that it does not keep others waiting; revision-checked, so a newer holder is safe.
    pub(super) async fn free_leftover(&self, lease: &Lease) {
        if let Some(revision) = self.known_revision(lease.key(), lease.owner()) {
            self.forget(lease.key(), lease.owner());
            let _ = self.purge(&encode_key(lease.key()), revision).await;
        }
    }

    /// [`Inner::release_owner`] in a task of its own, for a grant dropped where nothing can
    /// await (a cancelled acquire). If there is no runtime left, the server's TTL frees it.
    pub(super) fn release_owner_later(self: &Arc<Self>, key: &str, owner: OwnerToken) {
        let (inner, key) = (self.clone(), key.to_owned());
        cleanup::spawn(async move {
            let _ = inner.release_owner(&key, owner).await;
        });
    }

    /// Releases whatever `owner` holds on `key` (cleanup of a grant nobody will use).
    pub(super) async fn release_owner(&self, key: &str, owner: OwnerToken) -> Result<bool, LockError> {
        self.forget(key, owner);
        let encoded = encode_key(key);
        let Some(entry) = self.entry("release", &encoded).await? else { return Ok(false) };
        if entry.operation != kv::Operation::Put || parse_entry(&entry.value).is_none_or(|(held, _)| held != owner) {
            return Ok(false);
        }
        Ok(matches!(self.purge(&encoded, entry.revision).await?, Published::Stored(_)))
    }
}

impl Inner {
    /// [`Locker::release`](crate::Locker::release): hand the lease to a waiter, or purge it.
    pub(super) async fn release(self: &Arc<Self>, lease: &Lease) -> Result<bool, LockError> {
        let encoded = encode_key(lease.key());
        if lease_ended(lease) {
            self.free_leftover(lease).await;
            return Ok(false);
        }
        // A lease this locker granted: its owner token is proof enough, hand it to a waiter or
        // purge it at the remembered revision (one round trip). A conflict means the entry
        // changed (expired, taken over, or refreshed by another client of the same lease):
        // read it.
        let mut offered = None;
        if let Some(revision) = self.known_revision(lease.key(), lease.owner()) {
            // Offer it first where waiters are likely: on a key this locker found held a
            // moment ago — typically the wait for this very lease.
            if self.offers && self.is_contended(&encoded) {
                offered = Some(revision);
                let offer = OfferOut { inner: self, encoded_key: &encoded, revision: Some(revision) };
                if offer.hand_over().await {
                    self.forget(lease.key(), lease.owner());
                    return Ok(true);
                }
            }
            let purged = self.purge(&encoded, revision).await?;
            self.forget(lease.key(), lease.owner());
            if let Published::Stored(_) = purged {
                return Ok(true);
            }
        }
        let entry = self.entry("release", &encoded).await?;
        if entry.as_ref().is_some_and(|entry| was_taken_over(entry, offered)) {
            // An offer taken whose answer did not arrive in time.
            return Ok(true);
        }
        let Some(entry) = entry.filter(|entry| is_held_by(entry, lease)) else { return Ok(false) };
        Ok(matches!(self.purge(&encoded, entry.revision).await?, Published::Stored(_)))
    }

    /// [`Locker::refresh`](crate::Locker::refresh): rewrite the entry with a fresh TTL.
    pub(super) async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        validate_ttl(ttl)?;
        if lease_ended(lease) {
            self.free_leftover(lease).await;
            return Ok(None);
        }
        // As in release: a remembered revision saves the read.
        if let Some(revision) = self.known_revision(lease.key(), lease.owner()) {
            if let Some(refreshed) = self.rewrite(lease, ttl, revision).await? {
                return Ok(Some(refreshed));
            }
            self.forget(lease.key(), lease.owner());
        }
        let Some(entry) = self.held_revision("refresh", lease).await? else { return Ok(None) };
        self.rewrite(lease, ttl, entry.revision).await
    }

    /// [`Locker::remaining_ttl`](crate::Locker::remaining_ttl): by the entry's TTL and the time it was stored.
    pub(super) async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let Some(entry) = self.held_revision("remaining TTL", lease).await? else { return Ok(None) };
        let Some((_, ttl)) = parse_entry(&entry.value) else { return Ok(None) };
        // The time left of the TTL the holder asked for, counted from when the server stored
        // the entry, by the client's wall clock (so it assumes the two are synchronized). Not
        // the server's own expiry: that is the TTL rounded up to whole seconds, and the server
        // was seen to end an entry tens of milliseconds before it, so promising it would let a
        // holder act past its lease.
        let expires = SystemTime::from(entry.created) + ttl;
        let remaining = expires.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        Ok(Some(remaining.min(ttl)))
    }
}

/// A release's offer of its lease to a waiter (see "Hand-off by offer" in `nats/wakeups.rs`).
/// Dropped before the answer (the release was cancelled), it purges the lease in a task of
/// its own, revision-checked: a waiter's take-over wins or the purge does, never both.
pub(super) struct OfferOut<'a> {
    inner: &'a Arc<Inner>,
    encoded_key: &'a str,
    /// `None` once the offer has been answered.
    revision: Option<u64>,
}

impl OfferOut<'_> {
    /// Whether a waiter took the lease over. If not, the caller purges it.
    async fn hand_over(mut self) -> bool {
        let revision = self.revision.expect("offered once");
        let client = self.inner.js.client();
        let offered = wakeups::offer(&client, &self.inner.bucket, self.encoded_key, revision).await;
        self.revision = None;
        match offered {
            Offered::Taken => {
                self.inner.stats.offers_taken.fetch_add(1, Ordering::Relaxed);
                true
            }
            Offered::Declined => false,
            Offered::Unanswered => {
                self.inner.stats.offers_unanswered.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl Drop for OfferOut<'_> {
    fn drop(&mut self) {
        if let Some(revision) = self.revision {
            let (inner, encoded_key) = (self.inner.clone(), self.encoded_key.to_owned());
            cleanup::spawn(async move {
                let _ = inner.purge(&encoded_key, revision).await;
            });
        }
    }
}
