//! The bad-input check: requests the lock API refuses (an empty or over-long key, a key with
//! whitespace or a control character, a TTL or wait bound out of range, a semaphore limit of
//! zero) sent against a held key and a free one.
//!
//! What it holds a backend to is the rule for any failed operation: **a refused request
//! changes nothing.** The holder keeps its lease and its deadline, nobody else is granted the
//! held key, and no refused acquire stays queued to be granted later. Whether a backend refuses
//! such a request at all is reported, not judged: a backend that accepts a key with a space and
//! treats it as any other key breaks no property (the reference lockers refuse it, as
//! `InvalidInput`, because it is protocol injection on line protocols).
//!
//! The bad requests go through a client that is not recorded, so the checkers judge only the
//! well-formed operations around them; a violation names the bad request in its summary.

use std::time::Duration;

use lockcheck_impls::{Lease, LeaseRequest, LockError, Locker, MAX_KEY_BYTES, MAX_PERMITS, MAX_TTL, MAX_WAIT};
use lockcheck_model::spec::Property;
use tokio::time::timeout;

use super::{Ctx, Stop};

type Notes = Vec<String>;

/// One request the lock API refuses, and how it is sent.
struct BadRequest {
    what: String,
    request: LeaseRequest,
    wait: Duration,
}

/// Requests on or around `key` that the lock API refuses: keys derived from `key` (so an
/// injection or a truncation would land on it), and out-of-range TTLs, limits and waits on
/// `key` itself.
fn bad_requests(key: &str, ttl: Duration, wait: Duration) -> Vec<BadRequest> {
    let on = |what: &str, request: LeaseRequest| BadRequest { what: what.to_owned(), request, wait };
    let mut long_key = key.to_owned();
    while long_key.len() <= MAX_KEY_BYTES {
        long_key.push('x');
    }
    vec![
        on("an empty key", LeaseRequest::lock("", ttl)),
        on("a key longer than MAX_KEY_BYTES that starts with the held key", LeaseRequest::lock(long_key, ttl)),
        on("a key with a newline and a command after it", LeaseRequest::lock(format!("{key}\nr {key}"), ttl)),
        on("a key with a carriage return", LeaseRequest::lock(format!("{key}\r"), ttl)),
        on("a key with a space", LeaseRequest::lock(format!("{key} x"), ttl)),
        on("a key with a NUL byte", LeaseRequest::lock(format!("{key}\0"), ttl)),
        on("a TTL of zero", LeaseRequest::lock(key, Duration::ZERO)),
        on("a TTL above MAX_TTL", LeaseRequest::lock(key, MAX_TTL + Duration::from_millis(1))),
        on("a semaphore limit of zero", LeaseRequest::semaphore(key, 0, ttl)),
        on("a semaphore limit above MAX_PERMITS", LeaseRequest::semaphore(key, MAX_PERMITS + 1, ttl)),
        BadRequest {
            what: "a wait bound above MAX_WAIT".to_owned(),
            request: LeaseRequest::lock(key, ttl),
            wait: MAX_WAIT + Duration::from_millis(1),
        },
    ]
}

/// What became of one bad request.
enum Outcome {
    Refused,
    Granted(Lease),
    Other(String),
}

fn outcome<T>(result: Result<T, LockError>, lease: impl FnOnce(T) -> Option<Lease>) -> Outcome {
    match result {
        Err(LockError::InvalidInput(_)) => Outcome::Refused,
        Err(error) => Outcome::Other(format!("failed with {error} rather than InvalidInput")),
        Ok(value) => match lease(value) {
            Some(lease) => Outcome::Granted(lease),
            None => Outcome::Other("was answered \"not granted\" rather than refused as InvalidInput".to_owned()),
        },
    }
}

/// Sends `bad` through try_acquire and acquire. An acquire the backend does not refuse is
/// given up after `give_up` (cancelled, which its cancel-safety must cover).
async fn send(raw: &dyn Locker, bad: &BadRequest, give_up: Duration) -> Vec<(&'static str, Outcome)> {
    let mut outcomes = Vec::new();
    if bad.wait <= MAX_WAIT {
        outcomes.push(("try_acquire", outcome(raw.try_acquire(&bad.request).await, |granted| granted)));
    }
    let acquired = match timeout(give_up, raw.acquire(&bad.request, bad.wait)).await {
        Ok(result) => outcome(result, Some),
        Err(_) => Outcome::Other(format!("was still waiting after {give_up:?}, and was cancelled")),
    };
    outcomes.push(("acquire", acquired));
    outcomes
}

pub(crate) async fn run(ctx: &mut Ctx<'_>) -> Result<Notes, Stop> {
    let (holder, other) = (ctx.client().await?, ctx.client().await?);
    let raw = ctx.backend.connect().await.map_err(|error| Stop::Error(format!("connect failed: {error}")))?;
    let ttl = ctx.timing.long_ttl();
    let held_key = ctx.key("held");
    let request = LeaseRequest::lock(&held_key, ttl);
    let Some(lease) = holder.try_acquire(&request).await? else {
        return Err(ctx.violated_as(Property::Expiry, "try_acquire was refused although the key was never locked"));
    };
    let give_up = ctx.timing.prompt * 2;
    let mut notes = Vec::new();

    // On the held key: nothing may be granted it, and the holder must keep it.
    for bad in bad_requests(&held_key, ttl, give_up) {
        for (call, outcome) in send(raw.as_ref(), &bad, give_up).await {
            match outcome {
                Outcome::Refused => {}
                Outcome::Granted(granted) if granted.key() == held_key => {
                    let _ = raw.release(&granted).await;
                    return Err(ctx.violated_as(
                        Property::MutualExclusion,
                        format!("{call} with {} was granted the key while another client held it", bad.what),
                    ));
                }
                Outcome::Granted(granted) => {
                    notes.push(format!("{call} with {} was accepted (the lock API refuses it)", bad.what));
                    let _ = raw.release(&granted).await;
                }
                Outcome::Other(what) => notes.push(format!("{call} with {} {what}", bad.what)),
            }
        }
    }
    let remaining_before = holder.remaining_ttl(&lease).await?;
    for (what, bad_ttl) in [("a TTL of zero", Duration::ZERO), ("a TTL above MAX_TTL", MAX_TTL * 2)] {
        match holder.refresh(&lease, bad_ttl).await {
            Err(LockError::InvalidInput(_)) => {}
            Err(error) => notes.push(format!("refresh with {what} failed with {error} rather than InvalidInput")),
            Ok(_) => {
                // Accepted: the lease now has that TTL, which changes what "nothing" means.
                notes.push(format!("refresh with {what} was accepted (the lock API refuses it); the check stops here"));
                let _ = holder.release(&lease).await;
                return Ok(notes);
            }
        }
    }
    if other.try_acquire(&request).await?.is_some() {
        return Err(ctx.violated_as(
            Property::MutualExclusion,
            "after refused requests on a held key, another client was granted it while the holder still held it",
        ));
    }
    let remaining_after = holder.remaining_ttl(&lease).await?;
    match (remaining_before, remaining_after) {
        (Some(_), None) => {
            return Err(ctx.violated_as(
                Property::MutualExclusion,
                "a refused refresh ended the holder's lease: the backend no longer knows it",
            ));
        }
        (Some(before), Some(after)) if after > before + ctx.timing.tolerance => {
            return Err(ctx.violated_as(
                Property::Expiry,
                format!(
                    "a refused refresh lengthened the lease: {:.1}ms left before it, {:.1}ms after",
                    before.as_secs_f64() * 1e3,
                    after.as_secs_f64() * 1e3
                ),
            ));
        }
        _ => {}
    }
    if !holder.release(&lease).await? {
        return Err(
            ctx.violated_as(Property::Ownership, "after refused requests the holder's release said it did not hold")
        );
    }
    // Had a refused acquire stayed queued, the release would have handed it the key.
    match other.try_acquire(&request).await? {
        Some(lease) => {
            other.release(&lease).await?;
        }
        None => {
            return Err(ctx.violated_as(
                Property::CancelSafety,
                "after the holder released, the key was still taken: a refused acquire stayed queued and was granted it",
            ));
        }
    }

    // On a free key: a refused request must not take it.
    let free_key = ctx.key("free");
    for bad in bad_requests(&free_key, ttl, give_up) {
        for (call, outcome) in send(raw.as_ref(), &bad, give_up).await {
            match outcome {
                Outcome::Granted(granted) => {
                    notes
                        .push(format!("{call} with {} on a free key was accepted (the lock API refuses it)", bad.what));
                    let _ = raw.release(&granted).await;
                }
                Outcome::Other(what) => notes.push(format!("{call} with {} on a free key {what}", bad.what)),
                Outcome::Refused => {}
            }
        }
    }
    match other.try_acquire(&LeaseRequest::lock(&free_key, ttl)).await? {
        Some(lease) => {
            other.release(&lease).await?;
        }
        None => {
            return Err(ctx.violated_as(
                Property::CancelSafety,
                "a free key was taken after requests on it were refused: a refused request left a grant behind",
            ));
        }
    }
    notes.dedup();
    Ok(notes)
}
