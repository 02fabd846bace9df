//! The measurements: uncontended acquire+release, hand-off latency, throughput.
//!
//! Each function runs `iterations` of its operation on the current tokio runtime and returns
//! the per-operation latencies (so the caller can keep a distribution) and the total measured
//! time (what criterion's `iter_custom` wants for its mean).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::BenchError;
use crate::contender::Contender;

/// Latencies and the total measured time of one batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// One entry per measured operation (or per group of operations, see [`uncontended`]).
    pub latencies: Vec<Duration>,
    /// What criterion should divide by the iteration count.
    pub total: Duration,
}

pub use lockcheck_report::UNCONTENDED_GROUP;

/// Uncontended try-lock + unlock of key 0 by client 0, `iterations` times, timed in groups
/// of [`UNCONTENDED_GROUP`].
///
/// A try-lock that finds the key taken is an error: nobody else should hold it.
pub async fn uncontended<C: Contender>(contender: &C, iterations: u64) -> Result<Batch, BenchError> {
    uncontended_in_groups(contender, iterations, UNCONTENDED_GROUP).await
}

/// [`uncontended`] timed in groups of `group` operations (each latency sample is a group's
/// mean). A network backend whose floor is one timed round trip should use 1: a mean over a
/// group counts every scheduler hiccup of a noisy machine, a per-operation median does not,
/// and the floor's figure is a per-operation median.
pub async fn uncontended_in_groups<C: Contender>(
    contender: &C,
    iterations: u64,
    group: u64,
) -> Result<Batch, BenchError> {
    let group_size = group.max(1);
    let mut batch =
        Batch { latencies: Vec::with_capacity((iterations / group_size + 1) as usize), total: Duration::ZERO };
    let mut left = iterations;
    while left > 0 {
        let group = left.min(group_size);
        let started = Instant::now();
        for _ in 0..group {
            let held = contender.try_lock(0, 0).await?.ok_or(BenchError::UnexpectedlyHeld)?;
            contender.unlock(held).await?;
        }
        let took = started.elapsed();
        batch.total += took;
        batch.latencies.push(took / group as u32);
        left -= group;
    }
    Ok(batch)
}

/// Who is where in a hand-off run; every task watches it.
#[derive(Default, Clone, Copy)]
struct Progress {
    /// Tasks between "about to call lock" and "lock returned".
    waiting: usize,
    /// Grants so far.
    grants: u64,
}

/// Hand-off latency with `waiters` queued: the time from the holder calling `unlock` to the
/// next holder running with the lock in hand. `hand_offs` such latencies are measured.
///
/// `waiters + 1` tasks share key 0. A holder releases only once all `waiters` others have
/// called `lock` and the contender says they are queued ([`Contender::until_queued`]), so
/// the queue really is that long; and a task that just released rejoins the queue only after
/// someone else was granted (so a backend that lets the releaser barge back in cannot fake a
/// fast hand-off with a hand-off to itself).
///
/// "Called `lock`" is all the harness sees of a contender that cannot tell more. For a
/// network backend the request may then still be on the wire, and the release races the
/// arrival instead of handing off to a queued waiter. With one waiter that is every hand-off:
/// the only waiter is the task that just released, and it calls `lock` as the holder's turn
/// begins (a NATS waiter's subscription was a moment behind the holder's offer in most
/// hand-offs). So a contender that can tell, does.
///
/// The first `waiters` hand-offs of a batch are not counted: at its start all `waiters + 1`
/// tasks call `lock` at once, so those hand-offs measure the queue forming (every arrival's
/// requests on the wire together) rather than a hand-off with the queue formed. From the
/// `waiters + 1`-th grant on, every task has held the lock once and rejoined the queue the
/// way it does for the rest of the batch. (Counted from the first, a quick run's few short
/// batches at 64 waiters measured mostly the arrival burst: 22 hand-offs, p50 2.5 ms against
/// 1.1 ms with the queue formed, on NATS.)
pub async fn hand_off<C: Contender>(contender: Arc<C>, waiters: usize, hand_offs: u64) -> Result<Batch, BenchError> {
    assert!(waiters >= 1, "a hand-off needs a waiter");
    let (progress, _) = watch::channel(Progress::default());
    let progress = Arc::new(progress);
    // The instant the current holder called unlock; taken by whoever is granted next.
    let released_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::with_capacity(hand_offs as usize)));

    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..=waiters {
        let contender = contender.clone();
        let progress = progress.clone();
        let released_at = released_at.clone();
        let latencies = latencies.clone();
        tasks.spawn(async move {
            let mut updates = progress.subscribe();
            loop {
                progress.send_modify(|p| p.waiting += 1);
                let held = contender.lock(client, 0).await?;
                let granted_at = Instant::now();
                let mut grant = 0;
                progress.send_modify(|p| {
                    p.waiting -= 1;
                    p.grants += 1;
                    grant = p.grants;
                });
                let finished = {
                    let mut latencies = latencies.lock().expect("latency list poisoned");
                    let released = released_at.lock().expect("release instant poisoned").take();
                    if let Some(released) = released.filter(|_| grant > waiters as u64) {
                        latencies.push(granted_at - released);
                    }
                    latencies.len() as u64 >= hand_offs
                };
                if finished {
                    // Everyone still queued gets the key in turn, sees `finished` and leaves.
                    contender.unlock(held).await?;
                    return Ok::<(), BenchError>(());
                }
                let everyone_called = updates.wait_for(|p| p.waiting >= waiters).await;
                everyone_called.map_err(|_| BenchError::Stuck("hand-off progress channel closed"))?;
                contender.until_queued(0, waiters).await;
                *released_at.lock().expect("release instant poisoned") = Some(Instant::now());
                contender.unlock(held).await?;
                let handed_on = updates.wait_for(|p| p.grants > grant).await;
                handed_on.map_err(|_| BenchError::Stuck("hand-off progress channel closed"))?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| BenchError::TaskFailed(e.to_string()))??;
    }
    let latencies = std::mem::take(&mut *latencies.lock().expect("latency list poisoned"));
    let total = latencies.iter().sum();
    Ok(Batch { latencies, total })
}

/// `clients` tasks lock+unlock keys `client % keys` until `operations` are done between them.
/// Each holds its lock across one yield to the scheduler (a minimal critical section) and
/// yields again after unlocking, so clients sharing a key contend for it. Returns each
/// operation's latency (lock call to unlock return, queueing included) and the wall time of
/// the whole batch; throughput is `operations / total`.
pub async fn throughput<C: Contender>(
    contender: Arc<C>,
    clients: usize,
    keys: usize,
    operations: u64,
) -> Result<Batch, BenchError> {
    assert!(clients >= 1 && keys >= 1, "throughput needs clients and keys");
    assert!(keys <= contender.keys(), "the contender was built with {} keys, asked for {keys}", contender.keys());
    let per_client = operations.div_ceil(clients as u64);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let contender = contender.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_client as usize);
            for _ in 0..per_client {
                let began = Instant::now();
                let held = contender.lock(client, client % keys).await?;
                // The critical section: one turn of the scheduler, so clients sharing a key
                // really queue for it (on one thread, a lock never held across an await
                // point is never contended).
                YieldToOthers(false).await;
                contender.unlock(held).await?;
                latencies.push(began.elapsed());
                YieldToOthers(false).await;
            }
            Ok::<_, BenchError>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity((per_client * clients as u64) as usize);
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.map_err(|e| BenchError::TaskFailed(e.to_string()))??);
    }
    let total = started.elapsed();
    // Criterion divides by `operations`; we ran `per_client * clients` ≥ operations.
    let total = total.mul_f64(operations as f64 / latencies.len().max(1) as f64);
    Ok(Batch { latencies, total })
}

/// Goes to the back of the run queue once. Unlike `tokio::task::yield_now`, which defers its
/// wake-up until the runtime has polled its I/O driver (a system call per yield), this costs
/// one trip through the scheduler — so throughput measures the lock, not `epoll_wait`.
struct YieldToOthers(bool);

impl std::future::Future for YieldToOthers {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contender::{LockerContender, TokioMutexFloor};
    use lockcheck_impls::MemoryLocker;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn hand_off_measures_exactly_the_requested_hand_offs() {
        runtime().block_on(async {
            for waiters in [1, 3, 8] {
                let memory = Arc::new(LockerContender::new(Arc::new(MemoryLocker::new()), 1));
                let batch = hand_off(memory, waiters, 200).await.unwrap();
                assert_eq!(batch.latencies.len(), 200, "{waiters} waiters");
                let floor = hand_off(Arc::new(TokioMutexFloor::new(1)), waiters, 200).await.unwrap();
                assert_eq!(floor.latencies.len(), 200);
            }
        });
    }

    /// A contender whose grants number 2 … `slow_until` return a second late: the hand-offs
    /// while the queue forms, which the harness must not count.
    struct SlowWhileQueueForms {
        inner: LockerContender,
        grants: std::sync::atomic::AtomicU64,
        slow_until: u64,
    }

    impl Contender for SlowWhileQueueForms {
        type Held = <LockerContender as Contender>::Held;

        fn name(&self) -> String {
            "slow while the queue forms".to_owned()
        }

        fn keys(&self) -> usize {
            1
        }

        async fn try_lock(&self, client: usize, key: usize) -> Result<Option<Self::Held>, BenchError> {
            self.inner.try_lock(client, key).await
        }

        async fn lock(&self, client: usize, key: usize) -> Result<Self::Held, BenchError> {
            let held = self.inner.lock(client, key).await?;
            let grant = self.grants.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if (2..=self.slow_until).contains(&grant) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(held)
        }

        async fn unlock(&self, held: Self::Held) -> Result<(), BenchError> {
            self.inner.unlock(held).await
        }
    }

    #[test]
    fn hand_offs_while_the_queue_forms_are_not_counted() {
        // Paused time: the second-long delays are exact and cost no wall time.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let waiters = 3;
            let slow = |slow_until| {
                Arc::new(SlowWhileQueueForms {
                    inner: LockerContender::new(Arc::new(MemoryLocker::new()), 1),
                    grants: Default::default(),
                    slow_until,
                })
            };
            // Grants 2 … waiters hand the key on while every task's first lock call is still
            // arriving: none of them counts.
            let batch = hand_off(slow(waiters as u64), waiters, 20).await.unwrap();
            assert_eq!(batch.latencies.len(), 20);
            assert!(batch.latencies.iter().all(|l| *l < Duration::from_secs(1)), "{:?}", batch.latencies);
            // The first hand-off after that (grant waiters + 1) counts: slow, it shows.
            let batch = hand_off(slow(waiters as u64 + 1), waiters, 20).await.unwrap();
            assert_eq!(batch.latencies.iter().filter(|l| **l >= Duration::from_secs(1)).count(), 1);
        });
    }

    /// A contender whose `lock` reaches the queue a second after it is called (a request on
    /// the wire), and which tells [`Contender::until_queued`] when it has — or, `tells` false,
    /// does not.
    struct SlowToQueue {
        key: Arc<tokio::sync::Mutex<()>>,
        queued: watch::Sender<u64>,
        tells: bool,
    }

    impl Contender for SlowToQueue {
        type Held = tokio::sync::OwnedMutexGuard<()>;

        fn name(&self) -> String {
            "slow to queue".to_owned()
        }

        fn keys(&self) -> usize {
            1
        }

        async fn try_lock(&self, _client: usize, _key: usize) -> Result<Option<Self::Held>, BenchError> {
            Ok(self.key.clone().try_lock_owned().ok())
        }

        async fn lock(&self, _client: usize, _key: usize) -> Result<Self::Held, BenchError> {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.queued.send_modify(|queued| *queued += 1);
            let held = self.key.clone().lock_owned().await;
            self.queued.send_modify(|queued| *queued -= 1);
            Ok(held)
        }

        async fn unlock(&self, held: Self::Held) -> Result<(), BenchError> {
            drop(held);
            Ok(())
        }

        async fn until_queued(&self, _key: usize, waiters: usize) {
            if self.tells {
                let mut queued = self.queued.subscribe();
                queued.wait_for(|queued| *queued >= waiters as u64).await.expect("the sender lives in self");
            }
        }
    }

    #[test]
    fn the_holder_releases_once_the_contender_says_its_waiters_are_queued() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let slow = |tells| Arc::new(SlowToQueue { key: Default::default(), queued: watch::Sender::new(0), tells });
            for waiters in [1, 4] {
                // Told when the waiters are queued, every hand-off is to a queued waiter: no
                // time passes on the paused clock.
                let batch = hand_off(slow(true), waiters, 20).await.unwrap();
                assert!(batch.latencies.iter().all(|l| *l < Duration::from_secs(1)), "{:?}", batch.latencies);
            }
            // Not told, the release races the arrival whenever the waiter is the task that just
            // released: with one waiter, every hand-off after the first (whose waiter queued
            // while the first grant was held).
            let batch = hand_off(slow(false), 1, 20).await.unwrap();
            assert!(batch.latencies[1..].iter().all(|l| *l >= Duration::from_secs(1)), "{:?}", batch.latencies);
        });
    }

    #[test]
    fn uncontended_groups_samples_and_fails_on_a_held_key() {
        runtime().block_on(async {
            let memory = LockerContender::new(Arc::new(MemoryLocker::new()), 1);
            let batch = uncontended(&memory, 100).await.unwrap();
            assert_eq!(batch.latencies.len(), 4, "100 = 32+32+32+4");
            let each = uncontended_in_groups(&memory, 10, 1).await.unwrap();
            assert_eq!(each.latencies.len(), 10, "one sample per operation");
            let held = memory.lock(1, 0).await.unwrap();
            assert!(matches!(uncontended(&memory, 1).await, Err(BenchError::UnexpectedlyHeld)));
            memory.unlock(held).await.unwrap();
        });
    }

    #[test]
    fn throughput_runs_every_operation() {
        runtime().block_on(async {
            let memory = Arc::new(LockerContender::new(Arc::new(MemoryLocker::new()), 4));
            let batch = throughput(memory, 8, 4, 1000).await.unwrap();
            assert_eq!(batch.latencies.len(), 1000);
            assert!(batch.total > Duration::ZERO);
        });
    }
}
