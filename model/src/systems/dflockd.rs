//! A FIFO lease server in the dflockd design: per key a holder and a queue of waiters;
//! acquiring is two-phase — `enqueue` either grants at once or queues and hands back a
//! place in line, then `wait` collects the grant (which may already have been made while
//! the `wait` was in flight); the server grants strictly in queue order; a lease has a
//! server-side TTL; and when a client's connection drops, the server releases what it
//! held and takes it out of every queue. The fencing token is a per-key counter.
//!
//! Source: the dflockd lock server (`reference/dflockd-protocol.md`, the seeds' Go
//! dflockd client) and the reference server in `impls`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use stateright::actor::Id;

use super::actor::{Algorithm, Event, Fence, Key, Me, Outbox, Setup, Token};
use super::symmetry::{Rename, Renaming, rename_keyed};

/// The dflockd lease server.
#[derive(Clone, Copy, Debug)]
pub struct Dflockd;

/// Messages of the dflockd protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Phase one: join the key's queue (granted at once if free and nobody queues).
    Enqueue(Key, Token),
    /// Queued at this place in line.
    Queued(Key, u32),
    /// Phase two: wait for the grant.
    Wait(Key, Token),
    /// Granted, with the fencing token and the place in line it had.
    Acquired(Key, Fence, u32),
    /// Release.
    Release(Key, Token),
}

/// Server timers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// A lease's TTL runs out.
    Expire(Key, Token),
    /// The server notices that a client's connection dropped.
    Disconnect(u8),
}

/// The current lease of a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Held {
    /// The holder's connection.
    pub client: Id,
    /// Its owner token.
    pub token: Token,
    /// Its fencing token.
    pub fence: Fence,
    /// Its place in line.
    pub ticket: u32,
}

/// One key's queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Queue {
    /// The current lease.
    pub holder: Option<Held>,
    /// Waiters in arrival order: connection, token, place in line.
    pub waiters: VecDeque<(Id, Token, u32)>,
    /// Waiters that sent `wait` (a grant to them is sent at once).
    pub waiting: BTreeSet<Token>,
    /// The last fencing token handed out.
    pub last_fence: Fence,
    /// The next place in line.
    pub next_ticket: u32,
}

/// The server's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Server {
    /// Per-key queues.
    pub keys: BTreeMap<Key, Queue>,
    /// Ghost: leases ended by their TTL.
    pub expired: BTreeSet<Token>,
    /// Ghost: clients whose dropped connection the server acted on.
    pub dropped: BTreeSet<u8>,
}

/// A client's protocol state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// Its place in line for the current acquisition.
    pub ticket: Option<u32>,
}

fn deliver(key: Key, held: &Held, out: &mut Outbox<Dflockd>) {
    out.set_timer(Timer::Expire(key, held.token));
    out.send(held.client, Msg::Acquired(key, held.fence, held.ticket));
}

fn promote(key: Key, queue: &mut Queue, out: &mut Outbox<Dflockd>) {
    if queue.holder.is_some() {
        return;
    }
    let Some((client, token, ticket)) = queue.waiters.pop_front() else { return };
    queue.last_fence += 1;
    let held = Held { client, token, fence: queue.last_fence, ticket };
    // The lease's clock starts when the grant is handed over; until the waiter's `wait`
    // arrives it is held for it (or dropped with its connection).
    if queue.waiting.remove(&token) {
        deliver(key, &held, out);
    }
    queue.holder = Some(held);
}

impl Algorithm for Dflockd {
    type Msg = Msg;
    type Timer = Timer;
    type Server = Server;
    type Client = Client;

    /// Clients are told apart only by their tokens and connections (queues keep arrival
    /// order, never client order); every client has its own failure detector.
    fn clients_interchangeable(&self, _: &Setup) -> bool {
        true
    }

    fn server_start(&self, setup: &Setup, _: Id, _: u8, out: &mut Outbox<Self>) -> Server {
        out.watch_connections(setup, Timer::Disconnect);
        Server::default()
    }

    fn server_msg(&self, setup: &Setup, _: Id, server: &mut Server, src: Id, msg: Msg, out: &mut Outbox<Self>) {
        // Nothing more arrives on a connection the server has seen drop.
        if setup.from_dropped_connection(src, &server.dropped) {
            return;
        }
        match msg {
            Msg::Enqueue(key, token) => {
                let queue = server.keys.entry(key).or_default();
                let ticket = queue.next_ticket;
                queue.next_ticket += 1;
                if queue.holder.is_none() && queue.waiters.is_empty() {
                    queue.last_fence += 1;
                    let held = Held { client: src, token, fence: queue.last_fence, ticket };
                    deliver(key, &held, out);
                    queue.holder = Some(held);
                } else {
                    queue.waiters.push_back((src, token, ticket));
                    out.send(src, Msg::Queued(key, ticket));
                }
            }
            Msg::Wait(key, token) => {
                let queue = server.keys.entry(key).or_default();
                match &queue.holder {
                    Some(held) if held.token == token => deliver(key, held, out),
                    _ => {
                        queue.waiting.insert(token);
                    }
                }
            }
            Msg::Release(key, token) => {
                let queue = server.keys.entry(key).or_default();
                if queue.holder.as_ref().is_some_and(|h| h.token == token) {
                    queue.holder = None;
                    out.cancel_timer(Timer::Expire(key, token));
                    promote(key, queue, out);
                }
            }
            Msg::Queued(..) | Msg::Acquired(..) => {}
        }
    }

    fn server_timer(&self, _: &Setup, _: Id, server: &mut Server, timer: &Timer, out: &mut Outbox<Self>) {
        match *timer {
            Timer::Expire(key, token) => {
                let queue = server.keys.entry(key).or_default();
                if queue.holder.as_ref().is_some_and(|h| h.token == token) {
                    queue.holder = None;
                    server.expired.insert(token);
                    promote(key, queue, out);
                }
            }
            Timer::Disconnect(client) => {
                server.dropped.insert(client);
                for (key, queue) in server.keys.iter_mut() {
                    queue.waiters.retain(|(_, t, _)| t.client != client);
                    queue.waiting.retain(|t| t.client != client);
                    if let Some(held) = queue.holder.take_if(|h| h.token.client == client) {
                        out.cancel_timer(Timer::Expire(*key, held.token));
                        promote(*key, queue, out);
                    }
                }
            }
        }
    }

    fn client_acquire(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        client.ticket = None;
        out.send(setup.server(0), Msg::Enqueue(me.key, me.token));
    }

    fn client_msg(&self, setup: &Setup, me: Me, client: &mut Client, _: Id, msg: Msg, out: &mut Outbox<Self>) -> Event {
        match msg {
            Msg::Queued(key, ticket) => {
                client.ticket = Some(ticket);
                out.send(setup.server(0), Msg::Wait(key, me.token));
                Event::Nothing
            }
            Msg::Acquired(_, fence, ticket) => {
                client.ticket = Some(ticket);
                Event::Granted(Some(fence))
            }
            _ => Event::Nothing,
        }
    }

    fn client_release(&self, setup: &Setup, me: Me, _: &mut Client, out: &mut Outbox<Self>) {
        out.send(setup.server(0), Msg::Release(me.key, me.token));
    }

    fn holds(&self, server: &Server, token: Token) -> bool {
        server.keys.values().any(|q| q.holder.as_ref().is_some_and(|h| h.token == token))
    }

    fn lease_expired(&self, server: &Server, token: Token) -> bool {
        server.expired.contains(&token)
    }

    fn dropped_connection(&self, server: &Server, client: u8) -> bool {
        server.dropped.contains(&client)
    }

    fn fifo_ticket(&self, client: &Client) -> Option<u32> {
        client.ticket
    }

    fn failure_detector_of(&self, timer: &Timer) -> Option<u8> {
        match timer {
            Timer::Disconnect(client) => Some(*client),
            Timer::Expire(..) => None,
        }
    }
}

impl Rename for Msg {
    fn rename(&self, r: &Renaming) -> Self {
        match *self {
            Msg::Enqueue(key, token) => Msg::Enqueue(key, r.token(token)),
            Msg::Wait(key, token) => Msg::Wait(key, r.token(token)),
            Msg::Release(key, token) => Msg::Release(key, r.token(token)),
            Msg::Queued(..) | Msg::Acquired(..) => self.clone(),
        }
    }
}

impl Rename for Timer {
    fn rename(&self, r: &Renaming) -> Self {
        match *self {
            Timer::Expire(key, token) => Timer::Expire(key, r.token(token)),
            Timer::Disconnect(client) => Timer::Disconnect(r.client(client)),
        }
    }
}

impl Rename for Held {
    fn rename(&self, r: &Renaming) -> Self {
        Held { client: r.id(self.client), token: r.token(self.token), ..*self }
    }
}

impl Rename for Queue {
    fn rename(&self, r: &Renaming) -> Self {
        Queue {
            holder: self.holder.as_ref().map(|h| h.rename(r)),
            waiters: self.waiters.iter().map(|&(id, token, ticket)| (r.id(id), r.token(token), ticket)).collect(),
            waiting: r.tokens(&self.waiting),
            last_fence: self.last_fence,
            next_ticket: self.next_ticket,
        }
    }
}

impl Rename for Server {
    fn rename(&self, r: &Renaming) -> Self {
        Server {
            keys: rename_keyed(&self.keys, r),
            expired: r.tokens(&self.expired),
            dropped: self.dropped.iter().map(|c| r.client(*c)).collect(),
        }
    }
}

impl Rename for Client {
    fn rename(&self, _: &Renaming) -> Self {
        self.clone()
    }
}
