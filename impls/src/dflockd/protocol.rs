//! The dflockd wire protocol, without I/O: request framing and parsing (server side), reply
//! statuses and their spelling (both sides).
//!
//! A request is three `\n`-terminated lines, `<cmd>\n<key>\n<arg>\n`; a reply is one line,
//! `<status>[ <field>...]\n`. Lines are capped at [`MAX_LINE_BYTES`] so that a hostile client
//! cannot make the server buffer without bound. Everything here is pure so that the
//! fuzz target (`fuzz/`) exercises exactly the code the server runs.

use std::fmt;

/// The longest request line, in bytes, not counting its `\n` (nor a trailing `\r`).
pub const MAX_LINE_BYTES: usize = 256;

/// The largest number of seconds a request may carry (the Go server's bound: about
/// `i64::MAX` nanoseconds). Larger numbers are malformed requests.
pub const MAX_PROTOCOL_SECONDS: u64 = 9_223_372_036;

/// Locks and semaphores live in separate name spaces (as in the newest servers): `l k` and
/// `sl k` name different things.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    /// `l r n e w`: limit 1.
    Lock,
    /// `sl sr sn se sw`: a limit per key, fixed by the first request.
    Semaphore,
}

impl Namespace {
    /// The command prefix: `""` or `"s"`.
    pub const fn prefix(self) -> &'static str {
        match self {
            Namespace::Lock => "",
            Namespace::Semaphore => "s",
        }
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `l` / `sl`: take a slot, waiting up to `timeout_s` (0 = try once).
    Acquire {
        /// Locks or semaphores.
        ns: Namespace,
        /// The key.
        key: String,
        /// How long to wait, in seconds.
        timeout_s: u64,
        /// The permit limit (1 for `l`).
        limit: u32,
        /// The lease, or the server default.
        lease_s: Option<u64>,
    },
    /// `r` / `sr`: give a slot back.
    Release {
        /// Locks or semaphores.
        ns: Namespace,
        /// The key.
        key: String,
        /// The holder's token.
        token: String,
    },
    /// `n` / `sn`: extend a lease.
    Renew {
        /// Locks or semaphores.
        ns: Namespace,
        /// The key.
        key: String,
        /// The holder's token.
        token: String,
        /// The new lease, or the server default.
        lease_s: Option<u64>,
    },
    /// `e` / `se`: phase one of two-phase acquisition.
    Enqueue {
        /// Locks or semaphores.
        ns: Namespace,
        /// The key.
        key: String,
        /// The permit limit (1 for `e`).
        limit: u32,
        /// The lease, or the server default.
        lease_s: Option<u64>,
    },
    /// `w` / `sw`: phase two, on the connection that enqueued.
    Wait {
        /// Locks or semaphores.
        ns: Namespace,
        /// The key.
        key: String,
        /// How long to wait, in seconds.
        timeout_s: u64,
    },
    /// `auth`: the shared secret (trimmed).
    Auth {
        /// The secret as sent.
        secret: String,
    },
    /// `stats`: a JSON snapshot.
    Stats,
    /// `ping`: liveness.
    Ping,
}

/// Why a request is malformed. The server answers every one of these with a plain `error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A line is not UTF-8.
    #[error("a request line is not UTF-8")]
    NotUtf8,
    /// The command is not one of the protocol's.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// The key is empty or contains whitespace or a control character.
    #[error("bad key {0:?}")]
    BadKey(String),
    /// The argument line has the wrong shape or a bad number.
    #[error("bad argument for {command}: {why}")]
    BadArgument {
        /// The command.
        command: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// The outcome of scanning a buffer for one request line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineScan {
    /// A complete line: its content is `buf[..content_len]` (without `\n` or a trailing
    /// `\r`) and it occupies `consumed` bytes.
    Line {
        /// Bytes of content.
        content_len: usize,
        /// Bytes to drop from the buffer, newline included.
        consumed: usize,
    },
    /// No newline yet, and the buffer is short enough to keep waiting.
    Incomplete,
    /// The line is longer than [`MAX_LINE_BYTES`]: answer `error` and close.
    TooLong,
}

/// Finds the first line in `buf`, enforcing [`MAX_LINE_BYTES`].
pub fn scan_line(buf: &[u8]) -> LineScan {
    // A line of MAX_LINE_BYTES content may be followed by "\r\n": look that far, no further.
    let window = &buf[..buf.len().min(MAX_LINE_BYTES + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(newline) => {
            let mut content_len = newline;
            if content_len > 0 && buf[content_len - 1] == b'\r' {
                content_len -= 1;
            }
            if content_len > MAX_LINE_BYTES {
                LineScan::TooLong
            } else {
                LineScan::Line { content_len, consumed: newline + 1 }
            }
        }
        None if buf.len() > MAX_LINE_BYTES + 1 => LineScan::TooLong,
        None => LineScan::Incomplete,
    }
}

/// Parses one request from its three lines (without newlines).
pub fn parse_request(cmd: &[u8], key: &[u8], arg: &[u8]) -> Result<Request, RequestError> {
    let cmd = std::str::from_utf8(cmd).map_err(|_| RequestError::NotUtf8)?;
    let key = std::str::from_utf8(key).map_err(|_| RequestError::NotUtf8)?;
    let arg = std::str::from_utf8(arg).map_err(|_| RequestError::NotUtf8)?;
    let (ns, op) = match cmd {
        "auth" => return Ok(Request::Auth { secret: arg.trim().to_owned() }),
        "stats" => return Ok(Request::Stats),
        "ping" => return Ok(Request::Ping),
        "l" | "r" | "n" | "e" | "w" => (Namespace::Lock, cmd),
        "sl" | "sr" | "sn" | "se" | "sw" => (Namespace::Semaphore, &cmd[1..]),
        other => return Err(RequestError::UnknownCommand(other.chars().take(32).collect())),
    };
    let command: &'static str = match (ns, op) {
        (Namespace::Lock, "l") => "l",
        (Namespace::Lock, "r") => "r",
        (Namespace::Lock, "n") => "n",
        (Namespace::Lock, "e") => "e",
        (Namespace::Lock, "w") => "w",
        (Namespace::Semaphore, "l") => "sl",
        (Namespace::Semaphore, "r") => "sr",
        (Namespace::Semaphore, "n") => "sn",
        (Namespace::Semaphore, "e") => "se",
        _ => "sw",
    };
    if !is_valid_key(key) {
        return Err(RequestError::BadKey(key.chars().take(32).collect()));
    }
    let key = key.to_owned();
    let bad = |why| RequestError::BadArgument { command, why };
    // At most three fields are valid; a fourth only needs to be seen to be refused.
    let mut words = arg.split_ascii_whitespace();
    let mut taken = [""; 4];
    let mut count = 0;
    for (slot, word) in taken.iter_mut().zip(&mut words) {
        *slot = word;
        count += 1;
    }
    if words.next().is_some() {
        return Err(bad("too many fields"));
    }
    let fields = &taken[..count];
    let is_sem = ns == Namespace::Semaphore;
    match op {
        "l" => {
            // l: <timeout> [<lease>]; sl: <timeout> <limit> [<lease>]
            let (min, max) = if is_sem { (2, 3) } else { (1, 2) };
            if fields.len() < min || fields.len() > max {
                return Err(bad("wrong number of fields"));
            }
            let timeout_s = parse_seconds(fields[0]).ok_or(bad("bad timeout"))?;
            let limit = if is_sem { parse_limit(fields[1]).ok_or(bad("bad limit"))? } else { 1 };
            let lease_s = fields.get(min).map(|f| parse_lease(f).ok_or(bad("bad lease"))).transpose()?;
            Ok(Request::Acquire { ns, key, timeout_s, limit, lease_s })
        }
        "r" => match fields {
            [token] => Ok(Request::Release { ns, key, token: (*token).to_owned() }),
            _ => Err(bad("expected one token")),
        },
        "n" => match fields {
            [token] => Ok(Request::Renew { ns, key, token: (*token).to_owned(), lease_s: None }),
            [token, lease] => Ok(Request::Renew {
                ns,
                key,
                token: (*token).to_owned(),
                lease_s: Some(parse_lease(lease).ok_or(bad("bad lease"))?),
            }),
            _ => Err(bad("expected <token> [<lease>]")),
        },
        "e" => {
            // e: [<lease>]; se: <limit> [<lease>]
            let (min, max) = if is_sem { (1, 2) } else { (0, 1) };
            if fields.len() < min || fields.len() > max {
                return Err(bad("wrong number of fields"));
            }
            let limit = if is_sem { parse_limit(fields[0]).ok_or(bad("bad limit"))? } else { 1 };
            let lease_s = fields.get(min).map(|f| parse_lease(f).ok_or(bad("bad lease"))).transpose()?;
            Ok(Request::Enqueue { ns, key, limit, lease_s })
        }
        _ => match fields {
            [timeout] => Ok(Request::Wait { ns, key, timeout_s: parse_seconds(timeout).ok_or(bad("bad timeout"))? }),
            _ => Err(bad("expected <timeout>")),
        },
    }
}

/// Whether `key` may name a lock: non-empty, at most [`MAX_LINE_BYTES`], no whitespace and
/// no control characters (a newline would be protocol injection).
pub fn is_valid_key(key: &str) -> bool {
    if key.is_empty() || key.len() > MAX_LINE_BYTES {
        return false;
    }
    // Keys are almost always ASCII: a byte test there; Unicode's whitespace and controls
    // beyond it.
    if key.is_ascii() {
        return key.bytes().all(|b| b.is_ascii_graphic());
    }
    !key.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A non-negative whole number of seconds within [`MAX_PROTOCOL_SECONDS`]; digits only
/// (with an optional `+`), so `-1`, `1.5`, `0x10` and `99999999999999999999` are refused.
pub fn parse_seconds(field: &str) -> Option<u64> {
    let digits = field.strip_prefix('+').unwrap_or(field);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|&n| n <= MAX_PROTOCOL_SECONDS)
}

fn parse_lease(field: &str) -> Option<u64> {
    parse_seconds(field).filter(|&n| n > 0)
}

fn parse_limit(field: &str) -> Option<u32> {
    parse_seconds(field).filter(|&n| n > 0).and_then(|n| u32::try_from(n).ok())
}

/// A reply status other than a success. One per status the protocol defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// `timeout`: the wait bound ran out.
    Timeout,
    /// `error`: malformed request, unknown or expired token.
    Error,
    /// `error_auth`: authentication required or refused.
    ErrorAuth,
    /// `error_max_locks`: the key table is full.
    ErrorMaxLocks,
    /// `error_max_waiters`: the key's queue is full.
    ErrorMaxWaiters,
    /// `error_limit_mismatch`: the key exists with another permit limit.
    ErrorLimitMismatch,
    /// `error_already_enqueued`: a second `e` before `w`.
    ErrorAlreadyEnqueued,
    /// `error_not_enqueued`: `w` without `e` on this connection.
    ErrorNotEnqueued,
    /// `error_lease_expired`: a grant made at `e` expired before `w`.
    ErrorLeaseExpired,
    /// `error_draining`: the server is shutting down.
    ErrorDraining,
    /// `error_fence_exhausted`: the reference server's fencing counter has handed out its
    /// largest value, so it grants nothing more (no real dflockd server sends this).
    ErrorFenceExhausted,
}

impl Status {
    /// Every status, for tests and tables.
    pub const ALL: [Status; 11] = [
        Status::Timeout,
        Status::Error,
        Status::ErrorAuth,
        Status::ErrorMaxLocks,
        Status::ErrorMaxWaiters,
        Status::ErrorLimitMismatch,
        Status::ErrorAlreadyEnqueued,
        Status::ErrorNotEnqueued,
        Status::ErrorLeaseExpired,
        Status::ErrorDraining,
        Status::ErrorFenceExhausted,
    ];

    /// The word on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Timeout => "timeout",
            Status::Error => "error",
            Status::ErrorAuth => "error_auth",
            Status::ErrorMaxLocks => "error_max_locks",
            Status::ErrorMaxWaiters => "error_max_waiters",
            Status::ErrorLimitMismatch => "error_limit_mismatch",
            Status::ErrorAlreadyEnqueued => "error_already_enqueued",
            Status::ErrorNotEnqueued => "error_not_enqueued",
            Status::ErrorLeaseExpired => "error_lease_expired",
            Status::ErrorDraining => "error_draining",
            Status::ErrorFenceExhausted => "error_fence_exhausted",
        }
    }

    /// The status a reply line spells, if it is one.
    pub fn parse(line: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == line)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server's reply, as the server writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `ok`.
    Ok,
    /// `ok <token> <lease_s>`: a grant from `l`/`w`.
    Granted {
        /// The holder's token.
        token: String,
        /// The lease in seconds.
        lease_s: u64,
    },
    /// `acquired <token> <lease_s>`: `e` granted at once.
    Acquired {
        /// The holder's token.
        token: String,
        /// The lease in seconds.
        lease_s: u64,
    },
    /// `queued`: `e` joined the queue.
    Queued,
    /// `ok <seconds>`: a renewal.
    Renewed {
        /// The lease now granted, in seconds.
        lease_s: u64,
    },
    /// `ok <json>`: statistics.
    Stats(String),
    /// Anything else.
    Status(Status),
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok => f.write_str("ok\n"),
            Reply::Granted { token, lease_s } => writeln!(f, "ok {token} {lease_s}"),
            Reply::Acquired { token, lease_s } => writeln!(f, "acquired {token} {lease_s}"),
            Reply::Queued => f.write_str("queued\n"),
            Reply::Renewed { lease_s } => writeln!(f, "ok {lease_s}"),
            Reply::Stats(json) => writeln!(f, "ok {json}"),
            Reply::Status(status) => writeln!(f, "{status}"),
        }
    }
}

/// Splits a byte stream into requests the way the server does: line by line with the cap,
/// three lines per request. Stops at the first over-long line (the server closes there).
/// This is what the fuzz target drives.
pub fn parse_stream(mut input: &[u8]) -> Vec<Result<Request, RequestError>> {
    let mut lines: Vec<&[u8]> = Vec::with_capacity(3);
    let mut out = Vec::new();
    loop {
        match scan_line(input) {
            LineScan::Line { content_len, consumed } => {
                lines.push(&input[..content_len]);
                input = &input[consumed..];
                if lines.len() == 3 {
                    out.push(parse_request(lines[0], lines[1], lines[2]));
                    lines.clear();
                }
            }
            LineScan::Incomplete | LineScan::TooLong => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command_the_python_client_sends() {
        let ok = |c: &str, k: &str, a: &str| parse_request(c.as_bytes(), k.as_bytes(), a.as_bytes()).unwrap();
        assert_eq!(
            ok("l", "k", "10 5"),
            Request::Acquire { ns: Namespace::Lock, key: "k".into(), timeout_s: 10, limit: 1, lease_s: Some(5) }
        );
        assert_eq!(
            ok("sl", "k", "0 3"),
            Request::Acquire { ns: Namespace::Semaphore, key: "k".into(), timeout_s: 0, limit: 3, lease_s: None }
        );
        assert_eq!(
            ok("e", "k", ""),
            Request::Enqueue { ns: Namespace::Lock, key: "k".into(), limit: 1, lease_s: None }
        );
        assert_eq!(
            ok("se", "k", "2 7"),
            Request::Enqueue { ns: Namespace::Semaphore, key: "k".into(), limit: 2, lease_s: Some(7) }
        );
        assert_eq!(ok("w", "k", "3"), Request::Wait { ns: Namespace::Lock, key: "k".into(), timeout_s: 3 });
        assert_eq!(
            ok("n", "k", "tok 9"),
            Request::Renew { ns: Namespace::Lock, key: "k".into(), token: "tok".into(), lease_s: Some(9) }
        );
        assert_eq!(
            ok("sr", "k", "tok"),
            Request::Release { ns: Namespace::Semaphore, key: "k".into(), token: "tok".into() }
        );
        assert_eq!(ok("auth", "_", "  s3cret \t"), Request::Auth { secret: "s3cret".into() });
        assert_eq!(ok("stats", "_", "_"), Request::Stats);
        assert_eq!(ok("ping", "", ""), Request::Ping);
    }

    #[test]
    fn refuses_malformed_requests() {
        let err = |c: &str, k: &str, a: &str| parse_request(c.as_bytes(), k.as_bytes(), a.as_bytes()).unwrap_err();
        assert!(matches!(err("x", "k", "1"), RequestError::UnknownCommand(_)));
        assert!(matches!(err("l", "", "1"), RequestError::BadKey(_)));
        assert!(matches!(err("l", "a b", "1"), RequestError::BadKey(_)));
        assert!(matches!(err("l", "a\tb", "1"), RequestError::BadKey(_)));
        assert!(matches!(err("l", "a\u{7}b", "1"), RequestError::BadKey(_)));
        for arg in ["-1", "1.5", "", "1 2 3", "99999999999999999999", "9223372037", "1 0", "1 -3", "0x10"] {
            assert!(matches!(err("l", "k", arg), RequestError::BadArgument { .. }), "{arg:?}");
        }
        assert!(matches!(err("sl", "k", "1 0"), RequestError::BadArgument { .. }));
        assert!(matches!(err("sl", "k", "1 4294967296"), RequestError::BadArgument { .. }));
        assert!(matches!(err("r", "k", ""), RequestError::BadArgument { .. }));
        assert!(matches!(err("e", "k", "0"), RequestError::BadArgument { .. }));
        assert!(matches!(err("w", "k", ""), RequestError::BadArgument { .. }));
        assert_eq!(parse_request(b"l", b"\xff", b"1"), Err(RequestError::NotUtf8));
    }

    #[test]
    fn line_cap_is_enforced_before_the_newline_arrives() {
        assert_eq!(scan_line(b"ab\r\ncd"), LineScan::Line { content_len: 2, consumed: 4 });
        assert_eq!(scan_line(b"ab"), LineScan::Incomplete);
        let max = vec![b'a'; MAX_LINE_BYTES];
        assert_eq!(
            scan_line(&[max.as_slice(), b"\r\n"].concat()),
            LineScan::Line { content_len: MAX_LINE_BYTES, consumed: MAX_LINE_BYTES + 2 }
        );
        assert_eq!(scan_line(&[max.as_slice(), b"a\n"].concat()), LineScan::TooLong);
        assert_eq!(scan_line(&vec![b'a'; 10_000]), LineScan::TooLong);
    }

    #[test]
    fn reply_spelling_round_trips() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(Reply::Status(status).to_string(), format!("{}\n", status.as_str()));
        }
        assert_eq!(Reply::Granted { token: "t".into(), lease_s: 33 }.to_string(), "ok t 33\n");
        assert_eq!(parse_stream(b"l\nk\n1\nr\nk\n").len(), 1);
    }
}
