//! The server's lock table: per key its permit limit, holders (token, connection, expiry)
//! and FIFO queue of waiters. One mutex guards it all; every operation is a few map
//! lookups, so contention on the mutex is far below the cost of the socket I/O around it.
//!
//! Hand-off happens inside the mutex: when a slot frees (release, expiry, disconnect), the
//! first live waiter becomes the holder *before* the mutex is released and its grant is sent
//! on a oneshot channel. A waiter that gives up (timeout, disconnect) removes itself under
//! the same mutex; if it is no longer queued, its grant is already in its channel — so a
//! grant is never lost between "granted" and "gave up".
//!
//! A grant can also be refused (the fencing counter is exhausted, or its ceiling cannot be
//! persisted): a waiter is then sent the refusal instead of a grant, so it answers at once
//! with the status rather than waiting out its timeout.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::config::{EventSink, ServerEvent, worth_reporting};
use super::fence::{FenceCounter, FenceError, token};
use lockcheck_impls::dflockd::protocol::{Namespace, Status};

pub(crate) type ConnId = u64;
pub(crate) type KeyId = (Namespace, String);

/// Waits longer than this are treated as this long (an `Instant` cannot hold
/// `MAX_PROTOCOL_SECONDS` from now on every platform). Leases never reach it: they are
/// clamped to `MAX_LEASE_TTL_S` (a year) before they get here.
const MAX_TIMER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const _: () = assert!(super::config::MAX_LEASE_TTL_S < MAX_TIMER.as_secs());

pub(crate) fn after(now: Instant, seconds: u64) -> Instant {
    later(now, Duration::from_secs(seconds))
}

/// `now + duration`, capped at [`MAX_TIMER`] from now: never overflows.
pub(crate) fn later(now: Instant, duration: Duration) -> Instant {
    let duration = duration.min(MAX_TIMER);
    // Ten years fit an instant on every platform tokio runs on; the fallbacks only keep
    // this free of a panic path.
    now.checked_add(duration).or_else(|| now.checked_add(Duration::from_secs(24 * 3600))).unwrap_or(now)
}

/// The most entries a `stats` document lists (locks, semaphores and idle keys together).
/// The document stays under the client's reply cap (`MAX_REPLY_BYTES`, 1 MiB) even with
/// keys at the longest a line allows; a `"truncated"` field counts what was left out.
pub(crate) const MAX_STATS_ENTRIES: usize = 1024;

/// What a queued waiter is sent: its grant, or why it cannot have one.
pub(crate) type Granted = Result<Grant, Status>;

/// A grant handed to a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) token: String,
    pub(crate) lease_s: u64,
}

pub(crate) enum Admission {
    Granted(Grant),
    Queued { waiter: u64, rx: oneshot::Receiver<Granted> },
    Busy,
}

struct Holder {
    token: String,
    conn: ConnId,
    expires_at: Instant,
}

struct Waiter {
    id: u64,
    conn: ConnId,
    lease_s: u64,
    tx: oneshot::Sender<Granted>,
}

struct KeyState {
    limit: u32,
    holders: Vec<Holder>,
    waiters: VecDeque<Waiter>,
    last_activity: Instant,
}

struct Books {
    /// Per connection, how many slots it holds per key (auto-release on disconnect).
    owned: HashMap<ConnId, HashMap<KeyId, u32>>,
    /// Lease deadlines, lazily deleted: an entry whose holder moved on is skipped.
    deadlines: BinaryHeap<Reverse<(Instant, KeyId)>>,
    holders: usize,
    fence: FenceCounter,
    next_waiter: u64,
    sweeper_wake: Option<Instant>,
    events: EventSink,
    fence_exhaustion_reported: bool,
    /// Grants refused because the fence state file could not be written (reported at the
    /// first few and then at powers of two, not once per grant).
    fence_state_failures: u64,
}

struct Inner {
    keys: HashMap<KeyId, KeyState>,
    books: Books,
}

pub(crate) struct TableLimits {
    pub(crate) max_locks: usize,
    pub(crate) max_waiters: usize,
    /// Distinct keys one connection may hold, 0 = unlimited.
    pub(crate) max_keys_per_connection: usize,
    pub(crate) auto_release: bool,
}

pub(crate) struct Table {
    inner: Mutex<Inner>,
    limits: TableLimits,
    /// Wakes the expiry sweeper when a deadline earlier than its planned wake appears.
    pub(crate) deadline_added: Notify,
}

impl Books {
    fn grant(
        &mut self,
        id: &KeyId,
        st: &mut KeyState,
        conn: ConnId,
        lease_s: u64,
        now: Instant,
    ) -> Result<Grant, Status> {
        let fence = match self.fence.next() {
            Ok(fence) => fence,
            Err(FenceError::Exhausted) => {
                if !self.fence_exhaustion_reported {
                    self.fence_exhaustion_reported = true;
                    self.events.emit(ServerEvent::FenceExhausted { last: self.fence.last() });
                }
                return Err(Status::ErrorFenceExhausted);
            }
            Err(FenceError::State(error)) => {
                self.fence_state_failures = self.fence_state_failures.saturating_add(1);
                if worth_reporting(self.fence_state_failures) {
                    self.events.emit(ServerEvent::FenceStateUnwritable { message: error.to_string() });
                }
                return Err(Status::Error);
            }
        };
        let token = token(fence);
        let expires_at = after(now, lease_s);
        st.holders.push(Holder { token: token.clone(), conn, expires_at });
        self.holders += 1;
        // A connection's map stays (empty) while it is open: it is used again at its next grant.
        let owned = self.owned.entry(conn).or_default();
        match owned.get_mut(id) {
            Some(n) => *n += 1,
            None => {
                owned.insert(id.clone(), 1);
            }
        }
        self.push_deadline(expires_at, id);
        Ok(Grant { token, lease_s })
    }

    fn push_deadline(&mut self, at: Instant, id: &KeyId) {
        self.deadlines.push(Reverse((at, id.clone())));
    }

    /// Renewals and releases leave stale entries behind: once they outnumber the live ones,
    /// rebuild the heap from the holders. (Clearing it instead would lose the live leases'
    /// deadlines, and the sweeper would no longer expire them.)
    fn compact_deadlines(&mut self, keys: &HashMap<KeyId, KeyState>) {
        if self.deadlines.len() <= 4 * self.holders + 1024 {
            return;
        }
        self.deadlines = keys
            .iter()
            .flat_map(|(id, st)| st.holders.iter().map(move |h| Reverse((h.expires_at, id.clone()))))
            .collect();
    }

    fn remove_holder(&mut self, id: &KeyId, st: &mut KeyState, index: usize) {
        let holder = st.holders.swap_remove(index);
        self.holders -= 1;
        if let Some(keys) = self.owned.get_mut(&holder.conn)
            && let Some(n) = keys.get_mut(id)
        {
            *n -= 1;
            if *n == 0 {
                keys.remove(id);
            }
        }
    }

    fn evict_expired(&mut self, id: &KeyId, st: &mut KeyState, now: Instant) {
        let mut i = 0;
        while i < st.holders.len() {
            if st.holders[i].expires_at <= now {
                self.remove_holder(id, st, i);
            } else {
                i += 1;
            }
        }
    }

    /// Fills free slots from the queue, in arrival order, skipping waiters that left.
    fn hand_on(&mut self, id: &KeyId, st: &mut KeyState, now: Instant) {
        while st.holders.len() < st.limit as usize {
            let Some(waiter) = st.waiters.pop_front() else { return };
            if waiter.tx.is_closed() {
                continue;
            }
            let grant = match self.grant(id, st, waiter.conn, waiter.lease_s, now) {
                Ok(grant) => grant,
                Err(status) => {
                    // No grant can be made: tell the waiter now rather than at its timeout.
                    let _ = waiter.tx.send(Err(status));
                    continue;
                }
            };
            let token = grant.token.clone();
            if waiter.tx.send(Ok(grant)).is_err() {
                let index = st.holders.iter().position(|h| h.token == token).expect("just granted");
                self.remove_holder(id, st, index);
            }
        }
    }
}

impl Table {
    pub(crate) fn new(limits: TableLimits, fence: FenceCounter, events: EventSink) -> Self {
        Table {
            inner: Mutex::new(Inner {
                keys: HashMap::new(),
                books: Books {
                    owned: HashMap::new(),
                    deadlines: BinaryHeap::new(),
                    holders: 0,
                    fence,
                    next_waiter: 0,
                    sweeper_wake: None,
                    events,
                    fence_exhaustion_reported: false,
                    fence_state_failures: 0,
                },
            }),
            limits,
            deadline_added: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the table would be a bug; the data is still consistent
        // enough to keep serving other keys, so do not cascade the poison.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After any change that may have added a deadline (grants made by hand-off included).
    fn wake_sweeper_for_next(&self, books: &mut Books) {
        if let Some(Reverse((at, _))) = books.deadlines.peek() {
            let at = *at;
            self.wake_sweeper_if_earlier(books, at);
        }
    }

    fn wake_sweeper_if_earlier(&self, books: &mut Books, at: Instant) {
        if books.sweeper_wake.is_none_or(|w| at < w) {
            books.sweeper_wake = Some(at);
            self.deadline_added.notify_one();
        }
    }

    /// Takes a slot now, or queues (if `queue`), or reports the key busy.
    pub(crate) fn admit(
        &self,
        id: &KeyId,
        limit: u32,
        lease_s: u64,
        conn: ConnId,
        queue: bool,
    ) -> Result<Admission, Status> {
        let now = Instant::now();
        let mut guard = self.lock();
        let Inner { keys, books } = &mut *guard;
        books.compact_deadlines(keys);
        // Fair share: a connection at its cap of distinct keys gets no new one (neither a
        // new key in the table nor a slot on a key it does not hold yet).
        let cap = self.limits.max_keys_per_connection;
        if cap > 0
            && let Some(held) = books.owned.get(&conn)
            && held.len() >= cap
            && !held.contains_key(id)
        {
            return Err(Status::ErrorMaxLocks);
        }
        if !keys.contains_key(id) {
            if keys.len() >= self.limits.max_locks {
                return Err(Status::ErrorMaxLocks);
            }
            keys.insert(
                id.clone(),
                KeyState { limit, holders: Vec::new(), waiters: VecDeque::new(), last_activity: now },
            );
        }
        let st = keys.get_mut(id).expect("present");
        if st.limit != limit {
            return Err(Status::ErrorLimitMismatch);
        }
        st.last_activity = now;
        books.evict_expired(id, st, now);
        books.hand_on(id, st, now);
        self.wake_sweeper_for_next(books);
        if st.holders.len() < limit as usize && st.waiters.is_empty() {
            let grant = books.grant(id, st, conn, lease_s, now)?;
            self.wake_sweeper_if_earlier(books, after(now, lease_s));
            return Ok(Admission::Granted(grant));
        }
        if !queue {
            return Ok(Admission::Busy);
        }
        if self.limits.max_waiters > 0 && st.waiters.len() >= self.limits.max_waiters {
            return Err(Status::ErrorMaxWaiters);
        }
        let (tx, rx) = oneshot::channel();
        books.next_waiter = books.next_waiter.wrapping_add(1);
        let waiter = books.next_waiter;
        st.waiters.push_back(Waiter { id: waiter, conn, lease_s, tx });
        Ok(Admission::Queued { waiter, rx })
    }

    /// Removes a waiter. `false` if it is no longer queued: it was granted (the grant is in
    /// its channel) or it had left.
    pub(crate) fn cancel_waiter(&self, id: &KeyId, waiter: u64) -> bool {
        let mut guard = self.lock();
        let Some(st) = guard.keys.get_mut(id) else { return false };
        match st.waiters.iter().position(|w| w.id == waiter) {
            Some(index) => {
                st.waiters.remove(index);
                true
            }
            None => false,
        }
    }

    pub(crate) fn release(&self, id: &KeyId, token: &str) -> bool {
        let now = Instant::now();
        let mut guard = self.lock();
        let Inner { keys, books } = &mut *guard;
        books.compact_deadlines(keys);
        let Some(st) = keys.get_mut(id) else { return false };
        st.last_activity = now;
        books.evict_expired(id, st, now);
        let found = st.holders.iter().position(|h| h.token == token);
        if let Some(index) = found {
            books.remove_holder(id, st, index);
        }
        books.hand_on(id, st, now);
        self.wake_sweeper_for_next(books);
        found.is_some()
    }

    /// Resets the holder's expiry to now + `lease_s`. `None` if `token` does not hold the
    /// key (an expired holder is evicted and its slot handed on).
    pub(crate) fn renew(&self, id: &KeyId, token: &str, lease_s: u64) -> Option<u64> {
        let now = Instant::now();
        let mut guard = self.lock();
        let Inner { keys, books } = &mut *guard;
        books.compact_deadlines(keys);
        let st = keys.get_mut(id)?;
        st.last_activity = now;
        books.evict_expired(id, st, now);
        let Some(holder) = st.holders.iter_mut().find(|h| h.token == token) else {
            books.hand_on(id, st, now);
            self.wake_sweeper_for_next(books);
            return None;
        };
        holder.expires_at = after(now, lease_s);
        books.push_deadline(holder.expires_at, id);
        Some(lease_s)
    }

    /// Expires due leases and hands their slots on; returns the next deadline.
    pub(crate) fn expire_due(&self, now: Instant) -> Option<Instant> {
        let mut guard = self.lock();
        let Inner { keys, books } = &mut *guard;
        books.compact_deadlines(keys);
        while let Some(Reverse((at, _))) = books.deadlines.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, id)) = books.deadlines.pop().expect("peeked");
            if let Some(st) = keys.get_mut(&id) {
                books.evict_expired(&id, st, now);
                books.hand_on(&id, st, now);
            }
        }
        let next = books.deadlines.peek().map(|Reverse((at, _))| *at);
        books.sweeper_wake = next;
        next
    }

    /// Forgets keys nobody holds or waits for and nobody touched for `max_idle`.
    pub(crate) fn collect_idle(&self, now: Instant, max_idle: Duration) -> usize {
        let mut guard = self.lock();
        let before = guard.keys.len();
        guard.keys.retain(|_, st| {
            st.waiters.retain(|w| !w.tx.is_closed());
            !(st.holders.is_empty() && st.waiters.is_empty() && now.duration_since(st.last_activity) >= max_idle)
        });
        before - guard.keys.len()
    }

    /// A connection closed: its waiters leave the queues and (with auto-release) its slots
    /// are released and handed on.
    pub(crate) fn disconnect(&self, conn: ConnId, waiting: &[(KeyId, u64)]) {
        let now = Instant::now();
        let mut guard = self.lock();
        let Inner { keys, books } = &mut *guard;
        books.compact_deadlines(keys);
        for (id, waiter) in waiting {
            if let Some(st) = keys.get_mut(id) {
                st.waiters.retain(|w| w.id != *waiter);
            }
        }
        let owned = books.owned.remove(&conn);
        if !self.limits.auto_release {
            return;
        }
        let Some(owned) = owned else { return };
        for id in owned.into_keys() {
            let Some(st) = keys.get_mut(&id) else { continue };
            st.last_activity = now;
            let mut i = 0;
            while i < st.holders.len() {
                if st.holders[i].conn == conn {
                    // The conn's books entry is gone already; only fix the holder count.
                    st.holders.swap_remove(i);
                    books.holders -= 1;
                } else {
                    i += 1;
                }
            }
            books.hand_on(&id, st, now);
        }
        self.wake_sweeper_for_next(books);
    }

    /// The `stats` document (Go v1.10 shape).
    pub(crate) fn stats(&self, connections: usize) -> serde_json::Value {
        /// One key as the document shows it, copied out under the mutex.
        struct Row {
            id: KeyId,
            limit: u32,
            live: usize,
            /// The first live holder's connection and expiry.
            first: Option<(ConnId, Instant)>,
            waiters: usize,
            last_activity: Instant,
        }
        let now = Instant::now();
        // Under the mutex only the copy of at most MAX_STATS_ENTRIES rows; the JSON is built
        // after it is released, so a `stats` loop holds up lock traffic as little as it can.
        let (rows, truncated) = {
            let guard = self.lock();
            let mut ids: Vec<&KeyId> = guard.keys.keys().collect();
            let truncated = ids.len().saturating_sub(MAX_STATS_ENTRIES);
            if truncated > 0 {
                ids.select_nth_unstable(MAX_STATS_ENTRIES);
                ids.truncate(MAX_STATS_ENTRIES);
            }
            let rows: Vec<Row> = ids
                .into_iter()
                .map(|id| {
                    let st = &guard.keys[id];
                    let mut live = st.holders.iter().filter(|h| h.expires_at > now);
                    let first = live.next().map(|h| (h.conn, h.expires_at));
                    Row {
                        id: id.clone(),
                        limit: st.limit,
                        live: usize::from(first.is_some()) + live.count(),
                        first,
                        waiters: st.waiters.iter().filter(|w| !w.tx.is_closed()).count(),
                        last_activity: st.last_activity,
                    }
                })
                .collect();
            (rows, truncated)
        };
        let mut rows = rows;
        rows.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut locks = Vec::new();
        let mut semaphores = Vec::new();
        let mut idle_locks = Vec::new();
        let mut idle_semaphores = Vec::new();
        for row in rows {
            let idle = row.live == 0 && row.waiters == 0;
            let idle_s = now.duration_since(row.last_activity).as_secs_f64();
            let (ns, key) = row.id;
            match (ns, idle) {
                (Namespace::Lock, false) => locks.push(serde_json::json!({
                    "key": key,
                    "owner_conn_id": row.first.map(|(conn, _)| conn),
                    "lease_expires_in_s": row.first.map_or(0.0, |(_, at)| at.duration_since(now).as_secs_f64()),
                    "waiters": row.waiters,
                })),
                (Namespace::Semaphore, false) => semaphores.push(serde_json::json!({
                    "key": key, "limit": row.limit, "holders": row.live, "waiters": row.waiters,
                })),
                (Namespace::Lock, true) => idle_locks.push(serde_json::json!({"key": key, "idle_s": idle_s})),
                (Namespace::Semaphore, true) => idle_semaphores.push(serde_json::json!({"key": key, "idle_s": idle_s})),
            }
        }
        let mut doc = serde_json::json!({
            "connections": connections,
            "locks": locks,
            "semaphores": semaphores,
            "idle_locks": idle_locks,
            "idle_semaphores": idle_semaphores,
        });
        if truncated > 0 {
            doc["truncated"] = truncated.into();
        }
        doc
    }

    /// Number of keys in the table (tests and hostile-input checks).
    pub(crate) fn key_count(&self) -> usize {
        self.lock().keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fence state file that can no longer be written refuses the grant (nothing beyond
    /// the persisted ceiling is handed out) and says so, once per burst, not per grant.
    #[test]
    fn an_unwritable_fence_state_file_refuses_grants_and_is_reported() {
        let dir = std::env::temp_dir().join(format!("lockcheck-table-fence-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut fence = FenceCounter::new(Some(dir.join("fence"))).unwrap();
        fence.reserve_at_next();
        std::fs::remove_dir_all(&dir).unwrap();
        let events = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let events = events.clone();
            EventSink::new(move |e| events.lock().unwrap().push(e.clone()))
        };
        let limits = TableLimits { max_locks: 16, max_waiters: 0, max_keys_per_connection: 0, auto_release: false };
        let table = Table::new(limits, fence, sink);
        let id = (Namespace::Lock, "k".to_owned());
        for _ in 0..5 {
            assert!(matches!(table.admit(&id, 1, 5, 1, false), Err(Status::Error)));
        }
        let reported =
            events.lock().unwrap().iter().filter(|e| matches!(e, ServerEvent::FenceStateUnwritable { .. })).count();
        assert_eq!(reported, 4, "the first three refusals and the fourth");
        assert_eq!(table.lock().books.holders, 0);
    }

    /// Guards against a `stats` reply larger than a client accepts (1 MiB) on a big table:
    /// at most MAX_STATS_ENTRIES keys are listed, the smallest in key order, and the rest
    /// counted.
    #[test]
    fn stats_lists_at_most_its_cap_and_counts_the_rest() {
        let limits = TableLimits { max_locks: 5000, max_waiters: 0, max_keys_per_connection: 0, auto_release: false };
        let table = Table::new(limits, FenceCounter::new(None).unwrap(), EventSink::new(|_| {}));
        for i in 0..MAX_STATS_ENTRIES + 500 {
            let id = (Namespace::Lock, format!("{i:0>255}"));
            grant(&table, &id, 60, 1);
        }
        let doc = table.stats(1);
        assert_eq!(doc["truncated"], 500);
        let locks = doc["locks"].as_array().unwrap();
        assert_eq!(locks.len(), MAX_STATS_ENTRIES);
        assert_eq!(locks[0]["key"], format!("{:0>255}", 0));
        assert!(doc.to_string().len() < lockcheck_impls::dflockd::MAX_REPLY_BYTES, "{} bytes", doc.to_string().len());
    }

    fn table() -> Table {
        let limits = TableLimits { max_locks: 16, max_waiters: 0, max_keys_per_connection: 0, auto_release: false };
        Table::new(limits, FenceCounter::new(None).expect("no state file"), EventSink::new(|_| {}))
    }

    fn grant(table: &Table, id: &KeyId, lease_s: u64, conn: ConnId) -> Grant {
        match table.admit(id, 1, lease_s, conn, false) {
            Ok(Admission::Granted(grant)) => grant,
            _ => panic!("{id:?} should be free"),
        }
    }

    /// Guards against the sweeper forgetting a live lease: the deadline heap used to be
    /// cleared (keeping only the newest entry) once stale entries piled up, so a lease granted
    /// before a burst of other grants was never expired by the sweeper, and a waiter queued
    /// behind it waited until its own timeout.
    #[test]
    fn a_lease_still_expires_after_many_grants_on_other_keys() {
        let table = table();
        let start = Instant::now();
        let held = (Namespace::Lock, "held".to_owned());
        grant(&table, &held, 1, 1);
        let busy = (Namespace::Lock, "busy".to_owned());
        for _ in 0..3_000 {
            let g = grant(&table, &busy, 60, 2);
            assert!(table.release(&busy, &g.token));
        }
        let next = table.expire_due(start + Duration::from_secs(2));
        assert_eq!(table.lock().books.holders, 0, "the expired lease is still held");
        assert!(next.is_none_or(|at| at > start + Duration::from_secs(2)));
    }
}
