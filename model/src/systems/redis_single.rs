//! A single lock server with leases: `SET key token NX PX ttl`, a waiter woken by a
//! keyspace notification it subscribed to before its failed try, and a release that
//! deletes the key. Three variants:
//!
//! - **token-checked release** (correct): `if GET key == token then DEL key` in one Lua
//!   script — the design of the Redis documentation's single-instance lock
//!   (<https://redis.io/docs/latest/develop/use/patterns/distributed-locks/>);
//! - **unconditional `DEL` release** (flawed): a holder whose lease already ran out deletes
//!   the *next* holder's lock (a non-owner release);
//! - **no server TTL** (flawed): expiry is a timer in the holder's process only (the
//!   original Go in-memory and FluxaORM lockers); a holder that crashes keeps the lock
//!   forever.
//!
//! The fencing token is a per-key counter incremented on every grant (`INCR`).
//! Subscribing before the try is modelled as one step — on one ordered connection the
//! subscription is in place before `SET NX` runs — and a successful `SET NX` unsubscribes.

use stateright::actor::Id;

use super::actor::{Algorithm, Event, Fence, Key, Me, Outbox, Setup, Token};
use super::lease_table::{LeaseTable, ReleaseCheck};
use super::symmetry::{Rename, Renaming};

/// How the client releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Compare-and-delete on the owner token.
    TokenChecked,
    /// `DEL key`.
    Unconditional,
}

/// The single-server lease lock.
#[derive(Clone, Copy, Debug)]
pub struct SingleServer {
    /// How releases are checked.
    pub release: Release,
    /// Whether the server expires leases (`PX ttl`).
    pub server_ttl: bool,
}

/// Messages of the single-server protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// `SET key token NX PX ttl`, subscribed to the key's notifications.
    SetNx(Key, Token),
    /// The lock was set: the client holds it with this fencing token.
    Granted(Key, Fence),
    /// The key is held by someone else; a notification will follow when it frees.
    Busy(Key),
    /// Keyspace notification: the key was deleted or expired.
    Freed(Key),
    /// Release (checked or not, per the variant).
    Release(Key, Token),
}

/// Server timers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The TTL of a lease runs out.
    Expire(Key, Token),
}

/// A client's protocol state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// Got `Busy`, waiting for `Freed`.
    pub waiting: bool,
}

fn notify(table: &LeaseTable, key: Key, out: &mut Outbox<SingleServer>) {
    for watcher in table.watchers(key) {
        out.send(watcher, Msg::Freed(key));
    }
}

impl Algorithm for SingleServer {
    type Msg = Msg;
    type Timer = Timer;
    type Server = LeaseTable;
    type Client = Client;

    /// Clients are told apart only by their tokens and connections.
    fn clients_interchangeable(&self, _: &Setup) -> bool {
        true
    }

    fn server_start(&self, _: &Setup, _: Id, _: u8, _: &mut Outbox<Self>) -> LeaseTable {
        LeaseTable::default()
    }

    fn server_msg(&self, _: &Setup, _: Id, table: &mut LeaseTable, src: Id, msg: Msg, out: &mut Outbox<Self>) {
        match msg {
            Msg::SetNx(key, token) => match table.try_acquire(key, token) {
                Some(lease) => {
                    table.unwatch(key, src);
                    if self.server_ttl {
                        out.set_timer(Timer::Expire(key, token));
                    }
                    out.send(src, Msg::Granted(key, lease.fence));
                }
                None => {
                    table.watch(key, src);
                    out.send(src, Msg::Busy(key));
                }
            },
            Msg::Release(key, token) => {
                let check = match self.release {
                    Release::TokenChecked => ReleaseCheck::Token(token),
                    Release::Unconditional => ReleaseCheck::Unconditional(token),
                };
                if let Some(lease) = table.release(key, check) {
                    out.cancel_timer(Timer::Expire(key, lease.token));
                    notify(table, key, out);
                }
            }
            Msg::Granted(..) | Msg::Busy(_) | Msg::Freed(_) => {}
        }
    }

    fn server_timer(&self, _: &Setup, _: Id, table: &mut LeaseTable, timer: &Timer, out: &mut Outbox<Self>) {
        let Timer::Expire(key, token) = *timer;
        if table.expire(key, token).is_some() {
            notify(table, key, out);
        }
    }

    fn client_acquire(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        client.waiting = false;
        out.send(setup.server(0), Msg::SetNx(me.key, me.token));
    }

    fn client_msg(&self, setup: &Setup, me: Me, client: &mut Client, _: Id, msg: Msg, out: &mut Outbox<Self>) -> Event {
        match msg {
            Msg::Granted(_, fence) => Event::Granted(Some(fence)),
            Msg::Busy(_) => {
                client.waiting = true;
                Event::Nothing
            }
            Msg::Freed(key) if client.waiting => {
                client.waiting = false;
                out.send(setup.server(0), Msg::SetNx(key, me.token));
                Event::Nothing
            }
            _ => Event::Nothing,
        }
    }

    fn client_release(&self, setup: &Setup, me: Me, _: &mut Client, out: &mut Outbox<Self>) {
        out.send(setup.server(0), Msg::Release(me.key, me.token));
    }

    fn holds(&self, table: &LeaseTable, token: Token) -> bool {
        table.slots.values().any(|slot| slot.holder.is_some_and(|l| l.token == token))
    }

    fn lease_expired(&self, table: &LeaseTable, token: Token) -> bool {
        table.expired.contains(&token)
    }

    fn foreign_release(&self, table: &LeaseTable) -> bool {
        table.foreign_release.is_some()
    }
}

impl Rename for Msg {
    fn rename(&self, r: &Renaming) -> Self {
        match *self {
            Msg::SetNx(key, token) => Msg::SetNx(key, r.token(token)),
            Msg::Release(key, token) => Msg::Release(key, r.token(token)),
            Msg::Granted(..) | Msg::Busy(_) | Msg::Freed(_) => self.clone(),
        }
    }
}

impl Rename for Timer {
    fn rename(&self, r: &Renaming) -> Self {
        let Timer::Expire(key, token) = *self;
        Timer::Expire(key, r.token(token))
    }
}

impl Rename for Client {
    fn rename(&self, _: &Renaming) -> Self {
        self.clone()
    }
}
