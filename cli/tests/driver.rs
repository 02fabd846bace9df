//! `lockcheck driver URL` speaks the driver protocol: the `exec:` backend starts it, reads its
//! hello and is granted a lease through it — the same process `lockcheck faults` pauses and
//! kills as its holder.

use std::time::Duration;

use lockcheck_conformance::backends::exec::ExecBackend;
use lockcheck_conformance::{LeaseRequest, Locker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hidden_driver_subcommand_serves_a_url_over_the_protocol() {
    let command = [env!("CARGO_BIN_EXE_lockcheck"), "driver", "memory"].map(str::to_owned).to_vec();
    let driver = ExecBackend::new(command).expect("a command").spawn().await.expect("a hello");
    assert!(driver.describe().contains("lockcheck driver for memory"), "{}", driver.describe());
    assert!(driver.capabilities().fencing, "the memory locker's claims: {:?}", driver.capabilities());
    let request = LeaseRequest::lock("k", Duration::from_secs(5));
    let lease = driver.try_acquire(&request).await.expect("an answer").expect("granted");
    assert!(driver.try_acquire(&request).await.expect("an answer").is_none(), "held");
    assert!(driver.release(&lease).await.expect("an answer"));
    assert!(!driver.release(&lease).await.expect("an answer"), "released once");
}
