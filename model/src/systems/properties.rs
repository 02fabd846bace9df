//! The properties every lock system is checked against, the timing assumptions that
//! bound its runs, and the builder that turns an [`Algorithm`] into a stateright model.
//!
//! Safety properties are plain `always` properties. Liveness is checked the way a model
//! with finite runs allows: a *quiescent* state (nothing in flight to a live actor, no
//! timer armed) is where a run ends, and in such a state nobody may still be waiting
//! without an excuse. That catches lost wake-ups and locks held by crashed holders
//! without relying on stateright's `eventually`, whose check is only sound on acyclic
//! state graphs.

use std::sync::Arc;

use stateright::Expectation;
use stateright::actor::{ActorModel, ActorModelState, Id, Network};

use super::actor::{Algorithm, ClientState, Fence, LockActor, NodeState, Phase, Role, Setup, Timer};
use crate::spec::Property;

/// "Never two live clients that believe they hold the same key." (P1)
pub const MUTUAL_EXCLUSION: &str = "mutual exclusion (believed by clients)";
/// "The resource never accepts a write of a critical section after another one's came
/// between its writes." (P10)
pub const RESOURCE_EXCLUSION: &str = "mutual exclusion (seen by the resource)";
/// "Only the holder's release or its own TTL removes a lease." (P2)
pub const OWNERSHIP: &str = "ownership (only its holder or its TTL frees a lease)";
/// "No fencing token is handed out twice for a key." (P3)
pub const FENCING: &str = "fencing tokens never reused";
/// "When a run ends, nobody still waits for a lock that is free." (P5)
pub const NO_LOST_WAKEUP: &str = "no lost wake-up (eventual grant)";
/// "When a run ends, nobody waits behind a crashed holder." (P9)
pub const CRASH_LIVENESS: &str = "crash liveness (a crashed holder's lock frees)";
/// "A client never holds the lock while one that arrived before it still waits" — with its
/// place in line still there ([`Algorithm::in_line`]: a waiter whose lease ran out has left the
/// line until it queues again). (P8)
pub const FIFO: &str = "FIFO (granted in arrival order)";

/// The property of P1–P10 a model property checks, by the model property's name: how a
/// model result says "P1 mutual exclusion: passed". Two model properties may check one
/// property from two sides (exclusion as clients believe it is P1, as the resource sees it
/// P10). A name that is not here must be in [`MODEL_ONLY`].
pub fn catalogued(name: &str) -> Option<Property> {
    match name {
        MUTUAL_EXCLUSION => Some(Property::MutualExclusion),
        OWNERSHIP => Some(Property::Ownership),
        FENCING => Some(Property::Fencing),
        NO_LOST_WAKEUP => Some(Property::NoLostWakeup),
        FIFO => Some(Property::Fifo),
        CRASH_LIVENESS => Some(Property::CrashSafety),
        RESOURCE_EXCLUSION => Some(Property::ResourceSafety),
        _ => None,
    }
}

/// Model properties that check none of P1–P10, each with the reason. Every property a model
/// registers is either [`catalogued`] or listed here.
pub const MODEL_ONLY: &[(&str, &str)] = &[(
    ONE_WAKEUP_PER_RELEASE,
    "an efficiency property, not one of P1-P10: a release that wakes every waiter (the thundering herd) is \
     safe and live, but costs each waiter a round trip and the server a read per waiter",
)];

/// "A removal wakes at most one waiter that still has its place in line" (no thundering herd).
/// Registered only by the queue recipes that watch keys (`etcd_queue`, `zk_queue`).
pub const ONE_WAKEUP_PER_RELEASE: &str = "one wake-up per release (no thundering herd)";

/// Which optional properties a system claims.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// The algorithm hands out fencing tokens.
    pub fencing: bool,
    /// The algorithm grants in arrival order.
    pub fifo: bool,
}

/// What the properties need besides the state: the system's shape and its algorithm.
pub struct Context<A> {
    /// The system's shape.
    pub setup: Arc<Setup>,
    /// The algorithm (for its ghost views).
    pub algorithm: Arc<A>,
    /// What it claims.
    pub claims: Claims,
}

impl<A> Clone for Context<A> {
    fn clone(&self) -> Self {
        Context { setup: Arc::clone(&self.setup), algorithm: Arc::clone(&self.algorithm), claims: self.claims }
    }
}

/// A lock system as a stateright actor model.
pub type LockModel<A> = ActorModel<LockActor<A>, Context<A>, ()>;
/// A state of a [`LockModel`].
pub type LockState<A> = ActorModelState<LockActor<A>, ()>;

/// Builds the model of `algorithm` in `setup`, with every property that applies.
pub fn build<A: Algorithm>(algorithm: A, setup: Setup, claims: Claims) -> LockModel<A> {
    let setup = Arc::new(setup);
    let algorithm = Arc::new(algorithm);
    let cx = Context { setup: Arc::clone(&setup), algorithm: Arc::clone(&algorithm), claims };
    let mut actors = Vec::new();
    for ix in 0..setup.servers {
        actors.push(LockActor { role: Role::Server(ix), algorithm: Arc::clone(&algorithm), setup: Arc::clone(&setup) });
    }
    for ix in 0..setup.clients {
        actors.push(LockActor { role: Role::Client(ix), algorithm: Arc::clone(&algorithm), setup: Arc::clone(&setup) });
    }
    if setup.resource.is_some() {
        actors.push(LockActor { role: Role::Resource, algorithm: Arc::clone(&algorithm), setup: Arc::clone(&setup) });
    }
    let crashes = setup.faults.client_crash || setup.faults.server_restart;
    let mut model = ActorModel::new(cx, ())
        .actors(actors)
        .init_network(Network::new_ordered([]))
        .max_crashes(usize::from(crashes))
        .within_boundary(within_timing_assumptions::<A>)
        .property(Expectation::Always, MUTUAL_EXCLUSION, mutual_exclusion::<A>)
        .property(Expectation::Always, OWNERSHIP, ownership::<A>)
        .property(Expectation::Always, NO_LOST_WAKEUP, no_lost_wakeup::<A>);
    if setup.resource.is_some() {
        model = model.property(Expectation::Always, RESOURCE_EXCLUSION, resource_exclusion::<A>);
    }
    if claims.fencing {
        model = model.property(Expectation::Always, FENCING, fencing::<A>);
    }
    if setup.faults.client_crash {
        model = model.property(Expectation::Always, CRASH_LIVENESS, crash_liveness::<A>);
    }
    if claims.fifo {
        model = model.property(Expectation::Always, FIFO, fifo::<A>);
    }
    model
}

/// Every client with its index and whether it is crashed.
pub fn clients<'a, A: Algorithm>(
    cx: &'a Context<A>,
    state: &'a LockState<A>,
) -> impl Iterator<Item = (usize, &'a ClientState<A::Client>, bool)> + 'a {
    (0..cx.setup.clients).filter_map(move |ix| {
        let id = usize::from(cx.setup.client(ix));
        match &*state.actor_states[id] {
            NodeState::Client(client) => Some((ix, client, state.crashed[id])),
            _ => None,
        }
    })
}

/// Every server's state.
pub fn servers<'a, A: Algorithm>(
    cx: &'a Context<A>,
    state: &'a LockState<A>,
) -> impl Iterator<Item = &'a A::Server> + 'a {
    (0..cx.setup.servers).filter_map(move |ix| match &*state.actor_states[ix] {
        NodeState::Server(server) => Some(server),
        _ => None,
    })
}

fn mutual_exclusion<A: Algorithm>(model: &LockModel<A>, state: &LockState<A>) -> bool {
    let cx = &model.cfg;
    (0..cx.setup.keys).all(|key| {
        clients(cx, state)
            .filter(|(ix, c, crashed)| {
                !crashed && cx.setup.key_of(*ix) as usize == key && matches!(c.phase, Phase::Holding(_))
            })
            .count()
            <= 1
    })
}

fn resource_exclusion<A: Algorithm>(_: &LockModel<A>, state: &LockState<A>) -> bool {
    state.actor_states.iter().all(|s| !matches!(&**s, NodeState::Resource(r) if r.interleaved.is_some()))
}

fn ownership<A: Algorithm>(model: &LockModel<A>, state: &LockState<A>) -> bool {
    servers(&model.cfg, state).all(|s| !model.cfg.algorithm.foreign_release(s))
}

fn fencing<A: Algorithm>(model: &LockModel<A>, state: &LockState<A>) -> bool {
    let cx = &model.cfg;
    (0..cx.setup.keys).all(|key| {
        let mut fences: Vec<Fence> = clients(cx, state)
            .filter(|(ix, _, _)| cx.setup.key_of(*ix) as usize == key)
            .flat_map(|(_, c, _)| c.fences.iter().copied())
            .collect();
        let n = fences.len();
        fences.sort_unstable();
        fences.dedup();
        fences.len() == n
    })
}

/// Nothing can happen any more except faults: no server down (a crashed server always
/// comes back), no message in flight to a live actor that can still act on it (a client
/// that is done ignores every message), no timer armed at a live actor (a failure
/// detector's timer counts only once the client it watches has crashed; a waiter's recheck
/// only once a waiter has crashed).
pub fn quiescent<A: Algorithm>(model: &LockModel<A>, state: &LockState<A>) -> bool {
    let cx = &model.cfg;
    (0..cx.setup.servers).all(|ix| !state.crashed[ix])
        && state.network.iter_deliverable().all(|env| state.crashed[usize::from(env.dst)] || done(state, env.dst))
        && state.timers_set.iter().enumerate().all(|(ix, timers)| {
            state.crashed[ix]
                || timers.iter().all(|t| match t {
                    Timer::Lock(t) if cx.algorithm.is_recheck(t) => !waiter_crashed(cx, state),
                    Timer::Lock(t) => cx
                        .algorithm
                        .failure_detector_of(t)
                        .is_some_and(|c| !state.crashed[usize::from(cx.setup.client(c as usize))]),
                    Timer::FinishWork => false,
                })
        })
}

/// Whether a client crashed while it was acquiring: a waiter may take a wake-up with it
/// (one routed to it, or one it took and had not acted on yet), and only the other
/// waiters' recheck makes up for it.
fn waiter_crashed<A: Algorithm>(cx: &Context<A>, state: &LockState<A>) -> bool {
    clients(cx, state).any(|(_, c, crashed)| crashed && c.phase == Phase::Acquiring)
}

/// Whether actor `id` is a client that ran all its cycles and finished releasing: it
/// ignores every message from then on (its phase never changes again), so what is still on
/// its way to it is garbage.
pub fn done<A: Algorithm>(state: &LockState<A>, id: Id) -> bool {
    matches!(&*state.actor_states[usize::from(id)], NodeState::Client(c) if c.phase == Phase::Done && c.closed::<A>())
}

/// Whether a client that crashed before it was done still holds `key` at some server
/// (it held it, or its grant was on its way), so waiting behind it is a crash-liveness
/// question rather than a lost wake-up.
fn crashed_holder<A: Algorithm>(cx: &Context<A>, state: &LockState<A>, key: usize) -> bool {
    clients(cx, state).any(|(ix, c, crashed)| {
        crashed
            && cx.setup.key_of(ix) as usize == key
            && matches!(c.phase, Phase::Holding(_) | Phase::Acquiring)
            && servers(cx, state).any(|s| cx.algorithm.holds(s, c.token))
    })
}

fn waiting<'a, A: Algorithm>(cx: &'a Context<A>, state: &'a LockState<A>) -> impl Iterator<Item = usize> + 'a {
    clients(cx, state).filter(|(_, c, crashed)| !crashed && c.phase == Phase::Acquiring).map(|(ix, _, _)| ix)
}

fn no_lost_wakeup<A: Algorithm>(model: &LockModel<A>, state: &LockState<A>) -> bool {
    let cx = &model.cfg;
    !quiescent(model, state) || waiting(cx, state).all(|ix| crashed_holder(cx, state, cx.setup.key_of(ix) as usize))
}

fn crash_liveness<A: Algorithm>(model: &LockModel<A>, state: &LockState<A>) -> bool {
    let cx = &model.cfg;
    !quiescent(model, state) || waiting(cx, state).all(|ix| !crashed_holder(cx, state, cx.setup.key_of(ix) as usize))
}

fn fifo<A: Algorithm>(model: &LockModel<A>, state: &LockState<A>) -> bool {
    let cx = &model.cfg;
    let alg = &cx.algorithm;
    clients(cx, state).filter(|(_, c, crashed)| !crashed && matches!(c.phase, Phase::Holding(_))).all(
        |(h, holder, _)| {
            let Some(granted) = alg.fifo_ticket(&holder.proto) else { return true };
            clients(cx, state).all(|(w, waiter, crashed)| {
                crashed
                    || waiter.phase != Phase::Acquiring
                    || cx.setup.key_of(w) != cx.setup.key_of(h)
                    || alg.fifo_ticket(&waiter.proto).is_none_or(|arrived| {
                        arrived > granted || !servers(cx, state).all(|s| alg.in_line(s, waiter.token, arrived))
                    })
            })
        },
    )
}

/// The runs a configuration contains. Outside them: a fault the configuration does not
/// explore (a crash of an actor that may not crash, a second restart, a restarted client
/// process), a server noticing a dropped connection of a client that is still running,
/// a server TTL ending a lease of a live client that is still acquiring (a grant that
/// arrives after its lease ran out is a pause too), and, without pauses, one ending a lease
/// its live holder still believes in.
fn within_timing_assumptions<A: Algorithm>(cx: &Context<A>, state: &LockState<A>) -> bool {
    let setup = &cx.setup;
    let alg = &cx.algorithm;
    for (ix, crashed) in state.crashed.iter().enumerate() {
        if !crashed {
            continue;
        }
        let allowed = if setup.server_ix(ix.into()).is_some() {
            setup.faults.server_restart
        } else if setup.client_ix(ix.into()).is_some() {
            setup.faults.client_crash
        } else {
            false
        };
        if !allowed {
            return false;
        }
    }
    // One restart in the whole run: each crash of a server counts, whether it is down now
    // (crashed) or came back (every start after the first is counted in its storage).
    // Counting servers instead would let one server crash and come back again and again,
    // each time waking every client: runs without end, and no exhaustive search.
    let restarts: usize = (0..setup.servers)
        .map(|ix| usize::from(state.crashed[ix]) + state.actor_storages[ix].map_or(0, |boots| usize::from(boots.0)))
        .sum();
    if restarts > 1 {
        return false;
    }
    if !servers(cx, state).all(|server| alg.within_bounds(setup, server)) {
        return false;
    }
    for (ix, client) in (0..setup.clients).filter_map(|ix| match &*state.actor_states[usize::from(setup.client(ix))] {
        NodeState::Client(c) => Some((ix, c)),
        _ => None,
    }) {
        if client.phase == Phase::Gone {
            return false;
        }
        let crashed = state.crashed[usize::from(setup.client(ix))];
        if crashed {
            continue;
        }
        for server in (0..setup.servers).filter_map(|s| match &*state.actor_states[s] {
            NodeState::Server(server) => Some(server),
            _ => None,
        }) {
            if alg.dropped_connection(server, ix as u8) {
                return false;
            }
            // Without pauses no lease of a live client runs out before it is done; with
            // pauses, only once the client believes it holds the lock (see `Faults::pauses`).
            let may_expire = match client.phase {
                Phase::Acquiring => false,
                Phase::Holding(_) => setup.faults.pauses,
                Phase::Done | Phase::Gone => true,
            };
            if !may_expire && alg.lease_expired(server, client.token) {
                return false;
            }
        }
    }
    true
}
