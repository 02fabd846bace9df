//! Where a NATS hand-off's time goes: `cargo run --release -p lockcheck-bench --example
//! nats_hand_off_split`.
//!
//! Against a NATS server from the conformance services, it prints, as multiples of the NATS
//! round trip measured in the same run (p50 of 300):
//!
//! * the holder's release until its acknowledgement (one JetStream write),
//! * the holder's release until the release's notice reaches a subscriber (what wakes a
//!   waiter), and
//! * the holder's release until a waiter that was already waiting has the lock (the notice,
//!   then the waiter's create: another JetStream write);
//!
//! then the benchmark's hand-off with 1, 8 and 64 waiters (the same harness as `cargo bench
//! --bench nats`, 200 hand-offs in one batch) with the lockers' [`NatsStats`]: creates the
//! server refused per hand-off, and grants that needed a recheck (lost wake-ups). It is the
//! measurement behind the release's purge marker without a rollup header (`impls/src/nats.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lockcheck_bench::{LockerContender, hand_off};
use lockcheck_conformance::services::Service;
use lockcheck_conformance::services::nats::spec;
use lockcheck_impls::nats::{BucketConfig, NatsLocker, NatsStats};
use lockcheck_impls::{LeaseRequest, Locker};
use tokio::time::Instant;

const BUCKET: &str = "hand-off-split";
const SAMPLES: usize = 300;

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn is_release(notice: &async_nats::Message) -> bool {
    notice.headers.as_ref().and_then(|headers| headers.get("KV-Operation")).is_some_and(|op| op.as_str() == "PURGE")
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
        let (holder, waiter) = (&lockers[0], &lockers[1]);
        let (mut acked, mut noticed, mut granted) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            let held = holder.try_acquire(&request).await?.ok_or("the key is free between samples")?;
            let waiting = {
                let (waiter, request) = (waiter.clone(), request.clone());
                tokio::spawn(async move { waiter.acquire(&request, Duration::from_secs(5)).await.map(|l| (l, Instant::now())) })
            };
            while waiter.stats().waiting != 1 {
                tokio::task::yield_now().await;
            }
            while notices.next().now_or_never().flatten().is_some() {}
            let released_at = Instant::now();
            let release = async {
                let released = holder.release(&held).await;
                (released, Instant::now())
            };
            let notice = async {
                while let Some(notice) = notices.next().await {
                    if is_release(&notice) {
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
            "one waiter, waiting before the release (p50 x round trip): release acknowledged {:.2}x, notice {:.2}x, \
             waiter granted {:.2}x",
            ratio(p50(acked)),
            ratio(p50(noticed)),
            ratio(p50(granted))
        );

        let clients: Vec<Arc<dyn Locker>> = lockers.iter().map(|l| Arc::new(l.clone()) as Arc<dyn Locker>).collect();
        let contender = Arc::new(LockerContender::per_client(clients, 1).named("NatsLocker"));
        for waiters in [1, 8, 64] {
            let before: Vec<NatsStats> = lockers.iter().map(NatsLocker::stats).collect();
            let batch = hand_off(contender.clone(), waiters, 200).await?;
            let hand_offs = batch.latencies.len() as f64;
            let after: Vec<NatsStats> = lockers.iter().map(NatsLocker::stats).collect();
            let refused: u64 = after.iter().zip(&before).map(|(a, b)| a.creates_refused - b.creates_refused).sum();
            let rechecked: u64 =
                after.iter().zip(&before).map(|(a, b)| a.grants_after_recheck - b.grants_after_recheck).sum();
            let median = p50(batch.latencies);
            println!(
                "hand-off, {waiters:>2} waiters: p50 {median:?} = {:.2}x round trip; {:.2} refused creates per hand-off; \
                 {rechecked} grants after a recheck",
                ratio(median),
                refused as f64 / hand_offs
            );
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
