//! Running a model check: exhaustive BFS with stateright, verdicts per property, and the
//! shortest counterexample of each violation rendered as a numbered trace a person can
//! follow (who sent what, which timer fired, who crashed, who believed it held the lock).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use stateright::actor::{ActorModelAction, Id};
use stateright::{Checker, CheckerBuilder, Expectation, HasDiscoveries, Model, Property};

use super::actor::{Algorithm, NodeState, Phase, Setup};
use super::properties::{LockModel, LockState};
use super::symmetry::{representative, with_clients_caught_up, without_garbage};

/// How to run a check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Checker threads.
    pub threads: usize,
    /// Stop exploring below this depth (the search is then incomplete).
    pub max_depth: Option<usize>,
    /// Stop as soon as every one of these properties has a counterexample — for a flawed
    /// system whose point is its violations, in a state space too large to exhaust. The
    /// other properties are then unknown, not proven. Empty: search everything.
    pub until_violated: Vec<&'static str>,
    /// Reduce the state space (see [`super::symmetry`]): merge states that differ only in
    /// messages on their way to clients that are done, and, where the algorithm's clients
    /// are interchangeable, states that differ only in which client is which.
    pub reduce: bool,
    /// With `reduce`, where the algorithm allows it: let clients take the messages on their
    /// way to them at once ([`super::symmetry::with_clients_caught_up`], a partial-order
    /// reduction). Off only to compare against the reduction without it.
    pub take_replies_at_once: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_depth: None,
            until_violated: Vec::new(),
            reduce: true,
            take_replies_at_once: true,
        }
    }
}

/// A snapshot of a running check, for a progress line.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// States generated so far.
    pub states: usize,
    /// Unique states so far.
    pub unique_states: usize,
    /// Time since the start.
    pub elapsed: Duration,
}

pub use crate::outcome::{Outcome, PropertyOutcome, Verdict};

/// Checks `model` exhaustively (up to `options.max_depth`), reporting progress.
pub fn check<A: Algorithm>(
    name: &str,
    model: LockModel<A>,
    options: &CheckOptions,
    progress: &mut dyn FnMut(Progress),
) -> Outcome {
    let start = Instant::now();
    let setup = &model.cfg.setup;
    let symmetry = options.reduce && model.cfg.algorithm.clients_interchangeable(setup);
    let server_symmetry = symmetry && model.cfg.algorithm.servers_interchangeable(setup);
    let class: fn(&LockState<A>) -> LockState<A> = match (options.reduce, symmetry, server_symmetry) {
        (true, true, true) => representative::<A, true>,
        (true, true, false) => representative::<A, false>,
        (true, false, _) => without_garbage::<A>,
        (false, ..) => LockState::<A>::clone,
    };
    let at_once =
        options.reduce && options.take_replies_at_once && model.cfg.algorithm.clients_take_replies_at_once(setup);
    // The reduced search explores the representatives themselves (see `Reduced`), breadth
    // first: a depth-first search would carry each pending state's whole path with it.
    let search = if options.reduce {
        let reduced = Reduced { model: model.clone(), properties: model.properties(), at_once, class };
        wait(configure(reduced.checker(), options).spawn_bfs(), start, progress)
    } else {
        wait(configure(model.clone().checker(), options).spawn_bfs(), start, progress)
    };
    let seconds = start.elapsed().as_secs_f64();
    let discoveries = search.discoveries;
    let properties = model.properties();
    let depth_cut = options.max_depth.is_some_and(|d| search.max_depth + 1 >= d);
    // The checker stops early once every property has a discovery, or once the properties
    // it was told to look for have one.
    let stopped_at_findings =
        !options.until_violated.is_empty() && options.until_violated.iter().all(|name| discoveries.contains(name));
    let complete = !depth_cut && !stopped_at_findings && discoveries.len() < properties.len();
    let violated: Vec<&'static str> = properties.iter().map(|p| p.name).filter(|n| discoveries.contains(n)).collect();
    let mut traces = shortest_counterexamples(&model, &violated, options.max_depth, at_once, class);
    let properties = properties
        .iter()
        .map(|p| {
            let verdict = match traces.remove(p.name) {
                Some(trace) => Verdict::Violated { trace },
                None if discoveries.contains(p.name) => {
                    Verdict::Violated { trace: vec!["(counterexample not reconstructed)".into()] }
                }
                None if complete => Verdict::Holds,
                None => Verdict::Unknown,
            };
            PropertyOutcome { name: p.name.to_owned(), property: super::properties::catalogued(p.name), verdict }
        })
        .collect();
    Outcome {
        system: name.to_string(),
        clients: model.cfg.setup.clients,
        keys: model.cfg.setup.keys,
        complete,
        reduced: options.reduce,
        symmetry,
        server_symmetry,
        replies_taken_at_once: at_once,
        unique_states: search.unique_states,
        states: search.states,
        max_depth: search.max_depth,
        seconds,
        states_per_second: search.unique_states as f64 / seconds.max(1e-9),
        properties,
    }
}

/// The options every search takes: threads, depth bound, when to stop.
fn configure<M: Model>(builder: CheckerBuilder<M>, options: &CheckOptions) -> CheckerBuilder<M> {
    let mut builder = builder.threads(options.threads.max(1));
    if let Some(depth) = options.max_depth {
        builder = builder.target_max_depth(depth);
    }
    if !options.until_violated.is_empty() {
        builder = builder.finish_when(HasDiscoveries::AllOf(options.until_violated.iter().copied().collect()));
    }
    builder
}

/// The model the reduced search explores: the lock model with every state it reaches
/// replaced by its class's representative — clients caught up with their messages where
/// `at_once` (see [`with_clients_caught_up`]), then without garbage and renamed (`class`).
/// The search stores the representatives and generates the next states from them.
/// For the symmetries and the garbage that makes no difference (two states of a class
/// have the same successors' classes); for the partial-order reduction it is required:
/// a state with a message still on its way has fewer successors than its representative.
/// Steps that leave the configuration's boundary are not taken, before the representative
/// is taken (which could otherwise bring a state back within it).
struct Reduced<A: Algorithm> {
    model: LockModel<A>,
    properties: Vec<Property<LockModel<A>>>,
    at_once: bool,
    class: fn(&LockState<A>) -> LockState<A>,
}

impl<A: Algorithm> Reduced<A> {
    fn representative(&self, state: &LockState<A>) -> LockState<A> {
        if self.at_once { (self.class)(&with_clients_caught_up(&self.model, state)) } else { (self.class)(state) }
    }
}

/// Property `I` of the lock model, on a state of the reduced search (stateright's
/// properties are plain function pointers, so each index needs its own function).
fn reduced_property<A: Algorithm, const I: usize>(reduced: &Reduced<A>, state: &LockState<A>) -> bool {
    (reduced.properties[I].condition)(&reduced.model, state)
}

impl<A: Algorithm> Model for Reduced<A> {
    type State = LockState<A>;
    type Action = Action<A>;

    fn init_states(&self) -> Vec<LockState<A>> {
        let states = self.model.init_states();
        states.iter().filter(|s| Model::within_boundary(&self.model, s)).map(|s| self.representative(s)).collect()
    }

    fn actions(&self, state: &LockState<A>, actions: &mut Vec<Action<A>>) {
        self.model.actions(state, actions);
    }

    fn next_state(&self, state: &LockState<A>, action: Action<A>) -> Option<LockState<A>> {
        let next = self.model.next_state(state, action)?;
        Model::within_boundary(&self.model, &next).then(|| self.representative(&next))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let conditions: [fn(&Self, &LockState<A>) -> bool; 8] = [
            reduced_property::<A, 0>,
            reduced_property::<A, 1>,
            reduced_property::<A, 2>,
            reduced_property::<A, 3>,
            reduced_property::<A, 4>,
            reduced_property::<A, 5>,
            reduced_property::<A, 6>,
            reduced_property::<A, 7>,
        ];
        assert!(self.properties.len() <= conditions.len(), "more properties than the reduced search can name");
        self.properties
            .iter()
            .zip(conditions)
            .map(|(p, condition)| Property { expectation: p.expectation.clone(), name: p.name, condition })
            .collect()
    }
}

/// What a finished search found, whichever strategy ran it.
struct Search {
    discoveries: HashSet<&'static str>,
    unique_states: usize,
    states: usize,
    max_depth: usize,
}

/// Waits for a spawned checker, reporting progress.
fn wait<M, C>(checker: C, start: Instant, progress: &mut dyn FnMut(Progress)) -> Search
where
    M: Model,
    M::State: Clone + PartialEq,
    M::Action: Clone + PartialEq,
    C: Checker<M>,
{
    // Polling only drives the progress line; `join` below is what waits for the result.
    let mut last_report = Instant::now();
    while !checker.is_done() {
        if last_report.elapsed() >= Duration::from_millis(250) {
            last_report = Instant::now();
            progress(Progress {
                states: checker.state_count(),
                unique_states: checker.unique_state_count(),
                elapsed: start.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let checker = checker.join();
    Search {
        discoveries: checker.discoveries().into_keys().collect(),
        unique_states: checker.unique_state_count(),
        states: checker.state_count(),
        max_depth: checker.max_depth(),
    }
}

fn fingerprint<T: Hash>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

type Action<A> = ActorModelAction<
    <super::actor::LockActor<A> as stateright::actor::Actor>::Msg,
    <super::actor::LockActor<A> as stateright::actor::Actor>::Timer,
    (),
>;

/// A state the trace search reached.
struct Node<A: Algorithm> {
    state: LockState<A>,
    /// The parent and the action from there.
    parent: Option<(usize, Action<A>)>,
    depth: usize,
    /// Clients took messages on their way to them after the action (the partial-order reduction).
    caught_up: bool,
}

/// A single-threaded breadth-first search for the shortest run violating each of `names`
/// (stateright's parallel search keeps *a* counterexample, not necessarily the shortest).
/// It follows concrete runs but, like the check, visits each class of states (`class` maps
/// a state to its class's representative) once; with `at_once`, after each step the clients
/// take the messages on their way to them, as in the check (not renamed, so the run reads
/// as one).
fn shortest_counterexamples<A: Algorithm>(
    model: &LockModel<A>,
    names: &[&'static str],
    max_depth: Option<usize>,
    at_once: bool,
    class: fn(&LockState<A>) -> LockState<A>,
) -> HashMap<&'static str, Vec<String>> {
    let settle = |state: LockState<A>| {
        if !at_once {
            return (state, false);
        }
        let settled = with_clients_caught_up(model, &state);
        let caught_up = settled != state;
        (settled, caught_up)
    };
    let mut found = HashMap::new();
    if names.is_empty() {
        return found;
    }
    let properties: Vec<_> = model
        .properties()
        .into_iter()
        .filter(|p| names.contains(&p.name) && p.expectation == Expectation::Always)
        .collect();
    let mut nodes: Vec<Node<A>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut queue = VecDeque::new();
    for state in model.init_states() {
        if !model.within_boundary(&state) {
            continue;
        }
        let (state, caught_up) = settle(state);
        if seen.insert(fingerprint(&class(&state))) {
            nodes.push(Node { state, parent: None, depth: 0, caught_up });
            queue.push_back(nodes.len() - 1);
        }
    }
    let mut actions = Vec::new();
    while let Some(ix) = queue.pop_front() {
        for p in &properties {
            if !found.contains_key(p.name) && !(p.condition)(model, &nodes[ix].state) {
                found.insert(p.name, render_trace(model, &nodes, ix));
            }
        }
        if found.len() == properties.len() {
            break;
        }
        let depth = nodes[ix].depth;
        if max_depth.is_some_and(|d| depth + 1 >= d) {
            continue;
        }
        model.actions(&nodes[ix].state, &mut actions);
        for action in actions.drain(..) {
            let Some(next) = model.next_state(&nodes[ix].state, action.clone()) else { continue };
            if !model.within_boundary(&next) {
                continue;
            }
            let (state, caught_up) = settle(next);
            if !seen.insert(fingerprint(&class(&state))) {
                continue;
            }
            nodes.push(Node { state, parent: Some((ix, action)), depth: depth + 1, caught_up });
            queue.push_back(nodes.len() - 1);
        }
    }
    found
}

fn render_trace<A: Algorithm>(model: &LockModel<A>, nodes: &[Node<A>], last: usize) -> Vec<String> {
    let mut chain = vec![last];
    while let Some((parent, _)) = &nodes[*chain.last().expect("non-empty")].parent {
        chain.push(*parent);
    }
    chain.reverse();
    let setup = &model.cfg.setup;
    let mut lines = Vec::new();
    for (step, pair) in chain.windows(2).enumerate() {
        let (before, after) = (&nodes[pair[0]].state, &nodes[pair[1]].state);
        let Some((_, action)) = &nodes[pair[1]].parent else { continue };
        let mut line = format!("{:>2}. {}", step + 1, describe_action::<A>(setup, action));
        if nodes[pair[1]].caught_up {
            line.push_str("\n      (then the acquiring clients take the server messages waiting for them)");
        }
        for note in changes::<A>(setup, before, after) {
            line.push_str("\n      ");
            line.push_str(&note);
        }
        lines.push(line);
    }
    lines
}

fn describe_action<A: Algorithm>(setup: &Setup, action: &Action<A>) -> String {
    let name = |id: Id| setup.name(id);
    match action {
        ActorModelAction::Deliver { src, dst, msg } => format!("{} → {}: {msg:?}", name(*src), name(*dst)),
        ActorModelAction::Drop(env) => {
            format!("the network drops {:?} from {} to {}", env.msg, name(env.src), name(env.dst))
        }
        ActorModelAction::Timeout(id, timer) => format!("{}: timer {timer:?} fires", name(*id)),
        ActorModelAction::Crash(id) => format!("{} crashes", name(*id)),
        ActorModelAction::Recover(id) => format!("{} restarts with empty memory", name(*id)),
        ActorModelAction::SelectRandom { actor, random, .. } => format!("{} picks {random:?}", name(*actor)),
    }
}

/// What changed between two states, as sentences: beliefs, server tables, the resource.
fn changes<A: Algorithm>(setup: &Setup, before: &LockState<A>, after: &LockState<A>) -> Vec<String> {
    let mut notes = Vec::new();
    for (ix, (b, a)) in before.actor_states.iter().zip(&after.actor_states).enumerate() {
        let who = setup.name(Id::from(ix));
        match (&**b, &**a) {
            (NodeState::Client(b), NodeState::Client(a)) if b.phase != a.phase => {
                let belief = match a.phase {
                    Phase::Acquiring => format!("{who} is acquiring (token {:?})", a.token),
                    Phase::Holding(Some(fence)) => format!("{who} BELIEVES IT HOLDS the lock (fence {fence})"),
                    Phase::Holding(None) => format!("{who} BELIEVES IT HOLDS the lock"),
                    Phase::Done => format!("{who} released and is done"),
                    Phase::Gone => format!("{who} is gone"),
                };
                notes.push(belief);
            }
            (NodeState::Server(b), NodeState::Server(a)) if b != a => notes.push(format!("{who} now: {a:?}")),
            (NodeState::Resource(b), NodeState::Resource(a)) if b != a => notes.push(format!("{who} now: {a:?}")),
            _ => {}
        }
    }
    let holders: Vec<String> = (0..setup.clients)
        .filter_map(|ix| {
            let id = usize::from(setup.client(ix));
            match &*after.actor_states[id] {
                NodeState::Client(c) if matches!(c.phase, Phase::Holding(_)) => {
                    Some(format!("client{ix}{}", if after.crashed[id] { " (crashed)" } else { "" }))
                }
                _ => None,
            }
        })
        .collect();
    if !notes.is_empty() {
        notes.push(format!(
            "believed holders: {}",
            if holders.is_empty() { "none".to_string() } else { holders.join(", ") }
        ));
    }
    notes
}

/// Serves stateright's Explorer for `model` on `address` (blocks forever).
pub fn explore<A: Algorithm>(model: LockModel<A>, address: &str) -> ! {
    let _checker = model.checker().serve(address);
    loop {
        std::thread::park();
    }
}
