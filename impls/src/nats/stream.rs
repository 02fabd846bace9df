//! Conditional writes to the bucket's stream, reads of a key's last entry, and what
//! JetStream's answers to them mean.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishErrorKind, kv};

use super::Inner;
use super::entry::operation_of;
use crate::LockError;

pub(super) fn unavailable(
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> LockError {
    LockError::Unavailable { message: message.into(), source: Some(Box::new(source)) }
}

pub(super) fn is_clustered_wrong_last_sequence(error: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|error| error.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
}

/// The key's actual last revision, where JetStream's refusal names it ("wrong last sequence:
/// 42" from a single server; a clustered leader's refusal does not).
pub(super) fn last_sequence_in(error: &jetstream::context::PublishError) -> Option<u64> {
    let error = std::error::Error::source(error)?.downcast_ref::<jetstream::Error>()?.to_string();
    let (_, rest) = error.split_once("wrong last sequence: ")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).map_or(rest, |end| &rest[..end]);
    digits.parse().ok()
}

/// What JetStream's answer to a conditional publish means.
pub(super) fn published(
    operation: &'static str,
    answer: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) -> Result<Published, LockError> {
    match answer {
        Ok(ack) => Ok(Published::Stored(ack.sequence)),
        Err(e) => match e.kind() {
            PublishErrorKind::WrongLastSequence => Ok(Published::Conflict { last: last_sequence_in(&e) }),
            // A clustered stream's leader reports the same refusal under another code
            // (10164, "wrong last sequence" without the number).
            PublishErrorKind::Other if is_clustered_wrong_last_sequence(&e) => Ok(Published::Conflict { last: None }),
            PublishErrorKind::StreamNotFound => {
                Err(unavailable(format!("{operation}: no JetStream stream answers"), e))
            }
            PublishErrorKind::Other => Err(LockError::Unavailable {
                message: format!("{operation}: JetStream refused the publish"),
                source: Some(Box::new(e)),
            }),
            _ => Err(LockError::Indeterminate {
                operation,
                message: "no acknowledgement from JetStream".to_owned(),
                source: Some(Box::new(e)),
            }),
        },
    }
}

/// The outcome of one conditional publish.
pub(super) enum Published {
    Stored(u64),
    /// The key's last revision was not the expected one: nothing changed. `last` is the
    /// revision it was, if the server said.
    Conflict {
        last: Option<u64>,
    },
}

impl Inner {
    pub(super) fn subject(&self, encoded_key: &str) -> String {
        format!("{}{encoded_key}", self.subject_prefix)
    }

    /// Publishes `value` on the key only if its last revision is `expected` (0: no message).
    pub(super) async fn publish_expecting(
        &self,
        operation: &'static str,
        encoded_key: &str,
        expected: u64,
        headers: HeaderMap,
        value: String,
    ) -> Result<Published, LockError> {
        let ack = self.send_expecting(operation, encoded_key, expected, headers, value).await?;
        published(operation, ack.await)
    }

    /// Sends `value` for the key on condition that its last revision is `expected` (0: no
    /// message); the returned future brings JetStream's answer.
    pub(super) async fn send_expecting(
        &self,
        operation: &'static str,
        encoded_key: &str,
        expected: u64,
        headers: HeaderMap,
        value: String,
    ) -> Result<PublishAckFuture, LockError> {
        let mut headers = headers;
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string().as_str());
        self.js
            .publish_with_headers(self.subject(encoded_key), headers, value.into())
            .await
            .map_err(|e| unavailable(format!("{operation}: could not send to NATS"), e))
    }

    /// The key's last entry, read from the stream's *leader*. Not `kv.entry`: KV buckets
    /// allow direct gets, which any replica of a clustered stream may answer — possibly one
    /// that has not applied the latest create or purge yet. A stale read here would make a
    /// holder's release report "not held", or a waiter believe a freed key is still taken.
    ///
    /// A single-replica stream has no other replica to be stale: there the read is a direct
    /// get (where the stream allows them, as KV buckets do), which the stream answers itself
    /// instead of the JetStream API's request handler — cheaper, and every waiter reads once
    /// when it arrives.
    pub(super) async fn entry(
        &self,
        operation: &'static str,
        encoded_key: &str,
    ) -> Result<Option<kv::Entry>, LockError> {
        use jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
        let subject = self.subject(encoded_key);
        let cannot_read = format!("{operation}: cannot read the key's entry");
        let message = if self.direct_reads {
            match self.kv.stream.direct_get_last_for_subject(subject).await {
                Ok(message) => message,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(unavailable(cannot_read, e)),
            }
        } else {
            match self.kv.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => message,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) => return Err(unavailable(cannot_read, e)),
            }
        };
        let operation = operation_of(&message.headers);
        Ok(Some(kv::Entry {
            bucket: self.kv.name.clone(),
            key: encoded_key.to_owned(),
            value: message.payload,
            revision: message.sequence,
            delta: 0,
            created: message.time,
            operation,
            seen_current: false,
        }))
    }
}
