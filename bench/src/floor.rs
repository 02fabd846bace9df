//! Floors: the cheapest thing a backend could possibly do, measured in the same run.
//!
//! A network lock cannot hand off faster than one round trip to its server, so its figures
//! are reported as multiples of a round trip measured on the same machine at the same time —
//! a ratio that survives a noisy machine far better than absolute microseconds.
//! [`TcpEcho`] is the generic floor (one byte to an in-process echo server on loopback and
//! back); a backend adds its own protocol-level one (`PING` for Redis, a request for NATS)
//! by implementing [`RoundTrip`].

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::BenchError;

/// One round trip to a server: the floor of a network backend.
pub trait RoundTrip: Send + Sync + 'static {
    /// The name plots and tables show, e.g. `TCP echo (loopback)` or `redis PING`.
    fn name(&self) -> String;

    /// Sends one request and waits for its answer.
    fn round_trip(&self) -> impl Future<Output = Result<(), BenchError>> + Send;
}

/// A one-byte echo over loopback TCP to a server task in this process: the lowest latency
/// any request/response protocol on this machine can reach.
///
/// Start it on the runtime the measured server runs on ([`TcpEcho::start_on`]), so the floor
/// pays what the server pays: a server on a thread of its own answers only after a wake-up
/// across threads, which a same-thread echo would not count.
///
/// The server task is aborted when the `TcpEcho` is dropped.
pub struct TcpEcho {
    client: Mutex<TcpStream>,
    server: JoinHandle<()>,
    address: SocketAddr,
}

impl TcpEcho {
    /// Starts the echo server on `127.0.0.1:0` and connects to it. Must run inside a tokio
    /// runtime with I/O enabled; the server lives on that runtime.
    pub async fn start() -> Result<TcpEcho, BenchError> {
        Self::start_on(&tokio::runtime::Handle::current()).await
    }

    /// Starts the echo server on the runtime of `server` (the one the measured server runs
    /// on) and connects to it from the current runtime.
    pub async fn start_on(server: &tokio::runtime::Handle) -> Result<TcpEcho, BenchError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(BenchError::Io)?;
        listener.set_nonblocking(true).map_err(BenchError::Io)?;
        let address = listener.local_addr().map_err(BenchError::Io)?;
        let server = server.spawn(async move {
            // Registered here, inside the server's runtime, so its I/O is driven there.
            let Ok(listener) = TcpListener::from_std(listener) else { return };
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    while stream.read_exact(&mut byte).await.is_ok() {
                        if stream.write_all(&byte).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let client = TcpStream::connect(address).await.map_err(BenchError::Io)?;
        client.set_nodelay(true).map_err(BenchError::Io)?;
        Ok(TcpEcho { client: Mutex::new(client), server, address })
    }

    /// Where the echo server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RoundTrip for TcpEcho {
    fn name(&self) -> String {
        "TCP echo (loopback)".to_owned()
    }

    async fn round_trip(&self) -> Result<(), BenchError> {
        let mut client = self.client.lock().await;
        client.write_all(b"x").await.map_err(BenchError::Io)?;
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).await.map_err(BenchError::Io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_echo_answers() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let echo = TcpEcho::start().await.unwrap();
            for _ in 0..10 {
                echo.round_trip().await.unwrap();
            }
            assert!(echo.address().ip().is_loopback());
        });
    }

    #[test]
    fn tcp_echo_answers_from_another_runtime() {
        let server = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let client = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        client.block_on(async {
            let echo = TcpEcho::start_on(server.handle()).await.unwrap();
            for _ in 0..10 {
                echo.round_trip().await.unwrap();
            }
        });
    }
}
