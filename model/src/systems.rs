//! Lock algorithms as stateright actor systems, checked exhaustively.
//!
//! Each algorithm is a set of server actors plus a client protocol ([`Algorithm`]), one
//! file each. The framework around it supplies clients that run an acquire → work →
//! release cycle, a resource they write to in their critical section (with or without
//! fencing-token checks), the faults (client crash, server restart without persistence,
//! pauses past the lease) and the properties in [`properties`]. Timers fire at any moment:
//! that is how message delays, slow clocks and arbitrary TTLs show up. The one timing
//! assumption — without pauses, a live holder stops acting before the server's TTL ends
//! its lease — is a boundary on the runs, lifted by [`Faults::pauses`].
//!
//! [`SYSTEMS`] lists every system with its expected verdicts; [`System::check`] runs one.
//! Checks are reduced by default ([`symmetry`]): states that differ only in which client is
//! which, or in messages still on their way to clients that are done, are stored once; and
//! where an algorithm allows it (the multi-instance locks), clients take the messages on
//! their way to them at once, a partial-order reduction
//! ([`symmetry::with_clients_caught_up`]).
//! The runs are bounded where they could go on forever — one server restart per run,
//! pauses strike holders only ([`Faults::pauses`]), a bound on the leases and sessions that run
//! out in the queue recipes, whose waiters queue again after losing theirs
//! ([`etcd_queue::LEASE_EXPIRIES`]), a bound on Redlock's split-vote rounds
//! where its fencing counters are modelled (the `within_bounds` of [`multi::MultiInstance`]).
//! Redlock's instances are interchangeable too, and are permuted like the clients.
//!
//! ```
//! use lockcheck_model::systems::{self, CheckOptions, Options};
//!
//! let system = systems::find("redis-single").expect("registered");
//! let outcome = system.check(&Options { clients: 2, keys: 1 }, &CheckOptions::default(), &mut |_| {});
//! assert!(outcome.complete);
//! assert!(outcome.violated().is_empty(), "{outcome:#?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Adding an algorithm: write `systems/<name>.rs` with a type implementing [`Algorithm`],
//! and add a [`System`] entry to [`SYSTEMS`] that builds it.

mod actor;
pub mod bus;
mod check;
pub mod dflockd;
pub mod etcd_queue;
pub mod kv_offer;
pub mod kv_watch;
mod lease_table;
pub mod multi;
pub mod properties;
pub mod redis_single;
mod resource;
pub mod symmetry;
pub mod zk_queue;

pub use actor::{
    Algorithm, ClientState, Event, Faults, Fence, Fencing, Key, LockActor, Me, NodeState, Outbox, Phase, Role, Setup,
    Timer, Token, Wire,
};
pub use check::{CheckOptions, Outcome, Progress, PropertyOutcome, Verdict, check, explore};
pub use lease_table::{Lease, LeaseTable, ReleaseCheck, Slot};
pub use properties::{Claims, LockModel, LockState, build};
pub use resource::{ResourceState, Write};

use bus::Bus;
use dflockd::Dflockd;
use etcd_queue::{EtcdQueue, Watch};
use kv_offer::KvOffer;
use kv_watch::KvWatch;
use multi::{Combine, MultiInstance};
use properties::{
    CRASH_LIVENESS, FENCING, MUTUAL_EXCLUSION, NO_LOST_WAKEUP, ONE_WAKEUP_PER_RELEASE, OWNERSHIP, RESOURCE_EXCLUSION,
};
use redis_single::SingleServer;
use stateright::Expectation;
use zk_queue::ZkQueue;

/// The knobs a user turns: how many clients and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Client actors.
    pub clients: usize,
    /// Keys (client `i` locks key `i % keys`).
    pub keys: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { clients: 2, keys: 1 }
    }
}

/// A registered lock system.
pub struct System {
    /// Short name, used on the command line.
    pub name: &'static str,
    /// One line: what it is.
    pub summary: &'static str,
    /// The algorithm and its source, in a paragraph.
    pub doc: &'static str,
    /// Whether the algorithm is expected to satisfy every property it is checked against.
    pub correct: bool,
    /// The properties a check with 2 clients and 1 key is expected to find violated (a system
    /// whose flaw needs more clients is checked with at least that many, and says so).
    pub expected: &'static [&'static str],
    run: fn(&'static str, &Options, &CheckOptions, &mut dyn FnMut(Progress)) -> Outcome,
    serve: fn(&Options, &str),
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System").field("name", &self.name).field("correct", &self.correct).finish_non_exhaustive()
    }
}

impl System {
    /// Checks the system exhaustively in the given configuration.
    pub fn check(&self, options: &Options, check: &CheckOptions, progress: &mut dyn FnMut(Progress)) -> Outcome {
        (self.run)(self.name, options, check, progress)
    }

    /// Serves stateright's Explorer for the system on `address`; never returns.
    pub fn explore(&self, options: &Options, address: &str) -> ! {
        (self.serve)(options, address);
        unreachable!("the explorer serves forever")
    }

    /// Whether an outcome matches what is expected of this system: a correct system
    /// violates nothing; a flawed one shows every expected violation.
    pub fn as_expected(&self, outcome: &Outcome) -> bool {
        let violated = outcome.violated();
        if self.correct { violated.is_empty() } else { self.expected.iter().all(|e| violated.contains(e)) }
    }
}

/// Defines a registry entry from a builder `fn(&Options) -> LockModel<_>`.
macro_rules! system {
    ($name:literal, $summary:literal, $doc:expr, correct: $correct:expr, expected: $expected:expr, $build:expr) => {
        System {
            name: $name,
            summary: $summary,
            doc: $doc,
            correct: $correct,
            expected: $expected,
            run: |name, options, check_options, progress| check(name, $build(options), check_options, progress),
            serve: |options, address| explore($build(options), address),
        }
    };
}

fn setup(options: &Options, servers: usize, faults: Faults, resource: Option<Fencing>) -> Setup {
    Setup { servers, clients: options.clients, keys: options.keys.max(1), cycles: 1, faults, resource }
}

const NO_FAULTS: Faults = Faults { client_crash: false, server_restart: false, pauses: false };
const CLIENT_CRASH: Faults = Faults { client_crash: true, ..NO_FAULTS };
const SERVER_RESTART: Faults = Faults { server_restart: true, ..NO_FAULTS };
const PAUSES: Faults = Faults { pauses: true, ..NO_FAULTS };
const FENCED: Claims = Claims { fencing: true, fifo: false };
const UNFENCED: Claims = Claims { fencing: false, fifo: false };

fn kv_watch(options: &Options, watch_first: bool) -> LockModel<KvWatch> {
    build(KvWatch { watch_first }, setup(options, 1, CLIENT_CRASH, Some(Fencing::Checked)), FENCED)
}

fn kv_offer(options: &Options, take_over_checked: bool, delete_after_failed_offer: bool) -> LockModel<KvOffer> {
    let algorithm = KvOffer { take_over_checked, delete_after_failed_offer };
    build(algorithm, setup(options, 1, CLIENT_CRASH, Some(Fencing::Checked)), FENCED)
}

/// The unchecked take-over needs a third client to bite (the holder, a waiter that creates
/// once the offered lease ran out, and the one whose stale take-over overwrites it): with two
/// nobody else can hold. It is checked with at least three, and its outcome says so.
fn kv_offer_unchecked(options: &Options) -> LockModel<KvOffer> {
    kv_offer(&Options { clients: options.clients.max(3), ..*options }, false, true)
}

fn bus(options: &Options) -> LockModel<Bus> {
    build(Bus, setup(options, 2, NO_FAULTS, Some(Fencing::Unchecked)), UNFENCED)
}

fn multi(options: &Options, combine: Combine, faults: Faults, resource: Option<Fencing>) -> LockModel<MultiInstance> {
    let instances = match combine {
        Combine::AllInOrder => 2,
        Combine::Majority => 3,
    };
    let claims = if resource == Some(Fencing::Checked) { FENCED } else { UNFENCED };
    let counters = claims.fencing;
    build(MultiInstance { combine, ttl: faults.pauses, counters }, setup(options, instances, faults, resource), claims)
}

fn dflockd(options: &Options) -> LockModel<Dflockd> {
    build(Dflockd, setup(options, 1, CLIENT_CRASH, Some(Fencing::Checked)), Claims { fencing: true, fifo: true })
}

/// The queue recipes claim fencing (the create revision, the sequence number) and FIFO, and
/// are checked for the thundering herd too ([`ONE_WAKEUP_PER_RELEASE`]).
const QUEUE: Claims = Claims { fencing: true, fifo: true };

/// The etcd recipes. The herd and the stale grant need a third client (two waiters behind one
/// holder): they are checked with at least three, and their outcomes say so.
fn etcd_queue(options: &Options, watch: Watch, check_own_key: bool, faults: Faults) -> LockModel<EtcdQueue> {
    let clients = if watch == Watch::Predecessor && check_own_key { options.clients } else { options.clients.max(3) };
    let options = Options { clients, ..*options };
    build(EtcdQueue { watch, check_own_key }, setup(&options, 1, faults, Some(Fencing::Checked)), QUEUE).property(
        Expectation::Always,
        ONE_WAKEUP_PER_RELEASE,
        etcd_queue::one_wakeup_per_release,
    )
}

/// The ZooKeeper recipes; the flawed one's double grant needs a third client, as the etcd
/// stale grant does.
fn zk_queue(options: &Options, notices_expiry: bool) -> LockModel<ZkQueue> {
    let clients = if notices_expiry { options.clients } else { options.clients.max(3) };
    let options = Options { clients, ..*options };
    build(ZkQueue { notices_expiry }, setup(&options, 1, CLIENT_CRASH, Some(Fencing::Checked)), QUEUE).property(
        Expectation::Always,
        ONE_WAKEUP_PER_RELEASE,
        zk_queue::one_wakeup_per_release,
    )
}

fn single_server(options: &Options, release: redis_single::Release, server_ttl: bool) -> LockModel<SingleServer> {
    build(SingleServer { release, server_ttl }, setup(options, 1, CLIENT_CRASH, Some(Fencing::Checked)), FENCED)
}

const REDIS_SINGLE_DOC: &str = "One Redis server: SET key token NX PX ttl to acquire, a keyspace notification \
    subscribed before the failed try to wake waiters, and a token-checked release (a Lua script that deletes the \
    key only if it still holds the caller's token). The fencing token is an INCR counter. Source: the Redis \
    documentation's single-instance lock pattern. Checked with a holder that may crash and a fenced resource.";

const REDIS_DEL_DOC: &str = "The same single-server lease lock, but released with a plain DEL key. A holder whose \
    release is delayed past its lease's expiry deletes the next holder's lock: a release by a non-owner, which \
    with a third client becomes a double grant. Source: the common naive Redis lock; the reason the Redis \
    documentation insists on a token-checked release.";

const HOLDER_TIMER_DOC: &str = "A lock server without server-side expiry: the lease's TTL is a timer in the \
    holder's own process, which releases when it fires. A holder that crashes never releases, so its waiters wait \
    forever. Source: the original Go in-memory locker and FluxaORM's locker, whose expiry lives in the client.";

const KV_BEFORE_DOC: &str = "A lock on a key-value store with revisions and watches (NATS JetStream KV): create the \
    key if absent with a TTL (its revision is the fencing token), delete it checked against that revision, and \
    wait by watching the key for a delete or purge — with the watch started before the create is tried; every \
    watcher is woken by every removal. Source: the NATS KV Create/Delete(LastRevision) API; the plain \
    watch-before-try design the NATS locker in impls grew from (its current design, wake one waiter and hand-off \
    by offer, is kv-offer).";

const KV_AFTER_DOC: &str = "The same KV lock with the watch started only after the create failed, as the original \
    Go NATS locker does. A delete that lands between the failed create and the watch is never seen: the waiter \
    sleeps forever although the key is free (a lost wake-up). Source: the seeds' Go NATS locker.";

const KV_OFFER_DOC: &str = "The NATS locker in impls: the KV lock with the watch before the try, grown into wake \
    one and hand-off by offer. Waiters join a queue group before their first create, and each removal of the key \
    (a release's revision-checked delete, a TTL's expiry) is announced to one of them, which creates again. A \
    holder releases by offering its lease at its revision to one waiter, which rewrites the entry as its own only \
    if it is still at that revision (the take-over: one write from holder to waiter) and answers Taken; on a \
    decline, no responders or no answer in time the holder deletes revision-checked. Checked with a client that may \
    crash (a wake-up routed to it is lost; the waiters' recheck covers a lost notice) and a fenced resource. \
    Source: impls/src/nats/wakeups.rs (\"Why no wake-up is lost\", \"Hand-off by offer\").";

const KV_OFFER_UNCHECKED_DOC: &str = "The offer lock with a take-over that is not revision-checked: the waiter that \
    gets an offer rewrites the key whatever holds it. An offer can outlive the lease it offers (the lease runs out, \
    another waiter creates the key), and the stale take-over then overwrites the new holder's lease: two clients \
    believe they hold the lock, and a lease is removed by someone who does not own it. It takes three clients: the \
    holder, the waiter that creates after the expiry, and the one that takes over: it is checked with at least \
    three (with two, nobody else can hold the key while the holder releases).";

const BUS_DOC: &str = "In-memory lockers on two nodes that coordinate by broadcasting lock and unlock events on a \
    bus: each node grants from its own table when it believes the key free and then tells its peer. Two nodes \
    that grant before hearing from each other both hand out the lock. Source: the original Go InMemory locker \
    (go-warp) with its event bus.";

const MULTI_ALL_DOC: &str = "Two independent Redis instances, acquired one after the other with SET NX PX and rolled \
    back on the first busy one (waiting for it to free); the lock is held only when every instance granted. The \
    fencing token is the first instance's INCR counter, as in the impls' all-instances locker: every grant holds \
    instance 0, so its counter orders the grants. Checked without faults, with a fenced resource. Source: the \
    seeds' Go multi-Redis package and RedisAllLocker in impls.";

const MULTI_ALL_RESTART_DOC: &str = "The all-instances lock with one instance restarting without persistence. \
    Holding every instance means two holders always meet on an instance that did not restart, so exclusion \
    holds. But when the first instance restarts, its counter starts over, and the next holder gets a fencing \
    token that was handed out before: fencing tokens repeat. The impl declares it (fencing_survives_restart: \
    false): its tokens are only as durable as the first server's counter.";

const REDLOCK_DOC: &str = "Redlock as the impls' RedlockLocker runs it: three independent Redis instances asked \
    in parallel with SET NX PX (each with an INCR fencing counter); once every instance answered, a majority of \
    grants is the lock, otherwise roll back and wait for a wake-up. The token is the largest counter of the grants, \
    written back with RAISE_FENCE to every instance that granted (only where the caller still holds the lock), and \
    the lock is used only once a majority confirmed. Without faults and with the timing assumption (a holder stops \
    before its validity time runs out) it is safe. No fencing is checked here, so the counters are left out, and \
    so is the write-back round, which then can neither fail nor change anything. Source: the Redis \
    documentation's Redlock algorithm and RedlockLocker in impls.";

const REDLOCK_RESTART_DOC: &str = "Redlock with one instance that crashes and restarts without persistence \
    (Kleppmann, 'How to do distributed locking', 2016): the restarted instance forgets the lease and grants it \
    again, so a second client assembles a majority while the first still holds. The resource does not check \
    fencing tokens, so it sees the two critical sections interleave.";

const REDLOCK_RESTART_FENCED_DOC: &str = "Redlock with the fencing write-back, an instance restarting without \
    persistence and a resource that checks fencing tokens. The restart wipes the instance's lock and its counter \
    (write-back included): a second client gets a majority from the restarted instance and one the first holder's \
    majority did not include, and its token, the larger of their counters, can equal the first holder's. Tokens \
    repeat and the fenced resource accepts both holders' writes: the write-back orders tokens only as long as \
    the instances keep their counters (Kleppmann 2016; the impls declare fencing_survives_restart: false).";

const REDLOCK_PAUSE_DOC: &str = "Redlock with a client that pauses past its lease (a GC pause, a stopped VM): the \
    instances expire the lease, another client acquires, and the paused client wakes up still believing it \
    holds the lock and writes to an unfenced resource (Kleppmann 2016).";

const REDLOCK_PAUSE_FENCED_DOC: &str = "Redlock with a client pausing past its lease, writing to a resource that \
    checks fencing tokens, with the impls' fencing write-back: the token M is the largest counter of the grants \
    and is written back to every instance that granted before the lock is used. Two clients still believe they \
    hold the lock (exclusion as believed by clients is violated), but the fenced resource saves them: the next \
    majority shares an instance that took M, whose counter it can only increment after the lease there is gone, \
    so its token exceeds M, and the paused client's late writes are rejected. Tokens never repeat and the \
    resource never accepts interleaved critical sections (exhaustive with 2 clients, whose runs never reach the \
    split-vote bound: the count is the same with twice the bound). \
    Without the write-back the largest counter did repeat (Kleppmann 2016: Redlock has no fencing token of its own).";

const DFLOCKD_DOC: &str = "A FIFO lease server in the dflockd design: per key a holder and a queue; acquiring is \
    two-phase (enqueue, which grants at once or returns a place in line, then wait, which collects the grant even \
    if it was made while the wait was in flight); grants strictly in queue order; a server-side TTL; and when a \
    client's connection drops, the server releases what it held and removes it from the queues. Source: the \
    dflockd protocol (reference/dflockd-protocol.md) and the reference server in impls.";

const ETCD_QUEUE_DOC: &str = "etcd's lock recipe (concurrency.Mutex, etcd 3.5): each client puts a key under the \
    lock's prefix bound to its lease; the key's create revision is its place in line and its fencing token; the \
    client with the lowest create revision holds; every other client watches only the key just below its own and \
    reads again when it is deleted; once nothing is below, it reads its own key and, if its lease ran out while it \
    waited (the key is gone), queues again with a new lease. Release deletes the key; a lease that runs out \
    deletes it on the server. Checked with clients that crash, waiters whose leases run out (at most three \
    expiries per run; a holder's lease outlives its critical section, the timing assumption) and a resource \
    that checks revisions. Source: etcd client/v3/concurrency/mutex.go.";

const ETCD_HERD_DOC: &str = "The etcd recipe with every waiter watching the lowest key (the owner's) instead of \
    its predecessor. Who holds is decided as before (nothing below, own key alive), so exclusion, fencing, FIFO \
    and liveness hold; but every release wakes every waiter, each of which reads the prefix again and most of \
    which go back to sleep: the thundering herd, seen by the model-only property 'one wake-up per release' (a \
    removal wakes at most one waiter that still has its key). It takes two waiters: checked with at least three \
    clients.";

const ETCD_STALE_DOC: &str = "The etcd recipe without the check of the waiter's own key (etcd's Lock before 3.5, \
    or a check served by a stale read): a waiter believes it holds as soon as nothing is left below its key. The \
    finding Jepsen reported on etcd 3.4.3: a waiter's lease runs out while it waits (paused, cut off), its key \
    is deleted, the waiter behind it moves up to the holder, and when the holder releases both believe they \
    hold. The revision fences the stale one: a resource that checks revisions rejects its writes. It takes three \
    clients: checked with at least three.";

const ETCD_PAUSE_DOC: &str = "The correct etcd recipe with a holder that pauses past its lease (a GC pause, a \
    stopped VM; Kleppmann 2016): the server deletes its key, the next waiter holds, and the paused client wakes \
    up still believing it holds. No lock survives that without fencing: two clients believe they hold. The \
    create revision is the fencing token, and the resource, which checks it, rejects the paused holder's late \
    writes, so it never accepts interleaved critical sections (the session-bound lease of DESIGN.md: a \
    violation its claims predict, with fencing as the remedy).";

const ZK_QUEUE_DOC: &str = "ZooKeeper's lock recipe: each client creates an ephemeral sequential node in its \
    session; the lowest sequence number holds (the number is the fencing token); every other client watches the \
    node just below its own and, on its deletion, lists the children again, holding only if its own node is \
    still there and lowest. A session that expires (the client crashed, or was paused or cut off past the \
    session timeout) loses its node and its watches; the client learns Expired on reconnect, or as the error of \
    a request, and queues again in a new session. Checked with clients that crash and waiters whose sessions \
    expire (at most three per run) and a fenced resource. Source: the ZooKeeper recipes, Curator's LockInternals, \
    kazoo's Lock.";

const ZK_EXPIRED_SESSION_DOC: &str = "The ZooKeeper recipe with a client that does not notice its session \
    expired (its handle re-opens a session on its own, as wrappers that hide Expired do) and, on a watch event, \
    holds if no child is below its number, without checking that its node is among them. It acts on a watch \
    event after its session expired: the event was sent before the expiry and read after it (a paused client \
    finds it in its socket buffer), its node is gone, the waiter behind it has moved up, and both believe they \
    hold; the sequence number fences the stale one. Without an event on its way it waits forever instead: its \
    watch died with its session. The double grant takes three clients: checked with at least three.";

/// Every registered system.
pub const SYSTEMS: &[System] = &[
    system!("redis-single", "SET NX PX + token-checked release (correct)", REDIS_SINGLE_DOC, correct: true, expected: &[],
        |o: &Options| single_server(o, redis_single::Release::TokenChecked, true)),
    system!("redis-del", "SET NX PX + unconditional DEL release (flawed: non-owner release)", REDIS_DEL_DOC,
        correct: false, expected: &[OWNERSHIP],
        |o: &Options| single_server(o, redis_single::Release::Unconditional, true)),
    system!("holder-timer", "expiry only in the holder's process (flawed: crashed holder keeps the lock)",
        HOLDER_TIMER_DOC, correct: false, expected: &[CRASH_LIVENESS],
        |o: &Options| single_server(o, redis_single::Release::TokenChecked, false)),
    system!("kv-watch-before", "KV create + revision-checked delete, watch before the try (correct)", KV_BEFORE_DOC,
        correct: true, expected: &[], |o: &Options| kv_watch(o, true)),
    system!("kv-watch-after", "KV create + revision-checked delete, watch after the try (flawed: lost wake-up)",
        KV_AFTER_DOC, correct: false, expected: &[NO_LOST_WAKEUP], |o: &Options| kv_watch(o, false)),
    system!("kv-offer", "KV lock, wake one waiter per removal, release by offer to one waiter (correct)",
        KV_OFFER_DOC, correct: true, expected: &[], |o: &Options| kv_offer(o, true, true)),
    system!("kv-offer-unchecked", "KV offer lock whose take-over is not revision-checked (flawed: a stale offer \
        overwrites the next holder; checked with at least 3 clients)", KV_OFFER_UNCHECKED_DOC, correct: false, expected: &[MUTUAL_EXCLUSION, OWNERSHIP],
        kv_offer_unchecked),
    system!("bus", "in-memory lockers on two nodes syncing over an event bus (flawed: double grant)", BUS_DOC,
        correct: false, expected: &[MUTUAL_EXCLUSION, RESOURCE_EXCLUSION], bus),
    system!("multi-all", "all instances in order with rollback, token from the first instance, no faults (correct)",
        MULTI_ALL_DOC, correct: true, expected: &[],
        |o: &Options| multi(o, Combine::AllInOrder, NO_FAULTS, Some(Fencing::Checked))),
    system!("multi-all-restart", "all instances in order, the first instance restarts without persistence (flawed: \
        its counter starts over and fencing tokens repeat; exclusion holds)", MULTI_ALL_RESTART_DOC,
        correct: false, expected: &[FENCING],
        |o: &Options| multi(o, Combine::AllInOrder, SERVER_RESTART, Some(Fencing::Checked))),
    system!("redlock", "majority of 3 instances, no faults (correct)", REDLOCK_DOC, correct: true, expected: &[],
        |o: &Options| multi(o, Combine::Majority, NO_FAULTS, None)),
    system!("redlock-restart", "majority of 3, an instance restarts without persistence (flawed)",
        REDLOCK_RESTART_DOC, correct: false, expected: &[MUTUAL_EXCLUSION, RESOURCE_EXCLUSION],
        |o: &Options| multi(o, Combine::Majority, SERVER_RESTART, Some(Fencing::Unchecked))),
    system!("redlock-restart-fenced", "majority of 3 with fence write-back, restart without persistence, fenced \
        resource (flawed: the restarted counter repeats a token, the resource accepts both)",
        REDLOCK_RESTART_FENCED_DOC, correct: false, expected: &[MUTUAL_EXCLUSION, FENCING, RESOURCE_EXCLUSION],
        |o: &Options| multi(o, Combine::Majority, SERVER_RESTART, Some(Fencing::Checked))),
    system!("redlock-pause", "majority of 3, a client pauses past its lease (flawed)", REDLOCK_PAUSE_DOC,
        correct: false, expected: &[MUTUAL_EXCLUSION, RESOURCE_EXCLUSION],
        |o: &Options| multi(o, Combine::Majority, PAUSES, Some(Fencing::Unchecked))),
    system!("redlock-pause-fenced", "majority of 3 with fence write-back, a client pauses past its lease, fenced \
        resource (flawed: two believed holders; the resource rejects the paused one)", REDLOCK_PAUSE_FENCED_DOC,
        correct: false, expected: &[MUTUAL_EXCLUSION],
        |o: &Options| multi(o, Combine::Majority, PAUSES, Some(Fencing::Checked))),
    system!("dflockd", "FIFO lease server, two-phase enqueue/wait, disconnect release (correct)", DFLOCKD_DOC,
        correct: true, expected: &[], dflockd),
    system!("etcd-queue", "etcd revision queue, each waiter watches its predecessor, own key checked (correct)",
        ETCD_QUEUE_DOC, correct: true, expected: &[], |o: &Options| etcd_queue(o, Watch::Predecessor, true, CLIENT_CRASH)),
    system!("etcd-queue-herd", "etcd revision queue, every waiter watches the lowest key (safe and live; flawed \
        only in efficiency: a release wakes every waiter; checked with at least 3 clients)", ETCD_HERD_DOC,
        correct: false, expected: &[ONE_WAKEUP_PER_RELEASE], |o: &Options| etcd_queue(o, Watch::Lowest, true, CLIENT_CRASH)),
    system!("etcd-queue-stale-grant", "etcd revision queue trusting a grant observed after its lease expired \
        (flawed: two holders, Jepsen's etcd 3.4.3 finding; checked with at least 3 clients)", ETCD_STALE_DOC,
        correct: false, expected: &[MUTUAL_EXCLUSION], |o: &Options| etcd_queue(o, Watch::Predecessor, false, CLIENT_CRASH)),
    system!("etcd-queue-pause", "etcd revision queue, a holder pauses past its lease, resource checks revisions \
        (flawed: two believed holders; the resource rejects the paused one)", ETCD_PAUSE_DOC, correct: false,
        expected: &[MUTUAL_EXCLUSION],
        |o: &Options| etcd_queue(o, Watch::Predecessor, true, Faults { pauses: true, ..CLIENT_CRASH })),
    system!("zk-queue", "ZooKeeper ephemeral sequential nodes, watch the predecessor, re-list on events, \
        sessions expire while waiting (correct)", ZK_QUEUE_DOC, correct: true, expected: &[],
        |o: &Options| zk_queue(o, true)),
    system!("zk-queue-expired-session", "ZooKeeper recipe whose client does not notice its session expired \
        (flawed: acts on a watch event after the expiry, two holders; or waits forever on a watch that died with \
        the session; checked with at least 3 clients)", ZK_EXPIRED_SESSION_DOC, correct: false,
        expected: &[MUTUAL_EXCLUSION, NO_LOST_WAKEUP], |o: &Options| zk_queue(o, false)),
];

/// The registered system called `name`.
pub fn find(name: &str) -> Option<&'static System> {
    SYSTEMS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use stateright::Model;

    use super::*;
    use crate::spec::Property;

    /// Every property a model registers names its P1–P10 property through the catalogue, or
    /// is listed as model-only with a reason; the dflockd model registers every one of them
    /// (a fenced resource, fencing and FIFO claimed, clients that crash).
    #[test]
    fn every_model_property_is_catalogued_or_model_only() {
        let names: Vec<&'static str> = dflockd(&Options::default()).properties().iter().map(|p| p.name).collect();
        assert_eq!(names.len(), 7, "{names:?}");
        for name in names {
            let model_only = properties::MODEL_ONLY.iter().find(|(n, _)| *n == name);
            match (properties::catalogued(name), model_only) {
                (Some(_), None) => {}
                (None, Some((_, reason))) => assert!(!reason.is_empty(), "{name}: model-only without a reason"),
                (Some(p), Some(_)) => panic!("{name}: catalogued as {p} and listed as model-only"),
                (None, None) => panic!("{name}: neither catalogued nor listed as model-only"),
            }
        }
        assert_eq!(properties::catalogued(MUTUAL_EXCLUSION), Some(Property::MutualExclusion));
        assert_eq!(properties::catalogued(RESOURCE_EXCLUSION), Some(Property::ResourceSafety));
    }

    #[test]
    fn a_model_result_names_its_properties_through_the_catalogue() {
        let system = find("redis-del").expect("registered");
        let check = CheckOptions { until_violated: system.expected.to_vec(), ..CheckOptions::default() };
        let outcome = system.check(&Options::default(), &check, &mut |_| {});
        let ownership = outcome.properties.iter().find(|p| p.name == OWNERSHIP).expect("checked");
        assert_eq!(ownership.property, Some(Property::Ownership));
        assert_eq!(outcome.by_property().get(&Property::Ownership), Some(&crate::spec::Status::Violated));
    }
}
