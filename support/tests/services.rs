//! The service layer on real Redis: start, readiness, and every fault the fault tests use,
//! on Docker and on the process fallback.

use std::time::Duration;

use lockcheck_support::redis::{RedisOptions, spec};
use lockcheck_support::{Policy, Runtime, Service, provision};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One `PING` on a fresh connection, bounded by `within`.
async fn ping(service: &Service, within: Duration) -> Result<(), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(service.address()).await.map_err(|e| e.to_string())?;
        stream.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
        let mut reply = [0; 5];
        stream.read_exact(&mut reply).await.map_err(|e| e.to_string())?;
        if &reply == b"+PONG" { Ok(()) } else { Err(format!("{reply:?}")) }
    };
    tokio::time::timeout(within, exchange).await.map_err(|_| "no answer".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_server_survives_every_fault() {
    let Some(mut redis) = provision(&spec(&RedisOptions::default())).await.expect("a Redis server") else { return };
    println!("REAL REDIS: redis_server_survives_every_fault on {} at {}", redis.runtime(), redis.address());
    ping(&redis, Duration::from_secs(2)).await.expect("answers after start");

    redis.pause().await.expect("pause");
    assert!(ping(&redis, Duration::from_millis(300)).await.is_err(), "a paused server must not answer");
    redis.unpause().await.expect("unpause");
    ping(&redis, Duration::from_secs(2)).await.expect("answers after unpause");

    redis.kill().await.expect("kill");
    assert!(ping(&redis, Duration::from_millis(300)).await.is_err(), "a killed server must not answer");
    redis.start_again().await.expect("start again");
    ping(&redis, Duration::from_secs(2)).await.expect("answers after restart, same address");

    match redis.disconnect().await {
        Ok(()) => {
            assert!(ping(&redis, Duration::from_millis(300)).await.is_err(), "a partitioned server must not answer");
            redis.reconnect().await.expect("reconnect");
            ping(&redis, Duration::from_secs(2)).await.expect("answers after the partition heals");
        }
        Err(error) if error.is_unsupported() && redis.runtime() == Runtime::Process => {
            println!("partition not possible with the process runtime: {error}");
        }
        Err(error) => panic!("disconnect: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_fallback_runs_redis_server() {
    // The process runtime, whatever LOCKCHECK_SERVICE_RUNTIME says: it is what machines
    // without Docker use, so it is tested wherever redis-server is installed.
    let spec = spec(&RedisOptions::default());
    let mut service = match Service::start_on(&spec, Runtime::Process).await {
        Ok(service) => service,
        Err(error) if Policy::from_env() == Policy::Skip => {
            println!("SKIPPED (LOCKCHECK_SERVICES=skip): {error}");
            return;
        }
        Err(error) => panic!("{error}"),
    };
    println!("REAL REDIS: process_fallback_runs_redis_server on {} at {}", service.runtime(), service.address());
    assert_eq!(service.runtime(), Runtime::Process);
    ping(&service, Duration::from_secs(2)).await.expect("answers after start");
    service.pause().await.expect("pause");
    assert!(ping(&service, Duration::from_millis(300)).await.is_err(), "a stopped process must not answer");
    service.unpause().await.expect("unpause");
    service.restart().await.expect("restart");
    ping(&service, Duration::from_secs(2)).await.expect("answers after restart, same address");
    let error = service.disconnect().await.expect_err("no partitions for processes");
    assert!(error.is_unsupported(), "{error}");
}
