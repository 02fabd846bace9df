//! Writing a backend: from nothing to a passing suite, and every rule the checks rely on.
//!
//! lockcheck checks a lock service the way Go's `nettest.TestConn` checks a connection: you
//! say how to open a client, the suite does the rest. This guide walks through plugging a
//! backend in, then lists what the checks assume about it, each rule with the reason it
//! exists. A backend that breaks a rule is reported as violating a property — usually the
//! property the rule protects, sometimes one next to it — so the reasons are also a key to
//! reading a failure.
//!
//! A client that is not written in Rust joins without any of this: a driver program speaking
//! JSON lines on stdin/stdout (`docs/driver-protocol.md` in the repository) is checked with
//! `lockcheck check --backend "exec:COMMAND ARGS…"`, one driver process per client. The rules
//! below hold for it all the same.
//!
//! # 1. Dependencies
//!
//! In the crate that holds your backend's tests:
//!
//! ```toml
//! [dev-dependencies]
//! # From a checkout of lockcheck (or a `git = "…"` dependency); lockcheck-impls too if you
//! # use its lockers or helpers.
//! lockcheck-conformance = { path = "../lockcheck/conformance" }
//! tokio = { version = "1", features = ["rt-multi-thread", "macros", "time"] }
//! async-trait = "0.1"
//! ```
//!
//! Everything the lock API defines ([`Locker`], [`Lease`], [`LeaseRequest`], [`LockError`],
//! [`Capabilities`], [`OwnerToken`], [`FencingToken`]) is re-exported at this crate's root,
//! next to the suite's own types, so one import path serves.
//!
//! # 2. A client: implement [`Locker`]
//!
//! A [`Locker`] is one client of your service — in a networked backend, one connection. It
//! states what the service promises with [`Capabilities::none`] and the `with_*` setters;
//! every claim turns on checks ([§ Capabilities](#capabilities-what-each-claim-turns-on)).
//! Like every locker, it checks its input before sending anything —
//! [`LeaseRequest::validate`], [`validate_wait`](lockcheck_impls::validate_wait),
//! [`validate_ttl`](lockcheck_impls::validate_ttl) in `refresh` — so that bad input is a
//! [`LockError::InvalidInput`] that changed nothing. The suite itself only sends valid
//! requests.
//!
//! # 3. The service: implement [`Backend`]
//!
//! A [`Backend`] opens clients: the suite gives every simulated client its own
//! [`Backend::connect`]. It also names the service for reports and gives the time scales its
//! checks use ([§ Timing](#timing-the-time-scales-and-when-to-change-them)).
//!
//! # 4. Run the suite
//!
//! [`run_suite`] runs every check (or those [`SuiteConfig::only`] names) and returns a
//! report; [`run_suite_observed`] does the same and tells you about each check as it starts
//! and ends. Here the "service" is an in-process [`MemoryLocker`](lockcheck_impls::MemoryLocker)
//! standing in for your server, and each client a handle to it:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use lockcheck_conformance::{
//!     Backend, Capabilities, Lease, LeaseRequest, LockError, Locker, Status, SuiteConfig, Timing, run_suite_observed,
//! };
//! use lockcheck_impls::MemoryLocker;
//!
//! /// One client of the toy service. A real one holds a connection.
//! struct ToyClient {
//!     server: Arc<MemoryLocker>,
//! }
//!
//! #[async_trait]
//! impl Locker for ToyClient {
//!     fn describe(&self) -> String {
//!         "toy://in-process".into()
//!     }
//!
//!     fn capabilities(&self) -> Capabilities {
//!         // Claim only what the service keeps: each claim turns on checks.
//!         Capabilities::none()
//!             .with_fencing(true)
//!             .with_fifo(true)
//!             .with_server_side_expiry(true)
//!             .with_semaphores(true)
//!             .with_push_wakeups(true)
//!     }
//!
//!     async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
//!         self.server.try_acquire(request).await
//!     }
//!
//!     async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
//!         self.server.acquire(request, wait).await
//!     }
//!
//!     async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
//!         self.server.release(lease).await
//!     }
//!
//!     async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
//!         self.server.refresh(lease, ttl).await
//!     }
//!
//!     async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
//!         self.server.remaining_ttl(lease).await
//!     }
//! }
//!
//! /// The toy service: `connect` hands out a new client every time.
//! struct Toy {
//!     server: Arc<MemoryLocker>,
//! }
//!
//! #[async_trait]
//! impl Backend for Toy {
//!     fn name(&self) -> String {
//!         "toy".into()
//!     }
//!
//!     async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
//!         Ok(Arc::new(ToyClient { server: self.server.clone() }))
//!     }
//!
//!     fn timing(&self) -> Timing {
//!         Timing::in_process()
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
//! let backend = Toy { server: Arc::new(MemoryLocker::new()) };
//! let checks = ["double_try_acquire_fails", "release_by_non_holder_is_noop", "fencing_increases"];
//! let config = SuiteConfig::with_seed(7).only(checks);
//! let report = run_suite_observed(&backend, &config, &mut |check, result| match result {
//!     None => eprintln!("{} …", check.name),
//!     Some(result) => eprintln!("{}: {}", check.name, result.status()),
//! })
//! .await;
//! println!("{report}");
//! assert_eq!(report.status(), Status::Passed, "{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # 5. One test per check, in your CI
//!
//! [`conformance_suite!`](crate::conformance_suite) generates a module with one `#[test]` per
//! check, each failing with the counterexample when its check fails. Put it in your crate's
//! `tests/`. The backend expression is evaluated afresh in every test, *inside* that test's
//! tokio runtime, so a constructor may spawn tasks (a heartbeat, a connection driver) or
//! bind tokio sockets; async set-up goes through `Handle::current().block_on(…)`:
//!
//! ```
//! # use std::sync::Arc;
//! # use async_trait::async_trait;
//! # use lockcheck_conformance::{Backend, LockError, Locker, SharedLocker};
//! # struct Toy(SharedLocker, tokio::task::JoinHandle<()>);
//! # #[async_trait]
//! # impl Backend for Toy {
//! #     fn name(&self) -> String { self.0.name() }
//! #     async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> { self.0.connect().await }
//! # }
//! use lockcheck_conformance::{SuiteConfig, conformance_suite};
//!
//! impl Toy {
//!     /// Starts the service and its housekeeping task: this needs a runtime, which each
//!     /// generated test provides.
//!     fn start() -> Self {
//!         let housekeeping = tokio::spawn(async { /* sweep, heartbeat, … */ });
//!         Toy(SharedLocker::memory(), housekeeping)
//!     }
//! }
//!
//! // tests/toy.rs: every check with the default configuration…
//! conformance_suite!(toy, Toy::start());
//!
//! // …or a quick one: one random case, a shorter wake-up race.
//! conformance_suite!(toy_quick, Toy::start(), SuiteConfig::default().cases(1).wakeup_iterations(20));
//! # fn main() {}
//! ```
//!
//! A check whose capability you do not claim passes and prints "not claimed"; a violated
//! property *and* an unknown verdict (a backend error, a checker out of budget) fail the test.
//!
//! # 6. When a check fails
//!
//! The panic message names the check, the property, the seed and a counterexample: the
//! operations that show the violation, each with the client, the instants it was invoked and
//! returned (ms since the check started) and its outcome. Rerun with `LOCKCHECK_SEED=<seed>`
//! to replay the same random operations (real concurrency's interleaving cannot be replayed;
//! the counterexample is shrunk from what was recorded instead). With
//! `LOCKCHECK_HISTORY_DIR` set, a random workload that fails keeps its whole history there,
//! and `lockcheck check --recheck FILE` checks it again. The built-in
//! [`mutants`](crate::mutants) — lockers broken in one way each, which `lockcheck selftest`
//! runs — show what each kind of failure looks like.
//!
//! # The rules
//!
//! Every rule below is something a checker or a scenario assumes. The checks are listed in
//! [`CHECKS`]; the history checkers are in [`checkers`](crate::checkers) (the
//! `lockcheck-history` crate, which judges a history without an async runtime), and the
//! recorder that turns your answers into a history is [`history`](crate::history).
//!
//! ## The backend
//!
//! - **[`Backend::connect`] returns a fresh client — its own connection — on every call.**
//!   The failures the suite hunts (a wake-up lost between a release and a subscription, a
//!   double grant across nodes, a leaked grant of a cancelled waiter) live *between*
//!   connections; clients that share one connection hide them. Only a single-process locker
//!   shares one object among clients ([`SharedLocker`](crate::SharedLocker)).
//! - **`connect` may be called any number of times, and every client reports the same
//!   [`Locker::capabilities`].** Each check connects once just to read the claims before it
//!   starts, and the suite report reads them from yet another client.
//! - **Dropping a client is its process dying.** The crash scenario
//!   (`crashed_holder_frees_within_ttl`) drops a client that holds a lease, without releasing
//!   it; whatever your client does in `Drop` is what a crash does. With
//!   [`server_side_expiry`](Capabilities::server_side_expiry) claimed, the lease must then
//!   free within its TTL (plus [`Timing::prompt`] and [`Timing::tolerance`]).
//! - **A client lives as long as the suite holds it, idle or not.** Scenarios keep leases
//!   across sleeps (a holder "paused" past its lease, leases of 50 × [`Timing::base_ttl`]); a
//!   session that times out while idle ends leases the suite still counts on. Keep sessions
//!   alive (a heartbeat task) for as long as the client exists.
//! - **A client's futures run anywhere.** Waiters run in spawned tasks, and the sequential
//!   test drives its clients from a blocking thread through `Handle::block_on`. Today's
//!   checks make one call per client at a time, but nothing promises that: a client is
//!   `Send + Sync` because it may be shared.
//! - **In a healthy run, no call fails.** Any error other than an acquire's wait-bound
//!   time-out stops the check as Unknown, which fails it: a correctness harness does not
//!   retry, since a failure that passes on retry is still a finding. Retry transient
//!   conditions inside the client if the service calls for it.
//!
//! ## Keys and leases
//!
//! - **Accept every key [`validate_key`](lockcheck_impls::validate_key) accepts**: up to
//!   200 bytes, no whitespace or control characters. The suite's keys look like
//!   `lc-1a2b3c4d-fencing_increases-k`: a random run id and the check's name, so runs against
//!   a shared server never meet. Keys are independent: traffic on one must not disturb
//!   another (`fencing_increases` interleaves an unrelated key).
//! - **[`Lease::key`] is the key as requested.** The recorder files a release, refresh or
//!   remaining-TTL call under its lease's key; a backend that returns a prefixed or
//!   normalized key splits one key's history in two, and the grant looks never released.
//! - **Owner tokens are unique per grant — never reused, not even after a release.** The
//!   recorder identifies a lease by its [`OwnerToken`] bits: it files every later release,
//!   refresh and remaining-TTL call under the grant that carried the token. A reused token
//!   merges two grants into one, and the checkers then see a release of the wrong grant, or
//!   a grant released twice. [`OwnerToken::random`] is the simple way.
//! - **Ownership is proven by the owner token.** `release_by_non_holder_is_noop` forges a
//!   lease with the right key and fencing token but a token nobody was granted; a release
//!   or refresh with it must answer `false`/`None` and change nothing. A stale lease
//!   (released or expired, the key since granted to someone else) is likewise answered
//!   "not held" and must not touch the new holder (`refresh_after_loss_reports_loss`).
//! - **Every client honours every lease.** The sequential test releases, refreshes and asks
//!   about leases through a client other than the one that acquired them. A session-bound
//!   service whose release only works on the holder's session must route the call there.
//! - **Locks are not reentrant.** A holder's own second `try_acquire` of its key is refused
//!   (`double_try_acquire_fails`, and the spec in the sequential test).
//! - **`release` answers whether the lease was still held; `refresh` and `remaining_ttl`
//!   answer `None` exactly when it was not.** The spec
//!   ([`LockSpec`](lockcheck_model::spec::LockSpec)) accepts "not held" only for a lease that
//!   could have expired or was released, and "held" only for one that could still be; near
//!   a lease's end, within [`Timing::tolerance`], either answer passes.
//! - **`refresh` keeps the owner token and counts the new TTL from a moment within the call**
//!   ([`Lease::refreshed`] with the instant the request was sent). The renewed lease is
//!   released later; with a new token it would be a lease nobody was granted. The real-time
//!   exclusion check extends the holder's belief to the refresh's invocation plus the new TTL.
//! - **[`Lease::ttl`] is the TTL actually granted.** A service that rounds leases up (whole
//!   seconds) reports the rounded TTL; the recorder notes it and the checkers expect the lease
//!   to last that long. Reporting the requested TTL instead makes a still-held key look
//!   expired, and a refusal of it an expiry violation.
//! - **`remaining_ttl` counts down by the service's clock and never exceeds the TTL**
//!   (by more than [`Timing::tolerance`]); `remaining_ttl_counts_down` and the spec check both,
//!   and that it agrees with when the lease actually ends.
//!
//! ## Grants and refusals
//!
//! - **`try_acquire` returns `Ok(None)` only when the key is at its limit.** A refusal is
//!   evidence that the key was held: the spec accepts it only while `limit` unexpired grants
//!   stand, so a spurious refusal — a lost compare-and-swap, a transient conflict, a key the
//!   service has not yet noticed is free — is reported as an *expiry* violation (a lease that
//!   should have ended still blocked the key). Retry internally or return an error.
//! - **An acquire's [`LockError::TimedOut`] is a refusal too**: the recorder files it as
//!   "not granted", so it must only come while the key is at its limit.
//! - **Leases expire at their TTL on every backend**, claimed or not: after the TTL (plus
//!   twice the tolerance) the key must be grantable, and a queued waiter must get it within
//!   [`Timing::prompt`] + [`Timing::tolerance`] of the lease's end without anyone calling
//!   release (`ttl_expiry_frees_lock`). A released lease leaves no timer behind that would
//!   end the *next* holder's lease at the old TTL (`next_holder_survives_old_ttl`).
//! - **[`Lease::acquired_at`] is a lower bound of the moment the service granted** — the
//!   instant the granting request was sent, or earlier — read from
//!   `tokio::time::Instant::now()`, the recorder's clock. The real-time exclusion check
//!   ([`checkers::exclusion`](crate::checkers::exclusion)) takes `acquired_at + ttl` as the
//!   holder's belief of when its lease ends: a later `acquired_at` (the instant the reply
//!   arrived) makes the belief outlive the service's own expiry, and the next holder, granted
//!   correctly after that expiry, overlaps it: a mutual-exclusion violation. Where a request
//!   can wait in a server-side queue before its grant, estimate the grant instant instead and
//!   say how the estimate can err (see [`Lease`]).
//! - **A waiter is granted promptly once a slot frees**: within [`Timing::prompt`] of the
//!   release (`acquire_waits_then_wins`; `no_lost_wakeup` races the release against the
//!   waiter's subscription [`SuiteConfig::wakeup_iterations`] times, over the first 2.5 ms).
//!   Subscribe to wake-ups *before* the try that finds the key held.
//! - **An acquire returns within its wait bound**: a grant or a time-out no later than the
//!   bound plus [`Timing::prompt`], and a time-out no earlier than the bound minus
//!   [`Timing::tolerance`] (`acquire_honours_wait_bound`, and the bounded-wait checker on
//!   every history). A wait of zero is a `try_acquire` that times out instead of answering
//!   `None`.
//! - **Fencing tokens strictly increase per key, in grant order — if
//!   [`fencing`](Capabilities::fencing) is claimed.** Of two grants where one returned before
//!   the other was invoked, the first carries the smaller token; tokens need not be
//!   consecutive (one counter for all keys is fine). Without the claim, token values are
//!   recorded but not judged.
//! - **FIFO is judged by fencing token.** Where [`fifo`](Capabilities::fifo) is claimed, the
//!   FIFO checker reads the grant order of two waiters from their tokens, so claim `fifo`
//!   only with tokens that increase in grant order (in practice: claim fencing too).
//! - **A permit limit is fixed per key**: a semaphore of limit 3 admits three holders and
//!   refuses a fourth until one leaves (`semaphore_admits_limit`). A request with another
//!   limit on the same key is [`LockError::LimitMismatch`]. Without
//!   [`semaphores`](Capabilities::semaphores) claimed the suite never asks for a limit above 1.
//!
//! ## Cancellation
//!
//! - **A cancelled acquire leaves no grant behind beyond [`Timing::cancel_cleanup_bound`].**
//!   Dropping an `acquire` future is how a caller gives up (a `tokio::time::timeout`, a
//!   `select!`). If a grant races the drop, your client gives it back — in `Drop`, which
//!   cannot await: hand the release to the connection's task or to a spawned one, or close
//!   the connection. The linearizability checker models a cancelled acquire as "maybe
//!   granted at any moment, but withdrawn by the clean-up deadline"; a grant still blocking
//!   the key after the deadline is a cancel-safety violation.
//!   `cancelled_acquire_leaves_nothing` hands the lock to a waiter and cancels it in the same
//!   moment, then expects another client to get the key within 2 × [`Timing::prompt`].
//!   Dropped release, refresh and remaining-TTL calls are recorded as indeterminate: they
//!   may or may not have happened.
//!
//! ## Errors
//!
//! - **Classify every error the way [`LockError`] defines it, because the recorder files
//!   them differently** ([`Outcome`](crate::history::Outcome)):
//!   - [`LockError::is_timeout`] — the wait bound ran out and nothing is held — is recorded
//!     as a refusal (above). A request that timed out *on the wire* is not this: it may
//!     have taken the lock.
//!   - [`LockError::definitely_not_applied`] — invalid input, cancelled before sending,
//!     limit mismatch, unsupported, unavailable — is recorded as failed and left out of the
//!     spec's history: the checkers take it that nothing changed. An acquire that did take
//!     the lock but reports `Unavailable` makes that grant invisible, and the next refusal
//!     looks unjustified.
//!   - [`LockError::Indeterminate`] (and [`LockError::Protocol`]) — the request was sent
//!     and the outcome is unknown — is recorded as indeterminate: it may have taken effect
//!     at any moment after its invocation, or never. This is the honest answer for a lost
//!     reply or a dropped connection.
//!
//!   A healthy run has no errors at all (see "In a healthy run, no call fails"); the
//!   classification is what keeps verdicts right on histories that do have them — fault
//!   runs, your own tests built on the [`Recorder`](crate::Recorder) and
//!   [`checkers`](crate::checkers), histories rechecked from `LOCKCHECK_HISTORY_DIR`.
//!
//! # Capabilities: what each claim turns on
//!
//! A check that needs a claim states it as a [`Claim`] ([`CheckInfo::requires`]); where the
//! backend does not make it, the check is reported *not claimed* — shown, never silently
//! dropped — and so are properties the claim covers in other checks
//! ([`Claim::for_property`]). Everything else (mutual exclusion, ownership, expiry, wake-ups,
//! bounded waits, cancel safety) is checked on every backend.
//!
//! | field | the suite checks, when claimed | when not claimed |
//! |---|---|---|
//! | `fencing` | [`Claim::Fencing`]: `fencing_increases`; `stale_holder_fenced_off` (a holder paused past its lease cannot write to a resource that checks tokens, P10); the fencing-order checker on every history; the spec's "strictly above the last token" in `sequential_model` and the linearizability check | P3 and P10 not claimed; token values ignored |
//! | `fencing_survives_restart` | nothing in the suite; fault runs (the `faults` module, behind the `services` feature) count a fencing violation after a server restart without persistence as *predicted* when it is `false` | — |
//! | `fifo` | [`Claim::Fifo`]: `fifo_hand_off` (four queued waiters granted in arrival order, and a newcomer that asks right after the release granted last); the FIFO checker on every history, by fencing token (above) | P8 not claimed |
//! | `server_side_expiry` | [`Claim::ServerSideExpiry`]: `crashed_holder_frees_within_ttl` (P9) | P9 not claimed; expiry itself (P4) is checked regardless |
//! | `survives_server_restart` | nothing in the suite; fault runs count a mutual-exclusion or expiry violation after a restart without persistence as predicted when it is `false` | — |
//! | `semaphores` | [`Claim::Semaphores`]: `semaphore_admits_limit`, `semaphore_waiters` (acquires queued on a full semaphore, each release admits one); the random workload adds a semaphore of limit 2 next to its lock | no limit above 1 is ever requested |
//! | `push_wakeups` | [`Claim::PushWakeups`]: `hand_off_is_pushed` (the median hand-off is a few median round trips, not half a polling period). The hand-off bound ([`Timing::prompt`]) is checked either way, so a polling backend sets `prompt` above its poll interval | P5's push check not claimed |
//! | `session_bound` | [`Claim::SessionBound`]: `session_cut_under_holder` (a live holder's session is cut through [`Backend::cut_sessions`]; the lease freed under it shows as a *predicted* P1, its stale write must bounce off a fenced resource); the history records a crashed holder's session end, after which the spec lets the lease end at any moment. Without the claim, a lease freed when its client's connection closes is a lease ended before its TTL: P1 | a crashed holder's early release is a violation |
//! | `expiry_by_monotonic_clock` | nothing in the suite; the nemesis's clock faults (a server's wall clock stepped forward, or running fast) count a mutual-exclusion, expiry or ownership violation as *predicted* when it is `false` | — |
//! | `no_ttl` | a claim that takes a promise away, leases with no TTL: [`Claim::Ttl`]'s checks (`ttl_expiry_frees_lock`, `refresh_extends`, `refresh_after_loss_reports_loss`, `remaining_ttl_counts_down`) are not claimed; `lease_lasts_its_ttl` checks that a lease outlasts the TTL asked for until released; the linearizability and exclusion checkers judge every lease held until released (or, `session_bound`, its session ends) | leases end at their TTL, and all of the above is checked |
//!
//! # Timing: the time scales, and when to change them
//!
//! Every duration a check uses derives from one [`Timing`], so a slower backend scales the
//! whole suite with a few numbers. [`Backend::timing`] gives the backend's own (default
//! [`Timing::in_process`]); [`SuiteConfig::timing`] overrides it for one run, and
//! [`Timing::scaled`] multiplies every field (2.0 on a slow CI machine). Presets:
//! [`Timing::in_process`] (80 ms leases), [`Timing::networked`] (a server on loopback or a
//! local container, 300 ms), [`Timing::whole_seconds`] (leases counted in whole seconds, 2 s).
//!
//! | field | what it means | the checks use it for | raise it when |
//! |---|---|---|---|
//! | `base_ttl` | the short lease | expiry scenarios' leases; workload leases (0.5–2 ×), waits (up to 1.5 ×) and think times; [`Timing::long_ttl`] (50 ×) for leases that must not expire during a check | the service's leases are coarser (whole seconds) or its round trips are not small next to 80 ms |
//! | `tolerance` | how far past a lease's end it may still be seen held, and how far a holder's belief may outlast the backend's expiry | the spec's ambiguous zone after a lease's end; each holder's belief is shortened by it; scenarios wait TTL + 2 × tolerance before expecting expiry; a time-out may come this early | the service expires leases by a periodic sweep (at least the sweep period), or `acquired_at` is an estimate |
//! | `early_tolerance` | how far *before* its end a lease may be seen ended (`None`: `tolerance`) | the spec's ambiguous zone before a lease's end; `lease_lasts_its_ttl` probes a lease of [`Timing::boundary_ttl`] across its end; the suite raises it to twice the round-trip jitter it measures ([`Timing::calibrated`]) | the service's clock is not this process's and drifts, or it keeps time in coarse units and rounds down |
//! | `prompt` | how soon a freed slot reaches a waiter, and how far past its wait bound an acquire may return | hand-off scenarios; the bounded-wait checker's slack; the crash bound (TTL + prompt + tolerance) | a hand-off takes several round trips, or waiters poll |
//! | `arrival_gap` | how long after a waiter's request was first polled it counts as queued, for a locker that cannot say ([`Locker::queued`] is `None`) | scenarios wait for the locker's queued count to rise before releasing to a waiter or cancelling it, or, without a count, this long; the FIFO checker orders only waiters invoked further apart (the workload adds `prompt`) | a request takes longer to reach the service's queue (one-way latency, client-side batching) |
//! | `cancel_cleanup` | how long after its cancellation a cancelled acquire may still hold a grant; `None`: [`Timing::cancel_cleanup_bound`] is `min(tolerance, prompt)`, one clean-up request | the linearizability checker's withdrawal deadline | the service keeps a gone waiter queued until its wait bound and may grant it a whole lease (the trait's weaker promise); a long bound makes cancelled acquires concurrent with everything and the linearizability search slower — raise [`SuiteConfig::checker_budget`] or shorten the workload with it |
//!
//! The suite never sleeps to synchronize: a waiter counts as queued once its acquire has been
//! polled and its locker's [`Locker::queued`] count has risen — implement it if your client
//! knows when a request is queued; without it, `arrival_gap` is the only signal there is. It
//! does sleep where the story needs time to pass — a lease running out — so the checks' run
//! time grows with `base_ttl`.

// What the guide's links name; only rustdoc needs them.
#[cfg(doc)]
use crate::{
    Backend, CHECKS, Capabilities, CheckInfo, Claim, FencingToken, Lease, LeaseRequest, LockError, Locker, OwnerToken,
    SuiteConfig, Timing, run_suite, run_suite_observed,
};

#[cfg(test)]
mod tests {
    use lockcheck_model::spec::Property;

    use crate::{CHECKS, Capabilities, Claim, Timing};

    /// The guide's text: its `//!` lines.
    fn guide() -> String {
        include_str!("guide.rs").lines().filter_map(|line| line.strip_prefix("//!")).collect::<Vec<_>>().join("\n")
    }

    fn field_names(value: serde_json::Value) -> Vec<String> {
        value.as_object().expect("a struct serializes to an object").keys().cloned().collect()
    }

    /// A capability or time scale added without a line in the guide would leave authors
    /// guessing what it makes the suite check.
    #[test]
    fn the_guide_explains_every_capability_and_time_scale() {
        let guide = guide();
        let capabilities = field_names(serde_json::to_value(Capabilities::none()).expect("serializes"));
        let timing = field_names(serde_json::to_value(Timing::in_process()).expect("serializes"));
        assert!(capabilities.len() >= 8 && timing.len() >= 5);
        for field in capabilities.iter().chain(&timing) {
            assert!(guide.contains(&format!("| `{field}` |")), "the guide's tables have no row for `{field}`");
        }
    }

    /// Every claim a check can require is named in the guide's capabilities table.
    #[test]
    fn the_guide_names_every_claim_a_check_requires() {
        let guide = guide();
        let claims = CHECKS
            .iter()
            .filter_map(|check| check.requires)
            .chain(Property::ALL.into_iter().filter_map(Claim::for_property));
        for claim in claims {
            assert!(guide.contains(&format!("[`Claim::{claim:?}`]")), "the guide does not explain Claim::{claim:?}");
        }
    }
}
