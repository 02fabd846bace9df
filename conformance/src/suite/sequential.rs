//! The sequential model-based test: proptest-state-machine generates operation sequences
//! from the spec ([`LockSpec`]) as its `ReferenceStateMachine`, runs them against the backend
//! one at a time, and compares every answer with the spec's. A failure is shrunk by
//! proptest to a shortest sequence, which is rerun once more to record it as the
//! counterexample, its last operation the one that disagreed.
//!
//! Shrinking starts by dropping the steps the failing run never reached, counted by the
//! strategy's `seen` counter: the test must count every step it runs, as
//! proptest-state-machine's own `StateMachineTest` does. A test that does not count has run
//! "none", and the shrinker drops every step — a zero-step "counterexample" that explains
//! nothing.
//!
//! Leases here are long, so nothing expires mid-sequence: this test is about grants,
//! refusals, ownership and fencing, not time (the scenarios and the workload cover time).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lockcheck_history::checkers::Counterexample;
use lockcheck_impls::{Lease, LeaseRequest, Locker, OwnerToken};
use lockcheck_model::spec::{LeaseId, LockOp, LockRet, LockSpec, Property, Window};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use stateright::semantics::SequentialSpec;
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::{Ctx, Stop};
use crate::history::{Recorder, RecordingLocker};

const KEYS: usize = 2;
const CLIENTS: usize = 2;
/// Long enough that no lease of a sequence expires (µs in the spec, scaled for the backend).
const SPEC_TTL: u64 = 3_600_000_000;

/// One step of a sequence.
#[derive(Clone, Debug)]
enum Step {
    /// Client `client` try-acquires key `key`.
    TryAcquire { client: usize, key: usize },
    /// Release the lease of grant number `grant` (perhaps long released).
    Release { grant: usize },
    /// Refresh it.
    Refresh { grant: usize },
    /// Ask its remaining TTL.
    Remaining { grant: usize },
    /// A stranger releases key `key` with a token nobody was granted.
    ForgedRelease { key: usize },
}

/// The reference: the spec per key, and which key each grant so far was on.
#[derive(Clone, Debug)]
struct Model {
    keys: Vec<LockSpec>,
    grants: Vec<(usize, LeaseId)>,
    next_lease: u32,
}

impl Model {
    fn op(&self, step: &Step) -> (usize, LockOp) {
        let at = Window::at(0);
        match step {
            Step::TryAcquire { key, .. } => {
                (*key, LockOp::Acquire { lease: LeaseId(self.next_lease), ttl: SPEC_TTL, limit: 1, at })
            }
            Step::Release { grant } => {
                let (key, lease) = self.grants[*grant];
                (key, LockOp::Release { lease, at })
            }
            Step::Refresh { grant } => {
                let (key, lease) = self.grants[*grant];
                (key, LockOp::Refresh { lease, ttl: SPEC_TTL, at })
            }
            Step::Remaining { grant } => {
                let (key, lease) = self.grants[*grant];
                (key, LockOp::Remaining { lease, at })
            }
            Step::ForgedRelease { key } => (*key, LockOp::Release { lease: LeaseId(u32::MAX), at }),
        }
    }
}

struct LockModel;

impl ReferenceStateMachine for LockModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(fresh_model()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let acquire = (0..CLIENTS, 0..KEYS).prop_map(|(client, key)| Step::TryAcquire { client, key });
        let forged = (0..KEYS).prop_map(|key| Step::ForgedRelease { key });
        if state.grants.is_empty() {
            return prop_oneof![4 => acquire, 1 => forged].boxed();
        }
        let grants = state.grants.len();
        prop_oneof![
            4 => acquire,
            3 => (0..grants).prop_map(|grant| Step::Release { grant }),
            1 => (0..grants).prop_map(|grant| Step::Refresh { grant }),
            1 => (0..grants).prop_map(|grant| Step::Remaining { grant }),
            1 => forged,
        ]
        .boxed()
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        match step {
            Step::Release { grant } | Step::Refresh { grant } | Step::Remaining { grant } => {
                *grant < state.grants.len()
            }
            _ => true,
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        let (key, op) = state.op(step);
        if let LockRet::Granted { .. } = state.keys[key].invoke(&op) {
            state.grants.push((key, LeaseId(state.next_lease)));
            state.next_lease += 1;
        }
        state
    }
}

/// The answer stripped of what the spec leaves open (the fencing token's value, the exact
/// remaining time).
fn shape(ret: &LockRet) -> String {
    match ret {
        LockRet::Granted { .. } => "granted".into(),
        LockRet::NotGranted => "not granted".into(),
        LockRet::Released(held) => format!("released (held: {held})"),
        LockRet::Refreshed(held) => format!("refreshed (held: {held})"),
        LockRet::Remaining(left) => format!("remaining (held: {})", left.is_some()),
        LockRet::Withdrawn => "withdrawn".into(),
        LockRet::SessionEnded => "session ended".into(),
    }
}

/// A step in words, e.g. `a release of key 0 with a forged token`.
fn describe(step: &Step) -> String {
    match step {
        Step::TryAcquire { client, key } => format!("client {client}'s try_acquire of key {key}"),
        Step::Release { grant } => format!("the release of grant {}", grant + 1),
        Step::Refresh { grant } => format!("the refresh of grant {}", grant + 1),
        Step::Remaining { grant } => format!("remaining_ttl of grant {}", grant + 1),
        Step::ForgedRelease { key } => format!("a release of key {key} with a forged token"),
    }
}

/// Runs `steps` against the backend; `Err((property, what))` at the first disagreement.
/// Fencing tokens must increase only where the backend claims fencing (`fencing_claimed`).
/// `seen` counts the steps run (before each), for the shrinker.
async fn execute(
    clients: &[RecordingLocker],
    namespace: &str,
    ttl: Duration,
    fencing_claimed: bool,
    steps: &[Step],
    seen: Option<&AtomicUsize>,
) -> Result<(), (Property, String)> {
    let mut model = fresh_model();
    let keys: Vec<String> = (0..KEYS).map(|key| format!("{namespace}-k{key}")).collect();
    let mut leases: Vec<Lease> = Vec::new();
    let mut last_fence: Vec<Option<u64>> = vec![None; KEYS];
    let backend_error =
        |error: lockcheck_impls::LockError| (Property::MutualExclusion, format!("backend error: {error}"));
    for (number, step) in steps.iter().enumerate() {
        if let Some(seen) = seen {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        let (key, op) = model.op(step);
        let expected = model.keys[key].clone().invoke(&op);
        let answer: Result<(LockRet, Option<Lease>), lockcheck_impls::LockError> = async {
            Ok(match step {
                Step::TryAcquire { client, key } => {
                    let lease = clients[*client].try_acquire(&LeaseRequest::lock(&keys[*key], ttl)).await?;
                    match lease {
                        Some(lease) => (LockRet::Granted { fence: lease.fence().0 }, Some(lease)),
                        None => (LockRet::NotGranted, None),
                    }
                }
                Step::Release { grant } => (LockRet::Released(clients[0].release(&leases[*grant]).await?), None),
                Step::Refresh { grant } => {
                    let renewed = clients[0].refresh(&leases[*grant], ttl).await?;
                    (LockRet::Refreshed(renewed.is_some()), None)
                }
                Step::Remaining { grant } => {
                    let left = clients[0].remaining_ttl(&leases[*grant]).await?;
                    (LockRet::Remaining(left.map(|left| left.as_micros() as u64)), None)
                }
                Step::ForgedRelease { key } => {
                    let forged = Lease::new(
                        keys[*key].as_str(),
                        OwnerToken::random(),
                        lockcheck_impls::FencingToken(0),
                        ttl,
                        Instant::now(),
                        1,
                    );
                    (LockRet::Released(clients[1].release(&forged).await?), None)
                }
            })
        }
        .await;
        let (actual, granted) = match answer {
            // An operation the backend does not serve (a driver without `remaining_ttl`)
            // changes nothing. A question is skipped; a step that changes the state in the
            // spec (a release, a refresh) ends the case here, since the steps generated after
            // it count on its effect (a release's freed key granted again, and numbered).
            Err(lockcheck_impls::LockError::Unsupported { .. }) if matches!(step, Step::Remaining { .. }) => continue,
            Err(lockcheck_impls::LockError::Unsupported { .. }) => return Ok(()),
            answer => answer.map_err(backend_error)?,
        };
        if shape(&actual) != shape(&expected) {
            // The spec's label for the answer (tokens judged apart, below: the model's own
            // tokens are not the backend's).
            let property = model.keys[key].clone().with_fencing_claimed(false).explain(&op, &actual).0;
            return Err((
                property,
                format!(
                    "step {} of {}, {}, answered {}; the spec says {}",
                    number + 1,
                    steps.len(),
                    describe(step),
                    shape(&actual),
                    shape(&expected)
                ),
            ));
        }
        if let (Some(lease), LockRet::Granted { fence }) = (granted, &actual) {
            if fencing_claimed && last_fence[key].is_some_and(|last| *fence <= last) {
                return Err((
                    Property::Fencing,
                    format!(
                        "step {} of {}, {}, was granted fencing token {fence} after token {}",
                        number + 1,
                        steps.len(),
                        describe(step),
                        last_fence[key].unwrap_or(0)
                    ),
                ));
            }
            last_fence[key] = Some(*fence);
            leases.push(lease);
        }
        model = LockModel::apply(model, step);
    }
    // Leave nothing held behind for the next case.
    for lease in &leases {
        let _ = clients[0].release(lease).await;
    }
    Ok(())
}

fn fresh_model() -> Model {
    Model { keys: vec![LockSpec::with_tolerance(0); KEYS], grants: Vec::new(), next_lease: 1 }
}

pub(crate) async fn run(ctx: &mut Ctx<'_>) -> Result<Vec<String>, Stop> {
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(ctx.client().await?);
    }
    let ttl = ctx.timing.long_ttl();
    let namespace = ctx.key("seq");
    let seed = ctx.seed();
    let cases = ctx.config.cases.max(1) * 16;
    let fencing_claimed = ctx.capabilities.fencing;
    let handle = Handle::current();
    let (runner_clients, runner_namespace) = (clients.clone(), namespace.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let config = Config { cases, failure_persistence: None, max_shrink_iters: 512, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
        let case = std::sync::atomic::AtomicU32::new(0);
        runner.run(&LockModel::sequential_strategy(1..24), |(_, steps, seen)| {
            let case = case.fetch_add(1, Ordering::Relaxed);
            let namespace = format!("{runner_namespace}{case}");
            handle
                .block_on(execute(&runner_clients, &namespace, ttl, fencing_claimed, &steps, seen.as_deref()))
                .map_err(|(property, what)| TestCaseError::fail(format!("{}|{what}", property.code())))
        })
    })
    .await
    .map_err(|error| Stop::Error(format!("the proptest runner failed: {error}")))?;
    match outcome {
        Ok(()) => Ok(vec![format!("{cases} sequences (seed {})", ctx.config.seed)]),
        Err(TestError::Abort(reason)) => Err(Stop::Error(format!("proptest aborted: {reason}"))),
        Err(TestError::Fail(reason, (_, steps, _))) => {
            // Rerun the shrunk sequence alone to record it as the counterexample.
            let recorder = Recorder::new();
            let mut replay = Vec::new();
            for (id, client) in clients.iter().enumerate() {
                let inner: std::sync::Arc<dyn Locker> = std::sync::Arc::new(client.clone());
                replay.push(recorder.client(id as u32, inner));
            }
            let replayed = execute(&replay, &format!("{namespace}-shrunk"), ttl, fencing_claimed, &steps, None).await;
            let operations = recorder.history().operations;
            let counterexample = match replayed {
                // The replay stopped right after the step that disagreed: the last operation.
                Err((property, what)) => {
                    let last = operations.len().checked_sub(1);
                    let counterexample =
                        Counterexample::new(property, format!("shrunk to {} steps: {what}", steps.len()), operations);
                    match last {
                        Some(last) => counterexample.blaming(last),
                        None => counterexample,
                    }
                }
                Ok(()) => {
                    let reason = reason.to_string();
                    let (code, what) = reason.split_once('|').unwrap_or(("P1", &reason));
                    let property =
                        Property::ALL.into_iter().find(|p| p.code() == code).unwrap_or(Property::MutualExclusion);
                    let summary = format!(
                        "shrunk to {} steps: {what} (the shrunk sequence passed when replayed: the failure depends on timing)",
                        steps.len()
                    );
                    Counterexample::new(property, summary, operations)
                }
            };
            Err(Stop::Violated(counterexample))
        }
    }
}
