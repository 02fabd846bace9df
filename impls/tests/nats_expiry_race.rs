//! A NATS server race the nemesis found, reproduced without lockcheck's locker: the expiry
//! marker of an entry whose per-message TTL ran out can remove a *newer*, acknowledged entry
//! of the same key.
//!
//! With subject delete markers on, the server's expiry pass decides, under its lock, that the
//! expired message is the last of its subject, releases the lock, and then stores a marker
//! that rolls the subject up (`Nats-Rollup: sub`). A write that lands in between — a holder
//! refreshing its lease over the expired revision, accepted because that revision was still
//! the subject's last — is stored, acknowledged, and then wiped by the marker. To a KV reader
//! the key was deleted by its TTL, so a waiter takes it while the refreshed holder still holds
//! it: two holders (P1). The window is wide right after the server was frozen past the TTL:
//! the expiry pass and the writes queued during the freeze run at once.
//!
//! The test freezes the server past an entry's TTL, refreshes the entry (an update expecting
//! its revision) while the server is frozen, resumes it, and looks at the key once the expiry
//! pass has run. It is ignored by default because it asserts the *server's* bug: it passes
//! when the race shows, and says so; run it with `--ignored` to see whether a NATS version
//! still has it.
#![cfg(feature = "nats")]

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use lockcheck_support::nats::nats;
use tokio::time::{Instant, sleep};

/// How many freeze–refresh–resume rounds to try, each on a key of its own.
const ROUNDS: u32 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "shows a NATS server race (an expiry marker wipes a newer acknowledged entry); run with --ignored"]
async fn an_expiry_marker_wipes_a_refresh_acknowledged_after_the_entry_expired() {
    let Some(server) = nats().await.expect("a NATS server (run scripts/setup/nats.sh)") else { return };
    let client = async_nats::connect(server.address().to_string()).await.expect("connects");
    let js = jetstream::new(client);
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "race".to_owned(),
            history: 1,
            limit_markers: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .await
        .expect("a bucket with per-message TTLs and limit markers");
    let mut wiped = Vec::new();
    for round in 0..ROUNDS {
        let key = format!("k{round}");
        let subject = format!("$KV.race.{key}");
        // The lease: one second.
        let first = publish(&js, &subject, "1", None).await.await.expect("the lease is stored").sequence;
        server.pause().await.expect("freeze");
        // Frozen past the lease's end. Not a synchronisation: the fault itself.
        sleep(Duration::from_millis(1_500)).await;
        // The holder refreshes its lease over the revision it holds, for 30 s.
        let refresh = publish(&js, &subject, "30", Some(first)).await;
        server.unpause().await.expect("resume");
        let refreshed = match refresh.await {
            Ok(ack) => ack.sequence,
            // The expiry got there first: the refresh was refused, as it should be.
            Err(_) => continue,
        };
        // The expiry pass runs within a second of the resume; give it three.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let entry = bucket.entry(&key).await.expect("reads the key");
            if entry.as_ref().is_none_or(|entry| entry.operation != kv::Operation::Put) {
                wiped.push(format!(
                    "round {round}: refresh stored as {refreshed} (lease {first}), then the key read {:?}",
                    entry.map(|entry| (entry.revision, entry.operation))
                ));
                break;
            }
            sleep(Duration::from_millis(50)).await;
        }
    }
    println!("{} of {ROUNDS} acknowledged refreshes were wiped by an expiry marker:", wiped.len());
    for line in &wiped {
        println!("  {line}");
    }
    assert!(!wiped.is_empty(), "the race did not show in {ROUNDS} rounds on this server version");
}

/// Publishes a lease entry with a TTL of `ttl_secs`, expecting `expected` as the subject's last
/// sequence when given; the acknowledgement is awaited by the caller.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    ttl_secs: &str,
    expected: Option<u64>,
) -> jetstream::context::PublishAckFuture {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_TTL, ttl_secs);
    if let Some(expected) = expected {
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string().as_str());
    }
    js.publish_with_headers(subject.to_owned(), headers, "lease".into()).await.expect("the request is sent")
}
