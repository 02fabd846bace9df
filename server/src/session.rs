//! One client connection on the server: read three bounded lines, answer one line, repeat.
//!
//! What keeps a hostile client harmless: every line is capped while it is being read (an
//! over-long line gets `error` and a close), every line must arrive within the read timeout
//! (one byte a second does not keep a connection alive), malformed requests get `error`
//! without touching the table, and a connection can only release or renew with a token it
//! was given. When the connection ends, however it ends (even if its task is aborted),
//! [`Session`]'s `Drop` takes its waiters out of the queues and releases what it held.
//!
//! The per-request path is kept to the two system calls it needs (one read, one write): a
//! request already in the buffer is parsed where it lies ([`scan_line`], the code the fuzz
//! target drives), the read timeout and the drain signal are one timer and one subscription
//! per connection, re-armed rather than re-created for every line, and a reply that fits the
//! socket buffer is written without arming the write timer at all.
//!
//! Memory: the inbox is fixed (1 KiB); the reply buffer is shrunk back to
//! [`REPLY_BUFFER_KEEP`] after any reply that grew it, and a `stats` document is written from
//! its own buffer, freed once written. The next request is read only once the reply before
//! it is written in full, so a client that does not read its replies stalls itself, not
//! the server. Before authentication (with a secret set) the connection holds a pre-auth
//! pass and must authenticate by its auth deadline; a wrong secret is answered only after
//! the throttling delay.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep, timeout_at};

use super::Shared;
use super::auth::PreAuthPass;
use super::table::{Admission, ConnId, Grant, Granted, KeyId, after, later};
use lockcheck_impls::dflockd::protocol::{
    LineScan, MAX_LINE_BYTES, Reply, Request, RequestError, Status, parse_request, scan_line,
};

/// Room for one request at its longest (three capped lines with `\r\n`), and then some:
/// a partial request never needs more, so the buffer never grows.
const INBOX_BYTES: usize = 1024;
const _: () = assert!(INBOX_BYTES >= 3 * (MAX_LINE_BYTES + 2));

/// The most a connection's reply buffer keeps between replies, in bytes. Every reply but
/// `stats` is far shorter (a grant is under 64 bytes); a buffer that grew past this for
/// one reply is given back right after it.
pub const REPLY_BUFFER_KEEP: usize = 1024;

enum Enqueued {
    Granted { grant: Grant, lease_s: u64 },
    Waiting { waiter: u64, rx: oneshot::Receiver<Granted>, lease_s: u64 },
}

/// Why a connection ends.
enum End {
    /// The peer closed, or I/O failed.
    Gone,
    /// Write this status, then close.
    Reply(Status),
}

/// Bytes read from the peer and not yet consumed: at most the request being read and what
/// the client pipelined behind it.
struct Inbox {
    buf: Box<[u8; INBOX_BYTES]>,
    start: usize,
    end: usize,
}

impl Inbox {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Where the next read goes. Moves a partial request to the front first; it is at most
    /// three capped lines, so there is always room after it.
    fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }
}

/// How far the request at the front of the inbox has arrived.
enum Framing {
    /// All three lines: their content ranges, and the bytes they occupy.
    Complete { lines: [(usize, usize); 3], consumed: usize },
    /// This many lines are complete; the next has not fully arrived.
    Partial { complete: usize },
    /// A line is over the cap.
    TooLong,
}

fn frame(data: &[u8]) -> Framing {
    let mut lines = [(0, 0); 3];
    let mut at = 0;
    for (i, line) in lines.iter_mut().enumerate() {
        match scan_line(&data[at..]) {
            LineScan::Line { content_len, consumed } => {
                *line = (at, at + content_len);
                at += consumed;
            }
            LineScan::Incomplete => return Framing::Partial { complete: i },
            LineScan::TooLong => return Framing::TooLong,
        }
    }
    Framing::Complete { lines, consumed: at }
}

/// Resolves once the server drains, and stays resolved. One subscription per connection.
struct DrainSignal(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl DrainSignal {
    fn new(mut draining: watch::Receiver<bool>) -> Self {
        DrainSignal(Some(Box::pin(async move {
            if draining.wait_for(|draining| *draining).await.is_err() {
                // The server is gone without draining: never.
                std::future::pending::<()>().await;
            }
        })))
    }

    async fn fired(&mut self) {
        if let Some(signal) = &mut self.0 {
            signal.as_mut().await;
            self.0 = None;
        }
    }
}

struct Session<S> {
    stream: S,
    inbox: Inbox,
    shared: Arc<Shared>,
    conn: ConnId,
    peer: IpAddr,
    authenticated: bool,
    /// Until authenticated (with a secret set): the connection's place among the
    /// unauthenticated, and the time by which it must have authenticated.
    pre_auth: Option<(PreAuthPass, Instant)>,
    /// Fires once the server drains (whether it is draining now: `shared.draining`).
    drain: DrainSignal,
    /// The read timeout of the line being waited for, or a queued request's wait bound.
    timer: Pin<Box<Sleep>>,
    enqueued: HashMap<KeyId, Enqueued>,
    out: Vec<u8>,
    /// The reply buffer's capacity as counted in `shared.reply_bytes`.
    out_counted: usize,
}

pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
    stream: S,
    shared: Arc<Shared>,
    conn: ConnId,
    peer: IpAddr,
    pre_auth: Option<(PreAuthPass, Instant)>,
) {
    let now = Instant::now();
    let out = Vec::with_capacity(64);
    shared.reply_bytes.fetch_add(out.capacity(), Ordering::Relaxed);
    let mut session = Session {
        stream,
        inbox: Inbox { buf: Box::new([0; INBOX_BYTES]), start: 0, end: 0 },
        authenticated: shared.auth_token.is_none(),
        pre_auth,
        drain: DrainSignal::new(shared.draining.clone()),
        timer: Box::pin(tokio::time::sleep_until(later(now, shared.read_timeout))),
        shared,
        conn,
        peer,
        enqueued: HashMap::new(),
        out_counted: out.capacity(),
        out,
    };
    if let End::Reply(status) = session.run().await {
        let _ = session.write(&Reply::Status(status)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), session.stream.shutdown()).await;
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        self.shared.reply_bytes.fetch_sub(self.out_counted, Ordering::Relaxed);
        let waiting: Vec<(KeyId, u64)> = self
            .enqueued
            .drain()
            .filter_map(|(id, e)| match e {
                Enqueued::Waiting { waiter, .. } => Some((id, waiter)),
                Enqueued::Granted { .. } => None,
            })
            .collect();
        self.shared.table.disconnect(self.conn, &waiting);
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> Session<S> {
    async fn run(&mut self) -> End {
        loop {
            let parsed = match self.read_request().await {
                Ok(parsed) => parsed,
                Err(end) => return end,
            };
            if *self.shared.draining.borrow() {
                return End::Reply(Status::ErrorDraining);
            }
            let request = match parsed {
                Ok(Request::Stats) if self.authenticated => {
                    if let Err(end) = self.write_stats().await {
                        return end;
                    }
                    continue;
                }
                Ok(request) => request,
                Err(_) if !self.authenticated => return End::Reply(Status::ErrorAuth),
                // Like the Go server: a malformed request is answered and the connection
                // stays usable.
                Err(_) => {
                    if let Err(end) = self.write(&Reply::Status(Status::Error)).await {
                        return end;
                    }
                    continue;
                }
            };
            let reply = match self.handle(request).await {
                Ok(reply) => reply,
                Err(end) => return end,
            };
            if let Err(end) = self.write(&reply).await {
                return end;
            }
        }
    }

    /// The next request's three lines, parsed. Each line must arrive within the read timeout,
    /// counted from when the line before it was complete (for the first, from when the
    /// server was ready for the request); a line already buffered costs no clock read. While
    /// idle between requests, a drain ends the connection with `error_draining`.
    async fn read_request(&mut self) -> Result<Result<Request, RequestError>, End> {
        // The line being waited for, and its deadline.
        let mut waiting: Option<(usize, Instant)> = None;
        loop {
            match frame(self.inbox.data()) {
                Framing::Complete { lines: [cmd, key, arg], consumed } => {
                    let data = self.inbox.data();
                    let parsed = parse_request(&data[cmd.0..cmd.1], &data[key.0..key.1], &data[arg.0..arg.1]);
                    self.inbox.consume(consumed);
                    return Ok(parsed);
                }
                Framing::TooLong => return Err(End::Reply(Status::Error)),
                Framing::Partial { complete } => {
                    let deadline = match waiting {
                        Some((line, deadline)) if line == complete => deadline,
                        _ => {
                            let mut deadline = later(Instant::now(), self.shared.read_timeout);
                            if let Some((_, auth_deadline)) = &self.pre_auth {
                                deadline = deadline.min(*auth_deadline);
                            }
                            waiting = Some((complete, deadline));
                            deadline
                        }
                    };
                    self.timer.as_mut().reset(deadline);
                    let idle = self.inbox.is_empty();
                    let Session { stream, inbox, timer, drain, .. } = self;
                    tokio::select! {
                        biased;
                        read = stream.read(inbox.spare()) => match read {
                            Ok(n) if n > 0 => inbox.end += n,
                            _ => return Err(End::Gone),
                        },
                        () = timer.as_mut() => return Err(End::Reply(Status::Error)),
                        // Idle at a drain: say so (a request racing the drain reads it as its
                        // reply, a truly idle client on its next request), then close.
                        () = drain.fired(), if idle => return Err(End::Reply(Status::ErrorDraining)),
                    }
                }
            }
        }
    }

    async fn write(&mut self, reply: &Reply) -> Result<(), End> {
        use std::io::Write;
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        write!(out, "{reply}").expect("writing to a Vec");
        let sent = self.send(&out).await;
        // A reply that grew the buffer does not keep it for the life of the connection.
        if out.capacity() > REPLY_BUFFER_KEEP {
            out = Vec::with_capacity(64);
        }
        self.out = out;
        self.count_reply_buffer();
        sent
    }

    /// Keeps `shared.reply_bytes` in step with the reply buffer's capacity.
    fn count_reply_buffer(&mut self) {
        let capacity = self.out.capacity();
        if capacity > self.out_counted {
            self.shared.reply_bytes.fetch_add(capacity - self.out_counted, Ordering::Relaxed);
        } else {
            self.shared.reply_bytes.fetch_sub(self.out_counted - capacity, Ordering::Relaxed);
        }
        self.out_counted = capacity;
    }

    /// `stats`: built and written in its own buffer, freed once written, with at most
    /// `MAX_CONCURRENT_STATS` such documents alive across the server.
    async fn write_stats(&mut self) -> Result<(), End> {
        let shared = self.shared.clone();
        let _turn = tokio::select! {
            turn = shared.stats_turns.acquire() => turn.expect("the stats semaphore is never closed"),
            () = self.drain.fired() => return Err(End::Reply(Status::ErrorDraining)),
        };
        let json = shared.table.stats(*shared.connections.borrow()).to_string();
        let mut doc = String::with_capacity(json.len() + 4);
        doc.push_str("ok ");
        doc.push_str(&json);
        doc.push('\n');
        drop(json);
        let held = doc.capacity();
        shared.reply_bytes.fetch_add(held, Ordering::Relaxed);
        let sent = self.send(doc.as_bytes()).await;
        shared.reply_bytes.fetch_sub(held, Ordering::Relaxed);
        sent
    }

    /// Writes `bytes` in full, within the write timeout.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), End> {
        // A reply almost always fits the socket buffer at once: try that before arming the
        // write timeout, which costs a clock read and a timer.
        let stream = &mut self.stream;
        let mut written = 0;
        let done = std::future::poll_fn(|cx| {
            while written < bytes.len() {
                match Pin::new(&mut *stream).poll_write(cx, &bytes[written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(End::Gone)),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Pending => return Poll::Ready(Ok(false)),
                }
            }
            match Pin::new(&mut *stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(true)),
                Poll::Ready(Err(_)) => Poll::Ready(Err(End::Gone)),
                Poll::Pending => Poll::Ready(Ok(false)),
            }
        })
        .await?;
        if done {
            return Ok(());
        }
        // The peer is not reading: this connection reads nothing more until it does.
        self.shared.stalled.send_modify(|n| *n += 1);
        let deadline = later(Instant::now(), self.shared.write_timeout);
        let result = match timeout_at(deadline, self.stream.write_all(&bytes[written..])).await {
            Ok(Ok(())) => match timeout_at(deadline, self.stream.flush()).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(End::Gone),
            },
            _ => Err(End::Gone),
        };
        self.shared.stalled.send_modify(|n| *n -= 1);
        result
    }

    async fn handle(&mut self, request: Request) -> Result<Reply, End> {
        if !self.authenticated && !matches!(request, Request::Auth { .. }) {
            return Err(End::Reply(Status::ErrorAuth));
        }
        let default_lease = self.shared.default_lease_s;
        // Longer leases are granted this long; the reply says so.
        let max_lease = self.shared.max_lease_s;
        let max_limit = self.shared.max_semaphore_limit;
        Ok(match request {
            Request::Auth { secret } => match &self.shared.auth_token {
                None => Reply::Ok,
                Some(expected) => {
                    if bool::from(secret.as_bytes().ct_eq(expected.as_bytes())) {
                        self.authenticated = true;
                        self.pre_auth = None;
                        Reply::Ok
                    } else {
                        let delay = self.shared.auth.failed(self.peer);
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = self.drain.fired() => {}
                        }
                        return Err(End::Reply(Status::ErrorAuth));
                    }
                }
            },
            Request::Ping => Reply::Ok,
            Request::Stats => Reply::Stats(self.shared.table.stats(*self.shared.connections.borrow()).to_string()),
            Request::Acquire { limit, .. } | Request::Enqueue { limit, .. } if limit > max_limit => {
                Reply::Status(Status::Error)
            }
            Request::Acquire { ns, key, timeout_s, limit, lease_s } => {
                let id = (ns, key);
                let lease_s = lease_s.unwrap_or(default_lease).min(max_lease);
                match self.shared.table.admit(&id, limit, lease_s, self.conn, timeout_s > 0) {
                    Err(status) => Reply::Status(status),
                    Ok(Admission::Busy) => Reply::Status(Status::Timeout),
                    Ok(Admission::Granted(Grant { token, lease_s })) => Reply::Granted { token, lease_s },
                    Ok(Admission::Queued { waiter, mut rx }) => {
                        match self.wait_for_grant(&id, waiter, &mut rx, timeout_s).await? {
                            Ok(Grant { token, lease_s }) => Reply::Granted { token, lease_s },
                            Err(status) => Reply::Status(status),
                        }
                    }
                }
            }
            Request::Release { ns, key, token } => {
                if self.shared.table.release(&(ns, key), &token) {
                    Reply::Ok
                } else {
                    Reply::Status(Status::Error)
                }
            }
            Request::Renew { ns, key, token, lease_s } => {
                match self.shared.table.renew(&(ns, key), &token, lease_s.unwrap_or(default_lease).min(max_lease)) {
                    Some(lease_s) => Reply::Renewed { lease_s },
                    None => Reply::Status(Status::Error),
                }
            }
            Request::Enqueue { ns, key, limit, lease_s } => {
                let id = (ns, key);
                if self.enqueued.contains_key(&id) {
                    return Ok(Reply::Status(Status::ErrorAlreadyEnqueued));
                }
                let cap = self.shared.max_waiters_per_connection;
                if cap > 0 && self.enqueued.len() >= cap {
                    return Ok(Reply::Status(Status::ErrorMaxWaiters));
                }
                let lease_s = lease_s.unwrap_or(default_lease).min(max_lease);
                match self.shared.table.admit(&id, limit, lease_s, self.conn, true) {
                    Err(status) => Reply::Status(status),
                    Ok(Admission::Busy) => unreachable!("admit with queue=true never reports busy"),
                    Ok(Admission::Granted(grant)) => {
                        let reply = Reply::Acquired { token: grant.token.clone(), lease_s: grant.lease_s };
                        self.enqueued.insert(id, Enqueued::Granted { grant, lease_s });
                        reply
                    }
                    Ok(Admission::Queued { waiter, rx }) => {
                        self.enqueued.insert(id, Enqueued::Waiting { waiter, rx, lease_s });
                        Reply::Queued
                    }
                }
            }
            Request::Wait { ns, key, timeout_s } => {
                let id = (ns, key);
                let grant = match self.enqueued.remove(&id) {
                    None => return Ok(Reply::Status(Status::ErrorNotEnqueued)),
                    Some(Enqueued::Granted { grant, lease_s }) => Ok((grant, lease_s)),
                    Some(Enqueued::Waiting { waiter, mut rx, lease_s }) => {
                        self.wait_for_grant(&id, waiter, &mut rx, timeout_s).await?.map(|g| (g, lease_s))
                    }
                };
                match grant {
                    Err(status) => Reply::Status(status),
                    // A successful wait restarts the lease given at enqueue.
                    Ok((grant, lease_s)) => match self.shared.table.renew(&id, &grant.token, lease_s) {
                        Some(lease_s) => Reply::Granted { token: grant.token, lease_s },
                        None => Reply::Status(Status::ErrorLeaseExpired),
                    },
                }
            }
        })
    }

    /// Waits for a queued grant up to `timeout_s`, watching for the peer going away and for
    /// a drain. `Ok(Err(Timeout))` on timeout (the waiter has left the queue); `Ok(Err(_))`
    /// with another status if the grant was refused (the fencing counter is exhausted).
    async fn wait_for_grant(
        &mut self,
        id: &KeyId,
        waiter: u64,
        rx: &mut oneshot::Receiver<Granted>,
        timeout_s: u64,
    ) -> Result<Granted, End> {
        self.timer.as_mut().reset(after(Instant::now(), timeout_s));
        // Bytes the client pipelines behind a blocking request stay in the buffer; only an
        // empty buffer lets us watch for the peer closing.
        let mut watch_peer = self.inbox.is_empty();
        loop {
            let Session { stream, inbox, timer, drain, shared, .. } = self;
            let outcome = tokio::select! {
                granted = &mut *rx => {
                    // A slot freed by the drain itself (a holder told to go) is not handed to
                    // a waiter the drain is also telling to go: give it back, answer the drain.
                    if *shared.draining.borrow() {
                        if let Ok(Ok(grant)) = &granted {
                            shared.table.release(id, &grant.token);
                        }
                        return Err(End::Reply(Status::ErrorDraining));
                    }
                    return Ok(granted.unwrap_or(Err(Status::Timeout)));
                }
                () = timer.as_mut() => None,
                read = stream.read(inbox.spare()), if watch_peer => match read {
                    Ok(n) if n > 0 => { inbox.end += n; watch_peer = false; continue; }
                    _ => Some(End::Gone),
                },
                () = drain.fired() => Some(End::Reply(Status::ErrorDraining)),
            };
            // Leaving the queue: if we are no longer in it, the grant is already ours.
            if self.shared.table.cancel_waiter(id, waiter) {
                return match outcome {
                    None => Ok(Err(Status::Timeout)),
                    Some(end) => Err(end),
                };
            }
            let grant = rx.try_recv().ok();
            return match (outcome, grant) {
                (None, grant) => Ok(grant.unwrap_or(Err(Status::Timeout))),
                (Some(end), Some(Ok(grant))) => {
                    // Nobody will learn this token: give the slot back now rather than at
                    // disconnect (which releases only with auto-release on).
                    self.shared.table.release(id, &grant.token);
                    Err(end)
                }
                (Some(end), _) => Err(end),
            };
        }
    }
}
