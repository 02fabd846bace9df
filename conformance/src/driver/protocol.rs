//! The driver protocol's messages, one JSON object per line (`docs/driver-protocol.md` is the
//! specification; these types are its one implementation on lockcheck's side, shared by the
//! `exec:` backend that speaks to drivers and the Rust driver that answers it).
//!
//! Readers ignore fields they do not know, so a newer driver can say more than this version
//! reads.

use lockcheck_impls::Capabilities;
use serde::{Deserialize, Serialize};

/// The protocol version this lockcheck speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the `hello` field of a driver's first line must say.
pub const HELLO: &str = "lockcheck-driver";

/// The operations a driver may offer, by their wire names.
pub const OPERATIONS: [&str; 6] = ["acquire", "try_acquire", "release", "refresh", "remaining_ttl", "cancel"];

/// The driver's first line: who it is, what its backend promises, which operations it serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`HELLO`]: a line that says anything else is not a driver's.
    pub hello: String,
    /// The protocol version the driver speaks ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// A short name of the driver and its backend, for reports.
    #[serde(default)]
    pub name: Option<String>,
    /// What the backend promises; claims left out are not made.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// The operations the driver serves (names of [`OPERATIONS`]); others are not sent.
    pub operations: Vec<String>,
}

/// A request: an operation and the id its reply will carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Unique among this connection's requests; the reply carries it.
    pub id: u64,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

/// An operation of the lock API. Leases are named by the `lease` string the grant's reply
/// gave (or, for a lease this driver never granted, 32 hex digits it must answer `not_held`
/// to).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Waits up to `wait_ms` for one of `limit` slots of `key`, for `ttl_ms`.
    Acquire {
        /// The key.
        key: String,
        /// The lease duration.
        ttl_ms: u64,
        /// The wait bound.
        wait_ms: u64,
        /// The permit limit (1: a lock).
        limit: u32,
    },
    /// Takes a slot if one is free now.
    TryAcquire {
        /// The key.
        key: String,
        /// The lease duration.
        ttl_ms: u64,
        /// The permit limit (1: a lock).
        limit: u32,
    },
    /// Gives a lease back.
    Release {
        /// The key.
        key: String,
        /// The lease.
        lease: String,
        /// The permit limit it was granted under.
        limit: u32,
    },
    /// Extends a lease to `ttl_ms` from now.
    Refresh {
        /// The key.
        key: String,
        /// The lease.
        lease: String,
        /// The permit limit it was granted under.
        limit: u32,
        /// The new duration.
        ttl_ms: u64,
    },
    /// The lease's remaining time by the backend's clock.
    RemainingTtl {
        /// The key.
        key: String,
        /// The lease.
        lease: String,
        /// The permit limit it was granted under.
        limit: u32,
    },
    /// Gives up the in-flight acquire `target`.
    Cancel {
        /// The id of the acquire to give up.
        target: u64,
    },
}

impl Op {
    /// The operation's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Acquire { .. } => "acquire",
            Op::TryAcquire { .. } => "try_acquire",
            Op::Release { .. } => "release",
            Op::Refresh { .. } => "refresh",
            Op::RemainingTtl { .. } => "remaining_ttl",
            Op::Cancel { .. } => "cancel",
        }
    }
}

/// A reply: the id of the request it answers, and the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// What happened.
    #[serde(flatten)]
    pub result: Outcome,
}

/// What a request came to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect. Which fields are set depends on the operation (see [`Done`]).
    Ok(Done),
    /// `try_acquire`: the key is at its limit; nothing is held.
    NotGranted,
    /// `acquire`: the wait bound ran out; nothing is held.
    TimedOut,
    /// `release`, `refresh`, `remaining_ttl`: the lease is no longer held; nothing changed.
    NotHeld,
    /// `acquire`: given up on a `cancel`; nothing is held.
    Cancelled,
    /// Definitely did not take effect (a refusal, a server that could not be reached).
    Failed {
        /// Why.
        error: String,
    },
    /// May or may not have taken effect (a time-out or a dropped connection after sending).
    Indeterminate {
        /// Why.
        error: String,
    },
    /// The driver does not serve this operation (or this request, such as a semaphore).
    Unsupported {
        /// Why, if the driver says.
        #[serde(default)]
        error: Option<String>,
    },
}

/// The fields of an `ok` reply.
///
/// - `acquire`, `try_acquire`: `lease` (required), `fence` (required where fencing is claimed),
///   `ttl_ms` (the granted duration, if not the one asked for), `elapsed_us` (how long before
///   the reply the grant was made, if the driver can tell: the lease counts from then);
/// - `release`: nothing (it was held and is released);
/// - `refresh`: `ttl_ms` if the granted duration differs;
/// - `remaining_ttl`: `remaining_ms` (required);
/// - `cancel`: nothing (the acquire's own reply follows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The lease's name, to pass back in release, refresh and remaining_ttl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// The fencing token of the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    /// The granted duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The remaining time of a lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
    /// How long before the reply was written the grant was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_us: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shapes() {
        let request = Request { id: 7, op: Op::Acquire { key: "k".into(), ttl_ms: 300, wait_ms: 50, limit: 1 } };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"id":7,"op":"acquire","key":"k","ttl_ms":300,"wait_ms":50,"limit":1}"#
        );
        let cancel: Request = serde_json::from_str(r#"{"id":8,"op":"cancel","target":7}"#).unwrap();
        assert_eq!(cancel.op, Op::Cancel { target: 7 });
        let granted: Reply =
            serde_json::from_str(r#"{"id":7,"result":"ok","lease":"x","fence":3,"extra":true}"#).unwrap();
        assert_eq!(granted.result, Outcome::Ok(Done { lease: Some("x".into()), fence: Some(3), ..Done::default() }));
        let reply = Reply { id: 9, result: Outcome::Failed { error: "no".into() } };
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"id":9,"result":"failed","error":"no"}"#);
        let reply: Reply = serde_json::from_str(r#"{"id":1,"result":"unsupported"}"#).unwrap();
        assert_eq!(reply.result, Outcome::Unsupported { error: None });
        let hello: Hello = serde_json::from_str(
            r#"{"hello":"lockcheck-driver","protocol":1,"capabilities":{"fencing":true,"teleport":true},"operations":["acquire"]}"#,
        )
        .unwrap();
        assert!(hello.capabilities.fencing && !hello.capabilities.fifo);
        for bad in [r#"{"id":1,"result":"maybe"}"#, r#"{"result":"ok"}"#, "garbage"] {
            assert!(serde_json::from_str::<Reply>(bad).is_err(), "{bad}");
        }
    }
}
