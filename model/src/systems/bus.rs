//! In-memory lockers on several nodes, coordinated by broadcasting lock and unlock events
//! on a message bus. Each node grants from its own table when it believes the key is
//! free, then tells its peers; a peer marks the key as held remotely when the event
//! arrives. Nothing orders a grant on one node against a grant on another, so two nodes
//! that grant before hearing from each other both hand out the lock: a double grant.
//! There are no fencing tokens and no consensus.
//!
//! Source: the original Go `InMemory` locker of the seeds (go-warp), which kept a local
//! map and published lock/unlock events for other instances.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use stateright::actor::Id;

use super::actor::{Algorithm, Event, Key, Me, Outbox, Setup, Token};
use super::symmetry::{Rename, Renaming, rename_keyed};

/// The bus-coordinated in-memory locker; clients use node `client % servers`.
#[derive(Clone, Copy, Debug)]
pub struct Bus;

/// Messages: client ↔ node, and node ↔ node events.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Client → its node: lock (waits in the node's queue if held).
    Lock(Key, Token),
    /// Node → client: granted.
    Granted(Key),
    /// Client → its node: unlock.
    Unlock(Key, Token),
    /// Node → peers: a local client locked the key.
    Locked(Key),
    /// Node → peers: the local holder unlocked the key.
    Unlocked(Key),
}

/// One key on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// The local holder.
    pub local: Option<Token>,
    /// Peers that announced a holder.
    pub remote: BTreeSet<Id>,
    /// Local waiters, in arrival order.
    pub waiters: VecDeque<(Id, Token)>,
}

/// A node's table.
pub type Node = BTreeMap<Key, Entry>;

fn grant_next(setup: &Setup, me: Id, key: Key, entry: &mut Entry, out: &mut Outbox<Bus>) {
    if entry.local.is_some() || !entry.remote.is_empty() {
        return;
    }
    if let Some((client, token)) = entry.waiters.pop_front() {
        entry.local = Some(token);
        out.send(client, Msg::Granted(key));
        for peer in setup.server_ids().filter(|p| *p != me) {
            out.send(peer, Msg::Locked(key));
        }
    }
}

impl Algorithm for Bus {
    type Msg = Msg;
    type Timer = ();
    type Server = Node;
    type Client = ();

    /// Client `i` talks to node `i % nodes`: with more than one node, the client index
    /// decides which node grants, so clients are not interchangeable.
    fn clients_interchangeable(&self, setup: &Setup) -> bool {
        setup.servers == 1
    }

    fn server_start(&self, _: &Setup, _: Id, _: u8, _: &mut Outbox<Self>) -> Node {
        Node::new()
    }

    fn server_msg(&self, setup: &Setup, me: Id, node: &mut Node, src: Id, msg: Msg, out: &mut Outbox<Self>) {
        match msg {
            Msg::Lock(key, token) => {
                let entry = node.entry(key).or_default();
                entry.waiters.push_back((src, token));
                grant_next(setup, me, key, entry, out);
            }
            Msg::Unlock(key, token) => {
                let entry = node.entry(key).or_default();
                if entry.local == Some(token) {
                    entry.local = None;
                    for peer in setup.server_ids().filter(|p| *p != me) {
                        out.send(peer, Msg::Unlocked(key));
                    }
                    grant_next(setup, me, key, entry, out);
                }
            }
            Msg::Locked(key) => {
                node.entry(key).or_default().remote.insert(src);
            }
            Msg::Unlocked(key) => {
                let entry = node.entry(key).or_default();
                entry.remote.remove(&src);
                grant_next(setup, me, key, entry, out);
            }
            Msg::Granted(_) => {}
        }
    }

    fn holds(&self, node: &Node, token: Token) -> bool {
        node.values().any(|e| e.local == Some(token))
    }

    fn client_acquire(&self, setup: &Setup, me: Me, _: &mut (), out: &mut Outbox<Self>) {
        out.send(node_of(setup, me), Msg::Lock(me.key, me.token));
    }

    fn client_msg(&self, _: &Setup, _: Me, _: &mut (), _: Id, msg: Msg, _: &mut Outbox<Self>) -> Event {
        match msg {
            Msg::Granted(_) => Event::Granted(None),
            _ => Event::Nothing,
        }
    }

    fn client_release(&self, setup: &Setup, me: Me, _: &mut (), out: &mut Outbox<Self>) {
        out.send(node_of(setup, me), Msg::Unlock(me.key, me.token));
    }
}

fn node_of(setup: &Setup, me: Me) -> Id {
    setup.server(me.token.client as usize % setup.servers)
}

impl Rename for Msg {
    fn rename(&self, r: &Renaming) -> Self {
        match *self {
            Msg::Lock(key, token) => Msg::Lock(key, r.token(token)),
            Msg::Unlock(key, token) => Msg::Unlock(key, r.token(token)),
            Msg::Granted(_) | Msg::Locked(_) | Msg::Unlocked(_) => self.clone(),
        }
    }
}

impl Rename for Entry {
    fn rename(&self, r: &Renaming) -> Self {
        Entry {
            local: self.local.map(|t| r.token(t)),
            // Peers are nodes, not clients.
            remote: self.remote.clone(),
            waiters: self.waiters.iter().map(|&(id, token)| (r.id(id), r.token(token))).collect(),
        }
    }
}

impl Rename for Node {
    fn rename(&self, r: &Renaming) -> Self {
        rename_keyed(self, r)
    }
}
