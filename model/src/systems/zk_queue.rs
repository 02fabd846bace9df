//! ZooKeeper's lock recipe: ephemeral sequential nodes, each waiter watching its predecessor,
//! with sessions that expire while their clients wait.
//!
//! Each client opens a session and creates an **ephemeral sequential** node under the lock's
//! node (`/lock/n-<seq>`): the server appends the parent's sequence number, which only grows,
//! and deletes the node when the session ends. The client lists the children: if its node
//! has the lowest number it holds the lock (the number is its fencing token, as a Chubby
//! sequencer is); otherwise it sets a watch (`exists(…, watch)`) on the node just below its
//! own. When the watch fires (`NodeDeleted`) it lists the children again (the ZooKeeper
//! recipe insists on this: the predecessor may have left because its session expired, not
//! because it held and released). Release deletes the node (and closes the session).
//!
//! **Sessions.** A session expires when the ensemble hears nothing from its client for the
//! session timeout: the client crashed, or it is paused or cut off. Then the server deletes the
//! session's ephemeral node, drops the session's watches, and the client learns `Expired`
//! when it reconnects; a request on the expired session fails with the same error. What the
//! server sent before the expiry still reaches the client first (one ordered connection: a
//! paused client finds the events in its socket buffer before it learns the session is gone).
//! A session's timeout is a server timer that stands for the environment, as the etcd
//! recipe's lease is ([`super::etcd_queue`] explains the bound of [`LEASE_EXPIRIES`] expiries per
//! run and why a holder's session may not expire in these configurations).
//!
//! Two variants:
//!
//! - **notices** (`zk-queue`, correct; Curator's `InterProcessMutex`, kazoo's `Lock`): on a
//!   watch event the client lists the children again, and holds only if its own node is still
//!   there and lowest; a client that learns `Expired` (on reconnect, or as the error of its
//!   re-list) opens a new session and queues again.
//! - **does not notice** (`zk-queue-expired-session`, flawed): the client never learns that its
//!   session expired — its handle re-opens a session on its own (as client wrappers that hide
//!   `Expired` do), so its reads succeed — and on a watch event it holds if no child is below
//!   its own number, without checking that its node is among them. Two ways to fail: it acts
//!   on a watch event after its session expired (the event was sent before the expiry and read
//!   after it; its node is gone and the waiter behind it has moved up: two clients believe they
//!   hold, which takes three clients); and, without an event on its way, it waits forever,
//!   because its watch died with its session (a lost wake-up).
//!
//! Source: the ZooKeeper recipes ("Locks", zookeeper.apache.org/doc/current/recipes.html);
//! Curator's `LockInternals` (`getsTheLock`, "our node is gone"); kazoo's `Lock`.

use std::collections::{BTreeMap, BTreeSet};

use stateright::actor::Id;

use super::actor::{Algorithm, Event, Fence, Key, Me, Outbox, Setup, Token};
use super::etcd_queue::LEASE_EXPIRIES;
use super::properties::{LockModel, LockState, servers};
use super::symmetry::{Rename, Renaming, rename_keyed};

/// A sequence number of an ephemeral sequential node.
pub type Seq = Fence;

/// The ZooKeeper lock recipe.
#[derive(Clone, Copy, Debug)]
pub struct ZkQueue {
    /// Whether a client notices that its session expired (correct) or goes on as if its
    /// session were still the one its node belongs to (flawed).
    pub notices_expiry: bool,
}

/// Messages of the recipe.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// In session `.2`: create an ephemeral sequential node, list the children, and watch the
    /// node just below the new one.
    Create(Key, Token, u8),
    /// The node's sequence number, and whether it is the lowest (the client holds).
    Created(Key, Seq),
    /// The new node is the lowest: the client holds.
    CreatedLowest(Key, Seq),
    /// In session `.2`: list the children again; watch the node just below number `.3`, or
    /// answer [`Msg::Lowest`] if there is none.
    Relist(Key, Token, u8, Seq),
    /// Nothing is below the caller's number.
    Lowest(Key),
    /// Watch event: the watched node was deleted.
    NodeDeleted(Key),
    /// Session `.1` expired (learnt on reconnect, or as the error of a request on it).
    Expired(Key, u8),
    /// Release: delete the caller's node and close its session.
    Delete(Key, Seq),
}

/// Server timers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The client's session times out.
    Session(Key, Token),
}

/// An ephemeral sequential node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// Whose node.
    pub token: Token,
    /// The client's connection.
    pub client: Id,
    /// The session the node belongs to.
    pub session: u8,
    /// Ghost: the server told the client its node is the lowest.
    pub granted: bool,
}

/// One lock node and its children.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Parent {
    /// The children, by sequence number.
    pub children: BTreeMap<Seq, Node>,
    /// The next sequence number (the parent's `cversion`).
    pub next_seq: Seq,
    /// Watches: the watched node and the watcher.
    pub watches: BTreeSet<(Seq, Id)>,
}

/// The ZooKeeper server (one stands for the ensemble).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Server {
    /// Per lock, its node.
    pub locks: BTreeMap<Key, Parent>,
    /// Ghost: sessions that expired after their client was told it holds.
    pub expired: BTreeSet<Token>,
    /// Ghost: sessions that expired while their node existed (bounded).
    pub expiries: u8,
    /// Ghost: a deletion woke two or more waiters that still had their nodes.
    pub herd: bool,
}

/// A client's protocol state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// Its current session (each expiry it learns of makes it open the next).
    pub session: u8,
    /// Its node's sequence number.
    pub seq: Option<Seq>,
    /// It believes it holds the lock (it no longer acts on events).
    pub holding: bool,
}

impl Parent {
    /// Deletes node `seq` and fires the watches on it.
    fn delete(&mut self, key: Key, seq: Seq, herd: &mut bool, out: &mut Outbox<ZkQueue>) -> Option<Node> {
        let node = self.children.remove(&seq)?;
        let woken: Vec<Id> = self.watches.iter().filter(|(s, _)| *s == seq).map(|(_, id)| *id).collect();
        self.watches.retain(|(s, _)| *s != seq);
        if woken.iter().filter(|id| self.children.values().any(|n| n.client == **id)).count() >= 2 {
            *herd = true;
        }
        for watcher in woken {
            out.send(watcher, Msg::NodeDeleted(key));
        }
        Some(node)
    }

    /// Lists the children for node `seq`: watches its predecessor, or marks it granted and
    /// returns true if nothing is below it. `None` if the node is gone and `own` asks for it
    /// (a request of an expired session fails).
    fn look(&mut self, seq: Seq, token: Token, src: Id, own: bool) -> Option<bool> {
        if own {
            self.children.get(&seq).filter(|n| n.token == token)?;
        }
        match self.children.range(..seq).next_back().map(|(s, _)| *s) {
            Some(predecessor) => {
                self.watches.insert((predecessor, src));
                Some(false)
            }
            None => {
                if let Some(node) = self.children.get_mut(&seq).filter(|n| n.token == token) {
                    node.granted = true;
                }
                Some(true)
            }
        }
    }
}

impl ZkQueue {
    fn granted(client: &mut Client) -> Event {
        client.holding = true;
        Event::Granted(client.seq)
    }
}

impl Algorithm for ZkQueue {
    type Msg = Msg;
    type Timer = Timer;
    type Server = Server;
    type Client = Client;

    /// Clients are told apart only by their tokens and connections: nodes are ordered by
    /// sequence number, never by client; every session has its own timer.
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
            Msg::Create(key, token, session) => {
                let parent = server.locks.entry(key).or_default();
                let seq = parent.next_seq;
                parent.next_seq += 1;
                parent.children.insert(seq, Node { token, client: src, session, granted: false });
                out.set_timer(Timer::Session(key, token));
                let lowest = parent.look(seq, token, src, true) == Some(true);
                out.send(src, if lowest { Msg::CreatedLowest(key, seq) } else { Msg::Created(key, seq) });
            }
            Msg::Relist(key, token, session, seq) => {
                let parent = server.locks.entry(key).or_default();
                // A client that does not notice its session expired reads through a handle
                // that re-opened a session on its own: its read succeeds.
                match parent.look(seq, token, src, self.notices_expiry) {
                    Some(true) => out.send(src, Msg::Lowest(key)),
                    Some(false) => {}
                    None => out.send(src, Msg::Expired(key, session)),
                }
            }
            Msg::Delete(key, seq) => {
                let parent = server.locks.entry(key).or_default();
                if let Some(node) = parent.delete(key, seq, &mut server.herd, out) {
                    out.cancel_timer(Timer::Session(key, node.token));
                }
            }
            Msg::Created(..) | Msg::CreatedLowest(..) | Msg::Lowest(_) | Msg::NodeDeleted(_) | Msg::Expired(..) => {}
        }
    }

    fn server_timer(&self, _: &Setup, _: Id, server: &mut Server, timer: &Timer, out: &mut Outbox<Self>) {
        let Timer::Session(key, token) = *timer;
        let parent = server.locks.entry(key).or_default();
        let Some(seq) = parent.children.iter().find(|(_, n)| n.token == token).map(|(s, _)| *s) else { return };
        let Some(node) = parent.delete(key, seq, &mut server.herd, out) else { return };
        // The session's watches go with it; the client learns of the expiry after everything
        // sent to it before.
        parent.watches.retain(|(_, id)| *id != node.client);
        out.send(node.client, Msg::Expired(key, node.session));
        server.expiries += 1;
        if node.granted {
            server.expired.insert(token);
        }
    }

    fn client_acquire(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        *client = Client::default();
        out.send(setup.server(0), Msg::Create(me.key, me.token, client.session));
    }

    fn client_msg(&self, setup: &Setup, me: Me, client: &mut Client, _: Id, msg: Msg, out: &mut Outbox<Self>) -> Event {
        if client.holding {
            // A holder does not act on events (nor, in these configurations, lose its session:
            // that is the pause past the lease no lock survives without fencing).
            return Event::Nothing;
        }
        match msg {
            Msg::Created(_, seq) => client.seq = Some(seq),
            Msg::CreatedLowest(_, seq) => {
                client.seq = Some(seq);
                return Self::granted(client);
            }
            Msg::NodeDeleted(key) => {
                let Some(seq) = client.seq else { return Event::Nothing };
                out.send(setup.server(0), Msg::Relist(key, me.token, client.session, seq));
            }
            Msg::Lowest(_) if client.seq.is_some() => return Self::granted(client),
            Msg::Expired(key, session) if self.notices_expiry && session == client.session => {
                // A new session, a new node at the end of the line.
                client.session += 1;
                client.seq = None;
                out.send(setup.server(0), Msg::Create(key, me.token, client.session));
            }
            _ => {}
        }
        Event::Nothing
    }

    fn client_release(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        client.holding = false;
        if let Some(seq) = client.seq.take() {
            out.send(setup.server(0), Msg::Delete(me.key, seq));
        }
    }

    /// Its node is the lowest child.
    fn holds(&self, server: &Server, token: Token) -> bool {
        server.locks.values().any(|p| p.children.values().next().is_some_and(|n| n.token == token))
    }

    fn lease_expired(&self, server: &Server, token: Token) -> bool {
        server.expired.contains(&token)
    }

    fn fifo_ticket(&self, client: &Client) -> Option<u32> {
        client.seq.map(|s| s as u32)
    }

    fn in_line(&self, server: &Server, token: Token, ticket: u32) -> bool {
        server.locks.values().any(|p| p.children.get(&Seq::from(ticket)).is_some_and(|n| n.token == token))
    }

    fn failure_detector_of(&self, timer: &Timer) -> Option<u8> {
        let Timer::Session(_, token) = timer;
        Some(token.client)
    }
}

/// [`super::properties::ONE_WAKEUP_PER_RELEASE`] for the ZooKeeper recipes.
pub fn one_wakeup_per_release(model: &LockModel<ZkQueue>, state: &LockState<ZkQueue>) -> bool {
    servers(&model.cfg, state).all(|s| !s.herd)
}

impl Rename for Msg {
    fn rename(&self, r: &Renaming) -> Self {
        match *self {
            Msg::Create(key, token, session) => Msg::Create(key, r.token(token), session),
            Msg::Relist(key, token, session, seq) => Msg::Relist(key, r.token(token), session, seq),
            Msg::Created(..)
            | Msg::CreatedLowest(..)
            | Msg::Lowest(_)
            | Msg::NodeDeleted(_)
            | Msg::Expired(..)
            | Msg::Delete(..) => self.clone(),
        }
    }
}

impl Rename for Timer {
    fn rename(&self, r: &Renaming) -> Self {
        let Timer::Session(key, token) = *self;
        Timer::Session(key, r.token(token))
    }
}

impl Rename for Parent {
    fn rename(&self, r: &Renaming) -> Self {
        Parent {
            children: self
                .children
                .iter()
                .map(|(seq, n)| (*seq, Node { token: r.token(n.token), client: r.id(n.client), ..*n }))
                .collect(),
            next_seq: self.next_seq,
            watches: self.watches.iter().map(|(seq, id)| (*seq, r.id(*id))).collect(),
        }
    }
}

impl Rename for Server {
    fn rename(&self, r: &Renaming) -> Self {
        Server { locks: rename_keyed(&self.locks, r), expired: r.tokens(&self.expired), ..self.clone() }
    }
}

impl Rename for Client {
    fn rename(&self, _: &Renaming) -> Self {
        self.clone()
    }
}
