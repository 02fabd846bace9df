//! The fake clock on real servers: what libfaketime can and cannot reach.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use lockcheck_support::Policy;
use lockcheck_support::clock::{FakeClock, fakeable, start_with_fake_clock};
use lockcheck_support::redis::{RedisOptions, spec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

/// One test at a time: both start programs on libfaketime, whose shared-memory files the
/// Redis test counts.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fake clock; without libfaketime a loud failure, unless `LOCKCHECK_SERVICES=skip`.
fn fake_clock() -> Option<FakeClock> {
    match FakeClock::new() {
        Ok(clock) => Some(clock),
        Err(error) if Policy::from_env() == Policy::Skip => {
            eprintln!("SKIPPED (LOCKCHECK_SERVICES=skip): {error}");
            None
        }
        Err(error) => panic!("{error}"),
    }
}

/// The year a program reports, run with `env` (`date -u +%Y`).
fn year_of_date(env: &[(String, String)]) -> String {
    let output = Command::new("date").arg("-u").arg("+%Y").envs(env.iter().cloned()).output().expect("date runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Sends one inline command to Redis and returns the first line of the reply.
async fn redis_command(stream: &mut AsyncBufReader<TcpStream>, command: &str) -> String {
    stream.get_mut().write_all(format!("{command}\r\n").as_bytes()).await.unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    line.trim().to_owned()
}

/// Redis expires keys by its wall clock: a step of two lease lengths ends a `PX` lease at once.
#[tokio::test]
async fn a_forward_jump_expires_a_redis_key_early() {
    let _turn = TURNS.lock().await;
    let Some(clock) = fake_clock() else { return };
    let Some(server) =
        start_with_fake_clock(&spec(&RedisOptions::default()), &clock).await.expect("redis on a fake clock")
    else {
        return;
    };
    let before = faketime_segments();
    let mut redis = AsyncBufReader::new(TcpStream::connect(server.address()).await.unwrap());
    assert_eq!(redis_command(&mut redis, "SET lease holder PX 60000").await, "+OK");
    assert_eq!(redis_command(&mut redis, "EXISTS lease").await, ":1");
    clock.jump(Duration::from_secs(120)).unwrap();
    assert_eq!(redis_command(&mut redis, "EXISTS lease").await, ":0", "the step ended the lease");
    assert_eq!(redis_command(&mut redis, "SET lease other NX PX 60000").await, "+OK", "and another is granted it");
    drop(server);
    let left: Vec<String> = faketime_segments().into_iter().filter(|name| !before.contains(name)).collect();
    let ours: Vec<String> = before.into_iter().filter(|name| !faketime_segments().contains(name)).collect();
    assert!(left.is_empty(), "libfaketime's shared memory outlived the server: {left:?}");
    assert_eq!(ours.len(), 2, "the server's segment and semaphore were removed with it");
}

/// libfaketime's shared-memory files in `/dev/shm`.
fn faketime_segments() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.contains("faketime_"))
        .collect()
}

/// The claim behind "not checked" for NATS, verified: the same settings that move `date` a
/// year ahead leave the time the NATS server logs alone.
#[test]
fn libfaketime_moves_a_libc_program_but_not_the_nats_server() {
    let _turn = TURNS.blocking_lock();
    let Some(clock) = fake_clock() else { return };
    let real = year_of_date(&[]);
    clock.jump(Duration::from_secs(400 * 86_400)).unwrap();
    let env = clock.env();
    assert_ne!(year_of_date(&env), real, "libfaketime moves a program that reads the clock through libc");
    assert!(fakeable("date").is_ok());
    let nats = std::env::var("LOCKCHECK_NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
    let why = fakeable(&nats).expect_err("nats-server cannot be faked");
    assert!(why.contains("Go program"), "{why}");
    let mut server = Command::new(&nats)
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .envs(env)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("nats-server runs");
    let mut first = String::new();
    BufReader::new(server.stderr.take().unwrap()).read_line(&mut first).unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    // `[pid] 2026/12/06 14:43:39.545580 [INF] Starting nats-server`
    let logged = first.split_whitespace().nth(1).and_then(|date| date.split('/').next()).unwrap_or_default();
    assert_eq!(logged, real, "the NATS server logs the real time under libfaketime: {first}");
}
