//! Symmetry reduction: clients that lock the same key are interchangeable, so the checker
//! stores one state per class of states that differ only in which client is which.
//!
//! In a lock system with `n` clients on one key, the state where client 0 holds and client 1
//! waits behaves exactly like the one where client 1 holds and client 0 waits: the servers,
//! the network and the resource treat clients alike except for their identity. Symmetry
//! reduction (Ip and Dill, "Better verification through symmetry", 1996; Bošnački, Dams and
//! Holenderski, "Symmetric Spin", 2000) explores one representative of each such class,
//! dividing the state space by up to `n!`.
//!
//! **Why it is sound here.** A [`Renaming`] permutes the client indices among clients that
//! lock the same key and renames every place a client identity appears: the order of the
//! client actors, their ids (in the network's channels, in watcher sets, in queues), their
//! owner tokens (in server tables, messages, timers, the resource) and the client indices
//! the servers keep (dropped connections, failure detectors). For that to be a symmetry of
//! the model, two things must hold, and each [`Algorithm`] that declares
//! [`Algorithm::clients_interchangeable`] promises them:
//!
//! 1. *Equivariance*: renaming a state and then taking a step gives the same states as
//!    taking the step and then renaming. An algorithm only compares client identities for
//!    equality and never orders or picks clients by index (a grant goes to the head of a
//!    queue, never to "the lowest client id"); where it iterates over clients (waking every
//!    watcher, a restarted server dropping every connection) each client gets its own
//!    channel or timer, so the order of the iteration leaves no trace in the state.
//! 2. *Invariant properties*: every property quantifies over all clients alike ("no two
//!    clients believe they hold the key", "no waiting client is left behind"), so it has the
//!    same truth value on every state of a class, and so does the boundary (the timing
//!    assumptions).
//!
//! Then a state violating a property is reachable exactly when a representative of its
//! class is, and the reduced search finds every violation the full one finds. The
//! representative is canonical — the renaming with the smallest fingerprint — so every
//! state of a class maps to the same stored state, whatever order the threads explore in,
//! and the unique state count of a configuration is deterministic (and can be pinned).
//!
//! **Interchangeable servers.** Redlock's instances are symmetric in the same way: every
//! client asks all of them at once and counts their answers alike. Where an algorithm
//! declares [`Algorithm::servers_interchangeable`], a renaming also permutes the servers —
//! their actor slots (state, crash, storage, timers), their ids on the network's channels and
//! the instance indices clients keep — and the representative is taken over the server
//! permutations too, servers sorted by their own signatures first. The same two promises
//! make it sound: servers are only compared for equality, and every property (and bound)
//! quantifies over all servers alike ("one restart in the run", "no server released a foreign
//! lease").
//!
//! Where an algorithm does tell clients apart (the bus locker sends client `i` to node
//! `i % nodes`), it says so and the check runs without reduction.
//!
//! **Clients catching up.** Where an algorithm declares
//! [`Algorithm::clients_take_replies_at_once`], each state is also replaced by the state in
//! which every acquiring client has taken the messages the servers sent it
//! ([`with_clients_caught_up`], a partial-order reduction whose soundness is argued there).
//! Unlike the symmetries it is not a bisimulation, so the search explores the
//! representatives themselves rather than the states that led to them (see `check`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use stateright::Model;
use stateright::actor::{ActorModelAction, Id, Network, Timers};

use super::actor::{Algorithm, ClientState, Key, NodeState, Phase, Setup, Timer, Token, Wire};
use super::properties::{LockModel, LockState};
use super::resource::{ResourceState, Write};

/// A map of client indices, applied to everything that names a client: a permutation of the
/// clients (each keeping its key), or, to compute a signature, every client onto client 0.
/// Where the servers are interchangeable too, it also permutes the servers (or, for a
/// signature, maps every server onto server 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renaming {
    /// `servers[s]` is the new index of server `s`. Servers come first among the actor ids,
    /// so client `i` has id `servers.len() + i`.
    servers: Vec<u8>,
    /// `to[i]` is the new index of client `i`.
    to: Vec<u8>,
}

impl Renaming {
    /// A renaming of the clients of a system with `servers` servers: client `i` becomes
    /// client `to[i]`; the servers stay.
    pub fn new(servers: usize, to: Vec<u8>) -> Self {
        Renaming { servers: (0..servers as u8).collect(), to }
    }

    /// A renaming of the servers and the clients: server `s` becomes server `servers[s]`,
    /// client `i` becomes client `to[i]`.
    pub fn with_servers(servers: Vec<u8>, to: Vec<u8>) -> Self {
        Renaming { servers, to }
    }

    /// The new index of client `ix`.
    pub fn client(&self, ix: u8) -> u8 {
        self.to[ix as usize]
    }

    /// The new index of server (instance) `ix`.
    pub fn server(&self, ix: u8) -> u8 {
        self.servers[ix as usize]
    }

    /// The new id of an actor: clients and servers move, the resource stays.
    pub fn id(&self, id: Id) -> Id {
        let i = usize::from(id);
        let servers = self.servers.len();
        if i < servers {
            return Id::from(self.servers[i] as usize);
        }
        match i.checked_sub(servers) {
            Some(ix) if ix < self.to.len() => Id::from(servers + self.to[ix] as usize),
            _ => id,
        }
    }

    /// The owner token of the same acquisition by the renamed client.
    pub fn token(&self, token: Token) -> Token {
        Token { client: self.client(token.client), cycle: token.cycle }
    }

    /// The renamed set of client ids.
    pub fn ids(&self, ids: &BTreeSet<Id>) -> BTreeSet<Id> {
        ids.iter().map(|id| self.id(*id)).collect()
    }

    /// The renamed set of owner tokens.
    pub fn tokens(&self, tokens: &BTreeSet<Token>) -> BTreeSet<Token> {
        tokens.iter().map(|t| self.token(*t)).collect()
    }
}

/// A value that names clients, and how it reads after a [`Renaming`].
///
/// Implementations rename every client id, owner token and client index in the value, and
/// every server id and instance index, and nothing else (keys, fencing tokens and tickets
/// stay). A renaming moves servers only for an algorithm that declares its servers
/// interchangeable ([`Algorithm::servers_interchangeable`]); the others may leave instance
/// indices alone.
pub trait Rename {
    /// The value with every client renamed.
    #[must_use]
    fn rename(&self, renaming: &Renaming) -> Self;
}

impl Rename for () {
    fn rename(&self, _: &Renaming) -> Self {}
}

impl Rename for Write {
    fn rename(&self, r: &Renaming) -> Self {
        Write { token: r.token(self.token), ..*self }
    }
}

impl<M: Rename> Rename for Wire<M> {
    fn rename(&self, r: &Renaming) -> Self {
        match self {
            Wire::Lock(m) => Wire::Lock(m.rename(r)),
            Wire::Write(w) => Wire::Write(w.rename(r)),
            Wire::WriteDone => Wire::WriteDone,
        }
    }
}

impl<T: Rename> Rename for Timer<T> {
    fn rename(&self, r: &Renaming) -> Self {
        match self {
            Timer::Lock(t) => Timer::Lock(t.rename(r)),
            Timer::FinishWork => Timer::FinishWork,
        }
    }
}

impl<C: Rename> Rename for ClientState<C> {
    fn rename(&self, r: &Renaming) -> Self {
        ClientState {
            phase: self.phase,
            key: self.key,
            token: r.token(self.token),
            fences: self.fences.clone(),
            finishing: self.finishing,
            proto: self.proto.rename(r),
        }
    }
}

impl Rename for ResourceState {
    fn rename(&self, r: &Renaming) -> Self {
        ResourceState {
            current: self.current.map(|t| r.token(t)),
            closed: r.tokens(&self.closed),
            max_fence: self.max_fence,
            rejected: self.rejected,
            interleaved: self.interleaved.map(|t| r.token(t)),
        }
    }
}

impl<S: Rename, C: Rename> Rename for NodeState<S, C> {
    fn rename(&self, r: &Renaming) -> Self {
        match self {
            NodeState::Server(s) => NodeState::Server(s.rename(r)),
            NodeState::Client(c) => NodeState::Client(c.rename(r)),
            NodeState::Resource(res) => NodeState::Resource(res.rename(r)),
        }
    }
}

/// Renames a per-key map whose values name clients.
pub fn rename_keyed<V: Rename>(map: &BTreeMap<Key, V>, r: &Renaming) -> BTreeMap<Key, V> {
    map.iter().map(|(k, v)| (*k, v.rename(r))).collect()
}

/// The whole system state with its clients renamed: actor slots permuted, contents renamed.
fn rename_state<A: Algorithm>(state: &LockState<A>, r: &Renaming) -> LockState<A> {
    let n = state.actor_states.len();
    // `slot[new] = old`: the actor whose state lands in slot `new`.
    let mut slot: Vec<usize> = (0..n).collect();
    for old in 0..n {
        slot[usize::from(r.id(Id::from(old)))] = old;
    }
    let network = match &state.network {
        Network::Ordered(flows) => Network::Ordered(
            flows
                .iter()
                .map(|((src, dst), msgs)| ((r.id(*src), r.id(*dst)), msgs.iter().map(|m| m.rename(r)).collect()))
                .collect(),
        ),
        _ => unreachable!("lock systems run on an ordered network"),
    };
    let timers_set = slot
        .iter()
        .map(|&old| {
            let mut timers = Timers::new();
            for timer in state.timers_set[old].iter() {
                timers.set(timer.rename(r));
            }
            timers
        })
        .collect();
    LockState::<A> {
        actor_states: slot.iter().map(|&old| Arc::new(state.actor_states[old].rename(r))).collect(),
        network,
        timers_set,
        random_choices: slot.iter().map(|&old| state.random_choices[old].clone()).collect(),
        crashed: slot.iter().map(|&old| state.crashed[old]).collect(),
        history: (),
        actor_storages: slot.iter().map(|&old| state.actor_storages[old]).collect(),
    }
}

fn fingerprint<T: Hash>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The renamings that may give the canonical representative: within each key's clients,
/// clients are put in the order of their signatures (`signatures[i]` is client `i`'s), and
/// only clients with equal signatures are tried in every order.
fn renamings(keys: &[Key], signatures: &[u64]) -> Vec<Vec<u8>> {
    let mut out = vec![(0..keys.len() as u8).collect::<Vec<u8>>()];
    let mut classes: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
    for (ix, key) in keys.iter().enumerate() {
        classes.entry(*key).or_default().push(ix as u8);
    }
    for slots in classes.values() {
        // `slots` are the class's client indices in ascending order; its members, sorted by
        // signature, take them in turn.
        let mut members = slots.clone();
        members.sort_by_key(|ix| signatures[*ix as usize]);
        let mut start = 0;
        while start < members.len() {
            let end = start
                + members[start..]
                    .iter()
                    .take_while(|m| signatures[**m as usize] == signatures[members[start] as usize])
                    .count();
            let group = &members[start..end];
            let onto = &slots[start..end];
            let mut next = Vec::with_capacity(out.len());
            for base in &out {
                for order in permutations(group) {
                    let mut to = base.clone();
                    for (from, onto) in order.iter().zip(onto) {
                        to[*from as usize] = *onto;
                    }
                    next.push(to);
                }
            }
            out = next;
            start = end;
        }
    }
    out
}

fn permutations(items: &[u8]) -> Vec<Vec<u8>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

/// What actor `id` (a client, or a server where servers are interchangeable) looks like with
/// every identity `erase` erases: its state, crash, storage and timers, and the messages on
/// its channels. The same for an actor and its image under any renaming, so sorting by it is
/// a canonical first cut.
fn signature<A: Algorithm>(state: &LockState<A>, id: Id, erase: &Renaming) -> u64 {
    let i = usize::from(id);
    let mut hasher = DefaultHasher::new();
    state.actor_states[i].rename(erase).hash(&mut hasher);
    state.crashed[i].hash(&mut hasher);
    state.actor_storages[i].hash(&mut hasher);
    let mut timers: Vec<u64> = state.timers_set[i].iter().map(|t| fingerprint(&t.rename(erase))).collect();
    timers.sort_unstable();
    timers.hash(&mut hasher);
    if let Network::Ordered(flows) = &state.network {
        let mut channels: Vec<u64> = flows
            .iter()
            .filter(|((src, dst), _)| *src == id || *dst == id)
            .map(|((src, dst), msgs)| {
                let msgs: Vec<_> = msgs.iter().map(|m| m.rename(erase)).collect();
                fingerprint(&(*src == id, erase.id(*src), erase.id(*dst), msgs))
            })
            .collect();
        channels.sort_unstable();
        channels.hash(&mut hasher);
    }
    hasher.finish()
}

/// The state without its garbage: messages still on their way to a client that is done (and
/// finished releasing: [`Algorithm::still_releasing`]).
/// Such a client ignores every message (it closed its connections), so delivering them
/// changes nothing but the network, and a state with them behaves like the state without
/// them; [`quiescent`](super::properties::quiescent) does not count them either, so every
/// property has the same value on both. Dropping them merges states that differ only in
/// how much garbage is still in flight.
///
/// For an algorithm whose holders ignore every server message
/// ([`Algorithm::HOLDER_IGNORES_SERVERS`]), what servers still send to a holder is garbage
/// too: the holder ignores it until it releases and is done then (every configuration runs
/// one cycle per client). A holder has its critical section's timer armed, so a state with
/// such messages is no more quiescent than the state without. For the same reason the
/// servers forget the subscriptions of done clients and of such holders
/// ([`Algorithm::forget_subscriber`]): all they would produce is garbage.
pub fn without_garbage<A: Algorithm>(state: &LockState<A>) -> LockState<A> {
    let mut state = state.clone();
    if let Network::Ordered(flows) = &mut state.network {
        let done: Vec<bool> = state
            .actor_states
            .iter()
            .map(|s| matches!(&**s, NodeState::Client(c) if c.phase == Phase::Done && c.closed::<A>()))
            .collect();
        let holding: Vec<bool> = state
            .actor_states
            .iter()
            .map(|s| {
                A::HOLDER_IGNORES_SERVERS
                    && matches!(&**s, NodeState::Client(c) if matches!(c.phase, Phase::Holding(_)))
            })
            .collect();
        let server =
            |id: Id| matches!(state.actor_states.get(usize::from(id)).map(|s| &**s), Some(NodeState::Server(_)));
        let garbage = |src: Id, dst: Id| done[usize::from(dst)] || (holding[usize::from(dst)] && server(src));
        flows.retain(|(src, dst), _| !garbage(*src, *dst));
        // What the servers would send them later is garbage too: their subscriptions go.
        let deaf: Vec<Id> = (0..done.len()).filter(|ix| done[*ix] || holding[*ix]).map(Id::from).collect();
        if !deaf.is_empty() {
            for slot in &mut state.actor_states {
                let NodeState::Server(server) = &**slot else { continue };
                let mut forgotten = server.clone();
                for id in &deaf {
                    A::forget_subscriber(&mut forgotten, *id);
                }
                if forgotten != *server {
                    *slot = Arc::new(NodeState::Server(forgotten));
                }
            }
        }
    }
    state
}

/// The state after every client that is acquiring has taken the messages the servers sent
/// it (in channel order), for an algorithm whose clients may take them at once
/// ([`Algorithm::clients_take_replies_at_once`]): a partial-order reduction (Godefroid,
/// "Partial-Order Methods for the Verification of Concurrent Systems", 1996; Peled's ample
/// sets) that explores, from each state, only the step "the client takes its next message"
/// while there is one, instead of every interleaving of it with the rest of the system.
///
/// **Why it is sound.** Let `a` be such a step in a state `s`: the delivery of the message at
/// the head of a channel from a server to client `c`, which is acquiring. Then:
///
/// 1. *It stays possible*: only `c` takes messages off that channel, and no fault of the
///    configuration stops `c` (no client crashes), so along every run from `s` that does not
///    take `a`, `a` can still be taken.
/// 2. *It commutes* with every other step: the servers', the resource's and the timers'
///    touch neither `c`'s state nor the head of the channel (a server only appends to it, a
///    FIFO queue's push at the back and pop at the front commute); `c`'s own other steps are
///    the deliveries from its other channels, which commute by the algorithm's promise (its
///    handling of answers and wake-ups does not depend on their order), and `c`, acquiring,
///    has no timer of its own.
/// 3. *It hides no violation*: a state that violates a property still violates it after `a`.
///    Taking a message changes only `c` (at most it now believes it holds the lock, with one
///    more fencing token: more holders and more tokens never mend exclusion or fencing) and
///    what `c` sends (on its way, not yet taken). The servers and the resource are untouched.
///    A state with `a` pending is not quiescent (a message is on its way to a live client),
///    so the liveness checks hold on it. And `a` keeps a state within the configuration's
///    boundary: a client that holds is allowed no less than one that acquires.
///
/// So if a run from `s` reaches a violation, a run from `a(s)` does: take `a` at once and the
/// rest of the run in order (1, 2), ending in a state that still violates (3); and `a(s)` is
/// reachable from `s`, so nothing is found that the full search would not find. The check
/// explores these states themselves ([`super::check`]), not the states that led to them: the
/// steps that `c`'s taking the message makes possible (the servers receiving its releases or
/// retries) are then explored from them. Taking messages never cycles (each removes one from
/// a channel from a server to a client, and a client sends only to the servers and the
/// resource), so the loop ends.
pub fn with_clients_caught_up<A: Algorithm>(model: &LockModel<A>, state: &LockState<A>) -> LockState<A> {
    let setup = &model.cfg.setup;
    let mut state = state.clone();
    while let Some((src, dst, msg)) = next_reply::<A>(setup, &state) {
        match model.next_state(&state, ActorModelAction::Deliver { src, dst, msg }) {
            Some(next) if model.within_boundary(&next) => state = next,
            // Not possible by (1) and (3); should it happen, the state is kept as it is.
            _ => break,
        }
    }
    state
}

/// The first message at the head of a channel from a server to a live client that is
/// acquiring, with its channel.
fn next_reply<A: Algorithm>(setup: &Setup, state: &LockState<A>) -> Option<(Id, Id, Wire<A::Msg>)> {
    let Network::Ordered(flows) = &state.network else { return None };
    flows.iter().find_map(|((src, dst), msgs)| {
        let ix = usize::from(*dst);
        let acquiring = setup.server_ix(*src).is_some()
            && setup.client_ix(*dst).is_some()
            && !state.crashed[ix]
            && matches!(&*state.actor_states[ix], NodeState::Client(c) if c.phase == Phase::Acquiring);
        if acquiring { msgs.front().map(|msg| (*src, *dst, msg.clone())) } else { None }
    })
}

/// The canonical representative of a state's class: the state without garbage, with its
/// clients renamed (each staying on its key) by the renaming that gives the smallest
/// fingerprint among those that sort the clients by their signatures. For the checker's
/// `symmetry_fn`; only sound for an algorithm whose clients are interchangeable.
///
/// With `SERVERS`, for an algorithm whose servers are interchangeable too
/// ([`Algorithm::servers_interchangeable`]), the candidates are every permutation of the
/// servers combined with those of the clients, and the client signatures are taken with
/// every server erased to server 0 (so they do not depend on the servers' order).
///
/// Canonical because the signatures are the same on every state of a class: every state
/// of a class yields the same set of candidate states, hence the same smallest one.
pub fn representative<A: Algorithm, const SERVERS: bool>(state: &LockState<A>) -> LockState<A> {
    let state = &without_garbage(state);
    let servers = state.actor_states.iter().take_while(|s| matches!(&***s, NodeState::Server(_))).count();
    let keys: Vec<Key> = state
        .actor_states
        .iter()
        .filter_map(|s| match &**s {
            NodeState::Client(c) => Some(c.key),
            _ => None,
        })
        .collect();
    let erase_servers: Vec<u8> = if SERVERS { vec![0; servers] } else { (0..servers as u8).collect() };
    let erase = Renaming::with_servers(erase_servers, vec![0; keys.len()]);
    let signatures: Vec<u64> = (0..keys.len()).map(|ix| signature(state, Id::from(servers + ix), &erase)).collect();
    let server_orders = if SERVERS {
        let signatures: Vec<u64> = (0..servers).map(|ix| signature(state, Id::from(ix), &erase)).collect();
        renamings(&vec![0; servers], &signatures)
    } else {
        vec![(0..servers as u8).collect()]
    };
    let client_orders = renamings(&keys, &signatures);
    let mut best: Option<(u64, LockState<A>)> = None;
    for servers_to in &server_orders {
        for to in &client_orders {
            let renamed = rename_state(state, &Renaming::with_servers(servers_to.clone(), to.clone()));
            let print = fingerprint(&renamed);
            if best.as_ref().is_none_or(|(smallest, _)| print < *smallest) {
                best = Some((print, renamed));
            }
        }
    }
    best.map_or_else(|| state.clone(), |(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamings_keep_every_client_on_its_key() {
        assert_eq!(renamings(&[0, 0], &[7, 7]).len(), 2);
        assert_eq!(renamings(&[0, 0, 0], &[7, 7, 7]).len(), 6);
        // Clients 0 and 2 lock key 0, client 1 locks key 1: only 0 and 2 may swap.
        assert_eq!(renamings(&[0, 1, 0], &[7, 7, 7]), vec![vec![0, 1, 2], vec![2, 1, 0]]);
        assert_eq!(renamings(&[0, 1], &[7, 7]), vec![vec![0, 1]]);
    }

    #[test]
    fn clients_are_put_in_the_order_of_their_signatures() {
        // Distinct signatures: one candidate, sorting client 2 (smallest) into slot 0.
        assert_eq!(renamings(&[0, 0, 0], &[5, 9, 1]), vec![vec![1, 2, 0]]);
        // Clients 0 and 1 tie: both of their orders are candidates.
        assert_eq!(renamings(&[0, 0, 0], &[5, 5, 1]), vec![vec![1, 2, 0], vec![2, 1, 0]]);
    }

    #[test]
    fn a_renaming_moves_clients_only() {
        let r = Renaming::new(3, vec![1, 0]);
        assert_eq!(r.id(Id::from(0)), Id::from(0));
        assert_eq!(r.id(Id::from(3)), Id::from(4));
        assert_eq!(r.id(Id::from(4)), Id::from(3));
        assert_eq!(r.id(Id::from(5)), Id::from(5), "the resource stays");
        assert_eq!(r.token(Token { client: 0, cycle: 1 }), Token { client: 1, cycle: 1 });
    }
}
