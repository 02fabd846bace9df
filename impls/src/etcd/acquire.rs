//! Acquire: a key in the lock's queue, then the wait — a watch on the predecessor (the
//! revision queue), or etcd's `Lock` RPC (the lock service). See the module docs of `etcd`.

use std::time::Duration;

use etcd_client::{
    EventType, GetOptions, LockOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::time::{Instant, sleep_until};

use super::{
    EtcdMode, Inner, Member, REQUEST_TIMEOUT, bounded, fresh_owner, grant, indeterminate, lease_id, whole_seconds,
};
use crate::cleanup::OnDrop;
use crate::{Lease, validate_wait};
use crate::{LeaseRequest, LockError, OwnerToken};

/// The least time an acquire is given past its wait bound to finish the request in flight
/// (one round trip's allowance, so that a wait of zero still asks once). Past it, the acquire
/// gives up locally and its entry is revoked in the background: a frozen server must not hold
/// the caller past its bound (the nemesis caught 2 s of overrun with a request's time-out here).
const LEAST_ATTEMPT: Duration = Duration::from_millis(100);

/// One queue entry: the lease and the key bound to it.
struct Entry {
    owner: OwnerToken,
    lease: i64,
    key: String,
    /// The create revision of the key: its place in the queue, and its fencing token.
    revision: i64,
    /// The TTL etcd granted the lease, in seconds.
    ttl: i64,
}

/// How a wait in the queue ended.
enum Waited {
    Granted(Lease),
    /// The entry's lease ran out while it waited: its key is gone, and with it its place.
    LeaseLost,
    /// The wait bound ran out and the entry was revoked: nothing is held.
    TimedOut,
}

impl Inner {
    fn refuse_unsupported(&self, request: &LeaseRequest) -> Result<(), LockError> {
        if self.config.mode == EtcdMode::LockService && request.limit() > 1 {
            return Err(LockError::Unsupported { operation: "semaphores (etcd's lock service is a mutex)" });
        }
        Ok(())
    }

    /// Revokes the entry's lease when dropped before disarmed: a cancelled or failed acquire
    /// leaves no key behind (and a waiter behind it moves up).
    fn revoke_on_drop(&self, lease: i64) -> OnDrop<impl Future<Output = ()> + Send + 'static> {
        let mut client = self.client.clone();
        OnDrop::new(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(lease)).await;
        })
    }

    /// Grants a lease for `request` and puts its key in the lock's queue; whether it is
    /// among the first `limit` (granted at once). A lease without a key holds nothing, so a
    /// failed grant is unavailability, not an unknown outcome.
    async fn join(
        &self,
        request: &LeaseRequest,
    ) -> Result<(Entry, bool, Instant, OnDrop<impl Future<Output = ()> + Send + 'static>), LockError> {
        let owner = fresh_owner();
        let lease = lease_id(owner);
        let mut client = self.client.clone();
        let sent = Instant::now();
        let granted = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            client
                .lease_grant(whole_seconds(request.ttl()), Some(etcd_client::LeaseGrantOptions::new().with_id(lease))),
        )
        .await
        {
            Ok(Ok(granted)) => granted,
            Ok(Err(error)) => {
                drop(self.revoke_on_drop(lease));
                return Err(super::unavailable(&self.config, error));
            }
            Err(_) => {
                drop(self.revoke_on_drop(lease));
                return Err(LockError::unavailable(format!("etcd did not grant a lease within {REQUEST_TIMEOUT:?}")));
            }
        };
        let guard = self.revoke_on_drop(lease);
        let member = Member { limit: request.limit(), ttl: granted.ttl() };
        let key = self.member_key(request.key(), lease);
        let dir = format!("{}/", self.lock_name(request.key()));
        let first = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(i64::from(request.limit()));
        let txn = Txn::new().and_then([
            TxnOp::put(key.clone(), member.to_string(), Some(PutOptions::new().with_lease(lease))),
            TxnOp::get(dir, Some(first)),
        ]);
        let answer = bounded("acquire", client.txn(txn)).await?;
        let revision = answer.header().map_or(0, |header| header.revision());
        let Some(TxnOpResponse::Get(ahead)) = answer.op_responses().into_iter().nth(1) else {
            return Err(LockError::Protocol("etcd's transaction answered without its range".to_owned()));
        };
        if let Some(other) =
            ahead.kvs().iter().map(|kv| Member::parse(kv.value()).limit).find(|&limit| limit != request.limit())
        {
            drop(guard);
            return Err(LockError::LimitMismatch {
                key: request.key().to_owned(),
                existing: other,
                requested: request.limit(),
            });
        }
        let first = ahead.kvs().iter().any(|kv| kv.key() == key.as_bytes());
        Ok((Entry { owner, lease, key, revision, ttl: granted.ttl() }, first, sent, guard))
    }

    pub(super) async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        request.validate()?;
        self.refuse_unsupported(request)?;
        let (entry, first, sent, guard) = self.join(request).await?;
        if first {
            guard.disarm();
            return Ok(Some(grant(request, entry.owner, entry.revision, entry.ttl, sent)));
        }
        // Not first: leave the queue. Until etcd confirms, the key could still be granted.
        if self.revoke(entry.lease).await {
            guard.disarm();
            Ok(None)
        } else {
            Err(LockError::indeterminate("try-acquire", "the queue entry of a refused try could not be revoked"))
        }
    }

    pub(super) async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        request.validate()?;
        validate_wait(wait)?;
        self.refuse_unsupported(request)?;
        let started = Instant::now();
        let deadline = started + wait;
        match tokio::time::timeout_at(deadline + LEAST_ATTEMPT, self.acquire_until(request, started, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(LockError::TimedOutLocally { waited: started.elapsed() }),
        }
    }

    async fn acquire_until(
        &self,
        request: &LeaseRequest,
        started: Instant,
        deadline: Instant,
    ) -> Result<Lease, LockError> {
        loop {
            let (entry, first, sent, guard) = self.join(request).await?;
            if first {
                guard.disarm();
                return Ok(grant(request, entry.owner, entry.revision, entry.ttl, sent));
            }
            let waited = match self.config.mode {
                EtcdMode::Queue => self.wait_in_queue(request, &entry, deadline).await,
                EtcdMode::LockService => self.wait_in_lock_service(request, &entry, deadline).await,
            };
            match waited? {
                Waited::Granted(lease) => {
                    guard.disarm();
                    return Ok(lease);
                }
                // The guard revokes what is left of the entry; queue again.
                Waited::LeaseLost => drop(guard),
                Waited::TimedOut => {
                    return if self.revoke(entry.lease).await {
                        guard.disarm();
                        Err(LockError::TimedOut { waited: started.elapsed() })
                    } else {
                        Err(LockError::TimedOutLocally { waited: started.elapsed() })
                    };
                }
            }
            if Instant::now() >= deadline {
                return Err(LockError::TimedOut { waited: started.elapsed() });
            }
        }
    }

    /// The revision queue's wait: check, watch the predecessor, check again when it goes.
    async fn wait_in_queue(
        &self,
        request: &LeaseRequest,
        entry: &Entry,
        deadline: Instant,
    ) -> Result<Waited, LockError> {
        let dir = format!("{}/", self.lock_name(request.key()));
        let limit = i64::from(request.limit());
        loop {
            // The check and a keep-alive in one round trip: if the check grants, the lease's
            // TTL counts from this instant.
            let sent = Instant::now();
            let (checked, renewed) =
                tokio::join!(self.check(&dir, entry, limit), self.keep_alive_once("acquire", entry.lease));
            if !renewed? {
                return Ok(Waited::LeaseLost);
            }
            let checked = checked?;
            if !checked.present {
                return Ok(Waited::LeaseLost);
            }
            if checked.granted {
                return Ok(Waited::Granted(grant(request, entry.owner, entry.revision, entry.ttl, sent)));
            }
            if Instant::now() >= deadline {
                return Ok(Waited::TimedOut);
            }
            // A lock waits for its predecessor alone; a semaphore for any deletion ahead.
            let (watched, options) = match (&checked.predecessor, limit) {
                (Some(predecessor), 1) => (predecessor.clone(), WatchOptions::new()),
                _ => (dir.clone(), WatchOptions::new().with_prefix()),
            };
            let options = options.with_start_revision(checked.revision + 1);
            let mut client = self.client.clone();
            let mut watch = bounded("acquire", client.watch(watched, Some(options))).await?;
            // The first answer confirms the watch: from then on this waiter is queued.
            match tokio::time::timeout(REQUEST_TIMEOUT, watch.message()).await {
                Ok(Ok(Some(created))) if created.created() && !created.canceled() => {}
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    return Err(LockError::indeterminate("acquire", "etcd's watch of the predecessor failed"));
                }
            }
            let _queued = self.waiting.count();
            let keep_alive_every = Duration::from_secs(entry.ttl as u64) / 3;
            let mut next_keep_alive = Instant::now() + keep_alive_every;
            loop {
                tokio::select! {
                    message = watch.message() => match message {
                        Ok(Some(answer)) if !answer.canceled()
                            && !answer.events().iter().any(|event| event.event_type() == EventType::Delete) => continue,
                        // A deletion ahead, a cancelled watch (compaction) or a broken stream: look again.
                        _ => break,
                    },
                    () = sleep_until(next_keep_alive) => {
                        if !self.keep_alive_once("acquire", entry.lease).await? {
                            return Ok(Waited::LeaseLost);
                        }
                        next_keep_alive += keep_alive_every;
                    }
                    () = sleep_until(deadline) => return Ok(Waited::TimedOut),
                }
            }
        }
    }

    /// One look at the queue: whether the entry's key is still there, whether it is among the
    /// first `limit`, and the key just ahead of it — all at one revision.
    async fn check(&self, dir: &str, entry: &Entry, limit: i64) -> Result<Checked, LockError> {
        let mut client = self.client.clone();
        let first = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(limit);
        let ahead = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(entry.revision - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let txn = Txn::new().and_then([
            TxnOp::get(entry.key.clone(), None),
            TxnOp::get(dir, Some(first)),
            TxnOp::get(dir, Some(ahead)),
        ]);
        let answer = bounded("acquire", client.txn(txn)).await?;
        let revision = answer.header().map_or(0, |header| header.revision());
        let ranges: Vec<_> = answer
            .op_responses()
            .into_iter()
            .filter_map(|response| match response {
                TxnOpResponse::Get(range) => Some(range),
                _ => None,
            })
            .collect();
        let [own, first, ahead] = &ranges[..] else {
            return Err(LockError::Protocol("etcd's transaction answered without its ranges".to_owned()));
        };
        let present = own.kvs().first().is_some_and(|kv| kv.lease() == entry.lease);
        let granted = first.kvs().iter().any(|kv| kv.key() == entry.key.as_bytes());
        let predecessor = ahead.kvs().first().map(|kv| String::from_utf8_lossy(kv.key()).into_owned());
        Ok(Checked { present, granted, predecessor, revision })
    }

    /// The lock service's wait: the `Lock` RPC with the entry's lease (the server's mutex takes
    /// over the key this entry put), kept alive while it waits. The answer is checked: the key
    /// must still be there, bound to the lease, when the RPC returns.
    async fn wait_in_lock_service(
        &self,
        request: &LeaseRequest,
        entry: &Entry,
        deadline: Instant,
    ) -> Result<Waited, LockError> {
        let mut client = self.client.clone();
        let name = self.lock_name(request.key());
        let locking = client.lock(name, Some(LockOptions::new().with_lease(entry.lease)));
        tokio::pin!(locking);
        let _queued = self.waiting.count();
        let keep_alive_every = Duration::from_secs(entry.ttl as u64) / 3;
        let mut next_keep_alive = Instant::now() + keep_alive_every;
        let locked = loop {
            tokio::select! {
                locked = &mut locking => break locked,
                () = sleep_until(next_keep_alive) => {
                    if !self.keep_alive_once("acquire", entry.lease).await? {
                        return Ok(Waited::LeaseLost);
                    }
                    next_keep_alive += keep_alive_every;
                }
                () = sleep_until(deadline) => return Ok(Waited::TimedOut),
            }
        };
        let locked = match locked {
            Ok(locked) => locked,
            Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("lease not found") => {
                return Ok(Waited::LeaseLost);
            }
            Err(error) => return Err(indeterminate("acquire", error)),
        };
        let key = locked.key().to_vec();
        let sent = Instant::now();
        let mut client = self.client.clone();
        let (found, renewed) =
            tokio::join!(bounded("acquire", client.get(key, None)), self.keep_alive_once("acquire", entry.lease));
        if !renewed? {
            return Ok(Waited::LeaseLost);
        }
        let found = found?;
        let Some(kv) = found.kvs().first().filter(|kv| kv.lease() == entry.lease) else {
            return Ok(Waited::LeaseLost);
        };
        Ok(Waited::Granted(grant(request, entry.owner, kv.create_revision(), entry.ttl, sent)))
    }
}

/// What [`Inner::check`] saw.
struct Checked {
    /// The entry's key exists, bound to its lease.
    present: bool,
    /// The entry is among the first `limit` of the queue.
    granted: bool,
    /// The key just ahead of the entry's.
    predecessor: Option<String>,
    /// The revision of the look.
    revision: i64,
}
