//! The dflockd client's errors: one variant per server status, plus the ways a connection
//! fails. Whether a failed request may still have taken effect decides how it maps to
//! [`LockError`]: a request that reached the wire and got no answer is *indeterminate*.

use std::io;

use crate::{InvalidInput, LockError};

use super::protocol::Status;

/// An error of a dflockd client operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DflockdError {
    /// `timeout`: the server's wait bound ran out; nothing is held.
    #[error("the server answered `timeout`")]
    Timeout,
    /// `error`: a malformed request, or an unknown or expired token.
    #[error("the server answered `error` to {command} (malformed request, or unknown or expired token)")]
    Server {
        /// The command.
        command: &'static str,
    },
    /// `error_auth`: authentication is required, or the secret was refused.
    #[error("the server refused authentication")]
    Auth,
    /// `error_max_locks`: the server's key table is full.
    #[error("the server's key table is full")]
    MaxLocks,
    /// `error_max_waiters`: the key's wait queue is full.
    #[error("the key's wait queue is full")]
    MaxWaiters,
    /// `error_limit_mismatch`: the key exists with another permit limit.
    #[error("the key exists with a different permit limit")]
    LimitMismatch,
    /// `error_already_enqueued`: `enqueue` twice before `wait`.
    #[error("already enqueued on this connection")]
    AlreadyEnqueued,
    /// `error_not_enqueued`: `wait` without `enqueue` on this connection.
    #[error("wait without a prior enqueue on this connection")]
    NotEnqueued,
    /// `error_lease_expired`: the lease granted at `enqueue` expired before `wait`.
    #[error("the lease granted at enqueue expired before wait")]
    LeaseExpired,
    /// `error_draining`: the server is shutting down.
    #[error("the server is shutting down")]
    Draining,
    /// `error_fence_exhausted`: the server's fencing counter is at its end; it grants nothing.
    #[error("the server's fencing counter is exhausted; it grants nothing more")]
    FenceExhausted,
    /// A reply the client does not understand.
    #[error("unexpected reply {reply:?} to {command}")]
    UnexpectedReply {
        /// The command.
        command: &'static str,
        /// The reply line (truncated).
        reply: String,
    },
    /// The connection could not be opened (nothing was sent).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// TLS setup or handshake failed (nothing was sent).
    #[error("TLS with {addr}: {message}")]
    Tls {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The connection failed after the request was (perhaps) sent: the outcome is unknown.
    #[error("connection lost during {command}: {source}")]
    Io {
        /// The command.
        command: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server closed the connection before replying: the outcome is unknown.
    #[error("the server closed the connection during {command}")]
    Closed {
        /// The command.
        command: &'static str,
    },
    /// A previous request on this connection was abandoned mid-way (its future was
    /// dropped); the stream is out of step and must be closed.
    #[error("the connection was abandoned mid-request; open a new one")]
    Poisoned,
    /// An argument the protocol cannot carry (whitespace or newline in a key, a key too long,
    /// a zero lease...). Nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A high-level lock was asked to renew, release or wait without holding or queueing.
    #[error("not holding or queued")]
    NotHeld,
}

impl DflockdError {
    /// The error for a status reply to `command`.
    pub fn from_status(status: Status, command: &'static str) -> Self {
        match status {
            Status::Timeout => DflockdError::Timeout,
            Status::Error => DflockdError::Server { command },
            Status::ErrorAuth => DflockdError::Auth,
            Status::ErrorMaxLocks => DflockdError::MaxLocks,
            Status::ErrorMaxWaiters => DflockdError::MaxWaiters,
            Status::ErrorLimitMismatch => DflockdError::LimitMismatch,
            Status::ErrorAlreadyEnqueued => DflockdError::AlreadyEnqueued,
            Status::ErrorNotEnqueued => DflockdError::NotEnqueued,
            Status::ErrorLeaseExpired => DflockdError::LeaseExpired,
            Status::ErrorDraining => DflockdError::Draining,
            Status::ErrorFenceExhausted => DflockdError::FenceExhausted,
        }
    }

    /// The server status this error reports, if it is one.
    pub fn status(&self) -> Option<Status> {
        Some(match self {
            DflockdError::Timeout => Status::Timeout,
            DflockdError::Server { .. } => Status::Error,
            DflockdError::Auth => Status::ErrorAuth,
            DflockdError::MaxLocks => Status::ErrorMaxLocks,
            DflockdError::MaxWaiters => Status::ErrorMaxWaiters,
            DflockdError::LimitMismatch => Status::ErrorLimitMismatch,
            DflockdError::AlreadyEnqueued => Status::ErrorAlreadyEnqueued,
            DflockdError::NotEnqueued => Status::ErrorNotEnqueued,
            DflockdError::LeaseExpired => Status::ErrorLeaseExpired,
            DflockdError::Draining => Status::ErrorDraining,
            DflockdError::FenceExhausted => Status::ErrorFenceExhausted,
            _ => return None,
        })
    }

    /// The server answered `timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, DflockdError::Timeout)
    }

    /// Whether the request may have taken effect on the server without the client knowing:
    /// the connection broke after the request was written.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, DflockdError::Io { .. } | DflockdError::Closed { .. } | DflockdError::UnexpectedReply { .. })
    }

    /// The error as the generic lock API reports it, for `operation`.
    pub(crate) fn into_lock_error(self, operation: &'static str) -> LockError {
        match self {
            DflockdError::InvalidArgument(message) => InvalidInput::Backend(message).into(),
            e if e.is_indeterminate() => {
                LockError::Indeterminate { operation, message: e.to_string(), source: Some(Box::new(e)) }
            }
            e => LockError::Unavailable { message: e.to_string(), source: Some(Box::new(e)) },
        }
    }
}
