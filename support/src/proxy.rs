//! A TCP proxy between the suite's clients and a server, for the faults that live on the
//! connection rather than in the server: cutting every session at once (a network blip under
//! live holders), and a server that notices a departed client late.
//!
//! The second one is how real servers behave: the Python dflockd server does not read a
//! connection while its blocking `l` waits, so a waiter whose client gave up stays queued until
//! its wait bound and may still be granted. [`TcpProxy::with_close_delay`] reproduces that on
//! any server: a client's close reaches the server only after the delay, while the server's
//! replies still flow back.
//!
//! ```no_run
//! use std::time::Duration;
//! use lockcheck_support::proxy::TcpProxy;
//!
//! # async fn example(server: std::net::SocketAddr) -> std::io::Result<()> {
//! let proxy = TcpProxy::start(server).await?.with_close_delay(Duration::from_millis(1500));
//! println!("clients connect to {}", proxy.addr());
//! proxy.cut_all(); // every connection through it ends now, on both sides
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A loopback TCP proxy to one upstream server. Stops (and closes every connection through
/// it) on drop.
pub struct TcpProxy {
    addr: SocketAddr,
    settings: Arc<Settings>,
    accept: JoinHandle<()>,
}

struct Settings {
    /// Bumped by [`TcpProxy::cut_all`]; every connection ends when it changes.
    cuts: watch::Sender<u64>,
    /// How long a client's close waits before it reaches the server, in µs.
    close_delay_us: AtomicU64,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let settings = Arc::new(Settings { cuts: watch::Sender::new(0), close_delay_us: AtomicU64::new(0) });
        let accept = tokio::spawn({
            let settings = settings.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let settings = settings.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(upstream).await {
                            forward(client, server, &settings).await;
                        }
                    });
                }
            }
        });
        Ok(TcpProxy { addr, settings, accept })
    }

    /// A client's close (or reset) reaches the server `delay` later; the server's replies keep
    /// flowing to the client meanwhile.
    pub fn with_close_delay(self, delay: Duration) -> Self {
        self.settings.close_delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
        self
    }

    /// Where clients connect instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends every connection open through the proxy now, on both sides: the server sees its
    /// clients go, the clients see the server go. New connections are accepted as before.
    pub fn cut_all(&self) {
        self.settings.cuts.send_modify(|cuts| *cuts += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// Copies both ways until either side is done or the proxy cuts.
async fn forward(client: TcpStream, server: TcpStream, settings: &Settings) {
    let mut cut = settings.cuts.subscribe();
    cut.mark_unchanged();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let close_delay = Duration::from_micros(settings.close_delay_us.load(Ordering::Relaxed));
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                _ => break,
            }
        }
        // The client is gone: the server learns it only after the delay.
        tokio::time::sleep(close_delay).await;
        let _ = server_write.shutdown().await;
        // Keep the write half (and so the connection) until the server side is done.
        std::future::pending::<()>().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
        _ = cut.changed() => {}
    }
}
