//! Bad input gets the right typed error and changes nothing. "Nothing" is shown, not
//! assumed: a free key is still free afterwards, a held key is still held with the same
//! deadline, and no waiter was queued (the holder's release would have granted it).

#[path = "support/locking.rs"]
mod support;

use std::time::Duration;

use lockcheck_impls::{
    InvalidInput, LeaseRequest, LockError, Locker, MAX_KEY_BYTES, MAX_PERMITS, MAX_TTL, MAX_WAIT, MemoryLocker,
};
use support::{KEY, is_free, lock, secs};
use tokio::time::advance;

fn invalid(result: Result<impl std::fmt::Debug, LockError>) -> InvalidInput {
    match result {
        Err(LockError::InvalidInput(why)) => why,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

/// Sends `request` through try_acquire and acquire, expecting `expected` from both — called
/// directly (the unboxed inherent methods) and through `dyn Locker`.
async fn refused(locker: &MemoryLocker, request: &LeaseRequest, expected: InvalidInput) {
    assert_eq!(invalid(locker.try_acquire(request).await), expected, "try_acquire {request:?}");
    assert_eq!(invalid(locker.acquire(request, secs(1)).await), expected, "acquire {request:?}");
    let dyn_locker: &dyn Locker = locker;
    assert_eq!(invalid(dyn_locker.try_acquire(request).await), expected, "dyn try_acquire {request:?}");
    assert_eq!(invalid(dyn_locker.acquire(request, secs(1)).await), expected, "dyn acquire {request:?}");
}

#[tokio::test(start_paused = true)]
async fn bad_keys_are_refused() {
    let locker = MemoryLocker::new();
    let ttl = secs(10);
    refused(&locker, &LeaseRequest::lock("", ttl), InvalidInput::EmptyKey).await;
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    refused(
        &locker,
        &LeaseRequest::lock(long, ttl),
        InvalidInput::KeyTooLong { len: MAX_KEY_BYTES + 1, max: MAX_KEY_BYTES },
    )
    .await;
    // The limit counts bytes, not characters: 101 two-byte characters are 202 bytes.
    let wide = "é".repeat(MAX_KEY_BYTES / 2 + 1);
    refused(
        &locker,
        &LeaseRequest::lock(wide, ttl),
        InvalidInput::KeyTooLong { len: MAX_KEY_BYTES + 2, max: MAX_KEY_BYTES },
    )
    .await;
    // A newline in a key is protocol injection for line protocols: "a\nRELEASE b".
    refused(&locker, &LeaseRequest::lock("a\nb", ttl), InvalidInput::ForbiddenCharInKey { found: '\n', at: 1 }).await;
    refused(&locker, &LeaseRequest::lock("a\rb", ttl), InvalidInput::ForbiddenCharInKey { found: '\r', at: 1 }).await;
    refused(&locker, &LeaseRequest::lock("bell\u{7}", ttl), InvalidInput::ForbiddenCharInKey { found: '\u{7}', at: 4 })
        .await;
    refused(&locker, &LeaseRequest::lock("nul\0", ttl), InvalidInput::ForbiddenCharInKey { found: '\0', at: 3 }).await;
    refused(&locker, &LeaseRequest::lock("two words", ttl), InvalidInput::ForbiddenCharInKey { found: ' ', at: 3 })
        .await;
    refused(&locker, &LeaseRequest::lock("tab\tkey", ttl), InvalidInput::ForbiddenCharInKey { found: '\t', at: 3 })
        .await;
    refused(
        &locker,
        &LeaseRequest::lock("nbsp\u{a0}", ttl),
        InvalidInput::ForbiddenCharInKey { found: '\u{a0}', at: 4 },
    )
    .await;

    // Nothing was taken under any prefix or part of the refused keys.
    for part in ["a", "b", "bell", "nul", "two", "words", "tab", "key", "nbsp", KEY] {
        assert!(is_free(&locker, &LeaseRequest::lock(part, ttl)).await, "{part:?} is free");
    }
    // The boundary itself is accepted.
    let longest = "k".repeat(MAX_KEY_BYTES);
    assert!(locker.try_acquire(&LeaseRequest::lock(longest, ttl)).await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn bad_ttls_and_limits_are_refused_and_change_nothing_on_a_free_key() {
    let locker = MemoryLocker::new();
    let cases = [
        (lock(Duration::ZERO), InvalidInput::TtlTooShort { ttl: Duration::ZERO, min: lockcheck_impls::MIN_TTL }),
        (
            lock(MAX_TTL + Duration::from_nanos(1)),
            InvalidInput::TtlTooLong { ttl: MAX_TTL + Duration::from_nanos(1), max: MAX_TTL },
        ),
        (LeaseRequest::semaphore(KEY, 0, secs(10)), InvalidInput::BadPermitLimit { limit: 0, max: MAX_PERMITS }),
        (
            LeaseRequest::semaphore(KEY, MAX_PERMITS + 1, secs(10)),
            InvalidInput::BadPermitLimit { limit: MAX_PERMITS + 1, max: MAX_PERMITS },
        ),
    ];
    for (request, expected) in cases {
        refused(&locker, &request, expected).await;
        assert!(is_free(&locker, &lock(secs(10))).await, "still free after {request:?}");
    }
    let wait = MAX_WAIT + Duration::from_nanos(1);
    assert_eq!(invalid(locker.acquire(&lock(secs(10)), wait).await), InvalidInput::WaitTooLong { wait, max: MAX_WAIT });
    assert!(is_free(&locker, &lock(secs(10))).await);
    // The boundaries are accepted.
    let lease = locker.try_acquire(&lock(MAX_TTL)).await.unwrap().unwrap();
    assert!(locker.release(&lease).await.unwrap());
    let lease = locker.acquire(&LeaseRequest::semaphore(KEY, MAX_PERMITS, secs(1)), MAX_WAIT).await.unwrap();
    assert!(locker.release(&lease).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn bad_requests_on_a_held_key_leave_the_holder_and_the_queue_alone() {
    let locker = MemoryLocker::new();
    let holder = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    advance(secs(1)).await;
    let bad = [
        (lock(Duration::ZERO), secs(5)),
        (lock(MAX_TTL * 2), secs(5)),
        (LeaseRequest::semaphore(KEY, 0, secs(10)), secs(5)),
        (lock(secs(10)), MAX_WAIT * 2),
    ];
    for (request, wait) in &bad {
        assert!(locker.acquire(request, *wait).await.unwrap_err().is_invalid_input(), "{request:?} {wait:?}");
    }
    // Refused at once: no time passed while "waiting".
    assert_eq!(locker.remaining_ttl(&holder).await.unwrap(), Some(secs(9)), "the holder keeps its deadline");
    assert!(
        invalid(locker.refresh(&holder, Duration::ZERO).await)
            == InvalidInput::TtlTooShort { ttl: Duration::ZERO, min: lockcheck_impls::MIN_TTL }
    );
    assert!(matches!(invalid(locker.refresh(&holder, MAX_TTL * 2).await), InvalidInput::TtlTooLong { .. }));
    assert_eq!(locker.remaining_ttl(&holder).await.unwrap(), Some(secs(9)), "a refused refresh changes nothing");
    assert!(locker.release(&holder).await.unwrap());
    // Had any refused acquire been queued, the release would have granted it the key.
    assert!(is_free(&locker, &lock(secs(10))).await, "no refused request was queued");
}
