//! Concurrent random workloads: several clients, several keys, mixed operations with think
//! times, waits, refreshes and cancellations, all recorded and then checked by every history
//! checker (linearizability, real-time exclusion, fencing order, bounded waits, FIFO where
//! claimed).
//!
//! Each case's operation plan comes from the suite seed: rerunning with the printed seed
//! replays the same plan (the interleaving real concurrency produces cannot be replayed; the
//! checkers' counterexamples are shrunk from the recorded history instead).

use std::time::Duration;

use lockcheck_history::checkers::Verdict;
use lockcheck_impls::{Lease, LeaseRequest, LockError, Locker};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{sleep, timeout};

use super::{Ctx, Stop, check_recorded};
use crate::history::{KeptHistory, RecordingLocker};

pub(crate) async fn run(ctx: &mut Ctx<'_>) -> Result<Vec<String>, Stop> {
    let seed = ctx.seed();
    for case in 0..ctx.config.cases {
        let mut requests = vec![LeaseRequest::lock(ctx.key(&format!("c{case}-lock")), ctx.timing.base_ttl)];
        if ctx.capabilities.semaphores {
            requests.push(LeaseRequest::semaphore(ctx.key(&format!("c{case}-sem")), 2, ctx.timing.base_ttl));
        } else {
            requests.push(LeaseRequest::lock(ctx.key(&format!("c{case}-lock2")), ctx.timing.base_ttl));
        }
        let mut tasks = Vec::new();
        for client in 0..ctx.config.clients {
            let locker = ctx.client().await?;
            let rng = StdRng::seed_from_u64(seed ^ (u64::from(case) << 32) ^ u64::from(client));
            let plan = Plan { requests: requests.clone(), ops: ctx.config.ops_per_client, base: ctx.timing.base_ttl };
            tasks.push(tokio::spawn(plan.run(locker, rng)));
        }
        for task in tasks {
            task.await.map_err(|error| Stop::Error(format!("workload client failed: {error}")))??;
        }
    }
    let history = ctx.recorder.history();
    let timing = checked_with(ctx.timing);
    let mut verdict = Verdict::Valid;
    for (_, found) in check_recorded(&history, &timing, &ctx.capabilities, ctx.config.checker_budget) {
        verdict = verdict.and(found);
    }
    if !verdict.is_valid() {
        let kept = KeptHistory { timing: Some(timing), capabilities: Some(ctx.capabilities), history: history.clone() };
        if let Some(dir) = crate::history::history_dir() {
            crate::history::keep_history(&kept, &dir, &format!("random_workload-{}", ctx.config.seed));
        }
    }
    match verdict {
        Verdict::Valid => Ok(vec![format!(
            "{} cases × {} clients × {} operations, {} recorded (seed {})",
            ctx.config.cases,
            ctx.config.clients,
            ctx.config.ops_per_client,
            history.operations.len(),
            ctx.config.seed
        )]),
        Verdict::Invalid { mut counterexample } => {
            counterexample.summary = format!("{} (seed {})", counterexample.summary, ctx.config.seed);
            Err(Stop::Violated(*counterexample))
        }
        Verdict::Unknown { reason } => Err(Stop::Error(reason)),
    }
}

/// The time scales a workload's history is checked with: the suite's, with FIFO judged only
/// between arrivals a hand-off bound further apart, since scheduling noise on a busy machine
/// can delay a request between being recorded and reaching the backend. `lockcheck check
/// --recheck` re-checks a workload's counterexample with the same.
pub fn checked_with(timing: crate::Timing) -> crate::Timing {
    crate::Timing { arrival_gap: timing.arrival_gap + timing.prompt, ..timing }
}

/// One client's part of a case.
pub(crate) struct Plan {
    pub(crate) requests: Vec<LeaseRequest>,
    pub(crate) ops: u32,
    pub(crate) base: Duration,
}

impl Plan {
    pub(crate) async fn run(self, locker: RecordingLocker, mut rng: StdRng) -> Result<(), Stop> {
        let mut held: Vec<Lease> = Vec::new();
        // Leases the client stopped counting on without a release: lost, or of unknown fate.
        let mut forgotten: Vec<Lease> = Vec::new();
        for _ in 0..self.ops {
            let request = &self.requests[rng.random_range(0..self.requests.len())];
            let ttl = self.base.mul_f64(rng.random_range(0.5..2.0));
            let request = LeaseRequest::semaphore(request.key(), request.limit(), ttl);
            let roll = rng.random_range(0..100);
            match roll {
                0..=29 if !held.is_empty() => {
                    let lease = held.swap_remove(rng.random_range(0..held.len()));
                    settled(locker.release(&lease).await)?;
                }
                30..=39 if !held.is_empty() => {
                    let at = rng.random_range(0..held.len());
                    let ttl = self.base.mul_f64(rng.random_range(0.5..2.0));
                    match locker.refresh(&held[at], ttl).await {
                        // Not served (a library without refresh): the lease is held as before.
                        Err(LockError::Unsupported { .. }) => {}
                        result => match settled(result)? {
                            Some(Some(renewed)) => held[at] = renewed,
                            // Lost, or unknown: the client stops counting on it.
                            Some(None) | None => forgotten.push(held.swap_remove(at)),
                        },
                    }
                }
                40..=47 if !held.is_empty() => {
                    let at = rng.random_range(0..held.len());
                    match locker.remaining_ttl(&held[at]).await {
                        Err(LockError::Unsupported { .. }) => {}
                        result => {
                            if settled(result)?.is_none_or(|left| left.is_none()) {
                                forgotten.push(held.swap_remove(at));
                            }
                        }
                    }
                }
                48..=69 => {
                    if let Some(Some(lease)) = settled(locker.try_acquire(&request).await)? {
                        held.push(lease);
                    }
                }
                70..=89 => {
                    let wait = self.base.mul_f64(rng.random_range(0.0..1.5));
                    match locker.acquire(&request, wait).await {
                        Ok(lease) => held.push(lease),
                        Err(error) if error.is_timeout() => {}
                        Err(error) => settled::<()>(Err(error)).map(drop)?,
                    }
                }
                _ => {
                    // An acquire its caller gives up on: the future is dropped mid-wait. Its own
                    // bound is short, because a server may keep a departed waiter queued (and
                    // grant it) until that bound (the clean-up bound of such a backend covers it).
                    let patience = self.base.mul_f64(rng.random_range(0.0..0.5));
                    if let Ok(result) = timeout(patience, locker.acquire(&request, self.base.mul_f64(1.5))).await {
                        match result {
                            Ok(lease) => held.push(lease),
                            Err(error) if error.is_timeout() => {}
                            Err(error) => settled::<()>(Err(error)).map(drop)?,
                        }
                    }
                }
            }
            if rng.random_bool(0.5) {
                sleep(self.base.mul_f64(rng.random_range(0.0..0.1))).await;
            }
        }
        for lease in held {
            settled(locker.release(&lease).await)?;
        }
        // The client is dropped next, and its session ends with it: a backend that binds
        // leases to sessions may free a forgotten lease from then on.
        if !forgotten.is_empty() {
            locker.session_ended(&forgotten, true);
        }
        Ok(())
    }
}

/// An operation's result for the client's next step: `Some` when it answered, `None` when its
/// outcome is unknown (a dropped connection mid-request). The history records such an
/// operation as indeterminate and the checkers judge every way it could have gone, as Jepsen
/// does, so the client carries on instead of ending the workload as undecided. Errors that
/// say nothing happened for a reason the workload did not cause still stop it.
fn settled<T>(result: Result<T, LockError>) -> Result<Option<T>, Stop> {
    match result {
        Ok(value) => Ok(Some(value)),
        // A request the backend does not serve (a driver without `remaining_ttl`, a library
        // that refuses a wait longer than its lease) did nothing: the client carries on as
        // after an unknown outcome, counting on nothing it asked for.
        Err(LockError::Unsupported { .. }) => Ok(None),
        Err(error) if !error.definitely_not_applied() => Ok(None),
        Err(error) => Err(error.into()),
    }
}
