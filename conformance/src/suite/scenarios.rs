//! The scenarios: fixed stories, each about one property, including every behaviour the
//! original Go lockers' tests checked (go-warp's `TestTryLock_basic`,
//! `TestRelease_ownershipCheck`, `TestAcquire_waits`, `TestTTL_expiry`,
//! `TestInMemoryAcquireNoLostWakeup`, `TestInMemoryAcquireTimeout`, `TestNATSAcquireTimeout`).
//!
//! Scenarios never sleep to synchronize: a waiter counts as queued once its acquire future
//! has been polled and the locker counts it queued ([`Locker::queued`]); only for a locker that
//! cannot tell does the backend's `arrival_gap` stand in. They do sleep where the story needs
//! time to pass — a lease running out, a holder paused past its TTL.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use lockcheck_history::checkers::fencing::FencedResource;
use lockcheck_impls::{FencingToken, Lease, LeaseRequest, LockError, Locker, OwnerToken, Queued};
use lockcheck_model::spec::Property;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

use super::{Ctx, Stop};
use crate::history::RecordingLocker;

type Notes = Vec<String>;

pub(crate) async fn run(name: &str, ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    match name {
        "double_try_acquire_fails" => double_try_acquire_fails(ctx).await,
        "release_by_non_holder_is_noop" => release_by_non_holder_is_noop(ctx).await,
        "acquire_waits_then_wins" => acquire_waits_then_wins(ctx).await,
        "ttl_expiry_frees_lock" => ttl_expiry_frees_lock(ctx).await,
        "lease_lasts_its_ttl" => lease_lasts_its_ttl(ctx).await,
        "acquire_honours_wait_bound" => acquire_honours_wait_bound(ctx).await,
        "wait_bound_under_contention" => wait_bound_under_contention(ctx).await,
        "no_lost_wakeup" => no_lost_wakeup(ctx).await,
        "next_holder_survives_old_ttl" => next_holder_survives_old_ttl(ctx).await,
        "refresh_extends" => refresh_extends(ctx).await,
        "refresh_after_loss_reports_loss" => refresh_after_loss_reports_loss(ctx).await,
        "remaining_ttl_counts_down" => remaining_ttl_counts_down(ctx).await,
        "racing_try_acquires" => racing_try_acquires(ctx).await,
        "fencing_increases" => fencing_increases(ctx).await,
        "cancelled_acquire_leaves_nothing" => cancelled_acquire_leaves_nothing(ctx).await,
        "fifo_hand_off" => fifo_hand_off(ctx).await,
        "hand_off_is_pushed" => hand_off_is_pushed(ctx).await,
        "semaphore_admits_limit" => semaphore_admits_limit(ctx).await,
        "semaphore_waiters" => semaphore_waiters(ctx).await,
        "crashed_holder_frees_within_ttl" => crashed_holder_frees_within_ttl(ctx).await,
        "session_cut_under_holder" => session_cut_under_holder(ctx).await,
        "stale_holder_fenced_off" => stale_holder_fenced_off(ctx).await,
        other => Err(Stop::Error(format!("no scenario named {other}"))),
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.1}ms", duration.as_secs_f64() * 1e3)
}

/// Acquires that must succeed: a refusal of a key the scenario knows is free is an expiry
/// (P4) violation unless the caller says otherwise.
async fn must_try(ctx: &Ctx<'_>, client: &RecordingLocker, request: &LeaseRequest, why: &str) -> Result<Lease, Stop> {
    match client.try_acquire(request).await? {
        Some(lease) => Ok(lease),
        None => Err(ctx.violated_as(Property::Expiry, format!("try_acquire was refused although {why}"))),
    }
}

/// `client`'s queued count now, to tell when an acquire it is about to start is queued.
fn queued_now(client: &RecordingLocker) -> Option<(Queued, u64)> {
    client.queued().map(|queued| {
        let now = queued.count();
        (queued, now)
    })
}

/// Waits until an acquire started after `queued_now` is queued at the backend: the client's
/// queued count ([`Locker::queued`]) rose past what it was. A backend that cannot tell is given
/// its arrival gap instead. The count is the locker's, and clients of one in-process locker
/// share it: another waiter leaving the queue at the same moment can hide the rise, so the wait
/// is bounded too, by a few arrival gaps and hand-off bounds.
async fn until_queued(ctx: &Ctx<'_>, queued: Option<(Queued, u64)>) {
    match queued {
        Some((mut queued, before)) => {
            let bound = (ctx.timing.arrival_gap + ctx.timing.prompt) * 4;
            let _ = timeout(bound, queued.until_at_least(before + 1)).await;
        }
        None => sleep(ctx.timing.arrival_gap).await,
    }
}

/// An acquire running in its own task, already queued at the backend when this returns: its
/// future has been polled once and the backend counts it queued (or, for a backend that cannot
/// tell, its arrival gap has passed).
struct Waiter {
    task: JoinHandle<(Result<Lease, LockError>, Instant)>,
}

impl Waiter {
    async fn start(ctx: &Ctx<'_>, client: &RecordingLocker, request: &LeaseRequest, wait: Duration) -> Self {
        Self::start_then(ctx, client, request, wait, |_| async {}).await
    }

    /// Like [`Waiter::start`]; `then` runs in the waiter's task right after a grant.
    async fn start_then<F, Fut>(
        ctx: &Ctx<'_>,
        client: &RecordingLocker,
        request: &LeaseRequest,
        wait: Duration,
        then: F,
    ) -> Self
    where
        F: FnOnce(Lease) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let queued = queued_now(client);
        let (client, request) = (client.clone(), request.clone());
        let mut acquire = Box::pin(async move {
            let result = client.acquire(&request, wait).await;
            let at = Instant::now();
            if let Ok(lease) = &result {
                then(lease.clone()).await;
            }
            (result, at)
        });
        // The first poll happens here, in the caller's task, so the request is on its way (or
        // queued, in process) before this returns and before anything the caller does next.
        let task = match std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await {
            Poll::Ready(outcome) => return Waiter { task: tokio::spawn(async move { outcome }) },
            Poll::Pending => tokio::spawn(acquire),
        };
        until_queued(ctx, queued).await;
        Waiter { task }
    }

    async fn outcome(self) -> Result<(Result<Lease, LockError>, Instant), Stop> {
        self.task.await.map_err(|error| Stop::Error(format!("waiter task failed: {error}")))
    }
}

async fn double_try_acquire_fails(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let request = LeaseRequest::lock(ctx.key("k"), ctx.timing.long_ttl());
    let lease = must_try(ctx, &a, &request, "the key was never locked").await?;
    if b.try_acquire(&request).await?.is_some() {
        return Err(ctx.violated("a second client's try_acquire succeeded while the lock was held"));
    }
    if a.try_acquire(&request).await?.is_some() {
        return Err(ctx.violated("the holder's own second try_acquire succeeded: locks are not reentrant"));
    }
    if !a.release(&lease).await? {
        return Err(ctx.violated_as(Property::Ownership, "release of a held lease said it was not held"));
    }
    let again = must_try(ctx, &b, &request, "its holder released it").await?;
    b.release(&again).await?;
    Ok(vec![])
}

async fn release_by_non_holder_is_noop(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let request = LeaseRequest::lock(ctx.key("k"), ctx.timing.long_ttl());
    let first = must_try(ctx, &a, &request, "the key was never locked").await?;
    // A lease with the right key and fence but a token nobody was granted.
    let forged = Lease::new(request.key(), OwnerToken::random(), first.fence(), request.ttl(), Instant::now(), 1);
    if b.release(&forged).await? {
        return Err(ctx.violated("a release with a forged owner token said it released the lock"));
    }
    if b.refresh(&forged, request.ttl()).await?.is_some() {
        return Err(ctx.violated("a refresh with a forged owner token said it refreshed the lock"));
    }
    if b.try_acquire(&request).await?.is_some() {
        return Err(ctx.violated("after a stranger's release, a stranger could take the lock"));
    }
    // A stale lease: released, then the key went to someone else.
    a.release(&first).await?;
    let second = must_try(ctx, &b, &request, "its holder released it").await?;
    if a.release(&first).await? {
        return Err(ctx.violated("releasing an already released lease said it was held"));
    }
    if a.try_acquire(&request).await?.is_some() {
        return Err(ctx.violated("a stale lease's release freed the next holder's lock"));
    }
    if !b.release(&second).await? {
        return Err(ctx.violated("the holder's release said its lease was not held"));
    }
    Ok(vec![])
}

async fn acquire_waits_then_wins(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let request = LeaseRequest::lock(ctx.key("k"), ctx.timing.long_ttl());
    let held = must_try(ctx, &a, &request, "the key was never locked").await?;
    let wait = ctx.timing.prompt * 20;
    let waiter = Waiter::start_then(ctx, &b, &request, wait, {
        let b = b.clone();
        move |lease| async move {
            let _ = b.release(&lease).await;
        }
    })
    .await;
    if waiter.task.is_finished() {
        return Err(ctx.violated_as(Property::MutualExclusion, "acquire returned while the lock was held"));
    }
    a.release(&held).await?;
    let released = Instant::now();
    let (result, at) = waiter.outcome().await?;
    match result {
        Ok(_) if at.duration_since(released) <= ctx.timing.prompt => {
            Ok(vec![format!("hand-off took {}", ms(at.duration_since(released)))])
        }
        Ok(_) => Err(ctx.violated(format!(
            "the waiter was granted {} after the release; the bound is {}",
            ms(at.duration_since(released)),
            ms(ctx.timing.prompt)
        ))),
        Err(error) if error.is_timeout() => {
            Err(ctx.violated(format!("the waiter was never woken after the release; it timed out after {}", ms(wait))))
        }
        Err(error) => Err(error.into()),
    }
}

async fn ttl_expiry_frees_lock(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b, c) = (ctx.client().await?, ctx.client().await?, ctx.client().await?);
    let ttl = ctx.timing.base_ttl;
    let request = LeaseRequest::lock(ctx.key("k"), ttl);
    // Try-acquire after the lease ran out.
    must_try(ctx, &a, &request, "the key was never locked").await?;
    sleep(ttl + ctx.timing.tolerance * 2).await;
    let second = must_try(ctx, &b, &request, "the previous lease had expired").await?;
    // A waiter on an expiring lease is granted when it expires, without anyone releasing.
    let wait = ttl * 4 + ctx.timing.prompt * 4;
    let waiter = Waiter::start(ctx, &c, &request, wait).await;
    let (result, at) = waiter.outcome().await?;
    let expiry = second.expires_at();
    match result {
        Ok(lease) => {
            if at + ctx.timing.tolerance < expiry {
                return Err(ctx.violated_as(
                    Property::MutualExclusion,
                    format!("a waiter was granted {} before the holder's lease ended", ms(expiry - at)),
                ));
            }
            let late = at.saturating_duration_since(expiry);
            if late > ctx.timing.prompt + ctx.timing.tolerance {
                return Err(ctx.violated(format!(
                    "a waiter was granted {} after the holder's lease ended; the bound is {}",
                    ms(late),
                    ms(ctx.timing.prompt + ctx.timing.tolerance)
                )));
            }
            c.release(&lease).await?;
            Ok(vec![])
        }
        Err(error) if error.is_timeout() => {
            Err(ctx.violated(format!("the holder's lease ended but a waiter was not granted within {}", ms(wait))))
        }
        Err(error) => Err(error.into()),
    }
}

async fn acquire_honours_wait_bound(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let request = LeaseRequest::lock(ctx.key("k"), ctx.timing.long_ttl());
    let held = must_try(ctx, &a, &request, "the key was never locked").await?;
    let wait = ctx.timing.prompt;
    let started = Instant::now();
    let guard = wait + ctx.timing.prompt * 3;
    let outcome = timeout(guard, b.acquire(&request, wait)).await;
    let took = started.elapsed();
    a.release(&held).await?;
    match outcome {
        Err(_) => {
            Err(ctx.violated(format!("acquire with a {} wait bound was still waiting after {}", ms(wait), ms(guard))))
        }
        Ok(Ok(_)) => Err(ctx.violated_as(Property::MutualExclusion, "acquire was granted while the lock was held")),
        Ok(Err(error)) if error.is_timeout() => {
            if took > wait + ctx.timing.prompt {
                Err(ctx.violated(format!("acquire with a {} wait bound returned after {}", ms(wait), ms(took))))
            } else if took + ctx.timing.tolerance < wait {
                Err(ctx.violated(format!("acquire with a {} wait bound gave up after only {}", ms(wait), ms(took))))
            } else {
                Ok(vec![])
            }
        }
        Ok(Err(error)) => Err(error.into()),
    }
}

/// Probes a lease's end from another client every few milliseconds: a grant before the lease
/// could have ended (counted from the holder's invocation, a lower bound of the grant) by more
/// than the early tolerance is a second holder. Three leases, so one stalled probe does not
/// hide an early end.
async fn lease_lasts_its_ttl(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    if ctx.capabilities.no_ttl {
        return lease_lasts_until_released(ctx).await;
    }
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let ttl = ctx.timing.boundary_ttl();
    let early = ctx.timing.early_tolerance();
    let step = (ttl / 200).max(Duration::from_micros(500));
    let mut handed_over = Vec::new();
    for round in 0..3 {
        let request = LeaseRequest::lock(ctx.key(&format!("k{round}")), ttl);
        let invoked = Instant::now();
        let held = must_try(ctx, &a, &request, "the key was never locked").await?;
        // The backend counts the lease from its grant, which came after `invoked`.
        let ends = invoked + held.ttl();
        let give_up = ends + ctx.timing.tolerance + ctx.timing.prompt;
        sleep_until(invoked + held.ttl().mul_f64(0.85)).await;
        loop {
            if let Some(next) = b.try_acquire(&request).await? {
                let granted = Instant::now();
                b.release(&next).await?;
                if granted + early < ends {
                    return Err(ctx.violated_between(
                        Property::MutualExclusion,
                        format!(
                            "a lease of {} was handed to another client {} before it could have ended (the early tolerance is {})",
                            ms(held.ttl()),
                            ms(ends - granted),
                            ms(early)
                        ),
                        &[&held, &next],
                    ));
                }
                handed_over.push(granted.saturating_duration_since(ends));
                break;
            }
            if Instant::now() > give_up {
                return Err(ctx.violated_as(
                    Property::Expiry,
                    format!(
                        "a lease of {} still blocked try_acquire {} after it ended",
                        ms(held.ttl()),
                        ms(give_up - ends)
                    ),
                ));
            }
            sleep(step).await;
        }
    }
    let latest = handed_over.iter().max().copied().unwrap_or_default();
    Ok(vec![format!(
        "{} leases probed every {} across their end; handed over at most {} after it (early tolerance {})",
        handed_over.len(),
        ms(step),
        ms(latest),
        ms(early)
    )])
}

/// A waiter whose wake-up is stolen: once it is queued, the holder releases and at once
/// takes the key again, then holds it past the waiter's bound. Where the backend hands a
/// released key to its waiter, the waiter simply wins; elsewhere it is woken, loses, waits
/// again — and must still return within the bound it was *first* given. Up to three rounds,
/// until the key was stolen once.
async fn wait_bound_under_contention(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, w) = (ctx.client().await?, ctx.client().await?);
    let wait = ctx.timing.prompt * 4;
    for round in 0..3 {
        let request = LeaseRequest::lock(ctx.key(&format!("k{round}")), ctx.timing.long_ttl());
        let held = must_try(ctx, &a, &request, "the key was never locked").await?;
        let started = Instant::now();
        let waiter = Waiter::start(ctx, &w, &request, wait).await;
        sleep(wait / 4).await;
        a.release(&held).await?;
        let Some(stolen) = a.try_acquire(&request).await? else {
            // The waiter had the key first: nothing was stolen this round.
            let (result, _) = waiter.outcome().await?;
            w.release(&result?).await?;
            continue;
        };
        let overdue = started + wait + ctx.timing.prompt * 2;
        let outcome = timeout_at(overdue, waiter.task).await;
        a.release(&stolen).await?;
        let (result, at) = match outcome {
            Ok(joined) => joined.map_err(|error| Stop::Error(format!("waiter task failed: {error}")))?,
            Err(_) => {
                return Err(ctx.violated(format!(
                    "an acquire with a {} wait bound was still waiting after {}, having been woken and beaten to the key",
                    ms(wait),
                    ms(overdue - started)
                )));
            }
        };
        let took = at.duration_since(started);
        return match result {
            Ok(lease) => {
                w.release(&lease).await?;
                Err(ctx.violated_as(
                    Property::MutualExclusion,
                    "a waiter was granted while the key was held by the client that took it back",
                ))
            }
            Err(error) if error.is_timeout() && took > wait + ctx.timing.prompt => Err(ctx.violated(format!(
                "an acquire with a {} wait bound returned after {}, having been woken and beaten to the key",
                ms(wait),
                ms(took)
            ))),
            Err(error) if error.is_timeout() => {
                Ok(vec![format!("round {}: the waiter lost the key and timed out at its bound", round + 1)])
            }
            Err(error) => Err(error.into()),
        };
    }
    Ok(vec!["the backend handed every released key to its waiter: no wake-up could be stolen".into()])
}

async fn no_lost_wakeup(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(ctx.seed());
    let wait = ctx.timing.prompt * 4;
    for iteration in 0..ctx.config.wakeup_iterations {
        let request = LeaseRequest::lock(ctx.key(&format!("k{iteration}")), ctx.timing.long_ttl());
        let held = must_try(ctx, &a, &request, "the key was never locked").await?;
        let waiter = {
            let (b, request) = (b.clone(), request.clone());
            tokio::spawn(async move { (b.acquire(&request, wait).await, Instant::now()) })
        };
        // Release racing the waiter's subscription. Where the race window lies depends on the
        // backend (a failed try's reply, a subscription's round trip), so spread the release
        // evenly over the first 2.5 ms — by yielding until the instant comes, since a timer
        // only has millisecond ticks and would skip the sub-millisecond windows of a fast
        // backend — so a window of any size in that span is hit in many iterations, not by luck.
        let release_at = Instant::now() + Duration::from_micros(rng.random_range(0..2500));
        while Instant::now() < release_at {
            tokio::task::yield_now().await;
        }
        a.release(&held).await?;
        let released = Instant::now();
        let (result, at) = waiter.await.map_err(|error| Stop::Error(format!("waiter task failed: {error}")))?;
        match result {
            Ok(lease) => {
                b.release(&lease).await?;
                let late = at.saturating_duration_since(released);
                if late > ctx.timing.prompt {
                    return Err(ctx.violated(format!(
                        "iteration {iteration}: the waiter was granted {} after the release (bound {})",
                        ms(late),
                        ms(ctx.timing.prompt)
                    )));
                }
            }
            Err(error) if error.is_timeout() => {
                return Err(ctx.violated(format!(
                    "iteration {iteration}: the release raced the waiter's subscription and the wake-up was lost; it timed out after {}",
                    ms(wait)
                )));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(vec![format!("{} racing iterations", ctx.config.wakeup_iterations)])
}

/// [`lease_lasts_its_ttl`] for a lock without TTL (`no_ttl`): a lease outlasts the TTL asked
/// for, and ends when it is released.
async fn lease_lasts_until_released(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let ttl = ctx.timing.boundary_ttl();
    let request = LeaseRequest::lock(ctx.key("k"), ttl);
    let held = must_try(ctx, &a, &request, "the key was never locked").await?;
    sleep(ttl + ctx.timing.tolerance * 2).await;
    if let Some(intruder) = b.try_acquire(&request).await? {
        b.release(&intruder).await?;
        return Err(ctx.violated_between(
            Property::MutualExclusion,
            format!(
                "a lease of a lock without TTL was handed to another client, unreleased, past the {} asked for",
                ms(ttl)
            ),
            &[&held, &intruder],
        ));
    }
    if !a.release(&held).await? {
        return Err(ctx.violated_as(Property::Ownership, "a lease of a lock without TTL was gone before its release"));
    }
    let next = must_try(ctx, &b, &request, "its holder released it").await?;
    b.release(&next).await?;
    Ok(vec![format!("a lock without TTL: its lease outlasted the {} asked for until released", ms(ttl))])
}

async fn next_holder_survives_old_ttl(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b, c) = (ctx.client().await?, ctx.client().await?, ctx.client().await?);
    let short = LeaseRequest::lock(ctx.key("k"), ctx.timing.base_ttl);
    let first = must_try(ctx, &a, &short, "the key was never locked").await?;
    a.release(&first).await?;
    let long = LeaseRequest::lock(short.key(), ctx.timing.long_ttl());
    let holder = must_try(ctx, &b, &long, "its holder released it").await?;
    sleep(ctx.timing.base_ttl + ctx.timing.tolerance * 2).await;
    if let Some(intruder) = c.try_acquire(&long).await? {
        c.release(&intruder).await?;
        return Err(ctx
            .violated("the first lease's TTL ran out after it was released, and the next holder's lock went with it"));
    }
    if !b.release(&holder).await? {
        return Err(
            ctx.violated_as(Property::Ownership, "the next holder's lease was gone at the first lease's old TTL")
        );
    }
    Ok(vec![])
}

async fn refresh_extends(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let ttl = ctx.timing.base_ttl;
    let request = LeaseRequest::lock(ctx.key("k"), ttl);
    let lease = must_try(ctx, &a, &request, "the key was never locked").await?;
    sleep(ttl / 3).await;
    let Some(renewed) = a.refresh(&lease, ttl * 5).await? else {
        return Err(ctx.violated_as(Property::Ownership, "refresh of a held lease said it was lost"));
    };
    sleep(ttl + ctx.timing.tolerance * 2).await;
    if b.try_acquire(&request).await?.is_some() {
        return Err(ctx.violated("the lock expired at its original TTL although it was refreshed"));
    }
    if a.remaining_ttl(&renewed).await?.is_none() {
        return Err(ctx.violated("a refreshed lease reported no remaining TTL before its new end"));
    }
    if !a.release(&renewed).await? {
        return Err(ctx.violated("a refreshed lease was not held before its new end"));
    }
    Ok(vec![])
}

async fn refresh_after_loss_reports_loss(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let ttl = ctx.timing.base_ttl;
    let request = LeaseRequest::lock(ctx.key("k"), ttl);
    let lost = must_try(ctx, &a, &request, "the key was never locked").await?;
    sleep(ttl + ctx.timing.tolerance * 2).await;
    let next = LeaseRequest::lock(request.key(), ctx.timing.long_ttl());
    let holder = must_try(ctx, &b, &next, "the previous lease had expired").await?;
    if a.refresh(&lost, ttl).await?.is_some() {
        return Err(ctx.violated("refresh of an expired lease said it was still held"));
    }
    if a.remaining_ttl(&lost).await?.is_some() {
        return Err(ctx.violated("an expired lease reported remaining TTL"));
    }
    if a.release(&lost).await? {
        return Err(ctx.violated("release of an expired lease said it was held"));
    }
    if a.try_acquire(&next).await?.is_some() {
        return Err(ctx.violated("the expired holder's calls freed the next holder's lock"));
    }
    if !b.release(&holder).await? {
        return Err(ctx.violated("the next holder's lease was gone after the expired holder's calls"));
    }
    Ok(vec![])
}

async fn remaining_ttl_counts_down(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let a = ctx.client().await?;
    let ttl = ctx.timing.base_ttl * 4;
    let request = LeaseRequest::lock(ctx.key("k"), ttl);
    let lease = must_try(ctx, &a, &request, "the key was never locked").await?;
    let Some(first) = a.remaining_ttl(&lease).await? else {
        return Err(ctx.violated("a lease just granted reported no remaining TTL"));
    };
    if first > ttl + ctx.timing.tolerance {
        return Err(ctx.violated(format!("remaining TTL {} exceeds the lease's TTL {}", ms(first), ms(ttl))));
    }
    let pause = ctx.timing.base_ttl;
    sleep(pause).await;
    let Some(second) = a.remaining_ttl(&lease).await? else {
        return Err(ctx.violated("a lease reported no remaining TTL before its end"));
    };
    if second + pause > first + ctx.timing.tolerance {
        return Err(ctx.violated(format!(
            "remaining TTL went from {} to {} over {}: it does not count down",
            ms(first),
            ms(second),
            ms(pause)
        )));
    }
    a.release(&lease).await?;
    Ok(vec![])
}

async fn racing_try_acquires(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(ctx.client().await?);
    }
    for round in 0..25 {
        let request = LeaseRequest::lock(ctx.key(&format!("k{round}")), ctx.timing.long_ttl());
        let tasks: Vec<_> = clients
            .iter()
            .map(|client| {
                let (client, request) = (client.clone(), request.clone());
                tokio::spawn(async move { client.try_acquire(&request).await.map(|lease| (client, lease)) })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (client, lease) = task.await.map_err(|error| Stop::Error(format!("client task failed: {error}")))??;
            if let Some(lease) = lease {
                winners.push((client, lease));
            }
        }
        if winners.len() > 1 {
            return Err(
                ctx.violated(format!("round {round}: {} racing clients all won the same free lock", winners.len()))
            );
        }
        if winners.is_empty() {
            return Err(ctx.violated_as(Property::Expiry, format!("round {round}: no racing client won a free lock")));
        }
        for (client, lease) in winners {
            client.release(&lease).await?;
        }
    }
    Ok(vec![])
}

async fn fencing_increases(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let request = LeaseRequest::lock(ctx.key("k"), ctx.timing.long_ttl());
    let other = LeaseRequest::lock(ctx.key("other"), ctx.timing.long_ttl());
    let mut last: Option<FencingToken> = None;
    for round in 0..10 {
        let client = if round % 2 == 0 { &a } else { &b };
        let lease = must_try(ctx, client, &request, "its holder released it").await?;
        if let Some(previous) = last
            && lease.fence() <= previous
        {
            return Err(ctx.violated(format!(
                "grant {round} of the key carries fencing token {} after token {previous}",
                lease.fence()
            )));
        }
        last = Some(lease.fence());
        client.release(&lease).await?;
        // Traffic on another key must not disturb this key's order.
        if let Some(unrelated) = b.try_acquire(&other).await? {
            b.release(&unrelated).await?;
        }
    }
    Ok(vec![])
}

async fn cancelled_acquire_leaves_nothing(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b, c) = (ctx.client().await?, ctx.client().await?, ctx.client().await?);
    let request = LeaseRequest::lock(ctx.key("k"), ctx.timing.long_ttl());
    let held = must_try(ctx, &a, &request, "the key was never locked").await?;
    {
        let queued = queued_now(&b);
        let mut acquire = pin!(b.acquire(&request, ctx.timing.long_ttl()));
        let first = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = first {
            result?;
            return Err(ctx.violated_as(Property::MutualExclusion, "acquire was granted while the lock was held"));
        }
        // Let the request reach the backend's queue, then free the lock so a grant races the
        // cancellation below.
        until_queued(ctx, queued).await;
        a.release(&held).await?;
        // The acquire future is dropped here, unpolled since the release.
    }
    let wait = ctx.timing.prompt * 2;
    match c.acquire(&request, wait).await {
        Ok(lease) => {
            c.release(&lease).await?;
            Ok(vec![])
        }
        Err(error) if error.is_timeout() => Err(ctx.violated(format!(
            "after an acquire was cancelled while the lock was handed to it, the key stayed locked: another acquire timed out after {}",
            ms(wait)
        ))),
        Err(error) => Err(error.into()),
    }
}

/// Four waiters queue behind a holder; the holder releases and a newcomer asks at once. The
/// waiters must be granted in arrival order and the newcomer last. Five rounds: whether a
/// barging newcomer beats the woken waiter is a race on another thread, lost now and then.
async fn fifo_hand_off(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let holder = ctx.client().await?;
    let mut queued = Vec::new();
    for _ in 0..5 {
        queued.push(ctx.client().await?);
    }
    let arrival: Vec<u32> = queued.iter().map(RecordingLocker::client_id).collect();
    for round in 0..5 {
        let request = LeaseRequest::lock(ctx.key(&format!("k{round}")), ctx.timing.long_ttl());
        let held = must_try(ctx, &holder, &request, "the key was never locked").await?;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters: Vec<Waiter> = Vec::new();
        for (n, client) in queued.iter().enumerate() {
            // The last one is the newcomer: it asks right after the release, first without
            // waiting, from the releasing task itself, so that it asks as early as it can. The
            // queued waiters may all have been granted (and released) by then, on another
            // thread; but while the newcomer holds the key no waiter can be granted, so the
            // waiters granted so far are exactly those granted before it.
            if n == queued.len() - 1 {
                holder.release(&held).await?;
                if let Some(barged) = client.try_acquire(&request).await? {
                    let granted_before = order.lock().expect("order").len();
                    client.release(&barged).await?;
                    if granted_before < n {
                        // The queued waiters finish (granted in turn), so the history is whole.
                        for waiter in waiters {
                            let _ = waiter.outcome().await?;
                        }
                        return Err(ctx.violated(format!(
                            "round {}: a newcomer's try_acquire right after the release was granted while \
                             {} of {n} queued waiters were still waiting",
                            round + 1,
                            n - granted_before
                        )));
                    }
                }
            }
            let (order, id, releaser) = (order.clone(), client.client_id(), client.clone());
            waiters.push(
                Waiter::start_then(ctx, client, &request, ctx.timing.prompt * 40, move |lease| async move {
                    order.lock().expect("order").push(id);
                    let _ = releaser.release(&lease).await;
                })
                .await,
            );
        }
        for waiter in waiters {
            let (result, _) = waiter.outcome().await?;
            result?;
        }
        let granted = order.lock().expect("order").clone();
        if granted != arrival {
            return Err(ctx.violated(format!(
                "round {}: waiters arrived as clients {arrival:?} (the last right after the release) but were granted as {granted:?}",
                round + 1
            )));
        }
    }
    Ok(vec![])
}

async fn semaphore_admits_limit(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(ctx.client().await?);
    }
    let request = LeaseRequest::semaphore(ctx.key("s"), 3, ctx.timing.long_ttl());
    let mut permits = Vec::new();
    for client in &clients[..3] {
        permits.push(must_try(ctx, client, &request, "the semaphore had a free permit").await?);
    }
    if clients[3].try_acquire(&request).await?.is_some() {
        return Err(ctx.violated("a fourth permit of a semaphore of limit 3 was granted"));
    }
    clients[0].release(&permits[0]).await?;
    let fourth = must_try(ctx, &clients[3], &request, "a permit was released").await?;
    clients[3].release(&fourth).await?;
    for (client, permit) in clients[1..3].iter().zip(&permits[1..]) {
        client.release(permit).await?;
    }
    Ok(vec![])
}

/// The median hand-off (release → the queued waiter's grant) against the median round trip
/// (a refused try-acquire), both measured here: a backend that wakes its waiters hands over
/// within a few round trips; one that polls takes half its polling period.
async fn hand_off_is_pushed(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let mut round_trips = Vec::new();
    let mut hand_offs = Vec::new();
    for round in 0..15 {
        let request = LeaseRequest::lock(ctx.key(&format!("k{round}")), ctx.timing.long_ttl());
        let held = must_try(ctx, &a, &request, "the key was never locked").await?;
        let sent = Instant::now();
        if b.try_acquire(&request).await?.is_some() {
            return Err(ctx.violated_as(Property::MutualExclusion, "try_acquire succeeded while the lock was held"));
        }
        round_trips.push(sent.elapsed());
        let waiter = Waiter::start(ctx, &b, &request, ctx.timing.prompt * 4).await;
        a.release(&held).await?;
        let released = Instant::now();
        let (result, at) = waiter.outcome().await?;
        match result {
            Ok(lease) => b.release(&lease).await?,
            Err(error) if error.is_timeout() => {
                return Err(ctx.violated(format!("round {round}: the waiter was never woken after the release")));
            }
            Err(error) => return Err(error.into()),
        };
        hand_offs.push(at.saturating_duration_since(released));
    }
    let median = |samples: &mut Vec<Duration>| {
        samples.sort_unstable();
        samples[samples.len() / 2]
    };
    let (round_trip, hand_off) = (median(&mut round_trips), median(&mut hand_offs));
    // A few round trips (release reply, wake-up, the waiter's grant) and scheduling noise.
    let bound = round_trip * 4 + Duration::from_millis(5);
    if hand_off > bound {
        return Err(ctx.violated(format!(
            "hand-offs took a median of {} against a median round trip of {} (bound {}): waiters are not woken, they poll",
            ms(hand_off),
            ms(round_trip),
            ms(bound)
        )));
    }
    Ok(vec![format!("median hand-off {} against a median round trip of {}", ms(hand_off), ms(round_trip))])
}

/// Acquires queued on a full semaphore of limit 2: each release admits exactly one of them
/// (the history checkers judge "exactly": a release that lets every waiter in shows as more
/// than two holders), and none is left waiting while a permit is free.
async fn semaphore_waiters(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (h1, h2) = (ctx.client().await?, ctx.client().await?);
    let request = LeaseRequest::semaphore(ctx.key("s"), 2, ctx.timing.long_ttl());
    let mut holders = vec![
        (h1.clone(), must_try(ctx, &h1, &request, "the semaphore had a free permit").await?),
        (h2.clone(), must_try(ctx, &h2, &request, "the semaphore had a free permit").await?),
    ];
    let (admitted_tx, mut admitted) = mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let client = ctx.client().await?;
        let (admitted_tx, holder) = (admitted_tx.clone(), client.clone());
        waiters.push(
            Waiter::start_then(ctx, &client, &request, ctx.timing.prompt * 40, move |lease| async move {
                let _ = admitted_tx.send((holder, lease));
            })
            .await,
        );
    }
    drop(admitted_tx);
    if waiters.iter().any(|waiter| waiter.task.is_finished()) {
        return Err(ctx.violated_as(Property::MutualExclusion, "a third permit of a semaphore of limit 2 was granted"));
    }
    // Free one permit at a time; each must admit a waiter promptly.
    for step in 0..3 {
        let (client, lease) = holders.remove(0);
        client.release(&lease).await?;
        match timeout(ctx.timing.prompt * 4, admitted.recv()).await {
            Ok(Some(admitted)) => holders.push(admitted),
            _ => {
                return Err(ctx.violated_as(
                    Property::NoLostWakeup,
                    format!("release {}: a permit was freed but no queued acquire was admitted", step + 1),
                ));
            }
        }
    }
    for waiter in waiters {
        waiter.outcome().await?.0?;
    }
    for (client, lease) in holders {
        client.release(&lease).await?;
    }
    Ok(vec![])
}

async fn crashed_holder_frees_within_ttl(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let ttl = ctx.timing.base_ttl;
    let request = LeaseRequest::lock(ctx.key("k"), ttl);
    let crashed_at;
    // The survivor connects before the crash: a client that is slow to open (a driver
    // process starting its interpreter) must not count as time the key was blocked.
    let survivor = ctx.client().await?;
    {
        let doomed = ctx.client().await?;
        let lease = must_try(ctx, &doomed, &request, "the key was never locked").await?;
        crashed_at = Instant::now();
        // The client vanishes without releasing: its connection (where there is one) closes,
        // which a backend that binds leases to sessions may take as a release.
        doomed.session_ended(&[lease], true);
    }
    // A grant later than this (counted from the crash, so the acquire's own bound is never
    // shorter) is a violation whatever happens next: waiting longer would only tell how much
    // longer, and would make catching a lock that never frees take four TTLs.
    let bound = ttl + ctx.timing.prompt + ctx.timing.tolerance;
    match survivor.acquire(&request, bound).await {
        Ok(lease) => {
            let took = crashed_at.elapsed();
            survivor.release(&lease).await?;
            if took > bound {
                return Err(ctx.violated(format!(
                    "the crashed holder's {} lease blocked the key for {}",
                    ms(ttl),
                    ms(took)
                )));
            }
            let freed = if took < ttl { "before its TTL: the backend ended it with the session" } else { "at its TTL" };
            Ok(vec![format!("the crashed holder's {} lease was freed {} after the crash, {freed}", ms(ttl), ms(took))])
        }
        Err(error) if error.is_timeout() => {
            Err(ctx.violated(format!("a crashed holder's {} lease still blocked the key after {}", ms(ttl), ms(bound))))
        }
        Err(error) => Err(error.into()),
    }
}

/// A live holder's session is cut (its connection breaks; nobody tells it). A backend that
/// binds leases to sessions may free the lease at once and grant it to the next client, while
/// the first still believes it holds the key: two holders, which the claim predicts and the
/// history checkers report as predicted. Only fencing keeps the stale holder's write out of a
/// protected resource, and that is checked where fencing is claimed.
async fn session_cut_under_holder(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let resource = FencedResource::new();
    let request = LeaseRequest::lock(ctx.key("k"), ctx.timing.long_ttl());
    let held = must_try(ctx, &a, &request, "the key was never locked").await?;
    if !resource.write(a.client_id(), request.key(), held.fence().0) {
        return Err(ctx.violated_as(Property::ResourceSafety, "the holder's first write was refused"));
    }
    if !ctx.cut_sessions().await {
        return Err(Stop::NotChecked(
            "this backend cannot cut a client's session (an embedded server can, through its proxy)".into(),
        ));
    }
    a.session_ended(std::slice::from_ref(&held), false);
    let next = match b.acquire(&request, ctx.timing.prompt * 8).await {
        Ok(next) => next,
        // The backend kept the lease for its holder: allowed, nothing more to see.
        Err(error) if error.is_timeout() => {
            return Ok(vec!["the backend kept the lease after its holder's session was cut".into()]);
        }
        Err(error) => return Err(error.into()),
    };
    let mut notes = vec![format!(
        "the lease went to another client while its holder still believed it had {} left",
        ms(held.locally_remaining())
    )];
    if ctx.capabilities.fencing {
        if !resource.write(b.client_id(), request.key(), next.fence().0) {
            return Err(ctx.violated_as(Property::ResourceSafety, "the new holder's write was refused"));
        }
        if resource.write(a.client_id(), request.key(), held.fence().0) {
            return Err(ctx.violated_as(
                Property::ResourceSafety,
                format!(
                    "the cut-off holder's stale write with token {} was accepted after the new holder wrote with {}",
                    held.fence(),
                    next.fence()
                ),
            ));
        }
        notes.push("its stale write was refused by the fenced resource".into());
    } else {
        notes.push("fencing is not claimed: nothing protects a resource from the cut-off holder".into());
    }
    // The new holder works a while: two believed holders, longer than any tolerance excuses.
    sleep(ctx.timing.tolerance * 2).await;
    b.release(&next).await?;
    Ok(notes)
}

async fn stale_holder_fenced_off(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (a, b) = (ctx.client().await?, ctx.client().await?);
    let resource = FencedResource::new();
    let ttl = ctx.timing.base_ttl;
    let request = LeaseRequest::lock(ctx.key("k"), ttl);
    let paused = must_try(ctx, &a, &request, "the key was never locked").await?;
    if !resource.write(a.client_id(), request.key(), paused.fence().0) {
        return Err(ctx.violated("the first holder's write was refused"));
    }
    // The holder pauses (GC, VM migration) past its lease; someone else takes the lock.
    sleep(ttl + ctx.timing.tolerance * 2).await;
    let next = b.acquire(&request, ctx.timing.prompt * 4).await?;
    if !resource.write(b.client_id(), request.key(), next.fence().0) {
        return Err(ctx.violated(format!(
            "the current holder's write with token {} was refused after the paused holder's token {}",
            next.fence(),
            paused.fence()
        )));
    }
    if resource.write(a.client_id(), request.key(), paused.fence().0) {
        return Err(ctx.violated(format!(
            "the paused holder's stale write with token {} was accepted after the current holder wrote with {}",
            paused.fence(),
            next.fence()
        )));
    }
    b.release(&next).await?;
    Ok(vec![])
}
