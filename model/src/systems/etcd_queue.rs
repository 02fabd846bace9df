//! etcd's lock recipe: a queue of keys ordered by their create revision.
//!
//! Each client puts a key under the lock's prefix, bound to its lease (etcd's
//! `concurrency.Mutex`: the key is `prefix/<lease id>`, put in a transaction that also reads
//! the current owner). The key's **create revision** is its place in line and its fencing
//! token: revisions are the store's, so they only grow, across every key and every lease. The
//! client whose key has the lowest create revision holds the lock. Every other client waits
//! (`waitDeletes`): it reads the last key created below its own (`WithLastCreate`,
//! `WithMaxCreateRev(myRev - 1)`) and watches that key, from the read's revision, for its
//! deletion; on the deletion it reads again, until nothing is left below it. Then (etcd 3.5's
//! `Lock`) it reads its own key: if the key is gone, its lease ran out while it waited and the
//! lock is **not** held (`ErrSessionExpired`); here it then queues again with a new lease, as
//! an application retrying on that error does. Release deletes the key; a lease that runs out
//! deletes its key on the server.
//!
//! Three variants:
//!
//! - **predecessor** (`etcd-queue`, correct): the recipe above. Each waiter watches only the key
//!   just below its own, so a deletion wakes one waiter: the one next in line.
//! - **herd** (`etcd-queue-herd`, safe but slow): every waiter watches the lowest key below its
//!   own (the owner's) instead of its predecessor. Who holds is decided exactly as above, so
//!   exclusion, fencing, FIFO and liveness hold as well; but every release wakes every waiter,
//!   each of which reads the prefix again and most of which go back to sleep: the thundering
//!   herd. The model-only property [`super::properties::ONE_WAKEUP_PER_RELEASE`] — *a removal wakes at most one
//!   waiter that still has its key* — holds for the predecessor recipe and fails here, with 3
//!   clients (two waiters behind one holder); with 2 clients there is only one waiter and the
//!   two recipes cannot be told apart.
//! - **stale grant** (`etcd-queue-stale-grant`, flawed): the waiter believes it holds as soon
//!   as nothing is left below its key, without looking at its own key — etcd's `Lock` before
//!   3.5, or one that looks with a stale (serializable) read that still shows the key. The
//!   finding Jepsen reported on etcd 3.4.3 (Kingsbury, "etcd 3.4.3", 2020): a waiter whose lease
//!   expires while it waits (a pause, a partition) loses its key, the waiter behind it moves up,
//!   and when the holder releases both believe they hold. It takes three clients: the holder,
//!   the waiter whose lease runs out, and the one behind it.
//!
//! **Leases.** A lease is the client's session: kept alive by the client, it runs out only if
//! the client crashes or is paused (or cut off) past its TTL. Each lease's expiry is a server
//! timer that may fire at any moment, and it stands for the environment: liveness counts it as
//! pending only once its client crashed ([`Algorithm::failure_detector_of`]). A waiter's lease
//! may run out at any time (that is what the recipe must survive); a holder's may not — that is
//! the pause past the lease that no lock survives without fencing, outside these configurations
//! ([`super::Faults::pauses`]). The ghost [`Server::expired`] therefore records only leases that
//! ran out after the server had told their client it was first in line. Runs are bounded: at
//! most [`LEASE_EXPIRIES`] leases run out per run (with three clients, enough for every client's
//! lease to run out once: a crashed client's and two paused waiters', say), because each waiter
//! that loses its lease queues again with a new one, which could run out again, without end.
//! With a bound of 2 the verdicts are the same (and the 3-client state counts about half).
//!
//! **What is merged.** The put and the first read-and-watch are one step on the server (etcd
//! does the put and the owner read in one transaction, and a watch from the read's revision
//! sees every deletion after the read, so nothing between the two can be missed); so are the
//! final "nothing below me" read and the read of the client's own key (a lease that runs out
//! between them is the same as one that runs out just before the merged read). One server
//! stands for the cluster: its reads are linearizable, as etcd's default reads are.
//!
//! Source: etcd `client/v3/concurrency/mutex.go` (`Lock`, `waitDeletes`, `ErrSessionExpired`)
//! and `key.go` (`waitDelete`); Kingsbury, "Jepsen: etcd 3.4.3" (2020).

use std::collections::{BTreeMap, BTreeSet};

use stateright::actor::Id;

use super::actor::{Algorithm, Event, Fence, Key, Me, Outbox, Setup, Token};
use super::properties::{LockModel, LockState, servers};
use super::symmetry::{Rename, Renaming, rename_keyed};

/// At most this many leases (or ZooKeeper sessions) run out per run (see the module docs).
pub const LEASE_EXPIRIES: u8 = 3;

/// Which key a waiter watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// The key just below its own (the last one created before it).
    Predecessor,
    /// The lowest key (the owner's): every waiter watches the same key.
    Lowest,
}

/// The etcd revision-queue lock.
#[derive(Clone, Copy, Debug)]
pub struct EtcdQueue {
    /// Which key a waiter watches.
    pub watch: Watch,
    /// Whether a waiter that finds nothing below its key checks that its key still exists
    /// (etcd 3.5's `Lock`) before it believes it holds.
    pub check_own_key: bool,
}

/// Messages of the recipe.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Put `prefix/<lease>` bound to the client's lease, then read below it and watch.
    Put(Key, Token),
    /// The put's create revision, and whether nothing was below it (the client holds).
    Queued(Key, Fence, bool),
    /// `waitDeletes` again: read the key below this revision and watch it, or, if there is
    /// none, answer [`Msg::NothingBelow`].
    WaitBelow(Key, Token, Fence),
    /// Nothing is left below the caller's key; whether the caller's key still exists.
    NothingBelow(Key, bool),
    /// Watch event: the watched key was deleted.
    Deleted(Key),
    /// Release: delete the caller's key at this revision (and revoke its lease).
    Delete(Key, Fence),
}

/// Server timers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The client's lease runs out: the server deletes its key.
    Lease(Key, Token),
}

/// A key in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// Whose lease the key is bound to.
    pub token: Token,
    /// The client's connection (for the ghosts: who is still in line).
    pub client: Id,
    /// Ghost: the server told the client it is first in line.
    pub granted: bool,
}

/// One lock's prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Queue {
    /// The keys under the prefix, by create revision.
    pub keys: BTreeMap<Fence, Entry>,
    /// Watches: the watched key's create revision and the watcher.
    pub watches: BTreeSet<(Fence, Id)>,
}

/// The etcd server (one stands for the cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Server {
    /// The store's revision.
    pub revision: Fence,
    /// Per lock, its prefix.
    pub queues: BTreeMap<Key, Queue>,
    /// Ghost: leases that ran out after their client was told it holds.
    pub expired: BTreeSet<Token>,
    /// Ghost: leases that ran out while their key existed (bounded by [`LEASE_EXPIRIES`]).
    pub expiries: u8,
    /// Ghost: a deletion woke two or more waiters that still had their keys.
    pub herd: bool,
}

/// A client's protocol state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// The create revision of its key (its place in line and its fencing token).
    pub revision: Option<Fence>,
}

impl Queue {
    /// Deletes the key at `revision` and wakes its watchers.
    fn delete(&mut self, key: Key, revision: Fence, herd: &mut bool, out: &mut Outbox<EtcdQueue>) -> Option<Entry> {
        let entry = self.keys.remove(&revision)?;
        let woken: Vec<Id> = self.watches.iter().filter(|(r, _)| *r == revision).map(|(_, id)| *id).collect();
        self.watches.retain(|(r, _)| *r != revision);
        let in_line = woken.iter().filter(|id| self.keys.values().any(|e| e.client == **id)).count();
        if in_line >= 2 {
            *herd = true;
        }
        for watcher in woken {
            out.send(watcher, Msg::Deleted(key));
        }
        Some(entry)
    }
}

impl EtcdQueue {
    /// `waitDeletes`' step: the key to watch below `revision`, watched; or, with nothing
    /// below, the answer (and whether the caller's key still exists).
    fn wait_below(&self, queue: &mut Queue, revision: Fence, token: Token, src: Id) -> Option<bool> {
        let mut below = queue.keys.range(..revision).map(|(r, _)| *r);
        let target = match self.watch {
            Watch::Predecessor => below.next_back(),
            Watch::Lowest => below.next(),
        };
        match target {
            Some(target) => {
                queue.watches.insert((target, src));
                None
            }
            None => {
                let mine = queue.keys.get_mut(&revision).filter(|e| e.token == token);
                let alive = mine.is_some();
                if let Some(entry) = mine {
                    entry.granted = true;
                }
                Some(alive)
            }
        }
    }
}

impl Algorithm for EtcdQueue {
    type Msg = Msg;
    type Timer = Timer;
    type Server = Server;
    type Client = Client;

    /// Clients are told apart only by their tokens and connections: the queue orders them
    /// by revision, never by client; every lease has its own timer.
    fn clients_interchangeable(&self, _: &Setup) -> bool {
        true
    }

    fn within_bounds(&self, _: &Setup, server: &Server) -> bool {
        server.expiries <= LEASE_EXPIRIES
    }

    fn server_start(&self, _: &Setup, _: Id, _: u8, _: &mut Outbox<Self>) -> Server {
        Server::default()
    }

    fn server_msg(&self, _: &Setup, _: Id, server: &mut Server, src: Id, msg: Msg, out: &mut Outbox<Self>) {
        match msg {
            Msg::Put(key, token) => {
                server.revision += 1;
                let revision = server.revision;
                let queue = server.queues.entry(key).or_default();
                queue.keys.insert(revision, Entry { token, client: src, granted: false });
                out.set_timer(Timer::Lease(key, token));
                let first = self.wait_below(queue, revision, token, src).is_some();
                out.send(src, Msg::Queued(key, revision, first));
            }
            Msg::WaitBelow(key, token, revision) => {
                let queue = server.queues.entry(key).or_default();
                if let Some(alive) = self.wait_below(queue, revision, token, src) {
                    out.send(src, Msg::NothingBelow(key, alive));
                }
            }
            Msg::Delete(key, revision) => {
                let queue = server.queues.entry(key).or_default();
                if let Some(entry) = queue.delete(key, revision, &mut server.herd, out) {
                    out.cancel_timer(Timer::Lease(key, entry.token));
                }
            }
            Msg::Queued(..) | Msg::NothingBelow(..) | Msg::Deleted(_) => {}
        }
    }

    fn server_timer(&self, _: &Setup, _: Id, server: &mut Server, timer: &Timer, out: &mut Outbox<Self>) {
        let Timer::Lease(key, token) = *timer;
        let queue = server.queues.entry(key).or_default();
        let Some(revision) = queue.keys.iter().find(|(_, e)| e.token == token).map(|(r, _)| *r) else { return };
        if let Some(entry) = queue.delete(key, revision, &mut server.herd, out) {
            server.expiries += 1;
            if entry.granted {
                server.expired.insert(token);
            }
        }
    }

    fn client_acquire(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        *client = Client::default();
        out.send(setup.server(0), Msg::Put(me.key, me.token));
    }

    fn client_msg(&self, setup: &Setup, me: Me, client: &mut Client, _: Id, msg: Msg, out: &mut Outbox<Self>) -> Event {
        match msg {
            Msg::Queued(_, revision, first) => {
                client.revision = Some(revision);
                if first {
                    return Event::Granted(Some(revision));
                }
            }
            Msg::Deleted(key) => {
                if let Some(revision) = client.revision {
                    out.send(setup.server(0), Msg::WaitBelow(key, me.token, revision));
                }
            }
            Msg::NothingBelow(key, alive) => {
                let Some(revision) = client.revision else { return Event::Nothing };
                if alive || !self.check_own_key {
                    return Event::Granted(Some(revision));
                }
                // ErrSessionExpired: its lease ran out while it waited. Queue again, with a
                // new lease (the lease timer is the same: one lease per client at a time).
                client.revision = None;
                out.send(setup.server(0), Msg::Put(key, me.token));
            }
            Msg::Put(..) | Msg::WaitBelow(..) | Msg::Delete(..) => {}
        }
        Event::Nothing
    }

    fn client_release(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        if let Some(revision) = client.revision.take() {
            out.send(setup.server(0), Msg::Delete(me.key, revision));
        }
    }

    /// Its key is the lowest under the prefix.
    fn holds(&self, server: &Server, token: Token) -> bool {
        server.queues.values().any(|q| q.keys.values().next().is_some_and(|e| e.token == token))
    }

    fn lease_expired(&self, server: &Server, token: Token) -> bool {
        server.expired.contains(&token)
    }

    fn fifo_ticket(&self, client: &Client) -> Option<u32> {
        client.revision.map(|r| r as u32)
    }

    fn in_line(&self, server: &Server, token: Token, ticket: u32) -> bool {
        server.queues.values().any(|q| q.keys.get(&Fence::from(ticket)).is_some_and(|e| e.token == token))
    }

    fn failure_detector_of(&self, timer: &Timer) -> Option<u8> {
        let Timer::Lease(_, token) = timer;
        Some(token.client)
    }
}

/// [`super::properties::ONE_WAKEUP_PER_RELEASE`] for the etcd recipes: no deletion woke two waiters that still
/// had their keys.
pub fn one_wakeup_per_release(model: &LockModel<EtcdQueue>, state: &LockState<EtcdQueue>) -> bool {
    servers(&model.cfg, state).all(|s| !s.herd)
}

impl Rename for Msg {
    fn rename(&self, r: &Renaming) -> Self {
        match *self {
            Msg::Put(key, token) => Msg::Put(key, r.token(token)),
            Msg::WaitBelow(key, token, revision) => Msg::WaitBelow(key, r.token(token), revision),
            Msg::Queued(..) | Msg::NothingBelow(..) | Msg::Deleted(_) | Msg::Delete(..) => self.clone(),
        }
    }
}

impl Rename for Timer {
    fn rename(&self, r: &Renaming) -> Self {
        let Timer::Lease(key, token) = *self;
        Timer::Lease(key, r.token(token))
    }
}

impl Rename for Queue {
    fn rename(&self, r: &Renaming) -> Self {
        Queue {
            keys: self
                .keys
                .iter()
                .map(|(rev, e)| (*rev, Entry { token: r.token(e.token), client: r.id(e.client), granted: e.granted }))
                .collect(),
            watches: self.watches.iter().map(|(rev, id)| (*rev, r.id(*id))).collect(),
        }
    }
}

impl Rename for Server {
    fn rename(&self, r: &Renaming) -> Self {
        Server { queues: rename_keyed(&self.queues, r), expired: r.tokens(&self.expired), ..self.clone() }
    }
}

impl Rename for Client {
    fn rename(&self, _: &Renaming) -> Self {
        self.clone()
    }
}
