//! One client connection (TCP or TLS): one request in flight, enforced by `&mut self`.
//!
//! Cancellation: dropping a request's future mid-way leaves the stream out of step (a reply
//! may still arrive), so the connection marks itself *poisoned* and refuses further requests;
//! the caller closes it. Closing is what cancels on the server: a dflockd server drops the
//! connection's waiters and, with auto-release on (the default), releases whatever the
//! connection held, including a grant that raced the cancellation.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::error::DflockdError;
use super::protocol::MAX_LINE_BYTES;
use super::tls::ClientTls;

/// The longest reply line the client accepts (a `stats` reply carries the whole table).
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// How a client reaches a server.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// TLS, or plain TCP when `None`.
    pub tls: Option<ClientTls>,
    /// Bound on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { tls: None, connect_timeout: Duration::from_secs(10) }
    }
}

pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How long this connection's round trips take, from the requests a server answers without
/// waiting: the smoothed estimate of RFC 6298 (§2), `SRTT + 4·RTTVAR`, without its one-second
/// floor. TCP uses it as the time after which a reply should have arrived; here it bounds how
/// long before its arrival a reply can have left the server.
#[derive(Clone, Copy, Debug, Default)]
struct RoundTrips {
    smoothed: Option<Duration>,
    variation: Duration,
}

impl RoundTrips {
    fn observe(&mut self, sample: Duration) {
        match self.smoothed {
            None => {
                self.smoothed = Some(sample);
                self.variation = sample / 2;
            }
            Some(smoothed) => {
                self.variation = (self.variation * 3 + smoothed.abs_diff(sample)) / 4;
                self.smoothed = Some((smoothed * 7 + sample) / 8);
            }
        }
    }

    fn bound(&self) -> Option<Duration> {
        self.smoothed.map(|smoothed| smoothed + self.variation * 4)
    }
}

/// Whether the server may hold this request back (a blocking `l`/`sl`/`w`/`sw` waits in the
/// key's queue), so its round trip says nothing about the network.
fn may_wait(cmd: &str, arg: &str) -> bool {
    matches!(cmd, "l" | "sl" | "w" | "sw") && arg.split(' ').next() != Some("0")
}

/// A connection to one dflockd server.
pub struct Connection {
    stream: BufReader<Stream>,
    addr: String,
    in_flight: bool,
    /// The in-flight request was written completely: its reply may still come.
    written: bool,
    request: Vec<u8>,
    reply: Vec<u8>,
    round_trips: RoundTrips,
    /// When the latest answered request was sent and its reply arrived.
    last_exchange: Option<(Instant, Instant)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("addr", &self.addr).field("poisoned", &self.in_flight).finish()
    }
}

impl Connection {
    /// Opens a connection to `addr` (`host:port`).
    pub async fn connect(addr: &str, options: &ConnectOptions) -> Result<Connection, DflockdError> {
        let mut round_trips = RoundTrips::default();
        let connect = async {
            let dialled = Instant::now();
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| DflockdError::Connect { addr: addr.to_owned(), source })?;
            // The handshake is one round trip (SYN, SYN-ACK): the first sample.
            round_trips.observe(dialled.elapsed());
            // Requests are tiny and latency-bound: never wait to coalesce them.
            tcp.set_nodelay(true).map_err(|source| DflockdError::Connect { addr: addr.to_owned(), source })?;
            let stream = match &options.tls {
                None => Stream::Tcp(tcp),
                Some(tls) => {
                    let name = tls.server_name.clone().unwrap_or_else(|| host_of(addr).to_owned());
                    let name = ServerName::try_from(name)
                        .map_err(|e| DflockdError::Tls { addr: addr.to_owned(), message: e.to_string() })?;
                    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                    let stream = connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| DflockdError::Tls { addr: addr.to_owned(), message: e.to_string() })?;
                    Stream::Tls(Box::new(stream))
                }
            };
            Ok(stream)
        };
        let stream =
            tokio::time::timeout(options.connect_timeout, connect).await.map_err(|_| DflockdError::Connect {
                addr: addr.to_owned(),
                source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            })??;
        Ok(Connection {
            stream: BufReader::with_capacity(4096, stream),
            addr: addr.to_owned(),
            in_flight: false,
            written: false,
            request: Vec::with_capacity(128),
            reply: Vec::with_capacity(128),
            round_trips,
            last_exchange: None,
        })
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether an abandoned request left this connection out of step (it must be closed).
    pub fn is_poisoned(&self) -> bool {
        self.in_flight
    }

    /// Sends `<cmd>\n<key>\n<arg>\n` and returns the reply line without its newline.
    /// `command` names the operation in errors.
    pub async fn request(
        &mut self,
        command: &'static str,
        cmd: &str,
        key: &str,
        arg: &str,
    ) -> Result<String, DflockdError> {
        self.request_line(command, cmd, key, arg).await.map(str::to_owned)
    }

    /// [`Connection::request`], the reply borrowed from the connection's buffer.
    pub(crate) async fn request_line(
        &mut self,
        command: &'static str,
        cmd: &str,
        key: &str,
        arg: &str,
    ) -> Result<&str, DflockdError> {
        if self.in_flight {
            return Err(DflockdError::Poisoned);
        }
        for (what, line) in [("key", key), ("argument", arg)] {
            if line.contains(['\n', '\r']) {
                return Err(DflockdError::InvalidArgument(format!("the {what} contains a newline")));
            }
            if line.len() > MAX_LINE_BYTES {
                return Err(DflockdError::InvalidArgument(format!(
                    "the {what} is {} bytes; a protocol line holds at most {MAX_LINE_BYTES}",
                    line.len()
                )));
            }
        }
        self.request.clear();
        for line in [cmd, key, arg] {
            self.request.extend_from_slice(line.as_bytes());
            self.request.push(b'\n');
        }
        self.in_flight = true;
        self.written = false;
        let io_err = |source| DflockdError::Io { command, source };
        let sent_at = Instant::now();
        self.stream.get_mut().write_all(&self.request).await.map_err(io_err)?;
        self.stream.get_mut().flush().await.map_err(io_err)?;
        self.written = true;
        self.reply.clear();
        let read = (&mut self.stream).take(MAX_REPLY_BYTES as u64 + 1).read_until(b'\n', &mut self.reply).await;
        let n = read.map_err(io_err)?;
        if n == 0 || self.reply.last() != Some(&b'\n') {
            if self.reply.len() > MAX_REPLY_BYTES {
                return Err(DflockdError::UnexpectedReply { command, reply: "reply longer than 1 MiB".into() });
            }
            return Err(DflockdError::Closed { command });
        }
        let received_at = Instant::now();
        if !may_wait(cmd, arg) {
            self.round_trips.observe(received_at - sent_at);
        }
        self.last_exchange = Some((sent_at, received_at));
        self.in_flight = false;
        self.written = false;
        let line = self.reply.strip_suffix(b"\n").unwrap_or(&self.reply);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        std::str::from_utf8(line).map_err(|_| DflockdError::UnexpectedReply {
            command,
            reply: String::from_utf8_lossy(line).chars().take(64).collect(),
        })
    }

    /// When the latest answered request's reply arrived.
    pub(crate) fn last_reply_at(&self) -> Option<Instant> {
        self.last_exchange.map(|(_, received_at)| received_at)
    }

    /// The instant after which the server acted on the latest answered request (a grant, a
    /// renewal): a lower bound on the server's own instant, as tight as the connection's round
    /// trips allow, `None` before any reply.
    ///
    /// The server acts after the request arrives and writes the reply when it acts, so the
    /// action happened between sending and receipt. For a request answered at once the
    /// sending instant is the bound. A blocking `l` or `w` may have waited in the queue for
    /// most of that time (a hand-off grants just before replying), and counting its lease
    /// from the sending instant would make the holder believe it ends up to the whole wait
    /// too early. The bound is then the reply's arrival minus how long a reply can take on
    /// this connection: the RFC 6298 estimate `SRTT + 4·RTTVAR` of the round trips of the
    /// requests answered at once (the connect handshake among them). A round trip covers the
    /// reply's one-way trip; a reply delayed beyond that estimate (a stalled client or
    /// server) makes the bound late by the excess.
    pub fn took_effect_after(&self) -> Option<Instant> {
        let (sent_at, received_at) = self.last_exchange?;
        let in_transit = self.round_trips.bound().unwrap_or(received_at - sent_at);
        Some(received_at.checked_sub(in_transit).map_or(sent_at, |left| left.max(sent_at)))
    }

    /// Whether a request was written in full and then abandoned before its reply was read:
    /// the server may have acted on it.
    pub fn reply_pending(&self) -> bool {
        self.in_flight && self.written
    }

    /// For a connection whose request was abandoned after it was written: stops sending
    /// (a half-close, which a dflockd server treats as the client leaving: it drops the
    /// connection's waiters) and reads the reply that may still arrive, for up to `patience`.
    /// The caller can then give back a grant nobody will use.
    pub async fn abandon(mut self, patience: Duration) -> Option<String> {
        if !self.reply_pending() {
            return None;
        }
        let _ = self.stream.get_mut().shutdown().await;
        // Part of the reply may have been read before the request was abandoned: carry on
        // from there.
        let reply = tokio::time::timeout(patience, async {
            let limit = MAX_LINE_BYTES as u64 * 2;
            let n = (&mut self.stream).take(limit).read_until(b'\n', &mut self.reply).await.ok()?;
            (n > 0 || !self.reply.is_empty()).then_some(())?;
            self.reply.ends_with(b"\n").then(|| String::from_utf8_lossy(&self.reply).trim_end().to_owned())
        })
        .await;
        reply.ok().flatten()
    }

    /// Closes the connection politely (TLS close_notify). Dropping it closes it too.
    pub async fn close(mut self) {
        let _ = self.stream.get_mut().shutdown().await;
    }
}

fn host_of(addr: &str) -> &str {
    // "[::1]:6388" → "::1"; "host:6388" → "host".
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
