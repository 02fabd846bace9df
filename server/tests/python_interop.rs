//! Interop with dflockd implementations nobody here wrote:
//! - the real Python server (`dflockd` 0.5 from PyPI) driven by the Rust client, for the
//!   commands it has (`l r n e w`), with its documented differences asserted;
//! - the real Python client (`dflockd-client`, sync and asyncio) driven against the reference
//!   server: locks, semaphores, two-phase, renewal, stats, auth, TLS, fencing tokens
//!   (scripts in `tests/py/`, run with the venv's Python).
//!
//! Both come from the venv `scripts/setup/python.sh` builds. Missing, they fail the run unless
//! `LOCKCHECK_SERVICES=skip`, which prints the skip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockcheck_impls::dflockd::{
    ConnectOptions, Connection, DflockdError, DflockdLocker, DflockdLockerConfig, ServerKind, ServerTls, commands,
};
use lockcheck_impls::{LeaseRequest, LockError, Locker};
use lockcheck_server::{Server, ServerConfig};
use lockcheck_support::dflockd::{PythonDflockdOptions, python_dflockd, venv_python};
use lockcheck_support::{Policy, Service};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// The Rust client against the Python server.
// ---------------------------------------------------------------------------------------

async fn python_server(options: PythonDflockdOptions) -> Option<Service> {
    python_dflockd(&options).await.expect("the Python dflockd server starts")
}

async fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &ConnectOptions::default()).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_drives_the_python_server() {
    let Some(service) = python_server(PythonDflockdOptions::default()).await else { return };
    let addr = service.address().to_string();
    let (mut a, mut b) = (connect(&addr).await, connect(&addr).await);

    // l / r / n
    let grant = commands::acquire(&mut a, "py-k", Duration::ZERO, Some(5)).await.unwrap();
    assert_eq!(grant.lease_s, 5);
    assert!(grant.token.len() == 32 && grant.token.bytes().all(|c| c.is_ascii_hexdigit()), "{}", grant.token);
    assert!(commands::acquire(&mut b, "py-k", Duration::ZERO, None).await.unwrap_err().is_timeout());
    assert!(matches!(commands::release(&mut b, "py-k", &"0".repeat(32)).await, Err(DflockdError::Server { .. })));
    // Difference: Python 0.5 answers a renew with the *remaining* whole seconds (the Go
    // server and the reference server answer the lease), so `n … 5` reads 4 or 5.
    let renewed = commands::renew(&mut a, "py-k", &grant.token, Some(5)).await.unwrap();
    assert!((4..=5).contains(&renewed), "renew answered {renewed}");
    commands::release(&mut a, "py-k", &grant.token).await.unwrap();

    // A blocking l is woken by a release on another connection.
    let holder = commands::acquire(&mut a, "py-wake", Duration::ZERO, None).await.unwrap();
    let mut waiter = connect(&addr).await;
    let mut c = connect(&addr).await;
    // e / w: c queues behind the holder (`queued` means it is in the queue).
    assert_eq!(commands::enqueue(&mut c, "py-wake", None).await.unwrap(), commands::Enqueued::Queued);
    let blocked = tokio::spawn(async move {
        let grant = commands::acquire(&mut waiter, "py-wake", Duration::from_secs(5), None).await;
        (grant, waiter)
    });
    let released_at = Instant::now();
    commands::release(&mut a, "py-wake", &holder.token).await.unwrap();
    // FIFO: the enqueued c is first.
    let first = commands::wait(&mut c, "py-wake", Duration::from_secs(5)).await.unwrap();
    assert!(released_at.elapsed() < Duration::from_millis(500), "hand-off took {:?}", released_at.elapsed());
    commands::release(&mut c, "py-wake", &first.token).await.unwrap();
    let (second, _waiter) = blocked.await.unwrap();
    assert_ne!(second.expect("then the blocked l").token, first.token);

    // Difference: Python 0.5 accepts a space in a key (the Go and reference servers refuse
    // it). The Rust client never sends one; the raw connection can.
    let reply = a.request("l", "l", "a b", "0").await.unwrap();
    assert!(reply.starts_with("ok "), "{reply}");

    // Difference: Python 0.5 has no `ping` (nor `sl`, `stats`, `auth`); it answers `error`
    // and closes the connection after any malformed request.
    assert!(matches!(commands::ping(&mut b).await, Err(DflockdError::Server { .. })));
    assert!(matches!(commands::ping(&mut b).await, Err(DflockdError::Closed { .. } | DflockdError::Io { .. })));

    // The Locker over it: the generation is detected, and its claims say what it lacks.
    let locker = DflockdLocker::connect(DflockdLockerConfig::new([addr.clone()])).await.unwrap();
    assert_eq!(locker.server_kind(), ServerKind::Legacy);
    let caps = locker.capabilities();
    assert!(!caps.fencing && !caps.semaphores && caps.fifo && caps.server_side_expiry);
    let lease = locker.try_acquire(&LeaseRequest::lock("py-locker", Duration::from_secs(3))).await.unwrap().unwrap();
    assert!(locker.refresh(&lease, Duration::from_secs(3)).await.unwrap().is_some());
    assert!(locker.release(&lease).await.unwrap());
    let sem = locker.try_acquire(&LeaseRequest::semaphore("py-sem", 2, Duration::from_secs(3))).await;
    assert!(matches!(sem, Err(LockError::Unsupported { operation: "semaphores" })), "{sem:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_server_differences_at_lease_expiry_and_at_the_key_cap() {
    let Some(service) = python_server(PythonDflockdOptions { max_locks: 2, ..PythonDflockdOptions::default() }).await
    else {
        return;
    };
    let addr = service.address().to_string();
    let (mut a, mut b) = (connect(&addr).await, connect(&addr).await);
    // A lease granted at `e` that expires before `w`: Python 0.5 answers `timeout` where the
    // Go and reference servers answer `error_lease_expired`.
    let commands::Enqueued::Acquired(_) = commands::enqueue(&mut a, "py-exp", Some(1)).await.unwrap() else {
        panic!("the key was free");
    };
    // b blocks until the one-second lease expires (Python sweeps expiries once a second).
    let taken = commands::acquire(&mut b, "py-exp", Duration::from_secs(5), None).await.unwrap();
    let reply = a.request("w", "w", "py-exp", "0").await.unwrap();
    assert_eq!(reply, "timeout", "Python 0.5's answer to a wait whose lease expired");

    // Difference: with the key table full (max 2), Python 0.5 refuses even a key it already
    // has; the reference server refuses only new keys.
    let mut c = connect(&addr).await;
    let _other = commands::acquire(&mut c, "py-cap", Duration::ZERO, None).await.unwrap();
    let refused = commands::acquire(&mut connect(&addr).await, "py-exp", Duration::ZERO, None).await.unwrap_err();
    assert!(matches!(refused, DflockdError::MaxLocks), "{refused}");
    commands::release(&mut b, "py-exp", &taken.token).await.unwrap();

    let mut config = ServerConfig::ephemeral();
    config.max_locks = 2;
    let reference = Server::start(config).await.unwrap();
    let addr = reference.local_addr().to_string();
    let (mut a, mut b) = (connect(&addr).await, connect(&addr).await);
    commands::acquire(&mut a, "k1", Duration::ZERO, None).await.unwrap();
    commands::acquire(&mut a, "k2", Duration::ZERO, None).await.unwrap();
    assert!(commands::acquire(&mut b, "k1", Duration::ZERO, None).await.unwrap_err().is_timeout());
    assert!(matches!(commands::acquire(&mut b, "k3", Duration::ZERO, None).await, Err(DflockdError::MaxLocks)));
}

// ---------------------------------------------------------------------------------------
// The Python client against the reference server.
// ---------------------------------------------------------------------------------------

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(name)
}

/// Runs a Python client script; `None` when the venv is missing and the run allows skipping.
async fn run_python(script_name: &str, args: &[String]) -> Option<()> {
    let python = venv_python();
    if !python.is_file() {
        let why = format!("no Python venv at {} (run scripts/setup/python.sh)", python.display());
        if Policy::from_env() == Policy::Skip {
            eprintln!("SKIPPED (LOCKCHECK_SERVICES=skip): {why}");
            return None;
        }
        panic!("{why}; set LOCKCHECK_SERVICES=skip to skip");
    }
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python).arg(script(script_name)).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("the script finished within 60 s")
    .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{script_name} {args:?}:\n{stdout}{stderr}");
    assert!(output.status.success(), "{script_name} failed:\n{stdout}\n{stderr}");
    Some(())
}

async fn reference_server(configure: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::ephemeral();
    configure(&mut config);
    Server::start(config).await.expect("the reference server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_against_the_reference_server() {
    let server = reference_server(|_| {}).await;
    let args = vec!["--port".to_owned(), server.local_addr().port().to_string()];
    // Sync and asyncio clients at once, on keys of their own.
    let (sync, asynchronous) =
        tokio::join!(run_python("dflockd_sync_client.py", &args), run_python("dflockd_async_client.py", &args));
    if sync.is_none() || asynchronous.is_none() {
        return;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_over_tls_with_auth() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let server = reference_server(|c| {
        c.tls = Some(ServerTls::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap());
        c.auth_token = Some("correct horse".into());
    })
    .await;
    let dir = ScratchDir::new("lockcheck-dflockd-tls");
    let cafile = dir.0.join("ca.pem");
    std::fs::write(&cafile, &cert_pem).unwrap();
    let args = vec![
        "--port".to_owned(),
        server.local_addr().port().to_string(),
        "--cafile".to_owned(),
        cafile.to_string_lossy().into_owned(),
        "--secret".to_owned(),
        "correct horse".to_owned(),
    ];
    let (sync, asynchronous) =
        tokio::join!(run_python("dflockd_sync_client.py", &args), run_python("dflockd_async_client.py", &args));
    let _ = (sync, asynchronous);
}

/// A scratch directory removed on drop, also when the test panics.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
