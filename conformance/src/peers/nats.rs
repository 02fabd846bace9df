//! The original Go NATS JetStream KV locker (go-warp's `lock.NATS`), ported: the peer the
//! NATS benchmarks race, and the raw material of the NATS mutants (`crate::mutants::nats`).
//!
//! [`PortedNatsLocker::go_original`] is the Go locker itself, faithfully — a waiter that opens
//! its watch only after its failed try, and expiry kept in the holder's process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use futures::StreamExt;
use lockcheck_impls::nats::encode_key;
use lockcheck_impls::{
    Capabilities, FencingToken, Lease, LeaseRequest, LockError, Locker, OwnerToken, validate_ttl, validate_wait,
};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

pub(crate) fn unavailable(message: &str, error: impl std::error::Error + Send + Sync + 'static) -> LockError {
    LockError::Unavailable { message: message.to_owned(), source: Some(Box::new(error)) }
}

/// Waits on `watch` for a delete or purge of the key that happened after `opened_at`,
/// ignoring what the watch replays of the past — NATS's `UpdatesOnly()` watch option.
pub(crate) async fn next_removal_after(watch: &mut kv::Watch, opened_at: SystemTime, deadline: Instant) -> Option<()> {
    loop {
        tokio::select! {
            event = watch.next() => match event {
                Some(Ok(entry)) if entry.operation != kv::Operation::Put && SystemTime::from(entry.created) >= opened_at => return Some(()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            },
            () = sleep_until(deadline) => return None,
        }
    }
}

/// A port of the Go NATS locker: `kv.Create` without a TTL, a timer in the holder's process
/// as the only expiry, a token-and-revision-checked delete as release. `watch_before_try`
/// chooses the waiter's ordering (the Go original: false).
pub struct PortedNatsLocker {
    describe: String,
    kv: kv::Store,
    watch_before_try: bool,
    /// The holder-side expiry timers; they die with the locker, as with the holder's process.
    timers: Arc<Mutex<HashMap<OwnerToken, JoinHandle<()>>>>,
}

impl Drop for PortedNatsLocker {
    fn drop(&mut self) {
        for (_, timer) in self.timers.lock().expect("timers poisoned").drain() {
            timer.abort();
        }
    }
}

impl PortedNatsLocker {
    /// Connects to `hosts` and opens (or creates) the Go locker's bucket: history 1, no TTLs.
    pub async fn connect(hosts: &str, bucket: &str, watch_before_try: bool) -> Result<Self, LockError> {
        let client = async_nats::connect(hosts).await.map_err(|e| unavailable("connect", e))?;
        let js = jetstream::new(client);
        let config = kv::Config { bucket: bucket.to_owned(), history: 1, ..Default::default() };
        let kv = match js.create_key_value(config).await {
            Ok(kv) => kv,
            Err(_) => js.get_key_value(bucket).await.map_err(|e| unavailable("open bucket", e))?,
        };
        let describe = format!("nats://{hosts}?bucket={bucket} (ported Go locker)");
        Ok(PortedNatsLocker { describe, kv, watch_before_try, timers: Arc::default() })
    }

    /// The Go locker, faithfully: watch after the failed try, expiry only in the holder.
    pub async fn go_original(hosts: &str, bucket: &str) -> Result<Self, LockError> {
        Self::connect(hosts, bucket, false).await
    }

    fn arm_timer(&self, key: &str, owner: OwnerToken, at: Instant) {
        let (kv, key, timers) = (self.kv.clone(), key.to_owned(), self.timers.clone());
        let timer = tokio::spawn(async move {
            sleep_until(at).await;
            let _ = release_with_token(&kv, &key, owner).await;
            timers.lock().expect("timers poisoned").remove(&owner);
        });
        if let Some(old) = self.timers.lock().expect("timers poisoned").insert(owner, timer) {
            old.abort();
        }
    }

    fn disarm(&self, owner: OwnerToken) {
        if let Some(timer) = self.timers.lock().expect("timers poisoned").remove(&owner) {
            timer.abort();
        }
    }
}

/// The Go `releaseWithToken`: read, compare the token, delete at that revision.
async fn release_with_token(kv: &kv::Store, key: &str, owner: OwnerToken) -> Result<bool, LockError> {
    let encoded = encode_key(key);
    let Some(entry) = kv.entry(encoded.as_str()).await.map_err(|e| unavailable("get", e))? else { return Ok(false) };
    if entry.operation != kv::Operation::Put || entry.value.as_ref() != owner.to_string().as_bytes() {
        return Ok(false);
    }
    Ok(kv.delete_expect_revision(encoded, Some(entry.revision)).await.is_ok())
}

#[async_trait]
impl Locker for PortedNatsLocker {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    /// What the Go locker promised: locks that expire. It cannot keep that promise when the
    /// holder crashes, which is what the suite must find.
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::all_in_process();
        capabilities.fifo = false;
        capabilities.semaphores = false;
        capabilities.fencing_survives_restart = true;
        capabilities.survives_server_restart = true;
        capabilities
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        request.validate()?;
        if request.limit() != 1 {
            return Err(LockError::Unsupported { operation: "semaphores" });
        }
        let owner = OwnerToken::random();
        let sent_at = Instant::now();
        match self.kv.create(encode_key(request.key()), owner.to_string().into()).await {
            Ok(revision) => {
                self.arm_timer(request.key(), owner, sent_at + request.ttl());
                Ok(Some(Lease::new(request.key(), owner, FencingToken(revision), request.ttl(), sent_at, 1)))
            }
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(error) => Err(unavailable("create", error)),
        }
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        request.validate()?;
        validate_wait(wait)?;
        let started = Instant::now();
        let deadline = started + wait;
        let encoded = encode_key(request.key());
        loop {
            let early_watch = if self.watch_before_try {
                Some(self.kv.watch(encoded.as_str()).await.map_err(|e| unavailable("watch", e))?)
            } else {
                None
            };
            if let Some(lease) = self.try_acquire(request).await? {
                return Ok(lease);
            }
            let woken = match early_watch {
                // Opened before the try: its replay of the key's current state counts.
                Some(mut watch) => next_removal_after(&mut watch, SystemTime::UNIX_EPOCH, deadline).await,
                None => {
                    let opened_at = SystemTime::now();
                    let mut watch = self.kv.watch(encoded.as_str()).await.map_err(|e| unavailable("watch", e))?;
                    next_removal_after(&mut watch, opened_at, deadline).await
                }
            };
            if woken.is_none() && Instant::now() >= deadline {
                return Err(LockError::TimedOut { waited: started.elapsed() });
            }
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let released = release_with_token(&self.kv, lease.key(), lease.owner()).await?;
        if released {
            self.disarm(lease.owner());
        }
        Ok(released)
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        validate_ttl(ttl)?;
        let sent_at = Instant::now();
        let entry = self.kv.entry(encode_key(lease.key())).await.map_err(|e| unavailable("get", e))?;
        let held = entry.is_some_and(|entry| {
            entry.operation == kv::Operation::Put && entry.value.as_ref() == lease.owner().to_string().as_bytes()
        });
        if !held {
            return Ok(None);
        }
        self.arm_timer(lease.key(), lease.owner(), sent_at + ttl);
        Ok(Some(lease.refreshed(ttl, sent_at)))
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let entry = self.kv.entry(encode_key(lease.key())).await.map_err(|e| unavailable("get", e))?;
        let held = entry.is_some_and(|entry| {
            entry.operation == kv::Operation::Put && entry.value.as_ref() == lease.owner().to_string().as_bytes()
        });
        // No server TTL: the holder's own timer is the only expiry.
        Ok(held.then(|| lease.locally_remaining()))
    }
}
