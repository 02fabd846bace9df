//! The actor framework every lock system is written in: clients that run an
//! acquire → work → release cycle, the fenced resource they write to, and the
//! [`Algorithm`] trait a lock algorithm implements to plug its servers and client
//! protocol into it.
//!
//! Actor ids are laid out as: servers `0..servers`, clients after them, the resource
//! (if any) last. Channels are ordered (TCP-like): messages on one connection arrive in
//! the order they were sent, but may be delayed arbitrarily relative to everything else.

use std::borrow::Cow;
use std::fmt::{self, Debug, Display};
use std::hash::Hash;
use std::sync::Arc;

use stateright::actor::{Actor, Id, Out, model_timeout};

use super::resource::{ResourceState, Write};
use super::symmetry::Rename;

/// A fencing token as a lock hands it out (Kleppmann 2016).
pub type Fence = u64;

/// A lock key. Clients are spread over keys round-robin (`client % keys`).
pub type Key = u8;

/// The owner token of one acquisition: which client, in which of its cycles.
///
/// Real lockers use a random value; in a model the pair is just as unique and keeps
/// traces readable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token {
    /// The client index (0-based, among clients only).
    pub client: u8,
    /// The client's acquisition cycle.
    pub cycle: u8,
}

impl Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}.{}", self.client, self.cycle)
    }
}

impl Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Debug::fmt(self, f)
    }
}

/// How clients and servers may fail in a configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// A client may crash (at most one, once), e.g. while it holds the lock.
    pub client_crash: bool,
    /// A server may crash and restart with empty memory (no persistence), once.
    pub server_restart: bool,
    /// Clients may pause past their lease: a server's TTL may fire while the holder
    /// still believes it holds the lock. Without pauses, runs where that happens are
    /// outside the configuration (the timing assumption: a holder that is not paused
    /// stops acting before the server's TTL, as the lease's validity time promises).
    ///
    /// A pause strikes a holder, never a client that is still acquiring: a lease that
    /// runs out before its client has the lock is a slow acquisition, which a real client
    /// catches by checking its validity time once it has its grants (Redlock does) and
    /// turns into a failed attempt. Leaving those runs out is a bound, not a proof about
    /// them: every expiry during an acquisition could start another round of grants, with
    /// the fencing counters growing without end, and no search of them would finish.
    /// The pause Kleppmann (2016) describes — after the check, inside the critical
    /// section — is the one explored.
    pub pauses: bool,
}

/// The shape of a lock system: how many of each actor, and which faults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Number of server actors (lock servers, instances, nodes).
    pub servers: usize,
    /// Number of client actors.
    pub clients: usize,
    /// Number of keys; client `i` uses key `i % keys`.
    pub keys: usize,
    /// Acquire/work/release cycles each client runs.
    pub cycles: u8,
    /// The faults explored.
    pub faults: Faults,
    /// The resource the clients write to in their critical section, if any.
    pub resource: Option<Fencing>,
}

/// Whether the resource checks fencing tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fencing {
    /// The resource rejects a write whose fencing token is below the highest it has seen.
    Checked,
    /// The resource accepts every write (most storage does).
    Unchecked,
}

impl Setup {
    /// The id of server `ix`.
    pub fn server(&self, ix: usize) -> Id {
        Id::from(ix)
    }

    /// The ids of all servers.
    pub fn server_ids(&self) -> impl Iterator<Item = Id> + '_ {
        (0..self.servers).map(Id::from)
    }

    /// The id of client `ix`.
    pub fn client(&self, ix: usize) -> Id {
        Id::from(self.servers + ix)
    }

    /// The client index of an id, if it is a client.
    pub fn client_ix(&self, id: Id) -> Option<usize> {
        let i = usize::from(id);
        (i >= self.servers && i < self.servers + self.clients).then(|| i - self.servers)
    }

    /// The server index of an id, if it is a server.
    pub fn server_ix(&self, id: Id) -> Option<usize> {
        let i = usize::from(id);
        (i < self.servers).then_some(i)
    }

    /// Whether `src` is a client among `dropped`: one whose dropped connection a server has
    /// acted on, so that nothing more arrives from it (a message still on its way would
    /// otherwise undo what the server did when it noticed the drop).
    pub fn from_dropped_connection(&self, src: Id, dropped: &std::collections::BTreeSet<u8>) -> bool {
        self.client_ix(src).is_some_and(|c| dropped.contains(&(c as u8)))
    }

    /// The id of the resource, if there is one.
    pub fn resource_id(&self) -> Option<Id> {
        self.resource.map(|_| Id::from(self.servers + self.clients))
    }

    /// The key client `ix` locks.
    pub fn key_of(&self, ix: usize) -> Key {
        (ix % self.keys.max(1)) as Key
    }

    /// A readable name for an actor id.
    pub fn name(&self, id: Id) -> String {
        if let Some(ix) = self.server_ix(id) {
            if self.servers == 1 { "server".into() } else { format!("server{ix}") }
        } else if let Some(ix) = self.client_ix(id) {
            format!("client{ix}")
        } else {
            "resource".into()
        }
    }
}

/// What a client knows about itself while it runs its protocol.
#[derive(Clone, Copy, Debug)]
pub struct Me {
    /// The client's own id.
    pub id: Id,
    /// The key it locks.
    pub key: Key,
    /// The owner token of its current acquisition.
    pub token: Token,
}

/// What happened to a client's acquisition after a message or timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing the cycle cares about.
    Nothing,
    /// The client now holds the lock, with this fencing token if the algorithm has one.
    Granted(Option<Fence>),
}

/// Messages on the wire: the algorithm's own, plus the writes to the resource.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Wire<M> {
    /// A message of the lock protocol.
    Lock(M),
    /// A write of a critical section to the resource.
    Write(Write),
    /// The resource processed the last write of a critical section (accepted or not);
    /// only then does the client release, so no write of it is still in flight.
    WriteDone,
}

impl<M: Debug> Debug for Wire<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wire::Lock(m) => m.fmt(f),
            Wire::Write(w) => w.fmt(f),
            Wire::WriteDone => f.write_str("WriteDone"),
        }
    }
}

/// Timers: the algorithm's own, plus the end of a client's critical section.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer<T> {
    /// A timer of the lock protocol (lease expiry, a holder's own timer, ...).
    Lock(T),
    /// The client finishes its critical section: last write, then release.
    FinishWork,
}

impl<T: Debug> Debug for Timer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timer::Lock(t) => t.fmt(f),
            Timer::FinishWork => f.write_str("FinishWork"),
        }
    }
}

/// Where a client is in its cycle; what it *believes* about the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Trying to get the lock (includes waiting for a wake-up).
    Acquiring,
    /// Believes it holds the lock, with this fencing token.
    Holding(Option<Fence>),
    /// Ran all its cycles.
    Done,
    /// Restarted after a crash; a restarted process has no lease and takes no part.
    Gone,
}

/// The state of a client actor: the cycle the framework runs, plus the algorithm's part.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientState<C> {
    /// What the client believes.
    pub phase: Phase,
    /// The key it locks (fixed; it says which clients are interchangeable).
    pub key: Key,
    /// The current acquisition's owner token.
    pub token: Token,
    /// The fencing tokens of every grant this client received (a ghost record for the
    /// fencing property).
    pub fences: Vec<Fence>,
    /// Sent its last write; waiting for the resource before releasing.
    pub finishing: bool,
    /// The algorithm's client-side state.
    pub proto: C,
}

impl<C> ClientState<C> {
    /// Whether the client has closed its connections: it restarted after a crash, or ran all
    /// its cycles and finished releasing. It ignores every message from then on.
    pub fn closed<A: Algorithm<Client = C>>(&self) -> bool {
        match self.phase {
            Phase::Gone => true,
            Phase::Done => !A::still_releasing(&self.proto),
            Phase::Acquiring | Phase::Holding(_) => false,
        }
    }
}

/// The state of one actor.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeState<S, C> {
    /// A lock server (or instance, or node).
    Server(S),
    /// A client.
    Client(ClientState<C>),
    /// The resource.
    Resource(ResourceState),
}

impl<S: Debug, C: Debug> Debug for NodeState<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeState::Server(s) => s.fmt(f),
            NodeState::Client(c) => c.fmt(f),
            NodeState::Resource(r) => r.fmt(f),
        }
    }
}

/// What an actor saves across a crash: only how often it has started. A restart without
/// persistence therefore comes back with empty memory but knows it restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Boots(pub u8);

/// Commands an algorithm issues: sends and timers.
pub struct Outbox<'a, A: Algorithm>(&'a mut Out<LockActor<A>>);

impl<A: Algorithm> Outbox<'_, A> {
    /// Arms a server's failure detector for every client: `noticed(client)` is the timer that
    /// fires when the server notices that client's connection dropped.
    pub fn watch_connections(&mut self, setup: &Setup, noticed: impl Fn(u8) -> A::Timer) {
        for client in 0..setup.clients {
            self.set_timer(noticed(client as u8));
        }
    }

    /// Sends a protocol message.
    pub fn send(&mut self, dst: Id, msg: A::Msg) {
        self.0.send(dst, Wire::Lock(msg));
    }

    /// Arms a timer. It may fire at any later moment: that is how slow clocks, pauses
    /// and arbitrary TTLs show up in a model.
    pub fn set_timer(&mut self, timer: A::Timer) {
        self.0.set_timer(Timer::Lock(timer), model_timeout());
    }

    /// Disarms a timer.
    pub fn cancel_timer(&mut self, timer: A::Timer) {
        self.0.cancel_timer(Timer::Lock(timer));
    }
}

/// A lock algorithm: its servers and its client protocol.
///
/// The framework runs the client cycle (acquire, write to the resource, release) and the
/// resource; an algorithm only says how a client acquires and releases and how its
/// servers react. The ghost views (`lease_expired`, ...) let the properties and the
/// timing assumptions see what a real system would not show.
pub trait Algorithm: Debug + Send + Sync + Sized + 'static {
    /// Protocol messages.
    type Msg: Clone + Debug + Eq + Hash + Ord + Rename + Send + Sync + 'static;
    /// Protocol timers.
    type Timer: Clone + Debug + Eq + Hash + Ord + Rename + Send + Sync + 'static;
    /// A server's state.
    type Server: Clone + Debug + Eq + Hash + Ord + Rename + Send + Sync + 'static;
    /// A client's protocol state.
    type Client: Clone + Debug + Default + Eq + Hash + Ord + Rename + Send + Sync + 'static;

    /// Whether clients that lock the same key are interchangeable, so the check may use
    /// symmetry reduction ([`super::symmetry`]): the algorithm never tells clients apart by
    /// anything but identity (no client index picks a server, no grant goes to the lowest
    /// id), and its [`Rename`] implementations rename every client id, owner token and
    /// client index its state, messages and timers hold. Without that promise the check
    /// explores every state.
    fn clients_interchangeable(&self, setup: &Setup) -> bool {
        let _ = setup;
        false
    }

    /// Whether the servers are interchangeable too, so the check may permute them as well
    /// ([`super::symmetry`]; applied together with client symmetry): no server plays a role
    /// of its own (no client asks them in a fixed order, none is "the first"), a client treats
    /// every server's answer alike, and the [`Rename`] implementations rename every server id
    /// and instance index the state holds. Redlock's instances are; the all-in-order lock's
    /// are not.
    fn servers_interchangeable(&self, setup: &Setup) -> bool {
        let _ = setup;
        false
    }

    /// Whether the clients may take the messages the servers sent them as soon as they arrive
    /// ([`super::symmetry::with_clients_caught_up`]): while a client is acquiring, its handling
    /// of a server's message commutes with every other step of the system (its other
    /// messages included: the order in which it takes them leaves no trace), it never makes a
    /// property true that was false (at most it makes the client hold), and no fault of the
    /// configuration can stop the client from taking it (no client crashes).
    fn clients_take_replies_at_once(&self, setup: &Setup) -> bool {
        let _ = setup;
        false
    }

    /// Whether a client that holds the lock ignores every message from the servers until it
    /// releases (and, running one cycle, is done then), so that what is still on its way to
    /// it is garbage ([`super::symmetry::without_garbage`]).
    const HOLDER_IGNORES_SERVERS: bool = false;

    /// Removes `client` from whatever a server keeps to notify it later (its subscriptions),
    /// for a client whose messages are garbage from now on (see [`Self::HOLDER_IGNORES_SERVERS`]):
    /// what the entry would make the server send is dropped anyway, and an algorithm that
    /// implements this decides nothing else by it.
    fn forget_subscriber(server: &mut Self::Server, client: Id) {
        let _ = (server, client);
    }

    /// Whether a client that ran its cycle is still releasing: its release waits for an
    /// answer (a hand-off it offered), so it keeps its connection and takes messages until
    /// this turns false. Until then nothing on its way to it is garbage.
    fn still_releasing(client: &Self::Client) -> bool {
        let _ = client;
        false
    }

    /// A server starts; `restarts` is 0 on first start, more after a restart without
    /// persistence.
    fn server_start(&self, setup: &Setup, me: Id, restarts: u8, out: &mut Outbox<Self>) -> Self::Server;

    /// A server receives a message.
    fn server_msg(
        &self,
        setup: &Setup,
        me: Id,
        state: &mut Self::Server,
        src: Id,
        msg: Self::Msg,
        out: &mut Outbox<Self>,
    );

    /// A server's timer fires.
    fn server_timer(
        &self,
        setup: &Setup,
        me: Id,
        state: &mut Self::Server,
        timer: &Self::Timer,
        out: &mut Outbox<Self>,
    ) {
        let _ = (setup, me, state, timer, out);
    }

    /// A client starts acquiring `me.key` with `me.token`.
    fn client_acquire(&self, setup: &Setup, me: Me, state: &mut Self::Client, out: &mut Outbox<Self>);

    /// A client receives a message (in any phase).
    fn client_msg(
        &self,
        setup: &Setup,
        me: Me,
        state: &mut Self::Client,
        src: Id,
        msg: Self::Msg,
        out: &mut Outbox<Self>,
    ) -> Event;

    /// A client's protocol timer fires.
    fn client_timer(
        &self,
        setup: &Setup,
        me: Me,
        state: &mut Self::Client,
        timer: &Self::Timer,
        out: &mut Outbox<Self>,
    ) -> Event {
        let _ = (setup, me, state, timer, out);
        Event::Nothing
    }

    /// A holder ends its critical section and releases.
    fn client_release(&self, setup: &Setup, me: Me, state: &mut Self::Client, out: &mut Outbox<Self>);

    /// Ghost: this server ended lease `token` because its TTL ran out.
    fn lease_expired(&self, state: &Self::Server, token: Token) -> bool {
        let _ = (state, token);
        false
    }

    /// Ghost: this server's records show `token` holding a lease (granted, not yet freed).
    fn holds(&self, state: &Self::Server, token: Token) -> bool;

    /// Whether this server's state is within the configuration's bounds (for an algorithm
    /// whose runs can go on forever, like Redlock's split votes, each round raising the
    /// fencing counters). Runs that leave the bounds are cut, so a check proves nothing about
    /// them; an algorithm that bounds its runs says so in its docs.
    fn within_bounds(&self, setup: &Setup, state: &Self::Server) -> bool {
        let _ = (setup, state);
        true
    }

    /// Ghost: this server dropped client `client`'s connection (and what it held).
    fn dropped_connection(&self, state: &Self::Server, client: u8) -> bool {
        let _ = (state, client);
        false
    }

    /// Ghost: this server removed a lease on behalf of someone who did not own it.
    fn foreign_release(&self, state: &Self::Server) -> bool {
        let _ = state;
        false
    }

    /// Ghost: the arrival ticket of a client's acquisition, where the algorithm claims FIFO.
    fn fifo_ticket(&self, state: &Self::Client) -> Option<u32> {
        let _ = state;
        None
    }

    /// Ghost: whether this server still keeps `token`'s place in line at `ticket`. A waiter
    /// whose place is gone (an etcd key or a ZooKeeper node that its lease's or session's
    /// expiry deleted) has left the queue until it queues again: FIFO speaks of the places
    /// that exist, not of a ticket the waiter has not yet learnt is void.
    fn in_line(&self, state: &Self::Server, token: Token, ticket: u32) -> bool {
        let _ = (state, token, ticket);
        true
    }

    /// A waiter's periodic look at the key on its own, which covers a wake-up lost with a
    /// crashed waiter (one routed to it, or one it took and had not acted on when it
    /// crashed). Liveness counts it as pending only once a client has crashed while
    /// acquiring: in every other run a waiter must be woken by the protocol itself, so a
    /// lost wake-up is still caught there.
    fn is_recheck(&self, timer: &Self::Timer) -> bool {
        let _ = timer;
        false
    }

    /// A timer that stands for the environment — a failure detector noticing that client
    /// `client` dropped its connection — rather than for progress the system makes on its
    /// own. Liveness counts it as pending only once that client has crashed.
    fn failure_detector_of(&self, timer: &Self::Timer) -> Option<u8> {
        let _ = timer;
        None
    }
}

/// Which actor an id is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A server, with its index among servers.
    Server(usize),
    /// A client, with its index among clients.
    Client(usize),
    /// The resource.
    Resource,
}

/// One actor of a lock system.
pub struct LockActor<A: Algorithm> {
    /// What the actor is.
    pub role: Role,
    /// The algorithm.
    pub algorithm: Arc<A>,
    /// The system's shape.
    pub setup: Arc<Setup>,
}

impl<A: Algorithm> Clone for LockActor<A> {
    fn clone(&self) -> Self {
        LockActor { role: self.role, algorithm: Arc::clone(&self.algorithm), setup: Arc::clone(&self.setup) }
    }
}

type State<A> = NodeState<<A as Algorithm>::Server, <A as Algorithm>::Client>;

impl<A: Algorithm> LockActor<A> {
    fn me(&self, ix: usize, token: Token) -> Me {
        Me { id: self.setup.client(ix), key: self.setup.key_of(ix), token }
    }

    fn release(&self, ix: usize, client: &mut ClientState<A::Client>, o: &mut Out<Self>) {
        client.finishing = false;
        let me = self.me(ix, client.token);
        self.algorithm.client_release(&self.setup, me, &mut client.proto, &mut Outbox(o));
        let next_cycle = client.token.cycle + 1;
        if next_cycle < self.setup.cycles {
            client.token = Token { client: ix as u8, cycle: next_cycle };
            client.phase = Phase::Acquiring;
            let me = self.me(ix, client.token);
            self.algorithm.client_acquire(&self.setup, me, &mut client.proto, &mut Outbox(o));
        } else {
            client.phase = Phase::Done;
        }
    }

    fn on_event(&self, ix: usize, client: &mut ClientState<A::Client>, event: Event, o: &mut Out<Self>) {
        let Event::Granted(fence) = event else { return };
        if client.phase != Phase::Acquiring {
            return;
        }
        client.phase = Phase::Holding(fence);
        client.fences.extend(fence);
        if let Some(resource) = self.setup.resource_id() {
            o.send(resource, Wire::Write(Write { token: client.token, fence, last: false }));
        }
        let _ = ix;
        o.set_timer(Timer::FinishWork, model_timeout());
    }
}

impl<A: Algorithm> Actor for LockActor<A> {
    type Msg = Wire<A::Msg>;
    type Timer = Timer<A::Timer>;
    type State = State<A>;
    type Storage = Boots;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<Boots>, o: &mut Out<Self>) -> Self::State {
        let boots = storage.map_or(0, |Boots(n)| n + 1);
        o.save(Boots(boots));
        match self.role {
            Role::Server(_) => {
                let mut out = Outbox(o);
                NodeState::Server(self.algorithm.server_start(&self.setup, id, boots, &mut out))
            }
            Role::Client(ix) => {
                let token = Token { client: ix as u8, cycle: 0 };
                let mut client = ClientState {
                    phase: if boots == 0 { Phase::Acquiring } else { Phase::Gone },
                    key: self.setup.key_of(ix),
                    token,
                    fences: Vec::new(),
                    finishing: false,
                    proto: A::Client::default(),
                };
                if boots == 0 {
                    self.algorithm.client_acquire(&self.setup, self.me(ix, token), &mut client.proto, &mut Outbox(o));
                }
                NodeState::Client(client)
            }
            Role::Resource => NodeState::Resource(ResourceState::default()),
        }
    }

    fn on_msg(&self, id: Id, state: &mut Cow<Self::State>, src: Id, msg: Self::Msg, o: &mut Out<Self>) {
        match (state.to_mut(), msg) {
            (NodeState::Server(server), Wire::Lock(msg)) => {
                self.algorithm.server_msg(&self.setup, id, server, src, msg, &mut Outbox(o));
            }
            (NodeState::Client(client), Wire::Lock(msg)) => {
                let Role::Client(ix) = self.role else { return };
                // A client that ran all its cycles has closed its connections: what still
                // arrives for it is dropped (and symmetry reduction drops it at once).
                if client.closed::<A>() {
                    return;
                }
                let me = self.me(ix, client.token);
                let event = self.algorithm.client_msg(&self.setup, me, &mut client.proto, src, msg, &mut Outbox(o));
                self.on_event(ix, client, event, o);
            }
            (NodeState::Resource(resource), Wire::Write(write)) => {
                let fencing = self.setup.resource.unwrap_or(Fencing::Unchecked);
                resource.write(write, fencing);
                if write.last {
                    o.send(src, Wire::WriteDone);
                }
            }
            (NodeState::Client(client), Wire::WriteDone) => {
                let Role::Client(ix) = self.role else { return };
                if client.finishing {
                    self.release(ix, client, o);
                }
            }
            _ => {}
        }
    }

    fn on_timeout(&self, id: Id, state: &mut Cow<Self::State>, timer: &Self::Timer, o: &mut Out<Self>) {
        match (state.to_mut(), timer) {
            (NodeState::Server(server), Timer::Lock(t)) => {
                self.algorithm.server_timer(&self.setup, id, server, t, &mut Outbox(o));
            }
            (NodeState::Client(client), Timer::Lock(t)) => {
                let Role::Client(ix) = self.role else { return };
                let me = self.me(ix, client.token);
                let event = self.algorithm.client_timer(&self.setup, me, &mut client.proto, t, &mut Outbox(o));
                self.on_event(ix, client, event, o);
            }
            (NodeState::Client(client), Timer::FinishWork) => {
                let Role::Client(ix) = self.role else { return };
                let Phase::Holding(fence) = client.phase else { return };
                match self.setup.resource_id() {
                    Some(resource) => {
                        o.send(resource, Wire::Write(Write { token: client.token, fence, last: true }));
                        client.finishing = true;
                    }
                    None => self.release(ix, client, o),
                }
            }
            _ => {}
        }
    }

    fn name(&self) -> String {
        match self.role {
            Role::Server(ix) => self.setup.name(self.setup.server(ix)),
            Role::Client(ix) => format!("client{ix}"),
            Role::Resource => "resource".into(),
        }
    }
}
