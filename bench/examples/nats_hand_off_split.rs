//! Where a NATS hand-off's time goes: `cargo run --release -p lockcheck-bench --example
//! nats_hand_off_split`.
//!
//! Against a NATS server from lockcheck-support, it prints, as multiples of the NATS
//! round trip measured in the same run (p50 of 300):
//!
//! * the holder's release until it returns,
//! * the holder's release until the write that ended its lease is announced to a subscriber,
//!   and
//! * the holder's release until a waiter that was already waiting has the lock,
//!
//! for both ways a release ends its lease: a holder that took the key without waiting purges
//! it (one JetStream write; its notice wakes the waiter, whose create is a second write), a
//! holder that waited for it offers it (a core NATS message to the waiter, whose take-over is
//! the only write);
//!
//! then the benchmark's hand-off with 1, 8 and 64 waiters (the same harness as `cargo bench
//! --bench nats`, 200 hand-offs in one batch) with the lockers' [`NatsStats`]: creates the
//! server refused per hand-off, offers taken, and grants that needed a recheck (lost
//! wake-ups) — under the benchmark's rule (the holder releases once the lockers count the
//! waiters queued) and under the rule before it (once the waiters have called `lock`, so the
//! waiter that just released races the release). It is the
//! measurement behind the release's purge marker without a rollup header (`impls/src/nats.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lockcheck_bench::{LockerContender, hand_off};
use lockcheck_impls::nats::{BucketConfig, NatsLocker, NatsStats};
use lockcheck_impls::{LeaseRequest, Locker};
use lockcheck_support::Service;
use lockcheck_support::nats::spec;
use tokio::time::Instant;

const BUCKET: &str = "hand-off-split";
const SAMPLES: usize = 300;

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// How the measured holder's release ends its lease.
#[derive(Clone, Copy)]
enum ReleasePath {
    /// It took the key without waiting, so it purges: the waiter is woken and creates.
    Purge,
    /// It waited for the key, so it offers the lease: the waiter takes it over.
    Offer,
}

impl ReleasePath {
    fn describe(self) -> &'static str {
        match self {
            ReleasePath::Purge => "purge, then the waiter's create",
            ReleasePath::Offer => "offer, then the waiter's take-over",
        }
    }
}

/// Whether `notice` announces the write that replaced the lease at revision `held`.
fn ends(notice: &async_nats::Message, held: u64) -> bool {
    let header = |name: &str| notice.headers.as_ref().and_then(|headers| headers.get(name)).map(|v| v.to_string());
    header("Nats-Last-Sequence") == Some(held.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One thread, as the benchmark suites run.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = Service::start(&spec()).await?;
        let hosts = server.address().to_string();
        let mut lockers = Vec::new();
        for _ in 0..65 {
            lockers.push(NatsLocker::connect(&hosts, BucketConfig::new(BUCKET)).await?);
        }
        let observer = async_nats::connect(format!("nats://{hosts}")).await?;

        let echo_subject = "lockcheck.hand-off-split.echo";
        let mut echo = observer.subscribe(echo_subject).await?;
        observer.flush().await?;
        let mut round_trips = Vec::new();
        for _ in 0..2000 {
            let started = Instant::now();
            observer.publish(echo_subject, "".into()).await?;
            echo.next().await.ok_or("echo subscription ended")?;
            round_trips.push(started.elapsed());
        }
        let round_trip = p50(round_trips);
        let ratio = |took: Duration| took.as_secs_f64() / round_trip.as_secs_f64();
        println!("NATS round trip p50 {round_trip:?}");

        let request = LeaseRequest::lock("split", Duration::from_secs(10));
        let mut notices = observer.subscribe(format!("lockcheck.kv.{BUCKET}.split")).await?;
        observer.flush().await?;
        for path in [ReleasePath::Purge, ReleasePath::Offer] {
            let (holder, waiter, first) = (&lockers[0], &lockers[1], &lockers[2]);
            let (mut acked, mut noticed, mut granted) = (Vec::new(), Vec::new(), Vec::new());
            let offers_before = holder.stats().offers_taken;
            for _ in 0..SAMPLES {
                let held = match path {
                    ReleasePath::Purge => {
                        holder.try_acquire(&request).await?.ok_or("the key is free between samples")?
                    }
                    // A holder that waited for its lease offers it on release.
                    ReleasePath::Offer => {
                        let blocker = first.try_acquire(&request).await?.ok_or("the key is free between samples")?;
                        let acquire = {
                            let (holder, request) = (holder.clone(), request.clone());
                            tokio::spawn(async move { holder.acquire(&request, Duration::from_secs(5)).await })
                        };
                        until_queued(holder).await?;
                        first.release(&blocker).await?;
                        acquire.await??
                    }
                };
                let waiting = {
                    let (waiter, request) = (waiter.clone(), request.clone());
                    tokio::spawn(async move {
                        waiter.acquire(&request, Duration::from_secs(5)).await.map(|l| (l, Instant::now()))
                    })
                };
                until_queued(waiter).await?;
                while notices.next().now_or_never().flatten().is_some() {}
                let released_at = Instant::now();
                let release = async {
                    let released = holder.release(&held).await;
                    (released, Instant::now())
                };
                // The write that ends the holder's lease: its purge, or the waiter's take-over.
                let notice = async {
                    while let Some(notice) = notices.next().await {
                        if ends(&notice, held.fence().0) {
                            return Instant::now();
                        }
                    }
                    Instant::now()
                };
                let ((released, acked_at), noticed_at) = tokio::join!(release, notice);
                assert!(released?, "the holder's lease was gone");
                let (lease, granted_at) = waiting.await??;
                acked.push(acked_at - released_at);
                noticed.push(noticed_at - released_at);
                granted.push(granted_at - released_at);
                waiter.release(&lease).await?;
            }
            println!(
                "{}: one waiter, waiting before the release (p50 x round trip): release returned {:.2}x, the write \
                 ending the lease announced {:.2}x, waiter granted {:.2}x; {} of {SAMPLES} releases handed over by \
                 offer",
                path.describe(),
                ratio(p50(acked)),
                ratio(p50(noticed)),
                ratio(p50(granted)),
                holder.stats().offers_taken - offers_before,
            );
        }

        drop(notices);
        let clients: Vec<Arc<dyn Locker>> = lockers.iter().map(|l| Arc::new(l.clone()) as Arc<dyn Locker>).collect();
        let queued = LockerContender::per_client_counting(lockers.clone(), 1);
        let queued = queued.named("NatsLocker");
        let called = LockerContender::per_client(clients, 1).named("NatsLocker");
        for (rule, contender) in [
            ("released once the waiters are queued (the benchmark's rule)", Arc::new(queued)),
            (
                "released once the waiters have called lock (racing the arrival of the one that just released)",
                Arc::new(called),
            ),
        ] {
            println!("{rule}:");
            for waiters in [1, 8, 64] {
                let before: Vec<NatsStats> = lockers.iter().map(NatsLocker::stats).collect();
                let batch = hand_off(contender.clone(), waiters, 200).await?;
                let hand_offs = batch.latencies.len() as f64;
                let after: Vec<NatsStats> = lockers.iter().map(NatsLocker::stats).collect();
                let refused: u64 = after.iter().zip(&before).map(|(a, b)| a.creates_refused - b.creates_refused).sum();
                let rechecked: u64 =
                    after.iter().zip(&before).map(|(a, b)| a.grants_after_recheck - b.grants_after_recheck).sum();
                let offers: u64 = after.iter().zip(&before).map(|(a, b)| a.offers_taken - b.offers_taken).sum();
                let median = p50(batch.latencies);
                println!(
                    "  hand-off, {waiters:>2} waiters: p50 {median:?} = {:.2}x round trip; {:.2} refused creates and \
                     {:.2} offers taken per hand-off; {rechecked} grants after a recheck",
                    ratio(median),
                    refused as f64 / hand_offs,
                    offers as f64 / hand_offs
                );
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// Waits until `locker` has an acquire queued: its subscription is at the server.
async fn until_queued(locker: &NatsLocker) -> Result<(), &'static str> {
    let mut queued = locker.queued().ok_or("a NATS locker counts its queued acquires")?;
    if queued.until_at_least(1).await { Ok(()) } else { Err("the locker is gone") }
}
