//! One client connection on the server: read three bounded lines, answer one line, repeat.
//!
//! What keeps a hostile client harmless: every line is capped while it is being read (an
//! over-long line gets `error` and a close), every line must arrive within the read timeout
//! (one byte a second does not keep a connection alive), malformed requests get `error`
//! without touching the table, and a connection can only release or renew with a token it
//! was given. When the connection ends, however it ends (even if its task is aborted),
//! [`Session`]'s `Drop` takes its waiters out of the queues and releases what it held.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout_at};

use super::Shared;
use super::table::{Admission, ConnId, Grant, KeyId, after};
use crate::dflockd::protocol::{MAX_LINE_BYTES, Reply, Request, Status, parse_request};

enum Enqueued {
    Granted { grant: Grant, lease_s: u64 },
    Waiting { waiter: u64, rx: oneshot::Receiver<Grant>, lease_s: u64 },
}

/// Why a connection ends.
enum End {
    /// The peer closed, or I/O failed.
    Gone,
    /// Write this status, then close.
    Reply(Status),
}

struct Session<S> {
    rd: BufReader<ReadHalf<S>>,
    wr: WriteHalf<S>,
    shared: Arc<Shared>,
    conn: ConnId,
    authenticated: bool,
    draining: watch::Receiver<bool>,
    enqueued: HashMap<KeyId, Enqueued>,
    line: Vec<u8>,
    out: Vec<u8>,
}

pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, shared: Arc<Shared>, conn: ConnId) {
    let (rd, wr) = tokio::io::split(stream);
    let mut session = Session {
        rd: BufReader::with_capacity(512, rd),
        wr,
        authenticated: shared.auth_token.is_none(),
        draining: shared.draining.clone(),
        shared,
        conn,
        enqueued: HashMap::new(),
        line: Vec::with_capacity(64),
        out: Vec::with_capacity(64),
    };
    if let End::Reply(status) = session.run().await {
        let _ = session.write(&Reply::Status(status)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), session.wr.shutdown()).await;
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
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

async fn drained(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|draining| *draining).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl<S: AsyncRead + AsyncWrite + Send> Session<S> {
    async fn run(&mut self) -> End {
        loop {
            let mut lines: [Vec<u8>; 3] = Default::default();
            for (i, slot) in lines.iter_mut().enumerate() {
                match self.read_line(i == 0).await {
                    Ok(line) => *slot = line,
                    Err(end) => return end,
                }
            }
            if *self.draining.borrow() {
                return End::Reply(Status::ErrorDraining);
            }
            let request = match parse_request(&lines[0], &lines[1], &lines[2]) {
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

    /// One line, without its newline (or a trailing `\r`), within the read timeout.
    /// While idle between requests, a drain ends the connection with `error_draining`.
    async fn read_line(&mut self, first: bool) -> Result<Vec<u8>, End> {
        let deadline = Instant::now() + self.shared.read_timeout;
        self.line.clear();
        loop {
            let watch_drain = first && self.line.is_empty() && self.rd.buffer().is_empty();
            let rd = &mut self.rd;
            let draining = &mut self.draining;
            let chunk = tokio::select! {
                read = timeout_at(deadline, rd.fill_buf()) => match read {
                    Err(_) => return Err(End::Reply(Status::Error)),
                    Ok(Err(_)) => return Err(End::Gone),
                    Ok(Ok(chunk)) => chunk,
                },
                // Idle at a drain: say so (a request racing the drain reads it as its reply,
                // a truly idle client on its next request), then close.
                () = drained(draining), if watch_drain => return Err(End::Reply(Status::ErrorDraining)),
            };
            if chunk.is_empty() {
                return Err(End::Gone);
            }
            // Content may reach MAX_LINE_BYTES plus a '\r'; anything longer is refused
            // before it is buffered.
            let room = MAX_LINE_BYTES + 1 - self.line.len();
            match chunk.iter().position(|&b| b == b'\n') {
                Some(newline) if newline <= room => {
                    self.line.extend_from_slice(&chunk[..newline]);
                    self.rd.consume(newline + 1);
                    if self.line.last() == Some(&b'\r') {
                        self.line.pop();
                    }
                    if self.line.len() > MAX_LINE_BYTES {
                        return Err(End::Reply(Status::Error));
                    }
                    return Ok(std::mem::take(&mut self.line));
                }
                Some(_) => return Err(End::Reply(Status::Error)),
                None if chunk.len() > room => return Err(End::Reply(Status::Error)),
                None => {
                    let n = chunk.len();
                    self.line.extend_from_slice(chunk);
                    self.rd.consume(n);
                }
            }
        }
    }

    async fn write(&mut self, reply: &Reply) -> Result<(), End> {
        use std::io::Write;
        self.out.clear();
        write!(self.out, "{reply}").expect("writing to a Vec");
        let deadline = Instant::now() + self.shared.write_timeout;
        match timeout_at(deadline, self.wr.write_all(&self.out)).await {
            Ok(Ok(())) => {}
            _ => return Err(End::Gone),
        }
        match timeout_at(deadline, self.wr.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    async fn handle(&mut self, request: Request) -> Result<Reply, End> {
        if !self.authenticated && !matches!(request, Request::Auth { .. }) {
            return Err(End::Reply(Status::ErrorAuth));
        }
        let default_lease = self.shared.default_lease_s;
        let shared = self.shared.clone();
        let table = &shared.table;
        Ok(match request {
            Request::Auth { secret } => match &self.shared.auth_token {
                None => Reply::Ok,
                Some(expected) => {
                    if bool::from(secret.as_bytes().ct_eq(expected.as_bytes())) {
                        self.authenticated = true;
                        Reply::Ok
                    } else {
                        return Err(End::Reply(Status::ErrorAuth));
                    }
                }
            },
            Request::Ping => Reply::Ok,
            Request::Stats => Reply::Stats(table.stats(*self.shared.connections.borrow()).to_string()),
            Request::Acquire { ns, key, timeout_s, limit, lease_s } => {
                let id = (ns, key);
                let lease_s = lease_s.unwrap_or(default_lease);
                match table.admit(&id, limit, lease_s, self.conn, timeout_s > 0) {
                    Err(status) => Reply::Status(status),
                    Ok(Admission::Busy) => Reply::Status(Status::Timeout),
                    Ok(Admission::Granted(Grant { token, lease_s })) => Reply::Granted { token, lease_s },
                    Ok(Admission::Queued { waiter, mut rx }) => {
                        match self.wait_for_grant(&id, waiter, &mut rx, timeout_s).await? {
                            Some(Grant { token, lease_s }) => Reply::Granted { token, lease_s },
                            None => Reply::Status(Status::Timeout),
                        }
                    }
                }
            }
            Request::Release { ns, key, token } => {
                if table.release(&(ns, key), &token) {
                    Reply::Ok
                } else {
                    Reply::Status(Status::Error)
                }
            }
            Request::Renew { ns, key, token, lease_s } => {
                match table.renew(&(ns, key), &token, lease_s.unwrap_or(default_lease)) {
                    Some(lease_s) => Reply::Renewed { lease_s },
                    None => Reply::Status(Status::Error),
                }
            }
            Request::Enqueue { ns, key, limit, lease_s } => {
                let id = (ns, key);
                if self.enqueued.contains_key(&id) {
                    return Ok(Reply::Status(Status::ErrorAlreadyEnqueued));
                }
                let lease_s = lease_s.unwrap_or(default_lease);
                match table.admit(&id, limit, lease_s, self.conn, true) {
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
                    Some(Enqueued::Granted { grant, lease_s }) => Some((grant, lease_s)),
                    Some(Enqueued::Waiting { waiter, mut rx, lease_s }) => {
                        self.wait_for_grant(&id, waiter, &mut rx, timeout_s).await?.map(|g| (g, lease_s))
                    }
                };
                match grant {
                    None => Reply::Status(Status::Timeout),
                    // A successful wait restarts the lease given at enqueue.
                    Some((grant, lease_s)) => match self.shared.table.renew(&id, &grant.token, lease_s) {
                        Some(lease_s) => Reply::Granted { token: grant.token, lease_s },
                        None => Reply::Status(Status::ErrorLeaseExpired),
                    },
                }
            }
        })
    }

    /// Waits for a queued grant up to `timeout_s`, watching for the peer going away and for
    /// a drain. `Ok(None)` on timeout (the waiter has left the queue).
    async fn wait_for_grant(
        &mut self,
        id: &KeyId,
        waiter: u64,
        rx: &mut oneshot::Receiver<Grant>,
        timeout_s: u64,
    ) -> Result<Option<Grant>, End> {
        let deadline = after(Instant::now(), timeout_s);
        // Bytes the client pipelines behind a blocking request stay in the buffer; only an
        // empty buffer lets us watch for the peer closing.
        let mut watch_peer = self.rd.buffer().is_empty();
        loop {
            let rd = &mut self.rd;
            let draining = &mut self.draining;
            let outcome = tokio::select! {
                granted = &mut *rx => {
                    // A slot freed by the drain itself (a holder told to go) is not handed to
                    // a waiter the drain is also telling to go: give it back, answer the drain.
                    if *draining.borrow() {
                        if let Ok(grant) = &granted {
                            self.shared.table.release(id, &grant.token);
                        }
                        return Err(End::Reply(Status::ErrorDraining));
                    }
                    return Ok(granted.ok());
                }
                () = sleep_until(deadline) => None,
                read = rd.fill_buf(), if watch_peer => match read {
                    Ok(chunk) if !chunk.is_empty() => { watch_peer = false; continue; }
                    _ => Some(End::Gone),
                },
                () = drained(draining) => Some(End::Reply(Status::ErrorDraining)),
            };
            // Leaving the queue: if we are no longer in it, the grant is already ours.
            if self.shared.table.cancel_waiter(id, waiter) {
                return match outcome {
                    None => Ok(None),
                    Some(end) => Err(end),
                };
            }
            let grant = rx.try_recv().ok();
            return match (outcome, grant) {
                (None, grant) => Ok(grant),
                (Some(end), Some(grant)) => {
                    // Nobody will learn this token: give the slot back now rather than at
                    // disconnect (which releases only with auto-release on).
                    self.shared.table.release(id, &grant.token);
                    Err(end)
                }
                (Some(end), None) => Err(end),
            };
        }
    }
}
